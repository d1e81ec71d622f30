//! The errors of this crate's session calls: [`SessionError`] and the extractor's
//! rejection [`MissingSessionLayer`]. A leaf: it imports nothing from this crate.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tribes_sessions::{AttributeError, CreateError, PrincipalError};

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
/// The message names the attribute or context and the fix; the error it comes from, when
/// there is one, is its [`source`](std::error::Error::source) (a reporter such as
/// `anyhow`'s `{:#}`, or [`SessionError::report`], prints both).
///
/// As a response: `503` with `Retry-After` for [`TooManySessions`](SessionError::TooManySessions)
/// and [`NotReady`](SessionError::NotReady), `403` for
/// [`LoggedInElsewhere`](SessionError::LoggedInElsewhere), otherwise `500` with a short message
/// (details, with the source, go to the log, not to the client).
///
/// # Examples
/// ```
/// use std::error::Error as _;
/// use tribes_axum::{Session, SessionError};
///
/// async fn show(session: Session) -> String {
///     match session.try_get::<u64>("n").await {
///         Ok(n) => format!("{n:?}"),
///         Err(e @ SessionError::StaleValue { .. }) => {
///             // The decoder's own message is the source.
///             let why = e.source().map(|s| s.to_string()).unwrap_or_default();
///             format!("stale: {why}")
///         }
///         Err(e) => e.report(),
///     }
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The stored value of `key` does not decode into the requested type, e.g. it was
    /// written by an older build. Only [`Session::try_get`](crate::Session::try_get)
    /// returns it ([`Session::get`](crate::Session::get) answers `Ok(None)`). Nothing
    /// changed: treat the attribute as absent (and overwrite it); the rest of the session
    /// works.
    #[error(
        "session attribute '{key}' does not decode into {type_name} (written by another build? treat it as absent and overwrite it)"
    )]
    StaleValue {
        /// The attribute.
        key: String,
        /// The requested Rust type.
        type_name: &'static str,
        /// The decoder's error ([`AttributeError::Decode`]).
        #[source]
        source: AttributeError,
    },
    /// The value of `key` could not be stored (not serializable, or over the size
    /// limits; the source says which and what to do), or a stored value cannot be read
    /// at all. Nothing changed.
    #[error("session attribute '{key}' was not stored or read; the session is unchanged (the cause says what to fix)")]
    Value {
        /// The attribute.
        key: String,
        /// The manager's error: serialization, size limit, reserved name.
        #[source]
        source: AttributeError,
    },
    /// No session could be created: the manager of `context` holds its maximum of active
    /// sessions. Nothing changed; retry later, or raise the manager's `with_max_active`.
    #[error(
        "context '{context}' holds its maximum of active sessions: no session was created; retry after {retry_after:?}, or raise the manager's with_max_active"
    )]
    TooManySessions {
        /// The context.
        context: String,
        /// When to retry.
        retry_after: Duration,
        /// The manager's error ([`CreateError::TooManySessions`]).
        #[source]
        source: CreateError,
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
    /// The session manager of `context` is shut down or refused the operation (the
    /// source says why). Nothing changed.
    #[error(
        "the session manager of context '{context}' cannot serve this request; nothing changed (the cause says why)"
    )]
    Unavailable {
        /// The context.
        context: String,
        /// The manager's error.
        #[source]
        source: ManagerError,
    },
}

/// What the session manager answered when it could not serve a [`Session`](crate::Session)
/// call: the source of [`SessionError::Unavailable`]. Its message is the manager's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ManagerError {
    /// Creating a session failed (the manager has shut down).
    #[error(transparent)]
    Create(#[from] CreateError),
    /// A principal call failed (a shared store cannot answer it, or the manager has shut down).
    #[error(transparent)]
    Principal(#[from] PrincipalError),
}

impl SessionError {
    /// Whether this is a [`SessionError::StaleValue`]: the app can treat the attribute as absent.
    pub fn is_stale(&self) -> bool {
        matches!(self, SessionError::StaleValue { .. })
    }

    /// The message with its sources, joined by `": "`: what to log for an operator.
    pub fn report(&self) -> String {
        report(self)
    }
}

/// `e` and its sources, joined by `": "`.
pub(crate) fn report(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        out.push_str(": ");
        out.push_str(&s.to_string());
        next = s.source();
    }
    out
}

pub(crate) fn retry_after_value(d: Duration) -> HeaderValue {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    HeaderValue::from(secs.max(1))
}

impl IntoResponse for SessionError {
    fn into_response(self) -> Response {
        match &self {
            SessionError::TooManySessions { retry_after, .. } | SessionError::NotReady { retry_after } => {
                tracing::warn!("{}", self.report());
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
                tracing::info!("{}", self.report());
                let msg = format!(
                    "forbidden: you are logged in elsewhere ({sessions} sessions, at most {max} per user): log out there first\n"
                );
                (StatusCode::FORBIDDEN, msg).into_response()
            }
            _ => {
                tracing::error!("{}", self.report());
                (StatusCode::INTERNAL_SERVER_ERROR, "internal error: session").into_response()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn the_manager_error_is_the_source_and_the_report_joins_both() {
        let e = SessionError::Unavailable {
            context: "/shop".into(),
            source: CreateError::ShutDown {
                context: "/shop".into(),
            }
            .into(),
        };
        let source = e.source().map(ToString::to_string).unwrap_or_default();
        assert!(source.contains("has shut down"), "{source}");
        assert!(e.to_string().contains("'/shop'"), "{e}");
        assert!(
            !e.to_string().contains("has shut down"),
            "the message does not repeat its source: {e}"
        );
        assert_eq!(e.report(), format!("{e}: {source}"));
    }
}
