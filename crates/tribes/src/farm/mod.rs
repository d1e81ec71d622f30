//! A replicated directory, like Tomcat's `FarmWarDeployer`: files dropped into the
//! watched directory of any member appear, byte for byte, in the directory of every
//! other member.
//! See [`Farm`] for how it watches, sends, writes and converges.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::channel::Channel;
use crate::member::MemberId;
use inbox::Inbox;
use runner::Runner;
use sender::Sender;
use state::{Entry, FarmState, Version};

/// The channel topic the farm uses; every member running a farm listens on it.
pub(crate) const TOPIC: &str = "tribes.farm";

/// The size of one file chunk on the wire.
const CHUNK: usize = 256 * 1024;

/// The prefix of temporary files (hidden, so they are never replicated).
const TEMP_PREFIX: &str = ".tribes-farm-";

/// What the farm members say to each other on [`TOPIC`].
#[derive(Debug, Serialize, Deserialize)]
enum FarmMessage {
    /// The sender's files and versions; with `reply`, send yours back (a farm that
    /// starts after its channel may have missed the manifests peers sent on joining).
    Manifest { entries: Vec<(String, Entry)>, reply: bool },
    /// Send me these files.
    Want { names: Vec<String> },
    /// The file was deleted at this version (a tombstone entry).
    Deleted { name: String, entry: Entry },
    /// The receiver wrote (or deleted) this version of the file: its retries, if any, end.
    Stored { name: String, version: Version },
    /// The receiver could not take this version of the file (it cannot write it): the
    /// sender retries for this member alone.
    Failed {
        name: String,
        version: Version,
        reason: String,
    },
    /// One piece of a file, in order; `offset + data.len() == entry.size` ends it.
    Chunk {
        name: String,
        entry: Entry,
        offset: u64,
        #[serde(with = "serde_bytes_vec")]
        data: Vec<u8>,
    },
}

/// Encode chunk data as a MessagePack binary (not an array of integers).
mod serde_bytes_vec {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(data: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(data)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        serde::de::Deserialize::deserialize(d).map(|b: ByteBuf| b.0)
    }

    struct ByteBuf(Vec<u8>);

    impl<'de> Deserialize<'de> for ByteBuf {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Visit;
            impl serde::de::Visitor<'_> for Visit {
                type Value = ByteBuf;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("bytes")
                }
                fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<ByteBuf, E> {
                    Ok(ByteBuf(v.to_vec()))
                }
                fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<ByteBuf, E> {
                    Ok(ByteBuf(v))
                }
            }
            d.deserialize_byte_buf(Visit)
        }
    }
}

/// What happened to a farm file, for the application's `on_change` callback.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FarmEvent {
    /// A local file changed and was sent to every member.
    Published {
        /// The file name inside the farm directory.
        name: String,
        /// Its new version counter.
        version: u64,
    },
    /// A file from another member was written to the farm directory.
    Received {
        /// The file name inside the farm directory.
        name: String,
        /// Where it is now.
        path: PathBuf,
        /// Its version counter.
        version: u64,
        /// The member that sent it.
        from: String,
    },
    /// A local file was deleted, and the deletion sent to every member.
    Unpublished {
        /// The file name inside the farm directory.
        name: String,
        /// The deletion's version counter.
        version: u64,
    },
    /// Another member deleted a file, and it was deleted here.
    Deleted {
        /// The file name inside the farm directory.
        name: String,
        /// The deletion's version counter.
        version: u64,
        /// The member that sent the deletion.
        from: String,
    },
    /// A member could not take a file; it is retried for that member alone.
    MemberFailed {
        /// The file name inside the farm directory.
        name: String,
        /// The member (its route).
        member: String,
        /// Why, as the member or the channel said.
        reason: String,
        /// Failures of this file to this member so far.
        failures: u32,
        /// When it is tried again; `None`: given up until the member rejoins or the file changes.
        retry_in: Option<Duration>,
    },
    /// A transfer was discarded (bad name, wrong size or digest, disk error); nothing
    /// was made visible.
    Rejected {
        /// The file name as sent.
        name: String,
        /// The member that sent it.
        from: String,
        /// Why.
        reason: String,
    },
}

type Callback = Arc<dyn Fn(FarmEvent) + Send + Sync>;

/// What a [`Farm`] did, from [`Farm::stats`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct FarmStats {
    /// Local changes sent to the members.
    pub published: u64,
    /// Files received from members and written here.
    pub received: u64,
    /// Local deletions sent to the members.
    pub unpublished: u64,
    /// Files deleted here because a member deleted them.
    pub deleted: u64,
    /// Transfers this node refused or could not write.
    pub rejected: u64,
    /// Per member (by route) that failed at least once.
    pub members: BTreeMap<String, FarmMemberStats>,
}

/// One member's failures in [`FarmStats`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct FarmMemberStats {
    /// Transfers to it that failed (each attempt counts).
    pub failures: u64,
    /// Transfers to it delivered after at least one failure.
    pub recovered: u64,
    /// Files waiting for a retry to it now.
    pub retrying: usize,
    /// Files given up on (after 10 failures).
    pub gave_up: u64,
    /// The last failure's cause.
    pub last_error: Option<String>,
}

/// Configures a [`Farm`]; see [`Farm::builder`].
pub struct FarmBuilder {
    channel: Channel,
    dir: PathBuf,
    poll_interval: Duration,
    on_change: Option<Callback>,
}

impl fmt::Debug for FarmBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FarmBuilder")
            .field("dir", &self.dir)
            .field("poll_interval", &self.poll_interval)
            .finish_non_exhaustive()
    }
}

impl FarmBuilder {
    /// Poll the directory every `interval` instead of every second.
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Call `callback` for every [`FarmEvent`] (from the farm's task: keep it short).
    pub fn on_change(mut self, callback: impl Fn(FarmEvent) + Send + Sync + 'static) -> Self {
        self.on_change = Some(Arc::new(callback));
        self
    }

    /// Create the directory if needed, start listening on the farm's topic (`tribes.farm`) and watching
    /// (two tasks on the current Tokio runtime).
    ///
    /// # Errors
    /// The directory cannot be created or is not a directory, no Tokio runtime runs, or
    /// another farm already listens on this channel (a [`ListenError`](crate::ListenError) inside).
    pub fn start(self) -> io::Result<Farm> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| io::Error::other(format!("Farm::start needs a Tokio runtime: {e}")))?;
        fs::create_dir_all(&self.dir)?;
        if !fs::metadata(&self.dir)?.is_dir() {
            return Err(io::Error::other(format!("{} is not a directory", self.dir.display())));
        }
        let stop = CancellationToken::new();
        let listener = self.channel.listen(TOPIC).map_err(io::Error::other)?;
        let events = self.channel.subscribe();
        let (out, jobs) = mpsc::unbounded_channel();
        let (outcomes, outcomes_rx) = mpsc::unbounded_channel();
        let sender = Sender {
            channel: self.channel.clone(),
            dir: self.dir.clone(),
            outcomes,
        };
        runtime.spawn(sender.run(jobs, stop.clone()));
        let stats = Arc::new(Mutex::new(FarmStats::default()));
        let runner = Runner {
            local: self.channel.local().id(),
            channel: self.channel,
            out,
            dir: self.dir.clone(),
            state: FarmState::default(),
            inbox: Inbox::new(self.dir.clone()),
            on_change: self.on_change,
            retries: retry::Retries::default(),
            stats: stats.clone(),
        };
        runtime.spawn(runner.run(listener, events, outcomes_rx, self.poll_interval, stop.clone()));
        Ok(Farm {
            dir: self.dir,
            stats,
            _stop: stop.drop_guard(),
        })
    }
}

/// A running replicated directory, like Tomcat's `FarmWarDeployer`; stops when dropped.
///
/// - **Watching**: the directory is polled every `poll_interval` (default 1 s; simple
///   and portable, no platform file-notification API). A file is *stable* when its
///   size and modification time did not change between two polls; only stable files
///   are sent, so a copy in progress is never replicated half-written.
/// - **Sending**: each file goes to every member on topic `tribes.farm` in chunks of
///   256 KiB, sync-acked, with the SHA-256 of the whole file (SHA-256 from the
///   RustCrypto `sha2` crate: a well-kept, widely reviewed crate, and a digest that
///   catches corruption and mix-ups that a CRC would let through with crafted input).
/// - **Writing**: a receiver writes the chunks to a hidden temporary file in the same
///   directory, checks the size and SHA-256, fsyncs it, renames it over the target and
///   fsyncs the directory. A partial or corrupt transfer is never visible.
/// - **Conflicts**: every file has a version `(counter, member id)`. A local change
///   takes the next counter; the highest `(counter, member id)` wins everywhere, so
///   concurrent writers converge on one version (last writer wins).
/// - **Joining**: when a member is added (or comes back), both sides send each other
///   their manifest (name → version and digest) and ask for the files whose version
///   beats their own.
/// - **Deleting**: a file deleted from one member's directory is deleted on every
///   member. The deletion is a version too (a tombstone, kept), so a member that was away
///   and still holds the old file deletes it when it rejoins instead of sending it back,
///   and a file put back later (a newer version) is replicated again.
/// - **Failures, per member**: a member that does not ack a chunk, or answers that it
///   could not write the file (disk full, directory gone), leaves that transfer alone;
///   the other members get the file at once. It is retried for that member after 0.5 s,
///   1 s, 2 s … (at most 30 s apart, 10 times); each failure is logged naming the member
///   and the cause, and counted in [`Farm::stats`].
/// - **Names**: a flat directory. Only regular files whose names are valid are
///   replicated: no `/`, `\`, NUL or control characters, not `.` or `..`, no leading
///   `.` (hidden files and this module's temporary files are never sent), at most 255
///   bytes. Received names are checked the same way before anything touches the disk.
///
/// ```no_run
/// # async fn demo(channel: tribes::Channel) -> std::io::Result<()> {
/// let farm = tribes::Farm::builder(channel, "/var/lib/app/farm")
///     .on_change(|event| println!("farm: {event:?}"))
///     .start()?;
/// // Files copied into /var/lib/app/farm now appear on every member.
/// # drop(farm); Ok(()) }
/// ```
pub struct Farm {
    dir: PathBuf,
    stats: Arc<Mutex<FarmStats>>,
    _stop: DropGuard,
}

impl fmt::Debug for Farm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Farm").field("dir", &self.dir).finish_non_exhaustive()
    }
}

impl Farm {
    /// A farm for `dir`, replicated over `channel` (listen and watch start with
    /// [`FarmBuilder::start`]).
    pub fn builder(channel: Channel, dir: impl Into<PathBuf>) -> FarmBuilder {
        FarmBuilder {
            channel,
            dir: dir.into(),
            poll_interval: Duration::from_secs(1),
            on_change: None,
        }
    }

    /// The watched directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What the farm did so far, and which members fail.
    pub fn stats(&self) -> FarmStats {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Work for the sender task. Sends are sync-acked, so they run apart from the task
/// that receives: two farms sending to each other at once never wait on each other.
#[derive(Debug)]
enum Job {
    Message(Vec<MemberId>, FarmMessage),
    File(Vec<MemberId>, String, Entry),
}

mod inbox;
mod retry;
mod runner;
mod sender;
mod state;
#[cfg(test)]
mod tests;
