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
mod tests {
    use super::*;

    fn id(n: u8) -> SessionId {
        SessionId::from_bytes([n; 16])
    }

    fn commit(key: u8, now: Option<u8>) -> Committed {
        Committed {
            key: id(key),
            now: now.map(id),
            base: 4,
            was_new: false,
        }
    }

    /// The first health check and purge, done.
    fn upkeep(p: &mut Persistence) {
        for _ in 0..2 {
            let op = p.poll(0).expect("upkeep due at once");
            p.handle_done(0, &op, true);
        }
    }

    const THROUGH: StoreMode = StoreMode::WriteThrough;
    const BEHIND: StoreMode = StoreMode::WriteBehind { queue: 2 };

    #[test]
    fn a_persisting_store_is_loaded_before_serving_and_a_shared_one_is_not() {
        assert_eq!(
            Persistence::new(THROUGH, 1_000, 0).begin_loading(60_000),
            Some(StoreOp::LoadAll)
        );
        assert_eq!(
            Persistence::new(BEHIND, 1_000, 0).begin_loading(60_000),
            Some(StoreOp::LoadAll)
        );
        assert_eq!(
            Persistence::new(StoreMode::Shared, 1_000, 0).begin_loading(60_000),
            None
        );
    }

    #[test]
    fn a_failed_load_is_tried_again_every_second_until_the_deadline_then_serves_degraded() {
        let mut p = Persistence::new(THROUGH, 1_000, 0);
        p.begin_loading(3_000);
        assert_eq!(p.handle_loaded(100, false), Loaded::RetryAt(1_100));
        assert_eq!(p.handle_loaded(2_999, false), Loaded::RetryAt(3_999));
        assert_eq!(p.handle_loaded(3_000, false), Loaded::GaveUp);
        p.begin_loading(10_000);
        assert_eq!(p.handle_loaded(4_000, true), Loaded::Ready);
    }

    #[test]
    fn write_through_saves_inline_before_the_commit_returns() {
        let mut p = Persistence::new(THROUGH, 1_000, 0);
        assert_eq!(p.on_commit(commit(1, Some(1))), vec![StoreOp::Save(id(1))]);
        assert!(!p.has_queued());
    }

    #[test]
    fn an_invalidated_session_is_deleted_and_a_changed_id_moves() {
        let mut p = Persistence::new(THROUGH, 1_000, 0);
        assert_eq!(p.on_commit(commit(1, None)), vec![StoreOp::Delete(id(1))]);
        assert_eq!(
            p.on_commit(commit(1, Some(2))),
            vec![StoreOp::Delete(id(1)), StoreOp::Save(id(2))]
        );
    }

    #[test]
    fn write_behind_queues_each_id_once_and_saves_in_the_background() {
        let mut p = Persistence::new(BEHIND, 1_000, 0);
        upkeep(&mut p);
        assert!(p.on_commit(commit(1, Some(1))).is_empty());
        assert!(p.on_commit(commit(1, Some(1))).is_empty());
        assert_eq!(p.queue_depth(), 1);
        assert_eq!(p.poll_timeout(), 0, "queued work is due at once");
        assert_eq!(p.poll(10), Some(StoreOp::Save(id(1))));
        assert!(p.is_busy());
        p.handle_done(20, &StoreOp::Save(id(1)), true);
        assert!(!p.is_busy());
        assert_eq!(p.poll(20), None);
    }

    #[test]
    fn write_behind_saves_inline_what_does_not_fit_in_the_queue() {
        let mut p = Persistence::new(BEHIND, 1_000, 0);
        assert!(p.on_commit(commit(1, Some(1))).is_empty());
        assert!(p.on_commit(commit(2, Some(2))).is_empty());
        assert_eq!(p.on_commit(commit(3, Some(3))), vec![StoreOp::Save(id(3))]);
        assert_eq!(p.queue_full(), 1);
        assert_eq!(p.queue_depth(), 2);
    }

    /// `store_modes::write_behind_full_queue_saves_inline` lost 2 of 20 saves to a crash
    /// with a queue of one (flaky in CI): the save being written had left the queue, so a
    /// second one fitted. A crash must lose at most `queue` sessions' writes.
    #[test]
    fn a_save_in_flight_counts_against_the_write_behind_bound() {
        let mut p = Persistence::new(StoreMode::WriteBehind { queue: 1 }, 1_000, 0);
        upkeep(&mut p);
        assert!(p.on_commit(commit(1, Some(1))).is_empty());
        assert_eq!(p.poll(10), Some(StoreOp::Save(id(1))));
        assert_eq!(
            p.on_commit(commit(2, Some(2))),
            vec![StoreOp::Save(id(2))],
            "two at risk at once"
        );
        p.handle_done(20, &StoreOp::Save(id(1)), true);
        assert!(p.on_commit(commit(3, Some(3))).is_empty(), "room again once saved");
    }

    #[test]
    fn a_failed_background_save_is_queued_again_and_the_queue_waits_a_second() {
        let mut p = Persistence::new(BEHIND, 1_000, 0);
        upkeep(&mut p);
        p.on_commit(commit(1, Some(1)));
        let op = p.poll(10).expect("the save");
        p.handle_done(20, &op, false);
        assert_eq!(p.queue_depth(), 1, "kept, not dropped");
        assert_eq!(p.poll(500), None);
        assert_eq!(p.poll_timeout(), 1_020);
        assert_eq!(p.poll(1_020), Some(StoreOp::Save(id(1))));
    }

    #[test]
    fn a_read_saves_its_access_at_most_once_per_touch_interval() {
        let mut p = Persistence::new(THROUGH, 1_000, 0);
        assert_eq!(p.on_touch(id(1), 5_000, 5_999), None);
        assert_eq!(p.on_touch(id(1), 5_000, 6_000), Some(StoreOp::Save(id(1))));
        let mut behind = Persistence::new(BEHIND, 1_000, 0);
        assert_eq!(behind.on_touch(id(1), 0, 6_000), None);
        assert_eq!(behind.queue_depth(), 1, "write-behind queues the access");
        let mut shared = Persistence::new(StoreMode::Shared, 1_000, 0);
        assert_eq!(shared.on_touch(id(1), 0, 6_000), Some(StoreOp::SaveAccess(id(1))));
    }

    #[test]
    fn an_expiry_here_deletes_the_record_except_in_shared_mode() {
        assert_eq!(
            Persistence::new(THROUGH, 1_000, 0).on_expired(id(1)),
            Some(StoreOp::Delete(id(1)))
        );
        assert_eq!(
            Persistence::new(BEHIND, 1_000, 0).on_expired(id(1)),
            Some(StoreOp::Delete(id(1)))
        );
        assert_eq!(Persistence::new(StoreMode::Shared, 1_000, 0).on_expired(id(1)), None);
    }

    #[test]
    fn a_session_ended_at_its_max_lifetime_leaves_every_kind_of_store_once() {
        for mode in [THROUGH, BEHIND] {
            let p = Persistence::new(mode, 1_000, 0);
            // Deleted through its expiry, not a second time.
            assert_eq!(
                (p.on_expired(id(1)), p.on_lifetime_ended(id(1))),
                (Some(StoreOp::Delete(id(1))), None)
            );
        }
        let p = Persistence::new(StoreMode::Shared, 1_000, 0);
        assert_eq!(
            (p.on_expired(id(1)), p.on_lifetime_ended(id(1))),
            (None, Some(StoreOp::Delete(id(1))))
        );
    }

    #[test]
    fn shared_mode_saves_with_the_loaded_version_and_deletes_the_old_id() {
        let mut p = Persistence::new(StoreMode::Shared, 1_000, 0);
        assert_eq!(
            p.on_commit(commit(1, Some(1))),
            vec![StoreOp::SaveVersioned {
                id: id(1),
                expected: Some(4)
            }]
        );
        let new = Committed {
            was_new: true,
            ..commit(1, Some(1))
        };
        assert_eq!(
            p.on_commit(new),
            vec![StoreOp::SaveVersioned {
                id: id(1),
                expected: None
            }]
        );
        assert_eq!(
            p.on_commit(commit(1, Some(2))),
            vec![
                StoreOp::SaveVersioned {
                    id: id(2),
                    expected: None
                },
                StoreOp::Delete(id(1))
            ]
        );
        assert_eq!(p.on_commit(commit(1, None)), vec![StoreOp::Delete(id(1))]);
        assert!(p.reads_first() && !p.reads_on_miss());
    }

    #[test]
    fn upkeep_checks_health_every_5_s_and_purges_every_60_s() {
        let mut p = Persistence::new(THROUGH, 1_000, 0);
        let mut seen = Vec::new();
        let mut now = 0;
        while now <= 60_000 {
            while let Some(op) = p.poll(now) {
                p.handle_done(now, &op, true);
                seen.push((now, op));
            }
            now = p.poll_timeout();
        }
        let health = seen.iter().filter(|(_, op)| *op == StoreOp::CheckHealth).count();
        let purges: Vec<u64> = seen
            .iter()
            .filter(|(_, op)| *op == StoreOp::PurgeExpired)
            .map(|(t, _)| *t)
            .collect();
        assert_eq!(health, 13, "at 0, 5 s, ..., 60 s");
        assert_eq!(purges, vec![0, 60_000]);
    }

    #[test]
    fn a_clean_shutdown_flushes_the_queue_then_deletes_the_expired() {
        let mut p = Persistence::new(BEHIND, 1_000, 0);
        p.on_commit(commit(1, Some(1)));
        p.on_commit(commit(2, None));
        let plan = p.on_shutdown(&[id(3)]);
        assert_eq!(
            plan.flush,
            vec![StoreOp::Save(id(1)), StoreOp::Delete(id(2))],
            "the queued save, and the queued deletion of the invalidated session"
        );
        assert_eq!(plan.delete, vec![StoreOp::Delete(id(3))]);
        assert_eq!(p.queue_depth(), 0);
    }
}
