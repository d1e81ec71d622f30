//! `SessionManager`: the public operations of one context's sessions. The builder is in
//! `manager/builder.rs`, the tokio driver that moves bytes and time between the
//! [`SessionNode`](crate::node::SessionNode) and the tribes channel in `manager/driver.rs`,
//! and the store operations it performs for [`Persistence`](crate::persistence::Persistence)
//! in `manager/store_ops.rs`.

mod builder;
mod driver;
mod extension;
mod lifetime;
mod principals;
mod report;
mod store_ops;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use tokio::sync::{oneshot, watch};
use tribes::SendMode;

pub use builder::SessionManagerBuilder;
use driver::{Inner, lock};
pub use lifetime::DEFAULT_MAX_LIFETIME;
pub use principals::LogoutReport;
pub use report::{AckOutcome, CommitReport, MemberAck};

use crate::core::{Commit, Effect};
use crate::error::{CreateError, ReplicationError, StateTransferError};
use crate::id::SessionId;
use crate::kind::{ManagerKind, ReplicationMode};
use crate::listener::{Origin, SessionEvent, SystemClock, unix_ms};
use crate::persistence::Committed;
use crate::session::{HandleState, SessionHandle};
use crate::stats::ManagerStats;
use crate::store::{StoreError, StoredSession};
use crate::wire::Msg;

/// Whether a manager serves requests yet.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
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

/// Serves the sessions of one context and replicates them over a tribes [`Channel`](tribes::Channel).
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
            max_lifetime: Some(DEFAULT_MAX_LIFETIME),
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

    /// The time by this manager's clock ([`SessionManagerBuilder::with_clock`], the
    /// system clock by default): the time its expiry, max lifetime and touches use. A
    /// layer above reads it instead of its own clock, so one clock rules a session.
    pub fn now(&self) -> SystemTime {
        self.inner.now()
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
    pub fn create(&self, now: SystemTime) -> Result<SessionHandle, CreateError> {
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
        Ok(SessionHandle::new(HandleState {
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
    /// With a store: in [`StoreMode::Shared`](crate::StoreMode::Shared) the session is always read from the store
    /// (the copy held here is used only while the store fails); in the other modes a
    /// session this node does not hold is looked up in the store.
    ///
    /// A session past its max lifetime
    /// ([`with_max_lifetime`](SessionManagerBuilder::with_max_lifetime), default 8 hours)
    /// is not returned: it is ended on every node before `get` returns (acknowledged by
    /// the members in a sync-ack mode), removed from the store, and counted in
    /// [`ManagerStats::absolute_timeouts`].
    pub async fn get(&self, id: &SessionId) -> Option<SessionHandle> {
        let now_ms = self.inner.now_ms();
        let store = self.inner.store.clone();
        let mut found = match store.as_ref().filter(|s| s.policy().reads_first()) {
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
        // Held here (or just read from the store) but not served: past its max lifetime,
        // it ends now and nobody is asked for it. Only a miss pays for this look.
        if found.is_none() && self.end_if_too_old(now_ms, id).await {
            return None;
        }
        if self.must_fetch(id, found.is_some()) {
            self.fetch(id).await;
            found = self.inner.core().get(now_ms, id);
        }
        if found.is_none()
            && let Some(store) = store.as_ref().filter(|s| s.policy().reads_on_miss())
            && let Ok(Some(d)) = store.load(id).await
        {
            let mut out = Vec::new();
            self.inner.core().import(&d, &mut out);
            self.inner.perform(out);
            found = self.inner.core().get(now_ms, id);
        }
        let Some(data) = found else {
            // Found in the store or at a member, past its max lifetime: ended here too.
            self.end_if_too_old(now_ms, id).await;
            return None;
        };
        Some(SessionHandle::new(HandleState {
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
        if let (true, Some(before), Some(store)) = (ok, before, self.inner.store.clone()) {
            let op = store.policy().on_touch(*id, before, now_ms);
            match op {
                Some(op) => self.inner.spawn_store_op(store, op),
                None => store.wake.notify_one(), // queued (write-behind), or nothing to do
            }
        }
        ok
    }

    /// The session `id` as a store record (the whole session with its version), without
    /// touching it; `None` when this node does not hold it.
    pub fn export(&self, id: &SessionId) -> Option<StoredSession> {
        self.inner.core().export(id).map(|d| crate::persist::to_record(&d))
    }

    /// Adds a session exported by [`SessionManager::export`] or [`SessionHandle::to_stored`] (or
    /// loaded from a [`SessionStore`](crate::SessionStore)) to this node, merged with any copy held here field by
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
    /// dropped); [`ReplicationError::ShutDown`]. In shared store mode,
    /// [`ReplicationError::Conflict`] when another request saved the session since this
    /// one loaded it (also when a conflict of a concurrent request on this node dropped
    /// the copy held here: the store still has the session), and
    /// [`ReplicationError::Store`] when the store failed.
    pub async fn commit(&self, session: &SessionHandle) -> Result<CommitReport, ReplicationError> {
        self.commit_ending(session, principals::Ending::Invalidated).await
    }

    /// [`SessionManager::commit`], announcing an invalidation as `ending`.
    async fn commit_ending(
        &self,
        session: &SessionHandle,
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
        let Commit { sends, data } = match (commit, self.inner.store.as_ref()) {
            // Shared mode keeps no tombstone: the store says whether the session is gone.
            (Err(ReplicationError::Gone { .. }), Some(store)) if self.inner.shared() => {
                return Err(self.inner.missing_in_shared(store, key, base).await);
            }
            (commit, _) => commit?,
        };
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
        // Shared mode: the versioned save comes first (it sends nothing to members).
        let store_ops = match store.as_ref() {
            Some(store) if changed => store.policy().on_commit(Committed {
                key,
                now: now_id,
                base,
                was_new,
            }),
            _ => Vec::new(),
        };
        if let Some(store) = store.as_ref().filter(|s| s.policy().reads_first() && changed) {
            let data = committed.then(|| session.lock().data.clone());
            self.inner
                .commit_to_store(store, store_ops.clone(), data.as_ref())
                .await?;
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
        if let Some(store) = store.as_ref().filter(|s| !s.policy().reads_first() && changed) {
            self.inner.commit_to_store(store, store_ops, None).await?;
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
            absolute_timeouts: counters.absolute_timeouts,
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
            self.inner.store_shutdown(&store, &expired).await;
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
        // Wait for the aborted tasks, so that the context's topic is free on the channel
        // when this returns: a manager of the same context may start on it right away.
        for task in self.stop() {
            let _ = task.await;
        }
        self.inner.ready.send_replace(Readiness::ShutDown);
    }

    /// Stops at once, as a crash would: no goodbye to the other members, no store flush,
    /// no expiry, nothing awaited. The members notice through the failure detector (or
    /// when the channel goes away) and, for the BackupManager, promote the backups; the
    /// manager then answers like a shut-down one ([`Readiness::ShutDown`]).
    ///
    /// Use it where [`shutdown`](Self::shutdown) must not run: a fatal error after which
    /// this node's state must not reach the others or the store (for example a store found
    /// corrupt), a deadline to exit that a slow member or store would miss, or a failover
    /// test that needs a real crash. Queued write-behind saves are lost, as in a crash.
    pub fn abort(&self) {
        self.inner.shut.store(true, Ordering::SeqCst);
        self.stop();
        self.inner.ready.send_replace(Readiness::ShutDown);
    }

    fn stop(&self) -> Vec<tokio::task::JoinHandle<()>> {
        let tasks: Vec<_> = self.inner.tasks().drain(..).collect();
        for t in &tasks {
            t.abort();
        }
        tasks
    }
}
