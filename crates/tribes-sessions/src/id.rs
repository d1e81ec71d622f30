//! Session ids: 128 random bits, URL-safe base64 text without dots.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// A session's key: 128 bits from a CSPRNG, shown as 22 characters of URL-safe base64.
///
/// The id never contains a dot, so the cookie value `id.route` (Tomcat's `jvmRoute`
/// suffix) splits unambiguously with [`SessionId::parse_cookie`]. The route is metadata
/// of the session, not part of its key: rebinding a session to another node never
/// changes its id.
///
/// # Examples
/// ```
/// use tribes_sessions::SessionId;
/// let id = SessionId::generate(&mut rand::rng());
/// let text = id.to_string();
/// assert_eq!(text.len(), 22);
/// assert_eq!(text.parse::<SessionId>().unwrap(), id);
/// let cookie = format!("{text}.node-a");
/// let (parsed, route) = SessionId::parse_cookie(&cookie).unwrap();
/// assert_eq!((parsed, route), (id, Some("node-a")));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SessionId(#[serde(with = "serde_bytes")] [u8; 16]);

impl SessionId {
    /// A fresh id from the given random number generator (pass `&mut rand::rng()`,
    /// a CSPRNG, outside tests).
    pub fn generate<R: rand::Rng + ?Sized>(rng: &mut R) -> Self {
        let mut bytes = [0u8; 16];
        rng.fill_bytes(&mut bytes);
        SessionId(bytes)
    }

    /// The id from its 16 raw bytes.
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        SessionId(bytes)
    }

    /// The 16 raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// Splits a cookie value `id` or `id.route` into the id and the route.
    ///
    /// # Errors
    /// [`ParseIdError`] when the id part is not 22 characters of URL-safe base64.
    pub fn parse_cookie(value: &str) -> Result<(SessionId, Option<&str>), ParseIdError> {
        match value.split_once('.') {
            Some((id, route)) => Ok((id.parse()?, Some(route))),
            None => Ok((value.parse()?, None)),
        }
    }

    pub(crate) fn hash64(&self) -> u64 {
        u64::from_le_bytes(self.0[..8].try_into().expect("8 bytes"))
            ^ u64::from_le_bytes(self.0[8..].try_into().expect("8 bytes"))
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = [0u8; 22];
        let mut bits: u32 = 0;
        let mut nbits = 0;
        let mut o = 0;
        for &b in &self.0 {
            bits = (bits << 8) | u32::from(b);
            nbits += 8;
            while nbits >= 6 {
                nbits -= 6;
                out[o] = ALPHABET[((bits >> nbits) & 63) as usize];
                o += 1;
            }
        }
        if nbits > 0 {
            out[o] = ALPHABET[((bits << (6 - nbits)) & 63) as usize];
        }
        f.write_str(std::str::from_utf8(&out).expect("ascii"))
    }
}

impl SessionId {
    /// A short, stable hash of the id for logs (OWASP: never log a session id in
    /// full). The same id gives the same text on every node, so log lines correlate,
    /// but the 32-bit hash reveals nothing usable of the 128-bit id.
    pub fn log_id(&self) -> LogId {
        LogId::of_bytes(&self.0)
    }
}

/// FNV-1a, 64 bits: fixed by this code, so every node, run and build gives the same
/// hash (std's `DefaultHasher` may change between Rust releases). For log ids and the
/// anti-entropy fingerprints; not a defence against a chosen input.
pub(crate) fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The FNV-1a offset basis, the start of every [`fnv1a`] hash.
pub(crate) const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// The log form of a [`SessionId`]: `#` and 8 hex digits of a hash of the id.
///
/// Error messages and log lines show this, never the id itself. Code that needs the id
/// has it from the value that failed (for example [`StoreError::id`](crate::StoreError::id)).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct LogId(u32);

impl LogId {
    /// The log form of an id given as text (a store key, a cookie value `id.route`):
    /// the same as [`SessionId::log_id`] when the text is a session id, so store errors
    /// and log lines about one session correlate; otherwise a hash of the text.
    ///
    /// Operators can map the ids a store lists to what its errors show:
    /// ```
    /// use tribes_sessions::{LogId, SessionId};
    /// let id = SessionId::generate(&mut rand::rng());
    /// assert_eq!(LogId::of_text(&id.to_string()), id.log_id());
    /// assert_eq!(LogId::of_text(&format!("{id}.node-a")), id.log_id());
    /// assert!(!LogId::of_text("some-other-key").to_string().contains("some"));
    /// ```
    pub fn of_text(text: &str) -> LogId {
        if let Ok((id, _)) = SessionId::parse_cookie(text) {
            return id.log_id();
        }
        LogId::of_bytes(text.as_bytes())
    }

    fn of_bytes(bytes: &[u8]) -> LogId {
        let h = fnv1a(FNV_OFFSET, bytes);
        LogId((h ^ (h >> 32)) as u32)
    }
}

impl fmt::Display for LogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{:08x}", self.0)
    }
}

impl fmt::Debug for LogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Parses a log hash as logs and pages show it, `#1a2b3c4d` (the `#` may be left out;
/// hex digits in either case).
///
/// ```
/// use tribes_sessions::{LogId, SessionId};
/// let id = SessionId::generate(&mut rand::rng());
/// let shown = id.log_id().to_string();
/// assert_eq!(shown.parse::<LogId>().unwrap(), id.log_id());
/// assert_eq!(shown[1..].to_uppercase().parse::<LogId>().unwrap(), id.log_id());
/// assert!("#12345".parse::<LogId>().is_err());
/// ```
impl FromStr for LogId {
    type Err = ParseLogIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex = s.trim().strip_prefix('#').unwrap_or(s.trim());
        if hex.len() != 8 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ParseLogIdError { given_len: s.len() });
        }
        u32::from_str_radix(hex, 16)
            .map(LogId)
            .map_err(|_| ParseLogIdError { given_len: s.len() })
    }
}

/// A text is not a log hash (`#` and 8 hex digits).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "not a session log hash ({given_len} characters given): expected # and 8 hex digits, such as #1a2b3c4d, as logs and pages show it"
)]
pub struct ParseLogIdError {
    given_len: usize,
}

/// Debug output shows only [`SessionId::log_id`], so `?id` in a log is safe;
/// `Display` gives the id itself (for cookies).
impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({})", self.log_id())
    }
}

/// A session id's text is not 22 characters of URL-safe base64.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a session id: {reason} (expected 22 characters of URL-safe base64, as made by SessionId::generate)")]
pub struct ParseIdError {
    reason: &'static str,
}

impl FromStr for SessionId {
    type Err = ParseIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.as_bytes();
        if s.len() != 22 {
            return Err(ParseIdError { reason: "wrong length" });
        }
        let mut out = [0u8; 16];
        let mut bits: u32 = 0;
        let mut nbits = 0;
        let mut o = 0;
        for (i, &c) in s.iter().enumerate() {
            let v = match c {
                b'A'..=b'Z' => c - b'A',
                b'a'..=b'z' => c - b'a' + 26,
                b'0'..=b'9' => c - b'0' + 52,
                b'-' => 62,
                b'_' => 63,
                _ => {
                    return Err(ParseIdError {
                        reason: "invalid character",
                    });
                }
            };
            if i == 21 && v & 0b1111 != 0 {
                return Err(ParseIdError {
                    reason: "non-canonical last character",
                });
            }
            bits = (bits << 6) | u32::from(v);
            nbits += 6;
            if nbits >= 8 {
                nbits -= 8;
                if o < 16 {
                    out[o] = (bits >> nbits) as u8;
                }
                o += 1;
            }
        }
        Ok(SessionId(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let mut rng = rand::rng();
        for _ in 0..1000 {
            let id = SessionId::generate(&mut rng);
            let s = id.to_string();
            assert_eq!(s.len(), 22);
            assert!(!s.contains('.'));
            assert_eq!(s.parse::<SessionId>().unwrap(), id);
        }
        assert!("short".parse::<SessionId>().is_err());
        assert!("AAAAAAAAAAAAAAAAAAAAA=".parse::<SessionId>().is_err());
        assert!("AAAAAAAAAAAAAAAAAAAAAB".parse::<SessionId>().is_err());
        assert_eq!(SessionId::from_bytes([0xff; 16]).to_string(), "_____________________w");
    }

    #[test]
    fn logs_show_a_stable_hash_never_the_id() {
        let id = SessionId::generate(&mut rand::rng());
        let full = id.to_string();
        let log = id.log_id().to_string();
        assert_eq!(log.len(), 9, "{log}");
        assert!(log.starts_with('#'));
        assert_eq!(log, id.log_id().to_string(), "stable, so nodes' logs correlate");
        let debug = format!("{id:?}");
        assert!(!debug.contains(&full), "Debug must not print the id: {debug}");
        assert!(!debug.contains(&full[..8]), "not even a prefix: {debug}");
    }
}
