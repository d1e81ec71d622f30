//! Deterministic simulation of a cluster of session managers; see
//! `docs/simulation.md`.
//!
//! One thread, a virtual clock and a simulated network drive N processes' shipped
//! [`SessionNode`](crate::node::SessionNode)s exactly as `manager.rs` does (outputs become
//! sends, sync-ack sends report their outcome back, time reaches `handle_timeout` at
//! `poll_timeout`), with membership decided by the channel's own
//! failure detector, [`tribes::Membership`], fed with simulated heartbeats and TCP
//! verifications (suspect after 2/3 of the drop time, verify, remove; heard again:
//! `Back`; a new id at a member's address: `Replaced`). Every random choice comes from one
//! `StdRng` seeded by the run's seed, and every iteration is in a fixed order, so a seed
//! replays the same run.

#[macro_use]
mod check;
mod clients;
mod contexts;
mod driver;
mod events;
mod filter;
mod membership;
mod network;
mod node;
mod principals;
mod requests;
mod rotation;
mod store;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tribes::{Member, MemberId, MembershipEffect, MembershipEvent};

use crate::core::CoreConfig;
use crate::data::{Blob, Op, Stamp, writer_of};
use crate::id::SessionId;
use crate::kind::{ManagerKind, ReplicationMode};
use crate::node::Delivered;

use crate::wire::Msg;
use contexts::Topic;

use node::{Node, clocks};

/// One step of virtual time.
const STEP_MS: u64 = 50;
/// The membership drop time: suspected after 2/3 of it, removed at it.
const DROP_TIME_MS: u64 = 3_000;
const ACK_TIMEOUT_MS: u64 = 1_000;
/// The waiter of a fetch no client waits for (the random operations' misses).
const UNWAITED_FETCH: u64 = u64::MAX;
const ATTEMPT_TIMEOUT_MS: u64 = 1_500;
const TRANSFER_TIMEOUT_MS: u64 = 20_000;
const DISCOVERY_WAIT_MS: u64 = 500;
const TOUCH_INTERVAL_MS: u64 = 1_000;
/// The core's timer: `min(touch interval, 500 ms)` as `SessionManager` sets it.
const TICK_MS: u64 = 500;
const MAX_INACTIVE_MS: u64 = 8_000;
/// Anti-entropy: one round per node with the next member every this often.
const SYNC_INTERVAL_MS: u64 = 2_000;
const CHUNK_SESSIONS: usize = 3;
const ATTRS: [&str; 3] = ["a", "b", "c"];

/// The faults and the workload of one run, all drawn from the seed.
#[derive(Clone, Debug)]
pub(crate) struct SimConfig {
    pub(crate) seed: u64,
    pub(crate) kind: ManagerKind,
    pub(crate) replication: ReplicationMode,
    pub(crate) nodes: usize,
    /// Chaos phases, each followed by a heal + settle and the quiescence checks.
    pub(crate) phases: usize,
    pub(crate) steps_per_phase: usize,
    pub(crate) loss: f64,
    pub(crate) dup: f64,
    pub(crate) max_delay_ms: u64,
    pub(crate) crash: f64,
    pub(crate) partition: f64,
    /// A write-through store in memory, and whole-cluster restarts (`store.rs`).
    pub(crate) store: bool,
    /// Register clients change their session's id now and then (`rotation.rs`).
    pub(crate) rotation: bool,
    /// An attribute filter keeps one attribute local (`filter.rs`).
    pub(crate) filter: bool,
    /// A second context on the same channel, run by every process but one (`contexts.rs`).
    pub(crate) second_context: bool,
}

impl SimConfig {
    pub(crate) fn from_seed(seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed_c0f1_9000_0000);
        let kind = if seed.is_multiple_of(2) {
            ManagerKind::Delta
        } else {
            ManagerKind::Backup {
                backup_count: rng.random_range(1..=2),
            }
        };
        SimConfig {
            seed,
            kind,
            replication: if rng.random_bool(0.25) {
                ReplicationMode::FullSession
            } else {
                ReplicationMode::Deltas
            },
            nodes: rng.random_range(2..=5),
            phases: 2,
            steps_per_phase: 120,
            loss: [0.0, 0.0, 0.01, 0.05][rng.random_range(0..4)],
            dup: [0.0, 0.02, 0.1][rng.random_range(0..3)],
            max_delay_ms: [0, 20, 200][rng.random_range(0..3)],
            crash: [0.0, 0.004, 0.01][rng.random_range(0..3)],
            partition: [0.0, 0.0, 0.005, 0.02][rng.random_range(0..4)],
            // Drawn after the rest, so the other draws of a seed do not change.
            store: rng.random_bool(0.25),
            // Off: with it on, about 20 of the 2,000 seeds fail (acknowledged writes of
            // the register clients lost around a rotation), not diagnosed yet.
            filter: rng.random_bool(0.5),
            // Half the seeds: register clients change their session's id (`rotation.rs`).
            rotation: rng.random_bool(0.5),
            // Half the seeds: a second context shares the channel (`contexts.rs`).
            second_context: rng.random_bool(0.5) && std::env::var_os("NO2").is_none(),
        }
    }
}

/// What a packet carries: a session message of a context's topic (with an ack token when
/// sent sync-ack), or an ack: `Acked`, or `Refused` when the receiving process has no
/// listener for the topic (it does not run that context), as the channel answers.
#[derive(Clone, Debug)]
enum Body {
    Msg { topic: Topic, msg: Msg, ack: Option<u64> },
    Ack { token: u64, result: Delivered },
}

#[derive(Clone, Debug)]
struct Packet {
    at: u64,
    seq: u64,
    from: MemberId,
    to: MemberId,
    body: Body,
}

/// What a sync-ack send was for, decided when every ack arrived (or one failed or timed out).
#[derive(Debug)]
enum Purpose {
    Write(AckedWrite),
    /// A register client's write (`clients.rs`) of `value`.
    Register {
        client: usize,
        write: AckedWrite,
        value: u64,
    },
    /// An acknowledged send the session node of `topic` asked for, under its own token.
    Node {
        topic: Topic,
        token: u64,
    },
    /// A write of a client of the second context (`contexts.rs`).
    Second {
        user: usize,
        write: AckedWrite,
    },
    /// An invalidation by a client of the second context.
    SecondEnd {
        user: usize,
        id: SessionId,
        holders: Vec<MemberId>,
    },
    Done,
}

#[derive(Debug)]
struct Pending {
    owner: MemberId,
    waiting: BTreeSet<MemberId>,
    /// The first recipient's outcome that was not `Acked`.
    error: Option<Delivered>,
    deadline: u64,
    purpose: Purpose,
    /// The commit's store ops, run when it returns (write-through: before the client
    /// hears of it).
    store: Vec<crate::persistence::StoreOp>,
}

/// A write every recipient acknowledged: its attribute must survive (or be superseded).
#[derive(Clone, Debug)]
pub(crate) struct AckedWrite {
    id: SessionId,
    name: &'static str,
    stamp: Stamp,
    at_ms: u64,
    /// Live nodes that held it (stamp or newer) at the last check.
    holders: Vec<MemberId>,
}

/// What the clients did, to judge the nodes by.
#[derive(Debug, Default)]
struct Oracle {
    /// Sessions clients know (cookies), with the last access a client made.
    sessions: BTreeMap<SessionId, u64>,
    /// The nodes that got each session's last client access: if all of them crashed
    /// before passing it on, the access is lost and an expiry by the older one is right.
    access_holders: BTreeMap<SessionId, Vec<MemberId>>,
    invalidated: BTreeSet<SessionId>,
    /// Sessions logged in (`principals.rs`): each principal and login time.
    logins: BTreeMap<SessionId, Vec<(&'static str, u64)>>,
    /// Sessions a logout everywhere may have ended (their writes are owed to no one).
    logged_out: BTreeSet<SessionId>,
    /// The last logout everywhere of each principal.
    logouts: BTreeMap<&'static str, u64>,
    /// Destroyed as expired on some node.
    expired: BTreeSet<SessionId>,
    acked: Vec<AckedWrite>,
    acked_total: u64,
    writes: u64,
    /// Id rotations applied by the node that committed them: old -> new.
    renamed: BTreeMap<SessionId, SessionId>,
    /// Old ids of acknowledged rotations: gone everywhere after a settle.
    rotated_away: BTreeSet<SessionId>,
}

/// Counters for the report of a run.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct SimStats {
    pub(crate) packets: u64,
    pub(crate) lost: u64,
    pub(crate) crashes: u64,
    pub(crate) partitions: u64,
    pub(crate) transfers: u64,
    pub(crate) degraded: u64,
    pub(crate) acked_writes: u64,
    pub(crate) acked_lost_by_crash: u64,
    pub(crate) writes: u64,
    /// Phases after which convergence and backup counts were checked.
    pub(crate) quiescent_checks: u64,
    /// Register clients' writes acknowledged, and reads checked against them.
    pub(crate) register_acked: u64,
    pub(crate) register_checked: u64,
    /// BackupManager reads that went on without every holder's answer (not checked).
    pub(crate) register_unconfirmed: u64,
    /// Cluster-wide `Expired` events delivered (each checked once only).
    pub(crate) expiry_events: u64,
    /// The documented duplicate: the first deliverer crashed before its mark reached
    /// the next coordinator.
    pub(crate) expiry_duplicates_after_crash: u64,
    /// The other documented duplicate: a partition began less than the failure
    /// detection time before the first delivery, on the side that had not noticed it.
    pub(crate) expiry_duplicates_after_split: u64,
    /// Logins and logouts everywhere made by the random requests.
    pub(crate) logins: u64,
    pub(crate) logouts: u64,
    /// Sessions the coordinator evicted for the session limit (DeltaManager runs).
    pub(crate) evictions: u64,
    /// Whole-cluster restarts (store runs).
    pub(crate) cluster_restarts: u64,
    /// Id rotations applied by the node that committed them (rotation runs).
    pub(crate) rotations: u64,
    /// Writes to the second context acknowledged, and checked once quiet (`contexts.rs`).
    pub(crate) second_acked: u64,
    pub(crate) second_checked: u64,
}

pub(crate) struct Sim {
    pub(crate) cfg: SimConfig,
    rng: StdRng,
    now: u64,
    seq: u64,
    next_token: u64,
    /// One slot per machine; a crash empties it, a restart fills it with a new member id.
    nodes: Vec<Option<Node>>,
    restart_at: Vec<u64>,
    /// Partition group of each slot: slots talk only within their group.
    group: Vec<u8>,
    started_at: BTreeMap<MemberId, u64>,
    in_flight: Vec<Packet>,
    pending: BTreeMap<u64, Pending>,
    oracle: Oracle,
    /// The ids that crashed in the current step (an acked write may go with them).
    crashed: BTreeSet<MemberId>,
    /// Faults on (chaos) or off (settle).
    chaos: bool,
    pub(crate) stats: SimStats,
    /// The first broken invariant seen where it could not be returned at once.
    violation: Option<String>,
    trace: bool,
    log: Vec<String>,
    core_cfg: Arc<CoreConfig>,
    /// The instant of virtual time 0, for the membership machine's `Instant` clock.
    epoch: Instant,
    /// Register clients (`clients.rs`), their sessions, and whether their reads are
    /// checked now (not from a partition until the heal and settle).
    clients: Vec<clients::Client>,
    client_sessions: BTreeSet<SessionId>,
    register_checks: bool,
    expiry: events::ExpiryOracle,
    /// Nodes that became ready with members but no transfer source (all were starting),
    /// and when. Known gap (docs/simulation.md): a DeltaManager node that serves that way
    /// lacks the sessions the others got as live deltas until anti-entropy repairs them,
    /// so register reads there are not checked for the repair window.
    sourceless: BTreeMap<MemberId, u64>,
    /// The write-through store every process shares (store runs).
    store: Option<store::MemStore>,
    /// The second context on the channel and what its clients did (`contexts.rs`).
    second: contexts::Second,
    /// When each node last got a copy of a session for a request (`FetchReply`), of
    /// either context (ids do not collide): a copy outside the placement is kept for a
    /// while after (`check_copies`).
    fetch_replies: BTreeMap<(MemberId, SessionId), u64>,
}

impl Sim {
    pub(crate) fn new(cfg: SimConfig) -> Self {
        let core_cfg = Arc::new(CoreConfig {
            context: "/sim".into(),
            kind: cfg.kind,
            replication: cfg.replication,
            filter: filter::filter(cfg.filter),
            max_active: None,
            max_inactive_ms: MAX_INACTIVE_MS,
            grace_ms: 2 * TOUCH_INTERVAL_MS,
            touch_interval_ms: TOUCH_INTERVAL_MS,
            tombstone_ttl_ms: MAX_INACTIVE_MS.max(600_000),
            sync_interval_ms: SYNC_INTERVAL_MS,
            max_lifetime_ms: None,
            store_backed: cfg.store,
        });
        let n = cfg.nodes;
        let cfg_second = cfg.clone();
        let core_cfg_second = (*core_cfg).clone();
        let mut sim = Sim {
            rng: StdRng::seed_from_u64(cfg.seed),
            cfg,
            now: 1_000_000,
            seq: 0,
            next_token: 0,
            nodes: (0..n).map(|_| None).collect(),
            restart_at: vec![0; n],
            group: vec![0; n],
            started_at: BTreeMap::new(),
            in_flight: Vec::new(),
            pending: BTreeMap::new(),
            oracle: Oracle::default(),
            crashed: BTreeSet::new(),
            chaos: true,
            stats: SimStats::default(),
            violation: None,
            trace: std::env::var_os("TRIBES_SIM_TRACE").is_some(),
            log: Vec::new(),
            core_cfg,
            epoch: Instant::now(),
            // Half stick to a node (failing over to the next), half go round robin.
            clients: (0..clients::CLIENTS)
                .map(|i| clients::Client::new(i.is_multiple_of(2).then_some(i % n)))
                .collect(),
            client_sessions: BTreeSet::new(),
            register_checks: true,
            expiry: Default::default(),
            sourceless: BTreeMap::new(),
            store: None,
            second: contexts::Second::new(&cfg_second, &core_cfg_second),
            fetch_replies: BTreeMap::new(),
        };
        sim.store = sim.cfg.store.then(store::MemStore::default);
        // The nodes start a little apart, as processes do.
        for slot in 0..n {
            sim.restart_at[slot] = sim.now + slot as u64 * 200;
        }
        sim
    }

    pub(super) fn trace(&mut self, line: impl FnOnce() -> String) {
        if self.trace {
            let line = format!("[{:>7}ms] {}", self.now - 1_000_000, line());
            eprintln!("{line}");
            self.log.push(line);
        }
    }

    /// The whole run: chaos phases, each followed by heal + settle and the quiescence checks.
    pub(crate) fn run(&mut self) -> Result<(), String> {
        for phase in 0..self.cfg.phases {
            self.chaos = true;
            for _ in 0..self.cfg.steps_per_phase {
                self.step()?;
            }
            self.chaos = false;
            self.trace(|| format!("phase {phase}: heal and settle"));
            self.heal_and_settle()?;
            self.check_quiescent()?;
            self.check_expiry_events()?;
            self.check_principals()?;
            self.check_rotations()?;
            self.check_second_context()?;
            self.stats.quiescent_checks += 1;
        }
        self.stats.acked_writes = self.oracle.acked_total;
        self.stats.writes = self.oracle.writes;
        Ok(())
    }

    fn step(&mut self) -> Result<(), String> {
        self.now += STEP_MS;
        self.crashed.clear();
        if self.chaos {
            self.faults();
            self.whole_cluster_restart();
        }
        self.restarts();
        self.deliver()?;
        self.membership();
        self.timeouts();
        self.timers()?;
        if self.chaos {
            for _ in 0..2 {
                if self.rng.random_bool(0.5) {
                    self.client_op()?;
                }
            }
            self.register_clients()?;
            self.second_context_request()?;
        }
        self.check_step()
    }

    // ----- faults -----

    fn faults(&mut self) {
        let n = self.nodes.len();
        if self.rng.random_bool(self.cfg.crash) {
            let slot = self.rng.random_range(0..n);
            if let Some(node) = self.nodes[slot].take() {
                self.stats.crashes += 1;
                self.crashed.insert(node.id);
                self.restart_at[slot] = self.now + self.rng.random_range(500..5_000);
                self.trace(|| format!("CRASH {} (slot {slot})", node.id));
            }
        }
        if n > 1 && self.rng.random_bool(self.cfg.partition) {
            if self.group.iter().all(|g| *g == 0) {
                // Split into two sides, each non-empty.
                let cut = self.rng.random_range(1..n);
                let mut slots: Vec<usize> = (0..n).collect();
                for i in (1..n).rev() {
                    let j = self.rng.random_range(0..=i);
                    slots.swap(i, j);
                }
                for (i, slot) in slots.into_iter().enumerate() {
                    self.group[slot] = u8::from(i >= cut);
                }
                self.stats.partitions += 1;
                let g = self.group.clone();
                self.expiry.note_split(self.now, &g);
                self.trace(|| format!("PARTITION {g:?}"));
                self.suspend_register_checks();
            } else {
                self.group.iter_mut().for_each(|g| *g = 0);
                self.trace(|| "HEAL".into());
            }
        }
    }

    fn restarts(&mut self) {
        for slot in 0..self.nodes.len() {
            if self.nodes[slot].is_none() && self.now >= self.restart_at[slot] {
                let id = MemberId::random(&mut self.rng);
                self.started_at.insert(id, self.now);
                let local = Member::new(id, format!("slot{slot}"), "sim", Self::addr_of(slot), self.now);
                let limit = principals::session_limit(&self.cfg);
                let store = self.store.is_some();
                let second = self.second.config_for(slot, self.nodes.len());
                self.nodes[slot] = Some(Node::new(local, self.now, self.core_cfg.clone(), limit, store, second));
                self.stats.transfers += 1;
                self.trace(|| format!("START {id} (slot {slot})"));
            }
        }
    }

    fn slot_of(&self, id: MemberId) -> Option<usize> {
        self.nodes.iter().position(|n| n.as_ref().is_some_and(|n| n.id == id))
    }

    fn connected(&self, a: usize, b: usize) -> bool {
        self.group[a] == self.group[b]
    }

    fn node(&mut self, id: MemberId) -> Option<&mut Node> {
        self.nodes.iter_mut().flatten().find(|n| n.id == id)
    }

    // ----- heal and settle -----

    /// Heals partitions, restarts crashed nodes, and runs without faults or clients until
    /// the cluster is quiet: every node serving, every membership view and server list
    /// complete, nothing in flight.
    fn heal_and_settle(&mut self) -> Result<(), String> {
        self.group.iter_mut().for_each(|g| *g = 0);
        for slot in 0..self.nodes.len() {
            if self.nodes[slot].is_none() {
                self.restart_at[slot] = self.now;
            }
        }
        // Quiet once (everyone serving, views and server lists complete), then enough
        // anti-entropy rounds for every pair to repair what the chaos left (a repair
        // may take two rounds: merge, then drop an extra copy), then quiet again.
        let rounds_ms = 3 * self.nodes.len() as u64 * SYNC_INTERVAL_MS;
        let mut synced_until = None;
        for _ in 0..(120_000 / STEP_MS) {
            self.step()?;
            if self.is_quiet() {
                // Let touches and expiries of the last tick land.
                for _ in 0..2 {
                    self.step()?;
                }
                if !self.is_quiet() {
                    continue;
                }
                match synced_until {
                    None => synced_until = Some(self.now + rounds_ms),
                    Some(t) if self.now >= t => {
                        self.resume_register_checks();
                        return Ok(());
                    }
                    Some(_) => {}
                }
            }
        }
        let mut report = String::new();
        for node in self.nodes.iter().flatten() {
            let _ = writeln!(
                report,
                "  {}: serving {}, servers {:?}, view {:?}, expiries pending {}",
                node.id,
                node.is_serving(),
                node.core().servers(),
                node.members(),
                node.core().pending_expiries()
            );
            if let Some(second) = &node.second {
                let core = second.session.core();
                let _ = writeln!(
                    report,
                    "    second context: serving {}, servers {:?}, expiries pending {}",
                    second.session.is_serving(),
                    core.servers(),
                    core.pending_expiries()
                );
            }
        }
        Err(format!(
            "the cluster did not settle within 120 s after the heal:\n{report}"
        ))
    }

    fn is_quiet(&self) -> bool {
        let live: BTreeSet<MemberId> = self.nodes.iter().flatten().map(|n| n.id).collect();
        self.in_flight.is_empty()
            && self.pending.is_empty()
            && self.nodes.iter().flatten().all(|n| {
                let others: BTreeSet<MemberId> = live.iter().copied().filter(|m| *m != n.id).collect();
                let servers: BTreeSet<MemberId> = n.core().servers().iter().copied().collect();
                let view: BTreeSet<MemberId> = n.members().into_iter().collect();
                n.is_serving() && view == others && servers == others && n.core().pending_expiries() == 0
            })
            && self.second_context_quiet()
    }
}

/// The members that hold a write once acked: those sent the change or the session, and
/// the writer.
fn holders_of(parts: &[(Vec<MemberId>, Msg)], me: MemberId) -> Vec<MemberId> {
    let mut holders: Vec<MemberId> = parts
        .iter()
        .filter(|(_, m)| !matches!(m, Msg::Claimed(_)))
        .flat_map(|(to, _)| to.iter().copied())
        .collect();
    holders.sort();
    holders.dedup();
    holders.push(me);
    holders
}

/// Runs one seed; the error names the seed and the command that replays it.
pub(crate) fn run_seed(seed: u64) -> Result<SimStats, String> {
    let mut sim = Sim::new(SimConfig::from_seed(seed));
    match sim.run() {
        Ok(()) => Ok(sim.stats),
        Err(e) => Err(format!(
            "simulation failed at t={} ms, seed {seed} ({:?}):\n  {e}\nreplay: TRIBES_SIM_SEED={seed} cargo nextest run -p tribes-sessions sim_replay\n(TRIBES_SIM_TRACE=1 prints every event)",
            sim.now - 1_000_000,
            sim.cfg
        )),
    }
}
