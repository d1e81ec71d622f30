//! Random, truncated and oversized bytes thrown at a real receiver: it never
//! panics, never allocates past its limit, closes only the offending connection,
//! counts it, and keeps serving the other members.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{converge, eventually, free_addrs, init_tracing, node};
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tribes::{Delivery, SendMode, SendOptions};

/// Write `bytes` to `addr` and return whether the receiver closed the connection
/// (after saying why, when the bytes start like a handshake or a frame).
async fn throw(addr: std::net::SocketAddr, bytes: &[u8]) -> bool {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(bytes).await;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_millis(1000), s.read_to_end(&mut answer))
        .await
        .is_ok()
}

#[test]
fn garbage_never_hurts_the_receiver() {
    init_tracing();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let addrs = free_addrs(2);
    let (a, b) = rt.block_on(async {
        let a = node("a", 0, &addrs)
            .with_max_frame_len(64 * 1024)
            .start()
            .await
            .unwrap();
        let b = node("b", 1, &addrs).start().await.unwrap();
        converge(&[&a, &b]).await;
        (a, b)
    });
    let mut inbox = rt.block_on(async { a.listen("t").unwrap() });
    rt.spawn(async move { while inbox.recv().await.is_some() {} });
    let target = a.local().addr();

    // Known-bad frames, each closed with a count. (Frames of wire version 2 are now
    // refused at the handshake as another version; the same frames after a real
    // handshake are `receiver::tests::garbage_after_the_handshake_closes_only_that_connection`.)
    let mut oversized = Vec::from(&b"TRBS\x02\x01"[..]);
    oversized.extend_from_slice(&[0u8; 30]);
    oversized.extend_from_slice(&8u32.to_be_bytes());
    oversized.extend_from_slice(&u32::MAX.to_be_bytes());
    let mut unknown_kind = Vec::from(&b"TRBS\x02\xee"[..]);
    unknown_kind.extend_from_slice(&[0u8; 38]);
    let mut message_before_hello = Vec::from(&b"TRBS\x02\x01"[..]);
    message_before_hello.extend_from_slice(&[0u8; 30]);
    message_before_hello.extend_from_slice(&1u32.to_be_bytes());
    message_before_hello.extend_from_slice(&0u32.to_be_bytes());
    message_before_hello.push(0x90);
    for bad in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        &oversized,
        &unknown_kind,
        &message_before_hello,
    ] {
        assert!(
            rt.block_on(throw(target, bad)),
            "the receiver should close a connection that sent {bad:?}"
        );
    }
    let counted = a.stats().malformed_frames;
    assert!(counted >= 4, "malformed frames counted: {counted}");

    // Random bytes, with and without a valid-looking prefix.
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(64));
    runner
        .run(
            &(proptest::collection::vec(any::<u8>(), 0..2048), any::<bool>()),
            |(data, prefix)| {
                let mut bytes = if prefix {
                    Vec::from(&b"TRBS\x02"[..])
                } else {
                    Vec::new()
                };
                bytes.extend_from_slice(&data);
                rt.block_on(throw(target, &bytes));
                Ok(())
            },
        )
        .unwrap();

    // The node keeps serving: b still gets sync-acks, and b is still a member.
    rt.block_on(async {
        let r = b
            .send(
                &[a.local().id()],
                "t",
                Bytes::from_static(b"still here"),
                SendOptions::mode(SendMode::SyncAck),
            )
            .await;
        assert!(matches!(r.get(a.local().id()), Some(Delivery::Acked)), "{r:?}");
        eventually("membership to stay whole", Duration::from_secs(2), || {
            a.members().len() == 1
        })
        .await;
    });
    let stats = a.stats();
    assert_eq!(
        stats.refused.values().map(|r| r.count).sum::<u64>(),
        stats.malformed_frames
    );
    assert!(
        stats
            .refused
            .values()
            .any(|r| r.last_reason.contains("not a tribes node")),
        "{:?}",
        stats.refused
    );
}
