//! Membership in the simulation: each machine's address and member record, and the
//! shipped failure detector (`tribes::Membership`) fed with simulated heartbeats and
//! TCP verifications.

use super::*;
use crate::node::{Now, SessionNode};

impl Sim {
    /// The membership of machine `slot` as its heartbeats describe it.
    pub(super) fn member_at(&self, slot: usize) -> Option<Member> {
        let id = self.nodes[slot].as_ref()?.id;
        Some(Member::new(
            id,
            format!("slot{slot}"),
            "sim",
            Self::addr_of(slot),
            self.started_at[&id],
        ))
    }

    /// Machine `slot`'s address (a restarted process keeps it, with a new id).
    pub(super) fn addr_of(slot: usize) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, slot as u8 + 1], 4000))
    }

    /// Membership, decided by the shipped machine (`tribes::Membership`) of each node:
    /// heartbeats within a partition side, lost ones included; its timer; and the TCP
    /// verifications it asks for, answered as a real probe would be (the member itself
    /// answers: alive; nothing or another process at its address: gone; the other side
    /// of a partition: no verdict).
    pub(super) fn membership(&mut self) {
        let n = self.nodes.len();
        let at = self.epoch + Duration::from_millis(self.now);
        let mut events: Vec<(MemberId, MembershipEvent)> = Vec::new();
        for a in 0..n {
            let Some(me) = self.nodes[a].as_ref().map(|n| n.id) else {
                continue;
            };
            let mut out = Vec::new();
            // Static discovery probes every configured address at start: each process
            // that answers (up, same side of any partition) is heard at once.
            let probing = !self.nodes[a].as_ref().expect("live").probed;
            self.nodes[a].as_mut().expect("live").probed = true;
            for b in 0..n {
                if a == b || !self.connected(a, b) {
                    continue;
                }
                let Some(member) = self.member_at(b) else { continue };
                if probing {
                    let node = self.nodes[a].as_mut().expect("live");
                    node.membership.handle_heard(at, member.clone(), &mut out);
                }
                // A heartbeat every 500 ms on average, of which 30% are lost (UDP) under chaos.
                let p = if self.chaos { 0.07 } else { 0.1 };
                if self.rng.random_bool(p) {
                    let node = self.nodes[a].as_mut().expect("live");
                    node.membership.handle_heard(at, member, &mut out);
                }
            }
            let node = self.nodes[a].as_mut().expect("live");
            node.membership.handle_timer(at, &mut out);
            while !out.is_empty() {
                for effect in std::mem::take(&mut out) {
                    match effect {
                        MembershipEffect::Event(event) => events.push((me, event)),
                        MembershipEffect::Verify(member) => {
                            let verdict = match self.slot_at(member.addr()) {
                                Some(b) if !self.connected(a, b) => None,
                                Some(b) => Some(self.nodes[b].as_ref().is_some_and(|n| n.id == member.id())),
                                None => Some(false),
                            };
                            let node = self.nodes[a].as_mut().expect("live");
                            node.membership.handle_verified(at, member.id(), verdict, &mut out);
                        }
                        _ => {}
                    }
                }
            }
        }
        let now = clocks(self.now);
        for (at, event) in events {
            self.second_member_event(at, &event);
            let Some(node) = self.node(at) else { continue };
            member_event(&mut node.session, now, &event);
            if let MembershipEvent::Disappeared { member, reason } = event {
                let member = member.id();
                self.trace(|| format!("{at}: member {member} gone ({reason:?})"));
            }
            self.run_outputs_later(at);
        }
    }

    /// The machine whose address is `addr` (crashed or not).
    pub(super) fn slot_at(&self, addr: SocketAddr) -> Option<usize> {
        match addr {
            SocketAddr::V4(v4) => Some(usize::from(v4.ip().octets()[3]) - 1).filter(|s| *s < self.nodes.len()),
            SocketAddr::V6(_) => None,
        }
    }
}

/// A membership event, handed to one context's session node as `manager.rs` does.
pub(super) fn member_event(session: &mut SessionNode, now: Now, event: &MembershipEvent) {
    match event {
        MembershipEvent::Added(m) => session.handle_member_up(now, m.clone(), false),
        MembershipEvent::Back(m) => session.handle_member_up(now, m.clone(), true),
        MembershipEvent::Disappeared { member, .. } => session.handle_member_down(now, member.id()),
        // Not departures: a suspected member keeps its sessions until it is gone.
        _ => {}
    }
}
