//! Wire format: golden bytes that pin the layouts in PROTOCOL.md, round trips, and one test
//! per decode error.

use rdmaft_protocol::wire::{AcceptRepr, ACCEPT_LEN, HELLO_LEN, MAX_ERROR_TEXT, REJECT_LEN};
use rdmaft_protocol::*;

fn enc(msg: Control<'_>, ack: u32) -> Vec<u8> {
    let mut buf = [0u8; CTRL_MSG_MAX];
    let n = msg.encode(ack, &mut buf).unwrap();
    buf[..n].to_vec()
}

fn header(name: &str) -> wire::FileHeader<'_> {
    wire::FileHeader {
        target: &[],
        sync: None,
        part: None,
        file_id: 1,
        kind: EntryKind::File,
        size: 0,
        mtime_sec: 0,
        mtime_nsec: 0,
        mode: 0o644,
        name,
    }
}

#[test]
// spec-test: [hs.padding]
fn encoded_handshake_fits_cm_private_data() {
    let mut buf = [0u8; 256];
    let p = Params::new(Features::all() - Features::AUTH_PSK, 1 << 20, 64);
    assert_eq!(p.hello([7; 16]).encode(&mut buf), Ok(HELLO_LEN));
    let agreed = negotiate(&buf[..HELLO_LEN], &p).unwrap();
    let ring = RingInfo {
        addr: 1 << 40,
        len: agreed.ring_len(),
        rkey: 9,
    };
    let (_, accept) = agreed.accept(ring, [0; 16], None, 0x4c41_4e45).unwrap();
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
// spec-test: [model.big-endian] [hs.padding]
fn hello_golden_bytes() {
    let hello = HelloRepr {
        group: 0,
        features: Features::RESUME | Features::AUTH_PSK,
        chunk_size: 0x0010_0000,
        window: 64,
        ctrl_depth: 72,
        max_open_files: 64,
        keepalive_ms: 1000,
        nonce: [0xaa; 16],
    };
    let mut buf = [0u8; 64];
    let n = hello.encode(&mut buf).unwrap();
    let mut want = vec![
        b'R', b'D', b'F', b'T', 0, 2, 1, 0, // magic, version 2, kind hello, reserved
        0, 0, 0, 9, // features: RESUME | AUTH_PSK
        0, 0x10, 0, 0, // chunk size 1 MiB
        0, 0, 0, 64, // window
        0, 72, 0, 64, // ctrl depth, open files
        0, 0, 0x03, 0xe8, // keepalive 1000 ms
        0, 0, 0, 0, // reserved
    ];
    want.extend_from_slice(&[0xaa; 16]);
    assert_eq!(&buf[..n], &want[..]);
    assert_eq!(HelloRepr::decode(&buf[..n]), Ok(hello));
    // CM pads private data with zeros: trailing bytes are ignored.
    assert_eq!(HelloRepr::decode(&buf[..56]), Ok(hello));
}

#[test]
// spec-test: [model.big-endian]
fn accept_golden_bytes() {
    let accept = AcceptRepr {
        group: 0,
        features: Features::DIGEST_XXH3_128,
        flags: AcceptFlags::DIGEST_REQUIRED,
        chunk_size: 4096,
        window: 2,
        ctrl_depth: 9,
        max_open_files: 1,
        keepalive_ms: 500,
        ring: RingInfo {
            addr: 0x0102_0304_0506_0708,
            len: 2 * 4096 + 9 * 4096,
            rkey: 0x0a0b_0c0d,
        },
        nonce: [0x11; 16],
        proof: [0x22; 32],
    };
    let mut buf = [0u8; ACCEPT_LEN];
    HandshakeReply::Accept(accept).encode(&mut buf).unwrap();
    let mut want = vec![b'R', b'D', b'F', b'T', 0, 2, 2, 0];
    want.extend_from_slice(&[0, 0, 0, 2, 0, 0, 0, 1]); // features, flags
    want.extend_from_slice(&[0, 0, 0x10, 0, 0, 0, 0, 2]); // chunk, window
    want.extend_from_slice(&[0, 9, 0, 1, 0, 0, 0x01, 0xf4]); // depth, open files, keepalive
    want.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]); // ring addr
    want.extend_from_slice(&(11u64 * 4096).to_be_bytes()); // ring len
    want.extend_from_slice(&[0x0a, 0x0b, 0x0c, 0x0d, 0, 0, 0, 0]); // rkey, reserved
    want.extend_from_slice(&[0x11; 16]);
    want.extend_from_slice(&[0x22; 32]);
    assert_eq!(&buf[..], &want[..]);
    assert_eq!(
        HandshakeReply::decode(&buf),
        Ok(HandshakeReply::Accept(accept))
    );
    // Unknown flag bits are reserved.
    buf[15] = 2;
    assert_eq!(
        HandshakeReply::decode(&buf),
        Err(DecodeError::NonZeroReserved)
    );
}

#[test]
// spec-test: [model.reserved] [hs.reject.any-version]
fn reject_golden_bytes_and_reserved_fields() {
    let mut buf = [0u8; REJECT_LEN];
    reject(RejectReason::BAD_WINDOW).encode(&mut buf).unwrap();
    let want = [b'R', b'D', b'F', b'T', 0, 2, 3, 0, 0, 5, 0, 2, 0, 0, 0, 0];
    assert_eq!(buf, want);
    let decoded = HandshakeReply::decode(&buf);
    assert!(matches!(decoded, Ok(HandshakeReply::Reject(r))
        if r.reason == RejectReason::BAD_WINDOW && r.max_version == 2));
    // §1: the preamble's reserved byte and the reject's own reserved field.
    for at in [7, 12, 13, 14, 15] {
        let mut bad = want;
        bad[at] = 1;
        assert_eq!(
            HandshakeReply::decode(&bad),
            Err(DecodeError::NonZeroReserved),
            "reserved byte {at}"
        );
    }
    // Another version's reject is read for its reason whatever it keeps there (§2.3).
    let mut other = want;
    other[5] = 3;
    other[15] = 1;
    assert!(
        matches!(HandshakeReply::decode(&other), Ok(HandshakeReply::Reject(r))
        if r.reason == RejectReason::BAD_WINDOW)
    );
}

#[test]
// spec-test: [model.big-endian]
fn file_header_golden_bytes() {
    let h = Control::FileHeader(wire::FileHeader {
        target: &[],
        sync: None,
        part: None,
        file_id: 7,
        kind: EntryKind::Directory,
        size: 0,
        mtime_sec: -1,
        mtime_nsec: 9,
        mode: 0o755,
        name: "a/b",
    });
    let bytes = enc(h, 0x0a0b_0c0d);
    let mut want = vec![0x10, 0, 0, 51, 0x0a, 0x0b, 0x0c, 0x0d];
    want.extend_from_slice(&7u64.to_be_bytes());
    want.extend_from_slice(&0u64.to_be_bytes());
    want.extend_from_slice(&(-1i64).to_be_bytes());
    want.extend_from_slice(&9u32.to_be_bytes());
    want.extend_from_slice(&0o755u32.to_be_bytes());
    want.extend_from_slice(&[2, 0, 0, 3, 0, 0, 0, 0]); // kind, reserved, name_len, reserved
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
        Control::FileAbort {
            file_id: 5,
            reason: AbortReason::READ_ERROR,
        },
        Control::FileCancel {
            file_id: 6,
            status: FileStatus::NO_SPACE,
        },
        Control::Auth { proof: [3; 32] },
        Control::Ack,
        Control::Goodbye,
        Control::KeepAlive,
        Control::Error {
            code: ErrorCode::PROTOCOL_VIOLATION,
            detail: 13,
            text: "bye ✓",
        },
    ];
    let sizes = [
        32,
        32,
        16,
        64,
        64,
        24,
        24,
        24,
        40,
        8,
        8,
        8,
        16 + "bye ✓".len(),
    ];
    for (m, size) in msgs.iter().zip(sizes) {
        let bytes = enc(*m, 42);
        assert_eq!(bytes.len(), size, "{m:?}");
        assert_eq!(Control::decode(&bytes), Ok((42, *m)));
    }
}

#[test]
fn receiver_messages_fit_a_sender_receive_buffer() {
    let longest = enc(
        Control::Error {
            code: ErrorCode::LOCAL_FAILURE,
            detail: u16::MAX,
            text: &"x".repeat(500),
        },
        u32::MAX,
    );
    assert_eq!(longest.len(), 16 + MAX_ERROR_TEXT);
    assert!(longest.len() <= RECEIVER_MSG_MAX);
}

#[test]
fn long_error_text_is_cut_on_a_char_boundary() {
    let text = "é".repeat(100); // 200 bytes
    let bytes = enc(
        Control::Error {
            code: ErrorCode::LOCAL_FAILURE,
            detail: 0,
            text: &text,
        },
        0,
    );
    let Ok((_, Control::Error { text: got, .. })) = Control::decode(&bytes) else {
        panic!()
    };
    assert!(got.len() <= MAX_ERROR_TEXT && text.starts_with(got) && !got.is_empty());
}

#[test]
fn imm_encodings_pin_the_spec() {
    assert_eq!(Imm::chunk(5).encode(), 5);
    assert_eq!(Imm::chunk((1 << 31) | 5).encode(), 5, "low 31 bits");
    assert_eq!(Imm::control(7).encode(), 0x8000_0007);
    assert_eq!(Imm::ack(7).encode(), 0xc000_0007);
    assert_eq!(Imm::decode(0x4000_0000), Imm::Chunk(0x4000_0000));
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
        HelloRepr::decode(b"RDFT\0\x02\x01\0"),
        Err(DecodeError::Truncated { .. })
    ));
}

#[test]
// spec-test: [model.reserved] [hs.magic] [hs.version]
fn decode_error_bad_magic_and_version() {
    let mut hello = [0u8; HELLO_LEN];
    Params::new(Features::empty(), 4096, 4)
        .hello([0; 16])
        .encode(&mut hello)
        .unwrap();
    let mut bad = hello;
    bad[0] = b'X';
    assert!(matches!(
        HelloRepr::decode(&bad),
        Err(DecodeError::BadMagic(_))
    ));
    let mut v1 = hello;
    v1[5] = 1;
    assert_eq!(HelloRepr::decode(&v1), Err(DecodeError::UnknownVersion(1)));
    let mut reserved = hello;
    reserved[7] = 1;
    assert_eq!(
        HelloRepr::decode(&reserved),
        Err(DecodeError::NonZeroReserved)
    );
}

#[test]
fn decode_error_unknown_type() {
    assert_eq!(
        Control::decode(&[0x99, 0, 0, 8, 0, 0, 0, 0]),
        Err(DecodeError::UnknownType(0x99))
    );
    assert_eq!(
        Control::decode(&[0x1d, 0, 0, 8, 0, 0, 0, 0]),
        Err(DecodeError::UnknownType(0x1d))
    );
}

#[test]
// spec-test: [msg.length]
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
    let mut long_keepalive = enc(Control::KeepAlive, 0);
    long_keepalive.push(0);
    long_keepalive[3] = 9; // declared and actual agree, but a keepalive has no body
    assert!(matches!(
        Control::decode(&long_keepalive),
        Err(DecodeError::BadLength { .. })
    ));
}

#[test]
// spec-test: [model.reserved]
fn decode_error_nonzero_reserved() {
    let mut ack = enc(Control::Ack, 0);
    ack[1] = 1; // flags
    assert_eq!(Control::decode(&ack), Err(DecodeError::NonZeroReserved));
    let mut abort = enc(
        Control::FileAbort {
            file_id: 1,
            reason: AbortReason::CANCELLED,
        },
        0,
    );
    abort[23] = 1;
    assert_eq!(Control::decode(&abort), Err(DecodeError::NonZeroReserved));
}

#[test]
// spec-test: [hdr.fields] [part.decode]
// spec-test: [error.codes]
fn decode_error_bad_field() {
    let mut answer = enc(
        Control::FileAnswer {
            file_id: 1,
            answer: FileAnswer::Accept { offset: 0 },
        },
        0,
    );
    answer[24] = 6; // decision
    assert_eq!(
        Control::decode(&answer),
        Err(DecodeError::BadField(Field::Decision))
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
        Err(DecodeError::BadField(Field::Digest))
    );
    end[25] = 0;
    end[24] = 9; // unknown digest kind
    assert_eq!(
        Control::decode(&end),
        Err(DecodeError::BadField(Field::DigestKind))
    );
    let bad_headers: [(wire::FileHeader<'_>, Field); 5] = [
        (
            wire::FileHeader {
                sync: None,
                mode: 0o4755, // setuid
                ..header("x")
            },
            Field::Mode,
        ),
        (
            wire::FileHeader {
                sync: None,
                mode: 0o1777, // sticky
                ..header("x")
            },
            Field::Mode,
        ),
        (
            wire::FileHeader {
                sync: None,
                size: i64::MAX as u64 + 1,
                ..header("x")
            },
            Field::Size,
        ),
        (
            wire::FileHeader {
                sync: None,
                kind: EntryKind::Directory,
                size: 1,
                ..header("x")
            },
            Field::Size,
        ),
        (
            wire::FileHeader {
                sync: None,
                mtime_nsec: 1_000_000_000,
                ..header("x")
            },
            Field::MtimeNsec,
        ),
    ];
    for (h, field) in bad_headers {
        assert_eq!(h.check_metadata(), Err(field));
        let bytes = enc(Control::FileHeader(h), 0);
        assert_eq!(Control::decode(&bytes), Err(DecodeError::BadField(field)));
    }
    let ok = wire::FileHeader {
        sync: None,
        mode: 0o777,
        size: i64::MAX as u64,
        ..header("x")
    };
    assert!(Control::decode(&enc(Control::FileHeader(ok), 0)).is_ok());
    let mut kind = enc(Control::FileHeader(header("x")), 0);
    kind[40] = 5;
    assert_eq!(
        Control::decode(&kind),
        Err(DecodeError::BadField(Field::EntryKind))
    );
    // Kind 3 is a part: its size exponent must be in range.
    kind[40] = 3;
    assert_eq!(
        Control::decode(&kind),
        Err(DecodeError::BadField(Field::Part))
    );
    // The part fields are reserved for other kinds.
    let mut reserved = enc(Control::FileHeader(header("x")), 0);
    reserved[41] = 12;
    assert_eq!(
        Control::decode(&reserved),
        Err(DecodeError::NonZeroReserved)
    );
    reserved[41] = 0;
    reserved[47] = 1;
    assert_eq!(
        Control::decode(&reserved),
        Err(DecodeError::NonZeroReserved)
    );
}

#[test]
// spec-test: [part.decode]
fn file_parts_round_trip_and_must_lie_inside_the_file() {
    let size = 5 << 20;
    let part = |shift, index| wire::FileHeader {
        sync: None,
        size,
        part: Some(rdmaft_protocol::Part { shift, index }),
        ..header("big")
    };
    for p in [part(20, 0), part(20, 4), part(12, 1279), part(62, 0)] {
        let bytes = enc(Control::FileHeader(p), 0);
        assert_eq!(bytes[40], 3, "entry kind of a part");
        assert_eq!(Control::decode(&bytes), Ok((0, Control::FileHeader(p))));
    }
    assert_eq!(part(20, 4).data_len(), 1 << 20);
    assert_eq!(part(22, 1).data_len(), 1 << 20, "the last part is the rest");
    assert_eq!(part(22, 0).data_len(), 4 << 20);
    let huge = [part(62, u32::MAX), part(255, 2), part(63, 1)];
    for bad in [part(20, 5), part(11, 0), part(63, 0), part(12, u32::MAX)]
        .into_iter()
        .chain(huge)
    {
        assert_eq!(bad.check_metadata(), Err(Field::Part), "{bad:?}");
        let bytes = enc(Control::FileHeader(bad), 0);
        assert_eq!(
            Control::decode(&bytes),
            Err(DecodeError::BadField(Field::Part))
        );
    }
    let dir = wire::FileHeader {
        sync: None,
        kind: EntryKind::Directory,
        size: 0,
        part: Some(rdmaft_protocol::Part {
            shift: 20,
            index: 0,
        }),
        ..header("d")
    };
    assert_eq!(dir.check_metadata(), Err(Field::Part));
    let mut text = enc(
        Control::Error {
            code: ErrorCode::CANCELLED,
            detail: 0,
            text: "",
        },
        0,
    );
    text[13] = 129; // text_len beyond the maximum
    assert_eq!(
        Control::decode(&text),
        Err(DecodeError::BadField(Field::TextLen))
    );
}

#[test]
// spec-test: [name.valid]
fn decode_error_invalid_name() {
    for bad in ["../x", "/etc/passwd", "a//b", "a/./b", "a\nb", "a\u{7f}"] {
        let h = Control::FileHeader(header(bad));
        assert!(
            matches!(
                Control::decode(&enc(h, 0)),
                Err(DecodeError::InvalidName(_))
            ),
            "{bad:?}"
        );
    }
}

#[test]
// spec-test: [error.codes]
fn decode_error_invalid_text() {
    let mut e = enc(
        Control::Error {
            code: ErrorCode::CANCELLED,
            detail: 0,
            text: "ab",
        },
        0,
    );
    e[16] = 0xff;
    assert_eq!(Control::decode(&e), Err(DecodeError::InvalidText));
}

#[test]
fn decode_error_codes_are_distinct() {
    let errors = [
        DecodeError::Truncated { need: 1, got: 0 },
        DecodeError::BadMagic(0),
        DecodeError::UnknownVersion(0),
        DecodeError::UnknownType(0),
        DecodeError::BadLength {
            declared: 0,
            actual: 1,
        },
        DecodeError::NonZeroReserved,
        DecodeError::BadField(Field::Mode),
        DecodeError::InvalidName(NameError::Empty),
        DecodeError::InvalidText,
    ];
    let codes: Vec<u16> = errors.iter().map(|e| e.code()).collect();
    assert_eq!(codes, (1..=9).collect::<Vec<u16>>());
}

#[test]
fn decode_errors_name_the_field() {
    let fields = [
        (Field::Decision, "decision"),
        (Field::DigestKind, "digest_kind"),
        (Field::Digest, "digest"),
        (Field::MtimeNsec, "mtime_nsec"),
        (Field::Mode, "mode"),
        (Field::Size, "size"),
        (Field::TextLen, "text_len"),
        (Field::EntryKind, "entry_kind"),
        (Field::Part, "part"),
        (Field::Batch, "batch"),
    ];
    for (field, name) in fields {
        assert_eq!(field.name(), name);
        assert_eq!(
            DecodeError::BadField(field).to_string(),
            format!("invalid value in field {name}")
        );
    }
}

#[test]
fn digest_kinds_say_whether_they_carry_bytes() {
    assert!(DigestKind::None.is_empty());
    assert!(!DigestKind::Xxh3_128.is_empty());
    assert!(!DigestKind::Blake3.is_empty());
}

#[test]
fn a_buffer_of_exactly_the_size_is_enough() {
    let msg = Control::Credit { consumed: 7 };
    let need = enc(msg, 0).len();
    let mut exact = vec![0u8; need];
    assert_eq!(msg.encode(0, &mut exact), Ok(need));
    let mut short = vec![0u8; need - 1];
    assert!(msg.encode(0, &mut short).is_err());
}

#[test]
fn a_fixed_body_with_trailing_bytes_names_both_lengths() {
    let mut b = enc(Control::Credit { consumed: 7 }, 0);
    b.extend_from_slice(&[0; 4]);
    let total = b.len() as u16;
    b[2..4].copy_from_slice(&total.to_be_bytes()); // the declared length
    assert_eq!(
        Control::decode(&b),
        Err(DecodeError::BadLength {
            declared: 8,
            actual: 12
        })
    );
}

/// A batch of `msgs` with `ack`, built the way the state machines build them.
fn batch(msgs: &[Control<'_>], ack: u32) -> Vec<u8> {
    let mut buf = [0u8; CTRL_MSG_MAX + 8];
    let mut b = wire::BatchBuilder::new(CTRL_MSG_MAX);
    for m in msgs {
        assert!(b.push(m, &mut buf));
    }
    let n = b.finish(&mut buf);
    buf[4..8].copy_from_slice(&ack.to_be_bytes());
    buf[..n].to_vec()
}

#[test]
fn batches_round_trip_and_a_lone_message_goes_as_itself() {
    let credit = Control::Credit { consumed: 7 };
    let result = Control::FileResult {
        file_id: 3,
        status: FileStatus::OK,
    };
    let bytes = batch(&[credit, result, Control::KeepAlive], 9);
    assert_eq!(bytes.len(), 8 + 16 + 24 + 8);
    assert_eq!(bytes[0], 0x1c, "the batch's type byte");
    let (ack, msg) = Control::decode(&bytes).unwrap();
    assert_eq!(ack, 9);
    let Control::Batch(b) = msg else {
        panic!("{msg:?}")
    };
    assert_eq!(
        b.iter().collect::<Vec<_>>(),
        [credit, result, Control::KeepAlive]
    );
    assert_eq!(
        enc(msg, 9),
        bytes,
        "a decoded batch encodes to the same bytes"
    );
    // One message is sent as itself, not wrapped.
    assert_eq!(batch(&[credit], 4), enc(credit, 4));
}

#[test]
fn a_builder_keeps_within_its_limit() {
    let mut buf = [0u8; CTRL_MSG_MAX + 8];
    let mut b = wire::BatchBuilder::new(8 + 16 + 16);
    let credit = Control::Credit { consumed: 1 };
    assert!(b.push(&credit, &mut buf) && b.push(&credit, &mut buf));
    assert!(!b.fits(8), "the limit is reached");
    assert!(!b.push(&Control::KeepAlive, &mut buf));
    assert_eq!(b.count(), 2);
    assert_eq!(b.finish(&mut buf), 40);
    assert_eq!(b.count(), 0, "finishing empties it");
    assert_eq!(
        b.finish(&mut buf),
        0,
        "an empty builder finishes into nothing"
    );
    // Without room for a second message, any first one still goes alone.
    let mut one = wire::BatchBuilder::new(0);
    assert!(one.push(&credit, &mut buf));
    assert!(!one.push(&credit, &mut buf));
}

#[test]
// spec-test: [batch.inner]
fn malformed_batches_are_refused() {
    let credit = enc(Control::Credit { consumed: 1 }, 0);
    let wrap = |body: &[u8]| {
        let mut v = vec![0x1c, 0, 0, 0, 0, 0, 0, 0];
        v.extend_from_slice(body);
        let n = v.len() as u16;
        v[2..4].copy_from_slice(&n.to_be_bytes());
        v
    };
    let bad = |bytes: &[u8]| Control::decode(bytes).unwrap_err();
    assert_eq!(
        bad(&wrap(&[])),
        DecodeError::BadField(Field::Batch),
        "empty"
    );
    let nested = wrap(&wrap(&credit));
    assert_eq!(bad(&nested), DecodeError::BadField(Field::Batch), "nested");
    for alone in [Control::Goodbye, Control::KeepAlive, Control::Ack] {
        let inner = [credit.clone(), enc(alone, 0)].concat();
        let bytes = wrap(&inner);
        let res = Control::decode(&bytes);
        match alone {
            Control::Goodbye => assert_eq!(
                res.unwrap_err(),
                DecodeError::BadField(Field::Batch),
                "a goodbye goes alone"
            ),
            _ => assert!(res.is_ok(), "{alone:?} may ride in a batch"),
        }
    }
    let error = enc(
        Control::Error {
            code: ErrorCode::CANCELLED,
            detail: 0,
            text: "x",
        },
        0,
    );
    assert_eq!(bad(&wrap(&error)), DecodeError::BadField(Field::Batch));
    // An inner ack is reserved: the batch's own ack speaks for all.
    let acked = enc(Control::Credit { consumed: 1 }, 5);
    assert_eq!(bad(&wrap(&acked)), DecodeError::NonZeroReserved);
    // An inner length that runs past the batch, or below a header.
    let mut long = credit.clone();
    long[3] = 17;
    assert!(matches!(bad(&wrap(&long)), DecodeError::BadLength { .. }));
    let mut short = credit.clone();
    short[3] = 4;
    assert!(matches!(bad(&wrap(&short)), DecodeError::BadLength { .. }));
    assert!(matches!(
        bad(&wrap(&credit[..5])),
        DecodeError::Truncated { .. }
    ));
}

/// A content digest for the sync tests.
fn blake3_of(byte: u8) -> Digest {
    Digest::new(DigestKind::Blake3, &[byte; 32]).unwrap()
}

#[test]
fn sync_headers_golden_bytes_and_round_trip() {
    // Quick check: flags bit 0, nothing else changes.
    let mut h = header("f");
    h.sync = Some(SyncCheck::default());
    let bytes = enc(Control::FileHeader(h), 0);
    assert_eq!(bytes[1], 1, "flags");
    assert_eq!(bytes.len(), 49);
    assert_eq!(Control::decode(&bytes), Ok((0, Control::FileHeader(h))));
    // Content check: bit 1, and a 40-byte digest block after the name.
    h.sync = Some(SyncCheck {
        content: Some(blake3_of(0xab)),
        dry_run: false,
        delete: false,
    });
    let bytes = enc(Control::FileHeader(h), 0);
    assert_eq!(bytes[1], 1 | 2);
    assert_eq!(bytes.len(), 49 + 40);
    assert_eq!(&bytes[2..4], &89u16.to_be_bytes());
    assert_eq!(&bytes[49..57], &[2, 32, 0, 0, 0, 0, 0, 0]);
    assert_eq!(&bytes[57..], &[0xab; 32]);
    assert_eq!(Control::decode(&bytes), Ok((0, Control::FileHeader(h))));
    // Dry run: bit 2.
    h.sync = Some(SyncCheck {
        content: None,
        dry_run: true,
        delete: false,
    });
    let bytes = enc(Control::FileHeader(h), 0);
    assert_eq!(bytes[1], 1 | 4);
    assert_eq!(Control::decode(&bytes), Ok((0, Control::FileHeader(h))));
    // The longest name still fits a slot with a digest block.
    let long = "n/".repeat(1999) + "nn";
    let mut h = header(&long);
    h.sync = Some(SyncCheck {
        content: Some(blake3_of(1)),
        dry_run: true,
        delete: false,
    });
    let bytes = enc(Control::FileHeader(h), 0);
    assert!(bytes.len() <= CTRL_MSG_MAX);
    assert_eq!(Control::decode(&bytes), Ok((0, Control::FileHeader(h))));
}

#[test]
// spec-test: [link.target]
fn link_headers_golden_bytes_and_round_trip() {
    // Kind 4, size = the target's length, the target right after the name.
    let link = wire::FileHeader {
        kind: EntryKind::Symlink,
        size: 5,
        mode: 0o777,
        target: b"../up",
        ..header("l")
    };
    assert_eq!(link.data_len(), 0, "a link carries no data");
    let bytes = enc(Control::FileHeader(link), 0);
    assert_eq!(bytes.len(), 48 + 1 + 5);
    assert_eq!(bytes[40], 4, "kind");
    assert_eq!(&bytes[16..24], &5u64.to_be_bytes());
    assert_eq!(&bytes[48..], b"l../up");
    assert_eq!(Control::decode(&bytes), Ok((0, Control::FileHeader(link))));
    // With sync: the flags change, nothing else.
    let synced = wire::FileHeader {
        sync: Some(SyncCheck::default()),
        ..link
    };
    let b = enc(Control::FileHeader(synced), 0);
    assert_eq!((b[1], &b[48..]), (1, &b"l../up"[..]));
    assert_eq!(Control::decode(&b), Ok((0, Control::FileHeader(synced))));
    // The longest target beside a one-byte name fills a control message exactly.
    let long = vec![b'x'; MAX_LINK_TARGET];
    let longest = wire::FileHeader {
        size: long.len() as u64,
        target: &long,
        ..link
    };
    let b = enc(Control::FileHeader(longest), 0);
    assert_eq!(b.len(), CTRL_MSG_MAX);
    assert_eq!(Control::decode(&b), Ok((0, Control::FileHeader(longest))));
}

#[test]
// spec-test: [link.target]
fn link_headers_that_do_not_fit_are_refused() {
    let link = wire::FileHeader {
        kind: EntryKind::Symlink,
        size: 1,
        target: b"t",
        ..header("l")
    };
    let long = vec![b'x'; MAX_LINK_TARGET];
    let nul = *b"a\0b";
    let bad = [
        // An empty target, a NUL in it, a size that is not its length.
        (
            wire::FileHeader {
                size: 0,
                target: &[],
                ..link
            },
            Field::Target,
        ),
        (
            wire::FileHeader {
                size: 3,
                target: &nul,
                ..link
            },
            Field::Target,
        ),
        (wire::FileHeader { size: 2, ..link }, Field::Size),
        // A target on a file.
        (
            wire::FileHeader {
                kind: EntryKind::File,
                ..link
            },
            Field::Size,
        ),
        // Name and target together beyond one message.
        (
            wire::FileHeader {
                size: long.len() as u64,
                target: &long,
                ..header("ll")
            },
            Field::Size,
        ),
        (
            wire::FileHeader {
                kind: EntryKind::Symlink,
                size: long.len() as u64,
                target: &long,
                ..header("ll")
            },
            Field::Target,
        ),
        // A content check or a delete on a link.
        (
            wire::FileHeader {
                sync: Some(SyncCheck {
                    content: Some(blake3_of(1)),
                    dry_run: false,
                    delete: false,
                }),
                ..link
            },
            Field::Flags,
        ),
        (
            wire::FileHeader {
                sync: Some(SyncCheck {
                    content: None,
                    dry_run: false,
                    delete: true,
                }),
                ..link
            },
            Field::Flags,
        ),
    ];
    for (h, field) in bad {
        assert_eq!(h.check_metadata(), Err(field), "{h:?}");
    }
    // On the wire: a NUL, and a size beyond any target.
    let mut b = enc(Control::FileHeader(link), 0);
    b[49] = 0;
    assert_eq!(
        Control::decode(&b),
        Err(DecodeError::BadField(Field::Target))
    );
    let mut b = enc(Control::FileHeader(link), 0);
    b[16..24].copy_from_slice(&(MAX_LINK_TARGET as u64 + 1).to_be_bytes());
    assert_eq!(
        Control::decode(&b),
        Err(DecodeError::BadField(Field::Target))
    );
    // A size that claims more (or fewer) bytes than the message has.
    for size in [0u64, 2] {
        let mut b = enc(Control::FileHeader(link), 0);
        b[16..24].copy_from_slice(&size.to_be_bytes());
        assert!(Control::decode(&b).is_err(), "size {size}");
    }
}

#[test]
// spec-test: [sync.flags]
fn sync_header_flags_that_mean_nothing_are_refused() {
    let bad = Err(DecodeError::BadField(Field::Flags));
    let plain = enc(Control::FileHeader(header("f")), 0);
    for flags in [2u8, 4, 6, 8, 0x80, 1 | 8] {
        let mut b = plain.clone();
        b[1] = flags;
        if flags & 2 != 0 {
            // Room for the block, so that only the flags are wrong.
            b.extend_from_slice(&[0; 40]);
            let len = b.len() as u16;
            b[2..4].copy_from_slice(&len.to_be_bytes());
        }
        assert_eq!(Control::decode(&b), bad, "flags {flags:#x}");
    }
    // Flags on any other message are reserved.
    let mut ka = enc(Control::KeepAlive, 0);
    ka[1] = 1;
    assert_eq!(Control::decode(&ka), Err(DecodeError::NonZeroReserved));
    // A content check for a directory, a part, or without a digest.
    let mut dir = header("d");
    dir.kind = EntryKind::Directory;
    dir.sync = Some(SyncCheck {
        content: Some(blake3_of(1)),
        dry_run: false,
        delete: false,
    });
    let mut part = header("p");
    part.size = 1 << 13;
    part.part = Some(Part {
        shift: 12,
        index: 1,
    });
    part.sync = dir.sync;
    let mut none = header("n");
    none.sync = Some(SyncCheck {
        content: Some(Digest::NONE),
        dry_run: false,
        delete: false,
    });
    for h in [dir, part, none] {
        assert_eq!(h.check_metadata(), Err(Field::Flags), "{}", h.name);
        let bytes = enc(Control::FileHeader(h), 0);
        assert_eq!(Control::decode(&bytes), bad, "{}", h.name);
    }
    // A block whose digest is malformed.
    let mut h = header("f");
    h.sync = Some(SyncCheck {
        content: Some(Digest::new(DigestKind::Xxh3_128, &[7; 16]).unwrap()),
        dry_run: false,
        delete: false,
    });
    let good = enc(Control::FileHeader(h), 0);
    let mut b = good.clone();
    b[50] = 32; // digest_len
    assert_eq!(
        Control::decode(&b),
        Err(DecodeError::BadField(Field::Digest))
    );
    let mut b = good.clone();
    b[52] = 1; // reserved
    assert_eq!(Control::decode(&b), Err(DecodeError::NonZeroReserved));
    let mut b = good;
    b.truncate(b.len() - 1);
    let len = b.len() as u16;
    b[2..4].copy_from_slice(&len.to_be_bytes());
    assert!(Control::decode(&b).is_err());
}

#[test]
fn sync_answers_golden_bytes_and_limits() {
    let answers = [
        (
            FileAnswer::AcceptChanged {
                offset: 0,
                changes: Changes::SIZE | Changes::MTIME,
            },
            1u8,
            6u16,
        ),
        (FileAnswer::InSync(Changes::empty()), 3, 0),
        (FileAnswer::InSync(Changes::MODE | Changes::MTIME), 3, 0x14),
        (FileAnswer::WouldSend(Changes::NEW), 4, 1),
        (
            FileAnswer::WouldSend(Changes::KIND | Changes::CONTENT),
            4,
            0x28,
        ),
    ];
    for (answer, decision, reason) in answers {
        let msg = Control::FileAnswer { file_id: 9, answer };
        let bytes = enc(msg, 0);
        assert_eq!(bytes[24], decision, "{answer:?}");
        assert_eq!(&bytes[26..28], &reason.to_be_bytes(), "{answer:?}");
        assert_eq!(Control::decode(&bytes), Ok((0, msg)));
    }
    let bad = Err(DecodeError::BadField(Field::Decision));
    let base = enc(
        Control::FileAnswer {
            file_id: 9,
            answer: FileAnswer::InSync(Changes::empty()),
        },
        0,
    );
    // (decision, reason, offset): in sync with data changes, an empty would-send, unknown
    // change bits, an offset on an answer that sends nothing.
    for (decision, reason, offset) in [
        (3u8, 2u16, 0u64),
        (3, 1, 0),
        (4, 0, 0),
        (4, 0x40, 0),
        (1, 0x8000, 0),
        (3, 0, 4096),
        (4, 1, 4096),
    ] {
        let mut b = base.clone();
        b[24] = decision;
        b[26..28].copy_from_slice(&reason.to_be_bytes());
        b[16..24].copy_from_slice(&offset.to_be_bytes());
        assert_eq!(Control::decode(&b), bad, "{decision} {reason:#x} {offset}");
    }
}

#[test]
// spec-test: [answer.sync]
fn answers_fit_only_the_sync_request_they_answer() {
    let quick = Some(SyncCheck::default());
    let dry = Some(SyncCheck {
        content: None,
        dry_run: true,
        delete: false,
    });
    let accept = FileAnswer::Accept { offset: 0 };
    let changed = FileAnswer::AcceptChanged {
        offset: 0,
        changes: Changes::NEW,
    };
    let unchanged = FileAnswer::AcceptChanged {
        offset: 0,
        changes: Changes::empty(),
    };
    let in_sync = FileAnswer::InSync(Changes::MODE);
    let data_in_sync = FileAnswer::InSync(Changes::SIZE);
    let would = FileAnswer::WouldSend(Changes::SIZE);
    let reject = FileAnswer::Reject(FileRejectReason::EXISTS);
    // (answer, fits a plain header, a sync header, a dry run)
    for (a, plain, sync, dry_run) in [
        (accept, true, true, false),
        (changed, false, true, false),
        (unchanged, false, false, false),
        (in_sync, false, true, true),
        (data_in_sync, false, false, false),
        (would, false, false, true),
        (reject, true, true, true),
    ] {
        assert_eq!(a.fits(None), plain, "{a:?} plain");
        assert_eq!(a.fits(quick), sync, "{a:?} sync");
        assert_eq!(a.fits(dry), dry_run, "{a:?} dry run");
    }
    assert_eq!(changed.accepted_offset(), Some(0));
    assert_eq!(in_sync.accepted_offset(), None);
    assert_eq!(would.accepted_offset(), None);
}

#[test]
// spec-test: [sync.flags]
fn a_delete_is_for_a_directory_and_answered_pruned() {
    let mut dir = header("d");
    dir.kind = EntryKind::Directory;
    dir.sync = Some(SyncCheck {
        delete: true,
        ..SyncCheck::default()
    });
    let bytes = enc(Control::FileHeader(dir), 0);
    assert_eq!(bytes[1], 1 | 8, "flags SYNC | DELETE");
    assert_eq!(Control::decode(&bytes), Ok((0, Control::FileHeader(dir))));
    // On a file it means nothing.
    let mut file = dir;
    file.kind = EntryKind::File;
    assert_eq!(file.check_metadata(), Err(Field::Flags));
    let bytes = enc(Control::FileHeader(file), 0);
    assert_eq!(
        Control::decode(&bytes),
        Err(DecodeError::BadField(Field::Flags))
    );
    // The answer: decision 5, the count in the offset field, the changes in the reason.
    let pruned = Control::FileAnswer {
        file_id: 3,
        answer: FileAnswer::Pruned {
            changes: Changes::MTIME,
            deleted: 1 << 40,
        },
    };
    let bytes = enc(pruned, 0);
    assert_eq!(bytes[24], 5);
    assert_eq!(&bytes[16..24], &(1u64 << 40).to_be_bytes());
    assert_eq!(&bytes[26..28], &4u16.to_be_bytes());
    assert_eq!(Control::decode(&bytes), Ok((0, pruned)));
    // Only a delete gets it, and a delete gets nothing else but a reject.
    let delete = dir.sync;
    let p = FileAnswer::Pruned {
        changes: Changes::empty(),
        deleted: 0,
    };
    assert!(p.fits(delete));
    assert!(!p.fits(Some(SyncCheck::default())));
    assert!(!p.fits(None));
    assert!(!FileAnswer::InSync(Changes::empty()).fits(delete));
    assert!(!FileAnswer::Accept { offset: 0 }.fits(delete));
    assert!(FileAnswer::Reject(FileRejectReason::EXISTS).fits(delete));
}
