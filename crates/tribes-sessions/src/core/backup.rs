//! The BackupManager's own decisions: who holds a session (its primary and the
//! primary's backups by placement), what a commit sends to whom, whom a fetch asks,
//! hand-back after a claim or demotion, re-homing when a primary leaves, promotion, and
//! the copies to add and drop when the servers change. The DeltaManager never calls these.

use std::collections::HashMap;

use tribes::MemberId;

use super::{Core, Effect};
use crate::data::{SessionData, Stamp};
use crate::id::SessionId;
use crate::kind::ManagerKind;
use crate::placement;
use crate::wire::Msg;

impl Core {
    /// BackupManager: the other members that hold `id`: its primary and the primary's
    /// backups (a read on a backup must reach the primary too).
    pub(super) fn holders(&self, id: SessionId) -> Vec<MemberId> {
        let primary = self.sessions.get(&id).and_then(|d| d.primary).unwrap_or(self.local);
        let mut holders = placement::top(&self.all(), id, self.backup_count(), Some(primary));
        holders.push(primary);
        holders.retain(|m| *m != self.local);
        holders
    }

    /// BackupManager: who gets what of a commit. A backup that held the session gets
    /// the change; one that did not (the primary moved, or the id changed) gets the whole
    /// session, never a change it would turn into a partial copy. An invalidation or a new
    /// id goes to every server, so no member keeps a copy under the old id; a claim goes
    /// to the members that get nothing else, so they stop treating their copy as current.
    pub(super) fn backup_sends(
        &self,
        key: SessionId,
        live: Option<&SessionData>,
        before: &[MemberId],
        to: Vec<MemberId>,
        msg: Msg,
        claimed: bool,
    ) -> Vec<(Vec<MemberId>, Msg)> {
        let sweeping = live.is_none_or(|d| d.id != key);
        let full_to: Vec<MemberId> = match live {
            Some(_) => to.iter().copied().filter(|m| !before.contains(m)).collect(),
            None => Vec::new(),
        };
        let delta_to: Vec<MemberId> = if sweeping {
            self.servers.iter().copied().filter(|m| !full_to.contains(m)).collect()
        } else {
            to.into_iter().filter(|m| before.contains(m)).collect()
        };
        let mut sends = Vec::new();
        if claimed && !sweeping {
            let others: Vec<MemberId> = self
                .servers
                .iter()
                .copied()
                .filter(|m| !delta_to.contains(m) && !full_to.contains(m))
                .collect();
            if !others.is_empty() {
                sends.push((others, Msg::Claimed(key)));
            }
        }
        if let (false, Some(d)) = (full_to.is_empty(), live) {
            sends.push((full_to, Msg::Full(self.outgoing(d))));
        }
        sends.push((delta_to, msg));
        sends
    }

    /// BackupManager: whom to ask for `id` (a [`Msg::Fetch`]): the holders of the copy held
    /// here when its primary serves the context, otherwise every server.
    pub(crate) fn fetch_targets(&self, id: &SessionId) -> Vec<MemberId> {
        // A primary that checks its copy asks everyone: another node may believe it is
        // the primary too.
        match self.sessions.get(id).and_then(|d| d.primary) {
            Some(p) if p != self.local && self.servers.contains(&p) => self.holders(*id),
            _ => self.servers.clone(),
        }
    }

    /// Whether this node is an owner of `id` (Delta: always; Backup: its primary or one
    /// of the primary's backups by placement).
    pub(super) fn should_hold(&self, id: &SessionId) -> bool {
        let Some(d) = self.sessions.get(id) else { return false };
        match self.cfg.kind {
            ManagerKind::Delta => true,
            ManagerKind::Backup { backup_count: k } => {
                d.primary == Some(self.local) || placement::top(&self.all(), *id, k, d.primary).contains(&self.local)
            }
        }
    }

    /// BackupManager: this node was the primary of `id` (or a backup of the old one) and
    /// `new` took it over: send `new` this copy, so a write this node made or acknowledged
    /// concurrently with the takeover is merged there, not lost.
    pub(super) fn hand_back(&mut self, id: SessionId, new: MemberId, out: &mut Vec<Effect>) {
        if let Some(d) = self.sessions.get(&id) {
            let data = self.outgoing(d);
            out.push(Effect::Send(vec![new], Msg::Merge { sessions: vec![data] }));
        }
    }

    /// BackupManager: the primary of `id` is gone: the best-ranked member of `all` takes
    /// over (this node, or the heir it sends the session to).
    pub(super) fn rehome(&mut self, id: SessionId, all: &[MemberId], out: &mut Vec<Effect>) {
        let heir = placement::top(all, id, 1, None)[0];
        if heir == self.local {
            self.promote(id, out);
        } else if let Some(d) = self.sessions.get(&id) {
            out.push(Effect::Send(vec![heir], Msg::Adopt(self.outgoing(d))));
        }
    }

    /// Whether placement puts a backup of `id` (of which this node is the primary) on `member`.
    pub(super) fn places(&self, id: SessionId, backup_count: usize, member: MemberId) -> bool {
        placement::top(&self.all(), id, backup_count, Some(self.local)).contains(&member)
    }

    /// BackupManager: this node becomes the primary of `id` and replicates it to its backups.
    pub(super) fn promote(&mut self, id: SessionId, out: &mut Vec<Effect>) {
        let to = self.recipients(id);
        let local = self.local;
        let writer = self.writer;
        let Some(mut d) = self.sessions.get_mut(&id) else {
            return;
        };
        if d.primary == Some(local) {
            return;
        }
        d.version += 1;
        d.meta = Stamp {
            version: d.version,
            writer,
        };
        d.primary = Some(local);
        drop(d);
        self.counters.promotions += 1;
        let data = self.outgoing(self.sessions.get(&id).expect("held"));
        if !to.is_empty() {
            out.push(Effect::Send(to, Msg::Full(data)));
        }
    }

    /// The servers changed from `old`: as the primary, send the whole session to the
    /// backups placement adds and drop it from those it removes; re-home the sessions
    /// whose primary left.
    pub(super) fn replace_on_servers_changed(&mut self, old: Vec<MemberId>, k: usize, out: &mut Vec<Effect>) {
        let mut old_all = old.clone();
        old_all.push(self.local);
        let new_all = self.all();
        let ids: Vec<(SessionId, Option<MemberId>)> = self.sessions.values().map(|d| (d.id, d.primary)).collect();
        let mut fulls: HashMap<MemberId, Vec<SessionId>> = HashMap::new();
        let mut drops: HashMap<MemberId, Vec<SessionId>> = HashMap::new();
        for (id, primary) in ids {
            if primary == Some(self.local) {
                let before = placement::top(&old_all, id, k, Some(self.local));
                let after = placement::top(&new_all, id, k, Some(self.local));
                for m in after.iter().filter(|m| !before.contains(m)) {
                    fulls.entry(*m).or_default().push(id);
                }
                for m in before.iter().filter(|m| !after.contains(m) && self.servers.contains(m)) {
                    drops.entry(*m).or_default().push(id);
                }
            } else if primary.is_none_or(|p| !new_all.contains(&p)) {
                self.rehome(id, &new_all, out);
            }
        }
        for (m, ids) in fulls {
            for id in ids {
                let data = self.outgoing(self.sessions.get(&id).expect("held"));
                out.push(Effect::Send(vec![m], Msg::Full(data)));
            }
        }
        for (m, ids) in drops {
            for id in ids {
                let version = self.sessions.get(&id).expect("held").version;
                out.push(Effect::Send(vec![m], Msg::Drop { id, version }));
            }
        }
    }
}
