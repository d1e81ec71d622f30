//! The cluster dashboard's data: every member's state, history and events.
//!
//! Each node samples its own statistics every second ([`PERIOD`]) and broadcasts them
//! as a small [`Report`] on the channel topic [`TOPIC`]; each node keeps the reports it
//! receives in a [`ClusterView`], so any node's page shows the whole cluster without
//! knowing the others' HTTP addresses. [`ClusterView`] is plain data with time passed
//! in; the task in [`run`] only samples, moves bytes and reads the clock.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tribes::{Channel, MemberId, MembershipEvent, SendMode, SendOptions};
use tribes_sessions::SessionManager;

use crate::events::{Event, EventKind, EventLog, GoneReason};
use crate::history::{Counters, History, Sample};
use crate::metrics::counters_for;

/// The channel topic of the status reports.
pub(crate) const TOPIC: &str = "tribes.status";
/// The version of [`Report`]; a report of another version is ignored.
pub(crate) const REPORT_VERSION: u32 = 1;
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
            MemberState::Gone { .. } => "gone",
        }
    }

    /// Since when the state holds (Unix ms).
    pub(crate) fn since_ms(self) -> u64 {
        match self {
            MemberState::Ready { since_ms }
            | MemberState::NotReady { since_ms }
            | MemberState::NoReport { since_ms } => since_ms,
            MemberState::Silent { last_report_ms } => last_report_ms,
            MemberState::Gone { at_ms, .. } => at_ms,
        }
    }
}

impl Entry {
    pub(crate) fn state(&self) -> MemberState {
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
            history: History::default(),
        });
        let back = matches!(entry.presence, Presence::Gone { .. });
        entry.presence = Presence::Live;
        if back {
            self.event(now_ms, route, EventKind::Back { addr });
        } else if announce {
            self.event(now_ms, route, EventKind::Joined { addr });
        }
    }

    /// A member removed by membership.
    pub(crate) fn handle_gone(&mut self, now_ms: u64, id: &str, route: &str, reason: GoneReason) {
        if let Some(e) = self.members.get_mut(id) {
            e.presence = Presence::Gone { at_ms: now_ms, reason };
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

    /// Every member's events about itself plus this node's, newest first.
    pub(crate) fn all_events(&self, limit: usize) -> Vec<&Event> {
        let mut all: Vec<&Event> = self.events.iter().collect();
        for e in self.members.values().filter(|e| e.id != self.local_id) {
            if let Some((_, r)) = &e.report {
                all.extend(r.events.iter().filter(|ev| ev.is_own()));
            }
        }
        all.sort_by_key(|e| std::cmp::Reverse(e.at_ms));
        all.truncate(limit);
        all
    }
}

/// Unix milliseconds now (the shell's clock).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One node's dashboard: its view and the contexts (managers) it samples.
#[derive(Debug)]
pub(crate) struct Dashboard {
    pub(crate) view: Mutex<ClusterView>,
    managers: Mutex<Vec<SessionManager>>,
}

impl Dashboard {
    pub(crate) fn view(&self) -> std::sync::MutexGuard<'_, ClusterView> {
        self.view.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The dashboard of `channel`'s node, shared by every status router of the node, with
/// `manager`'s context added. The first call starts the sampling task (if there is a
/// tokio runtime; without one the page shows what it can: nothing is sampled).
pub(crate) fn dashboard_for(manager: &SessionManager, channel: &Channel) -> Arc<Dashboard> {
    static ALL: OnceLock<Mutex<HashMap<MemberId, Weak<Dashboard>>>> = OnceLock::new();
    let local = channel.local();
    let mut all = ALL
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    all.retain(|_, d| d.strong_count() > 0);
    if let Some(d) = all.get(&local.id()).and_then(Weak::upgrade) {
        let mut managers = d.managers.lock().unwrap_or_else(|e| e.into_inner());
        if !managers.iter().any(|m| m.context() == manager.context()) {
            managers.push(manager.clone());
        }
        drop(managers);
        return d;
    }
    let d = Arc::new(Dashboard {
        view: Mutex::new(ClusterView::new(
            local.id().to_string(),
            local.name().to_owned(),
            local.addr().to_string(),
            now_ms(),
        )),
        managers: Mutex::new(vec![manager.clone()]),
    });
    all.insert(local.id(), Arc::downgrade(&d));
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => {
            rt.spawn(run(Arc::downgrade(&d), channel.clone()));
        }
        Err(_) => tracing::warn!("status_router called outside a tokio runtime: the dashboard shows no other member"),
    }
    d
}

fn sample(managers: &[SessionManager], channel: &Channel) -> LocalSample {
    let mut s = LocalSample::default();
    for m in managers {
        let st = m.stats();
        let layer = counters_for(m);
        s.counters.requests += layer.requests.get();
        s.counters.commits += layer.commits.get();
        s.counters.failures += st.failures;
        let manager = match st.kind {
            tribes_sessions::ManagerKind::Delta => "delta".to_owned(),
            tribes_sessions::ManagerKind::Backup { backup_count } => format!("backup ({backup_count})"),
        };
        let store = st.store.as_ref().map(|x| StoreHealth {
            name: x.name.clone(),
            healthy: x.healthy,
            error: x.health_error.clone(),
        });
        s.contexts.push((
            ContextReport {
                context: st.context.clone(),
                manager,
                ready: st.ready,
                sessions: st.sessions as u64,
                store,
            },
            st.state_transfer.clone(),
        ));
    }
    let cs = channel.stats();
    for m in &cs.members {
        s.counters.messages += m.messages_out + m.messages_in;
        s.counters.bytes += m.bytes_out + m.bytes_in;
        s.counters.acks += m.acks;
        s.counters.failures += m.failures;
        s.counters.timeouts += m.timeouts;
        s.peers
            .push((m.id.clone(), m.name.clone(), m.queue_depth as u64, m.acks));
    }
    s.refused = cs
        .refused
        .iter()
        .map(|(peer, r)| (peer.clone(), r.count, r.last_reason.clone()))
        .collect();
    s
}

/// Samples and reports every [`PERIOD`], takes the others' reports and membership
/// events, until every router of the node is dropped.
async fn run(dashboard: Weak<Dashboard>, channel: Channel) {
    let mut inbox = channel.listen(TOPIC);
    let mut events = channel.subscribe();
    if let Some(d) = dashboard.upgrade() {
        let now = now_ms();
        let mut view = d.view();
        for m in channel.members() {
            view.handle_live(now, m.id().to_string(), m.name(), m.addr().to_string(), false);
        }
    }
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let Some(d) = dashboard.upgrade() else { break };
                let managers = d.managers.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let local = sample(&managers, &channel);
                let now = now_ms();
                let report = {
                    let mut view = d.view();
                    view.tick(now);
                    view.observe_local(now, local)
                };
                drop(d);
                match serde_json::to_vec(&report) {
                    Ok(bytes) => {
                        channel.broadcast(TOPIC, Bytes::from(bytes), SendOptions::mode(SendMode::Async)).await;
                    }
                    Err(e) => tracing::warn!(error = %e, "status report did not encode"),
                }
            }
            Some(msg) = inbox.recv() => {
                let Some(d) = dashboard.upgrade() else { break };
                let from = msg.from().clone();
                if let Err(e) = d.view().handle_report(now_ms(), &from.id().to_string(), msg.payload()) {
                    tracing::debug!(member = %from.name(), error = %e, "status report ignored");
                }
            }
            ev = events.recv() => {
                let Some(d) = dashboard.upgrade() else { break };
                let now = now_ms();
                let mut view = d.view();
                match ev {
                    Ok(MembershipEvent::Added(m)) => view.handle_live(now, m.id().to_string(), m.name(), m.addr().to_string(), true),
                    Ok(MembershipEvent::Back(m)) => view.handle_live(now, m.id().to_string(), m.name(), m.addr().to_string(), true),
                    Ok(MembershipEvent::Disappeared { member, reason }) => {
                        view.handle_gone(now, &member.id().to_string(), member.name(), reason.into());
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => view.handle_missed(now, n),
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(route: &str, at_ms: u64, requests: u64, contexts: usize) -> Vec<u8> {
        let r = Report {
            v: REPORT_VERSION,
            route: route.into(),
            addr: format!("127.0.0.1:{}", 4000 + route.len()),
            at_ms,
            ready: true,
            ready_since_ms: 1_000,
            contexts: (0..contexts)
                .map(|i| ContextReport {
                    context: format!("/app{i}"),
                    manager: "delta".into(),
                    ready: true,
                    sessions: 10 + i as u64,
                    store: None,
                })
                .collect(),
            counters: Counters {
                requests,
                ..Counters::default()
            },
            peers: vec![PeerLag {
                id: "A-ID".into(),
                route: "a".into(),
                queue_depth: 3,
                last_ack_ms: Some(at_ms - 500),
            }],
            events: vec![Event {
                at_ms: 1_500,
                member: route.into(),
                observer: route.into(),
                kind: EventKind::Ready {
                    context: "/app0".into(),
                    transfer_ms: Some(80),
                    sessions: 10,
                    from: vec!["a".into()],
                    attempts: vec![],
                },
            }],
        };
        serde_json::to_vec(&r).unwrap()
    }

    fn local(ready: bool) -> LocalSample {
        LocalSample {
            contexts: vec![(
                ContextReport {
                    context: "/app0".into(),
                    manager: "delta".into(),
                    ready,
                    sessions: 1,
                    store: None,
                },
                tribes_sessions::TransferStats::default(),
            )],
            ..LocalSample::default()
        }
    }

    #[test]
    fn reports_make_members_ready_with_history_lag_and_their_events() {
        let mut v = ClusterView::new("A-ID".into(), "a".into(), "127.0.0.1:1".into(), 0);
        v.observe_local(1_000, local(true));
        v.handle_live(1_000, "B-ID".into(), "b", "127.0.0.1:2".into(), true);
        assert_eq!(v.members["B-ID"].state(), MemberState::NoReport { since_ms: 1_000 });
        for i in 0..5 {
            v.handle_report(2_000 + i * 1_000, "B-ID", &report("b", 2_000 + i * 1_000, i * 7, 1))
                .unwrap();
        }
        assert_eq!(v.members["B-ID"].state(), MemberState::Ready { since_ms: 1_000 });
        assert_eq!(
            v.members["B-ID"].history.rates(crate::history::Metric::Requests).last(),
            Some(&(6_000, 7.0))
        );
        // b's view of a: queue 3, acked half a second before its report.
        assert_eq!(v.lag("A-ID"), (Some(3), Some(5_500)));
        let words: Vec<String> = v.all_events(10).iter().map(|e| e.words()).collect();
        assert!(
            words
                .iter()
                .any(|w| w.contains("state transfer of 10 sessions from a in 80 ms")),
            "{words:?}"
        );
        assert!(
            words.iter().any(|w| w == "b joined the cluster from 127.0.0.1:2"),
            "{words:?}"
        );
        assert_eq!(
            v.ordered().iter().map(|e| e.route.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
    }

    #[test]
    fn silence_gone_and_back_are_states_and_events() {
        let mut v = ClusterView::new("A-ID".into(), "a".into(), "127.0.0.1:1".into(), 0);
        v.handle_report(1_000, "C-ID", &report("c", 1_000, 0, 1)).unwrap();
        v.tick(1_000 + SILENT_AFTER_MS);
        assert!(matches!(v.members["C-ID"].state(), MemberState::Ready { .. }));
        v.tick(1_001 + SILENT_AFTER_MS);
        assert_eq!(v.members["C-ID"].state(), MemberState::Silent { last_report_ms: 1_000 });
        v.handle_report(5_000, "C-ID", &report("c", 5_000, 0, 1)).unwrap();
        assert!(matches!(v.members["C-ID"].state(), MemberState::Ready { .. }));
        v.handle_gone(6_000, "C-ID", "c", GoneReason::ConnectionLost);
        assert_eq!(
            v.members["C-ID"].state(),
            MemberState::Gone {
                at_ms: 6_000,
                reason: GoneReason::ConnectionLost
            }
        );
        // A gone member's queue no longer counts, and it is forgotten after a while.
        assert_eq!(v.lag("A-ID"), (None, None));
        let kinds: Vec<&EventKind> = v.events.iter().map(|e| &e.kind).collect();
        assert!(
            matches!(
                kinds[..],
                [EventKind::Silent { .. }, EventKind::Reporting, EventKind::Gone { .. }]
            ),
            "{kinds:?}"
        );
        v.tick(6_000 + KEEP_GONE_MS);
        assert!(!v.members.contains_key("C-ID"));
        v.handle_live(7_000, "C-ID".into(), "c", "x".into(), true);
        v.handle_gone(7_500, "C-ID", "c", GoneReason::Silent);
        v.handle_live(8_000, "C-ID".into(), "c", "x".into(), true);
        assert!(matches!(v.events.iter().last().unwrap().kind, EventKind::Back { .. }));
    }

    #[test]
    fn bad_reports_are_refused_and_change_nothing() {
        let mut v = ClusterView::new("A-ID".into(), "a".into(), "127.0.0.1:1".into(), 0);
        assert!(matches!(
            v.handle_report(1, "X", b"garbage"),
            Err(ReportError::Decode(_))
        ));
        let big = vec![b' '; MAX_REPORT_LEN + 1];
        assert_eq!(
            v.handle_report(1, "X", &big),
            Err(ReportError::TooLong {
                len: MAX_REPORT_LEN + 1
            })
        );
        let mut r: serde_json::Value = serde_json::from_slice(&report("x", 1_000, 0, 1)).unwrap();
        r["v"] = serde_json::json!(99);
        assert_eq!(
            v.handle_report(1, "X", r.to_string().as_bytes()),
            Err(ReportError::Version(99))
        );
        assert_eq!(v.members.len(), 1);
    }

    #[test]
    fn local_transitions_become_events_and_ready_since() {
        let mut v = ClusterView::new("A-ID".into(), "a".into(), "127.0.0.1:1".into(), 0);
        let r = v.observe_local(1_000, local(false));
        assert_eq!((r.ready, r.ready_since_ms), (false, 0));
        let r = v.observe_local(2_000, local(true));
        assert_eq!((r.ready, r.ready_since_ms), (true, 2_000));
        let mut s = local(true);
        s.refused = vec![("127.0.0.1:9".into(), 1, "sealed with another cluster key".into())];
        v.observe_local(3_000, s.clone());
        let r = v.observe_local(4_000, s);
        let kinds: Vec<&str> = r
            .events
            .iter()
            .map(|e| match e.kind {
                EventKind::NotReady { .. } => "not ready",
                EventKind::Ready { .. } => "ready",
                EventKind::Refused { .. } => "refused",
                _ => "other",
            })
            .collect();
        assert_eq!(
            kinds,
            ["not ready", "ready", "refused"],
            "a refusal is reported once per new count"
        );
        assert_eq!(v.members["A-ID"].state(), MemberState::Ready { since_ms: 2_000 });
    }

    #[test]
    fn twenty_members_of_five_contexts_render_every_row() {
        let mut v = ClusterView::new("A-ID".into(), "a".into(), "127.0.0.1:1".into(), 0);
        v.observe_local(1_000, local(true));
        for m in 0..19 {
            let route = format!("node-{m:02}");
            for i in 0..60u64 {
                v.handle_report(
                    i * 1_000,
                    &format!("ID{m}"),
                    &report(&route, 1_000 + i * 1_000, i * i, 5),
                )
                .unwrap();
            }
        }
        let html = crate::dashboard_html::render(&v, 61_000, "/cluster/");
        assert_eq!(html.matches("<tr id=\"member-").count(), 20);
        assert_eq!(html.matches("data-state=\"ready\"").count(), 20);
        assert_eq!(html.matches("<li data-context=").count(), 19 * 5 + 1);
        assert_eq!(html.matches("<svg class=\"chart\"").count(), 20 * 5);
        assert!(html.len() < 600 * 1024, "{} bytes", html.len());
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "nothing loaded from elsewhere"
        );
    }
}
