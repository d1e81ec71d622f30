//! Per-sender ordering (Tomcat's `OrderInterceptor`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{Interceptor, InterceptorError, Message};
use crate::member::{Member, MemberId};
use crate::membership::MembershipEvent;

const SEQ: &str = "tribes.seq";

#[derive(Debug, Default)]
struct Inbound {
    next: u64,
    held: BTreeMap<u64, (Instant, Message)>,
}

/// Delivers each sender's messages in the order it sent them, even when they travel
/// over several pooled connections.
///
/// Every message to a member gets that member's next sequence number; the receiver
/// holds back messages that overtook an earlier one. A gap (a message lost with a
/// broken connection) is given up after `gap_timeout`, checked when the next message
/// from that sender arrives, so one loss never stalls a sender for good.
#[derive(Debug)]
pub struct OrderInterceptor {
    gap_timeout: Duration,
    outbound: Mutex<HashMap<MemberId, u64>>,
    inbound: Mutex<HashMap<MemberId, Inbound>>,
}

impl Default for OrderInterceptor {
    fn default() -> Self {
        Self::new(Duration::from_secs(3))
    }
}

impl OrderInterceptor {
    /// Ordering that skips a missing message after `gap_timeout` (Tomcat: 3 s).
    pub fn new(gap_timeout: Duration) -> Self {
        OrderInterceptor {
            gap_timeout,
            outbound: Mutex::default(),
            inbound: Mutex::default(),
        }
    }
}

impl Interceptor for OrderInterceptor {
    fn name(&self) -> &'static str {
        "order"
    }

    fn on_send(&self, to: &Member, mut message: Message, out: &mut Vec<Message>) -> Result<(), InterceptorError> {
        let seq = {
            let mut map = self.outbound.lock().expect("order lock");
            let next = map.entry(to.id).or_insert(0);
            let seq = *next;
            *next += 1;
            seq
        };
        message.set_header(SEQ, Bytes::copy_from_slice(&seq.to_be_bytes()));
        out.push(message);
        Ok(())
    }

    fn on_receive(&self, from: &Member, mut message: Message, out: &mut Vec<Message>) -> Result<(), InterceptorError> {
        let Some(raw) = message.remove_header(SEQ) else {
            out.push(message);
            return Ok(());
        };
        let seq = <[u8; 8]>::try_from(&raw[..])
            .map(u64::from_be_bytes)
            .map_err(|_| InterceptorError {
                interceptor: "order",
                reason: format!("malformed sequence header from {from}"),
            })?;
        let now = Instant::now();
        let mut map = self.inbound.lock().expect("order lock");
        let state = map.entry(from.id).or_default();
        if seq < state.next {
            // A duplicate or a message given up on: deliver, order can no longer hold.
            out.push(message);
            return Ok(());
        }
        state.held.insert(seq, (now, message));
        loop {
            if let Some((_, m)) = state.held.remove(&state.next) {
                out.push(m);
                state.next += 1;
                continue;
            }
            // Give up on a gap whose successor has waited too long.
            match state.held.first_key_value() {
                Some((&first, (since, _))) if now.duration_since(*since) >= self.gap_timeout => {
                    tracing::warn!(member = %from, missing = state.next, next = first, "order: skipping lost messages");
                    state.next = first;
                }
                _ => break,
            }
        }
        Ok(())
    }

    fn on_membership(&self, event: &MembershipEvent) {
        if let MembershipEvent::Disappeared { member, .. } = event {
            self.inbound.lock().expect("order lock").remove(&member.id);
            self.outbound.lock().expect("order lock").remove(&member.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::member::MemberId;

    #[test]
    fn holds_back_until_the_gap_fills() {
        let order = OrderInterceptor::default();
        let a = Member::new(MemberId::from_bytes([1; 16]), "a", "d", ([127, 0, 0, 1], 1).into(), 0);
        let b = Member::new(MemberId::from_bytes([2; 16]), "b", "d", ([127, 0, 0, 1], 2).into(), 0);
        let mut sent = Vec::new();
        for i in 0..3u8 {
            order
                .on_send(&b, Message::new("t", Bytes::from(vec![i])), &mut sent)
                .unwrap();
        }
        let mut out = Vec::new();
        let m2 = sent.pop().unwrap();
        let m1 = sent.pop().unwrap();
        let m0 = sent.pop().unwrap();
        order.on_receive(&a, m2, &mut out).unwrap();
        order.on_receive(&a, m1, &mut out).unwrap();
        assert!(out.is_empty());
        order.on_receive(&a, m0, &mut out).unwrap();
        let got: Vec<u8> = out.iter().map(|m| m.payload[0]).collect();
        assert_eq!(got, vec![0, 1, 2]);
    }
}
