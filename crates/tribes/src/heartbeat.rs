//! Heartbeat datagrams: a member's description, sealed on its own (a datagram has no
//! handshake).
//!
//! ```text
//! offset size  field
//!  0      4    magic          b"TRBS"
//!  4      1    version        3
//!  5      1    kind           7 (heartbeat)
//!  6      1    flags          bit 0: sealed
//!  7      1    key id         the cluster key whose heartbeat key sealed it (0 when plain)
//!  8     24    nonce          random (XChaCha20-Poly1305), zero when plain
//! 32     16    tag            Poly1305 tag, zero when plain
//! 48      4    body length    big-endian u32, at most 64 KiB
//! 52      …    body           MessagePack of the sender's member, sequence and send time
//! ```
//!
//! Sealed with XChaCha20-Poly1305 under a key derived from the cluster key (HKDF,
//! its own label): a 192-bit random nonce per datagram, so processes that share the
//! key need no coordination and never repeat a nonce in practice (2^-96 for 2^48
//! datagrams). Every prefix byte but the tag is authenticated.
//!
//! Replay: the body carries the sender's member id (new on every start, so it names
//! the incarnation), a sequence that grows with each heartbeat, and the send time.
//! A receiver accepts each (member id, sequence) once within a 1024-wide window, and
//! refuses a heartbeat older than [`MAX_AGE_MS`] by its clock, so a recorded heartbeat
//! cannot bring back a member that left, or a member's previous start, even at a
//! receiver that restarted since. (This asks that members' clocks agree within that age.)

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Key, Tag, XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};

use crate::handshake::{MAX_VERSION, MIN_VERSION};
use crate::member::{Member, MemberId};
use crate::refusal::Refusal;
use crate::seal::Credentials;
use crate::wire::MAGIC;

/// Bytes before the body.
pub(crate) const PREFIX_LEN: usize = 52;
/// The largest body.
const MAX_BODY: usize = 64 * 1024;
/// A heartbeat older than this (by the receiver's clock) is refused.
pub(crate) const MAX_AGE_MS: u64 = 60_000;
const KIND: u8 = 7;
const SEALED: u8 = 1;

#[derive(Serialize, Deserialize)]
struct Body {
    member: Member,
    seq: u64,
    sent_at_ms: u64,
}

/// Receive-side replay protection: the highest sequence seen and a 1024-wide window.
#[derive(Debug, Default)]
pub(crate) struct ReplayWindow {
    max: u64,
    bits: [u64; 16],
    touched: u64,
}

impl ReplayWindow {
    const WIDTH: u64 = 1024;

    /// Whether `seq` is new; records it if so.
    pub(crate) fn accept(&mut self, seq: u64) -> bool {
        if seq > self.max || (self.max == 0 && self.bits == [0; 16]) {
            let shift = seq.saturating_sub(self.max);
            if shift >= Self::WIDTH {
                self.bits = [0; 16];
            } else {
                for _ in 0..shift {
                    self.shift_one();
                }
            }
            self.max = seq;
            self.set(0);
            return true;
        }
        let back = self.max - seq;
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

/// One node's heartbeats: the next sequence to send, and the windows of the
/// members heard from. Time and randomness are arguments.
#[derive(Debug, Default)]
pub(crate) struct Heartbeats {
    seq: AtomicU64,
    windows: Mutex<(u64, HashMap<MemberId, ReplayWindow>)>,
}

impl Heartbeats {
    /// Windows kept; the member heard from least recently is forgotten first (its
    /// old heartbeats are then refused by age).
    const MAX_MEMBERS: usize = 4096;

    /// The datagram announcing `member` at `now_ms`.
    pub(crate) fn seal(
        &self,
        credentials: Option<&Credentials>,
        member: &Member,
        now_ms: u64,
        rng: &mut impl rand::RngCore,
    ) -> Vec<u8> {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let body = rmp_serde::to_vec(&Body {
            member: member.clone(),
            seq,
            sent_at_ms: now_ms,
        })
        .expect("plain data");
        let mut out = vec![0u8; PREFIX_LEN];
        out[..4].copy_from_slice(&MAGIC);
        out[4] = MAX_VERSION;
        out[5] = KIND;
        out[48..52].copy_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        if let Some(c) = credentials {
            let (key_id, key) = c.heartbeat_send();
            out[6] = SEALED;
            out[7] = key_id;
            rng.fill_bytes(&mut out[8..32]);
            let (head, body) = out.split_at_mut(PREFIX_LEN);
            let nonce = *XNonce::from_slice(&head[8..32]);
            let tag = XChaCha20Poly1305::new(Key::from_slice(key))
                .encrypt_in_place_detached(&nonce, &aad(head), body)
                .expect("heartbeats are far below the length limit");
            head[32..48].copy_from_slice(&tag);
        }
        out
    }

    /// The member a datagram announces, or why it is refused. Nothing is recorded
    /// for a refused datagram.
    pub(crate) fn open(
        &self,
        credentials: Option<&Credentials>,
        datagram: &[u8],
        now_ms: u64,
    ) -> Result<Member, Refusal> {
        let malformed = |what: String| Refusal::Malformed { what };
        if datagram.len() < 5 || datagram[..4] != MAGIC {
            return Err(malformed(format!(
                "a datagram of {} bytes that is not a tribes heartbeat",
                datagram.len()
            )));
        }
        if !(MIN_VERSION..=MAX_VERSION).contains(&datagram[4]) {
            return Err(Refusal::VersionMismatch {
                peer_min: datagram[4],
                peer_max: datagram[4],
                min: MIN_VERSION,
                max: MAX_VERSION,
            });
        }
        if datagram.len() < PREFIX_LEN || datagram[5] != KIND {
            return Err(malformed("a short datagram, or not a heartbeat".into()));
        }
        let len = u32::from_be_bytes(datagram[48..52].try_into().expect("4 bytes")) as usize;
        if len > MAX_BODY || datagram.len() != PREFIX_LEN + len {
            return Err(malformed(format!(
                "the heartbeat announces {len} body bytes, the datagram has {}",
                datagram.len() - PREFIX_LEN
            )));
        }
        let mut body = datagram[PREFIX_LEN..].to_vec();
        let key_id = datagram[7];
        match (datagram[6] & SEALED != 0, credentials) {
            (true, Some(c)) => {
                let key = c.heartbeat_key(key_id).ok_or_else(|| Refusal::UnknownKeyId {
                    key_id,
                    accepted: c.accepted_ids(),
                })?;
                let head = &datagram[..PREFIX_LEN];
                XChaCha20Poly1305::new(Key::from_slice(key))
                    .decrypt_in_place_detached(
                        XNonce::from_slice(&head[8..32]),
                        &aad(head),
                        &mut body,
                        Tag::from_slice(&head[32..48]),
                    )
                    .map_err(|_| Refusal::OtherCluster { key_id })?;
            }
            (false, None) => {}
            (false, Some(_)) => return Err(Refusal::PlainText { peer_plain: true }),
            (true, None) => return Err(Refusal::PlainText { peer_plain: false }),
        }
        let body: Body = rmp_serde::from_slice(&body).map_err(|e| malformed(format!("heartbeat body: {e}")))?;
        if now_ms.saturating_sub(body.sent_at_ms) > MAX_AGE_MS {
            return Err(Refusal::Replay {
                what: "a heartbeat sent more than 60 s ago (or the sender's clock is that far behind)",
            });
        }
        let mut guard = self.windows.lock().expect("heartbeat windows lock");
        let (clock, windows) = &mut *guard;
        *clock += 1;
        if windows.len() >= Self::MAX_MEMBERS
            && !windows.contains_key(&body.member.id)
            && let Some(oldest) = windows.iter().min_by_key(|(_, w)| w.touched).map(|(k, _)| *k)
        {
            windows.remove(&oldest);
        }
        let window = windows.entry(body.member.id).or_default();
        window.touched = *clock;
        if !window.accept(body.seq) {
            return Err(Refusal::Replay {
                what: "a heartbeat whose sequence number this node has seen before",
            });
        }
        Ok(body.member)
    }
}

/// Every prefix byte but the tag.
fn aad(head: &[u8]) -> [u8; 36] {
    let mut aad = [0u8; 36];
    aad[..32].copy_from_slice(&head[..32]);
    aad[32..].copy_from_slice(&head[48..52]);
    aad
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::refusal::RefusalReason;
    use crate::seal::Keyring;

    fn member(id: u8) -> Member {
        Member::new(MemberId::from_bytes([id; 16]), "a", "d", ([127, 0, 0, 1], 1).into(), 0)
    }

    #[test]
    fn replay_window_accepts_each_sequence_once_in_any_order() {
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
    fn a_heartbeat_opens_once_and_never_when_old_tampered_or_foreign() {
        let c = Credentials::new(Keyring::new(1, [3; 32]));
        let tx = Heartbeats::default();
        let rx = Heartbeats::default();
        let rng = &mut rand::rng();
        let beat = tx.seal(Some(&c), &member(1), 1_000_000, rng);
        assert_eq!(rx.open(Some(&c), &beat, 1_000_500).unwrap(), member(1));
        let again = rx.open(Some(&c), &beat, 1_000_600).unwrap_err();
        assert_eq!(again.reason(), RefusalReason::Replay);
        // A receiver that restarted has no window: the age refuses it.
        let fresh = Heartbeats::default();
        let old = fresh.open(Some(&c), &beat, 1_000_000 + MAX_AGE_MS + 1).unwrap_err();
        assert_eq!(old.reason(), RefusalReason::Replay);
        // Each prefix or body byte flipped: refused.
        for i in (0..beat.len()).filter(|i| !(8..32).contains(i) || i % 7 == 0) {
            let mut bad = beat.clone();
            bad[i] ^= 1;
            assert!(
                Heartbeats::default().open(Some(&c), &bad, 1_000_000).is_err(),
                "byte {i}"
            );
        }
        let other = Credentials::new(Keyring::new(1, [4; 32]));
        let e = Heartbeats::default().open(Some(&other), &beat, 1_000_000).unwrap_err();
        assert_eq!(e.reason(), RefusalReason::OtherCluster);
        let plain = tx.seal(None, &member(1), 1_000_000, rng);
        let e = Heartbeats::default().open(Some(&c), &plain, 1_000_000).unwrap_err();
        assert_eq!(e.reason(), RefusalReason::PlainText);
        assert!(Heartbeats::default().open(None, &plain, 1_000_000).is_ok());
    }

    /// The nonce argument is the docs' (random 192 bits); this checks that the
    /// nonces really come from the generator: 10,000 "process starts" under one key,
    /// each sealing its first heartbeat, never repeat a nonce.
    #[test]
    fn ten_thousand_starts_under_one_key_never_repeat_a_nonce() {
        let c = Credentials::new(Keyring::new(1, [3; 32]));
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let start = Heartbeats::default();
            let beat = start.seal(Some(&c), &member(1), 1, &mut rand::rng());
            assert!(seen.insert(beat[8..32].to_vec()), "a nonce repeated");
        }
    }
}
