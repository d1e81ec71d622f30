//! The cluster dashboard's data: every member's state, history and events.
//!
//! Each node samples its own statistics every second ([`PERIOD`]) and broadcasts them
//! as a small [`Report`] on the channel topic [`TOPIC`]; each node keeps the reports it
//! receives in a [`ClusterView`], so any node's page shows the whole cluster without
//! knowing the others' HTTP addresses. [`ClusterView`] is plain data with time passed
//! in; the task in [`crate::reporter`] only samples, moves bytes and reads the clock.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::events::{Event, EventKind, EventLog, GoneReason, SuspectCause};
use crate::history::{Counters, History, Sample};

/// The channel topic of the status reports.
pub(crate) const TOPIC: &str = "tribes.status";
/// The version of [`Report`]; a report of another version is ignored.
/// Version 2: the state transfer's attempts are typed ([`tribes_sessions::TransferAttempt`]).
pub(crate) const REPORT_VERSION: u32 = 2;
/// How often a node samples itself and sends its report.
pub(crate) const PERIOD: Duration = Duration::from_secs(1);
/// A live member without a report for this long is shown as silent.
pub(crate) const SILENT_AFTER_MS: u64 = 3_500;
/// A gone member stays on the page this long.
pub(crate) const KEEP_GONE_MS: u64 = 10 * 60_000;
/// Reports longer than this are refused before decoding.
const MAX_REPORT_LEN: usize = 256 * 1024;
/// Own events carried in each report.
const EVENTS_PER_REPORT: usize = 16;

/// One context on one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ContextReport {
    pub(crate) context: String,
    pub(crate) manager: String,
    pub(crate) ready: bool,
    pub(crate) sessions: u64,
    pub(crate) store: Option<StoreHealth>,
}

/// A context's session store, as its health check last saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoreHealth {
    pub(crate) name: String,
    pub(crate) healthy: Option<bool>,
    pub(crate) error: Option<String>,
}

/// How far behind a peer is, as one node sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PeerLag {
    pub(crate) id: String,
    pub(crate) route: String,
    /// Batches queued for it, not yet written.
    pub(crate) queue_depth: u64,
    /// When its ack count last grew (Unix ms, at one-second resolution), if ever.
    pub(crate) last_ack_ms: Option<u64>,
}

/// The status message a node broadcasts every [`PERIOD`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Report {
    pub(crate) v: u32,
    pub(crate) route: String,
    pub(crate) addr: String,
    /// Unix ms by the sender's clock.
    pub(crate) at_ms: u64,
    pub(crate) ready: bool,
    pub(crate) ready_since_ms: u64,
    pub(crate) contexts: Vec<ContextReport>,
    pub(crate) counters: Counters,
    pub(crate) peers: Vec<PeerLag>,
    /// The sender's latest events about itself, oldest first.
    pub(crate) events: Vec<Event>,
}

/// What one sampling of this node found (the task fills it from the statistics).
#[derive(Clone, Debug, Default)]
pub(crate) struct LocalSample {
    pub(crate) contexts: Vec<(ContextReport, tribes_sessions::TransferStats)>,
    pub(crate) counters: Counters,
    /// Per peer: id, route, queue depth, acks so far.
    pub(crate) peers: Vec<(String, String, u64, u64)>,
    /// Refused peers: address, count, last reason.
    pub(crate) refused: Vec<(String, u64, String)>,
    /// The ids of the members membership suspects now (a `Cleared` event this node
    /// missed still ends the suspicion on the page).
    pub(crate) suspected: Vec<String>,
}

/// Whether a member is on the cluster's member list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Presence {
    Live,
    Gone { at_ms: u64, reason: GoneReason },
}

/// One member as this node knows it.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub(crate) id: String,
    pub(crate) route: String,
    pub(crate) addr: String,
    pub(crate) presence: Presence,
    pub(crate) first_seen_ms: u64,
    /// The last report and when it arrived (this node's clock).
    pub(crate) report: Option<(u64, Report)>,
    pub(crate) silent: bool,
    /// Membership suspects it: since when (this node's clock), how long it had been
    /// silent then, and why.
    pub(crate) suspected: Option<(u64, u64, SuspectCause)>,
    pub(crate) history: History,
}

/// What the page says about a member's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MemberState {
    Ready {
        since_ms: u64,
    },
    NotReady {
        since_ms: u64,
    },
    /// Listed by membership, no report yet.
    NoReport {
        since_ms: u64,
    },
    /// Listed by membership, its reports stopped.
    Silent {
        last_report_ms: u64,
    },
    /// Listed by membership, which suspects it and verifies it over TCP.
    Suspected {
        since_ms: u64,
        silent_ms: u64,
        cause: SuspectCause,
    },
    Gone {
        at_ms: u64,
        reason: GoneReason,
    },
}

impl MemberState {
    pub(crate) fn name(self) -> &'static str {
        match self {
            MemberState::Ready { .. } => "ready",
            MemberState::NotReady { .. } => "not_ready",
            MemberState::NoReport { .. } => "no_report",
            MemberState::Silent { .. } => "silent",
            MemberState::Suspected { .. } => "suspected",
            MemberState::Gone { .. } => "gone",
        }
    }

    /// Since when the state holds (Unix ms).
    pub(crate) fn since_ms(self) -> u64 {
        match self {
            MemberState::Ready { since_ms }
            | MemberState::NotReady { since_ms }
            | MemberState::NoReport { since_ms }
            | MemberState::Suspected { since_ms, .. } => since_ms,
            MemberState::Silent { last_report_ms } => last_report_ms,
            MemberState::Gone { at_ms, .. } => at_ms,
        }
    }
}

impl Entry {
    pub(crate) fn state(&self) -> MemberState {
        if let (Presence::Live, Some((since_ms, silent_ms, cause))) = (self.presence, self.suspected) {
            return MemberState::Suspected {
                since_ms,
                silent_ms,
                cause,
            };
        }
        match (self.presence, &self.report) {
            (Presence::Gone { at_ms, reason }, _) => MemberState::Gone { at_ms, reason },
            (Presence::Live, None) => MemberState::NoReport {
                since_ms: self.first_seen_ms,
            },
            (Presence::Live, Some((received, _))) if self.silent => MemberState::Silent {
                last_report_ms: *received,
            },
            (Presence::Live, Some((_, r))) if r.ready => MemberState::Ready {
                since_ms: r.ready_since_ms,
            },
            (Presence::Live, Some((_, r))) => MemberState::NotReady {
                since_ms: r.ready_since_ms,
            },
        }
    }
}

/// Why a received report was not taken.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum ReportError {
    #[error("status report of {len} bytes exceeds the {MAX_REPORT_LEN}-byte limit")]
    TooLong { len: usize },
    #[error("status report does not decode: {0}")]
    Decode(String),
    #[error("status report version {0}, this build reads version {REPORT_VERSION}")]
    Version(u32),
}

/// This node's picture of the cluster.
#[derive(Debug)]
pub(crate) struct ClusterView {
    pub(crate) local_id: String,
    pub(crate) local_route: String,
    local_addr: String,
    ready: Option<bool>,
    ready_since_ms: u64,
    contexts_ready: HashMap<String, bool>,
    stores_healthy: HashMap<String, Option<bool>>,
    refused_seen: HashMap<String, u64>,
    acks_seen: HashMap<String, (u64, Option<u64>)>,
    /// Every member, this node included, by id.
    pub(crate) members: BTreeMap<String, Entry>,
    pub(crate) events: EventLog,
}

impl ClusterView {
    pub(crate) fn new(local_id: String, route: String, addr: String, now_ms: u64) -> Self {
        let mut members = BTreeMap::new();
        members.insert(
            local_id.clone(),
            Entry {
                id: local_id.clone(),
                route: route.clone(),
                addr: addr.clone(),
                presence: Presence::Live,
                first_seen_ms: now_ms,
                report: None,
                silent: false,
                suspected: None,
                history: History::default(),
            },
        );
        ClusterView {
            local_id,
            local_route: route,
            local_addr: addr,
            ready: None,
            ready_since_ms: now_ms,
            contexts_ready: HashMap::new(),
            stores_healthy: HashMap::new(),
            refused_seen: HashMap::new(),
            acks_seen: HashMap::new(),
            members,
            events: EventLog::default(),
        }
    }

    fn event(&mut self, now_ms: u64, member: &str, kind: EventKind) {
        self.events.push(Event {
            at_ms: now_ms,
            member: member.to_owned(),
            observer: self.local_route.clone(),
            kind,
        });
    }

    /// Takes this node's sample: records its transitions as events and returns the
    /// report to broadcast.
    pub(crate) fn observe_local(&mut self, now_ms: u64, sample: LocalSample) -> Report {
        let me = self.local_route.clone();
        for (c, transfer) in &sample.contexts {
            let was = self.contexts_ready.insert(c.context.clone(), c.ready);
            match (was, c.ready) {
                (Some(true), true) | (Some(false), false) => {}
                (_, true) => self.event(
                    now_ms,
                    &me,
                    EventKind::Ready {
                        context: c.context.clone(),
                        transfer_ms: transfer.duration_ms,
                        sessions: transfer.sessions_received,
                        from: transfer.from.clone(),
                        attempts: transfer.attempts.clone(),
                    },
                ),
                (_, false) => self.event(
                    now_ms,
                    &me,
                    EventKind::NotReady {
                        context: c.context.clone(),
                    },
                ),
            }
            if let Some(store) = &c.store {
                let was = self.stores_healthy.insert(c.context.clone(), store.healthy).flatten();
                match (was, store.healthy) {
                    (Some(true) | None, Some(false)) => self.event(
                        now_ms,
                        &me,
                        EventKind::StoreDown {
                            context: c.context.clone(),
                            store: store.name.clone(),
                            error: store.error.clone().unwrap_or_else(|| "no error text".into()),
                        },
                    ),
                    (Some(false), Some(true)) => self.event(
                        now_ms,
                        &me,
                        EventKind::StoreUp {
                            context: c.context.clone(),
                            store: store.name.clone(),
                        },
                    ),
                    _ => {}
                }
            }
        }
        let ready = sample.contexts.iter().all(|(c, _)| c.ready);
        if self.ready != Some(ready) {
            if self.ready.is_some() {
                self.ready_since_ms = now_ms;
            }
            self.ready = Some(ready);
        }
        for (peer, count, reason) in &sample.refused {
            if self.refused_seen.insert(peer.clone(), *count) != Some(*count) {
                self.event(
                    now_ms,
                    &me,
                    EventKind::Refused {
                        peer: peer.clone(),
                        count: *count,
                        reason: reason.clone(),
                    },
                );
            }
        }
        for e in self.members.values_mut() {
            if e.suspected.is_some() && !sample.suspected.contains(&e.id) {
                e.suspected = None;
            }
        }
        let peers = sample
            .peers
            .iter()
            .map(|(id, route, queue_depth, acks)| {
                let seen = self.acks_seen.entry(id.clone()).or_insert((*acks, None));
                if *acks > seen.0 {
                    *seen = (*acks, Some(now_ms));
                }
                PeerLag {
                    id: id.clone(),
                    route: route.clone(),
                    queue_depth: *queue_depth,
                    last_ack_ms: seen.1,
                }
            })
            .collect();
        let own: Vec<Event> = self
            .events
            .iter()
            .rev()
            .filter(|e| e.is_own())
            .take(EVENTS_PER_REPORT)
            .cloned()
            .collect();
        let report = Report {
            v: REPORT_VERSION,
            route: me,
            addr: self.local_addr.clone(),
            at_ms: now_ms,
            ready,
            ready_since_ms: self.ready_since_ms,
            contexts: sample.contexts.into_iter().map(|(c, _)| c).collect(),
            counters: sample.counters,
            peers,
            events: own.into_iter().rev().collect(),
        };
        if let Some(e) = self.members.get_mut(&self.local_id) {
            e.history.push(Sample {
                at_ms: now_ms,
                counters: report.counters,
            });
            e.report = Some((now_ms, report.clone()));
        }
        report
    }

    /// A member seen by membership (joined, or listed when the dashboard started).
    pub(crate) fn handle_live(&mut self, now_ms: u64, id: String, route: &str, addr: String, announce: bool) {
        let entry = self.members.entry(id.clone()).or_insert_with(|| Entry {
            id,
            route: route.to_owned(),
            addr: addr.clone(),
            presence: Presence::Live,
            first_seen_ms: now_ms,
            report: None,
            silent: false,
            suspected: None,
            history: History::default(),
        });
        let back = matches!(entry.presence, Presence::Gone { .. });
        entry.presence = Presence::Live;
        if back {
            entry.suspected = None;
        }
        if back {
            self.event(now_ms, route, EventKind::Back { addr });
        } else if announce {
            self.event(now_ms, route, EventKind::Joined { addr });
        }
    }

    /// Membership suspects a member, silent for `silent_ms`, and verifies it.
    pub(crate) fn handle_suspected(&mut self, now_ms: u64, id: &str, route: &str, silent_ms: u64, cause: SuspectCause) {
        if let Some(e) = self.members.get_mut(id) {
            e.suspected = Some((now_ms, silent_ms, cause));
        }
        self.event(now_ms, route, EventKind::Suspected { silent_ms, cause });
    }

    /// A suspected member proved alive.
    pub(crate) fn handle_cleared(&mut self, now_ms: u64, id: &str, route: &str) {
        if let Some(e) = self.members.get_mut(id) {
            e.suspected = None;
        }
        self.event(now_ms, route, EventKind::Cleared);
    }

    /// A member removed by membership.
    pub(crate) fn handle_gone(&mut self, now_ms: u64, id: &str, route: &str, reason: GoneReason) {
        if let Some(e) = self.members.get_mut(id) {
            e.presence = Presence::Gone { at_ms: now_ms, reason };
            e.suspected = None;
        }
        self.event(now_ms, route, EventKind::Gone { reason });
    }

    /// Membership events this node read too late to see.
    pub(crate) fn handle_missed(&mut self, now_ms: u64, count: u64) {
        let me = self.local_route.clone();
        self.event(now_ms, &me, EventKind::Missed { count });
    }

    /// A report received from the live member `from_id`.
    pub(crate) fn handle_report(&mut self, now_ms: u64, from_id: &str, bytes: &[u8]) -> Result<(), ReportError> {
        if bytes.len() > MAX_REPORT_LEN {
            return Err(ReportError::TooLong { len: bytes.len() });
        }
        let report: Report = serde_json::from_slice(bytes).map_err(|e| ReportError::Decode(e.to_string()))?;
        if report.v != REPORT_VERSION {
            return Err(ReportError::Version(report.v));
        }
        self.handle_live(now_ms, from_id.to_owned(), &report.route, report.addr.clone(), false);
        let mut resumed = None;
        if let Some(e) = self.members.get_mut(from_id) {
            e.history.push(Sample {
                at_ms: report.at_ms,
                counters: report.counters,
            });
            if e.silent {
                e.silent = false;
                resumed = Some(e.route.clone());
            }
            e.report = Some((now_ms, report));
        }
        if let Some(route) = resumed {
            self.event(now_ms, &route, EventKind::Reporting);
        }
        Ok(())
    }

    /// Marks members whose reports stopped, and forgets those gone long ago.
    pub(crate) fn tick(&mut self, now_ms: u64) {
        let mut silenced = Vec::new();
        for e in self.members.values_mut() {
            if e.id == self.local_id || e.presence != Presence::Live || e.silent {
                continue;
            }
            let last = e.report.as_ref().map_or(e.first_seen_ms, |(at, _)| *at);
            if now_ms.saturating_sub(last) > SILENT_AFTER_MS {
                e.silent = true;
                silenced.push((e.route.clone(), now_ms - last));
            }
        }
        for (route, for_ms) in silenced {
            self.event(now_ms, &route, EventKind::Silent { for_ms });
        }
        self.members.retain(|_, e| match e.presence {
            Presence::Gone { at_ms, .. } => now_ms.saturating_sub(at_ms) < KEEP_GONE_MS,
            Presence::Live => true,
        });
    }

    /// Members in the order the page lists them: this node, then by route.
    pub(crate) fn ordered(&self) -> Vec<&Entry> {
        let mut v: Vec<&Entry> = self.members.values().collect();
        v.sort_by(|a, b| (a.id != self.local_id, &a.route, &a.id).cmp(&(b.id != self.local_id, &b.route, &b.id)));
        v
    }

    /// How far behind `id` is: the deepest queue toward it and its latest ack, over
    /// every live member's report.
    pub(crate) fn lag(&self, id: &str) -> (Option<u64>, Option<u64>) {
        let mut queue = None;
        let mut last_ack = None;
        for e in self
            .members
            .values()
            .filter(|e| e.presence == Presence::Live && !e.silent)
        {
            let Some((_, r)) = &e.report else { continue };
            for p in r.peers.iter().filter(|p| p.id == id) {
                queue = queue.max(Some(p.queue_depth));
                last_ack = last_ack.max(p.last_ack_ms);
            }
        }
        (queue, last_ack)
    }

    /// Every member's events about itself plus this node's, newest first (events of one
    /// millisecond in the reverse of their order: a suspicion and the departure it
    /// ended in may share one).
    pub(crate) fn all_events(&self, limit: usize) -> Vec<&Event> {
        let mut all: Vec<&Event> = self.events.iter().rev().collect();
        for e in self.members.values().filter(|e| e.id != self.local_id) {
            if let Some((_, r)) = &e.report {
                all.extend(r.events.iter().rev().filter(|ev| ev.is_own()));
            }
        }
        all.sort_by_key(|e| std::cmp::Reverse(e.at_ms));
        all.truncate(limit);
        all
    }
}

#[cfg(test)]
#[path = "dashboard_tests.rs"]
mod tests;
