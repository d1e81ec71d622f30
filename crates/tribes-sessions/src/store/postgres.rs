//! [`PostgresStore`]: one row per session in a PostgreSQL table (sqlx).

use std::str::FromStr;
use std::time::{Duration, SystemTime};

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};

use super::error::redact_url;
use super::record::{self, RecordError, StoredSession};
use super::{SessionStore, StoreError, StoreFuture, check_record, scoped_name};
use crate::cause::Cause;
use crate::id::SessionId;

/// Held while the migration runs, so nodes starting together do not race on `CREATE`.
const MIGRATION_LOCK: i64 = 0x7472_6962_6573; // "tribes"
const HINT_DOWN: &str = "is PostgreSQL running and reachable?";
const HINT_COLUMN: &str = "the table tribes_sessions lacks a column of this version (context): call PostgresStore::migrate, or apply crates/tribes-sessions/migrations/*.sql";
const HINT_TABLE: &str = "the table tribes_sessions is missing: call PostgresStore::migrate, or apply crates/tribes-sessions/migrations/*.sql";

/// Sessions as rows of the table `tribes_sessions` in PostgreSQL.
///
/// The table comes from the migrations shipped in the crate's `migrations/` directory
/// ([`PostgresStore::MIGRATION`]); [`PostgresStore::connect`] applies them. Every row
/// belongs to one context (the `context` column, part of the primary key): the store as
/// connected holds the context `""`, [`PostgresStore::with_context`] (what a
/// [`SessionManager`](crate::SessionManager) does with its context name) another, and no
/// query of one context touches another's rows. A save is one
/// statement: an upsert, or with an expected version an `UPDATE … WHERE version = $expected`,
/// so concurrent writers on many nodes are detected by the database
/// ([`StoreError::Conflict`]). [`delete_expired`](SessionStore::delete_expired) deletes by
/// the indexed `expires_at_ms` column; run it periodically from one or every node.
///
/// Versions are stored as `BIGINT` (bit for bit, so versions above `i64::MAX` still
/// compare correctly); `expires_at_ms` saturates at `i64::MAX` (never).
///
/// # Examples
/// ```no_run
/// # async fn demo() -> Result<(), tribes_sessions::StoreError> {
/// use tribes_sessions::{PostgresStore, SessionStore};
/// let store = PostgresStore::connect("postgres://app@127.0.0.1:5432/app").await?;
/// store.health().await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// The name without the context.
    base: String,
    name: String,
    context: String,
}

impl PostgresStore {
    /// The SQL of the shipped migrations, in order (idempotent): the table, its per-context
    /// primary key and its expiry index.
    pub const MIGRATION: &'static str = concat!(
        include_str!("../../migrations/20261122000000_tribes_sessions.sql"),
        "\n",
        include_str!("../../migrations/20261202000000_tribes_sessions_context.sql"),
    );

    /// Connects a pool (16 connections, 5 s to acquire one) to `url` and applies the
    /// migration.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when PostgreSQL cannot be reached,
    /// [`StoreError::Backend`] for a bad URL, failed authentication or a failed migration.
    pub async fn connect(url: &str) -> Result<PostgresStore, StoreError> {
        let name = format!("postgres store at {}", redact_url(url));
        let err = |e| pg_error(&name, "connect", None, e);
        let options = PgConnectOptions::from_str(url).map_err(err)?;
        // One direct connection first: a pool would only say "timed out", this says why.
        PgConnection::connect_with(&options)
            .await
            .map_err(err)?
            .close()
            .await
            .map_err(err)?;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy_with(options);
        let store = PostgresStore::new(pool, name);
        store.migrate().await?;
        Ok(store)
    }

    /// A store over an existing pool. It does not apply the migration: call
    /// [`PostgresStore::migrate`], or apply [`PostgresStore::MIGRATION`] with your own tool.
    pub fn from_pool(pool: PgPool) -> PostgresStore {
        let o = pool.connect_options();
        let name = format!(
            "postgres store at postgres://{}@{}:{}/{}",
            o.get_username(),
            o.get_host(),
            o.get_port(),
            o.get_database().unwrap_or("")
        );
        PostgresStore::new(pool, name)
    }

    fn new(pool: PgPool, name: String) -> PostgresStore {
        PostgresStore {
            pool,
            base: name.clone(),
            name,
            context: String::new(),
        }
    }

    /// This store for the rows of `context` only (the `context` column); `""` is the context
    /// of the store as connected. See [`SessionStore::for_context`].
    pub fn with_context(mut self, context: &str) -> PostgresStore {
        self.name = scoped_name(&self.base, context);
        self.context = context.to_owned();
        self
    }

    /// Applies [`PostgresStore::MIGRATION`] in a transaction under an advisory lock. Running
    /// it again, or from many nodes at once, is harmless.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`], or [`StoreError::Backend`] when the SQL fails (for
    /// example, no permission to create tables).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        // One simple-query string runs as one transaction; the advisory lock lasts until its end.
        let sql = format!(
            "BEGIN;\nSELECT pg_advisory_xact_lock({MIGRATION_LOCK});\n{}\nCOMMIT;",
            Self::MIGRATION
        );
        sqlx::raw_sql(&sql)
            .execute(&self.pool)
            .await
            .map_err(|e| pg_error(&self.name, "migrate", None, e))?;
        Ok(())
    }

    /// The pool, for queries of your own.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    fn err(&self, operation: &'static str, id: Option<SessionId>) -> impl Fn(sqlx::Error) -> StoreError + '_ {
        move |e| pg_error(&self.name, operation, id, e)
    }
}

/// How an sqlx error is reported.
enum PgFailure {
    /// PostgreSQL cannot be reached: `Unavailable`.
    Down,
    /// It answered with an error: `Backend`, with the hint when one is known.
    Failed(Option<&'static str>),
}

/// Maps an sqlx error: connection trouble is `Unavailable`, the rest `Backend`.
fn pg_error(store: &str, operation: &'static str, id: Option<SessionId>, e: sqlx::Error) -> StoreError {
    let kind = match &e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => PgFailure::Down,
        sqlx::Error::Database(db) => match db.code().as_deref() {
            Some("42P01") => PgFailure::Failed(Some(HINT_TABLE)),
            Some("42703") => PgFailure::Failed(Some(HINT_COLUMN)),
            // Class 08: connection exception; 57P01-57P03: shutdown, cannot connect now.
            Some(code) if code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03") => PgFailure::Down,
            Some("28P01" | "28000") => PgFailure::Failed(Some("check the user and password in the URL")),
            Some("3D000") => PgFailure::Failed(Some("the database does not exist: create it")),
            _ => PgFailure::Failed(None),
        },
        _ => PgFailure::Failed(None),
    };
    match kind {
        PgFailure::Down => StoreError::Unavailable {
            store: store.to_owned(),
            operation,
            cause: Cause::new(e),
            hint: HINT_DOWN,
        },
        PgFailure::Failed(hint) => StoreError::Backend {
            store: store.to_owned(),
            operation,
            id,
            cause: Cause::new(e),
            hint,
        },
    }
}

/// Versions are stored bit for bit as BIGINT.
fn to_sql_version(v: u64) -> i64 {
    v as i64
}

fn from_sql_version(v: i64) -> u64 {
    v as u64
}

impl SessionStore for PostgresStore {
    fn name(&self) -> &str {
        &self.name
    }

    fn load<'a>(&'a self, sid: &'a SessionId) -> StoreFuture<'a, Option<StoredSession>> {
        Box::pin(async move {
            let text = sid.to_string();
            let id = text.as_str();
            let row: Option<(i64, Vec<u8>)> =
                sqlx::query_as("SELECT version, record FROM tribes_sessions WHERE context = $1 AND id = $2")
                    .bind(&self.context)
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(self.err("load", Some(*sid)))?;
            let Some((version, bytes)) = row else { return Ok(None) };
            let corrupt = |cause| StoreError::corrupt(&self.name, *sid, cause);
            let record = record::decode(&bytes, sid).map_err(corrupt)?;
            if record.version != from_sql_version(version) {
                return Err(corrupt(RecordError::VersionMismatch {
                    index: "version column",
                    indexed: from_sql_version(version).to_string(),
                    record: record.version,
                }));
            }
            Ok((!record.is_expired(SystemTime::now())).then_some(record))
        })
    }

    fn save<'a>(&'a self, record: &'a StoredSession, expected_version: Option<u64>) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            check_record(&self.name, record)?;
            let bytes = record::encode(record);
            let id = record.id.to_string();
            let version = to_sql_version(record.version);
            let expires = i64::try_from(record.expires_at_ms).unwrap_or(i64::MAX);
            // An expired row counts as absent for the version check, as on Redis where it is gone.
            let now_ms = i64::try_from(record::unix_ms(SystemTime::now())).unwrap_or(i64::MAX);
            let err = self.err("save", Some(record.id));
            let Some(expected) = expected_version else {
                sqlx::query(
                    "INSERT INTO tribes_sessions (context, id, version, expires_at_ms, record, updated_at) \
                     VALUES ($5, $1, $2, $3, $4, now()) \
                     ON CONFLICT (context, id) DO UPDATE SET version = EXCLUDED.version, \
                     expires_at_ms = EXCLUDED.expires_at_ms, record = EXCLUDED.record, updated_at = now()",
                )
                .bind(&id)
                .bind(version)
                .bind(expires)
                .bind(&bytes)
                .bind(&self.context)
                .execute(&self.pool)
                .await
                .map_err(&err)?;
                return Ok(());
            };
            let updated = sqlx::query(
                "UPDATE tribes_sessions SET version = $2, expires_at_ms = $3, record = $4, updated_at = now() \
                 WHERE context = $7 AND id = $1 AND version = $5 AND expires_at_ms > $6",
            )
            .bind(&id)
            .bind(version)
            .bind(expires)
            .bind(&bytes)
            .bind(to_sql_version(expected))
            .bind(now_ms)
            .bind(&self.context)
            .execute(&self.pool)
            .await
            .map_err(&err)?
            .rows_affected();
            if updated == 1 {
                return Ok(());
            }
            // Nothing written: tell which version is there (informational, read after the fact).
            let found: Option<i64> = sqlx::query_scalar(
                "SELECT version FROM tribes_sessions WHERE context = $3 AND id = $1 AND expires_at_ms > $2",
            )
            .bind(&id)
            .bind(now_ms)
            .bind(&self.context)
            .fetch_optional(&self.pool)
            .await
            .map_err(&err)?;
            Err(StoreError::Conflict {
                store: self.name.clone(),
                id: record.id,
                expected,
                found: found.map(from_sql_version),
            })
        })
    }

    fn delete<'a>(&'a self, sid: &'a SessionId) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let text = sid.to_string();
            let id = text.as_str();
            let deleted = sqlx::query("DELETE FROM tribes_sessions WHERE context = $1 AND id = $2")
                .bind(&self.context)
                .bind(id)
                .execute(&self.pool)
                .await
                .map_err(self.err("delete", Some(*sid)))?
                .rows_affected();
            Ok(deleted > 0)
        })
    }

    fn delete_expired(&self, now: SystemTime) -> StoreFuture<'_, u64> {
        let now_ms = i64::try_from(record::unix_ms(now)).unwrap_or(i64::MAX);
        Box::pin(async move {
            let deleted = sqlx::query("DELETE FROM tribes_sessions WHERE context = $1 AND expires_at_ms <= $2")
                .bind(&self.context)
                .bind(now_ms)
                .execute(&self.pool)
                .await
                .map_err(self.err("delete_expired", None))?
                .rows_affected();
            Ok(deleted)
        })
    }

    fn list_ids(&self) -> StoreFuture<'_, Vec<SessionId>> {
        Box::pin(async move {
            let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM tribes_sessions WHERE context = $1")
                .bind(&self.context)
                .fetch_all(&self.pool)
                .await
                .map_err(self.err("list_ids", None))?;
            // A row whose id is no session id is not a session: left out.
            Ok(ids.iter().filter_map(|id| id.parse().ok()).collect())
        })
    }

    fn for_context(&self, context: &str) -> std::sync::Arc<dyn SessionStore> {
        std::sync::Arc::new(self.clone().with_context(context))
    }

    fn health(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            sqlx::query("SELECT context FROM tribes_sessions LIMIT 0")
                .execute(&self.pool)
                .await
                .map_err(self.err("health", None))?;
            Ok(())
        })
    }
}
