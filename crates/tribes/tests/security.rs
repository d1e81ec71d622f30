//! Sealed cluster traffic: other keys and plain text are refused and explained;
//! keys rotate under load without losing a message.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::{converge, eventually, free_addrs, init_tracing, node, test_key};
use tribes::{Keyring, SendMode, SendOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_key_or_plain_text_never_joins_and_the_reason_is_shown() {
    init_tracing();
    let addrs = free_addrs(4);
    let a = node("a", 0, &addrs).start().await.unwrap();
    let b = node("b", 1, &addrs).start().await.unwrap();
    let intruder = node("x", 2, &addrs)
        .with_cluster_key(Keyring::new(1, [7; 32]))
        .start()
        .await
        .unwrap();
    converge(&[&a, &b]).await;
    eventually(
        "the other cluster's pings to be refused",
        Duration::from_secs(5),
        || {
            a.stats()
                .refused
                .values()
                .any(|r| r.last_reason.contains("another cluster"))
        },
    )
    .await;
    assert_eq!(a.members().len(), 1, "only b: {:?}", a.members());
    assert!(intruder.members().is_empty());
    let sec = a.stats().security;
    assert!(sec.sealed);
    assert_eq!(sec.send_key, Some(1));
    drop(intruder);

    let plain = node("p", 3, &addrs).insecure_plaintext().start().await.unwrap();
    eventually("plain text to be refused", Duration::from_secs(5), || {
        a.stats()
            .refused
            .values()
            .any(|r| r.last_reason.contains("sends plain text"))
    })
    .await;
    eventually("the plain node to refuse sealed pings", Duration::from_secs(5), || {
        plain
            .stats()
            .refused
            .values()
            .any(|r| r.last_reason.contains("runs in plain text"))
    })
    .await;
    assert_eq!(a.members().len(), 1);
    assert!(plain.members().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_under_load_without_losing_a_message() {
    init_tracing();
    let addrs = free_addrs(3);
    let nodes = [
        node("a", 0, &addrs).start().await.unwrap(),
        node("b", 1, &addrs).start().await.unwrap(),
        node("c", 2, &addrs).start().await.unwrap(),
    ];
    converge(&[&nodes[0], &nodes[1], &nodes[2]]).await;
    let received = Arc::new(AtomicU32::new(0));
    for n in &nodes {
        let mut inbox = n.listen("load").unwrap();
        let received = received.clone();
        tokio::spawn(async move {
            while inbox.recv().await.is_some() {
                received.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    // Every node sends 400 sync-ack broadcasts while the keys change underneath.
    const ROUNDS: u32 = 400;
    let load: Vec<_> = nodes
        .iter()
        .map(|n| {
            let n = n.clone();
            tokio::spawn(async move {
                let mut failures = Vec::new();
                for i in 0..ROUNDS {
                    let r = n
                        .broadcast(
                            "load",
                            Bytes::from(i.to_be_bytes().to_vec()),
                            SendOptions::mode(SendMode::SyncAck),
                        )
                        .await;
                    if !r.all_ok() {
                        failures.push(format!("{i}: {r:?}"));
                    }
                }
                failures
            })
        })
        .collect();
    let new_key = [9u8; 32];
    let step = Duration::from_millis(150);
    tokio::time::sleep(step).await;
    // 1. Every member accepts the new key.
    for n in &nodes {
        assert!(n.set_keyring(test_key().with_accepted(2, new_key)));
    }
    tokio::time::sleep(step).await;
    // 2. Every member seals with it.
    for n in &nodes {
        n.set_keyring(test_key().with_accepted(2, new_key).sending_with(2).unwrap());
    }
    tokio::time::sleep(step).await;
    // 3. The old key is retired.
    for n in &nodes {
        n.set_keyring(Keyring::new(2, new_key));
    }
    for l in load {
        let failures = l.await.unwrap();
        assert!(failures.is_empty(), "lost messages during rotation: {failures:?}");
    }
    assert_eq!(received.load(Ordering::Relaxed), 3 * 2 * ROUNDS);
    for n in &nodes {
        assert_eq!(n.stats().security.accepted_keys, vec![2]);
        assert_eq!(n.members().len(), 2);
    }
}
