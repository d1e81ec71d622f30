//! Two contexts on one channel (half the seeds). Every process but the last runs a second
//! web application's sessions (`/cart`) beside the checked one (`/sim`), on the same
//! channel: the messages of both contexts share each connection, the network's losses,
//! delays, duplicates and partitions, the membership machine and every crash, and each
//! is routed to its context by its topic, as the channel's listeners do. The second
//! context runs the other manager (a DeltaManager beside a BackupManager, and the
//! reverse). The last process does not run it: its channel refuses the second topic, as
//! a real channel without a listener does (`Delivered::Refused`).
//!
//! Checked, besides every check of the first context, which must hold unchanged:
//! - after every step, no session of one context is held by the other's nodes, no
//!   session destroyed on a second-context node is back there, and the process that does
//!   not run the second context is never one of its servers;
//! - once quiet, the second context serves on each of its processes, with the others
//!   running it as its servers; its copies are complete and alike (`check_copies`: every
//!   node for the DeltaManager, primary and backup for the BackupManager); and every write
//!   to it that every recipient acknowledged is on a live node (its value or a newer one),
//!   unless it expired or every node that acknowledged it crashed.
//!
//! Its clients are simple: each keeps one session and writes a counter, one request at a
//! time, on any node that runs the context (a BackupManager node that must fetch first
//! asks the holders and writes once they answered, as `SessionManager::get` does).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use rand::Rng;
use tribes::{MemberId, MembershipEvent};

use super::check::check_copies;
use super::node::clocks;
use super::{AckedWrite, Purpose, Sim, SimConfig, TOUCH_INTERVAL_MS};
use crate::core::CoreConfig;
use crate::data::{Blob, Op, Stamp, writer_of};
use crate::id::SessionId;
use crate::kind::{ManagerKind, ReplicationMode};
use crate::listener::{DestroyReason, SessionEvent};
use crate::node::{Delivered, Output, SessionNode};
use crate::wire::Msg;

/// Set, the second context runs the BackupManager: a known gap, not run in CI (see
/// `docs/simulation.md`).
pub(crate) const SECOND_BACKUP: &str = "TRIBES_SIM_SECOND_BACKUP";
/// The second context's name.
const CONTEXT: &str = "/cart";
/// Its clients.
const USERS: usize = 3;
/// The attribute its clients write.
const ATTR: &str = "x";
/// The waiter ids of its clients' fetches (`FETCH_WAITER + user`), apart from the first
/// context's.
const FETCH_WAITER: u64 = 1 << 32;
/// Its sessions last longer than the first context's (an application's own setting), so
/// they outlive the settle and every acknowledged write is judged once quiet.
const MAX_INACTIVE_MS: u64 = 600_000;

/// Which context's topic a message travels on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Topic {
    /// The checked context, `/sim`.
    Main,
    /// The second context, `/cart`.
    Second,
}

/// The second context: its settings (none when the run has one context) and what its
/// clients did.
pub(super) struct Second {
    cfg: Option<Arc<CoreConfig>>,
    kind: ManagerKind,
    users: Vec<User>,
    /// Sessions its clients created, with their last acknowledged access.
    sessions: BTreeMap<SessionId, u64>,
    /// Acknowledged invalidations, with the nodes that acknowledged them.
    invalidated: BTreeMap<SessionId, Vec<MemberId>>,
    /// Invalidations that got no answer: they may have ended the session or not.
    in_doubt: BTreeSet<SessionId>,
    expired: BTreeSet<SessionId>,
    acked: Vec<AckedWrite>,
}

#[derive(Debug, Default)]
struct User {
    session: Option<SessionId>,
    next: u64,
    busy: bool,
    /// Waiting at this node for the fetch it runs before the write.
    fetching: Option<MemberId>,
}

impl Second {
    pub(super) fn new(cfg: &SimConfig, main: &CoreConfig) -> Self {
        // The DeltaManager: its sessions outlive the settle, and under the BackupManager
        // such sessions do not yet converge in every seed (see `SECOND_BACKUP`).
        let kind = match std::env::var_os(SECOND_BACKUP) {
            Some(_) => ManagerKind::Backup { backup_count: 1 },
            None => ManagerKind::Delta,
        };
        let core = CoreConfig {
            context: CONTEXT.into(),
            kind,
            replication: ReplicationMode::Deltas,
            filter: super::filter::filter(false),
            max_active: None,
            max_inactive_ms: MAX_INACTIVE_MS,
            store_backed: false,
            ..main.clone()
        };
        Second {
            cfg: cfg.second_context.then(|| Arc::new(core)),
            kind,
            users: (0..USERS).map(|_| User::default()).collect(),
            sessions: BTreeMap::new(),
            invalidated: BTreeMap::new(),
            in_doubt: BTreeSet::new(),
            expired: BTreeSet::new(),
            acked: Vec::new(),
        }
    }

    /// The second context's settings for the process in `slot`, if it runs it: every
    /// process but the last.
    pub(super) fn config_for(&self, slot: usize, nodes: usize) -> Option<Arc<CoreConfig>> {
        self.cfg.clone().filter(|_| slot + 1 < nodes)
    }
}

impl Sim {
    fn second_node(&mut self, at: MemberId) -> Option<&mut SessionNode> {
        self.node(at).and_then(|n| n.second.as_mut()).map(|s| &mut s.session)
    }

    /// A message on the second topic: handed to that context's node, or refused by a
    /// process that does not run it.
    pub(super) fn on_second_msg(&mut self, at: MemberId, from: MemberId, msg: Msg) -> Result<Delivered, String> {
        let now = clocks(self.now);
        let Some(session) = self.second_node(at) else {
            return Ok(Delivered::Refused(format!(
                "no listener for the topic of {CONTEXT} on {at}"
            )));
        };
        session.handle_message(now, from, msg);
        self.run_second_outputs(at)?;
        Ok(Delivered::Acked)
    }

    /// A membership event reaches every context of the process.
    pub(super) fn second_member_event(&mut self, at: MemberId, event: &MembershipEvent) {
        let now = clocks(self.now);
        if let Some(session) = self.second_node(at) {
            super::membership::member_event(session, now, event);
            self.run_second_outputs_later(at);
        }
    }

    /// The second context's timer and discovery, as the first one's (`timers`).
    pub(super) fn second_timers(&mut self, at: MemberId, settled: bool) -> Result<(), String> {
        let now = clocks(self.now);
        let due = self.now;
        let Some(session) = self.second_node(at) else {
            return Ok(());
        };
        if session.is_discovering() && settled {
            session.handle_discovery_settled();
        }
        if session.poll_timeout() <= due {
            session.handle_timeout(now);
            self.run_second_outputs(at)?;
        }
        Ok(())
    }

    /// What the second context's node asked for: sends on its topic, its destroyed
    /// sessions, the end of its state transfer.
    pub(super) fn run_second_outputs(&mut self, owner: MemberId) -> Result<(), String> {
        let Some(session) = self.second_node(owner) else {
            return Ok(());
        };
        let mut outputs = session.drain_outputs();
        super::driver::in_replay_order(&mut outputs);
        for output in outputs {
            match output {
                Output::Send(t) => self.transmit(Topic::Second, owner, t),
                Output::Event(SessionEvent::Destroyed { id, reason, .. }) => {
                    if reason == DestroyReason::Expired {
                        self.second.expired.insert(id);
                    }
                    if let Some(second) = self.node(owner).and_then(|n| n.second.as_mut()) {
                        second.destroyed.insert(id);
                    }
                }
                Output::Transferred(result) => {
                    let now = clocks(self.now);
                    if let Some(session) = self.second_node(owner) {
                        session.serve(now, result.is_err());
                    }
                    self.trace(|| format!("{owner}: {CONTEXT} READY (degraded: {})", result.is_err()));
                }
                Output::Fetched { waiter, .. } => self.second_fetched(owner, waiter)?,
                // Its clients do not use principals.
                _ => {}
            }
        }
        Ok(())
    }

    pub(super) fn run_second_outputs_later(&mut self, owner: MemberId) {
        if let Err(e) = self.run_second_outputs(owner) {
            self.violation.get_or_insert(e);
        }
    }

    /// Each idle client of the second context may send a request.
    pub(super) fn second_context_request(&mut self) -> Result<(), String> {
        if self.second.cfg.is_none() {
            return Ok(());
        }
        for user in 0..USERS {
            if let Some(at) = self.second.users[user].fetching
                && self.slot_of(at).is_none()
            {
                // The node crashed: no answer, nothing written.
                self.second.users[user].fetching = None;
                self.second.users[user].busy = false;
            }
            if !self.second.users[user].busy && self.rng.random_bool(0.2) {
                self.second_request(user)?;
            }
        }
        Ok(())
    }

    fn second_request(&mut self, user: usize) -> Result<(), String> {
        let serving: Vec<usize> = (0..self.nodes.len())
            .filter(|s| {
                self.nodes[*s]
                    .as_ref()
                    .and_then(|n| n.second.as_ref())
                    .is_some_and(|c| c.session.is_serving())
            })
            .collect();
        if serving.is_empty() {
            return Ok(());
        }
        let slot = serving[self.rng.random_range(0..serving.len())];
        let now = self.now;
        let me = self.nodes[slot].as_ref().expect("serving").id;
        let second = &self.second;
        let live = second.users[user].session.filter(|id| {
            !second.expired.contains(id) && second.sessions.get(id).is_some_and(|last| last + MAX_INACTIVE_MS > now)
        });
        let Some(id) = live else {
            let id = SessionId::generate(&mut self.rng);
            let session = self.second_node(me).expect("serving");
            session
                .core_mut()
                .create(now, id, Arc::from(format!("slot{slot}")))
                .map_err(|e| e.to_string())?;
            self.second.sessions.insert(id, now);
            self.second.users[user].session = Some(id);
            return self.second_write(user, me, id, Op::Set(ATTR.into(), counter(0)));
        };
        let session = self.second_node(me).expect("serving");
        let found = session.core().get(now, &id).is_some();
        if session.core().must_fetch(&id, found, true, now) {
            // As `SessionManager::get`: the node asks the holders; `second_fetched` goes on.
            session.begin_fetch(clocks(now), id, FETCH_WAITER + user as u64);
            self.second.users[user].busy = true;
            self.second.users[user].fetching = Some(me);
            return self.run_second_outputs(me);
        }
        self.second_read_and_write(user, me, id)
    }

    /// The fetch a client waited for at `at` completed: its request goes on.
    fn second_fetched(&mut self, at: MemberId, waiter: u64) -> Result<(), String> {
        let Some(user) = waiter.checked_sub(FETCH_WAITER).map(|u| u as usize) else {
            return Ok(());
        };
        let Some(u) = self.second.users.get_mut(user).filter(|u| u.fetching == Some(at)) else {
            return Ok(());
        };
        u.fetching = None;
        u.busy = false;
        match u.session {
            Some(id) => self.second_read_and_write(user, at, id),
            None => Ok(()),
        }
    }

    /// The request's write on `me`: the counter, or now and then an invalidation.
    fn second_read_and_write(&mut self, user: usize, me: MemberId, id: SessionId) -> Result<(), String> {
        let now = self.now;
        let found = self.second_node(me).is_some_and(|s| s.core().get(now, &id).is_some());
        if !found {
            return Ok(()); // not here (yet): the next request tries again
        }
        if self.rng.random_bool(0.05) {
            return self.second_write(user, me, id, Op::Invalidate);
        }
        let next = self.second.users[user].next + 1;
        self.second.users[user].next = next;
        self.second_write(user, me, id, Op::Set(ATTR.into(), counter(next)))
    }

    /// `SessionManager::commit` on the second context, sync-ack.
    fn second_write(&mut self, user: usize, me: MemberId, id: SessionId, op: Op) -> Result<(), String> {
        let now = self.now;
        let session = self.second_node(me).expect("live");
        let base = session.core().get(now, &id).map_or(0, |d| d.version);
        let mut out = Vec::new();
        let invalidate = op == Op::Invalidate;
        let commit = match session.core_mut().commit(now, id, base, vec![op], false, &mut out) {
            Ok(commit) => commit,
            Err(e) => {
                self.trace(|| format!("{CONTEXT} commit of {id} on {me} refused: {e}"));
                return Ok(()); // destroyed meanwhile: nothing written
            }
        };
        session.absorb(out);
        self.run_second_outputs(me)?;
        let mut parts = commit.sends;
        parts.iter_mut().for_each(|(to, _)| to.sort());
        self.second.users[user].busy = true;
        let Some(data) = commit.data.filter(|_| !invalidate) else {
            let holders = super::holders_of(&parts, me);
            self.send_sync_second(me, parts, Purpose::SecondEnd { user, id, holders });
            return Ok(());
        };
        let write = AckedWrite {
            id,
            name: ATTR,
            stamp: Stamp {
                version: data.version,
                writer: writer_of(me),
            },
            at_ms: now,
            holders: super::holders_of(&parts, me),
        };
        self.send_sync_second(me, parts, Purpose::Second { user, write });
        Ok(())
    }

    /// A second-context write was acknowledged by every recipient, or not.
    pub(super) fn second_write_done(&mut self, user: usize, write: AckedWrite, ok: bool) {
        self.second.users[user].busy = false;
        if ok {
            let last = self.second.sessions.entry(write.id).or_insert(write.at_ms);
            *last = (*last).max(write.at_ms);
            self.stats.second_acked += 1;
            self.second.acked.push(write);
        }
    }

    /// A second-context invalidation was acknowledged by every recipient: the session is
    /// gone everywhere once quiet. Without an answer (its node crashed) it may or may not
    /// have ended, so it is judged no more: anti-entropy makes every node agree either way.
    pub(super) fn second_end_done(&mut self, user: usize, id: SessionId, holders: Vec<MemberId>, ok: bool) {
        self.second.users[user].busy = false;
        self.second.users[user].session = None;
        match ok {
            true => drop(self.second.invalidated.insert(id, holders)),
            false => drop(self.second.in_doubt.insert(id)),
        }
    }

    /// After every step: the contexts keep their sessions apart, and the process without
    /// the second context is never one of its servers.
    pub(super) fn check_second_step(&self) -> Result<(), String> {
        if self.second.cfg.is_none() {
            return Ok(());
        }
        let outsiders: Vec<MemberId> = self
            .nodes
            .iter()
            .flatten()
            .filter(|n| n.second.is_none())
            .map(|n| n.id)
            .collect();
        for node in self.nodes.iter().flatten() {
            for d in node.core().sessions() {
                ensure!(
                    !self.second.sessions.contains_key(&d.id),
                    "session {} of {CONTEXT} is held by {}'s /sim node: the contexts exchanged sessions",
                    d.id,
                    node.id
                );
            }
            let Some(second) = &node.second else { continue };
            let core = second.session.core();
            for d in core.sessions() {
                ensure!(
                    self.second.sessions.contains_key(&d.id),
                    "{}'s {CONTEXT} node holds session {}, which no client of {CONTEXT} created: the contexts exchanged sessions",
                    node.id,
                    d.id
                );
            }
            for id in &second.destroyed {
                ensure!(
                    !core.contains(id),
                    "session {id} of {CONTEXT} came back on {} after it was destroyed there",
                    node.id
                );
            }
            for m in &outsiders {
                ensure!(
                    !core.servers().contains(m),
                    "{} counts {m} as a server of {CONTEXT}, but that process does not run it",
                    node.id
                );
            }
        }
        Ok(())
    }

    /// Quiet for the second context: each of its nodes serves, with every other live
    /// process that runs it as its servers, and no expiry pending.
    pub(super) fn second_context_quiet(&self) -> bool {
        let runs: BTreeSet<MemberId> = self
            .nodes
            .iter()
            .flatten()
            .filter(|n| n.second.is_some())
            .map(|n| n.id)
            .collect();
        self.nodes.iter().flatten().all(|n| {
            let Some(second) = &n.second else { return true };
            let core = second.session.core();
            let servers: BTreeSet<MemberId> = core.servers().iter().copied().collect();
            let others: BTreeSet<MemberId> = runs.iter().copied().filter(|m| *m != n.id).collect();
            second.session.is_serving() && servers == others && core.pending_expiries() == 0
        })
    }

    /// At the end of a heal + settle: the second context's copies, and its acknowledged
    /// writes.
    pub(super) fn check_second_context(&mut self) -> Result<(), String> {
        if self.second.cfg.is_none() {
            return Ok(());
        }
        let nodes: Vec<(MemberId, &SessionNode)> = self
            .nodes
            .iter()
            .flatten()
            .filter_map(|n| n.second.as_ref().map(|s| (n.id, &s.session)))
            .collect();
        let live: BTreeSet<MemberId> = nodes.iter().map(|n| n.0).collect();
        // An invalidation every node that acknowledged it crashed with (a partition side of
        // one) may be lost, as a write is.
        let (kept, lost): (BTreeMap<_, _>, BTreeMap<_, _>) = std::mem::take(&mut self.second.invalidated)
            .into_iter()
            .partition(|(_, holders): &(SessionId, Vec<MemberId>)| holders.iter().any(|m| live.contains(m)));
        self.second.invalidated = kept;
        self.second.in_doubt.extend(lost.into_keys());
        let second = &self.second;
        let gone = |id: &SessionId| {
            if second.invalidated.contains_key(id) {
                Some("invalidated")
            } else if second.expired.contains(id) {
                Some("expired")
            } else {
                None
            }
        };
        check_copies(second.kind, &nodes, gone, |m, id| self.fetched_lately(m, id))?;
        let now = self.now;
        let mut checked = 0;
        for w in &second.acked {
            let idle = second
                .sessions
                .get(&w.id)
                .is_none_or(|last| last + MAX_INACTIVE_MS + 2 * TOUCH_INTERVAL_MS < now);
            let ended = gone(&w.id).is_some() || second.in_doubt.contains(&w.id);
            if idle || ended || !w.holders.iter().any(|m| live.contains(m)) {
                continue;
            }
            checked += 1;
            let held = nodes.iter().any(|(_, n)| {
                n.core()
                    .get(now, &w.id)
                    .is_some_and(|d| d.attr(w.name).is_some_and(|a| a.stamp >= w.stamp))
            });
            ensure!(
                held,
                "acknowledged write lost in {CONTEXT}: session {} {:?} stamp {:?} (acked at {} ms) is on no live node, though {:?} of its holders {:?} live",
                w.id,
                w.name,
                w.stamp,
                w.at_ms - 1_000_000,
                w.holders.iter().filter(|m| live.contains(m)).collect::<Vec<_>>(),
                w.holders
            );
        }
        self.stats.second_checked += checked;
        // Judged: the next phase checks its own writes.
        self.second.acked.clear();
        Ok(())
    }
}

fn counter(n: u64) -> Blob {
    Blob(n.to_le_bytes().to_vec().into())
}
