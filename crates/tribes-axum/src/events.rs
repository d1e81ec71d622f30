//! What happened in the cluster, in words: a bounded log of typed events, each naming
//! the member, the context where there is one, and the fix where one exists.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use tribes::DepartureReason;

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
        attempts: Vec<String>,
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
            EventKind::Silent { .. } | EventKind::Missed { .. } => Severity::Warning,
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
                let mut s = match (transfer_ms, from.is_empty()) {
                    (Some(ms), false) => format!(
                        "{m} is ready for context {context}: state transfer of {sessions} sessions from {} in {ms} ms",
                        from.join(", ")
                    ),
                    (Some(ms), true) => {
                        format!("{m} is ready for context {context} after {ms} ms: no member had sessions to send")
                    }
                    (None, _) => format!("{m} is ready for context {context}"),
                };
                if !attempts.is_empty() {
                    s.push_str("; attempts: ");
                    s.push_str(&attempts.join("; "));
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
            _ => None,
        }
    }
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

    #[test]
    fn a_transfer_names_its_source_duration_and_attempts() {
        let e = ev(EventKind::Ready {
            context: "shop".into(),
            transfer_ms: Some(120),
            sessions: 7,
            from: vec!["b".into()],
            attempts: vec!["a: timed out after 5 s".into()],
        });
        assert_eq!(
            e.words(),
            "c is ready for context shop: state transfer of 7 sessions from b in 120 ms; attempts: a: timed out after 5 s"
        );
        assert_eq!(e.context(), Some("shop"));
        // The attempts are text that mixes successes and failures: not judged here.
        assert_eq!(e.severity(), Severity::Info);
        assert!(e.is_own());
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
