//! The per-request session state shared by the layer and the [`Session`](crate::Session) extractor.

use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Mutex;
use tribes_sessions::{SessionHandle as Handle, SessionManager};

use crate::backend;
use crate::cookie::CookieId;
use crate::counters::LayerCounters;
use crate::error::SessionError;
use crate::settings::{NotReady, Settings};

/// What the request knows of its session so far.
#[derive(Debug, Default)]
pub(crate) enum Loaded {
    /// Not looked up yet (lazy).
    #[default]
    Unloaded,
    /// No session: no cookie, or an unknown, expired (idle or past its max lifetime) or malformed one.
    Absent,
    /// The session.
    Present(Handle),
}

#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) current: Loaded,
    /// Sessions invalidated by this request and replaced by a new one; committed at the end.
    pub(crate) retired: Vec<Handle>,
    /// Whether this request created `current`.
    pub(crate) created: bool,
    /// Whether this request gave `current` a new id.
    pub(crate) cycled: bool,
    /// Whether the layer rebound `current` to this node before the handler ran.
    pub(crate) rebound: bool,
    /// Attributes this request found stale (counted and logged once each).
    pub(crate) stale: Vec<String>,
}

/// One request's view of its session. Shared (`Arc`) by the layer and every extractor clone.
#[derive(Debug)]
pub(crate) struct RequestSession {
    pub(crate) manager: SessionManager,
    pub(crate) config: Arc<Settings>,
    pub(crate) counters: Arc<LayerCounters>,
    /// The well-formed session cookie, if any.
    pub(crate) cookie: Option<CookieId>,
    /// The path when it matched the filter: reads only.
    pub(crate) filtered: Option<String>,
    pub(crate) state: Mutex<State>,
}

impl RequestSession {
    /// Looks the cookie's session up, once.
    pub(crate) async fn load(&self, st: &mut State) {
        if let Loaded::Unloaded = st.current {
            st.current = match &self.cookie {
                Some(c) => match backend::get(&self.manager, &c.id).await {
                    Some(h) => Loaded::Present(h),
                    None => Loaded::Absent,
                },
                None => Loaded::Absent,
            };
        }
    }

    /// The live (not invalidated) session, loading it if needed.
    pub(crate) async fn live<'a>(&self, st: &'a mut State) -> Option<&'a Handle> {
        self.load(st).await;
        match &st.current {
            Loaded::Present(h) if !h.is_invalidated() => Some(h),
            _ => None,
        }
    }

    /// The live session, created if there is none: for writes.
    pub(crate) async fn for_write<'a>(&self, st: &'a mut State) -> Result<&'a Handle, SessionError> {
        if let Some(path) = &self.filtered {
            return Err(SessionError::FilteredPath { path: path.clone() });
        }
        self.load(st).await;
        let needs_new = match &st.current {
            Loaded::Present(h) => h.is_invalidated(),
            _ => true,
        };
        if needs_new {
            self.ensure_ready().await?;
            let h = match backend::create(&self.manager).await {
                Ok(h) => h,
                Err(e) => {
                    if matches!(e, SessionError::TooManySessions { .. }) {
                        self.counters.too_many_sessions.inc();
                    }
                    return Err(e);
                }
            };
            self.counters.created.inc();
            if let Loaded::Present(old) = std::mem::replace(&mut st.current, Loaded::Present(h)) {
                st.retired.push(old);
            }
            st.created = true;
            st.cycled = false;
        }
        match &st.current {
            Loaded::Present(h) => Ok(h),
            _ => unreachable!("a session was just stored"),
        }
    }

    /// Waits for (or refuses) a node still receiving its state transfer, per the config.
    pub(crate) async fn ensure_ready(&self) -> Result<(), SessionError> {
        if backend::is_ready(&self.manager) {
            return Ok(());
        }
        let ready = match self.config.not_ready {
            NotReady::ServiceUnavailable { .. } => false,
            NotReady::Wait { timeout } => backend::wait_ready(&self.manager, timeout).await,
        };
        if ready {
            Ok(())
        } else {
            self.counters.not_ready.inc();
            Err(SessionError::NotReady {
                retry_after: self.config.retry_after(),
            })
        }
    }

    /// Reads `key`. A value that does not decode into `T` is counted and logged once per request
    /// and attribute, then `Err(StaleValue)`; [`Session::get`](crate::Session::get) turns that into
    /// `Ok(None)`.
    pub(crate) async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, SessionError> {
        let mut st = self.state.lock().await;
        let Some(h) = self.live(&mut st).await else {
            return Ok(None);
        };
        match h.get::<T>(key) {
            Ok(v) => Ok(v),
            Err(e) => {
                let tribes_sessions::AttributeError::Decode { name, type_name, cause } = &e else {
                    return Err(SessionError::Value {
                        key: key.to_owned(),
                        source: e,
                    });
                };
                let log_id = h.id().log_id();
                if !st.stale.contains(name) {
                    self.counters.stale_values.inc();
                    tracing::warn!(
                        context = %self.manager.context(),
                        session = %log_id,
                        attribute = %name,
                        r#type = type_name,
                        %cause,
                        "session attribute does not decode into the requested type (written by another build?); treated as absent"
                    );
                    st.stale.push(name.clone());
                }
                let (key, type_name) = (name.clone(), *type_name);
                Err(SessionError::StaleValue {
                    key,
                    type_name,
                    source: e,
                })
            }
        }
    }

    pub(crate) async fn insert<T: Serialize>(&self, key: &str, value: &T) -> Result<(), SessionError> {
        let mut st = self.state.lock().await;
        let h = self.for_write(&mut st).await?;
        h.insert(key, value).map_err(|e| SessionError::Value {
            key: key.to_owned(),
            source: e,
        })
    }

    pub(crate) async fn remove(&self, key: &str) -> Result<(), SessionError> {
        let mut st = self.state.lock().await;
        if self.filtered.is_some() {
            return Err(SessionError::FilteredPath {
                path: self.filtered.clone().unwrap_or_default(),
            });
        }
        if let Some(h) = self.live(&mut st).await {
            h.remove(key);
        }
        Ok(())
    }

    pub(crate) async fn invalidate(&self) -> Result<(), SessionError> {
        let mut st = self.state.lock().await;
        if let Some(path) = &self.filtered {
            return Err(SessionError::FilteredPath { path: path.clone() });
        }
        if let Some(h) = self.live(&mut st).await {
            h.invalidate();
        }
        Ok(())
    }

    pub(crate) async fn cycle_id(&self) -> Result<Option<String>, SessionError> {
        let mut st = self.state.lock().await;
        if let Some(path) = &self.filtered {
            return Err(SessionError::FilteredPath { path: path.clone() });
        }
        let Some(h) = self.live(&mut st).await else {
            return Ok(None);
        };
        let old = h.id();
        let id = h.cycle_id();
        tracing::debug!(
            context = %self.manager.context(),
            from = %old.log_id(),
            to = %id.log_id(),
            "session id cycled (the old id ends on every node when the response is ready)"
        );
        let value = crate::cookie::value(&id, &h.route());
        st.cycled = true;
        Ok(Some(value))
    }

    pub(crate) async fn id(&self) -> Option<String> {
        let mut st = self.state.lock().await;
        let h = self.live(&mut st).await?;
        Some(crate::cookie::value(&h.id(), &h.route()))
    }

    pub(crate) async fn log_id(&self) -> Option<tribes_sessions::LogId> {
        let mut st = self.state.lock().await;
        let h = self.live(&mut st).await?;
        Some(h.id().log_id())
    }

    pub(crate) async fn exists(&self) -> bool {
        let mut st = self.state.lock().await;
        self.live(&mut st).await.is_some()
    }

    pub(crate) async fn is_new(&self) -> bool {
        let mut st = self.state.lock().await;
        self.live(&mut st).await.is_some() && st.created
    }
}

mod principals;
