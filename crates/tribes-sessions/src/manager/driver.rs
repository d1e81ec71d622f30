//! The tokio driver of a [`SessionManager`](super::SessionManager): moves messages,
//! membership events, send outcomes and time into the [`SessionNode`] and does what it
//! asks (sends, events, completed fetches, the end of the state transfer). The
//! decisions are the node's (`node.rs`) or, for the store, [`Persistence`](crate::persistence::Persistence)'s;
//! the two the store's answers settle are in `store_ops.rs` (a refused versioned save
//! drops the copy held here; a shared-mode commit with no copy is a conflict or gone, as
//! the store says).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tribes::{Channel, Delivery, Incoming, MemberId, MembershipEvent, SendError, SendMode, SendOptions};

use super::builder::SessionManagerBuilder;
use super::store_ops::finish_startup;
use super::{AckOutcome, MemberAck, Readiness};
use crate::core::{Core, Effect};
use crate::listener::{Origin, SessionEvent, unix_ms};
use crate::node::{Delivered, Now, Output, SessionNode, Transmit};
use crate::persist::StoreState;
use crate::persistence::StoreMode;
use crate::session::Limits;
use crate::stats::MemberReplication;
use crate::wire::{self, Msg};

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) messages_out: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    pub(crate) messages_in: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) acks: AtomicU64,
    pub(crate) failures: AtomicU64,
    pub(crate) undecodable: AtomicU64,
    pub(crate) fetches_unconfirmed: AtomicU64,
}

pub(super) struct Inner {
    pub(super) b: SessionManagerBuilder,
    pub(super) route: Arc<str>,
    pub(super) topic: String,
    pub(super) channel: Channel,
    pub(super) node: Mutex<SessionNode>,
    /// Monotonic time 0 of the node's clock.
    pub(super) epoch: tokio::time::Instant,
    pub(super) ready: watch::Sender<Readiness>,
    pub(super) outbox: mpsc::UnboundedSender<(Vec<MemberId>, Msg)>,
    /// The outcomes of the acknowledged sends the node asked for, back to the driver.
    pub(super) results: mpsc::UnboundedSender<(u64, Delivered)>,
    pub(super) counters: Counters,
    pub(super) per_member: Mutex<HashMap<MemberId, MemberReplication>>,
    /// Requests waiting for a fetch, by the token the node gives back in `Output::Fetched`.
    pub(super) fetch_waiters: Mutex<HashMap<u64, oneshot::Sender<()>>>,
    /// Calls waiting for a principal query (`manager/principals.rs`).
    pub(super) query_waiters: Mutex<HashMap<u64, super::principals::QueryWaiter>>,
    pub(super) next_waiter: AtomicU64,
    /// Wakes the driver when a request gave the node an earlier deadline (a fetch).
    pub(super) kick: Notify,
    pub(super) tasks: Mutex<Vec<JoinHandle<()>>>,
    pub(super) shut: AtomicBool,
    pub(super) store: Option<Arc<StoreState>>,
    /// [`SessionManager::extension`](super::SessionManager::extension)'s values, by type.
    pub(super) extensions: Mutex<HashMap<std::any::TypeId, Arc<dyn std::any::Any + Send + Sync>>>,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The node's core, locked (for the local calls: create, get, commit, ...).
pub(super) struct CoreGuard<'a>(MutexGuard<'a, SessionNode>);

impl std::ops::Deref for CoreGuard<'_> {
    type Target = Core;
    fn deref(&self) -> &Core {
        self.0.core()
    }
}

impl std::ops::DerefMut for CoreGuard<'_> {
    fn deref_mut(&mut self) -> &mut Core {
        self.0.core_mut()
    }
}

impl Inner {
    pub(super) fn node(&self) -> MutexGuard<'_, SessionNode> {
        lock(&self.node)
    }
    pub(super) fn core(&self) -> CoreGuard<'_> {
        CoreGuard(self.node())
    }
    /// Both clocks of the node.
    pub(super) fn clocks(&self) -> Now {
        Now {
            wall_ms: self.now_ms(),
            mono_ms: self.epoch.elapsed().as_millis() as u64,
        }
    }
    pub(super) fn tasks(&self) -> MutexGuard<'_, Vec<JoinHandle<()>>> {
        lock(&self.tasks)
    }
    pub(super) fn now(&self) -> SystemTime {
        self.b.clock.now()
    }
    pub(super) fn now_ms(&self) -> u64 {
        unix_ms(self.now())
    }
    pub(super) fn limits(&self) -> Limits {
        Limits {
            max_attribute_len: self.b.max_attribute_len,
            max_session_len: self.b.max_session_len,
        }
    }
    pub(super) fn context(&self) -> &str {
        &self.b.context
    }

    pub(super) fn shared(&self) -> bool {
        self.store.as_ref().is_some_and(|s| s.mode == StoreMode::Shared)
    }

    /// The core's effects of a local call: through the node, then done.
    pub(super) fn perform(self: &Arc<Self>, effects: Vec<Effect>) {
        let outputs = {
            let mut node = self.node();
            node.absorb(effects);
            node.drain_outputs()
        };
        self.act(outputs);
    }

    /// Does what the node asked for since the last time.
    pub(super) fn run_outputs(self: &Arc<Self>) {
        let outputs = self.node().drain_outputs();
        self.act(outputs);
    }

    pub(super) fn act(self: &Arc<Self>, outputs: Vec<Output>) {
        for output in outputs {
            match output {
                Output::Send(Transmit { to, msg, ack: None }) => {
                    let _ = self.outbox.send((to, msg));
                }
                Output::Send(Transmit {
                    to,
                    msg,
                    ack: Some(ack),
                }) => {
                    let inner = self.clone();
                    tokio::spawn(async move {
                        let timeout = Duration::from_millis(ack.timeout_ms);
                        let (_, outcomes) = inner.send_acks(&to, &msg, SendMode::SyncAck, timeout).await;
                        let result = match outcomes.into_iter().next().map(|(_, d)| d) {
                            Some(Delivery::Acked) => Delivered::Acked,
                            Some(Delivery::Failed(SendError::Refused { reason, .. })) => Delivered::Refused(reason),
                            Some(Delivery::Failed(e)) => Delivered::Failed(e.to_string()),
                            Some(Delivery::TimedOut(d)) => Delivered::TimedOut(d.as_millis() as u64),
                            Some(Delivery::Queued) | None => Delivered::Failed("not sent".into()),
                        };
                        let _ = inner.results.send((ack.token, result));
                    });
                }
                Output::Event(ev) => {
                    if let SessionEvent::Destroyed {
                        id,
                        origin: Origin::Local,
                        ..
                    } = &ev
                        && let Some(store) = self.store.as_ref()
                        && let Some(op) = store.policy().on_expired(*id)
                    {
                        // Expired here, or ended by a logout everywhere or the session
                        // limit: gone from the store too (an app's invalidation is deleted
                        // by its commit; a second delete is harmless).
                        self.spawn_store_op(store.clone(), op);
                    }
                    self.notify(&ev)
                }
                Output::Evicted { id, principal } => self.announce(&crate::ClusterEvent::Evicted {
                    id,
                    principal: principal.to_string(),
                }),
                Output::Expired { id, principal } => self.announce(&crate::ClusterEvent::Expired {
                    id,
                    principal: principal.map(|p| p.to_string()),
                    delivered_by: self.route.to_string(),
                }),
                Output::PrincipalSessions {
                    waiter,
                    sessions,
                    complete,
                } => {
                    if let Some(tx) = lock(&self.query_waiters).remove(&waiter) {
                        let _ = tx.send((sessions, complete));
                    }
                }
                Output::Fetched { waiter, confirmed } => {
                    if !confirmed {
                        self.counters.fetches_unconfirmed.fetch_add(1, Ordering::Relaxed);
                    }
                    if let Some(tx) = lock(&self.fetch_waiters).remove(&waiter) {
                        let _ = tx.send(());
                    }
                }
                Output::Transferred(result) => {
                    let inner = self.clone();
                    let t = tokio::spawn(async move { finish_startup(inner, result).await });
                    self.tasks().push(t);
                }
            }
        }
    }

    pub(super) fn announce(&self, ev: &crate::ClusterEvent) {
        for l in &self.b.cluster_listeners {
            l.on_cluster_event(ev);
        }
    }

    pub(super) fn notify(&self, ev: &SessionEvent) {
        if ev.origin() == Origin::Replicated && !self.b.notify_on_replication {
            return;
        }
        for l in &self.b.listeners {
            l.on_event(ev);
        }
    }

    pub(super) fn name_of(&self, id: MemberId) -> String {
        self.channel
            .member(id)
            .map_or_else(|| id.to_string(), |m| m.name().to_string())
    }

    pub(super) async fn send(
        &self,
        to: &[MemberId],
        msg: &Msg,
        mode: SendMode,
        timeout: Duration,
    ) -> (usize, Vec<MemberAck>) {
        let (len, deliveries) = self.send_acks(to, msg, mode, timeout).await;
        let acks = deliveries
            .into_iter()
            .map(|(id, d)| MemberAck {
                member: self.name_of(id),
                outcome: match d {
                    Delivery::Queued => AckOutcome::Queued,
                    Delivery::Acked => AckOutcome::Acked,
                    Delivery::Failed(e) => AckOutcome::Failed(Arc::new(e)),
                    Delivery::TimedOut(_) => AckOutcome::TimedOut,
                },
            })
            .collect();
        (len, acks)
    }

    /// Sends `msg` and counts it, per member; returns its size and each member's delivery.
    pub(super) async fn send_acks(
        &self,
        to: &[MemberId],
        msg: &Msg,
        mode: SendMode,
        timeout: Duration,
    ) -> (usize, Vec<(MemberId, Delivery)>) {
        let bytes = wire::encode(msg);
        let len = bytes.len();
        let report = self
            .channel
            .send(
                to,
                &self.topic,
                bytes,
                SendOptions::mode(mode).with_ack_timeout(timeout),
            )
            .await;
        let mut per = lock(&self.per_member);
        for (id, d) in &report.outcomes {
            let entry = per.entry(*id).or_insert_with(|| MemberReplication {
                member: self.name_of(*id),
                ..Default::default()
            });
            entry.messages += 1;
            entry.bytes += len as u64;
            self.counters.messages_out.fetch_add(1, Ordering::Relaxed);
            self.counters.bytes_out.fetch_add(len as u64, Ordering::Relaxed);
            match d {
                Delivery::Queued => {}
                Delivery::Acked => {
                    entry.acks += 1;
                    self.counters.acks.fetch_add(1, Ordering::Relaxed);
                }
                Delivery::Failed(_) | Delivery::TimedOut(_) => {
                    entry.failures += 1;
                    self.counters.failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        drop(per);
        (len, report.outcomes)
    }
}

pub(super) async fn run_outbox(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<(Vec<MemberId>, Msg)>) {
    while let Some((to, msg)) = rx.recv().await {
        inner.send(&to, &msg, SendMode::Async, inner.b.ack_timeout).await;
    }
}

/// The driver: moves messages, membership changes, send outcomes and time into the
/// node, and does what it asks for. Every decision is the node's (`node.rs`).
pub(super) async fn run_driver(
    inner: Arc<Inner>,
    mut listener: tribes::Listener,
    mut events: tokio::sync::broadcast::Receiver<MembershipEvent>,
    mut results: mpsc::UnboundedReceiver<(u64, Delivered)>,
) {
    loop {
        let wake_at = inner.epoch + Duration::from_millis(inner.node().poll_timeout());
        tokio::select! {
            incoming = listener.recv() => {
                let Some(incoming) = incoming else { return };
                handle_incoming(&inner, incoming);
            }
            event = events.recv() => {
                let now = inner.clocks();
                match event {
                    Ok(MembershipEvent::Added(m)) => inner.node().handle_member_up(now, m, false),
                    Ok(MembershipEvent::Back(m)) => inner.node().handle_member_up(now, m, true),
                    Ok(MembershipEvent::Disappeared { member, reason }) => {
                        tracing::info!(context = %inner.context(), member = %member, ?reason, "member gone");
                        inner.node().handle_member_down(now, member.id());
                    }
                    // Not departures: a suspected member keeps serving until it is gone.
                    Ok(MembershipEvent::Suspected { .. } | MembershipEvent::Cleared(_)) => {}
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        inner.node().handle_members(now, inner.channel.members());
                    }
                    Err(_) => return,
                }
            }
            _ = inner.kick.notified() => {}
            Some((token, result)) = results.recv() => {
                inner.node().handle_send_result(inner.clocks(), token, result);
            }
            _ = tokio::time::sleep_until(wake_at) => {
                let now = inner.clocks();
                let discovering = inner.node().is_discovering();
                if discovering && discovery_settled(&inner.channel) {
                    // Every member the channel lists now is known before the greetings.
                    let members = inner.channel.members();
                    let mut node = inner.node();
                    node.handle_members(now, members);
                    node.handle_discovery_settled();
                }
                inner.node().handle_timeout(now);
            }
        }
        inner.run_outputs();
    }
}

/// Whether discovery found what it was configured with: every candidate was probed, and
/// every one that answered is a member. (A candidate is reported up a moment before the
/// membership task adds its member; greeting in between would make this node ready
/// without that member's sessions.)
fn discovery_settled(channel: &Channel) -> bool {
    let stats = channel.stats();
    let members = channel.members();
    stats.candidates.values().all(|c| match (&c.member, c.up) {
        (Some(name), true) => members.iter().any(|m| m.name() == name),
        (None, true) => true,
        (_, false) => c.probed,
    })
}

fn handle_incoming(inner: &Arc<Inner>, incoming: Incoming) {
    let from = incoming.from().id();
    inner.counters.messages_in.fetch_add(1, Ordering::Relaxed);
    inner
        .counters
        .bytes_in
        .fetch_add(incoming.payload().len() as u64, Ordering::Relaxed);
    let msg = match wire::decode(incoming.payload()) {
        Ok(m) => m,
        Err(e) => {
            inner.counters.undecodable.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(context = %inner.context(), from = %incoming.from(), "{e}");
            incoming.fail(e);
            return;
        }
    };
    // One lock per message: handled, and what it caused taken, together.
    let now = inner.clocks();
    let outputs = {
        let mut node = inner.node();
        node.handle_message(now, from, msg);
        node.drain_outputs()
    };
    // Acked before anything the message caused is sent (a GetAll's first chunk).
    drop(incoming);
    inner.act(outputs);
}

impl Inner {
    pub(super) fn is_serving(&self) -> bool {
        self.ready.borrow().is_serving()
    }
}
