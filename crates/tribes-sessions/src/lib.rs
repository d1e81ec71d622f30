//! Replicated HTTP sessions on a [`tribes`] channel, as Tomcat's `DeltaManager` and
//! `BackupManager`: a node can crash and the next request, sent anywhere, finds its
//! session.
//!
//! # The two managers
//!
//! | | [`ManagerKind::Delta`] (all to all) | [`ManagerKind::Backup`] (primary + backups) |
//! |---|---|---|
//! | who holds a session | every member serving the context | its primary and `backup_count` backups, by rendezvous hashing over the members serving the context |
//! | network per write | O(members) | O(backups) |
//! | memory | every session on every node | sessions x (1 + backups) over the cluster |
//! | a node joins | receives every session (state transfer, chunks of 1000) before it is ready | receives the sessions it must back up; primaries rebalance |
//! | a node dies | nothing to do | the best-ranked surviving backup becomes primary and re-replicates |
//! | a request on a node without the session | cannot happen | fetched from its holders; that node becomes its primary |
//! | pick it for | small clusters (2-4 nodes), any load balancer | larger clusters, sticky load balancing |
//!
//! Guarantees of both: a change committed in sync-ack mode ([`tribes::SendMode::SyncAck`]) is
//! on the members (Delta) or backups (Backup) when [`SessionManager::commit`] returns; in
//! async mode it is queued. Concurrent writes are last-writer-wins per attribute: every
//! write carries a stamp (the version it produced, then the writer), so every node ends
//! with the same state whatever the arrival order; a delta made against an older version
//! than the receiver holds is a conflict, counted in [`ManagerStats::conflicts`] and logged
//! with both versions. Invalidated and expired sessions leave a tombstone (kept for
//! max(max inactive, 10 min)) so no late delta resurrects them.
//!
//! # Contexts and who serves them
//!
//! Each manager serves one context on the topic `tribes.sessions/<context>`; several
//! managers share one channel. A starting manager sends `Hello` with sync-ack to every
//! member: members serving the context ack it (and register the sender), the others
//! have no listener for the topic and tribes fails the ack at once ("no such context"),
//! so nobody waits 60 s as in Tomcat. Members that join later are greeted the same way.
//! The state transfer asks the members serving the context, oldest first; one that
//! answers "not ready", dies, or stays silent past the attempt timeout (5 s) is skipped
//! for the next one at once, each failure logged (and kept in
//! [`TransferStats::attempts`]) with the member, the context and the cause. Nodes starting
//! together converge: the oldest starting node becomes ready empty, the others then
//! receive from it. The whole transfer is bounded by `state_transfer_timeout` (60 s).
//!
//! # Reads and expiry
//!
//! A unit of work without changes sends nothing. Its access time (from
//! [`SessionManager::touch`] or an empty commit) travels in a batch every touch interval
//! (2 s). A remote access is therefore known at most one interval (plus delivery) late;
//! a session expires only when idle for its max inactive interval plus twice the touch
//! interval, so it never expires while a user reads it on another node. Expiry is
//! announced to the others.
//!
//! # Stores: persistent and shared sessions
//!
//! [`SessionManagerBuilder::with_store`] adds a [`SessionStore`] (file, PostgreSQL, Redis)
//! and a [`StoreMode`]. Which mode when:
//!
//! | mode | the truth | a commit returns | whole cluster SIGKILLed | pick it for |
//! |---|---|---|---|---|
//! | no store (default) | memory, replicated | after replication (sync-ack) or at once (async) | every session is lost | sessions you can afford to lose in a full outage |
//! | `StoreMode::WriteThrough` | memory, replicated; the store keeps a copy | after replication **and** the store's save | nothing acknowledged is lost | restarts of the whole cluster (deploys, power loss) must keep sessions; use with sync-ack |
//! | `StoreMode::WriteBehind { queue }` | memory, replicated; the store keeps a copy | before the store saved it (queued) | the queued writes (at most `queue` sessions) are lost; a clean shutdown flushes | fast commits, a slow store; losing the last seconds on a crash is fine |
//! | `StoreMode::Shared` | the store | after a versioned save; a concurrent writer gets `ReplicationError::Conflict` | nothing acknowledged is lost | autoscaling groups, no cluster peers, any load balancer; PostgreSQL or Redis (the file store checks versions only within one process) |
//!
//! Write-through and write-behind load every stored session when a node starts (before it
//! is ready) and look in the store when `get` misses; invalidated, expired and re-id'd
//! sessions are deleted from it. A read-only request saves its access time at most once per
//! touch interval. In shared mode a node needs no cluster peers and sends nothing; a commit
//! whose session was saved by someone else since it was loaded fails with
//! [`ReplicationError::Conflict`] (nothing written, counted in
//! [`ManagerStats::store_conflicts`]); a failed save is [`ReplicationError::Store`]. The
//! store's name, mode, health and write-behind queue depth are in [`ManagerStats::store`].
//!
//! # Example
//!
//! Two nodes on loopback; the session created on A is on B when commit returns:
//!
//! ```
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::SystemTime;
//! use tribes::{Channel, SendMode, StaticDiscovery};
//! use tribes_sessions::{ManagerKind, SessionManager};
//!
//! let key = tribes::Keyring::generate(1, &mut rand::rng()); // every member: the same key file
//! let a = Channel::builder("node-a").with_cluster_key(key.clone()).with_bind("127.0.0.1:0".parse()?).start().await?;
//! let b = Channel::builder("node-b")
//!     .with_cluster_key(key)
//!     .with_bind("127.0.0.1:0".parse()?)
//!     .with_discovery(StaticDiscovery::new([a.local().addr()]))
//!     .start()
//!     .await?;
//! b.watch_members().wait_for(|m| !m.is_empty()).await?;
//! let start = |ch| SessionManager::builder("/shop").with_kind(ManagerKind::Delta).with_send_mode(SendMode::SyncAck).start(ch);
//! let (ma, mb) = (start(a).await?, start(b).await?);
//! ma.wait_ready().await?;
//! mb.wait_ready().await?;
//! while ma.stats().servers.is_empty() { tokio::time::sleep(std::time::Duration::from_millis(10)).await; }
//!
//! let session = ma.create(SystemTime::now())?;
//! session.insert("user", "alice")?;
//! let report = ma.commit(&session).await?;
//! assert!(report.all_ok());
//! let on_b = mb.get(&session.id()).await.expect("replicated");
//! assert_eq!(on_b.get::<String>("user")?.as_deref(), Some("alice"));
//! # Ok(()) }
//! ```

mod browse;
mod cause;
mod core;
mod data;
mod error;
mod fetch;
/// Entry points for the `cargo fuzz` targets in `fuzz/` (`--cfg fuzzing` only).
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing;
mod id;
mod joiner;
mod kind;
mod listener;
mod manager;
mod node;
mod persist;
mod persistence;
mod placement;
mod principal;
mod session;
#[cfg(test)]
mod sim;
mod stats;
mod store;
#[cfg(any(feature = "tower-sessions", feature = "tower-sessions-014"))]
mod tower_bridge;
mod transfer;
mod wire;

pub use browse::{AttributeInfo, SessionInfo, ValueKind};
pub use cause::Cause;
pub use error::{
    AttributeError, CreateError, ManagerOption, ManagerStartError, ReplicationError, StateTransferError,
    TransferFailure,
};
pub use id::{LogId, ParseIdError, ParseLogIdError, SessionId};
pub use kind::{ManagerKind, ReplicationMode};
pub use listener::{
    Clock, ClusterEvent, ClusterListener, DestroyReason, Origin, SessionEvent, SessionListener, SystemClock,
};
pub use manager::{
    AckOutcome, CommitReport, DEFAULT_MAX_LIFETIME, LogoutReport, MemberAck, Readiness, SessionManager,
    SessionManagerBuilder,
};
pub use persist::StoreStats;
pub use persistence::StoreMode;
pub use principal::{MaxSessionsPolicy, PRINCIPAL_ATTRIBUTE, PrincipalError, PrincipalSession};
pub use session::SessionHandle;
pub use stats::{AttemptOutcome, ManagerStats, MemberReplication, TransferAttempt, TransferStats};
pub use store::*;
#[cfg(any(feature = "tower-sessions", feature = "tower-sessions-014"))]
pub use tower_bridge::TowerSessionStore;

/// The README examples, compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
