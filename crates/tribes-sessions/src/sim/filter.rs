//! Attribute filters in the simulation (`with_attribute_filter`, Tomcat's
//! `sessionAttributeNameFilter`): in runs that draw it, the managers replicate every
//! attribute but [`LOCAL`], and the random requests sometimes write it. It must stay
//! on the node that wrote it: no message any node sends carries it (checked at every
//! send), and no node holds a value of it another node wrote (checked every step; not
//! in store runs, where a node restarting from the store loads whole sessions, local
//! attributes included, as Tomcat's `PersistentManager` does). The convergence checks
//! compare the replicated attributes only.

use std::sync::Arc;

use tribes::MemberId;

use super::Sim;
use crate::core::Filter;
use crate::data::{Op, SessionData, writer_of};
use crate::wire::Msg;

/// The attribute the filter keeps local.
pub(super) const LOCAL: &str = "local";

/// The managers' filter in runs that draw one.
pub(super) fn filter(on: bool) -> Option<Filter> {
    on.then(|| Arc::new(|name: &str| name != LOCAL) as Filter)
}

fn carries_local(d: &SessionData) -> bool {
    d.attrs.iter().any(|a| &*a.name == LOCAL)
}

impl Sim {
    /// Fails when `msg`, sent by `from`, carries the local-only attribute.
    pub(super) fn check_filtered(&self, from: MemberId, msg: &Msg) -> Result<(), String> {
        if !self.cfg.filter {
            return Ok(());
        }
        let leaks = match msg {
            Msg::Delta(d) => d
                .ops
                .iter()
                .any(|op| matches!(op, Op::Set(k, _) | Op::Remove(k) if &**k == LOCAL)),
            Msg::Full(d) | Msg::Adopt(d) | Msg::FetchReply(d) => carries_local(d),
            Msg::Merge { sessions } | Msg::Chunk { sessions, .. } => sessions.iter().any(carries_local),
            _ => false,
        };
        ensure!(
            !leaks,
            "{from} sent the local-only attribute {LOCAL:?} to another node: {msg:?}"
        );
        Ok(())
    }

    /// Every step (no store): no node holds a local-only value another node wrote.
    pub(super) fn check_local_attributes(&self) -> Result<(), String> {
        if !self.cfg.filter || self.store.is_some() {
            return Ok(());
        }
        for n in self.nodes.iter().flatten() {
            let me = writer_of(n.id);
            for d in n.core().sessions() {
                if let Some(a) = d.attr(LOCAL) {
                    ensure!(
                        a.stamp.writer == me,
                        "{} holds the local-only attribute of session {} written by another node ({:?})",
                        n.id,
                        d.id,
                        a.stamp
                    );
                }
            }
        }
        Ok(())
    }
}
