//! Replicated sessions for Axum and any Tower app: Tomcat's `ReplicationValve` and
//! `JvmRouteBinderValve` as one layer, on a [`tribes`] cluster.
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use tribes_axum::{ReplicatedSessions, Session, SessionError, status_router};
//!
//! async fn count(session: Session) -> Result<String, SessionError> {
//!     let n: u64 = session.get("n").await?.unwrap_or(0);
//!     session.insert("n", n + 1).await?;
//!     Ok(format!("{}", n + 1))
//! }
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let channel = tribes::Channel::builder("node-a").bind("127.0.0.1:4000".parse()?).start().await?;
//! let manager = tribes_sessions::SessionManager::builder("/app").start(channel.clone()).await?;
//! let app = Router::new()
//!     .route("/", get(count))
//!     .layer(ReplicatedSessions::new(manager.clone()))
//!     .nest("/cluster", status_router(manager, channel));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```
//!
//! The full guide (cookies, failover, concurrency) is below the item list.

mod backend;
mod cookie;
mod extract;
mod future;
mod handle;
mod layer;
mod metrics;
mod service;
mod status;

pub use extract::{MissingSessionLayer, Session, SessionError};
pub use future::ResponseFuture;
pub use layer::{
    DEFAULT_COOKIE_NAME, DEFAULT_FILTER, NotReady, OnSyncFailure, ReplicateWhen, ReplicatedSessions, SameSite, Secure,
};
pub use metrics::metrics_router;
pub use service::{PrimaryIndicator, ReplicatedSessionsService};
pub use status::status_router;
