//! BackupManager fetches: a node asks the members that may hold a session for their
//! copies (on a miss, or to check that the copy it holds is current) and waits until
//! every one asked has answered, with the session or with "not here" — never a fixed
//! delay, so an unknown id (a forged or expired cookie) costs one round trip.
//!
//! A member that cannot answer (it left the membership, or the fetch did not reach it)
//! is replaced by the members that may hold the session now and were not asked yet: when
//! a primary dies while a node asks it, the previous primary may be the only one left
//! with the latest acknowledged write. Past its deadline, a fetch goes on with what the
//! others sent.
//!
//! No sockets and time as an argument: the session node (`node/fetching.rs`) keeps one
//! `Fetches` and feeds it answers, failed sends, departures and time. `W` is what
//! completes (the driver's waiter token; a number in the tests).

use std::collections::BTreeMap;

use tribes::MemberId;

use crate::id::SessionId;

/// The fetches in flight, by session.
#[derive(Debug)]
pub(crate) struct Fetches<W> {
    pending: BTreeMap<SessionId, Pending<W>>,
}

#[derive(Debug)]
struct Pending<W> {
    waiting: Vec<MemberId>,
    /// Everyone asked so far (a member is asked at most once per fetch).
    asked: Vec<MemberId>,
    waiters: Vec<W>,
    /// A member asked could not be reached but may be alive with a copy: the answer is
    /// the best the others had, not confirmed.
    gap: bool,
    /// When the fetch gives up on the members that did not answer (monotonic ms).
    deadline_ms: u64,
}

/// What [`Fetches::begin`] decided.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Begin {
    /// Send the fetch to these members.
    Send(Vec<MemberId>),
    /// A fetch of this session is already in flight: wait for it.
    Joined,
    /// Nobody to ask: the answer is what this node holds.
    Nobody,
}

/// What a member that cannot answer (it left, or the fetch could not reach it) changes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Unanswered<W> {
    /// Fetches that completed, each waiter with whether the answer is confirmed.
    pub(crate) woken: Vec<(W, bool)>,
    /// Members to ask as well, per session: the ones that may hold the latest copy now
    /// (when the primary is gone, every server), not asked yet.
    pub(crate) ask: Vec<(SessionId, Vec<MemberId>)>,
}

impl<W> Default for Fetches<W> {
    fn default() -> Self {
        Fetches {
            pending: BTreeMap::new(),
        }
    }
}

impl<W> Fetches<W> {
    /// Starts fetching `id` from `ask` until `deadline_ms`, or joins the fetch in flight;
    /// `waiter` is returned when it completes.
    pub(crate) fn begin(&mut self, id: SessionId, ask: Vec<MemberId>, waiter: W, deadline_ms: u64) -> Begin {
        if let Some(p) = self.pending.get_mut(&id) {
            p.waiters.push(waiter);
            return Begin::Joined;
        }
        if ask.is_empty() {
            return Begin::Nobody;
        }
        self.pending.insert(
            id,
            Pending {
                waiting: ask.clone(),
                asked: ask.clone(),
                waiters: vec![waiter],
                gap: false,
                deadline_ms,
            },
        );
        Begin::Send(ask)
    }

    /// `from` answered for `id` (the session, or "not here"). Returns the waiters to
    /// wake when that was the last answer awaited, each with whether the answer is
    /// confirmed (every member asked answered or left).
    pub(crate) fn answered(&mut self, id: SessionId, from: MemberId) -> Vec<(W, bool)> {
        let Some(p) = self.pending.get_mut(&id) else {
            return Vec::new();
        };
        p.waiting.retain(|m| *m != from);
        if p.waiting.is_empty() {
            return self.complete(id);
        }
        Vec::new()
    }

    fn complete(&mut self, id: SessionId) -> Vec<(W, bool)> {
        let Some(p) = self.pending.remove(&id) else {
            return Vec::new();
        };
        let confirmed = !p.gap;
        p.waiters.into_iter().map(|w| (w, confirmed)).collect()
    }

    /// `member` will not answer the fetch of `id`: it left the membership, or the fetch
    /// could not reach it (`unreachable`: it may still be alive with a copy, so the
    /// answer can no longer be confirmed). The members `targets` names now and that were
    /// not asked yet are asked too: a holder that cannot answer may have been the only
    /// one with the latest write, and who holds the session changes when its primary goes.
    pub(crate) fn unanswered(
        &mut self,
        id: SessionId,
        member: MemberId,
        unreachable: bool,
        targets: &[MemberId],
    ) -> Unanswered<W> {
        let mut result = Unanswered {
            woken: Vec::new(),
            ask: Vec::new(),
        };
        let Some(p) = self.pending.get_mut(&id) else {
            return result;
        };
        if !p.waiting.contains(&member) {
            return result;
        }
        p.waiting.retain(|m| *m != member);
        p.gap |= unreachable;
        let more: Vec<MemberId> = targets
            .iter()
            .copied()
            .filter(|m| *m != member && !p.asked.contains(m))
            .collect();
        p.asked.extend(&more);
        p.waiting.extend(&more);
        if !more.is_empty() {
            result.ask.push((id, more));
        }
        if p.waiting.is_empty() {
            result.woken = self.complete(id);
        }
        result
    }

    /// A member left: it will not answer any fetch; `targets` gives, per session, who
    /// may hold it now (see [`Fetches::unanswered`]).
    pub(crate) fn member_gone(
        &mut self,
        member: MemberId,
        targets: impl Fn(SessionId) -> Vec<MemberId>,
    ) -> Unanswered<W> {
        let ids: Vec<SessionId> = self
            .pending
            .iter()
            .filter(|(_, p)| p.waiting.contains(&member))
            .map(|(id, _)| *id)
            .collect();
        let mut all = Unanswered {
            woken: Vec::new(),
            ask: Vec::new(),
        };
        for id in ids {
            let step = self.unanswered(id, member, false, &targets(id));
            all.woken.extend(step.woken);
            all.ask.extend(step.ask);
        }
        all
    }

    /// The fetches whose deadline passed at `now_ms`: they go on with what the members
    /// that answered sent. Returns their waiters.
    pub(crate) fn expire(&mut self, now_ms: u64) -> Vec<W> {
        let due: Vec<SessionId> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline_ms <= now_ms)
            .map(|(id, _)| *id)
            .collect();
        due.into_iter()
            .flat_map(|id| self.pending.remove(&id).map(|p| p.waiters).unwrap_or_default())
            .collect()
    }

    /// The earliest deadline of a fetch in flight.
    pub(crate) fn next_deadline(&self) -> Option<u64> {
        self.pending.values().map(|p| p.deadline_ms).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(i: u8) -> MemberId {
        MemberId::from_bytes([i; 16])
    }

    fn id(i: u8) -> SessionId {
        SessionId::from_bytes([i; 16])
    }

    #[test]
    fn a_fetch_completes_when_every_member_asked_has_answered_not_after_a_delay() {
        let mut f = Fetches::default();
        assert_eq!(
            f.begin(id(1), vec![m(2), m(3)], 1, 1_000),
            Begin::Send(vec![m(2), m(3)])
        );
        // Two "not here" answers for an unknown id: complete at the second, no timer.
        assert!(f.answered(id(1), m(2)).is_empty());
        assert_eq!(f.answered(id(1), m(3)), vec![(1, true)]);
        assert!(f.answered(id(1), m(3)).is_empty(), "completed once");
    }

    #[test]
    fn concurrent_requests_share_one_fetch() {
        let mut f = Fetches::default();
        assert_eq!(f.begin(id(1), vec![m(2)], 1, 1_000), Begin::Send(vec![m(2)]));
        assert_eq!(f.begin(id(1), vec![m(2)], 2, 1_000), Begin::Joined);
        assert_eq!(f.answered(id(1), m(2)), vec![(1, true), (2, true)]);
    }

    #[test]
    fn a_member_that_leaves_is_replaced_by_the_members_not_asked_yet() {
        let mut f = Fetches::default();
        f.begin(id(1), vec![m(2), m(3)], 1, 1_000);
        f.begin(id(4), vec![m(3)], 2, 1_000);
        f.begin(id(5), vec![m(2)], 3, 1_000);
        // m(3) was the primary of both: now every server may hold the latest copy.
        let gone = f.member_gone(m(3), |_| vec![m(2), m(6)]);
        assert!(gone.woken.is_empty(), "the new members must answer first");
        assert_eq!(gone.ask, vec![(id(1), vec![m(6)]), (id(4), vec![m(2), m(6)])]);
        assert!(f.answered(id(1), m(2)).is_empty());
        assert_eq!(f.answered(id(1), m(6)), vec![(1, true)]);
        // Nobody new to ask: the fetch completes with what the others sent.
        assert_eq!(f.member_gone(m(2), |_| vec![m(2)]).woken, vec![(3, true)]);
    }

    #[test]
    fn a_member_asked_once_is_not_asked_again_and_one_not_reached_leaves_a_gap() {
        let mut f: Fetches<u8> = Fetches::default();
        f.begin(id(1), vec![m(2), m(3)], 1, 1_000);
        assert!(f.answered(id(1), m(2)).is_empty());
        // m(3) could not be reached but may be alive with a newer copy: not confirmed.
        let step = f.unanswered(id(1), m(3), true, &[m(2), m(3)]);
        assert_eq!(step.ask, vec![]);
        assert_eq!(step.woken, vec![(1, false)]);
    }

    #[test]
    fn nobody_to_ask_completes_at_once_and_a_deadline_gives_up() {
        let mut f: Fetches<u8> = Fetches::default();
        assert_eq!(f.begin(id(1), vec![], 1, 1_000), Begin::Nobody);
        f.begin(id(2), vec![m(2)], 2, 1_000);
        f.begin(id(3), vec![m(2)], 3, 2_000);
        assert_eq!(f.next_deadline(), Some(1_000));
        assert!(f.expire(999).is_empty());
        assert_eq!(f.expire(1_000), vec![2]);
        assert!(f.answered(id(2), m(2)).is_empty());
        assert_eq!(f.next_deadline(), Some(2_000));
    }
}
