//! One simulated machine's process: the shipped session node (`node.rs`), the shipped
//! membership machine (`tribes::Membership`), and what the checks need to remember.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tribes::{Member, MemberId, Membership};

use super::check::AttrsOf;
use super::{
    ACK_TIMEOUT_MS, ATTEMPT_TIMEOUT_MS, CHUNK_SESSIONS, DISCOVERY_WAIT_MS, DROP_TIME_MS, SYNC_INTERVAL_MS, TICK_MS,
    TOUCH_INTERVAL_MS, TRANSFER_TIMEOUT_MS,
};
use crate::core::{Core, CoreConfig};
use crate::id::SessionId;
use crate::joiner::JoinTimeouts;
use crate::node::{NodeConfig, Now, SessionNode};
use crate::persistence::Persistence;
use crate::persistence::StoreMode;

pub(super) struct Node {
    pub(super) id: MemberId,
    /// The session node, as `SessionManager` runs it.
    pub(super) session: SessionNode,
    /// The session node of a second context on the same channel, if this process runs it
    /// (`contexts.rs`).
    pub(super) second: Option<SecondContext>,
    /// The channel's membership machine, fed with simulated heartbeats and verifications.
    pub(super) membership: Membership,
    /// Sessions this node destroyed (listener events): they must never come back here.
    pub(super) destroyed: BTreeSet<SessionId>,
    /// What each transfer source sent (by request), to check the joiner against.
    pub(super) snapshots: BTreeMap<u64, Vec<AttrsOf>>,
    /// Whether its discovery probed the configured addresses yet (at its first step).
    pub(super) probed: bool,
    /// The store decisions, in store runs (`store.rs`).
    pub(super) persistence: Option<Persistence>,
}

impl Node {
    pub(super) fn new(
        local: Member,
        now: u64,
        core_cfg: Arc<CoreConfig>,
        limit: Option<(usize, crate::principal::MaxSessionsPolicy)>,
        store: bool,
        second: Option<Arc<CoreConfig>>,
    ) -> Self {
        let id = local.id();
        let second = second.map(|cfg| SecondContext {
            session: SessionNode::new(node_config(local.clone()), cfg, clocks(now)),
            destroyed: BTreeSet::new(),
        });
        let mut session = SessionNode::new(node_config(local), core_cfg, clocks(now));
        session.core_mut().set_session_limit(limit);
        Node {
            id,
            session,
            second,
            membership: Membership::new(id, "sim", Duration::from_millis(DROP_TIME_MS)),
            destroyed: BTreeSet::new(),
            snapshots: BTreeMap::new(),
            probed: false,
            persistence: store.then(|| Persistence::new(StoreMode::WriteThrough, TOUCH_INTERVAL_MS, now)),
        }
    }

    pub(super) fn core(&self) -> &Core {
        self.session.core()
    }

    pub(super) fn core_mut(&mut self) -> &mut Core {
        self.session.core_mut()
    }

    pub(super) fn is_serving(&self) -> bool {
        self.session.is_serving()
    }

    pub(super) fn is_degraded(&self) -> bool {
        self.session.is_degraded()
    }

    /// The live members the session node knows, in id order.
    pub(super) fn members(&self) -> Vec<MemberId> {
        self.session.members().map(Member::id).collect()
    }
}

/// A second context's session node in a process, and the sessions it destroyed.
pub(super) struct SecondContext {
    pub(super) session: SessionNode,
    pub(super) destroyed: BTreeSet<SessionId>,
}

/// Each context's node settings, as `SessionManager` sets them from the simulation's
/// timings.
fn node_config(local: Member) -> NodeConfig {
    NodeConfig {
        local,
        shared: false,
        transfer: JoinTimeouts {
            attempt_ms: ATTEMPT_TIMEOUT_MS,
            total_ms: TRANSFER_TIMEOUT_MS,
            retry_ms: 100,
        },
        discovery_wait_ms: DISCOVERY_WAIT_MS,
        chunk_size: CHUNK_SESSIONS,
        tick_ms: TICK_MS,
        regreet_every_ms: SYNC_INTERVAL_MS,
        fetch_timeout_ms: ACK_TIMEOUT_MS,
    }
}

/// The simulation has one clock: it is both the wall clock and the monotonic one.
pub(super) fn clocks(now: u64) -> Now {
    Now {
        wall_ms: now,
        mono_ms: now,
    }
}
