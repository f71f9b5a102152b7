//! The file layer, usable without RDMA: what the sender reads ([`tree`]: the walk over the
//! paths to send) and where the receiver writes ([`dest`]: names resolved beneath the
//! destination without following symlinks, temporary files, publishing).

pub mod dest;
pub mod tree;
