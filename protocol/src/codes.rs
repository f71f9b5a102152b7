//! Reason and status codes carried on the wire.
//!
//! Each family is a `u16` newtype with named constants rather than an enum, so a code this
//! version does not know (from a newer peer) is carried and shown, never a decode failure.

use core::fmt;

macro_rules! code_family {
    ($(#[$meta:meta])* $name:ident { $($(#[$cmeta:meta])* $konst:ident = $val:expr, $text:expr;)* }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash)]
        #[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
        pub struct $name(pub u16);

        impl $name {
            $($(#[$cmeta])* pub const $konst: $name = $name($val);)*

            /// The constant's name (`"NOT_ALLOWED"`), for logs and metric labels, or `None`
            /// for a code this version does not know.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($val => Some(stringify!($konst)),)*
                    _ => None,
                }
            }

            /// A short English description, or `None` for a code this version does not know.
            pub fn description(self) -> Option<&'static str> {
                match self.0 {
                    $($val => Some($text),)*
                    _ => None,
                }
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self.description() {
                    Some(text) => write!(f, "{}({}: {})", stringify!($name), self.0, text),
                    None => write!(f, "{}({})", stringify!($name), self.0),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self.description() {
                    Some(text) => f.write_str(text),
                    None => write!(f, "unknown code {}", self.0),
                }
            }
        }
    };
}

code_family! {
    /// Why a receiver refused a connection (carried in the handshake reject).
    RejectReason {
        /// The hello did not start with the protocol magic.
        BAD_MAGIC = 1, "not an rdmaft hello (bad magic)";
        /// The receiver does not speak the sender's protocol version.
        UNSUPPORTED_VERSION = 2, "unsupported protocol version";
        /// The hello could not be decoded.
        MALFORMED = 3, "malformed hello";
        /// Chunk size zero, below the minimum or above the maximum.
        BAD_CHUNK_SIZE = 4, "chunk size is zero or out of range";
        /// Window zero or above the maximum.
        BAD_WINDOW = 5, "window is zero or out of range";
        /// Control queue depth out of range.
        BAD_CTRL_DEPTH = 6, "control queue depth out of range";
        /// chunk size × window is larger than the receiver will register.
        RING_TOO_LARGE = 7, "receive ring would be too large";
        /// The receiver could not allocate or register the ring.
        NO_RESOURCES = 8, "receiver out of resources";
        /// The receiver is stopping.
        SHUTTING_DOWN = 9, "receiver is shutting down";
        /// Open-file limit zero or above the maximum.
        BAD_OPEN_FILES = 10, "open-file limit is zero or out of range";
        /// Keepalive interval zero or above the maximum.
        BAD_KEEPALIVE = 11, "keepalive interval is zero or out of range";
        /// The receiver requires a pre-shared key and the hello does not offer it.
        AUTH_REQUIRED = 12, "receiver requires authentication (a pre-shared key)";
        /// The receiver requires file digests and no digest algorithm is shared.
        DIGEST_REQUIRED = 13, "receiver requires a digest algorithm the sender does not offer";
        /// The receiver's own parameters are invalid (a local misconfiguration).
        MISCONFIGURED = 14, "receiver is misconfigured";
        /// The receiver does not take connections from the sender's address.
        NOT_ALLOWED = 15, "sender's address is not allowed";
        /// A lane asked to join a transfer group the receiver does not have (never opened,
        /// or already finished).
        UNKNOWN_GROUP = 16, "no such transfer group (unknown or finished)";
    }
}

code_family! {
    /// Why a receiver refused one file (carried in the file answer).
    FileRejectReason {
        /// The name failed validation at the receiver.
        INVALID_NAME = 1, "invalid file name";
        /// A file of that name exists and may not be replaced.
        EXISTS = 2, "file exists";
        /// The receiver may not create the file.
        PERMISSION_DENIED = 3, "permission denied";
        /// Not enough space for the file.
        NO_SPACE = 4, "no space left on device";
        /// The file is larger than the receiver accepts.
        TOO_LARGE = 5, "file too large";
        /// Any other I/O failure creating the file.
        IO = 6, "I/O error";
        /// The request uses something the receiver does not support.
        UNSUPPORTED = 7, "unsupported";
        /// The name is open in this session already, or is a directory prefix of an open
        /// name (or has one as its prefix): two writers would share a path.
        NAME_CONFLICT = 8, "name conflicts with a file open in this session";
        /// The receiver has no room to track the name now (too deep a path for its table).
        BUSY = 9, "receiver busy; try again later";
        /// A symbolic link whose target is absolute or climbs out of the receiver's
        /// destination, which this receiver does not create (PROTOCOL.md §4.1).
        UNSAFE_LINK = 10, "unsafe symbolic link";
    }
}

code_family! {
    /// The receiver's verdict on one file (carried in the file result).
    FileStatus {
        /// Verified and published under its final name.
        OK = 0, "ok";
        /// The data length did not match the header.
        LENGTH_MISMATCH = 1, "length mismatch";
        /// The digest of the received data did not match.
        DIGEST_MISMATCH = 2, "digest mismatch";
        /// Writing or publishing the file failed.
        IO = 3, "I/O error";
        /// The disk filled up.
        NO_SPACE = 4, "no space left on device";
        /// The sender abandoned the file (it could not read it, or was told to stop).
        ABORTED = 5, "aborted by the sender";
        /// The receiver abandoned the file (its own application cancelled it).
        CANCELLED = 6, "cancelled by the receiver";
        /// The file end carried no digest and the receiver requires one.
        DIGEST_REQUIRED = 7, "digest required";
    }
}

code_family! {
    /// Why a side aborted the session (carried in the error message).
    ErrorCode {
        /// The peer broke the protocol; the text says how.
        PROTOCOL_VIOLATION = 1, "protocol violation";
        /// The peer stopped making progress.
        TIMEOUT = 2, "timed out";
        /// A local failure (I/O, resources) ended the session.
        LOCAL_FAILURE = 3, "local failure";
        /// The application cancelled the transfer.
        CANCELLED = 4, "cancelled";
        /// The side is shutting down.
        SHUTTING_DOWN = 5, "shutting down";
        /// The sender's proof of the pre-shared key was missing or wrong.
        AUTH_FAILED = 6, "authentication failed";
    }
}

code_family! {
    /// Why the sender abandoned one file (carried in the file abort).
    AbortReason {
        /// Reading the source failed.
        READ_ERROR = 1, "could not read the source file";
        /// The source changed size or vanished while being sent.
        SOURCE_CHANGED = 2, "the source file changed while being sent";
        /// The sending application cancelled the file.
        CANCELLED = 3, "cancelled by the sending application";
        /// The receiver asked the sender to stop (a file cancel).
        PEER_CANCELLED = 4, "stopped at the receiver's request";
    }
}

impl FileStatus {
    /// Whether the file arrived intact and was published.
    pub fn is_ok(self) -> bool {
        self == FileStatus::OK
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_constants() {
        assert_eq!(RejectReason::NOT_ALLOWED.name(), Some("NOT_ALLOWED"));
        assert_eq!(FileStatus::DIGEST_MISMATCH.name(), Some("DIGEST_MISMATCH"));
        assert_eq!(FileRejectReason::EXISTS.name(), Some("EXISTS"));
        assert_eq!(RejectReason(999).name(), None);
    }
}
