//! Helpers shared by the multi-node tests.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tribes::{Channel, ChannelBuilder, Keyring, StaticDiscovery};

/// The key every test cluster shares unless a test says otherwise.
pub fn test_key() -> Keyring {
    Keyring::new(1, [42; 32])
}

/// Free loopback ports, reserved by binding and released just before use.
pub fn free_addrs(n: usize) -> Vec<SocketAddr> {
    let listeners: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners.iter().map(|l| l.local_addr().unwrap()).collect()
}

/// A builder for node `i` of a static cluster on `addrs`.
pub fn node(name: &str, i: usize, addrs: &[SocketAddr]) -> ChannelBuilder {
    let others: Vec<_> = addrs.iter().copied().filter(|a| *a != addrs[i]).collect();
    Channel::builder(name)
        .with_cluster_key(test_key())
        .with_bind(addrs[i])
        .with_discovery(StaticDiscovery::new(others).with_frequency(Duration::from_millis(200)))
}

/// Poll `cond` until it holds or `limit` passes; panics with `what` on timeout.
pub async fn eventually(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Wait until every channel sees all the others.
pub async fn converge(channels: &[&Channel]) {
    let n = channels.len() - 1;
    eventually("the cluster to form", Duration::from_secs(10), || {
        channels.iter().all(|c| c.members().len() == n)
    })
    .await;
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
}
