//! The decisions of one context's manager, with no sockets and no clock.
//!
//! Call order: the driver feeds every local operation (`create`, `commit`, `touch`),
//! every decoded message (`handle_msg`), every change of the members serving the
//! context (`handle_servers_changed`) and a periodic `handle_tick(now)` through these
//! methods; each appends [`Effect`]s (messages to send, listener events) to `out`,
//! which the driver performs. During a state transfer (`begin_transfer` ..
//! `finish_transfer`) replicated changes are queued and applied after the snapshot;
//! the per-field stamps of [`SessionData`] make those the snapshot already contains
//! no-ops (counted in `dropped_in_snapshot`).

use std::collections::HashMap;
use std::sync::Arc;

use tribes::MemberId;

use crate::data::{Delta, Op, SessionData, Stamp, writer_of};
use crate::error::{CreateError, ReplicationError};
use crate::id::SessionId;
use crate::kind::{ManagerKind, ReplicationMode};
use crate::listener::{DestroyReason, Origin, SessionEvent};
use crate::placement;
use crate::wire::Msg;

mod anti_entropy;
mod backup;
mod expiry;
mod expiry_events;
mod merge;
mod messages;
mod principals;
mod rename;
mod table;

use rename::Tomb;
use table::SessionTable;

pub(crate) type Filter = Arc<dyn Fn(&str) -> bool + Send + Sync>;

#[derive(Clone)]
pub(crate) struct CoreConfig {
    pub(crate) context: String,
    pub(crate) kind: ManagerKind,
    pub(crate) replication: ReplicationMode,
    pub(crate) filter: Option<Filter>,
    pub(crate) max_active: Option<usize>,
    pub(crate) max_inactive_ms: u64,
    /// How late an expiry may be, to cover access times not yet received (2 x touch interval).
    pub(crate) grace_ms: u64,
    pub(crate) tombstone_ttl_ms: u64,
    /// How often to run an anti-entropy round with one other member (0: never).
    pub(crate) sync_interval_ms: u64,
    /// The absolute lifetime of a session from its creation, however active (OWASP).
    pub(crate) max_lifetime_ms: Option<u64>,
    /// How often the accesses recorded since the last batch are sent (`Msg::Touches`).
    pub(crate) touch_interval_ms: u64,
    /// Sessions may come from a store that nodes this one never met also read, so a node
    /// that started alone does not deliver expiry events at once (`core/expiry_events.rs`).
    pub(crate) store_backed: bool,
}

#[cfg(test)]
impl CoreConfig {
    /// Settings for unit tests: context `/t`, deltas, no filter, idle after 10 minutes,
    /// 1 s grace and touch interval, no anti-entropy rounds, no store. Tests change what
    /// they need with `..CoreConfig::for_tests(kind)`.
    pub(crate) fn for_tests(kind: ManagerKind) -> Self {
        CoreConfig {
            context: "/t".into(),
            kind,
            replication: ReplicationMode::Deltas,
            filter: None,
            max_active: None,
            max_inactive_ms: 600_000,
            grace_ms: 1_000,
            touch_interval_ms: 1_000,
            tombstone_ttl_ms: 600_000,
            sync_interval_ms: 0,
            max_lifetime_ms: None,
            store_backed: false,
        }
    }
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Effect {
    Send(Vec<MemberId>, Msg),
    Event(SessionEvent),
    /// Deliver the cluster-wide `Expired` event of this session here
    /// (`core/expiry_events.rs`: this node is the coordinator).
    Expired {
        id: SessionId,
        principal: Option<Arc<str>>,
    },
    /// This node evicted the session for the limit of its principal (`core/principals.rs`).
    Evicted {
        id: SessionId,
        principal: Arc<str>,
    },
}

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Counters {
    pub(crate) deltas_applied: u64,
    pub(crate) conflicts: u64,
    pub(crate) dropped_gone: u64,
    pub(crate) dropped_in_snapshot: u64,
    pub(crate) expired: u64,
    pub(crate) invalidated: u64,
    pub(crate) promotions: u64,
    pub(crate) snapshot_sessions: u64,
    /// Anti-entropy rounds started by this node.
    pub(crate) sync_rounds: u64,
    /// Sessions anti-entropy found different and repaired (sent, destroyed or dropped).
    pub(crate) sync_repaired: u64,
    /// Sessions ended here at their max lifetime (by a request or by the sweep).
    pub(crate) absolute_timeouts: u64,
}

/// The outcome of a local commit: what to send and the session as it now is.
///
/// `sends` go out in the commit's send mode (a sync-ack commit waits for every one):
/// the change to the members that hold the session, the whole session to a member
/// that must hold it from now on, and (BackupManager) the claim to the others, so
/// that no member keeps treating an older copy as current once the commit is acked.
#[derive(Debug)]
pub(crate) struct Commit {
    pub(crate) sends: Vec<(Vec<MemberId>, Msg)>,
    pub(crate) data: Option<SessionData>,
}

pub(crate) struct Core {
    cfg: Arc<CoreConfig>,
    local: MemberId,
    writer: u64,
    sessions: SessionTable,
    tombs: HashMap<SessionId, Tomb>,
    servers: Vec<MemberId>,
    touches: HashMap<SessionId, u64>,
    transferring: bool,
    queue: Vec<(MemberId, Msg)>,
    next_sync_ms: u64,
    next_touch_ms: u64,
    sync_cursor: usize,
    /// Sessions idle past their interval here, with when to expire them unless a member
    /// answers the `Expiring` question with a later access.
    expiring: HashMap<SessionId, u64>,
    /// BackupManager: sessions fetched for a request here, and when: a `Drop` sent
    /// before the fetch was answered must not take the copy the request is using.
    fetched: HashMap<SessionId, u64>,
    /// When the set of servers last changed (a member joined or left).
    servers_changed_ms: u64,
    /// Logouts everywhere: principal -> sessions logged in at or before this time end
    /// (`core/principals.rs`).
    logouts: HashMap<Arc<str>, u64>,
    /// Cluster-wide expiry events (`core/expiry_events.rs`).
    expiries: expiry_events::ExpiryEvents,
    /// The session limit per principal (`core/principals.rs`).
    session_limit: Option<(usize, crate::principal::MaxSessionsPolicy)>,
    pub(crate) counters: Counters,
}

/// How long after a member joined or left a BackupManager primary still checks its
/// copy with the other servers before answering: a promotion (the old primary left) and
/// a claim (a request served elsewhere) can cross, and leave two nodes each believing it
/// is the primary until the repair message arrives.
const SETTLE_MS: u64 = 10_000;

/// How long a fetched copy is safe from a `Drop` (longer than any request).
pub(crate) const FETCH_HOLD_MS: u64 = 30_000;

impl Core {
    pub(crate) fn new(cfg: Arc<CoreConfig>, local: MemberId) -> Self {
        Core {
            cfg,
            local,
            writer: writer_of(local),
            sessions: SessionTable::default(),
            tombs: HashMap::new(),
            servers: Vec::new(),
            touches: HashMap::new(),
            transferring: false,
            queue: Vec::new(),
            next_sync_ms: 0,
            next_touch_ms: 0,
            sync_cursor: 0,
            expiring: HashMap::new(),
            fetched: HashMap::new(),
            servers_changed_ms: 0,
            logouts: HashMap::new(),
            expiries: Default::default(),
            session_limit: None,
            counters: Counters::default(),
        }
    }

    pub(crate) fn context(&self) -> &str {
        &self.cfg.context
    }

    pub(crate) fn kind(&self) -> ManagerKind {
        self.cfg.kind
    }

    pub(crate) fn len(&self) -> usize {
        self.sessions.len()
    }

    pub(crate) fn servers(&self) -> &[MemberId] {
        &self.servers
    }

    pub(crate) fn contains(&self, id: &SessionId) -> bool {
        self.sessions.contains_key(id)
    }

    /// For the simulation: every session held, in no particular order.
    #[cfg(test)]
    pub(crate) fn sessions(&self) -> impl Iterator<Item = &SessionData> {
        self.sessions.values()
    }

    /// For the simulation: whether `id` has a tombstone here.
    #[cfg(test)]
    pub(crate) fn is_tombstoned(&self, id: &SessionId) -> bool {
        self.tombs.contains_key(id)
    }

    pub(crate) fn is_primary(&self, id: &SessionId) -> bool {
        match (&self.cfg.kind, self.sessions.get(id)) {
            (_, None) => false,
            (ManagerKind::Delta, Some(_)) => true,
            (ManagerKind::Backup { .. }, Some(d)) => d.primary == Some(self.local),
        }
    }

    fn backup_count(&self) -> usize {
        match self.cfg.kind {
            ManagerKind::Delta => 0,
            ManagerKind::Backup { backup_count } => backup_count,
        }
    }

    fn all(&self) -> Vec<MemberId> {
        let mut all = self.servers.clone();
        all.push(self.local);
        all
    }

    /// Where changes to `id` go: every server (Delta), the backups (Backup).
    fn recipients(&self, id: SessionId) -> Vec<MemberId> {
        match self.cfg.kind {
            ManagerKind::Delta => self.servers.clone(),
            ManagerKind::Backup { backup_count } => placement::top(&self.all(), id, backup_count, Some(self.local)),
        }
    }

    fn replicate(&self, name: &str) -> bool {
        name == crate::principal::PRINCIPAL_ATTRIBUTE || self.cfg.filter.as_ref().is_none_or(|f| f(name))
    }

    pub(crate) fn create(&mut self, now_ms: u64, id: SessionId, route: Arc<str>) -> Result<SessionData, CreateError> {
        if let Some(max) = self.cfg.max_active
            && self.sessions.len() >= max
        {
            return Err(CreateError::TooManySessions {
                context: self.cfg.context.clone(),
                max,
            });
        }
        let mut data = SessionData::new(id, route, now_ms, self.cfg.max_inactive_ms);
        if matches!(self.cfg.kind, ManagerKind::Backup { .. }) {
            data.primary = Some(self.local);
        }
        self.sessions.insert(id, data.clone());
        Ok(data)
    }

    /// The session, unless it is gone, idle past its interval plus the grace, or past
    /// its max lifetime.
    pub(crate) fn get(&self, now_ms: u64, id: &SessionId) -> Option<SessionData> {
        self.sessions
            .get(id)
            .filter(|d| d.expires_at_ms().saturating_add(self.cfg.grace_ms) >= now_ms && !self.too_old(d, now_ms))
            .cloned()
    }

    /// Past its max lifetime: the creation time is the same on every node, so no node
    /// needs to ask the others before expiring it.
    fn too_old(&self, d: &SessionData, now_ms: u64) -> bool {
        self.cfg
            .max_lifetime_ms
            .is_some_and(|life| d.created_ms.saturating_add(life) < now_ms)
    }

    pub(crate) fn touch(&mut self, now_ms: u64, id: &SessionId) -> bool {
        match self.sessions.get_mut(id) {
            Some(mut d) => {
                d.last_access_ms = d.last_access_ms.max(now_ms);
                self.touches.insert(*id, d.last_access_ms);
                true
            }
            None => false,
        }
    }

    /// Applies a unit of work's ops locally and says what to send.
    pub(crate) fn commit(
        &mut self,
        now_ms: u64,
        key: SessionId,
        base: u64,
        mut ops: Vec<Op>,
        always_send: bool,
        out: &mut Vec<Effect>,
    ) -> Result<Commit, ReplicationError> {
        let Some(current) = self.sessions.get(&key) else {
            return Err(ReplicationError::Gone {
                context: self.cfg.context.clone(),
                id: key,
            });
        };
        if ops.is_empty() && !always_send {
            self.touch(now_ms, &key);
            return Ok(Commit {
                sends: Vec::new(),
                data: self.sessions.get(&key).cloned(),
            });
        }
        let is_backup = matches!(self.cfg.kind, ManagerKind::Backup { .. });
        // BackupManager: who held the session before this unit of work.
        let before = if is_backup { self.holders(key) } else { Vec::new() };
        let mut claimed = false;
        if is_backup && current.primary != Some(self.local) {
            // This node serves the session now: it becomes its primary.
            ops.push(Op::Primary(self.local));
            claimed = true;
        }
        if current.version == 0 && base == 0 && !ops.iter().any(|o| matches!(o, Op::Create { .. })) {
            // A new session's first commit carries its creation and metadata.
            let mut first = vec![
                Op::Create {
                    created_ms: current.created_ms,
                },
                Op::Route(current.route.as_ref().into()),
            ];
            if !ops.iter().any(|o| matches!(o, Op::MaxInactive(_))) {
                first.push(Op::MaxInactive(current.max_inactive_ms));
            }
            if is_backup && !ops.iter().any(|o| matches!(o, Op::Primary(_))) {
                first.push(Op::Primary(self.local));
            }
            first.append(&mut ops);
            ops = first;
        }
        let stamp = Stamp {
            version: current.version.max(base) + 1,
            writer: self.writer,
        };
        let delta = Delta {
            id: key,
            base,
            stamp,
            at_ms: now_ms,
            ops,
        };
        let new_id = self.apply_delta(&delta, Origin::Local, out);
        self.check_logouts(now_ms, out);
        let live = new_id.and_then(|id| self.sessions.get(&id).cloned());
        let id_now = live.as_ref().map_or(key, |d| d.id);
        let to = self.recipients(id_now);
        let msg = match (&self.cfg.replication, &live) {
            (ReplicationMode::FullSession, Some(d)) if !delta.ops.iter().any(|o| matches!(o, Op::ChangeId(_))) => {
                Msg::Full(self.outgoing(d))
            }
            _ => {
                let mut d = delta;
                d.ops.retain(|op| match op {
                    Op::Set(k, _) | Op::Remove(k) => self.replicate(k),
                    _ => true,
                });
                Msg::Delta(d)
            }
        };
        if !is_backup {
            return Ok(Commit {
                sends: vec![(to, msg)],
                data: live,
            });
        }
        Ok(Commit {
            sends: self.backup_sends(key, live.as_ref(), &before, to, msg, claimed),
            data: live,
        })
    }

    /// Whether this node answers for `id` from its own copy: it holds the session and,
    /// for the BackupManager, is its primary. A BackupManager node that is not the
    /// primary may hold a copy older than the last acknowledged write.
    pub(crate) fn is_current_here(&self, id: &SessionId, now_ms: u64) -> bool {
        let settled = now_ms >= self.servers_changed_ms.saturating_add(SETTLE_MS);
        self.is_primary(id) && (settled || matches!(self.cfg.kind, ManagerKind::Delta))
    }

    /// BackupManager: whether a request must ask the holders before it uses the session
    /// (`found`: whether a copy is held here). On a miss, always. With a copy that is not
    /// the primary's, in the ack modes (`acked`): a copy held here may be older than the
    /// last acknowledged write made on another node (a balancer without affinity sends
    /// the next request anywhere), so it is checked against the current holders first.
    /// Async mode answers from the copy (see the README's guarantees table).
    pub(crate) fn must_fetch(&self, id: &SessionId, found: bool, acked: bool, now_ms: u64) -> bool {
        matches!(self.cfg.kind, ManagerKind::Backup { .. }) && (!found || (acked && !self.is_current_here(id, now_ms)))
    }

    /// The driver saw the servers change at `now_ms` (see [`SETTLE_MS`]).
    pub(crate) fn note_servers_changed(&mut self, now_ms: u64) {
        self.servers_changed_ms = now_ms;
    }

    fn outgoing(&self, d: &SessionData) -> SessionData {
        match &self.cfg.filter {
            Some(f) => d.filtered(f.as_ref()),
            None => d.clone(),
        }
    }

    fn tombstone(&mut self, id: SessionId, now_ms: u64) {
        self.tombs.insert(
            id,
            Tomb {
                at_ms: now_ms,
                renamed_to: None,
            },
        );
        self.touches.remove(&id);
    }

    /// Destroyed by an anti-entropy repair (a tombstone elsewhere, for a reason this node
    /// does not know): reported to the listeners as invalidated (by the cluster); the
    /// cluster-wide expiry event, if it expired, is pending where it expired.
    fn destroy_repaired(&mut self, now_ms: u64, id: SessionId, out: &mut Vec<Effect>) {
        self.destroy(now_ms, id, DestroyReason::Invalidated, Origin::Replicated, out);
    }

    fn destroy(&mut self, now_ms: u64, id: SessionId, reason: DestroyReason, origin: Origin, out: &mut Vec<Effect>) {
        self.tombstone(id, now_ms);
        let principal = self.sessions.index().principal_of(&id).map(|(p, _)| p.clone());
        if self.sessions.remove(&id).is_some() {
            match reason {
                DestroyReason::Expired => {
                    self.counters.expired += 1;
                    self.expiry_pending(id, principal);
                }
                DestroyReason::Invalidated => self.counters.invalidated += 1,
            }
            out.push(Effect::Event(SessionEvent::Destroyed { id, reason, origin }));
        }
    }

    pub(crate) fn begin_transfer(&mut self) {
        self.transferring = true;
    }

    pub(crate) fn is_transferring(&self) -> bool {
        self.transferring
    }

    /// Applies the queued messages after the snapshot.
    pub(crate) fn finish_transfer(&mut self, now_ms: u64, out: &mut Vec<Effect>) {
        let queue = std::mem::take(&mut self.queue);
        for (from, msg) in queue {
            if let Msg::Delta(d) = &msg
                && self.sessions.get(&d.id).is_some_and(|s| s.version >= d.stamp.version)
            {
                self.counters.dropped_in_snapshot += 1;
                continue;
            }
            self.apply_msg(now_ms, from, msg, out);
        }
        self.transferring = false;
    }

    /// The sessions a joining member must receive (all of them, or for the
    /// BackupManager those it is an owner of), without the local-only attributes.
    pub(crate) fn snapshot_for(&self, requester: MemberId) -> Vec<SessionData> {
        let k = self.backup_count();
        let mut all = self.all();
        if !all.contains(&requester) {
            all.push(requester);
        }
        self.sessions
            .values()
            .filter(|d| match self.cfg.kind {
                ManagerKind::Delta => true,
                ManagerKind::Backup { .. } => {
                    d.primary == Some(requester) || placement::top(&all, d.id, k, d.primary).contains(&requester)
                }
            })
            .map(|d| self.outgoing(d))
            .collect()
    }

    pub(crate) fn apply_chunk(&mut self, now_ms: u64, sessions: Vec<SessionData>, out: &mut Vec<Effect>) {
        self.counters.snapshot_sessions += sessions.len() as u64;
        for s in &sessions {
            self.merge_full(s, Origin::Replicated, out);
        }
        self.check_logouts(now_ms, out);
    }

    /// A replicated message (queued during a state transfer). A `Fetch` waits too: the
    /// copy held here is not current until the queued changes are applied, and a fetch
    /// answered from it would confirm a stale read; the asker waits for the answer or
    /// goes on unconfirmed at its deadline.
    pub(crate) fn handle_msg(&mut self, now_ms: u64, from: MemberId, msg: Msg, out: &mut Vec<Effect>) {
        let queueable = matches!(
            msg,
            Msg::Fetch(_)
                | Msg::Delta(_)
                | Msg::Full(_)
                | Msg::Adopt(_)
                | Msg::Drop { .. }
                | Msg::Claimed(_)
                | Msg::Touches(_)
                | Msg::Expired(_)
                | Msg::Gone(_)
                | Msg::Merge { .. }
                | Msg::Expiring(_)
                | Msg::LoggedOut(_)
                | Msg::PrincipalQuery { .. }
        );
        if self.transferring && queueable {
            self.queue.push((from, msg));
            return;
        }
        if self.transferring && matches!(msg, Msg::Digest { .. } | Msg::Detail { .. } | Msg::Want(_)) {
            // Without the state yet, this node cannot compare; the next round will.
            return;
        }
        self.apply_msg(now_ms, from, msg, out);
        self.check_logouts(now_ms, out);
    }

    /// The set of other members serving the context changed.
    pub(crate) fn handle_servers_changed(&mut self, servers: Vec<MemberId>, out: &mut Vec<Effect>) {
        let old = std::mem::replace(&mut self.servers, servers);
        self.tell_new_servers(&old, out);
        if let ManagerKind::Backup { backup_count: k } = self.cfg.kind {
            self.replace_on_servers_changed(old, k, out);
        }
    }

    /// The session as held, expired or not (what a store saves).
    pub(crate) fn export(&self, id: &SessionId) -> Option<SessionData> {
        self.sessions.get(id).cloned()
    }

    /// Merges a session loaded from a store (every field by its stamp, as a replicated
    /// full session); `false` when it was destroyed here meanwhile.
    /// (A logout everywhere that covers it ends it at the next tick.)
    pub(crate) fn import(&mut self, data: &SessionData, out: &mut Vec<Effect>) -> bool {
        self.merge_full(data, Origin::Replicated, out)
    }

    /// Shared store mode: the store's copy replaces the one held here (the store is the truth).
    pub(crate) fn replace(&mut self, data: SessionData) {
        self.tombs.remove(&data.id);
        self.sessions.insert(data.id, data);
    }

    /// For the session browser: the live sessions held here (as `get` sees them) whose
    /// log id is `log_id`; a scan of the table, for an operator's occasional lookup.
    pub(crate) fn find_by_log_id(&self, now_ms: u64, log_id: crate::id::LogId) -> Vec<SessionData> {
        let ids: Vec<SessionId> = self
            .sessions
            .keys()
            .filter(|id| id.log_id() == log_id)
            .copied()
            .collect();
        ids.iter().filter_map(|id| self.get(now_ms, id)).collect()
    }

    /// Shared store mode: forgets the copy held here (no tombstone: the store decides).
    pub(crate) fn forget(&mut self, id: &SessionId) {
        self.sessions.remove(id);
        self.touches.remove(id);
    }

    /// For the status page and the benchmark: the inline and heap bytes of the
    /// bookkeeping, beyond attribute names and values.
    pub(crate) fn overhead_bytes(&self) -> usize {
        let slot = std::mem::size_of::<SessionId>() + std::mem::size_of::<SessionData>() + 1;
        let map = self.sessions.capacity() * slot;
        let attrs: usize = self
            .sessions
            .values()
            .map(|d| d.attrs.capacity() * std::mem::size_of::<crate::data::Attr>() + d.route.len())
            .sum();
        map + attrs
    }
}

#[cfg(test)]
mod tests;
