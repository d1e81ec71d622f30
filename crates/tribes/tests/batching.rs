//! Batches and cumulative acks over real sockets: many messages in flight to one
//! member arrive in order and exactly once, and each sync-ack send gets its own
//! answer (ack or refusal) even when it shared a frame with others.

mod common;

use bytes::Bytes;
use common::{converge, free_addrs, init_tracing, node};
use tribes::{Delivery, SendError, SendMode, SendOptions};

/// Thousands of async sends from several tasks at once (so that they share frames)
/// arrive exactly once, each task's messages in the order it sent them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_async_sends_arrive_in_order_and_exactly_once() {
    init_tracing();
    let addrs = free_addrs(2);
    let a = node("a", 0, &addrs).start().await.unwrap();
    let b = node("b", 1, &addrs).start().await.unwrap();
    converge(&[&a, &b]).await;
    let mut inbox = a.listen("t").unwrap();
    const TASKS: u32 = 4;
    const EACH: u32 = 2_000;
    let to = [a.local().id()];
    let senders: Vec<_> = (0..TASKS)
        .map(|task| {
            let b = b.clone();
            tokio::spawn(async move {
                for i in 0..EACH {
                    let mut payload = task.to_be_bytes().to_vec();
                    payload.extend_from_slice(&i.to_be_bytes());
                    let r = b
                        .send(&to, "t", Bytes::from(payload), SendOptions::mode(SendMode::Async))
                        .await;
                    assert!(r.all_ok(), "{r:?}");
                }
            })
        })
        .collect();
    let mut next = [0u32; TASKS as usize];
    for _ in 0..TASKS * EACH {
        let m = inbox.recv().await.unwrap();
        let task = u32::from_be_bytes(m.payload()[..4].try_into().unwrap()) as usize;
        let i = u32::from_be_bytes(m.payload()[4..].try_into().unwrap());
        assert_eq!(i, next[task], "task {task}: out of order or duplicated");
        next[task] += 1;
    }
    for s in senders {
        s.await.unwrap();
    }
    // Nothing more: a sync-ack marker is the very next message.
    let marker = tokio::spawn({
        let b = b.clone();
        async move {
            b.send(
                &to,
                "t",
                Bytes::from_static(b"marker"),
                SendOptions::mode(SendMode::SyncAck),
            )
            .await
        }
    });
    let m = inbox.recv().await.unwrap();
    assert_eq!(&m.payload()[..], b"marker", "a message arrived twice");
    drop(m);
    assert!(marker.await.unwrap().all_ok());
}

/// Sync-ack sends in flight together: the listener fails one of them, and only
/// that send is refused (with the listener's reason); the others are acked by the
/// cumulative ack that follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fail_refuses_only_its_own_message_among_concurrent_sync_acks() {
    init_tracing();
    let addrs = free_addrs(2);
    let a = node("a", 0, &addrs).start().await.unwrap();
    let b = node("b", 1, &addrs).start().await.unwrap();
    converge(&[&a, &b]).await;
    let mut inbox = a.listen("t").unwrap();
    tokio::spawn(async move {
        while let Some(m) = inbox.recv().await {
            let n = u32::from_be_bytes(m.payload()[..].try_into().unwrap());
            if n % 7 == 3 {
                m.fail(format!("{n} is not welcome"));
            }
        }
    });
    let to = [a.local().id()];
    for round in 0..5u32 {
        let sends = (0..30u32).map(|i| {
            let b = b.clone();
            let n = round * 30 + i;
            async move {
                let r = b
                    .send(
                        &to,
                        "t",
                        Bytes::copy_from_slice(&n.to_be_bytes()),
                        SendOptions::mode(SendMode::SyncAck),
                    )
                    .await;
                (n, r)
            }
        });
        for (n, report) in futures::future::join_all(sends).await {
            match report.get(to[0]) {
                Some(Delivery::Acked) => assert_ne!(n % 7, 3, "{n} should have been refused"),
                Some(Delivery::Failed(SendError::Refused { reason, .. })) => {
                    assert_eq!(n % 7, 3, "{n} was refused: {reason}");
                    assert_eq!(reason, &format!("{n} is not welcome"));
                }
                other => panic!("{n}: {other:?}"),
            }
        }
    }
    let acks: u64 = b.stats().members.iter().map(|m| m.acks).sum();
    assert_eq!(
        acks,
        150 - (0..150).filter(|n| n % 7 == 3).count() as u64,
        "acks count acked messages"
    );
}
