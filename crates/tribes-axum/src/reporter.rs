//! The shell around [`ClusterView`]: one task per channel samples this node's
//! statistics every [`PERIOD`], broadcasts its report on [`TOPIC`], and feeds the view
//! the reports and membership events it receives. It reads the clock; the view does not.

use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use tribes::{Channel, MembershipEvent, SendMode, SendOptions};
use tribes_sessions::SessionManager;

use crate::clock::now_ms;
use crate::counters::counters_for;
use crate::dashboard::{ClusterView, ContextReport, LocalSample, PERIOD, StoreHealth, TOPIC};

/// One node's dashboard: its view and the contexts (managers) it samples.
#[derive(Debug)]
pub(crate) struct Dashboard {
    pub(crate) view: Mutex<ClusterView>,
    managers: Mutex<Vec<SessionManager>>,
    /// The session browser's questions waiting for the other members' answers.
    pub(crate) admin: crate::browser_net::Pending,
}

impl crate::browser_net::Answering for Dashboard {
    fn manager(&self, context: &str) -> Option<SessionManager> {
        Dashboard::manager(self, context)
    }

    fn pending(&self) -> &crate::browser_net::Pending {
        &self.admin
    }
}

impl Dashboard {
    pub(crate) fn view(&self) -> std::sync::MutexGuard<'_, ClusterView> {
        self.view.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The manager of `context` on this node, if it serves it.
    pub(crate) fn manager(&self, context: &str) -> Option<SessionManager> {
        let managers = self.managers.lock().unwrap_or_else(|e| e.into_inner());
        managers.iter().find(|m| m.context() == context).cloned()
    }
}

/// Where a manager keeps the dashboard of its node (its
/// [`extension`](SessionManager::extension) slot, no process-wide registry). Weak: a
/// status router keeps the dashboard alive, a manager does not (the dashboard holds the
/// managers).
#[derive(Debug, Default)]
pub(crate) struct DashboardSlot(Mutex<Weak<Dashboard>>);

impl DashboardSlot {
    fn get(&self) -> Option<Arc<Dashboard>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).upgrade()
    }

    fn set(&self, d: &Arc<Dashboard>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Arc::downgrade(d);
    }
}

/// The dashboard of `channel`'s node for `managers` (the contexts of one status router):
/// the one a manager of them already shows, if any, else a new one, with every context
/// of `managers` added and each manager keeping it in its slot. A new dashboard starts
/// the sampling task and the task that answers the other members' session browsers (if
/// there is a tokio runtime; without one the page shows what it can: nothing is sampled).
pub(crate) fn dashboard_for(managers: &[SessionManager], channel: &Channel) -> Arc<Dashboard> {
    let existing = managers.iter().find_map(|m| m.extension::<DashboardSlot>().get());
    let d = existing.unwrap_or_else(|| start(channel));
    {
        let mut held = d.managers.lock().unwrap_or_else(|e| e.into_inner());
        for manager in managers {
            if !held.iter().any(|m| m.context() == manager.context()) {
                held.push(manager.clone());
            }
        }
    }
    for manager in managers {
        manager.extension::<DashboardSlot>().set(&d);
    }
    d
}

/// A new dashboard of `channel`'s node, with no context yet, and its tasks.
fn start(channel: &Channel) -> Arc<Dashboard> {
    let local = channel.local();
    let d = Arc::new(Dashboard {
        view: Mutex::new(ClusterView::new(
            local.id().to_string(),
            local.name().to_owned(),
            local.addr().to_string(),
            now_ms(),
        )),
        managers: Mutex::new(Vec::new()),
        admin: crate::browser_net::Pending::default(),
    });
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => {
            rt.spawn(run(Arc::downgrade(&d), channel.clone()));
            rt.spawn(crate::browser_net::serve(Arc::downgrade(&d), channel.clone()));
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
            _ => format!("{:?}", st.kind).to_ascii_lowercase(),
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
        if m.suspected {
            s.suspected.push(m.id.clone());
        }
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
    let mut inbox = match channel.listen(TOPIC) {
        Ok(inbox) => inbox,
        Err(error) => {
            tracing::warn!(%error, "the cluster dashboard shows this node only");
            return;
        }
    };
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
                    Ok(MembershipEvent::Suspected { member, silent_for, cause }) => {
                        let silent_ms = u64::try_from(silent_for.as_millis()).unwrap_or(u64::MAX);
                        view.handle_suspected(now, &member.id().to_string(), member.name(), silent_ms, cause.into());
                    }
                    Ok(MembershipEvent::Cleared(m)) => view.handle_cleared(now, &m.id().to_string(), m.name()),
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => view.handle_missed(now, n),
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
        }
    }
}
