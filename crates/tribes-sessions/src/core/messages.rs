//! Every message of another member, dispatched to the decision it feeds.

use tribes::MemberId;

use super::{Core, Effect, FETCH_HOLD_MS};
use crate::id::SessionId;
use crate::kind::ManagerKind;
use crate::listener::{DestroyReason, Origin};
use crate::placement;
use crate::wire::Msg;

impl Core {
    /// Applies one message of `from` (not during a state transfer: `handle_msg` queues).
    pub(super) fn apply_msg(&mut self, now_ms: u64, from: MemberId, msg: Msg, out: &mut Vec<Effect>) {
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
                        self.send_rename(from, data.id, new, out);
                    }
                    self.merge_full(data, Origin::Replicated, out);
                    // A copy handed over by a member placement does not put it on: merged
                    // here (the primary), so the sender may drop it now.
                    if backup && self.is_primary(&data.id) && !self.places(data.id, k, from) {
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
                let already = self.is_primary(&data.id);
                if self.merge_full(&data, Origin::Replicated, out) {
                    self.promote(data.id, out);
                }
                // The sender holds a copy whose primary left, and this node took over
                // before: put its copy right, or it holds it (and asks again) for ever.
                if already && let Some(d) = self.sessions.get(&data.id) {
                    let msg = match self.places(data.id, self.backup_count(), from) {
                        true => Msg::Full(self.outgoing(d)),
                        false => Msg::Drop {
                            id: d.id,
                            version: d.version,
                        },
                    };
                    out.push(Effect::Send(vec![from], msg));
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
                    // A version says nothing about who wrote it: a copy whose write of that
                    // version came from another node (two claims at once) holds a write the
                    // primary lacks. The copy goes back to the primary, merged there
                    // attribute by attribute, before it goes away here.
                    if let Some(d) = self.sessions.remove(&id) {
                        out.push(Effect::Send(
                            vec![from],
                            Msg::Merge {
                                sessions: vec![self.outgoing(&d)],
                            },
                        ));
                    }
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
}
