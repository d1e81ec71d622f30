//! Entry points for the `cargo fuzz` targets in `fuzz/` (built only with `--cfg fuzzing`,
//! which cargo-fuzz sets). Each function feeds bytes from the fuzzer to the real decoders,
//! as the receiver and multicast discovery do, and panics when a decoder breaks one of its
//! promises (the fuzzer reports a panic as a crash).

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::codec::{Decoder, Encoder};

use crate::handshake::{ANSWER_LEN, Initiator, OFFER_LEN, RECORD_LEN, Responder};
use crate::heartbeat::Heartbeats;
use crate::member::{Member, MemberId};
use crate::refusal::Refusal;
use crate::seal::{Credentials, Keyring};
use crate::wire::SessionKeys;
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

/// The two ends of a sealed connection under fixed keys (what a handshake gives).
fn connection() -> (FrameCodec, FrameCodec) {
    let keys = |send, recv| SessionKeys {
        key_id: TEST_KEY_ID,
        send,
        recv,
    };
    (
        FrameCodec::session(MAX_FRAME_LEN, Some(keys(TEST_KEY, [0xa5; 32]))),
        FrameCodec::session(MAX_FRAME_LEN, Some(keys([0xa5; 32], TEST_KEY))),
    )
}

fn credentials() -> Credentials {
    Credentials::with_identity(
        Keyring::new(TEST_KEY_ID, TEST_KEY),
        crate::seal::NodeIdentity::from_private([0x11; 32]),
        None,
    )
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

/// The record at the start of `data`: status and body, if whole.
fn split_record(data: &[u8]) -> Option<(u8, &[u8])> {
    let head: &[u8; RECORD_LEN] = data.get(..RECORD_LEN)?.try_into().ok()?;
    let len = crate::handshake::record_body_len(head).ok()?;
    Some((head[0], data.get(RECORD_LEN..RECORD_LEN + len)?))
}

/// `handshake_offer`: `data` as the first bytes a node receives on an accepted
/// connection (the offer), in plain text and sealed under the test key, as the gate
/// reads them.
///
/// Promises checked: no panic; every refusal names a reason and explains itself; an
/// accepted offer yields an answer that starts with the magic and holds a whole record.
pub fn handshake_offer(data: &[u8]) {
    let Some(head) = data.get(..5) else {
        return;
    };
    if let Err(refusal) = Responder::check_offer_start(head.try_into().expect("5 bytes")) {
        assert!(!refusal.to_string().is_empty());
        return;
    }
    let Some(offer) = data.get(..OFFER_LEN) else {
        return;
    };
    let offer: &[u8; OFFER_LEN] = offer.try_into().expect("8 bytes");
    let Some((status, body)) = split_record(&data[OFFER_LEN..]) else {
        return;
    };
    let local = MemberId::from_bytes([0x42; 16]);
    let c = credentials();
    for creds in [None, Some(&c)] {
        match Responder::on_offer(offer, status, body, creds, local) {
            Ok((_, answer)) => {
                assert_eq!(&answer[..4], b"TRBS");
                assert!(
                    split_record(&answer[ANSWER_LEN..]).is_some(),
                    "an answer without a whole record"
                );
            }
            Err(refusal) => {
                let record = crate::handshake::refusing_answer(&refusal);
                assert!(split_record(&record[ANSWER_LEN..]).is_some());
            }
        }
    }
}

/// `handshake_answer`: `data` as the answer a node receives to its offer, then as
/// the accept record, in plain text and sealed.
///
/// Promises checked: no panic; an answer is accepted only when it opens (plain
/// text: when it decodes); a peer's refusal is read as [`Refusal::ByPeer`].
pub fn handshake_answer(data: &[u8]) {
    let Some(head) = data.get(..ANSWER_LEN) else {
        return;
    };
    let Ok(version) = Initiator::answer_version(head.try_into().expect("5 bytes")) else {
        return;
    };
    let Some((status, body)) = split_record(&data[ANSWER_LEN..]) else {
        return;
    };
    let from = MemberId::from_bytes([0x41; 16]);
    let c = credentials();
    for creds in [None, Some(&c)] {
        let (mut init, _) = Initiator::start(creds, from, None);
        match init.on_answer(version, status, body, creds) {
            Ok(finish) => {
                assert!(split_record(&finish).is_some());
                let rest = &data[ANSWER_LEN + RECORD_LEN + body.len()..];
                if let Some((status, body)) = split_record(rest) {
                    let _ = init.on_accept(status, body);
                }
            }
            Err(Refusal::ByPeer { .. }) => assert_eq!(status, 1),
            Err(_) => {}
        }
    }
}

/// Offers and answers as real nodes write them, plain and sealed, and refusals:
/// seeds for `handshake_offer` and `handshake_answer`.
pub fn seed_handshakes() -> Vec<(String, Vec<u8>)> {
    let c = credentials();
    let a = MemberId::from_bytes([0x41; 16]);
    let b = MemberId::from_bytes([0x42; 16]);
    let mut out = Vec::new();
    for (name, creds) in [("plain", None), ("sealed", Some(&c))] {
        let (_, offer) = Initiator::start(creds, a, Some(b));
        out.push((format!("offer_{name}"), offer.clone()));
        let (_, offer_any) = Initiator::start(creds, a, None);
        out.push((format!("offer_{name}_no_target"), offer_any));
        let head: &[u8; OFFER_LEN] = offer[..OFFER_LEN].try_into().expect("8 bytes");
        let (status, body) = split_record(&offer[OFFER_LEN..]).expect("a record");
        if let Ok((_, mut answer)) = Responder::on_offer(head, status, body, creds, b) {
            answer.extend(crate::handshake::record(0, &[]));
            out.push((format!("answer_{name}"), answer));
        }
    }
    let refusals = [
        Refusal::OtherCluster { key_id: 1 },
        Refusal::UnknownKeyId {
            key_id: 2,
            accepted: vec![1],
        },
        Refusal::VersionMismatch {
            peer_min: 2,
            peer_max: 2,
            min: 3,
            max: 3,
        },
        Refusal::PlainText { peer_plain: true },
    ];
    for (i, r) in refusals.iter().enumerate() {
        out.push((format!("answer_refusal_{i}"), crate::handshake::refusing_answer(r)));
    }
    let mut old = b"TRBS\x02\x04".to_vec();
    old.extend_from_slice(&[0u8; 38]);
    out.push(("old_version_frame".into(), old));
    out.push(("http".into(), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()));
    out
}

/// `membership_decode`: `data` as the MessagePack header of every frame kind, as the
/// receiver, the senders and the TCP probe decode it; then, when it is a member, as a
/// heartbeat sealed and opened, plain and under the test key, as multicast discovery does.
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
        kind: FrameKind::Hello,
        header: Bytes::copy_from_slice(data),
        payload: Bytes::new(),
    };
    if let Ok(MemberHeader { member }) = frame.header::<MemberHeader>() {
        let c = credentials();
        for creds in [None, Some(&c)] {
            let beats = Heartbeats::default();
            let datagram = beats.seal(creds, &member, 1_700_000_000_000, &mut rand::rng());
            let heard = beats
                .open(creds, &datagram, 1_700_000_000_000)
                .expect("a heartbeat opens where it was sealed");
            assert_eq!(heard, member);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// What `cargo xtask fuzz --seeds` checks, run with the unit tests: every seed
    /// passes its target (and the targets compile outside the fuzzer too).
    #[test]
    fn every_seed_passes_its_target() {
        for (name, seed) in seed_frames() {
            eprintln!("frame_decode {name}");
            frame_decode(&seed);
        }
        for (name, seed) in seed_headers() {
            eprintln!("membership_decode {name}");
            membership_decode(&seed);
        }
        for (name, seed) in seed_handshakes() {
            eprintln!("handshake {name}");
            handshake_offer(&seed);
            handshake_answer(&seed);
        }
    }
}
