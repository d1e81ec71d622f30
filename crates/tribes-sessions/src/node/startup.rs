//! A starting node: wait for discovery, greet every member, receive the sessions through
//! the [`Joiner`] (asking the next member when one fails or is silent, greeting again the
//! members whose replication did not answer), then hand over to the driver's store load.

use std::collections::BTreeSet;

use tribes::MemberId;

use super::{Now, Output, Pending, Phase, REGREET_MS, SessionNode};
use crate::error::StateTransferError;
use crate::joiner::{JoinAction, Joiner};
use crate::kind::ManagerKind;
use crate::transfer::Rank;
use crate::wire::Msg;

impl SessionNode {
    pub(super) fn drive(&mut self, now: Now) {
        self.last_ms = now.mono_ms;
        if let Phase::Discovering { until } = self.phase
            && (self.discovery_settled || now.mono_ms >= until)
        {
            let members: Vec<MemberId> = self.members.keys().copied().collect();
            let waiting = members.into_iter().map(|m| self.hello(m, false)).collect();
            self.phase = Phase::Greeting { waiting };
        }
        if let Phase::Greeting { waiting } = &self.phase
            && waiting.is_empty()
        {
            let local = &self.cfg.local;
            let rank: Rank = (local.started_at_ms(), local.id());
            let ask_all = matches!(self.core.kind(), ManagerKind::Backup { .. });
            let joiner = Joiner::new(self.context(), rank, 0, self.candidates(), ask_all, self.cfg.transfer);
            self.phase = Phase::Transferring(Box::new(joiner));
        }
        if matches!(self.phase, Phase::Transferring(_)) {
            self.drive_transfer(now);
        }
    }

    /// The members a starting node receives sessions from: those serving the context,
    /// and those whose `Hello` got no answer at all (a blocked replication port must not
    /// make this node ready without their sessions).
    pub(super) fn candidates(&self) -> Vec<(Rank, String)> {
        self.members
            .values()
            .filter(|m| self.core.servers().contains(&m.id()) || self.unreachable.contains_key(&m.id()))
            .map(|m| ((m.started_at_ms(), m.id()), m.name().to_string()))
            .collect()
    }

    pub(super) fn drive_transfer(&mut self, now: Now) {
        let elapsed = now.mono_ms - self.started_ms;
        let candidates = self.candidates();
        let members: BTreeSet<MemberId> = self.members.keys().copied().collect();
        let Phase::Transferring(j) = &mut self.phase else {
            return;
        };
        match j.poll(elapsed, |m| members.contains(&m), || candidates) {
            JoinAction::Wait => {
                // A member whose replication did not answer is greeted again every second.
                if now.mono_ms >= self.next_regreet {
                    self.next_regreet = now.mono_ms + REGREET_MS;
                    let silent: Vec<MemberId> = self.unreachable.keys().copied().collect();
                    for m in silent {
                        self.hello(m, true);
                    }
                }
            }
            JoinAction::Ask { member, name, request } => {
                tracing::debug!(context = %self.context(), member = %name, request, "asking for the sessions");
                let timeout_ms = self.cfg.transfer.attempt_ms;
                self.send_acked(
                    member,
                    Msg::GetAll { request },
                    timeout_ms,
                    Pending::GetAll { member, request },
                );
            }
            JoinAction::Ready { from } => {
                self.stats.from.extend(from.into_iter().map(|(_, name)| name));
                self.finish_transfer(now, Ok(()));
            }
            JoinAction::Degraded(e) => self.finish_transfer(now, Err(e)),
        }
    }

    pub(super) fn finish_transfer(&mut self, now: Now, result: Result<(), StateTransferError>) {
        if let Phase::Transferring(j) = &self.phase {
            self.stats.attempts.extend(j.attempts().iter().cloned());
            self.completed = j.completed().iter().map(|(m, _, r)| (*m, *r)).collect();
        }
        let mut out = Vec::new();
        self.core.finish_transfer(now.wall_ms, &mut out);
        self.absorb(out);
        self.phase = Phase::Loading;
        self.outputs.push(Output::Transferred(result));
    }
}
