//! The one error type of every store operation.

/// Why a store operation failed. Every message names the store (its kind and address), the
/// session id when there is one, the cause, and what to do about it; each variant says
/// whether anything in the store changed.
///
/// The store is named as in [`SessionStore::name`](super::SessionStore::name), for example
/// `redis store at redis://127.0.0.1:6379`; passwords in URLs are never shown.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Optimistic concurrency: the stored version is not the expected one, so another writer
    /// saved the session in between. Nothing was written. Reload the session, reapply the
    /// change, save again with the new version (or report the conflict).
    #[error(
        "{store}: session {id} was saved by another writer: expected version {expected}, found {} (nothing written; reload the session and retry)",
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
        "{store}: session {id} cannot be decoded: {cause} (left as is, other sessions are not affected; delete it, or upgrade this node if a newer version wrote it)"
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
    /// The id cannot be stored (empty, too long, or characters outside `A-Z a-z 0-9 - _ .`,
    /// or a leading dot). Nothing changed.
    #[error("{store}: invalid session id {id:?}: use 1 to 128 of A-Z a-z 0-9 - _ . not starting with a dot")]
    InvalidId {
        /// The store.
        store: String,
        /// The rejected id.
        id: String,
    },
    /// The record cannot be stored as given (its data is 4 GiB or more). Nothing changed.
    #[error("{store}: session {id} cannot be stored: {cause}")]
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

fn id_part(id: &Option<String>) -> String {
    id.as_ref().map(|id| format!(" of session {id}")).unwrap_or_default()
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
            | StoreError::InvalidId { store, .. }
            | StoreError::InvalidRecord { store, .. }
            | StoreError::Backend { store, .. } => store,
        }
    }

    /// The session id the error is about, if any.
    pub fn id(&self) -> Option<&str> {
        match self {
            StoreError::Conflict { id, .. }
            | StoreError::Corrupt { id, .. }
            | StoreError::InvalidId { id, .. }
            | StoreError::InvalidRecord { id, .. } => Some(id),
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
            id: "abc".into(),
            expected: 3,
            found: Some(4),
        };
        let m = e.to_string();
        assert!(m.contains("file store at /x") && m.contains("abc") && m.contains("version 4") && m.contains("retry"));
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
