//! What happened in the cluster, in words: a bounded log of typed events, each naming
//! the member, the context where there is one, and the fix where one exists.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use tribes::{DepartureReason, SuspicionCause};
use tribes_sessions::{AttemptOutcome, TransferAttempt};

/// Events kept by one node.
pub(crate) const KEEP: usize = 200;

/// Why a member is gone (tribes' [`DepartureReason`], as data for the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum GoneReason {
    Silent,
    ConnectionLost,
    Left,
    Replaced,
}

impl From<DepartureReason> for GoneReason {
    fn from(r: DepartureReason) -> Self {
        match r {
            DepartureReason::Silent => GoneReason::Silent,
            DepartureReason::ConnectionLost => GoneReason::ConnectionLost,
            DepartureReason::Left => GoneReason::Left,
            DepartureReason::Replaced => GoneReason::Replaced,
        }
    }
}

impl GoneReason {
    /// The reason in words.
    pub(crate) fn words(self) -> &'static str {
        match self {
            GoneReason::Silent => "its heartbeats stopped and a TCP check did not reach it",
            GoneReason::ConnectionLost => "its connection closed and a TCP check found nothing listening",
            GoneReason::Left => "it shut down cleanly and said goodbye",
            GoneReason::Replaced => "a new process answers at its address: it restarted",
        }
    }

    /// What the operator can do, if anything.
    pub(crate) fn fix(self) -> Option<&'static str> {
        match self {
            GoneReason::Silent => Some(
                "check that the process runs and is not stalled, and that the network between the members passes its cluster port",
            ),
            GoneReason::ConnectionLost => Some(
                "the process died or was killed (kill -9, out of memory, crash): look at its log and restart it; its sessions are served by the other members",
            ),
            GoneReason::Left | GoneReason::Replaced => None,
        }
    }

    /// Whether it is bad news.
    fn is_failure(self) -> bool {
        matches!(self, GoneReason::Silent | GoneReason::ConnectionLost)
    }
}

/// Why a member is suspected (tribes' [`SuspicionCause`], as data).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum SuspectCause {
    Silent,
    ConnectionLost,
}

impl From<SuspicionCause> for SuspectCause {
    fn from(c: SuspicionCause) -> Self {
        match c {
            SuspicionCause::Silent => SuspectCause::Silent,
            SuspicionCause::ConnectionLost => SuspectCause::ConnectionLost,
        }
    }
}

impl SuspectCause {
    /// Why, in words, for a member silent for `silent_ms`.
    pub(crate) fn words(self, silent_ms: u64) -> String {
        match self {
            SuspectCause::Silent => format!(
                "no heartbeat for {}.{} s; verifying over TCP",
                silent_ms / 1000,
                silent_ms % 1000 / 100
            ),
            SuspectCause::ConnectionLost => "its connection closed; verifying over TCP".to_owned(),
        }
    }

    /// What the operator can do while it is verified.
    fn fix(self) -> &'static str {
        match self {
            SuspectCause::Silent => {
                "if it stays silent it is removed within the drop time: check that the process runs and is not stalled (CPU, swap), and that heartbeats pass between the members"
            }
            SuspectCause::ConnectionLost => {
                "nothing if it answers; if it was killed or crashed it is removed as soon as nothing answers at its address, and the other members serve its sessions"
            }
        }
    }
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum EventKind {
    /// A member was seen for the first time.
    Joined { addr: String },
    /// A member declared gone was heard again (a healed partition).
    Back { addr: String },
    /// A member is gone.
    Gone { reason: GoneReason },
    /// Membership suspects a member (silent, or its connection closed) and verifies it.
    Suspected { silent_ms: u64, cause: SuspectCause },
    /// A suspected member answered: no longer suspected.
    Cleared,
    /// A member stopped sending its status reports although membership still lists it.
    Silent { for_ms: u64 },
    /// A member's status reports resumed.
    Reporting,
    /// A context stopped serving (state transfer running).
    NotReady { context: String },
    /// A context became ready: its state transfer, if any.
    Ready {
        context: String,
        transfer_ms: Option<u64>,
        sessions: u64,
        from: Vec<String>,
        attempts: Vec<TransferAttempt>,
    },
    /// Frames from a peer were refused.
    Refused { peer: String, count: u64, reason: String },
    /// A context's session store failed its health check.
    StoreDown {
        context: String,
        store: String,
        error: String,
    },
    /// A context's session store is healthy again.
    StoreUp { context: String, store: String },
    /// Membership events were lost because this node read them too slowly.
    Missed { count: u64 },
}

/// How an event reads: fine, worth a look, or a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Severity {
    Info,
    Warning,
    Failure,
}

impl Severity {
    pub(crate) fn class(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warn",
            Severity::Failure => "bad",
        }
    }
}

/// One event: when, about which member, seen by which member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Event {
    /// Unix milliseconds, by the observer's clock.
    pub(crate) at_ms: u64,
    /// The route of the member the event is about.
    pub(crate) member: String,
    /// The route of the member that saw it.
    pub(crate) observer: String,
    #[serde(flatten)]
    pub(crate) kind: EventKind,
}

impl Event {
    /// The context the event concerns, if any.
    pub(crate) fn context(&self) -> Option<&str> {
        match &self.kind {
            EventKind::NotReady { context }
            | EventKind::Ready { context, .. }
            | EventKind::StoreDown { context, .. }
            | EventKind::StoreUp { context, .. } => Some(context),
            _ => None,
        }
    }

    /// Whether the event is about the observer itself (then only it can tell).
    pub(crate) fn is_own(&self) -> bool {
        matches!(
            self.kind,
            EventKind::NotReady { .. }
                | EventKind::Ready { .. }
                | EventKind::Refused { .. }
                | EventKind::StoreDown { .. }
                | EventKind::StoreUp { .. }
        )
    }

    pub(crate) fn severity(&self) -> Severity {
        match &self.kind {
            EventKind::Gone { reason } if reason.is_failure() => Severity::Failure,
            EventKind::Refused { .. } | EventKind::StoreDown { .. } => Severity::Failure,
            EventKind::Ready { attempts, .. } if attempts.iter().any(TransferAttempt::is_failure) => {
                // Ready, but without any member's sessions: it serves without them.
                if attempts
                    .iter()
                    .any(|a| matches!(a.outcome, AttemptOutcome::Received { .. }))
                {
                    Severity::Warning
                } else {
                    Severity::Failure
                }
            }
            EventKind::Silent { .. } | EventKind::Missed { .. } | EventKind::Suspected { .. } => Severity::Warning,
            _ => Severity::Info,
        }
    }

    /// The event in words.
    pub(crate) fn words(&self) -> String {
        let m = &self.member;
        match &self.kind {
            EventKind::Joined { addr } => format!("{m} joined the cluster from {addr}"),
            EventKind::Back { addr } => format!("{m} ({addr}) is back with the same id (a healed partition)"),
            EventKind::Gone { reason } => format!("{m} is gone: {}", reason.words()),
            EventKind::Suspected { silent_ms, cause } => format!("{m} is suspected: {}", cause.words(*silent_ms)),
            EventKind::Cleared => format!("{m} answered the verification or sent a heartbeat: no longer suspected"),
            EventKind::Silent { for_ms } => format!(
                "{m} sent no status report for {} s (it may be overloaded, or run without the dashboard)",
                for_ms / 1000
            ),
            EventKind::Reporting => format!("{m} reports its status again"),
            EventKind::NotReady { context } => {
                format!("{m} does not serve context {context} yet: its state transfer is running")
            }
            EventKind::Ready {
                context,
                transfer_ms,
                sessions,
                from,
                attempts,
            } => {
                let failed: Vec<String> = attempts.iter().filter(|a| a.is_failure()).map(failure).collect();
                let mut s = match (transfer_ms, from.is_empty()) {
                    (Some(ms), false) => format!(
                        "{m} is ready for context {context}: state transfer of {sessions} sessions from {} in {ms} ms",
                        sources(from, attempts)
                    ),
                    (Some(ms), true) if !failed.is_empty() => {
                        format!("{m} is ready for context {context} after {ms} ms without any member's sessions")
                    }
                    (Some(ms), true) => {
                        format!("{m} is ready for context {context} after {ms} ms: no member had sessions to send")
                    }
                    (None, _) => format!("{m} is ready for context {context}"),
                };
                if !failed.is_empty() {
                    s.push_str(if failed.len() == 1 {
                        "; 1 attempt failed: "
                    } else {
                        "; attempts that failed: "
                    });
                    s.push_str(&failed.join("; "));
                }
                s
            }
            EventKind::Refused { peer, count, reason } => {
                format!("{m} refused {peer} ({count} times so far): {reason}")
            }
            EventKind::StoreDown { context, store, error } => {
                format!("{m}: the session store {store} of context {context} is unhealthy: {error}")
            }
            EventKind::StoreUp { context, store } => {
                format!("{m}: the session store {store} of context {context} is healthy again")
            }
            EventKind::Missed { count } => {
                format!("{m} missed {count} membership events (it was too slow to read them)")
            }
        }
    }

    /// What to do about it, where something can be done.
    pub(crate) fn fix(&self) -> Option<String> {
        match &self.kind {
            EventKind::Gone { reason } => reason.fix().map(str::to_owned),
            EventKind::Suspected { cause, .. } => Some(cause.fix().to_owned()),
            EventKind::Silent { .. } => Some(format!(
                "open {} 's own /cluster/ page, or check its CPU and its log",
                self.member
            )),
            EventKind::Refused { .. } => Some(
                "give every member the same cluster key file and the same domain; a peer from another cluster should not reach this port"
                    .to_owned(),
            ),
            EventKind::StoreDown { .. } => Some(
                "check that the store is reachable from this node and accepts its credentials; writes wait or fail until it is back"
                    .to_owned(),
            ),
            EventKind::Ready { context, attempts, .. } => transfer_fix(context, attempts),
            _ => None,
        }
    }
}

/// The sources of a state transfer, each member with the sessions it sent when more
/// than one sent some (a store, listed after the members, has no count).
fn sources(from: &[String], attempts: &[TransferAttempt]) -> String {
    let received = |name: &str| {
        attempts.iter().find_map(|a| match a.outcome {
            AttemptOutcome::Received { sessions } if a.member == name => Some(sessions),
            _ => None,
        })
    };
    let several = from.iter().filter(|f| received(f).is_some()).count() > 1;
    from.iter()
        .map(|f| match received(f) {
            Some(n) if several => format!("{f} ({n})"),
            _ => f.clone(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A failed attempt for the event text: member, duration, cause.
fn failure(a: &TransferAttempt) -> String {
    let after = a.duration_ms.map(|ms| format!(" after {ms} ms")).unwrap_or_default();
    let cause = match &a.outcome {
        AttemptOutcome::NoSuchContext { reason } => format!("it does not serve the context ({reason})"),
        AttemptOutcome::Failed { cause } => cause.clone(),
        _ => return a.to_string(),
    };
    format!("{}{after}: {cause}", a.member)
}

/// What to do about a state transfer's failed attempts.
fn transfer_fix(context: &str, attempts: &[TransferAttempt]) -> Option<String> {
    let names = |pick: fn(&AttemptOutcome) -> bool| {
        let mut v: Vec<&str> = attempts
            .iter()
            .filter(|a| pick(&a.outcome))
            .map(|a| a.member.as_str())
            .collect();
        v.dedup();
        v.join(", ")
    };
    let lacking = names(|o| matches!(o, AttemptOutcome::NoSuchContext { .. }));
    let failed = names(|o| matches!(o, AttemptOutcome::Failed { .. }));
    let mut fixes = Vec::new();
    if !lacking.is_empty() {
        fixes.push(format!(
            "deploy context {context} on {lacking} too, or use the BackupManager, which only asks members that serve it"
        ));
    }
    if !failed.is_empty() {
        fixes.push(format!(
            "look at the log of {failed} and check that the cluster port is open between the members (nothing to do for a member stopped on purpose mid-transfer)"
        ));
    }
    (!fixes.is_empty()).then(|| fixes.join("; "))
}

/// The last [`KEEP`] events, oldest first.
#[derive(Clone, Debug, Default)]
pub(crate) struct EventLog {
    events: VecDeque<Event>,
}

impl EventLog {
    pub(crate) fn push(&mut self, event: Event) {
        if self.events.len() == KEEP {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }

    pub(crate) fn iter(&self) -> impl DoubleEndedIterator<Item = &Event> {
        self.events.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: EventKind) -> Event {
        Event {
            at_ms: 1,
            member: "c".into(),
            observer: "a".into(),
            kind,
        }
    }

    #[test]
    fn a_killed_member_reads_as_a_failure_with_a_fix() {
        let e = ev(EventKind::Gone {
            reason: DepartureReason::ConnectionLost.into(),
        });
        assert_eq!(e.severity(), Severity::Failure);
        assert!(
            e.words().starts_with("c is gone: its connection closed"),
            "{}",
            e.words()
        );
        assert!(e.fix().unwrap().contains("restart it"));
        let left = ev(EventKind::Gone {
            reason: GoneReason::Left,
        });
        assert_eq!((left.severity(), left.fix()), (Severity::Info, None));
    }

    fn attempt(member: &str, duration_ms: Option<u64>, outcome: AttemptOutcome) -> TransferAttempt {
        TransferAttempt::new(member, format!("{member}-id"), duration_ms, outcome)
    }

    fn ready(sessions: u64, from: &[&str], attempts: Vec<TransferAttempt>) -> Event {
        ev(EventKind::Ready {
            context: "shop".into(),
            transfer_ms: Some(5_120),
            sessions,
            from: from.iter().map(|f| (*f).to_owned()).collect(),
            attempts,
        })
    }

    #[test]
    fn a_transfer_names_its_source_duration_and_failed_attempts_with_their_cause() {
        let silent = AttemptOutcome::Failed {
            cause: "silent for 5000 ms during the transfer".into(),
        };
        let e = ready(
            7,
            &["b"],
            vec![
                attempt("a", Some(5_000), silent),
                attempt(
                    "d",
                    None,
                    AttemptOutcome::NotServing {
                        reason: "no listener".into(),
                    },
                ),
                attempt("b", Some(120), AttemptOutcome::Received { sessions: 7 }),
            ],
        );
        assert_eq!(
            e.words(),
            "c is ready for context shop: state transfer of 7 sessions from b in 5120 ms; \
             1 attempt failed: a after 5000 ms: silent for 5000 ms during the transfer"
        );
        assert_eq!(e.context(), Some("shop"));
        // Ready from b after a failed attempt on a: worth a look, with the fix.
        assert_eq!(e.severity(), Severity::Warning);
        assert!(e.fix().unwrap().contains("look at the log of a"), "{:?}", e.fix());
        assert!(e.is_own());

        // Nothing failed (a member that does not serve the context is skipped, no failure).
        let fine = ready(
            7,
            &["b"],
            vec![
                attempt(
                    "d",
                    None,
                    AttemptOutcome::NotServing {
                        reason: "no listener".into(),
                    },
                ),
                attempt("a", Some(3), AttemptOutcome::NotReady),
                attempt("b", Some(120), AttemptOutcome::Received { sessions: 7 }),
            ],
        );
        assert_eq!(
            fine.words(),
            "c is ready for context shop: state transfer of 7 sessions from b in 5120 ms"
        );
        assert_eq!((fine.severity(), fine.fix()), (Severity::Info, None));
    }

    #[test]
    fn a_transfer_that_received_nothing_after_failures_is_a_failure_and_sources_carry_counts() {
        let e = ready(
            0,
            &[],
            vec![
                attempt(
                    "a",
                    Some(2),
                    AttemptOutcome::NoSuchContext {
                        reason: "no listener".into(),
                    },
                ),
                attempt(
                    "b",
                    Some(5_000),
                    AttemptOutcome::Failed {
                        cause: "no answer within 5000 ms".into(),
                    },
                ),
            ],
        );
        assert_eq!(
            e.words(),
            "c is ready for context shop after 5120 ms without any member's sessions; attempts that failed: \
             a after 2 ms: it does not serve the context (no listener); b after 5000 ms: no answer within 5000 ms"
        );
        assert_eq!(e.severity(), Severity::Failure);
        let fix = e.fix().unwrap();
        assert!(
            fix.contains("deploy context shop on a too") && fix.contains("log of b"),
            "{fix}"
        );
        // Two members sent sessions (BackupManager): each with its count; a store has none.
        let backup = ready(
            7,
            &["a", "b", "redis"],
            vec![
                attempt("a", Some(40), AttemptOutcome::Received { sessions: 4 }),
                attempt("b", Some(50), AttemptOutcome::Received { sessions: 3 }),
            ],
        );
        assert!(
            backup
                .words()
                .contains("7 sessions from a (4), b (3), redis in 5120 ms"),
            "{}",
            backup.words()
        );
    }

    #[test]
    fn a_suspected_member_is_a_warning_in_words_with_a_fix_and_its_clearing_is_news() {
        let e = ev(EventKind::Suspected {
            silent_ms: 2_050,
            cause: SuspicionCause::Silent.into(),
        });
        assert_eq!(e.words(), "c is suspected: no heartbeat for 2.0 s; verifying over TCP");
        assert_eq!(e.severity(), Severity::Warning);
        assert!(e.fix().unwrap().contains("removed within the drop time"));
        assert!(!e.is_own(), "each member's membership sees it for itself");
        let closed = ev(EventKind::Suspected {
            silent_ms: 300,
            cause: SuspicionCause::ConnectionLost.into(),
        });
        assert_eq!(
            closed.words(),
            "c is suspected: its connection closed; verifying over TCP"
        );
        let cleared = ev(EventKind::Cleared);
        assert!(cleared.words().ends_with("no longer suspected"), "{}", cleared.words());
        assert_eq!((cleared.severity(), cleared.fix()), (Severity::Info, None));
        let json = serde_json::to_string(&closed).unwrap();
        assert!(
            json.contains("\"kind\":\"suspected\"") && json.contains("\"cause\":\"connection_lost\""),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<Event>(&json).unwrap(), closed);
    }

    #[test]
    fn the_log_is_bounded_and_round_trips_as_json() {
        let mut log = EventLog::default();
        for i in 0..(KEEP as u64 + 5) {
            let mut e = ev(EventKind::Missed { count: i });
            e.at_ms = i;
            log.push(e);
        }
        assert_eq!(log.iter().count(), KEEP);
        assert_eq!(log.iter().next().unwrap().at_ms, 5);
        let e = ev(EventKind::Refused {
            peer: "127.0.0.1:9".into(),
            count: 2,
            reason: "another cluster key".into(),
        });
        let json = serde_json::to_string(&e).unwrap();
        assert!(json.contains("\"kind\":\"refused\""), "{json}");
        assert_eq!(serde_json::from_str::<Event>(&json).unwrap(), e);
    }
}
