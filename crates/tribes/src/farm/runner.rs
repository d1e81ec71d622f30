//! The farm's task: polls the directory, takes the members' messages, and schedules
//! per-member retries. Decisions are in [`FarmState`] and [`Retries`]; this moves bytes.

use std::fs::{self, File};
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use super::inbox::Inbox;
use super::retry::{Next, Retries};
use super::sender::{Outcome, hash_file};
use super::state::{Entry, FarmState, Version, valid_name};
use super::{Callback, FarmEvent, FarmMessage, FarmStats, Job};
use crate::channel::Channel;
use crate::member::MemberId;
use crate::membership::MembershipEvent;

pub(crate) struct Runner {
    pub(crate) channel: Channel,
    pub(crate) out: mpsc::UnboundedSender<Job>,
    pub(crate) local: MemberId,
    pub(crate) dir: PathBuf,
    pub(crate) state: FarmState,
    pub(crate) inbox: Inbox,
    pub(crate) on_change: Option<Callback>,
    pub(crate) retries: Retries,
    pub(crate) stats: Arc<Mutex<FarmStats>>,
}

impl Runner {
    pub(crate) async fn run(
        mut self,
        mut listener: crate::listen::Listener,
        mut events: broadcast::Receiver<MembershipEvent>,
        mut outcomes: mpsc::UnboundedReceiver<Outcome>,
        poll: Duration,
        stop: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Members already there when the farm starts: exchange manifests as with new ones.
        let mut greeted = false;
        loop {
            // Far in the future when nothing waits: the branch then never fires.
            let next_retry = self
                .retries
                .next_due()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {
                    self.scan().await;
                    if !greeted {
                        greeted = true;
                        let ids: Vec<MemberId> = self.channel.members().iter().map(|m| m.id()).collect();
                        self.send_manifest(&ids, true);
                    }
                }
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(next_retry)) => self.retry_due(),
                Some(Outcome::Failed { member, name, reason }) = outcomes.recv() => {
                    self.member_failed(member, &name, reason);
                }
                incoming = listener.recv() => {
                    let Some(incoming) = incoming else { break };
                    let from = incoming.from().clone();
                    match rmp_serde::from_slice::<FarmMessage>(incoming.payload()) {
                        Ok(message) => self.handle(from.id(), from.name(), message),
                        Err(e) => tracing::warn!(from = %from, error = %e, "undecodable farm message ignored"),
                    }
                    drop(incoming);
                }
                event = events.recv() => match event {
                    Ok(MembershipEvent::Added(m) | MembershipEvent::Back(m)) => {
                        self.retries.forget_member(m.id());
                        self.sync_retrying(m.name());
                        self.send_manifest(&[m.id()], false);
                    }
                    Ok(MembershipEvent::Disappeared { member, .. }) => {
                        self.inbox.abort(Some(member.id()));
                        self.retries.forget_member(member.id());
                        self.sync_retrying(member.name());
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let ids: Vec<MemberId> = self.channel.members().iter().map(|m| m.id()).collect();
                        self.send_manifest(&ids, true);
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
            }
        }
        self.inbox.abort(None);
    }

    fn emit(&self, event: FarmEvent) {
        if let Some(cb) = &self.on_change {
            cb(event);
        }
    }

    fn stats(&self) -> std::sync::MutexGuard<'_, FarmStats> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn name_of(&self, member: MemberId) -> String {
        self.channel
            .members()
            .iter()
            .find(|m| m.id() == member)
            .map_or_else(|| member.to_string(), |m| m.name().to_owned())
    }

    fn everyone(&self) -> Vec<MemberId> {
        self.channel.members().iter().map(|m| m.id()).collect()
    }

    /// One poll of the directory: hash the files that became stable, publish changes,
    /// and send the deletions of files that are gone.
    async fn scan(&mut self) {
        let listing = match fs::read_dir(&self.dir) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot list the farm directory");
                return;
            }
        };
        let mut seen = Vec::new();
        for item in listing.flatten() {
            let Ok(name) = item.file_name().into_string() else {
                continue;
            };
            if !valid_name(&name) {
                continue;
            }
            let Ok(meta) = item.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            let stamp = (meta.len(), meta.modified().ok());
            seen.push(name.clone());
            if !self.state.observe(&name, stamp) {
                continue;
            }
            let path = item.path();
            let digest = tokio::task::spawn_blocking(move || hash_file(&path)).await;
            let (size, sha256) = match digest {
                Ok(Ok(d)) => d,
                Ok(Err(e)) => {
                    tracing::warn!(file = %name, error = %e, "cannot read a farm file");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(file = %name, error = %e, "hashing a farm file failed");
                    continue;
                }
            };
            if let Some(entry) = self.state.local_content(&name, stamp, size, sha256, self.local) {
                tracing::info!(file = %name, version = entry.version.counter, size, "farm file changed here: publishing");
                self.retries.superseded(&name);
                self.send_file(&self.everyone(), &name, &entry);
                self.stats().published += 1;
                self.emit(FarmEvent::Published {
                    name,
                    version: entry.version.counter,
                });
            }
        }
        let is_seen = |n: &str| seen.iter().any(|s| s == n);
        self.state.retain_observed(&is_seen);
        for (name, tomb) in self.state.local_deletions(&is_seen, self.local) {
            tracing::info!(file = %name, version = tomb.version.counter, "farm file deleted here: deleting it on every member");
            self.retries.superseded(&name);
            self.send(
                &self.everyone(),
                FarmMessage::Deleted {
                    name: name.clone(),
                    entry: tomb.clone(),
                },
            );
            self.stats().unpublished += 1;
            self.emit(FarmEvent::Unpublished {
                name,
                version: tomb.version.counter,
            });
        }
    }

    fn send(&self, to: &[MemberId], message: FarmMessage) {
        if !to.is_empty() {
            let _ = self.out.send(Job::Message(to.to_vec(), message));
        }
    }

    fn send_manifest(&self, to: &[MemberId], reply: bool) {
        let entries = self.state.manifest();
        self.send(to, FarmMessage::Manifest { entries, reply });
    }

    /// Sends the current version of `name` to `to`: the file, or its deletion.
    fn send_file(&self, to: &[MemberId], name: &str, entry: &Entry) {
        if to.is_empty() {
            return;
        }
        if entry.deleted {
            self.send(
                to,
                FarmMessage::Deleted {
                    name: name.to_string(),
                    entry: entry.clone(),
                },
            );
        } else {
            let _ = self.out.send(Job::File(to.to_vec(), name.to_string(), entry.clone()));
        }
    }

    /// The transfer of `name` to `member` failed: retry it for that member alone, later.
    fn member_failed(&mut self, member: MemberId, name: &str, reason: String) {
        let member_name = self.name_of(member);
        let next = self.retries.failed(member, name, Instant::now());
        let (failures, retry_in) = match next {
            Next::RetryIn { failures, delay } => {
                tracing::warn!(member = %member_name, file = %name, failures, retry_in = ?delay, %reason,
                    "farm transfer to a member failed: retrying for that member only");
                (failures, Some(delay))
            }
            Next::GaveUp { failures } => {
                tracing::error!(member = %member_name, file = %name, failures, %reason,
                    "farm transfer to a member failed again: given up until it rejoins or the file changes");
                (failures, None)
            }
        };
        {
            let retrying = self.retries.pending_for(member);
            let mut stats = self.stats();
            let m = stats.members.entry(member_name.clone()).or_default();
            m.failures += 1;
            m.retrying = retrying;
            m.gave_up += u64::from(retry_in.is_none());
            m.last_error = Some(reason.clone());
        }
        self.emit(FarmEvent::MemberFailed {
            name: name.to_string(),
            member: member_name,
            reason,
            failures,
            retry_in,
        });
    }

    fn delivered(&mut self, member: MemberId, name: &str) {
        let was_retrying = self.retries.pending_for(member) > 0;
        self.retries.delivered(member, name);
        if was_retrying {
            let member_name = self.name_of(member);
            let retrying = self.retries.pending_for(member);
            let mut stats = self.stats();
            if let Some(m) = stats.members.get_mut(&member_name) {
                m.recovered += 1;
                m.retrying = retrying;
            }
        }
    }

    /// Refreshes `retrying` of a member whose retries changed wholesale.
    fn sync_retrying(&self, member_name: &str) {
        if let Some(m) = self.stats().members.get_mut(member_name) {
            m.retrying = 0;
        }
    }

    fn retry_due(&mut self) {
        let members = self.everyone();
        for (member, name) in self.retries.take_due(Instant::now()) {
            match self.state.entry(&name).cloned() {
                Some(entry) if members.contains(&member) => {
                    tracing::info!(member = %self.name_of(member), file = %name, "retrying a farm transfer");
                    self.send_file(&[member], &name, &entry);
                }
                _ => self.retries.delivered(member, &name),
            }
        }
    }

    fn handle(&mut self, from: MemberId, from_name: &str, message: FarmMessage) {
        match message {
            FarmMessage::Manifest { entries, reply } => {
                if reply {
                    self.send_manifest(&[from], false);
                }
                for (name, tomb) in self.state.deletions(&entries) {
                    self.delete_here(from, from_name, name, tomb);
                }
                let names = self.state.wanted(&entries);
                if !names.is_empty() {
                    tracing::info!(from = %from_name, files = names.len(), "asking a member for newer farm files");
                    self.send(&[from], FarmMessage::Want { names });
                }
            }
            FarmMessage::Want { names } => {
                for name in names {
                    if let Some(entry) = self.state.entry(&name).cloned() {
                        self.send_file(&[from], &name, &entry);
                    }
                }
            }
            FarmMessage::Deleted { name, entry } => {
                if entry.deleted && valid_name(&name) && self.state.wins(&name, &entry) {
                    self.delete_here(from, from_name, name, entry);
                }
            }
            FarmMessage::Stored { name, version } => {
                if self.state.entry(&name).is_some_and(|e| e.version == version) {
                    self.delivered(from, &name);
                }
            }
            FarmMessage::Failed { name, version, reason } => {
                // Only about the version still current here: an older one is superseded.
                if self.state.entry(&name).is_some_and(|e| e.version == version) {
                    self.member_failed(from, &name, reason);
                }
            }
            FarmMessage::Chunk {
                name,
                entry,
                offset,
                data,
            } => match self
                .inbox
                .chunk(&mut self.state, from, &name, entry.clone(), offset, &data)
            {
                Ok(Some(path)) => {
                    self.send(
                        &[from],
                        FarmMessage::Stored {
                            name: name.clone(),
                            version: entry.version,
                        },
                    );
                    let version = entry.version.counter;
                    tracing::info!(file = %name, from = %from_name, version, "farm file received");
                    self.stats().received += 1;
                    self.emit(FarmEvent::Received {
                        name,
                        path,
                        version,
                        from: from_name.to_string(),
                    });
                }
                Ok(None) if offset == 0 && self.state.entry(&name).is_some_and(|e| e.version == entry.version) => {
                    // Already held (from another member, or an earlier attempt): say so,
                    // or the sender's retry for this node would wait for an answer forever.
                    self.send(
                        &[from],
                        FarmMessage::Stored {
                            name,
                            version: entry.version,
                        },
                    );
                }
                Ok(None) => {}
                Err(reason) => {
                    self.inbox.discard(from, &name);
                    self.reject(from, from_name, name, entry.version, reason);
                }
            },
        }
    }

    /// This node could not take a file from `from`: say so to it (it retries for this
    /// node alone), log and count.
    fn reject(&mut self, from: MemberId, from_name: &str, name: String, version: Version, reason: String) {
        tracing::warn!(file = %name, from = %from_name, %reason, "farm transfer rejected");
        self.stats().rejected += 1;
        self.send(
            &[from],
            FarmMessage::Failed {
                name: name.clone(),
                version,
                reason: format!("{}: {reason}", self.channel.local().name()),
            },
        );
        self.emit(FarmEvent::Rejected {
            name,
            from: from_name.to_string(),
            reason,
        });
    }

    /// Applies a deletion that beats the version held here.
    fn delete_here(&mut self, from: MemberId, from_name: &str, name: String, tomb: Entry) {
        let path = self.dir.join(&name);
        let removed = match fs::remove_file(&path) {
            Ok(()) => File::open(&self.dir).and_then(|d| d.sync_all()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = removed {
            let reason = format!("cannot delete {}: {e}", path.display());
            return self.reject(from, from_name, name, tomb.version, reason);
        }
        let version = tomb.version.counter;
        self.send(
            &[from],
            FarmMessage::Stored {
                name: name.clone(),
                version: tomb.version,
            },
        );
        self.state.accepted(&name, tomb);
        tracing::info!(file = %name, from = %from_name, version, "farm file deleted by a member: deleted here");
        self.stats().deleted += 1;
        self.emit(FarmEvent::Deleted {
            name,
            version,
            from: from_name.to_string(),
        });
    }
}
