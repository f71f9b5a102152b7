//! The 32-bit immediate of the sender's RDMA WRITE WITH IMMEDIATE (PROTOCOL.md §3.1): every
//! write from the sender carries one, and it says what arrived.
//!
//! | bits 31..30 | meaning      | low bits                                   |
//! |-------------|--------------|--------------------------------------------|
//! | `0x`        | data chunk   | bits 30..0: chunk `seq mod 2³¹`            |
//! | `10`        | control msg  | bits 29..0: control message number mod 2³⁰ |
//! | `11`        | pure ack     | bits 29..0: receiver messages processed mod 2³⁰ |
//!
//! Verbs carries the immediate in network byte order: post `htonl(imm)`, read `ntohl`.

/// A decoded immediate. Every `u32` decodes to exactly one of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Imm {
    /// Data chunk: the low 31 bits of its sequence number.
    Chunk(u32),
    /// Control message written into the control ring: the low 30 bits of its number.
    Control(u32),
    /// Acknowledgement only (a zero-length write): the low 30 bits of the count of receiver
    /// messages the sender has processed.
    Ack(u32),
}

const CHUNK_MASK: u32 = (1 << 31) - 1;
const LOW30: u32 = (1 << 30) - 1;
const CONTROL_TAG: u32 = 0b10 << 30;
const ACK_TAG: u32 = 0b11 << 30;

impl Imm {
    /// The immediate for chunk `seq`.
    pub fn chunk(seq: u64) -> Imm {
        Imm::Chunk(chunk_bits(seq))
    }

    /// The immediate for control message number `n`.
    pub fn control(n: u32) -> Imm {
        Imm::Control(n & LOW30)
    }

    /// The immediate for a pure ack of `processed` receiver messages.
    pub fn ack(processed: u32) -> Imm {
        Imm::Ack(processed & LOW30)
    }

    /// The 32-bit value to post (in host order; verbs converts).
    pub fn encode(self) -> u32 {
        match self {
            Imm::Chunk(s) => s & CHUNK_MASK,
            Imm::Control(n) => CONTROL_TAG | (n & LOW30),
            Imm::Ack(n) => ACK_TAG | (n & LOW30),
        }
    }

    /// Decodes a received immediate (host order).
    pub fn decode(raw: u32) -> Imm {
        match raw >> 30 {
            0b10 => Imm::Control(raw & LOW30),
            0b11 => Imm::Ack(raw & LOW30),
            _ => Imm::Chunk(raw & CHUNK_MASK),
        }
    }
}

/// The immediate bits of chunk `seq`: its low 31 bits.
pub(crate) fn chunk_bits(seq: u64) -> u32 {
    // Masked to 31 bits: the cast keeps exactly those.
    (seq & u64::from(CHUNK_MASK)) as u32
}

/// The immediate bits of count `n`: its low 30 bits.
pub(crate) fn low30(n: u32) -> u32 {
    n & LOW30
}

/// The full 32-bit count that `low30` (a count mod 2³⁰) stands for, given that it lies in
/// `base ..= base + 2³⁰ − 1` (wrapping); the caller then checks it against what was sent.
pub(crate) fn widen30(base: u32, low30: u32) -> u32 {
    base.wrapping_add(low30.wrapping_sub(base) & LOW30)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_round_trips_through_its_kind() {
        for raw in [
            0,
            1,
            CHUNK_MASK,
            1 << 30,
            (1 << 30) | 5,
            u32::MAX,
            0xC000_0000,
            0x8000_0000,
        ] {
            assert_eq!(Imm::decode(raw).encode(), raw, "{raw:#x}");
        }
        assert_eq!(Imm::decode(0x7fff_ffff), Imm::Chunk(0x7fff_ffff));
        assert_eq!(Imm::decode(0x8000_0003), Imm::Control(3));
        assert_eq!(Imm::decode(0xc000_0003), Imm::Ack(3));
    }

    #[test]
    fn constructors_keep_the_low_bits() {
        assert_eq!(Imm::chunk((1 << 31) + 7), Imm::Chunk(7));
        assert_eq!(Imm::chunk(u64::MAX).encode(), CHUNK_MASK);
        assert_eq!(Imm::control(u32::MAX), Imm::Control(LOW30));
        assert_eq!(Imm::ack((1 << 30) + 2), Imm::Ack(2));
    }

    #[test]
    fn widening_picks_the_count_at_or_after_the_base() {
        assert_eq!(widen30(10, 12), 12);
        assert_eq!(widen30(10, 10), 10);
        assert_eq!(widen30((1 << 30) - 1, 1), (1 << 30) + 1);
        assert_eq!(widen30(u32::MAX, 2), 2, "wraps like the counters do");
        assert_eq!(
            widen30(5, 3),
            3 + (1 << 30),
            "below the base means a full lap"
        );
    }
}
