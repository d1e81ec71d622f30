//! Listener hooks (Tomcat's `HttpSessionListener` and `HttpSessionAttributeListener`).

use std::fmt;
use std::time::SystemTime;

use crate::id::SessionId;

/// Where a change came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub enum Origin {
    /// Made on this node.
    Local,
    /// Replicated from another node (reported only with `with_notify_listeners_on_replication(true)`).
    Replicated,
}

/// Why a session was destroyed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub enum DestroyReason {
    /// `SessionHandle::invalidate` was called (here or on another node).
    Invalidated,
    /// It was idle past its max inactive interval.
    Expired,
}

/// A session lifecycle or attribute event.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
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

/// A session event of the whole cluster, for an application's audit log or clean-up: each
/// one is delivered once in the cluster, to the [`ClusterListener`]s of one node.
///
/// | event | delivered by |
/// |---|---|
/// | `Created`, `PrincipalSet`, `IdChanged`, `Invalidated`, `Evicted` | the node whose call made the change, when its commit (or call) returns |
/// | `Expired` | the coordinator (the serving member with the smallest id, while it sees a majority of the cluster), even when the node that served the session last has died; never on both sides of a partition |
///
/// A session ended by [`invalidate_principal`](crate::SessionManager::invalidate_principal)
/// is `Invalidated` (by the node that called it). `Expired` is at most once per session
/// except in one case: a coordinator that crashes right after delivering, before its
/// broadcast left, lets the next coordinator deliver the same session again (the event
/// carries the id: make the listener idempotent if that matters).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClusterEvent {
    /// A session was created.
    Created {
        /// The session.
        id: SessionId,
    },
    /// A session was logged in to a principal.
    PrincipalSet {
        /// The session.
        id: SessionId,
        /// The principal.
        principal: String,
    },
    /// A session's id changed (fixation protection).
    IdChanged {
        /// The id before.
        old: SessionId,
        /// The id now.
        new: SessionId,
    },
    /// A session was invalidated (by the application, or a logout everywhere).
    Invalidated {
        /// The session.
        id: SessionId,
        /// Its principal, if it had one.
        principal: Option<String>,
    },
    /// A session was invalidated because its principal logged in once more than the
    /// limit allows.
    Evicted {
        /// The session.
        id: SessionId,
        /// The principal.
        principal: String,
    },
    /// A session expired (idle past its interval, or past its max lifetime).
    Expired {
        /// The session.
        id: SessionId,
        /// Its principal, if it had one.
        principal: Option<String>,
        /// The route (member name) of the node that delivered it.
        delivered_by: String,
    },
}

/// Receives [`ClusterEvent`]s. Called from the manager's tasks: return quickly.
///
/// Implemented for closures `Fn(&ClusterEvent)`.
pub trait ClusterListener: Send + Sync + 'static {
    /// One event.
    fn on_cluster_event(&self, event: &ClusterEvent);
}

impl<F: Fn(&ClusterEvent) + Send + Sync + 'static> ClusterListener for F {
    fn on_cluster_event(&self, event: &ClusterEvent) {
        self(event)
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
