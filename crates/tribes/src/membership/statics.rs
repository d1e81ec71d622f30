//! A fixed list of member addresses (Tomcat's `StaticMembershipInterceptor`).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::watcher::watch_address;
use super::{Discovery, DiscoveryContext};

/// Members at known `host:port` replication addresses, pinged over TCP every
/// `frequency`. A member that is down is reported down and found again when it
/// returns; one that restarts is seen as a new member.
///
/// Each address keeps one open ping connection, so a member killed with `kill -9`
/// is noticed the moment its kernel closes that connection, then verified.
#[derive(Debug, Clone)]
pub struct StaticDiscovery {
    addrs: Vec<SocketAddr>,
    frequency: Duration,
}

impl StaticDiscovery {
    /// Ping these addresses every 500 ms.
    pub fn new(addrs: impl IntoIterator<Item = SocketAddr>) -> Self {
        StaticDiscovery {
            addrs: addrs.into_iter().collect(),
            frequency: Duration::from_millis(500),
        }
    }

    /// Ping every `frequency` instead.
    pub fn with_frequency(mut self, frequency: Duration) -> Self {
        self.frequency = frequency;
        self
    }

    /// The configured addresses.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }
}

impl Discovery for StaticDiscovery {
    fn kind(&self) -> &'static str {
        "static"
    }

    fn configured_addrs(&self) -> Vec<SocketAddr> {
        self.addrs.clone()
    }

    fn initial_candidates(&self, local: SocketAddr) -> Vec<String> {
        self.addrs
            .iter()
            .filter(|a| **a != local)
            .map(ToString::to_string)
            .collect()
    }

    fn run(self: Box<Self>, ctx: DiscoveryContext) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move {
            let local_addr = ctx.local().addr;
            let tasks: Vec<_> = self
                .addrs
                .iter()
                .copied()
                .filter(|a| *a != local_addr)
                .map(|addr| {
                    tokio::spawn(watch_address(
                        ctx.clone(),
                        addr,
                        self.frequency,
                        "static",
                        CancellationToken::new(),
                    ))
                })
                .collect();
            ctx.shutdown().await;
            for t in tasks {
                t.abort();
            }
        })
    }
}
