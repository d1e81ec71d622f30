//! Cumulative acks, both ends of one connection.
//!
//! Every message a sender writes on a connection gets the next sequence number of
//! that connection. The receiver answers with one ack frame naming a sequence
//! number: every message up to it has arrived, and every one that asked for a
//! sync-ack has been processed (its [`crate::Incoming`] dropped). A message whose
//! processing failed ([`crate::Incoming::fail`], an interceptor refusing it, no
//! listener) gets a fail-ack of its own, written before any ack that covers it.
//!
//! - [`Waiting`] (sender): the sends waiting for an ack, by sequence number.
//! - [`AckState`] (receiver): what has arrived and what is still being processed;
//!   an [`AckHandle`] in each sync-ack message releases its sequence number when
//!   dropped. Whoever finishes a message (usually the listener's task) writes what
//!   is owed at once through the connection's [`Flush`] when the socket takes it
//!   without waiting; otherwise the connection's writer wakes on
//!   [`AckState::changed`] and writes the fail-acks and one ack for everything
//!   acknowledged since.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use tokio::sync::{Notify, oneshot};

/// Sender side: the sends waiting on one connection, oldest first.
#[derive(Debug)]
pub(crate) struct Waiting<E> {
    queue: VecDeque<(u64, oneshot::Sender<Result<(), E>>)>,
}

impl<E> Default for Waiting<E> {
    fn default() -> Self {
        Waiting { queue: VecDeque::new() }
    }
}

impl<E: Clone> Waiting<E> {
    /// Wait for the ack of `seq` (higher than every one pushed before).
    pub(crate) fn push(&mut self, seq: u64, tx: oneshot::Sender<Result<(), E>>) {
        // Sends that gave up (timed out) at the front need no answer.
        while self.queue.front().is_some_and(|(_, tx)| tx.is_closed()) {
            self.queue.pop_front();
        }
        debug_assert!(self.queue.back().is_none_or(|(s, _)| *s < seq));
        self.queue.push_back((seq, tx));
    }

    /// How many waiting sends an ack of `seq` answers (count them before waking them,
    /// so a woken sender reads counters that include its own ack).
    pub(crate) fn due_through(&self, seq: u64) -> usize {
        self.queue.iter().take_while(|(s, _)| *s <= seq).count()
    }

    /// A cumulative ack: every send up to `seq` is done. Returns how many.
    pub(crate) fn ack_through(&mut self, seq: u64) -> usize {
        let mut n = 0;
        while self.queue.front().is_some_and(|(s, _)| *s <= seq) {
            let (_, tx) = self.queue.pop_front().expect("front exists");
            let _ = tx.send(Ok(()));
            n += 1;
        }
        n
    }

    /// A fail-ack: the send of `seq` (only) failed.
    pub(crate) fn refuse(&mut self, seq: u64, error: E) -> bool {
        match self.queue.iter().position(|(s, _)| *s == seq) {
            Some(at) => {
                let (_, tx) = self.queue.remove(at).expect("position exists");
                let _ = tx.send(Err(error));
                true
            }
            None => false,
        }
    }

    /// The connection is gone: every waiting send fails.
    pub(crate) fn fail_all(&mut self, error: &E) {
        for (_, tx) in self.queue.drain(..) {
            let _ = tx.send(Err(error.clone()));
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }
}

/// Writes what is owed to a sender right away, without waiting (a non-blocking
/// write); returns `false` when it could not (the writer task then finishes).
pub(crate) trait Flush: Send + Sync {
    fn flush_now(&self, acks: &AckState) -> bool;
}

/// Receiver side: the ack state of one connection, shared by its reader, its
/// writer and the [`AckHandle`]s of the messages in flight.
#[derive(Default)]
pub(crate) struct AckState {
    state: Mutex<State>,
    changed: Notify,
    flush: OnceLock<Weak<dyn Flush>>,
}

impl std::fmt::Debug for AckState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AckState").field("state", &self.state).finish()
    }
}

#[derive(Debug, Default)]
struct State {
    /// The highest sequence number that arrived.
    seen: u64,
    /// Sync-ack messages not processed yet, and how many holds each has left
    /// (its handle, and the receiver until the interceptors have passed it on).
    open: BTreeMap<u64, u8>,
    /// The last sequence number acked.
    acked: u64,
    /// A message that wants an ack arrived or finished since the last ack.
    due: bool,
    /// Fail-acks to write, in order.
    fails: Vec<(u64, String)>,
}

impl State {
    fn watermark(&self) -> u64 {
        match self.open.first_key_value() {
            Some((first, _)) => first - 1,
            None => self.seen,
        }
    }
}

/// What the writer owes the sender: fail-acks first, then one cumulative ack.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Owed {
    pub(crate) fails: Vec<(u64, String)>,
    pub(crate) ack: Option<u64>,
}

impl AckState {
    /// Write owed acks through `flush` where possible (the connection keeps it alive).
    pub(crate) fn set_flush(&self, flush: Weak<dyn Flush>) {
        let _ = self.flush.set(flush);
    }

    /// Something is owed: write it now if the socket takes it, else wake the writer.
    fn wake(&self) {
        if let Some(flush) = self.flush.get().and_then(Weak::upgrade)
            && flush.flush_now(self)
        {
            return;
        }
        self.changed.notify_one();
    }

    /// A message arrived with this sequence number and ack mode (0 none, 1 on
    /// receipt, 2 after processing). Sequence numbers arrive in increasing order.
    /// For a sync-ack message, returns the handle that travels with it; the
    /// receiver holds the number too until [`AckState::passed`] or [`AckState::fail`].
    pub(crate) fn arrived(self: &Arc<Self>, seq: u64, ack: u8) -> Option<AckHandle> {
        let mut s = self.state.lock().expect("ack lock");
        s.seen = s.seen.max(seq);
        match ack {
            0 => None,
            1 => {
                s.due = true;
                drop(s);
                self.wake();
                None
            }
            _ => {
                s.open.insert(seq, 2);
                Some(AckHandle {
                    seq,
                    state: self.clone(),
                    done: false,
                })
            }
        }
    }

    /// The receiver's hold on `seq` ends: the interceptors passed the message on.
    pub(crate) fn passed(&self, seq: u64) {
        self.release(seq);
    }

    fn release(&self, seq: u64) {
        let mut s = self.state.lock().expect("ack lock");
        let Some(holds) = s.open.get_mut(&seq) else { return };
        *holds -= 1;
        if *holds == 0 {
            s.open.remove(&seq);
            s.due = true;
            let advanced = s.watermark() > s.acked;
            drop(s);
            if advanced {
                self.wake();
            }
        }
    }

    /// Processing of `seq` failed: a fail-ack with `reason`, before any ack covering it.
    pub(crate) fn fail(&self, seq: u64, reason: String) {
        let mut s = self.state.lock().expect("ack lock");
        if s.open.remove(&seq).is_none() {
            return;
        }
        s.fails.push((seq, reason));
        s.due = true;
        drop(s);
        self.wake();
    }

    /// Resolves when there may be something to write.
    pub(crate) async fn changed(&self) {
        self.changed.notified().await;
    }

    /// Take what is owed to the sender now.
    pub(crate) fn owed(&self) -> Owed {
        let mut s = self.state.lock().expect("ack lock");
        let fails = std::mem::take(&mut s.fails);
        let mark = s.watermark();
        let ack = (s.due && mark > s.acked).then_some(mark);
        if let Some(mark) = ack {
            s.acked = mark;
            s.due = false;
        }
        Owed { fails, ack }
    }
}

/// Travels with a sync-ack message through the interceptors to its listener;
/// dropping it says the message was processed.
#[derive(Debug)]
pub(crate) struct AckHandle {
    seq: u64,
    state: Arc<AckState>,
    done: bool,
}

impl AckHandle {
    /// Processing failed: the sender gets a fail-ack with `reason`.
    pub(crate) fn fail(mut self, reason: String) {
        self.done = true;
        self.state.fail(self.seq, reason);
    }
}

impl Drop for AckHandle {
    fn drop(&mut self) {
        if !self.done {
            self.state.release(self.seq);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_cumulative_ack_covers_everything_processed_in_order() {
        let state = Arc::new(AckState::default());
        assert!(state.arrived(1, 0).is_none());
        let h2 = state.arrived(2, 2).unwrap();
        let h3 = state.arrived(3, 2).unwrap();
        assert!(state.arrived(4, 0).is_none());
        for seq in [2, 3] {
            state.passed(seq);
        }
        // Nothing that asked for an ack is done: nothing owed.
        assert_eq!(state.owed(), Owed::default());
        // 3 is processed before 2: the ack stops short of 2, which holds it back.
        drop(h3);
        assert_eq!(
            state.owed(),
            Owed {
                fails: vec![],
                ack: Some(1)
            }
        );
        drop(h2);
        assert_eq!(
            state.owed(),
            Owed {
                fails: vec![],
                ack: Some(4)
            }
        );
        assert_eq!(state.owed(), Owed::default(), "acked once");
    }

    #[test]
    fn a_failed_message_is_refused_alone_and_before_the_ack_that_covers_it() {
        let state = Arc::new(AckState::default());
        let h1 = state.arrived(1, 2).unwrap();
        let h2 = state.arrived(2, 2).unwrap();
        let h3 = state.arrived(3, 2).unwrap();
        for seq in [1, 2, 3] {
            state.passed(seq);
        }
        drop(h1);
        h2.fail("bad delta".into());
        drop(h3);
        let owed = state.owed();
        assert_eq!(owed.fails, vec![(2, "bad delta".to_string())]);
        assert_eq!(owed.ack, Some(3));

        // On the sender: the ack of 3 resolves 1 and 3, the fail-ack only 2.
        let mut waiting = Waiting::<String>::default();
        let mut rx = Vec::new();
        for seq in [1, 2, 3] {
            let (tx, r) = oneshot::channel();
            waiting.push(seq, tx);
            rx.push(r);
        }
        for (seq, reason) in owed.fails {
            assert!(waiting.refuse(seq, reason));
        }
        assert_eq!(waiting.ack_through(owed.ack.unwrap()), 2);
        let got: Vec<_> = rx.into_iter().map(|mut r| r.try_recv().unwrap()).collect();
        assert_eq!(got, vec![Ok(()), Err("bad delta".to_string()), Ok(())]);
    }

    /// An interceptor refusing a sync-ack message drops its handle on the way: the
    /// receiver's own hold keeps the ack back until the refusal is recorded.
    #[test]
    fn a_refusal_by_the_interceptors_is_not_overtaken_by_an_ack() {
        let state = Arc::new(AckState::default());
        let handle = state.arrived(1, 2).unwrap();
        drop(handle);
        assert_eq!(state.owed(), Owed::default());
        state.fail(1, "refused".into());
        let owed = state.owed();
        assert_eq!(owed.fails, vec![(1, "refused".to_string())]);
        assert_eq!(owed.ack, Some(1));
    }

    #[test]
    fn use_ack_is_owed_on_arrival_and_a_lost_connection_fails_every_waiter() {
        let state = Arc::new(AckState::default());
        assert!(state.arrived(5, 1).is_none());
        assert_eq!(state.owed().ack, Some(5));
        let mut waiting = Waiting::<&'static str>::default();
        let (tx, mut rx) = oneshot::channel();
        waiting.push(6, tx);
        assert_eq!(waiting.ack_through(5), 0);
        waiting.fail_all(&"lost");
        assert_eq!(rx.try_recv().unwrap(), Err("lost"));
        assert_eq!(waiting.len(), 0);
    }
}
