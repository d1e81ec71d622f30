//! The cluster's session events in the demo's log: one `tracing` line per
//! [`ClusterEvent`], at `info` under the target `tribes_demo::events`, for example
//!
//! ```text
//! INFO tribes_demo::events: cluster event context=demo kind=expired session=#1a2b3c4d principal="alice" delivered_by=b
//! ```
//!
//! Each event is logged by one node of the cluster (the one that delivered it; for
//! `expired` the coordinator, even when the node that served the user last has died), so
//! the lines of all nodes together hold each event once. Sessions appear by their log
//! hash (`#` and 8 hex digits), never by their id; the principal is quoted (`""` when the
//! session had none); `IdChanged` gives the old and the new hash.

use tribes_sessions::{ClusterEvent, ClusterListener};

/// A listener that logs every cluster event of `context`.
pub(crate) fn log_cluster_events(context: &str) -> impl ClusterListener {
    let context = context.to_owned();
    move |event: &ClusterEvent| log(&context, event)
}

fn log(context: &str, event: &ClusterEvent) {
    let none = String::new();
    match event {
        ClusterEvent::Created { id } => {
            tracing::info!(context = %context, kind = %"created", session = %id.log_id(), "cluster event");
        }
        ClusterEvent::PrincipalSet { id, principal } => {
            tracing::info!(context = %context, kind = %"principal_set", session = %id.log_id(), principal = ?principal, "cluster event");
        }
        ClusterEvent::IdChanged { old, new } => {
            tracing::info!(context = %context, kind = %"id_changed", session = %old.log_id(), new_session = %new.log_id(), "cluster event");
        }
        ClusterEvent::Invalidated { id, principal } => {
            let principal = principal.as_ref().unwrap_or(&none);
            tracing::info!(context = %context, kind = %"invalidated", session = %id.log_id(), principal = ?principal, "cluster event");
        }
        ClusterEvent::Evicted { id, principal } => {
            tracing::info!(context = %context, kind = %"evicted", session = %id.log_id(), principal = ?principal, "cluster event");
        }
        ClusterEvent::Expired {
            id,
            principal,
            delivered_by,
        } => {
            let principal = principal.as_ref().unwrap_or(&none);
            tracing::info!(context = %context, kind = %"expired", session = %id.log_id(), principal = ?principal, delivered_by = %delivered_by, "cluster event");
        }
        // A kind added to the library later: its `Debug` (a session id's shows its log hash).
        other => tracing::info!(context = %context, kind = %"other", event = ?other, "cluster event"),
    }
}
