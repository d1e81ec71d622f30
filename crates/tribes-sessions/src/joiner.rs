//! The receiving side of a state transfer (Tomcat's state transfer on join), with no
//! sockets and no clock: which member to ask (the [`TransferPlan`]), when an attempt has
//! failed (its request was refused or not acked, no chunk came for the attempt timeout,
//! the member left, it is itself starting), when to ask again, and when to give up and
//! serve degraded. The tokio driver (`manager.rs`) and the simulation drive this same
//! machine.
//!
//! Call order: [`Joiner::poll`] says what to do now ([`JoinAction`]); after an `Ask`,
//! report the request's ack with [`Joiner::on_ack`]; report each `Chunk`, `Done` and
//! `NotReady` message as it arrives. Poll again after any report, and at least every
//! few tens of milliseconds (time is an argument, never read here).

use tribes::MemberId;

use crate::error::{StateTransferError, TransferFailure};
use crate::stats::{AttemptOutcome, TransferAttempt};
use crate::transfer::{Outcome, Rank, Step, TransferPlan};

/// How long an attempt may stay silent, the whole transfer may take, and the pause
/// before asking again when every member failed or is itself starting.
#[derive(Debug, Clone, Copy)]
pub(crate) struct JoinTimeouts {
    pub(crate) attempt_ms: u64,
    pub(crate) total_ms: u64,
    pub(crate) retry_ms: u64,
}

/// What the driver must do.
#[derive(Debug, PartialEq)]
pub(crate) enum JoinAction {
    /// Nothing until a message arrives or time passes.
    Wait,
    /// Send `GetAll { request }` to `member` (sync-ack) and report the ack.
    Ask {
        member: MemberId,
        name: String,
        request: u64,
    },
    /// The sessions arrived (from these members, possibly none): serve.
    Ready { from: Vec<(MemberId, String)> },
    /// No complete transfer within the total timeout: serve, and say why.
    Degraded(StateTransferError),
}

/// How a `GetAll` was acknowledged.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum AckResult {
    /// Acked: the member streams the sessions.
    Acked,
    /// Refused: the member does not serve the context.
    NoSuchContext(String),
    /// Not delivered or not acked in time.
    Failed(TransferFailure),
}

#[derive(Debug)]
struct Asking {
    member: MemberId,
    name: String,
    request: u64,
    acked: bool,
    seen_chunks: u64,
    last_progress: u64,
    /// When the request was made.
    asked_ms: u64,
    /// Sessions its chunks carried so far.
    sessions: u64,
}

/// One starting node's state transfer.
#[derive(Debug)]
pub(crate) struct Joiner {
    context: String,
    started_ms: u64,
    timeouts: JoinTimeouts,
    plan: TransferPlan,
    asking: Option<Asking>,
    retry_at: Option<u64>,
    request: u64,
    chunks: u64,
    done: bool,
    completed: Vec<(MemberId, String, u64)>,
    attempts: Vec<TransferAttempt>,
}

impl Joiner {
    /// `candidates`: the members serving the context now, with their age rank; `ask_all`
    /// for the BackupManager (each member holds different sessions).
    pub(crate) fn new(
        context: &str,
        local: Rank,
        started_ms: u64,
        candidates: Vec<(Rank, String)>,
        ask_all: bool,
        timeouts: JoinTimeouts,
    ) -> Self {
        Joiner {
            context: context.to_string(),
            started_ms,
            timeouts,
            plan: TransferPlan::new(context, local, candidates, ask_all),
            asking: None,
            retry_at: None,
            request: 0,
            chunks: 0,
            done: false,
            completed: Vec::new(),
            attempts: Vec::new(),
        }
    }

    /// Every attempt so far, in order: member, duration and outcome (for the status page).
    pub(crate) fn attempts(&self) -> &[TransferAttempt] {
        &self.attempts
    }

    /// The completed transfers: source, its name, the request.
    pub(crate) fn completed(&self) -> &[(MemberId, String, u64)] {
        &self.completed
    }

    /// The `GetAll { request }` sent to `member` was acked, refused or lost.
    pub(crate) fn on_ack(&mut self, member: MemberId, request: u64, result: AckResult, now_ms: u64) {
        let Some(a) = self.current(member, request) else { return };
        match result {
            AckResult::Acked => {
                a.acked = true;
                a.last_progress = now_ms;
            }
            AckResult::NoSuchContext(reason) => self.finish_attempt(Outcome::NoSuchContext(reason), now_ms),
            AckResult::Failed(reason) => self.finish_attempt(Outcome::Failed(reason), now_ms),
        }
    }

    /// `Msg::NotReady`: the member asked is itself receiving the sessions.
    pub(crate) fn on_not_ready(&mut self, member: MemberId, request: u64, now_ms: u64) {
        if self.current(member, request).is_some() {
            self.finish_attempt(Outcome::NotReady, now_ms);
        }
    }

    /// A `Chunk` of `request` carrying `sessions` arrived: whether it belongs to the
    /// current attempt (the caller applies it then; a chunk of an abandoned attempt is
    /// dropped).
    pub(crate) fn on_chunk(&mut self, request: u64, sessions: u64) -> bool {
        let Some(a) = self.asking.as_mut().filter(|a| a.request == request) else {
            return false;
        };
        a.sessions += sessions;
        self.chunks += 1;
        true
    }

    /// `Done` of `request`: every chunk was sent.
    pub(crate) fn on_done(&mut self, request: u64) {
        if self.asking.as_ref().is_some_and(|a| a.request == request) {
            self.done = true;
        }
    }

    /// What to do at `now_ms`. `member_up` says whether a member is still in the
    /// membership; `candidates` lists the members serving the context (asked again
    /// after a pause when every attempt failed or every member was starting).
    pub(crate) fn poll(
        &mut self,
        now_ms: u64,
        member_up: impl Fn(MemberId) -> bool,
        candidates: impl FnOnce() -> Vec<(Rank, String)>,
    ) -> JoinAction {
        if now_ms.saturating_sub(self.started_ms) >= self.timeouts.total_ms {
            let (member, cause) = self
                .plan
                .last
                .clone()
                .unwrap_or(("none".into(), TransferFailure::NoAnswer));
            return JoinAction::Degraded(StateTransferError::TimedOut {
                context: self.context.clone(),
                member,
                cause,
                timeout: std::time::Duration::from_millis(self.timeouts.total_ms),
            });
        }
        if let Some(a) = &mut self.asking {
            let member = a.member;
            if !member_up(member) {
                self.finish_attempt(Outcome::Failed(TransferFailure::Left), now_ms);
            } else if a.acked && self.done {
                self.completed.push((member, a.name.clone(), a.request));
                self.finish_attempt(Outcome::Completed, now_ms);
            } else if a.acked && now_ms.saturating_sub(a.last_progress) >= self.timeouts.attempt_ms {
                if self.chunks == a.seen_chunks {
                    let silent = TransferFailure::Silent {
                        ms: self.timeouts.attempt_ms,
                    };
                    self.finish_attempt(Outcome::Failed(silent), now_ms);
                } else {
                    a.seen_chunks = self.chunks;
                    a.last_progress = now_ms;
                }
            }
            if self.asking.is_some() {
                return JoinAction::Wait;
            }
        }
        if let Some(at) = self.retry_at {
            if now_ms < at {
                return JoinAction::Wait;
            }
            self.retry_at = None;
            self.plan.restart(candidates());
        }
        match self.plan.next() {
            Step::Ready => JoinAction::Ready {
                from: self.completed.iter().map(|(m, n, _)| (*m, n.clone())).collect(),
            },
            Step::Retry => {
                self.retry_at = Some(now_ms + self.timeouts.retry_ms);
                JoinAction::Wait
            }
            Step::Ask(member, name) => {
                self.request += 1;
                self.chunks = 0;
                self.done = false;
                self.asking = Some(Asking {
                    member,
                    name: name.clone(),
                    request: self.request,
                    acked: false,
                    seen_chunks: 0,
                    last_progress: now_ms,
                    asked_ms: now_ms,
                    sessions: 0,
                });
                JoinAction::Ask {
                    member,
                    name,
                    request: self.request,
                }
            }
        }
    }

    fn current(&mut self, member: MemberId, request: u64) -> Option<&mut Asking> {
        self.asking
            .as_mut()
            .filter(|a| a.request == request && a.member == member)
    }

    /// The current attempt ended at `now_ms`: kept with its duration and the sessions
    /// it brought, and reported to the plan.
    fn finish_attempt(&mut self, outcome: Outcome, now_ms: u64) {
        let Some(a) = self.asking.take() else { return };
        let typed = match &outcome {
            Outcome::Completed => AttemptOutcome::Received { sessions: a.sessions },
            Outcome::NotReady => AttemptOutcome::NotReady,
            Outcome::NoSuchContext(reason) => AttemptOutcome::NoSuchContext { reason: reason.clone() },
            Outcome::Failed(cause) => AttemptOutcome::Failed {
                cause: cause.to_string(),
            },
        };
        self.attempts.push(TransferAttempt::new(
            a.name,
            a.member.to_string(),
            Some(now_ms.saturating_sub(a.asked_ms)),
            typed,
        ));
        self.plan.record(a.member, outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transfer::tests::{cand, m};

    const T: JoinTimeouts = JoinTimeouts {
        attempt_ms: 1_000,
        total_ms: 10_000,
        retry_ms: 100,
    };

    fn ask(j: &mut Joiner, now: u64) -> (MemberId, u64) {
        match j.poll(now, |_| true, Vec::new) {
            JoinAction::Ask { member, request, .. } => (member, request),
            other => panic!("expected an ask, got {other:?}"),
        }
    }

    #[test]
    fn a_transfer_completes_after_the_ack_and_done_in_either_order() {
        let mut j = Joiner::new("/app", (9, m(9)), 0, vec![cand(1)], false, T);
        let (member, request) = ask(&mut j, 0);
        j.on_done(request);
        assert_eq!(j.poll(10, |_| true, Vec::new), JoinAction::Wait, "done before the ack");
        j.on_ack(member, request, AckResult::Acked, 20);
        assert_eq!(
            j.poll(30, |_| true, Vec::new),
            JoinAction::Ready {
                from: vec![(m(1), "n1".into())]
            }
        );
        assert_eq!(
            j.attempts(),
            [TransferAttempt::new(
                "n1",
                m(1).to_string(),
                Some(30),
                AttemptOutcome::Received { sessions: 0 }
            )]
        );
    }

    #[test]
    fn each_attempt_keeps_its_duration_and_the_sessions_its_chunks_carried() {
        let mut j = Joiner::new("/app", (9, m(9)), 0, vec![cand(1), cand(2)], false, T);
        let (first, r1) = ask(&mut j, 100);
        j.on_ack(
            first,
            r1,
            AckResult::Failed(TransferFailure::NotDelivered {
                reason: "connection refused".into(),
            }),
            130,
        );
        let (second, r2) = ask(&mut j, 200);
        j.on_ack(second, r2, AckResult::Acked, 210);
        assert!(j.on_chunk(r2, 3));
        assert!(!j.on_chunk(r1, 50), "not the current attempt");
        assert!(j.on_chunk(r2, 2));
        j.on_done(r2);
        assert!(matches!(j.poll(450, |_| true, Vec::new), JoinAction::Ready { .. }));
        let attempts = j.attempts();
        assert_eq!(attempts.len(), 2);
        assert_eq!((attempts[0].member.as_str(), attempts[0].duration_ms), ("n1", Some(30)));
        assert_eq!(
            attempts[0].outcome,
            AttemptOutcome::Failed {
                cause: "connection refused".into()
            }
        );
        assert!(attempts[0].is_failure());
        assert_eq!(
            attempts[1],
            TransferAttempt::new(
                "n2",
                m(2).to_string(),
                Some(250),
                AttemptOutcome::Received { sessions: 5 }
            )
        );
        assert!(!attempts[1].is_failure());
        assert_eq!(
            attempts[0].to_string(),
            format!(
                "state transfer from n1 ({}) failed after 30 ms: connection refused; trying the next member",
                m(1)
            )
        );
    }

    #[test]
    fn a_silent_member_fails_its_attempt_and_the_next_is_asked_while_chunks_keep_it_alive() {
        let mut j = Joiner::new("/app", (9, m(9)), 0, vec![cand(1), cand(2)], false, T);
        let (first, r1) = ask(&mut j, 0);
        j.on_ack(first, r1, AckResult::Acked, 0);
        assert!(j.on_chunk(r1, 1));
        assert_eq!(
            j.poll(1_000, |_| true, Vec::new),
            JoinAction::Wait,
            "a chunk came: still alive"
        );
        // No chunk for another attempt timeout: the next member is asked.
        let (second, r2) = ask(&mut j, 2_000);
        assert_eq!((first, second), (m(1), m(2)));
        assert!(!j.on_chunk(r1, 1), "a chunk of the abandoned attempt is dropped");
        assert!(
            matches!(&j.attempts()[0], TransferAttempt { duration_ms: Some(2_000), outcome: AttemptOutcome::Failed { cause }, .. } if cause.contains("silent")),
            "{:?}",
            j.attempts()
        );
        let _ = r2;
    }

    #[test]
    fn not_ready_and_refusals_move_on_and_the_total_timeout_names_the_last_cause() {
        let mut j = Joiner::new("/app", (9, m(9)), 0, vec![cand(1), cand(2)], false, T);
        let (a, ra) = ask(&mut j, 0);
        j.on_not_ready(a, ra, 5);
        let (b, rb) = ask(&mut j, 10);
        j.on_ack(
            b,
            rb,
            AckResult::Failed(TransferFailure::NotDelivered {
                reason: "connection refused".into(),
            }),
            20,
        );
        // Every attempt failed: ask again after the pause, until the total timeout.
        assert_eq!(j.poll(30, |_| true, Vec::new), JoinAction::Wait);
        match j.poll(10_000, |_| true, || vec![cand(2)]) {
            JoinAction::Degraded(StateTransferError::TimedOut { member, cause, .. }) => {
                assert!(member.contains("n2"), "{member}");
                assert_eq!(
                    cause,
                    TransferFailure::NotDelivered {
                        reason: "connection refused".into()
                    }
                );
                assert!(cause.to_string().contains("connection refused"), "{cause}");
            }
            other => panic!("expected degraded, got {other:?}"),
        }
        let kept: Vec<_> = j.attempts().iter().map(|a| (a.duration_ms, a.is_failure())).collect();
        assert_eq!(kept, [(Some(5), false), (Some(10), true)], "not ready is no failure");
    }

    #[test]
    fn a_member_that_leaves_mid_transfer_fails_the_attempt() {
        let mut j = Joiner::new("/app", (9, m(9)), 0, vec![cand(1)], false, T);
        let (a, r) = ask(&mut j, 0);
        j.on_ack(a, r, AckResult::Acked, 0);
        assert_eq!(j.poll(10, |m| m != a, Vec::new), JoinAction::Wait);
        assert!(
            matches!(j.attempts(), [TransferAttempt { duration_ms: Some(10), outcome: AttemptOutcome::Failed { cause }, .. }] if cause.contains("left")),
            "{:?}",
            j.attempts()
        );
    }
}
