//! [`SessionManagerBuilder`]: the options of a [`SessionManager`] and its start (the
//! node, the driver's tasks, the store's decisions).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, mpsc, watch};
use tribes::{Channel, SendMode};

use super::driver::{Inner, run_driver, run_outbox};
use super::store_ops::run_store;
use super::{Readiness, SessionManager};
use crate::core::{CoreConfig, Filter};
use crate::error::{ManagerOption, ManagerStartError};
use crate::joiner::JoinTimeouts;
use crate::kind::{ManagerKind, ReplicationMode};
use crate::listener::{Clock, SessionListener, unix_ms};
use crate::node::{NodeConfig, Now, SessionNode};
use crate::persist::StoreState;
use crate::persistence::StoreMode;
use crate::store::SessionStore;
use crate::wire;
/// Configures and starts a [`SessionManager`]; made by [`SessionManager::builder`].
pub struct SessionManagerBuilder {
    pub(super) context: String,
    pub(super) kind: ManagerKind,
    pub(super) send_mode: SendMode,
    pub(super) ack_timeout: Duration,
    pub(super) max_inactive: Duration,
    pub(super) max_lifetime: Option<Duration>,
    pub(super) max_active: Option<usize>,
    pub(super) replication: ReplicationMode,
    pub(super) only_changes: bool,
    pub(super) filter: Option<Filter>,
    pub(super) max_attribute_len: usize,
    pub(super) max_session_len: usize,
    pub(super) transfer_timeout: Duration,
    pub(super) attempt_timeout: Duration,
    pub(super) notify_on_replication: bool,
    pub(super) expire_on_shutdown: bool,
    pub(super) listeners: Vec<Arc<dyn SessionListener>>,
    pub(super) cluster_listeners: Vec<Arc<dyn crate::ClusterListener>>,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) touch_interval: Duration,
    pub(super) sync_interval: Duration,
    pub(super) chunk_size: usize,
    pub(super) discovery_wait: Duration,
    pub(super) store: Option<(Arc<dyn SessionStore>, StoreMode)>,
    pub(super) max_sessions: Option<(usize, crate::MaxSessionsPolicy)>,
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
    /// absolute timeout; default 8 hours, `None` for no limit). It bounds how long a
    /// stolen session id stays useful. A request that finds its session past it gets none
    /// ([`SessionManager::get`](crate::SessionManager::get) ends it on every node first, and
    /// counts it in `ManagerStats::absolute_timeouts`); the periodic sweep ends the
    /// sessions nobody requests. `tribes-axum`'s layer has no setting of its own: it obeys
    /// this one.
    pub fn with_max_lifetime(mut self, lifetime: Option<Duration>) -> Self {
        self.max_lifetime = lifetime;
        self
    }
    /// The most sessions this node holds; `create` beyond is [`CreateError::TooManySessions`](crate::CreateError::TooManySessions).
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

    /// At most `max` live sessions per principal across the cluster (Spring Security's
    /// `maximumSessions`); `policy` says what a login beyond it does. See
    /// [`SessionManager::set_principal`](crate::SessionManager::set_principal) for the
    /// guarantee when two logins race.
    pub fn with_max_sessions_per_principal(mut self, max: usize, policy: crate::MaxSessionsPolicy) -> Self {
        self.max_sessions = Some((max.max(1), policy));
        self
    }

    /// Starts the manager on `channel`: it announces the context to the members,
    /// then receives the sessions in the background. Watch [`SessionManager::ready`].
    ///
    /// # Errors
    /// [`ManagerStartError::DuplicateContext`] when this channel already has a manager for
    /// the context; [`ManagerStartError::InvalidOption`] for out-of-range options.
    pub async fn start(self, channel: Channel) -> Result<SessionManager, ManagerStartError> {
        for (zero, option) in [
            (self.touch_interval.is_zero(), ManagerOption::TouchInterval),
            (self.ack_timeout.is_zero(), ManagerOption::AckTimeout),
        ] {
            if zero {
                return Err(ManagerStartError::InvalidOption {
                    context: self.context,
                    option,
                });
            }
        }
        let local = channel.local();
        let topic = wire::topic(&self.context);
        // The channel holds one listener per topic: a live manager of this context
        // on this channel holds it.
        let Ok(listener) = channel.listen(topic.clone()) else {
            return Err(ManagerStartError::DuplicateContext { context: self.context });
        };
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
            store_backed: self.store.is_some(),
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
            .map(|(store, mode)| {
                Arc::new(StoreState::new(
                    store.for_context(&self.context),
                    *mode,
                    self.touch_interval.as_millis() as u64,
                ))
            });
        let inner = Arc::new(Inner {
            store,
            route: Arc::from(local.name()),
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
            extensions: Mutex::new(HashMap::new()),
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

#[cfg(test)]
mod tests {
    use tribes::Channel;

    use crate::{ManagerStartError, SessionManager};

    /// One manager per context and channel: the second is refused with a typed error
    /// naming the context, and the context is free again once the first shut down.
    #[tokio::test]
    async fn a_second_manager_of_a_context_is_refused_until_the_first_shuts_down() {
        let channel = Channel::builder("a")
            .insecure_plaintext()
            .with_bind("127.0.0.1:0".parse().unwrap())
            .start()
            .await
            .unwrap();
        let first = SessionManager::builder("/app").start(channel.clone()).await.unwrap();
        let other = SessionManager::builder("/other").start(channel.clone()).await;
        assert!(other.is_ok(), "another context shares the channel");
        let second = SessionManager::builder("/app").start(channel.clone()).await;
        match second {
            Err(ManagerStartError::DuplicateContext { context }) => assert_eq!(context, "/app"),
            other => panic!("expected DuplicateContext, got {:?}", other.map(|_| ())),
        }
        first.shutdown().await;
        let again = SessionManager::builder("/app").start(channel.clone()).await;
        assert!(
            again.is_ok(),
            "a shut-down manager frees its context: {:?}",
            again.err()
        );
    }
}
