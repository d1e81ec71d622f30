//! The farm's decisions, with no IO: versions, stability, what wins, what to ask for.

use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::member::MemberId;

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
    /// A tombstone: the file was deleted at this version (size 0, digest zeros). Kept, so
    /// that a member holding an older copy deletes it instead of sending it back.
    #[serde(default)]
    pub(crate) deleted: bool,
}

impl Entry {
    /// The tombstone of a file deleted by `origin` at `counter`.
    pub(crate) fn tombstone(counter: u64, origin: MemberId) -> Entry {
        Entry {
            version: Version { counter, origin },
            size: 0,
            sha256: [0; 32],
            deleted: true,
        }
    }
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
            Some(current) if !current.deleted && current.sha256 == sha256 && current.size == size => return None,
            Some(current) => current.version.counter + 1,
            None => 1,
        };
        let entry = Entry {
            version: Version { counter, origin: local },
            size,
            sha256,
            deleted: false,
        };
        self.entries.insert(name.to_string(), entry.clone());
        Some(entry)
    }

    /// After a poll that listed the directory: the files known here (not deleted) that
    /// the poll no longer saw were deleted here. Each becomes a tombstone with the next
    /// counter, returned to be sent to every member.
    pub(crate) fn local_deletions(&mut self, seen: &dyn Fn(&str) -> bool, local: MemberId) -> Vec<(String, Entry)> {
        let gone: Vec<(String, u64)> = self
            .entries
            .iter()
            .filter(|(name, e)| !e.deleted && !seen(name))
            .map(|(name, e)| (name.clone(), e.version.counter + 1))
            .collect();
        gone.into_iter()
            .map(|(name, counter)| {
                let tomb = Entry::tombstone(counter, local);
                self.entries.insert(name.clone(), tomb.clone());
                (name, tomb)
            })
            .collect()
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

    /// The names in a peer's manifest whose files beat ours (to ask for).
    pub(crate) fn wanted(&self, manifest: &[(String, Entry)]) -> Vec<String> {
        manifest
            .iter()
            .filter(|(name, entry)| !entry.deleted && valid_name(name) && self.wins(name, entry))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// The deletions in a peer's manifest that beat ours (to apply here).
    pub(crate) fn deletions(&self, manifest: &[(String, Entry)]) -> Vec<(String, Entry)> {
        manifest
            .iter()
            .filter(|(name, entry)| entry.deleted && valid_name(name) && self.wins(name, entry))
            .cloned()
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
