//! Closing a handle that a blocked call holds.
//!
//! A blocking call (`recv`, `for msg in sub`, a `send` or `loan` waiting for room) holds its
//! handle's lock for the whole wait, in slices of at most 20 ms with the GIL released.
//! `close()` from another thread, or from a signal handler that Python runs between two of
//! those slices on the very thread that waits, cannot take the lock: it raises a flag
//! instead. The waiting call looks at the flag between slices and raises `Closed`, and the
//! handle closes as that call lets go of the lock (the guard's drop). A `close()` from
//! another thread waits for that (about a slice) and returns with the handle closed; one from
//! a signal handler returns at once, and the interrupted call closes it on its way out.

use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, TryLockError};
use std::task::Waker;
use std::time::{Duration, Instant};

use pyo3::prelude::*;

use crate::errors::{Busy, Closed};

/// How long `close()` waits for a call on another thread to let go of the handle before it
/// leaves the close to that call (which closes the handle when it returns).
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// The close request of one handle, and which thread holds its lock.
#[derive(Default)]
pub(crate) struct Closing {
    requested: AtomicBool,
    /// [`this_thread`] of the thread holding the handle's lock; 0 when nobody does.
    holder: AtomicU64,
}

impl Closing {
    /// Whether `close()` was called (and perhaps not yet done: see the module doc).
    pub(crate) fn requested(&self) -> bool {
        // ORDERING: Acquire: pairs with the Release in `lock_for_close`; nothing else is
        // published through it, it only has to be seen between two slices of a wait.
        self.requested.load(Ordering::Acquire)
    }

    /// Between two slices of a blocking wait: Python's signal handlers run (Ctrl-C raises
    /// `KeyboardInterrupt`), then a `close()` made meanwhile ends the wait with `Closed`.
    pub(crate) fn between_slices(&self, py: Python<'_>) -> PyResult<()> {
        py.check_signals()?;
        self.check()
    }

    /// `Closed` if a close is pending: also before each message of a batch (`send_many`,
    /// whose items' own Python code may run the signal handler that closes the handle), so
    /// that a batch that never has to wait does not publish past a close.
    pub(crate) fn check(&self) -> PyResult<()> {
        if self.requested() {
            return Err(Closed::new_err("the handle was closed while this call ran"));
        }
        Ok(())
    }

    /// Forgets a request that `close()` then refused (`Busy`: a view or loan is open), so
    /// that `closed` says False and no later call closes the handle behind the caller's back.
    pub(crate) fn withdraw(&self) {
        // ORDERING: Release: as in `lock_for_close`.
        self.requested.store(false, Ordering::Release);
    }
}

/// What a handle's cell must say before it is closed on a pending request.
pub(crate) trait Closable: Send {
    /// Whether nothing borrows the handle (no open view or loan): then it may be closed.
    fn can_close(&self) -> bool;
    /// The asyncio task waiting on the handle, if any: woken once the handle is closed, it
    /// finds it closed and raises `Closed`, as after `close()`.
    fn take_waiter(&mut self) -> Option<Waker>;
}

/// An identity of the current thread that is never 0: the address of a thread-local (std's
/// `ThreadId` has no stable integer form).
fn this_thread() -> u64 {
    thread_local! {
        static ME: u8 = const { 0 };
    }
    ME.with(|me| me as *const u8 as u64)
}

/// The lock of a handle's cell, held by this thread. Its drop closes the handle if `close()`
/// was asked for meanwhile and nothing borrows it.
pub(crate) struct Guard<'a, C: Closable> {
    /// Released by hand in `drop`, so that a waiting task is woken after the release.
    cell: ManuallyDrop<MutexGuard<'a, Option<C>>>,
    closing: &'a Closing,
}

impl<C: Closable> Guard<'_, C> {
    /// Closes the handle if a close is pending and nothing borrows it; returns the waiting
    /// task to wake.
    fn settle(&mut self) -> Option<Waker> {
        if !(self.closing.requested() && self.cell.as_ref().is_some_and(C::can_close)) {
            return None;
        }
        let mut old = self.cell.take()?;
        let waiter = old.take_waiter();
        // Leaving takes the bus's control lock (rarely contended): without the GIL, as
        // `close()` does.
        Python::attach(|py| py.detach(move || drop(old)));
        waiter
    }
}

impl<C: Closable> std::ops::Deref for Guard<'_, C> {
    type Target = Option<C>;
    fn deref(&self) -> &Option<C> {
        &self.cell
    }
}

impl<C: Closable> std::ops::DerefMut for Guard<'_, C> {
    fn deref_mut(&mut self) -> &mut Option<C> {
        &mut self.cell
    }
}

impl<C: Closable> Drop for Guard<'_, C> {
    fn drop(&mut self) {
        let waiter = self.settle();
        // ORDERING: Relaxed: only compared with the current thread's own id (a thread sees
        // its own stores); another thread reading a stale holder only waits a little longer.
        self.closing.holder.store(0, Ordering::Relaxed);
        // SAFETY: the guard is released once, here, and `self.cell` is not used after.
        unsafe { ManuallyDrop::drop(&mut self.cell) };
        // After the release: woken before, the task could find the lock held and raise
        // `Busy` instead of `Closed`.
        if let Some(w) = waiter {
            w.wake();
        }
    }
}

fn guard<'a, C: Closable>(cell: MutexGuard<'a, Option<C>>, closing: &'a Closing) -> Guard<'a, C> {
    // ORDERING: Relaxed: see `Guard::drop`.
    closing.holder.store(this_thread(), Ordering::Relaxed);
    let mut g = Guard {
        cell: ManuallyDrop::new(cell),
        closing,
    };
    // A close that a call then holding the lock left pending. The task it may wake is
    // stepped by its loop later, on the loop's own turn (the waker only queues it).
    if let Some(w) = g.settle() {
        w.wake();
    }
    g
}

/// Takes the lock for a call, or raises `Busy` (`what` says which handle) while another
/// thread's call holds it.
pub(crate) fn lock<'a, C: Closable>(
    m: &'a Mutex<Option<C>>,
    closing: &'a Closing,
    what: &str,
) -> PyResult<Guard<'a, C>> {
    match m.try_lock() {
        Ok(g) => Ok(guard(g, closing)),
        Err(TryLockError::WouldBlock) => Err(Busy::new_err(format!(
            "another thread is using this {what} (one thread at a time)"
        ))),
        // A panic inside bus-core surfaced as an exception; the handle itself is still
        // consistent (every bus-core operation leaves it so).
        Err(TryLockError::Poisoned(p)) => Ok(guard(p.into_inner(), closing)),
    }
}

/// Takes the lock for `close()`. `None`: a call holds it (on this thread, under a signal
/// handler, or on another that did not let go within [`CLOSE_WAIT`]); the close is left to it:
/// it raises `Closed` at its next slice and closes the handle as it returns.
pub(crate) fn lock_for_close<'a, C: Closable>(
    py: Python<'_>,
    m: &'a Mutex<Option<C>>,
    closing: &'a Closing,
) -> Option<Guard<'a, C>> {
    let start = Instant::now();
    loop {
        match m.try_lock() {
            Ok(g) => return Some(guard(g, closing)),
            Err(TryLockError::Poisoned(p)) => return Some(guard(p.into_inner(), closing)),
            Err(TryLockError::WouldBlock) => {
                // ORDERING: Release: see `Closing::requested`.
                closing.requested.store(true, Ordering::Release);
                // ORDERING: Relaxed: see `Guard::drop`.
                if closing.holder.load(Ordering::Relaxed) == this_thread()
                    || start.elapsed() > CLOSE_WAIT
                {
                    return None;
                }
                // The holder needs the GIL to return.
                py.detach(|| std::thread::sleep(Duration::from_millis(1)));
            }
        }
    }
}

/// Drops a collected handle's cell without the GIL, as `close()` does: leaving the bus waits
/// for its control lock (up to 5 s while another process holds it), and a collection holding
/// the GIL meanwhile would stop every Python thread.
pub(crate) fn drop_unlocked<C: Send>(m: &mut Mutex<Option<C>>) {
    let cell = m.get_mut().unwrap_or_else(|p| p.into_inner()).take();
    if cell.is_some() {
        Python::attach(|py| py.detach(move || drop(cell)));
    }
}

/// What a handle's `__exit__` returns after its `close()`: the close's error, except a `Busy`
/// (a view or loan made in the block is still alive) while the block itself raised, which
/// would replace the block's exception (the handle then closes when collected).
pub(crate) fn exit(
    py: Python<'_>,
    exc_type: Option<&Bound<'_, PyAny>>,
    closed: PyResult<()>,
) -> PyResult<bool> {
    match closed {
        Err(e) if exc_type.is_some_and(|t| !t.is_none()) && e.is_instance_of::<Busy>(py) => {
            Ok(false)
        }
        r => r.map(|()| false),
    }
}
