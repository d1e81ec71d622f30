//! Every call the layer makes into `tribes-sessions`, in one place.

use std::time::Duration;

use tribes_sessions::{SessionHandle as Handle, SessionId, SessionManager};

use crate::error::SessionError;

/// Loads a session by its base id; `None` when unknown, expired, or past its max
/// lifetime (which the manager then ended on every node).
pub(crate) async fn get(manager: &SessionManager, id: &SessionId) -> Option<Handle> {
    manager.get(id).await
}

/// Creates a session (mapped to [`SessionError`]).
pub(crate) async fn create(manager: &SessionManager) -> Result<Handle, SessionError> {
    manager.create(manager.now()).map_err(|e| match e {
        tribes_sessions::CreateError::TooManySessions { .. } => SessionError::TooManySessions {
            context: manager.context().to_owned(),
            retry_after: Duration::from_secs(1),
            source: e,
        },
        other => SessionError::Unavailable {
            context: manager.context().to_owned(),
            source: other.into(),
        },
    })
}

/// The outcome of a commit, as the layer sees it.
#[derive(Debug)]
pub(crate) enum CommitOutcome {
    /// Applied locally and replicated (or queued, in async mode).
    Ok,
    /// The session was invalidated or expired meanwhile; the changes were dropped.
    Gone,
    /// Applied locally but not confirmed by every member, or refused.
    Failed(CommitFailure),
}

/// Why a commit failed, as the manager said it (logged with `Display`).
#[derive(Debug, thiserror::Error)]
pub(crate) enum CommitFailure {
    /// Applied here, not confirmed by every member: the report names them and why.
    #[error("{0}")]
    Unconfirmed(tribes_sessions::CommitReport),
    /// The manager refused the commit.
    #[error(transparent)]
    Refused(#[from] tribes_sessions::ReplicationError),
}

/// Commits a handle's changes (end of the unit of work).
pub(crate) async fn commit(manager: &SessionManager, session: &Handle) -> CommitOutcome {
    outcome(manager.commit(session).await.map(Some))
}

fn outcome(result: Result<Option<tribes_sessions::CommitReport>, tribes_sessions::ReplicationError>) -> CommitOutcome {
    match result {
        Ok(None) | Err(tribes_sessions::ReplicationError::Gone { .. }) => CommitOutcome::Gone,
        Ok(Some(report)) if report.all_ok() => CommitOutcome::Ok,
        Ok(Some(report)) => CommitOutcome::Failed(CommitFailure::Unconfirmed(report)),
        Err(e) => CommitOutcome::Failed(e.into()),
    }
}

/// Records an access (reads replicate access times in batches).
pub(crate) fn touch(manager: &SessionManager, id: &SessionId) {
    manager.touch(id, manager.now());
}

/// Binds the session to `route` (failover).
pub(crate) async fn rebind(manager: &SessionManager, id: &SessionId, route: &str) -> CommitOutcome {
    outcome(manager.rebind(id, route).await)
}

/// This node's route.
pub(crate) fn local_route(manager: &SessionManager) -> &str {
    manager.route()
}

/// Whether this node is the session's primary.
pub(crate) fn is_primary(manager: &SessionManager, id: &SessionId) -> bool {
    manager.is_primary(id)
}

/// Whether the state transfer is done.
pub(crate) fn is_ready(manager: &SessionManager) -> bool {
    manager.is_ready()
}

/// Waits for readiness, at most `timeout`; whether the node is ready.
pub(crate) async fn wait_ready(manager: &SessionManager, timeout: Duration) -> bool {
    if manager.is_ready() {
        return true;
    }
    let _ = tokio::time::timeout(timeout, manager.wait_ready()).await;
    manager.is_ready()
}

/// What invalidating a session by its log hash did (the session browser's action).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub(crate) enum Invalidation {
    /// Invalidated on the node `by` and replicated like any invalidation: in sync-ack
    /// mode every member confirmed it; in async mode it is on its way.
    Invalidated { by: String },
    /// Invalidated on `by`, but not confirmed by every member (they learn it with the
    /// manager's next messages and anti-entropy).
    NotConfirmed { by: String, cause: String },
    /// No session with this hash is held there.
    NotFound,
    /// Several sessions share the hash (a 32-bit hash collision): nothing was done.
    Ambiguous { sessions: usize },
}

/// Invalidates the session with `log_id` that this node holds, through the same path as
/// a request's [`Session::invalidate`](crate::Session::invalidate): the manager's commit,
/// which replicates it (and in sync-ack mode waits for every member's ack).
pub(crate) async fn invalidate_by_log_id(manager: &SessionManager, log_id: tribes_sessions::LogId) -> Invalidation {
    let found = manager.browse(log_id, |_| false);
    let id = match found.as_slice() {
        [] => return Invalidation::NotFound,
        [one] => one.id(),
        many => return Invalidation::Ambiguous { sessions: many.len() },
    };
    let Some(h) = manager.get(&id).await else {
        return Invalidation::NotFound;
    };
    h.invalidate();
    let by = local_route(manager);
    match commit(manager, &h).await {
        CommitOutcome::Ok => Invalidation::Invalidated { by: by.to_owned() },
        CommitOutcome::Gone => Invalidation::NotFound,
        CommitOutcome::Failed(failure) => Invalidation::NotConfirmed {
            by: by.to_owned(),
            // Sent to the member that asked, as text.
            cause: failure.to_string(),
        },
    }
}
