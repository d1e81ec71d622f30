//! Who a node is: [`MemberId`] and [`Member`].

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A member's unique id: 128 random bits, new for every process start.
///
/// A process that restarts on the same address is a *new* member, as in Tomcat,
/// so peers can tell a restart (state must be transferred again) from a member
/// that was only unreachable for a while.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MemberId(#[serde(with = "serde_bytes")] pub(crate) [u8; 16]);

impl MemberId {
    /// A fresh id drawn from the given random number generator.
    pub fn random<R: rand::Rng + ?Sized>(rng: &mut R) -> Self {
        let mut id = [0u8; 16];
        rng.fill_bytes(&mut id);
        MemberId(id)
    }

    /// The id from its 16 raw bytes.
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        MemberId(bytes)
    }

    /// The 16 raw bytes of the id.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for MemberId {
    /// The first 8 hex digits: enough to tell members apart in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0[..4] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MemberId(")?;
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

/// One process in the cluster, as its peers see it.
///
/// It is what heartbeats carry: the id, the node's route (Tomcat's `jvmRoute`),
/// its cluster domain, the address it receives replication on, a small
/// application payload and when it started.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub(crate) id: MemberId,
    pub(crate) name: String,
    pub(crate) domain: String,
    pub(crate) addr: SocketAddr,
    pub(crate) payload: Bytes,
    pub(crate) started_at_ms: u64,
}

impl Member {
    /// A member description. `started_at_ms` is milliseconds since the Unix epoch.
    pub fn new(
        id: MemberId,
        name: impl Into<String>,
        domain: impl Into<String>,
        addr: SocketAddr,
        started_at_ms: u64,
    ) -> Self {
        Member {
            id,
            name: name.into(),
            domain: domain.into(),
            addr,
            payload: Bytes::new(),
            started_at_ms,
        }
    }

    /// The same member with another application payload.
    pub fn with_payload(mut self, payload: Bytes) -> Self {
        self.payload = payload;
        self
    }

    /// The member's unique id (new on every start).
    pub fn id(&self) -> MemberId {
        self.id
    }

    /// The member's name: the node's route, as Tomcat's `jvmRoute`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The cluster domain; members of other domains are ignored.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The address the member receives replication frames on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The application payload the member advertises in its heartbeats.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// When the member started, in milliseconds since the Unix epoch.
    pub fn started_at_ms(&self) -> u64 {
        self.started_at_ms
    }
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({} at {})", self.name, self.id, self.addr)
    }
}

/// Milliseconds since the Unix epoch, for [`Member::started_at_ms`].
pub(crate) fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A map keyed by member id, hashed cheaply: ids are 16 random bytes, and only
/// authenticated members put them on the wire, so a keyed SipHash per lookup (on
/// every message, in the throughput counters and the senders) buys nothing.
pub(crate) type IdMap<V> = HashMap<MemberId, V, BuildHasherDefault<IdHasher>>;

/// Folds the id's bytes into one word (see [`IdMap`]).
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }

    fn write_usize(&mut self, _len: usize) {
        // The length prefix of the 16-byte array: the same for every id.
    }

    fn finish(&self) -> u64 {
        self.0
    }
}
