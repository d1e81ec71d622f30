//! Tests of `wire.rs`.

use super::*;
use proptest::prelude::*;

fn sample() -> Frame {
    Frame::new(
        FrameKind::Message,
        &MessageHeader {
            id: 7,
            ack: 2,
            topic: "t".into(),
            headers: vec![],
        },
        Bytes::from_static(b"hello"),
    )
}

#[test]
fn round_trip_in_pieces() {
    let mut codec = FrameCodec::new(DEFAULT_MAX_FRAME_LEN);
    let mut wire = BytesMut::new();
    codec.encode(sample(), &mut wire).unwrap();
    codec.encode(sample(), &mut wire).unwrap();
    let all = wire.freeze();
    // Feed byte by byte: never an error, exactly two frames.
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for b in all.iter() {
        buf.put_u8(*b);
        while let Some(f) = codec.decode(&mut buf).unwrap() {
            frames.push(f);
        }
    }
    assert_eq!(frames.len(), 2);
    let h: MessageHeader = frames[1].header().unwrap();
    assert_eq!(h.id, 7);
    assert_eq!(&frames[1].payload[..], b"hello");
}

#[test]
fn oversized_frame_is_refused_before_allocation() {
    let mut codec = FrameCodec::new(1024);
    let mut buf = BytesMut::new();
    buf.put_slice(&MAGIC);
    buf.put_u8(VERSION);
    buf.put_u8(1);
    buf.put_bytes(0, 30);
    buf.put_u32(10);
    buf.put_u32(u32::MAX);
    let cap = buf.capacity();
    let err = codec.decode(&mut buf).unwrap_err();
    assert!(matches!(err, WireError::FrameTooLarge { limit: 1024, .. }), "{err}");
    assert_eq!(buf.capacity(), cap, "nothing reserved for a refused frame");
}

#[test]
fn garbage_unknown_kind_and_version_are_errors() {
    let mut codec = FrameCodec::new(1024);
    let err = codec
        .decode(&mut BytesMut::from(&b"GET / HTTP/1.1\r\n"[..]))
        .unwrap_err();
    assert!(err.to_string().contains("not a tribes node"), "{err}");
    let mut wire = BytesMut::new();
    codec.encode(sample(), &mut wire).unwrap();
    let mut v = wire.clone();
    v[4] = 9;
    assert!(matches!(
        codec.decode(&mut v),
        Err(WireError::UnsupportedVersion { found: 9, .. })
    ));
    let mut k = wire.clone();
    k[5] = 200;
    assert!(matches!(
        codec.decode(&mut k),
        Err(WireError::UnknownKind { kind: 200 })
    ));
}

fn session_pair() -> (FrameCodec, FrameCodec) {
    let keys = SessionKeys {
        key_id: 1,
        send: [1; 32],
        recv: [2; 32],
    };
    let crossed = SessionKeys {
        key_id: 1,
        send: [2; 32],
        recv: [1; 32],
    };
    (
        FrameCodec::session(DEFAULT_MAX_FRAME_LEN, Some(keys)),
        FrameCodec::session(DEFAULT_MAX_FRAME_LEN, Some(crossed)),
    )
}

/// The seal is the IETF ChaCha20-Poly1305 of docs/security.md (nonce: four zero bytes
/// and the frame counter; AAD: the prefix without the tag), whatever implements it:
/// another implementation opens it.
#[test]
fn a_sealed_frame_is_standard_chacha20_poly1305() {
    use chacha20poly1305::aead::{AeadInPlace, KeyInit};
    let (mut tx, _) = session_pair();
    let mut wire = BytesMut::new();
    tx.encode(sample(), &mut wire).unwrap();
    tx.encode(sample(), &mut wire).unwrap();
    let second = wire.split_off(wire.len() / 2);
    for (counter, frame) in [(0u64, wire), (1, second)] {
        let (head, body) = frame.split_at(PREFIX_LEN);
        assert_eq!(head[8..20], [&[0u8; 4][..], &counter.to_be_bytes()].concat());
        let mut body = body.to_vec();
        chacha20poly1305::ChaCha20Poly1305::new(&[1u8; 32].into())
            .decrypt_in_place_detached(head[8..20].into(), &aad(head), &mut body, head[20..36].into())
            .expect("opens with the RustCrypto implementation");
    }
}

/// Frames of a connection open once, in order, on that connection only: a frame
/// replayed, skipped or moved to another connection (other keys) is refused.
#[test]
fn a_sealed_frame_opens_once_in_order_on_its_own_connection_only() {
    let (mut tx, rx) = session_pair();
    let mut wire = BytesMut::new();
    tx.encode(sample(), &mut wire).unwrap();
    let first = wire.len();
    tx.encode(sample(), &mut wire).unwrap();
    assert_ne!(&wire[44..first], &wire[first + 44..], "each frame has its own nonce");
    let mut connection = rx.clone();
    let mut buf = wire.clone();
    assert!(connection.decode(&mut buf).unwrap().is_some());
    assert!(connection.decode(&mut buf).unwrap().is_some());
    // The first frame again: refused.
    let err = connection.decode(&mut BytesMut::from(&wire[..first])).unwrap_err();
    assert!(
        matches!(
            err,
            WireError::Replayed {
                counter: 0,
                expected: 2
            }
        ),
        "{err}"
    );
    // The second frame first: refused.
    let err = rx.clone().decode(&mut BytesMut::from(&wire[first..])).unwrap_err();
    assert!(
        matches!(
            err,
            WireError::Replayed {
                counter: 1,
                expected: 0
            }
        ),
        "{err}"
    );
    // Another connection's keys: the tag does not match.
    let (_, other) = {
        let keys = SessionKeys {
            key_id: 1,
            send: [3; 32],
            recv: [3; 32],
        };
        (0, FrameCodec::session(DEFAULT_MAX_FRAME_LEN, Some(keys)))
    };
    let err = other.clone().decode(&mut wire.clone()).unwrap_err();
    assert!(matches!(err, WireError::Forged { counter: 0 }), "{err}");
    // Plain text on a sealed connection, and the reverse: refused.
    let mut plain = BytesMut::new();
    FrameCodec::new(DEFAULT_MAX_FRAME_LEN)
        .encode(sample(), &mut plain)
        .unwrap();
    let err = rx.clone().decode(&mut plain.clone()).unwrap_err();
    assert!(matches!(err, WireError::SealMismatch { sealed: false }), "{err}");
    let err = FrameCodec::new(DEFAULT_MAX_FRAME_LEN)
        .decode(&mut wire.clone())
        .unwrap_err();
    assert!(matches!(err, WireError::SealMismatch { sealed: true }), "{err}");
    // A flipped bit anywhere but the (unused) high nonce bytes: refused.
    for i in 4..first {
        let mut bad = BytesMut::from(&wire[..first]);
        bad[i] ^= 1;
        assert!(
            rx.clone().decode(&mut bad).map(|f| f.is_none()).unwrap_or(true),
            "byte {i}"
        );
    }
}

proptest! {
    #[test]
    fn random_bytes_never_panic_nor_over_allocate(data in proptest::collection::vec(any::<u8>(), 0..4096), prefix in any::<bool>()) {
        let mut codec = FrameCodec::new(4096);
        let mut buf = BytesMut::new();
        if prefix {
            buf.put_slice(&MAGIC);
            buf.put_u8(VERSION);
        }
        buf.put_slice(&data);
        while let Ok(Some(f)) = codec.decode(&mut buf) {
            let _ = f.header::<MessageHeader>();
            let _ = f.header::<MemberHeader>();
        }
        prop_assert!(buf.capacity() <= PREFIX_LEN + 4096 + data.len() + 64);
    }

    #[test]
    fn truncated_frames_need_more_or_fail(cut in 0usize..60) {
        let mut codec = FrameCodec::new(DEFAULT_MAX_FRAME_LEN);
        let mut wire = BytesMut::new();
        codec.encode(sample(), &mut wire).unwrap();
        let cut = cut.min(wire.len() - 1);
        let mut part = BytesMut::from(&wire[..cut]);
        prop_assert!(codec.decode(&mut part).unwrap().is_none());
    }
}
