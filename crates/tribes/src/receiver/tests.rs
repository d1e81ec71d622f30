//! Tests of `receiver.rs`.

use bytes::Bytes;
use futures::SinkExt;
use tokio::io::AsyncReadExt;
use tokio_util::codec::Framed;

use super::*;
use crate::batch::BatchWriter;
use crate::gate::dial;
use crate::wire::{DEFAULT_MAX_FRAME_LEN, FrameCodec, PREFIX_LEN};
use crate::{Channel, Keyring, MemberId};

/// The first message of a connection from a sender never heard before (no ping,
/// no heartbeat) reaches its listener only once the membership lists the sender,
/// so that the listener can answer it at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sender_of_a_new_connection_is_a_member_before_its_messages_are_delivered() {
    let key = Keyring::new(1, [7; 32]);
    let b = Channel::builder("b")
        .with_cluster_key(key.clone())
        .with_bind("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .unwrap();
    let mut inbox = b.listen("t").unwrap();
    for i in 0..20 {
        let a = Member::new(
            MemberId::random(&mut rand::rng()),
            format!("a{i}"),
            "default",
            ([127, 0, 0, 1], 10_000 + i).into(),
            0,
        );
        let (stream, codec) = dial(key.clone(), b.local().addr(), a.id()).await;
        let mut framed = Framed::new(stream, codec);
        let hello = Frame::new(FrameKind::Hello, &MemberHeader { member: a.clone() }, Bytes::new());
        let header = MessageHeader {
            id: 1,
            ack: 0,
            topic: "t".into(),
            headers: Vec::new(),
        };
        let message = Frame::new(FrameKind::Message, &header, Bytes::from_static(b"x"));
        framed.feed(hello).await.unwrap();
        framed.send(message).await.unwrap();
        let m = inbox.recv().await.unwrap();
        assert_eq!(m.from().id(), a.id());
        assert!(
            b.member(a.id()).is_some(),
            "message {i} delivered before its sender was listed"
        );
    }
}

/// A hello and one batch of `n` async messages numbered from `first`, as a
/// sender writes them; returns the bytes and where the batch frame starts.
fn hello_and_batch(codec: &FrameCodec, a: &Member, first: u64, n: u64) -> (Vec<u8>, usize) {
    let mut codec = codec.clone();
    let a = a.clone();
    let mut out = BatchWriter::new(DEFAULT_MAX_FRAME_LEN);
    out.push_frame(
        &mut codec,
        Frame::new(FrameKind::Hello, &MemberHeader { member: a }, Bytes::new()),
    )
    .unwrap();
    let batch_at = out.len();
    for i in first..first + n {
        let header = MessageHeader {
            id: i,
            ack: 0,
            topic: "t".into(),
            headers: Vec::new(),
        };
        out.push(&mut codec, FrameKind::Message, &header, &i.to_be_bytes())
            .unwrap();
    }
    out.finish(&mut codec);
    (out.bytes().to_vec(), batch_at)
}

/// A batch with one flipped byte is refused whole (not one of its messages is
/// delivered) and counted; a good batch is delivered in order, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_batch_is_refused_whole_and_counted_and_a_good_one_delivered_in_order_once() {
    let key = Keyring::new(1, [7; 32]);
    let b = Channel::builder("b")
        .with_cluster_key(key.clone())
        .with_bind("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .unwrap();
    let mut inbox = b.listen("t").unwrap();
    let a = Member::new(
        MemberId::random(&mut rand::rng()),
        "a",
        "default",
        ([127, 0, 0, 1], 9).into(),
        0,
    );

    let (mut stream, codec) = dial(key.clone(), b.local().addr(), a.id()).await;
    let (mut wire, batch_at) = hello_and_batch(&codec, &a, 1, 20);
    wire[batch_at + PREFIX_LEN + 30] ^= 0x40;
    stream.write_all(&wire).await.unwrap();
    // The receiver closes the connection.
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest).await;
    assert_eq!(b.stats().malformed_frames, 1);
    let stats = b.stats();
    let reason = &stats.refused.values().next().unwrap().last_reason;
    assert!(reason.contains("authentication failed"), "{reason}");

    let (mut stream, codec) = dial(key.clone(), b.local().addr(), a.id()).await;
    let (wire, _) = hello_and_batch(&codec, &a, 101, 20);
    stream.write_all(&wire).await.unwrap();
    for want in 101..121u64 {
        let m = inbox.recv().await.unwrap();
        assert_eq!(
            m.payload()[..],
            want.to_be_bytes(),
            "in order, none of the tampered batch"
        );
    }
    // Exactly once: a sync-ack message sent after the batch is the next one in.
    let a = Channel::builder("a")
        .with_cluster_key(Keyring::new(1, [7; 32]))
        .with_bind("127.0.0.1:0".parse().unwrap())
        .with_discovery(crate::StaticDiscovery::new([b.local().addr()]))
        .start()
        .await
        .unwrap();
    a.watch_members()
        .wait_for(|m| m.iter().any(|m| m.id() == b.local().id()))
        .await
        .unwrap();
    let send = {
        let a = a.clone();
        let to = b.local().id();
        tokio::spawn(async move {
            a.send(
                &[to],
                "t",
                Bytes::from_static(b"last"),
                crate::SendOptions::mode(crate::SendMode::SyncAck),
            )
            .await
        })
    };
    let m = inbox.recv().await.unwrap();
    assert_eq!(&m.payload()[..], b"last");
    drop(m);
    assert!(send.await.unwrap().all_ok());
    assert_eq!(b.stats().malformed_frames, 1);
}

/// After a real handshake, an oversized frame, an unknown kind and a message
/// before the hello each close their connection (counted), and a frame naming
/// another member than the handshake proved is refused; the node keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_after_the_handshake_closes_only_that_connection() {
    let key = Keyring::new(1, [7; 32]);
    let b = Channel::builder("b")
        .with_cluster_key(key.clone())
        .with_bind("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .unwrap();
    let mut inbox = b.listen("t").unwrap();
    let me = Member::new(
        MemberId::random(&mut rand::rng()),
        "a",
        "default",
        ([127, 0, 0, 1], 9).into(),
        0,
    );
    let mut oversized = b"TRBS\x03\x01".to_vec();
    oversized.extend_from_slice(&[0u8; 30]);
    oversized.extend_from_slice(&8u32.to_be_bytes());
    oversized.extend_from_slice(&u32::MAX.to_be_bytes());
    let mut unknown_kind = b"TRBS\x03\xee".to_vec();
    unknown_kind.extend_from_slice(&[0u8; 38]);
    let message = |codec: &FrameCodec| {
        let header = MessageHeader {
            id: 1,
            ack: 0,
            topic: "t".into(),
            headers: Vec::new(),
        };
        let mut buf = BytesMut::new();
        codec
            .clone()
            .encode(
                Frame::new(FrameKind::Message, &header, Bytes::from_static(b"x")),
                &mut buf,
            )
            .unwrap();
        buf.to_vec()
    };
    let impostor = |codec: &FrameCodec| {
        let other = Member::new(
            MemberId::random(&mut rand::rng()),
            "x",
            "default",
            ([127, 0, 0, 1], 8).into(),
            0,
        );
        let mut buf = BytesMut::new();
        codec
            .clone()
            .encode(
                Frame::new(FrameKind::Hello, &MemberHeader { member: other }, Bytes::new()),
                &mut buf,
            )
            .unwrap();
        buf.to_vec()
    };
    type Bad = Box<dyn Fn(&FrameCodec) -> Vec<u8>>;
    let cases: Vec<(&str, Bad)> = vec![
        ("oversized", Box::new(move |_| oversized.clone())),
        ("unknown kind", Box::new(move |_| unknown_kind.clone())),
        ("message before hello", Box::new(message)),
        ("another member's hello", Box::new(impostor)),
    ];
    for (i, (what, bad)) in cases.iter().enumerate() {
        let (mut stream, codec) = dial(key.clone(), b.local().addr(), me.id()).await;
        stream.write_all(&bad(&codec)).await.unwrap();
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "{what}: the connection stays open");
        assert_eq!(b.stats().malformed_frames, i as u64 + 1, "{what} counted");
    }
    let reasons: Vec<String> = b.stats().refused.values().map(|r| r.last_reason.clone()).collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("handshake of this connection proved")),
        "{reasons:?}"
    );
    // Still serving: a good connection delivers.
    let (mut stream, codec) = dial(key.clone(), b.local().addr(), me.id()).await;
    let (wire, _) = hello_and_batch(&codec, &me, 1, 1);
    stream.write_all(&wire).await.unwrap();
    assert_eq!(inbox.recv().await.unwrap().payload()[..], 1u64.to_be_bytes());
}
