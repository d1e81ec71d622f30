//! The layer's settings: the cookie, filter, replication and readiness choices of
//! [`ReplicatedSessions`](crate::ReplicatedSessions), and the [`Settings`] every request
//! shares. A leaf: it imports nothing from this crate.

use std::time::Duration;

use axum::http::HeaderName;
use regex::Regex;

/// The default session cookie name.
pub const DEFAULT_COOKIE_NAME: &str = "TRIBESSESSIONID";

/// The default filter: paths that never create, load or replicate a session.
///
/// Like the `filter` of Tomcat's `ReplicationValve`: common static assets and
/// everything under `/static/`.
pub const DEFAULT_FILTER: &str = r"(?i)^/static/|\.(gif|jpg|jpeg|png|css|js|ico|svg|txt|woff2?|map)$";

/// When the `Secure` attribute is set on the session cookie.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Secure {
    /// When the request came over HTTPS: the `X-Forwarded-Proto` or `Forwarded: proto=`
    /// header of a TLS-terminating proxy, or an `https` URI scheme. The default.
    #[default]
    Auto,
    /// Always: the cookie is only ever sent over HTTPS.
    Always,
    /// Never (plain-HTTP development setups).
    Never,
}

/// The `SameSite` attribute of the session cookie.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum SameSite {
    /// `SameSite=Strict`: never sent on cross-site requests.
    Strict,
    /// `SameSite=Lax`: sent on top-level navigations only. The default.
    #[default]
    Lax,
    /// `SameSite=None` (browsers then require `Secure`).
    None,
}

/// When a session is replicated at the end of a request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReplicateWhen {
    /// Only when the request changed it (created, wrote, removed, cycled the id,
    /// invalidated). A request that only reads sends nothing. The default.
    #[default]
    Changed,
    /// After every request that loaded the session, changed or not (Tomcat's
    /// behaviour; costs one message per read). The manager sends a whole unchanged
    /// session only when built with `with_replicate_only_changes(false)`; otherwise
    /// such a commit records the access and sends nothing.
    Always,
}

/// What a request gets when its session's synchronous replication fails
/// (the members did not acknowledge in time, or the manager refused the commit).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OnSyncFailure {
    /// `503 Service Unavailable` with `Retry-After: 1` instead of the handler's response:
    /// the client learns its change may not have reached the other nodes.
    ServiceUnavailable,
    /// The handler's response, with a warning in the log and the failure counted.
    /// The change is kept locally and reaches the others with the next change. The default.
    #[default]
    LogAndContinue,
}

/// What a request carrying a session gets while this node is not ready (its state
/// transfer from the other members is still running).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NotReady {
    /// `503 Service Unavailable` with `Retry-After` (whole seconds, at least 1) at once,
    /// so a load balancer retries on another node.
    ServiceUnavailable {
        /// The `Retry-After` to send.
        retry_after: Duration,
    },
    /// Wait until the node is ready, at most `timeout`, then `503` as above.
    Wait {
        /// The longest wait.
        timeout: Duration,
    },
}

impl Default for NotReady {
    fn default() -> Self {
        NotReady::ServiceUnavailable {
            retry_after: Duration::from_secs(1),
        }
    }
}

/// The layer's settings, shared by every request (built by the `with_*` methods of
/// [`ReplicatedSessions`](crate::ReplicatedSessions)).
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) cookie_name: String,
    pub(crate) cookie_path: String,
    pub(crate) cookie_domain: Option<String>,
    pub(crate) secure: Secure,
    pub(crate) http_only: bool,
    pub(crate) same_site: SameSite,
    pub(crate) max_age: Option<Duration>,
    pub(crate) replicate: ReplicateWhen,
    pub(crate) filter: Option<Regex>,
    pub(crate) sync_failure: OnSyncFailure,
    pub(crate) primary_indicator: bool,
    pub(crate) primary_header: Option<HeaderName>,
    pub(crate) not_ready: NotReady,
    pub(crate) serialize_requests: bool,
    pub(crate) rebind_grace: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            cookie_name: DEFAULT_COOKIE_NAME.to_owned(),
            cookie_path: "/".to_owned(),
            cookie_domain: None,
            secure: Secure::Auto,
            http_only: true,
            same_site: SameSite::Lax,
            max_age: None,
            replicate: ReplicateWhen::Changed,
            filter: Some(Regex::new(DEFAULT_FILTER).expect("the default filter is a valid regex")),
            sync_failure: OnSyncFailure::LogAndContinue,
            primary_indicator: false,
            primary_header: None,
            not_ready: NotReady::default(),
            serialize_requests: false,
            rebind_grace: Duration::from_secs(2),
        }
    }
}

impl Settings {
    /// The longest time a request may wait for the node to become ready.
    pub(crate) fn retry_after(&self) -> Duration {
        match self.not_ready {
            NotReady::ServiceUnavailable { retry_after } => retry_after,
            NotReady::Wait { .. } => Duration::from_secs(1),
        }
    }

    pub(crate) fn is_filtered(&self, path: &str) -> bool {
        self.filter.as_ref().is_some_and(|f| f.is_match(path))
    }
}
