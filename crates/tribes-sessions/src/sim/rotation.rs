//! Id rotation in the simulation (`SessionHandle::cycle_id`, fixation protection): in runs that
//! draw it, a register client's write changes the session's id one time in ten, and the
//! client follows the new id once the write is acknowledged, as a browser follows the
//! new cookie. A rotation that got no answer leaves the client without a session it can
//! trust (its cookie may name an id that no longer exists): it starts again as a new
//! visitor, as a user whose response was lost would.
//!
//! What it adds to the checks: an acknowledged write made before a rotation lives on
//! under the new id (the oracle follows the renames); the register checks go on under
//! the new id (every acknowledged write seen by the next request on any node, reads
//! never go back); and after the heal and settle no node holds an id an acknowledged
//! rotation replaced.

use rand::Rng;

use super::Sim;
use crate::data::Op;
use crate::id::SessionId;

impl Sim {
    /// Maybe a rotation with this write of client `c`: the new id, its op added.
    pub(super) fn maybe_rotate(&mut self, ops: &mut Vec<Op>) -> Option<SessionId> {
        if !self.cfg.rotation || !self.rng.random_bool(0.1) {
            return None;
        }
        let new = SessionId::generate(&mut self.rng);
        ops.push(Op::ChangeId(new));
        Some(new)
    }

    /// A node applied the rotation of `old` to `new` (the commit ran there): the oracle
    /// follows it.
    pub(super) fn rotated(&mut self, old: SessionId, new: SessionId) {
        self.trace(|| format!("ROTATE {old} -> {new}"));
        self.stats.rotations += 1;
        self.oracle.renamed.insert(old, new);
        let last = self.oracle.sessions.get(&old).copied().unwrap_or(self.now);
        self.oracle.sessions.insert(new, last);
        self.client_sessions.insert(new);
    }

    /// The ids a session known as `id` may be held under now: `id`, then each id it was
    /// rotated to, in order.
    pub(super) fn aliases(&self, id: SessionId) -> Vec<SessionId> {
        let mut ids = vec![id];
        while let Some(next) = self.oracle.renamed.get(ids.last().expect("one")) {
            if ids.contains(next) {
                break;
            }
            ids.push(*next);
        }
        ids
    }

    /// After the heal and settle: no node holds an id an acknowledged rotation replaced.
    pub(super) fn check_rotations(&self) -> Result<(), String> {
        for old in &self.oracle.rotated_away {
            for n in self.nodes.iter().flatten() {
                ensure!(
                    !n.core().contains(old),
                    "{} still holds session {old} ({}) after the heal, whose id an acknowledged rotation changed to {:?}",
                    n.id,
                    old.log_id(),
                    self.oracle.renamed.get(old)
                );
            }
        }
        Ok(())
    }
}
