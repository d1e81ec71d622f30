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
//! let key = tribes::Keyring::from_file("cluster.key")?; // the same file on every node
//! let channel = tribes::Channel::builder("node-a").with_cluster_key(key).with_bind("127.0.0.1:4000".parse()?).start().await?;
//! let manager = tribes_sessions::SessionManager::builder("/app").start(channel).await?;
//! let app = Router::new()
//!     .route("/", get(count))
//!     .layer(ReplicatedSessions::new(manager.clone()))
//!     .nest("/cluster", status_router(manager));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```
//!
//! The same manager feeds [`status_router`] (JSON and a small HTML page,
//! like Tomcat's Manager app) and [`metrics_router`] (Prometheus text format).
//!
//! # What the layer does for each request
//!
//! Like Tomcat's `ReplicationValve` and `JvmRouteBinderValve`:
//!
//! - **Cookie.** The session cookie (default `TRIBESSESSIONID`, `Path=/`, `HttpOnly`,
//!   `SameSite=Lax`, `Secure` on HTTPS requests as told by `X-Forwarded-Proto`,
//!   `Forwarded: proto=` or the URI scheme) holds `id.route`: the session's base id
//!   (22 URL-safe characters) and the route of the node it is bound to, for sticky load
//!   balancers. A malformed cookie, or one naming a session that is unknown or expired,
//!   is simply no session: never an error page.
//! - **Lazy.** The [`Session`] extractor looks nothing up until a method is called. A
//!   handler that never uses it pays close to nothing; a request that only reads sends
//!   nothing (its access time is recorded here and travels in the manager's next
//!   access batch). A session is created on the first [`Session::insert`], and only then
//!   is a cookie set.
//! - **Replication at the end of the request.** When the response is ready, a session
//!   the request changed (created, wrote, removed, cycled the id, invalidated) is
//!   committed to the manager, which replicates the delta: in the manager's sync-ack mode
//!   the response waits for the members' acks, bounded by the manager's ack timeout; in
//!   async mode it does not wait. A failed sync commit is logged and counted, or answered
//!   with `503` ([`OnSyncFailure`]). [`ReplicateWhen::Always`] commits after every
//!   request that loaded the session (Tomcat's behaviour).
//! - **Filter.** Paths matching the filter ([`DEFAULT_FILTER`]: common static assets and
//!   `/static/`) never create, rebind or replicate a session; writes there return
//!   [`SessionError::FilteredPath`].
//! - **Failover rebinding.** A request whose cookie names another route (its node died,
//!   or the balancer moved the user) for a session this node holds rebinds the session
//!   to this node (a replicated route change, not a new id) and gets the cookie
//!   `id.thisroute`. Requests still in flight with the old cookie keep working, because
//!   sessions are keyed by their base id. See [`ReplicatedSessions::with_rebind_grace`].
//! - **Invalidate and cycle.** [`Session::invalidate`] removes the session on every node
//!   and the cookie (`Max-Age=0`); [`Session::cycle_id`] gives it a new id (at login,
//!   against session fixation), after which the old id works nowhere.
//! - **Principals.** [`Session::set_principal`] logs the session in as a user (and
//!   cycles an existing session's id, as a login should); the principal replicates with
//!   the session and every node indexes it, so [`Session::sessions_of`] lists a user's
//!   sessions across the cluster and [`Session::invalidate_principal`] logs the user out
//!   on every node. A limit per user
//!   ([`with_max_sessions_per_principal`](tribes_sessions::SessionManagerBuilder::with_max_sessions_per_principal))
//!   evicts the oldest login or refuses the new one with
//!   [`SessionError::LoggedInElsewhere`] (a `403`).
//! - **Timeouts.** A session idle for the manager's max inactive interval expires (the
//!   idle timeout). However active, a session ends at the manager's max lifetime (OWASP's
//!   absolute timeout), by default 8 hours after its creation
//!   ([`with_max_lifetime`](tribes_sessions::SessionManagerBuilder::with_max_lifetime),
//!   the one setting for it): the request that finds it past that deadline ends it on
//!   every node and its handler sees no session, as for an expired one.
//! - **No ids in logs.** Log lines and error messages name a session by
//!   [`SessionId::log_id`](tribes_sessions::SessionId::log_id), a short hash, never by
//!   its id.
//! - **Not ready.** While the node receives the cluster's sessions (state transfer),
//!   requests carrying a session cookie, and requests trying to create one, get `503`
//!   with `Retry-After` (default 1 s) or wait, bounded ([`NotReady`]). Requests that
//!   neither carry nor create a session are served.
//! - **Evolving types.** A value written by an older build that no longer decodes into
//!   the requested type reads as absent: [`Session::get`] answers `Ok(None)`, so
//!   `session.get::<T>(..).await?` never fails the request. It is counted
//!   (`tribes_http_stale_values_total`) and logged once per request with the attribute's
//!   name and the session's log id; the rest of the session works, and the next insert
//!   overwrites it. [`Session::try_get`] returns [`SessionError::StaleValue`] instead, for
//!   apps that want to tell the two apart.
//! - **Primary indicator.** With [`ReplicatedSessions::with_primary_indicator`], every
//!   response of a request that loaded a session carries the extension
//!   [`PrimaryIndicator`], and optionally a header
//!   ([`ReplicatedSessions::with_primary_indicator_header`]).
//!
//! # Concurrency: what each mode guarantees
//!
//! Every session has a version; a committed change carries the version it was made
//! against, so a node detects and counts conflicting updates (`conflicts` in the
//! manager's statistics and `tribes_manager_conflicts` in the metrics).
//!
//! | | default (concurrent) | [`with_serialize_requests(true)`](ReplicatedSessions::with_serialize_requests) |
//! |---|---|---|
//! | two requests of one session on **one node** | run concurrently; each sees the session as it was when it first touched it; for an attribute both write, the last commit wins (a read-modify-write such as a counter can lose an update); conflicts counted | run one after another, in arrival order: the second sees the first's committed changes; no update is lost |
//! | two requests of one session on **two nodes** (no sticky balancer) | last writer wins per attribute, on every node alike (deltas converge in any order); conflicts counted | the same: the lock is per node, not cluster-wide |
//! | a read after a write, **same node** | sees the write | sees the write |
//! | a read after a write, **another node** (failover) | sees it once replicated: at once in sync-ack mode (the write's response waited for the acks), after the message arrives in async mode | the same |
//! | cost | none | one uncontended async lock per request carrying a session cookie; concurrent requests of one session wait |
//!
//! With a sticky load balancer (route in the cookie) all requests of a session go to one
//! node, so `with_serialize_requests(true)` gives one-at-a-time semantics for the session
//! in practice; only failover moments fall back to last writer wins.
//!
//! # Mounting
//!
//! Put [`status_router`] and [`metrics_router`] outside the layer (after `.layer(...)`,
//! as above), so they answer while the node is not ready and never touch sessions.

mod admin;
mod backend;
mod browser;
mod browser_html;
mod browser_net;
mod clock;
#[cfg(feature = "config")]
mod config;
mod contexts;
mod cookie;
mod counters;
mod dashboard;
mod dashboard_html;
mod error;
mod events;
mod extract;
mod future;
/// Entry points for the `cargo fuzz` targets in `fuzz/` (`--cfg fuzzing` only).
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing;
mod handle;
mod history;
mod html;
mod layer;
mod metrics;
mod reporter;
mod router;
mod service;
mod settings;
mod status;

pub use admin::{AdminToken, AdminTokenError, MIN_ADMIN_TOKEN_LEN};
#[cfg(feature = "config")]
pub use config::{
    Config, ConfigError, LayerConfig, ManagerConfig, ManagerKindConfig, MaxSessionsPolicyConfig, NodeConfig,
    SendModeConfig, StatusConfig,
};
pub use contexts::Contexts;
pub use error::{ManagerError, MissingSessionLayer, SessionError};
pub use extract::Session;
pub use future::ResponseFuture;
pub use layer::ReplicatedSessions;
pub use metrics::metrics_router;
pub use router::{StatusRouter, status_router};
pub use service::{PrimaryIndicator, ReplicatedSessionsService};
pub use settings::{DEFAULT_COOKIE_NAME, DEFAULT_FILTER, NotReady, OnSyncFailure, ReplicateWhen, SameSite, Secure};
/// The log hash of a session ([`Session::log_id`]), re-exported from `tribes-sessions`.
pub use tribes_sessions::LogId;
/// What [`Session::invalidate_principal`] and [`Session::sessions_of`] return,
/// re-exported from `tribes-sessions`.
pub use tribes_sessions::{LogoutReport, MaxSessionsPolicy, PrincipalSession};

/// The README examples, compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
