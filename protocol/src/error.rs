//! Errors of the state machines, split by whose fault they are.
//!
//! Policy (after str0m): peer input that breaks the protocol is a [`Violation`], local misuse
//! of the API is a [`UsageError`]; neither panics. Panics are reserved for broken internal
//! invariants, and there are none reachable from inputs (the fuzz targets check this).

use crate::codes::ErrorCode;
use crate::name::NameError;
use crate::negotiate::ParamError;
use crate::wire::{truncate_text, DecodeError, Field, MsgKind, MAX_ERROR_TEXT};
use core::fmt;

/// The peer broke the protocol. The state machine has failed and queued an error message.
///
/// [`Violation::code`] gives each a stable number, carried as the detail of the error message
/// (PROTOCOL.md §7 lists them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Violation {
    /// A control message could not be decoded.
    Decode(DecodeError),
    /// A message that this role never receives, or not in the current state.
    UnexpectedMessage(MsgKind),
    /// A message names a file that is not open in a state where it fits.
    UnknownFile(u64),
    /// A file header reuses the id of an open file.
    DuplicateFileId(u64),
    /// A header beyond the open-file limit.
    TooManyOpenFiles,
    /// A file answer is not for the oldest unanswered file.
    AnswerOutOfOrder,
    /// A resume offset beyond the file's end, not chunk-aligned, or without the feature.
    BadResumeOffset,
    /// A credit went backwards or covers chunks never written.
    BadCredit,
    /// An ack covers control messages never sent.
    BadAck,
    /// A chunk's immediate data is not the next sequence number.
    WrongSeq {
        /// Expected (low 31 bits of the sequence number).
        expected: u32,
        /// Received.
        got: u32,
    },
    /// A control message's number is not the next one.
    WrongCtrlSeq {
        /// Expected (low 30 bits).
        expected: u32,
        /// Received.
        got: u32,
    },
    /// A control message beyond the sender's control credit (it overwrote an unprocessed
    /// slot), or an ordinary one in the last slot, which is kept for the final Goodbye or
    /// Error.
    CtrlOverrun,
    /// A chunk arrived with no credit for it (it overwrote an unconsumed slot).
    CreditOverrun,
    /// A chunk arrived when no accepted file expects data.
    UnexpectedChunk,
    /// A write's length is not the one derived for it (a chunk's from its file and sequence
    /// number, an ack's zero, a control message's at most one slot).
    BadWriteLength {
        /// Derived length (the limit, for control messages).
        expected: u32,
        /// Received length.
        got: u32,
    },
    /// A file end arrived before all of the file's chunks.
    EndBeforeData,
    /// A file end's length differs from the entry's data length (the size, or a part's length).
    EndLengthMismatch,
    /// A file end uses a digest that was not negotiated.
    DigestNotNegotiated,
    /// A goodbye while files are still open.
    GoodbyeWithOpenFiles,
    /// A name that is open already, or shares a path with an open one, at the sender's side
    /// of the accounting.
    NameConflict,
    /// With `AUTH_PSK`, a message other than the sender's proof came first.
    AuthMissing,
    /// The sender's key proof is wrong.
    AuthFailed,
    /// A file cancel before the file's answer, a second cancel for one file (also when the
    /// first crossed the sender's end or abort), or a cancel with the status `OK`.
    BadCancel,
    /// An accept that would take the session past [`crate::MAX_SESSION_CHUNKS`] sequence
    /// numbers (only a hostile peer gets there: it takes thousands of exabyte-sized files).
    SeqSpaceExhausted,
    /// A directory's file end carries a digest (a directory has no content to digest).
    DirectoryDigest,
    /// A result `OK` for a file whose stream the sender aborted or the receiver cancelled:
    /// such a file was not delivered.
    BadResult,
    /// A file part without `LANES` agreed, or whose part size is below the chunk size.
    BadPart,
    /// A header asking to sync without `SYNC` agreed, or an answer that does not fit its
    /// header's sync request (PROTOCOL.md §4.2).
    BadSync,
    /// A symbolic link offered without `LINKS` agreed (PROTOCOL.md §4.1).
    BadLink,
}

impl Violation {
    /// The stable number of this violation (PROTOCOL.md §7).
    pub fn code(&self) -> u16 {
        match self {
            Violation::Decode(_) => 1,
            Violation::UnexpectedMessage(_) => 2,
            Violation::UnknownFile(_) => 3,
            Violation::DuplicateFileId(_) => 4,
            Violation::TooManyOpenFiles => 5,
            Violation::AnswerOutOfOrder => 6,
            Violation::BadResumeOffset => 7,
            Violation::BadCredit => 8,
            Violation::BadAck => 9,
            Violation::WrongSeq { .. } => 10,
            Violation::WrongCtrlSeq { .. } => 11,
            Violation::CtrlOverrun => 12,
            Violation::CreditOverrun => 13,
            Violation::UnexpectedChunk => 14,
            Violation::BadWriteLength { .. } => 15,
            Violation::EndBeforeData => 16,
            Violation::EndLengthMismatch => 17,
            Violation::DigestNotNegotiated => 18,
            Violation::GoodbyeWithOpenFiles => 19,
            Violation::NameConflict => 20,
            Violation::AuthMissing => 21,
            Violation::AuthFailed => 22,
            Violation::BadCancel => 23,
            Violation::SeqSpaceExhausted => 24,
            Violation::DirectoryDigest => 25,
            Violation::BadResult => 26,
            Violation::BadPart => 27,
            Violation::BadSync => 28,
            Violation::BadLink => 29,
        }
    }

    /// The error code sent for it: authentication failures have their own.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            // spec: [violation.error]
            Violation::AuthMissing | Violation::AuthFailed => ErrorCode::AUTH_FAILED,
            _ => ErrorCode::PROTOCOL_VIOLATION,
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Decode(e) => write!(f, "{e}"),
            Violation::UnexpectedMessage(k) => write!(f, "unexpected {k:?} message"),
            Violation::UnknownFile(id) => write!(f, "message for unknown file {id}"),
            Violation::DuplicateFileId(id) => write!(f, "duplicate file id {id}"),
            Violation::TooManyOpenFiles => f.write_str("too many open files"),
            Violation::AnswerOutOfOrder => f.write_str("file answer out of order"),
            Violation::BadResumeOffset => f.write_str("bad resume offset"),
            Violation::BadCredit => f.write_str("credit went backwards or beyond the data sent"),
            Violation::BadAck => f.write_str("ack beyond the messages sent"),
            Violation::WrongSeq { expected, got } => {
                write!(f, "chunk sequence {got}, expected {expected}")
            }
            Violation::WrongCtrlSeq { expected, got } => {
                write!(f, "control message {got}, expected {expected}")
            }
            Violation::CtrlOverrun => f.write_str("control message written without credit"),
            Violation::CreditOverrun => f.write_str("chunk written without credit"),
            Violation::UnexpectedChunk => f.write_str("chunk while no file expects data"),
            Violation::BadWriteLength { expected, got } => {
                write!(f, "write of {got} bytes, expected {expected}")
            }
            Violation::EndBeforeData => f.write_str("file end before all its data"),
            Violation::EndLengthMismatch => f.write_str("file end length differs from header"),
            Violation::DigestNotNegotiated => f.write_str("digest kind not negotiated"),
            Violation::GoodbyeWithOpenFiles => f.write_str("goodbye with files open"),
            Violation::NameConflict => f.write_str("name conflicts with an open file"),
            Violation::AuthMissing => f.write_str("key proof missing"),
            Violation::AuthFailed => f.write_str("wrong key proof"),
            Violation::BadCancel => {
                f.write_str("cancel before the answer, a second cancel, or a cancel with status OK")
            }
            Violation::SeqSpaceExhausted => f.write_str("session sequence space exhausted"),
            Violation::DirectoryDigest => f.write_str("file end of a directory with a digest"),
            Violation::BadResult => f.write_str("result OK for an aborted or cancelled file"),
            Violation::BadPart => {
                f.write_str("file part without LANES, or with a part size below the chunk size")
            }
            Violation::BadSync => f.write_str(
                "sync header without SYNC agreed, or an answer that does not fit its header",
            ),
            Violation::BadLink => f.write_str("symbolic link without LINKS agreed"),
        }
    }
}

/// The application called the API out of turn; the state machine is unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UsageError {
    /// The session is not open for this (closing, closed or failed).
    NotOpen,
    /// The open-file limit is reached; wait for a result.
    TooManyOpenFiles,
    /// The file id is already open.
    DuplicateFileId,
    /// No open file has that id in a state where the call fits.
    UnknownFile,
    /// The name is not a valid relative name.
    InvalidName(NameError),
    /// Mode, mtime or size out of range.
    InvalidMetadata(Field),
    /// The name is open already or shares a path with an open name; wait for its result.
    NameConflict,
    /// The open-name table has no room for the name's directories now; wait for results.
    NameTableFull,
    /// A sequence number is not the next one expected (completions, data, consumption are
    /// reported in order).
    OutOfOrder,
    /// The digest kind was not negotiated.
    DigestNotNegotiated,
    /// An answer does not fit (resume offset beyond the end or not chunk-aligned, resume not
    /// negotiated, an accept of an offer the protocol requires rejecting, or an accept that
    /// would exceed [`crate::MAX_SESSION_CHUNKS`]; reject that file instead).
    InvalidAnswer,
    /// Outputs were not drained; drain `poll_output` after every input.
    OutputsNotDrained,
    /// The parameters given to a state machine are invalid.
    InvalidParameters(ParamError),
    /// A control message's bytes are due ([`crate::Incoming::Control`]) before other input.
    ControlPending,
    /// No control message was announced by a write completion.
    NoControlPending,
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UsageError::NotOpen => f.write_str("session is not open"),
            UsageError::TooManyOpenFiles => f.write_str("too many open files"),
            UsageError::DuplicateFileId => f.write_str("file id already open"),
            UsageError::UnknownFile => f.write_str("no such open file in that state"),
            UsageError::InvalidName(e) => write!(f, "invalid name: {e}"),
            UsageError::InvalidMetadata(field) => {
                write!(f, "invalid metadata: {} out of range", field.name())
            }
            UsageError::NameConflict => f.write_str("name conflicts with an open file"),
            UsageError::NameTableFull => f.write_str("open-name table full"),
            UsageError::OutOfOrder => f.write_str("sequence number out of order"),
            UsageError::DigestNotNegotiated => f.write_str("digest kind not negotiated"),
            UsageError::InvalidAnswer => f.write_str("answer does not fit the file"),
            UsageError::OutputsNotDrained => f.write_str("outputs not drained"),
            UsageError::InvalidParameters(why) => write!(f, "invalid parameters: {why}"),
            UsageError::ControlPending => f.write_str("a control message is due first"),
            UsageError::NoControlPending => f.write_str("no control message is due"),
        }
    }
}

/// Error returned by a state machine input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The peer broke the protocol; the session has failed.
    Violation(Violation),
    /// The application misused the API; nothing changed.
    Usage(UsageError),
    /// The session already ended (closed, failed or aborted); the input was ignored.
    Closed,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Violation(v) => write!(f, "peer violated the protocol: {v}"),
            Error::Usage(u) => write!(f, "API misuse: {u}"),
            Error::Closed => f.write_str("session already ended"),
        }
    }
}

impl From<UsageError> for Error {
    fn from(u: UsageError) -> Self {
        Error::Usage(u)
    }
}

/// Why a session ended badly; reported in the final event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The peer broke the protocol.
    Violation(Violation),
    /// The peer aborted with this code, detail and text.
    PeerAborted(ErrorCode, u16, ErrorText),
    /// The local application aborted with this code.
    Aborted(ErrorCode),
    /// The peer made no progress within the idle timeout.
    TimedOut,
}

/// An error text kept inline (no allocator), at most [`MAX_ERROR_TEXT`] bytes of UTF-8.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ErrorText {
    bytes: [u8; MAX_ERROR_TEXT],
    len: u8,
}

impl ErrorText {
    const EMPTY: ErrorText = ErrorText {
        bytes: [0; MAX_ERROR_TEXT],
        len: 0,
    };

    /// Copies `text`, cut on a character boundary if too long.
    pub fn new(text: &str) -> Self {
        let mut t = ErrorText::EMPTY;
        // A too-long text is simply cut: the error only signals the truncation.
        let _ = fmt::Write::write_str(&mut t, text);
        t
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // Only whole characters are ever appended, so always UTF-8; the fallback is unreachable.
        core::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("")
    }
}

/// Appends what fits, on a character boundary; `Err` once something had to be cut.
impl fmt::Write for ErrorText {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let len = usize::from(self.len);
        let piece = truncate_text(s, MAX_ERROR_TEXT - len);
        self.bytes[len..len + piece.len()].copy_from_slice(piece.as_bytes());
        // len + piece ≤ MAX_ERROR_TEXT = 128 fits a u8.
        self.len = (len + piece.len()) as u8;
        if piece.len() == s.len() {
            Ok(())
        } else {
            Err(fmt::Error)
        }
    }
}

impl fmt::Debug for ErrorText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Violation(v) => write!(f, "peer violated the protocol: {v}"),
            Failure::PeerAborted(code, _, text) => {
                write!(f, "peer aborted: {code}: ")?;
                write_escaped(f, text.as_str())
            }
            Failure::Aborted(code) => write!(f, "aborted locally: {code}"),
            Failure::TimedOut => f.write_str("peer made no progress within the idle timeout"),
        }
    }
}

/// Writes a peer's text with control characters escaped (`\u{1b}`), so it cannot drive a
/// terminal or forge log lines when shown.
fn write_escaped(f: &mut fmt::Formatter<'_>, text: &str) -> fmt::Result {
    for c in text.chars() {
        if c.is_control() {
            write!(f, "{}", c.escape_unicode())?;
        } else {
            fmt::Write::write_char(f, c)?;
        }
    }
    Ok(())
}

/// A [`Violation`]'s text for the error message sent to the peer, without an allocator.
pub(crate) fn violation_text(v: &Violation) -> ErrorText {
    let mut text = ErrorText::EMPTY;
    // A too-long text is simply cut: fmt::Error only signals the truncation.
    let _ = fmt::write(&mut text, format_args!("{v}"));
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::fmt::Write;

    #[test]
    fn error_text_is_cut_on_a_character_boundary() {
        let mut long = ErrorText::EMPTY;
        for _ in 0..100 {
            let _ = long.write_str("é"); // 2 bytes each
        }
        assert_eq!(long.as_str().len(), MAX_ERROR_TEXT);
        assert!(long.as_str().chars().all(|c| c == 'é'));

        // 127 ASCII bytes leave no room for a 2-byte character.
        let mut edge = ErrorText::EMPTY;
        for _ in 0..127 {
            let _ = edge.write_str("a");
        }
        assert_eq!(edge.write_str("é"), Err(fmt::Error));
        assert_eq!(edge.as_str().len(), 127);
        assert_eq!(ErrorText::new("short").as_str(), "short");
    }

    /// Every violation with its number from PROTOCOL.md §7 (the numbers are wire values).
    const SPEC_CODES: [(Violation, u16); 27] = [
        (Violation::Decode(DecodeError::NonZeroReserved), 1),
        (Violation::UnexpectedMessage(MsgKind::FileHeader), 2),
        (Violation::UnknownFile(5), 3),
        (Violation::DuplicateFileId(5), 4),
        (Violation::TooManyOpenFiles, 5),
        (Violation::AnswerOutOfOrder, 6),
        (Violation::BadResumeOffset, 7),
        (Violation::BadCredit, 8),
        (Violation::BadAck, 9),
        (
            Violation::WrongSeq {
                expected: 1,
                got: 2,
            },
            10,
        ),
        (
            Violation::WrongCtrlSeq {
                expected: 1,
                got: 2,
            },
            11,
        ),
        (Violation::CtrlOverrun, 12),
        (Violation::CreditOverrun, 13),
        (Violation::UnexpectedChunk, 14),
        (
            Violation::BadWriteLength {
                expected: 1,
                got: 2,
            },
            15,
        ),
        (Violation::EndBeforeData, 16),
        (Violation::EndLengthMismatch, 17),
        (Violation::DigestNotNegotiated, 18),
        (Violation::GoodbyeWithOpenFiles, 19),
        (Violation::NameConflict, 20),
        (Violation::AuthMissing, 21),
        (Violation::AuthFailed, 22),
        (Violation::BadCancel, 23),
        (Violation::SeqSpaceExhausted, 24),
        (Violation::DirectoryDigest, 25),
        (Violation::BadResult, 26),
        (Violation::BadPart, 27),
    ];

    #[test]
    // spec-test: [violation.error]
    // spec-test: [psk.sender-proof]
    fn violations_carry_their_spec_numbers_and_codes() {
        for (v, code) in SPEC_CODES {
            assert_eq!(v.code(), code, "{v:?}");
            let auth = matches!(v, Violation::AuthMissing | Violation::AuthFailed);
            let expected = if auth {
                ErrorCode::AUTH_FAILED
            } else {
                ErrorCode::PROTOCOL_VIOLATION
            };
            assert_eq!(v.error_code(), expected, "{v:?}");
        }
    }

    /// The displayed form of anything, without an allocator.
    fn shown(d: &dyn fmt::Display) -> ErrorText {
        let mut t = ErrorText::EMPTY;
        let _ = write!(t, "{d}");
        t
    }

    #[test]
    fn errors_say_what_happened() {
        let v = Violation::AuthFailed;
        assert_eq!(
            shown(&Error::Violation(v)).as_str(),
            "peer violated the protocol: wrong key proof"
        );
        assert_eq!(
            shown(&Error::Usage(UsageError::NotOpen)).as_str(),
            "API misuse: session is not open"
        );
        assert!(shown(&Error::Closed).as_str().contains("ended"));
        assert_eq!(
            shown(&Failure::Violation(Violation::CtrlOverrun)).as_str(),
            shown(&Error::Violation(Violation::CtrlOverrun)).as_str()
        );
        assert!(shown(&Failure::TimedOut).as_str().contains("idle timeout"));
        assert!(shown(&Failure::Aborted(ErrorCode::CANCELLED))
            .as_str()
            .starts_with("aborted locally: "));
        let mut debug = ErrorText::EMPTY;
        let _ = write!(debug, "{:?}", ErrorText::new("x\"y"));
        assert_eq!(debug.as_str(), "\"x\\\"y\"");
    }

    #[test]
    fn peer_texts_are_shown_with_control_characters_escaped() {
        let text = ErrorText::new("disk\x1b[2Jfull\nFAKE LOG LINE");
        let f = Failure::PeerAborted(ErrorCode::PROTOCOL_VIOLATION, 0, text);
        let shown = shown(&f);
        assert!(
            shown
                .as_str()
                .ends_with(": disk\\u{1b}[2Jfull\\u{a}FAKE LOG LINE"),
            "{}",
            shown.as_str()
        );
        assert!(!shown.as_str().contains('\n') && !shown.as_str().contains('\x1b'));
    }

    #[test]
    fn violation_text_is_formatted_in_pieces() {
        let v = Violation::WrongSeq {
            expected: 7,
            got: 9,
        };
        assert_eq!(violation_text(&v).as_str(), "chunk sequence 9, expected 7");
    }
}
