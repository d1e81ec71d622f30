//! The `frame_decode` target and its seeds: streams plain and sealed, heartbeat
//! datagrams, and a frame's contents sealed, opened, replayed and tampered with.

use bytes::{Bytes, BytesMut};
use tokio_util::codec::Encoder;

use super::{
    KINDS, MAX_FRAME_LEN, MAX_HEADER_LEN, connection, credentials, interceptor_headers, member, message_header, stream,
    summary,
};
use crate::heartbeat::Heartbeats;
use crate::member::MemberId;
use crate::wire::{AckHeader, Frame, FrameCodec, FrameKind, GoodbyeHeader, MemberHeader, MessageHeader, WireError};

/// `frame_decode`: `data` as bytes arriving on a replication connection, in plain
/// text and sealed (under fixed connection keys), and as a heartbeat datagram, plain
/// and sealed under the test key; then `data` as the contents of a frame sealed,
/// opened, replayed and tampered with.
///
/// Promises checked: no panic; a stream decodes to the same frames and error however
/// it is split into reads; a sealed frame opens to what was sealed, once, in order, on
/// its own connection only; a sealed frame with any byte changed never opens.
pub fn frame_decode(data: &[u8]) {
    if data.len() > MAX_FRAME_LEN + crate::wire::PREFIX_LEN {
        return;
    }
    // Plain text: one read, then reads of 7 bytes.
    let plain = FrameCodec::new(MAX_FRAME_LEN);
    let whole = stream(plain.clone(), data, data.len());
    let pieces = stream(plain.clone(), data, 7);
    assert_eq!(whole.0, pieces.0, "the frames depend on how the stream is split");
    let what = |e: &Option<WireError>| e.as_ref().map(std::mem::discriminant);
    assert_eq!(what(&whole.1), what(&pieces.1), "{:?} or {:?}", whole.1, pieces.1);
    // Sealed: what an attacker without the connection's keys can reach, and (for
    // seeds sealed with the fixed keys) what the peer can.
    let (_, receiver) = connection();
    let _ = stream(receiver, data, data.len());
    // A heartbeat datagram, plain and sealed.
    let c = credentials();
    let _ = Heartbeats::default().open(None, data, 1_700_000_000_000);
    let _ = Heartbeats::default().open(Some(&c), data, 1_700_000_000_000);
    seal_round_trip(data);
}

/// `data` as a frame's kind, header and payload: sealed, opened, replayed, tampered with.
fn seal_round_trip(data: &[u8]) {
    let [k, split, x, y, rest @ ..] = data else {
        return;
    };
    let kind = KINDS[usize::from(k % 9)];
    let at = (rest.len() * *split as usize / 255).min(MAX_HEADER_LEN);
    let frame = Frame {
        kind,
        header: Bytes::copy_from_slice(&rest[..at]),
        payload: Bytes::copy_from_slice(&rest[at..]),
    };
    let (mut sender, receiver) = connection();
    let mut wire = BytesMut::new();
    sender.encode(frame.clone(), &mut wire).expect("within the limit");
    sender.encode(frame.clone(), &mut wire).expect("within the limit");
    let one = wire.len() / 2;
    let (frames, err) = stream(receiver.clone(), &wire, wire.len());
    if kind == FrameKind::Heartbeat {
        // Heartbeats travel alone in datagrams, never on a connection.
        assert!(
            frames.is_empty() && matches!(err, Some(WireError::HeartbeatOnConnection)),
            "a heartbeat opened on a connection"
        );
        return;
    }
    assert!(err.is_none(), "a sealed stream does not open: {err:?}");
    assert_eq!(frames, vec![summary(&frame), summary(&frame)]);
    // The second frame first, or the first twice: refused.
    let (frames, err) = stream(receiver.clone(), &wire[one..], wire.len());
    assert!(
        frames.is_empty() && matches!(err, Some(WireError::Replayed { .. })),
        "a later frame opened a connection"
    );
    let mut twice = wire[..one].to_vec();
    twice.extend_from_slice(&wire[..one]);
    let (frames, err) = stream(receiver.clone(), &twice, twice.len());
    assert!(
        frames.len() == 1 && matches!(err, Some(WireError::Replayed { .. })),
        "a frame opened twice"
    );
    // Any byte changed: never opens.
    let mut bad = wire[..one].to_vec();
    let i = usize::from(u16::from_be_bytes([*x, *y])) % bad.len();
    bad[i] ^= (*x).max(1);
    let (frames, _) = stream(receiver, &bad, bad.len());
    assert!(frames.is_empty(), "a tampered frame opened on a stream (byte {i})");
}

/// Valid streams, plain and sealed under the fixed connection keys, and heartbeat
/// datagrams, as the real encoders write them, and a few broken ones: seeds for
/// `frame_decode`.
pub fn seed_frames() -> Vec<(String, Vec<u8>)> {
    let frames: Vec<(&str, Frame)> = vec![
        (
            "hello",
            Frame::new(
                FrameKind::Hello,
                &MemberHeader {
                    member: member("node-a", 4000, b""),
                },
                Bytes::new(),
            ),
        ),
        (
            "heartbeat",
            Frame::new(
                FrameKind::Heartbeat,
                &MemberHeader {
                    member: member("node-b", 4001, b"x"),
                },
                Bytes::new(),
            ),
        ),
        (
            "ping",
            Frame::new(
                FrameKind::Ping,
                &MemberHeader {
                    member: member("c", 4002, b""),
                },
                Bytes::new(),
            ),
        ),
        (
            "pong",
            Frame::new(
                FrameKind::Pong,
                &MemberHeader {
                    member: member("d", 4003, b""),
                },
                Bytes::new(),
            ),
        ),
        (
            "goodbye",
            Frame::new(
                FrameKind::Goodbye,
                &GoodbyeHeader {
                    id: MemberId::from_bytes([3; 16]),
                },
                Bytes::new(),
            ),
        ),
        (
            "message",
            Frame::new(
                FrameKind::Message,
                &message_header(1, 2, "tribes.sessions/shop", vec![]),
                Bytes::from_static(b"\x92\x01\xa5Hello"),
            ),
        ),
        (
            "message_headers",
            Frame::new(
                FrameKind::Message,
                &message_header(2, 0, "t", interceptor_headers()),
                Bytes::from(vec![7u8; 300]),
            ),
        ),
        ("batch", seed_batch()),
        (
            "ack",
            Frame::new(FrameKind::Ack, &AckHeader { id: 1, reason: None }, Bytes::new()),
        ),
        (
            "fail_ack",
            Frame::new(
                FrameKind::FailAck,
                &AckHeader {
                    id: 1,
                    reason: Some("no such context".into()),
                },
                Bytes::new(),
            ),
        ),
    ];
    let mut out = Vec::new();
    let mut plain = FrameCodec::new(MAX_FRAME_LEN);
    let mut all = BytesMut::new();
    for (name, frame) in &frames {
        let mut one = BytesMut::new();
        plain.encode(frame.clone(), &mut one).expect("encodes");
        all.extend_from_slice(&one);
        out.push((format!("plain_{name}"), one.to_vec()));
        if frame.kind != FrameKind::Heartbeat {
            let (mut sealed, _) = connection();
            let mut s = BytesMut::new();
            sealed.encode(frame.clone(), &mut s).expect("encodes");
            out.push((format!("sealed_{name}"), s.to_vec()));
        }
        // The seal round trip reads kind, split and tamper position from the first bytes.
        let mut raw = vec![frame.kind as u8 - 1, 128, 1, 0];
        raw.extend_from_slice(&frame.header);
        raw.extend_from_slice(&frame.payload);
        out.push((format!("contents_{name}"), raw));
    }
    out.push(("plain_stream".into(), all.to_vec()));
    let (mut sealed, _) = connection();
    let mut s = BytesMut::new();
    for (_, frame) in &frames[..1] {
        sealed.encode(frame.clone(), &mut s).expect("encodes");
    }
    for (_, frame) in &frames[2..4] {
        sealed.encode(frame.clone(), &mut s).expect("encodes");
    }
    out.push(("sealed_stream".into(), s.to_vec()));
    let c = credentials();
    let beat = member("node-b", 4001, b"x");
    let beats = Heartbeats::default();
    out.push((
        "heartbeat_plain".into(),
        beats.seal(None, &beat, 1_700_000_000_000, &mut rand::rng()),
    ));
    out.push((
        "heartbeat_sealed".into(),
        beats.seal(Some(&c), &beat, 1_700_000_000_000, &mut rand::rng()),
    ));
    // Broken: cut short, announcing too much, an unknown kind and version, garbage.
    let first = out[0].1.clone();
    out.push(("truncated".into(), first[..first.len() - 3].to_vec()));
    out.push(("prefix_only".into(), first[..crate::wire::PREFIX_LEN].to_vec()));
    let mut huge = first.clone();
    huge[40..44].copy_from_slice(&u32::MAX.to_be_bytes());
    out.push(("too_large".into(), huge));
    let mut big_header = first.clone();
    big_header[36..40].copy_from_slice(&(MAX_HEADER_LEN as u32 + 1).to_be_bytes());
    out.push(("header_too_large".into(), big_header));
    let mut kind = first.clone();
    kind[5] = 10;
    out.push(("unknown_kind".into(), kind));
    let mut version = first.clone();
    version[4] = crate::wire::VERSION + 1;
    out.push(("unknown_version".into(), version));
    let mut old = first;
    old[4] = 1;
    out.push(("old_version".into(), old));
    out.push(("http".into(), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()));
    out
}

/// A batch as a sender writes it: three messages (one asking for a sync-ack, one
/// with interceptor headers) and a goodbye, as one frame (kind, no header, entries).
fn seed_batch() -> Frame {
    let mut codec = FrameCodec::new(MAX_FRAME_LEN);
    let mut out = crate::batch::BatchWriter::new(MAX_FRAME_LEN);
    let message = |h: &MessageHeader, payload: &[u8], out: &mut crate::batch::BatchWriter, codec: &mut FrameCodec| {
        out.push(codec, FrameKind::Message, h, payload)
            .expect("within the limit");
    };
    message(
        &message_header(1, 0, "tribes.sessions/shop", vec![]),
        b"\x92\x01\xa5Hello",
        &mut out,
        &mut codec,
    );
    message(
        &message_header(2, 2, "t", interceptor_headers()),
        &[7u8; 40],
        &mut out,
        &mut codec,
    );
    message(&message_header(3, 1, "t", vec![]), b"", &mut out, &mut codec);
    let goodbye = GoodbyeHeader {
        id: MemberId::from_bytes([3; 16]),
    };
    out.push(&mut codec, FrameKind::Goodbye, &goodbye, b"")
        .expect("within the limit");
    out.finish(&mut codec);
    Frame {
        kind: FrameKind::Batch,
        header: Bytes::new(),
        payload: Bytes::copy_from_slice(&out.bytes()[crate::wire::PREFIX_LEN..]),
    }
}
