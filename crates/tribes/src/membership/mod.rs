//! Who is in the cluster: the membership decisions ([`Membership`]) and the ways members
//! are found ([`Discovery`]): a static list, multicast heartbeats, and whatever a
//! DNS names (autoscaling groups, Kubernetes headless services), and whatever a
//! user plugs in.

pub(crate) mod core;
mod dns;
mod multicast;
pub(crate) mod probe;
mod statics;
mod watcher;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

pub use self::core::{DepartureReason, Membership, MembershipEffect, MembershipEvent, SuspicionCause};
pub use dns::DnsDiscovery;
pub use multicast::MulticastDiscovery;
pub use probe::ProbeError;
pub use statics::StaticDiscovery;

use crate::member::{Member, MemberId};
use crate::stats::CandidateStatus;

/// What the membership task is told, by discovery, the receiver and the senders.
#[derive(Debug)]
pub(crate) enum MembershipInput {
    Heard(Member),
    /// Heard, and the sender is told once the member list shows the result (the
    /// receiver waits for this before it delivers the messages of a new connection).
    HeardThen(Member, oneshot::Sender<()>),
    Goodbye(MemberId),
    ConnectionLost(MemberId),
    Verified(MemberId, Option<bool>),
}

/// A way of finding members: it runs as a task and reports what it hears.
///
/// Implement it to add a membership kind; [`StaticDiscovery`] is a short example.
pub trait Discovery: Send + fmt::Debug + 'static {
    /// A short name for logs and the status page (`static`, `multicast`, …).
    fn kind(&self) -> &'static str;

    /// Addresses configured up front, if any (used to warn about loopback mistakes).
    fn configured_addrs(&self) -> Vec<SocketAddr> {
        Vec::new()
    }

    /// The candidates this discovery is about to probe (keys as it will pass them to
    /// [`DiscoveryContext::report`]), known before [`Discovery::run`] is first polled.
    /// The channel lists each as not probed yet from the moment it has started, so
    /// that a reader of [`crate::ChannelStats::candidates`] (a starting session manager
    /// waiting for the members it should ask for the sessions) never sees an empty
    /// list only because `run` has not been scheduled yet. `run` must report or
    /// [`DiscoveryContext::forget`] every key returned here. `local` is this node's
    /// advertised address. Default: none.
    fn initial_candidates(&self, local: SocketAddr) -> Vec<String> {
        let _ = local;
        Vec::new()
    }

    /// Run until `ctx` says the channel shuts down.
    fn run(self: Box<Self>, ctx: DiscoveryContext) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// What a [`Discovery`] task gets from the channel.
#[derive(Clone)]
pub struct DiscoveryContext {
    pub(crate) local: watch::Receiver<Member>,
    pub(crate) inputs: mpsc::UnboundedSender<MembershipInput>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) gate: Arc<crate::gate::Gate>,
    pub(crate) candidates: Arc<Mutex<BTreeMap<String, CandidateStatus>>>,
    pub(crate) refused: Arc<crate::stats::Refusals>,
    pub(crate) probe_timeout: Duration,
}

impl fmt::Debug for DiscoveryContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiscoveryContext")
            .field("local", &*self.local.borrow())
            .finish()
    }
}

impl DiscoveryContext {
    /// This node's current description (its payload may change).
    pub fn local(&self) -> Member {
        self.local.borrow().clone()
    }

    /// A member is alive: a heartbeat or answer arrived from it.
    pub fn heard(&self, member: Member) {
        let _ = self.inputs.send(MembershipInput::Heard(member));
    }

    /// A connection to the member closed: a strong hint that it died, verified at once.
    pub fn lost(&self, id: MemberId) {
        let _ = self.inputs.send(MembershipInput::ConnectionLost(id));
    }

    /// Resolves when the channel shuts down.
    pub async fn shutdown(&self) {
        self.shutdown.cancelled().await
    }

    /// Whether the channel is shutting down.
    pub fn is_shutdown(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// Ask the tribes node at `addr` who it is, over TCP.
    ///
    /// # Errors
    /// [`ProbeError`] when nothing listens there, nothing answers within the probe
    /// timeout, or what answers is not a tribes node.
    pub async fn probe(&self, addr: SocketAddr) -> Result<Member, ProbeError> {
        probe::probe(&self.gate, &self.local(), addr, self.probe_timeout).await
    }

    /// Record that a peer was refused, and why (another cluster key, garbage, …).
    pub fn refused(&self, peer: impl Into<String>, reason: impl Into<String>) {
        self.refused.record(peer.into(), reason.into());
    }

    /// Record how a candidate address is doing, for [`crate::Channel::stats`].
    pub fn report(&self, candidate: impl Into<String>, status: CandidateStatus) {
        self.candidates
            .lock()
            .expect("candidates lock")
            .insert(candidate.into(), status);
    }

    /// Stop showing a candidate that is no longer configured (a DNS answer that dropped it).
    pub fn forget(&self, candidate: &str) {
        self.candidates
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(candidate);
    }
}
