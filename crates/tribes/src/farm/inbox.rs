//! The receiving side: chunks into hidden temporary files, published atomically.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;

use sha2::{Digest, Sha256};

use super::TEMP_PREFIX;
use super::state::{Entry, FarmState, valid_name};
use crate::member::MemberId;

/// A file being received: its hidden temporary file and running digest.
struct Transfer {
    entry: Entry,
    temp: PathBuf,
    file: File,
    written: u64,
    hasher: Sha256,
}

/// Files being received, each in a hidden temporary file of the farm directory.
pub(crate) struct Inbox {
    dir: PathBuf,
    transfers: HashMap<(MemberId, String), Transfer>,
}

impl Inbox {
    pub(crate) fn new(dir: PathBuf) -> Self {
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
    pub(crate) fn chunk(
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
    pub(crate) fn discard(&mut self, from: MemberId, name: &str) {
        if let Some(t) = self.transfers.remove(&(from, name.to_string())) {
            let _ = fs::remove_file(&t.temp);
        }
    }

    /// Drop every transfer from `member` (it left), or every transfer (`None`).
    pub(crate) fn abort(&mut self, member: Option<MemberId>) {
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
