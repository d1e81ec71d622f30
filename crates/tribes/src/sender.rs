//! Per-member pooled senders (Tomcat's `PooledParallelSender`).
//!
//! Each member gets `pool_size` connections, each driven by one task that connects
//! lazily, says hello, writes queued batches (coalescing what is queued into one
//! write) and reads the acks that come back on the same socket. A broken
//! connection fails the acks it was waiting for, tells the membership (a strong
//! hint that the member died) and reconnects with exponential backoff.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;

use crate::channel::{Delivery, Inner, SendError, SendMode};
use crate::interceptor::Message;
use crate::member::Member;
use crate::membership::MembershipInput;
use crate::wire::{AckHeader, Frame, FrameKind, MemberHeader, MessageHeader};

type AckResult = Result<(), SendError>;

struct Pending {
    conn: usize,
    tx: oneshot::Sender<AckResult>,
}

/// Frames that go out together, in order, on one connection.
struct Batch {
    frames: Vec<Frame>,
}

#[derive(Debug, Default)]
pub(crate) struct SenderCounters {
    pub(crate) acks: AtomicU64,
    pub(crate) failures: AtomicU64,
    pub(crate) timeouts: AtomicU64,
}

pub(crate) struct MemberSender {
    member: Member,
    inner: Arc<Inner>,
    conns: Vec<mpsc::Sender<Batch>>,
    next_conn: AtomicUsize,
    pending: Arc<Mutex<HashMap<u64, Pending>>>,
    cancel: CancellationToken,
    pub(crate) counters: Arc<SenderCounters>,
}

impl MemberSender {
    pub(crate) fn spawn(inner: Arc<Inner>, member: Member) -> Arc<Self> {
        let cancel = inner.shutdown.child_token();
        let pending = Arc::new(Mutex::new(HashMap::new()));
        let counters = Arc::new(SenderCounters::default());
        let conns = (0..inner.config.pool_size)
            .map(|index| {
                let (tx, rx) = mpsc::channel(inner.config.queue_capacity);
                let conn = Connection {
                    index,
                    member: member.clone(),
                    inner: inner.clone(),
                    pending: pending.clone(),
                    cancel: cancel.clone(),
                    counters: counters.clone(),
                };
                tokio::spawn(conn.run(rx));
                tx
            })
            .collect();
        Arc::new(MemberSender {
            member,
            inner,
            conns,
            next_conn: AtomicUsize::new(0),
            pending,
            cancel,
            counters,
        })
    }

    /// Stop the connections; waiting sends fail.
    pub(crate) fn close(&self) {
        self.cancel.cancel();
        let drained: Vec<Pending> = self
            .pending
            .lock()
            .expect("pending lock")
            .drain()
            .map(|(_, p)| p)
            .collect();
        for p in drained {
            let _ = p.tx.send(Err(SendError::ConnectionLost {
                member: self.member.to_string(),
                reason: "the member left the cluster".into(),
            }));
        }
    }

    pub(crate) fn queue_depth(&self) -> usize {
        self.conns.iter().map(|c| c.max_capacity() - c.capacity()).sum()
    }

    fn pick(&self) -> usize {
        self.next_conn.fetch_add(1, Ordering::Relaxed) % self.conns.len()
    }

    /// Frame the interceptor output and send it; the ack (if any) is for the last frame.
    pub(crate) async fn send(&self, messages: Vec<Message>, mode: SendMode, timeout: Duration) -> Delivery {
        let count = messages.len();
        let mut last_id = 0;
        let frames: Vec<Frame> = messages
            .into_iter()
            .enumerate()
            .map(|(i, m)| {
                let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
                last_id = id;
                let ack = if i + 1 == count { mode.wire() } else { 0 };
                Frame::new(
                    FrameKind::Message,
                    &MessageHeader {
                        id,
                        ack,
                        topic: m.topic,
                        headers: m.headers,
                    },
                    m.payload,
                )
            })
            .collect();
        let conn = self.pick();
        let batch = Batch { frames };
        if mode == SendMode::Async {
            // Returns at once while the queue has room; a full queue (a slow or
            // unreachable member) holds the caller back for at most the ack timeout
            // rather than dropping the message.
            let batch = match self.conns[conn].try_send(batch) {
                Ok(()) => return Delivery::Queued,
                Err(mpsc::error::TrySendError::Closed(_)) => return Delivery::Failed(SendError::ShuttingDown),
                Err(mpsc::error::TrySendError::Full(batch)) => batch,
            };
            return match tokio::time::timeout(timeout, self.conns[conn].send(batch)).await {
                Ok(Ok(())) => Delivery::Queued,
                Ok(Err(_)) => Delivery::Failed(SendError::ShuttingDown),
                Err(_) => {
                    self.counters.failures.fetch_add(1, Ordering::Relaxed);
                    Delivery::Failed(SendError::QueueFull {
                        member: self.member.to_string(),
                        capacity: self.inner.config.queue_capacity,
                        waited: timeout,
                    })
                }
            };
        }
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .expect("pending lock")
            .insert(last_id, Pending { conn, tx });
        let waited = tokio::time::timeout(timeout, async {
            if self.conns[conn].send(batch).await.is_err() {
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
                self.pending.lock().expect("pending lock").remove(&last_id);
                self.counters.timeouts.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(member = %self.member, ?timeout, "no ack within the timeout");
                Delivery::TimedOut(timeout)
            }
        }
    }

    /// Send one control frame (a goodbye), waiting at most `timeout` for it to be queued.
    pub(crate) async fn send_raw(&self, frame: Frame, timeout: Duration) {
        let conn = self.pick();
        let _ = tokio::time::timeout(timeout, self.conns[conn].send(Batch { frames: vec![frame] })).await;
        // Give the connection task a moment to write it.
        let _ = tokio::time::timeout(timeout, async {
            while self.conns[conn].capacity() < self.conns[conn].max_capacity() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
    }
}

struct Connection {
    index: usize,
    member: Member,
    inner: Arc<Inner>,
    pending: Arc<Mutex<HashMap<u64, Pending>>>,
    cancel: CancellationToken,
    counters: Arc<SenderCounters>,
}

impl Connection {
    async fn run(self, mut rx: mpsc::Receiver<Batch>) {
        let min_backoff = Duration::from_millis(50);
        let mut backoff = min_backoff;
        loop {
            let first = tokio::select! {
                _ = self.cancel.cancelled() => return,
                b = rx.recv() => match b { Some(b) => b, None => return },
            };
            let connect =
                tokio::time::timeout(self.inner.config.probe_timeout, TcpStream::connect(self.member.addr)).await;
            let stream = match connect {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    self.fail_batch(
                        &first,
                        SendError::Connect {
                            member: self.member.to_string(),
                            reason: e.to_string(),
                        },
                    );
                    self.lost();
                    self.sleep(&mut backoff).await;
                    continue;
                }
                Err(_) => {
                    self.fail_batch(
                        &first,
                        SendError::Connect {
                            member: self.member.to_string(),
                            reason: "connect timed out".into(),
                        },
                    );
                    self.sleep(&mut backoff).await;
                    continue;
                }
            };
            backoff = min_backoff;
            let _ = stream.set_nodelay(true);
            match self.session(stream, first, &mut rx).await {
                Ok(()) => return,
                Err((reason, unsent)) => {
                    tracing::debug!(member = %self.member, %reason, "replication connection closed");
                    if let Some(b) = &unsent {
                        self.fail_batch(
                            b,
                            SendError::ConnectionLost {
                                member: self.member.to_string(),
                                reason: reason.clone(),
                            },
                        );
                    }
                    self.fail_pending(&reason);
                    self.lost();
                    if self.cancel.is_cancelled() {
                        return;
                    }
                    self.sleep(&mut backoff).await;
                }
            }
        }
    }

    async fn sleep(&self, backoff: &mut Duration) {
        tokio::select! {
            _ = tokio::time::sleep(*backoff) => {}
            _ = self.cancel.cancelled() => {}
        }
        *backoff = (*backoff * 2).min(Duration::from_secs(2));
    }

    fn lost(&self) {
        let _ = self.inner.inputs.send(MembershipInput::ConnectionLost(self.member.id));
    }

    /// One connected session: returns `Ok` on shutdown, or why it ended.
    async fn session(
        &self,
        stream: TcpStream,
        first: Batch,
        rx: &mut mpsc::Receiver<Batch>,
    ) -> Result<(), (String, Option<Batch>)> {
        let (read, write) = stream.into_split();
        let mut reader = FramedRead::new(read, self.inner.codec.clone());
        let mut writer = FramedWrite::new(write, self.inner.codec.clone());
        writer.set_backpressure_boundary(256 * 1024);
        let hello = Frame::new(
            FrameKind::Hello,
            &MemberHeader {
                member: self.inner.local(),
            },
            Default::default(),
        );
        if let Err(e) = writer.feed(hello).await {
            return Err((e.to_string(), Some(first)));
        }
        let mut next = Some(first);
        loop {
            if let Some(batch) = next.take() {
                for frame in batch.frames {
                    if let Err(e) = writer.feed(frame).await {
                        return Err((e.to_string(), None));
                    }
                }
                // Coalesce whatever else is queued into the same write.
                while let Ok(more) = rx.try_recv() {
                    for frame in more.frames {
                        if let Err(e) = writer.feed(frame).await {
                            return Err((e.to_string(), None));
                        }
                    }
                    if writer.write_buffer().len() > 1024 * 1024 {
                        break;
                    }
                }
                if let Err(e) = writer.flush().await {
                    return Err((e.to_string(), None));
                }
            }
            tokio::select! {
                _ = self.cancel.cancelled() => return Ok(()),
                b = rx.recv() => match b {
                    Some(b) => next = Some(b),
                    None => return Ok(()),
                },
                frame = reader.next() => match frame {
                    Some(Ok(frame)) => self.handle_reply(frame),
                    Some(Err(e)) => return Err((format!("bad reply from {}: {e}", self.member), None)),
                    None => return Err(("closed by the peer".into(), None)),
                },
            }
        }
    }

    fn handle_reply(&self, frame: Frame) {
        let Ok(header) = frame.header::<AckHeader>() else {
            return;
        };
        let result = match frame.kind {
            FrameKind::Ack => {
                self.counters.acks.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            FrameKind::FailAck => Err(SendError::Refused {
                member: self.member.to_string(),
                reason: header.reason.unwrap_or_default(),
            }),
            _ => return,
        };
        if let Some(p) = self.pending.lock().expect("pending lock").remove(&header.id) {
            let _ = p.tx.send(result);
        }
    }

    fn fail_batch(&self, batch: &Batch, error: SendError) {
        let mut pending = self.pending.lock().expect("pending lock");
        let mut failed = false;
        for frame in &batch.frames {
            if let Ok(h) = frame.header::<MessageHeader>()
                && let Some(p) = pending.remove(&h.id)
            {
                let _ = p.tx.send(Err(error.clone()));
            }
            failed = true;
        }
        if failed {
            self.counters.failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn fail_pending(&self, reason: &str) {
        let mut pending = self.pending.lock().expect("pending lock");
        let ids: Vec<u64> = pending
            .iter()
            .filter(|(_, p)| p.conn == self.index)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if let Some(p) = pending.remove(&id) {
                let _ = p.tx.send(Err(SendError::ConnectionLost {
                    member: self.member.to_string(),
                    reason: reason.to_string(),
                }));
            }
        }
    }
}
