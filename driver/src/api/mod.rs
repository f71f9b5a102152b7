//! The public API: sending ([`send`]) and receiving ([`recv`]).

pub mod defaults;
mod listen;
pub mod loopback;
pub mod ports;
pub mod recv;
pub mod send;
pub mod subnet;
