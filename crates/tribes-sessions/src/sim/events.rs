//! The cluster-wide `Expired` events (`core/expiry_events.rs`), checked: never two
//! deliveries for one session (crashes and partitions included) except the two
//! documented ones: the first deliverer crashed before its mark reached the second
//! (`SimStats::expiry_duplicates_after_crash`), or a partition had begun less than the
//! failure detection time before the first delivery and the two were on its two sides
//! (the cut-off coordinator had not noticed yet: `expiry_duplicates_after_split`; the
//! README's events row says so). Never one for a session that did not
//! expire, and none lost once the cluster is quiet (every node that expired a session and
//! lives reported it, and the coordinator delivered it).

use std::collections::{BTreeMap, BTreeSet};

use tribes::MemberId;

use super::Sim;
use crate::id::SessionId;

/// What the oracle knows of expiry events.
#[derive(Debug, Default)]
pub(super) struct ExpiryOracle {
    /// Who destroyed each session as expired.
    expired_on: BTreeMap<SessionId, BTreeSet<MemberId>>,
    /// Who delivered each session's `Expired` event, and when.
    delivered: BTreeMap<SessionId, (MemberId, u64)>,
    /// When the last partition began, and each slot's side.
    split: Option<(u64, Vec<u8>)>,
    /// Which nodes received a coordinator's mark for which session.
    marked: BTreeSet<(MemberId, SessionId)>,
}

impl ExpiryOracle {
    /// A partition began at `at_ms`, with these sides.
    pub(super) fn note_split(&mut self, at_ms: u64, sides: &[u8]) {
        self.split = Some((at_ms, sides.to_vec()));
    }
}

impl Sim {
    /// Whether `a` delivered at `at_ms` on one side of a partition that had begun less
    /// than the failure detection time before, and `b` is on its other side.
    fn delivered_before_the_split_was_seen(&self, a: MemberId, at_ms: u64, b: MemberId) -> bool {
        let (Some((began, sides)), Some(sa), Some(sb)) = (&self.expiry.split, self.slot_of(a), self.slot_of(b)) else {
            return false;
        };
        at_ms >= *began && at_ms < began + super::DROP_TIME_MS && sides[sa] != sides[sb]
    }

    /// `owner` destroyed `id` as expired.
    pub(super) fn note_expired_on(&mut self, owner: MemberId, id: SessionId) {
        self.expiry.expired_on.entry(id).or_default().insert(owner);
    }

    /// `at` received marks: these sessions' events were delivered.
    pub(super) fn note_marks(&mut self, at: MemberId, ids: &[SessionId]) {
        for id in ids {
            self.expiry.marked.insert((at, *id));
        }
    }

    /// `owner` delivered the cluster-wide `Expired` event of `id`.
    pub(super) fn on_expired_event(&mut self, owner: MemberId, id: SessionId) -> Result<(), String> {
        self.trace(|| format!("{owner}: EXPIRED EVENT {id}"));
        ensure!(
            self.expiry.expired_on.contains_key(&id),
            "{owner} delivered an Expired event for {id}, which no node expired"
        );
        if let Some((first, at)) = self.expiry.delivered.get(&id).copied() {
            let first_alive = self.nodes.iter().flatten().any(|n| n.id == first);
            let mark_reached = self.expiry.marked.contains(&(owner, id));
            if first_alive && !mark_reached && self.delivered_before_the_split_was_seen(first, at, owner) {
                self.stats.expiry_duplicates_after_split += 1;
                return Ok(());
            }
            ensure!(
                !first_alive && !mark_reached,
                "the Expired event of {id} was delivered twice: by {first} (alive: {first_alive}), then by {owner} (had its mark: {mark_reached})"
            );
            self.stats.expiry_duplicates_after_crash += 1;
            return Ok(());
        }
        self.expiry.delivered.insert(id, (owner, self.now));
        self.stats.expiry_events += 1;
        Ok(())
    }

    /// Quiet: every session expired by a node that still lives has its event.
    pub(super) fn check_expiry_events(&self) -> Result<(), String> {
        let live: BTreeSet<MemberId> = self.nodes.iter().flatten().map(|n| n.id).collect();
        for node in self.nodes.iter().flatten() {
            ensure!(
                node.core().pending_expiries() == 0,
                "{} still holds {} expiry events for a coordinator after the settle",
                node.id,
                node.core().pending_expiries()
            );
        }
        for (id, on) in &self.expiry.expired_on {
            if on.iter().any(|m| live.contains(m)) {
                ensure!(
                    self.expiry.delivered.contains_key(id),
                    "session {id} expired on {on:?} (some alive) but its Expired event was never delivered"
                );
            }
        }
        Ok(())
    }
}
