//! The manager's principal calls: log in (with the session limit), list a principal's
//! sessions, log out everywhere. The decisions are the node's and the core's
//! (`node/queries.rs`, `core/principals.rs`); this file waits for them and commits.

use std::sync::atomic::Ordering;

use tokio::sync::oneshot;

use super::{SessionManager, lock};
use crate::data::Op;
use crate::id::SessionId;
use crate::listener::unix_ms;
use crate::principal::{
    MaxSessionsPolicy, PRINCIPAL_ATTRIBUTE, PrincipalError, PrincipalRecord, PrincipalSession, Summary, beyond_limit,
};
use crate::session::SessionHandle;
use crate::wire::Msg;
use crate::{ClusterEvent, MemberAck};

/// Where a principal query's answer goes: the sessions found, and whether every member
/// asked answered.
pub(super) type QueryWaiter = oneshot::Sender<(Vec<Summary>, bool)>;

/// The principal a unit of work logs its session in to, if it sets one.
pub(super) fn login_in(ops: &[Op]) -> Option<String> {
    ops.iter().find_map(|op| match op {
        Op::Set(name, value) if &**name == PRINCIPAL_ATTRIBUTE => {
            rmp_serde::from_slice::<PrincipalRecord>(&value.0).ok().map(|r| r.name)
        }
        _ => None,
    })
}

/// How a commit that invalidates a session announces it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Ending {
    Invalidated,
    /// For the session limit.
    Evicted,
}

/// The cluster events of a unit of work's ops on session `key`.
pub(super) fn cluster_events(
    key: SessionId,
    ops: &[Op],
    principal: Option<String>,
    ending: Ending,
) -> Vec<ClusterEvent> {
    let mut events = Vec::new();
    if let Some(principal) = login_in(ops) {
        events.push(ClusterEvent::PrincipalSet { id: key, principal });
    }
    for op in ops {
        match op {
            Op::ChangeId(new) => events.push(ClusterEvent::IdChanged { old: key, new: *new }),
            Op::Invalidate => events.push(match (ending, principal.clone()) {
                (Ending::Evicted, Some(principal)) => ClusterEvent::Evicted { id: key, principal },
                (_, principal) => ClusterEvent::Invalidated { id: key, principal },
            }),
            _ => {}
        }
    }
    events
}

/// What [`SessionManager::invalidate_principal`] did.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct LogoutReport {
    /// The sessions of the principal this node held and ended.
    pub ended_here: usize,
    /// Each other member's delivery of the logout (acknowledged in sync-ack mode, after
    /// it ended its copies).
    pub members: Vec<MemberAck>,
}

impl SessionManager {
    /// Logs `session` in as `principal` (Tomcat's `Session.setPrincipal`; the attribute
    /// [`PRINCIPAL_ATTRIBUTE`] replicates with the session and is indexed on every node).
    /// Call [`SessionHandle::cycle_id`] too at login (session fixation).
    ///
    /// With [`with_max_sessions_per_principal`](crate::SessionManagerBuilder::with_max_sessions_per_principal),
    /// the principal's other live sessions across the cluster are counted first:
    /// [`MaxSessionsPolicy::Refuse`] refuses this login at the limit,
    /// [`MaxSessionsPolicy::EvictOldest`] invalidates the oldest logins to make room.
    /// Two logins that race on two nodes may both pass that count; then one deterministic
    /// rule (`EvictOldest`: the oldest logins go; `Refuse`: all but the `max` oldest go;
    /// ties by id) evicts what is over the limit:
    /// - DeltaManager (every node holds every session): the coordinator (the serving member
    ///   with the smallest id, while it sees a majority) applies it at each tick, so the
    ///   limit holds once the cluster is quiet, in either send mode (the simulation checks
    ///   it over 2,000 seeds);
    /// - BackupManager: each login checks again after its commit, so in sync-ack mode at
    ///   most `max` remain once both commits returned (each commit reached every server
    ///   before its check, so at least one check sees both); in async mode, once the next
    ///   login of that principal ran.
    ///
    /// Evictions are announced as [`ClusterEvent::Evicted`](crate::ClusterEvent::Evicted).
    ///
    /// # Errors
    /// [`PrincipalError::TooManySessions`] (policy `Refuse`; nothing changed),
    /// [`PrincipalError::Attribute`] when the handle was invalidated.
    pub async fn set_principal(&self, session: &SessionHandle, principal: &str) -> Result<(), PrincipalError> {
        if let Some((max, policy)) = self.inner.b.max_sessions {
            let id = session.id();
            let others: Vec<Summary> = self
                .principal_summaries(principal)
                .await?
                .into_iter()
                .filter(|s| s.id != id && s.id != session.lock().key)
                .collect();
            if others.len() >= max {
                match policy {
                    MaxSessionsPolicy::Refuse => {
                        return Err(PrincipalError::TooManySessions {
                            principal: principal.to_owned(),
                            max,
                            sessions: others.len(),
                        });
                    }
                    MaxSessionsPolicy::EvictOldest => {
                        let evict = beyond_limit(others, max - 1);
                        self.evict(principal, evict.iter().map(|s| s.id)).await;
                    }
                }
            }
        }
        let record = PrincipalRecord {
            name: principal.to_owned(),
            since_ms: unix_ms(self.inner.now()),
        };
        session.record_principal(&record)?;
        Ok(())
    }

    /// Every live session of `principal` in the cluster, oldest login first, with its
    /// times and the route of the node that serves it. A DeltaManager node answers from
    /// its own index (it holds every session); a BackupManager node asks every member
    /// that serves the context (one round trip, bounded by the ack timeout; a member that
    /// does not answer in time is left out, with a warning in the log).
    ///
    /// # Errors
    /// [`PrincipalError::SharedStore`]: with a shared store no node knows the others'
    /// sessions.
    pub async fn sessions_of(&self, principal: &str) -> Result<Vec<PrincipalSession>, PrincipalError> {
        let mut all = self.principal_summaries(principal).await?;
        all.sort_by_key(|s| (s.since_ms, s.id));
        Ok(all.iter().map(Summary::public).collect())
    }

    /// Logs `principal` out everywhere (after a password change, or "log out of every
    /// device"): every session of the principal logged in until now ends on every node,
    /// and a request that carries one of their cookies afterwards, on any node, has no
    /// session. In sync-ack mode this returns once every member serving the context
    /// acknowledged it, after ending its copies; in async mode, once it is sent.
    ///
    /// During a partition the other side learns of the logout at the heal (the logout is
    /// sent to every member that starts serving): a session of the principal logged in
    /// there before the logout ends then; a login after the logout (by the clocks of the
    /// nodes, which must agree within the session timeouts) is kept. The logout is
    /// remembered for the tombstone time to live (at least 10 minutes).
    ///
    /// # Example
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::SystemTime;
    /// use tribes_sessions::SessionManager;
    /// let key = tribes::Keyring::generate(1, &mut rand::rng());
    /// let channel = tribes::Channel::builder("node-a").with_cluster_key(key).with_bind("127.0.0.1:0".parse()?).start().await?;
    /// let manager = SessionManager::builder("/shop").start(channel).await?;
    /// // alice logs in twice (two browsers).
    /// for _ in 0..2 {
    ///     let session = manager.create(SystemTime::now())?;
    ///     session.cycle_id();
    ///     manager.set_principal(&session, "alice").await?;
    ///     manager.commit(&session).await?;
    /// }
    /// assert_eq!(manager.sessions_of("alice").await?.len(), 2);
    /// // Her password changed: log her out everywhere.
    /// let report = manager.invalidate_principal("alice").await?;
    /// assert_eq!(report.ended_here, 2);
    /// assert!(manager.sessions_of("alice").await?.is_empty());
    /// manager.shutdown().await;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`PrincipalError::ShutDown`]; [`PrincipalError::SharedStore`].
    pub async fn invalidate_principal(&self, principal: &str) -> Result<LogoutReport, PrincipalError> {
        if self.inner.shut.load(Ordering::Relaxed) {
            return Err(PrincipalError::ShutDown {
                context: self.context().to_owned(),
            });
        }
        if self.inner.shared() {
            return Err(PrincipalError::SharedStore {
                context: self.context().to_owned(),
            });
        }
        // The sessions it ends across the cluster, for the `Invalidated` events (this node
        // announces them all: the others end their copies without announcing).
        let known = self.principal_summaries(principal).await.unwrap_or_default();
        let now_ms = self.inner.now_ms();
        let mut out = Vec::new();
        let ended = self.inner.core().log_out_principal(now_ms, principal, now_ms, &mut out);
        let mut all: Vec<SessionId> = known.iter().map(|s| s.id).chain(ended.iter().copied()).collect();
        all.sort_unstable();
        all.dedup();
        for id in all {
            self.inner.announce(&ClusterEvent::Invalidated {
                id,
                principal: Some(principal.to_owned()),
            });
        }
        // The logout goes out in the manager's send mode (a sync-ack call waits for every
        // member); the rest (events) is done as usual.
        let mut sends = Vec::new();
        out.retain(|e| match e {
            crate::core::Effect::Send(to, msg @ Msg::LoggedOut(_)) => {
                sends.push((to.clone(), msg.clone()));
                false
            }
            _ => true,
        });
        self.inner.perform(out);
        // (The sessions ended here leave the store through their `Destroyed` events.)
        let mut report = LogoutReport {
            ended_here: ended.len(),
            members: Vec::new(),
        };
        let (mode, timeout) = (self.inner.b.send_mode, self.inner.b.ack_timeout);
        for (to, msg) in sends {
            let (_, members) = self.inner.send(&to, &msg, mode, timeout).await;
            report.members.extend(members);
        }
        tracing::info!(context = %self.context(), sessions_here = ended.len(), members = report.members.len(), "a principal was logged out everywhere");
        Ok(report)
    }

    /// The principal's sessions in the cluster, as the node gathers them.
    async fn principal_summaries(&self, principal: &str) -> Result<Vec<Summary>, PrincipalError> {
        if self.inner.shared() {
            return Err(PrincipalError::SharedStore {
                context: self.context().to_owned(),
            });
        }
        let waiter = self.inner.next_waiter.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.inner.query_waiters).insert(waiter, tx);
        let outputs = {
            let now = self.inner.clocks();
            let mut node = self.inner.node();
            node.begin_principal_query(now, principal, waiter);
            node.drain_outputs()
        };
        self.inner.act(outputs);
        self.inner.kick.notify_one();
        // The node ends the query at its deadline; this bound only covers a driver that stopped.
        match tokio::time::timeout(self.inner.b.ack_timeout * 2, rx).await {
            Ok(Ok((sessions, _complete))) => Ok(sessions),
            _ => {
                lock(&self.inner.query_waiters).remove(&waiter);
                Ok(Vec::new())
            }
        }
    }

    /// After a login's commit: if the principal has more live sessions than the limit
    /// (two logins raced on two nodes), evict by the policy's rule, the same on every node.
    /// (A DeltaManager's coordinator does this at its ticks for every principal: see
    /// `core/principals.rs`; two checks would announce an eviction twice.)
    pub(super) async fn enforce_session_limit(&self, principal: &str) {
        let Some((max, policy)) = self.inner.b.max_sessions else {
            return;
        };
        if self.inner.b.kind == crate::ManagerKind::Delta {
            return;
        }
        let Ok(all) = self.principal_summaries(principal).await else {
            return;
        };
        if all.len() <= max {
            return;
        }
        let evict: Vec<SessionId> = match policy {
            MaxSessionsPolicy::EvictOldest => beyond_limit(all, max).iter().map(|s| s.id).collect(),
            MaxSessionsPolicy::Refuse => {
                // The logins that should have been refused: all but the `max` oldest.
                let mut all = all;
                all.sort_by_key(|s| (s.since_ms, s.id));
                all.split_off(max).iter().map(|s| s.id).collect()
            }
        };
        self.evict(principal, evict.into_iter()).await;
    }

    /// Invalidates sessions for the session limit (each through the usual commit: fetched
    /// first under the BackupManager, replicated, tombstoned).
    async fn evict(&self, principal: &str, ids: impl Iterator<Item = SessionId>) {
        for id in ids {
            let Some(victim) = self.get(&id).await else { continue };
            victim.invalidate();
            // Boxed: a commit may enforce the limit, which commits (never a login, so once).
            match Box::pin(self.commit_ending(&victim, Ending::Evicted)).await {
                Ok(_) => {
                    tracing::info!(context = %self.context(), session = %id.log_id(), "a session was evicted: its principal logged in once more than the limit allows");
                }
                Err(e) => {
                    tracing::warn!(context = %self.context(), session = %id.log_id(), principal_sessions_limit = ?self.inner.b.max_sessions.map(|m| m.0), "evicting a session over the principal's limit failed: {e}; the next login of {principal} tries again");
                }
            }
        }
    }
}
