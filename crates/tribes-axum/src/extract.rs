//! The [`Session`] extractor (its errors are in `error.rs`).

use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::request::Parts;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{MissingSessionLayer, SessionError};
use crate::handle::RequestSession;
use crate::{LogoutReport, PrincipalSession};

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

    /// Logs the session in as `principal` (the user's name or id), creating the session
    /// if there is none. The principal replicates with the session and is indexed on
    /// every node: [`sessions_of`](Session::sessions_of) lists the user's sessions,
    /// [`invalidate_principal`](Session::invalidate_principal) logs them all out.
    ///
    /// Call it once the credentials are checked. It also gives a session that existed
    /// before this request a new id, as [`cycle_id`](Session::cycle_id) does (a login
    /// raises the session's privileges, so an id planted or seen before must stop
    /// working: session fixation; Tomcat's `changeSessionIdOnAuthentication`, on by
    /// default). A session created by this request, or whose id this request already
    /// cycled, keeps its id: nobody has seen it yet.
    ///
    /// With a session limit per principal
    /// ([`SessionManagerBuilder::with_max_sessions_per_principal`](tribes_sessions::SessionManagerBuilder::with_max_sessions_per_principal)),
    /// the user's live sessions across the cluster are counted first: policy `Refuse`
    /// answers [`SessionError::LoggedInElsewhere`]; policy `EvictOldest` ends the oldest
    /// logins on every node to make room.
    ///
    /// # Examples
    ///
    /// ```
    /// use axum::http::StatusCode;
    /// use tribes_axum::{Session, SessionError};
    ///
    /// async fn login(session: Session, user: String) -> Result<StatusCode, SessionError> {
    ///     // ... check the password first ...
    ///     match session.set_principal(&user).await {
    ///         Ok(()) => Ok(StatusCode::NO_CONTENT),
    ///         Err(SessionError::LoggedInElsewhere { .. }) => Ok(StatusCode::FORBIDDEN),
    ///         Err(e) => Err(e),
    ///     }
    /// }
    /// ```
    ///
    /// # Errors
    /// - [`SessionError::LoggedInElsewhere`]: the limit refused the login. Nothing
    ///   changed: a session that existed keeps its id and its principal; one this call
    ///   created ends without a cookie.
    /// - [`SessionError::Unavailable`]: the manager cannot count the user's sessions (a
    ///   shared store; shut down). Nothing changed.
    /// - As [`insert`](Session::insert) when no session could be created.
    pub async fn set_principal(&self, principal: &str) -> Result<(), SessionError> {
        self.inner.set_principal(principal).await
    }

    /// The session's principal (set by [`set_principal`](Session::set_principal) on any
    /// node); `None` when there is no session or nobody is logged in.
    pub async fn principal(&self) -> Option<String> {
        self.inner.principal().await
    }

    /// Logs the session out of its principal: the session lives on, anonymous, on every
    /// node. To end it, use [`invalidate`](Session::invalidate).
    ///
    /// # Errors
    /// [`SessionError::FilteredPath`] when the path matches the layer's filter.
    pub async fn clear_principal(&self) -> Result<(), SessionError> {
        self.inner.clear_principal().await
    }

    /// Logs this session's principal out everywhere ("log out of every device", or after
    /// a password change): every session of the user logged in until now ends on every
    /// node ([`SessionManager::invalidate_principal`](tribes_sessions::SessionManager::invalidate_principal)),
    /// this request's own session included, whose cookie is removed as
    /// [`invalidate`](Session::invalidate) does. In sync-ack mode it returns once every
    /// member ended its copies; a member that did not confirm is counted as a sync
    /// failure and logged, and ends them when the logout reaches it.
    ///
    /// Returns `None` (and does nothing) when there is no session or nobody is logged in.
    ///
    /// # Examples
    ///
    /// ```
    /// use axum::http::StatusCode;
    /// use tribes_axum::{Session, SessionError};
    ///
    /// // "Log out of every device".
    /// async fn logout_everywhere(session: Session) -> Result<StatusCode, SessionError> {
    ///     Ok(match session.invalidate_principal().await? {
    ///         Some(_report) => StatusCode::NO_CONTENT,
    ///         None => StatusCode::UNAUTHORIZED,
    ///     })
    /// }
    /// ```
    ///
    /// # Errors
    /// [`SessionError::FilteredPath`]; [`SessionError::Unavailable`] when the manager has
    /// shut down.
    pub async fn invalidate_principal(&self) -> Result<Option<LogoutReport>, SessionError> {
        self.inner.invalidate_principal().await
    }

    /// Every live session of `principal` in the cluster, oldest login first: when it was
    /// created, last used, logged in, and the route of the node that serves it. Show
    /// [`PrincipalSession::log_id`], never the id: the id is the session's secret.
    ///
    /// It asks the manager the layer holds, so with several applications
    /// ([`Contexts`](crate::Contexts)) the answer is about this route's application. A
    /// DeltaManager node answers from its own index; a BackupManager node asks every
    /// member (one round trip, bounded by the manager's ack timeout). Guard it as the app
    /// guards any list of who is logged in where: it is not limited to the caller's own
    /// principal.
    ///
    /// # Errors
    /// [`SessionError::Unavailable`] with a shared store (no node knows the others'
    /// sessions) or a manager that has shut down.
    pub async fn sessions_of(&self, principal: &str) -> Result<Vec<PrincipalSession>, SessionError> {
        self.inner.sessions_of(principal).await
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
