//! [`Contexts`]: the applications of one node that the status and metrics routers show.

use tribes_sessions::SessionManager;

/// The contexts of one node (one [`SessionManager`] each, such as two applications on one
/// channel) that [`status_router`](crate::status_router) and
/// [`metrics_router`](crate::metrics_router) show.
///
/// Every context is listed: in the `contexts` field of the status document, on the
/// dashboard, and as the `context` label of the metrics. The first one is also the one the
/// status document's older top-level fields (`context`, `sessions`, `replication`, …)
/// describe. A single manager converts into it: `status_router(manager)`.
///
/// The managers run on one channel, the node's: the routers use the first manager's
/// ([`SessionManager::channel`]) for the cluster's members and statistics.
///
/// # Examples
/// ```no_run
/// # async fn demo(channel: tribes::Channel) -> Result<(), Box<dyn std::error::Error>> {
/// use tribes_axum::{Contexts, metrics_router, status_router};
/// use tribes_sessions::SessionManager;
///
/// let shop = SessionManager::builder("shop").start(channel.clone()).await?;
/// let cart = SessionManager::builder("cart").start(channel.clone()).await?;
/// let contexts = Contexts::new(shop).with(cart);
/// let app = axum::Router::new()
///     .nest("/cluster/", status_router(contexts.clone()))
///     .merge(metrics_router(contexts));
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Contexts {
    /// Never empty; at most one manager per context name.
    managers: Vec<SessionManager>,
}

impl Contexts {
    /// The contexts of `first` alone.
    pub fn new(first: SessionManager) -> Self {
        Contexts { managers: vec![first] }
    }

    /// Adds the context of `manager` (replacing a manager of the same context name).
    pub fn with(mut self, manager: SessionManager) -> Self {
        match self.managers.iter_mut().find(|m| m.context() == manager.context()) {
            Some(same) => *same = manager,
            None => self.managers.push(manager),
        }
        self
    }

    /// The first context's manager.
    pub(crate) fn first(&self) -> &SessionManager {
        &self.managers[0]
    }

    /// The node's channel: the first manager's.
    pub(crate) fn channel(&self) -> &tribes::Channel {
        self.first().channel()
    }

    /// Every context's manager, the first first.
    pub(crate) fn all(&self) -> &[SessionManager] {
        &self.managers
    }
}

impl From<SessionManager> for Contexts {
    fn from(manager: SessionManager) -> Self {
        Contexts::new(manager)
    }
}
