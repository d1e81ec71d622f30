//! Multicast membership, for real, inside a network namespace the test makes itself
//! (so heartbeats never leave this machine): `ip netns add`, loopback up with
//! multicast on and a route for 224.0.0.0/4. The test re-runs its own binary inside
//! the namespace with `ip netns exec`.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{eventually, init_tracing};
use tribes::{Channel, MulticastDiscovery};

const INNER: &str = "TRIBES_MULTICAST_INNER";

struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `ip`: {e} (install iproute2)"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn make_namespace() -> Result<Netns, String> {
    let name = format!("tribes-mc-{}", std::process::id());
    ip(&["netns", "add", &name])?;
    let ns = Netns(name);
    ip(&["-n", &ns.0, "link", "set", "lo", "up"])?;
    ip(&["-n", &ns.0, "link", "set", "lo", "multicast", "on"])?;
    ip(&["-n", &ns.0, "route", "add", "224.0.0.0/4", "dev", "lo"])?;
    Ok(ns)
}

#[test]
fn multicast_heartbeats_form_a_cluster_and_keep_domains_apart() {
    let ns = match make_namespace() {
        Ok(ns) => ns,
        Err(why) => {
            let msg = format!(
                "multicast test could not run: {why}. It needs root (or CAP_NET_ADMIN) and iproute2 to create a network namespace"
            );
            panic!("{msg}");
        }
    };
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.0])
        .arg(exe)
        .args([
            "--exact",
            "inner_cluster_by_heartbeats_alone",
            "--ignored",
            "--nocapture",
        ])
        .env(INNER, "1")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "inner multicast test failed:\n{text}");
    assert!(text.contains("1 passed"), "the inner test did not run:\n{text}");
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
