//! Fuzz harnesses for `rdmaft-protocol` and the driver's file layer, one plain function per
//! cargo-fuzz target.
//!
//! Each `fuzz_targets/<name>.rs` only forwards libFuzzer's bytes to the function of the same
//! name here, so `cargo test -p rdmaft-fuzz-harness` (stable) replays the seed
//! corpus in `fuzz/seeds/<name>/` and thousands of pseudo-random inputs through the very same code.
//!
//! Targets:
//! - [`decode_control`], [`decode_handshake`], [`name`]: the decoders, the negotiation and
//!   the name check on raw bytes; successes round-trip byte for byte and keep their
//!   invariants, agreements are consistent on both sides.
//! - [`names`]: the open-name rule at both machines against a reference model.
//! - [`sender`], [`receiver`]: one state machine driven by arbitrary operations (raw and
//!   well-formed peer messages resolved against a model of the machine, application
//!   commands, completions, time), drained after each, every output and every input's result
//!   checked against the model.
//! - [`dest`]: the receiver's file layer (`rdmaft::fs::dest`) driven by operation sequences
//!   in a scratch directory against a model: nothing outside it touched, no temporary file
//!   left, the directory and the model agree.
//! - [`pair`]: the simulator of `protocol/tests/sim` under a schedule taken from the input;
//!   every run must end cleanly with every file as expected.
//!
//! Peer bytes and API calls must never panic the protocol crate; every panic here is a
//! finding (or a model to fix).

mod common;
mod decode_control;
mod decode_handshake;
mod dest;
mod msg;
mod name;
mod names;
mod pair;
mod receiver;
mod sender;

pub use common::set_trace;
pub use decode_control::decode_control;
pub use decode_handshake::decode_handshake;
pub use dest::dest;
pub use name::name;
pub use names::names;
pub use pair::pair;
pub use receiver::receiver;
pub use sender::sender;

/// A harness function.
pub type Harness = fn(&[u8]);

/// Each target with its harness.
pub const TARGETS: [(&str, Harness); 8] = [
    ("decode_control", decode_control),
    ("decode_handshake", decode_handshake),
    ("name", name),
    ("names", names),
    ("sender", sender),
    ("receiver", receiver),
    ("pair", pair),
    ("dest", dest),
];

/// How far one input of a state-machine target gets: `(files resolved, closed cleanly,
/// failed)`, or `None` for an input the harness skips or a target without such a report.
pub fn depth(target: &str, data: &[u8]) -> Option<(usize, bool, bool)> {
    let run = match target {
        "sender" => sender::run,
        "receiver" => receiver::run,
        _ => return None,
    };
    run(data).map(|o| (o.resolved, o.closed, o.failed))
}

#[cfg(test)]
mod tests;
