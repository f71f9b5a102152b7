//! The transfer engine: one thread per connection owns the queue pair and the protocol state
//! machine (it polls completions, feeds them in order, drains `poll_output`, posts), and an
//! I/O thread beside it moves file data between the page cache and the slots ([`send`]: the
//! reader; [`recv`]: the writer). The two hand slots to each other through the mailboxes of
//! [`crate::handoff`], in [`io_thread`], which also lets the engine run a small file's jobs
//! itself while its I/O thread is idle.
//!
//! The engine is written against a small interface of what a connection does on the wire
//! ([`SendLink`], [`RecvLink`]), implemented over verbs ([`verbs_link`]) and, for tests and
//! the CPU benchmark, by an in-process [`loopback`] pair.
//!
//! Follow one chunk: the sender's machine asks for a read (`Read`) → the engine hands the
//! slot to the reader → `pread` into the slot, digest over the same bytes → back to the
//! engine → `data_ready` → the machine posts it (`Write`) when the receiver granted credit →
//! RDMA WRITE WITH IMM. At the receiver: the receive completion → `handle_write` says which
//! file and offset → the writer copies the chunk once out of the ring (into a small buffer
//! that stays in cache), digests it and `pwrite`s it → back to the engine → `chunk_consumed`
//! → credit. With `--direct` the reader asks for a short last chunk rounded up and the
//! writer's buffer is aligned ([`crate::fs::direct`]).
//!
//! One round of an engine: poll the completions, feed them all to the machine corked (its
//! `set_corked`), then the I/O thread's results, then uncork and drain: with `BATCH` what
//! the round produced leaves in as few control writes or SENDs as fit, and nothing waits
//! longer than the round.

#[cfg(test)]
mod hostile_receiver;
mod io_thread;
pub(crate) mod loopback;
#[cfg(feature = "internals")]
pub mod raw_peer;
#[cfg(feature = "internals")]
pub mod raw_receiver;
pub(crate) mod recv;
pub(crate) mod round;
pub(crate) mod send;
pub(crate) mod verbs_link;
pub(crate) mod work;

use crate::handoff::Waker;
use crate::verbs::Slot;
use crate::Error;
use rdmaft_protocol::{ChunkWrite, ControlWrite, Instant, RECEIVER_MSG_MAX};
use std::time::Duration;

/// Work request ids: the top byte says what the request was, the rest its number.
pub(crate) mod wr {
    pub(crate) const CHUNK: u64 = 1 << 56;
    pub(crate) const CONTROL: u64 = 2 << 56;
    pub(crate) const ACK: u64 = 3 << 56;
    pub(crate) const SEND: u64 = 4 << 56;
    pub(crate) const RECV: u64 = 5 << 56;
    const KIND: u64 = 0xff << 56;
    /// The bits of an id left for its number.
    pub(crate) const NUMBER: u64 = !KIND;

    pub(crate) fn kind(id: u64) -> u64 {
        id & KIND
    }

    pub(crate) fn number(id: u64) -> u64 {
        id & NUMBER
    }
}

/// What the sender's connection reported.
// The message is copied once into the completion list; boxing it would allocate per message.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum SendCompletion {
    /// A message from the receiver (its buffer already reposted).
    Message([u8; RECEIVER_MSG_MAX], usize),
    /// The write of chunk `seq` (and every earlier one) completed.
    ChunkDone(u64),
    /// A control write or ack completed (room in the send queue again).
    Sent,
}

/// What the sender's engine needs from a connection.
pub(crate) trait SendLink: Send {
    /// Writes control message `bytes` as `c` describes (the bytes are staged by the link).
    fn post_control(&mut self, c: &ControlWrite, bytes: &[u8]) -> Result<(), Error>;
    /// A zero-length write carrying `imm`.
    fn post_ack(&mut self, imm: u32) -> Result<(), Error>;
    /// Writes chunk `w` from `slot`.
    fn post_chunk(&mut self, w: &ChunkWrite, slot: &Slot) -> Result<(), Error>;
    /// Hands what was posted since the last flush to the NIC together (one doorbell);
    /// `poll`, `wait` and `close` flush first. Links that deliver at once need nothing.
    fn flush(&mut self) -> Result<(), Error> {
        Ok(())
    }
    /// Posts that fit the send queue now.
    fn send_room(&self) -> usize;
    /// Whether every post completed.
    fn is_idle(&self) -> bool;
    /// Takes completions without waiting.
    fn poll(&mut self, out: &mut Vec<SendCompletion>) -> Result<(), Error>;
    /// Sleeps until a completion, a connection event or a wake may have come, or `timeout`.
    fn wait(&mut self, timeout: Duration) -> Result<(), Error>;
    /// Wakes [`wait`](Self::wait) from another thread.
    fn waker(&self) -> Waker;
    /// Starts closing the connection (errors of work flushed after this are expected).
    fn close(&mut self);
    /// Whether the connection is known to be down (the peer disconnected, or our close
    /// completed).
    fn is_down(&mut self) -> bool;
    /// A description of the peer for messages.
    fn peer(&self) -> String;
}

/// What the receiver's connection reported.
#[derive(Debug)]
pub(crate) enum RecvCompletion {
    /// A WRITE WITH IMM arrived (its receive already reposted).
    Write {
        /// The immediate, host order.
        imm: u32,
        /// Bytes written.
        len: u32,
    },
    /// A SEND completed (room in the send queue again).
    Sent,
}

/// The receiver's ring, readable from any thread: the peer may write it at any time, so it
/// is only ever copied out of (never borrowed).
pub(crate) trait Ring: Send + Sync {
    fn copy_out(&self, offset: u64, dst: &mut [u8]) -> Result<(), Error>;
}

impl Ring for crate::verbs::MemoryRegion {
    fn copy_out(&self, offset: u64, dst: &mut [u8]) -> Result<(), Error> {
        let offset = usize::try_from(offset)
            .map_err(|_| Error::invalid("Ring::copy_out", "offset does not fit"))?;
        crate::verbs::MemoryRegion::copy_out(self, offset, dst)
    }
}

/// What the receiver's engine needs from a connection.
pub(crate) trait RecvLink: Send {
    /// SENDs `bytes` (staged in the link's send buffer for message number `n`).
    fn post_message(&mut self, n: u64, bytes: &[u8]) -> Result<(), Error>;
    /// Posts that fit the send queue now.
    fn send_room(&self) -> usize;
    /// Whether every post completed.
    fn is_idle(&self) -> bool;
    /// Takes completions without waiting.
    fn poll(&mut self, out: &mut Vec<RecvCompletion>) -> Result<(), Error>;
    /// The ring the sender writes.
    fn ring(&self) -> std::sync::Arc<dyn Ring>;
    /// Sleeps until something may have happened, or `timeout`.
    fn wait(&mut self, timeout: Duration) -> Result<(), Error>;
    /// Wakes [`wait`](Self::wait) from another thread.
    fn waker(&self) -> Waker;
    /// Starts closing the connection.
    fn close(&mut self);
    /// Whether the connection is known to be down.
    fn is_down(&mut self) -> bool;
    /// A description of the peer for messages.
    fn peer(&self) -> String;
}

/// The protocol's clock: nanoseconds since the engine started, read from the coarse
/// monotonic clock. The protocol's timers (keepalive, idle timeout, the handshake's
/// deadline) are milliseconds to seconds, so a clock one scheduler tick (1–4 ms) coarse
/// serves them; the precise one cost about 5% of a receiving engine's time in the
/// small-files profile (tens of nanoseconds, several times per file).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock(u64);

/// Nanoseconds on the coarse monotonic clock.
fn coarse_nanos() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::MonotonicCoarse);
    let secs = u64::try_from(t.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(t.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}

impl Clock {
    pub(crate) fn start() -> Clock {
        Clock(coarse_nanos())
    }

    pub(crate) fn now(&self) -> Instant {
        Instant::from_nanos(coarse_nanos().saturating_sub(self.0))
    }

    /// How long from now until `at` (zero if past).
    pub(crate) fn until(&self, at: Instant) -> Duration {
        Duration::from_nanos(at.as_nanos().saturating_sub(self.now().as_nanos()))
    }
}

/// How long an engine waits between checks when the protocol sets no timer.
pub(crate) const IDLE_WAIT: Duration = Duration::from_millis(500);
/// How long a closing engine waits for the peer's disconnect and the flush of its work.
pub(crate) const CLOSE_GRACE: Duration = Duration::from_secs(2);
