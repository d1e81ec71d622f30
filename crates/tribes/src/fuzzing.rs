//! Entry points for the `cargo fuzz` targets in `fuzz/` (built only with `--cfg fuzzing`,
//! which cargo-fuzz sets). Each function feeds bytes from the fuzzer to the real decoders,
//! as the receiver and multicast discovery do, and panics when a decoder breaks one of its
//! promises (the fuzzer reports a panic as a crash).

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::codec::{Decoder, Encoder};

use crate::member::{Member, MemberId};
use crate::seal::{Keyring, Sealer};
use crate::wire::{AckHeader, Frame, FrameCodec, FrameKind, GoodbyeHeader, MemberHeader, MessageHeader, WireError};

/// The frame limit the targets decode with: the default of every channel.
pub const MAX_FRAME_LEN: usize = crate::wire::DEFAULT_MAX_FRAME_LEN;
/// The largest frame header.
pub const MAX_HEADER_LEN: usize = crate::wire::MAX_HEADER_LEN;
/// Key id of the fixed test key the sealed paths use.
pub const TEST_KEY_ID: u8 = 1;
/// The fixed test key (not secret: it only seals fuzz inputs and seeds).
pub const TEST_KEY: [u8; 32] = [0x5a; 32];

/// Every frame kind, in the order of their bytes.
const KINDS: [FrameKind; 9] = [
    FrameKind::Message,
    FrameKind::Ack,
    FrameKind::FailAck,
    FrameKind::Hello,
    FrameKind::Ping,
    FrameKind::Pong,
    FrameKind::Heartbeat,
    FrameKind::Goodbye,
    FrameKind::Batch,
];

fn sealer() -> Arc<Sealer> {
    Arc::new(Sealer::new(Keyring::new(TEST_KEY_ID, TEST_KEY)))
}

type Summary = (FrameKind, Bytes, Bytes);

fn summary(frame: &Frame) -> Summary {
    (frame.kind, frame.header.clone(), frame.payload.clone())
}

/// Decodes `data` as a TCP stream read `step` bytes at a time: the frames and the error.
fn stream(mut codec: FrameCodec, data: &[u8], step: usize) -> (Vec<Summary>, Option<WireError>) {
    let mut frames = Vec::new();
    let mut buf = BytesMut::new();
    for chunk in data.chunks(step.max(1)) {
        buf.extend_from_slice(chunk);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => {
                    headers(&frame);
                    frames.push(summary(&frame));
                }
                Ok(None) => break,
                Err(e) => return (frames, Some(e)),
            }
        }
    }
    (frames, None)
}

/// Decodes a header, and checks that encoding what was decoded is stable.
fn typed<H: Serialize + DeserializeOwned>(frame: &Frame) {
    if let Ok(h) = frame.header::<H>() {
        let once = rmp_serde::to_vec(&h).expect("a decoded header encodes");
        let again: H = rmp_serde::from_slice(&once).expect("a re-encoded header decodes");
        assert_eq!(
            rmp_serde::to_vec(&again).expect("encodes"),
            once,
            "header encoding is not stable"
        );
    }
}

/// The header decoding the receiver, senders, probes and multicast do for each kind.
fn headers(frame: &Frame) {
    match frame.kind {
        FrameKind::Hello | FrameKind::Heartbeat | FrameKind::Ping | FrameKind::Pong => typed::<MemberHeader>(frame),
        FrameKind::Goodbye => typed::<GoodbyeHeader>(frame),
        FrameKind::Message => typed::<MessageHeader>(frame),
        FrameKind::Ack | FrameKind::FailAck => typed::<AckHeader>(frame),
        FrameKind::Batch => {
            // As the receiver reads a batch: every entry, stopping at the first bad one.
            for entry in crate::batch::entries(frame) {
                match entry {
                    Ok(entry) => {
                        assert!(
                            matches!(entry.kind, FrameKind::Message | FrameKind::Goodbye),
                            "a batch entry of kind {:?}",
                            entry.kind
                        );
                        headers(&entry);
                    }
                    Err(_) => break,
                }
            }
        }
    }
}

/// `frame_decode`: `data` as bytes arriving on a replication connection and as one
/// multicast datagram, in plain text and sealed under the test key; then `data` as
/// the contents of a frame sealed, opened and tampered with.
///
/// Promises checked: no panic; a stream decodes to the same frames and error however
/// it is split into reads; a datagram decodes to the stream's first frame; a sealed
/// frame opens to what was sealed, only in the place its sender put it (first on a
/// connection, later on it, or a heartbeat alone in a datagram) and only once; a sealed
/// frame with any byte changed never opens.
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
    match plain.decode_datagram(data) {
        Ok(frame) => assert_eq!(Some(&summary(&frame)), whole.0.first()),
        Err(_) => assert!(whole.0.is_empty(), "a datagram failed where the stream decoded"),
    }
    // Sealed under the test key: what an attacker without the key can reach, and
    // (for seeds sealed with the test key) what a member can.
    let sealed = FrameCodec::sealed(MAX_FRAME_LEN, sealer());
    let _ = stream(sealed.clone(), data, data.len());
    if let Ok(frame) = sealed.decode_datagram(data) {
        headers(&frame);
    }
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
    let mut sender = FrameCodec::sealed(MAX_FRAME_LEN, sealer());
    let mut wire = BytesMut::new();
    sender.encode(frame.clone(), &mut wire).expect("within the limit");
    sender.encode(frame.clone(), &mut wire).expect("within the limit");
    let one = wire.len() / 2;
    let receiver = FrameCodec::sealed(MAX_FRAME_LEN, sealer());
    let out_of_place =
        |err: &Option<WireError>| matches!(err, Some(WireError::OutOfPlace { .. } | WireError::Replayed { .. }));
    if kind == FrameKind::Heartbeat {
        // Heartbeats travel alone in datagrams, never on a connection.
        let (frames, err) = stream(receiver.clone(), &wire, wire.len());
        assert!(
            frames.is_empty() && out_of_place(&err),
            "a heartbeat opened a connection"
        );
        let opened = receiver
            .decode_datagram(&wire[..one])
            .expect("a sealed heartbeat opens");
        assert_eq!(summary(&opened), summary(&frame));
        let again = receiver.decode_datagram(&wire[..one]);
        assert!(
            matches!(again, Err(WireError::Replayed { .. })),
            "a heartbeat opened twice"
        );
    } else {
        // A connection: both frames open, in order.
        let (frames, err) = stream(receiver.clone(), &wire, wire.len());
        assert!(err.is_none(), "a sealed stream does not open: {err:?}");
        assert_eq!(frames, vec![summary(&frame), summary(&frame)]);
        // The same connection replayed, its second frame opening a connection, and
        // either frame alone in a datagram: refused.
        let (frames, err) = stream(receiver.clone(), &wire, wire.len());
        assert!(frames.is_empty() && out_of_place(&err), "a replayed connection opened");
        let (frames, err) = stream(receiver.clone(), &wire[one..], wire.len());
        assert!(
            frames.is_empty() && out_of_place(&err),
            "a later frame opened a connection"
        );
        for datagram in [&wire[..one], &wire[one..]] {
            let alone = receiver.decode_datagram(datagram);
            assert!(
                matches!(alone, Err(WireError::OutOfPlace { .. })),
                "a {kind:?} opened as a datagram"
            );
        }
    }
    // Any byte changed: never opens.
    let mut bad = wire[..one].to_vec();
    let i = usize::from(u16::from_be_bytes([*x, *y])) % bad.len();
    bad[i] ^= (*x).max(1);
    let fresh = FrameCodec::sealed(MAX_FRAME_LEN, sealer());
    assert!(
        fresh.decode_datagram(&bad).is_err(),
        "a tampered frame opened (byte {i})"
    );
    let (frames, _) = stream(fresh, &bad, bad.len());
    assert!(frames.is_empty(), "a tampered frame opened on a stream (byte {i})");
}

/// `membership_decode`: `data` as the MessagePack header of every frame kind, as the
/// receiver, the senders and the TCP probe decode it; then as the header of a
/// multicast heartbeat, plain and sealed, decoded as multicast discovery does.
pub fn membership_decode(data: &[u8]) {
    if data.len() > MAX_HEADER_LEN {
        return;
    }
    for kind in KINDS {
        let frame = Frame {
            kind,
            header: Bytes::copy_from_slice(data),
            payload: Bytes::new(),
        };
        headers(&frame);
    }
    let frame = Frame {
        kind: FrameKind::Heartbeat,
        header: Bytes::copy_from_slice(data),
        payload: Bytes::new(),
    };
    let plain = FrameCodec::new(MAX_FRAME_LEN);
    let sealed = FrameCodec::sealed(MAX_FRAME_LEN, sealer());
    for codec in [plain, sealed] {
        let datagram = codec.to_bytes(frame.clone()).expect("within the limit");
        let heard = codec
            .decode_datagram(&datagram)
            .and_then(|f| f.header::<MemberHeader>());
        let direct = frame.header::<MemberHeader>();
        assert_eq!(heard.is_ok(), direct.is_ok());
        if let (Ok(a), Ok(b)) = (heard, direct) {
            assert_eq!(a.member, b.member);
        }
    }
}

fn member(name: &str, port: u16, payload: &'static [u8]) -> Member {
    Member::new(
        MemberId::from_bytes([port as u8; 16]),
        name,
        "default",
        ([10, 0, 0, 1], port).into(),
        1_700_000_000_000,
    )
    .with_payload(Bytes::from_static(payload))
}

/// Valid headers of every kind, as the real encoders write them: seeds for `membership_decode`.
pub fn seed_headers() -> Vec<(String, Vec<u8>)> {
    let enc = |h: &dyn erased::Enc| h.bytes();
    let v6 = Member::new(
        MemberId::from_bytes([0xff; 16]),
        "node-ü",
        "shop",
        "[::1]:4000".parse().expect("an address"),
        u64::MAX,
    );
    vec![
        (
            "member".into(),
            enc(&MemberHeader {
                member: member("node-a", 4000, b""),
            }),
        ),
        (
            "member_payload".into(),
            enc(&MemberHeader {
                member: member("b", 4001, b"\x00\xffapp"),
            }),
        ),
        ("member_v6".into(), enc(&MemberHeader { member: v6 })),
        (
            "goodbye".into(),
            enc(&GoodbyeHeader {
                id: MemberId::from_bytes([3; 16]),
            }),
        ),
        (
            "message".into(),
            enc(&message_header(7, 2, "tribes.sessions/shop", vec![])),
        ),
        (
            "message_headers".into(),
            enc(&message_header(u64::MAX, 1, "t", interceptor_headers())),
        ),
        ("ack".into(), enc(&AckHeader { id: 9, reason: None })),
        (
            "fail_ack".into(),
            enc(&AckHeader {
                id: 9,
                reason: Some("no such context".into()),
            }),
        ),
    ]
}

fn message_header(id: u64, ack: u8, topic: &str, headers: Vec<(String, Bytes)>) -> MessageHeader {
    MessageHeader {
        id,
        ack,
        topic: topic.into(),
        headers,
    }
}

/// The headers the built-in interceptors add (fragment, compression, order).
fn interceptor_headers() -> Vec<(String, Bytes)> {
    let mut frag = BytesMut::new();
    frag.put_u64(1);
    frag.put_u32(0);
    frag.put_u32(2);
    frag.put_u64(2_000_000);
    vec![
        ("tribes.frag".into(), frag.freeze()),
        ("tribes.lz4".into(), Bytes::copy_from_slice(&10_000u32.to_be_bytes())),
        ("tribes.order".into(), Bytes::copy_from_slice(&5u64.to_be_bytes())),
    ]
}

/// Valid streams and datagrams, plain and sealed under the test key, as the real
/// encoders write them, and a few broken ones: seeds for `frame_decode`.
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
        let mut sealed = FrameCodec::sealed(MAX_FRAME_LEN, sealer());
        let mut s = BytesMut::new();
        sealed.encode(frame.clone(), &mut s).expect("encodes");
        out.push((format!("sealed_{name}"), s.to_vec()));
        // The seal round trip reads kind, split and tamper position from the first bytes.
        let mut raw = vec![frame.kind as u8 - 1, 128, 1, 0];
        raw.extend_from_slice(&frame.header);
        raw.extend_from_slice(&frame.payload);
        out.push((format!("contents_{name}"), raw));
    }
    out.push(("plain_stream".into(), all.to_vec()));
    let mut sealed = FrameCodec::sealed(MAX_FRAME_LEN, sealer());
    let mut s = BytesMut::new();
    for (_, frame) in &frames[..3] {
        sealed.encode(frame.clone(), &mut s).expect("encodes");
    }
    out.push(("sealed_stream".into(), s.to_vec()));
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

mod erased {
    use serde::Serialize;

    /// Lets the seed list hold headers of different types.
    pub(super) trait Enc {
        fn bytes(&self) -> Vec<u8>;
    }

    impl<T: Serialize> Enc for T {
        fn bytes(&self) -> Vec<u8> {
            rmp_serde::to_vec(self).expect("headers encode")
        }
    }
}
