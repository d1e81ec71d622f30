//! The [`ChannelStats`] snapshot for status pages and metrics.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use serde::Serialize;

use crate::member::Member;
use crate::membership::CandidateStatus;

/// Peers whose frames were refused: how many times, and the last reason.
#[derive(Debug, Default)]
pub(crate) struct Refusals {
    by_peer: Mutex<BTreeMap<String, (u64, String)>>,
}

impl Refusals {
    const MAX_PEERS: usize = 1024;

    pub(crate) fn record(&self, peer: String, reason: String) {
        let mut map = self.by_peer.lock().expect("refusals lock");
        if map.len() >= Self::MAX_PEERS && !map.contains_key(&peer) {
            return;
        }
        let entry = map.entry(peer).or_default();
        entry.0 += 1;
        entry.1 = reason;
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
}

/// A peer whose frames this node refused.
#[derive(Clone, Debug, Serialize)]
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
}

/// A snapshot of a channel, from [`crate::Channel::stats`].
#[derive(Clone, Debug, Serialize)]
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
    /// Whether frames are sealed, and the key ids in use.
    pub security: Security,
    /// Messages that found no listener or were refused by an interceptor.
    pub undeliverable: u64,
    /// Heartbeats ignored because they came from another domain.
    pub foreign_domain: u64,
}

/// How a channel protects its traffic.
#[derive(Clone, Debug, Serialize)]
pub struct Security {
    /// Whether every frame is sealed (authenticated and encrypted).
    pub sealed: bool,
    /// The key id frames are sealed with.
    pub send_key: Option<u8>,
    /// Every key id accepted on receipt.
    pub accepted_keys: Vec<u8>,
}
