//! Small helpers around std's synchronisation types.

use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`, taking over a poisoned lock.
///
/// A panic while the lock was held leaves the protected data as the
/// panicking code left it; every structure ferry guards this way (counters,
/// registries, bookkeeping maps) stays meaningful after a partial update, so
/// going on beats turning one panic into a cascade of them.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}
