//! LZ4 compression of large payloads (Tomcat's `GzipInterceptor`, faster).

use bytes::Bytes;

use super::{Interceptor, InterceptorError, Message};
use crate::member::Member;

const LZ4: &str = "tribes.lz4";

/// Compresses payloads of at least `threshold` bytes with LZ4 when that makes them
/// smaller. The receiver checks the announced size against `max_len` before it
/// allocates, so a forged size cannot exhaust memory.
#[derive(Debug)]
pub struct CompressionInterceptor {
    threshold: usize,
    max_len: usize,
}

impl CompressionInterceptor {
    /// Compress payloads of `threshold` bytes or more; refuse to inflate past `max_len`.
    pub fn new(threshold: usize, max_len: usize) -> Self {
        CompressionInterceptor { threshold, max_len }
    }
}

impl Default for CompressionInterceptor {
    fn default() -> Self {
        Self::new(8 * 1024, 64 * 1024 * 1024)
    }
}

impl Interceptor for CompressionInterceptor {
    fn name(&self) -> &'static str {
        "compression"
    }

    fn on_send(&self, _to: &Member, mut message: Message, out: &mut Vec<Message>) -> Result<(), InterceptorError> {
        if message.payload.len() >= self.threshold {
            let packed = lz4_flex::block::compress(&message.payload);
            if packed.len() < message.payload.len() {
                let len = message.payload.len() as u32;
                message.set_header(LZ4, Bytes::copy_from_slice(&len.to_be_bytes()));
                message.payload = Bytes::from(packed);
            }
        }
        out.push(message);
        Ok(())
    }

    fn on_receive(&self, from: &Member, mut message: Message, out: &mut Vec<Message>) -> Result<(), InterceptorError> {
        if let Some(raw) = message.remove_header(LZ4) {
            let err = |reason: String| InterceptorError {
                interceptor: "compression",
                reason,
            };
            let len = <[u8; 4]>::try_from(&raw[..])
                .map(u32::from_be_bytes)
                .map_err(|_| err(format!("malformed size header from {from}")))? as usize;
            if len > self.max_len {
                return Err(err(format!(
                    "{from} announced {len} bytes uncompressed, over the limit of {}: raise the limit on both sides",
                    self.max_len
                )));
            }
            // LZ4 inflates at most ~255x: a larger claim is a lie, refused before the
            // output buffer is allocated.
            if len > message.payload.len().saturating_mul(MAX_LZ4_RATIO).saturating_add(64) {
                return Err(err(format!(
                    "{from} announced {len} bytes uncompressed from {} compressed, more than LZ4 can inflate: a corrupt or hostile frame",
                    message.payload.len()
                )));
            }
            let plain = lz4_flex::block::decompress(&message.payload, len)
                .map_err(|e| err(format!("corrupt compressed payload from {from}: {e}")))?;
            message.payload = Bytes::from(plain);
        }
        out.push(message);
        Ok(())
    }
}

/// The most an LZ4 block expands (a run of one byte costs 1 byte per 255 of output).
const MAX_LZ4_RATIO: usize = 256;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::member::MemberId;

    #[test]
    fn round_trip_and_forged_size() {
        let c = CompressionInterceptor::new(16, 1 << 20);
        let m = Member::new(MemberId::from_bytes([1; 16]), "a", "d", ([127, 0, 0, 1], 1).into(), 0);
        let mut out = Vec::new();
        c.on_send(&m, Message::new("t", Bytes::from(vec![7u8; 10_000])), &mut out)
            .unwrap();
        let packed = out.pop().unwrap();
        assert!(packed.payload.len() < 1000);
        let mut forged = Message::new("t", packed.payload.clone());
        forged.set_header(LZ4, Bytes::copy_from_slice(&u32::MAX.to_be_bytes()));
        let err = c.on_receive(&m, forged, &mut Vec::new()).unwrap_err();
        assert!(err.reason.contains("over the limit"), "{err}");
        c.on_receive(&m, packed, &mut out).unwrap();
        assert_eq!(out[0].payload.len(), 10_000);
    }

    #[test]
    fn a_size_lz4_cannot_reach_is_refused_before_allocating() {
        let c = CompressionInterceptor::new(16, 64 << 20);
        let m = Member::new(MemberId::from_bytes([1; 16]), "a", "d", ([127, 0, 0, 1], 1).into(), 0);
        // The most compressible input there is still inflates back.
        let mut out = Vec::new();
        c.on_send(&m, Message::new("t", Bytes::from(vec![0u8; 8 << 20])), &mut out)
            .unwrap();
        let packed = out.pop().unwrap();
        c.on_receive(&m, packed, &mut out).unwrap();
        assert_eq!(out.pop().unwrap().payload.len(), 8 << 20);
        // 100 bytes claiming 60 MiB (under the limit) is refused.
        let mut forged = Message::new("t", Bytes::from(vec![0u8; 100]));
        forged.set_header(LZ4, Bytes::copy_from_slice(&(60u32 << 20).to_be_bytes()));
        let err = c.on_receive(&m, forged, &mut Vec::new()).unwrap_err();
        assert!(err.reason.contains("more than LZ4 can inflate"), "{err}");
    }
}
