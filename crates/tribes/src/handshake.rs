//! The handshake that opens every replication connection, as a plain state machine
//! (no sockets: `gate.rs` moves its bytes).
//!
//! Sealed clusters run Noise `XXpsk0` (Noise Protocol Framework, revision 34) through
//! the `snow` crate: X25519, ChaCha20-Poly1305, BLAKE2s, with a pre-shared key derived
//! from the cluster key. Both sides contribute a fresh ephemeral key, so every
//! connection gets fresh keys with forward secrecy; the PSK in the first message
//! refuses another cluster's node before it learns anything; each side's static key
//! is its node identity (checked against an allow-list when one is configured).
//! See `docs/security.md` for the choice and what it protects against.
//!
//! ```text
//! initiator -> responder   offer:   magic "TRBS", max version, min version, mode
//!                                   (0 plain, 1 Noise XXpsk0), key id, then a record
//!                                   holding Noise message 1 (payload: my member id and
//!                                   the member id I mean to reach, if known)
//! responder -> initiator   answer:  magic "TRBS", chosen version, then a record holding
//!                                   Noise message 2 (payload: my member id) or a refusal
//! initiator -> responder   finish:  a record holding Noise message 3, or a refusal
//! responder -> initiator   accept:  an empty record, or a refusal
//! record: status (0 ok, 1 refusal), big-endian u16 length, body; a refusal body is
//!         the reason code, the refuser's min and max version and a UTF-8 explanation
//! ```
//!
//! The offer's first eight bytes are the Noise prologue, so a changed version range or
//! key id breaks the handshake (no downgrade). Byte 4 is where tribes 1 and 2 put their
//! one version byte, so an old node reading an offer says "wire version 3 is not
//! supported", and this node reading an old frame answers with a refusal naming both
//! versions. In plain-text mode (`insecure_plaintext`) the same four messages carry the
//! payloads in the clear and no keys come out.

use serde::{Deserialize, Serialize};

use crate::member::MemberId;
use crate::refusal::{Refusal, RefusalReason};
use crate::seal::{Credentials, PROTOCOL};
use crate::wire::SessionKeys;

/// The oldest wire version this build speaks.
pub(crate) const MIN_VERSION: u8 = 3;
/// The newest wire version this build speaks.
pub(crate) const MAX_VERSION: u8 = crate::wire::VERSION;
/// Bytes of the offer before its record (and the Noise prologue).
pub(crate) const OFFER_LEN: usize = 8;
/// Bytes of the answer before its record.
pub(crate) const ANSWER_LEN: usize = 5;
/// Bytes of a record before its body.
pub(crate) const RECORD_LEN: usize = 3;
/// The largest Noise message.
const MAX_MESSAGE: usize = 65_535;
const MODE_PLAIN: u8 = 0;
const MODE_NOISE: u8 = 1;

/// What a completed handshake gives each side.
#[derive(Debug)]
pub(crate) struct Established {
    /// The peer's member id, as the handshake proved it.
    pub(crate) peer: MemberId,
    /// `None` in plain-text mode.
    pub(crate) keys: Option<SessionKeys>,
}

#[derive(Serialize, Deserialize)]
struct OfferPayload {
    from: MemberId,
    to: Option<MemberId>,
}

#[derive(Serialize, Deserialize)]
struct AnswerPayload {
    from: MemberId,
}

/// One record: status, length, body.
pub(crate) fn record(status: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(RECORD_LEN + body.len());
    out.push(status);
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// The body length a record header announces, or why it is not a record.
pub(crate) fn record_body_len(head: &[u8; RECORD_LEN]) -> Result<usize, Refusal> {
    if head[0] > 1 {
        return Err(Refusal::malformed(format!(
            "record status {} is neither 0 nor 1",
            head[0]
        )));
    }
    Ok(u16::from_be_bytes([head[1], head[2]]) as usize)
}

/// The record that refuses the peer, with our reason and versions.
pub(crate) fn refusal_record(refusal: &Refusal) -> Vec<u8> {
    let text = refusal.to_string();
    let text = &text.as_bytes()[..text.len().min(1024)];
    let mut body = vec![refusal.reason().code(), MIN_VERSION, MAX_VERSION];
    body.extend_from_slice(text);
    record(1, &body)
}

/// The answer header and refusal record sent to an offer this node refuses.
pub(crate) fn refusing_answer(refusal: &Refusal) -> Vec<u8> {
    let mut out = answer_head(MAX_VERSION).to_vec();
    out.extend(refusal_record(refusal));
    out
}

fn answer_head(version: u8) -> [u8; ANSWER_LEN] {
    let mut head = [0u8; ANSWER_LEN];
    head[..4].copy_from_slice(&crate::wire::MAGIC);
    head[4] = version;
    head
}

/// Reads a record body: a Noise message, or the peer's refusal.
fn open_record(status: u8, body: &[u8]) -> Result<&[u8], Refusal> {
    if status == 0 {
        return Ok(body);
    }
    let Some((&code, rest)) = body.split_first() else {
        return Err(Refusal::malformed("an empty refusal"));
    };
    let text = rest.get(2..).unwrap_or_default();
    Err(Refusal::ByPeer {
        reason: RefusalReason::from_code(code),
        message: String::from_utf8_lossy(text).into_owned(),
    })
}

fn params() -> snow::params::NoiseParams {
    PROTOCOL.parse().expect("a valid Noise protocol name")
}

fn prologue(offer: &[u8; OFFER_LEN]) -> Vec<u8> {
    let mut p = b"tribes cluster handshake/".to_vec();
    p.extend_from_slice(offer);
    p
}

fn split(state: &mut snow::HandshakeState, key_id: u8) -> SessionKeys {
    // Noise's Split(): the first key seals initiator -> responder.
    let (i2r, r2i) = state.dangerously_get_raw_split();
    if state.is_initiator() {
        SessionKeys {
            key_id,
            send: i2r,
            recv: r2i,
        }
    } else {
        SessionKeys {
            key_id,
            send: r2i,
            recv: i2r,
        }
    }
}

/// The initiator's side: [`Initiator::start`], then [`Initiator::on_answer`] (which
/// gives the finish record), then [`Initiator::on_accept`].
pub(crate) struct Initiator {
    noise: Option<snow::HandshakeState>,
    key_id: u8,
    to: Option<MemberId>,
    peer: Option<MemberId>,
}

impl Initiator {
    /// The offer to write first. `to` is the member meant, when known (senders know
    /// it; probes of an address do not).
    pub(crate) fn start(credentials: Option<&Credentials>, from: MemberId, to: Option<MemberId>) -> (Self, Vec<u8>) {
        let mut offer = [0u8; OFFER_LEN];
        offer[..4].copy_from_slice(&crate::wire::MAGIC);
        offer[4] = MAX_VERSION;
        offer[5] = MIN_VERSION;
        let payload = rmp_serde::to_vec(&OfferPayload { from, to }).expect("plain data");
        let (noise, body, key_id) = match credentials {
            None => {
                offer[6] = MODE_PLAIN;
                (None, payload, 0)
            }
            Some(c) => {
                let (key_id, psk) = c.send_psk();
                offer[6] = MODE_NOISE;
                offer[7] = key_id;
                let prologue = prologue(&offer);
                let mut state = snow::Builder::new(params())
                    .local_private_key(c.static_private())
                    .and_then(|b| b.psk(0, &psk))
                    .and_then(|b| b.prologue(&prologue))
                    .and_then(|b| b.build_initiator())
                    .expect("valid Noise parameters");
                let mut msg = vec![0u8; MAX_MESSAGE];
                let n = state.write_message(&payload, &mut msg).expect("message 1 fits");
                msg.truncate(n);
                (Some(state), msg, key_id)
            }
        };
        let mut out = offer.to_vec();
        out.extend(record(0, &body));
        (
            Initiator {
                noise,
                key_id,
                to,
                peer: None,
            },
            out,
        )
    }

    /// Check the answer's header; returns the version the responder chose.
    pub(crate) fn answer_version(head: &[u8; ANSWER_LEN]) -> Result<u8, Refusal> {
        if head[..4] != crate::wire::MAGIC {
            return Err(Refusal::malformed(format!(
                "the answer starts with {:02x?}, not TRBS",
                &head[..4]
            )));
        }
        Ok(head[4])
    }

    /// Read the answer record; returns the finish record to write. On `Err` the
    /// caller writes [`refusal_record`] (unless the peer refused).
    pub(crate) fn on_answer(
        &mut self,
        version: u8,
        status: u8,
        body: &[u8],
        credentials: Option<&Credentials>,
    ) -> Result<Vec<u8>, Refusal> {
        let body = open_record(status, body)?;
        if !(MIN_VERSION..=MAX_VERSION).contains(&version) {
            return Err(Refusal::VersionMismatch {
                peer_min: version,
                peer_max: version,
                min: MIN_VERSION,
                max: MAX_VERSION,
            });
        }
        let (payload, finish) = match &mut self.noise {
            None => (body.to_vec(), Vec::new()),
            Some(state) => {
                let mut payload = vec![0u8; body.len()];
                let n = state.read_message(body, &mut payload).map_err(|_| Refusal::Replay {
                    what: "the answer to this node's handshake does not open under the keys it began with",
                })?;
                payload.truncate(n);
                if let (Some(c), Some(remote)) = (credentials, state.get_remote_static()) {
                    c.check_allowed(remote)?;
                }
                let mut msg = vec![0u8; MAX_MESSAGE];
                let n = state.write_message(&[], &mut msg).expect("message 3 fits");
                msg.truncate(n);
                (payload, msg)
            }
        };
        let answer: AnswerPayload =
            rmp_serde::from_slice(&payload).map_err(|e| Refusal::malformed(format!("answer payload: {e}")))?;
        if let Some(to) = self.to
            && to != answer.from
        {
            return Err(Refusal::WrongMember {
                addressed_to: to,
                this: answer.from,
            });
        }
        self.peer = Some(answer.from);
        Ok(record(0, &finish))
    }

    /// Read the accept record: the connection is open.
    pub(crate) fn on_accept(mut self, status: u8, body: &[u8]) -> Result<Established, Refusal> {
        open_record(status, body)?;
        let keys = self.noise.as_mut().map(|s| split(s, self.key_id));
        Ok(Established {
            peer: self.peer.expect("on_answer succeeded before"),
            keys,
        })
    }
}

/// The responder's side: [`Responder::on_offer`] (which gives the answer), then
/// [`Responder::on_finish`] (which gives the accept record).
pub(crate) struct Responder {
    noise: Option<snow::HandshakeState>,
    key_id: u8,
    peer: MemberId,
}

impl Responder {
    /// Check the first five bytes of an offer (magic and newest version): whether
    /// the rest can be read, before reading it.
    pub(crate) fn check_offer_start(head: &[u8; 5]) -> Result<(), Refusal> {
        if head[..4] != crate::wire::MAGIC {
            return Err(Refusal::malformed(format!(
                "the first bytes are {:02x?}, not TRBS: not a tribes node",
                &head[..4]
            )));
        }
        if head[4] < MIN_VERSION {
            // tribes 1 and 2 start every connection with a frame whose byte 4 is
            // their one version.
            return Err(Refusal::VersionMismatch {
                peer_min: head[4],
                peer_max: head[4],
                min: MIN_VERSION,
                max: MAX_VERSION,
            });
        }
        Ok(())
    }

    /// Read a whole offer (header and record) and answer it. On `Err` the caller
    /// writes [`refusing_answer`].
    pub(crate) fn on_offer(
        offer: &[u8; OFFER_LEN],
        status: u8,
        body: &[u8],
        credentials: Option<&Credentials>,
        local: MemberId,
    ) -> Result<(Self, Vec<u8>), Refusal> {
        let head: &[u8; 5] = offer[..5].try_into().expect("5 bytes");
        Self::check_offer_start(head)?;
        let (peer_max, peer_min, mode, key_id) = (offer[4], offer[5], offer[6], offer[7]);
        if peer_min > MAX_VERSION || peer_min > peer_max {
            return Err(Refusal::VersionMismatch {
                peer_min,
                peer_max,
                min: MIN_VERSION,
                max: MAX_VERSION,
            });
        }
        if status != 0 {
            return Err(Refusal::malformed("an offer must be a status 0 record"));
        }
        let (mut noise, payload) = match (mode, credentials) {
            (MODE_PLAIN, None) => (None, body.to_vec()),
            (MODE_NOISE, Some(c)) => {
                let psk = c.accepted_psk(key_id).ok_or_else(|| Refusal::UnknownKeyId {
                    key_id,
                    accepted: c.accepted_ids(),
                })?;
                let prologue = prologue(offer);
                let mut state = snow::Builder::new(params())
                    .local_private_key(c.static_private())
                    .and_then(|b| b.psk(0, &psk))
                    .and_then(|b| b.prologue(&prologue))
                    .and_then(|b| b.build_responder())
                    .expect("valid Noise parameters");
                let mut payload = vec![0u8; body.len()];
                let n = state
                    .read_message(body, &mut payload)
                    .map_err(|_| Refusal::OtherCluster { key_id })?;
                payload.truncate(n);
                (Some(state), payload)
            }
            (MODE_PLAIN, Some(_)) => return Err(Refusal::PlainText { peer_plain: true }),
            (MODE_NOISE, None) => return Err(Refusal::PlainText { peer_plain: false }),
            (other, _) => return Err(Refusal::malformed(format!("unknown handshake mode {other}"))),
        };
        let offered: OfferPayload =
            rmp_serde::from_slice(&payload).map_err(|e| Refusal::malformed(format!("offer payload: {e}")))?;
        if let Some(to) = offered.to
            && to != local
        {
            return Err(Refusal::WrongMember {
                addressed_to: to,
                this: local,
            });
        }
        if offered.from == local {
            return Err(Refusal::Replay {
                what: "the offer names this node as its sender (a connection reflected back)",
            });
        }
        let answer = rmp_serde::to_vec(&AnswerPayload { from: local }).expect("plain data");
        let body = match &mut noise {
            None => answer,
            Some(state) => {
                let mut msg = vec![0u8; MAX_MESSAGE];
                let n = state.write_message(&answer, &mut msg).expect("message 2 fits");
                msg.truncate(n);
                msg
            }
        };
        let mut out = answer_head(MAX_VERSION.min(peer_max)).to_vec();
        out.extend(record(0, &body));
        Ok((
            Responder {
                noise,
                key_id,
                peer: offered.from,
            },
            out,
        ))
    }

    /// The member id the offer named as its sender (proved only once finished).
    pub(crate) fn peer(&self) -> MemberId {
        self.peer
    }

    /// Read the finish record; returns the accept record to write and the session.
    /// On `Err` the caller writes [`refusal_record`] (unless the peer refused).
    pub(crate) fn on_finish(
        mut self,
        status: u8,
        body: &[u8],
        credentials: Option<&Credentials>,
    ) -> Result<(Vec<u8>, Established), Refusal> {
        let body = open_record(status, body)?;
        let keys = match &mut self.noise {
            None => None,
            Some(state) => {
                let mut payload = vec![0u8; body.len()];
                state.read_message(body, &mut payload).map_err(|_| Refusal::Replay {
                    what: "the handshake began under this cluster's key but its last message does not open (it was recorded from another connection)",
                })?;
                if let (Some(c), Some(remote)) = (credentials, state.get_remote_static()) {
                    c.check_allowed(remote)?;
                }
                Some(split(state, self.key_id))
            }
        };
        Ok((record(0, &[]), Established { peer: self.peer, keys }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seal::Keyring;

    fn creds(key: [u8; 32]) -> Credentials {
        Credentials::new(Keyring::new(1, key))
    }

    fn parts(bytes: &[u8], head: usize) -> (&[u8], u8, &[u8]) {
        let (h, rest) = bytes.split_at(head);
        let len = u16::from_be_bytes([rest[1], rest[2]]) as usize;
        assert_eq!(rest.len(), RECORD_LEN + len);
        (h, rest[0], &rest[RECORD_LEN..])
    }

    /// Runs a whole handshake in memory; returns both sides' outcomes.
    fn run(
        i: Option<&Credentials>,
        r: Option<&Credentials>,
        to: Option<MemberId>,
        local: MemberId,
    ) -> Result<(Established, Established), Refusal> {
        let from = MemberId::from_bytes([1; 16]);
        let (mut init, offer) = Initiator::start(i, from, to);
        let (head, status, body) = parts(&offer, OFFER_LEN);
        let (resp, answer) = Responder::on_offer(head.try_into().unwrap(), status, body, r, local)?;
        let (head, status, body) = parts(&answer, ANSWER_LEN);
        let version = Initiator::answer_version(head.try_into().unwrap())?;
        let finish = init.on_answer(version, status, body, i)?;
        let (_, status, body) = parts(&finish, 0);
        let (accept, theirs) = resp.on_finish(status, body, r)?;
        let (_, status, body) = parts(&accept, 0);
        Ok((init.on_accept(status, body)?, theirs))
    }

    #[test]
    fn both_sides_get_the_same_fresh_keys_crossed() {
        let c = creds([3; 32]);
        let b = MemberId::from_bytes([2; 16]);
        let (i, r) = run(Some(&c), Some(&c), Some(b), b).unwrap();
        let (ik, rk) = (i.keys.unwrap(), r.keys.unwrap());
        assert_eq!(ik.send, rk.recv);
        assert_eq!(ik.recv, rk.send);
        assert_ne!(ik.send, ik.recv);
        assert_eq!(i.peer, b);
        assert_eq!(r.peer, MemberId::from_bytes([1; 16]));
        let (again, _) = run(Some(&c), Some(&c), None, b).unwrap();
        assert_ne!(again.keys.unwrap().send, ik.send, "every connection gets fresh keys");
    }

    #[test]
    fn refusals_name_their_reason() {
        let b = MemberId::from_bytes([2; 16]);
        let ours = creds([3; 32]);
        let theirs = creds([4; 32]);
        let err = |i, r, to| run(i, r, to, b).unwrap_err();
        assert!(matches!(
            err(Some(&theirs), Some(&ours), None),
            Refusal::OtherCluster { key_id: 1 }
        ));
        let other_id = Credentials::new(Keyring::new(7, [3; 32]));
        let e = err(Some(&other_id), Some(&ours), None);
        assert!(matches!(e, Refusal::UnknownKeyId { key_id: 7, .. }), "{e}");
        assert_eq!(err(None, Some(&ours), None), Refusal::PlainText { peer_plain: true });
        assert_eq!(err(Some(&ours), None, None), Refusal::PlainText { peer_plain: false });
        let c = MemberId::from_bytes([9; 16]);
        assert!(matches!(
            err(Some(&ours), Some(&ours), Some(c)),
            Refusal::WrongMember { .. }
        ));
        // Plain text both sides works, with no keys.
        let (i, _) = run(None, None, Some(b), b).unwrap();
        assert!(i.keys.is_none());
    }

    #[test]
    fn old_and_new_versions_are_refused_naming_both() {
        let e = Responder::check_offer_start(b"TRBS\x02").unwrap_err();
        assert_eq!(e.reason(), RefusalReason::VersionMismatch);
        let text = e.to_string();
        assert!(
            text.contains("2-2") && text.contains("3-3") && text.contains("older"),
            "{text}"
        );
        let mut offer = [0u8; OFFER_LEN];
        offer[..4].copy_from_slice(b"TRBS");
        offer[4] = 9;
        offer[5] = 8;
        offer[6] = MODE_PLAIN;
        let Err(e) = Responder::on_offer(&offer, 0, &[], None, MemberId::from_bytes([2; 16])) else {
            panic!("a newer-only peer is refused")
        };
        assert!(e.to_string().contains("8-9") && e.to_string().contains("newer"), "{e}");
        // The refusal travels back and reads as the peer's refusal.
        let answer = refusing_answer(&e);
        let (head, status, body) = parts(&answer, ANSWER_LEN);
        let v = Initiator::answer_version(head.try_into().unwrap()).unwrap();
        let (mut init, _) = Initiator::start(None, MemberId::from_bytes([1; 16]), None);
        let got = init.on_answer(v, status, body, None).unwrap_err();
        assert_eq!(got.reason(), RefusalReason::VersionMismatch);
        assert!(got.to_string().contains("8-9"), "{got}");
    }

    #[test]
    fn a_tampered_offer_header_breaks_the_handshake() {
        let c = creds([3; 32]);
        let b = MemberId::from_bytes([2; 16]);
        let (_, mut offer) = Initiator::start(Some(&c), MemberId::from_bytes([1; 16]), Some(b));
        offer[5] = 2; // claim an older minimum version: the prologue differs
        let (head, status, body) = parts(&offer, OFFER_LEN);
        let Err(e) = Responder::on_offer(head.try_into().unwrap(), status, body, Some(&c), b) else {
            panic!("a changed prologue must not open")
        };
        assert_eq!(e.reason(), RefusalReason::OtherCluster);
    }
}
