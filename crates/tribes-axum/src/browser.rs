//! The session browser of the status router (off unless an [`AdminToken`] is set):
//!
//! - `GET sessions`: the page; with `?context=C&hash=%231a2b3c4d` it looks the session
//!   up on every member: who holds it, its version, times, attributes (names, sizes,
//!   kinds; values of the attributes the app lets it show).
//! - `GET sessions.json?context=C&hash=…`: the same lookup as JSON.
//! - `POST sessions/invalidate` (form fields `context`, `hash`): invalidates the session
//!   on every node, through the manager's usual invalidation (sync-ack waits as usual);
//!   JSON when the request accepts `application/json`.
//!
//! Every action is logged with target `tribes::admin`, the session by its log hash.

use std::time::Duration;

use axum::extract::{OriginalUri, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::{Form, Json};
use tribes_sessions::{LogId, SessionManager};

use crate::admin::{self, Denied};
use crate::backend::{self, Invalidation};
use crate::browser_html::{self, Find, InvalidateResult, Lookup, MemberRow, Problem};
use crate::browser_net::{self, Body, MemberAnswer};
use crate::status::StatusState;

/// How long other members get to answer a lookup, by default.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a member asked to invalidate gets (its commit may wait for acks).
const INVALIDATE_WAIT: Duration = Duration::from_secs(15);
/// The version of the browser's JSON documents.
const SCHEMA_VERSION: u32 = 1;

/// The credential check in front of every browser route (a route layer, so no handler
/// runs, and no body is read, for a refused request).
pub(crate) async fn guard(State(s): State<StatusState>, req: Request, next: Next) -> Response {
    let method = req.method();
    let path = req
        .extensions()
        .get::<OriginalUri>()
        .map_or_else(|| req.uri().path(), |u| u.path());
    if let Err(denied) = admin::check(s.browser.token.as_ref(), method, req.headers()) {
        match denied {
            Denied::Wrong | Denied::CrossSite => {
                tracing::warn!(target: "tribes::admin", %method, %path, reason = denied.words(), "session browser: request refused");
            }
            Denied::Off | Denied::Missing => {
                tracing::debug!(target: "tribes::admin", %method, %path, reason = denied.words(), "session browser: request refused");
            }
        }
        return denied.into_response();
    }
    next.run(req).await
}

/// The browser's page around `section`, for the request at `path`.
fn render(s: &StatusState, path: &str, find: &Find, section: &str) -> String {
    let contexts: Vec<String> = s.contexts.all().iter().map(|m| m.context().to_owned()).collect();
    let local = s.channel.local();
    browser_html::page(local.name(), &base_of(path), &contexts, find, section)
}

/// The context asked for (default: the first) and the hash, checked.
fn target(s: &StatusState, find: &Find) -> Result<Option<(SessionManager, LogId)>, Problem> {
    let manager = match find.context.as_deref().filter(|c| !c.is_empty()) {
        None => s.contexts.first().clone(),
        Some(c) => s
            .contexts
            .all()
            .iter()
            .find(|m| m.context() == c)
            .cloned()
            .ok_or_else(|| Problem {
                status: StatusCode::NOT_FOUND,
                words: format!(
                    "this node serves no context {c:?}; it serves {}",
                    s.contexts
                        .all()
                        .iter()
                        .map(|m| format!("{:?}", m.context()))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })?,
    };
    let Some(hash) = find.hash.as_deref().map(str::trim).filter(|h| !h.is_empty()) else {
        return Ok(None);
    };
    let log_id = hash.parse::<LogId>().map_err(|e| Problem {
        status: StatusCode::BAD_REQUEST,
        words: e.to_string(),
    })?;
    Ok(Some((manager, log_id)))
}

/// Asks this node and every other member which sessions with `log_id` they hold.
pub(crate) async fn lookup(s: &StatusState, manager: &SessionManager, log_id: LogId) -> Lookup {
    let local = s.channel.local();
    let context = manager.context().to_owned();
    let others: Vec<tribes::Member> = s
        .channel
        .members()
        .into_iter()
        .filter(|m| m.id() != local.id())
        .collect();
    let ids: Vec<tribes::MemberId> = others.iter().map(|m| m.id()).collect();
    let question = Body::Lookup {
        context: context.clone(),
        log_id: log_id.to_string(),
        values: s.browser.shown.clone(),
    };
    let mut answers = browser_net::ask(&s.channel, &s.dashboard.admin, &ids, question, s.browser.timeout).await;
    let mut members = vec![MemberRow {
        route: local.name().to_owned(),
        local: true,
        answer: MemberAnswer::Holds {
            sessions: browser_net::held(manager, log_id, &s.browser.shown),
        },
    }];
    let mut rest: Vec<MemberRow> = others
        .iter()
        .map(|m| MemberRow {
            route: m.name().to_owned(),
            local: false,
            answer: match answers.remove(&m.id()) {
                Some(Ok(Body::Found { held: Some(sessions) })) => MemberAnswer::Holds { sessions },
                Some(Ok(Body::Found { held: None })) => MemberAnswer::NoContext,
                Some(Err(a)) => a,
                Some(Ok(_)) | None => MemberAnswer::NoAnswer,
            },
        })
        .collect();
    rest.sort_by(|a, b| a.route.cmp(&b.route));
    members.extend(rest);
    let holders = members
        .iter()
        .filter(|m| matches!(&m.answer, MemberAnswer::Holds { sessions } if !sessions.is_empty()))
        .map(|m| m.route.clone())
        .collect();
    Lookup {
        schema_version: SCHEMA_VERSION,
        node: local.name().to_owned(),
        context,
        log_id: log_id.to_string(),
        holders,
        members,
    }
}

/// Invalidates the session here if this node holds it, else on a member that does.
async fn invalidate_anywhere(s: &StatusState, manager: &SessionManager, log_id: LogId) -> Invalidation {
    let here = backend::invalidate_by_log_id(manager, log_id).await;
    if here != Invalidation::NotFound {
        return here;
    }
    let found = lookup(s, manager, log_id).await;
    if found.most_per_member() > 1 {
        return Invalidation::Ambiguous {
            sessions: found.most_per_member(),
        };
    }
    let members = s.channel.members();
    for route in &found.holders {
        let Some(m) = members.iter().find(|m| m.name() == route.as_str()) else {
            continue;
        };
        let question = Body::Invalidate {
            context: manager.context().to_owned(),
            log_id: log_id.to_string(),
        };
        let mut answer = browser_net::ask(&s.channel, &s.dashboard.admin, &[m.id()], question, INVALIDATE_WAIT).await;
        match answer.remove(&m.id()) {
            Some(Ok(Body::Invalidated { outcome })) if outcome != Invalidation::NotFound => return outcome,
            other => {
                tracing::info!(target: "tribes::admin", member = %route, answer = ?other, "session browser: a holder did not invalidate; trying the next");
            }
        }
    }
    Invalidation::NotFound
}

fn base_of(uri: &str) -> String {
    match uri.rfind("/sessions") {
        Some(i) => uri[..=i].to_owned(),
        None => "/".to_owned(),
    }
}

fn private(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'self'",
        ),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    r
}

fn log_lookup(l: &Lookup) {
    tracing::info!(target: "tribes::admin", action = "lookup", context = %l.context, session = %l.log_id,
        holders = ?l.holders, "session browser: lookup");
}

/// `GET sessions`.
pub(crate) async fn page(
    State(s): State<StatusState>,
    OriginalUri(uri): OriginalUri,
    Query(find): Query<Find>,
) -> Response {
    let (status, section) = match target(&s, &find) {
        Err(p) => (p.status, browser_html::problem(&p)),
        Ok(None) => (StatusCode::OK, String::new()),
        Ok(Some((manager, log_id))) => {
            let l = lookup(&s, &manager, log_id).await;
            log_lookup(&l);
            (StatusCode::OK, browser_html::lookup(&l, &s.browser.shown))
        }
    };
    let body = render(&s, uri.path(), &find, &section);
    private((status, Html(body)).into_response())
}

/// `GET sessions.json`.
pub(crate) async fn json(State(s): State<StatusState>, Query(find): Query<Find>) -> Response {
    let r = match target(&s, &find) {
        Err(p) => (p.status, Json(serde_json::json!({ "error": p.words }))).into_response(),
        Ok(None) => (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({ "error": "give the session's log hash: ?hash=%231a2b3c4d (and &context=NAME)" })),
        )
            .into_response(),
        Ok(Some((manager, log_id))) => {
            let l = lookup(&s, &manager, log_id).await;
            log_lookup(&l);
            Json(l).into_response()
        }
    };
    private(r)
}

/// `POST sessions/invalidate`.
pub(crate) async fn invalidate(
    State(s): State<StatusState>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    form: Result<Form<Find>, axum::extract::rejection::FormRejection>,
) -> Response {
    let find = match form {
        Ok(Form(find)) => find,
        Err(e) => {
            return private(
                (
                    StatusCode::BAD_REQUEST,
                    format!("{e}: send the form fields context and hash (application/x-www-form-urlencoded)"),
                )
                    .into_response(),
            );
        }
    };
    let wants_json = headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("application/json"));
    let route = s.channel.local().name().to_owned();
    let found = match target(&s, &find) {
        Ok(Some(t)) => Ok(t),
        Ok(None) => Err(Problem {
            status: StatusCode::BAD_REQUEST,
            words: "give the session's log hash (form field hash, such as #1a2b3c4d)".into(),
        }),
        Err(p) => Err(p),
    };
    let (manager, log_id) = match found {
        Ok(t) => t,
        Err(p) if wants_json => {
            return private((p.status, Json(serde_json::json!({ "error": p.words }))).into_response());
        }
        Err(p) => {
            let body = render(&s, uri.path(), &find, &browser_html::problem(&p));
            return private((p.status, Html(body)).into_response());
        }
    };
    let outcome = invalidate_anywhere(&s, &manager, log_id).await;
    tracing::info!(target: "tribes::admin", action = "invalidate", context = %manager.context(), session = %log_id,
        outcome = ?outcome, "session browser: invalidate");
    let status = match &outcome {
        Invalidation::Invalidated { .. } => StatusCode::OK,
        Invalidation::NotConfirmed { .. } => StatusCode::BAD_GATEWAY,
        Invalidation::NotFound => StatusCode::NOT_FOUND,
        Invalidation::Ambiguous { .. } => StatusCode::CONFLICT,
    };
    let result = InvalidateResult {
        schema_version: SCHEMA_VERSION,
        node: route,
        context: manager.context().to_owned(),
        log_id: log_id.to_string(),
        outcome,
    };
    if wants_json {
        return private((status, Json(result)).into_response());
    }
    let body = render(&s, uri.path(), &find, &browser_html::invalidated(&result));
    private((status, Html(body)).into_response())
}

#[cfg(test)]
#[path = "browser_tests.rs"]
mod tests;
