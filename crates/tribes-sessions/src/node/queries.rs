//! Principal queries, as the node runs them: "which sessions of this principal exist in
//! the cluster?". A DeltaManager node holds every session, so its own index answers. A
//! BackupManager node holds only its sessions' copies, so it asks every server and
//! merges the answers (the freshest copy of each session); the query completes when each
//! member asked has answered or left, or at its deadline (then `complete` is false).

use std::collections::{BTreeMap, BTreeSet};

use tribes::MemberId;

use super::{Now, Output, SessionNode};
use crate::id::SessionId;
use crate::kind::ManagerKind;
use crate::principal::Summary;
use crate::wire::Msg;

/// The principal queries in flight.
#[derive(Debug, Default)]
pub(crate) struct Queries {
    next: u64,
    open: BTreeMap<u64, Query>,
}

#[derive(Debug)]
struct Query {
    waiter: u64,
    waiting: BTreeSet<MemberId>,
    found: BTreeMap<SessionId, Summary>,
    deadline: u64,
}

impl Query {
    fn add(&mut self, sessions: Vec<Summary>) {
        for s in sessions {
            match self.found.get_mut(&s.id) {
                Some(known) => known.merge(&s),
                None => {
                    self.found.insert(s.id, s);
                }
            }
        }
    }
}

impl SessionNode {
    /// A call on this node wants every session of `principal`; [`Output::PrincipalSessions`]
    /// gives `waiter` back with them.
    pub(crate) fn begin_principal_query(&mut self, now: Now, principal: &str, waiter: u64) {
        self.last_ms = now.mono_ms;
        let local = self.core.principal_sessions(now.wall_ms, principal);
        let ask: BTreeSet<MemberId> = match self.core.kind() {
            ManagerKind::Delta => BTreeSet::new(),
            ManagerKind::Backup { .. } => self.core.servers().iter().copied().collect(),
        };
        let mut query = Query {
            waiter,
            waiting: ask.clone(),
            found: BTreeMap::new(),
            deadline: now.mono_ms + self.cfg.fetch_timeout_ms,
        };
        query.add(local);
        if ask.is_empty() {
            self.finish_query(query, true);
            return;
        }
        self.queries.next += 1;
        let request = self.queries.next;
        self.queries.open.insert(request, query);
        self.send(
            ask.into_iter().collect(),
            Msg::PrincipalQuery {
                request,
                principal: principal.into(),
            },
        );
    }

    /// `from` answered query `request`.
    pub(super) fn principal_answer(&mut self, from: MemberId, request: u64, sessions: Vec<Summary>) {
        let Some(query) = self.queries.open.get_mut(&request) else {
            return;
        };
        if !query.waiting.remove(&from) {
            return;
        }
        query.add(sessions);
        if query.waiting.is_empty() {
            let query = self.queries.open.remove(&request).expect("open");
            self.finish_query(query, true);
        }
    }

    /// `member` left: no query waits for it any more.
    pub(super) fn query_member_gone(&mut self, member: MemberId) {
        let done: Vec<u64> = self
            .queries
            .open
            .iter_mut()
            .filter_map(|(request, q)| (q.waiting.remove(&member) && q.waiting.is_empty()).then_some(*request))
            .collect();
        for request in done {
            let query = self.queries.open.remove(&request).expect("open");
            self.finish_query(query, true);
        }
    }

    /// Queries past their deadline complete with what the members that answered sent.
    pub(super) fn expire_queries(&mut self, now: Now) {
        let late: Vec<u64> = self
            .queries
            .open
            .iter()
            .filter(|(_, q)| q.deadline <= now.mono_ms)
            .map(|(r, _)| *r)
            .collect();
        for request in late {
            let query = self.queries.open.remove(&request).expect("open");
            tracing::warn!(
                context = %self.context(),
                silent = query.waiting.len(),
                "a principal query got no answer from every server within the ack timeout: the answer may miss their sessions"
            );
            self.finish_query(query, false);
        }
    }

    /// When the node must be woken for a query's deadline.
    pub(super) fn next_query_deadline(&self) -> Option<u64> {
        self.queries.open.values().map(|q| q.deadline).min()
    }

    fn finish_query(&mut self, query: Query, complete: bool) {
        self.outputs.push(Output::PrincipalSessions {
            waiter: query.waiter,
            sessions: query.found.into_values().collect(),
            complete,
        });
    }
}
