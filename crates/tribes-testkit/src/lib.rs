//! Test fixtures and harnesses shared by every tribes test suite, the examples' tests
//! and the benchmarks: each fixture once, in a module named for what it is.
//!
//! The crate is `publish = false`. The published crates take it as a dev-dependency by
//! path and use it only from integration tests (`tests/*.rs`) and examples, never from
//! unit tests in `src/`: the testkit depends on them, and a unit test would see two
//! copies of its own crate. Each area is a feature, so a suite builds only what its
//! fixtures need:
//!
//! | module | feature | what |
//! |---|---|---|
//! | (root) | | [`init_tracing`], [`free_addrs`], [`eventually`] |
//! | [`nginx`] | | nginx with the shipped config, as the tests' load balancer |
//! | [`process`] | `process` | real node processes, a cluster key file, JSON status polls |
//! | [`services`] | | PostgreSQL and Redis URLs from the environment |
//! | [`bench`] | | the raw TCP baseline and the peer apps' command line |
//! | [`load`] | `load` | clients sending `GET /counter` round robin under faults, checking each count |
//! | [`logs`] | | every log line of the process, for the test to read |
//! | [`netns`] | | network namespaces made by a test, and its binary run inside one |
//! | [`channel`] | `channel` | static test clusters of `tribes` channels |
//! | [`sessions`] | `sessions` | ready session managers on test channels |
//! | [`dns`] | `dns` | an in-process DNS server whose records a test edits |
//! | [`modules`] | `modules` | the module-cycle check of ARCHITECTURE.md |

use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub mod bench;
#[cfg(feature = "channel")]
pub mod channel;
#[cfg(feature = "dns")]
pub mod dns;
#[cfg(feature = "load")]
pub mod load;
pub mod logs;
#[cfg(feature = "modules")]
pub mod modules;
pub mod netns;
pub mod nginx;
#[cfg(feature = "process")]
pub mod process;
pub mod services;
#[cfg(feature = "sessions")]
pub mod sessions;

/// Logs to the test's output, filtered by `RUST_LOG` (default `warn`); a second call
/// does nothing.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
}

/// `n` free loopback addresses: bound together (so no port is handed out twice), then
/// released just before use.
pub fn free_addrs(n: usize) -> Vec<SocketAddr> {
    let listeners: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners.iter().map(|l| l.local_addr().unwrap()).collect()
}

/// Polls `cond` every 20 ms until it holds; panics naming `what` after `limit`.
pub async fn eventually(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
