//! The [`Session`] extractor, its [`SessionError`] and its rejection.

use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::handle::RequestSession;

/// The session of the current request, from the [`ReplicatedSessions`](crate::ReplicatedSessions) layer.
///
/// A cheap `Clone` and lazy: nothing is looked up until a method is called, and a
/// request that only reads creates nothing and replicates nothing. The first write
/// ([`insert`](Session::insert)) creates the session if there is none; the layer then
/// sets the cookie. Changes are replicated by the layer when the response is ready.
///
/// Don't keep a `Session` (or a clone) beyond the request: changes made after the
/// response was produced are not replicated.
///
/// # Examples
///
/// ```
/// use tribes_axum::{Session, SessionError};
///
/// async fn visits(session: Session) -> Result<String, SessionError> {
///     // A value an older build wrote with another type reads as absent (and is counted).
///     let n: u64 = session.get("visits").await?.unwrap_or(0);
///     session.insert("visits", n + 1).await?;
///     Ok(format!("visit {}", n + 1))
/// }
/// ```
#[derive(Clone)]
pub struct Session {
    pub(crate) inner: Arc<RequestSession>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("cookie", &self.inner.cookie)
            .field("filtered", &self.inner.filtered.is_some())
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Reads attribute `key`; `Ok(None)` when there is no session or no such attribute.
    ///
    /// A stored value that does not decode into `T` (for example an older build wrote
    /// another type) is also `Ok(None)`: it is counted (`tribes_http_stale_values_total`)
    /// and logged once per request with the attribute's name and the session's log id,
    /// and the next [`insert`](Session::insert) overwrites it. `?` on a stale value
    /// never fails the request. To tell a stale value from a missing one, use
    /// [`try_get`](Session::try_get).
    ///
    /// # Errors
    /// [`SessionError::Value`] when the stored attribute cannot be read at all (not a
    /// decoding mismatch); [`SessionError::NotReady`] while the node is not ready.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, SessionError> {
        match self.inner.get(key).await {
            Err(SessionError::StaleValue { .. }) => Ok(None),
            other => other,
        }
    }

    /// Like [`get`](Session::get), but a stored value that does not decode into `T` is
    /// [`SessionError::StaleValue`] instead of `Ok(None)` (counted and logged the same way).
    ///
    /// # Errors
    /// [`SessionError::StaleValue`] for a value that does not decode (handle it: as a
    /// response it is a `500`); otherwise as [`get`](Session::get).
    pub async fn try_get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, SessionError> {
        self.inner.get(key).await
    }

    /// Sets attribute `key`, creating the session if there is none.
    ///
    /// # Errors
    /// - [`SessionError::Value`]: the value cannot be serialized or is too large (nothing changed).
    /// - [`SessionError::TooManySessions`] / [`SessionError::NotReady`]: no session could be created.
    /// - [`SessionError::FilteredPath`]: the request's path matches the layer's filter.
    pub async fn insert<T: Serialize>(&self, key: &str, value: T) -> Result<(), SessionError> {
        self.inner.insert(key, &value).await
    }

    /// Removes attribute `key` (nothing happens if absent).
    ///
    /// # Errors
    /// [`SessionError::FilteredPath`] when the path matches the layer's filter.
    pub async fn remove(&self, key: &str) -> Result<(), SessionError> {
        self.inner.remove(key).await
    }

    /// Invalidates the session: it is removed on every node when the response is
    /// ready, and the cookie is removed (`Max-Age=0`). A later
    /// [`insert`](Session::insert) in the same request starts a new session.
    ///
    /// # Errors
    /// [`SessionError::FilteredPath`] when the path matches the layer's filter.
    pub async fn invalidate(&self) -> Result<(), SessionError> {
        self.inner.invalidate().await
    }

    /// Gives the session a new id (do it at login, against session fixation) and
    /// returns the new cookie value; `None` when there is no session. The old id stops
    /// working on every node when the response is ready.
    ///
    /// # Errors
    /// [`SessionError::FilteredPath`] when the path matches the layer's filter.
    pub async fn cycle_id(&self) -> Result<Option<String>, SessionError> {
        self.inner.cycle_id().await
    }

    /// The cookie value `id.route`, or `None` when there is no session yet.
    pub async fn id(&self) -> Option<String> {
        self.inner.id().await
    }

    /// The session's log hash (`#1a2b3c4d`), or `None` when there is no session yet: a
    /// short name that is safe to log and to show (it cannot be turned back into the
    /// id), the one tribes uses in its own logs and on the status pages. Cheaper than
    /// [`Session::id`]: no cookie value is formatted.
    pub async fn log_id(&self) -> Option<crate::LogId> {
        self.inner.log_id().await
    }

    /// Whether a (live) session exists for this request.
    pub async fn exists(&self) -> bool {
        self.inner.exists().await
    }

    /// Whether this request created the session.
    pub async fn is_new(&self) -> bool {
        self.inner.is_new().await
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Session {
    type Rejection = MissingSessionLayer;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Arc<RequestSession>>()
            .map(|inner| Session { inner: inner.clone() })
            .ok_or(MissingSessionLayer)
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for Session {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Arc<RequestSession>>()
            .map(|inner| Session { inner: inner.clone() }))
    }
}

/// The rejection of the [`Session`] extractor: the route is not behind the
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

/// Why a [`Session`] operation failed. Each variant says whether anything changed.
///
/// As a response: `503` with `Retry-After` for [`TooManySessions`](SessionError::TooManySessions)
/// and [`NotReady`](SessionError::NotReady), otherwise `500` with a short message
/// (details go to the log, not to the client).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The stored value of `key` does not decode into the requested type, e.g. it was
    /// written by an older build. Only [`Session::try_get`] returns it ([`Session::get`]
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
            _ => {
                tracing::error!("{self}");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal error: session").into_response()
            }
        }
    }
}
