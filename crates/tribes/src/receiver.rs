//! The TCP receiver (Tomcat's `NioReceiver`): accepts connections, reads frames,
//! runs them up the interceptor stack, hands them to listeners and sends acks.
//!
//! A connection that sends garbage (bad magic, unknown kind or version, a frame
//! over the limit, a header that does not decode, a message before its hello) is
//! closed with an error naming the peer and the cause, and counted; every other
//! connection goes on.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::channel::{AckHandle, Inner};
use crate::interceptor::Message;
use crate::member::Member;
use crate::membership::MembershipInput;
use crate::wire::{AckHeader, Frame, FrameKind, GoodbyeHeader, MemberHeader, MessageHeader, WireError};

pub(crate) async fn accept_loop(inner: Arc<Inner>, listener: TcpListener) {
    loop {
        let accepted = tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve_connection(inner.clone(), stream, peer));
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
}

async fn serve_connection(inner: Arc<Inner>, stream: TcpStream, peer: SocketAddr) {
    let (read, write) = stream.into_split();
    let mut reader = FramedRead::new(read, inner.codec.clone());
    let (reply_tx, mut reply_rx) = mpsc::unbounded_channel::<Frame>();
    let codec = inner.codec.clone();
    let cancel = inner.shutdown.clone();
    let writer = tokio::spawn(async move {
        let mut writer = FramedWrite::new(write, codec);
        loop {
            let frame = tokio::select! {
                _ = cancel.cancelled() => return,
                f = reply_rx.recv() => match f { Some(f) => f, None => return },
            };
            if writer.feed(frame).await.is_err() {
                return;
            }
            while let Ok(more) = reply_rx.try_recv() {
                if writer.feed(more).await.is_err() {
                    return;
                }
            }
            if writer.flush().await.is_err() {
                return;
            }
        }
    });
    let mut from: Option<Member> = None;
    let result = loop {
        let frame = tokio::select! {
            _ = inner.shutdown.cancelled() => break Ok(()),
            f = reader.next() => f,
        };
        let frame = match frame {
            None => break Ok(()),
            Some(Err(e)) => break Err(ConnectionError::from(e)),
            Some(Ok(frame)) => frame,
        };
        if let Err(e) = handle_frame(&inner, frame, &mut from, &reply_tx).await {
            break Err(e);
        }
    };
    match result {
        Ok(()) => {
            if let Some(m) = &from
                && !inner.shutdown.is_cancelled()
            {
                // The sender's side closed: a strong hint that it died. Verify.
                let _ = inner.inputs.send(MembershipInput::ConnectionLost(m.id));
            }
        }
        Err(e) => {
            let is_io = matches!(e, ConnectionError::Wire(WireError::Io(_)));
            if is_io {
                tracing::debug!(%peer, error = %e, "connection closed");
            } else {
                inner.counters.malformed.fetch_add(1, Ordering::Relaxed);
                inner.refused.record(peer.to_string(), e.to_string());
                tracing::warn!(%peer, member = from.as_ref().map(|m| m.name.as_str()), error = %e,
                    "closing replication connection from {peer}: {e}");
            }
            if let Some(m) = &from {
                let _ = inner.inputs.send(MembershipInput::ConnectionLost(m.id));
            }
        }
    }
    drop(reply_tx);
    let _ = writer.await;
}

async fn handle_frame(
    inner: &Arc<Inner>,
    frame: Frame,
    from: &mut Option<Member>,
    reply: &mpsc::UnboundedSender<Frame>,
) -> Result<(), ConnectionError> {
    match frame.kind {
        FrameKind::Hello if from.is_none() => {
            let MemberHeader { member } = frame.header()?;
            // The messages that follow are delivered only once the membership lists
            // their sender: a listener may answer at once (a state transfer streams
            // the sessions back), and a send to a member not listed yet would fail.
            let (listed, wait) = oneshot::channel();
            let _ = inner.inputs.send(MembershipInput::HeardThen(member.clone(), listed));
            let _ = wait.await;
            *from = Some(member);
        }
        FrameKind::Hello | FrameKind::Heartbeat => {
            let MemberHeader { member } = frame.header()?;
            let _ = inner.inputs.send(MembershipInput::Heard(member.clone()));
            *from = Some(member);
        }
        FrameKind::Ping => {
            let MemberHeader { member } = frame.header()?;
            let _ = inner.inputs.send(MembershipInput::Heard(member));
            let pong = Frame::new(
                FrameKind::Pong,
                &MemberHeader { member: inner.local() },
                Default::default(),
            );
            let _ = reply.send(pong);
        }
        FrameKind::Goodbye => {
            let GoodbyeHeader { id } = frame.header()?;
            let _ = inner.inputs.send(MembershipInput::Goodbye(id));
            *from = None;
        }
        FrameKind::Message => {
            let header: MessageHeader = frame.header()?;
            let Some(sender) = from.as_ref() else {
                return Err(ConnectionError::MessageBeforeHello);
            };
            let ack = match header.ack {
                0 => None,
                1 => {
                    // use-ack: the bytes are here.
                    let _ = reply.send(Frame::new(
                        FrameKind::Ack,
                        &AckHeader {
                            id: header.id,
                            reason: None,
                        },
                        Default::default(),
                    ));
                    None
                }
                _ => Some(AckHandle {
                    id: header.id,
                    reply: reply.clone(),
                    done: false,
                }),
            };
            let message = Message {
                topic: header.topic,
                payload: frame.payload,
                headers: header.headers,
                ack,
            };
            match inner.stack.incoming(sender, message) {
                Ok(messages) => {
                    for m in messages {
                        inner.deliver(sender, m).await;
                    }
                }
                Err(e) => {
                    tracing::warn!(member = %sender, error = %e, "incoming message refused");
                    inner.counters.undeliverable.fetch_add(1, Ordering::Relaxed);
                    if header.ack >= 2 {
                        let _ = reply.send(Frame::new(
                            FrameKind::FailAck,
                            &AckHeader {
                                id: header.id,
                                reason: Some(e.to_string()),
                            },
                            Default::default(),
                        ));
                    }
                }
            }
        }
        FrameKind::Ack | FrameKind::FailAck | FrameKind::Pong => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use tokio_util::codec::Framed;

    use super::*;
    use crate::seal::Sealer;
    use crate::wire::{DEFAULT_MAX_FRAME_LEN, FrameCodec};
    use crate::{Channel, Keyring, MemberId};

    /// The first message of a connection from a sender never heard before (no ping,
    /// no heartbeat) reaches its listener only once the membership lists the sender,
    /// so that the listener can answer it at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_sender_of_a_new_connection_is_a_member_before_its_messages_are_delivered() {
        let key = Keyring::new(1, [7; 32]);
        let b = Channel::builder("b")
            .cluster_key(key.clone())
            .bind("127.0.0.1:0".parse().unwrap())
            .start()
            .await
            .unwrap();
        let mut inbox = b.listen("t");
        let codec = FrameCodec::sealed(DEFAULT_MAX_FRAME_LEN, Arc::new(Sealer::new(key)));
        for i in 0..20 {
            let a = Member::new(
                MemberId::random(&mut rand::rng()),
                format!("a{i}"),
                "default",
                ([127, 0, 0, 1], 10_000 + i).into(),
                0,
            );
            let stream = TcpStream::connect(b.local().addr()).await.unwrap();
            let mut framed = Framed::new(stream, codec.clone());
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
}
