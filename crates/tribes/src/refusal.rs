//! Why a connection or a heartbeat was refused: [`Refusal`], what the handshake (or the
//! allow-list) says to the log and to the peer, and [`RefusalReason`], its code for
//! counting. A leaf: the handshake, the keys, the gate and the stats all name it.

use serde::Serialize;

use crate::member::MemberId;

/// Why a connection or a heartbeat was refused, for counting and the status page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RefusalReason {
    /// Sealed under another key with the same id: another cluster, or a wrong key file.
    OtherCluster,
    /// Sealed with a key id this node does not accept (an old key, or a rotation
    /// that has not reached this node).
    UnknownKeyId,
    /// Recorded traffic played again (a handshake that cannot finish, an old heartbeat).
    Replay,
    /// A connection addressed to another member, or to a previous start of this one.
    WrongMember,
    /// The peer's node identity is not on the allow-list.
    Revoked,
    /// One side runs in plain text, the other seals.
    PlainText,
    /// No wire version in common.
    VersionMismatch,
    /// Bytes that are not a tribes handshake or frame at all.
    Malformed,
}

impl RefusalReason {
    pub(crate) fn code(self) -> u8 {
        match self {
            RefusalReason::OtherCluster => 1,
            RefusalReason::UnknownKeyId => 2,
            RefusalReason::Replay => 3,
            RefusalReason::WrongMember => 4,
            RefusalReason::Revoked => 5,
            RefusalReason::PlainText => 6,
            RefusalReason::VersionMismatch => 7,
            RefusalReason::Malformed => 8,
        }
    }

    pub(crate) fn from_code(code: u8) -> Self {
        match code {
            1 => RefusalReason::OtherCluster,
            2 => RefusalReason::UnknownKeyId,
            3 => RefusalReason::Replay,
            4 => RefusalReason::WrongMember,
            5 => RefusalReason::Revoked,
            6 => RefusalReason::PlainText,
            7 => RefusalReason::VersionMismatch,
            _ => RefusalReason::Malformed,
        }
    }
}

/// Why a handshake did not complete: what this node refused, or what the peer said
/// when it refused this node. The connection is closed; nothing else changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The first message does not open under this cluster's key with that id.
    #[error(
        "the peer's handshake does not open under this cluster's key id {key_id}: it belongs to another cluster or has another key under that id (give it this cluster's key file)"
    )]
    OtherCluster {
        /// The key id the peer offered.
        key_id: u8,
    },
    /// The peer offered a key id this node does not accept.
    #[error(
        "the peer seals with key id {key_id}, this node accepts {accepted:?}: the peer still has an old key (finish the rotation on it) or a new key has not reached this node yet (add it to this node's key file)"
    )]
    UnknownKeyId {
        /// The key id the peer offered.
        key_id: u8,
        /// The key ids this node accepts.
        accepted: Vec<u8>,
    },
    /// The peer started under this cluster's key but could not finish: a replay.
    #[error("{what}: someone is replaying recorded cluster traffic or altering it in transit (nothing was accepted)")]
    Replay {
        /// What gave it away.
        what: &'static str,
    },
    /// Addressed to another member id than this node's.
    #[error(
        "the connection is addressed to member {addressed_to}, this node is {this}: the peer's member list is stale (it corrects itself after a restart) or a recorded connection is being replayed"
    )]
    WrongMember {
        /// The member the initiator meant to reach.
        addressed_to: MemberId,
        /// This node's member id.
        this: MemberId,
    },
    /// The peer's static key is not on the allow-list.
    #[error(
        "node identity {public_key} is not on this node's allow-list (revoked, or not added yet: add its public key to allowed_peers)"
    )]
    Revoked {
        /// The peer's public key, base64.
        public_key: String,
    },
    /// One side runs in plain text.
    #[error("{}", if *peer_plain {
        "the peer sends plain text, this node requires the cluster key: give the peer the cluster's key file (or run every member with insecure plain text)"
    } else {
        "the peer seals its traffic, this node runs in plain text: start this node with the cluster's key file"
    })]
    PlainText {
        /// Whether the peer is the plain-text side.
        peer_plain: bool,
    },
    /// No wire version in common.
    #[error(
        "the peer speaks wire versions {peer_min}-{peer_max}, this node speaks {min}-{max}: run one tribes version on every member ({})",
        if *peer_max < *min { "the peer runs an older tribes" } else { "the peer runs a newer tribes" }
    )]
    VersionMismatch {
        /// The oldest version the peer speaks.
        peer_min: u8,
        /// The newest version the peer speaks.
        peer_max: u8,
        /// The oldest version this node speaks.
        min: u8,
        /// The newest version this node speaks.
        max: u8,
    },
    /// Not a tribes handshake.
    #[error("not a tribes handshake: {what} (check that nothing else connects to the replication port)")]
    Malformed {
        /// What is wrong.
        what: String,
    },
    /// The peer refused this node, and said why.
    #[error("the peer refused this node ({reason:?}): {message}")]
    ByPeer {
        /// The peer's reason.
        reason: RefusalReason,
        /// The peer's explanation.
        message: String,
    },
}

impl Refusal {
    /// The reason, for counting.
    pub fn reason(&self) -> RefusalReason {
        match self {
            Refusal::OtherCluster { .. } => RefusalReason::OtherCluster,
            Refusal::UnknownKeyId { .. } => RefusalReason::UnknownKeyId,
            Refusal::Replay { .. } => RefusalReason::Replay,
            Refusal::WrongMember { .. } => RefusalReason::WrongMember,
            Refusal::Revoked { .. } => RefusalReason::Revoked,
            Refusal::PlainText { .. } => RefusalReason::PlainText,
            Refusal::VersionMismatch { .. } => RefusalReason::VersionMismatch,
            Refusal::Malformed { .. } => RefusalReason::Malformed,
            Refusal::ByPeer { reason, .. } => *reason,
        }
    }

    pub(crate) fn malformed(what: impl Into<String>) -> Self {
        Refusal::Malformed { what: what.into() }
    }
}
