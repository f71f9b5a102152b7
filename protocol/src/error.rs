//! Errors of the state machines, split by whose fault they are.
//!
//! Policy (after str0m): peer input that breaks the protocol is a [`Violation`], local misuse
//! of the API is a [`UsageError`]; neither panics. Panics are reserved for broken internal
//! invariants, and there are none reachable from inputs (the fuzz targets check this).

use crate::codes::ErrorCode;
use crate::wire::{DecodeError, MsgKind, MAX_ERROR_TEXT};
use core::fmt;

/// The peer broke the protocol. The state machine has failed and queued an error message.
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
    /// More files open than the protocol allows.
    TooManyOpenFiles,
    /// A file answer is not for the oldest unanswered file.
    AnswerOutOfOrder,
    /// A resume offset beyond the file's end, or without the negotiated feature.
    BadResumeOffset,
    /// A credit went backwards or covers chunks never written.
    BadCredit,
    /// An ack covers control messages never sent.
    BadAck,
    /// A chunk's immediate data is not the next sequence number.
    WrongSeq {
        /// Expected (low 32 bits of the sequence number).
        expected: u32,
        /// Received.
        got: u32,
    },
    /// A chunk arrived with no credit for it (it overwrote an unconsumed slot).
    CreditOverrun,
    /// A chunk arrived when no accepted file expects data.
    UnexpectedChunk,
    /// A chunk's length is not the one derived from the file and sequence number.
    BadChunkLength {
        /// Derived length.
        expected: u32,
        /// Received length.
        got: u32,
    },
    /// A file end arrived before all of the file's chunks.
    EndBeforeData,
    /// A file end's length differs from the header's size.
    EndLengthMismatch,
    /// A file end uses a digest that was not negotiated.
    DigestNotNegotiated,
    /// A goodbye while files are still open.
    GoodbyeWithOpenFiles,
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
            Violation::CreditOverrun => f.write_str("chunk written without credit"),
            Violation::UnexpectedChunk => f.write_str("chunk while no file expects data"),
            Violation::BadChunkLength { expected, got } => {
                write!(f, "chunk of {got} bytes, expected {expected}")
            }
            Violation::EndBeforeData => f.write_str("file end before all its data"),
            Violation::EndLengthMismatch => f.write_str("file end length differs from header"),
            Violation::DigestNotNegotiated => f.write_str("digest kind not negotiated"),
            Violation::GoodbyeWithOpenFiles => f.write_str("goodbye with files open"),
        }
    }
}

/// The application called the API out of turn; the state machine is unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UsageError {
    /// The session is not open for this (closing, closed or failed).
    NotOpen,
    /// [`crate::MAX_OPEN_FILES`] files are already unresolved; wait for a result.
    TooManyOpenFiles,
    /// The file id is already open.
    DuplicateFileId,
    /// No open file has that id in a state where the call fits.
    UnknownFile,
    /// The name is not a valid relative name.
    InvalidName(crate::name::NameError),
    /// Mode or mtime out of range.
    InvalidMetadata,
    /// A sequence number is not the next one expected (completions, data, consumption are
    /// reported in order).
    OutOfOrder,
    /// The digest kind was not negotiated.
    DigestNotNegotiated,
    /// An answer does not fit (resume offset beyond the end, or resume not negotiated).
    InvalidAnswer,
    /// Outputs were not drained; drain `poll_output` after every input.
    OutputsNotDrained,
    /// The negotiated parameters given to a state machine are invalid; the text says which.
    InvalidParameters(&'static str),
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UsageError::NotOpen => f.write_str("session is not open"),
            UsageError::TooManyOpenFiles => f.write_str("too many open files"),
            UsageError::DuplicateFileId => f.write_str("file id already open"),
            UsageError::UnknownFile => f.write_str("no such open file in that state"),
            UsageError::InvalidName(e) => write!(f, "invalid name: {e}"),
            UsageError::InvalidMetadata => f.write_str("mode or mtime out of range"),
            UsageError::OutOfOrder => f.write_str("sequence number out of order"),
            UsageError::DigestNotNegotiated => f.write_str("digest kind not negotiated"),
            UsageError::InvalidAnswer => f.write_str("answer does not fit the file"),
            UsageError::OutputsNotDrained => f.write_str("outputs not drained"),
            UsageError::InvalidParameters(why) => write!(f, "invalid negotiated parameters: {why}"),
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
    /// The peer aborted with this code and text.
    PeerAborted(ErrorCode, ErrorText),
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
    /// Copies `text`, cut on a character boundary if too long.
    pub fn new(text: &str) -> Self {
        let mut end = text.len().min(MAX_ERROR_TEXT);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let mut bytes = [0; MAX_ERROR_TEXT];
        bytes[..end].copy_from_slice(&text.as_bytes()[..end]);
        // end <= MAX_ERROR_TEXT = 128 fits a u8.
        ErrorText {
            bytes,
            len: end as u8,
        }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // Built from a &str cut on a char boundary, so always UTF-8; the fallback is unreachable.
        core::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("")
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
            Failure::PeerAborted(code, text) => {
                write!(f, "peer aborted: {code}: {}", text.as_str())
            }
            Failure::Aborted(code) => write!(f, "aborted locally: {code}"),
            Failure::TimedOut => f.write_str("peer made no progress within the idle timeout"),
        }
    }
}

/// A [`Violation`]'s text for the error message sent to the peer, without an allocator.
pub(crate) fn violation_text(v: &Violation) -> ErrorText {
    struct Buf {
        text: [u8; MAX_ERROR_TEXT],
        len: usize,
    }
    impl fmt::Write for Buf {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            for ch in s.chars() {
                let mut tmp = [0; 4];
                let enc = ch.encode_utf8(&mut tmp).as_bytes();
                if self.len + enc.len() > MAX_ERROR_TEXT {
                    return Err(fmt::Error);
                }
                self.text[self.len..self.len + enc.len()].copy_from_slice(enc);
                self.len += enc.len();
            }
            Ok(())
        }
    }
    let mut buf = Buf {
        text: [0; MAX_ERROR_TEXT],
        len: 0,
    };
    // A too-long text is simply cut: fmt::Error only signals the truncation.
    let _ = fmt::write(&mut buf, format_args!("{v}"));
    ErrorText::new(core::str::from_utf8(&buf.text[..buf.len]).unwrap_or("protocol violation"))
}
