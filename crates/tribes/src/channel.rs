//! The [`Channel`]: membership, senders, receiver and interceptors, put together
//! ([`ChannelBuilder`] in `channel/builder.rs` starts one).

mod builder;

pub use builder::{ChannelBuilder, StartError};

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::gate::Gate;
use crate::interceptor::{InterceptorStack, Message, ThroughputInterceptor};
use crate::listen::{ListenError, Listener, Listeners};
use crate::member::{IdMap, Member, MemberId};
use crate::membership::{Membership, MembershipEffect as Effect};
use crate::membership::{MembershipEvent, MembershipInput, probe};
use crate::seal::{Keyring, PublicKey};
use crate::send::{Delivery, SendError, SendMode, SendOptions, SendReport};
use crate::sender::{MemberSender, SenderContext};
use crate::stats::CandidateStatus;
use crate::stats::{ChannelStats, Counters, MemberStats, Refusals, Security};

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
    pub(super) local: watch::Sender<Member>,
    pub(super) config: Config,
    pub(super) gate: Arc<Gate>,
    pub(super) stack: InterceptorStack,
    pub(super) throughput: Arc<ThroughputInterceptor>,
    pub(super) members: watch::Sender<Arc<Vec<Member>>>,
    pub(super) events: broadcast::Sender<MembershipEvent>,
    pub(super) listeners: Arc<Listeners>,
    pub(super) senders: Mutex<IdMap<Arc<MemberSender>>>,
    pub(super) senders_ctx: Arc<SenderContext>,
    pub(super) counters: Arc<Counters>,
    pub(super) inputs: mpsc::UnboundedSender<MembershipInput>,
    pub(super) shutdown: CancellationToken,
    pub(super) candidates: Arc<Mutex<BTreeMap<String, CandidateStatus>>>,
    pub(super) refused: Arc<Refusals>,
    /// The members the membership suspects now (published by its task).
    pub(super) suspected: Mutex<BTreeSet<MemberId>>,
    pub(super) discovery_kinds: Vec<&'static str>,
    pub(super) started: Instant,
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
        ChannelBuilder::new(name.into())
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
                    protocol: Some(crate::seal::PROTOCOL),
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
