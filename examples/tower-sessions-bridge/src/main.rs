//! An axum app written as any tower-sessions user writes it (`SessionManagerLayer`, the
//! `Session` extractor), whose sessions a tribes cluster replicates: the only tribes-specific
//! line is the store, `TowerSessionStore::new(manager)`.
//!
//! Run with `cargo run -p tower-sessions-bridge -- ...`, e.g. two nodes sharing one key file
//! (made by `tribes-demo keygen cluster.key`):
//!
//! ```sh
//! cargo run -p tower-sessions-bridge -- --route a --http 127.0.0.1:8081 --cluster 127.0.0.1:4001 \
//!     --member 127.0.0.1:4002 --cluster-key-file cluster.key
//! cargo run -p tower-sessions-bridge -- --route b --http 127.0.0.1:8082 --cluster 127.0.0.1:4002 \
//!     --member 127.0.0.1:4001 --cluster-key-file cluster.key
//! curl -c jar -X POST '127.0.0.1:8081/login?user=alice'; curl -b jar 127.0.0.1:8082/me
//! ```
//!
//! Endpoints: `POST /login?user=NAME` stores the user in the session, `GET /me` returns it
//! (401 without a login), `POST /logout` deletes the session, and `GET /cluster` says whether
//! this node is ready and how many members it sees.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Json;
use axum::routing::{get, post};
use clap::Parser;
use serde::Deserialize;
use serde_json::{Value, json};
use tower_sessions::cookie::time;
use tower_sessions::{Expiry, Session, SessionManagerLayer};
use tribes::{Channel, Keyring, SendMode, StaticDiscovery};
use tribes_sessions::{ManagerKind, SessionManager, TowerSessionStore};

/// The session key holding the logged-in user.
const USER: &str = "user";

/// One node of a tower-sessions app replicated by tribes.
#[derive(Debug, Parser)]
#[command(name = "tower-sessions-bridge", version, about)]
struct Args {
    /// This node's name in the cluster.
    #[arg(long)]
    route: String,
    /// Address the HTTP server listens on.
    #[arg(long, default_value = "127.0.0.1:8081")]
    http: SocketAddr,
    /// Address the cluster receiver listens on (and advertises).
    #[arg(long, default_value = "127.0.0.1:4001")]
    cluster: SocketAddr,
    /// Another member's cluster address (repeatable).
    #[arg(long = "member")]
    members: Vec<SocketAddr>,
    /// The cluster key file every member shares (`tribes-demo keygen PATH` makes one).
    #[arg(long)]
    cluster_key_file: PathBuf,
    /// Idle minutes before a session expires.
    #[arg(long, default_value_t = 30)]
    max_inactive_minutes: i64,
}

#[derive(Debug, Deserialize)]
struct Login {
    user: String,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
        .init();
    let args = Args::parse();

    let channel = Channel::builder(&args.route)
        .with_bind(args.cluster)
        .with_cluster_key(Keyring::from_file(&args.cluster_key_file)?)
        .with_discovery(StaticDiscovery::new(args.members.clone()))
        .start()
        .await?;
    // Sync-ack: a login is answered once every member holds it, so any node can serve the
    // next request even if this one dies right after answering.
    let manager = SessionManager::builder("/")
        .with_kind(ManagerKind::Delta)
        .with_send_mode(SendMode::SyncAck)
        .with_ack_timeout(Duration::from_secs(3))
        .start(channel.clone())
        .await?;

    // From here on, plain tower-sessions.
    let layer = SessionManagerLayer::new(TowerSessionStore::new(manager.clone()))
        .with_secure(false)
        .with_expiry(Expiry::OnInactivity(time::Duration::minutes(args.max_inactive_minutes)));
    let router = Router::new()
        .route("/login", post(login))
        .route("/me", get(me))
        .route("/logout", post(logout))
        .layer(layer)
        .route("/cluster", get(cluster))
        .with_state(manager.clone());

    let listener = tokio::net::TcpListener::bind(args.http).await?;
    tracing::info!(route = %args.route, http = %args.http, cluster = %args.cluster, "tower-sessions-bridge serving");
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    manager.shutdown().await;
    channel.shutdown().await;
    Ok(())
}

/// `POST /login?user=NAME`: a new session id (against fixation), then the user in it.
async fn login(session: Session, Query(login): Query<Login>) -> Result<Json<Value>, StatusCode> {
    session.cycle_id().await.map_err(internal)?;
    session.insert(USER, &login.user).await.map_err(internal)?;
    Ok(Json(json!({ "user": login.user })))
}

/// `GET /me`: the logged-in user, or 401.
async fn me(session: Session) -> Result<Json<Value>, StatusCode> {
    match session.get::<String>(USER).await.map_err(internal)? {
        Some(user) => Ok(Json(json!({ "user": user }))),
        None => Err(StatusCode::UNAUTHORIZED),
    }
}

/// `POST /logout`: the session is deleted everywhere.
async fn logout(session: Session) -> Result<StatusCode, StatusCode> {
    session.flush().await.map_err(internal)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /cluster`: whether this node finished its state transfer and how many members it sees.
async fn cluster(State(manager): State<SessionManager>) -> Json<Value> {
    Json(json!({
        "ready": manager.is_ready(),
        "members": manager.stats().servers.len(),
        "sessions": manager.session_count(),
    }))
}

fn internal(e: tower_sessions::session::Error) -> StatusCode {
    tracing::warn!(error = %e, "session store error");
    StatusCode::INTERNAL_SERVER_ERROR
}
