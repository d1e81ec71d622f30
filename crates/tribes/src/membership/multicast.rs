//! Multicast heartbeats (Tomcat's `McastService`).

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::pin::Pin;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

use super::{CandidateStatus, Discovery, DiscoveryContext};

/// Heartbeats to a multicast group, with Tomcat's defaults: group 228.0.0.4, port
/// 45564, one heartbeat every 500 ms, TTL 1. How long silence lasts before a member
/// is dropped is the channel's `drop_time` (3 s by default).
#[derive(Debug, Clone)]
pub struct MulticastDiscovery {
    group: Ipv4Addr,
    port: u16,
    frequency: Duration,
    interface: Option<Ipv4Addr>,
    ttl: u32,
}

impl Default for MulticastDiscovery {
    fn default() -> Self {
        MulticastDiscovery {
            group: Ipv4Addr::new(228, 0, 0, 4),
            port: 45564,
            frequency: Duration::from_millis(500),
            interface: None,
            ttl: 1,
        }
    }
}

impl MulticastDiscovery {
    /// Tomcat's defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Another group and port.
    pub fn with_group(mut self, group: Ipv4Addr, port: u16) -> Self {
        self.group = group;
        self.port = port;
        self
    }

    /// Heartbeat every `frequency`.
    pub fn with_frequency(mut self, frequency: Duration) -> Self {
        self.frequency = frequency;
        self
    }

    /// Send and join on this interface address instead of the default route's.
    pub fn with_interface(mut self, interface: Ipv4Addr) -> Self {
        self.interface = Some(interface);
        self
    }

    /// Multicast TTL (1 keeps heartbeats on the local network).
    pub fn with_ttl(mut self, ttl: u32) -> Self {
        self.ttl = ttl;
        self
    }

    fn socket(&self) -> io::Result<UdpSocket> {
        let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, self.port)).into())?;
        let iface = self.interface.unwrap_or(Ipv4Addr::UNSPECIFIED);
        socket.join_multicast_v4(&self.group, &iface)?;
        if let Some(i) = self.interface {
            socket.set_multicast_if_v4(&i)?;
        }
        socket.set_multicast_loop_v4(true)?;
        socket.set_multicast_ttl_v4(self.ttl)?;
        socket.set_nonblocking(true)?;
        UdpSocket::from_std(socket.into())
    }
}

impl Discovery for MulticastDiscovery {
    fn kind(&self) -> &'static str {
        "multicast"
    }

    fn run(self: Box<Self>, ctx: DiscoveryContext) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move {
            let key = format!("{}:{}", self.group, self.port);
            let socket = match self.socket() {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(group = %key, error = %e,
                        "multicast membership cannot start: cannot join {key}: {e}; check that the interface has multicast enabled and a route for 224.0.0.0/4, or use static membership");
                    ctx.report(&key, CandidateStatus::down("multicast", e.to_string()));
                    return;
                }
            };
            ctx.report(
                &key,
                CandidateStatus {
                    kind: "multicast",
                    member: None,
                    up: true,
                    last_error: None,
                    probed: true,
                },
            );
            let target = SocketAddr::V4(SocketAddrV4::new(self.group, self.port));
            let local_id = ctx.local().id;
            let mut beat = tokio::time::interval(self.frequency);
            let mut buf = vec![0u8; 65_536];
            loop {
                tokio::select! {
                    _ = ctx.shutdown() => return,
                    _ = beat.tick() => {
                        let datagram = ctx.gate.heartbeat(&ctx.local());
                        if let Err(e) = socket.send_to(&datagram, target).await {
                            tracing::warn!(group = %key, error = %e, "multicast heartbeat not sent");
                            ctx.report(&key, CandidateStatus::down("multicast", e.to_string()));
                        }
                    }
                    received = socket.recv_from(&mut buf) => {
                        let Ok((len, from)) = received else { continue };
                        // A refusal is recorded and logged by the gate.
                        if let Ok(member) = ctx.gate.open_heartbeat(&buf[..len], from)
                            && member.id != local_id
                        {
                            ctx.heard(member);
                        }
                    }
                }
            }
        })
    }
}
