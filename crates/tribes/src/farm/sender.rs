//! The sending side: messages and files, chunk by chunk, sync-acked.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use sha2::{Digest, Sha256};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::state::Entry;
use super::{CHUNK, FarmMessage, Job, TOPIC};
use crate::channel::Channel;
use crate::member::MemberId;
use crate::send::{SendMode, SendOptions};

/// What became of a file sent to one member, for the runner's retries. (A member that
/// acked every chunk may still fail to write the file: it says so itself, with
/// `FarmMessage::Failed`, and confirms a stored file with `FarmMessage::Stored`.)
#[derive(Debug)]
pub(crate) enum Outcome {
    /// `member` did not ack a chunk: the transfer to it stopped there (the others went on).
    Failed {
        member: MemberId,
        name: String,
        reason: String,
    },
}

/// The task that sends: messages and files, in the order they were queued.
pub(crate) struct Sender {
    pub(crate) channel: Channel,
    pub(crate) dir: PathBuf,
    pub(crate) outcomes: mpsc::UnboundedSender<Outcome>,
}

impl Sender {
    pub(crate) async fn run(self, mut jobs: mpsc::UnboundedReceiver<Job>, stop: CancellationToken) {
        loop {
            let job = tokio::select! {
                _ = stop.cancelled() => return,
                job = jobs.recv() => match job {
                    Some(job) => job,
                    None => return,
                },
            };
            match job {
                Job::Message(to, message) => {
                    self.send(&to, &message).await;
                }
                Job::File(to, name, entry) => self.send_file(&to, &name, &entry).await,
            }
        }
    }

    async fn send(&self, to: &[MemberId], message: &FarmMessage) -> bool {
        if to.is_empty() {
            return true;
        }
        let payload = match rmp_serde::to_vec_named(message) {
            Ok(p) => Bytes::from(p),
            Err(e) => {
                tracing::error!(error = %e, "cannot encode a farm message");
                return false;
            }
        };
        let report = self
            .channel
            .send(to, TOPIC, payload, SendOptions::mode(SendMode::SyncAck))
            .await;
        if !report.all_ok() {
            tracing::warn!(?report, "farm message not delivered to every member");
        }
        report.all_ok()
    }

    /// Send the current content of `name` in chunks to every member of `to` together. A
    /// member that does not ack a chunk leaves the transfer (reported as
    /// [`Outcome::Failed`], to be retried for it alone); the others get the rest. The file
    /// is re-hashed while it is read; if it changed meanwhile the receivers reject the
    /// transfer and the next poll publishes the new content.
    async fn send_file(&self, to: &[MemberId], name: &str, entry: &Entry) {
        let mut targets = to.to_vec();
        if targets.is_empty() {
            return;
        }
        let fail_all = |targets: &[MemberId], reason: String| {
            for member in targets {
                let _ = self.outcomes.send(Outcome::Failed {
                    member: *member,
                    name: name.to_string(),
                    reason: reason.clone(),
                });
            }
        };
        let path = self.dir.join(name);
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                // Deleted or replaced since: the next poll publishes what is there now.
                tracing::debug!(file = %name, error = %e, "cannot open a farm file to send it");
                return;
            }
        };
        let mut offset = 0u64;
        loop {
            // Never more than announced: a file that grew since it was hashed is sent
            // as announced and fails the digest check, to be republished by the next poll.
            let want = usize::try_from(entry.size.saturating_sub(offset)).map_or(CHUNK, |left| left.min(CHUNK));
            let mut data = vec![0u8; want];
            let read = match read_full(&mut file, &mut data) {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(file = %name, error = %e, "cannot read a farm file to send it");
                    return;
                }
            };
            data.truncate(read);
            let last = offset + read as u64 >= entry.size || read == 0;
            let message = FarmMessage::Chunk {
                name: name.to_string(),
                entry: entry.clone(),
                offset,
                data,
            };
            let payload = match rmp_serde::to_vec_named(&message) {
                Ok(p) => Bytes::from(p),
                Err(e) => {
                    tracing::error!(error = %e, "cannot encode a farm message");
                    return fail_all(&targets, format!("cannot encode: {e}"));
                }
            };
            let report = self
                .channel
                .send(&targets, TOPIC, payload, SendOptions::mode(SendMode::SyncAck))
                .await;
            targets.retain(|member| match report.get(*member) {
                Some(d) if d.is_ok() => true,
                other => {
                    let reason = match other {
                        Some(d) => format!("chunk at offset {offset} not acked: {d}"),
                        None => format!("chunk at offset {offset} not sent"),
                    };
                    let _ = self.outcomes.send(Outcome::Failed {
                        member: *member,
                        name: name.to_string(),
                        reason,
                    });
                    false
                }
            });
            if targets.is_empty() {
                return;
            }
            offset += read as u64;
            if last {
                return;
            }
        }
    }
}

fn read_full(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

pub(crate) fn hash_file(path: &Path) -> io::Result<(u64, [u8; 32])> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = read_full(&mut file, &mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, hasher.finalize().into()))
}
