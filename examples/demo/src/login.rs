//! Who is logged in where: a login without a password (this is a demo: the form's name
//! is believed), `whoami`, log out everywhere, and the list of a user's sessions across
//! the cluster (behind the admin token when one is configured).
//!
//! ```sh
//! curl -c jar -d user=alice http://127.0.0.1:8081/login
//! curl -b jar http://127.0.0.1:8082/whoami                      # alice, on another node
//! curl http://127.0.0.1:8083/sessions-of/alice                  # every session of alice
//! curl -b jar -X POST http://127.0.0.1:8083/logout-everywhere   # all of them end, everywhere
//! ```

use std::time::{SystemTime, UNIX_EPOCH};

use axum::Form;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use serde::Deserialize;
use serde_json::json;
use tribes_axum::{Session, SessionError};

use crate::{App, AppError};

/// `--max-sessions-policy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum PolicyArg {
    /// The new login wins: the user's oldest session ends on every node.
    EvictOldest,
    /// The new login is refused with 403 (you are logged in elsewhere).
    Refuse,
}

impl PolicyArg {
    pub(crate) fn policy(self) -> tribes_axum::MaxSessionsPolicy {
        match self {
            PolicyArg::EvictOldest => tribes_axum::MaxSessionsPolicy::EvictOldest,
            PolicyArg::Refuse => tribes_axum::MaxSessionsPolicy::Refuse,
        }
    }
}

/// The longest user name accepted.
const MAX_USER_LEN: usize = 64;

/// The login form: `user=NAME`.
#[derive(Debug, Deserialize)]
pub(crate) struct LoginForm {
    user: String,
}

/// `POST /login`: logs the session in as `user` (a new session id, as at any login). With
/// `--max-sessions-per-user N --max-sessions-policy refuse`, a login beyond the limit is
/// `403`; with `evict-oldest`, the user's oldest session ends on every node instead.
pub(crate) async fn login(State(app): State<App>, session: Session, Form(form): Form<LoginForm>) -> Response {
    let user = form.user.trim();
    if user.is_empty() || user.len() > MAX_USER_LEN || user.chars().any(char::is_control) {
        return (
            StatusCode::BAD_REQUEST,
            format!("bad request: give user=NAME, 1 to {MAX_USER_LEN} printable characters\n"),
        )
            .into_response();
    }
    match session.set_principal(user).await {
        Ok(()) => Json(json!({ "user": user, "node": app.route })).into_response(),
        // Its response is a 403 that says "you are logged in elsewhere".
        Err(e @ SessionError::LoggedInElsewhere { .. }) => e.into_response(),
        Err(e) => AppError(e).into_response(),
    }
}

/// `GET /whoami`: the session's user, or `401`.
pub(crate) async fn whoami(session: Session) -> Response {
    match session.principal().await {
        Some(user) => user.into_response(),
        None => not_logged_in(),
    }
}

/// `POST /logout-everywhere`: ends every session of the caller's user on every node
/// (this one included); `401` when not logged in.
pub(crate) async fn logout_everywhere(State(app): State<App>, session: Session) -> Result<Response, AppError> {
    let Some(user) = session.principal().await else {
        return Ok(not_logged_in());
    };
    let Some(report) = session.invalidate_principal().await? else {
        return Ok(not_logged_in());
    };
    Ok(Json(json!({
        "user": user,
        "node": app.route,
        "ended_here": report.ended_here,
        "members_told": report.members.len(),
    }))
    .into_response())
}

/// `GET /sessions-of/{name}`: the user's live sessions in the cluster, oldest login first:
/// log hash (never the id), times (unix ms) and the route of the node serving each. Only
/// with the admin token when the node has one (`--admin-token-file`).
pub(crate) async fn sessions_of(
    State(app): State<App>,
    headers: HeaderMap,
    session: Session,
    Path(user): Path<String>,
) -> Result<Response, AppError> {
    if let Some(token) = &app.admin
        && !token.authorizes(&headers)
    {
        return Ok((
            StatusCode::UNAUTHORIZED,
            [(
                header::WWW_AUTHENTICATE,
                "Basic realm=\"tribes demo admin\", charset=\"UTF-8\"",
            )],
            "Unauthorized: /sessions-of needs the admin token (the session browser's): log in with any \
             user name and the token as the password, or send Authorization: Bearer TOKEN.\n",
        )
            .into_response());
    }
    let sessions: Vec<serde_json::Value> = session
        .sessions_of(&user)
        .await?
        .iter()
        .map(|s| {
            json!({
                "session": s.log_id.to_string(),
                "created_ms": unix_ms(s.created),
                "last_accessed_ms": unix_ms(s.last_accessed),
                "login_ms": unix_ms(s.since),
                "route": s.route,
            })
        })
        .collect();
    Ok(Json(json!({ "user": user, "asked": app.route, "sessions": sessions })).into_response())
}

fn not_logged_in() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        "Unauthorized: not logged in (POST /login with user=NAME)\n",
    )
        .into_response()
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
