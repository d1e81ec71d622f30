//! Ready `tribes-sessions` managers on test channels ([`crate::channel`]).

use std::net::SocketAddr;
use std::time::Duration;

use tribes::{Channel, SendMode};
use tribes_sessions::{SessionManager, SessionManagerBuilder};

use crate::channel::{channel, wait_for_members};
use crate::eventually;

/// The usual test builder for `context`: sync-ack commits (3 s), fast access batches,
/// state transfer attempts of 2 s within 15 s.
pub fn builder(context: &str) -> SessionManagerBuilder {
    SessionManager::builder(context)
        .with_send_mode(SendMode::SyncAck)
        .with_ack_timeout(Duration::from_secs(3))
        .with_touch_interval(Duration::from_millis(200))
        .with_state_transfer_attempt_timeout(Duration::from_secs(2))
        .with_state_transfer_timeout(Duration::from_secs(15))
}

/// Starts `builder` on `channel` and waits (15 s at most) until the manager is ready.
///
/// # Panics
///
/// When it does not start, is not ready in time, or its state transfer fails.
pub async fn start_ready(builder: SessionManagerBuilder, channel: &Channel) -> SessionManager {
    let m = builder.start(channel.clone()).await.expect("manager starts");
    tokio::time::timeout(Duration::from_secs(15), m.wait_ready())
        .await
        .expect("ready in time")
        .expect("state transfer ok");
    m
}

/// A ready node: a [`channel`] called `name` that found one of `peers` (if any), and
/// `builder` started on it with [`start_ready`].
pub async fn ready_node(name: &str, peers: &[SocketAddr], builder: SessionManagerBuilder) -> (Channel, SessionManager) {
    let ch = channel(name, peers).await;
    if !peers.is_empty() {
        wait_for_members(&ch, 1).await;
    }
    let m = start_ready(builder, &ch).await;
    (ch, m)
}

/// Waits (10 s at most) until every manager sees all the others as serving its context.
pub async fn wait_mesh(managers: &[&SessionManager]) {
    let n = managers.len() - 1;
    eventually(
        "every node sees the others serve the context",
        Duration::from_secs(10),
        || managers.iter().all(|m| m.stats().servers.len() == n),
    )
    .await;
}
