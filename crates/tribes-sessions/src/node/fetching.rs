//! The BackupManager's fetch, as the node runs it: a request on this node asks the
//! members that may hold a session for their copies (on a miss, or to check that its own
//! copy is current: [`Core::must_fetch`](crate::core::Core::must_fetch)) and goes on when
//! each has answered. The bookkeeping is [`Fetches`]; this file feeds it what the node
//! sees: answers, sends that did not arrive, members that left, and time.
//!
//! A member that cannot answer is replaced by the members that may hold the session now
//! and were not asked: when a primary dies while a node asks it, the previous primary may
//! be the only live member with the latest acknowledged write.

use tribes::MemberId;

use super::{Now, Output, Pending, SessionNode};
use crate::fetch::{Begin, Unanswered};
use crate::id::SessionId;
use crate::wire::Msg;

impl SessionNode {
    /// A request on this node needs `id` from its holders: asks them (each sync-acked,
    /// so a send that fails counts at once), or joins the fetch already in flight.
    /// [`Output::Fetched`] gives `waiter` back when it completes.
    pub(crate) fn begin_fetch(&mut self, now: Now, id: SessionId, waiter: u64) {
        self.last_ms = now.mono_ms;
        let ask = self.fetch_targets(id);
        let deadline = now.mono_ms + self.cfg.fetch_timeout_ms;
        match self.fetches.begin(id, ask, waiter, deadline) {
            Begin::Send(ask) => self.send_fetches(id, ask),
            Begin::Joined => {}
            Begin::Nobody => self.outputs.push(Output::Fetched {
                waiter,
                confirmed: true,
            }),
        }
    }

    /// `from` answered the fetch of `id` (with its copy, already merged, or "not here").
    pub(super) fn fetch_answered(&mut self, id: SessionId, from: MemberId) {
        let woken = self.fetches.answered(id, from);
        self.complete(woken);
    }

    /// The fetch of `id` did not reach `member`: `refused` when its channel said it does
    /// not run the context (it holds nothing), otherwise the connection failed or no ack
    /// came (it may be alive with a copy: the answer is no longer confirmed).
    pub(super) fn fetch_unanswered(&mut self, id: SessionId, member: MemberId, refused: bool) {
        let targets = self.fetch_targets(id);
        let step = self.fetches.unanswered(id, member, !refused, &targets);
        self.follow(step);
    }

    /// `member` left (after the core took it out of the servers, so the targets are
    /// the ones without it).
    pub(super) fn fetch_member_gone(&mut self, member: MemberId) {
        let local = self.local();
        let core = &self.core;
        let step = self.fetches.member_gone(member, |id| {
            core.fetch_targets(&id).into_iter().filter(|m| *m != local).collect()
        });
        self.follow(step);
    }

    /// Fetches past their deadline go on with what the members that answered sent.
    pub(super) fn expire_fetches(&mut self, now: Now) {
        let late = self.fetches.expire(now.mono_ms);
        if !late.is_empty() {
            tracing::warn!(
                context = %self.context(),
                requests = late.len(),
                timeout_ms = self.cfg.fetch_timeout_ms,
                "a member asked for a session did not answer within the ack timeout; the request uses what the others sent"
            );
        }
        self.complete(late.into_iter().map(|w| (w, false)).collect());
    }

    /// When the node must be woken for a fetch's deadline.
    pub(super) fn next_fetch_deadline(&self) -> Option<u64> {
        self.fetches.next_deadline()
    }

    fn fetch_targets(&self, id: SessionId) -> Vec<MemberId> {
        let local = self.local();
        self.core
            .fetch_targets(&id)
            .into_iter()
            .filter(|m| *m != local)
            .collect()
    }

    fn send_fetches(&mut self, id: SessionId, to: Vec<MemberId>) {
        for member in to {
            let timeout = self.cfg.fetch_timeout_ms;
            self.send_acked(member, Msg::Fetch(id), timeout, Pending::Fetch { id, member });
        }
    }

    fn follow(&mut self, step: Unanswered<u64>) {
        for (id, more) in step.ask {
            self.send_fetches(id, more);
        }
        self.complete(step.woken);
    }

    fn complete(&mut self, waiters: Vec<(u64, bool)>) {
        for (waiter, confirmed) in waiters {
            self.outputs.push(Output::Fetched { waiter, confirmed });
        }
    }
}
