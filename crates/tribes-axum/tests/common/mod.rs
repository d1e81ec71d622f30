//! Helpers: real tribes channels on loopback, real managers, axum served on 127.0.0.1:0
//! and a real HTTP client that handles cookies by hand (to see every `Set-Cookie`).
#![allow(dead_code, unreachable_pub, unused_imports)]

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::Deserialize;
use tribes::Channel;
use tribes_axum::{ReplicatedSessions, Session, SessionError, StatusRouter, metrics_router};
use tribes_sessions::{SessionManager, SessionManagerBuilder};

pub const COOKIE: &str = "TRIBESSESSIONID";

pub use tribes_testkit::channel::channel;
pub use tribes_testkit::sessions::builder;
pub use tribes_testkit::{eventually as wait_until, init_tracing};

/// One node: channel, manager and the HTTP server of [`app`].
pub struct Node {
    pub channel: Channel,
    pub manager: SessionManager,
    pub addr: SocketAddr,
}

impl Node {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// Starts a ready node `name` finding `peers`, with the layer configured by `layer`.
pub async fn node(
    name: &str,
    peers: &[&Node],
    manager: impl FnOnce(SessionManagerBuilder) -> SessionManagerBuilder,
    layer: impl FnOnce(ReplicatedSessions) -> ReplicatedSessions,
) -> Node {
    node_with(name, peers, manager, layer, |s| s).await
}

/// [`node`], with the status router configured by `status`.
pub async fn node_with(
    name: &str,
    peers: &[&Node],
    manager: impl FnOnce(SessionManagerBuilder) -> SessionManagerBuilder,
    layer: impl FnOnce(ReplicatedSessions) -> ReplicatedSessions,
    status: impl FnOnce(StatusRouter) -> StatusRouter,
) -> Node {
    let addrs: Vec<SocketAddr> = peers.iter().map(|n| n.channel.local().addr()).collect();
    let ch = channel(name, &addrs).await;
    if !addrs.is_empty() {
        tribes_testkit::channel::wait_for_members(&ch, addrs.len()).await;
    }
    let m = tribes_testkit::sessions::start_ready(manager(builder("/app")), &ch).await;
    let addr = serve(app_with(m.clone(), layer, status)).await;
    Node {
        channel: ch,
        manager: m,
        addr,
    }
}

/// Waits until every manager sees all the others as serving the context.
pub async fn wait_mesh(nodes: &[&Node]) {
    let managers: Vec<&SessionManager> = nodes.iter().map(|n| &n.manager).collect();
    tribes_testkit::sessions::wait_mesh(&managers).await;
}

pub async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

#[derive(Deserialize)]
pub struct Delay {
    #[serde(default)]
    delay_ms: u64,
}

/// The test app. Values are strings unless said otherwise; "-" means absent.
pub fn app(manager: SessionManager, layer: impl FnOnce(ReplicatedSessions) -> ReplicatedSessions) -> Router {
    app_with(manager, layer, |s| s)
}

/// [`app`], with the status router configured by `status`.
pub fn app_with(
    manager: SessionManager,
    layer: impl FnOnce(ReplicatedSessions) -> ReplicatedSessions,
    status: impl FnOnce(StatusRouter) -> StatusRouter,
) -> Router {
    Router::new()
        .route("/none", get(|| async { "no session here" }))
        .route(
            "/get/{key}",
            get(|session: Session, Path(key): Path<String>| async move {
                Ok::<_, SessionError>(session.get::<String>(&key).await?.unwrap_or_else(|| "-".into()))
            }),
        )
        .route(
            "/set/{key}/{value}",
            post(
                |session: Session, Path((key, value)): Path<(String, String)>| async move {
                    session.insert(&key, value).await?;
                    Ok::<_, SessionError>("ok")
                },
            ),
        )
        .route(
            "/typed/{key}",
            get(|session: Session, Path(key): Path<String>| async move {
                match session.try_get::<u64>(&key).await {
                    Ok(v) => v.map_or("-".to_string(), |v| v.to_string()),
                    Err(e) if e.is_stale() => "stale".to_string(),
                    Err(e) => format!("error: {e}"),
                }
            }),
        )
        .route(
            // `get` with `?`, twice in one request: a stale value is absent both times.
            "/u64-twice/{key}",
            get(|session: Session, Path(key): Path<String>| async move {
                let first: Option<u64> = session.get(&key).await?;
                let second: Option<u64> = session.get(&key).await?;
                Ok::<_, SessionError>(format!("{first:?} {second:?}"))
            }),
        )
        .route(
            "/incr",
            post(|session: Session, Query(d): Query<Delay>| async move {
                let n: u64 = session.get("n").await?.unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(d.delay_ms)).await;
                session.insert("n", n + 1).await?;
                Ok::<_, SessionError>((n + 1).to_string())
            }),
        )
        .route(
            "/invalidate",
            post(|session: Session| async move {
                session.invalidate().await?;
                Ok::<_, SessionError>("bye")
            }),
        )
        .route(
            "/relogin/{user}",
            post(|session: Session, Path(user): Path<String>| async move {
                session.invalidate().await?;
                session.insert("user", user).await?;
                Ok::<_, SessionError>(session.id().await.unwrap_or_default())
            }),
        )
        .route(
            "/cycle",
            post(|session: Session| async move {
                Ok::<_, SessionError>(session.cycle_id().await?.unwrap_or_else(|| "-".into()))
            }),
        )
        .route(
            "/id",
            get(|session: Session| async move { session.id().await.unwrap_or_else(|| "-".into()) }),
        )
        // Principals: "-" means nobody.
        .route(
            "/login/{user}",
            post(|session: Session, Path(user): Path<String>| async move {
                session.set_principal(&user).await?;
                Ok::<_, SessionError>("ok")
            }),
        )
        .route(
            "/whoami",
            get(|session: Session| async move { session.principal().await.unwrap_or_else(|| "-".into()) }),
        )
        .route(
            "/logout",
            post(|session: Session| async move {
                session.clear_principal().await?;
                Ok::<_, SessionError>("ok")
            }),
        )
        .route(
            "/logout-everywhere",
            post(|session: Session| async move {
                let report = session.invalidate_principal().await?;
                Ok::<_, SessionError>(report.map_or("-".to_string(), |r| r.ended_here.to_string()))
            }),
        )
        .route(
            // One line per session: route and log hash.
            "/sessions-of/{user}",
            get(|session: Session, Path(user): Path<String>| async move {
                let list = session.sessions_of(&user).await?;
                Ok::<_, SessionError>(
                    list.iter()
                        .map(|s| format!("{} {}\n", s.route, s.log_id))
                        .collect::<String>(),
                )
            }),
        )
        .route(
            "/static/app.js",
            post(|session: Session| async move {
                match session.insert("x", "y").await {
                    Err(SessionError::FilteredPath { .. }) => (StatusCode::OK, "filtered"),
                    Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "other error"),
                    Ok(()) => (StatusCode::OK, "written"),
                }
            }),
        )
        .layer(layer(ReplicatedSessions::new(manager.clone())))
        // What middleware outside the layer sees: the primary indicator extension, as a header.
        .layer(axum::middleware::map_response(
            |mut r: axum::response::Response| async move {
                if let Some(tribes_axum::PrimaryIndicator(p)) = r.extensions().get().copied() {
                    let v = if p { "true" } else { "false" };
                    r.headers_mut().insert("x-seen-primary-extension", v.parse().unwrap());
                }
                r
            },
        ))
        .nest("/cluster", status(StatusRouter::new(manager.clone())).into_router())
        .merge(metrics_router(manager))
}

/// A response, reduced to what the tests look at.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub set_cookies: Vec<String>,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Resp {
    /// The value of the session cookie set by the response, if any.
    pub fn session_cookie(&self) -> Option<String> {
        self.set_cookies.iter().find_map(|c| {
            let first = c.split(';').next()?;
            let (name, value) = first.split_once('=')?;
            (name.trim() == COOKIE).then(|| value.trim().to_string())
        })
    }

    /// The full `Set-Cookie` line of the session cookie.
    pub fn session_set_cookie(&self) -> Option<&str> {
        self.set_cookies
            .iter()
            .find(|c| c.starts_with(&format!("{COOKIE}=")))
            .map(String::as_str)
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// Sends a request with an optional session cookie value and extra headers.
pub async fn send(method: &str, url: &str, cookie: Option<&str>, headers: &[(&str, &str)]) -> Resp {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = client().request(method, url);
    if let Some(c) = cookie {
        req = req.header("cookie", format!("{COOKIE}={c}"));
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("request sent");
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
    let headers = resp.headers().clone();
    let set_cookies = headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    let body = resp.text().await.unwrap();
    Resp {
        status,
        set_cookies,
        headers,
        body,
    }
}

pub async fn get_(url: &str, cookie: Option<&str>) -> Resp {
    send("GET", url, cookie, &[]).await
}

/// The base id of a cookie value `id.route`.
pub fn sid(cookie: &str) -> tribes_sessions::SessionId {
    split(cookie).0.parse().expect("a session id")
}

pub async fn post_(url: &str, cookie: Option<&str>) -> Resp {
    send("POST", url, cookie, &[]).await
}

/// Splits a cookie value `id.route`.
pub fn split(cookie: &str) -> (&str, &str) {
    cookie.split_once('.').expect("cookie value is id.route")
}
