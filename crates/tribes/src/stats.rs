//! The [`ChannelStats`] snapshot for status pages and metrics.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use serde::Serialize;

use crate::member::Member;
use crate::refusal::RefusalReason;

/// The `last_error` of a candidate that discovery has not probed yet. A starting session
/// manager waits while any candidate says this (see [`Discovery::initial_candidates`](crate::Discovery::initial_candidates)).
pub(crate) const NOT_PROBED_YET: &str = "not probed yet";

/// How a configured candidate (a static address, a DNS answer) is doing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct CandidateStatus {
    /// The discovery kind that owns the candidate.
    pub kind: &'static str,
    /// The member answering there, when it is up.
    pub member: Option<String>,
    /// Whether the last probe got an answer.
    pub up: bool,
    /// Why the last probe failed.
    pub last_error: Option<String>,
    /// Whether discovery has probed it at least once (a candidate listed up front, such
    /// as a static address, is not probed until its discovery task has run).
    pub probed: bool,
}

impl CandidateStatus {
    /// A candidate of `kind` whose last probe reached `member` (a discovery kind's
    /// report, see [`DiscoveryContext::report`](crate::DiscoveryContext::report)).
    pub fn up(kind: &'static str, member: impl Into<String>) -> Self {
        CandidateStatus {
            kind,
            member: Some(member.into()),
            up: true,
            last_error: None,
            probed: true,
        }
    }

    /// A candidate of `kind` whose last probe failed, and why.
    pub fn down(kind: &'static str, error: impl Into<String>) -> Self {
        CandidateStatus {
            kind,
            member: None,
            up: false,
            last_error: Some(error.into()),
            probed: true,
        }
    }

    /// A candidate of `kind` that has not been probed yet.
    pub(crate) fn not_probed_yet(kind: &'static str) -> Self {
        CandidateStatus {
            kind,
            member: None,
            up: false,
            last_error: Some(NOT_PROBED_YET.into()),
            probed: false,
        }
    }
}

/// Peers refused, and peers that refused this node: counts per peer and per
/// reason, and the last [`Refusals::RECENT`] refusals with their details.
#[derive(Debug, Default)]
pub(crate) struct Refusals {
    by_peer: Mutex<BTreeMap<String, (u64, String)>>,
    by_reason: Mutex<BTreeMap<RefusalReason, u64>>,
    recent: Mutex<VecDeque<RefusalRecord>>,
}

impl Refusals {
    const MAX_PEERS: usize = 1024;
    /// Refusals kept with their details.
    pub(crate) const RECENT: usize = 32;

    /// A peer refused for a reason given only in words (a custom discovery's report).
    pub(crate) fn record(&self, peer: String, reason: String) {
        let mut map = self.by_peer.lock().expect("refusals lock");
        if map.len() >= Self::MAX_PEERS && !map.contains_key(&peer) {
            return;
        }
        let entry = map.entry(peer).or_default();
        entry.0 += 1;
        entry.1 = reason;
    }

    /// A typed refusal: by this node (counted per reason and per peer), or of this
    /// node by the peer (`by_peer`; kept in the recent list only).
    pub(crate) fn refused(&self, record: RefusalRecord) {
        if !record.by_peer {
            self.record(record.peer.clone(), record.message.clone());
            *self
                .by_reason
                .lock()
                .expect("refusals lock")
                .entry(record.reason)
                .or_default() += 1;
        }
        let mut recent = self.recent.lock().expect("refusals lock");
        if recent.len() == Self::RECENT {
            recent.pop_front();
        }
        recent.push_back(record);
    }

    pub(crate) fn snapshot(&self) -> BTreeMap<String, RefusedPeer> {
        self.by_peer
            .lock()
            .expect("refusals lock")
            .iter()
            .map(|(peer, (count, reason))| {
                (
                    peer.clone(),
                    RefusedPeer {
                        count: *count,
                        last_reason: reason.clone(),
                    },
                )
            })
            .collect()
    }

    pub(crate) fn stats(&self) -> RefusalStats {
        RefusalStats {
            by_reason: self.by_reason.lock().expect("refusals lock").clone(),
            recent: self.recent.lock().expect("refusals lock").iter().cloned().collect(),
        }
    }
}

/// One refused connection or datagram.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct RefusalRecord {
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The peer's address.
    pub peer: String,
    /// The peer's member id (short form), when the refusal came after it was named.
    pub member: Option<String>,
    /// The cluster key id the peer offered, when it offered one.
    pub key_id: Option<u8>,
    /// Why.
    pub reason: RefusalReason,
    /// `false`: this node refused the peer; `true`: the peer refused this node.
    pub by_peer: bool,
    /// The explanation logged, with the fix.
    pub message: String,
}

/// Refusals by reason, and the last ones.
#[derive(Clone, Debug, Default, Serialize)]
#[non_exhaustive]
pub struct RefusalStats {
    /// Connections and datagrams this node refused, per reason.
    pub by_reason: BTreeMap<RefusalReason, u64>,
    /// The last refusals, both ways, oldest first.
    pub recent: Vec<RefusalRecord>,
}

/// A peer whose frames this node refused.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct RefusedPeer {
    /// How many connections or datagrams were refused.
    pub count: u64,
    /// Why, the last time.
    pub last_reason: String,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) malformed: AtomicU64,
    pub(crate) undeliverable: AtomicU64,
    pub(crate) foreign_domain: AtomicU64,
}

/// Traffic and state of one live member.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct MemberStats {
    /// The member id (short form).
    pub id: String,
    /// The member's name (route).
    pub name: String,
    /// Its replication address.
    pub addr: SocketAddr,
    /// Messages sent to it.
    pub messages_out: u64,
    /// Payload bytes sent to it.
    pub bytes_out: u64,
    /// Messages received from it.
    pub messages_in: u64,
    /// Payload bytes received from it.
    pub bytes_in: u64,
    /// Acks received from it.
    pub acks: u64,
    /// Sends to it that failed.
    pub failures: u64,
    /// Sends to it whose ack timed out.
    pub timeouts: u64,
    /// Batches queued for it, not yet written.
    pub queue_depth: usize,
    /// Whether the membership suspects it now: it went silent or its connection closed,
    /// and a TCP verification runs ([`MembershipEvent::Suspected`](crate::MembershipEvent::Suspected)).
    pub suspected: bool,
}

/// A snapshot of a channel, from [`crate::Channel::stats`].
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct ChannelStats {
    /// This node.
    #[serde(skip)]
    pub local: Member,
    /// Time since the channel started.
    pub uptime: Duration,
    /// The membership kinds running.
    pub discovery: Vec<&'static str>,
    /// The interceptor stack, top to bottom.
    pub interceptors: Vec<&'static str>,
    /// Live members and their traffic.
    pub members: Vec<MemberStats>,
    /// Configured candidates (static addresses, …) and whether they answer.
    pub candidates: BTreeMap<String, CandidateStatus>,
    /// Connections closed for malformed, forged or unauthenticated input.
    pub malformed_frames: u64,
    /// Refused peers (by address): how often and the last reason, e.g. another cluster key.
    pub refused: BTreeMap<String, RefusedPeer>,
    /// Refusals per reason, and the last ones with peer, member, key id and time.
    pub refusals: RefusalStats,
    /// Whether frames are sealed, and the key ids in use.
    pub security: Security,
    /// Messages that found no listener or were refused by an interceptor.
    pub undeliverable: u64,
    /// Heartbeats ignored because they came from another domain.
    pub foreign_domain: u64,
}

/// How a channel protects its traffic.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct Security {
    /// Whether every connection runs the Noise handshake and seals its frames.
    pub sealed: bool,
    /// The key id new connections and heartbeats use.
    pub send_key: Option<u8>,
    /// Every key id accepted on receipt.
    pub accepted_keys: Vec<u8>,
    /// The handshake protocol (`Noise_XXpsk0_25519_ChaChaPoly_BLAKE2s`), when sealed.
    pub protocol: Option<&'static str>,
    /// This node's identity (public key, base64), when sealed.
    pub identity: Option<String>,
    /// How many node identities the allow-list holds (`None`: no allow-list).
    pub allowed_peers: Option<usize>,
    /// The wire versions this node speaks.
    pub wire_versions: (u8, u8),
}
