//! Who serves the context: `Hello` to a member (sync-acked), its outcome (an ack makes
//! the member a server; a refusal means it does not run the context; no answer makes
//! it *unreachable*: a starting node may not serve without its sessions), and the
//! server list as members come and go.

use super::{Delivered, HELLO_TIMEOUT_MS, Now, Pending, SessionNode};

/// How long a server added before the membership listed it stays one without it.
pub(crate) const PROVISIONAL_MS: u64 = 15_000;
/// How long a departed member's late messages are ignored.
const DEPARTED_MEMORY_MS: u64 = 600_000;
use crate::stats::{AttemptOutcome, TransferAttempt};
use crate::wire::Msg;
use tribes::MemberId;

impl SessionNode {
    /// Says "I serve this context" to `member` (sync-ack); returns the send's token.
    /// `again`: a retry (a member that does not serve the context is not reported again).
    pub(super) fn hello(&mut self, member: MemberId, again: bool) -> u64 {
        self.send_acked(member, Msg::Hello, HELLO_TIMEOUT_MS, Pending::Hello { member, again })
    }

    pub(super) fn on_hello_result(&mut self, now: Now, member: MemberId, again: bool, result: Delivered) {
        match result {
            Delivered::Acked => {
                self.unreachable.remove(&member);
                self.add_server(now, member);
            }
            Delivered::Refused(_) if again => {}
            Delivered::Refused(reason) => {
                let msg = format!(
                    "{} ({member}) does not serve context '{}' ({reason}): it gets no sessions of it",
                    self.name_of(member),
                    self.context()
                );
                tracing::info!("{msg}");
                let skipped = AttemptOutcome::NotServing { reason };
                let attempt = TransferAttempt::new(self.name_of(member), member.to_string(), None, skipped);
                self.stats.attempts.push(attempt);
            }
            Delivered::Failed(cause) => self.unreachable(member, cause, again),
            Delivered::TimedOut(ms) => self.unreachable(member, format!("no answer within {ms} ms"), again),
        }
    }

    /// A member is listed by the membership but its replication port does not answer
    /// (a firewall that lets heartbeats through, a stuck process): say so, and keep it
    /// among the members a starting node must receive sessions from.
    fn unreachable(&mut self, member: MemberId, cause: String, again: bool) {
        if !self.members.contains_key(&member) {
            return;
        }
        let msg = format!(
            "{} answers the membership but not on its replication port for context '{}' ({cause}): its sessions cannot be received; check that the cluster port is open between the nodes",
            self.name_of(member),
            self.context()
        );
        if again {
            tracing::debug!("{msg}");
        } else {
            tracing::warn!("{msg}");
        }
        self.unreachable.insert(member, cause);
    }

    /// A `Hello`, `Digest` or `GetAll` says its sender serves the context. A member the
    /// membership lists becomes a server. So does a process the membership has not heard
    /// yet (a node that just started greets before every heartbeat has gone round): it is
    /// alive, and until this node replicates to it, it must not serve stale copies. It
    /// stays a server only if the membership lists it within [`PROVISIONAL_MS`]. A member
    /// the membership removed is not made a server again by a late message: if it is
    /// alive, the membership says `Back` and it is greeted then.
    pub(super) fn add_server_on_message(&mut self, now: Now, member: MemberId) {
        if self.members.contains_key(&member) {
            self.add_server(now, member);
        } else if !self.departed.contains_key(&member) && member != self.local() {
            self.provisional.entry(member).or_insert(now.mono_ms);
            self.add_server(now, member);
        }
    }

    /// Drops provisional servers the membership never listed, and old departures.
    pub(super) fn forget_departures(&mut self, now: Now) {
        let stale: Vec<MemberId> = self
            .provisional
            .iter()
            .filter(|(_, at)| now.mono_ms.saturating_sub(**at) >= PROVISIONAL_MS)
            .map(|(m, _)| *m)
            .collect();
        for m in stale {
            self.provisional.remove(&m);
            tracing::info!(context = %self.context(), member = %m, "a member that greeted this node never joined its membership: it no longer gets sessions");
            // It never was a member: the cluster's size, which expiry events need a
            // majority of, did not include it.
            self.core.expiry_member_left(m);
            self.remove_server(now, m);
        }
        self.departed
            .retain(|_, at| now.mono_ms.saturating_sub(*at) < DEPARTED_MEMORY_MS);
    }

    fn add_server(&mut self, now: Now, member: MemberId) {
        if self.core.servers().contains(&member) {
            return;
        }
        let mut servers = self.core.servers().to_vec();
        servers.push(member);
        let mut out = Vec::new();
        self.core.note_servers_changed(now.wall_ms);
        self.core.handle_servers_changed(servers, &mut out);
        tracing::info!(context = %self.context(), member = %self.name_of(member), "member serves the context");
        self.absorb(out);
    }

    pub(super) fn remove_server(&mut self, now: Now, member: MemberId) {
        if !self.core.servers().contains(&member) {
            return;
        }
        let servers = self.core.servers().iter().copied().filter(|m| *m != member).collect();
        let mut out = Vec::new();
        self.core.note_servers_changed(now.wall_ms);
        self.core.handle_servers_changed(servers, &mut out);
        self.absorb(out);
    }
}
