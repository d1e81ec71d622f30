//! The runtime's part, as `manager/driver.rs` does it for a real process: the shipped
//! node's outputs carried out (sends, sync-ack outcomes, events, the end of a state
//! transfer), its messages handed in, and its timers run when `poll_timeout` is due.

use std::collections::BTreeSet;

use tribes::MemberId;

use super::node::clocks;
use super::{Body, MAX_INACTIVE_MS, Purpose, Sim, Topic, UNWAITED_FETCH, check};
use crate::core::Effect;
use crate::listener::{DestroyReason, SessionEvent};
use crate::node::{Delivered, Output, Transmit};
use crate::wire::Msg;

impl Sim {
    /// The core's effects of a local call: through the node, then done (`Inner::perform`).
    pub(super) fn perform(&mut self, owner: MemberId, out: Vec<Effect>) -> Result<(), String> {
        if let Some(node) = self.node(owner) {
            node.session.absorb(out);
        }
        self.run_outputs(owner)
    }

    /// Does what the node `owner` asked for (`Inner::act`): sends (async, or sync-ack
    /// with the node's token), events (checked), the end of its state transfer (it
    /// serves at once: the simulation has no store).
    pub(super) fn run_outputs(&mut self, owner: MemberId) -> Result<(), String> {
        let Some(node) = self.node(owner) else { return Ok(()) };
        let mut outputs = node.session.drain_outputs();
        in_replay_order(&mut outputs);
        for output in outputs {
            match output {
                Output::Send(t) => self.transmit(Topic::Main, owner, t),
                Output::Event(ev) => self.on_event(owner, ev)?,
                Output::Fetched { waiter, confirmed } => {
                    if waiter != UNWAITED_FETCH {
                        self.fetch_done(owner, waiter as usize, confirmed)?;
                    }
                }
                // No simulated request queries principals.
                Output::PrincipalSessions { .. } => {}
                Output::Expired { id, .. } => self.on_expired_event(owner, id)?,
                Output::Evicted { id, .. } => self.on_evicted(owner, id),
                Output::Transferred(result) => {
                    let degraded = self.store_load(owner, result.is_err())?;
                    let now = clocks(self.now);
                    let Some(slot) = self.slot_of(owner) else { return Ok(()) };
                    let node = self.nodes[slot].as_mut().expect("live");
                    node.session.serve(now, degraded);
                    if node.session.transferred_from().is_empty() && !node.members().is_empty() {
                        // Every member answered NotReady (they were all starting): this
                        // node serves without a snapshot (see `sourceless`).
                        self.sourceless.insert(owner, self.now);
                    }
                    if degraded {
                        self.stats.degraded += 1;
                    }
                    self.trace(|| format!("{owner}: READY (degraded: {degraded})"));
                    self.check_joiner(slot, degraded)?;
                }
            }
        }
        Ok(())
    }

    /// A send the node of `topic` at `owner` asked for, as the channel carries it: to
    /// each member, or sync-ack with the outcome reported back under the node's token.
    pub(super) fn transmit(&mut self, topic: Topic, owner: MemberId, t: Transmit) {
        match t.ack {
            None => {
                for m in t.to {
                    let msg = t.msg.clone();
                    self.send(owner, m, Body::Msg { topic, msg, ack: None });
                }
            }
            Some(ack) => {
                let purpose = Purpose::Node {
                    topic,
                    token: ack.token,
                };
                self.send_on(topic, owner, vec![(t.to, t.msg)], purpose, Vec::new());
            }
        }
    }

    /// A session event of node `owner`: an expiry must not come before its time.
    pub(super) fn on_event(&mut self, owner: MemberId, ev: SessionEvent) -> Result<(), String> {
        let SessionEvent::Destroyed { id, reason, .. } = ev else {
            return Ok(());
        };
        self.trace(|| format!("{owner}: destroyed {id} ({reason:?})"));
        // A node that missed a rotation hears of its old id through anti-entropy as
        // expired (a tombstone does not say why): not an expiry of the session (known
        // gap, see docs/simulation.md).
        if reason == DestroyReason::Expired {
            // Whoever destroyed it as expired reports it, renamed or not (a rotation that
            // reached no live node leaves the old id to expire).
            self.note_expired_on(owner, id);
            self.store_expired(owner, id)?;
            if self.oracle.renamed.contains_key(&id) {
                // Its client moved to the new id: a copy of the old one that missed the
                // rotation ends once idle there (no premature-expiry check applies).
                self.oracle.expired.insert(id);
            }
        }
        if reason == DestroyReason::Expired && !self.oracle.renamed.contains_key(&id) {
            let last = self.oracle.sessions.get(&id).copied().unwrap_or(0);
            let live: BTreeSet<MemberId> = self.nodes.iter().flatten().map(|n| n.id).collect();
            let access_lost = self
                .oracle
                .access_holders
                .get(&id)
                .is_some_and(|h| !h.iter().any(|m| live.contains(m)));
            ensure!(
                self.oracle.invalidated.contains(&id)
                    || self.oracle.logged_out.contains(&id)
                    || self.oracle.expired.contains(&id)
                    || access_lost
                    || last + MAX_INACTIVE_MS <= self.now,
                "premature expiry: {owner} expired {id}, last client access {} ms ago (max inactive {MAX_INACTIVE_MS} ms)",
                self.now - last
            );
            self.oracle.expired.insert(id);
        }
        if let Some(node) = self.node(owner) {
            node.destroyed.insert(id);
        }
        Ok(())
    }

    /// `run_outputs` where the caller cannot fail: a broken invariant is kept and fails
    /// the step (`check_step`).
    pub(super) fn run_outputs_later(&mut self, owner: MemberId) {
        if let Err(e) = self.run_outputs(owner) {
            self.violation.get_or_insert(e);
        }
    }

    /// `handle_incoming`: the node decides; returns the ack result.
    pub(super) fn on_msg(&mut self, at: MemberId, from: MemberId, msg: Msg) -> Result<Delivered, String> {
        let now = clocks(self.now);
        if let Msg::ExpiryDelivered(ids) = &msg {
            self.note_marks(at, ids);
        }
        if let Msg::GetAll { request } = &msg
            && let Some(node) = self.node(at)
            && node.is_serving()
        {
            // What the source streams, to check the joiner against. A duplicated GetAll
            // streams a second snapshot under the same request; the joiner completes on
            // the first `Done`, so the first snapshot is the one to check it against.
            let request = *request;
            let mut sessions = node.core().snapshot_for(from);
            sessions.sort_by_key(|d| d.id);
            let snapshot = sessions.iter().map(check::AttrsOf::of).collect();
            if let Some(joiner) = self.node(from) {
                joiner.snapshots.entry(request).or_insert(snapshot);
            }
        }
        let node = self.node(at).expect("receiver is live");
        node.session.handle_message(now, from, msg);
        self.run_outputs(at)?;
        Ok(Delivered::Acked)
    }

    /// `run_driver`'s timer: each node's `handle_timeout` once its `poll_timeout` is due.
    /// Discovery settles as static discovery does (`discovery_settled` in `manager.rs`):
    /// every configured address was probed, and every process that answered is a member.
    /// Here: each other machine is down, on the other side of a partition (its probe
    /// timed out), or its process is in the membership (or the discovery wait passed).
    pub(super) fn timers(&mut self) -> Result<(), String> {
        let now = clocks(self.now);
        for slot in 0..self.nodes.len() {
            let settled = (0..self.nodes.len()).all(|b| {
                let Some(other) = self.nodes[b].as_ref().filter(|_| b != slot && self.connected(slot, b)) else {
                    return true;
                };
                self.nodes[slot]
                    .as_ref()
                    .is_some_and(|n| n.membership.members().any(|m| m.id() == other.id))
            });
            let Some(node) = self.nodes[slot].as_mut() else {
                continue;
            };
            if node.session.is_discovering() && settled {
                node.session.handle_discovery_settled();
            }
            let id = node.id;
            if node.session.poll_timeout() <= self.now {
                node.session.handle_timeout(now);
                self.run_outputs(id)?;
            }
            self.second_timers(id, settled)?;
        }
        Ok(())
    }
}

/// The core iterates hash maps: order what a node sends by content so a seed replays (a
/// stable sort: acknowledged sends and the rest keep the node's order).
pub(super) fn in_replay_order(outputs: &mut [Output]) {
    outputs.sort_by_cached_key(|o| match o {
        Output::Send(Transmit { to, msg, ack: None }) => format!("{to:?}{msg:?}"),
        _ => String::new(),
    });
}
