//! The peers `cargo xtask bench stores` measures tribes against: the same `GET /counter`
//! as `tribes-demo` (read a u64 in the session, add one, write it back, return JSON) on
//! tower-sessions with the store a Rust user picks today for each backend:
//!
//! - `redis`: `tower-sessions-redis-store` (fred);
//! - `postgres`: `tower-sessions-sqlx-store`'s `PostgresStore` (sqlx).
//!
//! ```sh
//! store-peers --store redis://127.0.0.1:6379|postgres://… --http 127.0.0.1:8091
//! ```

use axum::Router;
use axum::http::StatusCode;
use axum::response::Json;
use axum::routing::get;
use fred::prelude::{ClientLike, Config, Pool};
use serde_json::{Value, json};
use tower_sessions_014::{Session, SessionManagerLayer};
use tribes_testkit::bench::PeerArgs;

const USAGE: &str = "usage: store-peers --store redis://…|postgres://… [--http ADDR (default 127.0.0.1:8091)]";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = PeerArgs::parse("--store", USAGE, std::env::args().skip(1))?;
    if args.help {
        println!("{USAGE}");
        return Ok(());
    }
    let (store, http) = (args.value, args.http);
    let store = store.ok_or(USAGE)?;
    let routes = Router::new().route("/counter", get(counter));
    let router = if store.starts_with("redis://") {
        let pool = Pool::new(Config::from_url(&store)?, None, None, None, 6)?;
        pool.init().await?;
        routes.layer(SessionManagerLayer::new(tower_sessions_redis_store::RedisStore::new(pool)).with_secure(false))
    } else if store.starts_with("postgres://") || store.starts_with("postgresql://") {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(16)
            .connect(&store)
            .await?;
        let pg = tower_sessions_sqlx_store::PostgresStore::new(pool);
        pg.migrate().await?;
        routes.layer(SessionManagerLayer::new(pg).with_secure(false))
    } else {
        return Err(USAGE.into());
    };
    let listener = tokio::net::TcpListener::bind(http).await?;
    eprintln!("store-peers: tower-sessions over {store} on {http}");
    axum::serve(listener, router).await?;
    Ok(())
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
