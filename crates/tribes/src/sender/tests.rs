//! Tests of `sender.rs`.

use bytes::{Bytes, BytesMut};
use tokio_util::codec::Decoder;

use super::*;
use crate::wire::{DEFAULT_MAX_FRAME_LEN, MessageHeader};

fn connection() -> (Connection, FrameCodec) {
    let (_, local) = watch::channel(Member::new(
        MemberId::from_bytes([1; 16]),
        "a",
        "d",
        ([127, 0, 0, 1], 1).into(),
        0,
    ));
    let (inputs, _) = mpsc::unbounded_channel();
    let codec = FrameCodec::new(DEFAULT_MAX_FRAME_LEN);
    let gate = crate::gate::Gate::new(
        None,
        DEFAULT_MAX_FRAME_LEN,
        Arc::default(),
        Arc::default(),
        Duration::from_secs(5),
    );
    let ctx = Arc::new(SenderContext {
        local,
        gate: Arc::new(gate),
        inputs,
        shutdown: CancellationToken::new(),
        pool_size: 1,
        queue_capacity: 1024,
        connect_timeout: Duration::from_secs(1),
    });
    let conn = Connection {
        member: Member::new(MemberId::from_bytes([2; 16]), "b", "d", ([127, 0, 0, 1], 2).into(), 0),
        ctx,
        cancel: CancellationToken::new(),
        counters: Arc::default(),
        left: Arc::default(),
        seq: 0,
    };
    (conn, codec)
}

fn send(payload: &'static [u8], ack: u8) -> (Queued, Option<oneshot::Receiver<AckResult>>) {
    let (tx, rx) = oneshot::channel();
    let queued = Queued::Send {
        messages: vec![Message::new("t", Bytes::from_static(payload))],
        ack,
        reply: (ack > 0).then_some(tx),
    };
    (queued, (ack > 0).then_some(rx))
}

/// The ids and payloads of the messages in what `gather` wrote.
fn written(out: &BatchWriter) -> Vec<(u64, u8, Bytes)> {
    let mut codec = FrameCodec::new(DEFAULT_MAX_FRAME_LEN);
    let mut buf = BytesMut::from(out.bytes());
    let mut got = Vec::new();
    while let Some(frame) = codec.decode(&mut buf).unwrap() {
        for entry in crate::batch::entries(&frame) {
            let entry = entry.unwrap();
            let h: MessageHeader = entry.header().unwrap();
            got.push((h.id, h.ack, entry.payload));
        }
    }
    got
}

/// A lone message is written as soon as the connection task wakes: gathering
/// never waits for company. (A plain test, with no tokio runtime: any timer on
/// this path would panic here.)
#[test]
fn a_lone_message_is_gathered_at_once_without_a_timer() {
    let (mut conn, mut codec) = connection();
    let (_tx, mut rx) = mpsc::channel(16);
    let mut out = BatchWriter::new(DEFAULT_MAX_FRAME_LEN);
    let mut waiting = Waiting::default();
    let (first, _ack) = send(b"alone", 2);
    conn.gather(first, &mut rx, &mut out, &mut codec, &mut waiting);
    assert_eq!(written(&out), vec![(1, 2, Bytes::from_static(b"alone"))]);
    assert_eq!(out.clear(), (1, 1), "one frame of one message");
}

/// What concurrent senders queued meanwhile shares one frame, in queue order,
/// each with the next sequence number; only sends that asked for an ack wait.
#[test]
fn queued_sends_share_one_frame_in_order() {
    let (mut conn, mut codec) = connection();
    let (tx, mut rx) = mpsc::channel(64);
    let mut out = BatchWriter::new(DEFAULT_MAX_FRAME_LEN);
    let mut waiting = Waiting::default();
    let (first, _) = send(b"0", 0);
    let mut acks = Vec::new();
    for i in 1..40u8 {
        let (q, ack) = send(if i % 2 == 0 { b"even" } else { b"odd" }, i % 3);
        tx.try_send(q).unwrap();
        acks.extend(ack);
    }
    conn.gather(first, &mut rx, &mut out, &mut codec, &mut waiting);
    let got = written(&out);
    assert_eq!(
        got.iter().map(|g| g.0).collect::<Vec<_>>(),
        (1..=40).collect::<Vec<_>>()
    );
    assert_eq!(out.clear(), (1, 40), "one frame");
    // 1, 2, 4, 5, ... asked for acks (i % 3 != 0): an ack through 20 answers those up to 20.
    let answered = waiting.ack_through(20);
    assert_eq!(answered, (1..20).filter(|i| i % 3 != 0).count());
}
