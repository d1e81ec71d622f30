//! The [`Channel`]: membership, senders, receiver and interceptors, put together.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::Instrument;

use crate::gate::Gate;
use crate::interceptor::{
    DomainFilterInterceptor, FragmentationInterceptor, Interceptor, InterceptorStack, Message, ThroughputInterceptor,
};
use crate::listen::{ListenError, Listener, Listeners};
use crate::member::{IdMap, Member, MemberId, unix_millis};
use crate::membership::{CandidateStatus, Discovery, DiscoveryContext, MembershipEvent, MembershipInput, probe};
use crate::membership::{Membership, MembershipEffect as Effect};
use crate::receiver::ReceiverContext;
use crate::seal::{Credentials, Keyring, NodeIdentity, PublicKey};
use crate::send::{Delivery, SendError, SendMode, SendOptions, SendReport};
use crate::sender::{MemberSender, SenderContext};
use crate::stats::{ChannelStats, Counters, MemberStats, Refusals, Security};
use crate::wire::DEFAULT_MAX_FRAME_LEN;

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

/// The channel-wide settings the channel itself reads (senders and receiver get
/// theirs in their contexts).
pub(crate) struct Config {
    pub(crate) send_mode: SendMode,
    pub(crate) ack_timeout: Duration,
    pub(crate) probe_timeout: Duration,
}

/// What the channel and its membership task share. Senders and the receiver do
/// not see it: they get a [`SenderContext`] and a [`ReceiverContext`].
pub(crate) struct Inner {
    local: watch::Sender<Member>,
    config: Config,
    gate: Arc<Gate>,
    stack: InterceptorStack,
    throughput: Arc<ThroughputInterceptor>,
    members: watch::Sender<Arc<Vec<Member>>>,
    events: broadcast::Sender<MembershipEvent>,
    listeners: Arc<Listeners>,
    senders: Mutex<IdMap<Arc<MemberSender>>>,
    senders_ctx: Arc<SenderContext>,
    counters: Arc<Counters>,
    inputs: mpsc::UnboundedSender<MembershipInput>,
    shutdown: CancellationToken,
    candidates: Arc<Mutex<BTreeMap<String, CandidateStatus>>>,
    refused: Arc<Refusals>,
    /// The members the membership suspects now (published by its task).
    suspected: Mutex<BTreeSet<MemberId>>,
    discovery_kinds: Vec<&'static str>,
    started: Instant,
}

impl Inner {
    fn local(&self) -> Member {
        self.local.borrow().clone()
    }

    /// The sender of a live member: a member's sender is dropped when it leaves, so
    /// one found here is live; otherwise the member list decides (and a sender is made).
    fn live_sender(&self, id: MemberId) -> Option<Arc<MemberSender>> {
        if let Some(sender) = self.senders.lock().expect("senders lock").get(&id) {
            return Some(sender.clone());
        }
        let member = self.members.borrow().iter().find(|m| m.id == id).cloned()?;
        Some(self.sender_for(&member))
    }

    fn sender_for(&self, member: &Member) -> Arc<MemberSender> {
        let mut senders = self.senders.lock().expect("senders lock");
        senders
            .entry(member.id)
            .or_insert_with(|| MemberSender::spawn(&self.senders_ctx, member.clone()))
            .clone()
    }
}

/// A running group-communication channel. Cheap to clone; the last clone dropped
/// stops it (without the goodbye of [`Channel::shutdown`]).
///
/// # Examples
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use bytes::Bytes;
/// use tribes::{Channel, SendMode, SendOptions, StaticDiscovery};
///
/// let key = tribes::Keyring::from_file("cluster.key")?;
/// let a = Channel::builder("a").with_cluster_key(key.clone()).with_bind("127.0.0.1:0".parse()?).start().await?;
/// let b = Channel::builder("b")
///     .with_cluster_key(key)
///     .with_bind("127.0.0.1:0".parse()?)
///     .with_discovery(StaticDiscovery::new([a.local().addr()]))
///     .start()
///     .await?;
/// let mut inbox = a.listen("greetings")?;
/// let report = b
///     .broadcast("greetings", Bytes::from_static(b"hello"), SendOptions::mode(SendMode::SyncAck))
///     .await;
/// assert!(report.all_ok());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Channel {
    inner: Arc<Inner>,
    _guard: Arc<DropGuard>,
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel").field("local", &self.inner.local()).finish()
    }
}

impl Channel {
    /// A builder for a channel whose node is called `name` (its route, Tomcat's `jvmRoute`).
    pub fn builder(name: impl Into<String>) -> ChannelBuilder {
        ChannelBuilder {
            name: name.into(),
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

    /// This node as the others see it.
    pub fn local(&self) -> Member {
        self.inner.local()
    }

    /// The live members, oldest first (not including this node).
    pub fn members(&self) -> Vec<Member> {
        self.inner.members.borrow().as_ref().clone()
    }

    /// The live member with this id.
    pub fn member(&self, id: MemberId) -> Option<Member> {
        self.inner.members.borrow().iter().find(|m| m.id == id).cloned()
    }

    /// Membership events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<MembershipEvent> {
        self.inner.events.subscribe()
    }

    /// A watch of the live member list, for tasks that want the whole list on change.
    pub fn watch_members(&self) -> watch::Receiver<Arc<Vec<Member>>> {
        self.inner.members.subscribe()
    }

    /// Receive the messages sent to `topic`. A topic has one listener at a time:
    /// while the first [`Listener`] is alive, a second call for the same topic is
    /// refused with [`ListenError::TopicTaken`]; dropping the first frees it.
    pub fn listen(&self, topic: impl Into<String>) -> Result<Listener, ListenError> {
        self.inner.listeners.listen(topic.into())
    }

    /// Replace the keyring of a sealed channel, for key rotation without downtime:
    /// first give every member a keyring that also accepts the new key, then one that
    /// offers it, then one without the old key. New connections and heartbeats use
    /// the new keyring; connections already open keep their own keys (fresh per
    /// connection, independent of the cluster key once open). Returns `false` (and
    /// changes nothing) on a plain-text channel.
    pub fn set_keyring(&self, keyring: Keyring) -> bool {
        let (send, accepted) = (keyring.send_id(), keyring.accepted_ids());
        let done = self.inner.gate.set_keyring(keyring);
        if done {
            tracing::info!(send, ?accepted, "cluster keyring replaced");
        }
        done
    }

    /// Replace the allow-list of node identities (`None`: any holder of the cluster
    /// key). Closes nothing: connections already open stay until they close; new
    /// ones are checked. Returns `false` (and changes nothing) on a plain-text channel.
    pub fn set_allowed_peers(&self, peers: Option<Vec<PublicKey>>) -> bool {
        let count = peers.as_ref().map(Vec::len);
        let done = self.inner.gate.set_allowed(peers.map(|p| p.into_iter().collect()));
        if done {
            tracing::info!(allowed = ?count, "allow-list of node identities replaced");
        }
        done
    }

    /// Change the payload advertised to other members.
    pub fn set_payload(&self, payload: Bytes) {
        self.inner.local.send_modify(|m| m.payload = payload);
    }

    /// Send to every live member.
    pub async fn broadcast(&self, topic: &str, payload: Bytes, options: SendOptions) -> SendReport {
        let to: Vec<MemberId> = self.inner.members.borrow().iter().map(|m| m.id).collect();
        self.send(&to, topic, payload, options).await
    }

    /// Send to the given members; the report says what happened for each.
    pub async fn send(&self, to: &[MemberId], topic: &str, payload: Bytes, options: SendOptions) -> SendReport {
        let mode = options.mode.unwrap_or(self.inner.config.send_mode);
        let timeout = options.ack_timeout.unwrap_or(self.inner.config.ack_timeout);
        if let [id] = to {
            // One member (the common case): no futures to join.
            let delivery = self.send_one(*id, topic, payload, mode, timeout).await;
            return SendReport {
                outcomes: vec![(*id, delivery)],
            };
        }
        let sends = to.iter().map(|&id| {
            let payload = payload.clone();
            async move { (id, self.send_one(id, topic, payload, mode, timeout).await) }
        });
        SendReport {
            outcomes: futures::future::join_all(sends).await,
        }
    }

    async fn send_one(&self, id: MemberId, topic: &str, payload: Bytes, mode: SendMode, timeout: Duration) -> Delivery {
        if self.inner.shutdown.is_cancelled() {
            return Delivery::Failed(SendError::ShuttingDown);
        }
        let Some(sender) = self.inner.live_sender(id) else {
            return Delivery::Failed(SendError::UnknownMember { member: id });
        };
        let messages = match self.inner.stack.outgoing(sender.member(), Message::new(topic, payload)) {
            Ok(m) => m,
            Err(e) => return Delivery::Failed(e.into()),
        };
        if messages.is_empty() {
            return Delivery::Queued;
        }
        sender.send(messages, mode, timeout).await
    }

    /// A snapshot of members, traffic, acks, failures and queues.
    pub fn stats(&self) -> ChannelStats {
        let inner = &self.inner;
        let members = inner.members.borrow().clone();
        let throughput = inner.throughput.snapshot();
        let senders = inner.senders.lock().expect("senders lock").clone();
        let suspected = inner.suspected.lock().expect("suspected lock").clone();
        ChannelStats {
            local: inner.local(),
            uptime: inner.started.elapsed(),
            discovery: inner.discovery_kinds.clone(),
            interceptors: inner.stack.names(),
            members: members
                .iter()
                .map(|m| {
                    let t = throughput.get(&m.id).cloned().unwrap_or_default();
                    let s = senders.get(&m.id);
                    MemberStats {
                        id: m.id.to_string(),
                        name: m.name.clone(),
                        addr: m.addr,
                        messages_out: t.messages_out,
                        bytes_out: t.bytes_out,
                        messages_in: t.messages_in,
                        bytes_in: t.bytes_in,
                        acks: s.map_or(0, |s| s.counters.acks.load(Ordering::Relaxed)),
                        failures: s.map_or(0, |s| s.counters.failures.load(Ordering::Relaxed)),
                        timeouts: s.map_or(0, |s| s.counters.timeouts.load(Ordering::Relaxed)),
                        queue_depth: s.map_or(0, |s| s.queue_depth()),
                        suspected: suspected.contains(&m.id),
                    }
                })
                .collect(),
            candidates: inner.candidates.lock().expect("candidates lock").clone(),
            malformed_frames: inner.counters.malformed.load(Ordering::Relaxed),
            refused: inner.refused.snapshot(),
            refusals: inner.refused.stats(),
            security: match inner.gate.credentials() {
                Some(c) => Security {
                    sealed: true,
                    send_key: Some(c.keyring().send_id()),
                    accepted_keys: c.keyring().accepted_ids(),
                    protocol: Some(crate::handshake::PROTOCOL),
                    identity: Some(c.identity().public_key().to_string()),
                    allowed_peers: c.allowed().map(BTreeSet::len),
                    wire_versions: (crate::handshake::MIN_VERSION, crate::handshake::MAX_VERSION),
                },
                None => Security {
                    sealed: false,
                    send_key: None,
                    accepted_keys: Vec::new(),
                    protocol: None,
                    identity: None,
                    allowed_peers: None,
                    wire_versions: (crate::handshake::MIN_VERSION, crate::handshake::MAX_VERSION),
                },
            },
            undeliverable: inner.counters.undeliverable.load(Ordering::Relaxed),
            foreign_domain: inner.counters.foreign_domain.load(Ordering::Relaxed),
        }
    }

    /// Say goodbye to every member (so they drop this node at once, not after
    /// `drop_time`) and stop every task.
    pub async fn shutdown(&self) {
        let members = self.members();
        let local = self.inner.local();
        let goodbyes = members.iter().map(|m| {
            let sender = self.inner.sender_for(m);
            async move { sender.send_goodbye(local.id, Duration::from_millis(500)).await }
        });
        futures::future::join_all(goodbyes).await;
        self.inner.shutdown.cancel();
        tracing::info!(member = %local.name, "channel shut down");
    }
}

async fn run_membership(inner: Arc<Inner>, mut inputs: mpsc::UnboundedReceiver<MembershipInput>, mut core: Membership) {
    let mut tick = tokio::time::interval(Membership::TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut out = Vec::new();
    let mut listed: Vec<oneshot::Sender<()>> = Vec::new();
    loop {
        // The previous input is reflected in the published member list by now.
        for waiting in listed.drain(..) {
            let _ = waiting.send(());
        }
        tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            _ = tick.tick() => core.handle_timer(Instant::now(), &mut out),
            input = inputs.recv() => {
                let Some(input) = input else { return };
                let now = Instant::now();
                match input {
                    MembershipInput::Heard(m) => core.handle_heard(now, m, &mut out),
                    MembershipInput::HeardThen(m, waiting) => {
                        core.handle_heard(now, m, &mut out);
                        listed.push(waiting);
                    }
                    MembershipInput::Goodbye(id) => core.handle_goodbye(now, id, &mut out),
                    MembershipInput::ConnectionLost(id) => core.handle_connection_lost(now, id, &mut out),
                    MembershipInput::Verified(id, alive) => core.handle_verified(now, id, alive, &mut out),
                }
            }
        }
        inner
            .counters
            .foreign_domain
            .store(core.foreign_domain_count(), Ordering::Relaxed);
        if out.is_empty() {
            continue;
        }
        // Before the events go out: a subscriber that hears `Suspected` finds it in the stats.
        let suspected: BTreeSet<MemberId> = core.suspected().map(|m| m.id).collect();
        *inner.suspected.lock().expect("suspected lock") = suspected;
        let mut changed = false;
        for effect in out.drain(..) {
            match effect {
                Effect::Event(event) => {
                    // A suspicion does not change the member list.
                    changed |= !matches!(event, MembershipEvent::Suspected { .. } | MembershipEvent::Cleared(_));
                    match &event {
                        MembershipEvent::Suspected {
                            member,
                            silent_for,
                            cause,
                        } => {
                            tracing::info!(member = %member, ?cause, ?silent_for, "member suspected, verifying over TCP")
                        }
                        MembershipEvent::Cleared(m) => {
                            tracing::info!(member = %m, "suspected member answered: cleared")
                        }
                        MembershipEvent::Added(m) => tracing::info!(member = %m, "member added"),
                        MembershipEvent::Back(m) => tracing::info!(member = %m, "member back"),
                        MembershipEvent::Updated(m) => tracing::debug!(member = %m, "member updated"),
                        MembershipEvent::Disappeared { member, reason } => {
                            tracing::warn!(member = %member, ?reason, "member disappeared");
                            if let Some(sender) = inner.senders.lock().expect("senders lock").remove(&member.id) {
                                sender.close();
                            }
                        }
                    }
                    inner.stack.membership(&event);
                    let _ = inner.events.send(event);
                }
                Effect::Verify(member) => {
                    let inner = inner.clone();
                    tokio::spawn(async move {
                        tracing::debug!(member = %member, "verifying over TCP");
                        let result =
                            probe::probe(&inner.gate, &inner.local(), member.addr, inner.config.probe_timeout).await;
                        let verdict = match result {
                            Ok(answer) if answer.id == member.id => Some(true),
                            Ok(answer) => {
                                let _ = inner.inputs.send(MembershipInput::Heard(answer));
                                Some(false)
                            }
                            Err(e) if e.is_definitive() => {
                                tracing::info!(member = %member, error = %e, "verification: member is gone");
                                Some(false)
                            }
                            Err(e) => {
                                tracing::info!(member = %member, error = %e, "verification inconclusive");
                                None
                            }
                        };
                        let _ = inner.inputs.send(MembershipInput::Verified(member.id, verdict));
                    });
                }
            }
        }
        if changed {
            let mut list: Vec<Member> = core.members().cloned().collect();
            list.sort_by_key(|m| (m.started_at_ms, m.id));
            inner.members.send_replace(Arc::new(list));
        }
    }
}
