//! Anti-entropy: two members find and repair the sessions they disagree on.
//!
//! Replication is best effort between acknowledgements: an async delta, a touch batch or
//! an `Expired` notice can be lost when a connection breaks, a partition lets both sides
//! change sessions the other never sees, and an invalidation made on one side must not
//! be undone by the other. So every `sync_interval` each node picks one other member
//! (round robin) and runs three small steps with it, all fire-and-forget (a lost step
//! is repeated at the next round):
//!
//! 1. `Digest`: the sender splits the sessions the two should agree on (the *pair set*)
//!    into 256 buckets by id and sends one 64-bit fingerprint per bucket (2 KiB).
//! 2. `Detail`: the receiver compares with its own; for the buckets that differ it lists
//!    each session it holds (id, fingerprint, last access) and the ids it destroyed
//!    (its tombstones).
//! 3. The first node resolves each listed id: a session one side destroyed is destroyed
//!    on the other (invalidation wins, so a logged-out session never comes back);
//!    copies that differ are exchanged both ways (`Merge` one way, `Want` for the other)
//!    and merged field by field by their stamps, so both end with the same state; a
//!    backup copy that placement no longer wants is dropped; access times take the later.
//!
//! The pair set is every session for the DeltaManager. For the BackupManager it is, on
//! each side, the sessions it is primary of that placement puts on the other, plus the
//! sessions it holds whose primary is the other: in a converged cluster the two sides
//! compute the same set. Fingerprints cover the replicated state only (attribute stamps,
//! metadata stamp and primary), never the access time, so reads do not make buckets
//! differ; and they use FNV-1a, fixed by this code, so every node and build agrees.
//!
//! Cost: one digest per node per interval (2 KiB), and detail only for buckets that
//! differ, which under steady load are those with writes in flight.

use std::collections::{BTreeMap, BTreeSet};

use tribes::MemberId;

use super::{Core, Effect};
use crate::data::SessionData;
use crate::id::{FNV_OFFSET, SessionId, fnv1a as fnv};
use crate::kind::ManagerKind;
use crate::listener::{DestroyReason, Origin};
use crate::placement;
use crate::wire::Msg;

/// Buckets per digest.
pub(crate) const BUCKETS: usize = 256;

fn bucket_of(id: &SessionId) -> u8 {
    (id.hash64() >> 56) as u8
}

/// At most this many sessions are repaired per round each way; the rest at the next.
const MAX_REPAIRS_PER_ROUND: usize = 1024;

/// A `Merge` carries about this many bytes of attributes at most (at least one session).
const MERGE_BYTES: usize = 1 << 20;

/// A member's entry in a `Detail`: id, fingerprint, last access.
type Held = (SessionId, u64, u64);

/// Sends `sessions` to `to` in `Merge` messages of about [`MERGE_BYTES`] each.
fn push_merges(to: MemberId, sessions: Vec<SessionData>, out: &mut Vec<Effect>) {
    let mut batch = Vec::new();
    let mut bytes = 0;
    for d in sessions {
        let len = d.payload_len() + 64;
        if !batch.is_empty() && bytes + len > MERGE_BYTES {
            out.push(Effect::Send(
                vec![to],
                Msg::Merge {
                    sessions: std::mem::take(&mut batch),
                },
            ));
            bytes = 0;
        }
        bytes += len;
        batch.push(d);
    }
    if !batch.is_empty() {
        out.push(Effect::Send(vec![to], Msg::Merge { sessions: batch }));
    }
}

impl Core {
    /// The fingerprint of the replicated state of `d`: equal on two nodes iff they hold
    /// the same replicated attributes (by stamp), metadata stamp and primary.
    pub(crate) fn fingerprint(&self, d: &SessionData) -> u64 {
        let mut h = fnv(FNV_OFFSET, d.id.as_bytes());
        h = fnv(h, &d.meta.version.to_le_bytes());
        h = fnv(h, &d.meta.writer.to_le_bytes());
        if let Some(p) = d.primary {
            h = fnv(h, p.as_bytes());
        }
        // Attributes in any order: combine their own hashes with a commutative sum.
        let mut attrs = 0u64;
        for a in d.attrs.iter().filter(|a| self.replicate(&a.name)) {
            let mut ah = fnv(FNV_OFFSET, a.name.as_bytes());
            ah = fnv(ah, &a.stamp.version.to_le_bytes());
            ah = fnv(ah, &a.stamp.writer.to_le_bytes());
            ah = fnv(ah, &[u8::from(a.value.is_some())]);
            attrs = attrs.wrapping_add(ah);
        }
        fnv(h, &attrs.to_le_bytes())
    }

    /// Whether `d` belongs to the sessions this node and `peer` should agree on.
    fn in_pair_set(&self, d: &SessionData, peer: MemberId, all: &[MemberId]) -> bool {
        match self.cfg.kind {
            ManagerKind::Delta => true,
            ManagerKind::Backup { backup_count } => {
                d.primary == Some(peer)
                    || (d.primary == Some(self.local)
                        && placement::top(all, d.id, backup_count, Some(self.local)).contains(&peer))
            }
        }
    }

    /// The pair set with `peer`, as (id, fingerprint, last access).
    fn pair_set(&self, peer: MemberId) -> Vec<Held> {
        let all = self.all();
        self.sessions
            .values()
            .filter(|d| self.in_pair_set(d, peer, &all))
            .map(|d| (d.id, self.fingerprint(d), d.last_access_ms))
            .collect()
    }

    fn digest(set: &[Held]) -> Vec<u64> {
        let mut buckets = vec![0u64; BUCKETS];
        for (id, fp, _) in set {
            let b = &mut buckets[usize::from(bucket_of(id))];
            *b = b.wrapping_add(*fp);
        }
        buckets
    }

    /// Starts a round with `peer` now (also called when a member comes back after a
    /// partition).
    pub(crate) fn sync_with(&mut self, peer: MemberId, out: &mut Vec<Effect>) {
        let set = self.pair_set(peer);
        self.counters.sync_rounds += 1;
        out.push(Effect::Send(
            vec![peer],
            Msg::Digest {
                buckets: Self::digest(&set),
            },
        ));
    }

    /// The periodic round: the next member, round robin; and (BackupManager) sessions
    /// whose primary is gone are handed to their heir again, in case an `Adopt` was lost.
    pub(crate) fn sync_tick(&mut self, now_ms: u64, out: &mut Vec<Effect>) {
        let interval = self.cfg.sync_interval_ms;
        if interval == 0 || now_ms < self.next_sync_ms {
            return;
        }
        self.next_sync_ms = now_ms + interval;
        self.rehome_orphans(out);
        if self.servers.is_empty() {
            return;
        }
        self.sync_cursor = (self.sync_cursor + 1) % self.servers.len();
        let peer = self.servers[self.sync_cursor];
        self.sync_with(peer, out);
    }

    /// Step 2: answer a digest with the detail of the buckets that differ.
    pub(super) fn on_digest(&mut self, from: MemberId, buckets: &[u64], out: &mut Vec<Effect>) {
        if buckets.len() != BUCKETS {
            tracing::warn!(context = %self.cfg.context, member = %from, buckets = buckets.len(), "anti-entropy digest with the wrong number of buckets ignored: the member runs an incompatible build; upgrade every node to the same release");
            return;
        }
        let set = self.pair_set(from);
        let mine = Self::digest(&set);
        let differ: BTreeSet<u8> = (0..BUCKETS)
            .filter(|b| mine[*b] != buckets[*b])
            .map(|b| b as u8)
            .collect();
        if differ.is_empty() {
            return;
        }
        let held: Vec<Held> = set
            .into_iter()
            .filter(|(id, _, _)| differ.contains(&bucket_of(id)))
            .collect();
        // A renamed id is not listed: its holder sends its copy, which follows the new id
        // (`core/rename.rs`), instead of destroying it.
        let gone: Vec<SessionId> = self
            .tombs
            .iter()
            .filter(|(id, t)| t.renamed_to.is_none() && differ.contains(&bucket_of(id)))
            .map(|(id, _)| *id)
            .collect();
        out.push(Effect::Send(
            vec![from],
            Msg::Detail {
                buckets: differ.into_iter().collect(),
                held,
                gone,
            },
        ));
    }

    /// Step 3: resolve every session listed by `from` or held here in those buckets.
    pub(super) fn on_detail(
        &mut self,
        now_ms: u64,
        from: MemberId,
        buckets: &[u8],
        theirs: Vec<Held>,
        gone: Vec<SessionId>,
        out: &mut Vec<Effect>,
    ) {
        let buckets: BTreeSet<u8> = buckets.iter().copied().collect();
        let theirs: BTreeMap<SessionId, (u64, u64)> =
            theirs.into_iter().map(|(id, fp, last)| (id, (fp, last))).collect();
        let mine: BTreeMap<SessionId, (u64, u64)> = self
            .pair_set(from)
            .into_iter()
            .filter(|(id, _, _)| buckets.contains(&bucket_of(id)))
            .map(|(id, fp, last)| (id, (fp, last)))
            .collect();
        let all = self.all();
        let mut expired = Vec::new();
        let mut send = Vec::new();
        let mut want = Vec::new();
        let mut drop = Vec::new();
        let mut touches = Vec::new();
        // Destroyed on the other side: destroyed here too.
        for id in gone {
            if self.sessions.contains_key(&id) {
                self.counters.sync_repaired += 1;
                self.destroy(now_ms, id, DestroyReason::Invalidated, Origin::Replicated, out);
            }
        }
        let ids: BTreeSet<SessionId> = theirs.keys().chain(mine.keys()).copied().collect();
        for id in ids {
            if send.len() >= MAX_REPAIRS_PER_ROUND || want.len() >= MAX_REPAIRS_PER_ROUND {
                break;
            }
            if self.tombs.contains_key(&id) {
                if theirs.contains_key(&id) {
                    match self.renamed_to(&id) {
                        Some(new) => self.send_rename(from, id, new, out),
                        None => expired.push(id),
                    }
                }
                continue;
            }
            let Some(copy) = self.sessions.get(&id) else {
                // They hold it and this node never did (or lost it): ask for it.
                want.push(id);
                continue;
            };
            let my_fp = mine.get(&id).map_or_else(|| self.fingerprint(copy), |m| m.0);
            match theirs.get(&id) {
                Some((fp, last)) if *fp == my_fp => {
                    let backup = matches!(self.cfg.kind, ManagerKind::Backup { .. });
                    if backup
                        && copy.primary == Some(self.local)
                        && !placement::top(&all, id, self.backup_count(), Some(self.local)).contains(&from)
                    {
                        // A backup copy placement no longer puts there (a lost Drop).
                        drop.push(id);
                    } else if copy.last_access_ms > *last {
                        touches.push((id, copy.last_access_ms));
                    } else if *last > copy.last_access_ms
                        && let Some(mut d) = self.sessions.get_mut(&id)
                    {
                        d.last_access_ms = *last;
                    }
                }
                Some(_) | None if self.is_stray_copy(copy, &all) => {
                    // BackupManager: a copy placement does not put here (a copy fetched
                    // for a request, a lost `Drop`): its writes go to the primary, which
                    // answers with a `Drop`; asking for the primary's copy too would
                    // bring it back right after the `Drop`.
                    send.push(self.outgoing(copy));
                }
                Some(_) => {
                    send.push(self.outgoing(copy));
                    want.push(id);
                }
                None => {
                    // Listed here only: they lack it, or hold it outside the pair set.
                    send.push(self.outgoing(copy));
                    want.push(id);
                }
            }
        }
        self.counters.sync_repaired += (send.len() + expired.len() + drop.len()) as u64;
        if !expired.is_empty() {
            out.push(Effect::Send(vec![from], Msg::Gone(expired)));
        }
        push_merges(from, send, out);
        if !want.is_empty() {
            out.push(Effect::Send(vec![from], Msg::Want(want)));
        }
        for id in drop {
            let version = self.sessions.get(&id).map_or(u64::MAX, |d| d.version);
            out.push(Effect::Send(vec![from], Msg::Drop { id, version }));
        }
        if !touches.is_empty() {
            out.push(Effect::Send(vec![from], Msg::Touches(touches)));
        }
    }

    /// BackupManager: a copy held here that is neither the primary's nor one of the
    /// backups placement gives its primary.
    fn is_stray_copy(&self, copy: &SessionData, all: &[MemberId]) -> bool {
        matches!(self.cfg.kind, ManagerKind::Backup { .. })
            && copy.primary.is_some_and(|p| {
                p != self.local && !placement::top(all, copy.id, self.backup_count(), Some(p)).contains(&self.local)
            })
    }

    /// The answer to a `Want`: this node's copies of the listed sessions.
    pub(super) fn on_want(&mut self, from: MemberId, ids: &[SessionId], out: &mut Vec<Effect>) {
        let sessions: Vec<SessionData> = ids
            .iter()
            .take(MAX_REPAIRS_PER_ROUND)
            .filter_map(|id| self.sessions.get(id))
            .map(|d| self.outgoing(d))
            .collect();
        push_merges(from, sessions, out);
    }

    /// BackupManager: sessions held here whose primary is no longer a member go to the
    /// best-ranked member, as when the primary left.
    pub(super) fn rehome_orphans(&mut self, out: &mut Vec<Effect>) {
        if !matches!(self.cfg.kind, ManagerKind::Backup { .. }) {
            return;
        }
        let all = self.all();
        let orphans: Vec<SessionId> = self
            .sessions
            .values()
            .filter(|d| d.primary.is_none_or(|p| !all.contains(&p)))
            .map(|d| d.id)
            .collect();
        for id in orphans {
            self.rehome(id, &all, out);
        }
    }
}
