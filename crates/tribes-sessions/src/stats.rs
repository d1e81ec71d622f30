//! What a status page shows.

use crate::kind::ManagerKind;

/// Replication traffic to one member.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
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
#[non_exhaustive]
pub struct TransferStats {
    /// How long from start to ready.
    pub duration_ms: Option<u64>,
    /// Sessions received in snapshot chunks.
    pub sessions_received: u64,
    /// The members the sessions came from.
    pub from: Vec<String>,
    /// Every member asked for the sessions, and every member skipped because it does not
    /// serve the context, in order, with the outcome.
    pub attempts: Vec<TransferAttempt>,
}

/// One member asked for the sessions during a state transfer, or skipped without being
/// asked. Its [`Display`](std::fmt::Display) reads as the log line said it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct TransferAttempt {
    /// The member's name (its route).
    pub member: String,
    /// The member's id (short form).
    pub member_id: String,
    /// From the request to its outcome; `None` for a member skipped without a request.
    pub duration_ms: Option<u64>,
    /// What came of it.
    pub outcome: AttemptOutcome,
}

impl TransferAttempt {
    /// An attempt on `member` (name) with id `member_id`.
    pub fn new(
        member: impl Into<String>,
        member_id: impl Into<String>,
        duration_ms: Option<u64>,
        outcome: AttemptOutcome,
    ) -> Self {
        TransferAttempt {
            member: member.into(),
            member_id: member_id.into(),
            duration_ms,
            outcome,
        }
    }

    /// Whether the attempt failed (see [`AttemptOutcome::is_failure`]).
    pub fn is_failure(&self) -> bool {
        self.outcome.is_failure()
    }
}

/// What came of a [`TransferAttempt`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum AttemptOutcome {
    /// The member sent its sessions.
    Received {
        /// How many sessions its chunks carried.
        sessions: u64,
    },
    /// The member is itself starting (receiving the sessions): the next one was asked.
    NotReady,
    /// The member refused the request: it does not serve the context (any more).
    NoSuchContext {
        /// Its refusal.
        reason: String,
    },
    /// Skipped without a request: the member refused this node's greeting because it
    /// does not serve the context, so it gets and gives no sessions of it.
    NotServing {
        /// Its refusal.
        reason: String,
    },
    /// The request was not delivered or acked, the member stayed silent past the attempt
    /// timeout, or it left during the transfer: the next one was asked.
    Failed {
        /// Why, in words.
        cause: String,
    },
}

impl AttemptOutcome {
    /// Whether it is a failure an operator should look at: a refused request
    /// ([`NoSuchContext`](Self::NoSuchContext)) or a [`Failed`](Self::Failed) one. A member
    /// that is itself starting, or that does not serve the context at all, is not.
    pub fn is_failure(&self) -> bool {
        matches!(
            self,
            AttemptOutcome::NoSuchContext { .. } | AttemptOutcome::Failed { .. }
        )
    }
}

impl std::fmt::Display for TransferAttempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let who = format!("{} ({})", self.member, self.member_id);
        let after = match self.duration_ms {
            Some(ms) => format!(" after {ms} ms"),
            None => String::new(),
        };
        match &self.outcome {
            AttemptOutcome::Received { sessions } => write!(f, "{who}: {sessions} sessions received{after}"),
            AttemptOutcome::NotReady => write!(f, "{who}: is itself starting{after}, trying the next member"),
            AttemptOutcome::NoSuchContext { reason } => write!(
                f,
                "{who} does not serve the context ({reason}){after}: deploy the context there too, or use the BackupManager which only uses members that serve it"
            ),
            AttemptOutcome::NotServing { reason } => {
                write!(
                    f,
                    "{who} does not serve the context ({reason}): it gets no sessions of it"
                )
            }
            AttemptOutcome::Failed { cause } => {
                write!(
                    f,
                    "state transfer from {who} failed{after}: {cause}; trying the next member"
                )
            }
        }
    }
}

/// A snapshot of one manager's state and counters.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
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
    /// Sessions this node ended at their max lifetime (OWASP's absolute timeout,
    /// [`with_max_lifetime`](crate::SessionManagerBuilder::with_max_lifetime)): found by a
    /// request (then ended on every node before the request goes on) or by the periodic
    /// sweep (each node's sweep ends its own copy, so one session may count on several
    /// nodes); also counted in `expired`. A copy ended by another node's message is not
    /// counted here.
    pub absolute_timeouts: u64,
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
