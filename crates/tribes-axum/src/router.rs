//! [`status_router`] and [`StatusRouter`]: the routes of the status pages, the
//! dashboard and the session browser, assembled over [`Contexts`].

use std::sync::Arc;

use axum::Router;
use axum::routing::get;

use crate::Contexts;
use crate::reporter::dashboard_for;
use crate::status::{self, BrowserSettings, StatusState};

/// A router serving this node's view of the cluster for its [`Contexts`] (one manager, or
/// several applications on one channel: every one is listed):
///
/// - `GET /`: the cluster dashboard. Every member on one page, whichever node serves
///   it: route, address, ready or not and since when, sessions per context, how far
///   behind it is (queue depth, last ack), charts of the last five minutes (requests,
///   commits, messages, bytes, acks, failures, timeouts per second) and the events in
///   words, newest first, with the fix where there is one. Plain HTML with inline SVG,
///   nothing loaded from elsewhere; a small inline script refreshes it every 2 s.
/// - `GET /status`: JSON for scripts, with a `schema_version`; its fields are
///   documented in `docs/status.md`.
/// - `GET /status.html`: this node and its contexts as a small HTML page.
///
/// The dashboard's data about other members travels over the channel: every node
/// running a status router samples itself every second and broadcasts a small report
/// on the topic `tribes.status` (so the members need not reach each other's HTTP
/// port). A member that sends none is shown as such. Give the router every context of
/// the node ([`Contexts`]): the dashboard lists them. Routers that share a manager share
/// its dashboard (the manager keeps it, no process-wide registry); routers of disjoint
/// managers on one channel would each start a dashboard, so build one router per node.
/// The sampling task starts with the first router (inside a tokio runtime) and ends when
/// every router of the node is dropped.
///
/// The channel is the managers' own
/// ([`SessionManager::channel`](tribes_sessions::SessionManager::channel)).
///
/// Mount it anywhere, e.g. `.nest("/cluster/", status_router(manager))`: the
/// dashboard is then at `/cluster/`, the JSON at `/cluster/status` and the node page at
/// `/cluster/status.html` (add a redirect from `/cluster` if you like, as the demo
/// does). Nested at `"/cluster"` without the slash, axum 0.8 serves the dashboard at
/// `/cluster` instead, and `/cluster/` is not found. Put it outside the
/// [`ReplicatedSessions`](crate::ReplicatedSessions) layer, or call it without the
/// session cookie, so that it answers while the node is not ready.
pub fn status_router(contexts: impl Into<Contexts>) -> Router {
    StatusRouter::new(contexts).into_router()
}

/// The [`status_router`] with options: the session browser (off unless an admin token
/// is set) and which attribute values it may show.
///
/// The session browser, at `sessions` beside the dashboard (`/cluster/sessions` when
/// nested at `/cluster/`), finds a session by its log hash (the `#1a2b3c4d` that logs
/// and the demo's pages show, never the id): which members hold it (each member is
/// asked over the channel, topic `tribes.admin`; one that does not answer within
/// [`with_lookup_timeout`](StatusRouter::with_lookup_timeout) is shown as not
/// answering), its version, created and last-access times, and its attributes' names,
/// sizes and kinds; values only for the attributes named in
/// [`with_shown_values`](StatusRouter::with_shown_values). A button invalidates it on
/// every node, through the manager's usual invalidation (sync-ack mode waits for the
/// acks as for any request). `sessions.json` answers the same lookup as JSON. Every
/// action is logged with target `tribes::admin`, the session by its log hash.
///
/// Without a token every browser URL answers `404` saying how to turn it on; with one,
/// a request without it, or with another, gets `401` and `WWW-Authenticate: Basic`
/// (in a browser, log in with any user name and the token as the password; scripts send
/// `Authorization: Bearer TOKEN`). Invalidations coming from another site's page are
/// refused (`403`). See `docs/session-browser.md`.
///
/// # Examples
/// ```no_run
/// # async fn demo(manager: tribes_sessions::SessionManager) -> Result<(), Box<dyn std::error::Error>> {
/// use tribes_axum::{AdminToken, StatusRouter};
/// let token = AdminToken::from_file("/run/secrets/tribes-admin".as_ref())?;
/// let status = StatusRouter::new(manager)
///     .with_admin_token(token)
///     .with_shown_values(["cart_items"]);
/// let app: axum::Router = axum::Router::new().nest("/cluster/", status.into_router());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct StatusRouter {
    contexts: Contexts,
    token: Option<crate::AdminToken>,
    shown: Vec<String>,
    timeout: std::time::Duration,
}

impl StatusRouter {
    /// The status router of `contexts` (on their managers' channel), session browser off.
    pub fn new(contexts: impl Into<Contexts>) -> Self {
        StatusRouter {
            contexts: contexts.into(),
            token: None,
            shown: Vec::new(),
            timeout: crate::browser::DEFAULT_TIMEOUT,
        }
    }

    /// Turns the session browser on, for requests that carry `token`.
    pub fn with_admin_token(mut self, token: crate::AdminToken) -> Self {
        self.token = Some(token);
        self
    }

    /// The attributes whose values the session browser may show (by exact name; none by
    /// default: only names, sizes and kinds).
    pub fn with_shown_values<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.shown = names.into_iter().map(Into::into).collect();
        self
    }

    /// How long the session browser waits for the other members' answers (default 2 s).
    pub fn with_lookup_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The router.
    pub fn into_router(self) -> Router {
        let contexts = self.contexts;
        let channel = contexts.channel().clone();
        let dashboard = dashboard_for(contexts.all(), &channel);
        let state = StatusState {
            contexts,
            channel,
            dashboard,
            browser: Arc::new(BrowserSettings {
                token: self.token,
                shown: self.shown,
                timeout: self.timeout,
            }),
        };
        // The session browser: every route behind the admin credential.
        let browser = Router::new()
            .route("/sessions", get(crate::browser::page))
            .route("/sessions.json", get(crate::browser::json))
            .route("/sessions/invalidate", axum::routing::post(crate::browser::invalidate))
            .route_layer(axum::middleware::from_fn_with_state(
                state.clone(),
                crate::browser::guard,
            ));
        Router::new()
            .route("/status", get(status::status_json))
            .route("/", get(status::dashboard_html))
            .route("/status.html", get(status::status_html))
            .merge(browser)
            .with_state(state)
    }
}

impl From<StatusRouter> for Router {
    fn from(s: StatusRouter) -> Router {
        s.into_router()
    }
}
