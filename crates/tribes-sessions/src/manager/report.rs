//! What a commit did: [`CommitReport`], and per member a [`MemberAck`] with its
//! [`AckOutcome`].

use std::fmt;
use std::sync::Arc;

/// What happened to a committed change at one member.
#[derive(Clone, Debug, serde::Serialize)]
#[non_exhaustive]
pub enum AckOutcome {
    /// Queued for sending (async mode).
    Queued,
    /// Applied by the member (sync-ack mode).
    Acked,
    /// Not applied: the channel's error for this member (shared, so the outcome stays
    /// `Clone`; serialized as its message).
    Failed(#[serde(serialize_with = "as_message")] Arc<tribes::SendError>),
    /// No ack within the ack timeout; it may still arrive.
    TimedOut,
}

fn as_message<S: serde::Serializer>(e: &Arc<tribes::SendError>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(e)
}

impl AckOutcome {
    /// Whether the member has the change or it is queued for it ([`Acked`](Self::Acked) or
    /// [`Queued`](Self::Queued)).
    pub fn is_ok(&self) -> bool {
        matches!(self, AckOutcome::Acked | AckOutcome::Queued)
    }

    /// The channel's error when the send [`Failed`](Self::Failed).
    pub fn error(&self) -> Option<&tribes::SendError> {
        match self {
            AckOutcome::Failed(e) => Some(e),
            _ => None,
        }
    }
}

/// The outcome of a commit at one member.
#[derive(Clone, Debug, serde::Serialize)]
#[non_exhaustive]
pub struct MemberAck {
    /// The member's name (route).
    pub member: String,
    /// What happened.
    pub outcome: AckOutcome,
}

/// What a commit did.
///
/// Its [`Display`](fmt::Display) says what went wrong, member by member, for a log line:
/// `version 7 applied here but not confirmed by every member (b failed: ...; c did not ack
/// in time)`.
#[derive(Clone, Debug, Default, serde::Serialize)]
#[non_exhaustive]
pub struct CommitReport {
    /// The session's version after the commit.
    pub version: u64,
    /// Whether anything was sent (a read-only unit of work sends nothing).
    pub sent: bool,
    /// Bytes of the replication message (per member).
    pub bytes: usize,
    /// Per member.
    pub members: Vec<MemberAck>,
}

impl CommitReport {
    /// Whether every member acked (sync-ack) or queued (async) the change.
    pub fn all_ok(&self) -> bool {
        self.members.iter().all(|m| m.outcome.is_ok())
    }

    /// The members that did not ack or queue the change.
    pub fn failures(&self) -> impl Iterator<Item = &MemberAck> {
        self.members.iter().filter(|m| !m.outcome.is_ok())
    }
}

impl fmt::Display for CommitReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.all_ok() {
            return write!(f, "version {} applied and replicated", self.version);
        }
        write!(
            f,
            "version {} applied here but not confirmed by every member (",
            self.version
        )?;
        for (i, m) in self.failures().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            match &m.outcome {
                AckOutcome::Failed(e) => write!(f, "{} failed: {e}", m.member)?,
                _ => write!(f, "{} did not ack in time", m.member)?,
            }
        }
        f.write_str("); check those members' health or raise the manager's ack timeout")
    }
}
