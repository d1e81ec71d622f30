//! The peers `cargo xtask bench http` measures `tribes-demo` against, serving the
//! same `GET /counter` endpoint:
//!
//! - `bare`: a plain Axum handler with no sessions that returns a constant JSON (the ceiling);
//! - `tower-sessions`: the counter (read a u64 in the session, add one, write it back,
//!   return JSON) on `tower-sessions` with its `MemoryStore`, one node, no replication.
//!
//! ```sh
//! http-peers --app bare|tower-sessions --http 127.0.0.1:8091
//! ```

use axum::Router;
use axum::http::StatusCode;
use axum::response::Json;
use axum::routing::get;
use serde_json::{Value, json};
use tower_sessions::{MemoryStore, Session, SessionManagerLayer};
use tribes_testkit::bench::PeerArgs;

const USAGE: &str = "usage: http-peers --app bare|tower-sessions [--http ADDR (default 127.0.0.1:8091)]";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = PeerArgs::parse("--app", USAGE, std::env::args().skip(1))?;
    if args.help {
        println!("{USAGE}");
        return Ok(());
    }
    let (app, http) = (args.value, args.http);
    let router = match app.as_deref() {
        Some("bare") => Router::new().route("/counter", get(bare)),
        Some("tower-sessions") => Router::new()
            .route("/counter", get(counter))
            .layer(SessionManagerLayer::new(MemoryStore::default()).with_secure(false)),
        _ => return Err(USAGE.into()),
    };
    let listener = tokio::net::TcpListener::bind(http).await?;
    eprintln!("http-peers: {} on {http}", app.unwrap_or_default());
    axum::serve(listener, router).await?;
    Ok(())
}

/// The ceiling: no session, a constant body of the same shape.
async fn bare() -> Json<Value> {
    Json(json!({ "count": 1, "node": "bare", "session": null }))
}

/// The counter on tower-sessions.
async fn counter(session: Session) -> Result<Json<Value>, StatusCode> {
    let count = session
        .get::<u64>("count")
        .await
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?
        .unwrap_or(0)
        + 1;
    session
        .insert("count", count)
        .await
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    Ok(Json(
        json!({ "count": count, "node": "tower-sessions", "session": session.id().map(|id| id.to_string()) }),
    ))
}
