//! The body of a batch frame: many messages sealed once.
//!
//! A sender writes what is queued for a member as one [`FrameKind::Batch`] frame
//! (more than one only when the queue holds more than `max_frame_len`), encoding
//! each message in place into one reused buffer and sealing the frame once. Its
//! payload is a run of entries:
//!
//! ```text
//! offset size  field
//!  0      1    kind           1 message or 8 goodbye (nothing else travels in a batch)
//!  1      4    header length  big-endian u32, at most 64 KiB
//!  5      4    payload length big-endian u32
//!  9      …    header         rmp-serde (MessagePack) of the kind's header struct
//!  …      …    payload        opaque application bytes
//! ```
//!
//! The frame's own lengths were checked against `max_frame_len` before the body was
//! read, so entries are slices of the one opened buffer: no allocation per entry. An
//! entry whose lengths overrun the body, or of another kind, refuses the whole batch.

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;

use crate::wire::{Frame, FrameCodec, FrameKind, MAX_HEADER_LEN, PREFIX_LEN, WireError, put_prefix};

/// Bytes before an entry's header: kind and both lengths.
pub(crate) const ENTRY_PREFIX: usize = 9;

/// Encodes entries into batch frames, in place, in one buffer reused from write to write.
#[derive(Debug)]
pub(crate) struct BatchWriter {
    buf: BytesMut,
    /// Scratch space for one entry's header (reused).
    header: Vec<u8>,
    /// Where the open frame starts in `buf`, if one is open.
    open: Option<usize>,
    max_frame_len: usize,
    frames: usize,
    entries: usize,
}

impl BatchWriter {
    pub(crate) fn new(max_frame_len: usize) -> Self {
        BatchWriter {
            buf: BytesMut::with_capacity(64 * 1024),
            header: Vec::with_capacity(256),
            open: None,
            max_frame_len,
            frames: 0,
            entries: 0,
        }
    }

    /// Append one entry to the open batch frame, closing it first (sealed) and
    /// opening another when the entry would take it past `max_frame_len`.
    ///
    /// # Errors
    /// [`WireError::FrameTooLarge`] when the entry alone exceeds the limit (nothing is written).
    pub(crate) fn push<H: Serialize>(
        &mut self,
        codec: &mut FrameCodec,
        kind: FrameKind,
        header: &H,
        payload: &[u8],
    ) -> Result<(), WireError> {
        self.header.clear();
        rmp_serde::encode::write(&mut self.header, header).expect("entry headers are plain data");
        let len = ENTRY_PREFIX + self.header.len() + payload.len();
        if len > self.max_frame_len || self.header.len() > MAX_HEADER_LEN {
            return Err(WireError::FrameTooLarge {
                len: len as u64,
                limit: self.max_frame_len,
            });
        }
        if let Some(start) = self.open
            && self.buf.len() - start - PREFIX_LEN + len > self.max_frame_len
        {
            self.finish(codec);
        }
        if self.open.is_none() {
            self.open = Some(self.buf.len());
            put_prefix(FrameKind::Batch, 0, 0, &mut self.buf);
        }
        self.buf.reserve(len);
        self.buf.put_u8(kind as u8);
        self.buf.put_u32(self.header.len() as u32);
        self.buf.put_u32(payload.len() as u32);
        self.buf.put_slice(&self.header);
        self.buf.put_slice(payload);
        self.entries += 1;
        Ok(())
    }

    /// Write a whole frame of another kind (the hello) after what is written so far.
    pub(crate) fn push_frame(&mut self, codec: &mut FrameCodec, frame: Frame) -> Result<(), WireError> {
        self.finish(codec);
        tokio_util::codec::Encoder::encode(codec, frame, &mut self.buf)
    }

    /// Seal the open batch frame, if any.
    pub(crate) fn finish(&mut self, codec: &mut FrameCodec) {
        if let Some(start) = self.open.take() {
            let body = self.buf.len() - start - PREFIX_LEN;
            self.buf[start + 40..start + 44].copy_from_slice(&(body as u32).to_be_bytes());
            codec.seal_in_place(&mut self.buf[start..]);
            self.frames += 1;
        }
    }

    /// The bytes to write: every frame finished so far.
    pub(crate) fn bytes(&self) -> &[u8] {
        debug_assert!(self.open.is_none(), "finish() before writing");
        &self.buf
    }

    /// Bytes written so far, the open frame included.
    pub(crate) fn len(&self) -> usize {
        self.buf.len()
    }

    /// Forget what was written (keeping the buffer); returns (frames, entries) written.
    pub(crate) fn clear(&mut self) -> (usize, usize) {
        debug_assert!(self.open.is_none(), "finish() before clearing");
        self.buf.clear();
        // A burst of large messages may have grown the buffer: give it back.
        if self.buf.capacity() > 4 * 1024 * 1024 {
            self.buf = BytesMut::with_capacity(64 * 1024);
        }
        (std::mem::take(&mut self.frames), std::mem::take(&mut self.entries))
    }
}

/// The entries of an opened batch frame, in order, as frames of their own kind
/// (slices of the batch's payload).
pub(crate) fn entries(batch: &Frame) -> Entries {
    Entries {
        body: batch.payload.clone(),
        at: 0,
    }
}

/// Iterator over the entries of a batch; see [`entries`].
#[derive(Debug)]
pub(crate) struct Entries {
    body: Bytes,
    at: usize,
}

impl Iterator for Entries {
    type Item = Result<Frame, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.at == self.body.len() {
            return None;
        }
        let entry = self.entry();
        if entry.is_err() {
            // Refused whole: nothing after a bad entry is read.
            self.at = self.body.len();
        }
        Some(entry)
    }
}

impl Entries {
    fn entry(&mut self) -> Result<Frame, WireError> {
        let rest = &self.body[self.at..];
        if rest.len() < ENTRY_PREFIX {
            return Err(WireError::BadBatch {
                reason: "an entry is cut short",
            });
        }
        let kind = match rest[0] {
            1 => FrameKind::Message,
            8 => FrameKind::Goodbye,
            _ => {
                return Err(WireError::BadBatch {
                    reason: "an entry is neither a message nor a goodbye",
                });
            }
        };
        let header_len = u32::from_be_bytes(rest[1..5].try_into().expect("4 bytes")) as usize;
        let payload_len = u32::from_be_bytes(rest[5..9].try_into().expect("4 bytes")) as usize;
        if header_len > MAX_HEADER_LEN {
            return Err(WireError::HeaderTooLarge {
                len: header_len,
                limit: MAX_HEADER_LEN,
            });
        }
        let len = ENTRY_PREFIX as u64 + header_len as u64 + payload_len as u64;
        if len > rest.len() as u64 {
            return Err(WireError::BadBatch {
                reason: "an entry's lengths overrun the batch",
            });
        }
        let start = self.at + ENTRY_PREFIX;
        self.at += len as usize;
        Ok(Frame {
            kind,
            header: self.body.slice(start..start + header_len),
            payload: self.body.slice(start + header_len..self.at),
        })
    }
}

#[cfg(test)]
mod tests {
    use tokio_util::codec::Decoder;

    use super::*;
    use crate::wire::SessionKeys;
    use crate::wire::{GoodbyeHeader, MessageHeader};

    fn header(id: u64) -> MessageHeader {
        MessageHeader {
            id,
            ack: 2,
            topic: "t".into(),
            headers: vec![("tribes.order".into(), Bytes::from_static(b"12345678"))],
        }
    }

    /// Both ends of a sealed connection.
    fn sealed(max: usize) -> (FrameCodec, FrameCodec) {
        let keys = |send, recv| SessionKeys {
            key_id: 1,
            send: [send; 32],
            recv: [recv; 32],
        };
        (
            FrameCodec::session(max, Some(keys(5, 6))),
            FrameCodec::session(max, Some(keys(6, 5))),
        )
    }

    fn decode_all(codec: &mut FrameCodec, wire: &[u8]) -> Result<Vec<Frame>, WireError> {
        let mut buf = BytesMut::from(wire);
        let mut out = Vec::new();
        while let Some(frame) = codec.decode(&mut buf)? {
            assert_eq!(frame.kind, FrameKind::Batch);
            for entry in entries(&frame) {
                out.push(entry?);
            }
        }
        assert!(buf.is_empty(), "trailing bytes");
        Ok(out)
    }

    /// Many messages go out as one frame with one seal, and come back in order.
    #[test]
    fn a_batch_is_one_sealed_frame_and_its_entries_come_back_in_order() {
        let (mut tx, mut rx) = sealed(1024 * 1024);
        let mut w = BatchWriter::new(1024 * 1024);
        for id in 1..=50u64 {
            w.push(&mut tx, FrameKind::Message, &header(id), &id.to_be_bytes())
                .unwrap();
        }
        w.push(
            &mut tx,
            FrameKind::Goodbye,
            &GoodbyeHeader {
                id: crate::MemberId::from_bytes([4; 16]),
            },
            &[],
        )
        .unwrap();
        w.finish(&mut tx);
        let wire = w.bytes().to_vec();
        assert_eq!(w.clear(), (1, 51), "one frame, 51 entries");
        let got = decode_all(&mut rx, &wire).unwrap();
        assert_eq!(got.len(), 51);
        for (i, entry) in got[..50].iter().enumerate() {
            let h: MessageHeader = entry.header().unwrap();
            assert_eq!(h.id, i as u64 + 1);
            assert_eq!(&entry.payload[..], &(i as u64 + 1).to_be_bytes());
            assert_eq!(h.topic, "t");
        }
        assert_eq!(got[50].kind, FrameKind::Goodbye);
    }

    /// A batch that would exceed `max_frame_len` is split into frames that each
    /// respect it, and a receiver with that limit reads every entry, in order.
    #[test]
    fn an_oversized_batch_is_split_to_respect_max_frame_len() {
        let max = 4096;
        let (mut tx, mut rx) = sealed(max);
        let mut w = BatchWriter::new(max);
        let payload = vec![9u8; 1000];
        for id in 1..=20u64 {
            w.push(&mut tx, FrameKind::Message, &header(id), &payload).unwrap();
        }
        w.finish(&mut tx);
        let wire = w.bytes().to_vec();
        let (frames, entries) = w.clear();
        assert_eq!(entries, 20);
        assert!(frames >= 5, "20 x 1 KiB needs at least 5 frames of 4 KiB, got {frames}");
        // Every frame within the limit: the receiver's decoder enforces it.
        let got = decode_all(&mut rx, &wire).unwrap();
        let ids: Vec<u64> = got.iter().map(|f| f.header::<MessageHeader>().unwrap().id).collect();
        assert_eq!(ids, (1..=20).collect::<Vec<_>>());
        // An entry larger than a frame is refused and writes nothing.
        let err = w
            .push(&mut tx, FrameKind::Message, &header(21), &vec![0u8; max])
            .unwrap_err();
        assert!(matches!(err, WireError::FrameTooLarge { .. }), "{err}");
        assert_eq!(w.len(), 0);
    }

    /// One flipped bit anywhere in a sealed batch refuses all of it: no entry is
    /// handed on.
    #[test]
    fn a_tampered_batch_is_refused_whole() {
        let (mut tx, rx) = sealed(1024 * 1024);
        let mut w = BatchWriter::new(1024 * 1024);
        for id in 1..=10u64 {
            w.push(&mut tx, FrameKind::Message, &header(id), b"payload").unwrap();
        }
        w.finish(&mut tx);
        let wire = w.bytes().to_vec();
        for at in [PREFIX_LEN, PREFIX_LEN + 200, wire.len() - 1, 40] {
            let mut bad = wire.clone();
            bad[at] ^= 1;
            let err = decode_all(&mut rx.clone(), &bad);
            assert!(err.is_err(), "a batch tampered at byte {at} was accepted");
        }
        assert_eq!(decode_all(&mut rx.clone(), &wire).unwrap().len(), 10);
    }

    /// Entries that lie about their lengths or kind refuse the batch, and nothing
    /// after the bad entry is read.
    #[test]
    fn malformed_entries_refuse_the_rest() {
        let mut body = BytesMut::new();
        body.put_u8(1);
        body.put_u32(0);
        body.put_u32(2);
        body.put_slice(b"ok");
        body.put_u8(4); // a hello inside a batch
        body.put_u32(0);
        body.put_u32(0);
        body.put_u8(1);
        body.put_u32(0);
        body.put_u32(0);
        let frame = Frame {
            kind: FrameKind::Batch,
            header: Bytes::new(),
            payload: body.freeze(),
        };
        let got: Vec<_> = entries(&frame).collect();
        assert_eq!(got.len(), 2, "the bad entry ends the batch");
        assert!(got[0].is_ok());
        assert!(matches!(got[1], Err(WireError::BadBatch { .. })));
        let mut overrun = BytesMut::new();
        overrun.put_u8(1);
        overrun.put_u32(u32::MAX);
        overrun.put_u32(u32::MAX);
        let frame = Frame {
            kind: FrameKind::Batch,
            header: Bytes::new(),
            payload: overrun.freeze(),
        };
        assert!(entries(&frame).next().unwrap().is_err());
    }
}
