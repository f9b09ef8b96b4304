//! The crate's one policy for a poisoned lock.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, also after a panic elsewhere poisoned it: every holder in this crate leaves
/// the data whole between statements (inserts, removes, counters), so what a panicking holder
/// left is still worth reading.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
