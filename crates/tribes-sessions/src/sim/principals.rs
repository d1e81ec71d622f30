//! Principals in the simulation: random requests log sessions in (to one of two
//! principals) and log a principal out everywhere, on a random serving node. Checked after
//! every heal: each node's principal index equals the sessions it holds, and no node holds
//! a session that a logout known to any live node covers (a login on the other side of a
//! partition before the logout does not survive the heal).

use super::*;
use crate::principal::{MaxSessionsPolicy, PRINCIPAL_ATTRIBUTE, PrincipalRecord};

/// The principals the simulated users log in as.
const PRINCIPALS: [&str; 2] = ["alice", "bob"];

/// The session limit per principal of the DeltaManager runs (its coordinator enforces it).
pub(super) const SESSION_LIMIT: usize = 2;

/// The limit's policy of a run, drawn from the seed.
pub(super) fn session_limit(cfg: &SimConfig) -> Option<(usize, MaxSessionsPolicy)> {
    (cfg.kind == ManagerKind::Delta).then(|| {
        let policy = if (cfg.seed / 2).is_multiple_of(2) {
            MaxSessionsPolicy::EvictOldest
        } else {
            MaxSessionsPolicy::Refuse
        };
        (SESSION_LIMIT, policy)
    })
}

impl Sim {
    /// A login of session `id` on `slot`, as `SessionManager::set_principal` then commit.
    pub(super) fn login(&mut self, slot: usize, id: SessionId) -> Result<(), String> {
        let name = PRINCIPALS[self.rng.random_range(0..PRINCIPALS.len())];
        let record = PrincipalRecord {
            name: name.into(),
            since_ms: self.now,
        };
        self.trace(|| format!("LOGIN {id} as {name}"));
        self.stats.logins += 1;
        // Every principal a session had counts: a copy elsewhere may still have an older one.
        self.oracle.logins.entry(id).or_default().push((name, self.now));
        if self.oracle.logouts.get(name).is_some_and(|at| *at >= self.now) {
            // A login in the millisecond of a logout everywhere ends with it (the safe side).
            self.oracle.logged_out.insert(id);
        }
        self.write(
            slot,
            id,
            vec![Op::Set(PRINCIPAL_ATTRIBUTE.into(), Blob(record.encode().into()))],
        )
    }

    /// `SessionManager::invalidate_principal` on `slot`.
    pub(super) fn logout_everywhere(&mut self, slot: usize) -> Result<(), String> {
        let name = PRINCIPALS[self.rng.random_range(0..PRINCIPALS.len())];
        let now = self.now;
        let node = self.nodes[slot].as_mut().expect("serving");
        let me = node.id;
        let mut out = Vec::new();
        node.core_mut().log_out_principal(now, name, now, &mut out);
        self.trace(|| format!("{me}: LOGOUT EVERYWHERE {name}"));
        self.oracle.logouts.insert(name, now);
        self.stats.logouts += 1;
        // The sessions it may end: their writes are no longer owed to anyone.
        for (id, logins) in &self.oracle.logins {
            if logins.iter().any(|(p, since)| *p == name && *since <= now) {
                self.oracle.logged_out.insert(*id);
            }
        }
        self.perform(me, out)
    }

    /// `owner` evicted `id` for its principal's limit: its writes are owed to no one.
    pub(super) fn on_evicted(&mut self, owner: MemberId, id: SessionId) {
        self.trace(|| format!("{owner}: EVICTED {id}"));
        self.oracle.logged_out.insert(id);
        self.stats.evictions += 1;
    }

    /// After a heal and settle: indexes right, logouts applied everywhere, and (Delta)
    /// no principal over the limit.
    pub(super) fn check_principals(&self) -> Result<(), String> {
        let nodes: Vec<&Node> = self.nodes.iter().flatten().collect();
        let mut logouts: BTreeMap<Arc<str>, u64> = BTreeMap::new();
        for n in &nodes {
            n.core().check_principal_index().map_err(|e| format!("{}: {e}", n.id))?;
            for (p, at) in n.core().logouts() {
                let known = logouts.entry(p).or_insert(0);
                *known = (*known).max(at);
            }
        }
        let mut per_principal: BTreeMap<Arc<str>, BTreeSet<SessionId>> = BTreeMap::new();
        for n in &nodes {
            for (id, p, since) in n.core().principals_held() {
                per_principal.entry(p.clone()).or_default().insert(id);
                if let Some(at) = logouts.get(&p) {
                    ensure!(
                        since > *at,
                        "{} still holds session {id} of '{p}' logged in at {} ms, after a logout everywhere at {} ms",
                        n.id,
                        since - 1_000_000,
                        at - 1_000_000
                    );
                }
            }
        }
        if let Some((max, _)) = session_limit(&self.cfg) {
            for (p, ids) in &per_principal {
                ensure!(
                    ids.len() <= max,
                    "'{p}' has {} live sessions after the settle, the limit is {max}: {ids:?}",
                    ids.len()
                );
            }
        }
        Ok(())
    }
}
