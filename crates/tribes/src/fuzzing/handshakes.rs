//! The `handshake_offer` and `handshake_answer` targets and their seeds: offers and
//! answers as the gate reads them, plain and sealed, and refusals.

use super::credentials;
use crate::handshake::{ANSWER_LEN, Initiator, OFFER_LEN, RECORD_LEN, Responder};
use crate::member::MemberId;
use crate::refusal::Refusal;

/// The record at the start of `data`: status and body, if whole.
fn split_record(data: &[u8]) -> Option<(u8, &[u8])> {
    let head: &[u8; RECORD_LEN] = data.get(..RECORD_LEN)?.try_into().ok()?;
    let len = crate::handshake::record_body_len(head).ok()?;
    Some((head[0], data.get(RECORD_LEN..RECORD_LEN + len)?))
}

/// `handshake_offer`: `data` as the first bytes a node receives on an accepted
/// connection (the offer), in plain text and sealed under the test key, as the gate
/// reads them.
///
/// Promises checked: no panic; every refusal names a reason and explains itself; an
/// accepted offer yields an answer that starts with the magic and holds a whole record.
pub fn handshake_offer(data: &[u8]) {
    let Some(head) = data.get(..5) else {
        return;
    };
    if let Err(refusal) = Responder::check_offer_start(head.try_into().expect("5 bytes")) {
        assert!(!refusal.to_string().is_empty());
        return;
    }
    let Some(offer) = data.get(..OFFER_LEN) else {
        return;
    };
    let offer: &[u8; OFFER_LEN] = offer.try_into().expect("8 bytes");
    let Some((status, body)) = split_record(&data[OFFER_LEN..]) else {
        return;
    };
    let local = MemberId::from_bytes([0x42; 16]);
    let c = credentials();
    for creds in [None, Some(&c)] {
        match Responder::on_offer(offer, status, body, creds, local) {
            Ok((_, answer)) => {
                assert_eq!(&answer[..4], b"TRBS");
                assert!(
                    split_record(&answer[ANSWER_LEN..]).is_some(),
                    "an answer without a whole record"
                );
            }
            Err(refusal) => {
                let record = crate::handshake::refusing_answer(&refusal);
                assert!(split_record(&record[ANSWER_LEN..]).is_some());
            }
        }
    }
}

/// `handshake_answer`: `data` as the answer a node receives to its offer, then as
/// the accept record, in plain text and sealed.
///
/// Promises checked: no panic; an answer is accepted only when it opens (plain
/// text: when it decodes); a peer's refusal is read as [`Refusal::ByPeer`].
pub fn handshake_answer(data: &[u8]) {
    let Some(head) = data.get(..ANSWER_LEN) else {
        return;
    };
    let Ok(version) = Initiator::answer_version(head.try_into().expect("5 bytes")) else {
        return;
    };
    let Some((status, body)) = split_record(&data[ANSWER_LEN..]) else {
        return;
    };
    let from = MemberId::from_bytes([0x41; 16]);
    let c = credentials();
    for creds in [None, Some(&c)] {
        let (mut init, _) = Initiator::start(creds, from, None);
        match init.on_answer(version, status, body, creds) {
            Ok(finish) => {
                assert!(split_record(&finish).is_some());
                let rest = &data[ANSWER_LEN + RECORD_LEN + body.len()..];
                if let Some((status, body)) = split_record(rest) {
                    let _ = init.on_accept(status, body);
                }
            }
            Err(Refusal::ByPeer { .. }) => assert_eq!(status, 1),
            Err(_) => {}
        }
    }
}

/// Offers and answers as real nodes write them, plain and sealed, and refusals:
/// seeds for `handshake_offer` and `handshake_answer`.
pub fn seed_handshakes() -> Vec<(String, Vec<u8>)> {
    let c = credentials();
    let a = MemberId::from_bytes([0x41; 16]);
    let b = MemberId::from_bytes([0x42; 16]);
    let mut out = Vec::new();
    for (name, creds) in [("plain", None), ("sealed", Some(&c))] {
        let (_, offer) = Initiator::start(creds, a, Some(b));
        out.push((format!("offer_{name}"), offer.clone()));
        let (_, offer_any) = Initiator::start(creds, a, None);
        out.push((format!("offer_{name}_no_target"), offer_any));
        let head: &[u8; OFFER_LEN] = offer[..OFFER_LEN].try_into().expect("8 bytes");
        let (status, body) = split_record(&offer[OFFER_LEN..]).expect("a record");
        if let Ok((_, mut answer)) = Responder::on_offer(head, status, body, creds, b) {
            answer.extend(crate::handshake::record(0, &[]));
            out.push((format!("answer_{name}"), answer));
        }
    }
    let refusals = [
        Refusal::OtherCluster { key_id: 1 },
        Refusal::UnknownKeyId {
            key_id: 2,
            accepted: vec![1],
        },
        Refusal::VersionMismatch {
            peer_min: 2,
            peer_max: 2,
            min: 3,
            max: 3,
        },
        Refusal::PlainText { peer_plain: true },
    ];
    for (i, r) in refusals.iter().enumerate() {
        out.push((format!("answer_refusal_{i}"), crate::handshake::refusing_answer(r)));
    }
    let mut old = b"TRBS\x02\x04".to_vec();
    old.extend_from_slice(&[0u8; 38]);
    out.push(("old_version_frame".into(), old));
    out.push(("http".into(), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()));
    out
}
