//! `SessionManager`: the builder, the public operations and the tokio driver that
//! moves bytes and time between the [`SessionNode`] and the tribes channel.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tribes::{Channel, Delivery, Incoming, MemberId, MembershipEvent, SendError, SendMode, SendOptions};

use crate::node::{Delivered, NodeConfig, Now, Output, SessionNode, Transmit};

use crate::core::{Commit, Core, CoreConfig, Effect, Filter};
use crate::error::{CreateError, ReplicationError, StartError, StateTransferError};
use crate::id::SessionId;
use crate::joiner::JoinTimeouts;
use crate::kind::{ManagerKind, ReplicationMode};
use crate::listener::{Clock, DestroyReason, Origin, SessionEvent, SessionListener, SystemClock, unix_ms};
use crate::persist::{StoreMode, StoreState};
use crate::session::{HandleState, Limits, Session};
use crate::stats::{ManagerStats, MemberReplication};
use crate::store::{SessionStore, StoreError, StoredSession};
use crate::wire::{self, Msg};

mod principals;
pub use principals::LogoutReport;

/// Whether a manager serves requests yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// Receiving the sessions from the cluster.
    Starting,
    /// Serving, with the cluster's sessions.
    Ready,
    /// Serving, but the state transfer failed: sessions held elsewhere may be missing.
    Degraded(StateTransferError),
    /// Shut down.
    ShutDown,
}

impl Readiness {
    /// Whether the manager serves requests (`Ready` or `Degraded`).
    pub fn is_serving(&self) -> bool {
        matches!(self, Readiness::Ready | Readiness::Degraded(_))
    }
}

/// What happened to a committed change at one member.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub enum AckOutcome {
    /// Queued for sending (async mode).
    Queued,
    /// Applied by the member (sync-ack mode).
    Acked,
    /// Not applied, and why.
    Failed(String),
    /// No ack within the ack timeout; it may still arrive.
    TimedOut,
}

/// The outcome of a commit at one member.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct MemberAck {
    /// The member's name (route).
    pub member: String,
    /// What happened.
    pub outcome: AckOutcome,
}

/// What a commit did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CommitReport {
    /// The session's version after the commit.
    pub version: u64,
    /// Whether anything was sent (a read-only unit of work sends nothing).
    pub sent: bool,
    /// Bytes of the replication message (per member).
    pub bytes: usize,
    /// Per member.
    pub members: Vec<MemberAck>,
}

impl CommitReport {
    /// Whether every member acked (sync-ack) or queued (async) the change.
    pub fn all_ok(&self) -> bool {
        self.members
            .iter()
            .all(|m| matches!(m.outcome, AckOutcome::Acked | AckOutcome::Queued))
    }
}

/// Configures and starts a [`SessionManager`]; made by [`SessionManager::builder`].
pub struct SessionManagerBuilder {
    context: String,
    kind: ManagerKind,
    send_mode: SendMode,
    ack_timeout: Duration,
    max_inactive: Duration,
    max_lifetime: Option<Duration>,
    max_active: Option<usize>,
    replication: ReplicationMode,
    only_changes: bool,
    filter: Option<Filter>,
    max_attribute_len: usize,
    max_session_len: usize,
    transfer_timeout: Duration,
    attempt_timeout: Duration,
    notify_on_replication: bool,
    expire_on_shutdown: bool,
    listeners: Vec<Arc<dyn SessionListener>>,
    cluster_listeners: Vec<Arc<dyn crate::ClusterListener>>,
    clock: Arc<dyn Clock>,
    touch_interval: Duration,
    sync_interval: Duration,
    chunk_size: usize,
    discovery_wait: Duration,
    store: Option<(Arc<dyn SessionStore>, StoreMode)>,
    max_sessions: Option<(usize, crate::MaxSessionsPolicy)>,
}

impl fmt::Debug for SessionManagerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionManagerBuilder")
            .field("context", &self.context)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl SessionManagerBuilder {
    /// Delta (default) or Backup.
    pub fn with_kind(mut self, kind: ManagerKind) -> Self {
        self.kind = kind;
        self
    }
    /// Async (default): commits return once queued; SyncAck: once applied by the members.
    pub fn with_send_mode(mut self, mode: SendMode) -> Self {
        self.send_mode = mode;
        self
    }
    /// How long a sync-ack commit waits for each member (default 5 s).
    pub fn with_ack_timeout(mut self, timeout: Duration) -> Self {
        self.ack_timeout = timeout;
        self
    }
    /// Default max inactive interval of new sessions (default 30 minutes).
    pub fn with_max_inactive(mut self, interval: Duration) -> Self {
        self.max_inactive = interval;
        self
    }
    /// The absolute lifetime of a session from its creation, however active (OWASP's
    /// absolute timeout; default none). Past it, `get` finds no session on any node and
    /// the periodic sweep expires it everywhere. `tribes-axum`'s layer enforces its own
    /// `with_absolute_timeout` (default 8 h) at each request; set this too when sessions
    /// are used without the layer (the tower-sessions bridge) or to purge them early.
    pub fn with_max_lifetime(mut self, lifetime: Option<Duration>) -> Self {
        self.max_lifetime = lifetime;
        self
    }
    /// The most sessions this node holds; `create` beyond is [`CreateError::TooManySessions`].
    pub fn with_max_active(mut self, max: usize) -> Self {
        self.max_active = Some(max);
        self
    }
    /// Deltas (default) or the full session at each commit.
    pub fn with_replication(mut self, mode: ReplicationMode) -> Self {
        self.replication = mode;
        self
    }
    /// Send only when the unit of work changed something (default true). With
    /// false every commit sends the session (the access time travels with it).
    pub fn with_replicate_only_changes(mut self, only: bool) -> Self {
        self.only_changes = only;
        self
    }
    /// Attributes whose name the filter rejects stay on this node and are never
    /// replicated (Tomcat's `sessionAttributeNameFilter`).
    pub fn with_attribute_filter(mut self, replicate: impl Fn(&str) -> bool + Send + Sync + 'static) -> Self {
        self.filter = Some(Arc::new(replicate));
        self
    }
    /// Largest encoded attribute (default 1 MiB).
    pub fn with_max_attribute_len(mut self, len: usize) -> Self {
        self.max_attribute_len = len;
        self
    }
    /// Largest session, names plus encoded values (default 4 MiB).
    pub fn with_max_session_len(mut self, len: usize) -> Self {
        self.max_session_len = len;
        self
    }
    /// Total bound of a starting node's state transfer (default 60 s).
    pub fn with_state_transfer_timeout(mut self, timeout: Duration) -> Self {
        self.transfer_timeout = timeout;
        self
    }
    /// How long one member may stay silent during a state transfer before the next
    /// is tried (default 5 s).
    pub fn with_state_transfer_attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = timeout;
        self
    }
    /// Sessions per state-transfer chunk (default 1000).
    pub fn with_state_transfer_chunk(mut self, sessions: usize) -> Self {
        self.chunk_size = sessions.max(1);
        self
    }
    /// Whether listeners hear replicated changes too (default false).
    pub fn with_notify_listeners_on_replication(mut self, notify: bool) -> Self {
        self.notify_on_replication = notify;
        self
    }
    /// On a clean shutdown, expire this node's sessions everywhere, the store included
    /// (default false: they live on in the other members and the store).
    pub fn with_expire_sessions_on_shutdown(mut self, expire: bool) -> Self {
        self.expire_on_shutdown = expire;
        self
    }
    /// Adds a listener.
    pub fn with_listener(mut self, listener: impl SessionListener) -> Self {
        self.listeners.push(Arc::new(listener));
        self
    }

    /// Adds a listener of [`ClusterEvent`](crate::ClusterEvent)s: each event of the cluster
    /// reaches the cluster listeners of one node (see the table there).
    pub fn with_cluster_listener(mut self, listener: impl crate::ClusterListener) -> Self {
        self.cluster_listeners.push(Arc::new(listener));
        self
    }
    /// The clock (default the system clock).
    pub fn with_clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }
    /// How often last-access times of read-only requests are sent (default 2 s).
    /// A remote access is known here at most this interval (plus delivery) late, so
    /// sessions expire only after their interval plus twice this.
    pub fn with_touch_interval(mut self, interval: Duration) -> Self {
        self.touch_interval = interval;
        self
    }
    /// How often this node runs an anti-entropy round with one other member, round
    /// robin (default 10 s; zero turns it off). A round compares 256 bucket
    /// fingerprints (2 KiB) and repairs only the sessions that differ: lost async
    /// deltas, access times and expiries, and changes made on both sides of a
    /// partition, where an invalidation always wins. A member that comes back after a
    /// partition gets a round at once.
    pub fn with_sync_interval(mut self, interval: Duration) -> Self {
        self.sync_interval = interval;
        self
    }
    /// How long `start` waits for the channel to find its first member (default 2 s).
    pub fn with_discovery_wait(mut self, wait: Duration) -> Self {
        self.discovery_wait = wait;
        self
    }

    /// At most `max` live sessions per principal across the cluster (Spring Security's
    /// `maximumSessions`); `policy` says what a login beyond it does. See
    /// [`SessionManager::set_principal`] for the guarantee when two logins race.
    pub fn with_max_sessions_per_principal(mut self, max: usize, policy: crate::MaxSessionsPolicy) -> Self {
        self.max_sessions = Some((max.max(1), policy));
        self
    }

    /// Keeps the sessions in `store` as well (Tomcat's `PersistentManager`), or, with
    /// [`StoreMode::Shared`], in the store only (no replication). Which mode when:
    ///
    /// | mode | the truth | a commit returns | whole cluster SIGKILLed | pick it for |
    /// |---|---|---|---|---|
    /// | [`StoreMode::WriteThrough`] | memory, replicated; store a copy | after the store saved it | nothing acknowledged is lost | restarts of the whole cluster must keep sessions (use with sync-ack) |
    /// | [`StoreMode::WriteBehind`] | memory, replicated; store a copy | before the store saved it | the queued writes are lost | fast commits; restarts may lose the last seconds |
    /// | [`StoreMode::Shared`] | the store | after a versioned save (conflicts reported) | nothing acknowledged is lost | autoscaling, no cluster channel peers, any load balancer |
    ///
    /// With a store, a starting node (write-through, write-behind) loads every stored session
    /// before it is ready, and invalidated, expired and re-id'd sessions are deleted from it.
    pub fn with_store(mut self, store: Arc<dyn SessionStore>, mode: StoreMode) -> Self {
        self.store = Some((store, mode));
        self
    }

    /// Starts the manager on `channel`: it announces the context to the members,
    /// then receives the sessions in the background. Watch [`SessionManager::ready`].
    ///
    /// # Errors
    /// [`StartError::DuplicateContext`] when this channel already has a manager for
    /// the context; [`StartError::InvalidOption`] for out-of-range options.
    pub async fn start(self, channel: Channel) -> Result<SessionManager, StartError> {
        if self.touch_interval.is_zero() || self.ack_timeout.is_zero() {
            return Err(StartError::InvalidOption {
                context: self.context,
                reason: "touch interval and ack timeout must be positive".into(),
            });
        }
        let local = channel.local();
        {
            let mut reg = registry().lock().unwrap_or_else(|e| e.into_inner());
            if !reg.entry(local.id()).or_default().insert(self.context.clone()) {
                return Err(StartError::DuplicateContext { context: self.context });
            }
        }
        let topic = wire::topic(&self.context);
        let listener = channel.listen(topic.clone());
        let cfg = Arc::new(CoreConfig {
            context: self.context.clone(),
            kind: self.kind,
            replication: self.replication,
            filter: self.filter.clone(),
            max_active: self.max_active,
            max_inactive_ms: self.max_inactive.as_millis() as u64,
            grace_ms: 2 * self.touch_interval.as_millis() as u64,
            tombstone_ttl_ms: (self.max_inactive.as_millis() as u64).max(600_000),
            max_lifetime_ms: self.max_lifetime.map(|d| d.as_millis() as u64),
            touch_interval_ms: self.touch_interval.as_millis() as u64,
            // In shared-store mode the store is the truth: nothing to reconcile.
            sync_interval_ms: match self.store {
                Some((_, StoreMode::Shared)) => 0,
                _ => self.sync_interval.as_millis() as u64,
            },
        });
        let shared = matches!(self.store, Some((_, StoreMode::Shared)));
        let node_cfg = NodeConfig {
            local: local.clone(),
            shared,
            transfer: JoinTimeouts {
                attempt_ms: self.attempt_timeout.as_millis() as u64,
                total_ms: self.transfer_timeout.as_millis() as u64,
                retry_ms: 100,
            },
            discovery_wait_ms: self.discovery_wait.as_millis() as u64,
            chunk_size: self.chunk_size,
            tick_ms: self.touch_interval.min(Duration::from_millis(500)).as_millis() as u64,
            regreet_every_ms: self.sync_interval.as_millis() as u64,
            fetch_timeout_ms: self.ack_timeout.as_millis() as u64,
        };
        let epoch = tokio::time::Instant::now();
        let start_now = Now {
            wall_ms: unix_ms(self.clock.now()),
            mono_ms: 0,
        };
        let mut node = SessionNode::new(node_cfg, cfg, start_now);
        node.core_mut().set_session_limit(self.max_sessions);
        // Subscribed before the members are read, so no change falls in between.
        let events = channel.subscribe();
        for m in channel.members() {
            node.handle_member_up(start_now, m, false);
        }
        let (ready_tx, _) = watch::channel(if node.is_serving() {
            Readiness::Ready
        } else {
            Readiness::Starting
        });
        let (outbox, outbox_rx) = mpsc::unbounded_channel();
        let (results, results_rx) = mpsc::unbounded_channel();
        let store = self
            .store
            .as_ref()
            // The context's own records only: contexts sharing a store never meet.
            .map(|(store, mode)| Arc::new(StoreState::new(store.for_context(&self.context), *mode)));
        let inner = Arc::new(Inner {
            store,
            route: Arc::from(local.name()),
            local: local.id(),
            topic,
            channel,
            node: Mutex::new(node),
            epoch,
            ready: ready_tx,
            outbox,
            results,
            counters: Default::default(),
            per_member: Mutex::new(HashMap::new()),
            fetch_waiters: Mutex::new(HashMap::new()),
            query_waiters: Mutex::new(HashMap::new()),
            next_waiter: AtomicU64::new(0),
            kick: Notify::new(),
            tasks: Mutex::new(Vec::new()),
            shut: AtomicBool::new(false),
            b: self,
        });
        if inner.is_serving() {
            tracing::info!(context = %inner.context(), route = %inner.route, "session manager ready (shared store)");
        }
        let t1 = tokio::spawn(run_outbox(inner.clone(), outbox_rx));
        let t2 = tokio::spawn(run_driver(inner.clone(), listener, events, results_rx));
        inner.tasks().extend([t1, t2]);
        if inner.store.is_some() {
            let t4 = tokio::spawn(run_store(inner.clone()));
            inner.tasks().push(t4);
        }
        Ok(SessionManager { inner })
    }
}

fn registry() -> &'static Mutex<HashMap<MemberId, std::collections::HashSet<String>>> {
    static REG: std::sync::OnceLock<Mutex<HashMap<MemberId, std::collections::HashSet<String>>>> =
        std::sync::OnceLock::new();
    REG.get_or_init(Default::default)
}

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

struct Inner {
    b: SessionManagerBuilder,
    route: Arc<str>,
    local: MemberId,
    topic: String,
    channel: Channel,
    node: Mutex<SessionNode>,
    /// Monotonic time 0 of the node's clock.
    epoch: tokio::time::Instant,
    ready: watch::Sender<Readiness>,
    outbox: mpsc::UnboundedSender<(Vec<MemberId>, Msg)>,
    /// The outcomes of the acknowledged sends the node asked for, back to the driver.
    results: mpsc::UnboundedSender<(u64, Delivered)>,
    counters: Counters,
    per_member: Mutex<HashMap<MemberId, MemberReplication>>,
    /// Requests waiting for a fetch, by the token the node gives back in `Output::Fetched`.
    fetch_waiters: Mutex<HashMap<u64, oneshot::Sender<()>>>,
    /// Calls waiting for a principal query (`manager/principals.rs`).
    query_waiters: Mutex<HashMap<u64, principals::QueryWaiter>>,
    next_waiter: AtomicU64,
    /// Wakes the driver when a request gave the node an earlier deadline (a fetch).
    kick: Notify,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    shut: AtomicBool,
    store: Option<Arc<StoreState>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The node's core, locked (for the local calls: create, get, commit, ...).
struct CoreGuard<'a>(MutexGuard<'a, SessionNode>);

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
    fn node(&self) -> MutexGuard<'_, SessionNode> {
        lock(&self.node)
    }
    fn core(&self) -> CoreGuard<'_> {
        CoreGuard(self.node())
    }
    /// Both clocks of the node.
    fn clocks(&self) -> Now {
        Now {
            wall_ms: self.now_ms(),
            mono_ms: self.epoch.elapsed().as_millis() as u64,
        }
    }
    fn tasks(&self) -> MutexGuard<'_, Vec<JoinHandle<()>>> {
        lock(&self.tasks)
    }
    fn now(&self) -> SystemTime {
        self.b.clock.now()
    }
    fn now_ms(&self) -> u64 {
        unix_ms(self.now())
    }
    fn limits(&self) -> Limits {
        Limits {
            max_attribute_len: self.b.max_attribute_len,
            max_session_len: self.b.max_session_len,
        }
    }
    fn context(&self) -> &str {
        &self.b.context
    }

    fn shared(&self) -> bool {
        self.store.as_ref().is_some_and(|s| s.mode == StoreMode::Shared)
    }

    /// The core's effects of a local call: through the node, then done.
    fn perform(self: &Arc<Self>, effects: Vec<Effect>) {
        let outputs = {
            let mut node = self.node();
            node.absorb(effects);
            node.drain_outputs()
        };
        self.act(outputs);
    }

    /// Does what the node asked for since the last time.
    fn run_outputs(self: &Arc<Self>) {
        let outputs = self.node().drain_outputs();
        self.act(outputs);
    }

    fn act(self: &Arc<Self>, outputs: Vec<Output>) {
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
                        reason: DestroyReason::Expired,
                        origin: Origin::Local,
                    } = &ev
                        && let Some(store) = self.store.as_ref().filter(|s| s.mode.is_persist())
                    {
                        // Expired here: gone from the store too (shared mode leaves expiry to the store).
                        let (store, id) = (store.clone(), *id);
                        tokio::spawn(async move {
                            let _ = store.delete(&id).await;
                        });
                    }
                    self.notify(&ev)
                }
                Output::Fetched { waiter, confirmed } => {
                    if !confirmed {
                        self.counters.fetches_unconfirmed.fetch_add(1, Ordering::Relaxed);
                    }
                    if let Some(tx) = lock(&self.fetch_waiters).remove(&waiter) {
                        let _ = tx.send(());
                    }
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
                Output::Transferred(result) => {
                    let inner = self.clone();
                    let t = tokio::spawn(async move { finish_startup(inner, result).await });
                    self.tasks().push(t);
                }
            }
        }
    }

    fn announce(&self, ev: &crate::ClusterEvent) {
        for l in &self.b.cluster_listeners {
            l.on_cluster_event(ev);
        }
    }

    fn notify(&self, ev: &SessionEvent) {
        if ev.origin() == Origin::Replicated && !self.b.notify_on_replication {
            return;
        }
        for l in &self.b.listeners {
            l.on_event(ev);
        }
    }

    fn name_of(&self, id: MemberId) -> String {
        self.channel
            .member(id)
            .map_or_else(|| id.to_string(), |m| m.name().to_string())
    }

    async fn send(&self, to: &[MemberId], msg: &Msg, mode: SendMode, timeout: Duration) -> (usize, Vec<MemberAck>) {
        let (len, deliveries) = self.send_acks(to, msg, mode, timeout).await;
        let acks = deliveries
            .into_iter()
            .map(|(id, d)| MemberAck {
                member: self.name_of(id),
                outcome: match d {
                    Delivery::Queued => AckOutcome::Queued,
                    Delivery::Acked => AckOutcome::Acked,
                    Delivery::Failed(e) => AckOutcome::Failed(e.to_string()),
                    Delivery::TimedOut(_) => AckOutcome::TimedOut,
                },
            })
            .collect();
        (len, acks)
    }

    /// Sends `msg` and counts it, per member; returns its size and each member's delivery.
    async fn send_acks(
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

/// Serves the sessions of one context and replicates them over a tribes [`Channel`].
///
/// A cheap `Clone`. See the crate docs for the two kinds and an example.
#[derive(Clone)]
pub struct SessionManager {
    inner: Arc<Inner>,
}

impl fmt::Debug for SessionManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionManager")
            .field("context", &self.inner.b.context)
            .field("kind", &self.inner.b.kind)
            .field("route", &self.inner.route)
            .finish()
    }
}

impl SessionManager {
    /// A builder for the manager of `context` (one application's sessions).
    pub fn builder(context: impl Into<String>) -> SessionManagerBuilder {
        SessionManagerBuilder {
            context: context.into(),
            kind: ManagerKind::Delta,
            send_mode: SendMode::Async,
            ack_timeout: Duration::from_secs(5),
            max_inactive: Duration::from_secs(30 * 60),
            max_lifetime: None,
            max_active: None,
            replication: ReplicationMode::Deltas,
            only_changes: true,
            filter: None,
            max_attribute_len: 1024 * 1024,
            max_session_len: 4 * 1024 * 1024,
            transfer_timeout: Duration::from_secs(60),
            attempt_timeout: Duration::from_secs(5),
            notify_on_replication: false,
            expire_on_shutdown: false,
            listeners: Vec::new(),
            cluster_listeners: Vec::new(),
            clock: Arc::new(SystemClock),
            touch_interval: Duration::from_secs(2),
            sync_interval: Duration::from_secs(10),
            chunk_size: 1000,
            discovery_wait: Duration::from_secs(2),
            store: None,
            max_sessions: None,
        }
    }

    /// The context served.
    pub fn context(&self) -> &str {
        self.inner.context()
    }

    /// Delta or Backup.
    pub fn kind(&self) -> ManagerKind {
        self.inner.b.kind
    }

    /// This node's route (its channel name, Tomcat's `jvmRoute`).
    pub fn route(&self) -> &str {
        &self.inner.route
    }

    /// Sessions held on this node.
    pub fn session_count(&self) -> usize {
        self.inner.core().len()
    }

    /// Creates a session bound to this node's route. Nothing is sent until
    /// [`SessionManager::commit`].
    ///
    /// # Errors
    /// [`CreateError::TooManySessions`] at `max_active` (nothing created).
    pub fn create(&self, now: SystemTime) -> Result<Session, CreateError> {
        if self.inner.shut.load(Ordering::Relaxed) {
            return Err(CreateError::ShutDown {
                context: self.context().to_string(),
            });
        }
        let id = SessionId::generate(&mut rand::rng());
        let data = self.inner.core().create(unix_ms(now), id, self.inner.route.clone())?;
        self.inner.notify(&SessionEvent::Created {
            id,
            origin: Origin::Local,
        });
        self.inner.announce(&crate::ClusterEvent::Created { id });
        Ok(Session::new(HandleState {
            key: id,
            base: data.version,
            data,
            ops: Vec::new(),
            is_new: true,
            invalidated: false,
            limits: self.inner.limits(),
        }))
    }

    /// The session with this id, if it exists and has not expired (by the clock).
    /// For the BackupManager, a session this node does not hold is fetched from its
    /// holders (one round trip, bounded by the ack timeout) and this node becomes its
    /// primary at the next commit.
    ///
    /// With a store: in [`StoreMode::Shared`] the session is always read from the store
    /// (the copy held here is used only while the store fails); in the other modes a
    /// session this node does not hold is looked up in the store.
    pub async fn get(&self, id: &SessionId) -> Option<Session> {
        let now_ms = self.inner.now_ms();
        let store = self.inner.store.clone();
        let mut found = match store.as_ref().filter(|s| s.mode == StoreMode::Shared) {
            Some(store) => match store.load(id).await {
                Ok(Some(d)) => {
                    self.inner.core().replace(d);
                    self.inner.core().get(now_ms, id)
                }
                Ok(None) => {
                    self.inner.core().forget(id);
                    return None;
                }
                Err(e) => {
                    tracing::warn!(context = %self.context(), "{e}: using the copy held here, if any");
                    self.inner.core().get(now_ms, id)
                }
            },
            None => self.inner.core().get(now_ms, id),
        };
        if self.must_fetch(id, found.is_some()) {
            self.fetch(id).await;
            found = self.inner.core().get(now_ms, id);
        }
        if found.is_none()
            && let Some(store) = store.as_ref().filter(|s| s.mode.is_persist())
            && let Ok(Some(d)) = store.load(id).await
        {
            let mut out = Vec::new();
            self.inner.core().import(&d, &mut out);
            self.inner.perform(out);
            found = self.inner.core().get(now_ms, id);
        }
        let data = found?;
        Some(Session::new(HandleState {
            key: *id,
            base: data.version,
            data,
            ops: Vec::new(),
            is_new: false,
            invalidated: false,
            limits: self.inner.limits(),
        }))
    }

    /// Whether `get` asks the holders first ([`Core::must_fetch`]); never with a shared
    /// store (the store is the truth).
    fn must_fetch(&self, id: &SessionId, found: bool) -> bool {
        let acked = self.inner.b.send_mode != SendMode::Async;
        !self.inner.shared() && self.inner.core().must_fetch(id, found, acked, self.inner.now_ms())
    }

    /// Asks the members that may hold `id` and waits until each answered (with the
    /// session, merged here, or "not here"), could not be reached (then the members that
    /// may hold it now are asked too), or the ack timeout passed: the node decides
    /// (`node/fetching.rs`), this waits.
    async fn fetch(&self, id: &SessionId) {
        let waiter = self.inner.next_waiter.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.inner.fetch_waiters).insert(waiter, tx);
        let outputs = {
            let now = self.inner.clocks();
            let mut node = self.inner.node();
            node.begin_fetch(now, *id, waiter);
            node.drain_outputs()
        };
        self.inner.act(outputs);
        // The node's poll timeout may be earlier now (the fetch's deadline).
        self.inner.kick.notify_one();
        // The node ends the wait at its deadline; this bound only covers a driver that stopped.
        if tokio::time::timeout(self.inner.b.ack_timeout * 2, rx).await.is_err() {
            lock(&self.inner.fetch_waiters).remove(&waiter);
        }
    }

    /// Whether this node holds the session (as primary or backup), without fetching.
    pub fn contains(&self, id: &SessionId) -> bool {
        self.inner.core().contains(id)
    }

    /// Records an access without a change (a read-only request): nothing is sent
    /// now; the access time travels in the next batch. Returns whether the session exists.
    /// With a store, the access is saved to it at most once per touch interval per session
    /// (in the background), so a session only read does not expire in the store.
    pub fn touch(&self, id: &SessionId, now: SystemTime) -> bool {
        let now_ms = unix_ms(now);
        let (before, ok) = {
            let mut core = self.inner.core();
            let before = core.export(id).map(|d| d.last_access_ms);
            (before, core.touch(now_ms, id))
        };
        if let (true, Some(before), Some(store)) = (ok, before, self.inner.store.clone())
            && now_ms.saturating_sub(before) >= self.inner.b.touch_interval.as_millis() as u64
        {
            self.inner.store_touch(store, *id);
        }
        ok
    }

    /// The session `id` as a store record (the whole session with its version), without
    /// touching it; `None` when this node does not hold it.
    pub fn export(&self, id: &SessionId) -> Option<StoredSession> {
        self.inner.core().export(id).map(|d| crate::persist::to_record(&d))
    }

    /// Adds a session exported by [`SessionManager::export`] or [`Session::to_stored`] (or
    /// loaded from a [`SessionStore`]) to this node, merged with any copy held here field by
    /// field (the newer write wins). It is not replicated: every node imports for itself.
    /// Returns `false` when the session was invalidated here (it is not resurrected).
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] when the record's data is not a session of this build.
    pub fn import(&self, record: &StoredSession) -> Result<bool, StoreError> {
        let name = format!("import into context '{}'", self.context());
        let data = crate::persist::from_record(&name, record)?;
        let mut out = Vec::new();
        let imported = self.inner.core().import(&data, &mut out);
        self.inner.perform(out);
        Ok(imported)
    }

    /// Ends a unit of work: applies the session's recorded changes here and
    /// replicates them (or the whole session) to the members that must hold them.
    /// A unit of work without changes only records the access.
    ///
    /// # Errors
    /// [`ReplicationError::Gone`] when the session was destroyed meanwhile (changes
    /// dropped); [`ReplicationError::ShutDown`].
    pub async fn commit(&self, session: &Session) -> Result<CommitReport, ReplicationError> {
        self.commit_ending(session, principals::Ending::Invalidated).await
    }

    /// [`SessionManager::commit`], announcing an invalidation as `ending`.
    async fn commit_ending(
        &self,
        session: &Session,
        ending: principals::Ending,
    ) -> Result<CommitReport, ReplicationError> {
        if self.inner.shut.load(Ordering::Relaxed) {
            return Err(ReplicationError::ShutDown {
                context: self.context().to_string(),
            });
        }
        let now_ms = self.inner.now_ms();
        let (key, base, ops, was_new) = session.take_ops();
        let login = principals::login_in(&ops);
        let events = principals::cluster_events(key, &ops, session.principal(), ending);
        let mut out = Vec::new();
        let commit = self
            .inner
            .core()
            .commit(now_ms, key, base, ops, !self.inner.b.only_changes, &mut out);
        let Commit { sends, data } = commit?;
        for ev in &events {
            self.inner.announce(ev);
        }
        // The committed state moves into the handle (no copy): what follows reads it there.
        let (version, now_id) = data.as_ref().map_or((base + 1, None), |d| (d.version, Some(d.id)));
        let committed = data.is_some();
        {
            let mut s = session.lock();
            s.is_new = false;
            if let Some(d) = data {
                s.key = d.id;
                s.base = d.version;
                s.data = d;
            }
        }
        self.inner.perform(out);
        let changed = !sends.is_empty() || was_new;
        let store = self.inner.store.clone();
        if changed && let Some(store) = store.as_ref().filter(|s| s.mode == StoreMode::Shared) {
            let data = committed.then(|| session.lock().data.clone());
            self.inner.save_shared(store, key, base, was_new, data.as_ref()).await?;
        }
        let mut report = CommitReport {
            version,
            ..Default::default()
        };
        if sends.iter().any(|(to, _)| !to.is_empty()) && !self.inner.shared() {
            // Every part at once (a sync-ack commit waits for the slowest member).
            let (mode, timeout) = (self.inner.b.send_mode, self.inner.b.ack_timeout);
            let parts = sends
                .iter()
                .filter(|(to, _)| !to.is_empty())
                .map(|(to, msg)| self.inner.send(to, msg, mode, timeout));
            for (bytes, members) in futures::future::join_all(parts).await {
                report.sent = true;
                report.bytes = report.bytes.max(bytes);
                report.members.extend(members);
            }
        }
        if changed && let Some(store) = store.as_ref().filter(|s| s.mode.is_persist()) {
            self.inner.persist_after_commit(store, key, now_id).await?;
        }
        if let Some(principal) = login {
            self.enforce_session_limit(&principal).await;
        }
        Ok(report)
    }

    /// Binds the session to another route (Tomcat's `JvmRouteBinderValve` after a
    /// failover): replicated metadata; the id does not change.
    ///
    /// # Errors
    /// As [`SessionManager::commit`].
    pub async fn rebind(&self, id: &SessionId, route: &str) -> Result<Option<CommitReport>, ReplicationError> {
        let Some(session) = self.get(id).await else {
            return Ok(None);
        };
        {
            let mut s = session.lock();
            s.data.route = Arc::from(route);
            s.ops.push(crate::data::Op::Route(route.into()));
        }
        self.commit(&session).await.map(Some)
    }

    /// The sessions held here whose [`LogId`](crate::LogId) is `log_id`, described for an
    /// operator's session browser: version, times, attribute names, sizes and kinds, and
    /// the values of the attributes `show_value` accepts (none otherwise). Usually one
    /// session, several only when their 32-bit hashes collide; empty when this node holds
    /// none (a BackupManager node holds only its sessions' copies). Nothing is fetched,
    /// touched or sent; expired sessions are left out.
    pub fn browse(&self, log_id: crate::LogId, show_value: impl Fn(&str) -> bool) -> Vec<crate::SessionInfo> {
        let now_ms = self.inner.now_ms();
        let core = self.inner.core();
        core.find_by_log_id(now_ms, log_id)
            .iter()
            .map(|d| crate::browse::describe(d, core.is_primary(&d.id), &show_value))
            .collect()
    }

    /// Delta: whether this node holds the session. Backup: whether it is its primary.
    pub fn is_primary(&self, id: &SessionId) -> bool {
        self.inner.core().is_primary(id)
    }

    /// A watch of the readiness.
    pub fn ready(&self) -> watch::Receiver<Readiness> {
        self.inner.ready.subscribe()
    }

    /// Whether the manager serves requests (state transfer over, or failed).
    pub fn is_ready(&self) -> bool {
        self.inner.ready.borrow().is_serving()
    }

    /// Waits until the state transfer is over.
    ///
    /// # Errors
    /// The [`StateTransferError`] when it failed (the manager serves anyway).
    pub async fn wait_ready(&self) -> Result<(), StateTransferError> {
        let mut rx = self.ready();
        let r = rx
            .wait_for(|r| !matches!(r, Readiness::Starting))
            .await
            .map(|r| r.clone())
            .unwrap_or(Readiness::ShutDown);
        match r {
            Readiness::Degraded(e) => Err(e),
            _ => Ok(()),
        }
    }

    /// Counters, per member, and the state transfer, for a status page.
    pub fn stats(&self) -> ManagerStats {
        let i = &self.inner;
        let (sessions, counters, servers, overhead) = {
            let core = i.core();
            (
                core.len(),
                core.counters,
                core.servers().to_vec(),
                core.overhead_bytes(),
            )
        };
        let c = &i.counters;
        ManagerStats {
            context: i.context().to_string(),
            kind: i.b.kind,
            send_mode: i.b.send_mode,
            route: i.route.to_string(),
            ready: self.is_ready(),
            sessions,
            servers: servers.iter().map(|m| i.name_of(*m)).collect(),
            messages_sent: c.messages_out.load(Ordering::Relaxed),
            bytes_sent: c.bytes_out.load(Ordering::Relaxed),
            messages_received: c.messages_in.load(Ordering::Relaxed),
            bytes_received: c.bytes_in.load(Ordering::Relaxed),
            acks: c.acks.load(Ordering::Relaxed),
            failures: c.failures.load(Ordering::Relaxed),
            undecodable: c.undecodable.load(Ordering::Relaxed),
            fetches_unconfirmed: c.fetches_unconfirmed.load(Ordering::Relaxed),
            deltas_applied: counters.deltas_applied,
            conflicts: counters.conflicts,
            sync_rounds: counters.sync_rounds,
            sync_repaired: counters.sync_repaired,
            dropped_late: counters.dropped_gone,
            dropped_in_snapshot: counters.dropped_in_snapshot,
            expired: counters.expired,
            invalidated: counters.invalidated,
            promotions: counters.promotions,
            overhead_bytes: overhead,
            state_transfer: i.node().transfer_stats(),
            per_member: lock(&i.per_member).values().cloned().collect(),
            store_conflicts: i.store.as_ref().map_or(0, |s| s.conflicts.load(Ordering::Relaxed)),
            store: i.store.as_ref().map(|s| s.stats()),
        }
    }

    /// Stops the manager cleanly: tells the members (which keep the sessions, or
    /// expire them with `with_expire_sessions_on_shutdown(true)`) and stops its tasks.
    /// The channel stays up (other contexts may use it).
    pub async fn shutdown(&self) {
        if self.inner.shut.swap(true, Ordering::SeqCst) {
            return;
        }
        let expire = self.inner.b.expire_on_shutdown;
        let servers = self.inner.core().servers().to_vec();
        let mut expired = Vec::new();
        if expire {
            let mut out = Vec::new();
            expired = self.inner.core().expire_all(self.inner.now_ms(), &mut out);
            for e in out {
                if let Effect::Event(ev) = e {
                    self.inner.notify(&ev);
                }
            }
        }
        if let Some(store) = self.inner.store.clone() {
            self.inner.flush(&store).await;
            store.delete_on_shutdown(&expired).await;
        }
        if !servers.is_empty() && !self.inner.shared() {
            self.inner
                .send(
                    &servers,
                    &Msg::Bye { expire },
                    SendMode::SyncAck,
                    Duration::from_secs(2),
                )
                .await;
        }
        self.stop();
        self.inner.ready.send_replace(Readiness::ShutDown);
    }

    /// Stops at once without telling anyone, as a crash would (for tests): the
    /// members notice when the channel goes away.
    pub fn abort(&self) {
        self.inner.shut.store(true, Ordering::SeqCst);
        self.stop();
    }

    fn stop(&self) {
        for t in self.inner.tasks().drain(..) {
            t.abort();
        }
        let mut reg = registry().lock().unwrap_or_else(|e| e.into_inner());
        if let Some(set) = reg.get_mut(&self.inner.local) {
            set.remove(self.context());
        }
    }
}

async fn run_outbox(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<(Vec<MemberId>, Msg)>) {
    while let Some((to, msg)) = rx.recv().await {
        inner.send(&to, &msg, SendMode::Async, inner.b.ack_timeout).await;
    }
}

/// The driver: moves messages, membership changes, send outcomes and time into the
/// node, and does what it asks for. Every decision is the node's (`node.rs`).
async fn run_driver(
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
    fn is_serving(&self) -> bool {
        self.ready.borrow().is_serving()
    }
}

/// The state transfer ended: load the store when it persists, then serve.
async fn finish_startup(inner: Arc<Inner>, result: Result<(), StateTransferError>) {
    let total = inner.b.transfer_timeout;
    let result = match (result, inner.store.clone().filter(|s| s.mode.is_persist())) {
        (Ok(()), Some(store)) => load_all_until(&inner, &store, inner.epoch + total, total).await,
        (result, _) => result,
    };
    inner.node().serve(inner.clocks(), result.is_err());
    match result {
        Ok(()) => {
            tracing::info!(context = %inner.context(), route = %inner.route, "session manager ready");
            inner.ready.send_replace(Readiness::Ready);
        }
        Err(e) => {
            tracing::error!(context = %inner.context(), "{e}");
            inner.ready.send_replace(Readiness::Degraded(e));
        }
    }
}

/// Loads every stored session (a starting node with a write-through or write-behind store),
/// retrying until `deadline` while the store fails.
async fn load_all_until(
    inner: &Arc<Inner>,
    store: &Arc<StoreState>,
    deadline: tokio::time::Instant,
    total: Duration,
) -> Result<(), StateTransferError> {
    loop {
        match load_all(inner, store).await {
            Ok(n) => {
                tracing::info!(context = %inner.context(), store = %store.name(), sessions = n, "sessions loaded from the store");
                inner.node().note_source(store.name().to_owned());
                return Ok(());
            }
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(context = %inner.context(), "loading the stored sessions failed, retrying: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => {
                return Err(StateTransferError::TimedOut {
                    context: inner.context().to_string(),
                    member: store.name().to_owned(),
                    cause: e.to_string(),
                    timeout: total,
                });
            }
        }
    }
}

async fn load_all(inner: &Arc<Inner>, store: &Arc<StoreState>) -> Result<usize, StoreError> {
    let ids = store.store.list_ids().await?;
    let mut n = 0;
    for text in ids {
        let Ok(id) = text.parse::<SessionId>() else {
            tracing::warn!(store = %store.name(), id_len = text.len(), "a record whose id is not a session id of this manager: skipped");
            continue;
        };
        match store.load(&id).await {
            Ok(Some(d)) => {
                let mut out = Vec::new();
                n += usize::from(inner.core().import(&d, &mut out));
                inner.perform(out);
            }
            Ok(None) => {}
            Err(e) if e.is_corrupt() => tracing::error!("{e}"),
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Store upkeep: health checks, deleting expired records, the write-behind queue.
async fn run_store(inner: Arc<Inner>) {
    let Some(store) = inner.store.clone() else { return };
    let behind = matches!(store.mode, StoreMode::WriteBehind { .. });
    let mut health = tokio::time::interval(Duration::from_secs(5));
    let mut expire = tokio::time::interval(Duration::from_secs(60));
    health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    expire.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = health.tick() => store.set_health(store.store.health().await),
            _ = expire.tick() => {
                if let Err(e) = store.store.delete_expired(SystemTime::now()).await {
                    tracing::warn!(context = %inner.context(), "{e}");
                }
            }
            _ = store.wake.notified(), if behind => {
                while let Some(job) = store.dequeue() {
                    let id = job.id;
                    if inner.persist(&store, id).await.is_err() {
                        // Kept for later: a store outage delays writes, it does not drop them.
                        store.enqueue(id);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        store.wake.notify_one();
                        break;
                    }
                }
            }
        }
    }
}

impl Inner {
    /// Saves the session `id` as held here, or deletes it from the store when it is gone.
    async fn persist(&self, store: &StoreState, id: SessionId) -> Result<(), StoreError> {
        let _order = store.stripe(&id).lock().await;
        let data = self.core().export(&id);
        match data {
            Some(d) => store.save(&d, None).await,
            None => store.delete(&id).await,
        }
    }

    /// Write-through and write-behind: after a commit of session `key` (now `now`, or gone).
    async fn persist_after_commit(
        &self,
        store: &StoreState,
        key: SessionId,
        now: Option<SessionId>,
    ) -> Result<(), ReplicationError> {
        let mut ids = vec![key];
        ids.extend(now.filter(|n| *n != key));
        for id in ids {
            if store.mode == StoreMode::WriteThrough || !store.enqueue(id) {
                self.persist(store, id)
                    .await
                    .map_err(|source| ReplicationError::Store {
                        context: self.context().to_string(),
                        id,
                        source: Box::new(source),
                    })?;
            }
        }
        Ok(())
    }

    /// Shared mode: saves the committed session with the version its unit of work loaded.
    async fn save_shared(
        &self,
        store: &StoreState,
        key: SessionId,
        base: u64,
        was_new: bool,
        data: Option<&crate::data::SessionData>,
    ) -> Result<(), ReplicationError> {
        let store_err = |id, source| ReplicationError::Store {
            context: self.context().to_string(),
            id,
            source: Box::new(source),
        };
        let Some(d) = data else {
            // Invalidated: gone for every node.
            return store.delete(&key).await.map_err(|e| store_err(key, e));
        };
        // A new session, or a new id (fixation protection), has no record yet.
        let expected = (!was_new && d.id == key).then_some(base);
        match store.save(d, expected).await {
            Ok(()) => {}
            Err(StoreError::Conflict {
                store, expected, found, ..
            }) => {
                self.core().forget(&d.id);
                tracing::warn!(context = %self.context(), session = %d.id.log_id(), expected, ?found, "concurrent write detected: changes not saved");
                return Err(ReplicationError::Conflict {
                    context: self.context().to_string(),
                    id: d.id,
                    store,
                    expected,
                    found,
                });
            }
            Err(e) => return Err(store_err(d.id, e)),
        }
        if d.id != key {
            store.delete(&key).await.map_err(|e| store_err(key, e))?;
        }
        Ok(())
    }

    /// Saves a read access in the background (throttled by the caller).
    fn store_touch(self: &Arc<Self>, store: Arc<StoreState>, id: SessionId) {
        if store.mode == StoreMode::Shared {
            let Some(d) = self.core().export(&id) else { return };
            tokio::spawn(async move {
                // Same version, newer access; a concurrent writer wins (its save has the access too).
                let record = crate::persist::to_record(&d);
                let _ = store.store.save(&record, Some(d.version)).await;
            });
        } else if !store.enqueue(id) {
            let inner = self.clone();
            tokio::spawn(async move {
                let _ = inner.persist(&store, id).await;
            });
        }
    }

    /// Write-behind: saves every queued session now (a clean shutdown).
    async fn flush(&self, store: &StoreState) {
        while let Some(job) = store.dequeue() {
            let id = job.id;
            if let Err(e) = self.persist(store, id).await {
                tracing::error!(context = %self.context(), session = %id.log_id(), "session not saved at shutdown: {e}");
            }
        }
        // A save the background task took just before is not cut off by the stop.
        store.wait_idle(Duration::from_secs(10)).await;
    }
}
