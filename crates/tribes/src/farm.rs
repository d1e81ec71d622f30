//! A replicated directory, like Tomcat's `FarmWarDeployer`: files dropped into the
//! watched directory of any member appear, byte for byte, in the directory of every
//! other member.
//!
//! - **Watching**: the directory is polled every `poll_interval` (default 1 s; simple
//!   and portable, no platform file-notification API). A file is *stable* when its
//!   size and modification time did not change between two polls; only stable files
//!   are sent, so a copy in progress is never replicated half-written.
//! - **Sending**: each file goes to every member on topic [`TOPIC`] in chunks of
//!   256 KiB, sync-acked, with the SHA-256 of the whole file (SHA-256 from the
//!   RustCrypto `sha2` crate: a well-kept, widely reviewed crate, and a digest that
//!   catches corruption and mix-ups that a CRC would let through with crafted input).
//! - **Writing**: a receiver writes the chunks to a hidden temporary file in the same
//!   directory, checks the size and SHA-256, fsyncs it, renames it over the target and
//!   fsyncs the directory. A partial or corrupt transfer is never visible.
//! - **Conflicts**: every file has a version `(counter, member id)`. A local change
//!   takes the next counter; the highest `(counter, member id)` wins everywhere, so
//!   concurrent writers converge on one version (last writer wins).
//! - **Joining**: when a member is added (or comes back), both sides send each other
//!   their manifest (name → version and digest) and ask for the files whose version
//!   beats their own.
//! - **Names**: a flat directory. Only regular files whose names are valid are
//!   replicated: no `/`, `\`, NUL or control characters, not `.` or `..`, no leading
//!   `.` (hidden files and this module's temporary files are never sent), at most 255
//!   bytes. Received names are checked the same way before anything touches the disk.
//!
//! Deleting a file is not replicated (Tomcat's farm undeploys; here a removed file is
//! only forgotten locally until it reappears).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::channel::Channel;
use crate::member::MemberId;
use crate::membership::MembershipEvent;
use crate::send::{SendMode, SendOptions};

/// The channel topic the farm uses; every member running a farm listens on it.
pub const TOPIC: &str = "tribes.farm";

/// The size of one file chunk on the wire.
const CHUNK: usize = 256 * 1024;

/// The prefix of temporary files (hidden, so they are never replicated).
const TEMP_PREFIX: &str = ".tribes-farm-";

/// A file's version: a counter, then the id of the member that wrote it. The
/// greater version wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct Version {
    pub(crate) counter: u64,
    pub(crate) origin: MemberId,
}

/// What the farm knows of one file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Entry {
    pub(crate) version: Version,
    pub(crate) size: u64,
    pub(crate) sha256: [u8; 32],
}

/// A file's size and modification time, as seen by one poll.
pub(crate) type Stamp = (u64, Option<SystemTime>);

/// The farm's decisions, with no IO: which version of each file is current, when a
/// local file is stable and changed, which versions to accept and which files to ask
/// a peer for.
#[derive(Debug, Default)]
pub(crate) struct FarmState {
    entries: BTreeMap<String, Entry>,
    /// The stamp seen by the previous poll, per file.
    observed: HashMap<String, Stamp>,
    /// The stamp of the content last hashed (or written by this module), per file.
    settled: HashMap<String, Stamp>,
}

impl FarmState {
    /// A poll saw `name` with `stamp`. True when the file is stable (same stamp as the
    /// previous poll) and its content has not been looked at with this stamp: the
    /// caller then hashes it and calls [`FarmState::local_content`].
    pub(crate) fn observe(&mut self, name: &str, stamp: Stamp) -> bool {
        let stable = self.observed.insert(name.to_string(), stamp) == Some(stamp);
        stable && self.settled.get(name) != Some(&stamp)
    }

    /// Files that the last poll no longer saw are forgotten by the stability tracker.
    pub(crate) fn retain_observed(&mut self, seen: &dyn Fn(&str) -> bool) {
        self.observed.retain(|name, _| seen(name));
        self.settled.retain(|name, _| seen(name));
    }

    /// A stable local file has this content. Returns the entry to publish when the
    /// content is new (a local change), `None` when it is the current version already
    /// (for instance a file this farm just received).
    pub(crate) fn local_content(
        &mut self,
        name: &str,
        stamp: Stamp,
        size: u64,
        sha256: [u8; 32],
        local: MemberId,
    ) -> Option<Entry> {
        self.settled.insert(name.to_string(), stamp);
        let counter = match self.entries.get(name) {
            Some(current) if current.sha256 == sha256 && current.size == size => return None,
            Some(current) => current.version.counter + 1,
            None => 1,
        };
        let entry = Entry {
            version: Version { counter, origin: local },
            size,
            sha256,
        };
        self.entries.insert(name.to_string(), entry.clone());
        Some(entry)
    }

    /// Whether a peer's version of `name` beats ours (and should be written here).
    pub(crate) fn wins(&self, name: &str, entry: &Entry) -> bool {
        self.entries
            .get(name)
            .is_none_or(|current| entry.version > current.version)
    }

    /// A received file was written to disk: it is now the current version.
    pub(crate) fn accepted(&mut self, name: &str, entry: Entry) {
        self.entries.insert(name.to_string(), entry);
    }

    /// Name → entry of every file known here.
    pub(crate) fn manifest(&self) -> Vec<(String, Entry)> {
        self.entries.iter().map(|(n, e)| (n.clone(), e.clone())).collect()
    }

    /// The names in a peer's manifest whose versions beat ours.
    pub(crate) fn wanted(&self, manifest: &[(String, Entry)]) -> Vec<String> {
        manifest
            .iter()
            .filter(|(name, entry)| valid_name(name) && self.wins(name, entry))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// The current entry for `name`.
    pub(crate) fn entry(&self, name: &str) -> Option<&Entry> {
        self.entries.get(name)
    }
}

/// Whether `name` may be replicated: one path component, not hidden, printable.
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && !name.chars().any(|c| c == '/' || c == '\\' || c.is_control())
}

/// What the farm members say to each other on [`TOPIC`].
#[derive(Debug, Serialize, Deserialize)]
enum FarmMessage {
    /// The sender's files and versions; with `reply`, send yours back (a farm that
    /// starts after its channel may have missed the manifests peers sent on joining).
    Manifest { entries: Vec<(String, Entry)>, reply: bool },
    /// Send me these files.
    Want { names: Vec<String> },
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
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Call `callback` for every [`FarmEvent`] (from the farm's task: keep it short).
    pub fn on_change(mut self, callback: impl Fn(FarmEvent) + Send + Sync + 'static) -> Self {
        self.on_change = Some(Arc::new(callback));
        self
    }

    /// Create the directory if needed, start listening on [`TOPIC`] and watching
    /// (two tasks on the current Tokio runtime).
    ///
    /// # Errors
    /// The directory cannot be created or is not a directory, or no Tokio runtime runs.
    pub fn start(self) -> io::Result<Farm> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| io::Error::other(format!("Farm::start needs a Tokio runtime: {e}")))?;
        fs::create_dir_all(&self.dir)?;
        if !fs::metadata(&self.dir)?.is_dir() {
            return Err(io::Error::other(format!("{} is not a directory", self.dir.display())));
        }
        let stop = CancellationToken::new();
        let listener = self.channel.listen(TOPIC);
        let events = self.channel.subscribe();
        let (out, jobs) = mpsc::unbounded_channel();
        let sender = Sender {
            channel: self.channel.clone(),
            dir: self.dir.clone(),
        };
        runtime.spawn(sender.run(jobs, stop.clone()));
        let runner = Runner {
            local: self.channel.local().id(),
            channel: self.channel,
            out,
            dir: self.dir.clone(),
            state: FarmState::default(),
            inbox: Inbox::new(self.dir.clone()),
            on_change: self.on_change,
        };
        runtime.spawn(runner.run(listener, events, self.poll_interval, stop.clone()));
        Ok(Farm {
            dir: self.dir,
            _stop: stop.drop_guard(),
        })
    }
}

/// A running replicated directory; stops when dropped. See the [module docs](self).
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
}

/// A file being received: its hidden temporary file and running digest.
struct Transfer {
    entry: Entry,
    temp: PathBuf,
    file: File,
    written: u64,
    hasher: Sha256,
}

/// Work for the sender task. Sends are sync-acked, so they run apart from the task
/// that receives: two farms sending to each other at once never wait on each other.
#[derive(Debug)]
enum Job {
    Message(Vec<MemberId>, FarmMessage),
    File(Vec<MemberId>, String, Entry),
}

struct Runner {
    channel: Channel,
    out: mpsc::UnboundedSender<Job>,
    local: MemberId,
    dir: PathBuf,
    state: FarmState,
    inbox: Inbox,
    on_change: Option<Callback>,
}

impl Runner {
    async fn run(
        mut self,
        mut listener: crate::listen::Listener,
        mut events: broadcast::Receiver<MembershipEvent>,
        poll: Duration,
        stop: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Members already there when the farm starts: exchange manifests as with new ones.
        let mut greeted = false;
        loop {
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
                    Ok(MembershipEvent::Added(m) | MembershipEvent::Back(m)) => self.send_manifest(&[m.id()], false),
                    Ok(MembershipEvent::Disappeared { member, .. }) => self.inbox.abort(Some(member.id())),
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

    /// One poll of the directory: hash the files that became stable, publish changes.
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
                let targets: Vec<MemberId> = self.channel.members().iter().map(|m| m.id()).collect();
                self.send_file(&targets, &name, &entry);
                self.emit(FarmEvent::Published {
                    name,
                    version: entry.version.counter,
                });
            }
        }
        self.state.retain_observed(&|n| seen.iter().any(|s| s == n));
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

    fn send_file(&self, to: &[MemberId], name: &str, entry: &Entry) {
        if !to.is_empty() {
            let _ = self.out.send(Job::File(to.to_vec(), name.to_string(), entry.clone()));
        }
    }

    fn handle(&mut self, from: MemberId, from_name: &str, message: FarmMessage) {
        match message {
            FarmMessage::Manifest { entries, reply } => {
                if reply {
                    self.send_manifest(&[from], false);
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
            FarmMessage::Chunk {
                name,
                entry,
                offset,
                data,
            } => match self.inbox.chunk(&mut self.state, from, &name, entry, offset, &data) {
                Ok(Some(path)) => {
                    let version = self.state.entry(&name).map_or(0, |e| e.version.counter);
                    tracing::info!(file = %name, from = %from_name, version, "farm file received");
                    self.emit(FarmEvent::Received {
                        name,
                        path,
                        version,
                        from: from_name.to_string(),
                    });
                }
                Ok(None) => {}
                Err(reason) => {
                    self.inbox.discard(from, &name);
                    tracing::warn!(file = %name, from = %from_name, %reason, "farm transfer rejected");
                    self.emit(FarmEvent::Rejected {
                        name,
                        from: from_name.to_string(),
                        reason,
                    });
                }
            },
        }
    }
}

/// Files being received, each in a hidden temporary file of the farm directory.
struct Inbox {
    dir: PathBuf,
    transfers: HashMap<(MemberId, String), Transfer>,
}

impl Inbox {
    fn new(dir: PathBuf) -> Self {
        Inbox {
            dir,
            transfers: HashMap::new(),
        }
    }

    /// Take one chunk; on the last one, verify the size and digest and publish the
    /// file atomically (fsync, rename, fsync of the directory). Returns the published
    /// path when this chunk completed a winning transfer.
    ///
    /// # Errors
    /// Why the transfer is rejected; the caller then calls [`Inbox::discard`].
    fn chunk(
        &mut self,
        state: &mut FarmState,
        from: MemberId,
        name: &str,
        entry: Entry,
        offset: u64,
        data: &[u8],
    ) -> Result<Option<PathBuf>, String> {
        if !valid_name(name) {
            return Err(format!("invalid file name {name:?}"));
        }
        let key = (from, name.to_string());
        if offset == 0 {
            self.discard(from, name);
            if !state.wins(name, &entry) {
                tracing::debug!(file = %name, "farm file not newer than ours: ignored");
                return Ok(None);
            }
            let temp = self
                .dir
                .join(format!("{TEMP_PREFIX}{}-{:016x}.tmp", name, rand::random::<u64>()));
            let file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&temp)
                .map_err(|e| format!("cannot create {}: {e}", temp.display()))?;
            self.transfers.insert(
                key.clone(),
                Transfer {
                    entry: entry.clone(),
                    temp,
                    file,
                    written: 0,
                    hasher: Sha256::new(),
                },
            );
        }
        let Some(t) = self.transfers.get_mut(&key) else {
            // A transfer we ignored (not newer) or lost: nothing to do.
            return Ok(None);
        };
        if t.entry != entry || t.written != offset {
            return Err(format!(
                "chunk at offset {offset} does not continue the transfer (at {})",
                t.written
            ));
        }
        if data.is_empty() && t.written < entry.size {
            return Err(format!(
                "the transfer ended at {} of {} bytes (the file changed while it was sent)",
                t.written, entry.size
            ));
        }
        if t.written + data.len() as u64 > entry.size {
            return Err(format!("more data than the announced {} bytes", entry.size));
        }
        t.file
            .write_all(data)
            .map_err(|e| format!("cannot write {}: {e}", t.temp.display()))?;
        t.hasher.update(data);
        t.written += data.len() as u64;
        if t.written < entry.size {
            return Ok(None);
        }
        let Some(t) = self.transfers.remove(&key) else {
            return Ok(None);
        };
        let digest: [u8; 32] = t.hasher.finalize().into();
        if digest != entry.sha256 {
            let _ = fs::remove_file(&t.temp);
            return Err("SHA-256 mismatch: the transfer is corrupt".into());
        }
        if !state.wins(name, &entry) {
            let _ = fs::remove_file(&t.temp);
            return Ok(None);
        }
        let target = self.dir.join(name);
        let committed = t
            .file
            .sync_all()
            .and_then(|()| fs::rename(&t.temp, &target))
            .and_then(|()| File::open(&self.dir)?.sync_all());
        if let Err(e) = committed {
            let _ = fs::remove_file(&t.temp);
            return Err(format!("cannot publish {}: {e}", target.display()));
        }
        state.accepted(name, entry);
        Ok(Some(target))
    }

    /// Drop the transfer of `name` from `from`, if any, and its temporary file.
    fn discard(&mut self, from: MemberId, name: &str) {
        if let Some(t) = self.transfers.remove(&(from, name.to_string())) {
            let _ = fs::remove_file(&t.temp);
        }
    }

    /// Drop every transfer from `member` (it left), or every transfer (`None`).
    fn abort(&mut self, member: Option<MemberId>) {
        self.transfers.retain(|(from, _), t| {
            if member.is_none_or(|m| m == *from) {
                let _ = fs::remove_file(&t.temp);
                false
            } else {
                true
            }
        });
    }
}

/// The task that sends: messages and files, in the order they were queued.
struct Sender {
    channel: Channel,
    dir: PathBuf,
}

impl Sender {
    async fn run(self, mut jobs: mpsc::UnboundedReceiver<Job>, stop: CancellationToken) {
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

    /// Send the current content of `name` in chunks. The file is re-hashed while it is
    /// read; if it changed meanwhile the receivers reject the transfer and the next
    /// poll publishes the new content.
    async fn send_file(&self, to: &[MemberId], name: &str, entry: &Entry) {
        if to.is_empty() {
            return;
        }
        let path = self.dir.join(name);
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(file = %name, error = %e, "cannot open a farm file to send it");
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
            if !self.send(to, &message).await {
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

fn hash_file(path: &Path) -> io::Result<(u64, [u8; 32])> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> MemberId {
        MemberId([n; 16])
    }

    fn stamp(size: u64, secs: u64) -> Stamp {
        (size, Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs)))
    }

    #[test]
    fn a_file_is_hashed_once_it_is_stable() {
        let mut s = FarmState::default();
        assert!(!s.observe("app.war", stamp(10, 1)), "first sight: not stable yet");
        assert!(!s.observe("app.war", stamp(20, 2)), "still growing");
        assert!(s.observe("app.war", stamp(20, 2)), "unchanged between two polls");
        assert!(s.local_content("app.war", stamp(20, 2), 20, [1; 32], id(1)).is_some());
        assert!(!s.observe("app.war", stamp(20, 2)), "already hashed");
        assert!(!s.observe("app.war", stamp(20, 3)), "touched: wait for stability again");
        assert!(s.observe("app.war", stamp(20, 3)));
    }

    #[test]
    fn local_changes_take_the_next_counter_and_same_content_is_not_republished() {
        let mut s = FarmState::default();
        let v1 = s.local_content("a", stamp(1, 1), 1, [1; 32], id(1)).unwrap();
        assert_eq!(
            v1.version,
            Version {
                counter: 1,
                origin: id(1)
            }
        );
        assert_eq!(
            s.local_content("a", stamp(1, 2), 1, [1; 32], id(1)),
            None,
            "touched, same bytes"
        );
        let v2 = s.local_content("a", stamp(2, 3), 2, [2; 32], id(1)).unwrap();
        assert_eq!(v2.version.counter, 2);
    }

    #[test]
    fn a_received_file_is_not_echoed_back() {
        let mut s = FarmState::default();
        let remote = Entry {
            version: Version {
                counter: 3,
                origin: id(2),
            },
            size: 5,
            sha256: [9; 32],
        };
        assert!(s.wins("a", &remote));
        s.accepted("a", remote.clone());
        // The next polls see the file this farm wrote: same digest, nothing to publish.
        assert!(!s.observe("a", stamp(5, 1)));
        assert!(s.observe("a", stamp(5, 1)));
        assert_eq!(s.local_content("a", stamp(5, 1), 5, [9; 32], id(1)), None);
        assert_eq!(s.entry("a"), Some(&remote));
        // An edit here after receiving counts from the received version.
        let next = s.local_content("a", stamp(6, 2), 6, [7; 32], id(1)).unwrap();
        assert_eq!(
            next.version,
            Version {
                counter: 4,
                origin: id(1)
            }
        );
    }

    #[test]
    fn last_writer_wins_by_counter_then_member_id() {
        let mut s = FarmState::default();
        let mine = s.local_content("a", stamp(1, 1), 1, [1; 32], id(5)).unwrap();
        let older = Entry {
            version: Version {
                counter: 0,
                origin: id(9),
            },
            ..mine.clone()
        };
        let tie_low = Entry {
            version: Version {
                counter: 1,
                origin: id(3),
            },
            sha256: [3; 32],
            ..mine.clone()
        };
        let tie_high = Entry {
            version: Version {
                counter: 1,
                origin: id(7),
            },
            sha256: [7; 32],
            ..mine.clone()
        };
        let newer = Entry {
            version: Version {
                counter: 2,
                origin: id(1),
            },
            ..mine.clone()
        };
        assert!(!s.wins("a", &older));
        assert!(!s.wins("a", &mine), "the same version is not newer");
        assert!(!s.wins("a", &tie_low), "concurrent write, lower member id loses");
        assert!(s.wins("a", &tie_high), "concurrent write, higher member id wins");
        assert!(s.wins("a", &newer));
    }

    #[test]
    fn a_joining_member_wants_only_what_beats_its_own() {
        let mut joiner = FarmState::default();
        joiner.local_content("stale", stamp(1, 1), 1, [1; 32], id(1)).unwrap();
        joiner
            .local_content("mine-only", stamp(1, 1), 1, [2; 32], id(1))
            .unwrap();
        let mut cluster = FarmState::default();
        cluster.accepted(
            "stale",
            Entry {
                version: Version {
                    counter: 4,
                    origin: id(2),
                },
                size: 3,
                sha256: [4; 32],
            },
        );
        cluster.local_content("new", stamp(1, 1), 1, [5; 32], id(2)).unwrap();
        cluster.accepted(
            "../escape",
            Entry {
                version: Version {
                    counter: 9,
                    origin: id(2),
                },
                size: 1,
                sha256: [0; 32],
            },
        );
        let mut wanted = joiner.wanted(&cluster.manifest());
        wanted.sort();
        assert_eq!(wanted, ["new", "stale"], "never a traversing name");
        assert_eq!(cluster.wanted(&joiner.manifest()), ["mine-only"]);
    }

    #[test]
    fn names_are_validated() {
        for ok in ["app.war", "ROOT.war", "config v2.json", "ünïcode.txt"] {
            assert!(valid_name(ok), "{ok}");
        }
        let long = "x".repeat(256);
        for bad in [
            "",
            ".",
            "..",
            "../etc/passwd",
            "a/b",
            "a\\b",
            ".hidden",
            ".tribes-farm-app.war-1.tmp",
            "nul\0byte",
            "line\nbreak",
            long.as_str(),
        ] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn files_that_vanish_are_forgotten_by_the_stability_tracker() {
        let mut s = FarmState::default();
        s.observe("a", stamp(1, 1));
        s.retain_observed(&|_| false);
        assert!(!s.observe("a", stamp(1, 1)), "first sight again");
    }

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let dir = std::env::temp_dir().join(format!(
                "tribes-farm-{tag}-{}-{:x}",
                std::process::id(),
                rand::random::<u64>()
            ));
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn names(&self) -> Vec<String> {
            let mut names: Vec<String> = fs::read_dir(&self.0)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            names.sort();
            names
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn entry_for(bytes: &[u8], counter: u64, origin: u8) -> Entry {
        Entry {
            version: Version {
                counter,
                origin: id(origin),
            },
            size: bytes.len() as u64,
            sha256: Sha256::digest(bytes).into(),
        }
    }

    #[test]
    fn a_complete_transfer_is_published_with_its_bytes() {
        let dir = TempDir::new("ok");
        let mut inbox = Inbox::new(dir.0.clone());
        let mut state = FarmState::default();
        let bytes: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let entry = entry_for(&bytes, 1, 2);
        assert_eq!(
            inbox.chunk(&mut state, id(2), "a.war", entry.clone(), 0, &bytes[..400]),
            Ok(None)
        );
        assert_eq!(dir.names().len(), 1, "only the hidden temporary file so far");
        assert!(dir.names()[0].starts_with(TEMP_PREFIX));
        assert_eq!(
            inbox.chunk(&mut state, id(2), "a.war", entry.clone(), 400, &bytes[400..800]),
            Ok(None)
        );
        let done = inbox
            .chunk(&mut state, id(2), "a.war", entry.clone(), 800, &bytes[800..])
            .unwrap();
        assert_eq!(done, Some(dir.0.join("a.war")));
        assert_eq!(fs::read(dir.0.join("a.war")).unwrap(), bytes);
        assert_eq!(dir.names(), ["a.war"], "no temporary file left");
        assert_eq!(state.entry("a.war"), Some(&entry));
    }

    #[test]
    fn a_corrupt_or_partial_transfer_is_never_visible() {
        let dir = TempDir::new("bad");
        let mut inbox = Inbox::new(dir.0.clone());
        let mut state = FarmState::default();
        let bytes = vec![7u8; 100];
        // The digest announced is not the digest of the bytes sent.
        let mut lying = entry_for(&bytes, 1, 2);
        lying.sha256 = [0; 32];
        let err = inbox.chunk(&mut state, id(2), "a.war", lying, 0, &bytes).unwrap_err();
        assert!(err.contains("SHA-256"), "{err}");
        assert!(dir.names().is_empty(), "{:?}", dir.names());
        assert_eq!(state.entry("a.war"), None);

        // A gap in the chunks.
        let entry = entry_for(&bytes, 1, 2);
        assert_eq!(
            inbox.chunk(&mut state, id(2), "a.war", entry.clone(), 0, &bytes[..50]),
            Ok(None)
        );
        let err = inbox
            .chunk(&mut state, id(2), "a.war", entry.clone(), 60, &bytes[60..])
            .unwrap_err();
        assert!(err.contains("does not continue"), "{err}");
        inbox.discard(id(2), "a.war");
        assert!(dir.names().is_empty(), "{:?}", dir.names());

        // More than announced, and a transfer that ends early.
        let err = inbox
            .chunk(&mut state, id(2), "a.war", entry_for(&bytes[..10], 1, 2), 0, &bytes)
            .unwrap_err();
        assert!(err.contains("more data"), "{err}");
        inbox.discard(id(2), "a.war");
        assert_eq!(
            inbox.chunk(&mut state, id(2), "a.war", entry.clone(), 0, &bytes[..50]),
            Ok(None)
        );
        let err = inbox.chunk(&mut state, id(2), "a.war", entry, 50, &[]).unwrap_err();
        assert!(err.contains("ended at 50 of 100"), "{err}");
        inbox.discard(id(2), "a.war");

        // A sender that leaves mid-transfer leaves nothing behind.
        let entry = entry_for(&bytes, 1, 3);
        assert_eq!(
            inbox.chunk(&mut state, id(3), "b.war", entry, 0, &bytes[..50]),
            Ok(None)
        );
        inbox.abort(Some(id(3)));
        assert!(dir.names().is_empty(), "{:?}", dir.names());
    }

    #[test]
    fn traversing_names_and_older_versions_touch_nothing() {
        let dir = TempDir::new("names");
        let mut inbox = Inbox::new(dir.0.join("farm"));
        fs::create_dir_all(dir.0.join("farm")).unwrap();
        let mut state = FarmState::default();
        let bytes = b"pwned".to_vec();
        for name in ["../escape", "/etc/passwd", ".hidden", "a/b"] {
            let err = inbox
                .chunk(&mut state, id(2), name, entry_for(&bytes, 1, 2), 0, &bytes)
                .unwrap_err();
            assert!(err.contains("invalid file name"), "{name}: {err}");
        }
        assert_eq!(dir.names(), ["farm"], "nothing written outside the farm directory");

        let newer = entry_for(b"v2", 2, 2);
        inbox.chunk(&mut state, id(2), "a", newer.clone(), 0, b"v2").unwrap();
        assert_eq!(
            inbox.chunk(&mut state, id(3), "a", entry_for(b"v1", 1, 9), 0, b"v1"),
            Ok(None)
        );
        assert_eq!(fs::read(dir.0.join("farm/a")).unwrap(), b"v2");
        assert_eq!(state.entry("a"), Some(&newer));
    }

    #[test]
    fn chunk_messages_round_trip_as_binary() {
        let message = FarmMessage::Chunk {
            name: "a".into(),
            entry: Entry {
                version: Version {
                    counter: 1,
                    origin: id(1),
                },
                size: 3,
                sha256: [1; 32],
            },
            offset: 0,
            data: vec![1, 2, 3],
        };
        let bytes = rmp_serde::to_vec_named(&message).unwrap();
        assert!(bytes.len() < 150, "{} bytes", bytes.len());
        match rmp_serde::from_slice::<FarmMessage>(&bytes).unwrap() {
            FarmMessage::Chunk { data, .. } => assert_eq!(data, [1, 2, 3]),
            other => panic!("{other:?}"),
        }
    }
}
