//! Register clients: simulated users that each keep one session (a cookie) and do a
//! read-modify-write of a counter on every request, with sync-ack commits, as the
//! multi-process non-sticky test does over real processes. Some are sticky (the same
//! node while it serves, the next one when it does not, as a balancer fails over), the
//! others go round robin over the nodes (a balancer without affinity). A request runs
//! as `SessionManager::get` then `commit` run it: the BackupManager asks the holders
//! first when [`Core::must_fetch`](crate::core::Core::must_fetch) says so, waits for
//! their answers, then reads and writes.
//!
//! The guarantee checked (the README's "Behind any load balancer" table, sync mode):
//! the session behaves as one register. A read returns at least the last acknowledged
//! write, and at most one more per write that got no answer since (it may or may not
//! have landed); so every acknowledged write is seen by the next request on any node,
//! and reads never go back. Excused, as documented: every node that held the last
//! acknowledged write crashed; a node serving degraded (its state transfer failed); a
//! BackupManager read whose fetch did not hear from every holder within the ack
//! timeout (it goes on with what the others sent: counted as `register_unconfirmed`,
//! and a known gap, see the README); and a partition, from its start until the heal and settle (split brain: each side
//! acknowledges its own writes), after which each client takes a new baseline.

use std::sync::Arc;

use rand::Rng;
use tribes::MemberId;

use super::node::clocks;
use super::{AckedWrite, MAX_INACTIVE_MS, Purpose, Sim};
use crate::data::{Blob, Op, Stamp, writer_of};
use crate::id::SessionId;
use crate::kind::ManagerKind;
use crate::wire::Msg;

/// How many register clients a run has.
pub(super) const CLIENTS: usize = 4;
const ATTR: &str = "n";

#[derive(Debug, Default)]
pub(super) struct Client {
    /// The slot this client sticks to, or `None`: round robin.
    sticky: Option<usize>,
    cursor: usize,
    session: Option<SessionId>,
    /// The last acknowledged value, once there is a baseline.
    floor: Option<u64>,
    /// The nodes that held it when it was acknowledged.
    holders: Vec<MemberId>,
    /// Writes since the floor that got no answer.
    unacked: u64,
    /// The highest value a write that got no answer carried since the baseline was last
    /// taken. Such a write may land after a later acknowledged one (based on a read on a
    /// node that missed it) and win over it by its newer version: a later read may return
    /// it, and that is not a stale or invented value.
    unanswered_max: Option<u64>,
    /// Whether the write in flight was based on a read every holder confirmed.
    confirmed: bool,
    busy: Option<Busy>,
}

#[derive(Debug)]
enum Busy {
    /// Waiting at `node` for the fetch it runs (`SessionNode::begin_fetch`).
    Fetching { node: MemberId },
    /// Waiting for the acks of the write.
    Committing,
}

impl Client {
    pub(super) fn new(sticky: Option<usize>) -> Self {
        Client {
            sticky,
            ..Default::default()
        }
    }
}

impl Sim {
    /// Each idle client may send a request; fetches whose answers are in go on.
    pub(super) fn register_clients(&mut self) -> Result<(), String> {
        for c in 0..self.clients.len() {
            match &self.clients[c].busy {
                Some(Busy::Fetching { node }) => {
                    if self.slot_of(*node).is_none() {
                        self.clients[c].busy = None; // the node crashed: no answer, nothing written
                    }
                }
                Some(Busy::Committing) => {}
                None => {
                    if self.rng.random_bool(0.3) {
                        self.request(c)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The fetch client `c` waited for at `at` completed (every member asked answered,
    /// or its deadline passed): the request goes on.
    pub(super) fn fetch_done(&mut self, at: MemberId, c: usize, confirmed: bool) -> Result<(), String> {
        match self.clients.get(c).and_then(|client| client.busy.as_ref()) {
            Some(Busy::Fetching { node }) if *node == at => {
                self.clients[c].busy = None;
                self.read_and_write(c, at, confirmed)
            }
            _ => Ok(()),
        }
    }

    /// The write of client `c` was acknowledged by every recipient, or not.
    pub(super) fn register_write_done(&mut self, c: usize, write: AckedWrite, value: u64, ok: bool) {
        let id = write.id;
        self.trace(|| {
            format!(
                "REGISTER client {c} wrote {value} to {id} ({}): acked {ok}",
                id.log_id()
            )
        });
        if ok {
            let last = self.oracle.sessions.entry(id).or_insert(write.at_ms);
            if write.at_ms >= *last {
                self.oracle.access_holders.insert(id, write.holders.clone());
            }
            *last = (*last).max(write.at_ms);
        }
        let client = &mut self.clients[c];
        client.busy = None;
        if let Some(old) = client.session.filter(|s| *s != id) {
            // The write changed the session's id: the response carries the new cookie.
            if ok {
                client.session = Some(id);
                self.oracle.rotated_away.insert(old);
            } else {
                // No answer: the cookie names an id that may be gone. A new visitor.
                client.session = None;
                client.floor = None;
                client.unacked = 0;
                client.unanswered_max = None;
                return;
            }
        }
        let client = &mut self.clients[c];
        if ok && !client.confirmed {
            // Based on a read that may have been stale: an older write that got no answer
            // may still win over it, so it sets no baseline (the next confirmed one does).
            client.floor = None;
            client.unacked = 0;
            client.unanswered_max = None;
            self.oracle.acked_total += 1;
            self.oracle.acked.push(write);
        } else if ok {
            client.floor = Some(value);
            client.holders = write.holders.clone();
            client.unacked = 0;
            client.unanswered_max = client.unanswered_max.filter(|v| *v > value);
            self.oracle.acked_total += 1;
            self.oracle.acked.push(write);
            self.stats.register_acked += 1;
        } else {
            client.unacked += 1;
            client.unanswered_max = client.unanswered_max.max(Some(value));
        }
    }

    /// After a partition: no checks until the heal and settle.
    pub(super) fn suspend_register_checks(&mut self) {
        self.register_checks = false;
    }

    /// After the heal and settle: checks again, from a new baseline each.
    pub(super) fn resume_register_checks(&mut self) {
        self.register_checks = true;
        for client in &mut self.clients {
            client.floor = None;
            client.unacked = 0;
            client.unanswered_max = None;
        }
    }

    /// The node the balancer sends client `c`'s next request to.
    fn pick(&mut self, c: usize) -> Option<usize> {
        let n = self.nodes.len();
        let serving = |s: usize| self.nodes[s].as_ref().is_some_and(|n| n.is_serving());
        let start = match self.clients[c].sticky {
            Some(slot) => slot,
            None => {
                let client = &mut self.clients[c];
                client.cursor = (client.cursor + 1) % n;
                client.cursor
            }
        };
        (0..n).map(|i| (start + i) % n).find(|s| serving(*s))
    }

    fn request(&mut self, c: usize) -> Result<(), String> {
        let Some(slot) = self.pick(c) else { return Ok(()) };
        let now = self.now;
        let live_session = self.clients[c].session.filter(|id| {
            !self.oracle.expired.contains(id)
                && self
                    .oracle
                    .sessions
                    .get(id)
                    .is_some_and(|last| last + MAX_INACTIVE_MS > now)
        });
        let me = self.nodes[slot].as_ref().expect("serving").id;
        let Some(id) = live_session else {
            // A new visitor: a new session with the counter at 0.
            let id = SessionId::generate(&mut self.rng);
            let route: Arc<str> = Arc::from(format!("slot{slot}"));
            let node = self.nodes[slot].as_mut().expect("serving");
            node.core_mut().create(now, id, route).map_err(|e| e.to_string())?;
            self.oracle.sessions.insert(id, now);
            self.oracle.access_holders.insert(id, vec![me]);
            self.client_sessions.insert(id);
            let client = &mut self.clients[c];
            client.session = Some(id);
            client.floor = None;
            client.unacked = 0;
            client.unanswered_max = None;
            client.confirmed = true;
            return self.write_counter(c, slot, id, 0);
        };
        let core = self.nodes[slot].as_ref().expect("serving").core();
        let found = core.get(now, &id).is_some();
        if core.must_fetch(&id, found, true, now) {
            // As `SessionManager::get`: the node asks the holders; `fetch_done` goes on.
            self.clients[c].busy = Some(Busy::Fetching { node: me });
            let node = self.nodes[slot].as_mut().expect("serving");
            node.session.begin_fetch(clocks(now), id, c as u64);
            return self.run_outputs(me);
        }
        self.read_and_write(c, me, true)
    }

    /// The request's read, checked, then its write of the value plus one.
    /// `confirmed`: every holder asked answered (or nobody had to be asked).
    fn read_and_write(&mut self, c: usize, at: MemberId, confirmed: bool) -> Result<(), String> {
        let Some(slot) = self.slot_of(at) else { return Ok(()) };
        let Some(id) = self.clients[c].session else {
            return Ok(());
        };
        let now = self.now;
        self.store_read_on_miss(at, id)?;
        let node = self.nodes[slot].as_ref().expect("live");
        let degraded = node.is_degraded();
        let read = node.core().get(now, &id).map(|d| {
            d.value(ATTR)
                .and_then(|b| b.try_into().ok())
                .map_or(0, u64::from_le_bytes)
        });
        let client = &self.clients[c];
        if !confirmed {
            self.stats.register_unconfirmed += 1;
        }
        let excused = degraded
            || !confirmed
            || !self.register_checks
            // With a write-through store the store holds it too.
            || (self.store.is_none() && client.holders.iter().all(|h| self.slot_of(*h).is_none()))
            || self.oracle.invalidated.contains(&id)
            || self.oracle.expired.contains(&id)
            || self
                .sourceless
                .get(&at)
                .is_some_and(|ready| now < ready + 3 * super::SYNC_INTERVAL_MS);
        let Some(value) = read else {
            ensure!(
                excused || client.floor.is_none(),
                "register client {c}: session {id} ({}) lost at {at}: its last acknowledged write ({:?}) was held by {:?}, some still live",
                id.log_id(),
                client.floor,
                client.holders
            );
            self.clients[c].session = None;
            return Ok(());
        };
        if let Some(floor) = client.floor
            && !excused
        {
            self.stats.register_checked += 1;
            ensure!(
                value >= floor,
                "register client {c} ({}): {at} read {value} for session {id} ({}) after the write of {floor} was acknowledged (a stale or backwards read; holders {:?})",
                if client.sticky.is_some() {
                    "sticky"
                } else {
                    "round robin"
                },
                id.log_id(),
                client.holders
            );
            ensure!(
                value <= floor + client.unacked || client.unanswered_max.is_some_and(|v| value <= v),
                "register client {c}: {at} read {value} for session {id} ({}), but only {} write(s) since the acknowledged {floor} got no answer (the highest unanswered write: {:?})",
                id.log_id(),
                client.unacked,
                client.unanswered_max
            );
        }
        self.clients[c].confirmed = confirmed;
        self.write_counter(c, slot, id, value + 1)
    }

    /// `SessionManager::commit` of the counter, sync-ack.
    fn write_counter(&mut self, c: usize, slot: usize, id: SessionId, value: u64) -> Result<(), String> {
        let now = self.now;
        let node = self.nodes[slot].as_mut().expect("live");
        let me = node.id;
        let base = node.core().get(now, &id).map_or(0, |d| d.version);
        let mut ops = vec![Op::Set(ATTR.into(), Blob(value.to_le_bytes().to_vec().into()))];
        let rotation = self.maybe_rotate(&mut ops);
        let node = self.nodes[slot].as_mut().expect("live");
        let mut out = Vec::new();
        let Ok(commit) = node.core_mut().commit(now, id, base, ops, false, &mut out) else {
            return Ok(()); // destroyed meanwhile: nothing written
        };
        // The access counts for the expiry check once the write is acknowledged
        // (`register_write_done`): one that reached nobody before its node crashed is lost
        // with it, and the session may expire from the last access that was replicated.
        self.perform(me, out)?;
        let store = match commit.sends.is_empty() {
            true => Vec::new(),
            false => self.store_commit(me, id, commit.data.as_ref().map(|d| d.id), base),
        };
        let Some(data) = commit.data else { return Ok(()) };
        if let Some(new) = rotation.filter(|n| *n == data.id) {
            self.rotated(id, new);
        }
        let id = data.id;
        let stamp = Stamp {
            version: data.version,
            writer: writer_of(me),
        };
        let mut parts: Vec<(Vec<MemberId>, Msg)> = commit.sends;
        parts.iter_mut().for_each(|(to, _)| to.sort());
        let holders = match rotation.is_some() && matches!(self.cfg.kind, ManagerKind::Backup { .. }) {
            // The old id's copies elsewhere take the new id and are dropped where placement
            // does not put it: only the new id's holders keep this write.
            true => {
                let kept: Vec<(Vec<MemberId>, Msg)> = parts.iter().filter(|(_, m)| !is_rename(m)).cloned().collect();
                super::holders_of(&kept, me)
            }
            false => super::holders_of(&parts, me),
        };
        let write = AckedWrite {
            id,
            name: ATTR,
            stamp,
            at_ms: now,
            holders,
        };
        self.clients[c].busy = Some(Busy::Committing);
        if parts.iter().all(|(to, _)| to.is_empty()) {
            self.store_ops(me, store)?;
            self.register_write_done(c, write, value, true);
        } else {
            self.send_commit(
                me,
                parts,
                Purpose::Register {
                    client: c,
                    write,
                    value,
                },
                store,
            );
        }
        Ok(())
    }
}

/// A delta that changes a session's id.
fn is_rename(msg: &Msg) -> bool {
    matches!(msg, Msg::Delta(d) if d.ops.iter().any(|o| matches!(o, Op::ChangeId(_))))
}
