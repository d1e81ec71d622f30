//! Id rotation and repair: the other copies of a renamed session follow its new id.
//!
//! `cycle_id` (fixation protection) sends `ChangeId(new)` for the old id; a node that
//! applies it keeps a tombstone for the old id that remembers the new one. A copy of the
//! old id that missed the change (the other side of a partition, a lost delta) may hold
//! writes the renamed copy lacks. A plain tombstone would destroy that copy at the next
//! repair and lose them; a renamed tombstone instead tells its holder to apply the same
//! `ChangeId` (its copy then merges into the new id, attribute by attribute by stamp),
//! and merges any copy of the old id it receives into the new id itself.

use tribes::MemberId;

use super::{Core, Effect};
use crate::data::{Delta, Op, SessionData, Stamp};
use crate::id::SessionId;
use crate::wire::Msg;

/// What this node remembers of a destroyed id.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tomb {
    /// When it was destroyed (unix ms); it is forgotten a tombstone ttl later.
    pub(crate) at_ms: u64,
    /// The id it was renamed to, when it ended by a rotation.
    pub(crate) renamed_to: Option<SessionId>,
}

impl Core {
    /// The id `old` was renamed to, if it ended by a rotation this node applied.
    pub(super) fn renamed_to(&self, old: &SessionId) -> Option<SessionId> {
        self.tombs.get(old).and_then(|t| t.renamed_to)
    }

    /// `member` holds a copy of `old`, which was renamed to `new`: it applies the rename
    /// too (a `ChangeId` made against no version: it changes no attribute, so it wins
    /// nothing it should not; dated when the rename happened here, so it is no access).
    pub(super) fn send_rename(&self, member: MemberId, old: SessionId, new: SessionId, out: &mut Vec<Effect>) {
        let at_ms = self.tombs.get(&old).map_or(0, |t| t.at_ms);
        let delta = Delta {
            id: old,
            base: u64::MAX,
            stamp: Stamp {
                version: 0,
                writer: self.writer,
            },
            at_ms,
            ops: vec![Op::ChangeId(new)],
        };
        out.push(Effect::Send(vec![member], Msg::Delta(delta)));
    }

    /// A whole copy of an id renamed here arrived (a repair, a hand-over): its writes go
    /// to the new id; returns whether it was merged.
    pub(super) fn merge_into_renamed(&mut self, data: &SessionData, new: SessionId) -> bool {
        if self.tombs.contains_key(&new) {
            return false;
        }
        let mut copy = data.clone();
        copy.id = new;
        if let Some(mut existing) = self.sessions.get_mut(&new) {
            existing.merge(&copy);
            return true;
        }
        if !self.should_hold(&new) {
            return false;
        }
        self.sessions.insert(new, copy);
        true
    }

    /// A delta for `d.id`, renamed here to `new`: the same changes for the new id (its
    /// `ChangeId` left out), or `None` when it changes nothing else or `new` is gone too.
    pub(super) fn follow_rename(&self, d: &Delta, new: SessionId) -> Option<Delta> {
        let ops: Vec<Op> = d
            .ops
            .iter()
            .filter(|o| !matches!(o, Op::ChangeId(_)))
            .cloned()
            .collect();
        if ops.is_empty() || self.tombs.contains_key(&new) {
            return None;
        }
        Some(Delta {
            id: new,
            ops,
            ..d.clone()
        })
    }
}
