//! `GET /status` (JSON) and `GET /` (HTML): Tomcat's Manager app, for one context.

use std::fmt::{self, Write as _};

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use serde_json::{Map, Value, json};
use tribes::Channel;
use tribes_sessions::SessionManager;

use crate::backend;
use crate::metrics::counters_for;

#[derive(Clone)]
struct StatusState {
    manager: SessionManager,
    channel: Channel,
}

impl fmt::Debug for StatusState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StatusState").finish_non_exhaustive()
    }
}

/// A router serving this node's view of the cluster for `manager`'s context:
///
/// - `GET /status`: JSON with `route` (this node), `ready`, `context`, `manager` (the
///   kind), `sessions` (held by this node), `members` (the other live members, each
///   with `route`, `addr` and `id`), `replication` (the manager's statistics), `layer`
///   (the layer's counters) and `channel` (traffic per member).
/// - `GET /` and `GET /status.html`: the same as a small HTML page, without external
///   assets, every text escaped.
///
/// Mount it anywhere, e.g. `.nest("/cluster", status_router(manager, channel))`: the
/// JSON is then at `/cluster/status` and the page at `/cluster` (axum 0.8 nests `/` at
/// the prefix itself, without a trailing slash) and `/cluster/status.html`. Put it
/// outside the [`ReplicatedSessions`](crate::ReplicatedSessions) layer, or call it
/// without the session cookie, so that it answers while the node is not ready.
pub fn status_router(manager: SessionManager, channel: Channel) -> Router {
    Router::new()
        .route("/status", get(status_json))
        .route("/", get(status_html))
        .route("/status.html", get(status_html))
        .with_state(StatusState { manager, channel })
}

/// The status document.
#[derive(Debug, Serialize)]
pub(crate) struct Status {
    route: String,
    ready: bool,
    context: String,
    manager: String,
    sessions: u64,
    members: Vec<MemberView>,
    replication: Value,
    layer: Map<String, Value>,
    channel: Value,
}

#[derive(Debug, Serialize)]
struct MemberView {
    route: String,
    addr: String,
    id: String,
    domain: String,
}

pub(crate) fn status(manager: &SessionManager, channel: &Channel) -> Status {
    let local = channel.local();
    let stats = manager.stats();
    let sessions = stats.sessions as u64;
    let kind = match stats.kind {
        tribes_sessions::ManagerKind::Delta => "delta".to_owned(),
        tribes_sessions::ManagerKind::Backup { backup_count } => format!("backup ({backup_count} backup copies)"),
    };
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
    });
    Status {
        route: local.name().to_owned(),
        ready: backend::is_ready(manager),
        context: manager.context().to_owned(),
        manager: kind,
        sessions,
        members,
        replication,
        layer,
        channel: channel_json,
    }
}

async fn status_json(State(s): State<StatusState>) -> Response {
    Json(status(&s.manager, &s.channel)).into_response()
}

async fn status_html(State(s): State<StatusState>) -> Html<String> {
    Html(render_html(&status(&s.manager, &s.channel)))
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

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
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
            let _ = write!(h, "<tr><th>{}</th><td>{}</td></tr>", e(k), e(&value_text(v)));
        }
    }
    h.push_str("</table><h2>Layer</h2><table>");
    for (k, v) in &st.layer {
        let _ = write!(h, "<tr><th>{}</th><td>{}</td></tr>", e(k), e(&value_text(v)));
    }
    h.push_str("</table><h2>Channel</h2><table>");
    if let Value::Object(m) = &st.channel {
        for (k, v) in m {
            let _ = write!(h, "<tr><th>{}</th><td>{}</td></tr>", e(k), e(&value_text(v)));
        }
    }
    h.push_str("</table></body></html>");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        assert_eq!(
            escape("<a href=\"x\">&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
        );
    }
}
