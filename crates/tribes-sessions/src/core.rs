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
mod principals;
mod rename;
mod table;

use rename::Tomb;
use table::SessionTable;

pub(crate) type Filter = Arc<dyn Fn(&str) -> bool + Send + Sync>;

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

/// Whether `a` and `b` each hold a replicated attribute write the other lacks.
fn concurrent(a: &SessionData, b: &SessionData, replicate: &dyn Fn(&str) -> bool) -> bool {
    let newer_in = |x: &SessionData, y: &SessionData| {
        x.attrs
            .iter()
            .filter(|at| replicate(&at.name))
            .any(|at| y.attr(&at.name).is_none_or(|o| o.stamp < at.stamp))
    };
    newer_in(a, b) && newer_in(b, a)
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
const FETCH_HOLD_MS: u64 = 30_000;

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

    /// Applies a delta; returns the session's id afterwards (`None` when it is gone).
    fn apply_delta(&mut self, d: &Delta, origin: Origin, out: &mut Vec<Effect>) -> Option<SessionId> {
        if let Some(moved) = self.follow_rename(d) {
            // Made before a rotation this node applied already (a repair overtook it).
            return self.apply_delta(&moved, origin, out);
        }
        if self.tombs.contains_key(&d.id) {
            self.counters.dropped_gone += 1;
            tracing::debug!(context = %self.cfg.context, session = %d.id.log_id(), "late delta for a destroyed session dropped");
            return None;
        }
        let mut created = false;
        if !self.sessions.contains_key(&d.id) && d.ops.iter().all(|o| matches!(o, Op::ChangeId(_))) {
            // A rename of a session this node does not hold: nothing to rename (an empty
            // copy under the new id would only hide the real one; a repair brings it).
            return None;
        }
        if !self.sessions.contains_key(&d.id) {
            {
                let created_ms = d
                    .ops
                    .iter()
                    .find_map(|o| match o {
                        Op::Create { created_ms } => Some(*created_ms),
                        _ => None,
                    })
                    .unwrap_or(d.at_ms);
                created = true;
                let fresh = SessionData::new(d.id, Arc::from(""), created_ms, self.cfg.max_inactive_ms);
                self.sessions.insert(d.id, fresh);
            }
        }
        let mut data = self.sessions.get_mut(&d.id).expect("present");
        if origin == Origin::Replicated {
            self.counters.deltas_applied += 1;
        }
        if !created && d.base < data.version {
            self.counters.conflicts += 1;
            tracing::warn!(
                context = %self.cfg.context, session = %d.id.log_id(), local_version = data.version, delta_base = d.base,
                delta_version = d.stamp.version,
                "conflicting update: the delta was made against version {} but this node holds version {}; last writer wins",
                d.base, data.version
            );
        }
        let id = d.id;
        let was_primary = data.primary == Some(self.local);
        let mut events = Vec::new();
        if created && d.ops.iter().any(|o| matches!(o, Op::Create { .. })) {
            events.push(SessionEvent::Created { id, origin });
        }
        let mut change_id = None;
        let mut invalidate = false;
        let mut refute = None;
        for op in &d.ops {
            match op {
                Op::Create { .. } => {}
                Op::Set(k, v) => match data.write_attr(k, Some(v.clone()), d.stamp) {
                    Some(true) => events.push(SessionEvent::AttributeReplaced {
                        id,
                        name: k.to_string(),
                        origin,
                    }),
                    Some(false) => events.push(SessionEvent::AttributeAdded {
                        id,
                        name: k.to_string(),
                        origin,
                    }),
                    None => {}
                },
                Op::Remove(k) => {
                    if let Some(true) = data.write_attr(k, None, d.stamp) {
                        events.push(SessionEvent::AttributeRemoved {
                            id,
                            name: k.to_string(),
                            origin,
                        });
                    }
                }
                Op::MaxInactive(ms) if d.stamp >= data.meta => {
                    data.max_inactive_ms = *ms;
                    data.meta = d.stamp;
                }
                Op::Route(r) if d.stamp >= data.meta => {
                    data.route = Arc::from(&**r);
                    data.meta = d.stamp;
                }
                Op::Primary(m) if d.stamp >= data.meta => {
                    data.primary = Some(*m);
                    data.meta = d.stamp;
                }
                Op::Primary(m) if was_primary && *m != self.local => {
                    // A claim older than this node's own promotion (both happened at
                    // once after a member left): this node stays the primary; tell the
                    // claimer at once, so the two agree before its next request.
                    refute = Some(*m);
                }
                Op::MaxInactive(_) | Op::Route(_) | Op::Primary(_) => {}
                Op::ChangeId(new) => change_id = Some(*new),
                Op::Invalidate => invalidate = true,
            }
        }
        data.version = data.version.max(d.stamp.version);
        data.last_access_ms = data.last_access_ms.max(d.at_ms);
        let demoted_to = data.primary.filter(|p| was_primary && *p != self.local);
        drop(data);
        out.extend(events.into_iter().map(Effect::Event));
        if let Some(claimer) = refute
            && !invalidate
            && change_id.is_none()
        {
            self.hand_back(id, claimer, out);
        }
        if let Some(new) = demoted_to
            && !invalidate
            && change_id.is_none()
        {
            self.hand_back(id, new, out);
        }
        if invalidate {
            self.sessions.remove(&id);
            self.tombstone(id, d.at_ms);
            self.counters.invalidated += 1;
            out.push(Effect::Event(SessionEvent::Destroyed {
                id,
                reason: DestroyReason::Invalidated,
                origin,
            }));
            return None;
        }
        if let Some(new) = change_id {
            let mut s = self.sessions.remove(&id).expect("present");
            s.id = new;
            self.tombstone(id, d.at_ms);
            if let Some(t) = self.tombs.get_mut(&id) {
                t.renamed_to = Some(new);
            }
            if self.tombs.contains_key(&new) {
                return None;
            }
            if let Some(mut existing) = self.sessions.get_mut(&new) {
                existing.merge(&s);
            } else {
                self.sessions.insert(new, s);
            }
            if origin == Origin::Replicated && !self.should_hold(&new) {
                // BackupManager: the old id was held here, the new one is placed
                // elsewhere (its primary sent it the whole session).
                self.sessions.remove(&new);
                return None;
            }
            return Some(new);
        }
        Some(id)
    }

    fn merge_full(&mut self, data: &SessionData, origin: Origin, out: &mut Vec<Effect>) -> bool {
        if let Some(new) = self.renamed_to(&data.id) {
            return self.merge_into_renamed(data, new);
        }
        if self.tombs.contains_key(&data.id) {
            self.counters.dropped_gone += 1;
            return false;
        }
        let local = self.local;
        let conflict = origin == Origin::Replicated
            && self
                .sessions
                .get(&data.id)
                .is_some_and(|s| concurrent(s, data, &|name| self.replicate(name)));
        match self.sessions.contains_key(&data.id) {
            true => {
                let mut s = self.sessions.get_mut(&data.id).expect("held");
                let before = s.version;
                let was_primary = s.primary == Some(local);
                if conflict {
                    // Each copy has a write the other lacks: both sides of a partition
                    // (or two nodes at once) changed the session. Last writer wins per field.
                    self.counters.conflicts += 1;
                    tracing::warn!(context = %self.cfg.context, session = %data.id.log_id(), "conflicting copies merged: each had a write the other lacked (a partition, or writes on two nodes at once); last writer wins per attribute");
                }
                s.merge(data);
                if origin == Origin::Replicated && data.version <= before {
                    self.counters.dropped_in_snapshot += u64::from(self.transferring);
                }
                let handed = s.primary.filter(|p| *p != local);
                drop(s);
                if was_primary && let Some(new) = handed {
                    self.hand_back(data.id, new, out);
                }
            }
            false => {
                self.sessions.insert(data.id, data.clone());
                out.push(Effect::Event(SessionEvent::Created { id: data.id, origin }));
            }
        }
        true
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

    fn apply_msg(&mut self, now_ms: u64, from: MemberId, msg: Msg, out: &mut Vec<Effect>) {
        match msg {
            Msg::Delta(d) => {
                self.apply_delta(&d, Origin::Replicated, out);
            }
            Msg::Full(data) => {
                self.merge_full(&data, Origin::Replicated, out);
            }
            Msg::FetchReply(data) => {
                if self.merge_full(&data, Origin::Replicated, out) {
                    self.fetched.insert(data.id, now_ms);
                }
            }
            Msg::Fetch(id) => {
                let reply = match self.get(now_ms, &id) {
                    Some(d) => Msg::FetchReply(self.outgoing(&d)),
                    None => Msg::FetchMiss {
                        id,
                        gone: self.tombs.contains_key(&id),
                    },
                };
                out.push(Effect::Send(vec![from], reply));
            }
            Msg::FetchMiss { id, gone } => {
                // The session was destroyed (or its id changed) where it is current:
                // a copy held here that is not the primary's is gone too.
                if gone && self.sessions.get(&id).is_some_and(|d| d.primary != Some(self.local)) {
                    self.destroy(now_ms, id, DestroyReason::Invalidated, Origin::Replicated, out);
                }
            }
            Msg::Merge { sessions } => {
                let k = self.backup_count();
                let backup = matches!(self.cfg.kind, ManagerKind::Backup { .. });
                for data in &sessions {
                    if let Some(new) = self.renamed_to(&data.id) {
                        // The sender missed a rotation: it renames its copy too.
                        self.send_rename(from, data.id, new, now_ms, out);
                    }
                    self.merge_full(data, Origin::Replicated, out);
                    // A copy handed over by a member placement does not put it on: merged
                    // here (the primary), so the sender may drop it now.
                    if backup
                        && self.is_primary(&data.id)
                        && !placement::top(&self.all(), data.id, k, Some(self.local)).contains(&from)
                    {
                        out.push(Effect::Send(
                            vec![from],
                            Msg::Drop {
                                id: data.id,
                                version: data.version,
                            },
                        ));
                    }
                }
            }
            Msg::Adopt(data) => {
                if self.merge_full(&data, Origin::Replicated, out) {
                    self.promote(data.id, out);
                }
            }
            Msg::Drop { id, version } => {
                // A stale drop (sent before this node claimed the session, or before it
                // fetched a fresher copy) must not remove the copy in use.
                let in_use = self
                    .fetched
                    .get(&id)
                    .is_some_and(|at| at.saturating_add(FETCH_HOLD_MS) > now_ms);
                if !self.is_primary(&id) && !in_use && self.sessions.get(&id).is_some_and(|d| d.version <= version) {
                    self.sessions.remove(&id);
                }
            }
            Msg::Claimed(id) => {
                let k = self.backup_count();
                if self.sessions.contains_key(&id)
                    && !placement::top(&self.all(), id, k, Some(from)).contains(&self.local)
                {
                    // Writes acknowledged here while the claim was on its way may be
                    // missing on the claimer: hand the copy over, and keep it until the
                    // claimer confirms with a `Drop` (the hand-over itself may be lost
                    // with a connection; then anti-entropy repairs it).
                    self.hand_back(id, from, out);
                    if let Some(mut d) = self.sessions.get_mut(&id) {
                        d.primary = Some(from);
                    }
                }
            }
            Msg::Touches(list) => {
                for (id, at) in list {
                    if let Some(mut d) = self.sessions.get_mut(&id) {
                        d.last_access_ms = d.last_access_ms.max(at);
                    }
                }
            }
            Msg::Expired(ids) => {
                for id in ids {
                    self.destroy(now_ms, id, DestroyReason::Expired, Origin::Replicated, out);
                }
            }
            Msg::Gone(ids) => {
                // A repair: the session ended elsewhere (for a reason this node does not
                // know); its expiry event, if any, is pending where it expired.
                for id in ids {
                    self.destroy_repaired(now_ms, id, out);
                }
            }
            Msg::Bye { expire } => {
                self.expiry_member_left(from);
                if expire {
                    let ids: Vec<SessionId> = self
                        .sessions
                        .values()
                        .filter(|d| match self.cfg.kind {
                            ManagerKind::Delta => true,
                            ManagerKind::Backup { .. } => d.primary == Some(from),
                        })
                        .map(|d| d.id)
                        .collect();
                    for id in ids {
                        self.destroy(now_ms, id, DestroyReason::Expired, Origin::Replicated, out);
                    }
                }
            }
            Msg::Digest { buckets } => self.on_digest(from, &buckets, out),
            Msg::Detail { buckets, held, gone } => self.on_detail(now_ms, from, &buckets, held, gone, out),
            Msg::Want(ids) => self.on_want(from, &ids, out),
            Msg::Expiring(ids) => {
                let list: Vec<(SessionId, u64)> = ids
                    .iter()
                    .filter_map(|id| self.sessions.get(id).map(|d| (*id, d.last_access_ms)))
                    .collect();
                if !list.is_empty() {
                    out.push(Effect::Send(vec![from], Msg::Touches(list)));
                }
            }
            Msg::LoggedOut(records) => {
                self.remember_logouts(now_ms, &records, out);
            }
            Msg::PrincipalQuery { request, principal } => {
                self.answer_principal_query(now_ms, from, request, &principal, out);
            }
            // The node gathers the answers to its queries.
            Msg::PrincipalSessions { .. } => {}
            Msg::ExpiryPending(list) => self.on_expiry_pending(from, list, out),
            Msg::ExpiryDelivered(ids) => self.on_expiry_delivered(now_ms, ids),
            Msg::Hello | Msg::GetAll { .. } | Msg::Chunk { .. } | Msg::Done { .. } | Msg::NotReady { .. } => {}
        }
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
