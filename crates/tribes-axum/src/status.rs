//! `GET /status` (JSON), `GET /` (the cluster dashboard) and `GET /status.html` (this
//! node and context): Tomcat's Manager app, and a view of the whole cluster.

use std::fmt::{self, Write as _};
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{OriginalUri, State};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use serde_json::{Map, Value, json};
use tribes::Channel;
use tribes_sessions::SessionManager;

use crate::Contexts;
use crate::backend;
use crate::dashboard::{ClusterView, MemberState};
use crate::metrics::counters_for;
use crate::reporter::{Dashboard, dashboard_for, now_ms};

/// The version of the `/status` JSON document (see docs/status.md). It changes only
/// when a field is removed or changes its meaning; new fields may appear at any time.
pub(crate) const SCHEMA_VERSION: u32 = 3;

#[derive(Clone)]
pub(crate) struct StatusState {
    pub(crate) contexts: Contexts,
    pub(crate) channel: Channel,
    pub(crate) dashboard: Arc<Dashboard>,
    pub(crate) browser: Arc<crate::browser::Settings>,
}

impl fmt::Debug for StatusState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StatusState").finish_non_exhaustive()
    }
}

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
/// port). A member that sends none is shown as such. Status routers of several
/// contexts on one channel share one dashboard, which lists every context. The
/// sampling task starts with the first router (inside a tokio runtime) and ends when
/// every router of the node is dropped.
///
/// Mount it anywhere, e.g. `.nest("/cluster/", status_router(manager, channel))`: the
/// dashboard is then at `/cluster/`, the JSON at `/cluster/status` and the node page at
/// `/cluster/status.html` (add a redirect from `/cluster` if you like, as the demo
/// does). Nested at `"/cluster"` without the slash, axum 0.8 serves the dashboard at
/// `/cluster` instead, and `/cluster/` is not found. Put it outside the
/// [`ReplicatedSessions`](crate::ReplicatedSessions) layer, or call it without the
/// session cookie, so that it answers while the node is not ready.
pub fn status_router(contexts: impl Into<Contexts>, channel: Channel) -> Router {
    StatusRouter::new(contexts, channel).into_router()
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
/// # async fn demo(manager: tribes_sessions::SessionManager, channel: tribes::Channel) -> Result<(), Box<dyn std::error::Error>> {
/// use tribes_axum::{AdminToken, StatusRouter};
/// let token = AdminToken::from_file("/run/secrets/tribes-admin".as_ref())?;
/// let status = StatusRouter::new(manager, channel)
///     .with_admin_token(token)
///     .with_shown_values(["cart_items"]);
/// let app: axum::Router = axum::Router::new().nest("/cluster/", status.into_router());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct StatusRouter {
    contexts: Contexts,
    channel: Channel,
    token: Option<crate::AdminToken>,
    shown: Vec<String>,
    timeout: std::time::Duration,
}

impl StatusRouter {
    /// The status router of `contexts` on `channel`, session browser off.
    pub fn new(contexts: impl Into<Contexts>, channel: Channel) -> Self {
        StatusRouter {
            contexts: contexts.into(),
            channel,
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
        let channel = self.channel;
        let dashboard = dashboard_for(contexts.first(), &channel);
        for manager in &contexts.all()[1..] {
            dashboard_for(manager, &channel);
        }
        let state = StatusState {
            contexts,
            channel,
            dashboard,
            browser: crate::browser::settings(self.token, self.shown, self.timeout),
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
            .route("/status", get(status_json))
            .route("/", get(dashboard_html))
            .route("/status.html", get(status_html))
            .merge(browser)
            .with_state(state)
    }
}

impl From<StatusRouter> for Router {
    fn from(s: StatusRouter) -> Router {
        s.into_router()
    }
}

/// The status document.
#[derive(Debug, Serialize)]
pub(crate) struct Status {
    schema_version: u32,
    route: String,
    ready: bool,
    context: String,
    manager: String,
    sessions: u64,
    members: Vec<MemberView>,
    replication: Value,
    layer: Map<String, Value>,
    channel: Value,
    cluster: Vec<ClusterMember>,
    contexts: Vec<ContextView>,
}

/// One context of this node (`contexts` in the JSON).
#[derive(Debug, Serialize)]
struct ContextView {
    context: String,
    manager: String,
    ready: bool,
    sessions: u64,
    /// The routes of the other members serving the context.
    servers: Vec<String>,
    store: Option<String>,
}

fn kind_name(kind: tribes_sessions::ManagerKind) -> String {
    match kind {
        tribes_sessions::ManagerKind::Delta => "delta".to_owned(),
        tribes_sessions::ManagerKind::Backup { backup_count } => format!("backup ({backup_count} backup copies)"),
    }
}

fn context_view(manager: &SessionManager) -> ContextView {
    let stats = manager.stats();
    ContextView {
        context: stats.context.clone(),
        manager: kind_name(stats.kind),
        ready: backend::is_ready(manager),
        sessions: stats.sessions as u64,
        servers: stats.servers.clone(),
        store: stats.store.as_ref().map(|s| s.name.clone()),
    }
}

/// One member in the dashboard's view (`cluster` in the JSON).
#[derive(Debug, Serialize)]
struct ClusterMember {
    route: String,
    id: String,
    addr: String,
    local: bool,
    state: &'static str,
    since_ms: u64,
    reason: Option<String>,
    sessions: Map<String, Value>,
    queue_depth: Option<u64>,
    last_ack_ms: Option<u64>,
}

fn cluster(view: &ClusterView) -> Vec<ClusterMember> {
    view.ordered()
        .into_iter()
        .map(|e| {
            let state = e.state();
            let is_local = e.id == view.local_id;
            let (queue_depth, last_ack_ms) = if is_local { (None, None) } else { view.lag(&e.id) };
            ClusterMember {
                route: e.route.clone(),
                id: e.id.clone(),
                addr: e.addr.clone(),
                local: is_local,
                state: state.name(),
                since_ms: state.since_ms(),
                reason: match state {
                    MemberState::Gone { reason, .. } => Some(reason.words().to_owned()),
                    MemberState::Suspected { silent_ms, cause, .. } => Some(cause.words(silent_ms)),
                    _ => None,
                },
                sessions: e
                    .report
                    .as_ref()
                    .map(|(_, r)| {
                        r.contexts
                            .iter()
                            .map(|c| (c.context.clone(), json!(c.sessions)))
                            .collect()
                    })
                    .unwrap_or_default(),
                queue_depth,
                last_ack_ms,
            }
        })
        .collect()
}

#[derive(Debug, Serialize)]
struct MemberView {
    route: String,
    addr: String,
    id: String,
    domain: String,
}

pub(crate) fn status(contexts: &Contexts, channel: &Channel, dashboard: &Dashboard) -> Status {
    let manager = contexts.first();
    let local = channel.local();
    let stats = manager.stats();
    let sessions = stats.sessions as u64;
    let kind = kind_name(stats.kind);
    let replication = serde_json::to_value(&stats).unwrap_or(Value::Null);
    let members = channel
        .members()
        .into_iter()
        .filter(|m| m.id() != local.id())
        .map(|m| MemberView {
            route: m.name().to_owned(),
            addr: m.addr().to_string(),
            id: m.id().to_string(),
            domain: m.domain().to_owned(),
        })
        .collect();
    let layer = counters_for(manager)
        .snapshot()
        .into_iter()
        .map(|(name, _, v)| (name.to_owned(), json!(v)))
        .collect();
    let cs = channel.stats();
    let channel_json = json!({
        "uptime_ms": u64::try_from(cs.uptime.as_millis()).unwrap_or(u64::MAX),
        "discovery": cs.discovery,
        "interceptors": cs.interceptors,
        "members": cs.members,
        "malformed_frames": cs.malformed_frames,
        "undeliverable": cs.undeliverable,
        "foreign_domain": cs.foreign_domain,
        "security": cs.security,
        "refusals": cs.refusals,
    });
    Status {
        schema_version: SCHEMA_VERSION,
        route: local.name().to_owned(),
        ready: backend::is_ready(manager),
        context: manager.context().to_owned(),
        manager: kind,
        sessions,
        members,
        replication,
        layer,
        channel: channel_json,
        cluster: cluster(&dashboard.view()),
        contexts: contexts.all().iter().map(context_view).collect(),
    }
}

async fn status_json(State(s): State<StatusState>) -> Response {
    Json(status(&s.contexts, &s.channel, &s.dashboard)).into_response()
}

async fn status_html(State(s): State<StatusState>) -> Html<String> {
    Html(render_html(&status(&s.contexts, &s.channel, &s.dashboard)))
}

async fn dashboard_html(State(s): State<StatusState>, OriginalUri(uri): OriginalUri) -> Response {
    // Relative links resolve against the router's mount point, with or without the slash.
    let mut base = uri.path().to_owned();
    if !base.ends_with('/') {
        base.push('/');
    }
    let body = crate::dashboard_html::render(&s.dashboard.view(), now_ms(), &base, s.browser.token.is_some());
    ([(axum::http::header::CACHE_CONTROL, "no-store")], Html(body)).into_response()
}

/// Escapes text for HTML element content and attribute values.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A JSON value as HTML: text escaped, arrays of objects as tables, objects as
/// two-column tables, other arrays as comma-separated lists (never raw JSON).
fn value_html(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => escape(s),
        Value::Array(items) if items.is_empty() => "none".to_owned(),
        Value::Array(items) if items.iter().all(Value::is_object) => {
            let mut keys: Vec<&String> = Vec::new();
            for item in items {
                if let Value::Object(m) = item {
                    for k in m.keys() {
                        if !keys.contains(&k) {
                            keys.push(k);
                        }
                    }
                }
            }
            let mut h = String::from("<table><tr>");
            for k in &keys {
                let _ = write!(h, "<th scope=\"col\">{}</th>", escape(k));
            }
            h.push_str("</tr>");
            for item in items {
                h.push_str("<tr>");
                for k in &keys {
                    let _ = write!(
                        h,
                        "<td>{}</td>",
                        value_html(item.get(k.as_str()).unwrap_or(&Value::Null))
                    );
                }
                h.push_str("</tr>");
            }
            h.push_str("</table>");
            h
        }
        Value::Array(items) => items.iter().map(value_html).collect::<Vec<_>>().join(", "),
        Value::Object(m) if m.is_empty() => "none".to_owned(),
        Value::Object(m) => {
            let mut h = String::from("<table>");
            for (k, v) in m {
                let _ = write!(
                    h,
                    "<tr><th scope=\"row\">{}</th><td>{}</td></tr>",
                    escape(k),
                    value_html(v)
                );
            }
            h.push_str("</table>");
            h
        }
        other => escape(&other.to_string()),
    }
}

fn render_html(st: &Status) -> String {
    let mut h = String::new();
    let e = escape;
    let _ = write!(
        h,
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>tribes: {route} {context}</title>\
         <style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin-bottom:1.5em}}\
         td,th{{border:1px solid #999;padding:.2em .6em;text-align:left}}th{{background:#ddd}}\
         .ok{{color:#070}}.bad{{color:#a00}}</style></head><body>\
         <h1>Node {route}</h1><table>\
         <tr><th>Context</th><td>{context}</td></tr>\
         <tr><th>Manager</th><td>{manager}</td></tr>\
         <tr><th>Ready</th><td class=\"{ready_class}\">{ready}</td></tr>\
         <tr><th>Sessions held</th><td>{sessions}</td></tr></table>",
        route = e(&st.route),
        context = e(&st.context),
        manager = e(&st.manager),
        ready_class = if st.ready { "ok" } else { "bad" },
        ready = if st.ready { "yes" } else { "no (state transfer running)" },
        sessions = st.sessions,
    );
    let _ = write!(
        h,
        "<h2>Contexts ({})</h2><table><tr><th>Context</th><th>Manager</th><th>Ready</th><th>Sessions</th><th>Served with</th><th>Store</th></tr>",
        st.contexts.len()
    );
    for c in &st.contexts {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            e(&c.context),
            e(&c.manager),
            if c.ready { "yes" } else { "no" },
            c.sessions,
            if c.servers.is_empty() {
                "no other member".to_owned()
            } else {
                e(&c.servers.join(", "))
            },
            c.store.as_deref().map_or_else(|| "-".to_owned(), e),
        );
    }
    h.push_str("</table>");
    let _ = write!(
        h,
        "<h2>Members ({})</h2><table><tr><th>Route</th><th>Address</th><th>Id</th><th>Domain</th></tr>",
        st.members.len()
    );
    for m in &st.members {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            e(&m.route),
            e(&m.addr),
            e(&m.id),
            e(&m.domain)
        );
    }
    h.push_str("</table><h2>Replication</h2><table>");
    if let Value::Object(m) = &st.replication {
        for (k, v) in m {
            let _ = write!(h, "<tr><th>{}</th><td>{}</td></tr>", e(k), value_html(v));
        }
    }
    h.push_str("</table><h2>Layer</h2><table>");
    for (k, v) in &st.layer {
        let _ = write!(h, "<tr><th>{}</th><td>{}</td></tr>", e(k), value_html(v));
    }
    h.push_str("</table><h2>Channel</h2><table>");
    if let Value::Object(m) = &st.channel {
        for (k, v) in m {
            let _ = write!(h, "<tr><th>{}</th><td>{}</td></tr>", e(k), value_html(v));
        }
    }
    h.push_str("</table></body></html>");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_values_render_as_tables_and_lists_never_raw() {
        let v = json!({
            "per_member": [{"member": "b", "acks": 3}, {"member": "<c>", "acks": 0, "extra": null}],
            "servers": ["b", "c"],
            "store": null,
            "empty": [],
        });
        let h = value_html(&v);
        assert!(!h.contains('{') && !h.contains('['), "{h}");
        assert!(
            h.contains("<th scope=\"col\">acks</th><th scope=\"col\">member</th><th scope=\"col\">extra</th>"),
            "{h}"
        );
        assert!(
            h.contains("<td>3</td><td>b</td><td>-</td>"),
            "a key missing in a row is a dash: {h}"
        );
        assert!(
            h.contains("<td>0</td><td>&lt;c&gt;</td><td>-</td>"),
            "null is a dash, text escaped: {h}"
        );
        assert!(h.contains("<th scope=\"row\">servers</th><td>b, c</td>"), "{h}");
        assert!(h.contains("<th scope=\"row\">empty</th><td>none</td>"), "{h}");
    }

    #[test]
    fn escapes() {
        assert_eq!(
            escape("<a href=\"x\">&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
        );
    }
}
