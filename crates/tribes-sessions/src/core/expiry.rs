//! Periodic work and expiry: idle sessions are first asked about (a touch batch may have
//! been lost) and expired a grace later, sessions past their max lifetime at once; old
//! tombstones are forgotten; the accesses recorded since the last batch go out every
//! touch interval; and each tick gives anti-entropy its turn.

use std::collections::HashMap;

use tribes::MemberId;

use super::{Core, Effect, FETCH_HOLD_MS};
use crate::data::SessionData;
use crate::id::SessionId;
use crate::kind::ManagerKind;
use crate::listener::{DestroyReason, Origin};
use crate::wire::Msg;

impl Core {
    /// Periodic work: expire idle sessions, forget old tombstones, send the access batch,
    /// and every `sync_interval_ms` an anti-entropy round with the next member.
    pub(crate) fn handle_tick(&mut self, now_ms: u64, out: &mut Vec<Effect>) {
        self.sync_tick(now_ms, out);
        let grace = self.cfg.grace_ms;
        let idle = |d: &SessionData| d.expires_at_ms().saturating_add(grace) < now_ms;
        // Expiry in two steps: a session idle here is first asked about (the members
        // answer with their last access: a touch batch may have been lost), and expired
        // a grace later if no later access arrived meanwhile.
        let mut ask: Vec<SessionId> = Vec::new();
        let mut expired: Vec<SessionId> = Vec::new();
        for d in self.sessions.values() {
            if self.too_old(d, now_ms) {
                self.counters.absolute_timeouts += 1;
                expired.push(d.id);
                continue;
            }
            if !idle(d) {
                continue;
            }
            match self.expiring.get(&d.id) {
                _ if self.servers.is_empty() => expired.push(d.id),
                None => ask.push(d.id),
                Some(at) if *at <= now_ms => expired.push(d.id),
                Some(_) => {}
            }
        }
        self.expiring.retain(|id, _| self.sessions.get(id).is_some_and(idle));
        if !ask.is_empty() {
            for id in &ask {
                self.expiring.insert(*id, now_ms + grace);
            }
            self.send_to_holders(ask, |id| *id, Msg::Expiring, out);
        }
        for id in &expired {
            self.expiring.remove(id);
            self.destroy(now_ms, *id, DestroyReason::Expired, Origin::Local, out);
        }
        if !expired.is_empty() && !self.servers.is_empty() {
            out.push(Effect::Send(self.servers.clone(), Msg::Expired(expired)));
        }
        self.fetched.retain(|_, at| at.saturating_add(FETCH_HOLD_MS) > now_ms);
        let ttl = self.cfg.tombstone_ttl_ms;
        self.tombs.retain(|_, t| t.at_ms.saturating_add(ttl) > now_ms);
        self.forget_logouts(now_ms);
        self.check_logouts(now_ms, out);
        self.deliver_expiries(now_ms, out);
        if self.touches.is_empty() || self.servers.is_empty() {
            self.touches.clear();
            return;
        }
        if now_ms < self.next_touch_ms {
            // Accesses accumulate until the batch is due (ticks come more often).
            return;
        }
        self.next_touch_ms = now_ms.saturating_add(self.cfg.touch_interval_ms);
        let touches: Vec<(SessionId, u64)> = std::mem::take(&mut self.touches).into_iter().collect();
        self.send_to_holders(touches, |(id, _)| *id, Msg::Touches, out);
    }

    /// A request found session `id` past its max lifetime (OWASP's absolute timeout): it
    /// ends here at once (its listeners told, a tombstone kept, counted in
    /// `absolute_timeouts`), and the returned message tells the other members (an empty
    /// list when none serves), instead of waiting for the next sweep. Every node reaches
    /// the same verdict from the same creation time, so none serves the session meanwhile.
    /// `None` when the session is not held here or is younger.
    pub(crate) fn end_if_too_old(
        &mut self,
        now_ms: u64,
        id: SessionId,
        out: &mut Vec<Effect>,
    ) -> Option<(Vec<MemberId>, Msg)> {
        if !self.sessions.get(&id).is_some_and(|d| self.too_old(d, now_ms)) {
            return None;
        }
        self.expiring.remove(&id);
        self.counters.absolute_timeouts += 1;
        self.destroy(now_ms, id, DestroyReason::Expired, Origin::Local, out);
        Some((self.servers.clone(), Msg::Expired(vec![id])))
    }

    /// Sends items about sessions to the members that hold them: every server
    /// (DeltaManager), or per member its sessions' items (BackupManager).
    pub(super) fn send_to_holders<T>(
        &self,
        items: Vec<T>,
        id_of: impl Fn(&T) -> SessionId,
        msg: impl Fn(Vec<T>) -> Msg,
        out: &mut Vec<Effect>,
    ) where
        T: Clone,
    {
        match self.cfg.kind {
            ManagerKind::Delta => out.push(Effect::Send(self.servers.clone(), msg(items))),
            ManagerKind::Backup { .. } => {
                let mut per: HashMap<MemberId, Vec<T>> = HashMap::new();
                for item in items {
                    for m in self.holders(id_of(&item)) {
                        per.entry(m).or_default().push(item.clone());
                    }
                }
                for (m, list) in per {
                    out.push(Effect::Send(vec![m], msg(list)));
                }
            }
        }
    }

    /// On a clean shutdown with `expire`: destroy the sessions this node serves. Returns
    /// the ones the cluster expires with them (what `Bye { expire: true }` makes the
    /// members destroy: every session with the DeltaManager; with the BackupManager those
    /// this node is the primary of, or all when no other member serves the context), which
    /// must leave the store too; the others live on at their primary.
    pub(crate) fn expire_all(&mut self, now_ms: u64, out: &mut Vec<Effect>) -> Vec<SessionId> {
        let alone = self.servers.is_empty();
        let everywhere: Vec<SessionId> = self
            .sessions
            .values()
            .filter(|d| match self.cfg.kind {
                ManagerKind::Delta => true,
                ManagerKind::Backup { .. } => alone || d.primary == Some(self.local),
            })
            .map(|d| d.id)
            .collect();
        let ids: Vec<SessionId> = self.sessions.keys().copied().collect();
        for id in ids {
            self.destroy(now_ms, id, DestroyReason::Expired, Origin::Local, out);
        }
        everywhere
    }
}
