//! Which member a starting node asks for the sessions next, with no sockets and no clock.
//!
//! Call order: `TransferPlan::new` with the members serving the context (oldest
//! first), then repeatedly `next()`; after each `Step::Ask(member)` report the outcome
//! with `record`. `Step::Retry` means every member serving the context is itself
//! starting and an older one must become ready first, or that every transfer failed
//! (a member vanished mid-transfer, a timeout) and none completed: call `restart` with
//! the current members after a short pause. A member that left is then no longer
//! asked; one that is still there is asked again. The caller bounds the total time
//! (and then serves degraded).

use std::collections::VecDeque;

use tribes::MemberId;

use crate::error::TransferFailure;

/// A member's age rank: start time, then id (as `Channel::members` orders them).
pub(crate) type Rank = (u64, MemberId);

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    Ask(MemberId, String),
    Ready,
    Retry,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    Completed,
    NotReady,
    NoSuchContext(String),
    Failed(TransferFailure),
}

#[derive(Debug)]
pub(crate) struct TransferPlan {
    context: String,
    local: Rank,
    ask_all: bool,
    candidates: VecDeque<(Rank, String)>,
    not_ready: Vec<Rank>,
    /// A transfer failed since the last `restart` (a member that may hold sessions).
    failed: bool,
    succeeded: bool,
    pub(crate) last: Option<(String, TransferFailure)>,
}

impl TransferPlan {
    /// `ask_all`: ask every member (BackupManager, each holds different sessions)
    /// rather than stopping at the first complete transfer (DeltaManager).
    pub(crate) fn new(context: &str, local: Rank, candidates: Vec<(Rank, String)>, ask_all: bool) -> Self {
        let mut plan = TransferPlan {
            context: context.to_string(),
            local,
            ask_all,
            candidates: VecDeque::new(),
            not_ready: Vec::new(),
            failed: false,
            succeeded: false,
            last: None,
        };
        plan.restart(candidates);
        plan
    }

    pub(crate) fn restart(&mut self, mut candidates: Vec<(Rank, String)>) {
        candidates.sort_by_key(|c| c.0);
        self.candidates = candidates.into();
        self.not_ready.clear();
        self.failed = false;
    }

    pub(crate) fn next(&mut self) -> Step {
        if let Some(((_, id), name)) = self.candidates.front() {
            return Step::Ask(*id, name.clone());
        }
        if self.succeeded {
            return Step::Ready;
        }
        if self.failed {
            // Starting empty would drop what that member holds: ask again.
            return Step::Retry;
        }
        if self.not_ready.iter().all(|r| self.local < *r) {
            // Nobody holds the sessions, or every other server is younger and
            // waits for this node: start empty.
            return Step::Ready;
        }
        Step::Retry
    }

    pub(crate) fn record(&mut self, member: MemberId, outcome: Outcome) {
        let Some(pos) = self.candidates.iter().position(|c| c.0.1 == member) else {
            return;
        };
        let (rank, name) = self.candidates.remove(pos).expect("position");
        let who = format!("{name} ({member})");
        match outcome {
            Outcome::Completed => {
                self.succeeded = true;
                if !self.ask_all {
                    self.candidates.clear();
                }
            }
            Outcome::NotReady => {
                self.not_ready.push(rank);
                tracing::info!(context = %self.context, "{who} is itself starting: trying the next member");
                self.last = Some((who, TransferFailure::Starting));
            }
            Outcome::NoSuchContext(reason) => {
                let msg = format!(
                    "{who} does not serve context '{}' ({reason}): deploy the context there too, or use the BackupManager which only uses members that serve it",
                    self.context
                );
                tracing::error!("{msg}");
                self.last = Some((who, TransferFailure::NotServing { reason }));
            }
            Outcome::Failed(reason) => {
                let msg = format!(
                    "state transfer of '{}' from {who} failed: {reason}; trying the next member",
                    self.context
                );
                tracing::error!("{msg}");
                self.failed = true;
                self.last = Some((who, reason));
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A member id for tests (the joiner's tests use these too).
    pub(crate) fn m(i: u8) -> MemberId {
        MemberId::from_bytes([i; 16])
    }

    /// A candidate ranked `i`, named `n{i}`.
    pub(crate) fn cand(i: u8) -> (Rank, String) {
        ((u64::from(i), m(i)), format!("n{i}"))
    }

    #[test]
    fn asks_oldest_first_and_skips_failures() {
        let mut p = TransferPlan::new("/app", (9, m(9)), vec![cand(3), cand(1), cand(2)], false);
        assert_eq!(p.next(), Step::Ask(m(1), "n1".into()));
        p.record(m(1), Outcome::NoSuchContext("no listener".into()));
        assert_eq!(p.next(), Step::Ask(m(2), "n2".into()));
        p.record(m(2), Outcome::Failed(TransferFailure::NoAck { ms: 5 }));
        assert_eq!(p.next(), Step::Ask(m(3), "n3".into()));
        p.record(m(3), Outcome::Completed);
        assert_eq!(p.next(), Step::Ready);
        // The last failure is what a timeout of the whole transfer names.
        assert!(
            matches!(&p.last, Some((who, cause)) if who.starts_with("n2 (") && *cause == TransferFailure::NoAck { ms: 5 }),
            "{:?}",
            p.last
        );
    }

    #[test]
    fn every_transfer_failed_is_asked_again_not_ready_empty() {
        let mut p = TransferPlan::new("/app", (9, m(9)), vec![cand(1), cand(2)], false);
        p.record(m(1), Outcome::Failed(TransferFailure::NoAck { ms: 5 }));
        p.record(m(2), Outcome::Failed(TransferFailure::Left));
        assert_eq!(p.next(), Step::Retry);
        // n2 is gone; n1 is asked again and answers.
        p.restart(vec![cand(1)]);
        assert_eq!(p.next(), Step::Ask(m(1), "n1".into()));
        p.record(m(1), Outcome::Completed);
        assert_eq!(p.next(), Step::Ready);
        // Everyone that failed left: nobody holds anything any more, start empty.
        let mut p = TransferPlan::new("/app", (9, m(9)), vec![cand(1)], false);
        p.record(m(1), Outcome::Failed(TransferFailure::Left));
        assert_eq!(p.next(), Step::Retry);
        p.restart(vec![]);
        assert_eq!(p.next(), Step::Ready);
    }

    #[test]
    fn nobody_serving_is_ready_at_once() {
        let mut p = TransferPlan::new("/app", (9, m(9)), vec![], false);
        assert_eq!(p.next(), Step::Ready);
        let mut p = TransferPlan::new("/app", (9, m(9)), vec![cand(1)], false);
        p.record(m(1), Outcome::NoSuchContext("x".into()));
        assert_eq!(p.next(), Step::Ready);
    }

    #[test]
    fn simultaneous_start_oldest_goes_first() {
        // The oldest starting node becomes ready; the younger ones retry.
        let mut old = TransferPlan::new("/app", (1, m(1)), vec![cand(2), cand(3)], false);
        old.record(m(2), Outcome::NotReady);
        old.record(m(3), Outcome::NotReady);
        assert_eq!(old.next(), Step::Ready);
        let mut young = TransferPlan::new("/app", (3, m(3)), vec![cand(1), cand(2)], false);
        young.record(m(1), Outcome::NotReady);
        young.record(m(2), Outcome::NotReady);
        assert_eq!(young.next(), Step::Retry);
        young.restart(vec![cand(1), cand(2)]);
        young.record(m(1), Outcome::Completed);
        assert_eq!(young.next(), Step::Ready);
    }

    #[test]
    fn backup_asks_everyone() {
        let mut p = TransferPlan::new("/app", (9, m(9)), vec![cand(1), cand(2)], true);
        p.record(m(1), Outcome::Completed);
        assert_eq!(p.next(), Step::Ask(m(2), "n2".into()));
        p.record(m(2), Outcome::Completed);
        assert_eq!(p.next(), Step::Ready);
    }
}
