//! The `membership_decode` target and its seeds: the MessagePack header of every frame
//! kind, and a decoded member sealed and opened as a heartbeat.

use bytes::Bytes;

use super::{KINDS, MAX_HEADER_LEN, credentials, headers, interceptor_headers, member, message_header};
use crate::heartbeat::Heartbeats;
use crate::member::{Member, MemberId};
use crate::wire::{AckHeader, Frame, FrameKind, GoodbyeHeader, MemberHeader};

/// `membership_decode`: `data` as the MessagePack header of every frame kind, as the
/// receiver, the senders and the TCP probe decode it; then, when it is a member, as a
/// heartbeat sealed and opened, plain and under the test key, as multicast discovery does.
pub fn membership_decode(data: &[u8]) {
    if data.len() > MAX_HEADER_LEN {
        return;
    }
    for kind in KINDS {
        let frame = Frame {
            kind,
            header: Bytes::copy_from_slice(data),
            payload: Bytes::new(),
        };
        headers(&frame);
    }
    let frame = Frame {
        kind: FrameKind::Hello,
        header: Bytes::copy_from_slice(data),
        payload: Bytes::new(),
    };
    if let Ok(MemberHeader { member }) = frame.header::<MemberHeader>() {
        let c = credentials();
        for creds in [None, Some(&c)] {
            let beats = Heartbeats::default();
            let datagram = beats.seal(creds, &member, 1_700_000_000_000, &mut rand::rng());
            let heard = beats
                .open(creds, &datagram, 1_700_000_000_000)
                .expect("a heartbeat opens where it was sealed");
            assert_eq!(heard, member);
        }
    }
}

/// Valid headers of every kind, as the real encoders write them: seeds for `membership_decode`.
pub fn seed_headers() -> Vec<(String, Vec<u8>)> {
    let enc = |h: &dyn erased::Enc| h.bytes();
    let v6 = Member::new(
        MemberId::from_bytes([0xff; 16]),
        "node-ü",
        "shop",
        "[::1]:4000".parse().expect("an address"),
        u64::MAX,
    );
    vec![
        (
            "member".into(),
            enc(&MemberHeader {
                member: member("node-a", 4000, b""),
            }),
        ),
        (
            "member_payload".into(),
            enc(&MemberHeader {
                member: member("b", 4001, b"\x00\xffapp"),
            }),
        ),
        ("member_v6".into(), enc(&MemberHeader { member: v6 })),
        (
            "goodbye".into(),
            enc(&GoodbyeHeader {
                id: MemberId::from_bytes([3; 16]),
            }),
        ),
        (
            "message".into(),
            enc(&message_header(7, 2, "tribes.sessions/shop", vec![])),
        ),
        (
            "message_headers".into(),
            enc(&message_header(u64::MAX, 1, "t", interceptor_headers())),
        ),
        ("ack".into(), enc(&AckHeader { id: 9, reason: None })),
        (
            "fail_ack".into(),
            enc(&AckHeader {
                id: 9,
                reason: Some("no such context".into()),
            }),
        ),
    ]
}

mod erased {
    use serde::Serialize;

    /// Lets the seed list hold headers of different types.
    pub(super) trait Enc {
        fn bytes(&self) -> Vec<u8>;
    }

    impl<T: Serialize> Enc for T {
        fn bytes(&self) -> Vec<u8> {
            rmp_serde::to_vec(self).expect("headers encode")
        }
    }
}
