//! The core's part of principals (Tomcat's `ClusterSingleSignOn`): the sessions of a
//! principal held here, and "log out everywhere".
//!
//! A logout everywhere is a record, `(principal, at_ms)`: every session of that principal
//! whose login (`since_ms`) is at or before `at_ms` ends, on every node that holds the
//! record. The record is sent to every server when the logout happens, again to every
//! member that starts serving the context (a joiner, or the other side of a partition at
//! its heal), and it is checked against every session that gets a principal here later
//! (a replicated write, a transferred or repaired copy). So a session logged in on the
//! minority side of a partition before the logout does not survive the heal; a login
//! after it does. Records are kept for the tombstone time to live.

use std::sync::Arc;

use tribes::MemberId;

use super::{Core, Effect};
use crate::data::Op;
use crate::id::SessionId;
use crate::kind::ManagerKind;
use crate::listener::{DestroyReason, Origin};
use crate::principal::{MaxSessionsPolicy, Summary, beyond_limit};
use crate::wire::Msg;

impl Core {
    /// The sessions of `principal` this node answers for (live ones, as `get` would see
    /// them): every one it holds (DeltaManager), or (BackupManager) those it is the
    /// primary of, or whose primary no longer serves. A backup's copy may be older than
    /// the last acknowledged write (a principal cleared since), the primary's is not: a
    /// commit's claim reaches every server before the commit returns in sync-ack mode.
    pub(crate) fn principal_sessions(&self, now_ms: u64, principal: &str) -> Vec<Summary> {
        let index = self.sessions.index();
        let answers_for = |primary: Option<MemberId>| match self.cfg.kind {
            ManagerKind::Delta => true,
            ManagerKind::Backup { .. } => primary.is_none_or(|p| p == self.local || !self.servers.contains(&p)),
        };
        index
            .ids_of(principal)
            .into_iter()
            .filter_map(|id| {
                let data = self.sessions.get(&id)?;
                let (_, since_ms) = index.principal_of(&id)?;
                let live = !self.too_old(data, now_ms) && data.expires_at_ms() >= now_ms;
                (live && answers_for(data.primary)).then(|| Summary::of(data, since_ms))
            })
            .collect()
    }

    /// Logs `principal` out everywhere as of `at_ms`: remembers the record, ends the
    /// sessions held here, and tells every server. Returns the sessions ended here.
    pub(crate) fn log_out_principal(
        &mut self,
        now_ms: u64,
        principal: &str,
        at_ms: u64,
        out: &mut Vec<Effect>,
    ) -> Vec<SessionId> {
        let record = (Arc::<str>::from(principal), at_ms);
        let ended = self.remember_logouts(now_ms, std::slice::from_ref(&record), out);
        if !self.servers.is_empty() {
            out.push(Effect::Send(self.servers.clone(), Msg::LoggedOut(vec![record])));
        }
        ended
    }

    /// The logouts this node knows (to send to a member that starts serving).
    pub(crate) fn logouts(&self) -> Vec<(Arc<str>, u64)> {
        let mut all: Vec<(Arc<str>, u64)> = self.logouts.iter().map(|(p, at)| (p.clone(), *at)).collect();
        all.sort();
        all
    }

    /// Keeps the later of each record and ends the sessions held here that it covers.
    pub(super) fn remember_logouts(
        &mut self,
        now_ms: u64,
        records: &[(Arc<str>, u64)],
        out: &mut Vec<Effect>,
    ) -> Vec<SessionId> {
        let mut ended = Vec::new();
        for (principal, at_ms) in records {
            let at = self.logouts.entry(principal.clone()).or_insert(0);
            *at = (*at).max(*at_ms);
            let at = *at;
            let covered: Vec<SessionId> = self
                .sessions
                .index()
                .ids_of(principal)
                .into_iter()
                .filter(|id| {
                    self.sessions
                        .index()
                        .principal_of(id)
                        .is_some_and(|(_, since)| since <= at)
                })
                .collect();
            for id in covered {
                self.destroy(now_ms, id, DestroyReason::Invalidated, Origin::Local, out);
                ended.push(id);
            }
        }
        ended
    }

    /// Ends the sessions that got a principal since the last check and are covered by a
    /// logout this node knows (a copy that arrived after the logout, from a member that
    /// had not heard of it).
    pub(super) fn check_logouts(&mut self, now_ms: u64, out: &mut Vec<Effect>) {
        let fresh = self.sessions.take_fresh();
        if self.logouts.is_empty() {
            return;
        }
        for id in fresh {
            let covered = self
                .sessions
                .index()
                .principal_of(&id)
                .is_some_and(|(p, since)| self.logouts.get(p).is_some_and(|at| since <= *at));
            if covered {
                tracing::info!(context = %self.cfg.context, session = %id.log_id(), "a session of a principal logged out everywhere arrived (from a member that had not heard of the logout): ended");
                self.destroy(now_ms, id, DestroyReason::Invalidated, Origin::Local, out);
            }
        }
    }

    /// The principal index equals the sessions held (for the simulation).
    #[cfg(test)]
    pub(crate) fn check_principal_index(&self) -> Result<(), String> {
        self.sessions.check_index()
    }

    /// The principal and login time of each session held here (for the simulation).
    #[cfg(test)]
    pub(crate) fn principals_held(&self) -> Vec<(SessionId, Arc<str>, u64)> {
        self.sessions
            .keys()
            .filter_map(|id| {
                let (p, since) = self.sessions.index().principal_of(id)?;
                Some((*id, p.clone(), since))
            })
            .collect()
    }

    /// The session limit per principal this core enforces at its ticks (see
    /// [`Core::enforce_session_limits`]).
    pub(crate) fn set_session_limit(&mut self, limit: Option<(usize, MaxSessionsPolicy)>) {
        self.session_limit = limit;
    }

    /// DeltaManager: the coordinator (while it sees a majority) evicts the sessions of a
    /// principal over the limit, by the same rule as a login (`EvictOldest`: the oldest
    /// logins; `Refuse`: all but the oldest `max`), so the limit holds once the cluster is
    /// quiet even when logins raced in async mode. (A BackupManager node does not hold
    /// every session: there the login's own check enforces it.)
    pub(super) fn enforce_session_limits(&mut self, now_ms: u64, majority: bool, out: &mut Vec<Effect>) {
        let Some((max, policy)) = self.session_limit else {
            return;
        };
        if self.cfg.kind != ManagerKind::Delta || !majority || self.coordinator() != self.local {
            return;
        }
        for principal in self.sessions.index().over_limit(max) {
            let all = self.principal_sessions(now_ms, &principal);
            let victims: Vec<SessionId> = match policy {
                MaxSessionsPolicy::EvictOldest => beyond_limit(all, max).iter().map(|s| s.id).collect(),
                MaxSessionsPolicy::Refuse => {
                    let mut all = all;
                    all.sort_by_key(|s| (s.since_ms, s.id));
                    all.split_off(max.min(all.len())).iter().map(|s| s.id).collect()
                }
            };
            for id in victims {
                let base = self.sessions.get(&id).map_or(0, |d| d.version);
                if let Ok(commit) = self.commit(now_ms, id, base, vec![Op::Invalidate], false, out) {
                    tracing::info!(context = %self.cfg.context, session = %id.log_id(), "a session was evicted: its principal has more sessions than the limit allows");
                    for (to, msg) in commit.sends {
                        out.push(Effect::Send(to, msg));
                    }
                    out.push(Effect::Evicted {
                        id,
                        principal: principal.clone(),
                    });
                }
            }
        }
    }

    /// Forgets logouts older than the tombstone time to live.
    pub(super) fn forget_logouts(&mut self, now_ms: u64) {
        let ttl = self.cfg.tombstone_ttl_ms;
        self.logouts.retain(|_, at| at.saturating_add(ttl) > now_ms);
    }

    /// Answers a member's principal query from the sessions held here.
    pub(super) fn answer_principal_query(
        &self,
        now_ms: u64,
        from: MemberId,
        request: u64,
        principal: &str,
        out: &mut Vec<Effect>,
    ) {
        let sessions = self.principal_sessions(now_ms, principal);
        out.push(Effect::Send(vec![from], Msg::PrincipalSessions { request, sessions }));
    }

    /// Members that start serving the context learn the logouts this node knows (and the
    /// expiry events delivered: `core/expiry_events.rs`).
    pub(super) fn tell_new_servers(&mut self, old: &[MemberId], out: &mut Vec<Effect>) {
        let new: Vec<MemberId> = self.servers.iter().copied().filter(|m| !old.contains(m)).collect();
        if new.is_empty() {
            return;
        }
        if !self.logouts.is_empty() {
            out.push(Effect::Send(new.clone(), Msg::LoggedOut(self.logouts())));
        }
        self.tell_delivered(&new, out);
    }
}
