//! One context's session node on one member: Tomcat's cluster manager for one web
//! application, with no sockets, no tasks and time as an argument.
//!
//! [`Core`] decides about sessions (merges, ownership, expiry, anti-entropy). The node
//! decides about members and phases:
//! - who serves the context: a `Hello` to every member, sync-acked; an ack makes it a
//!   server; a member that never answers is *unreachable* and a starting node may not
//!   serve without its sessions; greetings are said again to members not known to
//!   serve the context;
//! - the startup: wait for discovery, greet, then the state transfer through the
//!   [`Joiner`], then serve (degraded when no transfer completed in time);
//! - the sending side of a state transfer: the snapshot in chunks, each sync-acked,
//!   then `Done`;
//! - when the core's timer runs (expiry, touch batches, anti-entropy rounds);
//! - the BackupManager's fetches (`node/fetching.rs`): whom a request asks for a copy,
//!   who is asked instead when a member cannot answer, and when the request goes on.
//!
//! Inputs: membership changes ([`SessionNode::handle_member_up`] and `_down`), messages
//! ([`SessionNode::handle_message`]), the outcome of each acknowledged send the node
//! asked for ([`SessionNode::handle_send_result`]), and time
//! ([`SessionNode::handle_timeout`], at the latest at [`SessionNode::poll_timeout`]).
//! Outputs queue up and are taken with [`SessionNode::drain_outputs`]: messages to send,
//! session events, the end of the state transfer, and completed fetches. The tokio driver (`manager.rs`)
//! and the simulation (`sim/`) drive this same node, the way foca's runtime drives its
//! `Foca` and quinn drives `quinn-proto`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use tribes::{Member, MemberId};

use crate::core::{Core, CoreConfig, Effect};
use crate::data::SessionData;
use crate::error::{StateTransferError, TransferFailure};
use crate::fetch::Fetches;
use crate::id::SessionId;
use crate::joiner::{AckResult, JoinTimeouts, Joiner};
use crate::listener::SessionEvent;
use crate::stats::TransferStats;
use crate::wire::Msg;

/// How long a `Hello` may wait for its ack.
pub(crate) const HELLO_TIMEOUT_MS: u64 = 2_000;
/// While starting, how often a member whose replication did not answer is greeted again.
const REGREET_MS: u64 = 1_000;
/// While starting, how often the node wants to be polled at the latest.
const STARTUP_POLL_MS: u64 = 50;

/// The node's settings (from the manager's builder, or the simulation's constants).
#[derive(Debug, Clone)]
pub(crate) struct NodeConfig {
    /// The member this node runs on, as its peers see it (its age ranks it).
    pub(crate) local: Member,
    /// A shared store holds the sessions: nothing to receive, nothing to replicate.
    pub(crate) shared: bool,
    pub(crate) transfer: JoinTimeouts,
    pub(crate) discovery_wait_ms: u64,
    pub(crate) chunk_size: usize,
    /// How often the core's timer runs.
    pub(crate) tick_ms: u64,
    /// How often members not known to serve the context are greeted again (0: never).
    pub(crate) regreet_every_ms: u64,
    /// How long a fetch waits for the members it asked (the ack timeout).
    pub(crate) fetch_timeout_ms: u64,
}

/// Both clocks, in milliseconds: the wall clock sessions are stamped with, and a
/// monotonic one for the protocol's timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Now {
    pub(crate) wall_ms: u64,
    pub(crate) mono_ms: u64,
}

/// How an acknowledged send ended, for the one member it went to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Delivered {
    Acked,
    /// The member does not serve the context (its channel refused the message).
    Refused(String),
    /// Not delivered: the connection failed.
    Failed(String),
    /// No ack within this many milliseconds.
    TimedOut(u64),
}

/// A message to send. With `ack`, it is sent sync-ack and its outcome is reported back
/// with [`SessionNode::handle_send_result`] under `ack.token`.
#[derive(Debug, Clone)]
pub(crate) struct Transmit {
    pub(crate) to: Vec<MemberId>,
    pub(crate) msg: Msg,
    pub(crate) ack: Option<AckWanted>,
}

/// The token and timeout of an acknowledged send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AckWanted {
    pub(crate) token: u64,
    pub(crate) timeout_ms: u64,
}

/// What the driver must do.
#[derive(Debug)]
pub(crate) enum Output {
    Send(Transmit),
    Event(SessionEvent),
    /// Deliver the cluster-wide `Expired` event of this session (this node coordinates).
    Expired {
        id: SessionId,
        principal: Option<Arc<str>>,
    },
    /// This node evicted the session for its principal's session limit.
    Evicted {
        id: SessionId,
        principal: Arc<str>,
    },
    /// The state transfer ended; the driver loads its store if it persists, then calls
    /// [`SessionNode::serve`].
    Transferred(Result<(), StateTransferError>),
    /// The fetch that `waiter` began ([`SessionNode::begin_fetch`]) completed: every
    /// member asked answered (`confirmed`), or its deadline passed.
    Fetched {
        waiter: u64,
        confirmed: bool,
    },
    /// The principal query that `waiter` began ([`SessionNode::begin_principal_query`])
    /// completed: every server asked answered or left (`complete`), or its deadline passed.
    PrincipalSessions {
        waiter: u64,
        sessions: Vec<crate::principal::Summary>,
        complete: bool,
    },
}

#[derive(Debug)]
enum Phase {
    /// Waiting for discovery to find the members (at most the discovery wait).
    Discovering {
        until: u64,
    },
    /// `Hello` sent to every member; waiting for these acks.
    Greeting {
        waiting: BTreeSet<u64>,
    },
    Transferring(Box<Joiner>),
    /// Transferred; the driver loads the store.
    Loading,
    Serving {
        /// Read by the simulation's checks (the manager keeps its own `Readiness`).
        #[cfg_attr(not(test), allow(dead_code))]
        degraded: bool,
    },
}

/// What an acknowledged send was for.
#[derive(Debug)]
enum Pending {
    Hello { member: MemberId, again: bool },
    GetAll { member: MemberId, request: u64 },
    Chunk(Stream),
    Done,
    Fetch { id: SessionId, member: MemberId },
}

/// A snapshot being streamed to a starting member.
#[derive(Debug)]
struct Stream {
    to: MemberId,
    request: u64,
    rest: VecDeque<Vec<SessionData>>,
    total: u64,
}

/// One context's node: the core and every decision about members and phases.
pub(crate) struct SessionNode {
    cfg: NodeConfig,
    core: Core,
    phase: Phase,
    started_ms: u64,
    last_ms: u64,
    members: BTreeMap<MemberId, Member>,
    /// Members that left the membership, and when (a late message from one must not make
    /// it a server again).
    departed: BTreeMap<MemberId, u64>,
    /// Servers added on a message before the membership listed them, and when.
    provisional: BTreeMap<MemberId, u64>,
    /// Members whose `Hello` got no answer (not a refusal), and why.
    unreachable: BTreeMap<MemberId, String>,
    discovery_settled: bool,
    pending: BTreeMap<u64, Pending>,
    next_token: u64,
    next_tick: u64,
    next_regreet: u64,
    outputs: Vec<Output>,
    stats: TransferStats,
    /// The completed transfers of the startup: source and request.
    completed: Vec<(MemberId, u64)>,
    /// The BackupManager's fetches in flight (`node/fetching.rs`).
    fetches: Fetches<u64>,
    /// Principal queries in flight (`node/queries.rs`).
    queries: queries::Queries,
}

impl SessionNode {
    /// A node that starts now: it waits for discovery, then greets and receives the
    /// sessions (or, with a shared store, serves at once).
    pub(crate) fn new(cfg: NodeConfig, core_cfg: Arc<CoreConfig>, now: Now) -> Self {
        let mut core = Core::new(core_cfg, cfg.local.id());
        let shared = cfg.shared;
        if !shared {
            core.begin_transfer();
        }
        let until = now.mono_ms + cfg.discovery_wait_ms;
        let mut node = SessionNode {
            cfg,
            core,
            phase: Phase::Discovering { until },
            started_ms: now.mono_ms,
            last_ms: now.mono_ms,
            members: BTreeMap::new(),
            departed: BTreeMap::new(),
            provisional: BTreeMap::new(),
            unreachable: BTreeMap::new(),
            discovery_settled: false,
            pending: BTreeMap::new(),
            next_token: 0,
            next_tick: now.mono_ms,
            next_regreet: now.mono_ms,
            outputs: Vec::new(),
            stats: TransferStats::default(),
            completed: Vec::new(),
            fetches: Fetches::default(),
            queries: queries::Queries::default(),
        };
        if shared {
            // The store is the truth: nothing to receive from anyone.
            let mut out = Vec::new();
            node.core.finish_transfer(now.wall_ms, &mut out);
            node.absorb(out);
            node.serve(now, false);
        }
        node
    }

    pub(crate) fn core(&self) -> &Core {
        &self.core
    }

    /// The core, for local calls (create, get, commit, ...): hand their effects to
    /// [`SessionNode::absorb`].
    pub(crate) fn core_mut(&mut self) -> &mut Core {
        &mut self.core
    }

    pub(crate) fn local(&self) -> MemberId {
        self.cfg.local.id()
    }

    /// Whether it answers requests (the state transfer is over).
    pub(crate) fn is_serving(&self) -> bool {
        matches!(self.phase, Phase::Serving { .. })
    }

    #[cfg(test)]
    pub(crate) fn is_degraded(&self) -> bool {
        matches!(self.phase, Phase::Serving { degraded: true })
    }

    pub(crate) fn is_discovering(&self) -> bool {
        matches!(self.phase, Phase::Discovering { .. })
    }

    /// The live members, in id order.
    #[cfg(test)]
    pub(crate) fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    /// The state transfer as the status page shows it.
    pub(crate) fn transfer_stats(&self) -> TransferStats {
        let mut stats = self.stats.clone();
        stats.sessions_received = self.core.counters.snapshot_sessions;
        stats
    }

    /// One more place the sessions came from (a store, after the members).
    pub(crate) fn note_source(&mut self, name: String) {
        self.stats.from.push(name);
    }

    /// The completed transfers of the startup: source and request.
    #[cfg(test)]
    pub(crate) fn transferred_from(&self) -> &[(MemberId, u64)] {
        &self.completed
    }

    /// Takes what the driver must do, in order.
    pub(crate) fn drain_outputs(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.outputs)
    }

    /// The core's effects become outputs: sends (none with a shared store) and events.
    pub(crate) fn absorb(&mut self, effects: Vec<Effect>) {
        for e in effects {
            match e {
                Effect::Send(to, msg) => {
                    if !to.is_empty() && !self.cfg.shared {
                        self.outputs.push(Output::Send(Transmit { to, msg, ack: None }));
                    }
                }
                Effect::Event(ev) => self.outputs.push(Output::Event(ev)),
                Effect::Expired { id, principal } => self.outputs.push(Output::Expired { id, principal }),
                Effect::Evicted { id, principal } => self.outputs.push(Output::Evicted { id, principal }),
            }
        }
    }

    /// The latest monotonic time at which [`SessionNode::handle_timeout`] must run.
    pub(crate) fn poll_timeout(&self) -> u64 {
        let phase = match self.phase {
            Phase::Serving { .. } => {
                if self.cfg.regreet_every_ms == 0 {
                    self.next_tick
                } else {
                    self.next_tick.min(self.next_regreet)
                }
            }
            Phase::Loading => self.last_ms + 1_000,
            _ => self.last_ms + STARTUP_POLL_MS,
        };
        [self.next_fetch_deadline(), self.next_query_deadline()]
            .into_iter()
            .flatten()
            .fold(phase, u64::min)
    }

    /// Discovery has probed every configured member (the startup may greet them).
    pub(crate) fn handle_discovery_settled(&mut self) {
        self.discovery_settled = true;
    }

    /// A member was added, or is back after being removed: greet it; back after a
    /// partition, an anti-entropy round with it at once (both sides may have changed
    /// sessions the other never saw).
    pub(crate) fn handle_member_up(&mut self, now: Now, member: Member, back: bool) {
        let id = member.id();
        if id == self.local() {
            return;
        }
        self.departed.remove(&id);
        self.provisional.remove(&id);
        let known = self.members.insert(id, member).is_some();
        if known && !back {
            return;
        }
        if !self.is_discovering() {
            self.hello(id, false);
        }
        if self.is_serving() {
            let mut out = Vec::new();
            self.core.sync_with(id, &mut out);
            self.absorb(out);
        }
        self.drive(now);
    }

    /// A member left the membership.
    pub(crate) fn handle_member_down(&mut self, now: Now, id: MemberId) {
        self.members.remove(&id);
        self.provisional.remove(&id);
        self.departed.insert(id, now.mono_ms);
        self.unreachable.remove(&id);
        self.remove_server(now, id);
        self.fetch_member_gone(id);
        self.query_member_gone(id);
        self.drive(now);
    }

    /// The membership as a whole (after the driver missed events): members not in
    /// `members` are down, new ones up.
    pub(crate) fn handle_members(&mut self, now: Now, members: Vec<Member>) {
        let ids: BTreeSet<MemberId> = members.iter().map(Member::id).collect();
        let gone: Vec<MemberId> = self.members.keys().copied().filter(|m| !ids.contains(m)).collect();
        for m in gone {
            self.handle_member_down(now, m);
        }
        for m in members {
            if !self.members.contains_key(&m.id()) {
                self.handle_member_up(now, m, false);
            }
        }
    }

    /// A message from `from`.
    pub(crate) fn handle_message(&mut self, now: Now, from: MemberId, msg: Msg) {
        self.last_ms = now.mono_ms;
        // A fetch answer (the session, or "not here") is merged by the core like any
        // message; then the requests waiting for it may go on.
        let fetch_answer = msg.fetch_answer();
        let mut out = Vec::new();
        match msg {
            Msg::Hello => self.add_server_on_message(now, from),
            Msg::Digest { buckets } => {
                // A digest also says the sender serves the context (a lost Hello is repaired).
                self.add_server_on_message(now, from);
                self.core
                    .handle_msg(now.wall_ms, from, Msg::Digest { buckets }, &mut out);
            }
            Msg::GetAll { request } => {
                if !self.is_serving() {
                    // A typed answer, not a refusal text: the asker tries another member.
                    self.send(vec![from], Msg::NotReady { request });
                    return;
                }
                self.add_server_on_message(now, from);
                // In id order: the same sessions make the same chunks (a run replays).
                let mut sessions = self.core.snapshot_for(from);
                sessions.sort_unstable_by_key(|d| d.id);
                let total = sessions.len() as u64;
                let rest = sessions.chunks(self.cfg.chunk_size.max(1)).map(<[_]>::to_vec).collect();
                self.stream(Stream {
                    to: from,
                    request,
                    rest,
                    total,
                });
            }
            Msg::Chunk { request, sessions } => {
                // Only a member that serves the context streams its sessions (its Hello
                // may have been lost): replicate to it from now on.
                self.add_server_on_message(now, from);
                if let Phase::Transferring(j) = &mut self.phase
                    && j.on_chunk(request, sessions.len() as u64)
                {
                    self.core.apply_chunk(now.wall_ms, sessions, &mut out);
                }
            }
            Msg::Done { request, sessions } => {
                self.add_server_on_message(now, from);
                tracing::debug!(context = %self.context(), sessions, "state transfer: every session sent");
                if let Phase::Transferring(j) = &mut self.phase {
                    j.on_done(request);
                }
            }
            Msg::NotReady { request } => {
                if let Phase::Transferring(j) = &mut self.phase {
                    j.on_not_ready(from, request, now.mono_ms - self.started_ms);
                }
            }
            Msg::PrincipalSessions { request, sessions } => self.principal_answer(from, request, sessions),
            Msg::Bye { expire } => {
                self.core.handle_msg(now.wall_ms, from, Msg::Bye { expire }, &mut out);
                self.absorb(std::mem::take(&mut out));
                self.remove_server(now, from);
                self.query_member_gone(from);
            }
            other => self.core.handle_msg(now.wall_ms, from, other, &mut out),
        }
        self.absorb(out);
        if let Some(id) = fetch_answer {
            self.fetch_answered(id, from);
        }
        self.drive(now);
    }

    /// The outcome of the acknowledged send `token`.
    pub(crate) fn handle_send_result(&mut self, now: Now, token: u64, result: Delivered) {
        self.last_ms = now.mono_ms;
        let Some(pending) = self.pending.remove(&token) else {
            return;
        };
        if let Phase::Greeting { waiting } = &mut self.phase {
            waiting.remove(&token);
        }
        match pending {
            Pending::Hello { member, again } => self.on_hello_result(now, member, again, result),
            Pending::GetAll { member, request } => {
                let elapsed = now.mono_ms - self.started_ms;
                if let Phase::Transferring(j) = &mut self.phase {
                    let result = match result {
                        Delivered::Acked => AckResult::Acked,
                        Delivered::Refused(reason) => AckResult::NoSuchContext(reason),
                        Delivered::Failed(reason) => AckResult::Failed(TransferFailure::NotDelivered { reason }),
                        Delivered::TimedOut(ms) => AckResult::Failed(TransferFailure::NoAck { ms }),
                    };
                    j.on_ack(member, request, result, elapsed);
                }
            }
            Pending::Chunk(stream) => {
                if result == Delivered::Acked {
                    self.stream(stream);
                } else {
                    tracing::warn!(
                        context = %self.context(),
                        member = %self.name_of(stream.to),
                        ?result,
                        "state transfer to member aborted: it asks another member or again"
                    );
                }
            }
            Pending::Done => {}
            Pending::Fetch { id, member } => match result {
                Delivered::Acked => {}
                Delivered::Refused(_) => self.fetch_unanswered(id, member, true),
                Delivered::Failed(_) | Delivered::TimedOut(_) => self.fetch_unanswered(id, member, false),
            },
        }
        self.drive(now);
    }

    /// Time passed: the startup's next step, the core's timer, greetings said again.
    pub(crate) fn handle_timeout(&mut self, now: Now) {
        self.expire_fetches(now);
        self.expire_queries(now);
        self.drive(now);
        if !self.is_serving() {
            return;
        }
        if now.mono_ms >= self.next_tick {
            self.next_tick = now.mono_ms + self.cfg.tick_ms;
            if !self.core.is_transferring() {
                let mut out = Vec::new();
                self.core.handle_tick(now.wall_ms, &mut out);
                self.absorb(out);
            }
        }
        self.forget_departures(now);
        if self.cfg.regreet_every_ms > 0 && now.mono_ms >= self.next_regreet {
            // A Hello that was lost (a connection broke) is said again to members not
            // known to serve the context.
            self.next_regreet = now.mono_ms + self.cfg.regreet_every_ms;
            let silent: Vec<MemberId> = self
                .members
                .keys()
                .copied()
                .filter(|m| !self.core.servers().contains(m))
                .collect();
            for m in silent {
                self.hello(m, true);
            }
        }
    }

    /// The store (if any) is loaded: serve, degraded or not.
    pub(crate) fn serve(&mut self, now: Now, degraded: bool) {
        self.stats.duration_ms = Some(now.mono_ms - self.started_ms);
        self.phase = Phase::Serving { degraded };
        self.next_tick = now.mono_ms + self.cfg.tick_ms;
        self.next_regreet = now.mono_ms + self.cfg.regreet_every_ms;
    }

    // ----- sending -----

    /// The next chunk of a snapshot, sync-acked; after the last, `Done`.
    fn stream(&mut self, mut stream: Stream) {
        let (to, request, timeout_ms) = (stream.to, stream.request, self.cfg.transfer.attempt_ms);
        match stream.rest.pop_front() {
            Some(sessions) => {
                self.send_acked(to, Msg::Chunk { request, sessions }, timeout_ms, Pending::Chunk(stream));
            }
            None => {
                let sessions = stream.total;
                self.send_acked(to, Msg::Done { request, sessions }, timeout_ms, Pending::Done);
            }
        }
    }

    fn send(&mut self, to: Vec<MemberId>, msg: Msg) {
        self.outputs.push(Output::Send(Transmit { to, msg, ack: None }));
    }

    fn send_acked(&mut self, to: MemberId, msg: Msg, timeout_ms: u64, pending: Pending) -> u64 {
        self.next_token += 1;
        let token = self.next_token;
        self.pending.insert(token, pending);
        self.outputs.push(Output::Send(Transmit {
            to: vec![to],
            msg,
            ack: Some(AckWanted { token, timeout_ms }),
        }));
        token
    }

    fn context(&self) -> &str {
        self.core.context()
    }

    fn name_of(&self, id: MemberId) -> String {
        self.members
            .get(&id)
            .map_or_else(|| id.to_string(), |m| m.name().to_string())
    }
}

mod fetching;
mod queries;
mod servers;
mod startup;
#[cfg(test)]
mod tests;
