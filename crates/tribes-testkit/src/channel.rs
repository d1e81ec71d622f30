//! Test clusters of real `tribes` channels on loopback.

use std::net::SocketAddr;
use std::time::Duration;

use tribes::{Channel, ChannelBuilder, Keyring, StaticDiscovery};

use crate::eventually;

/// The key every test cluster shares unless a test says otherwise.
pub fn test_key() -> Keyring {
    Keyring::new(1, [42; 32])
}

/// A builder for node `i` of a static cluster on `addrs`: bound to `addrs[i]`, finding
/// the others every 200 ms.
pub fn static_node(name: &str, i: usize, addrs: &[SocketAddr]) -> ChannelBuilder {
    let others: Vec<_> = addrs.iter().copied().filter(|a| *a != addrs[i]).collect();
    Channel::builder(name)
        .with_cluster_key(test_key())
        .with_bind(addrs[i])
        .with_discovery(StaticDiscovery::new(others).with_frequency(Duration::from_millis(200)))
}

/// A started channel called `name` on 127.0.0.1:0 that finds `peers` (every 100 ms,
/// dropped after 1.5 s of silence).
///
/// # Panics
///
/// When the channel does not start.
pub async fn channel(name: &str, peers: &[SocketAddr]) -> Channel {
    Channel::builder(name)
        .with_cluster_key(test_key())
        .with_bind("127.0.0.1:0".parse().unwrap())
        .with_discovery(StaticDiscovery::new(peers.iter().copied()).with_frequency(Duration::from_millis(100)))
        .with_drop_time(Duration::from_millis(1500))
        .start()
        .await
        .expect("channel starts")
}

/// Waits (5 s at most) until `channel` sees at least `n` members.
///
/// # Panics
///
/// When it does not in time.
pub async fn wait_for_members(channel: &Channel, n: usize) {
    let mut w = channel.watch_members();
    tokio::time::timeout(Duration::from_secs(5), w.wait_for(|m| m.len() >= n))
        .await
        .expect("finds a peer")
        .unwrap();
}

/// Waits (10 s at most) until every channel sees all the others.
pub async fn converge(channels: &[&Channel]) {
    let n = channels.len() - 1;
    eventually("the cluster to form", Duration::from_secs(10), || {
        channels.iter().all(|c| c.members().len() == n)
    })
    .await;
}

/// A static cluster of `N` channels named `a`, `b`, `c`, … on free loopback ports
/// ([`static_node`]), started and converged.
///
/// # Panics
///
/// When a channel does not start, or the cluster does not form in 10 s.
pub async fn static_cluster<const N: usize>() -> [Channel; N] {
    let addrs = crate::free_addrs(N);
    let mut channels = Vec::with_capacity(N);
    for i in 0..N {
        let name = char::from(b'a' + i as u8).to_string();
        channels.push(static_node(&name, i, &addrs).start().await.expect("channel starts"));
    }
    converge(&channels.iter().collect::<Vec<_>>()).await;
    channels.try_into().unwrap_or_else(|_| unreachable!("N channels"))
}
