//! Group communication for Rust services, in the spirit of Apache Tomcat's Tribes:
//! who is in the cluster (membership), getting bytes to them (pooled TCP senders
//! with acks) and code that sees every message on the way (interceptors).
//!
//! `tribes` knows nothing of HTTP or sessions: `tribes-sessions` builds replicated
//! sessions on it, and any other service can use it for its own messages.
//!
//! # Example
//!
//! Two nodes on loopback find each other through a static member list, and one
//! sends to the other, waiting until the receiver's code has processed the message:
//!
//! ```
//! use bytes::Bytes;
//! use tribes::{Channel, Keyring, SendMode, SendOptions, StaticDiscovery};
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Every member shares the cluster key (in production: Keyring::from_file("cluster.key")?).
//! let key = Keyring::generate(1, &mut rand::rng());
//! let a = Channel::builder("node-a").with_cluster_key(key.clone()).with_bind("127.0.0.1:0".parse()?).start().await?;
//! let b = Channel::builder("node-b")
//!     .with_cluster_key(key)
//!     .with_bind("127.0.0.1:0".parse()?)
//!     .with_discovery(StaticDiscovery::new([a.local().addr()]))
//!     .start()
//!     .await?;
//! let mut inbox = a.listen("greetings")?;
//! tokio::spawn(async move {
//!     while let Some(message) = inbox.recv().await {
//!         println!("{} says {:?}", message.from().name(), message.payload());
//!         // Dropping the message sends the sync-ack.
//!     }
//! });
//! // Wait until b sees a (its first ping takes a moment).
//! let mut members = b.watch_members();
//! members.wait_for(|m| !m.is_empty()).await?;
//! let report = b
//!     .broadcast("greetings", Bytes::from_static(b"hello"), SendOptions::mode(SendMode::SyncAck))
//!     .await;
//! assert!(report.all_ok());
//! # Ok(()) }
//! ```
//!
//! # Pieces
//!
//! | Tomcat | here |
//! |---|---|
//! | `GroupChannel` | [`Channel`], built with [`ChannelBuilder`] |
//! | `McastService` | [`MulticastDiscovery`] (group 228.0.0.4:45564, 500 ms, drop after 3 s) |
//! | `StaticMembershipInterceptor` | [`StaticDiscovery`] |
//! | cloud / DNS membership (autoscaling, Kubernetes headless services) | [`DnsDiscovery`] |
//! | `TcpFailureDetector` | built into the membership: silent members are verified over TCP before removal |
//! | `NioReceiver` (`autoBind`) | the receiver, [`ChannelBuilder::with_bind_range`] (default 127.0.0.1:4000-4100) |
//! | `PooledParallelSender` | per-member connection pool, [`ChannelBuilder::with_pool_size`] |
//! | `channelSendOptions` | [`SendMode`]: async, use-ack, sync-ack |
//! | `FarmWarDeployer` | [`Farm`]: a directory replicated to every member |
//! | interceptors | [`Interceptor`]: [`ThroughputInterceptor`], [`DomainFilterInterceptor`], [`OrderInterceptor`], [`CompressionInterceptor`], [`FragmentationInterceptor`] |
//!
//! # Membership and failure detection
//!
//! Members are found by one or more [`Discovery`] kinds. A member that has been
//! silent for two thirds of `drop_time` (default 3 s) is verified over TCP: if it
//! answers it stays, if nothing listens at its address it is removed at once, and
//! if the verification times out it is removed when `drop_time` has passed. A closed
//! replication or ping connection triggers verification at once, so a process
//! killed with `kill -9` is usually gone from every peer within a second.
//! Subscribers ([`Channel::subscribe`]) see the verification as
//! [`MembershipEvent::Suspected`] (with the silence and the [`SuspicionCause`]),
//! followed by [`MembershipEvent::Cleared`] when the member answers, or by
//! [`MembershipEvent::Disappeared`]; [`MemberStats::suspected`] says the same in
//! [`Channel::stats`].
//! A process that restarts has a new [`MemberId`]: peers see the old member
//! disappear ([`DepartureReason::Replaced`]) and a new one arrive.
//!
//! # Wire format
//!
//! Every connection opens with a handshake: Noise `XXpsk0` (X25519, ChaCha20-Poly1305,
//! BLAKE2s) through the `snow` crate, with a pre-shared key derived from the cluster
//! key, so each connection gets fresh keys with forward secrecy and a recorded
//! connection opens nowhere else and never again; the handshake also agrees on the
//! wire version (a peer with none in common is refused in words, naming both) and
//! checks node identities against an allow-list when one is set. A refused peer is
//! told why, and both sides log and count it ([`ChannelStats::refusals`], by
//! [`RefusalReason`]). See `docs/security.md`.
//!
//! Then every frame is `magic "TRBS" | version 3 | kind | flags | key id | nonce (12) |
//! tag (16) | header length (u32) | payload length (u32) | header | payload`, 44
//! bytes before the MessagePack header, sealed with ChaCha20-Poly1305 under the
//! connection's key, its nonce the count of frames before it. What is queued for a
//! member travels as one batch frame (many messages, sealed once, written once);
//! acks are cumulative (one ack frame acknowledges every message of the connection
//! up to a sequence number, a fail-ack refuses one). Lengths are checked before any
//! allocation; frames over `max_frame_len` (default 1 MiB), unknown kinds and
//! garbage close that one connection with an error naming the peer, counted in
//! [`ChannelStats::malformed_frames`]. Messages larger than a frame are split by
//! the [`FragmentationInterceptor`]. Heartbeat datagrams are sealed on their own
//! with XChaCha20-Poly1305 (random 192-bit nonces) and carry a sequence and the send
//! time, so an old one is refused. Nothing on the wire is executable: headers are plain
//! MessagePack data and payloads are opaque bytes.

mod acks;
mod batch;
mod channel;
mod farm;
/// Entry points for the `cargo fuzz` targets in `fuzz/` (`--cfg fuzzing` only; also
/// built by the unit tests, which run every seed through its target).
#[cfg(any(fuzzing, test))]
#[doc(hidden)]
pub mod fuzzing;
mod gate;
mod handshake;
mod heartbeat;
mod interceptor;
mod listen;
mod member;
mod membership;
mod receiver;
mod refusal;
mod seal;
mod send;
mod sender;
mod stats;
mod wire;

pub use channel::{Channel, ChannelBuilder, StartError};
pub use farm::{Farm, FarmBuilder, FarmEvent, FarmMemberStats, FarmStats};
pub use interceptor::{
    CompressionInterceptor, DomainFilterInterceptor, FragmentationInterceptor, Interceptor, InterceptorError,
    MemberThroughput, Message, OrderInterceptor, ThroughputInterceptor,
};
pub use listen::{Incoming, ListenError, Listener};
pub use member::{Member, MemberId};
pub use membership::{
    DepartureReason, Discovery, DiscoveryContext, DnsDiscovery, Membership, MembershipEffect, MembershipEvent,
    MulticastDiscovery, ProbeError, StaticDiscovery, SuspicionCause,
};
pub use refusal::{Refusal, RefusalReason};
pub use seal::{KeyError, Keyring, NodeIdentity, PublicKey};
pub use send::{ConnectError, Delivery, SendError, SendMode, SendOptions, SendReport};
pub use stats::{CandidateStatus, ChannelStats, MemberStats, RefusalRecord, RefusalStats, RefusedPeer, Security};
pub use wire::{DEFAULT_MAX_FRAME_LEN, WireError};

/// The README examples, compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
