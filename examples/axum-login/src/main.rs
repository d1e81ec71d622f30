//! An [axum-login](https://docs.rs/axum-login) 0.18 app (a login form, a password hash
//! check, a protected page, logout) whose sessions a tribes cluster replicates: the only
//! tribes-specific line is the session store, `TowerSessionStore::new(manager)`, given to
//! the `SessionManagerLayer` of the tower-sessions 0.14 that axum-login re-exports.
//!
//! A user logged in on one node stays logged in when that node dies (the next request goes
//! to another node, which holds the session), and a logout on any node logs the user out on
//! every node. `tests/failover.rs` checks both through the shipped nginx config.
//!
//! A password change (`POST /password`) logs the user out on every device: the store
//! gives each session its axum-login user as principal
//! ([`TowerSessionStore::with_principal`]), and the handler calls
//! [`SessionManager::invalidate_principal`]. `tests/password_change.rs` checks it.
//!
//! Three nodes sharing one key file (`tribes-demo keygen cluster.key` makes one) and the
//! users file `examples/axum-login/users.txt` (user `ferris`, password `crab-rave`):
//!
//! ```sh
//! cargo run -p tribes-example-axum-login -- --route a --http 127.0.0.1:8081 --cluster 127.0.0.1:4001 \
//!     --member 127.0.0.1:4002 --member 127.0.0.1:4003 --cluster-key-file cluster.key \
//!     --users examples/axum-login/users.txt
//! # likewise b on :8082/:4002 and c on :8083/:4003, then nginx with deploy/nginx/tribes-demo.conf
//! ```
//!
//! `echo -n PASSWORD | tribes-axum-login hash-password` prints a line's hash.
//!
//! The session cookie is `TRIBESSESSIONID`, the name the shipped nginx config reads. Its
//! value is tower-sessions' id, which carries no route, so nginx spreads requests over
//! every node (its `cluster` upstream) and fails over when one dies; the sync-ack manager
//! makes that safe (a login is answered once every node holds it).

mod users;
mod web;

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::HeaderValue;
use axum::response::{Json, Response};
use axum::routing::{get, post};
use axum_login::tower_sessions::cookie::time;
use axum_login::tower_sessions::{Expiry, SessionManagerLayer};
use axum_login::{AuthManagerLayerBuilder, login_required};
use clap::{Parser, Subcommand};
use serde_json::{Value, json};
use tribes::{Channel, Keyring, SendMode, StaticDiscovery};
use tribes_sessions::{ManagerKind, SessionManager, TowerSessionStore};

use crate::users::Backend;

/// One node of an axum-login app replicated by tribes.
#[derive(Debug, Parser)]
#[command(name = "tribes-axum-login", version, about)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// This node's name in the cluster.
    #[arg(long, default_value = "a")]
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
    cluster_key_file: Option<PathBuf>,
    /// The users: one `name:hash` a line (the same file on every node).
    #[arg(long)]
    users: Option<PathBuf>,
    /// Idle minutes before a session expires.
    #[arg(long, default_value_t = 30)]
    max_inactive_minutes: i64,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Read a password on stdin and print its Argon2 hash for the users file.
    HashPassword,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
        .init();
    let args = Args::parse();
    if let Some(Command::HashPassword) = args.command {
        let mut password = String::new();
        std::io::stdin().read_to_string(&mut password)?;
        println!(
            "{}",
            password_auth::generate_hash(password.trim_end_matches(['\n', '\r']))
        );
        return Ok(());
    }
    let key_file = args
        .cluster_key_file
        .as_ref()
        .ok_or("--cluster-key-file is missing: every node needs the cluster's key (`tribes-demo keygen cluster.key` makes one)")?;
    let users = args
        .users
        .as_ref()
        .ok_or("--users is missing: name the users file (`name:hash` lines, e.g. examples/axum-login/users.txt)")?;
    let backend = Backend::load(users)?;

    let channel = Channel::builder(&args.route)
        .with_bind(args.cluster)
        .with_cluster_key(Keyring::from_file(key_file)?)
        .with_discovery(StaticDiscovery::new(args.members.clone()))
        .start()
        .await?;
    // Sync-ack: a login (or logout) is answered once every member applied it, so any node
    // serves the next request, even if this one dies right after answering.
    let manager = SessionManager::builder("/")
        .with_kind(ManagerKind::Delta)
        .with_send_mode(SendMode::SyncAck)
        .with_ack_timeout(Duration::from_secs(3))
        .start(channel.clone())
        .await?;

    // From here on, a plain axum-login app.
    // The store tells the manager who is logged in: axum-login keeps the user's id under
    // `axum-login.data`, and that id is the session's principal.
    let store = TowerSessionStore::new(manager.clone())
        .with_principal(|data| Some(data.get("axum-login.data")?.get("user_id")?.as_str()?.to_owned()));
    let sessions = SessionManagerLayer::new(store)
        .with_name("TRIBESSESSIONID")
        .with_secure(false)
        .with_expiry(Expiry::OnInactivity(time::Duration::minutes(args.max_inactive_minutes)));
    let auth = AuthManagerLayerBuilder::new(backend, sessions).build();
    let route = HeaderValue::from_str(&args.route)?;
    let router = Router::new()
        .route("/", get(web::protected))
        .route("/password", post(web::change_password))
        .route_layer(login_required!(Backend, login_url = "/login"))
        .route("/login", get(web::login_form).post(web::login))
        .route("/logout", post(web::logout))
        .layer(auth)
        .route("/cluster", get(cluster))
        .with_state(manager.clone())
        // Which node answered, for people and for the failover test.
        .layer(axum::middleware::map_response(move |mut r: Response| {
            let route = route.clone();
            async move {
                r.headers_mut().insert("x-tribes-node", route);
                r
            }
        }));

    let listener = tokio::net::TcpListener::bind(args.http).await?;
    tracing::info!(route = %args.route, http = %args.http, cluster = %args.cluster, "tribes-axum-login serving");
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    manager.shutdown().await;
    channel.shutdown().await;
    Ok(())
}

/// `GET /cluster`: whether this node finished its state transfer, the members it sees and
/// the sessions it holds.
async fn cluster(State(manager): State<SessionManager>) -> Json<Value> {
    Json(json!({
        "ready": manager.is_ready(),
        "members": manager.stats().servers.len(),
        "sessions": manager.session_count(),
    }))
}
