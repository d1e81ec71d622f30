//! Listener hooks (Tomcat's `HttpSessionListener` and `HttpSessionAttributeListener`).

use std::fmt;
use std::time::SystemTime;

use crate::id::SessionId;

/// Where a change came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Origin {
    /// Made on this node.
    Local,
    /// Replicated from another node (reported only with `with_notify_listeners_on_replication(true)`).
    Replicated,
}

/// Why a session was destroyed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum DestroyReason {
    /// `Session::invalidate` was called (here or on another node).
    Invalidated,
    /// It was idle past its max inactive interval.
    Expired,
}

/// A session lifecycle or attribute event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionEvent {
    /// A session was created.
    Created {
        /// The session.
        id: SessionId,
        /// Where.
        origin: Origin,
    },
    /// A session was destroyed.
    Destroyed {
        /// The session.
        id: SessionId,
        /// Why.
        reason: DestroyReason,
        /// Where.
        origin: Origin,
    },
    /// An attribute was added.
    AttributeAdded {
        /// The session.
        id: SessionId,
        /// The attribute.
        name: String,
        /// Where.
        origin: Origin,
    },
    /// An attribute was replaced.
    AttributeReplaced {
        /// The session.
        id: SessionId,
        /// The attribute.
        name: String,
        /// Where.
        origin: Origin,
    },
    /// An attribute was removed.
    AttributeRemoved {
        /// The session.
        id: SessionId,
        /// The attribute.
        name: String,
        /// Where.
        origin: Origin,
    },
}

impl SessionEvent {
    pub(crate) fn origin(&self) -> Origin {
        match self {
            SessionEvent::Created { origin, .. }
            | SessionEvent::Destroyed { origin, .. }
            | SessionEvent::AttributeAdded { origin, .. }
            | SessionEvent::AttributeReplaced { origin, .. }
            | SessionEvent::AttributeRemoved { origin, .. } => *origin,
        }
    }
}

/// Receives session events. Called from the manager's tasks: return quickly.
///
/// Implemented for closures `Fn(&SessionEvent)`.
pub trait SessionListener: Send + Sync + 'static {
    /// One event.
    fn on_event(&self, event: &SessionEvent);
}

impl<F: Fn(&SessionEvent) + Send + Sync + 'static> SessionListener for F {
    fn on_event(&self, event: &SessionEvent) {
        self(event)
    }
}

/// The source of time for a manager (default [`SystemClock`]).
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current time.
    fn now(&self) -> SystemTime;
}

/// The system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub(crate) fn from_unix_ms(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(ms)
}
