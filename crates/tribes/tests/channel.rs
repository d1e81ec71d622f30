//! Three channels in one process on loopback with static membership.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{converge, eventually, free_addrs, init_tracing, node};
use tribes::{Delivery, MembershipEvent, OrderInterceptor, SendError, SendMode, SendOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_send_mode_delivers_in_order_per_sender() {
    init_tracing();
    let addrs = free_addrs(3);
    let a = node("a", 0, &addrs).start().await.unwrap();
    let b = node("b", 1, &addrs).start().await.unwrap();
    let c = node("c", 2, &addrs).start().await.unwrap();
    converge(&[&a, &b, &c]).await;

    let mut inbox = a.listen("t").unwrap();
    for (round, mode) in [SendMode::Async, SendMode::UseAck, SendMode::SyncAck]
        .into_iter()
        .enumerate()
    {
        let (b2, c2) = (b.clone(), c.clone());
        let a_id = a.local().id();
        let senders = [b2, c2].map(|ch| {
            tokio::spawn(async move {
                for i in 0..300u32 {
                    let report = ch
                        .send(
                            &[a_id],
                            "t",
                            Bytes::copy_from_slice(&i.to_be_bytes()),
                            SendOptions::mode(mode),
                        )
                        .await;
                    assert!(report.all_ok(), "{mode:?} message {i}: {report:?}");
                }
            })
        });
        let mut next = [0u32; 2];
        while next.iter().any(|n| *n < 300) {
            let m = tokio::time::timeout(Duration::from_secs(10), inbox.recv())
                .await
                .expect("message in time")
                .unwrap();
            let i = u32::from_be_bytes(m.payload()[..4].try_into().unwrap());
            let from = if m.from().name() == "b" { 0 } else { 1 };
            assert_eq!(
                i,
                next[from],
                "round {round} ({mode:?}): out of order from {}",
                m.from().name()
            );
            next[from] += 1;
        }
        for s in senders {
            s.await.unwrap();
        }
    }
    let stats = a.stats();
    let from_b = stats.members.iter().find(|m| m.name == "b").unwrap();
    assert_eq!(from_b.messages_in, 900);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_ack_waits_for_processing_and_use_ack_does_not() {
    init_tracing();
    let addrs = free_addrs(2);
    let a = node("a", 0, &addrs).start().await.unwrap();
    let b = node("b", 1, &addrs).start().await.unwrap();
    converge(&[&a, &b]).await;
    let processed = Arc::new(AtomicBool::new(false));
    let mut inbox = a.listen("slow").unwrap();
    let flag = processed.clone();
    tokio::spawn(async move {
        while let Some(m) = inbox.recv().await {
            flag.store(false, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(300)).await;
            flag.store(true, Ordering::SeqCst);
            drop(m);
        }
    });
    let a_id = a.local().id();
    let r = b
        .send(
            &[a_id],
            "slow",
            Bytes::from_static(b"x"),
            SendOptions::mode(SendMode::SyncAck),
        )
        .await;
    assert!(matches!(r.get(a_id), Some(Delivery::Acked)), "{r:?}");
    assert!(
        processed.load(Ordering::SeqCst),
        "sync-ack returned before the receiver finished processing"
    );

    let r = b
        .send(
            &[a_id],
            "slow",
            Bytes::from_static(b"y"),
            SendOptions::mode(SendMode::UseAck),
        )
        .await;
    assert!(matches!(r.get(a_id), Some(Delivery::Acked)), "{r:?}");
    assert!(
        !processed.load(Ordering::SeqCst),
        "use-ack should return when the bytes arrive, before processing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_timeout_and_refusals_are_reported_per_member() {
    init_tracing();
    let addrs = free_addrs(3);
    let a = node("a", 0, &addrs).start().await.unwrap();
    let b = node("b", 1, &addrs).start().await.unwrap();
    let c = node("c", 2, &addrs).start().await.unwrap();
    converge(&[&a, &b, &c]).await;
    let mut fast = b.listen("t").unwrap();
    tokio::spawn(async move { while fast.recv().await.is_some() {} });
    let mut stuck = c.listen("t").unwrap();
    tokio::spawn(async move {
        while let Some(m) = stuck.recv().await {
            tokio::time::sleep(Duration::from_secs(2)).await;
            drop(m);
        }
    });
    let opts = SendOptions::mode(SendMode::SyncAck).with_ack_timeout(Duration::from_millis(300));
    let r = a.broadcast("t", Bytes::from_static(b"x"), opts).await;
    assert!(matches!(r.get(b.local().id()), Some(Delivery::Acked)), "{r:?}");
    assert!(matches!(r.get(c.local().id()), Some(Delivery::TimedOut(_))), "{r:?}");
    assert!(!r.all_ok());

    // A topic nobody listens to is refused at once, with a reason naming the fix.
    let r = a
        .send(
            &[b.local().id()],
            "nobody",
            Bytes::new(),
            SendOptions::mode(SendMode::SyncAck),
        )
        .await;
    match r.get(b.local().id()) {
        Some(Delivery::Failed(SendError::Refused { reason, .. })) => {
            assert!(reason.contains("no listener for topic 'nobody'"), "{reason}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vanished_member_is_detected_restart_is_a_new_member_late_member_is_found() {
    init_tracing();
    let addrs = free_addrs(4);
    let a = node("a", 0, &addrs).start().await.unwrap();
    let b = node("b", 1, &addrs).start().await.unwrap();
    let c = node("c", 2, &addrs).start().await.unwrap();
    converge(&[&a, &b, &c]).await;
    let mut events = a.subscribe();
    let old_c = c.local().id();

    // Crash: every socket closes, no goodbye.
    drop(c);
    let crashed = Instant::now();
    // Suspected (its connections closed, or it went silent) and verified over TCP first.
    let mut suspected = false;
    loop {
        let event = tokio::time::timeout(Duration::from_secs(3), events.recv()).await;
        match event.expect("c removed within the drop time").unwrap() {
            MembershipEvent::Suspected { member, .. } if member.id() == old_c => {
                suspected = true;
                // Unless the verification has removed it already, the stats say so too.
                let listed = a.stats().members.into_iter().find(|m| m.id == old_c.to_string());
                assert!(listed.is_none_or(|m| m.suspected), "suspected in the stats");
            }
            MembershipEvent::Disappeared { member, .. } if member.id() == old_c => break,
            _ => {}
        }
    }
    assert!(suspected, "c was suspected before it was removed");
    eventually("c to be removed", Duration::from_secs(3), || {
        a.members().len() == 1 && b.members().len() == 1
    })
    .await;
    let detected = crashed.elapsed();

    // Restart on the same address: a new member.
    let c = node("c", 2, &addrs).start().await.unwrap();
    converge(&[&a, &b, &c]).await;
    assert_ne!(c.local().id(), old_c);
    assert!(a.members().iter().all(|m| m.id() != old_c));

    // A static member that starts late is found.
    let d = node("d", 3, &addrs).start().await.unwrap();
    converge(&[&a, &b, &c, &d]).await;
    eprintln!("crash detected in {detected:?}");

    // A clean shutdown is seen at once through the goodbye.
    d.shutdown().await;
    eventually("d to leave", Duration::from_millis(1500), || a.members().len() == 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_of_other_domains_never_join() {
    init_tracing();
    let addrs = free_addrs(3);
    let a = node("a", 0, &addrs).with_domain("blue").start().await.unwrap();
    let b = node("b", 1, &addrs).with_domain("blue").start().await.unwrap();
    let c = node("c", 2, &addrs).with_domain("green").start().await.unwrap();
    converge(&[&a, &b]).await;
    eventually("foreign heartbeats to be counted", Duration::from_secs(5), || {
        a.stats().foreign_domain > 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(a.members().len(), 1);
    assert!(c.members().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_messages_arrive_whole_through_fragmentation() {
    init_tracing();
    let addrs = free_addrs(2);
    let a = node("a", 0, &addrs).start().await.unwrap();
    let b = node("b", 1, &addrs)
        .with_max_frame_len(64 * 1024)
        .start()
        .await
        .unwrap();
    converge(&[&a, &b]).await;
    let mut inbox = a.listen("big").unwrap();
    let payload: Vec<u8> = (0..5_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let expected = payload.clone();
    let a_id = a.local().id();
    let send = tokio::spawn(async move {
        b.send(
            &[a_id],
            "big",
            Bytes::from(payload),
            SendOptions::mode(SendMode::SyncAck),
        )
        .await
    });
    let m = inbox.recv().await.unwrap();
    assert_eq!(m.payload().len(), expected.len());
    assert!(m.payload()[..] == expected[..]);
    drop(m);
    let r = send.await.unwrap();
    assert!(r.all_ok(), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_of_connections_keeps_order_with_the_order_interceptor() {
    init_tracing();
    let addrs = free_addrs(2);
    let a = node("a", 0, &addrs)
        .with_interceptor(OrderInterceptor::default())
        .start()
        .await
        .unwrap();
    let b = node("b", 1, &addrs)
        .with_pool_size(4)
        .with_interceptor(OrderInterceptor::default())
        .start()
        .await
        .unwrap();
    converge(&[&a, &b]).await;
    let mut inbox = a.listen("o").unwrap();
    let a_id = a.local().id();
    for i in 0..2000u32 {
        let size = if i % 50 == 0 { 200_000 } else { 16 };
        let mut p = vec![0u8; size];
        p[..4].copy_from_slice(&i.to_be_bytes());
        assert!(
            b.send(&[a_id], "o", Bytes::from(p), SendOptions::default())
                .await
                .all_ok()
        );
    }
    for i in 0..2000u32 {
        let m = tokio::time::timeout(Duration::from_secs(10), inbox.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(u32::from_be_bytes(m.payload()[..4].try_into().unwrap()), i);
    }
}

/// Candidates known up front are listed from the moment `start` returns, before any
/// discovery task ran: a starting session manager reads this list to decide whether
/// discovery has had its chance, and an empty list made a restarted node ready
/// without the sessions (seen in the demo's restart-under-load test).
#[tokio::test(flavor = "current_thread")]
async fn configured_candidates_are_listed_before_discovery_runs() {
    init_tracing();
    let addrs = free_addrs(3);
    // Nothing listens at the other addresses; on one thread no discovery task can
    // have run before `start` returns and the stats are read (no await in between).
    let a = node("a", 0, &addrs).start().await.unwrap();
    let candidates = a.stats().candidates;
    let mut others: Vec<String> = addrs[1..].iter().map(ToString::to_string).collect();
    others.sort();
    assert_eq!(candidates.keys().cloned().collect::<Vec<_>>(), others);
    for c in candidates.values() {
        assert_eq!(
            (c.kind, c.up, c.last_error.as_deref()),
            ("static", false, Some("not probed yet"))
        );
    }
    // The watcher then reports its real findings under the same keys.
    eventually("the candidates to be probed", Duration::from_secs(5), || {
        let c = a.stats().candidates;
        c.len() == 2 && c.values().all(|c| c.probed)
    })
    .await;

    // A DNS name is listed until its first lookup, here one that fails.
    let silent = free_addrs(1)[0];
    let d = tribes::Channel::builder("d")
        .with_cluster_key(common::test_key())
        .with_bind(free_addrs(1)[0])
        .with_discovery(
            tribes::DnsDiscovery::new("cluster.tribes.test.", 4000)
                .with_server(silent)
                .with_refresh(Duration::from_millis(200)),
        )
        .start()
        .await
        .unwrap();
    let c = d.stats().candidates;
    assert_eq!(c.keys().collect::<Vec<_>>(), ["cluster.tribes.test."]);
    assert_eq!(c["cluster.tribes.test."].last_error.as_deref(), Some("not probed yet"));
    eventually("the failed lookup to be shown", Duration::from_secs(10), || {
        let c = d.stats().candidates;
        c.get("cluster.tribes.test.")
            .and_then(|c| c.last_error.clone())
            .is_some_and(|e| e.starts_with("DNS lookup via"))
    })
    .await;
}
