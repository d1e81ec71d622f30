//! The one error type of every store operation.

use std::fmt;

use crate::id::LogId;

/// Why a store operation failed. Every message names the store (its kind and address), the
/// session when there is one, the cause, and what to do about it; each variant says
/// whether anything in the store changed.
///
/// Messages name a session by its log hash ([`LogId::of_text`], the same `#xxxxxxxx` as
/// [`SessionId::log_id`](crate::SessionId::log_id) in log lines), never by its id: a session
/// id is a secret (OWASP) and these messages end up in logs. The id itself is in the
/// variant's `id` field and [`StoreError::id`]; `Debug` shows the hash too.
///
/// The store is named as in [`SessionStore::name`](super::SessionStore::name), for example
/// `redis store at redis://127.0.0.1:6379`; passwords in URLs are never shown.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Optimistic concurrency: the stored version is not the expected one, so another writer
    /// saved the session in between. Nothing was written. Reload the session, reapply the
    /// change, save again with the new version (or report the conflict).
    #[error(
        "{store}: session {} was saved by another writer: expected version {expected}, found {} (nothing written; reload the session and retry)",
        LogId::of_text(id),
        match found { Some(v) => format!("version {v}"), None => "no record".to_owned() }
    )]
    Conflict {
        /// The store.
        store: String,
        /// The session id.
        id: String,
        /// The version the caller expected.
        expected: u64,
        /// The version found in the store, `None` when there was no (readable) record.
        found: Option<u64>,
    },
    /// The record exists but cannot be decoded: damaged bytes, a foreign value, or a record
    /// written by a newer version. Nothing changed; every other session still loads.
    #[error(
        "{store}: session {} cannot be decoded: {cause} (left as is, other sessions are not affected; delete it, or upgrade this node if a newer version wrote it)",
        LogId::of_text(id)
    )]
    Corrupt {
        /// The store.
        store: String,
        /// The session id.
        id: String,
        /// What is wrong with the record.
        cause: String,
    },
    /// The store cannot be reached (server down, connection refused, timeout, pool
    /// exhausted). For a save, the write may or may not have been applied; loading again
    /// tells. Nothing is corrupted: every write is atomic.
    #[error("{store}: {cause}: {hint}")]
    Unavailable {
        /// The store.
        store: String,
        /// The underlying error.
        cause: String,
        /// What to check.
        hint: &'static str,
    },
    /// The record cannot be stored as given (its data is 4 GiB or more). Nothing changed.
    #[error("{store}: session {} cannot be stored: {cause}", LogId::of_text(id))]
    InvalidRecord {
        /// The store.
        store: String,
        /// The session id.
        id: String,
        /// What is wrong.
        cause: String,
    },
    /// The store answered with an error of its own (an I/O error on a file, an SQL error, a
    /// Redis error reply). For a save, nothing was written unless the message says otherwise.
    #[error("{store}: {operation}{} failed: {cause}{}", id_part(.id), hint_part(.hint))]
    Backend {
        /// The store.
        store: String,
        /// The operation, such as `save` or `delete_expired`.
        operation: &'static str,
        /// The session id, when the operation had one.
        id: Option<String>,
        /// The underlying error.
        cause: String,
        /// What to check, when known.
        hint: Option<&'static str>,
    },
}

/// Like a derived `Debug`, with every id shown as its [`LogId`] (`{e:?}` and `unwrap`
/// panics end up in logs too).
impl fmt::Debug for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let log = |id: &str| LogId::of_text(id);
        match self {
            StoreError::Conflict {
                store,
                id,
                expected,
                found,
            } => f
                .debug_struct("Conflict")
                .field("store", store)
                .field("id", &log(id))
                .field("expected", expected)
                .field("found", found)
                .finish(),
            StoreError::Corrupt { store, id, cause } => f
                .debug_struct("Corrupt")
                .field("store", store)
                .field("id", &log(id))
                .field("cause", cause)
                .finish(),
            StoreError::Unavailable { store, cause, hint } => f
                .debug_struct("Unavailable")
                .field("store", store)
                .field("cause", cause)
                .field("hint", hint)
                .finish(),
            StoreError::InvalidRecord { store, id, cause } => f
                .debug_struct("InvalidRecord")
                .field("store", store)
                .field("id", &log(id))
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
                .field("id", &id.as_deref().map(log))
                .field("cause", cause)
                .field("hint", hint)
                .finish(),
        }
    }
}

fn id_part(id: &Option<String>) -> String {
    id.as_ref()
        .map(|id| format!(" of session {}", LogId::of_text(id)))
        .unwrap_or_default()
}

fn hint_part(hint: &Option<&'static str>) -> String {
    hint.map(|h| format!(" ({h})")).unwrap_or_default()
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

    /// The session id the error is about, if any.
    pub fn id(&self) -> Option<&str> {
        match self {
            StoreError::Conflict { id, .. } | StoreError::Corrupt { id, .. } | StoreError::InvalidRecord { id, .. } => {
                Some(id)
            }
            StoreError::Backend { id, .. } => id.as_deref(),
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
    use super::*;

    #[test]
    fn store_error_messages_name_store_id_cause_fix() {
        let e = StoreError::Conflict {
            store: "file store at /x".into(),
            id: "sess-abc".into(),
            expected: 3,
            found: Some(4),
        };
        let m = e.to_string();
        assert!(
            m.contains("file store at /x") && m.contains("version 4") && m.contains("retry"),
            "{m}"
        );
        assert!(
            m.contains(&LogId::of_text("sess-abc").to_string()) && !m.contains("sess-abc"),
            "{m}"
        );
        assert_eq!(e.id(), Some("sess-abc"), "the id itself stays available to code");
        // No variant shows the id; each still says what is wrong.
        let store = || "s".to_owned();
        let secret = "secret-id".to_owned();
        for (e, says) in [
            (
                StoreError::Corrupt {
                    store: store(),
                    id: secret.clone(),
                    cause: "bad crc".into(),
                },
                "bad crc",
            ),
            (
                StoreError::InvalidRecord {
                    store: store(),
                    id: secret.clone(),
                    cause: "too big".into(),
                },
                "too big",
            ),
            (
                StoreError::Backend {
                    store: store(),
                    operation: "save",
                    id: Some(secret.clone()),
                    cause: "disk".into(),
                    hint: None,
                },
                "save of session #",
            ),
        ] {
            let m = e.to_string();
            assert!(!m.contains("secret"), "{m}");
            assert!(m.contains(says), "{says:?} in {m}");
            let debug = format!("{e:?}");
            assert!(!debug.contains("secret") && debug.contains("#"), "{debug}");
        }
        let e = StoreError::Unavailable {
            store: "redis store at redis://127.0.0.1:6379".into(),
            cause: "connection refused".into(),
            hint: "is Redis running?",
        };
        assert_eq!(
            e.to_string(),
            "redis store at redis://127.0.0.1:6379: connection refused: is Redis running?"
        );
        assert_eq!(redact_url("postgres://u:pw@h:5/db"), "postgres://u:***@h:5/db");
        assert_eq!(redact_url("redis://:pw@h:5"), "redis://:***@h:5");
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("redis://h:1"), "redis://h:1");
    }
}
