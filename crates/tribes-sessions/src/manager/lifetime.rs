//! The max lifetime (OWASP's absolute timeout), enforced when a request asks for a
//! session: the core decides ([`Core::end_if_too_old`](crate::core::Core::end_if_too_old)),
//! this sends the end to the members (waiting for their acks in a sync-ack mode, as a
//! commit does) and logs it. The periodic sweep ends the sessions nobody asks for.

use std::time::Duration;

use super::SessionManager;
use crate::id::SessionId;

/// The default max lifetime: 8 hours from creation, however active (a working day; OWASP
/// recommends an absolute timeout for every session).
pub const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(8 * 60 * 60);

impl SessionManager {
    /// Ends session `id` if this node holds it past its max lifetime; `true` when it did.
    pub(super) async fn end_if_too_old(&self, now_ms: u64, id: &SessionId) -> bool {
        let mut out = Vec::new();
        let Some((to, msg)) = self.inner.core().end_if_too_old(now_ms, *id, &mut out) else {
            return false;
        };
        // Listeners, the store's deletion, the cluster's `Expired` event.
        self.inner.perform(out);
        let store = self.inner.store.as_ref();
        let op = store.and_then(|s| s.policy().on_lifetime_ended(*id));
        if let (Some(store), Some(op)) = (store, op)
            && let Err(e) = self.inner.perform_store_op(store, &op).await
        {
            // No node serves it (each judges by the same creation time); the store's
            // own expiry removes the record when it is idle.
            tracing::warn!(context = %self.context(), session = %id.log_id(), "a session ended at its max lifetime is still in the store: {e}");
        }
        let limit = self.inner.b.max_lifetime.unwrap_or_default();
        if !to.is_empty() && !self.inner.shared() {
            let (mode, timeout) = (self.inner.b.send_mode, self.inner.b.ack_timeout);
            let (_, acks) = self.inner.send(&to, &msg, mode, timeout).await;
            let unconfirmed: Vec<&str> = acks
                .iter()
                .filter(|a| !a.outcome.is_ok())
                .map(|a| a.member.as_str())
                .collect();
            if !unconfirmed.is_empty() {
                // Ended here; the others enforce the same deadline themselves, from the
                // same creation time, and their sweeps end their copies.
                tracing::warn!(context = %self.context(), session = %id.log_id(), members = ?unconfirmed, "the end of a session at its max lifetime was not confirmed by every member");
            }
        }
        tracing::info!(
            context = %self.context(),
            session = %id.log_id(),
            limit_s = limit.as_secs(),
            "session ended: older than its max lifetime (the absolute timeout), on every node"
        );
        true
    }
}
