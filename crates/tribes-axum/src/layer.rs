//! [`ReplicatedSessions`]: the tower `Layer` and its `with_*` builder methods.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderName;
use regex::Regex;
use tower::Layer;
use tribes_sessions::SessionManager;

use crate::service::{ReplicatedSessionsService, SessionLocks, Shared};
use crate::settings::{NotReady, OnSyncFailure, ReplicateWhen, SameSite, Secure, Settings};

/// Replicated sessions for an Axum (or any Tower) app: Tomcat's `ReplicationValve`
/// and `JvmRouteBinderValve` as one tower [`Layer`].
///
/// For every request the layer reads the session cookie (`id.route`), hands the
/// [`Session`](crate::Session) extractor a lazy handle, and when the response is
/// ready commits what the handler changed to the
/// [`SessionManager`](tribes_sessions::SessionManager), which replicates it to the
/// other members (waiting for their acks in the manager's sync mode). A request whose
/// cookie names another node's route, for a session this node holds (failover),
/// rebinds the session here and gets a new cookie `id.thisroute`.
///
/// See the [crate docs](crate) for an example and the concurrency guarantees.
///
/// # Panics
///
/// The builder methods taking text panic on values that cannot be used: an invalid
/// cookie name, path or domain, header name, or filter regex. These are programming
/// errors found at startup.
#[derive(Clone)]
pub struct ReplicatedSessions {
    shared: Shared,
}

impl fmt::Debug for ReplicatedSessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplicatedSessions")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl ReplicatedSessions {
    /// A layer serving the sessions of `manager`'s context, with the defaults:
    /// cookie `TRIBESSESSIONID` on path `/`, `HttpOnly`, `SameSite=Lax`, `Secure` on
    /// HTTPS, no `Max-Age`; replicate only changed sessions; skip [`DEFAULT_FILTER`](crate::DEFAULT_FILTER)
    /// paths; log and continue on sync failures; `503` with `Retry-After: 1` while not
    /// ready; requests of one session run concurrently; sessions end at the manager's max
    /// lifetime however active ([`with_max_lifetime`](tribes_sessions::SessionManagerBuilder::with_max_lifetime),
    /// default 8 hours from creation).
    ///
    /// # Panics
    /// If the node's route (its channel name) cannot be part of a cookie value: it must
    /// be non-empty, without spaces, `"`, `,`, `;` or a backslash.
    pub fn new(manager: SessionManager) -> Self {
        let route = manager.route();
        assert!(
            !route.is_empty() && route.bytes().all(crate::cookie::is_route_byte),
            "the node's route {route:?} (its channel name) cannot be part of the session cookie: \
             name the channel with letters, digits and -_.:~ only"
        );
        let counters = crate::counters::counters_for(&manager);
        ReplicatedSessions {
            shared: Shared {
                manager,
                config: Arc::new(Settings::default()),
                counters,
                locks: Arc::new(SessionLocks::default()),
            },
        }
    }

    fn config(mut self, f: impl FnOnce(&mut Settings)) -> Self {
        f(Arc::make_mut(&mut self.shared.config));
        self
    }

    /// The cookie's name (default `TRIBESSESSIONID`).
    ///
    /// # Panics
    /// If `name` is empty or not a cookie token.
    pub fn with_cookie_name(self, name: &str) -> Self {
        assert!(
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b)),
            "cookie name {name:?} is not a valid cookie token: use letters, digits and -_."
        );
        let name = name.to_owned();
        self.config(|c| c.cookie_name = name)
    }

    /// The cookie's `Path` (default `/`).
    ///
    /// # Panics
    /// If `path` does not start with `/` or contains `;` or control characters.
    pub fn with_cookie_path(self, path: &str) -> Self {
        assert!(
            path.starts_with('/') && path.bytes().all(|b| b.is_ascii_graphic() && b != b';'),
            "cookie path {path:?} must start with '/' and contain no ';', spaces or control characters"
        );
        let path = path.to_owned();
        self.config(|c| c.cookie_path = path)
    }

    /// The cookie's `Domain` (default none: the request's host only).
    ///
    /// # Panics
    /// If `domain` is empty or contains `;`, spaces or control characters.
    pub fn with_cookie_domain(self, domain: &str) -> Self {
        assert!(
            !domain.is_empty() && domain.bytes().all(|b| b.is_ascii_graphic() && b != b';'),
            "cookie domain {domain:?} must be a host name without ';' or spaces"
        );
        let domain = domain.to_owned();
        self.config(|c| c.cookie_domain = Some(domain))
    }

    /// When the cookie gets `Secure` (default [`Secure::Auto`]: on HTTPS requests).
    pub fn with_secure(self, secure: Secure) -> Self {
        self.config(|c| c.secure = secure)
    }

    /// Whether the cookie gets `HttpOnly` (default `true`: scripts cannot read it).
    pub fn with_http_only(self, http_only: bool) -> Self {
        self.config(|c| c.http_only = http_only)
    }

    /// The cookie's `SameSite` (default [`SameSite::Lax`]).
    pub fn with_same_site(self, same_site: SameSite) -> Self {
        self.config(|c| c.same_site = same_site)
    }

    /// The cookie's `Max-Age` (default `None`: a browser-session cookie). The session
    /// itself expires after the manager's max inactive interval, and at its max
    /// lifetime, either way.
    pub fn with_max_age(self, max_age: Option<Duration>) -> Self {
        self.config(|c| c.max_age = max_age)
    }

    /// When a session is replicated (default [`ReplicateWhen::Changed`]).
    pub fn with_replicate(self, when: ReplicateWhen) -> Self {
        self.config(|c| c.replicate = when)
    }

    /// Paths (a regex matched against the URI path) that never create, load, rebind or
    /// replicate a session: their handlers can read an existing session, and writing
    /// gives [`SessionError::FilteredPath`](crate::SessionError::FilteredPath).
    /// Default [`DEFAULT_FILTER`](crate::DEFAULT_FILTER).
    ///
    /// # Panics
    /// If `pattern` is not a valid regex.
    pub fn with_filter(self, pattern: &str) -> Self {
        let re = Regex::new(pattern)
            .unwrap_or_else(|e| panic!("session filter {pattern:?} is not a valid regex: {e}; fix the pattern"));
        self.config(|c| c.filter = Some(re))
    }

    /// No filter: every path can create and replicate sessions.
    pub fn without_filter(self) -> Self {
        self.config(|c| c.filter = None)
    }

    /// What a request gets when its synchronous replication fails
    /// (default [`OnSyncFailure::LogAndContinue`]).
    pub fn with_sync_failure(self, on_failure: OnSyncFailure) -> Self {
        self.config(|c| c.sync_failure = on_failure)
    }

    /// Sets the response extension [`PrimaryIndicator`](crate::PrimaryIndicator) on every
    /// response whose request loaded a session, for middleware outside this layer (Tomcat's
    /// `PrimaryIndicatorValve`; default off, as there: it costs a lookup and an extension
    /// map per response).
    pub fn with_primary_indicator(self) -> Self {
        self.config(|c| c.primary_indicator = true)
    }

    /// A response header telling whether this node is the session's primary, e.g.
    /// `Some("x-tribes-primary")` gives `x-tribes-primary: true` (default none). A name
    /// also turns on [`ReplicatedSessions::with_primary_indicator`].
    ///
    /// # Panics
    /// If the name is not a valid header name.
    pub fn with_primary_indicator_header(self, name: Option<&str>) -> Self {
        let name = name.map(|n| {
            HeaderName::from_bytes(n.as_bytes())
                .unwrap_or_else(|e| panic!("primary indicator header {n:?} is not a valid header name: {e}"))
        });
        self.config(|c| {
            c.primary_indicator |= name.is_some();
            c.primary_header = name;
        })
    }

    /// What requests carrying a session get while the node is not ready
    /// (default `503` with `Retry-After: 1`).
    pub fn with_not_ready(self, not_ready: NotReady) -> Self {
        self.config(|c| c.not_ready = not_ready)
    }

    /// Whether the requests of one session run one after another on this node
    /// (default `false`: concurrently, last writer wins). See the crate docs' table.
    pub fn with_serialize_requests(self, serialize: bool) -> Self {
        self.config(|c| c.serialize_requests = serialize)
    }

    /// After this node rebinds a session (failover), it does not rebind it again, to
    /// this or another route, for `grace` (default 2 s): requests still in flight with
    /// the old cookie, or a balancer alternating between nodes, are served without a
    /// replicated route change on every request.
    pub fn with_rebind_grace(self, grace: Duration) -> Self {
        self.config(|c| c.rebind_grace = grace)
    }
}

impl<S> Layer<S> for ReplicatedSessions {
    type Service = ReplicatedSessionsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ReplicatedSessionsService::new(inner, self.shared.clone())
    }
}
