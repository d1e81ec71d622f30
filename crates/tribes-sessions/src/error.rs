//! One error enum per operation. Each says whether anything changed.
//!
//! Messages name a session by [`SessionId::log_id`] (a short hash), never by its id
//! (OWASP: session ids are secrets and stay out of logs); the error's `id` field has it.

use std::time::Duration;

use crate::cause::Cause;
use crate::id::SessionId;

/// Why an attribute could not be read or written. Nothing in the session changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AttributeError {
    /// The value could not be encoded as MessagePack data.
    #[error(
        "attribute '{name}' cannot be serialized: {cause} (session unchanged; store plain data: derive Serialize, no closures or handles)"
    )]
    Serialize {
        /// The attribute name.
        name: String,
        /// The encoder's error (an `rmp_serde::encode::Error` of the `rmp-serde` version this
        /// build uses; [`Cause::downcast_ref`] reaches it).
        #[source]
        cause: Cause,
    },
    /// The stored value no longer decodes into the requested type (for example it was
    /// written by an older build). Treat the attribute as absent.
    #[error(
        "attribute '{name}' does not decode into {type_name}: {cause} (written by another build? treat it as absent and overwrite it)"
    )]
    Decode {
        /// The attribute name.
        name: String,
        /// The requested Rust type.
        type_name: &'static str,
        /// The decoder's error (an `rmp_serde::decode::Error` of the `rmp-serde` version this
        /// build uses; [`Cause::downcast_ref`] reaches it).
        #[source]
        cause: Cause,
    },
    /// The encoded value is larger than `max_attribute_len`.
    #[error(
        "attribute '{name}' is {len} bytes encoded, over the limit of {max} (session unchanged; store less, or raise with_max_attribute_len)"
    )]
    TooLarge {
        /// The attribute name.
        name: String,
        /// Its encoded length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The session would grow over `max_session_len`.
    #[error(
        "session {} would be {len} bytes with attribute '{name}', over the limit of {max} (session unchanged; store less, or raise with_max_session_len)",
        .id.log_id()
    )]
    SessionTooLarge {
        /// The session.
        id: SessionId,
        /// The attribute name.
        name: String,
        /// The session's encoded attribute length with this value.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The session was invalidated by this handle.
    #[error("session {} is invalidated: create a new session", .id.log_id())]
    Invalidated {
        /// The session.
        id: SessionId,
    },
    /// The name is reserved for the manager ([`PRINCIPAL_ATTRIBUTE`](crate::PRINCIPAL_ATTRIBUTE)).
    #[error("attribute '{name}' is reserved: set the principal with SessionManager::set_principal")]
    Reserved {
        /// The attribute name.
        name: String,
    },
}

/// Why a session could not be created. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CreateError {
    /// `max_active` sessions exist already (an HTTP layer answers 503).
    #[error("context '{context}' already holds {max} sessions, its max_active: retry later, or raise with_max_active")]
    TooManySessions {
        /// The context.
        context: String,
        /// The limit.
        max: usize,
    },
    /// The manager has shut down.
    #[error("the session manager of context '{context}' has shut down")]
    ShutDown {
        /// The context.
        context: String,
    },
}

/// Why a commit did not replicate. The local copy is unchanged unless the variant says so.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplicationError {
    /// The session was invalidated or expired meanwhile (possibly on another node);
    /// the changes were dropped so it is not resurrected.
    #[error(
        "session {} of context '{context}' was invalidated or expired meanwhile: its changes were dropped; create a new session",
        .id.log_id()
    )]
    Gone {
        /// The context.
        context: String,
        /// The session.
        id: SessionId,
    },
    /// The session store refused or failed the save (or delete) of a commit. The change is
    /// applied on this node (and replicated), but not in the store: a full-cluster restart
    /// (or, in shared mode, another node) would not see it.
    #[error(
        "session {} of context '{context}' was applied here but not saved to the store: {source} (the request should be retried; check the store's health in the manager stats)",
        .id.log_id()
    )]
    Store {
        /// The context.
        context: String,
        /// The session.
        id: SessionId,
        /// The store's error (names the store, the cause and the fix).
        source: Box<crate::StoreError>,
    },
    /// Shared store mode: another request (on this or another node) saved the session after
    /// this unit of work loaded it. This unit of work's changes were not saved (nothing
    /// written) and the local copy was dropped; counted in `ManagerStats::store_conflicts`.
    #[error(
        "session {} of context '{context}' was changed by another request in {store} since this one loaded version {expected} (store has {}): this request's changes were NOT saved; reload the session and retry",
        .id.log_id(),
        match found { Some(v) => format!("version {v}"), None => "no record".to_owned() }
    )]
    Conflict {
        /// The context.
        context: String,
        /// The session.
        id: SessionId,
        /// The store's name.
        store: String,
        /// The version this unit of work loaded.
        expected: u64,
        /// The version in the store, `None` when the record is gone.
        found: Option<u64>,
    },
    /// The manager has shut down.
    #[error("the session manager of context '{context}' has shut down: nothing was sent")]
    ShutDown {
        /// The context.
        context: String,
    },
}

impl ReplicationError {
    /// The store's error of a [`Store`](Self::Store) failure. (Its
    /// [`source()`](std::error::Error::source) is the same error, boxed: this spares the
    /// downcast to `Box<StoreError>`.)
    pub fn store_error(&self) -> Option<&crate::StoreError> {
        match self {
            ReplicationError::Store { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Why the state transfer of a starting node did not complete. The node serves the
/// sessions it has (possibly none): users of the lost sessions must log in again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StateTransferError {
    /// No member sent the sessions within the total timeout.
    #[error(
        "context '{context}': no session state received within {timeout:?} (last tried {member}: {cause}); check that every member serving '{context}' is healthy, or raise with_state_transfer_timeout"
    )]
    TimedOut {
        /// The context.
        context: String,
        /// The last member tried (name and id), or "none".
        member: String,
        /// Why the last attempt failed.
        #[source]
        cause: TransferFailure,
        /// The total timeout.
        timeout: Duration,
    },
}

/// Why the last attempt of a state transfer failed: the cause of
/// [`StateTransferError::TimedOut`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransferFailure {
    /// No member was asked, or none answered.
    #[error("no member answered")]
    NoAnswer,
    /// The member is itself starting (it waits for an older one).
    #[error("it is itself starting")]
    Starting,
    /// The member does not serve the context; its refusal as it sent it.
    #[error("{reason}")]
    NotServing {
        /// The member's refusal.
        reason: String,
    },
    /// The request could not be delivered; the cluster channel's error, as it reported it.
    #[error("{reason}")]
    NotDelivered {
        /// The channel's error.
        reason: String,
    },
    /// The member did not acknowledge the request in time.
    #[error("no answer within {ms} ms")]
    NoAck {
        /// How long this node waited, ms.
        ms: u64,
    },
    /// The member acknowledged but sent nothing for this long.
    #[error("silent for {ms} ms during the transfer")]
    Silent {
        /// The attempt timeout, ms.
        ms: u64,
    },
    /// The member left the cluster during the transfer.
    #[error("the member left during the transfer")]
    Left,
    /// Loading the sessions from the session store failed (the store's error).
    #[error("{0}")]
    Store(#[source] crate::StoreError),
}

/// Why a manager did not start. Nothing was started: no listener, no task.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ManagerStartError {
    /// Another manager of this process already serves the context on this channel.
    #[error("context '{context}' is already served by another manager on this channel: use one manager per context")]
    DuplicateContext {
        /// The context.
        context: String,
    },
    /// An option is out of range.
    #[error("invalid option for context '{context}': {option} {}", .option.fix())]
    InvalidOption {
        /// The context.
        context: String,
        /// Which option (its builder method); [`ManagerOption::fix`] says how to fix it.
        option: ManagerOption,
    },
}

/// An option of [`SessionManagerBuilder`](crate::SessionManagerBuilder) that
/// [`ManagerStartError::InvalidOption`] refuses. Displays as its builder method's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ManagerOption {
    /// [`SessionManagerBuilder::with_touch_interval`](crate::SessionManagerBuilder::with_touch_interval).
    TouchInterval,
    /// [`SessionManagerBuilder::with_ack_timeout`](crate::SessionManagerBuilder::with_ack_timeout).
    AckTimeout,
}

impl ManagerOption {
    /// The builder method that sets the option, such as `"with_touch_interval"`.
    pub fn method(self) -> &'static str {
        match self {
            ManagerOption::TouchInterval => "with_touch_interval",
            ManagerOption::AckTimeout => "with_ack_timeout",
        }
    }

    /// What the option must be, the fix an error message gives.
    pub fn fix(self) -> &'static str {
        match self {
            ManagerOption::TouchInterval => "must be positive (the default is 2 s)",
            ManagerOption::AckTimeout => "must be positive (the default is 5 s)",
        }
    }
}

impl std::fmt::Display for ManagerOption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.method())
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error;

    use super::*;

    #[test]
    fn a_transfer_timeout_has_the_last_failure_as_source_down_to_the_store_error() {
        let io = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let store = crate::StoreError::Backend {
            store: "file store at /x".into(),
            operation: "list_ids",
            id: None,
            cause: Cause::new(io),
            hint: None,
        };
        let e = StateTransferError::TimedOut {
            context: "/app".into(),
            member: "file store at /x".into(),
            cause: TransferFailure::Store(store),
            timeout: Duration::from_secs(5),
        };
        let m = e.to_string();
        assert!(
            m.contains("/app") && m.contains("list_ids failed") && m.contains("5s"),
            "{m}"
        );
        let failure = e.source().and_then(|s| s.downcast_ref::<TransferFailure>());
        assert!(matches!(failure, Some(TransferFailure::Store(_))), "{e:?}");
        let store = e
            .source()
            .and_then(Error::source)
            .and_then(|s| s.downcast_ref::<crate::StoreError>());
        let io = store
            .and_then(Error::source)
            .and_then(|s| s.downcast_ref::<std::io::Error>());
        assert_eq!(io.map(std::io::Error::kind), Some(std::io::ErrorKind::PermissionDenied));

        let e = StateTransferError::TimedOut {
            context: "/app".into(),
            member: "n2".into(),
            cause: TransferFailure::Silent { ms: 2_000 },
            timeout: Duration::from_secs(5),
        };
        assert!(
            e.to_string()
                .contains("(last tried n2: silent for 2000 ms during the transfer)"),
            "{e}"
        );
    }
}
