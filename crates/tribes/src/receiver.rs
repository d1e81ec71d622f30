//! The TCP receiver (Tomcat's `NioReceiver`): accepts connections, reads frames,
//! opens each batch once, runs its messages up the interceptor stack, hands them to
//! listeners and sends cumulative acks (see [`crate::acks`]).
//!
//! A connection that sends garbage (bad magic, unknown kind or version, a frame
//! over the limit, a batch that does not open or whose entries do not add up, a
//! header that does not decode, a message before its hello) is closed with an
//! error naming the peer and the cause, and counted; every other connection goes
//! on. A batch is checked whole before any of its messages is handed on, so a bad
//! one is refused whole.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::{Buf, Bytes, BytesMut};
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::codec::{Encoder, FramedRead};
use tokio_util::sync::CancellationToken;

use crate::acks::{AckState, Flush};
use crate::batch;
use crate::interceptor::{InterceptorStack, Message};
use crate::listen::{Listeners, Route};
use crate::member::{Member, MemberId};
use crate::membership::MembershipInput;
use crate::stats::{Counters, Refusals};
use crate::wire::{AckHeader, Frame, FrameCodec, FrameKind, GoodbyeHeader, MemberHeader, MessageHeader, WireError};

/// What the receiver uses of the channel, and nothing more.
pub(crate) struct ReceiverContext {
    /// This node, for pongs.
    pub(crate) local: watch::Receiver<Member>,
    /// Runs the handshake of each connection, which gives its codec.
    pub(crate) gate: Arc<crate::gate::Gate>,
    pub(crate) stack: InterceptorStack,
    pub(crate) listeners: Arc<Listeners>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) refused: Arc<Refusals>,
    /// Where the senders heard from are reported.
    pub(crate) inputs: mpsc::UnboundedSender<MembershipInput>,
    pub(crate) shutdown: CancellationToken,
}

pub(crate) async fn accept_loop(ctx: Arc<ReceiverContext>, listener: TcpListener) {
    loop {
        let accepted = tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve_connection(ctx.clone(), stream, peer));
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// Why a receiving connection was closed.
#[derive(Debug, thiserror::Error)]
enum ConnectionError {
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("a message frame arrived before the hello frame that names its sender (the peer is not a tribes sender)")]
    MessageBeforeHello,
    #[error(
        "a frame names member {named}, but the handshake of this connection proved member {proved}: the peer speaks for another member"
    )]
    NotTheHandshakeMember { named: MemberId, proved: MemberId },
}

/// One connection's state, as its frames are read.
struct Conn {
    from: Option<Arc<Member>>,
    /// The member the handshake proved: the only one this connection may speak for.
    proved: MemberId,
    acks: Arc<AckState>,
    replies: mpsc::UnboundedSender<Frame>,
    /// The checked entries of the batch being handed on (reused).
    entries: Vec<Entry>,
    /// The listener this connection delivered to last.
    route: Option<Route>,
}

enum Entry {
    Message(MessageHeader, Bytes),
    Goodbye(MemberId),
}

async fn serve_connection(ctx: Arc<ReceiverContext>, mut stream: TcpStream, peer: SocketAddr) {
    let local = ctx.local.borrow().id;
    let opened = match ctx.gate.accept(&mut stream, peer, local).await {
        Ok(opened) => opened,
        Err(e) => {
            // Refusals are counted, logged, recorded and explained to the peer by the gate.
            if !matches!(e, crate::gate::HandshakeError::Refused(_)) {
                tracing::debug!(%peer, error = %e, "handshake not finished");
            }
            return;
        }
    };
    let codec = opened.codec;
    let (read, write) = stream.into_split();
    let mut reader = FramedRead::with_capacity(read, codec.clone(), 64 * 1024);
    let (replies, reply_rx) = mpsc::unbounded_channel::<Frame>();
    let acks = Arc::new(AckState::default());
    let out = Arc::new(Replies {
        out: tokio::sync::Mutex::new(ReplyOut {
            write,
            codec,
            buf: BytesMut::with_capacity(1024),
        }),
    });
    let flush: Arc<dyn Flush> = out.clone();
    acks.set_flush(Arc::downgrade(&flush));
    drop(flush);
    let writer = tokio::spawn(write_replies(out, acks.clone(), reply_rx, ctx.shutdown.clone()));
    let mut conn = Conn {
        from: None,
        proved: opened.peer,
        acks,
        replies,
        entries: Vec::new(),
        route: None,
    };
    let result = loop {
        let frame = tokio::select! {
            _ = ctx.shutdown.cancelled() => break Ok(()),
            f = reader.next() => f,
        };
        let frame = match frame {
            None => break Ok(()),
            Some(Err(e)) => break Err(ConnectionError::from(e)),
            Some(Ok(frame)) => frame,
        };
        if let Err(e) = handle_frame(&ctx, frame, &mut conn).await {
            break Err(e);
        }
    };
    let from = conn.from.take();
    match result {
        Ok(()) => {
            if let Some(m) = &from
                && !ctx.shutdown.is_cancelled()
            {
                // The sender's side closed: a strong hint that it died. Verify.
                let _ = ctx.inputs.send(MembershipInput::ConnectionLost(m.id));
            }
        }
        Err(e) => {
            let is_io = matches!(e, ConnectionError::Wire(WireError::Io(_)));
            if is_io {
                tracing::debug!(%peer, error = %e, "connection closed");
            } else {
                ctx.counters.malformed.fetch_add(1, Ordering::Relaxed);
                ctx.refused.record(peer.to_string(), e.to_string());
                tracing::warn!(%peer, member = from.as_ref().map(|m| m.name.as_str()), error = %e,
                    "closing replication connection from {peer}: {e}");
            }
            if let Some(m) = &from {
                let _ = ctx.inputs.send(MembershipInput::ConnectionLost(m.id));
            }
        }
    }
    drop(conn);
    let _ = writer.await;
}

/// The write half of a receiving connection: pongs, fail-acks and cumulative acks.
/// Whoever finishes a message writes the ack it made owed at once if the socket
/// takes it (no task switch); what does not fit is left to [`write_replies`].
struct Replies {
    out: tokio::sync::Mutex<ReplyOut>,
}

struct ReplyOut {
    write: OwnedWriteHalf,
    codec: FrameCodec,
    buf: BytesMut,
}

impl ReplyOut {
    fn encode(&mut self, frame: Frame) -> Result<(), WireError> {
        self.codec.encode(frame, &mut self.buf)
    }

    /// Fail-acks first, then one ack covering them and everything before.
    fn encode_owed(&mut self, acks: &AckState) -> Result<(), WireError> {
        let owed = acks.owed();
        for (id, reason) in owed.fails {
            self.encode(Frame::new(
                FrameKind::FailAck,
                &AckHeader {
                    id,
                    reason: Some(reason),
                },
                Bytes::new(),
            ))?;
        }
        if let Some(id) = owed.ack {
            self.encode(Frame::new(
                FrameKind::Ack,
                &AckHeader { id, reason: None },
                Bytes::new(),
            ))?;
        }
        Ok(())
    }
}

impl Flush for Replies {
    fn flush_now(&self, acks: &AckState) -> bool {
        // The writer task is writing: it looks again when woken.
        let Ok(mut out) = self.out.try_lock() else {
            return false;
        };
        if out.encode_owed(acks).is_err() {
            return false;
        }
        if out.buf.is_empty() {
            return true;
        }
        match out.write.try_write(&out.buf) {
            Ok(n) if n == out.buf.len() => {
                out.buf.clear();
                true
            }
            Ok(n) => {
                out.buf.advance(n);
                false
            }
            Err(_) => false,
        }
    }
}

/// Writes what the fast path left: pongs, and acks that did not fit in the socket
/// (or were made owed while this task was writing), each time in one write.
async fn write_replies(
    replies: Arc<Replies>,
    acks: Arc<AckState>,
    mut pongs: mpsc::UnboundedReceiver<Frame>,
    cancel: CancellationToken,
) {
    loop {
        let mut open = true;
        let mut pong = None;
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = acks.changed() => {}
            f = pongs.recv() => match f {
                Some(f) => pong = Some(f),
                None => open = false,
            },
        }
        let mut out = replies.out.lock().await;
        for f in pong.into_iter().chain(std::iter::from_fn(|| pongs.try_recv().ok())) {
            if out.encode(f).is_err() {
                return;
            }
        }
        if out.encode_owed(&acks).is_err() {
            return;
        }
        if !out.buf.is_empty() {
            let ReplyOut { write, buf, .. } = &mut *out;
            if write.write_all(buf).await.is_err() {
                return;
            }
            buf.clear();
        }
        if !open {
            return;
        }
    }
}

async fn handle_frame(ctx: &ReceiverContext, frame: Frame, conn: &mut Conn) -> Result<(), ConnectionError> {
    match frame.kind {
        FrameKind::Hello if conn.from.is_none() => {
            let MemberHeader { member } = frame.header()?;
            proved(conn, &member)?;
            // The messages that follow are delivered only once the membership lists
            // their sender: a listener may answer at once (a state transfer streams
            // the sessions back), and a send to a member not listed yet would fail.
            let (listed, wait) = oneshot::channel();
            let _ = ctx.inputs.send(MembershipInput::HeardThen(member.clone(), listed));
            let _ = wait.await;
            conn.from = Some(Arc::new(member));
        }
        FrameKind::Hello | FrameKind::Heartbeat => {
            let MemberHeader { member } = frame.header()?;
            proved(conn, &member)?;
            let _ = ctx.inputs.send(MembershipInput::Heard(member.clone()));
            conn.from = Some(Arc::new(member));
        }
        FrameKind::Ping => {
            let MemberHeader { member } = frame.header()?;
            proved(conn, &member)?;
            let _ = ctx.inputs.send(MembershipInput::Heard(member));
            let pong = Frame::new(
                FrameKind::Pong,
                &MemberHeader {
                    member: ctx.local.borrow().clone(),
                },
                Default::default(),
            );
            let _ = conn.replies.send(pong);
        }
        FrameKind::Goodbye => {
            let GoodbyeHeader { id } = frame.header()?;
            goodbye(ctx, conn, id)?;
        }
        FrameKind::Message => {
            let header: MessageHeader = frame.header()?;
            let sender = conn.from.clone().ok_or(ConnectionError::MessageBeforeHello)?;
            handle_message(ctx, &sender, conn, header, frame.payload).await;
        }
        FrameKind::Batch => {
            // Check every entry before handing any on: a bad batch is refused whole.
            let mut entries = std::mem::take(&mut conn.entries);
            for entry in batch::entries(&frame) {
                let entry = entry?;
                entries.push(match entry.kind {
                    FrameKind::Goodbye => Entry::Goodbye(entry.header::<GoodbyeHeader>()?.id),
                    _ => Entry::Message(entry.header()?, entry.payload),
                });
            }
            for entry in entries.drain(..) {
                match entry {
                    Entry::Goodbye(id) => goodbye(ctx, conn, id)?,
                    Entry::Message(header, payload) => {
                        let sender = conn.from.clone().ok_or(ConnectionError::MessageBeforeHello)?;
                        handle_message(ctx, &sender, conn, header, payload).await;
                    }
                }
            }
            conn.entries = entries;
        }
        FrameKind::Ack | FrameKind::FailAck | FrameKind::Pong => {}
    }
    Ok(())
}

/// A connection speaks only for the member its handshake proved.
fn proved(conn: &Conn, member: &Member) -> Result<(), ConnectionError> {
    if member.id == conn.proved {
        Ok(())
    } else {
        Err(ConnectionError::NotTheHandshakeMember {
            named: member.id,
            proved: conn.proved,
        })
    }
}

fn goodbye(ctx: &ReceiverContext, conn: &mut Conn, id: MemberId) -> Result<(), ConnectionError> {
    if id != conn.proved {
        return Err(ConnectionError::NotTheHandshakeMember {
            named: id,
            proved: conn.proved,
        });
    }
    let _ = ctx.inputs.send(MembershipInput::Goodbye(id));
    conn.from = None;
    Ok(())
}

/// One message up the interceptors to its listener. A sync-ack message stays
/// unacknowledged while the interceptors hold it, and is refused (alone) if one of
/// them refuses it.
async fn handle_message(
    ctx: &ReceiverContext,
    sender: &Arc<Member>,
    conn: &mut Conn,
    header: MessageHeader,
    payload: Bytes,
) {
    let acks = &conn.acks;
    let seq = header.id;
    let message = Message {
        topic: header.topic,
        payload,
        headers: header.headers,
        ack: acks.arrived(seq, header.ack),
    };
    match ctx.stack.incoming(sender, message) {
        Ok(messages) => {
            if header.ack >= 2 {
                acks.passed(seq);
            }
            for m in messages {
                ctx.listeners.deliver(&mut conn.route, sender, m).await;
            }
        }
        Err(e) => {
            tracing::warn!(member = %sender, error = %e, "incoming message refused");
            ctx.counters.undeliverable.fetch_add(1, Ordering::Relaxed);
            if header.ack >= 2 {
                acks.fail(seq, e.to_string());
            }
        }
    }
}

#[cfg(test)]
mod tests;
