//! The invariants, checked after every step (`check_step`), at the end of every heal +
//! settle phase (`check_quiescent`) and when a joining node becomes ready (`check_joiner`).

use std::collections::{BTreeMap, HashMap};

use tribes::MemberId;

use super::{AckedWrite, MAX_INACTIVE_MS, SYNC_INTERVAL_MS, Sim, TOUCH_INTERVAL_MS};
use crate::core::FETCH_HOLD_MS;
use crate::data::{Blob, SessionData, Stamp};
use crate::id::SessionId;
use crate::kind::ManagerKind;
use crate::node::SessionNode;
use crate::placement;
use crate::wire::Msg;

/// Fails the run with a message (the runner adds the seed and the replay command).
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

/// Fails unless every listed node holds `$id` with the same replicated state.
macro_rules! expect_same_copies {
    ($copies:expr, $id:expr) => {{
        let copies: &[(MemberId, &AttrsOf)] = &$copies;
        if let Some((first, a)) = copies.first() {
            for (m, b) in &copies[1..] {
                if a != b {
                    return Err(format!(
                        "nodes disagree on session {} after the heal:\n    {first}: {a:?}\n    {m}: {b:?}",
                        $id
                    ));
                }
            }
        }
    }};
}

/// The replicated state of a session that must be equal everywhere: attributes with
/// their stamps (removed ones included) and, for the BackupManager, the primary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AttrsOf {
    pub(crate) id: SessionId,
    pub(crate) attrs: Vec<(std::sync::Arc<str>, Option<Blob>, Stamp)>,
    pub(crate) primary: Option<MemberId>,
}

impl AttrsOf {
    pub(crate) fn of(d: &SessionData) -> Self {
        let mut attrs: Vec<_> = d
            .attrs
            .iter()
            .filter(|a| &*a.name != super::filter::LOCAL) // local-only: may differ
            .map(|a| (a.name.clone(), a.value.clone(), a.stamp))
            .collect();
        attrs.sort_by(|a, b| a.0.cmp(&b.0));
        AttrsOf {
            id: d.id,
            attrs,
            primary: d.primary,
        }
    }

    fn stamp_of(&self, name: &str) -> Option<Stamp> {
        self.attrs.iter().find(|a| &*a.0 == name).map(|a| a.2)
    }
}

impl Sim {
    /// Idle longer than the max inactive interval plus the grace (by the clients' clock):
    /// any node may have expired it.
    fn may_have_expired(&self, id: &SessionId) -> bool {
        self.oracle.expired.contains(id)
            || self
                .oracle
                .sessions
                .get(id)
                .is_none_or(|last| last + MAX_INACTIVE_MS + 2 * TOUCH_INTERVAL_MS < self.now)
    }

    /// After every step: no destroyed session is back, no acknowledged write is lost.
    pub(super) fn check_step(&mut self) -> Result<(), String> {
        if let Some(v) = self.violation.take() {
            return Err(v);
        }
        self.check_local_attributes()?;
        self.check_second_step()?;
        for node in self.nodes.iter().flatten() {
            for id in &node.destroyed {
                ensure!(
                    !node.core().contains(id),
                    "session {id} came back on {} after it was destroyed there",
                    node.id
                );
            }
        }
        // Each live node's sessions, once per step (a joining node's too: a copy it holds
        // is a copy, though a write queued behind its transfer is not in it yet).
        let held: Vec<(MemberId, HashMap<SessionId, &SessionData>)> = self
            .nodes
            .iter()
            .flatten()
            .map(|n| (n.id, n.core().sessions().map(|d| (d.id, d)).collect()))
            .collect();
        let mut acked = std::mem::take(&mut self.oracle.acked);
        let mut lost_by_crash = 0;
        let mut failure = None;
        acked.retain_mut(|w: &mut AckedWrite| {
            if failure.is_some() {
                return true;
            }
            if self.oracle.invalidated.contains(&w.id)
                || self.oracle.logged_out.contains(&w.id)
                || self.may_have_expired(&w.id)
            {
                return false;
            }
            // Under its id, or an id a rotation gave the session since.
            let ids = self.aliases(w.id);
            let holders: Vec<MemberId> = held
                .iter()
                .filter(|(_, s)| {
                    ids.iter().any(|id| {
                        s.get(id)
                            .and_then(|d| d.attr(w.name))
                            .is_some_and(|a| a.stamp >= w.stamp)
                    })
                })
                .map(|(m, _)| *m)
                .collect();
            if holders.is_empty() && self.in_flight_to_live(w) {
                // Handed over (a claim, a demotion, a repair): on the wire to a live node.
                return true;
            }
            if holders.is_empty() && self.nodes.iter().flatten().any(|n| n.core().is_transferring()) {
                // A joining node may hold it in its transfer queue: judge once it is ready.
                return true;
            }
            if holders.is_empty() {
                let live = |m: &MemberId| self.nodes.iter().flatten().any(|n| n.id == *m);
                if w.holders.iter().any(live) {
                    failure = Some(format!(
                        "acknowledged write lost: session {} attribute {:?} stamp {:?} (acked at {} ms) is on no live node; it was on {:?}, of which {:?} live",
                        w.id,
                        w.name,
                        w.stamp,
                        w.at_ms - 1_000_000,
                        w.holders,
                        w.holders.iter().filter(|m| live(m)).collect::<Vec<_>>()
                    ));
                    return true;
                }
                if self.store.is_some() {
                    // Every node that held it crashed: write-through saved it first.
                    if !self.store_holds(w, &ids) {
                        failure = Some(format!(
                            "acknowledged write lost with a write-through store: session {} attribute {:?} stamp {:?} (acked at {} ms) is neither on a live node nor in the store",
                            w.id,
                            w.name,
                            w.stamp,
                            w.at_ms - 1_000_000
                        ));
                    }
                    return true;
                }
                // Every node that held it crashed: nothing could keep it.
                lost_by_crash += 1;
                return false;
            }
            w.holders = holders;
            true
        });
        self.oracle.acked = acked;
        self.stats.acked_lost_by_crash += lost_by_crash;
        match failure {
            Some(f) => Err(f),
            None => Ok(()),
        }
    }

    /// Whether a whole-session message on its way to a live node carries the write.
    fn in_flight_to_live(&self, w: &AckedWrite) -> bool {
        let ids = self.aliases(w.id);
        let carries = |d: &SessionData| ids.contains(&d.id) && d.attr(w.name).is_some_and(|a| a.stamp >= w.stamp);
        self.in_flight.iter().any(|p| {
            let live = self.nodes.iter().flatten().any(|n| n.id == p.to);
            let super::Body::Msg {
                topic: super::Topic::Main,
                msg,
                ..
            } = &p.body
            else {
                return false;
            };
            live && match msg {
                Msg::Full(d) | Msg::Adopt(d) | Msg::FetchReply(d) => carries(d),
                Msg::Merge { sessions } | Msg::Chunk { sessions, .. } => sessions.iter().any(carries),
                _ => false,
            }
        })
    }

    /// A joining Delta node that became ready holds everything its source sent (or newer).
    pub(super) fn check_joiner(&self, slot: usize, degraded: bool) -> Result<(), String> {
        let node = self.nodes[slot].as_ref().expect("live");
        if degraded || !matches!(self.cfg.kind, ManagerKind::Delta) {
            return Ok(());
        }
        for (source, request) in node.session.transferred_from() {
            let Some(snapshot) = node.snapshots.get(request) else {
                return Err(format!(
                    "{} completed a transfer from {source} it has no snapshot of",
                    node.id
                ));
            };
            for s in snapshot {
                if node.destroyed.contains(&s.id) || node.core().is_tombstoned(&s.id) {
                    continue;
                }
                let Some(mine) = node.core().sessions().find(|d| d.id == s.id) else {
                    return Err(format!(
                        "{} became ready without session {} that {source} sent in its state transfer",
                        node.id, s.id
                    ));
                };
                let mine = AttrsOf::of(mine);
                for (name, _, stamp) in &s.attrs {
                    ensure!(
                        mine.stamp_of(name).is_some_and(|m| m >= *stamp),
                        "{} became ready with an older {name:?} of session {} than {source} sent",
                        node.id,
                        s.id
                    );
                }
            }
        }
        Ok(())
    }

    /// At the end of a heal + settle: every node that should hold a session holds the same
    /// state, no invalidated or expired session is anywhere, and (Backup) every session
    /// has its primary and backups again.
    pub(super) fn check_quiescent(&self) -> Result<(), String> {
        let nodes: Vec<(MemberId, &SessionNode)> = self.nodes.iter().flatten().map(|n| (n.id, &n.session)).collect();
        let gone = |id: &SessionId| {
            if self.oracle.invalidated.contains(id) {
                Some("invalidated")
            } else if self.oracle.expired.contains(id) {
                Some("expired")
            } else {
                None
            }
        };
        check_copies(self.cfg.kind, &nodes, gone, |m, id| self.fetched_lately(m, id))
    }
}

impl Sim {
    /// Whether node `m` got a copy of `id` for a request (a `FetchReply`) so lately that a
    /// `Drop` could not take it yet ([`FETCH_HOLD_MS`]) or the settle's anti-entropy
    /// rounds since have not reached it.
    pub(super) fn fetched_lately(&self, m: MemberId, id: SessionId) -> bool {
        let rounds = 3 * self.nodes.len() as u64 * SYNC_INTERVAL_MS;
        self.fetch_replies
            .get(&(m, id))
            .is_some_and(|at| at + FETCH_HOLD_MS + rounds >= self.now)
    }
}

/// The copies of one context once the cluster is quiet: every node serves; no session
/// that `gone` names (invalidated, expired) is anywhere; DeltaManager: every node holds
/// every session, all alike; BackupManager: each session on its primary and its backups,
/// all alike.
pub(super) fn check_copies(
    kind: ManagerKind,
    nodes: &[(MemberId, &SessionNode)],
    gone: impl Fn(&SessionId) -> Option<&'static str>,
    fetched_lately: impl Fn(MemberId, SessionId) -> bool,
) -> Result<(), String> {
    let context = nodes.first().map_or("", |(_, n)| n.core().context());
    let mut copies: BTreeMap<SessionId, Vec<(MemberId, AttrsOf)>> = BTreeMap::new();
    for (m, n) in nodes {
        ensure!(n.is_serving(), "{m} is not serving {context} after the settle");
        for d in n.core().sessions() {
            if let Some(why) = gone(&d.id) {
                return Err(format!(
                    "{why} session {} ({}) of {context} is still on {m} after the heal",
                    d.id,
                    d.id.log_id()
                ));
            }
            copies.entry(d.id).or_default().push((*m, AttrsOf::of(d)));
        }
    }
    for (id, list) in &copies {
        let view: Vec<(MemberId, &AttrsOf)> = list.iter().map(|(m, a)| (*m, a)).collect();
        match kind {
            ManagerKind::Delta => {
                let without_primary: Vec<(MemberId, AttrsOf)> = list
                    .iter()
                    .map(|(m, a)| {
                        (
                            *m,
                            AttrsOf {
                                primary: None,
                                ..a.clone()
                            },
                        )
                    })
                    .collect();
                let v: Vec<(MemberId, &AttrsOf)> = without_primary.iter().map(|(m, a)| (*m, a)).collect();
                expect_same_copies!(v, id);
                if list.len() != nodes.len() {
                    let missing: Vec<MemberId> = nodes
                        .iter()
                        .map(|n| n.0)
                        .filter(|m| !list.iter().any(|(h, _)| h == m))
                        .collect();
                    let degraded: Vec<MemberId> = nodes.iter().filter(|n| n.1.is_degraded()).map(|n| n.0).collect();
                    return Err(format!(
                        "session {id} of {context} is on {} of {} nodes after the heal; missing on {missing:?} (degraded: {degraded:?})",
                        list.len(),
                        nodes.len()
                    ));
                }
            }
            ManagerKind::Backup { backup_count } => {
                // Placed: the primary and its backups. Any other copy was fetched for a
                // request and is kept from a `Drop` for a while (`FETCH_HOLD_MS`); the
                // next round after that drops it.
                // The primary is the holder whose copy says so (a stray copy may still
                // name a primary that left).
                let primary = list
                    .iter()
                    .find(|(m, a)| a.primary == Some(*m))
                    .and_then(|(_, a)| a.primary);
                let all: Vec<MemberId> = nodes.iter().map(|n| n.0).collect();
                let placed = |m: &MemberId| {
                    primary.is_some_and(|p| *m == p || placement::top(&all, *id, backup_count, Some(p)).contains(m))
                };
                for (m, _) in list.iter().filter(|(m, _)| !placed(m)) {
                    ensure!(
                        fetched_lately(*m, *id),
                        "session {id} ({}) of {context} is still on {m} after the heal, which is neither its primary {primary:?} nor a backup, and got no copy for a request within the fetch hold and the settle's rounds (copies: {:?})",
                        id.log_id(),
                        list.iter().map(|(m, a)| (*m, a.primary)).collect::<Vec<_>>()
                    );
                }
                let view: Vec<(MemberId, &AttrsOf)> = view.into_iter().filter(|(m, _)| placed(m)).collect();
                expect_same_copies!(view, id);
                let want = (backup_count + 1).min(nodes.len());
                ensure!(
                    primary.is_some_and(|p| list.iter().any(|(h, _)| *h == p)),
                    "session {id} of {context}: its primary {primary:?} does not hold it (holders {:?})",
                    list.iter().map(|c| c.0).collect::<Vec<_>>()
                );
                ensure!(
                    view.len() == want,
                    "session {id} of {context} has {} copies on its primary and backups after the heal, wants {want} (primary {primary:?}, holders {:?})",
                    view.len(),
                    list.iter().map(|c| c.0).collect::<Vec<_>>()
                );
            }
        }
    }
    Ok(())
}
