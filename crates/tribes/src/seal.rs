//! The cluster key file ([`Keyring`]), node identities ([`NodeIdentity`]) and the
//! keys derived from them ([`Credentials`]).
//!
//! The cluster key is never used to seal anything directly. HKDF-SHA256 derives
//! from it, with distinct labels, the pre-shared key of the Noise handshake that
//! opens every connection (`handshake.rs`; each connection then gets fresh keys of
//! its own) and the key of the heartbeat datagrams (`heartbeat.rs`, XChaCha20-Poly1305
//! with random 192-bit nonces). See `docs/security.md`.
//!
//! A [`Keyring`] has one key to offer and any number of keys accepted, each with a
//! one-byte id, so keys rotate across a running cluster without downtime: accept the
//! new key everywhere, then offer it everywhere, then retire the old one
//! ([`crate::Channel::set_keyring`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use base64::Engine;

/// The Noise protocol every sealed connection runs (the handshake's, and the static
/// key pairs' kind).
pub(crate) const PROTOCOL: &str = "Noise_XXpsk0_25519_ChaChaPoly_BLAKE2s";

/// Why a cluster key could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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

/// A node's own static key pair (X25519), its identity in the handshake.
///
/// Without one a node draws a fresh key pair at start, which is enough while no
/// allow-list is configured. With [`crate::ChannelBuilder::with_allowed_peers`], only
/// nodes whose public key is listed are accepted, so one stolen node can be shut
/// out by removing its key from the list, without re-keying the cluster.
#[derive(Clone)]
pub struct NodeIdentity {
    private: [u8; 32],
    public: [u8; 32],
}

impl fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the private key.
        f.debug_struct("NodeIdentity")
            .field("public", &self.public_key())
            .finish()
    }
}

/// The public half of a [`NodeIdentity`], written as base64.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublicKey([u8; 32]);

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&base64::engine::general_purpose::STANDARD.encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl std::str::FromStr for PublicKey {
    type Err = KeyError;

    /// Parse the base64 of 32 bytes.
    fn from_str(s: &str) -> Result<Self, KeyError> {
        decode_key(s.trim(), 1).map(PublicKey)
    }
}

fn decode_key(b64: &str, line: usize) -> Result<[u8; 32], KeyError> {
    let bad = |reason: String| KeyError::Malformed { line, reason };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| bad(format!("not base64: {e}")))?;
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| bad(format!("the key has {} bytes, it needs 32", b.len())))
}

impl NodeIdentity {
    /// A fresh key pair from the operating system's random source.
    pub fn generate() -> Self {
        let pair = snow::Builder::new(PROTOCOL.parse().expect("valid"))
            .generate_keypair()
            .expect("the operating system's random source works");
        NodeIdentity {
            private: pair.private.try_into().expect("32 bytes"),
            public: pair.public.try_into().expect("32 bytes"),
        }
    }

    /// The identity with this private key (the public key is computed from it).
    pub fn from_private(private: [u8; 32]) -> Self {
        NodeIdentity {
            private,
            public: x25519_public(&private),
        }
    }

    /// Parse the identity file: the base64 of the 32-byte private key.
    ///
    /// # Errors
    /// [`KeyError::Malformed`] when it is not base64 of 32 bytes.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let line = text
            .lines()
            .map(|l| l.split('#').next().unwrap_or("").trim())
            .find(|l| !l.is_empty())
            .ok_or(KeyError::Empty)?;
        decode_key(line, 1).map(Self::from_private)
    }

    /// The identity file text (keep it private, like the cluster key).
    pub fn to_file_text(&self) -> String {
        format!(
            "# tribes node identity (private key); its public key is {}\n{}\n",
            self.public_key(),
            base64::engine::general_purpose::STANDARD.encode(self.private)
        )
    }

    /// The public key, to put on the other members' allow-lists.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.public)
    }
}

/// X25519 base-point multiplication, through curve25519-dalek (snow's own backend).
fn x25519_public(private: &[u8; 32]) -> [u8; 32] {
    curve25519_dalek::MontgomeryPoint::mul_base_clamped(*private).to_bytes()
}

/// HKDF-SHA256 of the cluster key with a label: one key per use, never the key itself.
fn derive(key: &[u8; 32], label: &[u8]) -> [u8; 32] {
    let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(b"tribes cluster key"), key);
    let mut out = [0u8; 32];
    hk.expand(label, &mut out)
        .expect("32 bytes is a valid HKDF-SHA256 length");
    out
}

/// What a sealed node proves itself with: the keyring's derived keys, its static
/// key pair and the allow-list, if any. Replaced whole when the keyring changes.
#[derive(Clone)]
pub(crate) struct Credentials {
    keyring: Keyring,
    psks: BTreeMap<u8, [u8; 32]>,
    heartbeat_keys: BTreeMap<u8, [u8; 32]>,
    identity: NodeIdentity,
    allowed: Option<BTreeSet<PublicKey>>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("keyring", &self.keyring)
            .field("identity", &self.identity)
            .finish()
    }
}

impl Credentials {
    /// Credentials with a fresh identity and no allow-list.
    #[cfg(test)]
    pub(crate) fn new(keyring: Keyring) -> Self {
        Self::with_identity(keyring, NodeIdentity::generate(), None)
    }

    pub(crate) fn with_identity(
        keyring: Keyring,
        identity: NodeIdentity,
        allowed: Option<BTreeSet<PublicKey>>,
    ) -> Self {
        let psks = keyring
            .keys
            .iter()
            .map(|(id, k)| (*id, derive(k, b"noise psk v3")))
            .collect();
        let heartbeat_keys = keyring
            .keys
            .iter()
            .map(|(id, k)| (*id, derive(k, b"heartbeat v3")))
            .collect();
        Credentials {
            keyring,
            psks,
            heartbeat_keys,
            identity,
            allowed,
        }
    }

    /// The same identity and allow-list with another keyring.
    pub(crate) fn with_keyring(&self, keyring: Keyring) -> Self {
        Self::with_identity(keyring, self.identity.clone(), self.allowed.clone())
    }

    /// The same keyring and identity with another allow-list.
    pub(crate) fn with_allowed(&self, allowed: Option<BTreeSet<PublicKey>>) -> Self {
        Self::with_identity(self.keyring.clone(), self.identity.clone(), allowed)
    }

    pub(crate) fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    pub(crate) fn identity(&self) -> &NodeIdentity {
        &self.identity
    }

    pub(crate) fn allowed(&self) -> Option<&BTreeSet<PublicKey>> {
        self.allowed.as_ref()
    }

    /// The id and PSK of the key this node offers.
    pub(crate) fn send_psk(&self) -> (u8, [u8; 32]) {
        (self.keyring.send, self.psks[&self.keyring.send])
    }

    /// The PSK of an accepted key id.
    pub(crate) fn accepted_psk(&self, key_id: u8) -> Option<[u8; 32]> {
        self.psks.get(&key_id).copied()
    }

    pub(crate) fn accepted_ids(&self) -> Vec<u8> {
        self.keyring.accepted_ids()
    }

    /// The id and heartbeat key this node seals heartbeats with.
    pub(crate) fn heartbeat_send(&self) -> (u8, &[u8; 32]) {
        (self.keyring.send, &self.heartbeat_keys[&self.keyring.send])
    }

    /// The heartbeat key of an accepted key id.
    pub(crate) fn heartbeat_key(&self, key_id: u8) -> Option<&[u8; 32]> {
        self.heartbeat_keys.get(&key_id)
    }

    pub(crate) fn static_private(&self) -> &[u8] {
        &self.identity.private
    }

    /// Refuse a peer whose static key is not on the allow-list (if there is one).
    pub(crate) fn check_allowed(&self, remote: &[u8]) -> Result<(), crate::refusal::Refusal> {
        let Some(allowed) = &self.allowed else {
            return Ok(());
        };
        let key = PublicKey(remote.try_into().unwrap_or([0; 32]));
        if allowed.contains(&key) {
            Ok(())
        } else {
            Err(crate::refusal::Refusal::Revoked {
                public_key: key.to_string(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn identities_round_trip_and_match_what_the_handshake_sends() {
        let id = NodeIdentity::generate();
        let parsed = NodeIdentity::parse(&id.to_file_text()).unwrap();
        assert_eq!(parsed.public_key(), id.public_key());
        assert!(!format!("{id:?}").contains(&base64::engine::general_purpose::STANDARD.encode(id.private)));
        let text = id.public_key().to_string();
        assert_eq!(text.parse::<PublicKey>().unwrap(), id.public_key());
        assert!("abc".parse::<PublicKey>().is_err());
    }

    #[test]
    fn derived_keys_differ_per_use_and_per_key() {
        let a = Credentials::new(Keyring::new(1, [1; 32]));
        let b = Credentials::new(Keyring::new(1, [2; 32]));
        assert_ne!(a.send_psk().1, a.heartbeat_send().1.to_owned());
        assert_ne!(a.send_psk().1, [1; 32], "the key itself is never used");
        assert_ne!(a.send_psk().1, b.send_psk().1);
        let allowed = a.with_allowed(Some([a.identity().public_key()].into()));
        assert!(allowed.check_allowed(&a.identity().public_key().0).is_ok());
        let other = NodeIdentity::generate();
        let err = allowed.check_allowed(&other.public_key().0).unwrap_err();
        assert_eq!(err.reason(), crate::refusal::RefusalReason::Revoked);
    }
}
