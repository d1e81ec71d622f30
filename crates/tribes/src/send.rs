//! What a send asks for ([`SendMode`], [`SendOptions`]) and what it reports
//! ([`SendReport`], [`Delivery`], [`SendError`]).

use std::sync::Arc;
use std::time::Duration;

use crate::interceptor::InterceptorError;
use crate::member::MemberId;
use crate::refusal::Refusal;

/// When a send returns (Tomcat's `channelSendOptions`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum SendMode {
    /// Queued in a bounded per-member queue; returns at once while the queue has room,
    /// and waits for room (at most the ack timeout) when it is full (Tomcat's async, 8).
    #[default]
    Async,
    /// Returns when the receiver has the bytes (Tomcat's use-ack, 2).
    UseAck,
    /// Returns when the receiver's application has processed the message (sync-ack, 4).
    SyncAck,
}

impl SendMode {
    pub(crate) fn wire(self) -> u8 {
        match self {
            SendMode::Async => 0,
            SendMode::UseAck => 1,
            SendMode::SyncAck => 2,
        }
    }
}

/// Per-message send options; the channel's defaults apply where these are `None`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SendOptions {
    /// When the send returns.
    pub mode: Option<SendMode>,
    /// How long to wait for each member's ack.
    pub ack_timeout: Option<Duration>,
}

impl SendOptions {
    /// Options with this mode and the channel's ack timeout.
    pub fn mode(mode: SendMode) -> Self {
        SendOptions {
            mode: Some(mode),
            ack_timeout: None,
        }
    }

    /// The same options with this ack timeout.
    pub fn with_ack_timeout(mut self, timeout: Duration) -> Self {
        self.ack_timeout = Some(timeout);
        self
    }
}

/// Why a message did not reach one member.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The destination is not a live member.
    #[error("{member} is not a live member of this channel (it left, or was never seen): send to channel.members()")]
    UnknownMember {
        /// The id asked for.
        member: MemberId,
    },
    /// The member's async queue stayed full for the whole ack timeout: it is slow or unreachable.
    #[error(
        "the send queue to {member} stayed full ({capacity} batches) for {waited:?}: the member is slow or unreachable; the message was not sent (raise with_queue_capacity or the ack timeout)"
    )]
    QueueFull {
        /// The member.
        member: String,
        /// The queue's capacity.
        capacity: usize,
        /// How long the send waited for room.
        waited: Duration,
    },
    /// No connection could be made.
    #[error("cannot connect to {member}: {source}")]
    Connect {
        /// The member.
        member: String,
        /// Why: the socket's error, the peer's or this node's refusal, or a timeout.
        source: ConnectError,
    },
    /// The connection closed before the ack arrived; the message may or may not have been processed.
    #[error("the connection to {member} closed before its ack: {reason}")]
    ConnectionLost {
        /// The member.
        member: String,
        /// What closed it.
        reason: String,
    },
    /// The receiver answered with a fail-ack.
    #[error("{member} could not process the message: {reason}")]
    Refused {
        /// The member.
        member: String,
        /// The receiver's reason.
        reason: String,
    },
    /// An interceptor on this side refused the message.
    #[error(transparent)]
    Interceptor(#[from] InterceptorError),
    /// The channel is shutting down.
    #[error("the channel is shutting down")]
    ShuttingDown,
}

/// Why a connection to a member could not be opened ([`SendError::Connect`]).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The TCP connect failed (refused, unreachable, ...).
    #[error("the TCP connect failed: {0} (is the member's process up and its port reachable?)")]
    Io(#[source] Arc<std::io::Error>),
    /// The TCP connect did not finish in time.
    #[error("the TCP connect did not finish within {0:?} (a firewall dropping packets, or the host is down)")]
    TimedOut(Duration),
    /// The handshake was refused, by this node or by the peer.
    #[error("the handshake was refused: {0}")]
    Refused(#[source] Refusal),
    /// The socket failed or closed during the handshake.
    #[error("the socket failed during the handshake: {0}")]
    HandshakeIo(#[source] Arc<std::io::Error>),
    /// The handshake did not finish in time.
    #[error("the handshake did not finish within {0:?}")]
    HandshakeTimedOut(Duration),
}

/// What happened to a message for one member.
#[derive(Debug, Clone)]
pub enum Delivery {
    /// Queued for sending (async mode).
    Queued,
    /// Acknowledged by the member (use-ack or sync-ack mode).
    Acked,
    /// Not delivered, and why.
    Failed(SendError),
    /// No ack within the timeout; the message may still arrive.
    TimedOut(Duration),
}

impl std::fmt::Display for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Delivery::Queued => f.write_str("queued"),
            Delivery::Acked => f.write_str("acknowledged"),
            Delivery::Failed(e) => write!(f, "{e}"),
            Delivery::TimedOut(waited) => write!(f, "no ack within {waited:?}; the message may still arrive"),
        }
    }
}

impl Delivery {
    /// Whether the message is acked or queued.
    pub fn is_ok(&self) -> bool {
        matches!(self, Delivery::Queued | Delivery::Acked)
    }
}

/// The outcome of a send, per member.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct SendReport {
    /// Each destination and what happened.
    pub outcomes: Vec<(MemberId, Delivery)>,
}

impl SendReport {
    /// Whether every member acked (or queued, in async mode).
    pub fn all_ok(&self) -> bool {
        self.outcomes.iter().all(|(_, d)| d.is_ok())
    }

    /// The outcome for one member.
    pub fn get(&self, id: MemberId) -> Option<&Delivery> {
        self.outcomes.iter().find(|(m, _)| *m == id).map(|(_, d)| d)
    }
}
