//! Wire format: golden bytes that pin the layouts in PROTOCOL.md, round trips, and one test
//! per decode error.

use rdmaft_protocol::wire::{ACCEPT_LEN, HELLO_LEN, REJECT_LEN};
use rdmaft_protocol::*;

fn enc(msg: Control<'_>, ack: u32) -> Vec<u8> {
    let mut buf = [0u8; CTRL_MSG_MAX];
    let n = msg.encode(ack, &mut buf).unwrap();
    buf[..n].to_vec()
}

#[test]
fn encoded_handshake_fits_cm_private_data() {
    let mut buf = [0u8; 256];
    let p = Params {
        features: Features::all(),
        chunk_size: 1 << 20,
        window: 64,
        ctrl_depth: 16,
    };
    assert_eq!(p.hello().encode(&mut buf), Ok(HELLO_LEN));
    let agreed = negotiate(&buf[..HELLO_LEN], &p).unwrap();
    let ring = RingInfo {
        addr: 1 << 40,
        len: agreed.ring_len(),
        rkey: 9,
    };
    let (_, accept) = agreed.accept(ring, 16);
    let n = accept.encode(&mut buf).unwrap();
    assert_eq!(n, ACCEPT_LEN);
    assert_eq!(
        HandshakeReply::decode(&buf[..196]),
        Ok(accept),
        "zero padding is ignored"
    );
    assert_eq!(
        reject(RejectReason::BAD_WINDOW).encode(&mut buf),
        Ok(REJECT_LEN)
    );
    assert!(HELLO_LEN <= 56 && n <= 196 && REJECT_LEN <= 148);
}

#[test]
fn hello_golden_bytes() {
    let hello = HelloRepr {
        features: Features::RESUME,
        chunk_size: 0x0010_0000,
        window: 64,
        ctrl_depth: 16,
    };
    let mut buf = [0u8; 64];
    let n = hello.encode(&mut buf).unwrap();
    assert_eq!(
        &buf[..n],
        &[
            b'R', b'D', b'F', b'T', 0, 1, 1, 0, // magic, version 1, kind hello, reserved
            0, 0, 0, 1, // features
            0, 0x10, 0, 0, // chunk size 1 MiB
            0, 0, 0, 64, // window
            0, 16, 0, 0, // ctrl depth, reserved
        ]
    );
    assert_eq!(HelloRepr::decode(&buf[..n]), Ok(hello));
    // CM pads private data with zeros: trailing bytes are ignored.
    assert_eq!(HelloRepr::decode(&buf[..56]), Ok(hello));
}

#[test]
fn file_header_golden_bytes() {
    let h = Control::FileHeader(wire::FileHeader {
        file_id: 7,
        size: 0x0102,
        mtime_sec: -1,
        mtime_nsec: 9,
        mode: 0o644,
        name: "a/b",
    });
    let bytes = enc(h, 0x0a0b_0c0d);
    let mut want = vec![0x10, 0, 0, 51, 0x0a, 0x0b, 0x0c, 0x0d];
    want.extend_from_slice(&7u64.to_be_bytes());
    want.extend_from_slice(&0x0102u64.to_be_bytes());
    want.extend_from_slice(&(-1i64).to_be_bytes());
    want.extend_from_slice(&9u32.to_be_bytes());
    want.extend_from_slice(&0o644u32.to_be_bytes());
    want.extend_from_slice(&[0, 0, 0, 0, 0, 3, 0, 0]);
    want.extend_from_slice(b"a/b");
    assert_eq!(bytes, want);
    assert_eq!(Control::decode(&bytes), Ok((0x0a0b_0c0d, h)));
}

#[test]
fn every_control_message_round_trips() {
    let digest = Digest::new(DigestKind::Xxh3_128, &[9; 16]).unwrap();
    let msgs = [
        Control::FileAnswer {
            file_id: 1,
            answer: FileAnswer::Accept { offset: 5 },
        },
        Control::FileAnswer {
            file_id: 2,
            answer: FileAnswer::Reject(FileRejectReason::NO_SPACE),
        },
        Control::Credit { consumed: u64::MAX },
        Control::FileEnd(wire::FileEnd {
            file_id: 3,
            length: 4,
            digest,
        }),
        Control::FileEnd(wire::FileEnd {
            file_id: 3,
            length: 4,
            digest: Digest::NONE,
        }),
        Control::FileResult {
            file_id: 4,
            status: FileStatus::DIGEST_MISMATCH,
        },
        Control::Ack,
        Control::Goodbye,
        Control::Error {
            code: ErrorCode::CANCELLED,
            text: "bye ✓",
        },
    ];
    let sizes = [32, 32, 16, 64, 64, 24, 8, 8, 16 + "bye ✓".len()];
    for (m, size) in msgs.iter().zip(sizes) {
        let bytes = enc(*m, 42);
        assert_eq!(bytes.len(), size, "{m:?}");
        assert_eq!(Control::decode(&bytes), Ok((42, *m)));
    }
}

#[test]
fn long_error_text_is_cut_on_a_char_boundary() {
    let text = "é".repeat(100); // 200 bytes
    let bytes = enc(
        Control::Error {
            code: ErrorCode::LOCAL_FAILURE,
            text: &text,
        },
        0,
    );
    let Ok((_, Control::Error { text: got, .. })) = Control::decode(&bytes) else {
        panic!()
    };
    assert!(got.len() <= wire::MAX_ERROR_TEXT && text.starts_with(got) && !got.is_empty());
}

#[test]
fn decode_error_truncated() {
    assert!(matches!(
        Control::decode(&[0x16, 0, 0]),
        Err(DecodeError::Truncated { .. })
    ));
    let credit = enc(Control::Credit { consumed: 1 }, 0);
    let mut cut = credit[..12].to_vec();
    cut[3] = 12; // consistent length field, body too short
    assert!(matches!(
        Control::decode(&cut),
        Err(DecodeError::Truncated { need: 8, got: 4 })
    ));
    assert!(matches!(
        HelloRepr::decode(b"RDFT\0\x01\x01\0"),
        Err(DecodeError::Truncated { .. })
    ));
}

#[test]
fn decode_error_bad_magic_and_version() {
    let mut hello = [0u8; HELLO_LEN];
    Params {
        features: Features::empty(),
        chunk_size: 4096,
        window: 4,
        ctrl_depth: 4,
    }
    .hello()
    .encode(&mut hello)
    .unwrap();
    let mut bad = hello;
    bad[0] = b'X';
    assert!(matches!(
        HelloRepr::decode(&bad),
        Err(DecodeError::BadMagic(_))
    ));
    let mut v2 = hello;
    v2[5] = 2;
    assert_eq!(HelloRepr::decode(&v2), Err(DecodeError::UnknownVersion(2)));
}

#[test]
fn decode_error_unknown_type() {
    assert_eq!(
        Control::decode(&[0x99, 0, 0, 8, 0, 0, 0, 0]),
        Err(DecodeError::UnknownType(0x99))
    );
}

#[test]
fn decode_error_bad_length() {
    let mut ack = enc(Control::Ack, 0);
    ack.push(0); // one byte more than declared
    assert!(matches!(
        Control::decode(&ack),
        Err(DecodeError::BadLength {
            declared: 8,
            actual: 9
        })
    ));
    let mut long_ack = enc(Control::Ack, 0);
    long_ack.push(0);
    long_ack[3] = 9; // declared and actual agree, but an ack has no body
    assert!(matches!(
        Control::decode(&long_ack),
        Err(DecodeError::BadLength { .. })
    ));
}

#[test]
fn decode_error_nonzero_reserved() {
    let mut ack = enc(Control::Ack, 0);
    ack[1] = 1; // flags
    assert_eq!(Control::decode(&ack), Err(DecodeError::NonZeroReserved));
}

#[test]
fn decode_error_bad_value() {
    let mut answer = enc(
        Control::FileAnswer {
            file_id: 1,
            answer: FileAnswer::Accept { offset: 0 },
        },
        0,
    );
    answer[24] = 3; // decision
    assert_eq!(
        Control::decode(&answer),
        Err(DecodeError::BadValue { field: "decision" })
    );
    let mut end = enc(
        Control::FileEnd(wire::FileEnd {
            file_id: 1,
            length: 0,
            digest: Digest::NONE,
        }),
        0,
    );
    end[25] = 16; // digest length disagrees with kind None
    assert_eq!(
        Control::decode(&end),
        Err(DecodeError::BadValue { field: "digest" })
    );
    end[25] = 0;
    end[24] = 9; // unknown digest kind
    assert_eq!(
        Control::decode(&end),
        Err(DecodeError::BadValue {
            field: "digest kind"
        })
    );
}

#[test]
fn decode_error_invalid_name() {
    for bad in ["../x", "/etc/passwd", "a//b", "a/./b"] {
        let h = Control::FileHeader(wire::FileHeader {
            file_id: 1,
            size: 0,
            mtime_sec: 0,
            mtime_nsec: 0,
            mode: 0,
            name: bad,
        });
        assert!(
            matches!(
                Control::decode(&enc(h, 0)),
                Err(DecodeError::InvalidName(_))
            ),
            "{bad}"
        );
    }
}

#[test]
fn decode_error_invalid_text() {
    let mut e = enc(
        Control::Error {
            code: ErrorCode::CANCELLED,
            text: "ab",
        },
        0,
    );
    e[16] = 0xff;
    assert_eq!(Control::decode(&e), Err(DecodeError::InvalidText));
}
