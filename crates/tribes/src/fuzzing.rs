//! Entry points for the `cargo fuzz` targets in `fuzz/` (built only with `--cfg fuzzing`,
//! which cargo-fuzz sets). Each function feeds bytes from the fuzzer to the real decoders,
//! as the receiver and multicast discovery do, and panics when a decoder breaks one of its
//! promises (the fuzzer reports a panic as a crash).
//!
//! This file is the harness the targets share (the fixed keys, a stream read in pieces,
//! the header decoding of each kind, the seeds' members and headers); each target and its
//! seeds live in their own file: `frames.rs` (`frame_decode`), `handshakes.rs`
//! (`handshake_offer`, `handshake_answer`), `membership.rs` (`membership_decode`).

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::codec::Decoder;

use crate::member::{Member, MemberId};
use crate::seal::{Credentials, Keyring};
use crate::wire::SessionKeys;
use crate::wire::{AckHeader, Frame, FrameCodec, FrameKind, GoodbyeHeader, MemberHeader, MessageHeader, WireError};

mod frames;
mod handshakes;
mod membership;

pub use frames::{frame_decode, seed_frames};
pub use handshakes::{handshake_answer, handshake_offer, seed_handshakes};
pub use membership::{membership_decode, seed_headers};

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

#[cfg(test)]
mod tests;
