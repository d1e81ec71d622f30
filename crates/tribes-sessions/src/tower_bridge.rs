//! [`TowerSessionStore`]: a `tower_sessions::SessionStore` whose sessions live in a tribes
//! [`SessionManager`], so an app using tower-sessions gains replicated sessions by swapping
//! its store.

//!
//! It implements the store trait of tower-sessions 0.15 (feature `tower-sessions`) and of
//! 0.14 (feature `tower-sessions-014`, the version axum-login 0.18 uses); both traits have the
//! same shape, so one macro writes each impl over the version-neutral methods below.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::{PRINCIPAL_ATTRIBUTE, SessionHandle, SessionId, SessionManager};

/// What a tower-sessions record holds, without the version's types.
type Data = HashMap<String, serde_json::Value>;

/// Reads the principal out of a record's data ([`TowerSessionStore::with_principal`]).
type PrincipalOf = Arc<dyn Fn(&HashMap<String, serde_json::Value>) -> Option<String> + Send + Sync>;

/// Why a bridge operation failed, mapped onto each version's `session_store::Error`.
#[derive(Debug)]
enum BridgeError {
    Encode(String),
    Decode(String),
    Backend(String),
}

/// A tower-sessions `SessionStore` (0.15 and 0.14) backed by a replicated tribes [`SessionManager`].
///
/// Keep your tower-sessions app as it is (its `SessionManagerLayer`, its `Session`
/// extractor) and give the layer this store: every session then lives in the tribes
/// cluster, replicated by the manager's kind (Delta: to every node; Backup: to its backups),
/// and any node can serve the next request, even after the node that created it died.
///
/// | tower-sessions | tribes |
/// |---|---|
/// | `Id` (an `i128`) | [`SessionId`] (the same 16 bytes, little-endian), made by the manager on `create` |
/// | `Record::data` (JSON values by key) | one attribute per key (MessagePack of the JSON value) |
/// | `Record::expiry_date` | the session's max inactive interval (`expiry_date - now`, whole seconds, at least 1 s) |
/// | `save` | the changed attributes, then [`SessionManager::commit`] (with sync-ack, replicated before the response) |
/// | `load` | [`SessionManager::get`] and [`SessionManager::touch`] (a read keeps the session alive) |
/// | `delete` | [`SessionHandle::invalidate`] and commit |
/// | (no equivalent) | the principal, read from the record by [`with_principal`](TowerSessionStore::with_principal): [`SessionManager::set_principal`] at `save`, so [`SessionManager::invalidate_principal`] and [`SessionManager::sessions_of`] work for the app |
///
/// Errors from the manager become `session_store::Error::Backend` with the manager's
/// message; attribute encoding errors become `Encode`/`Decode`.
///
/// The same value is a store for tower-sessions 0.15 (feature `tower-sessions`) and 0.14
/// (feature `tower-sessions-014`, which axum-login 0.18 uses): give it to whichever
/// `SessionManagerLayer` the app has.
///
/// # Examples
/// ```no_run
/// # async fn demo(manager: tribes_sessions::SessionManager) {
/// use tower_sessions::SessionManagerLayer;
/// use tribes_sessions::TowerSessionStore;
///
/// let layer = SessionManagerLayer::new(TowerSessionStore::new(manager)).with_secure(false);
/// let app: axum::Router = axum::Router::new().layer(layer);
/// # }
/// ```
#[derive(Clone)]
pub struct TowerSessionStore {
    manager: SessionManager,
    principal_of: Option<PrincipalOf>,
}

impl std::fmt::Debug for TowerSessionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TowerSessionStore")
            .field("manager", &self.manager)
            .field("principal_of", &self.principal_of.is_some())
            .finish()
    }
}

impl TowerSessionStore {
    /// A store serving the sessions of `manager`'s context.
    pub fn new(manager: SessionManager) -> TowerSessionStore {
        TowerSessionStore {
            manager,
            principal_of: None,
        }
    }

    /// Gives each session the principal that `principal_of` reads from its record, at
    /// every save: [`SessionManager::set_principal`] when it is new or another one,
    /// [`SessionHandle::clear_principal`] when it is gone. tower-sessions (and the apps on it,
    /// such as axum-login) never see the tribes session, so this is how the manager learns
    /// who is logged in: [`SessionManager::invalidate_principal`] then logs a user out on
    /// every node, and a session limit
    /// ([`with_max_sessions_per_principal`](crate::SessionManagerBuilder::with_max_sessions_per_principal))
    /// applies (a refused login fails the save with the manager's message).
    ///
    /// The principal attribute itself ([`PRINCIPAL_ATTRIBUTE`]) never appears in a
    /// record's data.
    ///
    /// # Examples
    /// axum-login 0.18 keeps the user's id under `axum-login.data`:
    /// ```no_run
    /// # fn demo(manager: tribes_sessions::SessionManager) {
    /// use tribes_sessions::TowerSessionStore;
    /// let store = TowerSessionStore::new(manager).with_principal(|data| {
    ///     Some(data.get("axum-login.data")?.get("user_id")?.as_str()?.to_owned())
    /// });
    /// # }
    /// ```
    pub fn with_principal(
        mut self,
        principal_of: impl Fn(&HashMap<String, serde_json::Value>) -> Option<String> + Send + Sync + 'static,
    ) -> TowerSessionStore {
        self.principal_of = Some(Arc::new(principal_of));
        self
    }

    /// The manager.
    pub fn manager(&self) -> &SessionManager {
        &self.manager
    }

    /// Writes `data` and the expiry into `session` (only what changed) and commits it.
    async fn write(
        &self,
        session: &SessionHandle,
        data: &Data,
        expiry: SystemTime,
        now: SystemTime,
    ) -> Result<(), BridgeError> {
        for name in session.attribute_names() {
            if !data.contains_key(&name) && name != PRINCIPAL_ATTRIBUTE {
                session.remove(&name);
            }
        }
        for (key, value) in data {
            let current: Option<serde_json::Value> = session.get(key).unwrap_or(None);
            if current.as_ref() != Some(value) {
                session
                    .insert(key, value)
                    .map_err(|e| BridgeError::Encode(e.to_string()))?;
            }
        }
        let left = expiry.duration_since(now).unwrap_or_default();
        let max_inactive =
            Duration::from_secs(left.as_secs() + u64::from(left.subsec_nanos() > 0)).max(Duration::from_secs(1));
        if session.max_inactive() != max_inactive {
            session.set_max_inactive(max_inactive);
        }
        if let Some(principal_of) = &self.principal_of {
            match (principal_of(data), session.principal()) {
                (Some(want), have) if have.as_deref() != Some(want.as_str()) => self
                    .manager
                    .set_principal(session, &want)
                    .await
                    .map_err(|e| BridgeError::Backend(e.to_string()))?,
                (None, Some(_)) => session.clear_principal(),
                _ => {}
            }
        }
        self.manager
            .commit(session)
            .await
            .map_err(|e| BridgeError::Backend(e.to_string()))?;
        Ok(())
    }

    /// `SessionStore::create`: a new session holding `data`; its id as tower-sessions' `i128`.
    async fn create_record(&self, data: &Data, expiry: SystemTime) -> Result<i128, BridgeError> {
        let now = SystemTime::now();
        let session = self
            .manager
            .create(now)
            .map_err(|e| BridgeError::Backend(e.to_string()))?;
        if let Err(e) = self.write(&session, data, expiry, now).await {
            // Not saved: the session made for it ends here (it was never sent).
            session.invalidate();
            let _ = self.manager.commit(&session).await;
            return Err(e);
        }
        Ok(to_tower(session.id()))
    }

    /// `SessionStore::save`.
    async fn save_record(&self, id: i128, data: &Data, expiry: SystemTime) -> Result<(), BridgeError> {
        let id = to_tribes(id);
        match self.manager.get(&id).await {
            Some(session) if !session.is_invalidated() => self.write(&session, data, expiry, SystemTime::now()).await,
            _ => Err(BridgeError::Backend(format!(
                "session {} of context {} is gone (expired or invalidated meanwhile): nothing saved",
                id.log_id(),
                self.manager.context()
            ))),
        }
    }

    /// `SessionStore::load`: the data and the expiry, `None` for no (live) session.
    async fn load_record(&self, id: i128) -> Result<Option<(Data, SystemTime)>, BridgeError> {
        let sid = to_tribes(id);
        let Some(session) = self.manager.get(&sid).await else {
            return Ok(None);
        };
        if session.is_invalidated() {
            return Ok(None);
        }
        self.manager.touch(&sid, SystemTime::now());
        let mut data = HashMap::new();
        for name in session.attribute_names() {
            if name == PRINCIPAL_ATTRIBUTE {
                continue;
            }
            if let Some(value) = session
                .get::<serde_json::Value>(&name)
                .map_err(|e| BridgeError::Decode(e.to_string()))?
            {
                data.insert(name, value);
            }
        }
        Ok(Some((data, session.last_accessed() + session.max_inactive())))
    }

    /// `SessionStore::delete`.
    async fn delete_record(&self, id: i128) -> Result<(), BridgeError> {
        if let Some(session) = self.manager.get(&to_tribes(id)).await {
            session.invalidate();
            self.manager
                .commit(&session)
                .await
                .map_err(|e| BridgeError::Backend(e.to_string()))?;
        }
        Ok(())
    }
}

fn to_tribes(id: i128) -> SessionId {
    SessionId::from_bytes(id.to_le_bytes())
}

fn to_tower(id: SessionId) -> i128 {
    i128::from_le_bytes(*id.as_bytes())
}

/// `impl $ts::SessionStore for TowerSessionStore`, for the tower-sessions crate named `$ts`.
macro_rules! tower_session_store {
    ($ts:ident) => {
        impl From<BridgeError> for $ts::session_store::Error {
            fn from(e: BridgeError) -> Self {
                match e {
                    BridgeError::Encode(m) => Self::Encode(m),
                    BridgeError::Decode(m) => Self::Decode(m),
                    BridgeError::Backend(m) => Self::Backend(m),
                }
            }
        }

        #[async_trait::async_trait]
        impl $ts::SessionStore for TowerSessionStore {
            async fn create(&self, record: &mut $ts::session::Record) -> $ts::session_store::Result<()> {
                let id = self
                    .create_record(&record.data, SystemTime::from(record.expiry_date))
                    .await?;
                record.id = $ts::session::Id(id);
                Ok(())
            }

            async fn save(&self, record: &$ts::session::Record) -> $ts::session_store::Result<()> {
                Ok(self
                    .save_record(record.id.0, &record.data, SystemTime::from(record.expiry_date))
                    .await?)
            }

            async fn load(&self, id: &$ts::session::Id) -> $ts::session_store::Result<Option<$ts::session::Record>> {
                Ok(self
                    .load_record(id.0)
                    .await?
                    .map(|(data, expiry)| $ts::session::Record {
                        id: *id,
                        data,
                        expiry_date: $ts::cookie::time::OffsetDateTime::from(expiry),
                    }))
            }

            async fn delete(&self, id: &$ts::session::Id) -> $ts::session_store::Result<()> {
                Ok(self.delete_record(id.0).await?)
            }
        }
    };
}

#[cfg(feature = "tower-sessions")]
tower_session_store!(tower_sessions);
#[cfg(feature = "tower-sessions-014")]
tower_session_store!(tower_sessions_014);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_tower_ids_map_both_ways() {
        let id = SessionId::generate(&mut rand::rng());
        assert_eq!(to_tribes(to_tower(id)), id);
        assert_eq!(to_tower(to_tribes(-42)), -42);
    }
}
