//! The one error type of every store operation.

use std::fmt;

use crate::cause::Cause;
use crate::id::SessionId;

/// Why a store operation failed. Every message names the store (its kind and address), the
/// session when there is one, the cause, and what to do about it; each variant says
/// whether anything in the store changed.
///
/// Messages name a session by its log hash ([`SessionId::log_id`], the same `#xxxxxxxx` as
/// in log lines), never by its id: a session id is a secret (OWASP) and these messages end
/// up in logs. The id itself is in the variant's `id` field and [`StoreError::id`]; `Debug`
/// shows the hash too.
///
/// The store is named as in [`SessionStore::name`](super::SessionStore::name), for example
/// `redis store at redis://127.0.0.1:6379`; passwords in URLs are never shown.
///
/// The `cause` of a variant is its [`source()`](std::error::Error::source): the concrete
/// error of the file system, the database or Redis client, or a [`RecordError`](super::RecordError)
/// or [`UnexpectedReply`] this crate found; [`Cause::downcast_ref`] reaches it too.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Optimistic concurrency: the stored version is not the expected one, so another writer
    /// saved the session in between. Nothing was written. Reload the session, reapply the
    /// change, save again with the new version (or report the conflict).
    #[error(
        "{store}: session {} was saved by another writer: expected version {expected}, found {} (nothing written; reload the session and retry)",
        .id.log_id(),
        match found { Some(v) => format!("version {v}"), None => "no record".to_owned() }
    )]
    Conflict {
        /// The store.
        store: String,
        /// The session.
        id: SessionId,
        /// The version the caller expected.
        expected: u64,
        /// The version found in the store, `None` when there was no (readable) record.
        found: Option<u64>,
    },
    /// The record exists but cannot be decoded: damaged bytes, a foreign value, or a record
    /// written by a newer version. Nothing changed; every other session still loads.
    #[error(
        "{store}: session {} cannot be decoded: {cause}{} (left as is, other sessions are not affected; delete it, or upgrade this node if a newer version wrote it)",
        .id.log_id(),
        location_part(.location)
    )]
    Corrupt {
        /// The store.
        store: String,
        /// The session.
        id: SessionId,
        /// What is wrong with the record: a [`RecordError`](super::RecordError).
        #[source]
        cause: Cause,
        /// Where the record is, when the store's name does not say it (the file store
        /// names the file), and how to find it.
        location: Option<String>,
    },
    /// The store cannot be reached (server down, connection refused, timeout, pool
    /// exhausted). For a save, the write may or may not have been applied; loading again
    /// tells. Nothing is corrupted: every write is atomic.
    #[error("{store}: {operation}: {cause}: {hint}")]
    Unavailable {
        /// The store.
        store: String,
        /// The operation, such as `load` or `connect`.
        operation: &'static str,
        /// The underlying error.
        #[source]
        cause: Cause,
        /// What to check.
        hint: &'static str,
    },
    /// The record cannot be stored as given (its data is 4 GiB or more). Nothing changed.
    #[error("{store}: session {} cannot be stored: {cause}", .id.log_id())]
    InvalidRecord {
        /// The store.
        store: String,
        /// The session.
        id: SessionId,
        /// What is wrong: a [`RecordError`](super::RecordError).
        #[source]
        cause: Cause,
    },
    /// The store answered with an error of its own (an I/O error on a file, an SQL error, a
    /// Redis error reply). For a save, nothing was written unless the message says otherwise.
    #[error("{store}: {operation}{} failed: {cause}{}", id_part(.id), hint_part(.hint))]
    Backend {
        /// The store.
        store: String,
        /// The operation, such as `save` or `delete_expired`.
        operation: &'static str,
        /// The session, when the operation had one.
        id: Option<SessionId>,
        /// The underlying error.
        #[source]
        cause: Cause,
        /// What to check, when known.
        hint: Option<&'static str>,
    },
}

/// A store's server answered something this crate did not expect: the cause of some
/// [`StoreError::Backend`] and [`StoreError::Unavailable`] errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UnexpectedReply {
    /// Redis answered `PING` with something else than `PONG`.
    #[error("PING answered {reply:?}")]
    Ping {
        /// The answer.
        reply: String,
    },
    /// The Redis save script refused a save without a version check.
    #[error("the save script refused an unconditional save")]
    SaveRefused,
    /// Redis Cluster reports a state other than `ok` (`CLUSTER INFO`).
    #[error("{state}")]
    ClusterState {
        /// Its `cluster_state:` line, such as `cluster_state:fail`.
        state: String,
    },
}

impl StoreError {
    /// A [`StoreError::Corrupt`] of `store` about session `id`.
    pub(crate) fn corrupt(store: &str, id: SessionId, cause: super::RecordError) -> StoreError {
        StoreError::Corrupt {
            store: store.to_owned(),
            id,
            cause: Cause::new(cause),
            location: None,
        }
    }
}

/// Like a derived `Debug`, with every id shown as its [`LogId`](crate::LogId) (`{e:?}` and `unwrap`
/// panics end up in logs too).
impl fmt::Debug for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Conflict {
                store,
                id,
                expected,
                found,
            } => f
                .debug_struct("Conflict")
                .field("store", store)
                .field("id", &id.log_id())
                .field("expected", expected)
                .field("found", found)
                .finish(),
            StoreError::Corrupt {
                store,
                id,
                cause,
                location,
            } => f
                .debug_struct("Corrupt")
                .field("store", store)
                .field("id", &id.log_id())
                .field("cause", cause)
                .field("location", location)
                .finish(),
            StoreError::Unavailable {
                store,
                operation,
                cause,
                hint,
            } => f
                .debug_struct("Unavailable")
                .field("store", store)
                .field("operation", operation)
                .field("cause", cause)
                .field("hint", hint)
                .finish(),
            StoreError::InvalidRecord { store, id, cause } => f
                .debug_struct("InvalidRecord")
                .field("store", store)
                .field("id", &id.log_id())
                .field("cause", cause)
                .finish(),
            StoreError::Backend {
                store,
                operation,
                id,
                cause,
                hint,
            } => f
                .debug_struct("Backend")
                .field("store", store)
                .field("operation", operation)
                .field("id", &id.as_ref().map(SessionId::log_id))
                .field("cause", cause)
                .field("hint", hint)
                .finish(),
        }
    }
}

fn id_part(id: &Option<SessionId>) -> String {
    id.as_ref()
        .map(|id| format!(" of session {}", id.log_id()))
        .unwrap_or_default()
}

fn hint_part(hint: &Option<&'static str>) -> String {
    hint.map(|h| format!(" ({h})")).unwrap_or_default()
}

fn location_part(location: &Option<String>) -> String {
    location.as_ref().map(|l| format!(" ({l})")).unwrap_or_default()
}

impl StoreError {
    /// Whether this is a [`StoreError::Conflict`].
    pub fn is_conflict(&self) -> bool {
        matches!(self, StoreError::Conflict { .. })
    }

    /// Whether this is a [`StoreError::Corrupt`].
    pub fn is_corrupt(&self) -> bool {
        matches!(self, StoreError::Corrupt { .. })
    }

    /// Whether this is a [`StoreError::Unavailable`]: retrying later may succeed.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }

    /// The store's name, as in every message.
    pub fn store(&self) -> &str {
        match self {
            StoreError::Conflict { store, .. }
            | StoreError::Corrupt { store, .. }
            | StoreError::Unavailable { store, .. }
            | StoreError::InvalidRecord { store, .. }
            | StoreError::Backend { store, .. } => store,
        }
    }

    /// The session the error is about, if any.
    pub fn id(&self) -> Option<SessionId> {
        match self {
            StoreError::Conflict { id, .. } | StoreError::Corrupt { id, .. } | StoreError::InvalidRecord { id, .. } => {
                Some(*id)
            }
            StoreError::Backend { id, .. } => *id,
            StoreError::Unavailable { .. } => None,
        }
    }
}

/// Hides the password of a URL such as `postgres://user:secret@host/db`.
#[cfg(any(feature = "postgres", feature = "redis", test))]
pub(crate) fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}{tail}")
            } else {
                format!("{scheme}://{user}@{host}{tail}")
            }
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error;

    use super::*;
    use crate::store::RecordError;

    #[test]
    fn store_error_messages_name_store_id_cause_fix() {
        let id = SessionId::from_bytes([5; 16]);
        let e = StoreError::Conflict {
            store: "file store at /x".into(),
            id,
            expected: 3,
            found: Some(4),
        };
        let m = e.to_string();
        assert!(
            m.contains("file store at /x") && m.contains("version 4") && m.contains("retry"),
            "{m}"
        );
        assert!(
            m.contains(&id.log_id().to_string()) && !m.contains(&id.to_string()),
            "{m}"
        );
        assert_eq!(e.id(), Some(id), "the id itself stays available to code");
        assert!(e.source().is_none());
        // No variant shows the id; each still says what is wrong, and has its cause as source.
        let store = || "s".to_owned();
        let io = || Cause::new(std::io::Error::other("disk on fire"));
        for (e, says) in [
            (
                StoreError::Corrupt {
                    store: store(),
                    id,
                    cause: Cause::new(RecordError::IdNotUtf8),
                    location: Some("the file <id>.session in /x".into()),
                },
                "not UTF-8 (the file <id>.session in /x)",
            ),
            (
                StoreError::InvalidRecord {
                    store: store(),
                    id,
                    cause: Cause::new(RecordError::DataTooLarge { len: 1 << 33 }),
                },
                "the limit is 4 GiB",
            ),
            (
                StoreError::Backend {
                    store: store(),
                    operation: "save",
                    id: Some(id),
                    cause: io(),
                    hint: None,
                },
                "save of session #",
            ),
        ] {
            let m = e.to_string();
            assert!(!m.contains(&id.to_string()), "{m}");
            assert!(m.contains(says), "{says:?} in {m}");
            let debug = format!("{e:?}");
            assert!(!debug.contains(&id.to_string()) && debug.contains("#"), "{debug}");
            assert!(e.source().is_some(), "{e:?}");
        }
        let e = StoreError::Unavailable {
            store: "redis store at redis://127.0.0.1:6379".into(),
            operation: "connect",
            cause: Cause::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
            hint: "is Redis running?",
        };
        assert_eq!(
            e.to_string(),
            format!(
                "redis store at redis://127.0.0.1:6379: connect: {}: is Redis running?",
                std::io::Error::from(std::io::ErrorKind::ConnectionRefused)
            )
        );
        let source = e.source().and_then(|s| s.downcast_ref::<std::io::Error>());
        assert_eq!(
            source.map(std::io::Error::kind),
            Some(std::io::ErrorKind::ConnectionRefused),
            "the concrete error is the source, not a wrapper"
        );
        assert_eq!(redact_url("postgres://u:pw@h:5/db"), "postgres://u:***@h:5/db");
        assert_eq!(redact_url("redis://:pw@h:5"), "redis://:***@h:5");
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("redis://h:1"), "redis://h:1");
    }
}
