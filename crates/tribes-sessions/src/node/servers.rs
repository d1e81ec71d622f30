//! Who serves the context: `Hello` to a member (sync-acked), its outcome (an ack makes
//! the member a server; a refusal means it does not run the context; no answer makes
//! it *unreachable*: a starting node may not serve without its sessions), and the
//! server list as members come and go.

use super::{Delivered, HELLO_TIMEOUT_MS, Now, Pending, SessionNode};
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
                self.stats.attempts.push(msg);
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

    /// `add_server` for a member the membership has: a late message must not bring back
    /// a member the failure detector removed.
    pub(super) fn add_server_if_member(&mut self, now: Now, member: MemberId) {
        if self.members.contains_key(&member) {
            self.add_server(now, member);
        }
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
