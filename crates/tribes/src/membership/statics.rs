//! A fixed list of member addresses (Tomcat's `StaticMembershipInterceptor`).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_util::codec::Framed;

use super::probe::ping;
use super::{CandidateStatus, Discovery, DiscoveryContext};

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

    fn run(self: Box<Self>, ctx: DiscoveryContext) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move {
            let local_addr = ctx.local().addr;
            let tasks: Vec<_> = self
                .addrs
                .iter()
                .copied()
                .filter(|a| *a != local_addr)
                .map(|addr| tokio::spawn(watch_address(ctx.clone(), addr, self.frequency)))
                .collect();
            ctx.shutdown().await;
            for t in tasks {
                t.abort();
            }
        })
    }
}

async fn watch_address(ctx: DiscoveryContext, addr: SocketAddr, frequency: Duration) {
    let key = addr.to_string();
    let down = |error: String| CandidateStatus {
        kind: "static",
        member: None,
        up: false,
        last_error: Some(error),
    };
    ctx.report(&key, down("not probed yet".into()));
    loop {
        if ctx.is_shutdown() {
            return;
        }
        let connected = tokio::time::timeout(ctx.probe_timeout, TcpStream::connect(addr)).await;
        let stream = match connected {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                ctx.report(&key, down(format!("nothing listens at {addr}: {e}")));
                tokio::time::sleep(frequency).await;
                continue;
            }
            Err(_) => {
                ctx.report(&key, down(format!("connect to {addr} timed out")));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let mut framed = Framed::new(stream, ctx.codec.clone());
        let mut current = None;
        loop {
            let answer = tokio::time::timeout(ctx.probe_timeout, ping(&mut framed, &ctx.local())).await;
            match answer {
                Ok(Ok(member)) => {
                    current = Some(member.id);
                    ctx.report(
                        &key,
                        CandidateStatus {
                            kind: "static",
                            member: Some(member.name.clone()),
                            up: true,
                            last_error: None,
                        },
                    );
                    ctx.heard(member);
                }
                Ok(Err(e)) => {
                    ctx.report(&key, down(format!("ping connection to {addr} closed: {e}")));
                    if let Some(id) = current {
                        ctx.lost(id);
                    }
                    break;
                }
                Err(_) => {
                    ctx.report(
                        &key,
                        down(format!("no pong from {addr} within {:?}", ctx.probe_timeout)),
                    );
                    break;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(frequency) => {}
                _ = ctx.shutdown() => return,
            }
        }
    }
}
