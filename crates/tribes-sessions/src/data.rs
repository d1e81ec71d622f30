//! The replicated state of one session and the operations that change it.
//!
//! Every attribute, and the metadata group (route, max inactive interval, primary),
//! carries the [`Stamp`] of its last write. A write applies when its stamp is greater
//! than the stored one, so applying the same writes in any order gives the same
//! state on every node (a last-writer-wins map): this is how "receivers apply deltas
//! in version order" holds even when deltas arrive out of order or concurrently.

use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tribes::MemberId;

use crate::id::SessionId;

/// A byte string, shared when copied (a session handed to a request copies no value), sent
/// as MessagePack `bin`. An `Arc<[u8]>` (16 bytes) rather than `Bytes` (32): one per
/// attribute of every session held, so its size is memory per session.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub(crate) struct Blob(pub(crate) Arc<[u8]>);

impl Serialize for Blob {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Blob(serde_bytes::ByteBuf::deserialize(d)?.into_vec().into()))
    }
}

/// The order of writes: the session version the write produced, then the writer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub(crate) struct Stamp {
    pub(crate) version: u64,
    pub(crate) writer: u64,
}

/// A writer's tie-break number, from its member id.
pub(crate) fn writer_of(id: MemberId) -> u64 {
    let b = id.as_bytes();
    u64::from_le_bytes(b[..8].try_into().expect("8 bytes")) ^ u64::from_le_bytes(b[8..].try_into().expect("8 bytes"))
}

/// One attribute: its encoded value (`None` once removed, kept so a late older set loses) and stamp.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Attr {
    pub(crate) name: Arc<str>,
    pub(crate) value: Option<Blob>,
    pub(crate) stamp: Stamp,
}

/// A session as every node stores it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SessionData {
    pub(crate) id: SessionId,
    pub(crate) route: Arc<str>,
    pub(crate) created_ms: u64,
    pub(crate) last_access_ms: u64,
    pub(crate) max_inactive_ms: u64,
    /// Stamp of the metadata group: route, max inactive, primary.
    pub(crate) meta: Stamp,
    pub(crate) version: u64,
    pub(crate) primary: Option<MemberId>,
    pub(crate) attrs: Vec<Attr>,
}

impl SessionData {
    pub(crate) fn new(id: SessionId, route: Arc<str>, now_ms: u64, max_inactive_ms: u64) -> Self {
        SessionData {
            id,
            route,
            created_ms: now_ms,
            last_access_ms: now_ms,
            max_inactive_ms,
            meta: Stamp::default(),
            version: 0,
            primary: None,
            attrs: Vec::new(),
        }
    }

    pub(crate) fn attr(&self, name: &str) -> Option<&Attr> {
        self.attrs.iter().find(|a| &*a.name == name)
    }

    pub(crate) fn value(&self, name: &str) -> Option<&[u8]> {
        self.attr(name).and_then(|a| a.value.as_ref()).map(|b| &*b.0)
    }

    /// Live attributes' encoded length (names and values).
    pub(crate) fn payload_len(&self) -> usize {
        self.attrs
            .iter()
            .filter_map(|a| a.value.as_ref().map(|v| a.name.len() + v.0.len()))
            .sum()
    }

    pub(crate) fn expires_at_ms(&self) -> u64 {
        self.last_access_ms.saturating_add(self.max_inactive_ms)
    }

    /// Sets or removes one attribute if `stamp` wins; returns the previous live value's presence
    /// (`Some(had_value)`) when applied, `None` when the stored write is newer.
    pub(crate) fn write_attr(&mut self, name: &str, value: Option<Blob>, stamp: Stamp) -> Option<bool> {
        self.version = self.version.max(stamp.version);
        match self.attrs.iter_mut().find(|a| &*a.name == name) {
            Some(a) if a.stamp >= stamp => None,
            Some(a) => {
                let had = a.value.is_some();
                a.value = value;
                a.stamp = stamp;
                Some(had)
            }
            None => {
                // Most sessions hold a few attributes: grow those one slot at a time, so
                // the table keeps no spare capacity (an `Attr` is 48 B; `push` would
                // reserve 4 at once).
                if self.attrs.len() < 8 {
                    self.attrs.reserve_exact(1);
                }
                self.attrs.push(Attr {
                    name: name.into(),
                    value,
                    stamp,
                });
                Some(false)
            }
        }
    }

    /// Merges another copy of the same session into this one (every field by its stamp).
    pub(crate) fn merge(&mut self, other: &SessionData) {
        for a in &other.attrs {
            self.write_attr(&a.name, a.value.clone(), a.stamp);
        }
        if other.meta > self.meta {
            self.meta = other.meta;
            self.route = other.route.clone();
            self.max_inactive_ms = other.max_inactive_ms;
            self.primary = other.primary;
        }
        self.last_access_ms = self.last_access_ms.max(other.last_access_ms);
        self.created_ms = self.created_ms.min(other.created_ms);
        self.version = self.version.max(other.version);
    }

    /// A copy without the attributes the filter keeps local.
    pub(crate) fn filtered(&self, replicate: &dyn Fn(&str) -> bool) -> SessionData {
        let mut d = self.clone();
        d.attrs.retain(|a| replicate(&a.name));
        d
    }
}

/// One recorded change, as it travels in a delta.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Op {
    /// The session was created (first delta of a session).
    Create { created_ms: u64 },
    /// An attribute set to an encoded value.
    Set(Arc<str>, Blob),
    /// An attribute removed.
    Remove(Arc<str>),
    /// A new max inactive interval, in milliseconds.
    MaxInactive(u64),
    /// The session is now bound to this route.
    Route(Box<str>),
    /// The session is now primary on this member (BackupManager).
    Primary(MemberId),
    /// The session's id changed (fixation protection); applied after the other ops.
    ChangeId(SessionId),
    /// The session was invalidated.
    Invalidate,
}

/// A unit of work's changes to one session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Delta {
    pub(crate) id: SessionId,
    /// The version the changes were made against.
    pub(crate) base: u64,
    pub(crate) stamp: Stamp,
    /// When the unit of work happened (an access), unix milliseconds.
    pub(crate) at_ms: u64,
    pub(crate) ops: Vec<Op>,
}
