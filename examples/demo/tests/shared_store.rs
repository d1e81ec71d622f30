//! `--store-mode shared`: two nodes with no cluster peers (no `--member`) share a store; a
//! session written on one is read on the other, and concurrent writers to one session are
//! detected (503, counted in /cluster/status) instead of silently overwriting each other.

mod common;

use std::time::Duration;

use common::*;
use tribes_testkit::services::service_env;

/// Two lone nodes (`cluster(1)` twice: neither lists the other) on `store`.
fn two_lone_nodes(store: &str) -> (DemoNode, DemoNode) {
    let opts = Options {
        extra_args: vec!["--store".into(), store.into(), "--store-mode".into(), "shared".into()],
        ..Options::default()
    };
    let a = cluster(1, &opts).pop().unwrap();
    // Both are called "a" (so the cookie's route never asks for a rebind); any node serves any session.
    let b = cluster(1, &opts).pop().unwrap();
    (a, b)
}

fn conflicts(s: &serde_json::Value) -> u64 {
    s["replication"]["store_conflicts"].as_u64().unwrap()
}

async fn read_across(store: String) {
    let (mut a, mut b) = two_lone_nodes(&store);
    a.start();
    b.start();
    wait_ready(&a, 0).await;
    wait_ready(&b, 0).await;
    let browser = Browser::new();
    put_key(&browser, &a, "user", "alice").await;
    assert_eq!(get_key(&browser, &b, "user").await.as_deref(), Some("alice"));
    put_key(&browser, &b, "cart", "1 apple").await;
    // Node a reads the store, not its own older copy.
    assert_eq!(get_key(&browser, &a, "cart").await.as_deref(), Some("1 apple"));
    let s = status(&a).await.unwrap();
    assert_eq!(s["replication"]["store"]["mode"], "Shared", "{s}");
    assert_eq!(members(&s), 0, "no cluster peers");
}

#[tokio::test]
async fn shared_file_store_read_on_the_other_node() {
    let dir = tribes_testkit::process::temp_dir("shared");
    read_across(format!("file:{}", dir.display())).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn shared_redis_store_concurrent_writers_conflict() {
    let url = service_env("TRIBES_TEST_REDIS_URL");
    read_across(url.clone()).await;
    let (mut a, mut b) = two_lone_nodes(&url);
    a.start();
    b.start();
    wait_ready(&a, 0).await;
    wait_ready(&b, 0).await;
    let browser = Browser::new();
    put_key(&browser, &a, "n", "start").await;
    // Rounds of concurrent writes to one session on both nodes until some collide.
    let mut acknowledged = vec!["start".to_string()];
    let mut refused = 0;
    for round in 0..10 {
        let reqs = (0..16).map(|i| {
            let node = if i % 2 == 0 { &a } else { &b };
            let value = format!("r{round}-{i}");
            let fut = browser.put(node.url("/session/n")).body(value.clone()).send();
            async move { (value, fut.await.unwrap().status().as_u16()) }
        });
        for (value, status) in futures::future::join_all(reqs).await {
            match status {
                204 => acknowledged.push(value),
                503 => refused += 1,
                s => panic!("PUT answered {s}"),
            }
        }
        if refused > 0 {
            break;
        }
    }
    assert!(refused > 0, "no concurrent write was refused in 10 rounds of 16");
    let (sa, sb) = (status(&a).await.unwrap(), status(&b).await.unwrap());
    assert!(
        conflicts(&sa) + conflicts(&sb) >= refused,
        "every refused write is counted: {refused} refused, status a {sa}, b {sb}"
    );
    // What is stored is an acknowledged write, the same on both nodes.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let on_a = get_key(&browser, &a, "n").await.unwrap();
    assert!(acknowledged.contains(&on_a), "{on_a} was never acknowledged");
    assert_eq!(get_key(&browser, &b, "n").await.unwrap(), on_a);
}
