//! The principal calls of one request: log in, who, log out here or everywhere,
//! and the sessions of a principal, through the manager the layer holds.

use tribes_sessions::{LogoutReport, PrincipalError, PrincipalSession};

use super::{Loaded, RequestSession};
use crate::error::SessionError;

/// A manager's principal error, as the extractor reports it.
fn session_error(context: &str, e: PrincipalError) -> SessionError {
    match e {
        PrincipalError::TooManySessions {
            principal,
            max,
            sessions,
        } => SessionError::LoggedInElsewhere {
            principal,
            max,
            sessions,
        },
        other => SessionError::Unavailable {
            context: context.to_owned(),
            source: other.into(),
        },
    }
}

impl RequestSession {
    /// Logs the request's session in as `principal` (created if there is none), then gives
    /// it a new id unless this request created it or already cycled it.
    pub(crate) async fn set_principal(&self, principal: &str) -> Result<(), SessionError> {
        let mut st = self.state.lock().await;
        let existed = self.live(&mut st).await.is_some();
        // A cheap clone of the handle (shared state), so `st` stays usable below.
        let h = self.for_write(&mut st).await?.clone();
        if let Err(e) = self.manager.set_principal(&h, principal).await {
            if !existed {
                // The session was made for this login only: it ends unseen (no cookie).
                if let Loaded::Present(made) = std::mem::replace(&mut st.current, Loaded::Absent) {
                    made.invalidate();
                    st.retired.push(made);
                }
                st.created = false;
            }
            if matches!(e, PrincipalError::TooManySessions { .. }) {
                tracing::info!(context = %self.manager.context(), "login refused: {e}");
            }
            return Err(session_error(self.manager.context(), e));
        }
        // A login raises the session's privileges: an id someone may have planted or seen
        // before it must stop working (session fixation). A session created by this
        // request has an id nobody has seen yet.
        if !st.created && !st.cycled {
            let old = h.id();
            let id = h.cycle_id();
            tracing::debug!(
                context = %self.manager.context(),
                from = %old.log_id(),
                to = %id.log_id(),
                "session id cycled at login"
            );
            st.cycled = true;
        }
        Ok(())
    }

    pub(crate) async fn principal(&self) -> Option<String> {
        let mut st = self.state.lock().await;
        self.live(&mut st).await?.principal()
    }

    pub(crate) async fn clear_principal(&self) -> Result<(), SessionError> {
        let mut st = self.state.lock().await;
        if let Some(path) = &self.filtered {
            return Err(SessionError::FilteredPath { path: path.clone() });
        }
        if let Some(h) = self.live(&mut st).await {
            h.clear_principal();
        }
        Ok(())
    }

    /// Logs the session's principal out on every node; this request's session ends too.
    pub(crate) async fn invalidate_principal(&self) -> Result<Option<LogoutReport>, SessionError> {
        let mut st = self.state.lock().await;
        if let Some(path) = &self.filtered {
            return Err(SessionError::FilteredPath { path: path.clone() });
        }
        let Some(h) = self.live(&mut st).await else {
            return Ok(None);
        };
        let Some(principal) = h.principal() else {
            return Ok(None);
        };
        let report = self
            .manager
            .invalidate_principal(&principal)
            .await
            .map_err(|e| session_error(self.manager.context(), e))?;
        // Ended with the others (or, if its login is not committed yet, by this mark): the
        // layer removes the cookie when the response is ready.
        h.invalidate();
        let unconfirmed: Vec<String> = report
            .members
            .iter()
            .filter(|m| !m.outcome.is_ok())
            .map(|m| m.member.clone())
            .collect();
        if !unconfirmed.is_empty() {
            self.counters.sync_failures.inc();
            tracing::warn!(
                context = %self.manager.context(),
                ?unconfirmed,
                "log out everywhere not confirmed by every member: they end the sessions when the logout reaches them (it is sent again to members that start serving)"
            );
        }
        Ok(Some(report))
    }

    pub(crate) async fn sessions_of(&self, principal: &str) -> Result<Vec<PrincipalSession>, SessionError> {
        self.manager
            .sessions_of(principal)
            .await
            .map_err(|e| session_error(self.manager.context(), e))
    }
}
