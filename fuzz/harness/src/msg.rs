//! Well-formed control messages from the peer, built from arbitrary fields whose references
//! (which file, what count, which proof) are resolved against the harness's model of the
//! machine, so a short input reaches deep states: answers for the file awaiting one, ends
//! for the file whose stream is current, credits for the chunks written.

use crate::common::{ArbDigest, Count, FileRef, Kind, Meta, Name, NewId, Proof, Size};
use arbitrary::Arbitrary;
use rdmaft_protocol::wire::MsgKind;
use rdmaft_protocol::*;

/// Any control message, either direction's (a machine must refuse the other direction's).
#[derive(Arbitrary, Debug, Clone)]
pub enum Msg {
    /// Offer a file.
    FileHeader {
        /// Id.
        file: NewId,
        /// File or directory.
        kind: Kind,
        /// Size.
        size: Size,
        /// Metadata.
        meta: Meta,
        /// Name.
        name: Name,
    },
    /// Answer an offer.
    FileAnswer {
        /// File (`Next`: the oldest awaiting its answer).
        file: FileRef,
        /// Decision.
        answer: crate::common::Answer,
    },
    /// Consumed-chunk credit.
    Credit {
        /// Cumulative count (`Auto`: everything written).
        consumed: Count,
    },
    /// End of a file's data.
    FileEnd {
        /// File (`Next`: the current stream's).
        file: FileRef,
        /// Length (`Auto`: its size).
        length: Count,
        /// Digest.
        digest: ArbDigest,
    },
    /// Verdict on a file.
    FileResult {
        /// File (`Next`: the oldest whose result is due).
        file: FileRef,
        /// Status code.
        status: u16,
    },
    /// The sender stops a file.
    FileAbort {
        /// File (`Next`: the current stream's).
        file: FileRef,
        /// Reason code.
        reason: u16,
    },
    /// The receiver asks to stop a file.
    FileCancel {
        /// File (`Next`: the current stream's).
        file: FileRef,
        /// Status code.
        status: u16,
    },
    /// Key proof.
    Auth {
        /// Proof.
        proof: Proof,
    },
    /// Pure ack (receiver → sender).
    Ack,
    /// Goodbye.
    Goodbye,
    /// Keepalive.
    KeepAlive,
    /// Abort the session.
    Error {
        /// Code.
        code: u16,
        /// Detail.
        detail: u16,
        /// Text (cut to 128 bytes by the encoder).
        text: String,
    },
}

/// What a harness knows about its machine, to resolve a [`Msg`]'s references.
pub(crate) trait Peer {
    /// The last file id offered, for [`NewId`].
    fn last_id(&self) -> Option<u64>;
    /// The file a correct peer would name in a message of `kind`.
    fn next_file(&self, kind: MsgKind) -> Option<u64>;
    /// Size of a known file (0 if unknown).
    fn size_of(&self, id: u64) -> u64;
    /// The credit a correct receiver could send now, and the last one taken.
    fn credit(&self) -> (u64, u64);
    /// The proof the machine expects.
    fn proof(&self) -> [u8; 32];
    /// The agreed chunk size.
    fn chunk(&self) -> u32;
}

/// Encodes `msg` with `ack` into `buf`; returns the length (0 if it does not encode).
pub(crate) fn build(p: &impl Peer, msg: &Msg, ack: u32, buf: &mut CtrlBuf) -> usize {
    let name;
    let control = match msg {
        Msg::FileHeader {
            file,
            kind,
            size,
            meta,
            name: n,
        } => {
            name = n.render();
            let entry = meta.entry(*kind, *size, p.chunk());
            Control::FileHeader(entry.header(file.resolve(p.last_id()), &name))
        }
        Msg::FileAnswer { file, answer } => {
            let file_id = file.resolve(p.next_file(MsgKind::FileAnswer));
            Control::FileAnswer {
                file_id,
                answer: answer.resolve(p.size_of(file_id), p.chunk()),
            }
        }
        Msg::Credit { consumed } => {
            let (auto, last) = p.credit();
            Control::Credit {
                consumed: consumed.resolve(auto, last),
            }
        }
        Msg::FileEnd {
            file,
            length,
            digest,
        } => {
            let file_id = file.resolve(p.next_file(MsgKind::FileEnd));
            let size = p.size_of(file_id);
            Control::FileEnd(wire::FileEnd {
                file_id,
                length: length.resolve(size, size),
                digest: digest.get(),
            })
        }
        Msg::FileResult { file, status } => Control::FileResult {
            file_id: file.resolve(p.next_file(MsgKind::FileResult)),
            status: FileStatus(*status),
        },
        Msg::FileAbort { file, reason } => Control::FileAbort {
            file_id: file.resolve(p.next_file(MsgKind::FileAbort)),
            reason: AbortReason(*reason),
        },
        Msg::FileCancel { file, status } => Control::FileCancel {
            file_id: file.resolve(p.next_file(MsgKind::FileCancel)),
            status: FileStatus(*status),
        },
        Msg::Auth { proof } => Control::Auth {
            proof: match proof {
                Proof::Right => p.proof(),
                Proof::Raw(b) => *b,
            },
        },
        Msg::Ack => Control::Ack,
        Msg::Goodbye => Control::Goodbye,
        Msg::KeepAlive => Control::KeepAlive,
        Msg::Error { code, detail, text } => Control::Error {
            code: ErrorCode(*code),
            detail: *detail,
            text,
        },
    };
    control.encode(ack, buf).unwrap_or(0)
}

/// The `ack` field of an encoded control message (bytes 4..8).
pub(crate) fn ack_field(bytes: &[u8]) -> u32 {
    u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]])
}
