//! The public API: sending ([`send`]) and receiving ([`recv`]).

pub mod recv;
pub mod send;
pub mod subnet;
