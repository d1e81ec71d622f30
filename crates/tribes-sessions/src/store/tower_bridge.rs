//! [`TowerSessionStore`]: a `tower_sessions::SessionStore` whose sessions live in a tribes
//! [`SessionManager`], so an app using tower-sessions gains replicated sessions by swapping
//! its store.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tower_sessions::cookie::time::OffsetDateTime;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{self, Error};

use crate::{Session, SessionId, SessionManager};

/// A [`tower_sessions::SessionStore`] backed by a replicated tribes [`SessionManager`].
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
/// | `delete` | [`Session::invalidate`] and commit |
///
/// Errors from the manager become `session_store::Error::Backend` with the manager's
/// message; attribute encoding errors become `Encode`/`Decode`.
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
#[derive(Debug, Clone)]
pub struct TowerSessionStore {
    manager: SessionManager,
}

impl TowerSessionStore {
    /// A store serving the sessions of `manager`'s context.
    pub fn new(manager: SessionManager) -> TowerSessionStore {
        TowerSessionStore { manager }
    }

    /// The manager.
    pub fn manager(&self) -> &SessionManager {
        &self.manager
    }

    /// Writes `record` into `session` (only what changed) and commits it.
    async fn write(&self, session: &Session, record: &Record, now: SystemTime) -> session_store::Result<()> {
        for name in session.attribute_names() {
            if !record.data.contains_key(&name) {
                session.remove(&name);
            }
        }
        for (key, value) in &record.data {
            let current: Option<serde_json::Value> = session.get(key).unwrap_or(None);
            if current.as_ref() != Some(value) {
                session.insert(key, value).map_err(|e| Error::Encode(e.to_string()))?;
            }
        }
        let expiry = SystemTime::from(record.expiry_date);
        let left = expiry.duration_since(now).unwrap_or_default();
        let max_inactive =
            Duration::from_secs(left.as_secs() + u64::from(left.subsec_nanos() > 0)).max(Duration::from_secs(1));
        if session.max_inactive() != max_inactive {
            session.set_max_inactive(max_inactive);
        }
        self.manager
            .commit(session)
            .await
            .map_err(|e| Error::Backend(e.to_string()))?;
        Ok(())
    }
}

fn to_tribes(id: &Id) -> SessionId {
    SessionId::from_bytes(id.0.to_le_bytes())
}

fn to_tower(id: SessionId) -> Id {
    Id(i128::from_le_bytes(*id.as_bytes()))
}

#[async_trait]
impl tower_sessions::SessionStore for TowerSessionStore {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        let now = SystemTime::now();
        let session = self.manager.create(now).map_err(|e| Error::Backend(e.to_string()))?;
        record.id = to_tower(session.id());
        self.write(&session, record, now).await
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        let id = to_tribes(&record.id);
        match self.manager.get(&id).await {
            Some(session) if !session.is_invalidated() => self.write(&session, record, SystemTime::now()).await,
            _ => Err(Error::Backend(format!(
                "session {} of context {} is gone (expired or invalidated meanwhile): nothing saved",
                id.log_id(),
                self.manager.context()
            ))),
        }
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
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
            if let Some(value) = session
                .get::<serde_json::Value>(&name)
                .map_err(|e| Error::Decode(e.to_string()))?
            {
                data.insert(name, value);
            }
        }
        let expiry = session.last_accessed() + session.max_inactive();
        Ok(Some(Record {
            id: *id,
            data,
            expiry_date: OffsetDateTime::from(expiry),
        }))
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        if let Some(session) = self.manager.get(&to_tribes(id)).await {
            session.invalidate();
            self.manager
                .commit(&session)
                .await
                .map_err(|e| Error::Backend(e.to_string()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_tower_ids_map_both_ways() {
        let id = SessionId::generate(&mut rand::rng());
        assert_eq!(to_tribes(&to_tower(id)), id);
        let tower = Id(-42);
        assert_eq!(to_tower(to_tribes(&tower)), tower);
    }
}
