//! The file layer, usable without RDMA: what the sender reads ([`tree`]: the walk over the
//! paths to send; [`shard`]: one sender's share of it when several send one tree) and where
//! the receiver writes ([`dest`]: names resolved beneath the destination without following
//! symlinks, temporary files, publishing; the temporary-file strategy in `temp`, the
//! removal of stale temporary files in `stale`; [`compare`]: whether an entry is in sync;
//! [`prune`]: removing what a sync's source no longer has).

pub mod compare;
pub mod dest;
pub mod direct;
pub mod exclude;
pub mod link;
pub(crate) mod perms;
pub mod prune;
pub mod shard;
pub(crate) mod split;
pub(crate) mod stale;
mod temp;
pub mod tree;

pub use temp::temp_name_of;

/// A fresh, empty directory for a unit test, unique to this process, `tag` and `name`.
#[cfg(test)]
pub(crate) fn scratch_dir(tag: &str, name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("rdmaft-{tag}-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
