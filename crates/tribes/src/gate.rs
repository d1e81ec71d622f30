//! The [`Gate`]: runs the handshake (`handshake.rs`) over a socket on both ends of a
//! connection, seals and opens heartbeats (`heartbeat.rs`), and records every
//! refusal, both ways, with the peer, the reason and the fix.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::handshake::{
    ANSWER_LEN, Initiator, OFFER_LEN, RECORD_LEN, Responder, record_body_len, refusal_record, refusing_answer,
};
use crate::heartbeat::Heartbeats;
use crate::member::{Member, MemberId, unix_millis};
use crate::refusal::Refusal;
use crate::seal::{Credentials, Keyring};
use crate::stats::{Counters, RefusalRecord, Refusals};
use crate::wire::FrameCodec;

/// Why a connection did not open.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandshakeError {
    /// Refused, by this node or by the peer ([`Refusal::ByPeer`]).
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The socket failed or closed during the handshake.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The handshake did not finish in time.
    #[error("the handshake did not finish within {0:?}")]
    TimedOut(Duration),
}

/// A connection through the gate: its codec and the peer the handshake proved.
#[derive(Debug)]
pub(crate) struct Opened {
    pub(crate) codec: FrameCodec,
    pub(crate) peer: MemberId,
}

/// The channel's side of every handshake and heartbeat.
#[derive(Debug)]
pub(crate) struct Gate {
    /// `None`: plain text.
    credentials: RwLock<Option<Arc<Credentials>>>,
    max_frame_len: usize,
    refusals: Arc<Refusals>,
    /// Connections this node refused are counted with malformed ones.
    counters: Arc<Counters>,
    heartbeats: Heartbeats,
    /// How long an accepted connection may take to finish its handshake.
    accept_timeout: Duration,
}

async fn read_record(stream: &mut TcpStream) -> Result<(u8, Vec<u8>), HandshakeError> {
    let mut head = [0u8; RECORD_LEN];
    stream.read_exact(&mut head).await?;
    let len = record_body_len(&head)?;
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await?;
    Ok((head[0], body))
}

/// Write a refusal and close so that the peer reads it: half-close, then read and
/// discard what the peer already sent (bounded in bytes and time), because closing a
/// socket with unread input resets the connection and the peer may lose the words.
async fn refuse(stream: &mut TcpStream, bytes: &[u8]) {
    if stream.write_all(bytes).await.is_err() {
        return;
    }
    let _ = stream.shutdown().await;
    let drain = async {
        let mut buf = [0u8; 4096];
        let mut left = 1024 * 1024usize;
        while left > 0 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(500), drain).await;
}

impl Gate {
    pub(crate) fn new(
        credentials: Option<Credentials>,
        max_frame_len: usize,
        refusals: Arc<Refusals>,
        counters: Arc<Counters>,
        accept_timeout: Duration,
    ) -> Self {
        Gate {
            credentials: RwLock::new(credentials.map(Arc::new)),
            max_frame_len,
            refusals,
            counters,
            heartbeats: Heartbeats::default(),
            accept_timeout,
        }
    }

    /// The current credentials (`None` in plain text).
    pub(crate) fn credentials(&self) -> Option<Arc<Credentials>> {
        self.credentials.read().expect("credentials lock").clone()
    }

    /// Replace the keyring; `false` (nothing changed) in plain text. Connections
    /// already open keep their own keys; new ones use the new keyring.
    pub(crate) fn set_keyring(&self, keyring: Keyring) -> bool {
        let mut guard = self.credentials.write().expect("credentials lock");
        match guard.as_ref() {
            Some(c) => {
                *guard = Some(Arc::new(c.with_keyring(keyring)));
                true
            }
            None => false,
        }
    }

    /// Replace the allow-list; `false` in plain text.
    pub(crate) fn set_allowed(&self, allowed: Option<std::collections::BTreeSet<crate::PublicKey>>) -> bool {
        let mut guard = self.credentials.write().expect("credentials lock");
        match guard.as_ref() {
            Some(c) => {
                *guard = Some(Arc::new(c.with_allowed(allowed)));
                true
            }
            None => false,
        }
    }

    /// Record a refusal, both ways, and log it with the peer, the reason and the fix.
    pub(crate) fn record(&self, peer: SocketAddr, member: Option<MemberId>, key_id: Option<u8>, refusal: &Refusal) {
        self.record_at(peer, member, key_id, refusal, true);
    }

    /// [`Gate::record`], logging at debug level when `loud` is false (heartbeats of
    /// another cluster on a shared multicast group arrive twice a second).
    fn record_at(&self, peer: SocketAddr, member: Option<MemberId>, key_id: Option<u8>, refusal: &Refusal, loud: bool) {
        let by_peer = matches!(refusal, Refusal::ByPeer { .. });
        let message = refusal.to_string();
        let who = member.map(|m| m.to_string());
        if !loud {
            tracing::debug!(%peer, key_id, reason = ?refusal.reason(), "refused a heartbeat from {peer}: {message}");
        } else if by_peer {
            tracing::warn!(%peer, member = who.as_deref(), reason = ?refusal.reason(), "{peer} refused this node: {message}");
        } else {
            tracing::warn!(%peer, member = who.as_deref(), key_id, reason = ?refusal.reason(), "refused {peer}: {message}");
        }
        self.refusals.refused(RefusalRecord {
            at_ms: unix_millis(),
            peer: peer.to_string(),
            member: who,
            key_id,
            reason: refusal.reason(),
            by_peer,
            message,
        });
    }

    /// Open a connection this node dialled: run the handshake as initiator. `to`
    /// is the member meant, when known. Refusals are recorded and logged here.
    pub(crate) async fn connect(
        &self,
        stream: &mut TcpStream,
        local: MemberId,
        to: Option<MemberId>,
    ) -> Result<Opened, HandshakeError> {
        let peer = stream.peer_addr()?;
        let credentials = self.credentials();
        let creds = credentials.as_deref();
        let key_id = creds.map(|c| c.keyring().send_id());
        // Recorded before the peer is told, so the count is there when it reads why.
        let fail = |refusal: Refusal| {
            self.record(peer, to, key_id, &refusal);
            HandshakeError::Refused(refusal)
        };
        let failed = |e: HandshakeError| match e {
            HandshakeError::Refused(refusal) => fail(refusal),
            e => e,
        };
        let result = async {
            let (mut init, offer) = Initiator::start(creds, local, to);
            stream.write_all(&offer).await?;
            let mut head = [0u8; ANSWER_LEN];
            if let Err(e) = stream.read_exact(&mut head).await {
                return Err(HandshakeError::Io(io::Error::new(
                    e.kind(),
                    format!(
                        "the peer closed the connection before answering the handshake ({e}): it runs an older tribes (before wire version 3, see its log) or dropped the connection"
                    ),
                )));
            }
            let version = Initiator::answer_version(&head).map_err(fail)?;
            let (status, body) = read_record(stream).await.map_err(failed)?;
            let finish = match init.on_answer(version, status, &body, creds) {
                Ok(finish) => finish,
                Err(refusal) => {
                    let bytes = refusal_record(&refusal);
                    let by_peer = matches!(refusal, Refusal::ByPeer { .. });
                    let e = fail(refusal);
                    if !by_peer {
                        refuse(stream, &bytes).await;
                    }
                    return Err(e);
                }
            };
            stream.write_all(&finish).await?;
            let (status, body) = read_record(stream).await.map_err(failed)?;
            init.on_accept(status, &body).map_err(fail)
        }
        .await;
        let established = result?;
        Ok(Opened {
            codec: FrameCodec::session(self.max_frame_len, established.keys),
            peer: established.peer,
        })
    }

    /// Open a connection a peer dialled: run the handshake as responder, within the
    /// accept timeout. Refusals are recorded, logged and explained to the peer.
    pub(crate) async fn accept(
        &self,
        stream: &mut TcpStream,
        peer: SocketAddr,
        local: MemberId,
    ) -> Result<Opened, HandshakeError> {
        let credentials = self.credentials();
        let creds = credentials.as_deref();
        let run = async {
            // Who and which key, once the offer names them (for the record).
            let mut named: (Option<MemberId>, Option<u8>) = (None, None);
            // Recorded before the peer is told, so the count is there when it reads why.
            let refused = |named: (Option<MemberId>, Option<u8>), refusal: &Refusal| {
                self.counters.malformed.fetch_add(1, Ordering::Relaxed);
                self.record(peer, named.0, named.1, refusal);
            };
            let mut offer = [0u8; OFFER_LEN];
            stream.read_exact(&mut offer[..5]).await?;
            if let Err(refusal) = Responder::check_offer_start(offer[..5].try_into().expect("5 bytes")) {
                refused(named, &refusal);
                refuse(stream, &refusing_answer(&refusal)).await;
                return Err(refusal.into());
            }
            stream.read_exact(&mut offer[5..]).await?;
            named.1 = (offer[6] != 0).then_some(offer[7]);
            let (status, body) = match read_record(stream).await {
                Ok(r) => r,
                Err(HandshakeError::Refused(refusal)) => {
                    refused(named, &refusal);
                    refuse(stream, &refusing_answer(&refusal)).await;
                    return Err(refusal.into());
                }
                Err(e) => return Err(e),
            };
            let (responder, answer) = match Responder::on_offer(&offer, status, &body, creds, local) {
                Ok(r) => r,
                Err(refusal) => {
                    refused(named, &refusal);
                    refuse(stream, &refusing_answer(&refusal)).await;
                    return Err(refusal.into());
                }
            };
            named.0 = Some(responder.peer());
            stream.write_all(&answer).await?;
            let (status, body) = read_record(stream).await?;
            match responder.on_finish(status, &body, creds) {
                Ok((accept, established)) => {
                    stream.write_all(&accept).await?;
                    Ok(established)
                }
                Err(refusal) => {
                    refused(named, &refusal);
                    if !matches!(refusal, Refusal::ByPeer { .. }) {
                        refuse(stream, &refusal_record(&refusal)).await;
                    }
                    Err(refusal.into())
                }
            }
        };
        let established = match tokio::time::timeout(self.accept_timeout, run).await {
            Ok(r) => r?,
            Err(_) => return Err(HandshakeError::TimedOut(self.accept_timeout)),
        };
        Ok(Opened {
            codec: FrameCodec::session(self.max_frame_len, established.keys),
            peer: established.peer,
        })
    }

    /// The heartbeat datagram announcing `member` now.
    pub(crate) fn heartbeat(&self, member: &Member) -> Vec<u8> {
        self.heartbeats
            .seal(self.credentials().as_deref(), member, unix_millis(), &mut rand::rng())
    }

    /// The member a heartbeat datagram announces; a refusal is recorded and logged.
    pub(crate) fn open_heartbeat(&self, datagram: &[u8], from: SocketAddr) -> Result<Member, Refusal> {
        let result = self
            .heartbeats
            .open(self.credentials().as_deref(), datagram, unix_millis());
        if let Err(refusal) = &result {
            let key_id = (datagram.len() > 7 && datagram[6] != 0).then(|| datagram[7]);
            self.record_at(from, None, key_id, refusal, false);
        }
        result
    }
}

/// A connection to `addr` as member `from` would open it, for tests that then write
/// frames by hand.
#[cfg(test)]
pub(crate) async fn dial(keyring: Keyring, addr: SocketAddr, from: MemberId) -> (TcpStream, FrameCodec) {
    let gate = Gate::new(
        Some(Credentials::new(keyring)),
        crate::wire::DEFAULT_MAX_FRAME_LEN,
        Arc::default(),
        Arc::default(),
        Duration::from_secs(5),
    );
    let mut stream = TcpStream::connect(addr).await.expect("the node listens");
    let opened = gate
        .connect(&mut stream, from, None)
        .await
        .expect("the handshake succeeds");
    (stream, opened.codec)
}
