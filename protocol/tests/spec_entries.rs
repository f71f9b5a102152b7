//! Tests written for requirements of PROTOCOL.md (its `**Requirements:**` lists) that no
//! other test covered directly: each names the requirement it checks.

use rdmaft_protocol::*;

type Store = ArrayStorage<4, 64>;

fn t(ms: u64) -> Instant {
    Instant::from_nanos(ms * 1_000_000)
}

fn negotiated() -> Negotiated {
    let (chunk, window) = (4096, 4);
    let ctrl = min_ctrl_depth(4);
    let features = Features::all() - Features::AUTH_PSK;
    Negotiated {
        group: u32::from(features.contains(Features::LANES)),
        features,
        flags: AcceptFlags::empty(),
        chunk_size: chunk,
        window,
        sender_ctrl_depth: ctrl,
        receiver_ctrl_depth: ctrl,
        max_open_files: 4,
        keepalive_ms: 1000,
        ring: RingInfo {
            addr: 0x10000,
            len: u64::from(chunk * window) + u64::from(ctrl) * 4096,
            rkey: 1,
        },
        sender_proof: None,
    }
}

/// The bytes of a plain file's header named `name`.
fn header_bytes(name: &str) -> Vec<u8> {
    let h = Control::FileHeader(wire::FileHeader {
        target: &[],
        sync: None,
        part: None,
        file_id: 1,
        kind: EntryKind::File,
        size: 0,
        mtime_sec: 0,
        mtime_nsec: 0,
        mode: 0o600,
        name,
    });
    let mut buf = [0u8; CTRL_MSG_MAX];
    let n = h.encode(0, &mut buf).unwrap();
    buf[..n].to_vec()
}

/// Writes `bytes` into a fresh receiver as its first control message; returns why the
/// name was refused, after checking that the session failed (error sent, `Failed`, ended).
fn refused_name(bytes: &[u8]) -> NameError {
    let mut r = Receiver::new(negotiated(), Config::default(), Store::new(), t(0)).unwrap();
    r.handle_write(t(1), Imm::control(0).encode(), bytes.len() as u32)
        .unwrap();
    let res = r.handle_control(t(1), bytes);
    let Err(Error::Violation(v @ Violation::Decode(DecodeError::InvalidName(why)))) = res else {
        panic!("{res:?}");
    };
    let mut buf = [0u8; CTRL_MSG_MAX];
    let (mut error_sent, mut failed) = (false, false);
    while let Some(out) = r.poll_output(t(1), &mut buf) {
        match out {
            ReceiverOutput::Transmit(n) => {
                error_sent |= matches!(
                    Control::decode(&buf[..n]),
                    Ok((_, Control::Error { code, detail, .. }))
                        if code == v.error_code() && detail == v.code()
                );
            }
            ReceiverOutput::Event(e) => {
                failed |= e == ReceiverEvent::Failed(Failure::Violation(v));
            }
        }
    }
    assert!(error_sent && failed && r.is_ended(), "{why:?}");
    why
}

/// [name.valid]: every kind of bad name in a header fails the receiver's session
/// (`InvalidName`), not only the file.
#[test]
// spec-test: [name.valid]
fn a_header_with_a_bad_name_fails_the_receivers_session() {
    let long = "a".repeat(MAX_NAME_LEN + 1);
    let long_component = format!("d/{}", "a".repeat(MAX_COMPONENT_LEN + 1));
    for (name, why) in [
        ("", NameError::Empty),
        (long.as_str(), NameError::TooLong),
        (long_component.as_str(), NameError::TooLong),
        ("a\u{1}b", NameError::Control),
        ("a\u{7f}", NameError::Control),
        ("/etc/passwd", NameError::Absolute),
        ("a//b", NameError::EmptyComponent),
        ("a/./b", NameError::EmptyComponent),
        ("a/../b", NameError::ParentDir),
    ] {
        assert_eq!(refused_name(&header_bytes(name)), why, "{name:?}");
    }
    // Not UTF-8: a header's name bytes patched after encoding.
    let mut bytes = header_bytes("ab");
    let at = bytes.len() - 2;
    bytes[at] = 0xff;
    assert_eq!(refused_name(&bytes), NameError::NotUtf8);
    // The longest name and component are fine.
    let mut longest = vec![b'a'; MAX_NAME_LEN];
    for i in (MAX_COMPONENT_LEN..MAX_NAME_LEN).step_by(MAX_COMPONENT_LEN + 1) {
        longest[i] = b'/';
    }
    let longest = String::from_utf8(longest).unwrap();
    let mut r = Receiver::new(negotiated(), Config::default(), Store::new(), t(0)).unwrap();
    let bytes = header_bytes(&longest);
    r.handle_write(t(1), Imm::control(0).encode(), bytes.len() as u32)
        .unwrap();
    assert!(r.handle_control(t(1), &bytes).unwrap().is_some());
}
