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
mod tests {
    use bytes::Bytes;
    use futures::SinkExt;
    use tokio::io::AsyncReadExt;
    use tokio_util::codec::Framed;

    use super::*;
    use crate::batch::BatchWriter;
    use crate::gate::dial;
    use crate::wire::{DEFAULT_MAX_FRAME_LEN, FrameCodec, PREFIX_LEN};
    use crate::{Channel, Keyring, MemberId};

    /// The first message of a connection from a sender never heard before (no ping,
    /// no heartbeat) reaches its listener only once the membership lists the sender,
    /// so that the listener can answer it at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_sender_of_a_new_connection_is_a_member_before_its_messages_are_delivered() {
        let key = Keyring::new(1, [7; 32]);
        let b = Channel::builder("b")
            .with_cluster_key(key.clone())
            .with_bind("127.0.0.1:0".parse().unwrap())
            .start()
            .await
            .unwrap();
        let mut inbox = b.listen("t").unwrap();
        for i in 0..20 {
            let a = Member::new(
                MemberId::random(&mut rand::rng()),
                format!("a{i}"),
                "default",
                ([127, 0, 0, 1], 10_000 + i).into(),
                0,
            );
            let (stream, codec) = dial(key.clone(), b.local().addr(), a.id()).await;
            let mut framed = Framed::new(stream, codec);
            let hello = Frame::new(FrameKind::Hello, &MemberHeader { member: a.clone() }, Bytes::new());
            let header = MessageHeader {
                id: 1,
                ack: 0,
                topic: "t".into(),
                headers: Vec::new(),
            };
            let message = Frame::new(FrameKind::Message, &header, Bytes::from_static(b"x"));
            framed.feed(hello).await.unwrap();
            framed.send(message).await.unwrap();
            let m = inbox.recv().await.unwrap();
            assert_eq!(m.from().id(), a.id());
            assert!(
                b.member(a.id()).is_some(),
                "message {i} delivered before its sender was listed"
            );
        }
    }

    /// A hello and one batch of `n` async messages numbered from `first`, as a
    /// sender writes them; returns the bytes and where the batch frame starts.
    fn hello_and_batch(codec: &FrameCodec, a: &Member, first: u64, n: u64) -> (Vec<u8>, usize) {
        let mut codec = codec.clone();
        let a = a.clone();
        let mut out = BatchWriter::new(DEFAULT_MAX_FRAME_LEN);
        out.push_frame(
            &mut codec,
            Frame::new(FrameKind::Hello, &MemberHeader { member: a }, Bytes::new()),
        )
        .unwrap();
        let batch_at = out.len();
        for i in first..first + n {
            let header = MessageHeader {
                id: i,
                ack: 0,
                topic: "t".into(),
                headers: Vec::new(),
            };
            out.push(&mut codec, FrameKind::Message, &header, &i.to_be_bytes())
                .unwrap();
        }
        out.finish(&mut codec);
        (out.bytes().to_vec(), batch_at)
    }

    /// A batch with one flipped byte is refused whole (not one of its messages is
    /// delivered) and counted; a good batch is delivered in order, exactly once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_tampered_batch_is_refused_whole_and_counted_and_a_good_one_delivered_in_order_once() {
        let key = Keyring::new(1, [7; 32]);
        let b = Channel::builder("b")
            .with_cluster_key(key.clone())
            .with_bind("127.0.0.1:0".parse().unwrap())
            .start()
            .await
            .unwrap();
        let mut inbox = b.listen("t").unwrap();
        let a = Member::new(
            MemberId::random(&mut rand::rng()),
            "a",
            "default",
            ([127, 0, 0, 1], 9).into(),
            0,
        );

        let (mut stream, codec) = dial(key.clone(), b.local().addr(), a.id()).await;
        let (mut wire, batch_at) = hello_and_batch(&codec, &a, 1, 20);
        wire[batch_at + PREFIX_LEN + 30] ^= 0x40;
        stream.write_all(&wire).await.unwrap();
        // The receiver closes the connection.
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest).await;
        assert_eq!(b.stats().malformed_frames, 1);
        let stats = b.stats();
        let reason = &stats.refused.values().next().unwrap().last_reason;
        assert!(reason.contains("authentication failed"), "{reason}");

        let (mut stream, codec) = dial(key.clone(), b.local().addr(), a.id()).await;
        let (wire, _) = hello_and_batch(&codec, &a, 101, 20);
        stream.write_all(&wire).await.unwrap();
        for want in 101..121u64 {
            let m = inbox.recv().await.unwrap();
            assert_eq!(
                m.payload()[..],
                want.to_be_bytes(),
                "in order, none of the tampered batch"
            );
        }
        // Exactly once: a sync-ack message sent after the batch is the next one in.
        let a = Channel::builder("a")
            .with_cluster_key(Keyring::new(1, [7; 32]))
            .with_bind("127.0.0.1:0".parse().unwrap())
            .with_discovery(crate::StaticDiscovery::new([b.local().addr()]))
            .start()
            .await
            .unwrap();
        a.watch_members()
            .wait_for(|m| m.iter().any(|m| m.id() == b.local().id()))
            .await
            .unwrap();
        let send = {
            let a = a.clone();
            let to = b.local().id();
            tokio::spawn(async move {
                a.send(
                    &[to],
                    "t",
                    Bytes::from_static(b"last"),
                    crate::SendOptions::mode(crate::SendMode::SyncAck),
                )
                .await
            })
        };
        let m = inbox.recv().await.unwrap();
        assert_eq!(&m.payload()[..], b"last");
        drop(m);
        assert!(send.await.unwrap().all_ok());
        assert_eq!(b.stats().malformed_frames, 1);
    }

    /// After a real handshake, an oversized frame, an unknown kind and a message
    /// before the hello each close their connection (counted), and a frame naming
    /// another member than the handshake proved is refused; the node keeps serving.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn garbage_after_the_handshake_closes_only_that_connection() {
        let key = Keyring::new(1, [7; 32]);
        let b = Channel::builder("b")
            .with_cluster_key(key.clone())
            .with_bind("127.0.0.1:0".parse().unwrap())
            .start()
            .await
            .unwrap();
        let mut inbox = b.listen("t").unwrap();
        let me = Member::new(
            MemberId::random(&mut rand::rng()),
            "a",
            "default",
            ([127, 0, 0, 1], 9).into(),
            0,
        );
        let mut oversized = b"TRBS\x03\x01".to_vec();
        oversized.extend_from_slice(&[0u8; 30]);
        oversized.extend_from_slice(&8u32.to_be_bytes());
        oversized.extend_from_slice(&u32::MAX.to_be_bytes());
        let mut unknown_kind = b"TRBS\x03\xee".to_vec();
        unknown_kind.extend_from_slice(&[0u8; 38]);
        let message = |codec: &FrameCodec| {
            let header = MessageHeader {
                id: 1,
                ack: 0,
                topic: "t".into(),
                headers: Vec::new(),
            };
            let mut buf = BytesMut::new();
            codec
                .clone()
                .encode(
                    Frame::new(FrameKind::Message, &header, Bytes::from_static(b"x")),
                    &mut buf,
                )
                .unwrap();
            buf.to_vec()
        };
        let impostor = |codec: &FrameCodec| {
            let other = Member::new(
                MemberId::random(&mut rand::rng()),
                "x",
                "default",
                ([127, 0, 0, 1], 8).into(),
                0,
            );
            let mut buf = BytesMut::new();
            codec
                .clone()
                .encode(
                    Frame::new(FrameKind::Hello, &MemberHeader { member: other }, Bytes::new()),
                    &mut buf,
                )
                .unwrap();
            buf.to_vec()
        };
        type Bad = Box<dyn Fn(&FrameCodec) -> Vec<u8>>;
        let cases: Vec<(&str, Bad)> = vec![
            ("oversized", Box::new(move |_| oversized.clone())),
            ("unknown kind", Box::new(move |_| unknown_kind.clone())),
            ("message before hello", Box::new(message)),
            ("another member's hello", Box::new(impostor)),
        ];
        for (i, (what, bad)) in cases.iter().enumerate() {
            let (mut stream, codec) = dial(key.clone(), b.local().addr(), me.id()).await;
            stream.write_all(&bad(&codec)).await.unwrap();
            let mut rest = Vec::new();
            let closed = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
            assert!(closed.is_ok(), "{what}: the connection stays open");
            assert_eq!(b.stats().malformed_frames, i as u64 + 1, "{what} counted");
        }
        let reasons: Vec<String> = b.stats().refused.values().map(|r| r.last_reason.clone()).collect();
        assert!(
            reasons
                .iter()
                .any(|r| r.contains("handshake of this connection proved")),
            "{reasons:?}"
        );
        // Still serving: a good connection delivers.
        let (mut stream, codec) = dial(key.clone(), b.local().addr(), me.id()).await;
        let (wire, _) = hello_and_batch(&codec, &me, 1, 1);
        stream.write_all(&wire).await.unwrap();
        assert_eq!(inbox.recv().await.unwrap().payload()[..], 1u64.to_be_bytes());
    }
}
