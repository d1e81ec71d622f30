//! When a manager reads, writes and cleans its session store: Tomcat's
//! `PersistentManager` as a plain state machine, with no IO and time as an argument.
//!
//! It decides, for the [`StoreMode`] the manager was built with:
//! - the startup: a node with a write-through or write-behind store loads every stored
//!   session after its state transfer, before it serves; a failed load is tried again
//!   every second until the deadline, then the node serves degraded;
//! - a commit: write-through saves the session before the commit returns; write-behind
//!   queues its id (at most `queue` distinct ids) and saves it in the background, or
//!   saves inline when the queue is full; shared saves with the version the unit of work
//!   loaded; an invalidated session, or the old id of a changed one, is deleted;
//! - a read-only access: saved at most once per touch interval per session, in the
//!   background (write-behind: queued);
//! - an expiry decided here: the record is deleted in the background;
//! - upkeep: a health check every 5 s, records past their expiry deleted every 60 s,
//!   the write-behind queue drained; a save that failed goes back in the queue and the
//!   queue waits a second;
//! - a clean shutdown: the queue is flushed, then the sessions expired at shutdown are
//!   deleted.
//!
//! It outputs [`StoreOp`]s and takes their completions back; `manager.rs`'s driver
//! performs them on the [`SessionStore`](crate::SessionStore) (`persist.rs` keeps the
//! counters and the record codec), and the simulation performs them on a store in
//! memory. Call order: [`Persistence::begin_loading`] once the state transfer is over,
//! then [`Persistence::handle_loaded`] with each `LoadAll`'s outcome until it says
//! what to do; at any time the `on_*` decisions of local calls; in the background,
//! [`Persistence::poll`] until it returns `None`, each op's outcome to
//! [`Persistence::handle_done`], then wait until [`Persistence::poll_timeout`] or until
//! a local call queued write-behind work.

use std::collections::{HashSet, VecDeque};

use crate::id::SessionId;

/// How a [`SessionManager`](crate::SessionManager) uses its [`SessionStore`](crate::SessionStore); see
/// [`SessionManagerBuilder::with_store`](crate::SessionManagerBuilder::with_store) and the
/// table in the crate docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
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
    /// [`StoreStats::queue_full`](crate::StoreStats::queue_full)), so the queue bounds memory without dropping writes. A
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

/// How often the store's health is checked.
pub(crate) const HEALTH_EVERY_MS: u64 = 5_000;
/// How often records past their expiry are deleted from the store.
pub(crate) const PURGE_EVERY_MS: u64 = 60_000;
/// How long a failed load at startup, or a failed write-behind save, waits before the
/// next attempt.
pub(crate) const RETRY_MS: u64 = 1_000;

/// A store operation the driver performs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StoreOp {
    /// Load every stored session into the node (a starting node).
    LoadAll,
    /// Write the session as this node holds it when the op runs (merged with the stored
    /// record); nothing when this node no longer holds it (a BackupManager node that
    /// handed it to a new primary: that one saves it). Deletions are [`StoreOp::Delete`].
    Save(SessionId),
    /// Shared mode: save the session with optimistic concurrency, `expected` being the
    /// stored version the unit of work loaded (`None`: a new record).
    SaveVersioned { id: SessionId, expected: Option<u64> },
    /// Shared mode: save a read access (same version, newer access time); a concurrent
    /// writer wins.
    SaveAccess(SessionId),
    /// Delete the session's record.
    Delete(SessionId),
    /// Check the store's health.
    CheckHealth,
    /// Delete the records past their expiry.
    PurgeExpired,
}

/// What a starting node does after a `LoadAll`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Loaded {
    /// Every stored session is in: serve.
    Ready,
    /// The load failed: `LoadAll` again at this time.
    RetryAt(u64),
    /// The load failed at the deadline: serve degraded.
    GaveUp,
}

/// What a clean shutdown does with the store, in this order: `flush`; then wait (at
/// most 10 s) until [`Persistence::is_busy`] is false, so that a save the background
/// took just before is not cut off, nor lands after a deletion; then `delete`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Shutdown {
    /// Every queued write-behind save.
    pub(crate) flush: Vec<StoreOp>,
    /// The records of the sessions expired at shutdown.
    pub(crate) delete: Vec<StoreOp>,
}

/// A commit, as the store decisions need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Committed {
    /// The id the unit of work loaded.
    pub(crate) key: SessionId,
    /// The id after the commit (`None`: invalidated).
    pub(crate) now: Option<SessionId>,
    /// The version the unit of work loaded.
    pub(crate) base: u64,
    /// A session created by this unit of work.
    pub(crate) was_new: bool,
}

/// The store decisions of one manager; see the module docs.
#[derive(Debug)]
pub(crate) struct Persistence {
    mode: StoreMode,
    touch_interval_ms: u64,
    /// Write-behind: the ops waiting, oldest first (one per session: a later one
    /// replaces it), and their sessions.
    queue: VecDeque<StoreOp>,
    queued: HashSet<SessionId>,
    /// Commits that found the write-behind queue full.
    queue_full: u64,
    /// Background ops handed out by `poll` and not done yet.
    in_flight: usize,
    /// Of those, write-behind saves and deletions: a crash loses them like the queued
    /// ones, so they count against the queue's bound.
    saving: usize,
    /// The write-behind queue waits until then after a failed save.
    backoff_until: u64,
    next_health: u64,
    next_purge: u64,
    /// A starting node's load: until when it may be tried again.
    load_deadline: Option<u64>,
}

impl Persistence {
    /// The decisions for a store used in `mode`, from `now_ms` (monotonic): the first
    /// health check and purge are due at once.
    pub(crate) fn new(mode: StoreMode, touch_interval_ms: u64, now_ms: u64) -> Self {
        Persistence {
            mode,
            touch_interval_ms,
            queue: VecDeque::new(),
            queued: HashSet::new(),
            queue_full: 0,
            in_flight: 0,
            saving: 0,
            backoff_until: 0,
            next_health: now_ms,
            next_purge: now_ms,
            load_deadline: None,
        }
    }

    /// Write-behind: ids waiting to be saved.
    pub(crate) fn queue_depth(&self) -> usize {
        self.queue.len()
    }

    /// Write-behind: commits that found the queue full (and saved inline).
    pub(crate) fn queue_full(&self) -> u64 {
        self.queue_full
    }

    /// Whether a background op handed out by [`Persistence::poll`] is not done yet.
    pub(crate) fn is_busy(&self) -> bool {
        self.in_flight > 0
    }

    /// Whether write-behind saves wait in the queue.
    #[cfg(test)]
    pub(crate) fn has_queued(&self) -> bool {
        !self.queue.is_empty()
    }

    // ----- startup -----

    /// The state transfer is over: whether the node loads the store before it serves
    /// (`Some(LoadAll)`: write-through and write-behind), trying until `deadline_ms`.
    pub(crate) fn begin_loading(&mut self, deadline_ms: u64) -> Option<StoreOp> {
        if !self.mode.is_persist() {
            return None;
        }
        self.load_deadline = Some(deadline_ms);
        Some(StoreOp::LoadAll)
    }

    /// The outcome of a `LoadAll` at `now_ms`.
    pub(crate) fn handle_loaded(&mut self, now_ms: u64, ok: bool) -> Loaded {
        let deadline = self.load_deadline.unwrap_or(0);
        if ok {
            self.load_deadline = None;
            Loaded::Ready
        } else if now_ms < deadline {
            Loaded::RetryAt(now_ms + RETRY_MS)
        } else {
            self.load_deadline = None;
            Loaded::GaveUp
        }
    }

    // ----- local calls -----

    /// Whether `get` reads the store before the copy held here (shared mode: the store
    /// is the truth).
    pub(crate) fn reads_first(&self) -> bool {
        self.mode == StoreMode::Shared
    }

    /// Whether `get` looks in the store for a session the cluster does not have
    /// (write-through and write-behind).
    pub(crate) fn reads_on_miss(&self) -> bool {
        self.mode.is_persist()
    }

    /// A commit that changed something: the ops the commit performs, in order, before it
    /// returns (an error fails the commit). Write-behind queues instead, and saves inline
    /// only what does not fit in the queue.
    pub(crate) fn on_commit(&mut self, c: Committed) -> Vec<StoreOp> {
        let Committed {
            key,
            now,
            base,
            was_new,
        } = c;
        if self.mode == StoreMode::Shared {
            let Some(now) = now else {
                return vec![StoreOp::Delete(key)]; // invalidated: gone for every node
            };
            // A new session, or a new id (fixation protection), has no record yet.
            let expected = (!was_new && now == key).then_some(base);
            let mut ops = vec![StoreOp::SaveVersioned { id: now, expected }];
            if now != key {
                ops.push(StoreOp::Delete(key));
            }
            return ops;
        }
        // The old id's record goes (invalidated, or the id changed); the new one is saved.
        let mut writes = vec![match now {
            Some(now) if now == key => StoreOp::Save(key),
            _ => StoreOp::Delete(key),
        }];
        writes.extend(now.filter(|n| *n != key).map(StoreOp::Save));
        writes.into_iter().filter(|op| !self.enqueue(op.clone())).collect()
    }

    /// A read-only access to a session whose previous access was at `previous_ms` (wall
    /// clock): the op to run in the background, at most once per touch interval.
    pub(crate) fn on_touch(&mut self, id: SessionId, previous_ms: u64, now_ms: u64) -> Option<StoreOp> {
        if now_ms.saturating_sub(previous_ms) < self.touch_interval_ms {
            return None;
        }
        if self.mode == StoreMode::Shared {
            Some(StoreOp::SaveAccess(id))
        } else if self.enqueue(StoreOp::Save(id)) {
            None
        } else {
            Some(StoreOp::Save(id))
        }
    }

    /// This node expired the session: its record goes too, in the background (shared
    /// mode leaves expiry to the store's own).
    pub(crate) fn on_expired(&self, id: SessionId) -> Option<StoreOp> {
        self.mode.is_persist().then_some(StoreOp::Delete(id))
    }

    /// A request ended the session at its max lifetime: in shared mode its record is
    /// deleted now (the store's own expiry knows the idle time, not the max lifetime);
    /// the other modes delete it through [`on_expired`](Self::on_expired).
    pub(crate) fn on_lifetime_ended(&self, id: SessionId) -> Option<StoreOp> {
        (self.mode == StoreMode::Shared).then_some(StoreOp::Delete(id))
    }

    /// A clean shutdown, given the sessions expired at shutdown (`with_expire_sessions_on_shutdown`).
    pub(crate) fn on_shutdown(&mut self, expired: &[SessionId]) -> Shutdown {
        let flush = self.queue.drain(..).collect();
        self.queued.clear();
        Shutdown {
            flush,
            delete: expired.iter().copied().map(StoreOp::Delete).collect(),
        }
    }

    /// Write-behind: queues `op` (a `Save` or `Delete`); `false` when it must run inline
    /// (another mode, or the queue is full).
    fn enqueue(&mut self, op: StoreOp) -> bool {
        let StoreMode::WriteBehind { queue: cap } = self.mode else {
            return false;
        };
        let (StoreOp::Save(id) | StoreOp::Delete(id)) = op else {
            return false;
        };
        if self.queued.contains(&id) {
            // The later op of the session wins (a deletion after a save, or the reverse).
            if let Some(q) = self
                .queue
                .iter_mut()
                .find(|q| matches!(q, StoreOp::Save(i) | StoreOp::Delete(i) if *i == id))
            {
                *q = op;
            }
            return true;
        }
        if self.queue.len() + self.saving >= cap.max(1) {
            self.queue_full += 1;
            return false;
        }
        self.queue.push_back(op);
        self.queued.insert(id);
        true
    }

    // ----- the background -----

    /// The next background op due at `now_ms`, if any: a health check, a purge, or the
    /// oldest queued save (unless a failed save makes the queue wait).
    pub(crate) fn poll(&mut self, now_ms: u64) -> Option<StoreOp> {
        let op = if now_ms >= self.next_health {
            self.next_health = now_ms + HEALTH_EVERY_MS;
            StoreOp::CheckHealth
        } else if now_ms >= self.next_purge {
            self.next_purge = now_ms + PURGE_EVERY_MS;
            StoreOp::PurgeExpired
        } else if now_ms >= self.backoff_until
            && let Some(op) = self.queue.pop_front()
        {
            if let StoreOp::Save(id) | StoreOp::Delete(id) = &op {
                self.queued.remove(id);
                self.saving += 1;
            }
            op
        } else {
            return None;
        };
        self.in_flight += 1;
        Some(op)
    }

    /// When [`Persistence::poll`] has something again, at the latest (write-behind work
    /// queued meanwhile is due at once).
    pub(crate) fn poll_timeout(&self) -> u64 {
        let upkeep = self.next_health.min(self.next_purge);
        if self.queue.is_empty() {
            upkeep
        } else {
            upkeep.min(self.backoff_until)
        }
    }

    /// The outcome of a background op from [`Persistence::poll`]. A failed save goes back
    /// in the queue and the queue waits: a store outage delays writes, it does not drop them.
    pub(crate) fn handle_done(&mut self, now_ms: u64, op: &StoreOp, ok: bool) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if matches!(op, StoreOp::Save(_) | StoreOp::Delete(_)) {
            self.saving = self.saving.saturating_sub(1);
        }
        if matches!(op, StoreOp::Save(_) | StoreOp::Delete(_)) && !ok {
            self.enqueue(op.clone());
            self.backoff_until = now_ms + RETRY_MS;
        }
    }
}

#[cfg(test)]
mod tests;
