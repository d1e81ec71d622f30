//! What a context's manager is: [`ManagerKind`] (Delta or Backup) and
//! [`ReplicationMode`] (deltas or full sessions). Settings that the core, the node, the
//! driver and the simulation all read, so they belong to none of them.

/// Which replication scheme a manager uses. See the crate docs for when to pick which.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub enum ManagerKind {
    /// All to all: every member serving the context holds every session (Tomcat's `DeltaManager`).
    Delta,
    /// One primary and `backup_count` backups per session (Tomcat's `BackupManager`).
    Backup {
        /// Copies besides the primary (default 1).
        backup_count: usize,
    },
}

/// What a commit sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize)]
#[non_exhaustive]
pub enum ReplicationMode {
    /// Only the recorded changes (default).
    #[default]
    Deltas,
    /// The whole session at every commit (Tomcat's full-session mode).
    FullSession,
}
