//! The interceptor stack: code that sees every message going out and coming in,
//! and every membership event, like Tomcat's channel interceptors or Tower layers.
//!
//! Outgoing messages pass the interceptors first to last, once per destination;
//! incoming ones pass them last to first, so the last interceptor is the one nearest
//! the wire. An interceptor may pass a message on, change it, hold it back, split it
//! into several or drop it, by what it pushes to `out`.
//!
//! Built in: [`ThroughputInterceptor`] (always first, feeds [`crate::ChannelStats`]),
//! [`DomainFilterInterceptor`], [`OrderInterceptor`], [`CompressionInterceptor`] and
//! [`FragmentationInterceptor`] (always last, so no frame exceeds the limit).
//! Failure detection (Tomcat's `TcpFailureDetector`) lives in the membership, which
//! owns the decision of who is alive.

mod compress;
mod domain;
mod fragment;
mod order;
mod throughput;

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

use crate::acks::AckHandle;
use crate::member::Member;
use crate::membership::MembershipEvent;

pub use compress::CompressionInterceptor;
pub use domain::DomainFilterInterceptor;
pub use fragment::FragmentationInterceptor;
pub use order::OrderInterceptor;
pub use throughput::{MemberThroughput, ThroughputInterceptor};

/// A message on its way through the stack: a topic, a payload and named headers.
pub struct Message {
    pub(crate) topic: String,
    pub(crate) payload: Bytes,
    pub(crate) headers: Vec<(String, Bytes)>,
    pub(crate) ack: Option<AckHandle>,
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("topic", &self.topic)
            .field("payload_len", &self.payload.len())
            .field("headers", &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>())
            .finish()
    }
}

impl Message {
    /// A message for the listeners of `topic`.
    pub fn new(topic: impl Into<String>, payload: Bytes) -> Self {
        Message {
            topic: topic.into(),
            payload,
            headers: Vec::new(),
            ack: None,
        }
    }

    /// The listener topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The payload bytes.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// Replace the payload.
    pub fn set_payload(&mut self, payload: Bytes) {
        self.payload = payload;
    }

    /// The value of a header, if set.
    pub fn header(&self, name: &str) -> Option<&Bytes> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    /// Set a header, replacing any value it had. Names starting `tribes.` are reserved.
    pub fn set_header(&mut self, name: impl Into<String>, value: Bytes) {
        let name = name.into();
        match self.headers.iter_mut().find(|(k, _)| *k == name) {
            Some(slot) => slot.1 = value,
            None => self.headers.push((name, value)),
        }
    }

    /// Remove a header and return its value.
    pub fn remove_header(&mut self, name: &str) -> Option<Bytes> {
        let at = self.headers.iter().position(|(k, _)| k == name)?;
        Some(self.headers.swap_remove(at).1)
    }
}

/// Why an interceptor refused a message. The send reports it for that member.
#[derive(Debug, Clone, thiserror::Error)]
#[error("interceptor {interceptor} refused the message: {reason}")]
#[non_exhaustive]
pub struct InterceptorError {
    /// The interceptor's name.
    pub interceptor: &'static str,
    /// What was wrong, and what to do about it.
    pub reason: String,
}

impl InterceptorError {
    /// An error from the interceptor called `interceptor`: what was wrong, and what to
    /// do about it.
    pub fn new(interceptor: &'static str, reason: impl Into<String>) -> Self {
        InterceptorError {
            interceptor,
            reason: reason.into(),
        }
    }
}

/// One layer of the stack. Every method has a pass-through default.
pub trait Interceptor: Send + Sync + fmt::Debug + 'static {
    /// A short name for logs and errors.
    fn name(&self) -> &'static str;

    /// A message to `to` on its way down to the wire: push what should go on.
    ///
    /// # Errors
    /// An error fails the send to that member with the interceptor's reason.
    fn on_send(&self, to: &Member, message: Message, out: &mut Vec<Message>) -> Result<(), InterceptorError> {
        let _ = to;
        out.push(message);
        Ok(())
    }

    /// A message from `from` on its way up to the listeners: push what should go on.
    ///
    /// # Errors
    /// An error drops the message; a sender waiting for an ack gets a fail-ack.
    fn on_receive(&self, from: &Member, message: Message, out: &mut Vec<Message>) -> Result<(), InterceptorError> {
        let _ = from;
        out.push(message);
        Ok(())
    }

    /// A membership change.
    fn on_membership(&self, event: &MembershipEvent) {
        let _ = event;
    }
}

/// The ordered interceptors of one channel.
#[derive(Debug, Clone)]
pub(crate) struct InterceptorStack {
    layers: Arc<[Arc<dyn Interceptor>]>,
}

impl InterceptorStack {
    pub(crate) fn new(layers: Vec<Arc<dyn Interceptor>>) -> Self {
        InterceptorStack { layers: layers.into() }
    }

    pub(crate) fn names(&self) -> Vec<&'static str> {
        self.layers.iter().map(|l| l.name()).collect()
    }

    /// Run a message down the stack for one destination.
    pub(crate) fn outgoing(&self, to: &Member, message: Message) -> Result<Vec<Message>, InterceptorError> {
        // Two vectors, swapped from layer to layer (not one per layer).
        let mut current = Vec::with_capacity(1);
        current.push(message);
        let mut next = Vec::with_capacity(1);
        for layer in self.layers.iter() {
            for m in current.drain(..) {
                layer.on_send(to, m, &mut next)?;
            }
            std::mem::swap(&mut current, &mut next);
        }
        Ok(current)
    }

    /// Run a message up the stack from the wire.
    pub(crate) fn incoming(&self, from: &Member, message: Message) -> Result<Vec<Message>, InterceptorError> {
        let mut current = Vec::with_capacity(1);
        current.push(message);
        let mut next = Vec::with_capacity(1);
        for layer in self.layers.iter().rev() {
            for m in current.drain(..) {
                layer.on_receive(from, m, &mut next)?;
            }
            std::mem::swap(&mut current, &mut next);
            if current.is_empty() {
                break;
            }
        }
        Ok(current)
    }

    pub(crate) fn membership(&self, event: &MembershipEvent) {
        for layer in self.layers.iter() {
            layer.on_membership(event);
        }
    }
}
