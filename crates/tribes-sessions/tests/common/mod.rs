//! Helpers for the multi-node tests: real channels on loopback.
#![allow(dead_code, unreachable_pub, unused_imports)]

use std::net::SocketAddr;

use tribes::Channel;
use tribes_sessions::{ManagerKind, SessionManager, SessionManagerBuilder};
pub use tribes_testkit::channel::channel;
pub use tribes_testkit::sessions::wait_mesh;
pub use tribes_testkit::{eventually as wait_until, init_tracing};

pub const CONTEXT: &str = "/app";

/// The usual test builder: sync-ack commits, fast access batches.
pub fn builder(kind: ManagerKind) -> SessionManagerBuilder {
    tribes_testkit::sessions::builder(CONTEXT).with_kind(kind)
}

/// A started and ready node.
pub async fn node(name: &str, peers: &[SocketAddr], kind: ManagerKind) -> (Channel, SessionManager) {
    tribes_testkit::sessions::ready_node(name, peers, builder(kind)).await
}

/// Crash: stop the manager and drop the channel without any goodbye.
pub fn crash(node: (Channel, SessionManager)) {
    node.1.abort();
    drop(node);
}
