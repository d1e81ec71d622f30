//! What a status page shows.

use crate::kind::ManagerKind;

/// Replication traffic to one member.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct MemberReplication {
    /// The member's name.
    pub member: String,
    /// Messages sent to it.
    pub messages: u64,
    /// Bytes sent to it (session messages, before framing).
    pub bytes: u64,
    /// Acks received from it (sync-ack and use-ack commits, greetings, transfer requests).
    pub acks: u64,
    /// Failed or timed-out sends to it.
    pub failures: u64,
}

/// How this node received its sessions.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TransferStats {
    /// How long from start to ready.
    pub duration_ms: Option<u64>,
    /// Sessions received in snapshot chunks.
    pub sessions_received: u64,
    /// The members the sessions came from.
    pub from: Vec<String>,
    /// Every attempt and skipped member, with the cause.
    pub attempts: Vec<String>,
}

/// A snapshot of one manager's state and counters.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ManagerStats {
    /// The context.
    pub context: String,
    /// Delta or Backup.
    pub kind: ManagerKind,
    /// When a commit returns: `Async` (queued), `UseAck` (every member has the bytes) or
    /// `SyncAck` (every member applied it).
    pub send_mode: tribes::SendMode,
    /// This node's route.
    pub route: String,
    /// Whether it serves requests.
    pub ready: bool,
    /// Sessions held here.
    pub sessions: usize,
    /// The other members serving the context.
    pub servers: Vec<String>,
    /// Session messages sent (one per member).
    pub messages_sent: u64,
    /// Their bytes.
    pub bytes_sent: u64,
    /// Session messages received.
    pub messages_received: u64,
    /// Their bytes.
    pub bytes_received: u64,
    /// Acks received: one per member per commit in sync-ack and use-ack modes (none for
    /// async commits), plus those of greetings and state-transfer requests.
    pub acks: u64,
    /// Failed or timed-out sends.
    pub failures: u64,
    /// Messages that did not decode (incompatible builds).
    pub undecodable: u64,
    /// BackupManager reads whose fetch did not hear from every member it asked (one could
    /// not be reached, or the ack timeout passed): the request used what the others sent,
    /// which may be older than the last acknowledged write.
    pub fetches_unconfirmed: u64,
    /// Replicated deltas applied.
    pub deltas_applied: u64,
    /// Deltas made against an older version than held here, and copies merged where
    /// each had a write the other lacked (last writer won per attribute).
    pub conflicts: u64,
    /// Anti-entropy rounds this node started.
    pub sync_rounds: u64,
    /// Sessions anti-entropy found different on two members and repaired (merged both
    /// ways, destroyed where the other had destroyed them, or an extra copy dropped).
    pub sync_repaired: u64,
    /// Late changes to destroyed sessions, dropped so they are not resurrected.
    pub dropped_late: u64,
    /// Changes queued during the state transfer that the snapshot already contained.
    pub dropped_in_snapshot: u64,
    /// Sessions expired here.
    pub expired: u64,
    /// Sessions invalidated (here or replicated).
    pub invalidated: u64,
    /// BackupManager: sessions this node took over as primary.
    pub promotions: u64,
    /// Estimated bookkeeping bytes beyond attribute names and values.
    pub overhead_bytes: usize,
    /// The state transfer.
    pub state_transfer: TransferStats,
    /// Traffic per member.
    pub per_member: Vec<MemberReplication>,
    /// Shared store mode: commits refused because another request saved the session first
    /// (each one a [`ReplicationError::Conflict`](crate::ReplicationError::Conflict)).
    pub store_conflicts: u64,
    /// The session store, when the manager has one: name, mode, health, queue depth, counters.
    pub store: Option<crate::StoreStats>,
}
