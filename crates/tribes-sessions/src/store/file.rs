//! [`FileStore`]: one directory, one file per session, replaced atomically.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::record::{self, StoredSession};
use super::{SessionStore, StoreError, StoreFuture, check_record, scoped_name, store_namespace};
use crate::cause::Cause;
use crate::id::LogId;
use crate::id::SessionId;

/// The suffix of a session file: `<id>.session`.
const SUFFIX: &str = ".session";
/// Temp files are `.<id>.<random>.tmp`: hidden, so never listed as sessions.
const TMP_SUFFIX: &str = ".tmp";
/// A temp file older than this is left over from a crash and is removed.
const STALE_TMP: Duration = Duration::from_secs(60);
/// Lock stripes serializing the version check and the rename of one id.
const STRIPES: usize = 64;

/// Sessions as files in one directory: `<id>.session`, each a versioned, checksummed record.
///
/// A save writes a hidden temp file, fsyncs it, renames it over `<id>.session` and fsyncs
/// the directory, so after a crash at any point the file holds the old record or the new
/// one, never a mix; temp files left by a crash are removed by [`FileStore::open`] and
/// [`delete_expired`](SessionStore::delete_expired). Each file starts with a magic and a
/// format number, so a file written by a newer version is reported as
/// [`StoreError::Corrupt`], not misread.
///
/// The version check of [`save`](SessionStore::save) is atomic among the tasks of one
/// process. Several processes must not share one directory in shared mode (use PostgreSQL
/// or Redis for that). File I/O runs on tokio's blocking pool, so the methods must be called
/// inside a tokio runtime.
///
/// # Examples
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use tribes_sessions::{FileStore, SessionStore};
/// let dir = std::env::temp_dir().join(format!("tribes-doc-file-{}", std::process::id()));
/// let store = FileStore::open(&dir).await?;
/// assert_eq!(store.name(), format!("file store at {}", dir.display()));
/// assert!(store.list_ids().await?.is_empty());
/// # std::fs::remove_dir_all(&dir).unwrap();
/// # Ok::<(), tribes_sessions::StoreError>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct FileStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The directory given to [`FileStore::open`].
    base: PathBuf,
    /// Where this store's records are: `base` for the context `""`, else
    /// `base/<store_namespace(context)>` (created by the first save).
    dir: PathBuf,
    name: String,
    stripes: Vec<Mutex<()>>,
}

impl FileStore {
    /// Opens (creating it if needed) the directory `dir` as a store, removes temp files left
    /// by a crash, and checks that it is writable.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the directory cannot be created or written.
    pub async fn open(dir: impl Into<PathBuf>) -> Result<FileStore, StoreError> {
        let dir = dir.into();
        let name = format!("file store at {}", dir.display());
        let inner = Arc::new(Inner {
            base: dir.clone(),
            dir,
            name,
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
        });
        let store = FileStore { inner };
        store
            .blocking("open", None, |inner| {
                fs::create_dir_all(&inner.dir)?;
                inner.remove_stale_temps(STALE_TMP)?;
                inner.probe()
            })
            .await?;
        Ok(store)
    }

    /// The directory of this store's records: the one given to [`FileStore::open`], or its
    /// subdirectory for the context of [`FileStore::with_context`].
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// This store for the records of `context` only, in the subdirectory
    /// [`store_namespace(context)`](super::store_namespace) of the directory given to
    /// [`FileStore::open`] (created by the first save); `""` is that directory itself. See
    /// [`SessionStore::for_context`].
    pub fn with_context(self, context: &str) -> FileStore {
        let base = self.inner.base.clone();
        let dir = if context.is_empty() {
            base.clone()
        } else {
            base.join(store_namespace(context))
        };
        let name = scoped_name(&format!("file store at {}", base.display()), context);
        FileStore {
            inner: Arc::new(Inner {
                base,
                dir,
                name,
                stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            }),
        }
    }

    /// Runs `f` on the blocking pool and maps its I/O error.
    async fn blocking<T: Send + 'static>(
        &self,
        operation: &'static str,
        id: Option<SessionId>,
        f: impl FnOnce(&Inner) -> io::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = self.inner.clone();
        let result = tokio::task::spawn_blocking(move || f(&inner)).await;
        match result {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.inner.io_error(operation, id, e)),
            Err(join) => Err(StoreError::Backend {
                store: self.inner.name.clone(),
                operation,
                id,
                cause: Cause::new(join),
                hint: Some("the blocking task doing the file I/O failed: see its panic in the log"),
            }),
        }
    }
}

/// What a save found under the stripe lock.
enum SaveOutcome {
    Saved,
    Conflict(Option<u64>),
}

impl Inner {
    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}{SUFFIX}"))
    }

    fn stripe(&self, id: &str) -> std::sync::MutexGuard<'_, ()> {
        // FNV-1a: stable and good enough to spread ids over the stripes.
        let h = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        // A panic while holding a stripe cannot leave a half-written file (the rename is
        // atomic), so a poisoned lock is safe to take.
        self.stripes[(h % STRIPES as u64) as usize]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn io_error(&self, operation: &'static str, id: Option<SessionId>, e: io::Error) -> StoreError {
        let hint = match e.kind() {
            io::ErrorKind::NotFound => Some("does the directory still exist? FileStore::open creates it"),
            io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => {
                Some("check that this process may write the directory")
            }
            io::ErrorKind::StorageFull => Some("the disk is full: free space or delete expired sessions"),
            _ => None,
        };
        StoreError::Backend {
            store: self.name.clone(),
            operation,
            id,
            cause: Cause::new(e),
            hint,
        }
    }

    /// Reads the whole file of `id`; `None` if there is none.
    fn read(&self, id: &str) -> io::Result<Option<Vec<u8>>> {
        match fs::read(self.path(id)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Reads just the fixed header of a file; `None` if the file is gone.
    fn read_header(&self, path: &Path) -> io::Result<Option<Result<record::Header, record::RecordError>>> {
        let mut file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut buf = Vec::with_capacity(record::HEADER_LEN);
        Read::by_ref(&mut file)
            .take(record::HEADER_LEN as u64)
            .read_to_end(&mut buf)?;
        Ok(Some(record::decode_header(&buf)))
    }

    /// Writes `bytes` as the file of `id`: temp file, fsync, rename, fsync of the directory.
    fn write_atomic(&self, id: &str, bytes: &[u8]) -> io::Result<()> {
        let tmp = self
            .dir
            .join(format!(".{id}.{:016x}{TMP_SUFFIX}", rand::random::<u64>()));
        let result = (|| {
            let mut file = match OpenOptions::new().write(true).create_new(true).open(&tmp) {
                // A context's subdirectory appears with its first record.
                Err(e) if e.kind() == io::ErrorKind::NotFound && self.dir != self.base && self.base.is_dir() => {
                    fs::create_dir_all(&self.dir)?;
                    File::open(&self.base)?.sync_all()?;
                    OpenOptions::new().write(true).create_new(true).open(&tmp)?
                }
                other => other?,
            };
            file.write_all(bytes)?;
            file.sync_all()?;
            drop(file);
            fs::rename(&tmp, self.path(id))?;
            self.sync_dir()
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }

    fn save(&self, id: &str, bytes: &[u8], expected: Option<u64>) -> io::Result<SaveOutcome> {
        let _guard = self.stripe(id);
        if let Some(expected) = expected {
            // An expired record counts as absent, as on Redis where it is gone.
            let found = self
                .read(id)?
                .and_then(|b| record::decode(&b, &id.parse().ok()?).ok())
                .filter(|r| !r.is_expired(SystemTime::now()))
                .map(|r| r.version);
            if found != Some(expected) {
                return Ok(SaveOutcome::Conflict(found));
            }
        }
        self.write_atomic(id, bytes)?;
        Ok(SaveOutcome::Saved)
    }

    fn delete(&self, id: &str) -> io::Result<bool> {
        let _guard = self.stripe(id);
        match fs::remove_file(self.path(id)) {
            Ok(()) => {
                self.sync_dir()?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The ids of the directory's session files (files whose name is no session id are
    /// not sessions: left out).
    fn list_ids(&self) -> io::Result<Vec<SessionId>> {
        let mut ids = Vec::new();
        for entry in self.read_dir()? {
            let name = entry?.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(id) = name.strip_suffix(SUFFIX) {
                ids.extend(id.parse::<SessionId>().ok());
            }
        }
        Ok(ids)
    }

    fn delete_expired(&self, now_ms: u64) -> io::Result<u64> {
        let mut deleted = 0;
        for id in self.list_ids()? {
            let id = id.to_string();
            let path = self.path(&id);
            match self.read_header(&path)? {
                None => {}
                Some(Err(cause)) => {
                    tracing::warn!(store = %self.name, session = %LogId::of_text(&id), %cause, "undecodable session file left in place");
                }
                Some(Ok(h)) if h.expires_at_ms <= now_ms => {
                    // Check again under the lock: a save may have just renewed it.
                    let _guard = self.stripe(&id);
                    if matches!(self.read_header(&path)?, Some(Ok(h)) if h.expires_at_ms <= now_ms) {
                        match fs::remove_file(&path) {
                            Ok(()) => deleted += 1,
                            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                            Err(e) => return Err(e),
                        }
                    }
                }
                Some(Ok(_)) => {}
            }
        }
        if deleted > 0 {
            self.sync_dir()?;
        }
        self.remove_stale_temps(STALE_TMP)?;
        Ok(deleted)
    }

    /// Removes hidden temp files older than `age`: what a crash mid-save leaves behind.
    fn remove_stale_temps(&self, age: Duration) -> io::Result<()> {
        let now = SystemTime::now();
        for entry in self.read_dir()? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if !(name.starts_with('.') && name.ends_with(TMP_SUFFIX)) {
                continue;
            }
            let modified = entry.metadata().and_then(|m| m.modified()).unwrap_or(now);
            if now.duration_since(modified).unwrap_or_default() >= age {
                match fs::remove_file(entry.path()) {
                    Ok(()) => {
                        // `.<id>.<random>.tmp`: log the session's hash, not its id.
                        let id = name
                            .strip_prefix('.')
                            .and_then(|n| n.strip_suffix(TMP_SUFFIX))
                            .and_then(|n| n.rsplit_once('.'))
                            .map_or("", |(id, _)| id);
                        tracing::info!(store = %self.name, session = %LogId::of_text(id), "removed a temp file left by a crash");
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// The entries of the directory; none when a context's subdirectory has no record yet.
    fn read_dir(&self) -> io::Result<Vec<io::Result<fs::DirEntry>>> {
        match fs::read_dir(&self.dir) {
            Ok(entries) => Ok(entries.collect()),
            Err(e) if e.kind() == io::ErrorKind::NotFound && self.dir != self.base && self.base.is_dir() => {
                Ok(Vec::new())
            }
            Err(e) => Err(e),
        }
    }

    /// Creates and removes a temp file: the directory exists and is writable.
    fn probe(&self) -> io::Result<()> {
        if self.dir != self.base && self.base.is_dir() {
            fs::create_dir_all(&self.dir)?;
        }
        let probe = self
            .dir
            .join(format!(".health.{:016x}{TMP_SUFFIX}", rand::random::<u64>()));
        OpenOptions::new().write(true).create_new(true).open(&probe)?;
        fs::remove_file(&probe)
    }
}

impl SessionStore for FileStore {
    fn name(&self) -> &str {
        &self.inner.name
    }

    fn load<'a>(&'a self, sid: &'a SessionId) -> StoreFuture<'a, Option<StoredSession>> {
        Box::pin(async move {
            let owned = sid.to_string();
            let Some(bytes) = self
                .blocking("load", Some(*sid), move |inner| inner.read(&owned))
                .await?
            else {
                return Ok(None);
            };
            let record = record::decode(&bytes, sid).map_err(|cause| StoreError::Corrupt {
                store: self.inner.name.clone(),
                id: *sid,
                cause: Cause::new(cause),
                location: Some(format!(
                    "the file <id>{SUFFIX} in {}; to find <id>, match FileStore::list_ids against LogId::of_text",
                    self.inner.dir.display()
                )),
            })?;
            Ok((!record.is_expired(SystemTime::now())).then_some(record))
        })
    }

    fn save<'a>(&'a self, record: &'a StoredSession, expected_version: Option<u64>) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            check_record(&self.inner.name, record)?;
            let bytes = record::encode(record);
            let id = record.id.to_string();
            let outcome = self
                .blocking("save", Some(record.id), move |inner| {
                    inner.save(&id, &bytes, expected_version)
                })
                .await?;
            match (outcome, expected_version) {
                (SaveOutcome::Saved, _) => Ok(()),
                (SaveOutcome::Conflict(found), Some(expected)) => Err(StoreError::Conflict {
                    store: self.inner.name.clone(),
                    id: record.id,
                    expected,
                    found,
                }),
                (SaveOutcome::Conflict(_), None) => unreachable!("no version check without an expected version"),
            }
        })
    }

    fn delete<'a>(&'a self, id: &'a SessionId) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let owned = id.to_string();
            self.blocking("delete", Some(*id), move |inner| inner.delete(&owned))
                .await
        })
    }

    fn delete_expired(&self, now: SystemTime) -> StoreFuture<'_, u64> {
        let now_ms = record::unix_ms(now);
        Box::pin(async move {
            self.blocking("delete_expired", None, move |inner| inner.delete_expired(now_ms))
                .await
        })
    }

    fn list_ids(&self) -> StoreFuture<'_, Vec<SessionId>> {
        Box::pin(async move { self.blocking("list_ids", None, |inner| inner.list_ids()).await })
    }

    fn health(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move { self.blocking("health", None, |inner| inner.probe()).await })
    }

    fn for_context(&self, context: &str) -> Arc<dyn SessionStore> {
        Arc::new(self.clone().with_context(context))
    }
}
