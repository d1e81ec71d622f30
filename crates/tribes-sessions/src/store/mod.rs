//! Persistent and shared session stores: one [`SessionStore`] trait, three backends.
//!
//! A store keeps [`StoredSession`] records: a session's metadata in clear (id, version,
//! times) and its contents as opaque bytes. It serves the two uses of Tomcat's
//! `PersistentManager` / `FileStore` / `JDBCStore`:
//!
//! 1. **Behind replication**: the cluster manager writes sessions through (or behind) to
//!    the store, so a full-cluster restart loses nothing and idle sessions can leave memory.
//! 2. **Shared store, no replication**: every node reads and writes the store, which is the
//!    truth (autoscaling groups). Concurrent writers to one session are detected by the
//!    session version: [`SessionStore::save`] with `expected_version` fails with
//!    [`StoreError::Conflict`] instead of overwriting, so no write is silently lost.
//!
//! # Which store
//!
//! | store | feature | pick it when | expiry | concurrency check |
//! |---|---|---|---|---|
//! | [`FileStore`] | `file` (default) | one node, or replication in front of it, and a local disk: restarts without a database | [`delete_expired`](SessionStore::delete_expired) scans the directory | atomic within one process (not across processes sharing a directory) |
//! | `PostgresStore` | `postgres` | you already run PostgreSQL; shared mode with durable, queryable sessions | `delete_expired` with an index on `expires_at_ms` | in SQL (`UPDATE … WHERE version = $expected`) |
//! | `RedisStore` | `redis` | shared mode with many nodes and short-lived sessions; Redis or Redis Cluster | native (`PX` on every save); `delete_expired` does nothing | a Lua script, atomic on the key's node (works on Redis Cluster) |
//!
//! # Guarantees, all backends
//!
//! - Every save is atomic: a reader sees the old record or the new one, never a mix, even
//!   if the process or the server dies mid-write (file: temp file, fsync, rename, fsync of
//!   the directory; PostgreSQL: one statement; Redis: one script).
//! - A record that cannot be decoded (damaged bytes, a foreign value, a record written by a
//!   newer version) is [`StoreError::Corrupt`] naming the id and the cause; every other
//!   session still loads, and [`list_ids`](SessionStore::list_ids) still lists it so an
//!   operator can delete it.
//! - [`load`](SessionStore::load) returns `None` for a record whose `expires_at_ms` has
//!   passed by the system clock, whether or not it was deleted yet.
//! - Errors name the store and say what to check: `redis store at redis://127.0.0.1:6379:
//!   connection refused (os error 111): is Redis running and reachable?`.
//!
//! # The trait's shape
//!
//! [`SessionStore`] methods return [`StoreFuture`], a boxed `Send` future, so the trait is
//! object-safe (`Arc<dyn SessionStore>` is what a manager holds) without the `async-trait`
//! crate; one allocation per call is nothing next to a disk or network round trip.
//! Implementations write `Box::pin(async move { … })`.
//!
//! # Examples
//!
//! ```
//! # #[cfg(feature = "file")]
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use std::time::{Duration, SystemTime};
//! use tribes_sessions::{FileStore, SessionStore, StoredSession};
//!
//! let dir = std::env::temp_dir().join(format!("tribes-doc-{}", std::process::id()));
//! let store = FileStore::open(&dir).await?;
//! let mut record = StoredSession::new("AAAAAAAAAAAAAAAAAAAAAA", 1, SystemTime::now(), Duration::from_secs(60), vec![0x80]);
//! store.save(&record, None).await?;
//!
//! // Another writer saved version 2 meanwhile; our save of version 2 over version 1 fails.
//! record.version = 2;
//! store.save(&record, Some(1)).await?;
//! let err = store.save(&record, Some(1)).await.unwrap_err();
//! assert!(err.is_conflict());
//!
//! assert_eq!(store.load(&record.id).await?.unwrap().version, 2);
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # Ok::<(), tribes_sessions::StoreError>(())
//! # }).unwrap();
//! ```

// The record codec and the checks serve the backends; with none enabled they are unused.
#![cfg_attr(
    not(any(feature = "file", feature = "postgres", feature = "redis")),
    allow(dead_code)
)]

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

mod error;
#[cfg(feature = "file")]
mod file;
#[cfg(feature = "postgres")]
mod postgres;
mod record;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "tower-sessions")]
mod tower_bridge;

pub use error::StoreError;
#[cfg(feature = "file")]
pub use file::FileStore;
#[cfg(feature = "postgres")]
pub use postgres::PostgresStore;
pub use record::StoredSession;
#[cfg(feature = "redis")]
pub use redis::RedisStore;
#[cfg(feature = "tower-sessions")]
pub use tower_bridge::TowerSessionStore;

/// The future every [`SessionStore`] method returns: boxed and `Send`, so the trait is
/// object-safe.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// A place that keeps sessions outside the process: a directory, a PostgreSQL table, a Redis.
///
/// All methods may be called concurrently from many tasks. See the [module docs](self) for
/// what each backend guarantees and when to pick which.
pub trait SessionStore: fmt::Debug + Send + Sync + 'static {
    /// The store's kind and address as errors show it, such as `file store at /var/lib/app`
    /// or `redis store at redis://127.0.0.1:6379` (without passwords).
    fn name(&self) -> &str;

    /// The record of session `id`, or `None` when there is none or it has expired.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] when the record cannot be decoded (other ids are unaffected),
    /// [`StoreError::InvalidId`], [`StoreError::Unavailable`], [`StoreError::Backend`].
    fn load<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<StoredSession>>;

    /// Saves `record` atomically, replacing any record of the same id.
    ///
    /// With `expected_version: Some(v)`, the save happens only if the stored record has
    /// version `v` (optimistic concurrency: the caller loaded version `v`, changed it and now
    /// writes `record.version`, usually `v + 1`). With `None` it happens unconditionally
    /// (creating a session, or a write-through from the node that owns it).
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when the stored version is not `expected_version` (or there is
    /// no record): nothing was written. [`StoreError::InvalidId`],
    /// [`StoreError::InvalidRecord`], [`StoreError::Unavailable`], [`StoreError::Backend`].
    fn save<'a>(&'a self, record: &'a StoredSession, expected_version: Option<u64>) -> StoreFuture<'a, ()>;

    /// Deletes the record of session `id`; `true` if there was one.
    ///
    /// # Errors
    /// [`StoreError::InvalidId`], [`StoreError::Unavailable`], [`StoreError::Backend`].
    fn delete<'a>(&'a self, id: &'a str) -> StoreFuture<'a, bool>;

    /// Deletes every record with `expires_at_ms <= now` and returns how many. Stores with
    /// native expiry (Redis) do nothing here and return 0. The file store leaves undecodable
    /// files in place (logged) for an operator; PostgreSQL expires rows by their
    /// `expires_at_ms` column whatever their bytes.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`], [`StoreError::Backend`].
    fn delete_expired(&self, now: SystemTime) -> StoreFuture<'_, u64>;

    /// The ids of all records, in no particular order. It may include records that expired
    /// but were not deleted yet, and undecodable records.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`], [`StoreError::Backend`].
    fn list_ids(&self) -> StoreFuture<'_, Vec<String>>;

    /// Checks that the store is reachable and usable (directory writable, table present,
    /// Redis answering).
    ///
    /// # Errors
    /// The error a real operation would get, naming the store and the fix.
    fn health(&self) -> StoreFuture<'_, ()>;
}

impl<S: SessionStore + ?Sized> SessionStore for Arc<S> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn load<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<StoredSession>> {
        (**self).load(id)
    }
    fn save<'a>(&'a self, record: &'a StoredSession, expected_version: Option<u64>) -> StoreFuture<'a, ()> {
        (**self).save(record, expected_version)
    }
    fn delete<'a>(&'a self, id: &'a str) -> StoreFuture<'a, bool> {
        (**self).delete(id)
    }
    fn delete_expired(&self, now: SystemTime) -> StoreFuture<'_, u64> {
        (**self).delete_expired(now)
    }
    fn list_ids(&self) -> StoreFuture<'_, Vec<String>> {
        (**self).list_ids()
    }
    fn health(&self) -> StoreFuture<'_, ()> {
        (**self).health()
    }
}

/// Checks an id and a record before a backend touches them.
pub(crate) fn check_id(store: &str, id: &str) -> Result<(), StoreError> {
    if record::valid_id(id) {
        Ok(())
    } else {
        Err(StoreError::InvalidId {
            store: store.to_owned(),
            id: id.to_owned(),
        })
    }
}

/// [`check_id`] plus the record's size limit.
pub(crate) fn check_record(store: &str, record: &StoredSession) -> Result<(), StoreError> {
    check_id(store, &record.id)?;
    if !record::data_fits(record) {
        return Err(StoreError::InvalidRecord {
            store: store.to_owned(),
            id: record.id.clone(),
            cause: format!("its data is {} bytes, the limit is 4 GiB", record.data.len()),
        });
    }
    Ok(())
}
