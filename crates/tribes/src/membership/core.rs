//! The membership decisions, with no sockets and an injected clock: [`Membership`].
//!
//! The channel drives it from its membership task; the session simulation in
//! `tribes-sessions` drives the same machine with simulated heartbeats, so what the
//! simulation checks is the failure detector that ships.
//!
//! Call order: feed every heartbeat, pong, goodbye and connection loss through the
//! `handle_*` methods as they arrive, and call [`Membership::handle_timer`] at least
//! every [`Membership::TICK`]. Each call appends [`MembershipEffect`]s to `out`; the runtime
//! publishes the events and performs the TCP verifications it asks for, then reports
//! each verification back through [`Membership::handle_verified`].
//!
//! This is Tomcat's `McastService` member map plus its `TcpFailureDetector`: a
//! member that goes silent is *suspected* and verified over TCP before it is removed,
//! so lost UDP packets never remove a live member, and a member that cannot be
//! reached at all is removed once it has been silent for `drop_time`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::member::{Member, MemberId};

/// What changed in the membership, as subscribers see it.
///
/// A member is [`Added`](Self::Added) (or [`Back`](Self::Back)); while it is listed it may
/// be [`Suspected`](Self::Suspected) and then [`Cleared`](Self::Cleared) any number of
/// times; it leaves with [`Disappeared`](Self::Disappeared). A suspected member is still a
/// member (it is on [`Channel::members`](crate::Channel::members) and gets messages):
/// only `Disappeared` is a departure.
///
/// New variants may be added: a `match` needs a `_` arm.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MembershipEvent {
    /// A member was seen for the first time.
    Added(Member),
    /// A member is gone, and why.
    Disappeared {
        /// The member as last seen.
        member: Member,
        /// Why it was removed.
        reason: DepartureReason,
    },
    /// A member declared gone was heard again with the same id (a healed partition).
    Back(Member),
    /// A member changed its advertised payload.
    Updated(Member),
    /// A member went silent or its connection closed: it is being verified over TCP. It
    /// is either [`Cleared`](Self::Cleared) or, unreachable, [`Disappeared`](Self::Disappeared)
    /// by `drop_time` at the latest.
    Suspected {
        /// The member as last seen.
        member: Member,
        /// How long nothing was heard from it when the verification started.
        silent_for: Duration,
        /// Why it is suspected.
        cause: SuspicionCause,
    },
    /// A suspected member proved alive (it answered the TCP verification, or a heartbeat
    /// arrived): it is no longer suspected.
    Cleared(Member),
}

/// Why a member is suspected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SuspicionCause {
    /// No heartbeat for two thirds of `drop_time`.
    Silent,
    /// A replication connection to or from it closed.
    ConnectionLost,
}

/// Why a member was removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DepartureReason {
    /// Its heartbeats stopped and a TCP verification did not reach it.
    Silent,
    /// Its connection closed and a TCP verification did not reach it.
    ConnectionLost,
    /// It said goodbye (a clean shutdown).
    Left,
    /// A new process (new id) now answers at its address: it restarted.
    Replaced,
}

/// What the runtime must do after a `handle_*` call.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MembershipEffect {
    /// Publish this event to subscribers and interceptors.
    Event(MembershipEvent),
    /// Check over TCP whether this member is still alive, then call `handle_verified`.
    Verify(Member),
}

#[derive(Debug)]
struct Tracked {
    member: Member,
    last_heard: Instant,
    verifying: bool,
    /// Suspected (a [`MembershipEvent::Suspected`] was published, no `Cleared` yet).
    suspected: bool,
}

/// Live members and the failure detector's state.
///
/// Members are kept in id order and every effect is produced in that order, so a
/// simulation that feeds the same inputs gets the same effects.
#[derive(Debug)]
pub struct Membership {
    local: MemberId,
    domain: String,
    drop_time: Duration,
    members: BTreeMap<MemberId, Tracked>,
    /// Members removed recently: those that left are ignored for a while, the others
    /// come back with [`MembershipEvent::Back`].
    gone: BTreeMap<MemberId, (Instant, DepartureReason)>,
    foreign_domain: u64,
}

impl Membership {
    /// How often `handle_timer` must run at least.
    pub const TICK: Duration = Duration::from_millis(100);

    /// The machine of member `local` in cluster `domain`: a member silent for
    /// `drop_time` is removed, one silent for two thirds of it is verified first.
    pub fn new(local: MemberId, domain: impl Into<String>, drop_time: Duration) -> Self {
        Membership {
            local,
            domain: domain.into(),
            drop_time,
            members: BTreeMap::new(),
            gone: BTreeMap::new(),
            foreign_domain: 0,
        }
    }

    /// The live members, in no order.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values().map(|t| &t.member)
    }

    /// The members suspected now (being verified, not yet cleared or removed).
    pub fn suspected(&self) -> impl Iterator<Item = &Member> {
        self.members.values().filter(|t| t.suspected).map(|t| &t.member)
    }

    /// Heartbeats dropped because they came from another domain.
    pub fn foreign_domain_count(&self) -> u64 {
        self.foreign_domain
    }

    /// The member is alive: a heartbeat, a pong or a hello arrived from it.
    pub fn handle_heard(&mut self, now: Instant, member: Member, out: &mut Vec<MembershipEffect>) {
        if member.id == self.local {
            return;
        }
        if member.domain != self.domain {
            self.foreign_domain += 1;
            return;
        }
        if let Some(tracked) = self.members.get_mut(&member.id) {
            tracked.last_heard = now;
            tracked.verifying = false;
            if tracked.member != member {
                tracked.member = member.clone();
                out.push(MembershipEffect::Event(MembershipEvent::Updated(member)));
            }
            Self::clear(tracked, out);
            return;
        }
        let back = match self.gone.get(&member.id) {
            Some((_, DepartureReason::Left | DepartureReason::Replaced)) => return,
            Some(_) => true,
            None => false,
        };
        self.gone.remove(&member.id);
        // A new id at the address of a live member: that member restarted.
        let replaced: Vec<MemberId> = self
            .members
            .values()
            .filter(|t| t.member.addr == member.addr)
            .map(|t| t.member.id)
            .collect();
        for id in replaced {
            self.remove(now, id, DepartureReason::Replaced, out);
        }
        self.members.insert(
            member.id,
            Tracked {
                member: member.clone(),
                last_heard: now,
                verifying: false,
                suspected: false,
            },
        );
        out.push(MembershipEffect::Event(if back {
            MembershipEvent::Back(member)
        } else {
            MembershipEvent::Added(member)
        }));
    }

    /// The member announced a clean shutdown.
    pub fn handle_goodbye(&mut self, now: Instant, id: MemberId, out: &mut Vec<MembershipEffect>) {
        if self.members.contains_key(&id) {
            self.remove(now, id, DepartureReason::Left, out);
        } else {
            self.gone.insert(id, (now, DepartureReason::Left));
        }
    }

    /// A connection to or from the member closed: suspect it and verify it at once.
    pub fn handle_connection_lost(&mut self, now: Instant, id: MemberId, out: &mut Vec<MembershipEffect>) {
        if let Some(tracked) = self.members.get_mut(&id)
            && !tracked.verifying
        {
            Self::suspect(now, tracked, SuspicionCause::ConnectionLost, out);
        }
    }

    /// The result of a TCP verification the runtime was asked for.
    ///
    /// `alive` is true when the member answered with its own id; a timeout is not a
    /// verdict (`None`): the member is then removed only once silent for `drop_time`.
    pub fn handle_verified(
        &mut self,
        now: Instant,
        id: MemberId,
        alive: Option<bool>,
        out: &mut Vec<MembershipEffect>,
    ) {
        let Some(tracked) = self.members.get_mut(&id) else {
            return;
        };
        match alive {
            Some(true) => {
                tracked.last_heard = now;
                tracked.verifying = false;
                Self::clear(tracked, out);
            }
            Some(false) => {
                let reason = if now.duration_since(tracked.last_heard) >= self.suspect_after() {
                    DepartureReason::Silent
                } else {
                    DepartureReason::ConnectionLost
                };
                self.remove(now, id, reason, out);
            }
            // Still suspected: verified again on the next timer, removed at `drop_time`.
            None => tracked.verifying = false,
        }
    }

    /// Time passes: suspect the silent, drop the long silent, forget old departures.
    pub fn handle_timer(&mut self, now: Instant, out: &mut Vec<MembershipEffect>) {
        let suspect_after = self.suspect_after();
        let mut dead = Vec::new();
        for tracked in self.members.values_mut() {
            let silent = now.saturating_duration_since(tracked.last_heard);
            if silent >= self.drop_time {
                dead.push(tracked.member.id);
            } else if silent >= suspect_after && !tracked.verifying {
                Self::suspect(now, tracked, SuspicionCause::Silent, out);
            }
        }
        for id in dead {
            self.remove(now, id, DepartureReason::Silent, out);
        }
        let forget = self.drop_time * 20;
        self.gone
            .retain(|_, (at, _)| now.saturating_duration_since(*at) < forget);
    }

    /// Silence after which a member is verified: two thirds of `drop_time`, so that a
    /// verification that fails removes it before `drop_time` has passed.
    fn suspect_after(&self) -> Duration {
        self.drop_time * 2 / 3
    }

    /// Starts a verification; the first one of a suspicion publishes `Suspected`.
    fn suspect(now: Instant, tracked: &mut Tracked, cause: SuspicionCause, out: &mut Vec<MembershipEffect>) {
        tracked.verifying = true;
        if !tracked.suspected {
            tracked.suspected = true;
            out.push(MembershipEffect::Event(MembershipEvent::Suspected {
                member: tracked.member.clone(),
                silent_for: now.saturating_duration_since(tracked.last_heard),
                cause,
            }));
        }
        out.push(MembershipEffect::Verify(tracked.member.clone()));
    }

    /// The member proved alive: a suspicion ends with `Cleared`.
    fn clear(tracked: &mut Tracked, out: &mut Vec<MembershipEffect>) {
        if tracked.suspected {
            tracked.suspected = false;
            out.push(MembershipEffect::Event(MembershipEvent::Cleared(
                tracked.member.clone(),
            )));
        }
    }

    fn remove(&mut self, now: Instant, id: MemberId, reason: DepartureReason, out: &mut Vec<MembershipEffect>) {
        if let Some(tracked) = self.members.remove(&id) {
            self.gone.insert(id, (now, reason));
            out.push(MembershipEffect::Event(MembershipEvent::Disappeared {
                member: tracked.member,
                reason,
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(n: u8, port: u16, domain: &str) -> Member {
        Member::new(
            MemberId::from_bytes([n; 16]),
            format!("n{n}"),
            domain,
            ([127, 0, 0, 1], port).into(),
            0,
        )
    }

    fn events(out: &mut Vec<MembershipEffect>) -> Vec<MembershipEffect> {
        std::mem::take(out)
    }

    /// The effects of a suspicion: the event, then the verification.
    fn suspected(member: &Member, silent_ms: u64, cause: SuspicionCause) -> Vec<MembershipEffect> {
        vec![
            MembershipEffect::Event(MembershipEvent::Suspected {
                member: member.clone(),
                silent_for: Duration::from_millis(silent_ms),
                cause,
            }),
            MembershipEffect::Verify(member.clone()),
        ]
    }

    fn suspects(m: &Membership) -> Vec<MemberId> {
        m.suspected().map(|s| s.id).collect()
    }

    #[test]
    fn a_suspicion_is_published_once_and_cleared_by_a_heartbeat_or_a_check() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut m = Membership::new(MemberId::from_bytes([0; 16]), "d", Duration::from_millis(3000));
        let mut out = Vec::new();
        let b = member(1, 4001, "d");
        m.handle_heard(t0, b.clone(), &mut out);
        out.clear();
        m.handle_timer(at(2100), &mut out);
        assert_eq!(events(&mut out), suspected(&b, 2100, SuspicionCause::Silent));
        assert_eq!(suspects(&m), [b.id]);
        // An inconclusive check keeps the suspicion: verified again, not announced again.
        m.handle_verified(at(2500), b.id, None, &mut out);
        assert!(out.is_empty());
        m.handle_timer(at(2600), &mut out);
        assert_eq!(events(&mut out), vec![MembershipEffect::Verify(b.clone())]);
        m.handle_connection_lost(at(2650), b.id, &mut out);
        assert!(out.is_empty(), "already verifying");
        // A heartbeat clears it, once; it stays a member all along.
        m.handle_heard(at(2700), b.clone(), &mut out);
        assert_eq!(
            events(&mut out),
            vec![MembershipEffect::Event(MembershipEvent::Cleared(b.clone()))]
        );
        assert!(suspects(&m).is_empty());
        assert_eq!(m.members().count(), 1);
        m.handle_heard(at(2800), b.clone(), &mut out);
        assert!(out.is_empty());
        // A closed connection suspects at once, with the silence so far; the check clears it.
        m.handle_connection_lost(at(3100), b.id, &mut out);
        assert_eq!(events(&mut out), suspected(&b, 300, SuspicionCause::ConnectionLost));
        m.handle_verified(at(3120), b.id, Some(true), &mut out);
        assert_eq!(
            events(&mut out),
            vec![MembershipEffect::Event(MembershipEvent::Cleared(b.clone()))]
        );
        // A suspected member that is removed leaves no suspicion behind.
        m.handle_connection_lost(at(3200), b.id, &mut out);
        m.handle_verified(at(3210), b.id, Some(false), &mut out);
        assert!(matches!(
            &events(&mut out)[..],
            [
                MembershipEffect::Event(MembershipEvent::Suspected { .. }),
                MembershipEffect::Verify(_),
                MembershipEffect::Event(MembershipEvent::Disappeared {
                    reason: DepartureReason::ConnectionLost,
                    ..
                })
            ]
        ));
        assert!(suspects(&m).is_empty());
    }

    #[test]
    fn a_member_dropped_at_drop_time_was_suspected_first() {
        let t0 = Instant::now();
        let mut m = Membership::new(MemberId::from_bytes([0; 16]), "d", Duration::from_millis(3000));
        let mut out = Vec::new();
        let b = member(1, 4001, "d");
        m.handle_heard(t0, b.clone(), &mut out);
        out.clear();
        let mut seen = Vec::new();
        for tick in 1..=31 {
            m.handle_timer(t0 + Membership::TICK * tick, &mut out);
            seen.extend(out.drain(..).filter_map(|e| match e {
                MembershipEffect::Event(MembershipEvent::Suspected { silent_for, .. }) => {
                    Some(format!("suspected {silent_for:?}"))
                }
                MembershipEffect::Event(MembershipEvent::Disappeared { reason, .. }) => {
                    Some(format!("gone {reason:?}"))
                }
                _ => None,
            }));
            if tick == 21 {
                // The check times out: no verdict.
                m.handle_verified(t0 + Membership::TICK * tick, b.id, None, &mut out);
            }
        }
        assert_eq!(seen, ["suspected 2s", "gone Silent"]);
    }

    #[test]
    fn silent_member_is_verified_then_removed() {
        let t0 = Instant::now();
        let mut m = Membership::new(MemberId::from_bytes([0; 16]), "d", Duration::from_millis(3000));
        let mut out = Vec::new();
        let b = member(1, 4001, "d");
        m.handle_heard(t0, b.clone(), &mut out);
        assert_eq!(
            events(&mut out),
            vec![MembershipEffect::Event(MembershipEvent::Added(b.clone()))]
        );
        m.handle_timer(t0 + Duration::from_millis(1900), &mut out);
        assert!(out.is_empty());
        m.handle_timer(t0 + Duration::from_millis(2100), &mut out);
        assert_eq!(events(&mut out), suspected(&b, 2100, SuspicionCause::Silent));
        // Verification says alive: UDP loss must not remove it.
        m.handle_verified(t0 + Duration::from_millis(2200), b.id, Some(true), &mut out);
        assert_eq!(
            events(&mut out),
            vec![MembershipEffect::Event(MembershipEvent::Cleared(b.clone()))]
        );
        m.handle_timer(t0 + Duration::from_millis(3100), &mut out);
        assert!(out.is_empty());
        // Silent again and unreachable: removed.
        m.handle_timer(t0 + Duration::from_millis(4400), &mut out);
        assert_eq!(events(&mut out), suspected(&b, 2200, SuspicionCause::Silent));
        m.handle_verified(t0 + Duration::from_millis(4410), b.id, Some(false), &mut out);
        assert_eq!(
            events(&mut out),
            vec![MembershipEffect::Event(MembershipEvent::Disappeared {
                member: b.clone(),
                reason: DepartureReason::Silent
            })]
        );
        // Heard again with the same id: back.
        m.handle_heard(t0 + Duration::from_millis(5000), b.clone(), &mut out);
        assert_eq!(
            events(&mut out),
            vec![MembershipEffect::Event(MembershipEvent::Back(b))]
        );
    }

    #[test]
    fn unanswered_verification_removes_at_drop_time() {
        let t0 = Instant::now();
        let mut m = Membership::new(MemberId::from_bytes([0; 16]), "d", Duration::from_millis(3000));
        let mut out = Vec::new();
        let b = member(1, 4001, "d");
        m.handle_heard(t0, b.clone(), &mut out);
        out.clear();
        m.handle_timer(t0 + Duration::from_millis(2100), &mut out);
        m.handle_verified(t0 + Duration::from_millis(2900), b.id, None, &mut out);
        out.clear();
        m.handle_timer(t0 + Duration::from_millis(3000), &mut out);
        assert!(matches!(
            &out[..],
            [MembershipEffect::Event(MembershipEvent::Disappeared {
                reason: DepartureReason::Silent,
                ..
            })]
        ));
    }

    #[test]
    fn restart_replaces_and_domains_are_separate() {
        let t0 = Instant::now();
        let mut m = Membership::new(MemberId::from_bytes([0; 16]), "d", Duration::from_millis(3000));
        let mut out = Vec::new();
        m.handle_heard(t0, member(1, 4001, "other"), &mut out);
        assert!(out.is_empty());
        assert_eq!(m.foreign_domain_count(), 1);
        let old = member(1, 4001, "d");
        let new = member(2, 4001, "d");
        m.handle_heard(t0, old.clone(), &mut out);
        out.clear();
        m.handle_heard(t0, new.clone(), &mut out);
        assert_eq!(
            out,
            vec![
                MembershipEffect::Event(MembershipEvent::Disappeared {
                    member: old.clone(),
                    reason: DepartureReason::Replaced
                }),
                MembershipEffect::Event(MembershipEvent::Added(new)),
            ]
        );
        out.clear();
        // A late heartbeat of the replaced process does not bring it back.
        m.handle_heard(t0, old, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn connection_loss_verifies_at_once_and_goodbye_removes() {
        let t0 = Instant::now();
        let mut m = Membership::new(MemberId::from_bytes([0; 16]), "d", Duration::from_millis(3000));
        let mut out = Vec::new();
        let b = member(1, 4001, "d");
        m.handle_heard(t0, b.clone(), &mut out);
        out.clear();
        m.handle_connection_lost(t0, b.id, &mut out);
        assert_eq!(events(&mut out), suspected(&b, 0, SuspicionCause::ConnectionLost));
        m.handle_verified(t0, b.id, Some(false), &mut out);
        assert!(matches!(
            &out[..],
            [MembershipEffect::Event(MembershipEvent::Disappeared {
                reason: DepartureReason::ConnectionLost,
                ..
            })]
        ));
        out.clear();
        let c = member(3, 4003, "d");
        m.handle_heard(t0, c.clone(), &mut out);
        out.clear();
        m.handle_goodbye(t0, c.id, &mut out);
        assert!(matches!(
            &out[..],
            [MembershipEffect::Event(MembershipEvent::Disappeared {
                reason: DepartureReason::Left,
                ..
            })]
        ));
        out.clear();
        m.handle_heard(t0, c, &mut out);
        assert!(
            out.is_empty(),
            "a member that left is not resurrected by a late heartbeat"
        );
    }
}
