//! Batches (`BATCH`, PROTOCOL.md §4.9): several control messages in one control-ring slot or
//! one receive buffer, so that a small file costs one write and a share of one SEND instead
//! of a write or SEND per message.
//!
//! A batch is a control message of type `0x1c` whose body is one or more complete messages,
//! each with its own header (its `ack` zero: the batch's `ack` speaks for all of them). A
//! batch counts as one message for control credit and acks; what is inside is processed in
//! order as if each had arrived alone. Goodbye, Error and Batch never go inside one.

use super::control::{Control, MsgKind, HDR};
use super::{DecodeError, Field};

/// The body of a decoded batch: its messages, already checked (see [`Batch::iter`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Batch<'a> {
    body: &'a [u8],
}

impl<'a> Batch<'a> {
    /// Checks a batch body: one or more whole messages, each decodable, with a zero `ack`,
    /// none of them a Goodbye, an Error or a batch.
    pub(crate) fn check(body: &'a [u8]) -> Result<Self, DecodeError> {
        // spec: [batch.inner]
        if body.is_empty() {
            return Err(DecodeError::BadField(Field::Batch));
        }
        let mut rest = body;
        while !rest.is_empty() {
            rest = split_first(rest)?.1;
        }
        Ok(Batch { body })
    }

    /// A batch body taken back from a control write already decoded once; [`Batch::at`]
    /// checks each message it returns again.
    pub(crate) fn rechecked(body: &'a [u8]) -> Self {
        Batch { body }
    }

    /// The encoded messages, back to back (what follows the batch's own header).
    pub fn body(&self) -> &'a [u8] {
        self.body
    }

    /// The messages, in order.
    pub fn iter(&self) -> BatchIter<'a> {
        BatchIter { rest: self.body }
    }

    /// The message at byte `at` of the body and the offset of the one after it (the body's
    /// length after the last). Offsets come from a previous call, starting at 0.
    pub fn at(&self, at: usize) -> Result<(Control<'a>, usize), DecodeError> {
        let rest = self.body.get(at..).unwrap_or_default();
        let (msg, tail) = split_first(rest)?;
        Ok((msg, self.body.len() - tail.len()))
    }
}

/// Iterator over a checked batch's messages.
#[derive(Clone, Debug)]
pub struct BatchIter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for BatchIter<'a> {
    type Item = Control<'a>;

    fn next(&mut self) -> Option<Control<'a>> {
        if self.rest.is_empty() {
            return None;
        }
        // Checked when the batch was decoded; a failure here cannot happen and ends the walk.
        let (msg, tail) = split_first(self.rest).ok()?;
        self.rest = tail;
        Some(msg)
    }
}

/// The first message of `bytes` (its own length field says where it ends) and the bytes
/// after it; refuses a non-zero `ack` and the kinds that never go inside a batch.
// spec: [batch.inner]
fn split_first(bytes: &[u8]) -> Result<(Control<'_>, &[u8]), DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::BadField(Field::Batch));
    }
    if bytes.len() < HDR {
        return Err(DecodeError::Truncated {
            need: HDR,
            got: bytes.len(),
        });
    }
    if bytes[0] == MsgKind::Batch as u8 {
        return Err(DecodeError::BadField(Field::Batch));
    }
    let len = usize::from(u16::from_be_bytes([bytes[2], bytes[3]]));
    if len < HDR || len > bytes.len() {
        return Err(DecodeError::BadLength {
            declared: len,
            actual: bytes.len(),
        });
    }
    let (one, tail) = bytes.split_at(len);
    let (ack, msg) = Control::decode(one)?;
    if ack != 0 {
        return Err(DecodeError::NonZeroReserved);
    }
    if matches!(msg.kind(), MsgKind::Goodbye | MsgKind::Error) {
        return Err(DecodeError::BadField(Field::Batch));
    }
    Ok((msg, tail))
}

/// Builds a batch in a caller's buffer: messages are appended after room for the batch
/// header; [`BatchBuilder::finish`] writes the header, or moves a lone message to the
/// front so that it goes as itself.
#[derive(Debug)]
pub struct BatchBuilder {
    len: usize,
    count: usize,
    limit: usize,
}

impl BatchBuilder {
    /// An empty batch whose encoded size may reach `limit` bytes (the slot or buffer size).
    pub const fn new(limit: usize) -> Self {
        BatchBuilder {
            len: HDR,
            count: 0,
            limit,
        }
    }

    /// Messages appended.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Whether a message of `len` bytes can be appended: a first message always can (it may
    /// go alone); later ones must keep the batch within the limit.
    pub fn fits(&self, len: usize) -> bool {
        self.count == 0 || self.len + len <= self.limit
    }

    /// Appends `msg` (with a zero `ack`) at its place in `buf`; `false`, with nothing
    /// changed, when it does not fit.
    pub fn push(&mut self, msg: &Control<'_>, buf: &mut [u8]) -> bool {
        let Some(room) = buf.get_mut(self.len..) else {
            return false;
        };
        let Ok(n) = msg.encode(0, room) else {
            return false;
        };
        if !self.fits(n) {
            return false;
        }
        self.len += n;
        self.count += 1;
        true
    }

    /// Finishes into `buf[..n]` (the `ack` field left zero for the caller to write): a
    /// batch of two or more, or the lone message moved to the front. Returns `n`, 0 when
    /// empty, and leaves the builder empty.
    pub fn finish(&mut self, buf: &mut [u8]) -> usize {
        let (len, count) = (self.len, self.count);
        *self = BatchBuilder::new(self.limit);
        match count {
            0 => 0,
            1 => {
                buf.copy_within(HDR..len, 0);
                len - HDR
            }
            _ => {
                buf[0] = MsgKind::Batch as u8;
                buf[1] = 0;
                // len ≤ limit ≤ CTRL_MSG_MAX fits 16 bits.
                buf[2..4].copy_from_slice(&(len as u16).to_be_bytes());
                buf[4..8].fill(0);
                len
            }
        }
    }
}
