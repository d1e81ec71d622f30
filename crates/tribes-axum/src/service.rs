//! [`ReplicatedSessionsService`]: what the layer does around each request.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::http::header::{RETRY_AFTER, SET_COOKIE};
use axum::http::{HeaderValue, Request, Response, StatusCode};
use tokio::sync::OwnedMutexGuard;
use tower::Service;
use tribes_sessions::{SessionId, SessionManager};

use crate::backend::{self, CommitFailure, CommitOutcome};
use crate::cookie::{self, CookieId, RequestCookie};
use crate::counters::LayerCounters;
use crate::error::retry_after_value;
use crate::future::ResponseFuture;
use crate::handle::{Loaded, RequestSession, State};
use crate::settings::{NotReady, OnSyncFailure, ReplicateWhen, Settings};

/// Whether this node is the primary of the request's session: a response extension
/// set by the layer, when [`ReplicatedSessions::with_primary_indicator`](crate::ReplicatedSessions::with_primary_indicator) is on, on every
/// response whose request loaded a session (Tomcat's `PrimaryIndicatorValve`). With the delta manager every node holding the session is primary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrimaryIndicator(pub bool);

/// What every request of one layer shares: the layer's manager, settings, counters and
/// locks (made by [`ReplicatedSessions`](crate::ReplicatedSessions), a cheap `Clone`).
#[derive(Clone, Debug)]
pub(crate) struct Shared {
    pub(crate) manager: SessionManager,
    pub(crate) config: Arc<Settings>,
    pub(crate) counters: Arc<LayerCounters>,
    pub(crate) locks: Arc<SessionLocks>,
}

/// The service made by [`ReplicatedSessions`](crate::ReplicatedSessions): see there.
#[derive(Clone)]
pub struct ReplicatedSessionsService<S> {
    inner: S,
    layer: Shared,
}

impl<S> fmt::Debug for ReplicatedSessionsService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplicatedSessionsService")
            .field("layer", &self.layer)
            .finish_non_exhaustive()
    }
}

impl<S> ReplicatedSessionsService<S> {
    pub(crate) fn new(inner: S, layer: Shared) -> Self {
        ReplicatedSessionsService { inner, layer }
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ReplicatedSessionsService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: From<String> + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        // The clone is not ready: swap so the one that is serves this request.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::new(run(self.layer.clone(), inner, req))
    }
}

fn unavailable<B: From<String>>(retry_after: Duration, msg: &str) -> Response<B> {
    let mut resp = Response::new(B::from(msg.to_owned()));
    *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    resp.headers_mut().insert(RETRY_AFTER, retry_after_value(retry_after));
    resp.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

async fn run<S, ReqBody, ResBody>(
    layer: Shared,
    mut inner: S,
    mut req: Request<ReqBody>,
) -> Result<Response<ResBody>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: From<String>,
{
    let config = &layer.config;
    let manager = &layer.manager;
    layer.counters.requests.inc();
    let https = cookie::is_https(req.headers(), req.uri());
    let cookie = match cookie::read(req.headers(), &config.cookie_name) {
        RequestCookie::Present(c) => Some(c),
        RequestCookie::Malformed => {
            layer.counters.malformed_cookies.inc();
            tracing::debug!("malformed session cookie ignored");
            None
        }
        RequestCookie::Missing => None,
    };
    let path = req.uri().path();
    let filtered = config.is_filtered(path).then(|| path.to_owned());
    let rs = Arc::new(RequestSession {
        manager: manager.clone(),
        config: config.clone(),
        counters: layer.counters.clone(),
        cookie: cookie.clone(),
        filtered,
        state: tokio::sync::Mutex::new(State::default()),
    });
    if rs.filtered.is_some() {
        req.extensions_mut().insert(rs);
        return inner.call(req).await;
    }

    // A request carrying a session waits for (or is refused during) the state transfer.
    if cookie.is_some() && !backend::is_ready(manager) {
        let ready = match config.not_ready {
            NotReady::ServiceUnavailable { .. } => false,
            NotReady::Wait { timeout } => backend::wait_ready(manager, timeout).await,
        };
        if !ready {
            layer.counters.not_ready.inc();
            return Ok(unavailable(
                config.retry_after(),
                "service unavailable: this node is starting, retry shortly",
            ));
        }
    }

    let _serialized = match (&cookie, config.serialize_requests) {
        (Some(c), true) => Some(layer.locks.lock(c.id).await),
        _ => None,
    };

    if let Some(c) = &cookie {
        let local = backend::local_route(manager);
        if c.route.as_deref() != Some(local) {
            rebind(&layer, &rs, c, local).await;
        }
    }

    req.extensions_mut().insert(rs.clone());
    let mut resp = inner.call(req).await?;
    let mut st = rs.state.lock().await;
    if let Some(failure) = finish(&layer, &mut st, https, &mut resp).await {
        if config.sync_failure == OnSyncFailure::ServiceUnavailable {
            let mut unavailable = unavailable::<ResBody>(
                Duration::from_secs(1),
                "service unavailable: the session change was not confirmed by the cluster, retry",
            );
            for v in resp.headers().get_all(SET_COOKIE) {
                unavailable.headers_mut().append(SET_COOKIE, v.clone());
            }
            tracing::warn!(%failure, "session replication failed: answering 503");
            return Ok(unavailable);
        }
        tracing::warn!(%failure, "session replication failed: continuing (the change is kept on this node)");
    }
    Ok(resp)
}

/// JvmRouteBinderValve: a cookie naming another route for a session held here moves
/// the session to this node.
async fn rebind(layer: &Shared, rs: &RequestSession, c: &CookieId, local: &str) {
    let manager = &layer.manager;
    let Some(h) = backend::get(manager, &c.id).await else {
        rs.state.lock().await.current = Loaded::Absent;
        return;
    };
    let mut st = rs.state.lock().await;
    if h.route() == local {
        // Already bound here (by another request): only the cookie is behind.
        st.current = Loaded::Present(h);
        st.rebound = true;
        return;
    }
    if layer.locks.rebound_within(&c.id, layer.config.rebind_grace) {
        // This node rebound it moments ago and someone moved it on: don't ping-pong.
        st.current = Loaded::Present(h);
        return;
    }
    match backend::rebind(manager, &c.id, local).await {
        CommitOutcome::Ok => {}
        CommitOutcome::Gone => {
            st.current = Loaded::Absent;
            return;
        }
        CommitOutcome::Failed(e) => {
            // Bound here locally; the others learn the route with the next change.
            layer.counters.sync_failures.inc();
            tracing::warn!(cause = %e, "session rebind not confirmed by every member");
        }
    }
    layer.locks.record_rebind(c.id, layer.config.rebind_grace);
    layer.counters.rebinds.inc();
    tracing::info!(
        context = %manager.context(),
        session = %c.id.log_id(),
        from = c.route.as_deref().unwrap_or("-"),
        to = local,
        "session rebound to this node"
    );
    st.current = Loaded::Present(backend::get(manager, &c.id).await.unwrap_or(h));
    st.rebound = true;
}

/// ReplicationValve: commit what the request changed, set or remove the cookie.
/// Returns the failure to report, if the commit failed.
async fn finish<B>(layer: &Shared, st: &mut State, https: bool, resp: &mut Response<B>) -> Option<CommitFailure> {
    let manager = &layer.manager;
    let config = &layer.config;
    let mut failure = None;
    let mut remove_cookie = false;
    for old in std::mem::take(&mut st.retired) {
        layer.counters.invalidated.inc();
        let _ = backend::commit(manager, &old).await;
    }
    if let Loaded::Present(h) = &st.current {
        if h.is_invalidated() {
            layer.counters.invalidated.inc();
            match backend::commit(manager, h).await {
                CommitOutcome::Failed(e) => failure = Some(e),
                CommitOutcome::Ok | CommitOutcome::Gone => {}
            }
            tracing::debug!(context = %manager.context(), session = %h.id().log_id(), "session invalidated");
            remove_cookie = true;
        } else {
            let changed = h.is_dirty() || st.created || st.cycled;
            let mut gone = false;
            if changed || config.replicate == ReplicateWhen::Always {
                layer.counters.commits.inc();
                match backend::commit(manager, h).await {
                    CommitOutcome::Ok => {}
                    CommitOutcome::Gone => {
                        tracing::info!(
                            context = %manager.context(),
                            session = %h.id().log_id(),
                            "session changes dropped: the session was invalidated or expired meanwhile"
                        );
                        gone = true;
                    }
                    CommitOutcome::Failed(e) => {
                        layer.counters.sync_failures.inc();
                        failure = Some(e);
                    }
                }
            } else {
                backend::touch(manager, &h.id());
            }
            if gone {
                remove_cookie = true;
            } else {
                if st.created {
                    tracing::debug!(context = %manager.context(), session = %h.id().log_id(), "session created");
                }
                if st.created || st.cycled || st.rebound {
                    let value = cookie::value(&h.id(), &h.route());
                    resp.headers_mut()
                        .append(SET_COOKIE, cookie::set(config, &value, https));
                }
                if config.primary_indicator {
                    let primary = backend::is_primary(manager, &h.id());
                    resp.extensions_mut().insert(PrimaryIndicator(primary));
                    if let Some(name) = &config.primary_header {
                        resp.headers_mut().insert(
                            name.clone(),
                            HeaderValue::from_static(if primary { "true" } else { "false" }),
                        );
                    }
                }
            }
        }
    }
    if remove_cookie {
        resp.headers_mut().append(SET_COOKIE, cookie::remove(config, https));
    }
    failure
}

/// Per-session locks (serialised mode) and this node's recent rebinds.
#[derive(Debug, Default)]
pub(crate) struct SessionLocks {
    locks: Mutex<HashMap<SessionId, Arc<tokio::sync::Mutex<()>>>>,
    rebinds: Mutex<HashMap<SessionId, Instant>>,
}

/// Held while a request of a session runs in serialised mode.
#[derive(Debug)]
pub(crate) struct SessionGuard {
    locks: Arc<SessionLocks>,
    id: SessionId,
    guard: Option<OwnedMutexGuard<()>>,
}

impl SessionLocks {
    pub(crate) async fn lock(self: &Arc<Self>, id: SessionId) -> SessionGuard {
        let mutex = {
            let mut map = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            map.entry(id).or_default().clone()
        };
        let guard = mutex.lock_owned().await;
        SessionGuard {
            locks: self.clone(),
            id,
            guard: Some(guard),
        }
    }

    fn rebound_within(&self, id: &SessionId, grace: Duration) -> bool {
        let map = self.rebinds.lock().unwrap_or_else(|e| e.into_inner());
        map.get(id).is_some_and(|t| t.elapsed() < grace)
    }

    fn record_rebind(&self, id: SessionId, grace: Duration) {
        let mut map = self.rebinds.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= 1024 {
            map.retain(|_, t| t.elapsed() < grace);
        }
        map.insert(id, Instant::now());
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        let Some(guard) = self.guard.take() else {
            return;
        };
        let mutex = tokio::sync::OwnedMutexGuard::mutex(&guard).clone();
        drop(guard);
        let mut map = self.locks.locks.lock().unwrap_or_else(|e| e.into_inner());
        // The map and `mutex` hold it: nobody else waits, so the entry can go.
        if map
            .get(&self.id)
            .is_some_and(|m| Arc::ptr_eq(m, &mutex) && Arc::strong_count(m) == 2)
        {
            map.remove(&self.id);
        }
    }
}
