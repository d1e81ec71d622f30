//! One simulated node: its core, its membership view and its startup (`run_startup`).

use std::collections::{BTreeMap, BTreeSet};

use tribes::MemberId;

use super::check::AttrsOf;
use super::{ATTEMPT_TIMEOUT_MS, DISCOVERY_WAIT_MS, TRANSFER_TIMEOUT_MS};
use crate::core::Core;
use crate::id::SessionId;
use crate::joiner::{AckResult, JoinAction, JoinTimeouts, Joiner};
use crate::manager::ManagerKind;
use crate::transfer::Rank;

/// What this node's failure detector knows of another member.
#[derive(Debug)]
pub(super) struct Peer {
    pub(super) last_heard: u64,
    pub(super) removed: bool,
    pub(super) verifying: bool,
}

#[derive(Debug)]
pub(super) enum Phase {
    /// Waiting for discovery to find members (at most the discovery wait).
    Discovering {
        until: u64,
    },
    /// Hello sent to every member; waiting for the acks.
    Greeting,
    /// The shipped state-transfer machine (`joiner.rs`), driven as `run_startup` does.
    Transferring(Box<Joiner>),
    Serving {
        degraded: bool,
    },
}

/// What the startup asks the simulation to do.
#[derive(Debug)]
pub(super) enum Action {
    None,
    Ask(MemberId, u64),
    Finish { degraded: bool, from: Vec<MemberId> },
}

pub(super) struct Node {
    pub(super) id: MemberId,
    pub(super) started: u64,
    pub(super) core: Core,
    pub(super) phase: Phase,
    pub(super) view: BTreeMap<MemberId, Peer>,
    pub(super) startup_hellos: BTreeSet<u64>,
    /// Sessions this node destroyed (listener events): they must never come back here.
    pub(super) destroyed: BTreeSet<SessionId>,
    /// What each transfer source sent (by request), to check the joiner against.
    pub(super) snapshots: BTreeMap<u64, Vec<AttrsOf>>,
    /// Completed transfers: (source, request).
    pub(super) completed: Vec<(MemberId, u64)>,
}

impl Node {
    pub(super) fn new(id: MemberId, now: u64, mut core: Core) -> Self {
        core.begin_transfer();
        Node {
            id,
            started: now,
            core,
            phase: Phase::Discovering {
                until: now + DISCOVERY_WAIT_MS,
            },
            view: BTreeMap::new(),
            startup_hellos: BTreeSet::new(),
            destroyed: BTreeSet::new(),
            snapshots: BTreeMap::new(),
            completed: Vec::new(),
        }
    }

    pub(super) fn is_serving(&self) -> bool {
        matches!(self.phase, Phase::Serving { .. })
    }

    pub(super) fn is_degraded(&self) -> bool {
        matches!(self.phase, Phase::Serving { degraded: true })
    }

    /// A heartbeat (or a successful verification) from `member`; true on `Added` or `Back`.
    pub(super) fn heard(&mut self, member: MemberId, now: u64) -> bool {
        match self.view.get_mut(&member) {
            Some(p) => {
                p.last_heard = now;
                p.verifying = false;
                std::mem::replace(&mut p.removed, false)
            }
            None => {
                self.view.insert(
                    member,
                    Peer {
                        last_heard: now,
                        removed: false,
                        verifying: false,
                    },
                );
                true
            }
        }
    }

    pub(super) fn start_plan(&mut self, kind: &ManagerKind, candidates: Vec<(Rank, String)>) {
        let ask_all = matches!(kind, ManagerKind::Backup { .. });
        let timeouts = JoinTimeouts {
            attempt_ms: ATTEMPT_TIMEOUT_MS,
            total_ms: TRANSFER_TIMEOUT_MS,
            retry_ms: 100,
        };
        // The joiner's clock starts with the node (discovery and greetings count).
        let joiner = Joiner::new("/sim", (self.started, self.id), 0, candidates, ask_all, timeouts);
        self.phase = Phase::Transferring(Box::new(joiner));
    }

    fn joiner(&mut self) -> Option<&mut Joiner> {
        match &mut self.phase {
            Phase::Transferring(j) => Some(j),
            _ => None,
        }
    }

    /// The GetAll's sync-ack came back (or failed).
    pub(super) fn on_get_all_acked(&mut self, member: MemberId, request: u64, error: Option<String>, now: u64) {
        let elapsed = now - self.started;
        if let Some(j) = self.joiner() {
            let result = error.map_or(AckResult::Acked, AckResult::Failed);
            j.on_ack(member, request, result, elapsed);
        }
    }

    /// `Msg::NotReady`: the member asked is itself starting.
    pub(super) fn on_not_ready(&mut self, member: MemberId, request: u64) {
        if let Some(j) = self.joiner() {
            j.on_not_ready(member, request);
        }
    }

    /// A `Chunk` arrived: whether to apply it.
    pub(super) fn on_chunk(&mut self, request: u64) -> bool {
        self.joiner().is_some_and(|j| j.on_chunk(request))
    }

    /// `Done` arrived.
    pub(super) fn on_done(&mut self, request: u64) {
        if let Some(j) = self.joiner() {
            j.on_done(request);
        }
    }

    /// One turn of `run_startup`'s loop: the shipped joiner decides.
    pub(super) fn drive_plan(&mut self, now: u64, candidates: Vec<(Rank, String)>) -> Action {
        let elapsed = now - self.started;
        let up: Vec<MemberId> = self.view.iter().filter(|(_, p)| !p.removed).map(|(m, _)| *m).collect();
        let Phase::Transferring(j) = &mut self.phase else {
            return Action::None;
        };
        match j.poll(elapsed, |m| up.contains(&m), || candidates) {
            JoinAction::Wait => Action::None,
            JoinAction::Ask { member, request, .. } => Action::Ask(member, request),
            JoinAction::Ready { .. } => {
                self.completed = j.completed().iter().map(|(m, _, r)| (*m, *r)).collect();
                Action::Finish {
                    degraded: false,
                    from: self.completed.iter().map(|c| c.0).collect(),
                }
            }
            JoinAction::Degraded(_) => Action::Finish {
                degraded: true,
                from: Vec::new(),
            },
        }
    }
}
