//! BackupManager fetches: a node asks the members that may hold a session for their
//! copies (on a miss, or to check that the copy it holds is current) and waits until
//! every one asked has answered, with the session or with "not here" — never a fixed
//! delay, so an unknown id (a forged or expired cookie) costs one round trip.
//!
//! No sockets and no clock: the driver calls [`Fetches::begin`] before sending the
//! [`crate::wire::Msg::Fetch`], [`Fetches::answered`] for every reply (or a send that
//! failed: that member will not answer), and bounds the wait itself. `W` is what the
//! driver wakes when a fetch completes (a oneshot sender; a number in the tests).

use std::collections::HashMap;

use tribes::MemberId;

use crate::id::SessionId;

/// The fetches in flight, by session.
#[derive(Debug)]
pub(crate) struct Fetches<W> {
    pending: HashMap<SessionId, Pending<W>>,
}

#[derive(Debug)]
struct Pending<W> {
    waiting: Vec<MemberId>,
    waiters: Vec<W>,
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

impl<W> Default for Fetches<W> {
    fn default() -> Self {
        Fetches {
            pending: HashMap::new(),
        }
    }
}

impl<W> Fetches<W> {
    /// Starts fetching `id` from `ask`, or joins the fetch in flight; `waiter` is woken
    /// (returned by [`Fetches::answered`]) when it completes.
    pub(crate) fn begin(&mut self, id: SessionId, ask: Vec<MemberId>, waiter: W) -> Begin {
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
                waiters: vec![waiter],
            },
        );
        Begin::Send(ask)
    }

    /// `from` answered for `id` (or cannot: its send failed). Returns the waiters to
    /// wake when that was the last answer awaited.
    pub(crate) fn answered(&mut self, id: SessionId, from: MemberId) -> Vec<W> {
        let Some(p) = self.pending.get_mut(&id) else {
            return Vec::new();
        };
        p.waiting.retain(|m| *m != from);
        if p.waiting.is_empty() {
            return self.pending.remove(&id).map(|p| p.waiters).unwrap_or_default();
        }
        Vec::new()
    }

    /// The driver stopped waiting for `id` (its bound passed): forget it.
    pub(crate) fn give_up(&mut self, id: SessionId) -> Vec<W> {
        self.pending.remove(&id).map(|p| p.waiters).unwrap_or_default()
    }

    /// A member left: it will not answer any fetch.
    pub(crate) fn member_gone(&mut self, member: MemberId) -> Vec<W> {
        let ids: Vec<SessionId> = self.pending.keys().copied().collect();
        ids.into_iter().flat_map(|id| self.answered(id, member)).collect()
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
        assert_eq!(f.begin(id(1), vec![m(2), m(3)], 1), Begin::Send(vec![m(2), m(3)]));
        // Two "not here" answers for an unknown id: complete at the second, no timer.
        assert!(f.answered(id(1), m(2)).is_empty());
        assert_eq!(f.answered(id(1), m(3)), vec![1]);
        assert!(f.answered(id(1), m(3)).is_empty(), "completed once");
    }

    #[test]
    fn concurrent_requests_share_one_fetch() {
        let mut f = Fetches::default();
        assert_eq!(f.begin(id(1), vec![m(2)], 1), Begin::Send(vec![m(2)]));
        assert_eq!(f.begin(id(1), vec![m(2)], 2), Begin::Joined);
        assert_eq!(f.answered(id(1), m(2)), vec![1, 2]);
    }

    #[test]
    fn a_member_that_leaves_counts_as_answered() {
        let mut f = Fetches::default();
        f.begin(id(1), vec![m(2), m(3)], 1);
        f.begin(id(4), vec![m(3)], 2);
        assert_eq!(f.member_gone(m(3)), vec![2]);
        assert_eq!(f.answered(id(1), m(2)), vec![1]);
    }

    #[test]
    fn nobody_to_ask_completes_at_once_and_giving_up_forgets() {
        let mut f: Fetches<u8> = Fetches::default();
        assert_eq!(f.begin(id(1), vec![], 1), Begin::Nobody);
        f.begin(id(2), vec![m(2)], 2);
        assert_eq!(f.give_up(id(2)), vec![2]);
        assert!(f.answered(id(2), m(2)).is_empty());
    }
}
