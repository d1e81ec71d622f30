//! One simulated node: its core, its membership view and its startup (`run_startup`).

use std::collections::{BTreeMap, BTreeSet};

use tribes::MemberId;

use super::check::AttrsOf;
use super::{ATTEMPT_TIMEOUT_MS, DISCOVERY_WAIT_MS, TRANSFER_TIMEOUT_MS};
use crate::core::Core;
use crate::id::SessionId;
use crate::manager::ManagerKind;
use crate::transfer::{Outcome, Rank, Step, TransferPlan};

/// What this node's failure detector knows of another member.
#[derive(Debug)]
pub(super) struct Peer {
    pub(super) last_heard: u64,
    pub(super) removed: bool,
    pub(super) verifying: bool,
}

/// The current `ask` of the state transfer.
#[derive(Debug)]
pub(super) struct Asking {
    member: MemberId,
    request: u64,
    acked: bool,
    seen_chunks: u64,
    last_progress: u64,
}

#[derive(Debug)]
pub(super) enum Phase {
    /// Waiting for discovery to find members (at most the discovery wait).
    Discovering {
        until: u64,
    },
    /// Hello sent to every member; waiting for the acks.
    Greeting,
    Transferring {
        plan: Box<TransferPlan>,
        asking: Option<Asking>,
        retry_at: Option<u64>,
    },
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
    /// The state transfer's current request, its chunks received, and whether it is done.
    pub(super) request: u64,
    pub(super) chunks: u64,
    pub(super) done: bool,
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
            request: 0,
            chunks: 0,
            done: false,
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
        let plan = TransferPlan::new("/sim", (self.started, self.id), candidates, ask_all);
        self.phase = Phase::Transferring {
            plan: Box::new(plan),
            asking: None,
            retry_at: None,
        };
    }

    /// The GetAll's sync-ack came back (or failed).
    pub(super) fn on_get_all_acked(&mut self, member: MemberId, request: u64, error: Option<String>, now: u64) {
        let Phase::Transferring { plan, asking, .. } = &mut self.phase else {
            return;
        };
        let Some(a) = asking.as_mut().filter(|a| a.request == request && a.member == member) else {
            return;
        };
        match error {
            None => {
                a.acked = true;
                a.last_progress = now;
            }
            Some(e) => {
                plan.record(member, Outcome::Failed(e));
                *asking = None;
            }
        }
    }

    /// `Msg::NotReady`: the member asked is itself starting.
    pub(super) fn on_not_ready(&mut self, member: MemberId, request: u64) {
        let Phase::Transferring { plan, asking, .. } = &mut self.phase else {
            return;
        };
        if asking
            .as_ref()
            .is_some_and(|a| a.request == request && a.member == member)
        {
            plan.record(member, Outcome::NotReady);
            *asking = None;
        }
    }

    /// One turn of `run_startup`'s loop and of `ask`'s wait.
    pub(super) fn drive_plan(&mut self, now: u64, candidates: Vec<(Rank, String)>) -> Action {
        let started = self.started;
        let (chunks, done) = (self.chunks, self.done);
        let member_up = |m: MemberId| self.view.get(&m).is_some_and(|p| !p.removed);
        let left = match &self.phase {
            Phase::Transferring { asking: Some(a), .. } => !member_up(a.member),
            _ => false,
        };
        let Phase::Transferring { plan, asking, retry_at } = &mut self.phase else {
            return Action::None;
        };
        if now - started >= TRANSFER_TIMEOUT_MS {
            return Action::Finish {
                degraded: true,
                from: Vec::new(),
            };
        }
        if let Some(a) = asking.as_mut() {
            if left {
                plan.record(a.member, Outcome::Failed("the member left during the transfer".into()));
                *asking = None;
            } else if a.acked && done {
                self.completed.push((a.member, a.request));
                plan.record(a.member, Outcome::Completed);
                *asking = None;
            } else if a.acked && now - a.last_progress >= ATTEMPT_TIMEOUT_MS {
                if chunks == a.seen_chunks {
                    plan.record(a.member, Outcome::Failed("silent during the transfer".into()));
                    *asking = None;
                } else {
                    a.seen_chunks = chunks;
                    a.last_progress = now;
                }
            }
            if asking.is_some() {
                return Action::None;
            }
        }
        if let Some(at) = *retry_at {
            if now < at {
                return Action::None;
            }
            *retry_at = None;
            plan.restart(candidates);
        }
        match plan.next() {
            Step::Ready => Action::Finish {
                degraded: false,
                from: self.completed.iter().map(|c| c.0).collect(),
            },
            Step::Retry => {
                *retry_at = Some(now + 100);
                Action::None
            }
            Step::Ask(member, _) => {
                self.request += 1;
                self.chunks = 0;
                self.done = false;
                *asking = Some(Asking {
                    member,
                    request: self.request,
                    acked: false,
                    seen_chunks: 0,
                    last_progress: now,
                });
                Action::Ask(member, self.request)
            }
        }
    }
}
