//! Listeners: the topics this node receives, and handing messages to them.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::interceptor::Message;
use crate::member::Member;
use crate::stats::Counters;

/// A received message, handed to the listeners of its topic.
///
/// In sync-ack mode the sender waits until this value is dropped (processing done)
/// or [`Incoming::fail`] is called.
pub struct Incoming {
    from: Arc<Member>,
    message: Message,
}

impl fmt::Debug for Incoming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Incoming")
            .field("from", &self.from.name)
            .field("message", &self.message)
            .finish()
    }
}

impl Incoming {
    /// The sending member.
    pub fn from(&self) -> &Member {
        &self.from
    }

    /// The topic it was sent to.
    pub fn topic(&self) -> &str {
        &self.message.topic
    }

    /// The payload.
    pub fn payload(&self) -> &Bytes {
        &self.message.payload
    }

    /// A header set by the sender or its interceptors.
    pub fn header(&self, name: &str) -> Option<&Bytes> {
        self.message.header(name)
    }

    /// Acknowledge now (dropping does the same).
    pub fn ack(self) {}

    /// Tell a sync-ack sender that processing failed, and why. Only this message
    /// is refused, even when it arrived in a batch with others.
    pub fn fail(mut self, reason: impl Into<String>) {
        if let Some(ack) = self.message.ack.take() {
            ack.fail(reason.into());
        }
    }
}

/// The messages of one topic, as they arrive.
#[derive(Debug)]
pub struct Listener {
    topic: String,
    rx: mpsc::Receiver<Incoming>,
}

impl Listener {
    /// The next message, or `None` once the channel has shut down.
    pub async fn recv(&mut self) -> Option<Incoming> {
        self.rx.recv().await
    }

    /// The topic listened to.
    pub fn topic(&self) -> &str {
        &self.topic
    }
}

/// Why [`Channel::listen`](crate::Channel::listen) refused a topic.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ListenError {
    /// Another [`Listener`] of this topic is alive on this channel: two would split
    /// its messages between them (and two session managers of one context would
    /// each hold half the cluster's view).
    #[error(
        "topic '{topic}' already has a listener on {member}: drop the first Listener (or shut down the manager that holds it) before listening again, or use another topic"
    )]
    TopicTaken {
        /// The topic asked for.
        topic: String,
        /// This channel's member name.
        member: String,
    },
}

/// The listeners of one channel, by topic.
#[derive(Debug)]
pub(crate) struct Listeners {
    by_topic: Mutex<HashMap<String, mpsc::Sender<Incoming>>>,
    capacity: usize,
    /// This node's name, for the reasons of fail-acks.
    local_name: String,
    /// Counts messages that found no listener (or a dropped one).
    counters: Arc<Counters>,
    /// Bumped by every [`Listeners::listen`], so that a cached [`Route`] is rechecked.
    generation: AtomicU64,
}

/// A connection's cached way to the listener of the topic it last delivered to
/// (most connections carry one topic): no lock and no hashing per message.
#[derive(Debug)]
pub(crate) struct Route {
    generation: u64,
    topic: String,
    tx: mpsc::Sender<Incoming>,
}

impl Listeners {
    pub(crate) fn new(capacity: usize, local_name: String, counters: Arc<Counters>) -> Self {
        Listeners {
            by_topic: Mutex::default(),
            capacity,
            local_name,
            counters,
            generation: AtomicU64::new(0),
        }
    }

    /// Listen to `topic`, refused while another [`Listener`] of it is alive (a
    /// dropped one frees the topic).
    pub(crate) fn listen(&self, topic: String) -> Result<Listener, ListenError> {
        let mut by_topic = self.by_topic.lock().expect("listeners lock");
        if by_topic.get(&topic).is_some_and(|tx| !tx.is_closed()) {
            return Err(ListenError::TopicTaken {
                topic,
                member: self.local_name.clone(),
            });
        }
        let (tx, rx) = mpsc::channel(self.capacity);
        by_topic.insert(topic.clone(), tx);
        // Connections that cached a dropped listener look it up again.
        self.generation.fetch_add(1, Ordering::Release);
        Ok(Listener { topic, rx })
    }

    /// Hand an incoming message to its topic's listener, or fail its ack. `route`
    /// caches the listener between calls (one per connection).
    pub(crate) async fn deliver(&self, route: &mut Option<Route>, from: &Arc<Member>, message: Message) {
        let generation = self.generation.load(Ordering::Acquire);
        let cached = matches!(route, Some(r) if r.generation == generation && r.topic == message.topic);
        if !cached {
            let tx = self
                .by_topic
                .lock()
                .expect("listeners lock")
                .get(&message.topic)
                .cloned();
            *route = tx.map(|tx| Route {
                generation,
                topic: message.topic.clone(),
                tx,
            });
        }
        let Some(Route { tx, .. }) = route.as_ref() else {
            self.counters.undeliverable.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(from = %from, topic = %message.topic, "no listener for topic");
            if let Some(ack) = message.ack {
                ack.fail(format!(
                    "no listener for topic '{}' on {}: call Channel::listen(\"{}\") on every member before peers send",
                    message.topic, self.local_name, message.topic
                ));
            }
            return;
        };
        let incoming = Incoming {
            from: from.clone(),
            message,
        };
        // Without waiting while the listener keeps up (the common case).
        let incoming = match tx.try_send(incoming) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(incoming)) => match tx.send(incoming).await {
                Ok(()) => return,
                Err(mpsc::error::SendError(incoming)) => incoming,
            },
            Err(mpsc::error::TrySendError::Closed(incoming)) => incoming,
        };
        self.counters.undeliverable.fetch_add(1, Ordering::Relaxed);
        let topic = incoming.topic().to_string();
        incoming.fail(format!(
            "the listener of topic '{topic}' on {} was dropped",
            self.local_name
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::member::MemberId;

    fn listeners() -> Listeners {
        Listeners::new(4, "a".into(), Arc::default())
    }

    fn from() -> Arc<Member> {
        Arc::new(Member::new(
            MemberId::from_bytes([2; 16]),
            "b",
            "d",
            ([127, 0, 0, 1], 2).into(),
            0,
        ))
    }

    fn message(payload: &'static [u8]) -> Message {
        Message::new("t", Bytes::from_static(payload))
    }

    /// A connection caches its route; a listener started after the first was
    /// dropped must get the next messages all the same.
    #[tokio::test]
    async fn a_replaced_listener_gets_the_messages_of_a_connection_that_cached_the_old_one() {
        let l = listeners();
        let mut route = None;
        let mut first = l.listen("t".into()).unwrap();
        l.deliver(&mut route, &from(), message(b"1")).await;
        assert_eq!(first.recv().await.unwrap().payload().as_ref(), b"1");
        drop(first);
        let mut second = l.listen("t".into()).expect("a dropped listener frees its topic");
        l.deliver(&mut route, &from(), message(b"2")).await;
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), second.recv())
            .await
            .expect("the new listener never got the message: the connection kept the dropped one");
        assert_eq!(got.unwrap().payload().as_ref(), b"2");
        assert_eq!(l.counters.undeliverable.load(Ordering::Relaxed), 0);
    }

    /// A second listener of a live topic is refused with a typed error naming the
    /// topic and the member, and the first keeps every message.
    #[tokio::test]
    async fn a_second_listener_of_a_live_topic_is_refused_and_the_first_keeps_its_messages() {
        let l = listeners();
        let mut route = None;
        let mut first = l.listen("t".into()).unwrap();
        let refused = l.listen("t".into()).expect_err("two live listeners of one topic");
        let ListenError::TopicTaken { topic, member } = &refused;
        assert_eq!((topic.as_str(), member.as_str()), ("t", l.local_name.as_str()));
        assert!(refused.to_string().contains("drop the first Listener"), "{refused}");
        l.deliver(&mut route, &from(), message(b"1")).await;
        assert_eq!(first.recv().await.unwrap().payload().as_ref(), b"1");
        assert!(l.listen("other".into()).is_ok(), "another topic is free");
    }
}
