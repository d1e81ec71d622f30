//! Entry points for the `cargo fuzz` targets in `fuzz/` (built only with `--cfg fuzzing`,
//! which cargo-fuzz sets).

use std::sync::Arc;

use tribes::MemberId;

use crate::data::{Blob, Delta, Op, SessionData, Stamp};
use crate::id::SessionId;
use crate::wire::{self, Msg};

/// `message_decode`: `data` as a session message from a peer (the payload of a tribes
/// message) and as a stored session record, decoded as the manager and the stores do.
///
/// Promises checked: no panic; what decodes encodes again to bytes that decode to the
/// same value.
pub fn message_decode(data: &[u8]) {
    if let Ok(msg) = wire::decode(data) {
        let again = wire::encode(&msg);
        assert_eq!(wire::decode(&again).expect("a re-encoded message decodes"), msg);
    }
    if let Ok(session) = wire::decode_session(data) {
        let again = wire::encode_session(&session);
        assert_eq!(
            wire::decode_session(&again).expect("a re-encoded session decodes"),
            session
        );
    }
}

fn session(n: u8, attrs: usize) -> SessionData {
    let mut s = SessionData::new(
        SessionId::from_bytes([n; 16]),
        Arc::from("node-a"),
        1_700_000_000_000,
        1_800_000,
    );
    s.primary = Some(MemberId::from_bytes([0xa0 | n; 16]));
    s.meta = Stamp { version: 1, writer: 42 };
    for i in 0..attrs {
        let stamp = Stamp {
            version: i as u64 + 1,
            writer: u64::MAX,
        };
        let value = (i % 3 != 2).then(|| Blob(vec![i as u8; i * 7].into()));
        s.write_attr(&format!("attr{i}"), value, stamp);
    }
    s
}

/// Every message kind and a stored session, as the real encoders write them: seeds
/// for `message_decode`.
pub fn seed_messages() -> Vec<(String, Vec<u8>)> {
    let id = SessionId::from_bytes([0xc8; 16]);
    let delta = Delta {
        id,
        base: 41,
        stamp: Stamp { version: 42, writer: 7 },
        at_ms: 1_700_000_000_000,
        ops: vec![
            Op::Create {
                created_ms: 1_700_000_000_000,
            },
            Op::Set("user".into(), Blob(b"\xa5alice".to_vec().into())),
            Op::Remove("cart".into()),
            Op::MaxInactive(60_000),
            Op::Route("node-b".into()),
            Op::Primary(MemberId::from_bytes([9; 16])),
            Op::ChangeId(SessionId::from_bytes([1; 16])),
            Op::Invalidate,
        ],
    };
    let msgs = [
        ("hello", Msg::Hello),
        ("bye", Msg::Bye { expire: true }),
        ("delta", Msg::Delta(delta)),
        ("full", Msg::Full(session(1, 4))),
        ("adopt", Msg::Adopt(session(2, 1))),
        ("drop", Msg::Drop { id, version: 3 }),
        ("fetch_miss", Msg::FetchMiss { id, gone: true }),
        ("not_ready", Msg::NotReady { request: 4 }),
        ("claimed", Msg::Claimed(id)),
        ("fetch", Msg::Fetch(id)),
        ("fetch_reply", Msg::FetchReply(session(3, 0))),
        (
            "touches",
            Msg::Touches(vec![(id, 1), (SessionId::from_bytes([2; 16]), u64::MAX)]),
        ),
        ("expired", Msg::Expired(vec![id, SessionId::from_bytes([0; 16])])),
        ("get_all", Msg::GetAll { request: 3 }),
        (
            "chunk",
            Msg::Chunk {
                request: 3,
                sessions: (0..5).map(|n| session(n, n as usize)).collect(),
            },
        ),
        (
            "done",
            Msg::Done {
                request: 3,
                sessions: 5,
            },
        ),
        (
            "merge",
            Msg::Merge {
                sessions: vec![session(4, 2)],
            },
        ),
        (
            "digest",
            Msg::Digest {
                buckets: (0..256).map(|b| b * 0x9e37_79b9).collect(),
            },
        ),
        (
            "detail",
            Msg::Detail {
                buckets: vec![0, 7, 255],
                held: vec![(id, 42, 1_700_000_000_000)],
                gone: vec![SessionId::from_bytes([3; 16])],
            },
        ),
        ("want", Msg::Want(vec![id])),
        ("expiring", Msg::Expiring(vec![id, SessionId::from_bytes([4; 16])])),
    ];
    let mut out: Vec<(String, Vec<u8>)> = msgs
        .iter()
        .map(|(name, msg)| (format!("msg_{name}"), wire::encode(msg).to_vec()))
        .collect();
    out.push(("stored_session".into(), wire::encode_session(&session(5, 6))));
    out.push(("stored_empty".into(), wire::encode_session(&session(6, 0))));
    // A newer version, and garbage.
    let mut v2 = wire::encode(&Msg::Hello).to_vec();
    if let Some(b) = v2.iter_mut().find(|b| **b == wire::WIRE_VERSION) {
        *b = wire::WIRE_VERSION + 1;
    }
    out.push(("version_2".into(), v2));
    out.push(("garbage".into(), b"garbage".to_vec()));
    // An attribute list claiming far more entries than present.
    let mut claim = wire::encode(&Msg::Full(session(7, 1))).to_vec();
    if let Some(at) = claim.iter().rposition(|b| *b == 0x91) {
        claim[at] = 0xdd;
        claim.splice(at + 1..at + 1, [0xff, 0xff, 0xff, 0xff]);
    }
    out.push(("claims_many".into(), claim));
    out
}
