//! Messages and bytes in and out, per member (Tomcat's `ThroughputInterceptor`).

use std::collections::HashMap;
use std::sync::Mutex;

use serde::Serialize;

use super::{Interceptor, InterceptorError, Message};
use crate::member::{IdMap, Member, MemberId};

/// Application-level traffic with one member, as counted above every other layer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct MemberThroughput {
    /// Messages sent to the member.
    pub messages_out: u64,
    /// Payload bytes sent to the member (before compression and fragmentation).
    pub bytes_out: u64,
    /// Messages received from the member.
    pub messages_in: u64,
    /// Payload bytes received from the member.
    pub bytes_in: u64,
}

/// Counts messages and payload bytes per member. The channel always puts one at
/// the top of its stack; [`crate::Channel::stats`] reports its figures.
#[derive(Debug, Default)]
pub struct ThroughputInterceptor {
    per_member: Mutex<IdMap<MemberThroughput>>,
}

impl ThroughputInterceptor {
    /// A counter with every figure at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// The figures for one member.
    pub fn member(&self, id: MemberId) -> MemberThroughput {
        self.per_member
            .lock()
            .expect("throughput lock")
            .get(&id)
            .cloned()
            .unwrap_or_default()
    }

    /// Figures for every member ever seen.
    pub fn snapshot(&self) -> HashMap<MemberId, MemberThroughput> {
        self.per_member
            .lock()
            .expect("throughput lock")
            .iter()
            .map(|(id, t)| (*id, t.clone()))
            .collect()
    }
}

impl Interceptor for ThroughputInterceptor {
    fn name(&self) -> &'static str {
        "throughput"
    }

    fn on_send(&self, to: &Member, message: Message, out: &mut Vec<Message>) -> Result<(), InterceptorError> {
        {
            let mut map = self.per_member.lock().expect("throughput lock");
            let entry = map.entry(to.id).or_default();
            entry.messages_out += 1;
            entry.bytes_out += message.payload.len() as u64;
        }
        out.push(message);
        Ok(())
    }

    fn on_receive(&self, from: &Member, message: Message, out: &mut Vec<Message>) -> Result<(), InterceptorError> {
        {
            let mut map = self.per_member.lock().expect("throughput lock");
            let entry = map.entry(from.id).or_default();
            entry.messages_in += 1;
            entry.bytes_in += message.payload.len() as u64;
        }
        out.push(message);
        Ok(())
    }
}
