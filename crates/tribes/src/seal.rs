//! Authenticated encryption of every frame under a shared cluster key.
//!
//! Frames are sealed with ChaCha20-Poly1305 (RFC 8439). The 12-byte nonce is a
//! 4-byte random prefix drawn when the process starts followed by a 64-bit counter,
//! so a process never repeats a nonce; the additional data is the frame prefix
//! (magic, version, kind, flags, key id, nonce, lengths), so none of it can be
//! altered.
//!
//! Replay: on a TCP connection every frame must carry a higher counter than the one
//! before it from the same sender; the frame that opens a connection must never have
//! opened one before (the last 65,536 openers are remembered); every multicast
//! datagram must be new to a per-sender window of 1024 counters. So a recorded
//! connection or datagram replayed later is refused. What is not covered:
//! an attacker who can sit in the middle of a live TCP connection can still delay or
//! drop frames (as on any network).
//!
//! A [`Keyring`] has one key to seal with and any number of keys accepted on
//! receipt, each with a one-byte id carried in the frame, so keys rotate across a
//! running cluster without downtime: accept the new key everywhere, then seal with
//! it everywhere, then retire the old one ([`crate::Channel::set_keyring`]).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

use base64::Engine;
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce, Tag};

/// Why a sealed frame did not open; the frame codec turns it into a
/// [`crate::WireError`] (so `seal` does not depend on the wire format).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpenError {
    /// No accepted key has this id.
    UnknownKey { key_id: u8 },
    /// The tag does not match: wrong key, forged or corrupted.
    Forged { key_id: u8 },
    /// The (sender, counter) was seen before.
    Replayed { counter: u64 },
}

/// Why a cluster key could not be read.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file could not be read.
    #[error(
        "cannot read the cluster key file {path}: {source} (create one with `tribes-demo keygen {path}`, or: printf '1 %s\\n' \"$(head -c 32 /dev/urandom | base64)\" > {path})"
    )]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A line is not `<id> <base64 of 32 bytes>`.
    #[error("cluster key line {line} is not `<id 0-255> <base64 of 32 random bytes>`: {reason}")]
    Malformed {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The file holds no key.
    #[error("the cluster key file holds no key: add a line `<id> <base64 of 32 random bytes>`")]
    Empty,
}

/// The keys of one cluster: one to seal with, several accepted.
#[derive(Clone)]
pub struct Keyring {
    send: u8,
    keys: BTreeMap<u8, [u8; 32]>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        f.debug_struct("Keyring")
            .field("send", &self.send)
            .field("accepted", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Keyring {
    /// A keyring that seals with, and accepts, one key.
    pub fn new(id: u8, key: [u8; 32]) -> Self {
        Keyring {
            send: id,
            keys: BTreeMap::from([(id, key)]),
        }
    }

    /// A fresh random key with this id.
    pub fn generate<R: rand::Rng + ?Sized>(id: u8, rng: &mut R) -> Self {
        let mut key = [0u8; 32];
        rng.fill_bytes(&mut key);
        Self::new(id, key)
    }

    /// Also accept `key` under `id` (the first step of a rotation).
    pub fn with_accepted(mut self, id: u8, key: [u8; 32]) -> Self {
        self.keys.insert(id, key);
        self
    }

    /// Seal with the key `id`, which must be accepted already (the second step).
    /// Returns `None` when the keyring has no key with that id.
    pub fn sending_with(mut self, id: u8) -> Option<Self> {
        self.keys.contains_key(&id).then(|| {
            self.send = id;
            self
        })
    }

    /// Stop accepting `id` (the last step); the send key cannot be retired.
    pub fn without(mut self, id: u8) -> Self {
        if id != self.send {
            self.keys.remove(&id);
        }
        self
    }

    /// The id of the key frames are sealed with.
    pub fn send_id(&self) -> u8 {
        self.send
    }

    /// The ids of every accepted key.
    pub fn accepted_ids(&self) -> Vec<u8> {
        self.keys.keys().copied().collect()
    }

    /// Parse the key file format: one key per line, `<id> <base64 of 32 bytes>`;
    /// the first line is the key to seal with, every line is accepted; `#` starts
    /// a comment.
    ///
    /// # Errors
    /// [`KeyError`] naming the bad line.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let mut ring: Option<Keyring> = None;
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let bad = |reason: &str| KeyError::Malformed {
                line: i + 1,
                reason: reason.to_string(),
            };
            let (id, b64) = line
                .split_once(char::is_whitespace)
                .ok_or_else(|| bad("expected two fields"))?;
            let id: u8 = id.parse().map_err(|_| bad("the id must be a number from 0 to 255"))?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|e| bad(&format!("not base64: {e}")))?;
            let key: [u8; 32] = bytes
                .try_into()
                .map_err(|b: Vec<u8>| bad(&format!("the key has {} bytes, it needs 32", b.len())))?;
            ring = Some(match ring {
                None => Keyring::new(id, key),
                Some(r) => r.with_accepted(id, key),
            });
        }
        ring.ok_or(KeyError::Empty)
    }

    /// Read a key file (see [`Keyring::parse`]).
    ///
    /// # Errors
    /// [`KeyError`] when the file is missing or malformed.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, KeyError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    /// The key file text for this keyring (send key first).
    pub fn to_file_text(&self) -> String {
        let mut out =
            String::from("# tribes cluster keys: <id> <base64 key>; the first line seals, all are accepted\n");
        let line =
            |id: &u8, key: &[u8; 32]| format!("{id} {}\n", base64::engine::general_purpose::STANDARD.encode(key));
        out.push_str(&line(&self.send, &self.keys[&self.send]));
        for (id, key) in self.keys.iter().filter(|(id, _)| **id != self.send) {
            out.push_str(&line(id, key));
        }
        out
    }
}

/// Receive-side replay protection: the highest counter seen and a 1024-frame window.
#[derive(Debug, Default)]
struct ReplayWindow {
    max: u64,
    bits: [u64; 16],
    touched: u64,
}

impl ReplayWindow {
    const WIDTH: u64 = 1024;

    /// Whether `counter` is new; records it if so.
    fn accept(&mut self, counter: u64) -> bool {
        if counter > self.max || (self.max == 0 && self.bits == [0; 16]) {
            let shift = counter.saturating_sub(self.max);
            if shift >= Self::WIDTH {
                self.bits = [0; 16];
            } else {
                for _ in 0..shift {
                    self.shift_one();
                }
            }
            self.max = counter;
            self.set(0);
            return true;
        }
        let back = self.max - counter;
        if back >= Self::WIDTH || self.get(back) {
            return false;
        }
        self.set(back);
        true
    }

    fn shift_one(&mut self) {
        let mut carry = 0;
        for word in self.bits.iter_mut() {
            let next = *word >> 63;
            *word = (*word << 1) | carry;
            carry = next;
        }
    }

    fn get(&self, back: u64) -> bool {
        self.bits[(back / 64) as usize] & (1 << (back % 64)) != 0
    }

    fn set(&mut self, back: u64) {
        self.bits[(back / 64) as usize] |= 1 << (back % 64);
    }
}

/// The (sender, counter) pairs that opened a connection: arrival order and a set.
type Openers = (VecDeque<([u8; 4], u64)>, HashSet<([u8; 4], u64)>);

/// Seals outgoing frames and opens incoming ones for one process.
pub(crate) struct Sealer {
    keyring: RwLock<(Keyring, BTreeMap<u8, ChaCha20Poly1305>)>,
    prefix: [u8; 4],
    counter: AtomicU64,
    windows: Mutex<(u64, HashMap<[u8; 4], ReplayWindow>)>,
    openers: Mutex<Openers>,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer")
            .field("keyring", &self.keyring.read().expect("keyring lock").0)
            .finish()
    }
}

fn ciphers(ring: &Keyring) -> BTreeMap<u8, ChaCha20Poly1305> {
    ring.keys
        .iter()
        .map(|(id, key)| (*id, ChaCha20Poly1305::new(Key::from_slice(key))))
        .collect()
}

impl Sealer {
    const MAX_SENDERS: usize = 4096;

    pub(crate) fn new(keyring: Keyring) -> Self {
        let mut prefix = [0u8; 4];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut prefix);
        let c = ciphers(&keyring);
        Sealer {
            keyring: RwLock::new((keyring, c)),
            prefix,
            counter: AtomicU64::new(1),
            windows: Mutex::default(),
            openers: Mutex::default(),
        }
    }

    pub(crate) fn set_keyring(&self, keyring: Keyring) {
        let c = ciphers(&keyring);
        *self.keyring.write().expect("keyring lock") = (keyring, c);
    }

    pub(crate) fn keyring(&self) -> Keyring {
        self.keyring.read().expect("keyring lock").0.clone()
    }

    /// Encrypt `body` in place; returns the key id, nonce and tag for the prefix.
    /// `aad` is called with the key id and nonce and must return the additional data.
    pub(crate) fn seal<A: AsRef<[u8]>>(
        &self,
        body: &mut [u8],
        aad: impl FnOnce(u8, &[u8; 12]) -> A,
    ) -> (u8, [u8; 12], [u8; 16]) {
        let counter = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut nonce = [0u8; 12];
        nonce[..4].copy_from_slice(&self.prefix);
        nonce[4..].copy_from_slice(&counter.to_be_bytes());
        let guard = self.keyring.read().expect("keyring lock");
        let id = guard.0.send;
        let cipher = &guard.1[&id];
        let ad = aad(id, &nonce);
        let tag = cipher
            .encrypt_in_place_detached(Nonce::from_slice(&nonce), ad.as_ref(), body)
            .expect("frames are far below the ChaCha20-Poly1305 length limit");
        (id, nonce, tag.into())
    }

    /// Authenticate and decrypt `body` in place; returns the sender prefix and counter.
    pub(crate) fn open(
        &self,
        key_id: u8,
        nonce: &[u8; 12],
        tag: &[u8; 16],
        aad: &[u8],
        body: &mut [u8],
    ) -> Result<([u8; 4], u64), OpenError> {
        let guard = self.keyring.read().expect("keyring lock");
        let cipher = guard.1.get(&key_id).ok_or(OpenError::UnknownKey { key_id })?;
        cipher
            .decrypt_in_place_detached(Nonce::from_slice(nonce), aad, body, Tag::from_slice(tag))
            .map_err(|_| OpenError::Forged { key_id })?;
        let sender: [u8; 4] = nonce[..4].try_into().expect("4 bytes");
        let counter = u64::from_be_bytes(nonce[4..].try_into().expect("8 bytes"));
        Ok((sender, counter))
    }

    /// Replay check for the frame that opens a TCP connection: each (sender,
    /// counter) opens at most one connection. Connections are read in any order, so
    /// this is an exact set (the last 65,536 openers) rather than a window.
    pub(crate) fn check_opener(&self, sender: [u8; 4], counter: u64) -> Result<(), OpenError> {
        const REMEMBERED: usize = 65_536;
        let mut guard = self.openers.lock().expect("opener lock");
        let (order, seen) = &mut *guard;
        if !seen.insert((sender, counter)) {
            return Err(OpenError::Replayed { counter });
        }
        order.push_back((sender, counter));
        if order.len() > REMEMBERED
            && let Some(old) = order.pop_front()
        {
            seen.remove(&old);
        }
        Ok(())
    }

    /// Replay check for a frame that travels alone (a multicast datagram): each
    /// (sender, counter) is accepted once, within a window of 1024 per sender.
    pub(crate) fn check_fresh(&self, sender: [u8; 4], counter: u64) -> Result<(), OpenError> {
        let mut guard = self.windows.lock().expect("replay lock");
        let (clock, windows) = &mut *guard;
        *clock += 1;
        if windows.len() >= Self::MAX_SENDERS && !windows.contains_key(&sender) {
            // Forget the sender heard from least recently.
            if let Some(oldest) = windows.iter().min_by_key(|(_, w)| w.touched).map(|(k, _)| *k) {
                windows.remove(&oldest);
            }
        }
        let window = windows.entry(sender).or_default();
        window.touched = *clock;
        if window.accept(counter) {
            Ok(())
        } else {
            Err(OpenError::Replayed { counter })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_window_accepts_each_counter_once_in_any_order() {
        let mut w = ReplayWindow::default();
        for c in [5u64, 3, 4, 1, 2, 2000, 1500, 1100] {
            assert!(w.accept(c), "{c} is new");
        }
        for c in [5u64, 2000, 1500, 1100] {
            assert!(!w.accept(c), "{c} is a replay");
        }
        assert!(!w.accept(3), "too old for the window");
        assert!(w.accept(1999));
    }

    #[test]
    fn key_file_round_trip_and_errors() {
        let ring = Keyring::generate(3, &mut rand::rng()).with_accepted(9, [7; 32]);
        let parsed = Keyring::parse(&ring.to_file_text()).unwrap();
        assert_eq!(parsed.send_id(), 3);
        assert_eq!(parsed.accepted_ids(), vec![3, 9]);
        assert!(matches!(
            Keyring::parse("1 notbase64!"),
            Err(KeyError::Malformed { line: 1, .. })
        ));
        assert!(matches!(Keyring::parse("# nothing\n"), Err(KeyError::Empty)));
        let short = format!("1 {}", base64::engine::general_purpose::STANDARD.encode([1u8; 16]));
        assert!(Keyring::parse(&short).unwrap_err().to_string().contains("needs 32"));
        assert!(!format!("{ring:?}").contains(&base64::engine::general_purpose::STANDARD.encode([7u8; 32])));
    }

    #[test]
    fn seal_open_tamper_replay_and_unknown_key() {
        let a = Sealer::new(Keyring::new(1, [1; 32]));
        let b = Sealer::new(Keyring::new(1, [1; 32]));
        let mut body = b"secret session".to_vec();
        let (id, nonce, tag) = a.seal(&mut body, |_, _| b"ad".to_vec());
        assert_ne!(&body[..], b"secret session");
        let sealed = body.clone();
        let (sender, counter) = b.open(id, &nonce, &tag, b"ad", &mut body).unwrap();
        assert_eq!(&body[..], b"secret session");
        b.check_fresh(sender, counter).unwrap();
        assert!(matches!(
            b.check_fresh(sender, counter),
            Err(OpenError::Replayed { .. })
        ));
        b.check_opener(sender, counter + 5000).unwrap();
        b.check_opener(sender, counter).unwrap();
        assert!(matches!(
            b.check_opener(sender, counter),
            Err(OpenError::Replayed { .. })
        ));
        let mut tampered = sealed.clone();
        tampered[0] ^= 1;
        let c = Sealer::new(Keyring::new(1, [1; 32]));
        assert!(matches!(
            c.open(id, &nonce, &tag, b"ad", &mut tampered),
            Err(OpenError::Forged { key_id: 1 })
        ));
        let other = Sealer::new(Keyring::new(1, [2; 32]));
        let mut body2 = sealed.clone();
        assert!(matches!(
            other.open(id, &nonce, &tag, b"ad", &mut body2),
            Err(OpenError::Forged { .. })
        ));
        let d = Sealer::new(Keyring::new(4, [1; 32]));
        let mut body3 = sealed;
        assert!(matches!(
            d.open(id, &nonce, &tag, b"ad", &mut body3),
            Err(OpenError::UnknownKey { key_id: 1 })
        ));
    }
}
