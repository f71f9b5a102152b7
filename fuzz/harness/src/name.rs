//! `validate_name` on raw bytes, against an independent reference of PROTOCOL.md §4.1.

use rdmaft_protocol::*;

/// Storage with room for the deepest valid name (at most 2000 components).
type NameStore = ArrayStorage<1, 2048>;

/// The verdict of §4.1, written independently of the crate, with its checks in the crate's
/// order of precedence.
fn reference(raw: &[u8]) -> Result<&str, NameError> {
    if raw.is_empty() {
        return Err(NameError::Empty);
    }
    if raw.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong);
    }
    if raw.contains(&0) {
        return Err(NameError::Nul);
    }
    let name = match std::str::from_utf8(raw) {
        Ok(name) if name.chars().any(|c| c.is_ascii_control()) => return Err(NameError::Control),
        Ok(name) => name,
        // Control bytes are checked before UTF-8 (they are never part of a multi-byte
        // sequence).
        Err(_) if raw.iter().any(|b| b.is_ascii_control()) => return Err(NameError::Control),
        Err(_) => return Err(NameError::NotUtf8),
    };
    if name.starts_with('/') {
        return Err(NameError::Absolute);
    }
    for c in name.split('/') {
        if c.is_empty() || c == "." {
            return Err(NameError::EmptyComponent);
        }
        if c == ".." {
            return Err(NameError::ParentDir);
        }
        if c.len() > MAX_COMPONENT_LEN {
            return Err(NameError::TooLong);
        }
    }
    // Only a name that is otherwise valid is checked against the receiver's own space.
    if name
        .split('/')
        .any(|c| c.to_ascii_lowercase().starts_with(".rdmaft-"))
    {
        return Err(NameError::Reserved);
    }
    Ok(name)
}

/// The harness: the crate agrees with the reference; an accepted name cannot leave the
/// receive directory, fits a file header that decodes back to it, and a sender whose
/// open-name table has room for its components starts it.
pub fn name(data: &[u8]) {
    let got = validate_name(data);
    assert_eq!(got, reference(data), "validate_name differs from §4.1");
    if got == Err(NameError::Reserved) {
        reserved(data);
    }
    let Ok(name) = got else {
        return;
    };
    assert_eq!(name.as_bytes(), data);
    assert!(!name.is_empty() && name.len() <= MAX_NAME_LEN);
    assert!(!name.starts_with('/'), "absolute name accepted: {name:?}");
    assert!(
        !name.chars().any(|c| c.is_ascii_control()),
        "control char: {name:?}"
    );
    for c in name.split('/') {
        assert!(!c.is_empty(), "empty component accepted: {name:?}");
        assert!(c != "." && c != "..", "dot component accepted: {name:?}");
        assert!(c.len() <= MAX_COMPONENT_LEN);
    }
    let header = wire::FileHeader {
        sync: None,
        part: None,
        file_id: 1,
        kind: EntryKind::File,
        size: 2,
        mtime_sec: 3,
        mtime_nsec: 4,
        mode: 0o644,
        name,
        target: &[],
    };
    let mut buf = [0u8; CTRL_MSG_MAX];
    let n = Control::FileHeader(header)
        .encode(0, &mut buf)
        .expect("a valid name fits a control message");
    assert_eq!(
        Control::decode(&buf[..n]),
        Ok((0, Control::FileHeader(header)))
    );

    // Both machines' open-name tables take it (no false conflict on an empty table).
    let neg = one_file_agreement();
    let mut sender =
        Sender::new(neg, Config::default(), NameStore::new(), Instant::ZERO).expect("sender");
    assert_eq!(sender.start_file(Instant::ZERO, &header), Ok(()));
    let mut receiver =
        Receiver::new(neg, Config::default(), NameStore::new(), Instant::ZERO).expect("receiver");
    let len = u32::try_from(n).expect("fits");
    let incoming = receiver.handle_write(Instant::ZERO, Imm::control(0).encode(), len);
    assert!(
        matches!(incoming, Ok(Incoming::Control { .. })),
        "{incoming:?}"
    );
    let offer = receiver
        .handle_control(Instant::ZERO, &buf[..n])
        .expect("a valid header")
        .expect("an offer");
    assert_eq!(offer.header, header);
    assert_eq!(offer.refusal, None, "{name:?} refused on an empty table");
}

/// A name in the receiver's own space (`.rdmaft-…`): a sender does not start it; a header
/// carrying it still decodes, and the receiver must reject that file (`INVALID_NAME`), not
/// fail the session.
fn reserved(data: &[u8]) {
    let name = std::str::from_utf8(data).expect("only a valid name is reserved");
    let header = wire::FileHeader {
        sync: None,
        part: None,
        file_id: 1,
        kind: EntryKind::File,
        size: 2,
        mtime_sec: 3,
        mtime_nsec: 4,
        mode: 0o644,
        name,
        target: &[],
    };
    let neg = one_file_agreement();
    let mut sender =
        Sender::new(neg, Config::default(), NameStore::new(), Instant::ZERO).expect("sender");
    assert_eq!(
        sender.start_file(Instant::ZERO, &header),
        Err(Error::Usage(UsageError::InvalidName(NameError::Reserved)))
    );
    let mut buf = [0u8; CTRL_MSG_MAX];
    let n = Control::FileHeader(header)
        .encode(0, &mut buf)
        .expect("a valid name fits a control message");
    let mut receiver =
        Receiver::new(neg, Config::default(), NameStore::new(), Instant::ZERO).expect("receiver");
    let len = u32::try_from(n).expect("fits");
    let incoming = receiver.handle_write(Instant::ZERO, Imm::control(0).encode(), len);
    assert!(
        matches!(incoming, Ok(Incoming::Control { .. })),
        "{incoming:?}"
    );
    let offer = receiver
        .handle_control(Instant::ZERO, &buf[..n])
        .expect("a reserved name still decodes")
        .expect("an offer");
    assert_eq!(
        offer.refusal,
        Some(FileRejectReason::INVALID_NAME),
        "{name:?} offered without a refusal"
    );
}

/// The smallest agreement: one open file.
fn one_file_agreement() -> Negotiated {
    let depth = min_ctrl_depth(1);
    Negotiated {
        group: u32::from((Features::empty()).contains(Features::LANES)),

        features: Features::empty(),
        flags: AcceptFlags::empty(),
        chunk_size: MIN_CHUNK_SIZE,
        window: 1,
        sender_ctrl_depth: depth,
        receiver_ctrl_depth: depth,
        max_open_files: 1,
        keepalive_ms: 1000,
        ring: RingInfo {
            addr: 0x1000,
            len: u64::from(MIN_CHUNK_SIZE) + u64::from(depth) * CTRL_MSG_MAX as u64,
            rkey: 1,
        },
        sender_proof: None,
    }
}
