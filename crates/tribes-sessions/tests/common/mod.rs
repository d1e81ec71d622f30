//! Helpers for the multi-node tests: real channels on loopback.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tribes::{Channel, SendMode, StaticDiscovery};
use tribes_sessions::{ManagerKind, SessionManager, SessionManagerBuilder};

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
}

/// A channel called `name` on 127.0.0.1:0 that finds `peers`.
pub async fn channel(name: &str, peers: &[SocketAddr]) -> Channel {
    Channel::builder(name)
        .with_cluster_key(tribes::Keyring::new(1, [42; 32]))
        .with_bind("127.0.0.1:0".parse().unwrap())
        .with_discovery(StaticDiscovery::new(peers.iter().copied()).with_frequency(Duration::from_millis(100)))
        .with_drop_time(Duration::from_millis(1500))
        .start()
        .await
        .expect("channel starts")
}

pub const CONTEXT: &str = "/app";

/// The usual test builder: sync-ack commits, fast access batches.
pub fn builder(kind: ManagerKind) -> SessionManagerBuilder {
    SessionManager::builder(CONTEXT)
        .with_kind(kind)
        .with_send_mode(SendMode::SyncAck)
        .with_ack_timeout(Duration::from_secs(3))
        .with_touch_interval(Duration::from_millis(200))
        .with_state_transfer_attempt_timeout(Duration::from_secs(2))
        .with_state_transfer_timeout(Duration::from_secs(15))
}

/// A started and ready node.
pub async fn node(name: &str, peers: &[SocketAddr], kind: ManagerKind) -> (Channel, SessionManager) {
    let ch = channel(name, peers).await;
    if !peers.is_empty() {
        let mut w = ch.watch_members();
        tokio::time::timeout(Duration::from_secs(5), w.wait_for(|m| !m.is_empty()))
            .await
            .expect("finds a peer")
            .unwrap();
    }
    let m = builder(kind).start(ch.clone()).await.expect("manager starts");
    tokio::time::timeout(Duration::from_secs(15), m.wait_ready())
        .await
        .expect("ready in time")
        .expect("state transfer ok");
    (ch, m)
}

/// Crash: stop the manager and drop the channel without any goodbye.
pub fn crash(node: (Channel, SessionManager)) {
    node.1.abort();
    drop(node);
}

/// Polls `cond` every 20 ms until it holds; panics with `what` after `timeout`.
pub async fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until every manager sees all the others as serving the context.
pub async fn wait_mesh(managers: &[&SessionManager]) {
    let n = managers.len() - 1;
    wait_until(
        "every node sees the others serve the context",
        Duration::from_secs(10),
        || managers.iter().all(|m| m.stats().servers.len() == n),
    )
    .await;
}
