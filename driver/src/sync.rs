//! The synchronisation primitives the engine's concurrent core uses: `std`'s, or `loom`'s
//! when the crate is built with `--cfg rdmaft_loom` for model checking (`make loom`).
//!
//! Only the core (`handoff`) goes through this shim; FFI and blocking syscalls cannot be
//! modelled and are kept out of it.

#[cfg(rdmaft_loom)]
#[allow(unused_imports)]
pub(crate) use loom::sync::{
    atomic::{AtomicBool, AtomicU64, Ordering},
    Arc, Condvar, Mutex, MutexGuard,
};
#[cfg(rdmaft_loom)]
pub(crate) use loom::thread;

#[cfg(not(rdmaft_loom))]
#[allow(unused_imports)]
pub(crate) use std::sync::{
    atomic::{AtomicBool, AtomicU64, Ordering},
    Arc, Condvar, Mutex, MutexGuard,
};
#[cfg(not(rdmaft_loom))]
#[allow(unused_imports)]
pub(crate) use std::thread;

/// Locks a `std` mutex outside the modelled core, taking over a poisoned lock (each critical
/// section there leaves its data consistent at every panic point).
pub(crate) fn lock_std<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Locks `m`, taking over a lock a panicking thread left poisoned: the data the core guards
/// stays consistent across every panic point (each critical section is a few assignments).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
