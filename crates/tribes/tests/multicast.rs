//! Multicast membership, for real, inside a network namespace the test makes itself
//! (so heartbeats never leave this machine): `ip netns add`, loopback up with
//! multicast on and a route for 224.0.0.0/4. The test re-runs its own binary inside
//! the namespace with `ip netns exec`.

mod common;

use std::time::Duration;

use common::{eventually, init_tracing};
use tribes::{Channel, MulticastDiscovery};
use tribes_testkit::netns::Netns;

const INNER: &str = "TRIBES_MULTICAST_INNER";

#[test]
fn multicast_heartbeats_form_a_cluster_and_keep_domains_apart() {
    let ns = match Netns::new(format!("tribes-mc-{}", std::process::id())).and_then(Netns::with_multicast) {
        Ok(ns) => ns,
        Err(why) => panic!(
            "multicast test could not run: {why}. It needs root (or CAP_NET_ADMIN) and iproute2 to create a network namespace"
        ),
    };
    ns.run_test("inner_cluster_by_heartbeats_alone", INNER);
}

/// Runs only inside the namespace made by the test above.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by multicast_heartbeats_form_a_cluster_and_keep_domains_apart inside a network namespace"]
async fn inner_cluster_by_heartbeats_alone() {
    assert!(std::env::var_os(INNER).is_some(), "run through the outer test");
    init_tracing();
    let mcast = || {
        MulticastDiscovery::new()
            .with_interface([127, 0, 0, 1].into())
            .with_frequency(Duration::from_millis(200))
    };
    let start = |name: &'static str, domain: &'static str| {
        Channel::builder(name)
            .with_cluster_key(common::test_key())
            .with_domain(domain)
            .with_bind("127.0.0.1:0".parse().unwrap())
            .with_discovery(mcast())
            .start()
    };
    let a = start("a", "blue").await.unwrap();
    let b = start("b", "blue").await.unwrap();
    let c = start("c", "blue").await.unwrap();
    let g = start("g", "green").await.unwrap();
    eventually(
        "the blue cluster to form by heartbeats",
        Duration::from_secs(10),
        || [&a, &b, &c].iter().all(|ch| ch.members().len() == 2),
    )
    .await;
    eventually("green to count blue heartbeats", Duration::from_secs(5), || {
        g.stats().foreign_domain > 0
    })
    .await;
    assert!(g.members().is_empty(), "green must not see blue members");
    assert!(a.members().iter().all(|m| m.domain() == "blue"));

    // A member that stops sending heartbeats is dropped within drop_time (3 s).
    drop(c);
    eventually("c to be dropped", Duration::from_secs(4), || {
        a.members().len() == 1 && b.members().len() == 1
    })
    .await;
}
