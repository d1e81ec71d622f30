//! A write-through store in the simulation: one store in memory that every process
//! shares (as a PostgreSQL or Redis would be), each process's shipped
//! [`Persistence`](crate::persistence::Persistence) deciding what to do with it, and
//! whole-cluster restarts (every process killed at once, as a power loss or a deploy
//! gone wrong). The store answers at once and never fails; its records go through the
//! shipped record codec (`persist::to_record` / `from_record`).
//!
//! Driven as `manager/store_ops.rs` drives it: after its state transfer a node loads
//! every record before it serves (`begin_loading`, `LoadAll`, `handle_loaded`); a
//! commit's ops run when the commit returns (after its acks, or at once when it sends
//! nothing or sends async), so a write is acknowledged only once saved; a read saves
//! its access (`on_touch`), an expiry here deletes (`on_expired`); a request that misses
//! looks in the store (`reads_on_miss`).
//!
//! The invariant it adds: with a write-through store, no acknowledged write is lost,
//! even when every process crashed: an acknowledged write is on a live node or in the
//! store (checked every step), and a register client's next read sees it after the
//! restart.

use std::collections::BTreeMap;

use rand::Rng;

use super::{AckedWrite, Sim};
use crate::id::SessionId;
use crate::persist::{from_record, merge_for_save};
use crate::persistence::{Committed, Loaded, StoreOp};
use crate::store::StoredSession;
use tribes::MemberId;

/// The store every process of a run shares.
#[derive(Debug, Default)]
pub(super) struct MemStore {
    records: BTreeMap<SessionId, StoredSession>,
}

impl Sim {
    /// A whole-cluster restart (store runs only): every process crashes in the same step
    /// and comes back 0.5 to 3 s later.
    pub(super) fn whole_cluster_restart(&mut self) {
        if self.store.is_none() || !self.rng.random_bool(0.003) {
            return;
        }
        self.stats.cluster_restarts += 1;
        self.trace(|| "CRASH EVERY PROCESS".into());
        for slot in 0..self.nodes.len() {
            if let Some(node) = self.nodes[slot].take() {
                self.stats.crashes += 1;
                self.crashed.insert(node.id);
            }
            self.restart_at[slot] = self.now + self.rng.random_range(500..3_000);
        }
    }

    /// Performs a node's store ops on the store, at once.
    pub(super) fn store_ops(&mut self, owner: MemberId, ops: Vec<StoreOp>) -> Result<(), String> {
        for op in ops {
            let Some(node) = self.nodes.iter_mut().flatten().find(|n| n.id == owner) else {
                return Ok(());
            };
            let store = self.store.as_mut().expect("a store run");
            match op {
                StoreOp::Save(id) => {
                    // As `StoreState::save_merged` (no other writer between its load and save
                    // here); nothing when this node no longer holds the session.
                    if let Some(d) = node.core().export(&id) {
                        let (record, _) = merge_for_save("sim", &d, store.records.get(&id));
                        store.records.insert(id, record);
                    }
                }
                StoreOp::Delete(id) => {
                    store.records.remove(&id);
                }
                StoreOp::LoadAll => {
                    let records: Vec<StoredSession> = store.records.values().cloned().collect();
                    let mut out = Vec::new();
                    for r in &records {
                        let d = from_record("sim", r).map_err(|e| e.to_string())?;
                        node.core_mut().import(&d, &mut out);
                    }
                    self.perform(owner, out)?;
                }
                // Write-through only: no shared-mode saves; upkeep has nothing to do here.
                StoreOp::SaveVersioned { .. }
                | StoreOp::SaveAccess(_)
                | StoreOp::CheckHealth
                | StoreOp::PurgeExpired => {}
            }
        }
        Ok(())
    }

    /// A commit of `key` (now `now`, `None`: invalidated) changed something: the store
    /// ops to run when the commit returns.
    pub(super) fn store_commit(
        &mut self,
        owner: MemberId,
        key: SessionId,
        now: Option<SessionId>,
        base: u64,
    ) -> Vec<StoreOp> {
        let Some(p) = self.node(owner).and_then(|n| n.persistence.as_mut()) else {
            return Vec::new();
        };
        p.on_commit(Committed {
            key,
            now,
            base,
            was_new: false,
        })
    }

    /// A read-only access on `owner` to a session last accessed at `previous_ms`.
    pub(super) fn store_touch(&mut self, owner: MemberId, id: SessionId, previous_ms: u64) -> Result<(), String> {
        let now = self.now;
        let Some(p) = self.node(owner).and_then(|n| n.persistence.as_mut()) else {
            return Ok(());
        };
        let ops: Vec<StoreOp> = p.on_touch(id, previous_ms, now).into_iter().collect();
        self.store_ops(owner, ops)
    }

    /// `owner` expired `id`.
    pub(super) fn store_expired(&mut self, owner: MemberId, id: SessionId) -> Result<(), String> {
        let Some(p) = self.node(owner).and_then(|n| n.persistence.as_ref()) else {
            return Ok(());
        };
        let ops: Vec<StoreOp> = p.on_expired(id).into_iter().collect();
        self.store_ops(owner, ops)
    }

    /// The state transfer of `owner` ended: with a store, load it before serving.
    /// Returns whether the node serves degraded.
    pub(super) fn store_load(&mut self, owner: MemberId, degraded: bool) -> Result<bool, String> {
        let now = self.now;
        let deadline = now + super::TRANSFER_TIMEOUT_MS;
        let op = match self.node(owner).and_then(|n| n.persistence.as_mut()) {
            Some(p) if !degraded => p.begin_loading(deadline),
            _ => return Ok(degraded),
        };
        let Some(op) = op else { return Ok(degraded) };
        self.store_ops(owner, vec![op])?;
        let p = self.node(owner).and_then(|n| n.persistence.as_mut()).expect("live");
        // The store in memory never fails.
        Ok(p.handle_loaded(now, true) != Loaded::Ready)
    }

    /// `SessionManager::get` on a miss with a write-through store: the stored copy, if any.
    pub(super) fn store_read_on_miss(&mut self, owner: MemberId, id: SessionId) -> Result<(), String> {
        let now = self.now;
        let Some(node) = self.node(owner) else { return Ok(()) };
        if node.core().get(now, &id).is_some() || !node.persistence.as_ref().is_some_and(|p| p.reads_on_miss()) {
            return Ok(());
        }
        let Some(r) = self.store.as_ref().and_then(|s| s.records.get(&id)).cloned() else {
            return Ok(());
        };
        let d = from_record("sim", &r).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        let node = self.node(owner).expect("live");
        node.core_mut().import(&d, &mut out);
        self.perform(owner, out)
    }

    /// Whether the store holds the write (that attribute with its stamp or newer).
    pub(super) fn store_holds(&self, w: &AckedWrite, ids: &[SessionId]) -> bool {
        let Some(store) = &self.store else { return false };
        ids.iter().chain(std::iter::once(&w.id)).any(|id| {
            store.records.get(id).is_some_and(|r| {
                from_record("sim", r)
                    .ok()
                    .and_then(|d| d.attr(w.name).map(|a| a.stamp))
                    .is_some_and(|s| s >= w.stamp)
            })
        })
    }
}
