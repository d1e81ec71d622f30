//! Replication applied here: a delta or a whole copy merged into the copy this node
//! holds, attribute by attribute by stamp (the later writer wins; a write made against an
//! older version is counted as a conflict), with its listener events; a rename follows
//! the new id (`core/rename.rs`).

use std::sync::Arc;

use super::{Core, Effect};
use crate::data::{Delta, Op, SessionData};
use crate::id::SessionId;
use crate::listener::{DestroyReason, Origin, SessionEvent};

/// Whether `a` and `b` each hold a replicated attribute write the other lacks.
pub(super) fn concurrent(a: &SessionData, b: &SessionData, replicate: &dyn Fn(&str) -> bool) -> bool {
    let newer_in = |x: &SessionData, y: &SessionData| {
        x.attrs
            .iter()
            .filter(|at| replicate(&at.name))
            .any(|at| y.attr(&at.name).is_none_or(|o| o.stamp < at.stamp))
    };
    newer_in(a, b) && newer_in(b, a)
}

impl Core {
    /// Applies a delta; returns the session's id afterwards (`None` when it is gone).
    pub(super) fn apply_delta(&mut self, d: &Delta, origin: Origin, out: &mut Vec<Effect>) -> Option<SessionId> {
        if let Some(tomb) = self.tombs.get(&d.id) {
            if let Some(moved) = tomb.renamed_to.and_then(|new| self.follow_rename(d, new)) {
                // Made before a rotation this node applied already (a repair overtook it).
                return self.apply_delta(&moved, origin, out);
            }
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

    pub(super) fn merge_full(&mut self, data: &SessionData, origin: Origin, out: &mut Vec<Effect>) -> bool {
        if let Some(tomb) = self.tombs.get(&data.id) {
            if let Some(new) = tomb.renamed_to {
                return self.merge_into_renamed(data, new);
            }
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
}
