//! The stored form of a session, and the one binary layout every backend keeps it in.
//!
//! ```text
//! offset len  field
//!      0   8  magic b"TRIBSESS"
//!      8   2  format (u16 BE, this build writes and reads 1)
//!     10   2  flags (u16 BE, 0)
//!     12   8  version
//!     20   8  created_ms
//!     28   8  last_access_ms
//!     36   8  max_inactive_secs
//!     44   8  expires_at_ms
//!     52   2  id length
//!     54   4  data length
//!     58   4  CRC-32 (IEEE) of bytes 0..58, the id and the data
//!     62   .  id (UTF-8), then data
//! ```
//!
//! The file store writes exactly this; PostgreSQL and Redis keep it in one bytes column or
//! field beside the few values their queries need (version, expiry). Decoding checks magic,
//! format, lengths and checksum before it trusts anything, so a torn, truncated or foreign
//! record is reported as [`StoreError::Corrupt`](super::StoreError::Corrupt), never
//! misread.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::cause::Cause;
use crate::id::{LogId, SessionId};

pub(crate) const MAGIC: &[u8; 8] = b"TRIBSESS";
pub(crate) const FORMAT: u16 = 1;
pub(crate) const HEADER_LEN: usize = 62;

/// One session as a store keeps it: its metadata in clear and its contents as opaque bytes.
///
/// The store never looks inside `data`; the session manager fills it (MessagePack of the
/// session's attributes) and reads it back. All times are milliseconds since the Unix epoch,
/// measured with the system clock, because stores (Redis natively) expire records by the
/// system clock.
///
/// # Examples
/// ```
/// use std::time::{Duration, SystemTime};
/// use tribes_sessions::StoredSession;
///
/// let now = SystemTime::now();
/// let id = tribes_sessions::SessionId::generate(&mut rand::rng());
/// let record = StoredSession::new(id, 1, now, Duration::from_secs(1800), vec![0x80]);
/// assert!(!record.is_expired(now));
/// assert!(record.is_expired(now + Duration::from_secs(1800)));
/// ```
///
/// `Debug` shows the id as its log hash ([`LogId`](crate::LogId)) and only the length of
/// `data`: both are secrets (the id grants the session, the data is the user's).
#[derive(Clone, PartialEq, Eq)]
pub struct StoredSession {
    /// The session id (kept as its text, 22 characters of URL-safe base64, in file names,
    /// keys and the record).
    pub id: SessionId,
    /// The session version; optimistic concurrency compares it (see
    /// [`SessionStore::save`](super::SessionStore::save)).
    pub version: u64,
    /// When the session was created, ms since the Unix epoch.
    pub created_ms: u64,
    /// When the session was last accessed, ms since the Unix epoch.
    pub last_access_ms: u64,
    /// The inactivity timeout in seconds.
    pub max_inactive_secs: u64,
    /// When the store may forget the record, ms since the Unix epoch (usually
    /// `last_access_ms + max_inactive_secs * 1000`; `u64::MAX` for never).
    pub expires_at_ms: u64,
    /// The session's contents, opaque to the store.
    pub data: Vec<u8>,
}

impl std::fmt::Debug for StoredSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredSession")
            .field("id", &self.id.log_id())
            .field("version", &self.version)
            .field("created_ms", &self.created_ms)
            .field("last_access_ms", &self.last_access_ms)
            .field("max_inactive_secs", &self.max_inactive_secs)
            .field("expires_at_ms", &self.expires_at_ms)
            .field("data_len", &self.data.len())
            .finish()
    }
}

impl StoredSession {
    /// A record accessed at `now` that expires `max_inactive` later.
    pub fn new(id: SessionId, version: u64, now: SystemTime, max_inactive: std::time::Duration, data: Vec<u8>) -> Self {
        let now_ms = unix_ms(now);
        let max_inactive_secs = max_inactive.as_secs();
        StoredSession {
            id,
            version,
            created_ms: now_ms,
            last_access_ms: now_ms,
            max_inactive_secs,
            expires_at_ms: now_ms.saturating_add(max_inactive_secs.saturating_mul(1000)),
            data,
        }
    }

    /// Whether the record has expired at `now` (`expires_at_ms <= now`).
    pub fn is_expired(&self, now: SystemTime) -> bool {
        self.expires_at_ms <= unix_ms(now)
    }
}

/// What is wrong with a stored record: the cause of a [`StoreError::Corrupt`] or
/// [`StoreError::InvalidRecord`](super::StoreError::InvalidRecord) that this crate found
/// itself (reach it with [`Cause::downcast_ref`](crate::Cause::downcast_ref) or
/// [`source()`](std::error::Error::source)).
///
/// [`StoreError::Corrupt`]: super::StoreError::Corrupt
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// Shorter than a record's fixed header.
    #[error("truncated: {len} bytes, a record has at least {min}")]
    Truncated {
        /// The record's length.
        len: usize,
        /// The header's length.
        min: usize,
    },
    /// The bytes do not start with the magic of a record.
    #[error("not a tribes session record (bad magic)")]
    NotARecord,
    /// Written by a newer version of this crate: upgrade this node.
    #[error(
        "written by a newer version of tribes-sessions (record format {format}, this build reads up to {supported})"
    )]
    NewerFormat {
        /// The record's format.
        format: u16,
        /// The newest format this build reads.
        supported: u16,
    },
    /// A record format that no version writes.
    #[error("record format {format} does not exist")]
    UnknownFormat {
        /// The record's format.
        format: u16,
    },
    /// The header's lengths do not add up to the record's.
    #[error("length mismatch: the header announces {announced} bytes, the record has {len}")]
    LengthMismatch {
        /// The length the header announces.
        announced: usize,
        /// The record's length.
        len: usize,
    },
    /// Damaged bytes: the checksum does not match.
    #[error("checksum mismatch (stored {stored:08x}, computed {computed:08x})")]
    ChecksumMismatch {
        /// The stored CRC-32.
        stored: u32,
        /// The CRC-32 of the bytes.
        computed: u32,
    },
    /// The id in the record is not UTF-8.
    #[error("the id in the record is not UTF-8")]
    IdNotUtf8,
    /// The record, or the session data in it, is another session's.
    #[error("the record belongs to session {other}")]
    OtherSession {
        /// The other session, as its log hash.
        other: LogId,
    },
    /// The version a store keeps beside the record (a column, a hash field) is not the
    /// record's.
    #[error("the {index} ({indexed}) disagrees with the record ({record})")]
    VersionMismatch {
        /// Where the store keeps the version, such as `version column`.
        index: &'static str,
        /// The version found there, as stored.
        indexed: String,
        /// The record's version.
        record: u64,
    },
    /// The session data in the record does not decode: written by an incompatible build.
    #[error("the session data does not decode ({cause}): written by an incompatible build?")]
    Data {
        /// The decoder's error (an `rmp_serde::decode::Error`).
        #[source]
        cause: Cause,
    },
    /// The session data has a format this build does not read.
    #[error("session data format {format} (this build reads {supported}): upgrade every node to the same release")]
    DataFormat {
        /// The data's format.
        format: u8,
        /// The format this build reads.
        supported: u8,
    },
    /// A Redis key of the store holds no hash (Redis answered `WRONGTYPE`).
    #[error("the key is not a tribes session hash")]
    NotAHash,
    /// A Redis hash of the store lacks its field `v` or `r`.
    #[error("the hash lacks its field v or r")]
    MissingField,
    /// The session data is too large for a record (4 GiB or more).
    #[error("its data is {len} bytes, the limit is 4 GiB")]
    DataTooLarge {
        /// The data's length.
        len: usize,
    },
}

/// Milliseconds since the Unix epoch (0 before it, saturating far after it).
pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Encodes a record in the layout above.
pub(crate) fn encode(record: &StoredSession) -> Vec<u8> {
    let id = record.id.to_string();
    let id = id.as_bytes();
    let mut out = Vec::with_capacity(HEADER_LEN + id.len() + record.data.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    for v in [
        record.version,
        record.created_ms,
        record.last_access_ms,
        record.max_inactive_secs,
        record.expires_at_ms,
    ] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    // An id is 22 bytes of text; data over 4 GiB is refused by `check_record`.
    out.extend_from_slice(&(id.len() as u16).to_be_bytes());
    out.extend_from_slice(&(record.data.len() as u32).to_be_bytes());
    let mut crc = Crc32::new();
    crc.update(&out);
    crc.update(id);
    crc.update(&record.data);
    out.extend_from_slice(&crc.finish().to_be_bytes());
    out.extend_from_slice(id);
    out.extend_from_slice(&record.data);
    out
}

/// Whether the record's data fits the layout's 32-bit length.
pub(crate) fn data_fits(record: &StoredSession) -> bool {
    u32::try_from(record.data.len()).is_ok()
}

/// The metadata fields of a header, without id and data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) version: u64,
    pub(crate) created_ms: u64,
    pub(crate) last_access_ms: u64,
    pub(crate) max_inactive_secs: u64,
    pub(crate) expires_at_ms: u64,
    pub(crate) id_len: usize,
    pub(crate) data_len: usize,
    pub(crate) crc: u32,
}

fn be_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

/// Decodes and checks the fixed header (the first [`HEADER_LEN`] bytes).
pub(crate) fn decode_header(bytes: &[u8]) -> Result<Header, RecordError> {
    if bytes.len() < HEADER_LEN {
        return Err(RecordError::Truncated {
            len: bytes.len(),
            min: HEADER_LEN,
        });
    }
    if &bytes[..8] != MAGIC {
        return Err(RecordError::NotARecord);
    }
    let format = u16::from_be_bytes([bytes[8], bytes[9]]);
    if format > FORMAT {
        return Err(RecordError::NewerFormat {
            format,
            supported: FORMAT,
        });
    }
    if format == 0 {
        return Err(RecordError::UnknownFormat { format });
    }
    Ok(Header {
        version: be_u64(bytes, 12),
        created_ms: be_u64(bytes, 20),
        last_access_ms: be_u64(bytes, 28),
        max_inactive_secs: be_u64(bytes, 36),
        expires_at_ms: be_u64(bytes, 44),
        id_len: usize::from(u16::from_be_bytes([bytes[52], bytes[53]])),
        data_len: u32::from_be_bytes([bytes[54], bytes[55], bytes[56], bytes[57]]) as usize,
        crc: u32::from_be_bytes([bytes[58], bytes[59], bytes[60], bytes[61]]),
    })
}

/// Decodes a whole record and checks that it belongs to `expected_id`.
pub(crate) fn decode(bytes: &[u8], expected_id: &SessionId) -> Result<StoredSession, RecordError> {
    let h = decode_header(bytes)?;
    let want = HEADER_LEN + h.id_len + h.data_len;
    if bytes.len() != want {
        return Err(RecordError::LengthMismatch {
            announced: want,
            len: bytes.len(),
        });
    }
    let mut crc = Crc32::new();
    crc.update(&bytes[..58]);
    crc.update(&bytes[HEADER_LEN..]);
    let crc = crc.finish();
    if crc != h.crc {
        return Err(RecordError::ChecksumMismatch {
            stored: h.crc,
            computed: crc,
        });
    }
    let id = std::str::from_utf8(&bytes[HEADER_LEN..HEADER_LEN + h.id_len]).map_err(|_| RecordError::IdNotUtf8)?;
    if id != expected_id.to_string() {
        return Err(RecordError::OtherSession {
            other: LogId::of_text(id),
        });
    }
    Ok(StoredSession {
        id: *expected_id,
        version: h.version,
        created_ms: h.created_ms,
        last_access_ms: h.last_access_ms,
        max_inactive_secs: h.max_inactive_secs,
        expires_at_ms: h.expires_at_ms,
        data: bytes[HEADER_LEN + h.id_len..].to_vec(),
    })
}

/// CRC-32 (IEEE 802.3, reflected, as zlib and PNG).
struct Crc32(u32);

const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

impl Crc32 {
    fn new() -> Self {
        Crc32(0xFFFF_FFFF)
    }

    fn update(&mut self, bytes: &[u8]) {
        let mut c = self.0;
        for &b in bytes {
            c = CRC_TABLE[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8);
        }
        self.0 = c;
    }

    fn finish(&self) -> u32 {
        self.0 ^ 0xFFFF_FFFF
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> StoredSession {
        StoredSession {
            id: SessionId::from_bytes([7; 16]),
            version: 7,
            created_ms: 1,
            last_access_ms: 2,
            max_inactive_secs: 3,
            expires_at_ms: 4,
            data: vec![1, 2, 3, 4, 5],
        }
    }

    #[test]
    fn store_record_round_trip_and_crc_reference() {
        let mut c = Crc32::new();
        c.update(b"123456789");
        assert_eq!(c.finish(), 0xCBF4_3926);
        let r = sample();
        let bytes = encode(&r);
        assert_eq!(bytes.len(), HEADER_LEN + 22 + r.data.len());
        assert_eq!(decode(&bytes, &r.id).unwrap(), r);
    }

    #[test]
    fn store_record_rejects_damage() {
        let r = sample();
        let bytes = encode(&r);
        // Every single flipped bit is caught.
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            assert!(decode(&b, &r.id).is_err(), "flip at {i} not caught");
        }
        // Every truncation is caught.
        for n in 0..bytes.len() {
            assert!(decode(&bytes[..n], &r.id).is_err(), "truncation to {n} not caught");
        }
        let other = SessionId::from_bytes([8; 16]);
        assert_eq!(
            decode(&bytes, &other),
            Err(RecordError::OtherSession { other: r.id.log_id() })
        );
        let mut newer = bytes.clone();
        newer[9] = 2;
        let e = decode(&newer, &r.id).unwrap_err();
        assert_eq!(
            e,
            RecordError::NewerFormat {
                format: 2,
                supported: 1
            }
        );
        assert!(e.to_string().contains("newer version"), "{e}");
    }

    #[test]
    fn debug_shows_neither_the_id_nor_the_data() {
        let id = SessionId::from_bytes([9; 16]);
        let r = StoredSession::new(
            id,
            1,
            SystemTime::now(),
            std::time::Duration::from_secs(1),
            b"password".to_vec(),
        );
        let d = format!("{r:?}");
        assert!(!d.contains(&id.to_string()) && !d.contains("112, 97"), "{d}");
        assert!(d.contains(&id.log_id().to_string()) && d.contains("data_len: 8"), "{d}");
    }
}
