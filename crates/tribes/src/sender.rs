//! Per-member pooled senders (Tomcat's `PooledParallelSender`).
//!
//! Each member gets `pool_size` connections, each driven by one task that connects
//! lazily, says hello, and then writes batches: whatever is queued when it wakes
//! (up to [`WRITE_BUDGET`]) is encoded in place into one reused buffer as one batch
//! frame, sealed once, and written with one syscall. While that write is under way
//! the queue fills again, so concurrent senders share frames under load. Woken for
//! a lone message after a frame that held several, the task yields once before it
//! gathers, so the commits of requests that are ready to run on this worker join the
//! frame (a tenth of the writes under the HTTP benchmark's load:
//! `benches/results/http.md`). Idle, frames hold one message and each goes out at
//! once: no yield, no timer. The same task reads the cumulative acks that come back
//! on the socket.
//!
//! A broken connection fails the sends waiting for an ack, tells the membership (a
//! strong hint that the member died) and reconnects with exponential backoff.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use crate::acks::Waiting;
use crate::batch::BatchWriter;
use crate::gate::HandshakeError;
use crate::interceptor::{InterceptorError, Message};
use crate::member::{Member, MemberId};
use crate::membership::MembershipInput;
use crate::send::{ConnectError, Delivery, SendError, SendMode};
use crate::wire::{AckHeader, Frame, FrameCodec, FrameKind, GoodbyeHeader, MemberHeader};

type AckResult = Result<(), SendError>;

impl From<HandshakeError> for ConnectError {
    fn from(e: HandshakeError) -> Self {
        match e {
            HandshakeError::Refused(r) => ConnectError::Refused(r),
            HandshakeError::Io(e) => ConnectError::HandshakeIo(std::sync::Arc::new(e)),
            HandshakeError::TimedOut(t) => ConnectError::HandshakeTimedOut(t),
        }
    }
}

/// Stop gathering queued messages into one write past this many bytes.
pub(crate) const WRITE_BUDGET: usize = 256 * 1024;
/// The task yields before gathering only after a frame of fewer messages than this
/// (and more than one): requests' commits arrive a few per scheduling round.
const YIELD_BELOW: usize = 256;

/// What the senders use of the channel, and nothing more.
#[derive(Debug)]
pub(crate) struct SenderContext {
    /// This node, for the hello.
    pub(crate) local: watch::Receiver<Member>,
    /// Opens each connection with the handshake, which gives its codec.
    pub(crate) gate: Arc<crate::gate::Gate>,
    /// Where a lost connection is reported.
    pub(crate) inputs: mpsc::UnboundedSender<MembershipInput>,
    /// The channel's shutdown.
    pub(crate) shutdown: CancellationToken,
    pub(crate) pool_size: usize,
    pub(crate) queue_capacity: usize,
    pub(crate) connect_timeout: Duration,
}

/// One send queued for a connection.
#[derive(Debug)]
enum Queued {
    /// The interceptor output of one send; the ack (if any) is for the last message.
    Send {
        messages: Vec<Message>,
        ack: u8,
        reply: Option<oneshot::Sender<AckResult>>,
    },
    /// This node leaves.
    Goodbye(MemberId),
}

#[derive(Debug, Default)]
pub(crate) struct SenderCounters {
    /// Messages acknowledged by the member.
    pub(crate) acks: AtomicU64,
    pub(crate) failures: AtomicU64,
    pub(crate) timeouts: AtomicU64,
    /// Writes (one syscall each, bar short writes), batch frames and messages written.
    pub(crate) writes: AtomicU64,
    pub(crate) frames: AtomicU64,
    pub(crate) messages: AtomicU64,
}

pub(crate) struct MemberSender {
    member: Member,
    conns: Vec<mpsc::Sender<Queued>>,
    queue_capacity: usize,
    next_conn: AtomicUsize,
    cancel: CancellationToken,
    left: Arc<AtomicBool>,
    pub(crate) counters: Arc<SenderCounters>,
}

impl MemberSender {
    pub(crate) fn spawn(ctx: &Arc<SenderContext>, member: Member) -> Arc<Self> {
        let cancel = ctx.shutdown.child_token();
        let counters = Arc::new(SenderCounters::default());
        let left = Arc::new(AtomicBool::new(false));
        let conns = (0..ctx.pool_size)
            .map(|_| {
                let (tx, rx) = mpsc::channel(ctx.queue_capacity);
                let conn = Connection {
                    member: member.clone(),
                    ctx: ctx.clone(),
                    cancel: cancel.clone(),
                    counters: counters.clone(),
                    left: left.clone(),
                    seq: 0,
                };
                tokio::spawn(conn.run(rx));
                tx
            })
            .collect();
        Arc::new(MemberSender {
            member,
            conns,
            queue_capacity: ctx.queue_capacity,
            next_conn: AtomicUsize::new(0),
            cancel,
            left,
            counters,
        })
    }

    /// The member this sender sends to.
    pub(crate) fn member(&self) -> &Member {
        &self.member
    }

    /// Stop the connections; waiting sends fail.
    pub(crate) fn close(&self) {
        self.left.store(true, Ordering::Relaxed);
        self.cancel.cancel();
    }

    pub(crate) fn queue_depth(&self) -> usize {
        self.conns.iter().map(|c| c.max_capacity() - c.capacity()).sum()
    }

    fn pick(&self) -> usize {
        if self.conns.len() == 1 {
            return 0;
        }
        self.next_conn.fetch_add(1, Ordering::Relaxed) % self.conns.len()
    }

    /// Queue the interceptor output of one send; the ack (if any) is for the last message.
    pub(crate) async fn send(&self, messages: Vec<Message>, mode: SendMode, timeout: Duration) -> Delivery {
        let conn = &self.conns[self.pick()];
        if mode == SendMode::Async {
            let queued = Queued::Send {
                messages,
                ack: 0,
                reply: None,
            };
            // Returns at once while the queue has room; a full queue (a slow or
            // unreachable member) holds the caller back for at most the ack timeout
            // rather than dropping the message.
            let queued = match conn.try_send(queued) {
                Ok(()) => return Delivery::Queued,
                Err(mpsc::error::TrySendError::Closed(_)) => return Delivery::Failed(SendError::ShuttingDown),
                Err(mpsc::error::TrySendError::Full(queued)) => queued,
            };
            return match tokio::time::timeout(timeout, conn.send(queued)).await {
                Ok(Ok(())) => Delivery::Queued,
                Ok(Err(_)) => Delivery::Failed(SendError::ShuttingDown),
                Err(_) => {
                    self.counters.failures.fetch_add(1, Ordering::Relaxed);
                    Delivery::Failed(SendError::QueueFull {
                        member: self.member.to_string(),
                        capacity: self.queue_capacity,
                        waited: timeout,
                    })
                }
            };
        }
        let (tx, rx) = oneshot::channel();
        let queued = Queued::Send {
            messages,
            ack: mode.wire(),
            reply: Some(tx),
        };
        let waited = tokio::time::timeout(timeout, async {
            if conn.send(queued).await.is_err() {
                return Err(SendError::ShuttingDown);
            }
            rx.await.unwrap_or(Err(SendError::ShuttingDown))
        })
        .await;
        match waited {
            Ok(Ok(())) => Delivery::Acked,
            Ok(Err(e)) => {
                self.counters.failures.fetch_add(1, Ordering::Relaxed);
                Delivery::Failed(e)
            }
            Err(_) => {
                self.counters.timeouts.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(member = %self.member, ?timeout, "no ack within the timeout");
                Delivery::TimedOut(timeout)
            }
        }
    }

    /// Queue a goodbye, waiting at most `timeout` for it to be queued and written.
    pub(crate) async fn send_goodbye(&self, local: MemberId, timeout: Duration) {
        let conn = &self.conns[self.pick()];
        let _ = tokio::time::timeout(timeout, conn.send(Queued::Goodbye(local))).await;
        // Give the connection task a moment to write it.
        let _ = tokio::time::timeout(timeout, async {
            while conn.capacity() < conn.max_capacity() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
    }
}

/// The header of a message entry, borrowed from the message (same encoding as
/// [`crate::wire::MessageHeader`]).
#[derive(Serialize)]
struct MessageHeaderRef<'a> {
    id: u64,
    ack: u8,
    topic: &'a str,
    headers: &'a [(String, bytes::Bytes)],
}

struct Connection {
    member: Member,
    ctx: Arc<SenderContext>,
    cancel: CancellationToken,
    counters: Arc<SenderCounters>,
    left: Arc<AtomicBool>,
    /// The last sequence number given to a message (continues across reconnects).
    seq: u64,
}

impl Connection {
    async fn run(mut self, mut rx: mpsc::Receiver<Queued>) {
        let min_backoff = Duration::from_millis(50);
        let mut backoff = min_backoff;
        loop {
            let first = tokio::select! {
                _ = self.cancel.cancelled() => return,
                q = rx.recv() => match q { Some(q) => q, None => return },
            };
            let connect = tokio::time::timeout(self.ctx.connect_timeout, TcpStream::connect(self.member.addr)).await;
            let reason = match connect {
                Ok(Ok(mut stream)) => {
                    let _ = stream.set_nodelay(true);
                    let local = self.ctx.local.borrow().id;
                    let opened = tokio::time::timeout(
                        self.ctx.connect_timeout,
                        self.ctx.gate.connect(&mut stream, local, Some(self.member.id)),
                    )
                    .await;
                    let codec = match opened {
                        Ok(Ok(opened)) => opened.codec,
                        Ok(Err(e)) => {
                            self.lost();
                            self.fail_first(first, e.into());
                            self.sleep(&mut backoff).await;
                            continue;
                        }
                        Err(_) => {
                            self.fail_first(first, ConnectError::HandshakeTimedOut(self.ctx.connect_timeout));
                            self.sleep(&mut backoff).await;
                            continue;
                        }
                    };
                    backoff = min_backoff;
                    match self.session(stream, codec, first, &mut rx).await {
                        Ok(()) => return,
                        Err(reason) => {
                            tracing::debug!(member = %self.member, %reason, "replication connection closed");
                            self.lost();
                            if self.cancel.is_cancelled() {
                                return;
                            }
                            self.sleep(&mut backoff).await;
                            continue;
                        }
                    }
                }
                Ok(Err(e)) => {
                    self.lost();
                    ConnectError::Io(Arc::new(e))
                }
                Err(_) => ConnectError::TimedOut(self.ctx.connect_timeout),
            };
            self.fail_first(first, reason);
            self.sleep(&mut backoff).await;
        }
    }

    /// The send that asked for a connection that could not be made fails.
    fn fail_first(&self, first: Queued, source: ConnectError) {
        if let Queued::Send { reply: Some(reply), .. } = first {
            let _ = reply.send(Err(SendError::Connect {
                member: self.member.to_string(),
                source,
            }));
        }
        self.counters.failures.fetch_add(1, Ordering::Relaxed);
    }

    async fn sleep(&self, backoff: &mut Duration) {
        tokio::select! {
            _ = tokio::time::sleep(*backoff) => {}
            _ = self.cancel.cancelled() => {}
        }
        *backoff = (*backoff * 2).min(Duration::from_secs(2));
    }

    fn lost(&self) {
        let _ = self.ctx.inputs.send(MembershipInput::ConnectionLost(self.member.id));
    }

    /// One connected session: returns `Ok` on shutdown, or why it ended. Every
    /// send still waiting for an ack fails when it ends.
    async fn session(
        &mut self,
        stream: TcpStream,
        codec: FrameCodec,
        first: Queued,
        rx: &mut mpsc::Receiver<Queued>,
    ) -> Result<(), String> {
        let mut waiting = Waiting::default();
        let result = self.exchange(stream, codec, first, rx, &mut waiting).await;
        let error = match &result {
            _ if self.left.load(Ordering::Relaxed) => SendError::ConnectionLost {
                member: self.member.to_string(),
                reason: "the member left the cluster".into(),
            },
            Ok(()) => SendError::ShuttingDown,
            Err(reason) => SendError::ConnectionLost {
                member: self.member.to_string(),
                reason: reason.clone(),
            },
        };
        waiting.fail_all(&error);
        result
    }

    async fn exchange(
        &mut self,
        stream: TcpStream,
        mut codec: FrameCodec,
        first: Queued,
        rx: &mut mpsc::Receiver<Queued>,
        waiting: &mut Waiting<SendError>,
    ) -> Result<(), String> {
        let (read, mut write) = stream.into_split();
        // The connection's own codec: the write half counts its frames, the read half the peer's.
        let mut reader = FramedRead::new(read, codec.clone());
        let mut out = BatchWriter::new(codec.max_frame_len());
        let hello = Frame::new(
            FrameKind::Hello,
            &MemberHeader {
                member: self.ctx.local.borrow().clone(),
            },
            Default::default(),
        );
        out.push_frame(&mut codec, hello).map_err(|e| e.to_string())?;
        let mut next = Some(first);
        // The last frame carried a few messages: sends are arriving faster than one
        // write each (requests under load), but not as a flood.
        let mut busy = false;
        loop {
            if let Some(queued) = next.take() {
                if busy && rx.is_empty() {
                    // Let the commits of the requests that are ready to run join this
                    // frame: one yield puts this task behind them (tokio polls it again
                    // once the worker has run what was ready). Idle, the last frame
                    // held one message and this one leaves at once: no yield, no timer.
                    tokio::task::yield_now().await;
                }
                self.gather(queued, rx, &mut out, &mut codec, waiting);
                out.finish(&mut codec);
                let written = write.write_all(out.bytes()).await;
                let (frames, messages) = out.clear();
                // Several messages, but not a flood: a producer that fills frames by
                // itself (a bulk writer, a state transfer) gains nothing from the yield and
                // loses a quarter of its rate to it (`bench sessions`: 234k deltas/s
                // without, 170k with).
                busy = (2..YIELD_BELOW).contains(&messages);
                self.counters.writes.fetch_add(1, Ordering::Relaxed);
                self.counters.frames.fetch_add(frames as u64, Ordering::Relaxed);
                self.counters.messages.fetch_add(messages as u64, Ordering::Relaxed);
                written.map_err(|e| e.to_string())?;
            }
            tokio::select! {
                _ = self.cancel.cancelled() => return Ok(()),
                q = rx.recv() => match q {
                    Some(q) => next = Some(q),
                    None => return Ok(()),
                },
                frame = reader.next() => match frame {
                    Some(Ok(frame)) => self.handle_reply(frame, waiting),
                    Some(Err(e)) => return Err(format!("bad reply from {}: {e}", self.member)),
                    None => return Err("closed by the peer".into()),
                },
            }
        }
    }

    /// Encode `first` and whatever else is queued right now (up to [`WRITE_BUDGET`])
    /// into batch frames, sealed and ready to write. Never waits: when the queue is
    /// empty the batch goes as it is, so a lone message leaves at once.
    fn gather(
        &mut self,
        first: Queued,
        rx: &mut mpsc::Receiver<Queued>,
        out: &mut BatchWriter,
        codec: &mut FrameCodec,
        waiting: &mut Waiting<SendError>,
    ) {
        self.encode(first, out, codec, waiting);
        while out.len() < WRITE_BUDGET {
            match rx.try_recv() {
                Ok(more) => self.encode(more, out, codec, waiting),
                Err(_) => break,
            }
        }
        out.finish(codec);
    }

    /// Encode one queued send into the batch, giving each message the next
    /// sequence number, and wait for the ack of its last one if it asks for one.
    fn encode(
        &mut self,
        queued: Queued,
        out: &mut BatchWriter,
        codec: &mut FrameCodec,
        waiting: &mut Waiting<SendError>,
    ) {
        match queued {
            Queued::Send { messages, ack, reply } => {
                let last = messages.len().saturating_sub(1);
                for (i, m) in messages.iter().enumerate() {
                    self.seq += 1;
                    let header = MessageHeaderRef {
                        id: self.seq,
                        ack: if i == last { ack } else { 0 },
                        topic: &m.topic,
                        headers: &m.headers,
                    };
                    if let Err(e) = out.push(codec, FrameKind::Message, &header, &m.payload) {
                        // Only a message the fragmentation interceptor did not split.
                        if let Some(reply) = reply {
                            let _ = reply.send(Err(SendError::Interceptor(InterceptorError {
                                interceptor: "fragmentation",
                                reason: format!("the message does not fit in a frame: {e}"),
                            })));
                        }
                        return;
                    }
                }
                if let Some(reply) = reply {
                    waiting.push(self.seq, reply);
                }
            }
            Queued::Goodbye(id) => {
                if let Err(e) = out.push(codec, FrameKind::Goodbye, &GoodbyeHeader { id }, &[]) {
                    tracing::debug!(error = %e, "goodbye not written");
                }
            }
        }
    }

    fn handle_reply(&self, frame: Frame, waiting: &mut Waiting<SendError>) {
        let Ok(header) = frame.header::<AckHeader>() else {
            return;
        };
        match frame.kind {
            FrameKind::Ack => {
                let due = waiting.due_through(header.id);
                self.counters.acks.fetch_add(due as u64, Ordering::Relaxed);
                waiting.ack_through(header.id);
            }
            FrameKind::FailAck => {
                waiting.refuse(
                    header.id,
                    SendError::Refused {
                        member: self.member.to_string(),
                        reason: header.reason.unwrap_or_default(),
                    },
                );
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
