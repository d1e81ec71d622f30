//! [`LayerCounters`]: what the layer counts, read by the status and metrics routers.
//! A leaf: it imports nothing from this crate.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tribes_sessions::SessionManager;

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub(crate) struct Count(AtomicU64);

impl Count {
    pub(crate) fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// What the layers of one manager counted (shared by every layer of that manager, so
/// [`metrics_router`](crate::metrics_router) and [`status_router`](crate::status_router)
/// can show it).
#[derive(Debug, Default)]
pub(crate) struct LayerCounters {
    pub(crate) requests: Count,
    pub(crate) created: Count,
    pub(crate) commits: Count,
    pub(crate) invalidated: Count,
    pub(crate) rebinds: Count,
    pub(crate) sync_failures: Count,
    pub(crate) stale_values: Count,
    pub(crate) malformed_cookies: Count,
    pub(crate) not_ready: Count,
    pub(crate) too_many_sessions: Count,
}

/// Every layer counter: name, help, value.
pub(crate) type LayerSnapshot = Vec<(&'static str, &'static str, u64)>;

impl LayerCounters {
    pub(crate) fn snapshot(&self) -> LayerSnapshot {
        vec![
            (
                "http_requests",
                "Requests that passed through the session layer",
                self.requests.get(),
            ),
            (
                "http_sessions_created",
                "Sessions created by requests on this node",
                self.created.get(),
            ),
            (
                "http_commits",
                "Requests that committed (replicated) a changed session",
                self.commits.get(),
            ),
            (
                "http_sessions_invalidated",
                "Sessions invalidated by requests on this node",
                self.invalidated.get(),
            ),
            (
                "http_rebinds",
                "Sessions rebound to this node after a failover",
                self.rebinds.get(),
            ),
            (
                "http_sync_failures",
                "Commits that were not confirmed by the cluster",
                self.sync_failures.get(),
            ),
            (
                "http_stale_values",
                "Attributes that no longer decode into the requested type",
                self.stale_values.get(),
            ),
            (
                "http_malformed_cookies",
                "Malformed session cookies ignored",
                self.malformed_cookies.get(),
            ),
            (
                "http_not_ready",
                "Requests refused while the node was not ready",
                self.not_ready.get(),
            ),
            (
                "http_too_many_sessions",
                "Session creations refused: max active reached",
                self.too_many_sessions.get(),
            ),
        ]
    }
}

/// The layer counters of `manager`: owned by the manager (its
/// [`extension`](SessionManager::extension)), so every layer of that manager counts into
/// them and the status and metrics routers of that manager read them, with no
/// process-wide registry.
pub(crate) fn counters_for(manager: &SessionManager) -> Arc<LayerCounters> {
    manager.extension::<LayerCounters>()
}
