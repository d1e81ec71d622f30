//! Splitting of messages larger than one frame (Tomcat's `FragmentationInterceptor`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{BufMut, BytesMut};

use super::{Interceptor, InterceptorError, Message};
use crate::member::{Member, MemberId};
use crate::membership::MembershipEvent;

const FRAG: &str = "tribes.frag";

#[derive(Debug)]
struct Partial {
    count: u32,
    next: u32,
    buf: BytesMut,
}

/// Splits payloads larger than `fragment_len` into fragments and joins them again
/// on the receiver, so a large state transfer never needs one giant frame.
///
/// The channel keeps one at the bottom of every stack, sized below the frame limit.
/// Fragments of one message travel in order on one connection; the receiver checks
/// the announced total against `max_message_len` before it allocates, and holds at
/// most `max_partial` unfinished messages per sender.
#[derive(Debug)]
pub struct FragmentationInterceptor {
    fragment_len: usize,
    max_message_len: usize,
    max_partial: usize,
    next_id: AtomicU64,
    partial: Mutex<HashMap<(MemberId, u64), Partial>>,
}

impl FragmentationInterceptor {
    /// Fragments of at most `fragment_len` payload bytes; whole messages of at most
    /// `max_message_len` bytes.
    pub fn new(fragment_len: usize, max_message_len: usize) -> Self {
        FragmentationInterceptor {
            fragment_len: fragment_len.max(1),
            max_message_len,
            max_partial: 16,
            next_id: AtomicU64::new(0),
            partial: Mutex::default(),
        }
    }

    fn error(reason: String) -> InterceptorError {
        InterceptorError {
            interceptor: "fragmentation",
            reason,
        }
    }
}

impl Interceptor for FragmentationInterceptor {
    fn name(&self) -> &'static str {
        "fragmentation"
    }

    fn on_send(&self, to: &Member, message: Message, out: &mut Vec<Message>) -> Result<(), InterceptorError> {
        let len = message.payload.len();
        if len <= self.fragment_len {
            out.push(message);
            return Ok(());
        }
        if len > self.max_message_len {
            return Err(Self::error(format!(
                "message of {len} bytes to {to} exceeds max_message_len {}: send smaller messages or raise the limit on every member",
                self.max_message_len
            )));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let count = len.div_ceil(self.fragment_len) as u32;
        for (index, chunk) in message.payload.chunks(self.fragment_len).enumerate() {
            let mut header = BytesMut::with_capacity(24);
            header.put_u64(id);
            header.put_u32(index as u32);
            header.put_u32(count);
            header.put_u64(len as u64);
            let mut fragment = Message::new(message.topic.clone(), message.payload.slice_ref(chunk));
            fragment.headers = message.headers.clone();
            fragment.set_header(FRAG, header.freeze());
            out.push(fragment);
        }
        Ok(())
    }

    fn on_receive(&self, from: &Member, mut message: Message, out: &mut Vec<Message>) -> Result<(), InterceptorError> {
        let Some(raw) = message.remove_header(FRAG) else {
            out.push(message);
            return Ok(());
        };
        if raw.len() != 24 {
            return Err(Self::error(format!("malformed fragment header from {from}")));
        }
        let id = u64::from_be_bytes(raw[0..8].try_into().expect("8"));
        let index = u32::from_be_bytes(raw[8..12].try_into().expect("4"));
        let count = u32::from_be_bytes(raw[12..16].try_into().expect("4"));
        let total = u64::from_be_bytes(raw[16..24].try_into().expect("8"));
        if total > self.max_message_len as u64 || count == 0 || index >= count {
            return Err(Self::error(format!(
                "{from} announced a fragmented message of {total} bytes in {count} parts (part {index}); the limit is {} bytes",
                self.max_message_len
            )));
        }
        let mut map = self.partial.lock().expect("fragment lock");
        let key = (from.id, id);
        if index == 0 {
            let held = map.keys().filter(|(m, _)| *m == from.id).count();
            if held >= self.max_partial {
                return Err(Self::error(format!(
                    "{from} has {held} unfinished fragmented messages, the limit is {}",
                    self.max_partial
                )));
            }
            map.insert(
                key,
                Partial {
                    count,
                    next: 0,
                    // Grown as parts arrive: a header alone must not make the node
                    // reserve the whole announced size (up to the limit) at once.
                    buf: BytesMut::with_capacity(message.payload.len().min(total as usize)),
                },
            );
        }
        let Some(partial) = map.get_mut(&key) else {
            return Err(Self::error(format!(
                "fragment {index} of message {id} from {from} without its start"
            )));
        };
        if partial.next != index || partial.count != count || partial.buf.len() + message.payload.len() > total as usize
        {
            map.remove(&key);
            return Err(Self::error(format!(
                "fragment {index} of message {id} from {from} is out of sequence"
            )));
        }
        partial.buf.put_slice(&message.payload);
        partial.next += 1;
        if partial.next == count {
            let whole = map.remove(&key).expect("present");
            if whole.buf.len() as u64 != total {
                return Err(Self::error(format!(
                    "message {id} from {from} reassembled to the wrong length"
                )));
            }
            // The last fragment carries the ack handle of the whole message.
            message.payload = whole.buf.freeze();
            out.push(message);
        }
        Ok(())
    }

    fn on_membership(&self, event: &MembershipEvent) {
        if let MembershipEvent::Disappeared { member, .. } = event {
            self.partial
                .lock()
                .expect("fragment lock")
                .retain(|(m, _), _| *m != member.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn split_and_join() {
        let f = FragmentationInterceptor::new(100, 10_000);
        let m = Member::new(MemberId::from_bytes([1; 16]), "a", "d", ([127, 0, 0, 1], 1).into(), 0);
        let payload: Vec<u8> = (0..1234u32).map(|i| i as u8).collect();
        let mut parts = Vec::new();
        f.on_send(&m, Message::new("t", Bytes::from(payload.clone())), &mut parts)
            .unwrap();
        assert_eq!(parts.len(), 13);
        let mut out = Vec::new();
        for p in parts {
            f.on_receive(&m, p, &mut out).unwrap();
        }
        assert_eq!(out.len(), 1);
        assert_eq!(&out[0].payload[..], &payload[..]);
        assert!(out[0].header(FRAG).is_none());
    }

    #[test]
    fn a_first_part_does_not_reserve_the_announced_size() {
        let f = FragmentationInterceptor::new(100, 256 << 20);
        let m = Member::new(MemberId::from_bytes([1; 16]), "a", "d", ([127, 0, 0, 1], 1).into(), 0);
        let mut header = Vec::new();
        header.extend_from_slice(&7u64.to_be_bytes()); // message id
        header.extend_from_slice(&0u32.to_be_bytes()); // part 0
        header.extend_from_slice(&1000u32.to_be_bytes()); // of 1000
        header.extend_from_slice(&(200u64 << 20).to_be_bytes()); // 200 MiB in all
        let mut first = Message::new("t", Bytes::from(vec![1u8; 100]));
        first.set_header(FRAG, Bytes::from(header));
        f.on_receive(&m, first, &mut Vec::new()).unwrap();
        let held = f.partial.lock().unwrap();
        let cap = held.values().next().unwrap().buf.capacity();
        assert!(cap < 1 << 20, "a 24-byte header reserved {cap} bytes");
    }
}
