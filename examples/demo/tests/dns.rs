//! `tribes-demo --dns NAME --dns-server ADDR` across real processes: three nodes find
//! each other only through SRV records served by an in-process `hickory-server`
//! (`tribes_testkit::dns`, the test server of `crates/tribes/tests/dns.rs` too); a node whose
//! record is removed and which stops leaves every membership.

mod common;

use std::time::Duration;

use common::*;
use tribes_testkit::dns::TestDns;

const NAME: &str = "cluster.tribes.test.";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_nodes_find_each_other_through_dns() {
    // `cluster` also passes --member flags; --dns replaces them, so DNS is the only way in.
    let mut nodes = cluster(3, &Options::default());
    let ports: Vec<u16> = nodes.iter().map(|n| n.cluster.port()).collect();
    let mut dns = TestDns::start().await.with_node().await;
    dns.set_srv(NAME, &ports).await;
    for n in nodes.iter_mut() {
        n.push_args([
            "--dns".to_string(),
            NAME.to_string(),
            "--dns-server".into(),
            dns.addr().to_string(),
        ]);
        n.start();
    }
    for n in &nodes {
        let status = wait_ready(n, 2).await;
        assert!(
            status["channel"]["discovery"].to_string().contains("dns"),
            "DNS discovery in /cluster/status: {status}"
        );
    }
    dns.set_srv(NAME, &ports[..2]).await;
    nodes[2].terminate();
    for n in &nodes[..2] {
        wait_status(n, "c to be gone", Duration::from_secs(15), |s| members(s) == 1).await;
    }
    for n in nodes.iter_mut().take(2) {
        n.terminate();
    }
}
