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
    lanes_for_cores(std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// [`default_lanes`] on a machine of `cores` cores.
fn lanes_for_cores(cores: usize) -> u16 {
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

#[cfg(test)]
mod tests {
    use super::*;
    use rdmaft_protocol::{Features, Params};

    #[test]
    fn the_default_sizes_make_a_proposal_the_protocol_accepts() {
        let p = Params::new(Features::empty(), DEFAULT_CHUNK_SIZE, DEFAULT_WINDOW);
        assert_eq!(p.check(), Ok(()));
        // A part is whole chunks, at least one.
        let chunk = u64::from(DEFAULT_CHUNK_SIZE);
        assert!(DEFAULT_PART_SIZE >= chunk && DEFAULT_PART_SIZE % chunk == 0);
    }

    #[test]
    fn one_lane_per_four_cores_from_one_to_the_most() {
        for (cores, lanes) in [
            (0, 1),
            (1, 1),
            (4, 1),
            (8, 2),
            (13, 3),
            (32, 8),
            (usize::MAX, 8),
        ] {
            assert_eq!(lanes_for_cores(cores), lanes, "{cores} cores");
        }
        let here = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(default_lanes(), lanes_for_cores(here));
    }

    #[test]
    fn the_keepalive_is_an_eighth_of_the_idle_timeout_within_bounds() {
        assert_eq!(keepalive_for(Duration::from_secs(8)), 1000);
        assert_eq!(keepalive_for(Duration::from_secs(30)), 2000, "at most 2 s");
        assert_eq!(keepalive_for(Duration::from_millis(4)), 1, "at least 1 ms");
        assert_eq!(keepalive_for(Duration::MAX), 2000);
    }
}
