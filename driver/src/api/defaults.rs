//! The defaults both sides start from, in one place: a sender's and a receiver's options
//! propose the same sizes unless told otherwise, so the minimum rule of the handshake keeps
//! them.

use std::time::Duration;

/// Default buffer (chunk) size: 1 MiB.
pub const DEFAULT_CHUNK_SIZE: u32 = 1 << 20;
/// Default window: chunks in flight (16 MiB at the default chunk size).
pub const DEFAULT_WINDOW: u32 = 16;
/// Default idle timeout.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default part size for files split over lanes: 64 MiB (a part is a unit of work that
/// one lane carries; large enough that its header and result are noise, small enough that
/// a 1 GiB file spreads over 16).
pub const DEFAULT_PART_SIZE: u64 = 64 << 20;
/// Most lanes [`default_lanes`] picks.
pub const MAX_DEFAULT_LANES: u16 = 8;

/// The lanes a send uses when not told: one per four cores (a lane keeps about two
/// threads busy on each side, its engine and its reader or writer, and the other cores
/// are left to the application and the kernel), at least one, at most
/// [`MAX_DEFAULT_LANES`].
pub fn default_lanes() -> u16 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    u16::try_from(cores / 4)
        .unwrap_or(MAX_DEFAULT_LANES)
        .clamp(1, MAX_DEFAULT_LANES)
}

/// The keepalive interval to propose for an idle timeout: an eighth of it, 1 ms to 2 s.
pub(crate) fn keepalive_for(idle: Duration) -> u32 {
    u32::try_from((idle / 8).as_millis())
        .unwrap_or(u32::MAX)
        .clamp(1, 2000)
}
