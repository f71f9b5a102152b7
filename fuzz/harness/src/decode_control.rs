//! `Control::decode` on raw bytes, and the immediate's decoder on their first four.

use rdmaft_protocol::wire::{MsgKind, MAX_ERROR_TEXT};
use rdmaft_protocol::*;

/// A decoded control message re-encodes to the very same bytes (decoding accepts only the
/// canonical form) and decodes to the same message, and it keeps the wire's invariants.
pub fn decode_control(data: &[u8]) {
    if let Some(&[a, b, c, d]) = data.get(..4) {
        imm_round_trip(u32::from_be_bytes([a, b, c, d]));
    }
    let Ok((ack, msg)) = Control::decode(data) else {
        return;
    };
    assert!(
        data.len() <= CTRL_MSG_MAX,
        "decoded a message longer than a control slot"
    );
    assert_eq!(msg.kind() as u8, data[0], "kind byte");
    let mut buf = [0u8; CTRL_MSG_MAX];
    let n = msg
        .encode(ack, &mut buf)
        .expect("a decoded message must re-encode");
    assert_eq!(
        &buf[..n],
        data,
        "decoding accepted a non-canonical encoding"
    );
    assert_eq!(
        Control::decode(&buf[..n]),
        Ok((ack, msg)),
        "round trip changed the message"
    );
    // Too small a buffer is an error, never a panic or a partial write taken for whole.
    let mut small = [0u8; CTRL_MSG_MAX];
    assert!(msg.encode(ack, &mut small[..n - 1]).is_err());
    check_invariants(&msg, n);
}

fn check_invariants(msg: &Control<'_>, len: usize) {
    match msg {
        Control::FileHeader(h) => {
            // Only a name in the receiver's own space decodes without passing validate_name
            // (the receiver rejects that file, not the session).
            let checked = validate_name(h.name.as_bytes());
            assert!(
                checked == Ok(h.name) || checked == Err(NameError::Reserved),
                "name {checked:?}"
            );
            assert!(h.mode <= 0o777, "mode {:#o}", h.mode);
            assert!(h.mtime_nsec < 1_000_000_000);
            assert!(h.size <= i64::MAX as u64, "size {}", h.size);
            if h.kind == EntryKind::Directory {
                assert_eq!(h.size, 0, "a directory with data");
            }
            if let Some(p) = h.part {
                // A non-empty piece of a regular file, of 4 KiB ..= 4 EiB parts (§4.1).
                assert_eq!(h.kind, EntryKind::File, "a part of a directory");
                assert!((12..=62).contains(&p.shift), "part shift {}", p.shift);
                let start = u128::from(p.index) << p.shift;
                assert!(start < u128::from(h.size), "part {p:?} past the end");
                let len = (u128::from(h.size) - start).min(1 << p.shift);
                assert_eq!(u128::from(h.data_len()), len, "data length of {p:?}");
            }
            assert_eq!(h.check_metadata(), Ok(()));
        }
        Control::FileEnd(e) => {
            assert_eq!(e.digest.canonical(), e.digest, "digest tail not zero");
            assert_eq!(e.digest.value().len(), e.digest.kind.len());
        }
        Control::Error { text, .. } => assert!(text.len() <= MAX_ERROR_TEXT),
        Control::Batch(b) => {
            // Whole messages back to back, none of them final or a batch, each sound.
            let mut total = wire::CTRL_HEADER_LEN;
            let mut buf = [0u8; CTRL_MSG_MAX];
            for m in b.iter() {
                assert!(
                    !matches!(m.kind(), MsgKind::Goodbye | MsgKind::Error | MsgKind::Batch),
                    "{:?} inside a batch",
                    m.kind()
                );
                let n = m.encode(0, &mut buf).expect("an inner message re-encodes");
                check_invariants(&m, n);
                total += n;
            }
            assert!(total > wire::CTRL_HEADER_LEN, "an empty batch");
            assert_eq!(total, len, "a batch is its messages");
        }
        _ => {}
    }
    let receiver_kind = matches!(
        msg.kind(),
        MsgKind::FileAnswer
            | MsgKind::Credit
            | MsgKind::FileResult
            | MsgKind::Ack
            | MsgKind::FileCancel
            | MsgKind::Goodbye
            | MsgKind::Error
            | MsgKind::KeepAlive
    );
    if receiver_kind {
        assert!(
            len <= RECEIVER_MSG_MAX,
            "{:?} of {len} bytes does not fit a receive buffer",
            msg.kind()
        );
    }
}

/// Every `u32` decodes to exactly one immediate, which encodes back to it.
fn imm_round_trip(raw: u32) {
    let imm = Imm::decode(raw);
    assert_eq!(imm.encode(), raw, "{imm:?}");
    let rebuilt = match imm {
        Imm::Chunk(s) => {
            assert!(raw >> 31 == 0);
            Imm::chunk(u64::from(s) + (1 << 31))
        }
        Imm::Control(n) => {
            assert_eq!(raw >> 30, 0b10);
            Imm::control(n | (1 << 30))
        }
        Imm::Ack(n) => {
            assert_eq!(raw >> 30, 0b11);
            Imm::ack(n.wrapping_add(1 << 30))
        }
    };
    assert_eq!(rebuilt, imm, "constructors keep only the low bits");
}
