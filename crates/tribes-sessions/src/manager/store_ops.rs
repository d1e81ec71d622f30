//! The driver's store part: performs the [`StoreOp`]s that
//! [`Persistence`](crate::persistence::Persistence) decides (the load at startup, the
//! commit's saves and deletions, background saves, upkeep, the shutdown flush) on the
//! [`SessionStore`](crate::SessionStore), and reports their outcomes back. It decides
//! nothing itself.

use std::sync::Arc;
use std::time::Duration;

use super::Readiness;
use super::driver::Inner;
use crate::data::SessionData;
use crate::error::{ReplicationError, StateTransferError, TransferFailure};
use crate::id::SessionId;
use crate::persist::StoreState;
use crate::persistence::{Loaded, StoreOp};
use crate::store::StoreError;

/// The state transfer ended: load the store when [`Persistence`](crate::persistence::Persistence)
/// says so, then serve.
pub(super) async fn finish_startup(inner: Arc<Inner>, result: Result<(), StateTransferError>) {
    let result = match (result, inner.store.clone()) {
        (Ok(()), Some(store)) => load_until_ready(&inner, &store).await,
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

/// `LoadAll` until it succeeds or the transfer timeout (counted from the manager's
/// start) passes.
async fn load_until_ready(inner: &Arc<Inner>, store: &Arc<StoreState>) -> Result<(), StateTransferError> {
    let total = inner.b.transfer_timeout;
    let Some(StoreOp::LoadAll) = store.policy().begin_loading(total.as_millis() as u64) else {
        return Ok(());
    };
    loop {
        let r = load_all(inner, store).await;
        let decision = store.policy().handle_loaded(inner.clocks().mono_ms, r.is_ok());
        match (decision, r) {
            (Loaded::Ready, Ok(n)) => {
                tracing::info!(context = %inner.context(), store = %store.name(), sessions = n, "sessions loaded from the store");
                inner.node().note_source(store.name().to_owned());
                return Ok(());
            }
            (Loaded::RetryAt(at), Err(e)) => {
                tracing::warn!(context = %inner.context(), "loading the stored sessions failed, retrying: {e}");
                tokio::time::sleep_until(inner.epoch + Duration::from_millis(at)).await;
            }
            (_, r) => {
                return Err(StateTransferError::TimedOut {
                    context: inner.context().to_string(),
                    member: store.name().to_owned(),
                    cause: r.err().map_or(TransferFailure::NoAnswer, TransferFailure::Store),
                    timeout: total,
                });
            }
        }
    }
}

/// Imports every stored session of the context; a corrupt record is logged and skipped.
async fn load_all(inner: &Arc<Inner>, store: &Arc<StoreState>) -> Result<usize, StoreError> {
    let ids = store.store.list_ids().await?;
    let mut n = 0;
    for id in ids {
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

/// The background: upkeep and the write-behind queue, as [`Persistence::poll`](crate::persistence::Persistence::poll) hands them out.
pub(super) async fn run_store(inner: Arc<Inner>) {
    let Some(store) = inner.store.clone() else { return };
    loop {
        loop {
            let now = inner.clocks().mono_ms;
            let Some(op) = store.policy().poll(now) else { break };
            let ok = inner.perform_store_op(&store, &op).await.is_ok();
            store.policy().handle_done(inner.clocks().mono_ms, &op, ok);
        }
        let wake_at = inner.epoch + Duration::from_millis(store.policy().poll_timeout());
        tokio::select! {
            _ = tokio::time::sleep_until(wake_at) => {}
            _ = store.wake.notified() => {}
        }
    }
}

impl Inner {
    /// Performs `op` (not `LoadAll` nor `SaveVersioned`, which have their own callers).
    pub(super) async fn perform_store_op(&self, store: &StoreState, op: &StoreOp) -> Result<(), StoreError> {
        match op {
            StoreOp::Save(id) => self.persist(store, *id).await,
            StoreOp::Delete(id) => {
                let _order = store.stripe(id).lock().await;
                store.delete(id).await
            }
            StoreOp::SaveAccess(id) => {
                let Some(d) = self.core().export(id) else { return Ok(()) };
                // Same version, newer access; a concurrent writer wins (its save has the access too).
                let record = crate::persist::to_record(&d);
                store.store.save(&record, Some(d.version)).await
            }
            StoreOp::CheckHealth => {
                store.set_health(store.store.health().await);
                Ok(())
            }
            StoreOp::PurgeExpired => match store.store.delete_expired(self.now()).await {
                Ok(_) => Ok(()),
                Err(e) => {
                    tracing::warn!(context = %self.context(), "{e}");
                    Err(e)
                }
            },
            StoreOp::LoadAll | StoreOp::SaveVersioned { .. } => {
                debug_assert!(false, "{op:?} is performed by its caller");
                Ok(())
            }
        }
    }

    /// Writes the session `id` as held here, merged with the stored record.
    async fn persist(&self, store: &StoreState, id: SessionId) -> Result<(), StoreError> {
        let _order = store.stripe(&id).lock().await;
        let data = self.core().export(&id);
        match data {
            Some(d) => store.save_merged(&d).await,
            // Not held here any more (handed to a new primary, or destroyed: a deletion of
            // its own follows then): nothing to write.
            None => Ok(()),
        }
    }

    /// Performs `op` in the background (a read's access, an expiry's deletion).
    pub(super) fn spawn_store_op(self: &Arc<Self>, store: Arc<StoreState>, op: StoreOp) {
        let inner = self.clone();
        tokio::spawn(async move {
            let _ = inner.perform_store_op(&store, &op).await;
        });
    }

    /// A commit's store ops, in order, before the commit returns; `committed` is the
    /// session as this unit of work committed it (for the shared mode's versioned save).
    /// Wakes the background for what was queued instead.
    pub(super) async fn commit_to_store(
        &self,
        store: &StoreState,
        ops: Vec<StoreOp>,
        committed: Option<&SessionData>,
    ) -> Result<(), ReplicationError> {
        store.wake.notify_one();
        for op in ops {
            let id = match &op {
                StoreOp::Save(id) | StoreOp::Delete(id) | StoreOp::SaveAccess(id) => *id,
                StoreOp::SaveVersioned { id, .. } => *id,
                _ => continue,
            };
            let r = match (&op, committed) {
                (StoreOp::SaveVersioned { expected, .. }, Some(d)) => store.save(d, *expected).await,
                (StoreOp::SaveVersioned { .. }, None) => continue,
                _ => self.perform_store_op(store, &op).await,
            };
            match r {
                Ok(()) => {}
                Err(StoreError::Conflict {
                    store, expected, found, ..
                }) => {
                    self.core().forget(&id);
                    return Err(self.conflict(id, store, expected, found));
                }
                Err(source) => {
                    return Err(ReplicationError::Store {
                        context: self.context().to_string(),
                        id,
                        source: Box::new(source),
                    });
                }
            }
        }
        Ok(())
    }

    /// Shared mode: a commit of session `id` (loaded at version `base`) found no copy
    /// here. Either a conflict of a concurrent request on this node dropped the copy (the
    /// store still has the session, newer: a conflict for this request too) or the session
    /// was destroyed (its record is gone too). The store decides which.
    pub(super) async fn missing_in_shared(&self, store: &StoreState, id: SessionId, base: u64) -> ReplicationError {
        match store.load(&id).await {
            Ok(Some(found)) => {
                store.conflicts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.conflict(id, store.name().to_owned(), base, Some(found.version))
            }
            Ok(None) => ReplicationError::Gone {
                context: self.context().to_string(),
                id,
            },
            Err(source) => ReplicationError::Store {
                context: self.context().to_string(),
                id,
                source: Box::new(source),
            },
        }
    }

    /// A shared-mode conflict of session `id`, logged: this request's changes were not saved.
    fn conflict(&self, id: SessionId, store: String, expected: u64, found: Option<u64>) -> ReplicationError {
        tracing::warn!(context = %self.context(), session = %id.log_id(), expected, ?found, "concurrent write detected: changes not saved");
        ReplicationError::Conflict {
            context: self.context().to_string(),
            id,
            store,
            expected,
            found,
        }
    }

    /// A clean shutdown's store part: the write-behind queue flushed, the background's
    /// save under way finished, then the sessions expired at shutdown deleted.
    pub(super) async fn store_shutdown(&self, store: &StoreState, expired: &[SessionId]) {
        let plan = store.policy().on_shutdown(expired);
        for op in &plan.flush {
            if let (Err(e), StoreOp::Save(id)) = (self.perform_store_op(store, op).await, op) {
                tracing::error!(context = %self.context(), session = %id.log_id(), "session not saved at shutdown: {e}");
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while store.policy().is_busy() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut deleted = 0;
        for op in &plan.delete {
            match self.perform_store_op(store, op).await {
                Ok(()) => deleted += 1,
                Err(e) => {
                    tracing::warn!(context = %self.context(), "an expired session's record not deleted at shutdown: {e}")
                }
            }
        }
        if !plan.delete.is_empty() {
            tracing::info!(store = %store.name(), deleted, "sessions expired at shutdown deleted from the store");
        }
    }
}
