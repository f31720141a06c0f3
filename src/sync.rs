//! Small helpers around std's synchronisation types.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, taking over a poisoned lock.
///
/// A panic while the lock was held leaves the protected data as the
/// panicking code left it; every structure ferry guards this way (counters,
/// registries, bookkeeping maps) stays meaningful after a partial update, so
/// going on beats turning one panic into a cascade of them.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The contents of a `mutex` held exclusively (no lock needed), taking over
/// a poisoned one, for the same reason as [`lock`].
pub(crate) fn get_mut<T>(mutex: &mut Mutex<T>) -> &mut T {
    mutex.get_mut().unwrap_or_else(PoisonError::into_inner)
}
