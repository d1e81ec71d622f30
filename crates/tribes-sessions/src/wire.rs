//! Wire messages: serde + rmp-serde data only, versioned. The topic carries the
//! context (`tribes.sessions/<context>`), so a node that does not serve a context has
//! no listener for its topic and fails a sync-ack at once ("no such context").

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::data::{Delta, SessionData};
use crate::id::SessionId;
use crate::principal::Summary;

/// The wire version this build speaks.
/// Version 2: `Drop` carries a version; `FetchMiss` and `NotReady` were added.
pub(crate) const WIRE_VERSION: u8 = 2;

/// The format of a stored session (a store record's data): unchanged since version 1.
pub(crate) const DATA_VERSION: u8 = 1;

/// The topic of a context.
pub(crate) fn topic(context: &str) -> String {
    format!("tribes.sessions/{context}")
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) enum Msg {
    /// "I serve this context" (sync-ack: an ack means the receiver serves it too).
    Hello,
    /// Clean shutdown of the sender's manager; `expire` asks to expire its sessions.
    Bye { expire: bool },
    /// The changes of one unit of work.
    Delta(Delta),
    /// A whole session (full-session mode; backup copies).
    Full(SessionData),
    /// BackupManager: the receiver is the new primary of this session.
    Adopt(SessionData),
    /// BackupManager: the receiver no longer holds this session, unless its copy is newer
    /// than `version` (it fetched a fresher one meanwhile: a late drop must not take the
    /// copy a request is using).
    Drop { id: SessionId, version: u64 },
    /// BackupManager: the session is now primary on the sender (after a fetch).
    Claimed(SessionId),
    /// BackupManager: asks the holders of a session for it.
    Fetch(SessionId),
    /// BackupManager: the answer to a fetch from a member that holds the session.
    FetchReply(SessionData),
    /// BackupManager: the answer to a fetch from a member that does not hold the
    /// session; `gone` when it was destroyed there (invalidated, expired, or its id
    /// changed), so a copy elsewhere is stale.
    FetchMiss { id: SessionId, gone: bool },
    /// State transfer: the receiver of a [`Msg::GetAll`] is itself receiving the
    /// sessions; ask another member, or again later.
    NotReady { request: u64 },
    /// Last-access times (unix ms) of sessions read since the last batch.
    Touches(Vec<(SessionId, u64)>),
    /// Sessions expired (or invalidated) on the sender.
    Expired(Vec<SessionId>),
    /// State transfer: send me your sessions.
    GetAll { request: u64 },
    /// State transfer: a chunk of sessions.
    Chunk { request: u64, sessions: Vec<SessionData> },
    /// State transfer: the end, with the number of sessions sent.
    Done { request: u64, sessions: u64 },
    /// Sessions the receiver should hold (anti-entropy, or the answer to [`Msg::Want`]),
    /// merged field by field, last writer wins, so both sides converge.
    Merge { sessions: Vec<SessionData> },
    /// Anti-entropy, step 1: the fingerprint of each bucket of the sessions the sender
    /// and the receiver should agree on (see `core::anti_entropy`).
    Digest { buckets: Vec<u64> },
    /// Anti-entropy, step 2: the receiver of a digest lists, for the buckets that differ,
    /// each session it holds (id, fingerprint, last access) and the ids it destroyed.
    Detail {
        buckets: Vec<u8>,
        held: Vec<(SessionId, u64, u64)>,
        gone: Vec<SessionId>,
    },
    /// Anti-entropy, step 3: send me your copies of these sessions (as a [`Msg::Merge`]).
    Want(Vec<SessionId>),
    /// These sessions look idle past their interval here: answer with your last access
    /// times (a [`Msg::Touches`]) before the sender expires them (a lost touch batch
    /// must not end a session a user is still using).
    Expiring(Vec<SessionId>),
    /// Log out everywhere: end every session of each principal whose login is at or
    /// before the time (unix ms). Also sent to a member that starts serving the context,
    /// so the other side of a partition learns it at the heal (`core::principals`).
    LoggedOut(Vec<(Arc<str>, u64)>),
    /// Which sessions of this principal do you hold? (answered with
    /// [`Msg::PrincipalSessions`]; the BackupManager asks every server).
    PrincipalQuery { request: u64, principal: Arc<str> },
    /// The answer to a [`Msg::PrincipalQuery`]: the sessions held by the sender.
    PrincipalSessions { request: u64, sessions: Vec<Summary> },
    /// Expiries the sender holds as pending, with each session's principal, reported to
    /// the coordinator until it delivers them (`core::expiry_events`).
    ExpiryPending(Vec<(SessionId, Option<Arc<str>>)>),
    /// The coordinator delivered the `Expired` events of these sessions.
    ExpiryDelivered(Vec<SessionId>),
    /// Anti-entropy: these sessions ended on the sender (tombstones); end them too.
    /// (Before, `Expired` did this, and every repair looked like an expiry.)
    Gone(Vec<SessionId>),
}

impl Msg {
    /// The session a fetch answer (`FetchReply` or `FetchMiss`) is about.
    pub(crate) fn fetch_answer(&self) -> Option<SessionId> {
        match self {
            Msg::FetchReply(d) => Some(d.id),
            Msg::FetchMiss { id, .. } => Some(*id),
            _ => None,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Envelope<M> {
    v: u8,
    msg: M,
}

pub(crate) fn encode(msg: &Msg) -> bytes::Bytes {
    // Room for a typical delta up front: growing from empty reallocated several times.
    let mut buf = Vec::with_capacity(256);
    rmp_serde::encode::write(&mut buf, &Envelope { v: WIRE_VERSION, msg }).expect("session messages always encode");
    bytes::Bytes::from(buf)
}

/// A whole session as a store keeps it (the `data` of a `StoredSession`): the same
/// MessagePack envelope as the wire, with its own version ([`DATA_VERSION`]), so a
/// record names the format it was written in.
pub(crate) fn encode_session(data: &SessionData) -> Vec<u8> {
    rmp_serde::to_vec(&Envelope {
        v: DATA_VERSION,
        msg: data,
    })
    .expect("sessions always encode")
}

/// The inverse of [`encode_session`].
pub(crate) fn decode_session(bytes: &[u8]) -> Result<SessionData, crate::store::RecordError> {
    use crate::store::RecordError;
    let env: Envelope<SessionData> = rmp_serde::from_slice(bytes).map_err(|e| RecordError::Data {
        cause: crate::Cause::new(e),
    })?;
    if env.v != DATA_VERSION {
        return Err(RecordError::DataFormat {
            format: env.v,
            supported: DATA_VERSION,
        });
    }
    Ok(env.msg)
}

pub(crate) fn decode(bytes: &[u8]) -> Result<Msg, String> {
    let env: Envelope<Msg> = rmp_serde::from_slice(bytes).map_err(|e| {
        format!("undecodable session message ({e}): a peer runs an incompatible build (this one speaks version {WIRE_VERSION})")
    })?;
    if env.v != WIRE_VERSION {
        return Err(format!(
            "session message version {} (this build speaks {WIRE_VERSION}): upgrade every node to the same release",
            env.v
        ));
    }
    Ok(env.msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{Blob, Op, Stamp};

    #[test]
    fn round_trip_and_size_of_a_one_attribute_delta() {
        let msg = Msg::Delta(Delta {
            // A random id: bytes above 127 must not cost extra.
            id: SessionId::from_bytes([0xc8; 16]),
            base: 41,
            stamp: Stamp {
                version: 42,
                writer: u64::MAX,
            },
            at_ms: 1_700_000_000_000,
            ops: vec![Op::Set("k".into(), Blob(vec![1].into()))],
        });
        let bytes = encode(&msg);
        assert_eq!(decode(&bytes).unwrap(), msg);
        // 64 bytes of overhead besides key and value.
        assert!(bytes.len() < 64 + 2, "{} bytes", bytes.len());
        assert!(decode(b"garbage").is_err());
    }
}
