//! `SessionHandle`: one session as an application reads and writes it during one unit of work.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::cause::Cause;
use crate::data::{Blob, Op, SessionData};
use crate::error::AttributeError;
use crate::id::SessionId;
use crate::listener::from_unix_ms;

/// Size limits a handle checks at insert time.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) max_attribute_len: usize,
    pub(crate) max_session_len: usize,
}

#[derive(Debug)]
pub(crate) struct HandleState {
    /// The session's id when the handle was made (the key the commit applies to).
    pub(crate) key: SessionId,
    pub(crate) data: SessionData,
    pub(crate) ops: Vec<Op>,
    pub(crate) base: u64,
    pub(crate) is_new: bool,
    pub(crate) invalidated: bool,
    pub(crate) limits: Limits,
}

/// One session, as seen by one unit of work (one HTTP request).
///
/// A cheap `Clone` (shared state inside). Reads come from the copy taken by
/// `SessionManager::get`/`create`; every change is applied to that copy and recorded as a
/// delta, which `SessionManager::commit` applies to the manager and replicates.
///
/// # Examples
/// ```
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::SystemTime;
/// use tribes_sessions::SessionManager;
/// let key = tribes::Keyring::generate(1, &mut rand::rng());
/// let channel = tribes::Channel::builder("node-a").with_cluster_key(key).with_bind("127.0.0.1:0".parse()?).start().await?;
/// let manager = SessionManager::builder("/shop").start(channel).await?;
/// let session = manager.create(SystemTime::now())?;
/// session.insert("cart", &vec!["apple".to_string()])?;
/// assert_eq!(session.get::<Vec<String>>("cart")?, Some(vec!["apple".to_string()]));
/// // A value that does not decode into the asked type is an error, not a panic.
/// assert!(session.get::<u64>("cart").is_err());
/// manager.commit(&session).await?;
/// manager.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SessionHandle {
    pub(crate) inner: Arc<Mutex<HandleState>>,
}

impl fmt::Debug for SessionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.lock();
        f.debug_struct("SessionHandle")
            .field("id", &s.data.id)
            .field("version", &s.data.version)
            .field("dirty", &!s.ops.is_empty())
            .finish()
    }
}

impl SessionHandle {
    pub(crate) fn new(state: HandleState) -> Self {
        SessionHandle {
            inner: Arc::new(Mutex::new(state)),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, HandleState> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The session's id (the new one after [`SessionHandle::cycle_id`]).
    pub fn id(&self) -> SessionId {
        self.lock().data.id
    }

    /// The route of the node that created or last bound the session (Tomcat's `jvmRoute`).
    pub fn route(&self) -> String {
        self.lock().data.route.to_string()
    }

    /// Whether the session was created in this unit of work.
    pub fn is_new(&self) -> bool {
        self.lock().is_new
    }

    /// The session's version: it grows with every committed change.
    pub fn version(&self) -> u64 {
        self.lock().data.version
    }

    /// Whether this handle recorded changes not yet committed.
    pub fn is_dirty(&self) -> bool {
        !self.lock().ops.is_empty()
    }

    /// When the session was created.
    pub fn created(&self) -> SystemTime {
        from_unix_ms(self.lock().data.created_ms)
    }

    /// The last access this node knows of (see the crate docs on access batching).
    pub fn last_accessed(&self) -> SystemTime {
        from_unix_ms(self.lock().data.last_access_ms)
    }

    /// The max inactive interval of this session.
    pub fn max_inactive(&self) -> Duration {
        Duration::from_millis(self.lock().data.max_inactive_ms)
    }

    /// The names of the attributes present.
    pub fn attribute_names(&self) -> Vec<String> {
        let s = self.lock();
        s.data
            .attrs
            .iter()
            .filter(|a| a.value.is_some())
            .map(|a| a.name.to_string())
            .collect()
    }

    /// Reads an attribute.
    ///
    /// # Errors
    /// [`AttributeError::Decode`] when the stored value does not decode into `T`
    /// (treat it as absent; the rest of the session still works).
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, AttributeError> {
        let s = self.lock();
        match s.data.value(key) {
            None => Ok(None),
            Some(bytes) => rmp_serde::from_slice(bytes)
                .map(Some)
                .map_err(|e| AttributeError::Decode {
                    name: key.to_string(),
                    type_name: std::any::type_name::<T>(),
                    cause: Cause::new(e),
                }),
        }
    }

    /// Sets an attribute, recording a delta.
    ///
    /// # Errors
    /// [`AttributeError::Serialize`], [`AttributeError::TooLarge`],
    /// [`AttributeError::SessionTooLarge`], [`AttributeError::Invalidated`] or
    /// [`AttributeError::Reserved`]; the session is unchanged then.
    pub fn insert<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<(), AttributeError> {
        if key == crate::PRINCIPAL_ATTRIBUTE {
            return Err(AttributeError::Reserved { name: key.to_string() });
        }
        let bytes = rmp_serde::to_vec(value).map_err(|e| AttributeError::Serialize {
            name: key.to_string(),
            cause: Cause::new(e),
        })?;
        self.write(key, bytes)
    }

    fn write(&self, key: &str, bytes: Vec<u8>) -> Result<(), AttributeError> {
        let mut s = self.lock();
        if s.invalidated {
            return Err(AttributeError::Invalidated { id: s.data.id });
        }
        if bytes.len() > s.limits.max_attribute_len {
            return Err(AttributeError::TooLarge {
                name: key.to_string(),
                len: bytes.len(),
                max: s.limits.max_attribute_len,
            });
        }
        let old = s.data.value(key).map_or(0, |v| v.len() + key.len());
        let len = s.data.payload_len() - old + key.len() + bytes.len();
        if len > s.limits.max_session_len {
            return Err(AttributeError::SessionTooLarge {
                id: s.data.id,
                name: key.to_string(),
                len,
                max: s.limits.max_session_len,
            });
        }
        let blob = Blob(bytes.into());
        set_local(&mut s.data, key, Some(blob.clone()));
        s.ops
            .retain(|op| !matches!(op, Op::Set(k, _) | Op::Remove(k) if &**k == key));
        s.ops.push(Op::Set(key.into(), blob));
        Ok(())
    }

    /// The principal this session is logged in to (set by
    /// [`SessionManager::set_principal`](crate::SessionManager::set_principal)).
    pub fn principal(&self) -> Option<String> {
        crate::principal::PrincipalRecord::of(&self.lock().data).map(|r| r.name)
    }

    /// Logs this session out of its principal (the session lives on, anonymous).
    pub fn clear_principal(&self) {
        self.remove(crate::PRINCIPAL_ATTRIBUTE);
    }

    /// Records the principal attribute (the manager checked the session limit).
    pub(crate) fn record_principal(&self, record: &crate::principal::PrincipalRecord) -> Result<(), AttributeError> {
        self.write(crate::PRINCIPAL_ATTRIBUTE, record.encode())
    }

    /// Removes an attribute, recording a delta if it was present.
    pub fn remove(&self, key: &str) {
        let mut s = self.lock();
        if s.data.value(key).is_none() {
            return;
        }
        set_local(&mut s.data, key, None);
        s.ops
            .retain(|op| !matches!(op, Op::Set(k, _) | Op::Remove(k) if &**k == key));
        s.ops.push(Op::Remove(key.into()));
    }

    /// Invalidates the session: at commit it is removed on every node and never resurrected.
    pub fn invalidate(&self) {
        let mut s = self.lock();
        if !s.invalidated {
            s.invalidated = true;
            s.ops.push(Op::Invalidate);
        }
    }

    /// Whether [`SessionHandle::invalidate`] was called on this handle.
    pub fn is_invalidated(&self) -> bool {
        self.lock().invalidated
    }

    /// Gives the session a new random id (protection against session fixation, e.g. at
    /// login). The change is replicated as an id change at commit; the old id is then gone.
    pub fn cycle_id(&self) -> SessionId {
        let id = SessionId::generate(&mut rand::rng());
        let mut s = self.lock();
        s.data.id = id;
        s.ops.retain(|op| !matches!(op, Op::ChangeId(_)));
        s.ops.push(Op::ChangeId(id));
        id
    }

    /// Overrides the max inactive interval of this session.
    pub fn set_max_inactive(&self, interval: Duration) {
        let mut s = self.lock();
        let ms = interval.as_millis() as u64;
        s.data.max_inactive_ms = ms;
        s.ops.retain(|op| !matches!(op, Op::MaxInactive(_)));
        s.ops.push(Op::MaxInactive(ms));
    }

    /// The session as this handle sees it (committed state plus this unit of work's changes
    /// so far), with its version, as a store record; see
    /// [`SessionManager::import`](crate::SessionManager::import).
    pub fn to_stored(&self) -> crate::StoredSession {
        crate::persist::to_record(&self.lock().data)
    }

    /// Takes the recorded changes (and marks the handle as no longer new).
    pub(crate) fn take_ops(&self) -> (SessionId, u64, Vec<Op>, bool) {
        let mut s = self.lock();
        let ops = std::mem::take(&mut s.ops);
        let was_new = s.is_new;
        (s.key, s.base, ops, was_new)
    }
}

fn set_local(data: &mut SessionData, key: &str, value: Option<crate::data::Blob>) {
    match data.attrs.iter_mut().find(|a| &*a.name == key) {
        Some(a) => a.value = value,
        None => data.attrs.push(crate::data::Attr {
            name: key.into(),
            value,
            stamp: Default::default(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error;

    use super::*;

    fn handle() -> SessionHandle {
        let id = SessionId::from_bytes([3; 16]);
        SessionHandle::new(HandleState {
            key: id,
            data: SessionData::new(id, "a".into(), 0, 60_000),
            ops: Vec::new(),
            base: 0,
            is_new: true,
            invalidated: false,
            limits: Limits {
                max_attribute_len: 1 << 20,
                max_session_len: 1 << 20,
            },
        })
    }

    /// Refuses to be serialized, as a handle or a closure would.
    struct Unserializable;

    impl Serialize for Unserializable {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("a handle cannot be stored"))
        }
    }

    #[test]
    fn attribute_errors_have_the_codec_error_as_source() {
        let h = handle();
        h.insert("cart", "apple").unwrap();
        let e = h.get::<u64>("cart").unwrap_err();
        assert!(matches!(e, AttributeError::Decode { .. }), "{e:?}");
        let decode = e.source().and_then(|s| s.downcast_ref::<rmp_serde::decode::Error>());
        assert!(decode.is_some(), "the decoder's error is the source: {e:?}");
        assert!(e.to_string().contains(&decode.unwrap().to_string()), "{e}");

        let e = h.insert("handle", &Unserializable).unwrap_err();
        let AttributeError::Serialize { cause, .. } = &e else {
            panic!("{e:?}")
        };
        assert!(cause.is::<rmp_serde::encode::Error>(), "{cause:?}");
        assert!(e.source().is_some_and(|s| s.is::<rmp_serde::encode::Error>()), "{e:?}");
        assert!(e.to_string().contains("a handle cannot be stored"), "{e}");
    }
}
