//! [`ChannelBuilder`]: a channel's settings (`with_*`) and [`ChannelBuilder::start`],
//! which binds the receiver and puts the parts of a [`Channel`] together.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::gate::Gate;
use crate::interceptor::{
    DomainFilterInterceptor, FragmentationInterceptor, Interceptor, InterceptorStack, ThroughputInterceptor,
};
use crate::listen::Listeners;
use crate::member::{Member, MemberId, unix_millis};
use crate::membership::Membership;
use crate::membership::{Discovery, DiscoveryContext};
use crate::receiver::ReceiverContext;
use crate::seal::{Credentials, Keyring, NodeIdentity, PublicKey};
use crate::send::SendMode;
use crate::sender::SenderContext;
use crate::stats::CandidateStatus;
use crate::stats::{Counters, Refusals};
use crate::wire::DEFAULT_MAX_FRAME_LEN;

use super::{Channel, Config, Inner, run_membership};

/// Why a channel did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The receiver could not listen on the address or on any port of the range.
    #[error("cannot listen for replication on {what}: {source} (pick a free port, or a range with auto-bind)")]
    Bind {
        /// The address or range tried.
        what: String,
        /// The last socket error.
        source: std::io::Error,
    },
    /// Neither a cluster key nor plain text was chosen.
    #[error(
        "no cluster key: cluster traffic is sealed by default. Create a key file (`tribes-demo keygen cluster.key`, or printf '1 %s\\n' \"$(head -c 32 /dev/urandom | base64)\" > cluster.key), give the same file to every member and load it with Keyring::from_file; or call insecure_plaintext() on a network you trust entirely"
    )]
    NoClusterKey,
    /// Listening on a wildcard address without an advertised address.
    #[error(
        "the receiver listens on {bind}, which peers cannot dial: set with_advertise(ADDR) to this host's address as the other members reach it"
    )]
    NoAdvertiseAddress {
        /// The wildcard address.
        bind: SocketAddr,
    },
}

enum Bind {
    Addr(SocketAddr),
    Range(IpAddr, RangeInclusive<u16>),
}

/// Configures and starts a [`Channel`].
///
/// # Examples
/// ```no_run
/// # async fn run() -> Result<(), tribes::StartError> {
/// use tribes::{Channel, SendMode, StaticDiscovery};
/// let channel = Channel::builder("node-a")
///     .with_cluster_key(tribes::Keyring::from_file("cluster.key").expect("the cluster key file"))
///     .with_bind("127.0.0.1:4000".parse().unwrap())
///     .with_discovery(StaticDiscovery::new(["127.0.0.1:4001".parse().unwrap()]))
///     .with_send_mode(SendMode::SyncAck)
///     .start()
///     .await?;
/// # Ok(()) }
/// ```
pub struct ChannelBuilder {
    name: String,
    domain: String,
    bind: Bind,
    advertise: Option<SocketAddr>,
    discovery: Vec<Box<dyn Discovery>>,
    drop_time: Duration,
    probe_timeout: Duration,
    send_mode: SendMode,
    ack_timeout: Duration,
    pool_size: usize,
    queue_capacity: usize,
    max_frame_len: usize,
    max_message_len: usize,
    listener_capacity: usize,
    interceptors: Vec<Arc<dyn Interceptor>>,
    payload: Bytes,
    security: Option<Option<Keyring>>,
    identity: Option<NodeIdentity>,
    allowed: Option<BTreeSet<PublicKey>>,
}

impl fmt::Debug for ChannelBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelBuilder")
            .field("name", &self.name)
            .field("domain", &self.domain)
            .finish()
    }
}

impl ChannelBuilder {
    /// The defaults; [`Channel::builder`] is the public way in.
    pub(super) fn new(name: String) -> Self {
        ChannelBuilder {
            name,
            domain: "default".into(),
            bind: Bind::Range(IpAddr::from([127, 0, 0, 1]), 4000..=4100),
            advertise: None,
            discovery: Vec::new(),
            drop_time: Duration::from_millis(3000),
            probe_timeout: Duration::from_millis(1000),
            send_mode: SendMode::Async,
            ack_timeout: Duration::from_secs(5),
            pool_size: 1,
            queue_capacity: 4096,
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            max_message_len: 256 * 1024 * 1024,
            listener_capacity: 1024,
            interceptors: Vec::new(),
            payload: Bytes::new(),
            security: None,
            identity: None,
            allowed: None,
        }
    }

    /// Listen for replication on exactly this address (port 0: any free port).
    pub fn with_bind(mut self, addr: SocketAddr) -> Self {
        self.bind = Bind::Addr(addr);
        self
    }

    /// Listen on the first free port of a range (Tomcat's `autoBind`, 4000-4100).
    pub fn with_bind_range(mut self, ip: IpAddr, ports: RangeInclusive<u16>) -> Self {
        self.bind = Bind::Range(ip, ports);
        self
    }

    /// The address peers dial, when it differs from the bound one (NAT, wildcard bind).
    pub fn with_advertise(mut self, addr: SocketAddr) -> Self {
        self.advertise = Some(addr);
        self
    }

    /// The cluster domain; members of other domains are ignored (default `"default"`).
    pub fn with_domain(mut self, domain: impl Into<String>) -> Self {
        self.domain = domain.into();
        self
    }

    /// Add a way of finding members (static list, multicast, your own).
    pub fn with_discovery(mut self, discovery: impl Discovery) -> Self {
        self.discovery.push(Box::new(discovery));
        self
    }

    /// Silence after which a member is removed (default 3 s); it is verified over TCP
    /// after two thirds of it.
    pub fn with_drop_time(mut self, drop_time: Duration) -> Self {
        self.drop_time = drop_time;
        self
    }

    /// How long a TCP ping may take (default 1 s).
    pub fn with_probe_timeout(mut self, timeout: Duration) -> Self {
        self.probe_timeout = timeout;
        self
    }

    /// The default send mode (default async).
    pub fn with_send_mode(mut self, mode: SendMode) -> Self {
        self.send_mode = mode;
        self
    }

    /// The default ack timeout (default 5 s).
    pub fn with_ack_timeout(mut self, timeout: Duration) -> Self {
        self.ack_timeout = timeout;
        self
    }

    /// Connections per member (default 1; with more, add an [`crate::OrderInterceptor`]
    /// if per-sender order matters).
    pub fn with_pool_size(mut self, connections: usize) -> Self {
        self.pool_size = connections.max(1);
        self
    }

    /// Batches queued per connection before async sends report a full queue (default 4096).
    pub fn with_queue_capacity(mut self, capacity: usize) -> Self {
        self.queue_capacity = capacity.max(1);
        self
    }

    /// Largest frame, header plus payload, sent or accepted (default 1 MiB).
    pub fn with_max_frame_len(mut self, len: usize) -> Self {
        self.max_frame_len = len.max(4096);
        self
    }

    /// Largest message, split into frames by fragmentation (default 256 MiB).
    pub fn with_max_message_len(mut self, len: usize) -> Self {
        self.max_message_len = len;
        self
    }

    /// Add an interceptor below the built-in throughput and domain filter, above fragmentation.
    pub fn with_interceptor(mut self, interceptor: impl Interceptor) -> Self {
        self.interceptors.push(Arc::new(interceptor));
        self
    }

    /// Open every connection with the Noise handshake under this cluster keyring,
    /// and seal every frame and heartbeat (required unless
    /// [`ChannelBuilder::insecure_plaintext`] is chosen).
    pub fn with_cluster_key(mut self, keyring: Keyring) -> Self {
        self.security = Some(Some(keyring));
        self
    }

    /// This node's identity in the handshake (default: a fresh one drawn at start).
    /// Give each node its own and list the public keys in
    /// [`ChannelBuilder::with_allowed_peers`] to be able to shut one node out alone.
    pub fn with_identity(mut self, identity: NodeIdentity) -> Self {
        self.identity = Some(identity);
        self
    }

    /// Accept only peers whose node identity is listed (default: any holder of the
    /// cluster key). A peer not listed is refused with [`crate::RefusalReason::Revoked`].
    /// Change the list at run time with [`Channel::set_allowed_peers`].
    pub fn with_allowed_peers(mut self, peers: impl IntoIterator<Item = PublicKey>) -> Self {
        self.allowed = Some(peers.into_iter().collect());
        self
    }

    /// Send and accept plain-text frames: anyone who reaches the replication port
    /// can read and inject messages. Only for a network you trust entirely; the
    /// channel logs a warning at start.
    pub fn insecure_plaintext(mut self) -> Self {
        self.security = Some(None);
        self
    }

    /// The application payload advertised to other members.
    pub fn with_payload(mut self, payload: Bytes) -> Self {
        self.payload = payload;
        self
    }

    /// Bind the receiver, start membership and return the running channel.
    ///
    /// # Errors
    /// [`StartError`] when no port can be bound or peers could not dial the address.
    pub async fn start(self) -> Result<Channel, StartError> {
        let listener = match &self.bind {
            Bind::Addr(addr) => TcpListener::bind(addr).await.map_err(|source| StartError::Bind {
                what: addr.to_string(),
                source,
            })?,
            Bind::Range(ip, ports) => {
                let mut last = None;
                let mut bound = None;
                for port in ports.clone() {
                    match TcpListener::bind((*ip, port)).await {
                        Ok(l) => {
                            bound = Some(l);
                            break;
                        }
                        Err(e) => last = Some(e),
                    }
                }
                bound.ok_or_else(|| StartError::Bind {
                    what: format!("{ip} ports {}-{}", ports.start(), ports.end()),
                    source: last.unwrap_or_else(|| std::io::Error::other("empty port range")),
                })?
            }
        };
        let bound = listener.local_addr().map_err(|source| StartError::Bind {
            what: "the bound socket".into(),
            source,
        })?;
        let advertise = self.advertise.unwrap_or(bound);
        if advertise.ip().is_unspecified() {
            return Err(StartError::NoAdvertiseAddress { bind: bound });
        }
        let id = MemberId::random(&mut rand::rng());
        let local = Member::new(id, self.name.clone(), self.domain.clone(), advertise, unix_millis())
            .with_payload(self.payload.clone());
        let throughput = Arc::new(ThroughputInterceptor::new());
        let mut layers: Vec<Arc<dyn Interceptor>> = vec![
            throughput.clone(),
            Arc::new(DomainFilterInterceptor::new(self.domain.clone())),
        ];
        layers.extend(self.interceptors);
        // Room for the message header inside each frame.
        let fragment_len = self.max_frame_len - 8 * 1024;
        layers.push(Arc::new(FragmentationInterceptor::new(
            fragment_len,
            self.max_message_len,
        )));
        let stack = InterceptorStack::new(layers);

        let shutdown = CancellationToken::new();
        let (local_tx, local_rx) = watch::channel(local.clone());
        let (inputs_tx, inputs_rx) = mpsc::unbounded_channel();
        let (events, _) = broadcast::channel(1024);
        let (members_tx, _) = watch::channel(Arc::new(Vec::new()));
        let credentials = match self.security {
            Some(Some(keyring)) => Some(Credentials::with_identity(
                keyring,
                self.identity.unwrap_or_else(NodeIdentity::generate),
                self.allowed,
            )),
            Some(None) => {
                tracing::warn!(member = %self.name,
                    "INSECURE: cluster traffic is plain text; anyone who reaches {advertise} can read and inject sessions. Use a cluster key outside a fully trusted network.");
                None
            }
            None => return Err(StartError::NoClusterKey),
        };
        let counters = Arc::new(Counters::default());
        let refused: Arc<Refusals> = Arc::default();
        // A peer gets at least 5 s to finish its handshake (and never holds a task longer).
        let accept_timeout = self.probe_timeout.max(Duration::from_secs(5));
        let gate = Arc::new(Gate::new(
            credentials,
            self.max_frame_len,
            refused.clone(),
            counters.clone(),
            accept_timeout,
        ));
        let listeners = Arc::new(Listeners::new(
            self.listener_capacity,
            self.name.clone(),
            counters.clone(),
        ));
        let senders_ctx = Arc::new(SenderContext {
            local: local_rx.clone(),
            gate: gate.clone(),
            inputs: inputs_tx.clone(),
            shutdown: shutdown.clone(),
            pool_size: self.pool_size,
            queue_capacity: self.queue_capacity,
            connect_timeout: self.probe_timeout,
        });
        let receiver_ctx = Arc::new(ReceiverContext {
            local: local_rx.clone(),
            gate: gate.clone(),
            stack: stack.clone(),
            listeners: listeners.clone(),
            counters: counters.clone(),
            refused: refused.clone(),
            inputs: inputs_tx.clone(),
            shutdown: shutdown.clone(),
        });
        let inner = Arc::new(Inner {
            local: local_tx,
            config: Config {
                send_mode: self.send_mode,
                ack_timeout: self.ack_timeout,
                probe_timeout: self.probe_timeout,
            },
            gate: gate.clone(),
            stack,
            throughput,
            members: members_tx,
            events,
            listeners,
            senders: Mutex::default(),
            senders_ctx,
            counters,
            inputs: inputs_tx.clone(),
            shutdown: shutdown.clone(),
            candidates: Arc::default(),
            refused,
            suspected: Mutex::default(),
            discovery_kinds: self.discovery.iter().map(|d| d.kind()).collect(),
            started: Instant::now(),
        });
        let span = tracing::info_span!("tribes", member = %self.name);
        tracing::info!(parent: &span, %advertise, id = %id, domain = %self.domain, "channel started");
        warn_loopback(&local, &self.discovery, &span);

        tokio::spawn(crate::receiver::accept_loop(receiver_ctx, listener).instrument(span.clone()));
        tokio::spawn(
            run_membership(
                inner.clone(),
                inputs_rx,
                Membership::new(id, self.domain.clone(), self.drop_time),
            )
            .instrument(span.clone()),
        );
        // Every candidate known up front is listed (not probed yet) before any task
        // runs: a starting session manager waits for these, and an empty list read
        // before the discovery task was scheduled would look like "no one to ask".
        {
            let mut candidates = inner.candidates.lock().expect("candidates lock");
            for discovery in &self.discovery {
                for key in discovery.initial_candidates(advertise) {
                    candidates.insert(key, CandidateStatus::not_probed_yet(discovery.kind()));
                }
            }
        }
        for discovery in self.discovery {
            let ctx = DiscoveryContext {
                local: local_rx.clone(),
                inputs: inputs_tx.clone(),
                shutdown: shutdown.clone(),
                gate: gate.clone(),
                candidates: inner.candidates.clone(),
                refused: inner.refused.clone(),
                probe_timeout: self.probe_timeout,
            };
            tokio::spawn(discovery.run(ctx).instrument(span.clone()));
        }
        Ok(Channel {
            inner,
            _guard: Arc::new(shutdown.drop_guard()),
        })
    }
}

fn warn_loopback(local: &Member, discovery: &[Box<dyn Discovery>], span: &tracing::Span) {
    let remote_peer = discovery
        .iter()
        .flat_map(|d| d.configured_addrs())
        .find(|a| !a.ip().is_loopback());
    if let (true, Some(peer)) = (local.addr.ip().is_loopback(), remote_peer) {
        tracing::warn!(parent: span, addr = %local.addr, %peer,
            "THIS NODE ADVERTISES A LOOPBACK ADDRESS ({}) while peer {peer} is on another host: peers will dial themselves, not this node. Bind or advertise this host's real address.",
            local.addr);
    }
}
