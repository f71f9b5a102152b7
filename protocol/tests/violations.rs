//! Negative tests: each handshake rejection and each protocol violation, driven by hand.
//! A violation must fail the machine, queue an error message for the peer and end with a
//! `Failed` event; later inputs are refused with `Error::Closed`.

use rdmaft_protocol::*;

const CHUNK: u32 = 64;

fn params(chunk: u32, window: u32, depth: u16) -> Params {
    Params {
        features: Features::all(),
        chunk_size: chunk,
        window,
        ctrl_depth: depth,
    }
}

fn negotiated(window: u32, features: Features) -> Negotiated {
    Negotiated {
        features,
        chunk_size: CHUNK,
        window,
        sender_ctrl_depth: 4,
        receiver_ctrl_depth: MIN_RECEIVER_CTRL_DEPTH,
        ring: RingInfo {
            addr: 0x10000,
            len: u64::from(CHUNK * window),
            rkey: 1,
        },
    }
}

fn t(ms: u64) -> Instant {
    Instant::from_nanos(ms * 1_000_000)
}

fn msg(m: Control<'_>, ack: u32) -> Vec<u8> {
    let mut buf = [0u8; CTRL_MSG_MAX];
    let n = m.encode(ack, &mut buf).unwrap();
    buf[..n].to_vec()
}

fn header(id: u64, size: u64, name: &str) -> Vec<u8> {
    msg(
        Control::FileHeader(wire::FileHeader {
            file_id: id,
            size,
            mtime_sec: 0,
            mtime_nsec: 0,
            mode: 0o600,
            name,
        }),
        0,
    )
}

/// Drains a receiver; returns the decoded-kind of each transmit and the events.
fn drain_receiver(r: &mut Receiver) -> (Vec<wire::MsgKind>, Vec<ReceiverEvent>) {
    let mut buf = [0u8; CTRL_MSG_MAX];
    let (mut sent, mut events) = (vec![], vec![]);
    while let Some(out) = r.poll_output(&mut buf) {
        match out {
            ReceiverOutput::Transmit(n) => sent.push(Control::decode(&buf[..n]).unwrap().1.kind()),
            ReceiverOutput::Event(e) => events.push(e),
        }
    }
    (sent, events)
}

fn drain_sender(s: &mut Sender) -> Vec<SenderOutput> {
    let mut buf = [0u8; CTRL_MSG_MAX];
    std::iter::from_fn(|| s.poll_output(&mut buf)).collect()
}

/// A receiver with file 1 (`size` bytes) offered, accepted and the accept sent.
fn receiving(window: u32, size: u64) -> Receiver {
    let mut r = Receiver::new(negotiated(window, Features::all()), None, t(0)).unwrap();
    assert!(r
        .handle_control(t(0), &header(1, size, "f"))
        .unwrap()
        .is_some());
    r.answer_file(t(0), 1, FileAnswer::Accept { offset: 0 })
        .unwrap();
    let (sent, _) = drain_receiver(&mut r);
    assert_eq!(sent, [wire::MsgKind::FileAnswer]);
    r
}

/// Checks `r` failed with `v`, sending an error message and a final event.
fn assert_receiver_failed(r: &mut Receiver, res: Result<(), Error>, v: Violation) {
    assert_eq!(res.unwrap_err(), Error::Violation(v));
    let (sent, events) = drain_receiver(r);
    assert_eq!(sent, [wire::MsgKind::Error]);
    assert_eq!(events, [ReceiverEvent::Failed(Failure::Violation(v))]);
    assert!(r.is_ended());
    assert_eq!(r.handle_chunk(t(9), 0, 0), Err(Error::Closed));
}

// ---- handshake ----

#[test]
fn negotiation_takes_the_minimum() {
    let mut hello = [0u8; 56];
    params(4096, 8, 4).hello().encode(&mut hello).unwrap();
    let agreed = negotiate(&hello, &params(1024, 64, 16)).unwrap();
    assert_eq!(
        (agreed.chunk_size, agreed.window, agreed.ring_len()),
        (1024, 8, 8192)
    );
}

#[test]
fn negotiation_rejects_with_reasons() {
    let local = params(4096, 8, 16);
    let hello_of = |p: Params| {
        let mut b = [0u8; 56];
        p.hello().encode(&mut b).unwrap();
        b
    };
    let mut bad_magic = hello_of(params(4096, 8, 4));
    bad_magic[0] = 0;
    assert_eq!(negotiate(&bad_magic, &local), Err(RejectReason::BAD_MAGIC));
    let mut v9 = hello_of(params(4096, 8, 4));
    v9[5] = 9;
    assert_eq!(
        negotiate(&v9, &local),
        Err(RejectReason::UNSUPPORTED_VERSION)
    );
    assert_eq!(
        negotiate(&hello_of(params(4096, 8, 4))[..10], &local),
        Err(RejectReason::MALFORMED)
    );
    assert_eq!(
        negotiate(&hello_of(params(0, 8, 4)), &local),
        Err(RejectReason::BAD_CHUNK_SIZE)
    );
    assert_eq!(
        negotiate(&hello_of(params(MAX_CHUNK_SIZE + 1, 8, 4)), &local),
        Err(RejectReason::BAD_CHUNK_SIZE)
    );
    assert_eq!(
        negotiate(&hello_of(params(4096, 0, 4)), &local),
        Err(RejectReason::BAD_WINDOW)
    );
    assert_eq!(
        negotiate(&hello_of(params(4096, MAX_WINDOW + 1, 4)), &local),
        Err(RejectReason::BAD_WINDOW)
    );
    assert_eq!(
        negotiate(&hello_of(params(4096, 8, 1)), &local),
        Err(RejectReason::BAD_CTRL_DEPTH)
    );
    let huge = params(MAX_CHUNK_SIZE, MAX_WINDOW, 16);
    assert_eq!(
        negotiate(&hello_of(huge), &huge),
        Err(RejectReason::RING_TOO_LARGE)
    );
}

#[test]
fn sender_checks_the_reply() {
    let local = params(4096, 8, 4);
    let ring = |len| RingInfo {
        addr: 0x1000,
        len,
        rkey: 7,
    };
    let reply = |features, chunk: u32, window: u32, depth, ring| {
        let mut b = [0u8; 196];
        let a = wire::AcceptRepr {
            features,
            chunk_size: chunk,
            window,
            ctrl_depth: depth,
            ring,
        };
        HandshakeReply::Accept(a).encode(&mut b).unwrap();
        b
    };
    let ok = reply(Features::RESUME, 1024, 8, 16, ring(8192));
    assert_eq!(check_reply(&ok, &local).map(|n| n.chunk_size), Ok(1024));
    let bigger = reply(Features::RESUME, 8192, 8, 16, ring(65536));
    assert!(matches!(
        check_reply(&bigger, &local),
        Err(HandshakeError::Invalid(_))
    ));
    let wrong_len = reply(Features::RESUME, 1024, 8, 16, ring(8191));
    assert!(matches!(
        check_reply(&wrong_len, &local),
        Err(HandshakeError::Invalid(_))
    ));
    let shallow = reply(Features::RESUME, 1024, 8, 2, ring(8192));
    assert!(matches!(
        check_reply(&shallow, &local),
        Err(HandshakeError::Invalid(_))
    ));
    let local_plain = Params {
        features: Features::empty(),
        ..local
    };
    assert!(matches!(
        check_reply(&ok, &local_plain),
        Err(HandshakeError::Invalid(_))
    ));
    let wrapping = reply(
        Features::empty(),
        1024,
        8,
        16,
        RingInfo {
            addr: u64::MAX - 10,
            len: 8192,
            rkey: 1,
        },
    );
    assert!(matches!(
        check_reply(&wrapping, &local),
        Err(HandshakeError::Invalid(_))
    ));
    let mut rej = [0u8; 148];
    reject(RejectReason::NO_RESOURCES).encode(&mut rej).unwrap();
    assert!(
        matches!(check_reply(&rej, &local), Err(HandshakeError::Rejected(r)) if r.reason == RejectReason::NO_RESOURCES)
    );
}

// ---- receiver ----

#[test]
fn wrong_seq() {
    let mut r = receiving(4, 1000);
    let res = r.handle_chunk(t(1), 1, CHUNK).map(drop);
    assert_receiver_failed(
        &mut r,
        res,
        Violation::WrongSeq {
            expected: 0,
            got: 1,
        },
    );
}

#[test]
fn credit_overrun_write_beyond_window() {
    let mut r = receiving(2, 1000);
    r.handle_chunk(t(1), 0, CHUNK).unwrap();
    r.handle_chunk(t(1), 1, CHUNK).unwrap();
    // Slots 0 and 1 are unconsumed: chunk 2 would overwrite slot 0.
    let res = r.handle_chunk(t(1), 2, CHUNK).map(drop);
    assert_receiver_failed(&mut r, res, Violation::CreditOverrun);
}

#[test]
fn consumed_but_unadvertised_credit_is_still_an_overrun() {
    let mut r = receiving(4, 1000);
    for seq in 0..4 {
        r.handle_chunk(t(1), seq, CHUNK).unwrap();
    }
    r.chunk_consumed(t(1), 0).unwrap();
    // Chunk 4 needs the credit for slot 0, which has not been sent yet... drain sends it.
    let (sent, _) = drain_receiver(&mut r);
    assert_eq!(sent, [wire::MsgKind::Credit]);
    r.handle_chunk(t(1), 4, CHUNK).unwrap();
    let res = r.handle_chunk(t(1), 5, CHUNK).map(drop);
    assert_receiver_failed(&mut r, res, Violation::CreditOverrun);
}

#[test]
fn bad_chunk_length() {
    let mut r = receiving(4, 100);
    r.handle_chunk(t(1), 0, CHUNK).unwrap();
    // The second and last chunk of a 100-byte file carries 36 bytes.
    let res = r.handle_chunk(t(1), 1, CHUNK).map(drop);
    assert_receiver_failed(
        &mut r,
        res,
        Violation::BadChunkLength {
            expected: 36,
            got: CHUNK,
        },
    );
}

#[test]
fn chunk_before_the_answer_was_sent() {
    let mut r = Receiver::new(negotiated(4, Features::all()), None, t(0)).unwrap();
    r.handle_control(t(0), &header(1, 10, "f")).unwrap();
    r.answer_file(t(0), 1, FileAnswer::Accept { offset: 0 })
        .unwrap();
    // Not drained: the sender cannot know the accept yet.
    let res = r.handle_chunk(t(1), 0, 10).map(drop);
    assert_eq!(res, Err(Error::Violation(Violation::UnexpectedChunk)));
}

#[test]
fn chunk_past_the_files_end() {
    let mut r = receiving(4, 10);
    r.handle_chunk(t(1), 0, 10).unwrap();
    let res = r.handle_chunk(t(1), 1, 10).map(drop);
    assert_receiver_failed(&mut r, res, Violation::UnexpectedChunk);
}

#[test]
fn end_before_data() {
    let mut r = receiving(4, 100);
    r.handle_chunk(t(1), 0, CHUNK).unwrap();
    let end = msg(
        Control::FileEnd(wire::FileEnd {
            file_id: 1,
            length: 100,
            digest: Digest::NONE,
        }),
        0,
    );
    let res = r.handle_control(t(1), &end).map(drop);
    assert_receiver_failed(&mut r, res, Violation::EndBeforeData);
}

#[test]
fn end_with_wrong_length() {
    let mut r = receiving(4, 10);
    r.handle_chunk(t(1), 0, 10).unwrap();
    let end = msg(
        Control::FileEnd(wire::FileEnd {
            file_id: 1,
            length: 11,
            digest: Digest::NONE,
        }),
        0,
    );
    let res = r.handle_control(t(1), &end).map(drop);
    assert_receiver_failed(&mut r, res, Violation::EndLengthMismatch);
}

#[test]
fn end_with_unnegotiated_digest() {
    let mut r = Receiver::new(negotiated(4, Features::DIGEST_XXH3_128), None, t(0)).unwrap();
    r.handle_control(t(0), &header(1, 0, "f")).unwrap();
    r.answer_file(t(0), 1, FileAnswer::Accept { offset: 0 })
        .unwrap();
    drain_receiver(&mut r);
    let digest = Digest::new(DigestKind::Blake3, &[1; 32]).unwrap();
    let end = msg(
        Control::FileEnd(wire::FileEnd {
            file_id: 1,
            length: 0,
            digest,
        }),
        0,
    );
    let res = r.handle_control(t(1), &end).map(drop);
    assert_receiver_failed(&mut r, res, Violation::DigestNotNegotiated);
}

#[test]
fn receiver_gets_sender_bound_messages() {
    for m in [
        Control::Credit { consumed: 0 },
        Control::FileAnswer {
            file_id: 1,
            answer: FileAnswer::Accept { offset: 0 },
        },
    ] {
        let mut r = Receiver::new(negotiated(4, Features::all()), None, t(0)).unwrap();
        let res = r.handle_control(t(1), &msg(m, 0)).map(drop);
        assert_receiver_failed(&mut r, res, Violation::UnexpectedMessage(m.kind()));
    }
}

#[test]
fn duplicate_and_too_many_files() {
    let mut r = Receiver::new(negotiated(4, Features::all()), None, t(0)).unwrap();
    r.handle_control(t(0), &header(1, 1, "a")).unwrap();
    let res = r.handle_control(t(0), &header(1, 1, "b")).map(drop);
    assert_receiver_failed(&mut r, res, Violation::DuplicateFileId(1));

    let mut r = Receiver::new(negotiated(4, Features::all()), None, t(0)).unwrap();
    for id in 0..MAX_OPEN_FILES as u64 {
        r.handle_control(t(0), &header(id, 1, "a")).unwrap();
    }
    let res = r.handle_control(t(0), &header(99, 1, "a")).map(drop);
    assert_receiver_failed(&mut r, res, Violation::TooManyOpenFiles);
}

#[test]
fn goodbye_with_open_files() {
    let mut r = receiving(4, 10);
    let res = r.handle_control(t(1), &msg(Control::Goodbye, 0)).map(drop);
    assert_receiver_failed(&mut r, res, Violation::GoodbyeWithOpenFiles);
}

#[test]
fn ack_beyond_messages_sent() {
    let mut r = receiving(4, 10); // one message (the answer) sent
    r.handle_control(t(1), &msg(Control::Ack, 1)).unwrap();
    let res = r.handle_control(t(1), &msg(Control::Ack, 2)).map(drop);
    assert_receiver_failed(&mut r, res, Violation::BadAck);
}

#[test]
fn undecodable_control_message() {
    let mut r = Receiver::new(negotiated(4, Features::all()), None, t(0)).unwrap();
    let res = r
        .handle_control(t(1), &[0xee, 0, 0, 8, 0, 0, 0, 0])
        .map(drop);
    assert_receiver_failed(
        &mut r,
        res,
        Violation::Decode(DecodeError::UnknownType(0xee)),
    );
}

#[test]
fn peer_error_ends_the_receiver_without_a_reply() {
    let mut r = receiving(4, 10);
    let e = msg(
        Control::Error {
            code: ErrorCode::CANCELLED,
            text: "user hit ^C",
        },
        0,
    );
    r.handle_control(t(1), &e).unwrap();
    let (sent, events) = drain_receiver(&mut r);
    assert!(sent.is_empty());
    match events.as_slice() {
        [ReceiverEvent::Failed(Failure::PeerAborted(code, text))] => {
            assert_eq!(
                (*code, text.as_str()),
                (ErrorCode::CANCELLED, "user hit ^C")
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn receiver_usage_errors_change_nothing() {
    let mut r = receiving(4, 1000);
    assert_eq!(
        r.chunk_consumed(t(1), 0),
        Err(Error::Usage(UsageError::OutOfOrder))
    );
    r.handle_chunk(t(1), 0, CHUNK).unwrap();
    assert_eq!(
        r.chunk_consumed(t(1), 1),
        Err(Error::Usage(UsageError::OutOfOrder))
    );
    assert_eq!(
        r.file_verified(t(1), 1, FileStatus::OK),
        Err(Error::Usage(UsageError::UnknownFile))
    );
    assert_eq!(
        r.answer_file(t(1), 1, FileAnswer::Accept { offset: 0 }),
        Err(Error::Usage(UsageError::UnknownFile))
    );
    r.chunk_consumed(t(1), 0).unwrap();
    assert!(!r.is_ended());
}

#[test]
fn resume_needs_the_feature_and_fits_the_file() {
    let mut r = Receiver::new(negotiated(4, Features::empty()), None, t(0)).unwrap();
    r.handle_control(t(0), &header(1, 10, "f")).unwrap();
    assert_eq!(
        r.answer_file(t(0), 1, FileAnswer::Accept { offset: 5 }),
        Err(Error::Usage(UsageError::InvalidAnswer))
    );
    let mut r = Receiver::new(negotiated(4, Features::RESUME), None, t(0)).unwrap();
    r.handle_control(t(0), &header(1, 10, "f")).unwrap();
    assert_eq!(
        r.answer_file(t(0), 1, FileAnswer::Accept { offset: 11 }),
        Err(Error::Usage(UsageError::InvalidAnswer))
    );
    r.answer_file(t(0), 1, FileAnswer::Accept { offset: 10 })
        .unwrap();
}

// ---- sender ----

fn sender_with_files(window: u32, features: Features, sizes: &[u64]) -> Sender {
    let mut s = Sender::new(negotiated(window, features), None, t(0)).unwrap();
    let mut buf = [0u8; CTRL_MSG_MAX];
    for (id, &size) in sizes.iter().enumerate() {
        let info = FileInfo {
            file_id: id as u64,
            size,
            mtime_sec: 0,
            mtime_nsec: 0,
            mode: 0o644,
            name: "f",
        };
        s.start_file(t(0), &info, &mut buf).unwrap();
    }
    s
}

fn assert_sender_failed(s: &mut Sender, res: Result<(), Error>, v: Violation) {
    assert_eq!(res, Err(Error::Violation(v)));
    let outs = drain_sender(s);
    assert!(matches!(outs[0], SenderOutput::Transmit(_)), "{outs:?}");
    // Events queued before the violation may precede it; the failure is last.
    assert_eq!(
        outs.last(),
        Some(&SenderOutput::Event(SenderEvent::Failed(
            Failure::Violation(v)
        )))
    );
    assert_eq!(s.close(t(9)), Err(Error::Closed));
}

fn answer(id: u64, offset: u64) -> Vec<u8> {
    msg(
        Control::FileAnswer {
            file_id: id,
            answer: FileAnswer::Accept { offset },
        },
        0,
    )
}

#[test]
fn answer_for_unknown_file() {
    let mut s = sender_with_files(4, Features::all(), &[]);
    let res = s.handle_control(t(1), &answer(5, 0));
    assert_sender_failed(&mut s, res, Violation::UnknownFile(5));
}

#[test]
fn answer_out_of_order() {
    let mut s = sender_with_files(4, Features::all(), &[10, 10]);
    let res = s.handle_control(t(1), &answer(1, 0));
    assert_sender_failed(&mut s, res, Violation::AnswerOutOfOrder);
}

#[test]
fn resume_beyond_end_or_without_feature() {
    let mut s = sender_with_files(4, Features::all(), &[10]);
    let res = s.handle_control(t(1), &answer(0, 11));
    assert_sender_failed(&mut s, res, Violation::BadResumeOffset);
    let mut s = sender_with_files(4, Features::empty(), &[10]);
    let res = s.handle_control(t(1), &answer(0, 5));
    assert_sender_failed(&mut s, res, Violation::BadResumeOffset);
}

#[test]
fn credit_beyond_data_sent_or_backwards() {
    let mut s = sender_with_files(4, Features::all(), &[10]);
    let res = s.handle_control(t(1), &msg(Control::Credit { consumed: 1 }, 0));
    assert_sender_failed(&mut s, res, Violation::BadCredit);
}

#[test]
fn result_for_a_file_not_ended() {
    let mut s = sender_with_files(4, Features::all(), &[10]);
    s.handle_control(t(1), &answer(0, 0)).unwrap();
    let res = s.handle_control(
        t(1),
        &msg(
            Control::FileResult {
                file_id: 0,
                status: FileStatus::OK,
            },
            0,
        ),
    );
    assert_sender_failed(&mut s, res, Violation::UnknownFile(0));
}

#[test]
fn unsolicited_goodbye_or_header() {
    let mut s = sender_with_files(4, Features::all(), &[]);
    let res = s.handle_control(t(1), &msg(Control::Goodbye, 0));
    assert_sender_failed(
        &mut s,
        res,
        Violation::UnexpectedMessage(wire::MsgKind::Goodbye),
    );
    let mut s = sender_with_files(4, Features::all(), &[]);
    let res = s.handle_control(t(1), &header(1, 1, "x"));
    assert_sender_failed(
        &mut s,
        res,
        Violation::UnexpectedMessage(wire::MsgKind::FileHeader),
    );
}

#[test]
fn sender_never_exceeds_its_credit() {
    let window = 3;
    let mut s = sender_with_files(window, Features::all(), &[100 * u64::from(CHUNK)]);
    s.handle_control(t(1), &answer(0, 0)).unwrap();
    let mut writes = 0;
    // Make every requested chunk ready and complete every write, with no credit ever sent.
    for _ in 0..50 {
        for out in drain_sender(&mut s) {
            match out {
                SenderOutput::Read(r) => s.data_ready(t(2), r.seq).unwrap(),
                SenderOutput::Write(w) => {
                    writes += 1;
                    s.handle_write_completed(t(2), w.seq).unwrap();
                }
                _ => {}
            }
        }
    }
    assert_eq!(writes, window);
    assert_eq!(s.in_flight(), u64::from(window));
}

#[test]
fn sender_usage_errors() {
    let mut s = sender_with_files(4, Features::DIGEST_XXH3_128, &[10]);
    let mut buf = [0u8; CTRL_MSG_MAX];
    let info = |id, name| FileInfo {
        file_id: id,
        size: 1,
        mtime_sec: 0,
        mtime_nsec: 0,
        mode: 0o644,
        name,
    };
    assert_eq!(
        s.start_file(t(0), &info(0, "g"), &mut buf),
        Err(Error::Usage(UsageError::DuplicateFileId))
    );
    assert!(matches!(
        s.start_file(t(0), &info(1, "../g"), &mut buf),
        Err(Error::Usage(UsageError::InvalidName(_)))
    ));
    assert_eq!(
        s.data_ready(t(0), 0),
        Err(Error::Usage(UsageError::OutOfOrder))
    );
    assert_eq!(
        s.handle_write_completed(t(0), 0),
        Err(Error::Usage(UsageError::OutOfOrder))
    );
    // Not accepted yet: no digest can be given.
    assert_eq!(
        s.finish_file(t(0), 0, Digest::NONE),
        Err(Error::Usage(UsageError::UnknownFile))
    );
    s.handle_control(t(1), &answer(0, 0)).unwrap();
    let blake = Digest::new(DigestKind::Blake3, &[0; 32]).unwrap();
    assert_eq!(
        s.finish_file(t(0), 0, blake),
        Err(Error::Usage(UsageError::DigestNotNegotiated))
    );
    for id in 1..MAX_OPEN_FILES as u64 {
        s.start_file(t(0), &info(id, "h"), &mut buf).unwrap();
    }
    assert_eq!(
        s.start_file(t(0), &info(9, "h"), &mut buf),
        Err(Error::Usage(UsageError::TooManyOpenFiles))
    );
}

#[test]
fn sender_times_out_waiting_for_an_answer() {
    let mut s = Sender::new(
        negotiated(4, Features::all()),
        Some(std::time::Duration::from_millis(100)),
        t(0),
    )
    .unwrap();
    assert_eq!(s.poll_timeout(), None, "nothing owed yet");
    let mut buf = [0u8; CTRL_MSG_MAX];
    let info = FileInfo {
        file_id: 1,
        size: 1,
        mtime_sec: 0,
        mtime_nsec: 0,
        mode: 0o644,
        name: "f",
    };
    s.start_file(t(10), &info, &mut buf).unwrap();
    assert_eq!(s.poll_timeout(), Some(t(110)));
    s.handle_timeout(t(109));
    assert!(!s.is_ended());
    s.handle_timeout(t(110));
    let outs = drain_sender(&mut s);
    assert!(matches!(outs[0], SenderOutput::Transmit(_)));
    assert_eq!(
        outs[1],
        SenderOutput::Event(SenderEvent::Failed(Failure::TimedOut))
    );
}

#[test]
fn wrong_digest_is_reported_by_the_receiver() {
    // The receiver's application finds the digest wrong; the sender learns it per file.
    let mut s = sender_with_files(4, Features::all(), &[0]);
    s.handle_control(t(1), &answer(0, 0)).unwrap();
    s.finish_file(t(1), 0, Digest::new(DigestKind::Blake3, &[7; 32]).unwrap())
        .unwrap();
    drain_sender(&mut s);
    s.handle_control(
        t(2),
        &msg(
            Control::FileResult {
                file_id: 0,
                status: FileStatus::DIGEST_MISMATCH,
            },
            0,
        ),
    )
    .unwrap();
    let outs = drain_sender(&mut s);
    assert!(outs.contains(&SenderOutput::Event(SenderEvent::FileDone {
        file_id: 0,
        status: FileStatus::DIGEST_MISMATCH
    })));
}

#[test]
fn hand_built_agreements_are_checked() {
    let good = negotiated(4, Features::all());
    assert!(Sender::new(good, None, t(0)).is_ok() && Receiver::new(good, None, t(0)).is_ok());
    let bad = [
        Negotiated { window: 0, ..good },
        Negotiated {
            chunk_size: 0,
            ..good
        },
        Negotiated {
            sender_ctrl_depth: 0,
            ..good
        },
        Negotiated {
            receiver_ctrl_depth: 2,
            ..good
        },
        Negotiated {
            ring: RingInfo {
                len: 1,
                ..good.ring
            },
            ..good
        },
        Negotiated {
            ring: RingInfo {
                addr: u64::MAX,
                ..good.ring
            },
            ..good
        },
    ];
    for neg in bad {
        assert!(
            matches!(
                Sender::new(neg, None, t(0)),
                Err(UsageError::InvalidParameters(_))
            ),
            "{neg:?}"
        );
        assert!(
            matches!(
                Receiver::new(neg, None, t(0)),
                Err(UsageError::InvalidParameters(_))
            ),
            "{neg:?}"
        );
    }
}
