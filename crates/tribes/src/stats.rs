//! The [`ChannelStats`] snapshot for status pages and metrics.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use serde::Serialize;

use crate::member::Member;
use crate::membership::CandidateStatus;

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) malformed: AtomicU64,
    pub(crate) malformed_by_peer: Mutex<HashMap<String, u64>>,
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
    /// Connections closed for malformed input.
    pub malformed_frames: u64,
    /// The same, per peer address.
    pub malformed_by_peer: HashMap<String, u64>,
    /// Messages that found no listener or were refused by an interceptor.
    pub undeliverable: u64,
    /// Heartbeats ignored because they came from another domain.
    pub foreign_domain: u64,
}
