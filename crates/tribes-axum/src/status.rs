//! `GET /status` (JSON), `GET /` (the cluster dashboard) and `GET /status.html` (this
//! node and context): Tomcat's Manager app, and a view of the whole cluster.

use std::fmt::{self, Write as _};
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{OriginalUri, State};
use axum::response::{Html, IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value, json};
use tribes::Channel;
use tribes_sessions::SessionManager;

use crate::Contexts;
use crate::admin::AdminToken;
use crate::backend;
use crate::clock::now_ms;
use crate::counters::counters_for;
use crate::dashboard::{ClusterView, MemberState};
use crate::html::escape;
use crate::reporter::Dashboard;

/// The version of the `/status` JSON document (see docs/status.md). It changes only
/// when a field is removed or changes its meaning; new fields may appear at any time.
pub(crate) const SCHEMA_VERSION: u32 = 3;

/// What the status router's handlers (and the session browser's) share.
#[derive(Clone)]
pub(crate) struct StatusState {
    pub(crate) contexts: Contexts,
    pub(crate) channel: Channel,
    pub(crate) dashboard: Arc<Dashboard>,
    pub(crate) browser: Arc<BrowserSettings>,
}

/// The session browser's settings, from [`StatusRouter`](crate::StatusRouter)'s builder.
#[derive(Clone, Debug)]
pub(crate) struct BrowserSettings {
    pub(crate) token: Option<AdminToken>,
    /// The attributes whose values may be shown.
    pub(crate) shown: Vec<String>,
    pub(crate) timeout: Duration,
}

impl fmt::Debug for StatusState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StatusState").finish_non_exhaustive()
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
        other => format!("{other:?}").to_ascii_lowercase(),
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

pub(crate) async fn status_json(State(s): State<StatusState>) -> Response {
    Json(status(&s.contexts, &s.channel, &s.dashboard)).into_response()
}

pub(crate) async fn status_html(State(s): State<StatusState>) -> Html<String> {
    Html(render_html(&status(&s.contexts, &s.channel, &s.dashboard)))
}

pub(crate) async fn dashboard_html(State(s): State<StatusState>, OriginalUri(uri): OriginalUri) -> Response {
    // Relative links resolve against the router's mount point, with or without the slash.
    let mut base = uri.path().to_owned();
    if !base.ends_with('/') {
        base.push('/');
    }
    let body = crate::dashboard_html::render(&s.dashboard.view(), now_ms(), &base, s.browser.token.is_some());
    ([(axum::http::header::CACHE_CONTROL, "no-store")], Html(body)).into_response()
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
}
