//! A manager's session store: the mode, the bookkeeping (counters, health, per-session
//! write order) and the session <-> record codec. What to do with the store, and when,
//! is decided by [`Persistence`] (`persistence.rs`), held here; the manager's driver
//! performs it.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::data::SessionData;
use crate::id::SessionId;
use crate::persistence::{Persistence, StoreMode};
use crate::store::{RecordError, SessionStore, StoreError, StoredSession};
use crate::wire;

/// The store's part of [`ManagerStats`](crate::ManagerStats).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
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

/// The store, its mode, and what the manager tracks about it.
pub(crate) struct StoreState {
    pub(crate) store: Arc<dyn SessionStore>,
    pub(crate) mode: StoreMode,
    /// Saves of one session are serialized (export then save under the lock), so the store
    /// never goes back to an older version of a session this node wrote.
    stripes: Vec<tokio::sync::Mutex<()>>,
    /// The store decisions (write-behind queue included).
    policy: Mutex<Persistence>,
    /// Wakes the background task when write-behind work was queued.
    pub(crate) wake: Notify,
    saves: AtomicU64,
    loads: AtomicU64,
    deletes: AtomicU64,
    errors: AtomicU64,
    pub(crate) conflicts: AtomicU64,
    last_error: Mutex<Option<String>>,
    health: Mutex<Option<Result<(), String>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl StoreState {
    /// The store used in `mode`; `touch_interval_ms` bounds how often a read access is
    /// saved; the node's monotonic clock starts at 0.
    pub(crate) fn new(store: Arc<dyn SessionStore>, mode: StoreMode, touch_interval_ms: u64) -> Self {
        StoreState {
            store,
            mode,
            stripes: (0..64).map(|_| tokio::sync::Mutex::new(())).collect(),
            policy: Mutex::new(Persistence::new(mode, touch_interval_ms, 0)),
            wake: Notify::new(),
            saves: AtomicU64::new(0),
            loads: AtomicU64::new(0),
            deletes: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            conflicts: AtomicU64::new(0),
            last_error: Mutex::new(None),
            health: Mutex::new(None),
        }
    }

    /// The store decisions, locked.
    pub(crate) fn policy(&self) -> MutexGuard<'_, Persistence> {
        lock(&self.policy)
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

    /// Write-through and write-behind: saves the session as held here merged with the
    /// stored record ([`merge_for_save`]), with optimistic concurrency against another
    /// node saving the same session meanwhile (then merged and tried again, at most 5
    /// times).
    pub(crate) async fn save_merged(&self, held: &SessionData) -> Result<(), StoreError> {
        let mut attempt = 0;
        loop {
            let stored = match self.store.load(&held.id).await {
                Ok(r) => r,
                Err(e) => return self.record(Err(e), "load before save"),
            };
            let (record, expected) = merge_for_save(self.name(), held, stored.as_ref());
            let r = self.store.save(&record, expected).await;
            match r {
                Err(e) if e.is_conflict() && attempt < 4 => attempt += 1,
                Ok(()) => {
                    self.saves.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                r => return self.record(r, "save"),
            }
        }
    }

    pub(crate) async fn delete(&self, id: &SessionId) -> Result<(), StoreError> {
        let r = self.store.delete(id).await;
        if let Ok(true) = r {
            self.deletes.fetch_add(1, Ordering::Relaxed);
        }
        self.record(r.map(|_| ()), "delete")
    }

    /// The stored session `id`, decoded.
    pub(crate) async fn load(&self, id: &SessionId) -> Result<Option<SessionData>, StoreError> {
        let r = match self.store.load(id).await {
            Ok(Some(record)) => from_record(self.name(), &record).map(Some),
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        };
        if let Ok(Some(_)) = r {
            self.loads.fetch_add(1, Ordering::Relaxed);
        }
        self.record(r, "load")
    }

    pub(crate) fn set_health(&self, r: Result<(), StoreError>) {
        if let Err(e) = &r {
            tracing::warn!(store = %self.name(), "session store unhealthy: {e}");
        }
        *lock(&self.health) = Some(r.map_err(|e| e.to_string()));
    }

    pub(crate) fn stats(&self) -> StoreStats {
        let health = lock(&self.health).clone();
        let (queue_depth, queue_full) = {
            let policy = self.policy();
            (policy.queue_depth(), policy.queue_full())
        };
        StoreStats {
            name: self.name().to_owned(),
            mode: self.mode,
            healthy: health.as_ref().map(Result::is_ok),
            health_error: health.and_then(Result::err),
            queue_depth,
            queue_full,
            saves: self.saves.load(Ordering::Relaxed),
            loads: self.loads.load(Ordering::Relaxed),
            deletes: self.deletes.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            conflicts: self.conflicts.load(Ordering::Relaxed),
            last_error: lock(&self.last_error).clone(),
        }
    }
}

/// What a write-through or write-behind save writes: the session as held here merged,
/// field by field by stamp, with the `stored` record, and the version the stored record
/// must still have when the save lands (`None`: there is none). Nodes hold different
/// copies at times (two sides of a partition, writes on two nodes at once, a stale copy
/// written to under the BackupManager's async mode): a plain overwrite let the last node
/// to save drop a write another node had saved and acknowledged, lost for good once
/// every process restarted from the store (found by the simulation's store runs).
pub(crate) fn merge_for_save(
    store: &str,
    held: &SessionData,
    stored: Option<&StoredSession>,
) -> (StoredSession, Option<u64>) {
    let Some(r) = stored else {
        return (to_record(held), None);
    };
    let mut merged = held.clone();
    match from_record(store, r) {
        Ok(d) if d.id == held.id => merged.merge(&d),
        // A corrupt record is replaced.
        _ => {}
    }
    (to_record(&merged), Some(r.version))
}

/// A session as a store record: metadata in clear, the whole session (every attribute, the
/// per-field stamps and the version) as `data`.
pub(crate) fn to_record(d: &SessionData) -> StoredSession {
    StoredSession {
        id: d.id,
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
    let corrupt = |cause| StoreError::corrupt(store, r.id, cause);
    let mut d = wire::decode_session(&r.data).map_err(corrupt)?;
    if d.id != r.id {
        return Err(corrupt(RecordError::OtherSession { other: d.id.log_id() }));
    }
    // The record's clear metadata wins where it is newer (a store may refresh the access).
    d.version = d.version.max(r.version);
    d.last_access_ms = d.last_access_ms.max(r.last_access_ms);
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{Blob, Stamp};

    /// Regression (simulation seeds 29, 102, 144 with a write-through store): a node
    /// whose copy lacked a write another node had saved and acknowledged (a stale Backup
    /// copy written to, or the other side of a partition) overwrote the record, and
    /// the write was gone once every process restarted from the store.
    #[test]
    fn a_save_from_a_stale_copy_keeps_the_newer_writes_already_stored() {
        let id = SessionId::from_bytes([7; 16]);
        let stamp = |version, writer| Stamp { version, writer };
        let mut fresh = SessionData::new(id, "a".into(), 0, 60_000);
        fresh.write_attr("n", Some(Blob(vec![2].into())), stamp(4, 1));
        fresh.version = 4;
        let stored = to_record(&fresh);
        let mut stale = SessionData::new(id, "b".into(), 0, 60_000);
        stale.write_attr("n", Some(Blob(vec![1].into())), stamp(2, 2));
        stale.write_attr("other", Some(Blob(vec![9].into())), stamp(3, 2));
        stale.version = 3;
        let (record, expected) = merge_for_save("t", &stale, Some(&stored));
        assert_eq!(expected, Some(4), "saved only if nobody saved meanwhile");
        let saved = from_record("t", &record).unwrap();
        assert_eq!(
            saved.attr("n").map(|a| a.stamp),
            Some(stamp(4, 1)),
            "the stored newer write is kept"
        );
        assert_eq!(
            saved.attr("other").map(|a| a.stamp),
            Some(stamp(3, 2)),
            "and the saver's own"
        );
        assert_eq!(saved.version, 4);
        let (first, none) = merge_for_save("t", &stale, None);
        assert_eq!((first.version, none), (3, None), "a new record is saved as held");
    }
}
