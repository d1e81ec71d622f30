//! A manager's session store: the mode, the bookkeeping (counters, write-behind queue,
//! per-session write order) and the session <-> record codec. The manager drives it.

use std::collections::{HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::data::SessionData;
use crate::id::SessionId;
use crate::store::{SessionStore, StoreError, StoredSession};
use crate::wire;

/// How a [`SessionManager`](crate::SessionManager) uses its [`SessionStore`]; see
/// [`SessionManagerBuilder::with_store`](crate::SessionManagerBuilder::with_store) and the
/// table in the crate docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum StoreMode {
    /// Behind replication: every commit saves the session to the store before it returns
    /// (an error is [`ReplicationError::Store`](crate::ReplicationError::Store)); a starting
    /// node loads every stored session, and a `get` that misses looks in the store. A whole
    /// cluster can be killed and restarted without losing an acknowledged write.
    WriteThrough,
    /// Behind replication, asynchronously: commits queue the session id (at most `queue`
    /// distinct ids) and a background task saves them; a clean
    /// [`shutdown`](crate::SessionManager::shutdown) flushes the queue. A commit that finds
    /// the queue full saves inline, as [`StoreMode::WriteThrough`] would (counted in
    /// [`StoreStats::queue_full`]), so the queue bounds memory without dropping writes. A
    /// crash loses the queued writes (at most `queue` sessions' last changes).
    WriteBehind {
        /// The most distinct session ids waiting to be saved.
        queue: usize,
    },
    /// No replication: the store is the truth (autoscaling groups). `get` always reads the
    /// store; `commit` saves with `expected_version` = the version loaded, so a concurrent
    /// writer is detected ([`ReplicationError::Conflict`](crate::ReplicationError::Conflict),
    /// counted in `ManagerStats::store_conflicts`) instead of silently overwritten. The
    /// manager sends nothing to other members and needs none.
    Shared,
}

impl StoreMode {
    /// Whether the store sits behind replication (write-through or write-behind).
    pub(crate) fn is_persist(self) -> bool {
        !matches!(self, StoreMode::Shared)
    }
}

/// The store's part of [`ManagerStats`](crate::ManagerStats).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct StoreStats {
    /// The store's kind and address, as [`SessionStore::name`] gives it.
    pub name: String,
    /// How the manager uses it.
    pub mode: StoreMode,
    /// Whether the last health check passed (`None` before the first one).
    pub healthy: Option<bool>,
    /// The last failed health check's error, while unhealthy.
    pub health_error: Option<String>,
    /// Write-behind: session ids waiting to be saved.
    pub queue_depth: usize,
    /// Write-behind: commits that found the queue full and saved inline.
    pub queue_full: u64,
    /// Records saved.
    pub saves: u64,
    /// Records loaded.
    pub loads: u64,
    /// Records deleted (invalidated, expired, or an id changed).
    pub deletes: u64,
    /// Failed store operations (conflicts not included).
    pub errors: u64,
    /// Shared mode: saves refused because another writer saved first.
    pub conflicts: u64,
    /// The last failed operation's error.
    pub last_error: Option<String>,
}

/// A write-behind id taken from the queue; see [`StoreState::dequeue`].
pub(crate) struct InFlight<'a> {
    state: &'a StoreState,
    pub(crate) id: SessionId,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.state.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The store, its mode, and what the manager tracks about it.
pub(crate) struct StoreState {
    pub(crate) store: Arc<dyn SessionStore>,
    pub(crate) mode: StoreMode,
    /// Saves of one session are serialized (export then save under the lock), so the store
    /// never goes back to an older version of a session this node wrote.
    stripes: Vec<tokio::sync::Mutex<()>>,
    queue: Mutex<(VecDeque<SessionId>, HashSet<SessionId>)>,
    pub(crate) wake: Notify,
    saves: AtomicU64,
    loads: AtomicU64,
    deletes: AtomicU64,
    errors: AtomicU64,
    pub(crate) conflicts: AtomicU64,
    queue_full: AtomicU64,
    /// Dequeued write-behind saves not finished yet.
    in_flight: std::sync::atomic::AtomicUsize,
    last_error: Mutex<Option<String>>,
    health: Mutex<Option<Result<(), String>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl StoreState {
    pub(crate) fn new(store: Arc<dyn SessionStore>, mode: StoreMode) -> Self {
        StoreState {
            store,
            mode,
            stripes: (0..64).map(|_| tokio::sync::Mutex::new(())).collect(),
            queue: Mutex::new((VecDeque::new(), HashSet::new())),
            wake: Notify::new(),
            saves: AtomicU64::new(0),
            loads: AtomicU64::new(0),
            deletes: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            conflicts: AtomicU64::new(0),
            queue_full: AtomicU64::new(0),
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            last_error: Mutex::new(None),
            health: Mutex::new(None),
        }
    }

    pub(crate) fn name(&self) -> &str {
        self.store.name()
    }

    /// The lock ordering writes of session `id`.
    pub(crate) fn stripe(&self, id: &SessionId) -> &tokio::sync::Mutex<()> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        id.hash(&mut h);
        &self.stripes[(h.finish() % self.stripes.len() as u64) as usize]
    }

    fn record<T>(&self, r: Result<T, StoreError>, what: &str) -> Result<T, StoreError> {
        if let Err(e) = &r {
            if e.is_conflict() {
                self.conflicts.fetch_add(1, Ordering::Relaxed);
            } else {
                self.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(store = %self.name(), "session store {what} failed: {e}");
                *lock(&self.last_error) = Some(e.to_string());
            }
        }
        r
    }

    pub(crate) async fn save(&self, data: &SessionData, expected: Option<u64>) -> Result<(), StoreError> {
        let record = to_record(data);
        let r = self.store.save(&record, expected).await;
        if r.is_ok() {
            self.saves.fetch_add(1, Ordering::Relaxed);
        }
        self.record(r, "save")
    }

    pub(crate) async fn delete(&self, id: &SessionId) -> Result<(), StoreError> {
        let r = self.store.delete(&id.to_string()).await;
        if let Ok(true) = r {
            self.deletes.fetch_add(1, Ordering::Relaxed);
        }
        self.record(r.map(|_| ()), "delete")
    }

    /// The stored session `id`, decoded.
    pub(crate) async fn load(&self, id: &SessionId) -> Result<Option<SessionData>, StoreError> {
        let r = match self.store.load(&id.to_string()).await {
            Ok(Some(record)) => from_record(self.name(), &record).map(Some),
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        };
        if let Ok(Some(_)) = r {
            self.loads.fetch_add(1, Ordering::Relaxed);
        }
        self.record(r, "load")
    }

    /// Expire-on-shutdown: deletes the records of the sessions the cluster expired at this
    /// node's clean shutdown, so a restart from the store does not bring them back. Runs
    /// after the write-behind queue was flushed; a failed delete is logged and counted (the
    /// record then expires by its own time). Returns how many records were deleted.
    pub(crate) async fn delete_on_shutdown(&self, ids: &[SessionId]) -> usize {
        let mut deleted = 0;
        for id in ids {
            let _order = self.stripe(id).lock().await;
            let r = self.store.delete(&id.to_string()).await;
            if let Ok(true) = r {
                deleted += 1;
                self.deletes.fetch_add(1, Ordering::Relaxed);
            }
            let _ = self.record(r, "delete at shutdown");
        }
        if !ids.is_empty() {
            tracing::info!(store = %self.name(), deleted, "sessions expired at shutdown deleted from the store");
        }
        deleted
    }

    /// Queues `id` for the write-behind task; `false` when the queue is full.
    pub(crate) fn enqueue(&self, id: SessionId) -> bool {
        let StoreMode::WriteBehind { queue: cap } = self.mode else {
            return false;
        };
        let mut q = lock(&self.queue);
        if q.1.contains(&id) {
            return true;
        }
        if q.0.len() >= cap.max(1) {
            self.queue_full.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        q.0.push_back(id);
        q.1.insert(id);
        drop(q);
        self.wake.notify_one();
        true
    }

    /// The next queued id, counted as in flight until the returned guard drops (after its
    /// save, or when the task saving it is aborted).
    pub(crate) fn dequeue(&self) -> Option<InFlight<'_>> {
        let mut q = lock(&self.queue);
        let id = q.0.pop_front()?;
        q.1.remove(&id);
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        Some(InFlight { state: self, id })
    }

    /// Waits (at most `limit`) until no dequeued save is under way: a clean shutdown
    /// calls it after flushing the queue, so that a save the background task had just
    /// taken is not cut off when the tasks stop.
    pub(crate) async fn wait_idle(&self, limit: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while self.in_flight.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    pub(crate) fn set_health(&self, r: Result<(), StoreError>) {
        if let Err(e) = &r {
            tracing::warn!(store = %self.name(), "session store unhealthy: {e}");
        }
        *lock(&self.health) = Some(r.map_err(|e| e.to_string()));
    }

    pub(crate) fn stats(&self) -> StoreStats {
        let health = lock(&self.health).clone();
        StoreStats {
            name: self.name().to_owned(),
            mode: self.mode,
            healthy: health.as_ref().map(Result::is_ok),
            health_error: health.and_then(Result::err),
            queue_depth: lock(&self.queue).0.len(),
            queue_full: self.queue_full.load(Ordering::Relaxed),
            saves: self.saves.load(Ordering::Relaxed),
            loads: self.loads.load(Ordering::Relaxed),
            deletes: self.deletes.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            conflicts: self.conflicts.load(Ordering::Relaxed),
            last_error: lock(&self.last_error).clone(),
        }
    }
}

/// A session as a store record: metadata in clear, the whole session (every attribute, the
/// per-field stamps and the version) as `data`.
pub(crate) fn to_record(d: &SessionData) -> StoredSession {
    StoredSession {
        id: d.id.to_string(),
        version: d.version,
        created_ms: d.created_ms,
        last_access_ms: d.last_access_ms,
        max_inactive_secs: d.max_inactive_ms.div_ceil(1000),
        expires_at_ms: d.expires_at_ms(),
        data: wire::encode_session(d),
    }
}

/// The inverse of [`to_record`].
pub(crate) fn from_record(store: &str, r: &StoredSession) -> Result<SessionData, StoreError> {
    let corrupt = |cause: String| StoreError::Corrupt {
        store: store.to_owned(),
        id: r.id.clone(),
        cause,
    };
    let mut d = wire::decode_session(&r.data).map_err(corrupt)?;
    if d.id.to_string() != r.id {
        return Err(corrupt(format!("the data belongs to session {}", d.id.log_id())));
    }
    // The record's clear metadata wins where it is newer (a store may refresh the access).
    d.version = d.version.max(r.version);
    d.last_access_ms = d.last_access_ms.max(r.last_access_ms);
    Ok(d)
}
