//! One TCP ping: connect, send our description, read the peer's.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

use crate::member::Member;
use crate::wire::{Frame, FrameCodec, FrameKind, MemberHeader, WireError};

/// Why a TCP probe of a peer got no member description.
#[derive(Debug, thiserror::Error)]
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
}

impl ProbeError {
    /// Whether the probe proves that no member runs at the address any more.
    pub(crate) fn is_definitive(&self) -> bool {
        !matches!(self, ProbeError::TimedOut { .. })
    }
}

pub(crate) async fn probe(
    codec: &FrameCodec,
    local: &Member,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<Member, ProbeError> {
    let attempt = async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|source| ProbeError::Unreachable { addr, source })?;
        let _ = stream.set_nodelay(true);
        let mut framed = Framed::new(stream, codec.clone());
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
