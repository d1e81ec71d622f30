//! The store guide, `GUIDE.md` beside this file: module docs here, and the public docs of
//! [`SessionStore`] (this module is private).
//!
#![doc = include_str!("GUIDE.md")]
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

use crate::id::SessionId;

mod error;
#[cfg(feature = "file")]
mod file;
#[cfg(feature = "postgres")]
mod postgres;
mod record;
#[cfg(feature = "redis")]
mod redis;

pub use error::{StoreError, UnexpectedReply};
#[cfg(feature = "file")]
pub use file::FileStore;
#[cfg(feature = "postgres")]
pub use postgres::PostgresStore;
pub use record::{RecordError, StoredSession};
#[cfg(feature = "redis")]
pub use redis::RedisStore;

/// The future every [`SessionStore`] method returns: boxed and `Send`, so the trait is
/// object-safe.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// A place that keeps sessions outside the process: a directory, a PostgreSQL table, a Redis.
///
/// All methods may be called concurrently from many tasks.
///
#[doc = include_str!("GUIDE.md")]
pub trait SessionStore: fmt::Debug + Send + Sync + 'static {
    /// The store's kind and address as errors show it, such as `file store at /var/lib/app`
    /// or `redis store at redis://127.0.0.1:6379` (without passwords).
    fn name(&self) -> &str;

    /// The record of session `id`, or `None` when there is none or it has expired.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] when the record cannot be decoded (other ids are unaffected),
    /// [`StoreError::Unavailable`], [`StoreError::Backend`].
    fn load<'a>(&'a self, id: &'a SessionId) -> StoreFuture<'a, Option<StoredSession>>;

    /// Saves `record` atomically, replacing any record of the same id.
    ///
    /// With `expected_version: Some(v)`, the save happens only if the stored record has
    /// version `v` (optimistic concurrency: the caller loaded version `v`, changed it and now
    /// writes `record.version`, usually `v + 1`). With `None` it happens unconditionally
    /// (creating a session, or a write-through from the node that owns it). An expired record
    /// counts as absent: saving over it with `Some(v)` is a conflict with `found: None`.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when the stored version is not `expected_version` (or there is
    /// no record): nothing was written.
    /// [`StoreError::InvalidRecord`], [`StoreError::Unavailable`], [`StoreError::Backend`].
    fn save<'a>(&'a self, record: &'a StoredSession, expected_version: Option<u64>) -> StoreFuture<'a, ()>;

    /// Deletes the record of session `id`; `true` if there was one.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`], [`StoreError::Backend`].
    fn delete<'a>(&'a self, id: &'a SessionId) -> StoreFuture<'a, bool>;

    /// Deletes every record with `expires_at_ms <= now` and returns how many. Stores with
    /// native expiry (Redis) do nothing here and return 0. The file store leaves undecodable
    /// files in place (logged) for an operator; PostgreSQL expires rows by their
    /// `expires_at_ms` column whatever their bytes.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`], [`StoreError::Backend`].
    fn delete_expired(&self, now: SystemTime) -> StoreFuture<'_, u64>;

    /// The ids of all records, in no particular order. It may include records that expired
    /// but were not deleted yet, and undecodable records; entries whose name is not a
    /// session id (foreign files or keys) are left out.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`], [`StoreError::Backend`].
    fn list_ids(&self) -> StoreFuture<'_, Vec<SessionId>>;

    /// Checks that the store is reachable and usable (directory writable, table present,
    /// Redis answering).
    ///
    /// # Errors
    /// The error a real operation would get, naming the store and the fix.
    fn health(&self) -> StoreFuture<'_, ()>;

    /// The same store (same directory, database or Redis) for the records of context
    /// `context` only: its ids, loads, saves, deletes, expiry sweeps and listings never see
    /// another context's records, so two applications sharing one store cannot load,
    /// overwrite or delete each other's sessions. A
    /// [`SessionManager`](crate::SessionManager) calls it with its context name on the store
    /// given to [`with_store`](crate::SessionManagerBuilder::with_store); call it yourself
    /// only to read a manager's records.
    ///
    /// A store as opened holds the context `""`, where records were kept before stores were
    /// namespaced (see the CHANGELOG for moving them). Calling it on a store already scoped
    /// replaces the context, it does not nest.
    ///
    /// Where each backend keeps a context: the file store in the subdirectory
    /// [`store_namespace(context)`](store_namespace) of its directory, PostgreSQL in the `context` column
    /// (part of the primary key), Redis under the keys `<prefix><store_namespace(context)>:<id>`.
    fn for_context(&self, context: &str) -> Arc<dyn SessionStore>;
}

impl<S: SessionStore + ?Sized> SessionStore for Arc<S> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn load<'a>(&'a self, id: &'a SessionId) -> StoreFuture<'a, Option<StoredSession>> {
        (**self).load(id)
    }
    fn save<'a>(&'a self, record: &'a StoredSession, expected_version: Option<u64>) -> StoreFuture<'a, ()> {
        (**self).save(record, expected_version)
    }
    fn delete<'a>(&'a self, id: &'a SessionId) -> StoreFuture<'a, bool> {
        (**self).delete(id)
    }
    fn delete_expired(&self, now: SystemTime) -> StoreFuture<'_, u64> {
        (**self).delete_expired(now)
    }
    fn list_ids(&self) -> StoreFuture<'_, Vec<SessionId>> {
        (**self).list_ids()
    }
    fn health(&self) -> StoreFuture<'_, ()> {
        (**self).health()
    }
    fn for_context(&self, context: &str) -> Arc<dyn SessionStore> {
        (**self).for_context(context)
    }
}

/// A context name as a store keeps it in file names and keys: ASCII letters, digits, `-`
/// and `_` as they are, every other byte as `%XX` (upper-case hex). The mapping is
/// one-to-one, and the result never contains `/`, `.`, `:`, `*`, `{` or a space, so it is a
/// safe directory name and Redis key part (no glob, no hash tag). `""` stays `""`.
///
/// # Examples
/// ```
/// assert_eq!(tribes_sessions::store_namespace("/cart"), "%2Fcart");
/// assert_eq!(tribes_sessions::store_namespace("shop-eu_1"), "shop-eu_1");
/// assert_eq!(tribes_sessions::store_namespace(".."), "%2E%2E");
/// ```
pub fn store_namespace(context: &str) -> String {
    let mut out = String::with_capacity(context.len());
    for b in context.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The name a scoped store shows: the base name, plus the context unless it is `""`.
#[cfg_attr(
    not(any(feature = "file", feature = "postgres", feature = "redis")),
    allow(dead_code)
)]
pub(crate) fn scoped_name(base: &str, context: &str) -> String {
    if context.is_empty() {
        base.to_owned()
    } else {
        format!("{base} (context '{context}')")
    }
}

/// Checks a record before a backend touches it: its size limit.
pub(crate) fn check_record(store: &str, record: &StoredSession) -> Result<(), StoreError> {
    if !record::data_fits(record) {
        return Err(StoreError::InvalidRecord {
            store: store.to_owned(),
            id: record.id,
            cause: crate::Cause::new(RecordError::DataTooLarge { len: record.data.len() }),
        });
    }
    Ok(())
}
