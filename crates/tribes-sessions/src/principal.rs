//! Principals: who a session belongs to (Tomcat's `Session.getPrincipal()` and its
//! `ClusterSingleSignOn`), and the index from a principal to its sessions.
//!
//! The principal is an attribute with a meaning ([`PRINCIPAL_ATTRIBUTE`]): it is written,
//! replicated, transferred, repaired and destroyed with the session, so every node's
//! index is a function of the sessions it holds and is exactly as right as they are,
//! through id changes, invalidation, expiry, state transfer and anti-entropy.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::data::{SessionData, Stamp};
use crate::id::{LogId, SessionId};
use crate::listener::from_unix_ms;

/// The reserved attribute that holds a session's principal (set it with
/// [`SessionManager::set_principal`](crate::SessionManager::set_principal); it always
/// replicates, whatever the attribute filter says).
pub const PRINCIPAL_ATTRIBUTE: &str = "tribes.principal";

/// The principal attribute's value: the name, and since when (unix ms) the session
/// belongs to it (a logout everywhere ends the sessions logged in before it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PrincipalRecord {
    pub(crate) name: String,
    pub(crate) since_ms: u64,
}

impl PrincipalRecord {
    pub(crate) fn encode(&self) -> Vec<u8> {
        rmp_serde::to_vec(self).expect("a principal always encodes")
    }

    /// The principal of a session, if it has one that decodes.
    pub(crate) fn of(data: &SessionData) -> Option<PrincipalRecord> {
        rmp_serde::from_slice(data.value(PRINCIPAL_ATTRIBUTE)?).ok()
    }
}

/// What to do when a principal logs in once more than
/// [`with_max_sessions_per_principal`](crate::SessionManagerBuilder::with_max_sessions_per_principal) allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub enum MaxSessionsPolicy {
    /// The new login wins: the principal's oldest sessions are invalidated (evicted).
    EvictOldest,
    /// The new login is refused with [`PrincipalError::TooManySessions`] ("you are logged
    /// in elsewhere").
    Refuse,
}

/// Why a principal call failed. Nothing changed unless the variant says so.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PrincipalError {
    /// The login is refused: the principal already has `max` live sessions in the cluster
    /// ([`MaxSessionsPolicy::Refuse`]). Tell the user they are logged in elsewhere.
    #[error(
        "'{principal}' already has {sessions} live sessions, the limit is {max}: the login is refused (log out elsewhere, or use MaxSessionsPolicy::EvictOldest)"
    )]
    TooManySessions {
        /// The principal.
        principal: String,
        /// The limit.
        max: usize,
        /// Its live sessions found.
        sessions: usize,
    },
    /// The session handle cannot take the principal (it was invalidated).
    #[error(transparent)]
    Attribute(#[from] crate::AttributeError),
    /// With a shared store no node holds the other nodes' sessions, so no node can list
    /// or count a principal's sessions.
    #[error(
        "context '{context}' keeps its sessions in a shared store: principal queries and session limits need replication (use StoreMode::WriteThrough)"
    )]
    SharedStore {
        /// The context.
        context: String,
    },
    /// The manager has shut down.
    #[error("the session manager of context '{context}' has shut down")]
    ShutDown {
        /// The context.
        context: String,
    },
}

/// One live session of a principal, as [`SessionManager::sessions_of`](crate::SessionManager::sessions_of) lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PrincipalSession {
    /// The session's id (a secret: show [`PrincipalSession::log_id`] instead).
    pub id: SessionId,
    /// A short hash of the id, safe to show and log.
    pub log_id: LogId,
    /// When the session was created.
    pub created: SystemTime,
    /// Its last access known to the members that answered.
    pub last_accessed: SystemTime,
    /// Since when it belongs to the principal (the login).
    pub since: SystemTime,
    /// The route of the node that serves it (the cookie's route: the node that served it
    /// last, or that it was rebound to after a failover).
    pub route: String,
}

/// The part of a session a principal query sends back (wire data).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Summary {
    pub(crate) id: SessionId,
    pub(crate) version: u64,
    pub(crate) created_ms: u64,
    pub(crate) last_access_ms: u64,
    pub(crate) since_ms: u64,
    pub(crate) route: Arc<str>,
}

impl Summary {
    pub(crate) fn of(data: &SessionData, since_ms: u64) -> Summary {
        Summary {
            id: data.id,
            version: data.version,
            created_ms: data.created_ms,
            last_access_ms: data.last_access_ms,
            since_ms,
            route: data.route.clone(),
        }
    }

    /// Keeps the newer of two answers about one session (the freshest copy, and the
    /// latest access any member saw).
    pub(crate) fn merge(&mut self, other: &Summary) {
        let last = self.last_access_ms.max(other.last_access_ms);
        if other.version > self.version {
            *self = other.clone();
        }
        self.last_access_ms = last;
    }

    pub(crate) fn public(&self) -> PrincipalSession {
        PrincipalSession {
            id: self.id,
            log_id: self.id.log_id(),
            created: from_unix_ms(self.created_ms),
            last_accessed: from_unix_ms(self.last_access_ms),
            since: from_unix_ms(self.since_ms),
            route: self.route.to_string(),
        }
    }
}

/// Sorts sessions of one principal oldest login first (ties by id, so every node that
/// sees the same sessions orders them alike), and returns those past the `max` newest:
/// the ones [`MaxSessionsPolicy::EvictOldest`] evicts.
pub(crate) fn beyond_limit(mut sessions: Vec<Summary>, max: usize) -> Vec<Summary> {
    sessions.sort_by_key(|s| (s.since_ms, s.id));
    let extra = sessions.len().saturating_sub(max);
    sessions.truncate(extra);
    sessions
}

/// Principal -> the ids of its sessions held here, kept by the session table on every
/// change (`core/table.rs`).
#[derive(Default, Debug)]
pub(crate) struct PrincipalIndex {
    by_principal: HashMap<Arc<str>, BTreeSet<SessionId>>,
    /// Each indexed session's principal and the stamp of the attribute it was read from
    /// (an unchanged stamp needs no decoding).
    by_session: HashMap<SessionId, (Stamp, Arc<str>, u64)>,
}

impl PrincipalIndex {
    /// Re-reads the principal of `data` after a change; returns whether the session got a
    /// principal (or another one) just now.
    pub(crate) fn update(&mut self, data: &SessionData) -> bool {
        let attr = data.attr(PRINCIPAL_ATTRIBUTE).filter(|a| a.value.is_some());
        if attr.is_none() && self.by_session.is_empty() {
            // The usual case on the request path: no principals at all.
            return false;
        }
        match (attr, self.by_session.get(&data.id)) {
            (None, None) => false,
            (Some(a), Some((stamp, _, _))) if a.stamp == *stamp => false,
            (None, Some(_)) => {
                self.remove(&data.id);
                false
            }
            (Some(a), _) => {
                self.remove(&data.id);
                let Some(record) = PrincipalRecord::of(data) else {
                    return false;
                };
                let name: Arc<str> = record.name.into();
                self.by_principal.entry(name.clone()).or_default().insert(data.id);
                self.by_session.insert(data.id, (a.stamp, name, record.since_ms));
                true
            }
        }
    }

    pub(crate) fn remove(&mut self, id: &SessionId) {
        if let Some((_, name, _)) = self.by_session.remove(id)
            && let Some(set) = self.by_principal.get_mut(&name)
        {
            set.remove(id);
            if set.is_empty() {
                self.by_principal.remove(&name);
            }
        }
    }

    /// The ids of `principal`'s sessions held here, in id order.
    pub(crate) fn ids_of(&self, principal: &str) -> Vec<SessionId> {
        self.by_principal
            .get(principal)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    /// The principals with more than `max` sessions here.
    pub(crate) fn over_limit(&self, max: usize) -> Vec<Arc<str>> {
        let mut over: Vec<Arc<str>> = self
            .by_principal
            .iter()
            .filter(|(_, ids)| ids.len() > max)
            .map(|(p, _)| p.clone())
            .collect();
        over.sort();
        over
    }

    /// The principal and login time of a session held here.
    pub(crate) fn principal_of(&self, id: &SessionId) -> Option<(&Arc<str>, u64)> {
        self.by_session.get(id).map(|(_, name, since)| (name, *since))
    }

    /// Every principal with a session here, with how many.
    #[cfg(test)]
    pub(crate) fn counts(&self) -> std::collections::BTreeMap<String, usize> {
        self.by_principal
            .iter()
            .map(|(p, s)| (p.to_string(), s.len()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Blob;

    fn session(n: u8, principal: Option<(&str, u64)>, stamp: u64) -> SessionData {
        let mut d = SessionData::new(SessionId::from_bytes([n; 16]), "a".into(), 0, 1000);
        if let Some((name, since_ms)) = principal {
            let value = PrincipalRecord {
                name: name.into(),
                since_ms,
            }
            .encode();
            d.write_attr(
                PRINCIPAL_ATTRIBUTE,
                Some(Blob(value.into())),
                Stamp {
                    version: stamp,
                    writer: 1,
                },
            );
        }
        d
    }

    #[test]
    fn the_index_follows_the_principal_attribute() {
        let mut index = PrincipalIndex::default();
        let a = session(1, Some(("alice", 5)), 1);
        assert!(index.update(&a), "a new principal is news");
        assert!(!index.update(&a), "the same stamp is not re-read");
        index.update(&session(2, Some(("alice", 6)), 1));
        index.update(&session(3, None, 0));
        assert_eq!(index.ids_of("alice").len(), 2);
        // Another principal on the same session moves it.
        let mut moved = session(1, Some(("bob", 7)), 2);
        moved.id = a.id;
        assert!(index.update(&moved));
        assert_eq!(index.ids_of("alice"), vec![SessionId::from_bytes([2; 16])]);
        assert_eq!(
            index.principal_of(&a.id).map(|(p, s)| (p.to_string(), s)),
            Some(("bob".into(), 7))
        );
        // Cleared (a removed attribute keeps its stamp, without a value).
        let mut cleared = moved.clone();
        cleared.write_attr(PRINCIPAL_ATTRIBUTE, None, Stamp { version: 3, writer: 1 });
        index.update(&cleared);
        assert!(index.ids_of("bob").is_empty());
        index.remove(&SessionId::from_bytes([2; 16]));
        assert!(index.counts().is_empty(), "{:?}", index.counts());
    }

    #[test]
    fn the_oldest_logins_are_beyond_the_limit_in_the_same_order_everywhere() {
        let s = |n: u8, since_ms: u64| Summary::of(&session(n, None, 0), since_ms);
        let all = vec![s(3, 30), s(1, 10), s(2, 10), s(4, 40)];
        let out: Vec<u8> = beyond_limit(all.clone(), 2)
            .iter()
            .map(|s| s.id.as_bytes()[0])
            .collect();
        assert_eq!(out, vec![1, 2]);
        assert!(beyond_limit(all, 4).is_empty());
    }
}
