//! The frame format and its codec.
//!
//! Every frame, on TCP and on multicast UDP alike, is:
//!
//! ```text
//! offset size  field
//!  0      4    magic          b"TRBS"
//!  4      1    version        2 (1 was tribes before batched frames)
//!  5      1    kind           1 message, 2 ack, 3 fail-ack, 4 hello, 5 ping, 6 pong,
//!                             7 heartbeat, 8 goodbye, 9 batch
//!  6      1    flags          bit 0: sealed (ChaCha20-Poly1305 under the cluster key);
//!                             bit 1: the first frame its sender wrote on the connection
//!  7      1    key id         which cluster key sealed the frame (0 when plain)
//!  8     12    nonce          4-byte sender prefix + 64-bit counter (zero when plain)
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
//! and every prefix byte but the tag itself (see [`crate::Keyring`]).
//!
//! Sealed frames travel in two places, each with its own replay check: on a
//! connection (the first frame, which carries flag bit 1, must never have opened one
//! before; every later frame, without it, must count higher than the one before) and
//! alone in a multicast datagram (heartbeats only; each counter once per sender). A
//! frame is refused anywhere else, so a frame captured in one place cannot be replayed
//! in another: a later frame of a connection cannot open one, a heartbeat cannot open
//! one, and a connection's frames are not heartbeats.

use std::io;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tokio_util::codec::{Decoder, Encoder};

use crate::member::{Member, MemberId};
use crate::seal::{OpenError, Sealer};

/// The four bytes every frame starts with.
pub(crate) const MAGIC: [u8; 4] = *b"TRBS";
/// The wire version this build speaks.
pub(crate) const VERSION: u8 = 2;
/// Bytes before the header: magic, version, kind, flags, key id, nonce, tag, lengths.
pub(crate) const PREFIX_LEN: usize = 44;
/// The largest header any kind may have.
pub(crate) const MAX_HEADER_LEN: usize = 64 * 1024;
/// Flag bit: the frame is sealed.
const SEALED: u8 = 1;
/// Flag bit: the first frame its sender wrote on the connection (authenticated when
/// sealed, so a frame from the middle of a connection cannot open another).
const OPENS: u8 = 2;
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
    /// A multicast heartbeat.
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
    /// A plain-text frame reached a node that requires sealed frames.
    #[error(
        "plain-text frame from a node without the cluster key: give every member the same cluster key file (or run every member with insecure plain text)"
    )]
    Unsealed,
    /// A sealed frame reached a node that runs without a cluster key.
    #[error("sealed frame (key id {key_id}), but this node runs in plain text: start it with the cluster's key file")]
    NoKey {
        /// The key id in the frame.
        key_id: u8,
    },
    /// Sealed with a key id this node does not accept.
    #[error(
        "sealed with key id {key_id}, which this node does not accept: the peer belongs to another cluster, or a rotation has not reached this node (add the key to its keyring)"
    )]
    UnknownKey {
        /// The key id in the frame.
        key_id: u8,
    },
    /// The authentication tag does not match: wrong key, forged or corrupted.
    #[error(
        "authentication failed under key id {key_id}: the peer has another key with that id, or the frame was forged or corrupted"
    )]
    Forged {
        /// The key id in the frame.
        key_id: u8,
    },
    /// A frame whose nonce was seen before.
    #[error("replayed frame (counter {counter} seen before): someone is replaying captured traffic")]
    Replayed {
        /// The frame counter.
        counter: u64,
    },
    /// A sealed frame where its sender never puts one: a later frame of a connection
    /// opening another, a heartbeat on a connection, or another frame as a datagram.
    #[error("replayed frame (counter {counter}): {reason}; someone is replaying captured traffic")]
    OutOfPlace {
        /// The frame counter.
        counter: u64,
        /// Where the frame was found and why it cannot be there.
        reason: &'static str,
    },
    /// The frame was cut off (a datagram shorter than its lengths say).
    #[error("truncated frame: {len} bytes where {needed} were announced")]
    Truncated {
        /// Bytes present.
        len: usize,
        /// Bytes the prefix announced.
        needed: usize,
    },
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

impl From<OpenError> for WireError {
    fn from(e: OpenError) -> Self {
        match e {
            OpenError::UnknownKey { key_id } => WireError::UnknownKey { key_id },
            OpenError::Forged { key_id } => WireError::Forged { key_id },
            OpenError::Replayed { counter } => WireError::Replayed { counter },
        }
    }
}

/// The frame codec shared by the TCP receiver, the senders, multicast and tests.
#[derive(Clone, Debug)]
pub(crate) struct FrameCodec {
    max_frame_len: usize,
    sealer: Option<Arc<Sealer>>,
    /// On a stream: the sender prefix and counter of the last sealed frame.
    last: Option<([u8; 4], u64)>,
    /// Whether this codec decodes lone datagrams rather than a stream.
    datagram: bool,
    /// Whether this codec has written a frame (only the first one opens the connection).
    wrote: bool,
}

impl FrameCodec {
    /// A codec for plain-text frames.
    pub(crate) fn new(max_frame_len: usize) -> Self {
        FrameCodec {
            max_frame_len,
            sealer: None,
            last: None,
            datagram: false,
            wrote: false,
        }
    }

    /// A codec that seals every frame it writes and accepts only sealed frames.
    pub(crate) fn sealed(max_frame_len: usize, sealer: Arc<Sealer>) -> Self {
        FrameCodec {
            max_frame_len,
            sealer: Some(sealer),
            last: None,
            datagram: false,
            wrote: false,
        }
    }

    /// The largest header plus payload this codec writes or accepts.
    pub(crate) fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }

    /// Finish a frame written in place: `frame` is the 44-byte prefix (magic,
    /// version, kind and both lengths filled in, the rest zero) and the body. Sets
    /// the flags and, on a sealed codec, encrypts the body and fills in key id,
    /// nonce and tag: one AEAD over the whole body, however many messages it holds.
    pub(crate) fn seal_in_place(&mut self, frame: &mut [u8]) {
        let opens = if self.wrote { 0 } else { OPENS };
        self.wrote = true;
        let (head, body) = frame.split_at_mut(PREFIX_LEN);
        match &self.sealer {
            None => head[6] = opens,
            Some(sealer) => {
                head[6] = SEALED | opens;
                let (key_id, nonce, tag) = sealer.seal(body, |key_id, nonce| {
                    let mut aad = [0u8; 28];
                    aad[..7].copy_from_slice(&head[..7]);
                    aad[7] = key_id;
                    aad[8..20].copy_from_slice(nonce);
                    aad[20..].copy_from_slice(&head[36..44]);
                    aad
                });
                head[7] = key_id;
                head[8..20].copy_from_slice(&nonce);
                head[20..36].copy_from_slice(&tag);
            }
        }
    }

    /// The frame as one contiguous buffer (for UDP datagrams: only heartbeats open sealed).
    pub(crate) fn to_bytes(&self, frame: Frame) -> Result<Bytes, WireError> {
        let mut buf = BytesMut::with_capacity(frame.wire_len());
        self.clone().encode(frame, &mut buf)?;
        Ok(buf.freeze())
    }

    /// Decode one whole frame from a datagram (each one checked for replay on its own).
    pub(crate) fn decode_datagram(&self, datagram: &[u8]) -> Result<Frame, WireError> {
        let mut buf = BytesMut::from(datagram);
        let mut codec = self.clone();
        codec.last = None;
        codec.datagram = true;
        match codec.decode(&mut buf)? {
            Some(frame) => Ok(frame),
            None => Err(WireError::Truncated {
                len: datagram.len(),
                needed: announced_len(datagram).unwrap_or(PREFIX_LEN),
            }),
        }
    }
}

fn announced_len(src: &[u8]) -> Option<usize> {
    if src.len() < PREFIX_LEN {
        return None;
    }
    let h = u32::from_be_bytes(src[36..40].try_into().ok()?) as usize;
    let p = u32::from_be_bytes(src[40..44].try_into().ok()?) as usize;
    Some(PREFIX_LEN + h + p)
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
        let mut frame = src.split_to(total);
        let key_id = frame[7];
        match (frame[6] & SEALED != 0, &self.sealer) {
            (true, Some(sealer)) => {
                let nonce: [u8; 12] = frame[8..20].try_into().expect("12 bytes");
                let tag: [u8; 16] = frame[20..36].try_into().expect("16 bytes");
                let mut aad = [0u8; 28];
                aad[..20].copy_from_slice(&frame[..20]);
                aad[20..].copy_from_slice(&frame[36..44]);
                let (sender, counter) = sealer.open(key_id, &nonce, &tag, &aad, &mut frame[PREFIX_LEN..])?;
                // Each place a sealed frame travels has its own replay check; a frame
                // is only accepted in the place its sender put it (see the module docs).
                let opens = frame[6] & OPENS != 0;
                let heartbeat = kind == FrameKind::Heartbeat;
                let out_of_place = |reason| WireError::OutOfPlace { counter, reason };
                match self.last {
                    None if self.datagram => {
                        if !heartbeat {
                            return Err(out_of_place("only heartbeats travel alone in a datagram"));
                        }
                        sealer.check_fresh(sender, counter)?;
                    }
                    _ if heartbeat => {
                        return Err(out_of_place(
                            "a heartbeat arrived on a connection, heartbeats travel as datagrams",
                        ));
                    }
                    None if !opens => {
                        return Err(out_of_place(
                            "a later frame of a connection arrived first on another connection",
                        ));
                    }
                    None => sealer.check_opener(sender, counter)?,
                    Some((s, c)) if s == sender && counter > c && !opens => {}
                    Some(_) => return Err(WireError::Replayed { counter }),
                }
                self.last = Some((sender, counter));
            }
            (true, None) => return Err(WireError::NoKey { key_id }),
            (false, Some(_)) => return Err(WireError::Unsealed),
            (false, None) => {}
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
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Frame {
        Frame::new(
            FrameKind::Message,
            &MessageHeader {
                id: 7,
                ack: 2,
                topic: "t".into(),
                headers: vec![],
            },
            Bytes::from_static(b"hello"),
        )
    }

    #[test]
    fn round_trip_in_pieces() {
        let mut codec = FrameCodec::new(DEFAULT_MAX_FRAME_LEN);
        let mut wire = BytesMut::new();
        codec.encode(sample(), &mut wire).unwrap();
        codec.encode(sample(), &mut wire).unwrap();
        let all = wire.freeze();
        // Feed byte by byte: never an error, exactly two frames.
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        for b in all.iter() {
            buf.put_u8(*b);
            while let Some(f) = codec.decode(&mut buf).unwrap() {
                frames.push(f);
            }
        }
        assert_eq!(frames.len(), 2);
        let h: MessageHeader = frames[1].header().unwrap();
        assert_eq!(h.id, 7);
        assert_eq!(&frames[1].payload[..], b"hello");
    }

    #[test]
    fn oversized_frame_is_refused_before_allocation() {
        let mut codec = FrameCodec::new(1024);
        let mut buf = BytesMut::new();
        buf.put_slice(&MAGIC);
        buf.put_u8(VERSION);
        buf.put_u8(1);
        buf.put_bytes(0, 30);
        buf.put_u32(10);
        buf.put_u32(u32::MAX);
        let cap = buf.capacity();
        let err = codec.decode(&mut buf).unwrap_err();
        assert!(matches!(err, WireError::FrameTooLarge { limit: 1024, .. }), "{err}");
        assert_eq!(buf.capacity(), cap, "nothing reserved for a refused frame");
    }

    #[test]
    fn garbage_unknown_kind_and_version_are_errors() {
        let mut codec = FrameCodec::new(1024);
        let err = codec
            .decode(&mut BytesMut::from(&b"GET / HTTP/1.1\r\n"[..]))
            .unwrap_err();
        assert!(err.to_string().contains("not a tribes node"), "{err}");
        let mut wire = BytesMut::new();
        codec.encode(sample(), &mut wire).unwrap();
        let mut v = wire.clone();
        v[4] = 9;
        assert!(matches!(
            codec.decode(&mut v),
            Err(WireError::UnsupportedVersion { found: 9, .. })
        ));
        let mut k = wire.clone();
        k[5] = 200;
        assert!(matches!(
            codec.decode(&mut k),
            Err(WireError::UnknownKind { kind: 200 })
        ));
    }

    /// Found by the `frame_decode` fuzz target: the second frame of a sealed connection,
    /// sent first on a new connection, opened it (only openers were remembered), so a
    /// captured ping or a heartbeat followed by captured messages could be replayed.
    #[test]
    fn a_sealed_frame_opens_only_where_its_sender_put_it() {
        let key = crate::seal::Keyring::new(1, [9; 32]);
        let mut sender = FrameCodec::sealed(DEFAULT_MAX_FRAME_LEN, Arc::new(Sealer::new(key.clone())));
        let receiver = FrameCodec::sealed(DEFAULT_MAX_FRAME_LEN, Arc::new(Sealer::new(key)));
        let mut wire = BytesMut::new();
        sender.encode(sample(), &mut wire).unwrap();
        let first = wire.len();
        sender.encode(sample(), &mut wire).unwrap();
        // The connection opens, frame by frame.
        let mut connection = receiver.clone();
        let mut buf = wire.clone();
        assert!(connection.decode(&mut buf).unwrap().is_some());
        assert!(connection.decode(&mut buf).unwrap().is_some());
        // Replayed whole, or from its second frame: refused.
        let err = receiver.clone().decode(&mut wire.clone()).unwrap_err();
        assert!(matches!(err, WireError::Replayed { .. }), "{err}");
        let err = receiver
            .clone()
            .decode(&mut BytesMut::from(&wire[first..]))
            .unwrap_err();
        assert!(matches!(err, WireError::OutOfPlace { .. }), "{err}");
        assert!(err.to_string().contains("later frame of a connection"), "{err}");
        // A heartbeat opens as a datagram, once, and never on a connection; a
        // connection's frame never opens as a datagram.
        let member = Member::new(MemberId::from_bytes([1; 16]), "a", "d", ([127, 0, 0, 1], 1).into(), 0);
        let beat = Frame::new(FrameKind::Heartbeat, &MemberHeader { member }, Bytes::new());
        let beat = sender.to_bytes(beat).unwrap();
        let err = receiver.clone().decode(&mut BytesMut::from(&beat[..])).unwrap_err();
        assert!(matches!(err, WireError::OutOfPlace { .. }), "{err}");
        receiver.decode_datagram(&beat).unwrap();
        let err = receiver.decode_datagram(&beat).unwrap_err();
        assert!(matches!(err, WireError::Replayed { .. }), "{err}");
        let err = receiver.decode_datagram(&wire[..first]).unwrap_err();
        assert!(matches!(err, WireError::OutOfPlace { .. }), "{err}");
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic_nor_over_allocate(data in proptest::collection::vec(any::<u8>(), 0..4096), prefix in any::<bool>()) {
            let mut codec = FrameCodec::new(4096);
            let mut buf = BytesMut::new();
            if prefix {
                buf.put_slice(&MAGIC);
                buf.put_u8(VERSION);
            }
            buf.put_slice(&data);
            while let Ok(Some(f)) = codec.decode(&mut buf) {
                let _ = f.header::<MessageHeader>();
                let _ = f.header::<MemberHeader>();
            }
            prop_assert!(buf.capacity() <= PREFIX_LEN + 4096 + data.len() + 64);
        }

        #[test]
        fn truncated_frames_need_more_or_fail(cut in 0usize..60) {
            let mut codec = FrameCodec::new(DEFAULT_MAX_FRAME_LEN);
            let mut wire = BytesMut::new();
            codec.encode(sample(), &mut wire).unwrap();
            let cut = cut.min(wire.len() - 1);
            let mut part = BytesMut::from(&wire[..cut]);
            prop_assert!(codec.decode(&mut part).unwrap().is_none());
            prop_assert!(codec.decode_datagram(&wire[..cut]).is_err());
        }
    }
}
