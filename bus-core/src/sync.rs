//! The one place atomics come from.
//!
//! In a normal build these are `std`'s atomics (and portable-atomic's 128-bit one); built with
//! `RUSTFLAGS="--cfg loom"` they are loom's, so that the ring protocol in [`crate::ring`] can be
//! model-checked on heap memory (loom cannot see atomics inside an mmap, design question 4).
//! Nothing else in the crate names `std::sync::atomic` or `loom` directly.

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{
    compiler_fence, fence, AtomicBool, AtomicU32, AtomicU64, Ordering,
};

#[cfg(loom)]
#[allow(unused_imports)] // AtomicU32 is for the futex words, which loom builds leave out
pub(crate) use loom::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

/// Two 64-bit words updated together by one lock-free 16-byte compare-and-swap.
///
/// Used for the ring's `tail` (`{ position, sequence }`) and `head` (`{ position, sequence }`).
/// In production this is portable-atomic's `AtomicU128` (`cmpxchg16b` on x86-64, `casp` or an
/// LL/SC pair on aarch64), placed inside the shared mapping. [`Pair::is_lock_free`] must be
/// checked before one is used across processes: portable-atomic's fallback for CPUs without a
/// 16-byte CAS is a lock inside *this* process, which another process would not see
/// (design question 3). [`crate::mapping`] refuses to open a bus when it is false.
#[cfg(not(loom))]
#[repr(transparent)]
pub(crate) struct Pair(portable_atomic::AtomicU128);

#[cfg(not(loom))]
impl Pair {
    /// A new pair, for rings on heap memory (tests).
    #[cfg(test)]
    pub(crate) fn new(first: u64, second: u64) -> Self {
        Pair(portable_atomic::AtomicU128::new(pack(first, second)))
    }

    /// Views 16 bytes of shared memory as a pair.
    ///
    /// # Safety
    ///
    /// `ptr` is 16-byte aligned, valid for reads and writes for `'a`, and only ever accessed
    /// atomically (by this type) while `'a` lasts.
    pub(crate) unsafe fn from_ptr<'a>(ptr: *mut u8) -> &'a Pair {
        debug_assert_eq!(ptr as usize % 16, 0);
        // SAFETY: the caller guarantees alignment, validity and atomic-only access; `Pair` is
        // `repr(transparent)` over `AtomicU128`, which has the layout of a `u128`.
        unsafe { &*(ptr as *const Pair) }
    }

    /// Whether this CPU does the 16-byte operations without a lock (runtime detection).
    pub(crate) fn is_lock_free() -> bool {
        portable_atomic::AtomicU128::is_lock_free()
    }

    #[inline]
    pub(crate) fn load(&self, order: Ordering) -> (u64, u64) {
        unpack(self.0.load(order))
    }

    #[inline]
    pub(crate) fn store(&self, value: (u64, u64), order: Ordering) {
        self.0.store(pack(value.0, value.1), order);
    }

    /// Replaces `current` by `new`; on failure returns the value found.
    #[inline]
    pub(crate) fn compare_exchange(
        &self,
        current: (u64, u64),
        new: (u64, u64),
        success: Ordering,
        failure: Ordering,
    ) -> Result<(), (u64, u64)> {
        self.0
            .compare_exchange(
                pack(current.0, current.1),
                pack(new.0, new.1),
                success,
                failure,
            )
            .map(|_| ())
            .map_err(unpack)
    }
}

#[cfg(not(loom))]
#[inline]
fn pack(first: u64, second: u64) -> u128 {
    (first as u128) | ((second as u128) << 64)
}

#[cfg(not(loom))]
#[inline]
fn unpack(v: u128) -> (u64, u64) {
    (v as u64, (v >> 64) as u64)
}

/// Loom model of the 16-byte atomic: a mutex-protected pair is linearizable, which is what
/// `cmpxchg16b` gives (loom has no 128-bit atomic of its own).
#[cfg(loom)]
pub(crate) struct Pair(loom::sync::Mutex<(u64, u64)>);

#[cfg(loom)]
impl Pair {
    #[cfg(test)]
    pub(crate) fn new(first: u64, second: u64) -> Self {
        Pair(loom::sync::Mutex::new((first, second)))
    }

    pub(crate) fn load(&self, _order: Ordering) -> (u64, u64) {
        *self.0.lock().unwrap()
    }

    pub(crate) fn store(&self, value: (u64, u64), _order: Ordering) {
        *self.0.lock().unwrap() = value;
    }

    pub(crate) fn compare_exchange(
        &self,
        current: (u64, u64),
        new: (u64, u64),
        _success: Ordering,
        _failure: Ordering,
    ) -> Result<(), (u64, u64)> {
        let mut v = self.0.lock().unwrap();
        if *v == current {
            *v = new;
            Ok(())
        } else {
            Err(*v)
        }
    }
}
