//! The frame format and its codec.
//!
//! Every frame on a replication connection, once the handshake (see `handshake.rs`)
//! has given the connection its own keys, is:
//!
//! ```text
//! offset size  field
//!  0      4    magic          b"TRBS"
//!  4      1    version        3 (2 had no handshake, 1 no batched frames)
//!  5      1    kind           1 message, 2 ack, 3 fail-ack, 4 hello, 5 ping, 6 pong,
//!                             8 goodbye, 9 batch (7, heartbeat, is a datagram:
//!                             see `heartbeat.rs`)
//!  6      1    flags          bit 0: sealed (ChaCha20-Poly1305 under the connection's key)
//!  7      1    key id         the cluster key the connection's handshake ran under
//!  8     12    nonce          4 zero bytes + the 64-bit count of frames its sender
//!                             sealed on this connection before it (zero when plain)
//! 20     16    tag            Poly1305 authentication tag (zero when plain)
//! 36      4    header length  big-endian u32, at most 64 KiB
//! 40      4    payload length big-endian u32; header + payload at most the frame limit
//! 44      …    header         rmp-serde (MessagePack) of the kind's header struct
//!  …      …    payload        opaque application bytes
//! ```
//!
//! A batch frame (kind 9) has no header; its payload is many messages (and goodbyes)
//! one after the other, sealed once (see `batch.rs` for the entry format). What a
//! sender has queued for a member goes out as one batch in one write.
//!
//! Acks are cumulative: an ack frame names a sequence number of the connection and
//! acknowledges every message up to it; a fail-ack names one message.
//!
//! The decoder checks magic, version, kind and both lengths before it reserves a
//! single byte for the body, so a peer cannot make a node allocate past the limit.
//! A sealed frame has its header and payload encrypted; the tag authenticates them
//! and every prefix byte but the tag itself.
//!
//! Nonces and replay: each direction of each connection has its own key from the
//! handshake, fresh from both sides' randomness, and its frames count from 0, so a
//! nonce never repeats under a key. The receiver expects exactly the next count: a
//! frame dropped, reordered or replayed inside the connection is refused, and a frame
//! from any other connection does not open at all.

use std::io;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tokio_util::codec::{Decoder, Encoder};

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, Tag, UnboundKey};

use crate::member::{Member, MemberId};

/// The fresh keys of one connection: one per direction, from Noise's split.
#[derive(Clone)]
pub(crate) struct SessionKeys {
    /// The cluster key id the handshake ran under (shown in frames and stats).
    pub(crate) key_id: u8,
    pub(crate) send: [u8; 32],
    pub(crate) recv: [u8; 32],
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionKeys").field("key_id", &self.key_id).finish()
    }
}

/// The four bytes every frame starts with.
pub(crate) const MAGIC: [u8; 4] = *b"TRBS";
/// The wire version this build speaks.
pub(crate) const VERSION: u8 = 3;
/// Bytes before the header: magic, version, kind, flags, key id, nonce, tag, lengths.
pub(crate) const PREFIX_LEN: usize = 44;
/// The largest header any kind may have.
pub(crate) const MAX_HEADER_LEN: usize = 64 * 1024;
/// Flag bit: the frame is sealed.
const SEALED: u8 = 1;
/// The default limit of header + payload in one frame (1 MiB).
pub const DEFAULT_MAX_FRAME_LEN: usize = 1024 * 1024;

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum FrameKind {
    /// An application message ([`MessageHeader`] + payload).
    Message = 1,
    /// The receiver has the message (use-ack) or has processed it (sync-ack).
    Ack = 2,
    /// The receiver could not process the message; the header says why.
    FailAck = 3,
    /// First frame on a replication connection: who is sending.
    Hello = 4,
    /// A membership probe over TCP; answered by a pong.
    Ping = 5,
    /// The answer to a ping: the receiver's member description.
    Pong = 6,
    /// A multicast heartbeat (a datagram, never on a connection: see `heartbeat.rs`).
    Heartbeat = 7,
    /// A member leaving cleanly.
    Goodbye = 8,
    /// Many messages (and goodbyes) in one sealed frame; see `batch.rs`.
    Batch = 9,
}

impl FrameKind {
    fn from_u8(kind: u8) -> Option<Self> {
        Some(match kind {
            1 => FrameKind::Message,
            2 => FrameKind::Ack,
            3 => FrameKind::FailAck,
            4 => FrameKind::Hello,
            5 => FrameKind::Ping,
            6 => FrameKind::Pong,
            7 => FrameKind::Heartbeat,
            8 => FrameKind::Goodbye,
            9 => FrameKind::Batch,
            _ => return None,
        })
    }
}

/// One decoded frame: its kind, the sealing fields and the raw header and payload.
#[derive(Clone, Debug)]
pub(crate) struct Frame {
    pub(crate) kind: FrameKind,
    pub(crate) header: Bytes,
    pub(crate) payload: Bytes,
}

impl Frame {
    /// A plain (unsealed) frame with a typed header.
    pub(crate) fn new<H: Serialize>(kind: FrameKind, header: &H, payload: Bytes) -> Self {
        let header = rmp_serde::to_vec(header).expect("frame headers are plain data");
        Frame {
            kind,
            header: Bytes::from(header),
            payload,
        }
    }

    /// The typed header.
    pub(crate) fn header<H: DeserializeOwned>(&self) -> Result<H, WireError> {
        rmp_serde::from_slice(&self.header).map_err(|source| WireError::BadHeader {
            kind: self.kind,
            source,
        })
    }

    /// Bytes this frame takes on the wire.
    pub(crate) fn wire_len(&self) -> usize {
        PREFIX_LEN + self.header.len() + self.payload.len()
    }
}

/// Why bytes from a peer are not a frame. The connection they came on is closed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The first bytes are not `TRBS`.
    #[error(
        "bad magic {found:02x?}: the peer is not a tribes node (check that nothing else sends to the replication port)"
    )]
    BadMagic {
        /// The four bytes found instead.
        found: [u8; 4],
    },
    /// The frame is of a wire version this build does not speak.
    #[error(
        "wire version {found} is not supported (this node speaks {supported}{}): run the same tribes version on every member",
        if *found < *supported { "; the peer runs an older tribes, from before batched frames and cumulative acks" } else { "; the peer runs a newer tribes" }
    )]
    UnsupportedVersion {
        /// The version in the frame.
        found: u8,
        /// The version this build speaks.
        supported: u8,
    },
    /// The kind byte names no frame kind.
    #[error("unknown frame kind {kind}: the peer runs a newer or incompatible tribes")]
    UnknownKind {
        /// The kind byte.
        kind: u8,
    },
    /// Header plus payload exceed the configured frame limit.
    #[error(
        "frame of {len} bytes exceeds the limit of {limit} bytes: raise max_frame_len on the receiver, or keep the fragmentation interceptor on the sender"
    )]
    FrameTooLarge {
        /// Header plus payload length announced by the frame.
        len: u64,
        /// The receiver's limit.
        limit: usize,
    },
    /// The header length exceeds 64 KiB.
    #[error("frame header of {len} bytes exceeds the limit of {limit} bytes")]
    HeaderTooLarge {
        /// Announced header length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The header bytes do not decode as the kind's header.
    #[error("the {kind:?} frame header does not decode: {source}")]
    #[allow(private_interfaces)]
    BadHeader {
        /// The frame kind.
        kind: FrameKind,
        /// The decoder's complaint.
        source: rmp_serde::decode::Error,
    },
    /// A plain-text frame on a sealed connection, or a sealed one on a plain connection.
    #[error(
        "a {} frame on a {} connection: the peer does not follow the handshake it made",
        if *sealed { "sealed" } else { "plain-text" }, if *sealed { "plain-text" } else { "sealed" }
    )]
    SealMismatch {
        /// Whether the frame was sealed.
        sealed: bool,
    },
    /// The authentication tag does not match: forged or corrupted in transit.
    #[error(
        "authentication failed for frame {counter} of the connection: the frame was forged or corrupted in transit"
    )]
    Forged {
        /// The frame's count on its connection.
        counter: u64,
    },
    /// A frame whose count is not the next one of the connection.
    #[error(
        "frame {counter} arrived where frame {expected} of the connection was due: frames were replayed, dropped or reordered in transit"
    )]
    Replayed {
        /// The count in the frame.
        counter: u64,
        /// The count due.
        expected: u64,
    },
    /// A heartbeat on a connection: heartbeats travel as datagrams.
    #[error("a heartbeat frame arrived on a connection: heartbeats travel as datagrams")]
    HeartbeatOnConnection,
    /// A batch frame whose entries do not add up (it opened, so it came from a
    /// holder of the cluster key: a bug or a hostile member). Refused whole.
    #[error("malformed batch frame: {reason}")]
    BadBatch {
        /// What is wrong with the entries.
        reason: &'static str,
    },
    /// Reading or writing the socket failed.
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
}

/// The keys and counts of one sealed connection.
#[derive(Clone)]
struct Sealing {
    key_id: u8,
    send: LessSafeKey,
    sent: u64,
    recv: LessSafeKey,
    received: u64,
}

/// The frame codec of one connection (clone it for its read and write halves: each
/// half counts its own direction).
#[derive(Clone)]
pub(crate) struct FrameCodec {
    max_frame_len: usize,
    sealing: Option<Sealing>,
}

impl std::fmt::Debug for FrameCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameCodec")
            .field("max_frame_len", &self.max_frame_len)
            .field("key_id", &self.sealing.as_ref().map(|s| s.key_id))
            .finish()
    }
}

impl FrameCodec {
    /// A codec for plain-text frames (connections get theirs from [`FrameCodec::session`]).
    #[cfg(any(test, fuzzing))]
    pub(crate) fn new(max_frame_len: usize) -> Self {
        FrameCodec {
            max_frame_len,
            sealing: None,
        }
    }

    /// The codec of a connection whose handshake gave these keys (plain without).
    pub(crate) fn session(max_frame_len: usize, keys: Option<SessionKeys>) -> Self {
        FrameCodec {
            max_frame_len,
            sealing: keys.map(|k| Sealing {
                key_id: k.key_id,
                send: frame_key(&k.send),
                sent: 0,
                recv: frame_key(&k.recv),
                received: 0,
            }),
        }
    }

    /// The largest header plus payload this codec writes or accepts.
    pub(crate) fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }

    /// Finish a frame written in place: `frame` is the 44-byte prefix (magic,
    /// version, kind and both lengths filled in, the rest zero) and the body. On a
    /// sealed connection, encrypts the body and fills in flags, key id, nonce and
    /// tag: one AEAD over the whole body, however many messages it holds.
    pub(crate) fn seal_in_place(&mut self, frame: &mut [u8]) {
        let Some(s) = &mut self.sealing else {
            return;
        };
        let (head, body) = frame.split_at_mut(PREFIX_LEN);
        head[6] = SEALED;
        head[7] = s.key_id;
        head[8..12].fill(0);
        head[12..20].copy_from_slice(&s.sent.to_be_bytes());
        s.sent += 1;
        let tag = s
            .send
            .seal_in_place_separate_tag(nonce(head), Aad::from(aad(head)), body)
            .expect("frames are far below the ChaCha20-Poly1305 length limit");
        head[20..36].copy_from_slice(tag.as_ref());
    }
}

/// A direction's ChaCha20-Poly1305 key (ring's implementation: its fixed cost per frame is
/// a fraction of the pure-Rust crate's, which matters for frames of a few hundred bytes).
fn frame_key(key: &[u8; 32]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, key).expect("a 32-byte key"))
}

/// The frame's nonce: the 12 bytes after the key id (zero, then the frame counter).
fn nonce(head: &[u8]) -> Nonce {
    Nonce::assume_unique_for_key(head[8..20].try_into().expect("12 bytes"))
}

/// Every prefix byte but the tag.
fn aad(head: &[u8]) -> [u8; 28] {
    let mut aad = [0u8; 28];
    aad[..20].copy_from_slice(&head[..20]);
    aad[20..].copy_from_slice(&head[36..44]);
    aad
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = WireError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, WireError> {
        // Reject garbage as soon as the bytes present disagree with the magic.
        let have = src.len().min(4);
        if src[..have] != MAGIC[..have] {
            let mut found = [0u8; 4];
            found[..have].copy_from_slice(&src[..have]);
            return Err(WireError::BadMagic { found });
        }
        if src.len() < PREFIX_LEN {
            return Ok(None);
        }
        if src[4] != VERSION {
            return Err(WireError::UnsupportedVersion {
                found: src[4],
                supported: VERSION,
            });
        }
        let kind = FrameKind::from_u8(src[5]).ok_or(WireError::UnknownKind { kind: src[5] })?;
        let header_len = u32::from_be_bytes(src[36..40].try_into().expect("4 bytes")) as usize;
        let payload_len = u32::from_be_bytes(src[40..44].try_into().expect("4 bytes")) as usize;
        if header_len > MAX_HEADER_LEN {
            return Err(WireError::HeaderTooLarge {
                len: header_len,
                limit: MAX_HEADER_LEN,
            });
        }
        let body = header_len as u64 + payload_len as u64;
        if body > self.max_frame_len as u64 {
            return Err(WireError::FrameTooLarge {
                len: body,
                limit: self.max_frame_len,
            });
        }
        let total = PREFIX_LEN + header_len + payload_len;
        if src.len() < total {
            // Only now, with every length checked, make room for the body.
            src.reserve(total - src.len());
            return Ok(None);
        }
        if kind == FrameKind::Heartbeat {
            return Err(WireError::HeartbeatOnConnection);
        }
        let mut frame = src.split_to(total);
        let sealed = frame[6] & SEALED != 0;
        match (sealed, &mut self.sealing) {
            (true, Some(s)) => {
                let counter = u64::from_be_bytes(frame[12..20].try_into().expect("8 bytes"));
                if frame[8..12] != [0; 4] || counter != s.received {
                    return Err(WireError::Replayed {
                        counter,
                        expected: s.received,
                    });
                }
                let (head, body) = frame.split_at_mut(PREFIX_LEN);
                let tag = Tag::try_from(&head[20..36]).expect("16 bytes");
                s.recv
                    .open_in_place_separate_tag(nonce(head), Aad::from(aad(head)), tag, body, 0..)
                    .map_err(|_| WireError::Forged { counter })?;
                s.received += 1;
            }
            (false, None) => {}
            (sealed, _) => return Err(WireError::SealMismatch { sealed }),
        }
        frame.advance(PREFIX_LEN);
        let header = frame.split_to(header_len).freeze();
        let payload = frame.freeze();
        Ok(Some(Frame { kind, header, payload }))
    }
}

/// The 44-byte prefix of a frame with flags, key id, nonce and tag still zero
/// (filled in by [`FrameCodec::seal_in_place`]).
pub(crate) fn put_prefix(kind: FrameKind, header_len: usize, payload_len: usize, dst: &mut BytesMut) {
    dst.put_slice(&MAGIC);
    dst.put_u8(VERSION);
    dst.put_u8(kind as u8);
    dst.put_bytes(0, 2 + 12 + 16);
    dst.put_u32(header_len as u32);
    dst.put_u32(payload_len as u32);
}

fn write_frame(frame: &Frame, dst: &mut BytesMut) {
    dst.reserve(frame.wire_len());
    put_prefix(frame.kind, frame.header.len(), frame.payload.len(), dst);
    dst.put_slice(&frame.header);
    dst.put_slice(&frame.payload);
}

impl Encoder<Frame> for FrameCodec {
    type Error = WireError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), WireError> {
        let body = frame.header.len() + frame.payload.len();
        if body > self.max_frame_len {
            return Err(WireError::FrameTooLarge {
                len: body as u64,
                limit: self.max_frame_len,
            });
        }
        let start = dst.len();
        write_frame(&frame, dst);
        self.seal_in_place(&mut dst[start..]);
        Ok(())
    }
}

/// Header of a [`FrameKind::Message`] frame.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct MessageHeader {
    /// Unique per sender; acks name it.
    pub(crate) id: u64,
    /// What the receiver must do before acking: 0 none, 1 on receipt, 2 after processing.
    pub(crate) ack: u8,
    /// The listener topic.
    pub(crate) topic: String,
    /// Interceptor headers (fragment, sequence, compression, user ones).
    pub(crate) headers: Vec<(String, Bytes)>,
}

/// Header of an ack or fail-ack.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct AckHeader {
    pub(crate) id: u64,
    /// Why processing failed (fail-ack only).
    pub(crate) reason: Option<String>,
}

/// Header of hello, ping, pong and heartbeat frames: the sender's description.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct MemberHeader {
    pub(crate) member: Member,
}

/// Header of a goodbye frame.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct GoodbyeHeader {
    pub(crate) id: MemberId,
}

#[cfg(test)]
mod tests;
