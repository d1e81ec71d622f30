//! The tribes demo: an Axum app whose sessions are replicated across a cluster.
//!
//! Run with `cargo xtask demo` (three nodes on loopback), or one node by hand:
//!
//! ```sh
//! cargo run -p tribes-demo -- --route a --http 127.0.0.1:8081 --cluster 127.0.0.1:4001 --member 127.0.0.1:4002
//! ```
//!
//! Every flag can also come from the environment (`TRIBES_ROUTE`, `TRIBES_HTTP`, …).
//!
//! Open `http://127.0.0.1:8081/cluster/` for the cluster dashboard: every member, its
//! sessions, live charts and events in words, from whichever node you ask.
//! `--admin-token-file FILE` turns on the session browser at `/cluster/sessions` (log in
//! with any user name and the token as the password); `--show-values count` lets it show
//! the counter's value.
//!
//! `--store file:DIR|postgres://…|redis://…` keeps the sessions in a store as well:
//! `--store-mode persist` (default) writes through with `--sync` (a whole-cluster restart
//! loses no acknowledged write) and behind without; `--store-mode shared` turns replication
//! off and makes the store the truth (no `--member` needed). See docs/stores.md.
//!
//! The manager's options: `--manager backup --backups 2` (copies besides the primary),
//! `--sync` (sync-ack) or `--use-ack`, `--serialize-requests` (one request per session at a
//! time), `--replicate-attributes REGEX` (only attributes whose name matches are
//! replicated, Tomcat's `sessionAttributeNameFilter`), and `--cart`: a second application
//! (context `cart`, its own cookie) at `/cart` on the same channel.
//!
//! Who is logged in where (`src/login.rs`): `POST /login` with `user=NAME`, `GET /whoami`,
//! `POST /logout-everywhere` (every session of the user ends on every node) and
//! `GET /sessions-of/NAME` (behind the admin token when there is one);
//! `--max-sessions-per-user N` limits each user's sessions across the cluster, and
//! `--max-sessions-policy evict-oldest|refuse` says whether a login beyond it ends the
//! oldest one or is refused (403). Every cluster event (created, principal set, id
//! changed, invalidated, evicted, expired) is logged once in the cluster, by the node that
//! delivered it, as one `cluster event` line (`src/events.rs`).

mod cart;
mod counter;
mod events;
mod login;
mod page;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post, put};
use clap::{Parser, Subcommand, ValueEnum};
use tribes::{Channel, DnsDiscovery, Farm, Keyring, MulticastDiscovery, SendMode, StaticDiscovery};
use tribes_axum::{AdminToken, Contexts, OnSyncFailure, ReplicatedSessions, Session, StatusRouter, metrics_router};
use tribes_sessions::{ManagerKind, SessionManager, StoreMode};

/// mimalloc rather than the system allocator: a request allocates some 60 times on the
/// node that serves it (callgrind, `benches/results/http.md`), and mimalloc's allocation
/// and free take a fraction of glibc's instructions. The libraries do not choose one.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The name of the demo's session context.
const CONTEXT: &str = "demo";

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Manager {
    /// DeltaManager: every node holds every session.
    Delta,
    /// BackupManager: one primary and one backup per session.
    Backup,
}

/// A node of the tribes demo cluster.
#[derive(Debug, Parser)]
#[command(
    name = "tribes-demo",
    version,
    about,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// This node's route (Tomcat's jvmRoute): the suffix of its session cookies.
    #[arg(long, env = "TRIBES_ROUTE", required_unless_present = "config")]
    route: Option<String>,
    /// Take the node, manager and layer settings from this TOML file (and the
    /// TRIBES_NODE_*, TRIBES_MANAGER_*, TRIBES_LAYER_* variables) instead of the flags
    /// --route, --cluster, --member, --cluster-key-file, --manager, --backups, --sync,
    /// --use-ack, --max-inactive-secs, --replicate-attributes, --serialize-requests,
    /// --max-sessions-per-user and --max-sessions-policy; see docs/configuration.md.
    #[arg(long, env = "TRIBES_CONFIG")]
    config: Option<std::path::PathBuf>,
    /// Address the HTTP server listens on.
    #[arg(long, env = "TRIBES_HTTP", default_value = "127.0.0.1:8081")]
    http: SocketAddr,
    /// Address the cluster receiver listens on (and advertises).
    #[arg(long, env = "TRIBES_CLUSTER", default_value = "127.0.0.1:4001")]
    cluster: SocketAddr,
    /// A static member's replication address (repeatable, or comma-separated in TRIBES_MEMBER).
    #[arg(long = "member", env = "TRIBES_MEMBER", value_delimiter = ',')]
    members: Vec<SocketAddr>,
    /// Find members by multicast heartbeats (228.0.0.4:45564) instead of a static list.
    #[arg(long, env = "TRIBES_MULTICAST")]
    multicast: bool,
    /// Find members by resolving this DNS name every 5 s (SRV records, else A/AAAA
    /// records with this node's cluster port), e.g. a Kubernetes headless service.
    #[arg(long, env = "TRIBES_DNS", conflicts_with = "multicast")]
    dns: Option<String>,
    /// The DNS server to ask for --dns (default: the system resolver).
    #[arg(long, env = "TRIBES_DNS_SERVER", requires = "dns")]
    dns_server: Option<SocketAddr>,
    /// Replicate this directory to every member (Tomcat's farm deployer): files put
    /// here appear in every other member's --farm-dir.
    #[arg(long, env = "TRIBES_FARM_DIR")]
    farm_dir: Option<std::path::PathBuf>,
    /// Which session manager replicates the sessions.
    #[arg(long, env = "TRIBES_MANAGER", value_enum, default_value = "delta")]
    manager: Manager,
    /// Wait for every member's ack before answering (sync-ack replication).
    #[arg(long, env = "TRIBES_SYNC")]
    sync: bool,
    /// Wait until every member has received the bytes (use-ack: received, not yet applied).
    #[arg(long, env = "TRIBES_USE_ACK", conflicts_with = "sync")]
    use_ack: bool,
    /// BackupManager: copies of each session besides the primary.
    #[arg(long, env = "TRIBES_BACKUPS", default_value_t = 1)]
    backups: usize,
    /// Run the requests of one session one at a time on this node (no lost update).
    #[arg(long, env = "TRIBES_SERIALIZE_REQUESTS")]
    serialize_requests: bool,
    /// Replicate only the attributes of the counter's sessions whose name matches this
    /// regular expression (the others stay on the node that wrote them), e.g.
    /// `^(count|user)$`. The cart replicates all of its attributes.
    #[arg(long, env = "TRIBES_REPLICATE_ATTRIBUTES")]
    replicate_attributes: Option<regex::Regex>,
    /// Serve a second application, a shopping cart with its own context (`cart`) and
    /// cookie, at `/cart`.
    #[arg(long, env = "TRIBES_CART")]
    cart: bool,
    /// At most this many live sessions per user (`POST /login`) across the cluster;
    /// unlimited without.
    #[arg(long, env = "TRIBES_MAX_SESSIONS_PER_USER", value_parser = clap::value_parser!(u64).range(1..))]
    max_sessions_per_user: Option<u64>,
    /// What a login beyond --max-sessions-per-user does: `evict-oldest` ends the user's
    /// oldest session on every node, `refuse` answers 403 (logged in elsewhere).
    #[arg(
        long,
        env = "TRIBES_MAX_SESSIONS_POLICY",
        value_enum,
        default_value = "evict-oldest",
        requires = "max_sessions_per_user"
    )]
    max_sessions_policy: login::PolicyArg,
    /// Idle seconds before a session expires.
    #[arg(long, env = "TRIBES_MAX_INACTIVE_SECS", default_value_t = 1800)]
    max_inactive_secs: u64,
    /// A link to another node's page, shown on this node's page (repeatable).
    #[arg(long = "link", env = "TRIBES_LINK", value_delimiter = ',')]
    links: Vec<String>,
    /// The cluster key file every member shares (create one with `tribes-demo keygen PATH`);
    /// read again on SIGHUP, for key rotation without a restart.
    #[arg(long, env = "TRIBES_CLUSTER_KEY_FILE")]
    cluster_key_file: Option<std::path::PathBuf>,
    /// Send cluster traffic in plain text (only on a network you trust entirely).
    #[arg(long, env = "TRIBES_INSECURE_PLAINTEXT", conflicts_with = "cluster_key_file")]
    insecure_plaintext: bool,
    /// A file whose first line is the admin token (16 bytes or more): turns on the session
    /// browser at /cluster/sessions (off without). The token itself never goes on the
    /// command line, where `ps` shows it.
    #[arg(long, env = "TRIBES_ADMIN_TOKEN_FILE")]
    admin_token_file: Option<std::path::PathBuf>,
    /// Attributes whose values the session browser may show (comma-separated names).
    #[arg(long = "show-values", env = "TRIBES_SHOW_VALUES", value_delimiter = ',')]
    show_values: Vec<String>,
    /// Keep sessions in a store too: `file:DIR`, `postgres://…` or `redis://…`.
    #[arg(long, env = "TRIBES_STORE")]
    store: Option<String>,
    /// How the store is used: `persist` (behind replication: write-through with --sync,
    /// write-behind without) or `shared` (no replication, the store is the truth).
    #[arg(
        long,
        env = "TRIBES_STORE_MODE",
        value_enum,
        default_value = "persist",
        requires = "store"
    )]
    store_mode: StoreModeArg,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum StoreModeArg {
    /// Behind replication: write-through with --sync (a full-cluster restart loses no
    /// acknowledged write), else write-behind (queue of 10000, flushed on shutdown).
    Persist,
    /// No replication: every node reads and writes the store; concurrent writes to one
    /// session are refused (503) and counted in /cluster/status.
    Shared,
}

/// Opens the store named by `--store`.
async fn open_store(
    spec: &str,
) -> Result<std::sync::Arc<dyn tribes_sessions::SessionStore>, Box<dyn std::error::Error>> {
    if let Some(dir) = spec.strip_prefix("file:") {
        return Ok(std::sync::Arc::new(tribes_sessions::FileStore::open(dir).await?));
    }
    if spec.starts_with("postgres://") || spec.starts_with("postgresql://") {
        return Ok(std::sync::Arc::new(
            tribes_sessions::PostgresStore::connect(spec).await?,
        ));
    }
    if spec.starts_with("redis://") || spec.starts_with("rediss://") {
        return Ok(std::sync::Arc::new(tribes_sessions::RedisStore::connect(spec).await?));
    }
    Err(format!("--store {spec:?}: use file:DIR, postgres://… or redis://…").into())
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write a new random cluster key file (give the same file to every member).
    Keygen {
        /// Where to write the key file (it must not exist yet).
        path: std::path::PathBuf,
    },
}

fn keygen(path: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| {
            format!(
                "cannot create {}: {e} (keygen never overwrites a key file)",
                path.display()
            )
        })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(Keyring::generate(1, &mut rand::rng()).to_file_text().as_bytes())?;
    println!(
        "wrote a new cluster key to {}; give every member the same file",
        path.display()
    );
    Ok(())
}

/// The handlers' state: axum clones it for every request, so it shares its strings.
#[derive(Clone)]
struct App {
    route: Arc<str>,
    links: Arc<[String]>,
    /// The session browser's token, which also guards `/sessions-of`.
    admin: Option<AdminToken>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
        .init();
    let args = Args::parse();
    if let Some(Command::Keygen { path }) = &args.command {
        return keygen(path);
    }
    let config = match &args.config {
        Some(path) => match tribes_axum::Config::load(path) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("tribes-demo: {e}");
                std::process::exit(2);
            }
        },
        None => None,
    };
    let route = match &config {
        Some(c) => c.node.route.clone(),
        None => args.route.clone().expect("clap requires --route"),
    };

    let mut channel = match config.as_ref().map(tribes_axum::Config::channel) {
        Some(Ok(channel)) => channel,
        Some(Err(e)) => {
            eprintln!("tribes-demo: {e}");
            std::process::exit(2);
        }
        None => Channel::builder(&route).with_bind(args.cluster),
    };
    // Without a file, the flags give the key, the address and the members.
    if config.is_none() {
        channel = match (&args.cluster_key_file, args.insecure_plaintext) {
            (Some(path), _) => channel.with_cluster_key(Keyring::from_file(path)?),
            (None, true) => channel.insecure_plaintext(),
            (None, false) => channel,
        };
        channel = if args.multicast {
            channel.with_discovery(MulticastDiscovery::new())
        } else if let Some(name) = &args.dns {
            let mut dns = DnsDiscovery::new(name, args.cluster.port());
            if let Some(server) = args.dns_server {
                dns = dns.with_server(server);
            }
            channel.with_discovery(dns)
        } else {
            channel.with_discovery(StaticDiscovery::new(args.members.clone()))
        };
    }
    let channel = channel.start().await?;
    if let Some(path) = &args.cluster_key_file {
        tokio::spawn(reload_key_on_sighup(channel.clone(), path.clone()));
    }
    let _farm = match &args.farm_dir {
        Some(dir) => Some(
            Farm::builder(channel.clone(), dir)
                .on_change(|event| tracing::info!(?event, "farm"))
                .start()?,
        ),
        None => None,
    };

    // One store for both applications: each context keeps its own records in it.
    let store = match &args.store {
        Some(spec) => {
            let mode = match (args.store_mode, args.sync) {
                (StoreModeArg::Shared, _) => StoreMode::Shared,
                (StoreModeArg::Persist, true) => StoreMode::WriteThrough,
                (StoreModeArg::Persist, false) => StoreMode::WriteBehind { queue: 10_000 },
            };
            Some((open_store(spec).await?, mode))
        }
        None => None,
    };
    let manager = manager_builder(&args, config.as_ref(), CONTEXT, &store)
        .start(channel.clone())
        .await?;
    let sessions = layer(&args, config.as_ref(), &manager);
    let cart = match args.cart {
        true => Some(
            manager_builder(&args, config.as_ref(), cart::CONTEXT, &store)
                .start(channel.clone())
                .await?,
        ),
        false => None,
    };

    let admin_token_file = args
        .admin_token_file
        .as_ref()
        .or(config.as_ref().and_then(|c| c.status.admin_token_file.as_ref()));
    let admin = match admin_token_file.map(|p| AdminToken::from_file(p)).transpose() {
        Ok(token) => token,
        Err(e) => {
            eprintln!("tribes-demo: {e}");
            std::process::exit(2);
        }
    };
    let app = App {
        route: route.as_str().into(),
        links: args.links.clone().into(),
        admin,
    };
    let mut router = Router::new()
        .route("/", get(home))
        .route("/counter", get(counter::counter))
        .route("/counter/read", get(counter::read))
        .route("/session/invalidate", post(invalidate))
        .route("/session/{key}", put(put_key).get(get_key).delete(delete_key))
        .route("/login", post(login::login))
        .route("/whoami", get(login::whoami))
        .route("/logout-everywhere", post(login::logout_everywhere))
        .route("/sessions-of/{name}", get(login::sessions_of))
        .route("/static/hello.txt", get(|| async { "hello from a static file\n" }))
        .layer(sessions)
        .with_state(app);
    // The status and metrics routers show every context of this node.
    let mut contexts = Contexts::new(manager.clone());
    if let Some(cart) = &cart {
        router = router.merge(cart::router(
            layer(&args, config.as_ref(), cart)
                .with_cookie_name(cart::COOKIE)
                .with_cookie_path("/cart"),
        ));
        contexts = contexts.with(cart.clone());
    }
    let status = match status(&args, config.as_ref(), contexts.clone()) {
        Ok(status) => status,
        Err(e) => {
            eprintln!("tribes-demo: {e}");
            std::process::exit(2);
        }
    };
    let router = router
        .nest("/cluster/", status.into_router())
        .route("/cluster", get(|| async { Redirect::permanent("/cluster/") }))
        .merge(metrics_router(contexts));

    let listener = tokio::net::TcpListener::bind(args.http).await?;
    tracing::info!(route = %route, http = %args.http, cluster = %args.cluster, "tribes-demo serving");
    tracing::info!(
        "the cluster dashboard: http://{}/cluster/ (every member, from any node)",
        args.http
    );
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    tracing::info!("shutting down: handing sessions over, saying goodbye");
    manager.shutdown().await;
    if let Some(cart) = cart {
        cart.shutdown().await;
    }
    channel.shutdown().await;
    Ok(())
}

/// The manager of `context` with the options of the file or the command line, on
/// `store` if any, logging its cluster events (`src/events.rs`).
fn manager_builder(
    args: &Args,
    config: Option<&tribes_axum::Config>,
    context: &str,
    store: &Option<(std::sync::Arc<dyn tribes_sessions::SessionStore>, StoreMode)>,
) -> tribes_sessions::SessionManagerBuilder {
    let logged = |builder: tribes_sessions::SessionManagerBuilder| {
        builder.with_cluster_listener(events::log_cluster_events(context))
    };
    if let Some(c) = config {
        let mut c = c.clone();
        // The counter's context is the file's; the cart keeps its own name.
        if context != CONTEXT {
            c.manager.context = context.to_owned();
            c.manager.replicate_attributes = None;
            c.manager.max_sessions_per_principal = None;
        }
        let builder = logged(c.manager());
        return match store {
            Some((store, mode)) => builder.with_store(store.clone(), *mode),
            None => builder,
        };
    }
    let kind = match args.manager {
        Manager::Delta => ManagerKind::Delta,
        Manager::Backup => ManagerKind::Backup {
            backup_count: args.backups,
        },
    };
    let send_mode = match (args.sync, args.use_ack) {
        (true, _) => SendMode::SyncAck,
        (false, true) => SendMode::UseAck,
        (false, false) => SendMode::Async,
    };
    let mut builder = logged(SessionManager::builder(context))
        .with_kind(kind)
        .with_send_mode(send_mode)
        .with_max_inactive(Duration::from_secs(args.max_inactive_secs));
    // The filter is the counter's: the cart replicates all of its attributes.
    if let Some(filter) = args.replicate_attributes.clone().filter(|_| context == CONTEXT) {
        builder = builder.with_attribute_filter(move |name| filter.is_match(name));
    }
    // Users log in to the counter's application only.
    if let Some(max) = args.max_sessions_per_user.filter(|_| context == CONTEXT) {
        let max = usize::try_from(max).unwrap_or(usize::MAX);
        builder = builder.with_max_sessions_per_principal(max, args.max_sessions_policy.policy());
    }
    if let Some((store, mode)) = store {
        builder = builder.with_store(store.clone(), *mode);
    }
    builder
}

/// The session layer of `manager` with the options of the file or the command line.
fn layer(args: &Args, config: Option<&tribes_axum::Config>, manager: &SessionManager) -> ReplicatedSessions {
    let layer = match config {
        Some(c) => c.layer(manager.clone()),
        None => ReplicatedSessions::new(manager.clone()).with_serialize_requests(args.serialize_requests),
    };
    // With a store, a write the store did not take (or a shared-mode conflict) is a 503.
    match args.store {
        Some(_) => layer.with_sync_failure(OnSyncFailure::ServiceUnavailable),
        None => layer,
    }
}

/// Key rotation without a restart: on SIGHUP, read the key file again and give the
/// channel the new keyring (first line offered, every line accepted). Rotate by
/// editing the file on every member and sending SIGHUP after each step: add the new
/// key as a second line, then move it first, then delete the old line. A file that
/// does not parse changes nothing and is logged.
async fn reload_key_on_sighup(channel: Channel, path: std::path::PathBuf) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP: the cluster key file is read only at start");
        return;
    };
    while hup.recv().await.is_some() {
        match Keyring::from_file(&path) {
            Ok(ring) => {
                let (send, accepted) = (ring.send_id(), ring.accepted_ids());
                channel.set_keyring(ring);
                tracing::info!(file = %path.display(), send, ?accepted, "SIGHUP: cluster key file reloaded");
            }
            Err(e) => tracing::error!(file = %path.display(), error = %e,
                "SIGHUP: the cluster key file does not load; the keys in use are unchanged (fix the file and send SIGHUP again)"),
        }
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// The status router: `[status]` of the configuration file, then `--admin-token-file`
/// and `--show-values` over it.
fn status(
    args: &Args,
    config: Option<&tribes_axum::Config>,
    contexts: Contexts,
) -> Result<StatusRouter, Box<dyn std::error::Error>> {
    let mut status = match config {
        Some(c) => c.status_router(contexts)?,
        None => StatusRouter::new(contexts),
    };
    if let Some(path) = &args.admin_token_file {
        status = status.with_admin_token(AdminToken::from_file(path)?);
    }
    if !args.show_values.is_empty() {
        status = status.with_shown_values(args.show_values.iter().cloned());
    }
    Ok(status)
}

/// Turns session errors into responses without leaking details.
struct AppError(tribes_axum::SessionError);

impl From<tribes_axum::SessionError> for AppError {
    fn from(e: tribes_axum::SessionError) -> Self {
        AppError(e)
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        self.0.into_response()
    }
}

/// The session as a page may show it: its log hash (`#1a2b3c4d`, as in the logs), never
/// its id. The id is a secret kept in an HttpOnly cookie so page scripts never see it; a
/// body that repeated it would undo that (OWASP).
async fn session_hash(session: &Session) -> Option<String> {
    Some(session.log_id().await?.to_string())
}

async fn home(State(app): State<App>, session: Session) -> Result<Html<String>, AppError> {
    let count = session.get::<u64>("count").await.unwrap_or(None).unwrap_or(0);
    Ok(Html(page::render(
        &app.route,
        session_hash(&session).await.as_deref(),
        count,
        &app.links,
    )))
}

async fn put_key(session: Session, Path(key): Path<String>, body: String) -> Result<StatusCode, AppError> {
    session.insert(&key, &body).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn get_key(session: Session, Path(key): Path<String>) -> Response {
    match session.get::<String>(&key).await {
        Ok(Some(value)) => value.into_response(),
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err(e) => {
            tracing::warn!(%key, error = %e, "attribute does not decode as text; treated as absent");
            StatusCode::NOT_FOUND.into_response()
        }
    }
}

async fn delete_key(session: Session, Path(key): Path<String>) -> Result<StatusCode, AppError> {
    session.remove(&key).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn invalidate(session: Session) -> Result<StatusCode, AppError> {
    session.invalidate().await?;
    Ok(StatusCode::NO_CONTENT)
}
