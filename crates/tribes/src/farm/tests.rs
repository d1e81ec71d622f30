//! Tests of the farm's state and inbox.

use std::fs;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use super::inbox::Inbox;
use super::state::{Entry, FarmState, Stamp, Version, valid_name};
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
        deleted: false,
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
            deleted: false,
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
            deleted: false,
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
        deleted: false,
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
            deleted: false,
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
