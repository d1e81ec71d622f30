//! One TCP ping: connect, send our description, read the peer's.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

use crate::gate::{Gate, HandshakeError};
use crate::member::Member;
use crate::refusal::Refusal;
use crate::wire::{Frame, FrameCodec, FrameKind, MemberHeader, WireError};

/// Why a TCP probe of a peer got no member description.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// Nothing accepted the connection (refused or reset): no process listens there.
    #[error("nothing listens at {addr}: {source} (is the node running, and is {addr} its replication address?)")]
    Unreachable {
        /// The probed address.
        addr: SocketAddr,
        /// The socket error.
        source: io::Error,
    },
    /// No answer within the probe timeout; the peer may be alive but slow.
    #[error("no answer from {addr} within {timeout:?} (a firewall, a partition, or an overloaded node)")]
    TimedOut {
        /// The probed address.
        addr: SocketAddr,
        /// The timeout used.
        timeout: Duration,
    },
    /// Something answered that is not a tribes node of this version.
    #[error("{addr} answered, but not as a tribes node: {source}")]
    Protocol {
        /// The probed address.
        addr: SocketAddr,
        /// What was wrong with the answer.
        source: WireError,
    },
    /// The handshake was refused, by this node or by the peer (another cluster key,
    /// a revoked identity, another wire version, …).
    #[error("{addr} and this node refused each other: {source}")]
    Refused {
        /// The probed address.
        addr: SocketAddr,
        /// Why.
        source: Refusal,
    },
}

impl ProbeError {
    /// Whether the probe proves that no member runs at the address any more.
    pub(crate) fn is_definitive(&self) -> bool {
        !matches!(self, ProbeError::TimedOut { .. })
    }
}

/// Dial `addr` and run the handshake (as initiator, for no member in particular).
pub(crate) async fn open(
    gate: &Gate,
    local: &Member,
    addr: SocketAddr,
) -> Result<Framed<TcpStream, FrameCodec>, ProbeError> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|source| ProbeError::Unreachable { addr, source })?;
    let _ = stream.set_nodelay(true);
    let opened = gate.connect(&mut stream, local.id, None).await.map_err(|e| match e {
        HandshakeError::Refused(source) => ProbeError::Refused { addr, source },
        HandshakeError::Io(source) => ProbeError::Unreachable { addr, source },
        HandshakeError::TimedOut(timeout) => ProbeError::TimedOut { addr, timeout },
    })?;
    Ok(Framed::new(stream, opened.codec))
}

pub(crate) async fn probe(
    gate: &Gate,
    local: &Member,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<Member, ProbeError> {
    let attempt = async {
        let mut framed = open(gate, local, addr).await?;
        ping(&mut framed, local).await.map_err(|e| match e {
            WireError::Io(source) => ProbeError::Unreachable { addr, source },
            source => ProbeError::Protocol { addr, source },
        })
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or(Err(ProbeError::TimedOut { addr, timeout }))
}

/// Send a ping on an open connection and read the pong.
pub(crate) async fn ping(framed: &mut Framed<TcpStream, FrameCodec>, local: &Member) -> Result<Member, WireError> {
    framed
        .send(Frame::new(
            FrameKind::Ping,
            &MemberHeader { member: local.clone() },
            Default::default(),
        ))
        .await?;
    loop {
        match framed.next().await {
            Some(Ok(frame)) if frame.kind == FrameKind::Pong => {
                return Ok(frame.header::<MemberHeader>()?.member);
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e),
            None => {
                return Err(WireError::Io(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "connection closed before the pong",
                )));
            }
        }
    }
}
