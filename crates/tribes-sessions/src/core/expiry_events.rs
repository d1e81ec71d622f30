//! One cluster-wide `Expired` event per session.
//!
//! Every node that destroys a session because it expired (idle, or past its lifetime, or
//! told so by a member) keeps it as *pending*. One node delivers: the coordinator, the
//! member with the smallest id among the servers this node sees, and only while it sees
//! a majority of the largest cluster it saw during the tombstone time to live (so the two
//! sides of a partition never both deliver; a clean shutdown shrinks that size by one,
//! and it forgets a crashed member after the time to live). Other nodes send their
//! pending expiries to the coordinator every tick until it answers that they were
//! delivered (`ExpiryDelivered`, also broadcast when it delivers); delivered ids are
//! remembered for the time to live, so a late report is answered, not delivered again;
//! a member that starts serving (a joiner, or the other side of a partition at the heal)
//! is sent them, and a coordinator waits a grace after a member joined before it delivers.
//! The node that served the user last may be dead: whoever holds the session expires it
//! and reports it.
//!
//! A node that started alone does not know how large its cluster is: to it, one is a
//! majority. Without a store that is harmless (its sessions are its own), but with a store
//! two nodes that start apart (a whole-cluster restart during a partition) would both load,
//! expire and announce the same stored session. So a store-backed node that has seen no
//! other member since it started holds its expiry events for the tombstone time to live
//! (at least ten minutes), or until it meets another member; they are delayed, not lost.
//!
//! What this cannot do (no protocol can, without the listener taking part): a coordinator
//! that crashes between delivering and its broadcast leaves the others' reports pending,
//! and the next coordinator delivers them again.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tribes::MemberId;

use super::{Core, Effect};
use crate::id::SessionId;
use crate::wire::Msg;

/// The bookkeeping of expiry events (`Core::expiries`).
#[derive(Debug, Default)]
pub(crate) struct ExpiryEvents {
    /// Expired here or reported to this node, not yet known as delivered.
    pending: BTreeMap<SessionId, Option<Arc<str>>>,
    /// Delivered (here or by another coordinator), and when this node learnt it.
    delivered: HashMap<SessionId, u64>,
    /// The largest number of serving members (this one included) seen lately, and when.
    peak: usize,
    peak_ms: u64,
    /// When a member last started serving (its marks may still be on their way here).
    joined_ms: u64,
    /// When this node first ticked, and whether it has met another serving member since.
    started_ms: Option<u64>,
    met_others: bool,
}

impl Core {
    /// A session expired here: its event is pending until a coordinator delivers it.
    pub(super) fn expiry_pending(&mut self, id: SessionId, principal: Option<Arc<str>>) {
        if !self.expiries.delivered.contains_key(&id) {
            self.expiries.pending.insert(id, principal);
        }
    }

    /// `member` left cleanly (or never joined): the cluster is one smaller.
    pub(crate) fn expiry_member_left(&mut self, member: MemberId) {
        let alive_after = self.servers.iter().filter(|m| **m != member).count() + 1;
        self.expiries.peak = self.expiries.peak.saturating_sub(1).max(alive_after);
    }

    /// Whether this node sees a majority of the cluster (updates the cluster's size).
    fn sees_majority(&mut self, now_ms: u64) -> bool {
        let alive = self.servers.len() + 1;
        let e = &mut self.expiries;
        if alive >= e.peak || e.peak_ms.saturating_add(self.cfg.tombstone_ttl_ms) < now_ms {
            e.peak = alive;
            e.peak_ms = now_ms;
        }
        alive * 2 > e.peak
    }

    /// A store-backed node that has met nobody since it started, within the tombstone time
    /// to live: it may be one of two halves that each believe they are the cluster.
    fn lone_start(&mut self, now_ms: u64) -> bool {
        let e = &mut self.expiries;
        let started = *e.started_ms.get_or_insert(now_ms);
        e.met_others |= !self.servers.is_empty();
        self.cfg.store_backed && !e.met_others && now_ms < started.saturating_add(self.cfg.tombstone_ttl_ms)
    }

    /// The member that delivers expiry events in this node's view.
    pub(crate) fn coordinator(&self) -> MemberId {
        self.servers
            .iter()
            .copied()
            .chain([self.local])
            .min()
            .expect("the local member")
    }

    /// Each tick: the coordinator delivers what is pending; the others report theirs.
    pub(super) fn deliver_expiries(&mut self, now_ms: u64, out: &mut Vec<Effect>) {
        let ttl = self.cfg.tombstone_ttl_ms;
        self.expiries.delivered.retain(|_, at| at.saturating_add(ttl) > now_ms);
        let majority = self.sees_majority(now_ms);
        self.enforce_session_limits(now_ms, majority, out);
        // After a member joined (a heal), wait a grace for the marks it sends: the other
        // side of a partition may have delivered some of these already.
        let settled = now_ms >= self.expiries.joined_ms.saturating_add(self.cfg.grace_ms);
        let lone = self.lone_start(now_ms);
        if self.expiries.pending.is_empty() || !majority || !settled || lone {
            return;
        }
        let coordinator = self.coordinator();
        if coordinator != self.local {
            let list: Vec<(SessionId, Option<Arc<str>>)> =
                self.expiries.pending.iter().map(|(id, p)| (*id, p.clone())).collect();
            out.push(Effect::Send(vec![coordinator], Msg::ExpiryPending(list)));
            return;
        }
        let pending = std::mem::take(&mut self.expiries.pending);
        let ids: Vec<SessionId> = pending.keys().copied().collect();
        for (id, principal) in pending {
            self.expiries.delivered.insert(id, now_ms);
            out.push(Effect::Expired { id, principal });
        }
        if !self.servers.is_empty() {
            out.push(Effect::Send(self.servers.clone(), Msg::ExpiryDelivered(ids)));
        }
    }

    /// A member reports expiries it holds as pending.
    pub(super) fn on_expiry_pending(
        &mut self,
        from: MemberId,
        list: Vec<(SessionId, Option<Arc<str>>)>,
        out: &mut Vec<Effect>,
    ) {
        let mut known = Vec::new();
        for (id, principal) in list {
            if self.expiries.delivered.contains_key(&id) {
                known.push(id);
            } else {
                self.expiries.pending.entry(id).or_insert(principal);
            }
        }
        if !known.is_empty() {
            out.push(Effect::Send(vec![from], Msg::ExpiryDelivered(known)));
        }
    }

    /// A coordinator delivered these expiries.
    pub(super) fn on_expiry_delivered(&mut self, now_ms: u64, ids: Vec<SessionId>) {
        for id in ids {
            self.expiries.pending.remove(&id);
            self.expiries.delivered.insert(id, now_ms);
        }
    }

    /// Members that start serving learn which expiries were delivered (the other side of a
    /// partition may hold them as pending).
    pub(super) fn tell_delivered(&mut self, new: &[MemberId], out: &mut Vec<Effect>) {
        self.expiries.joined_ms = self.servers_changed_ms;
        if !self.expiries.delivered.is_empty() {
            let mut ids: Vec<SessionId> = self.expiries.delivered.keys().copied().collect();
            ids.sort_unstable();
            out.push(Effect::Send(new.to_vec(), Msg::ExpiryDelivered(ids)));
        }
    }

    /// Expiry events still waiting for a coordinator (for the status and the simulation).
    #[cfg(test)]
    pub(crate) fn pending_expiries(&self) -> usize {
        self.expiries.pending.len()
    }
}
