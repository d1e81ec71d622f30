//! The errors of this crate's session calls: [`SessionError`] and the extractor's
//! rejection [`MissingSessionLayer`]. A leaf: it imports nothing from this crate.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The rejection of the [`Session`](crate::Session) extractor: the route is not behind the
/// [`ReplicatedSessions`](crate::ReplicatedSessions) layer. Answers `500`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, thiserror::Error)]
#[error(
    "the Session extractor found no session layer: add ReplicatedSessions layer, e.g. `.layer(ReplicatedSessions::new(manager))`, to the router serving this route"
)]
pub struct MissingSessionLayer;

impl IntoResponse for MissingSessionLayer {
    fn into_response(self) -> Response {
        tracing::error!("{self}");
        (StatusCode::INTERNAL_SERVER_ERROR, self.to_string()).into_response()
    }
}

/// Why a [`Session`](crate::Session) operation failed. Each variant says whether anything changed.
///
/// As a response: `503` with `Retry-After` for [`TooManySessions`](SessionError::TooManySessions)
/// and [`NotReady`](SessionError::NotReady), `403` for
/// [`LoggedInElsewhere`](SessionError::LoggedInElsewhere), otherwise `500` with a short message
/// (details go to the log, not to the client).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The stored value of `key` does not decode into the requested type, e.g. it was
    /// written by an older build. Only [`Session::try_get`](crate::Session::try_get) returns it ([`Session::get`](crate::Session::get)
    /// answers `Ok(None)`). Nothing changed: treat the attribute as absent (and
    /// overwrite it); the rest of the session works.
    #[error(
        "session attribute '{key}' does not decode into {type_name}: {cause} (written by another build? treat it as absent and overwrite it)"
    )]
    StaleValue {
        /// The attribute.
        key: String,
        /// The requested Rust type.
        type_name: &'static str,
        /// The decoder's message.
        cause: String,
    },
    /// The value of `key` could not be stored (not serializable, or over the size
    /// limits). Nothing changed.
    #[error("session attribute '{key}' was not stored: {cause}")]
    Value {
        /// The attribute.
        key: String,
        /// Why, and what to do.
        cause: String,
    },
    /// No session could be created: the manager holds its maximum of active sessions.
    /// Nothing changed; retry later, or raise the manager's max_active.
    #[error("no new session could be created: {cause}")]
    TooManySessions {
        /// When to retry.
        retry_after: Duration,
        /// The manager's message.
        cause: String,
    },
    /// This node is still receiving the sessions of the cluster (state transfer).
    /// Nothing changed; retry after `retry_after`, possibly on another node.
    #[error("this node is still receiving the cluster's sessions (state transfer): retry after {retry_after:?}")]
    NotReady {
        /// When to retry.
        retry_after: Duration,
    },
    /// The request's path matches the layer's filter (static assets), where sessions
    /// are read-only. Nothing changed; write from another path or change `with_filter`.
    #[error("session writes are disabled on filtered path {path}: write from another path, or change with_filter")]
    FilteredPath {
        /// The request path.
        path: String,
    },
    /// The login is refused: the principal already has `sessions` live sessions in the
    /// cluster and the limit is `max` (policy `Refuse` of
    /// [`with_max_sessions_per_principal`](tribes_sessions::SessionManagerBuilder::with_max_sessions_per_principal)).
    /// Nothing changed. Tell the user they are logged in elsewhere; as a response it is a
    /// `403` saying so.
    #[error(
        "'{principal}' already has {sessions} live sessions and the limit is {max}: the login is refused (log out elsewhere first, or use MaxSessionsPolicy::EvictOldest)"
    )]
    LoggedInElsewhere {
        /// The principal.
        principal: String,
        /// The limit per principal.
        max: usize,
        /// Its live sessions found in the cluster.
        sessions: usize,
    },
    /// The session manager is shut down or refused the operation. Nothing changed.
    #[error("the session manager cannot serve this request: {cause}")]
    Unavailable {
        /// The manager's message.
        cause: String,
    },
}

impl SessionError {
    /// Whether this is a [`SessionError::StaleValue`]: the app can treat the attribute as absent.
    pub fn is_stale(&self) -> bool {
        matches!(self, SessionError::StaleValue { .. })
    }
}

pub(crate) fn retry_after_value(d: Duration) -> HeaderValue {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    HeaderValue::from(secs.max(1))
}

impl IntoResponse for SessionError {
    fn into_response(self) -> Response {
        match &self {
            SessionError::TooManySessions { retry_after, .. } | SessionError::NotReady { retry_after } => {
                tracing::warn!("{self}");
                let msg = if matches!(self, SessionError::NotReady { .. }) {
                    "service unavailable: this node is starting, retry shortly"
                } else {
                    "service unavailable: too many sessions, retry later"
                };
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(header::RETRY_AFTER, retry_after_value(*retry_after))],
                    msg,
                )
                    .into_response()
            }
            SessionError::LoggedInElsewhere { max, sessions, .. } => {
                tracing::info!("{self}");
                let msg = format!(
                    "forbidden: you are logged in elsewhere ({sessions} sessions, at most {max} per user): log out there first\n"
                );
                (StatusCode::FORBIDDEN, msg).into_response()
            }
            _ => {
                tracing::error!("{self}");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal error: session").into_response()
            }
        }
    }
}
