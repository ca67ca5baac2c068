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
    /// Every open of a bus asks this first, which also turns on [`vex`] where the CPU has it.
    pub(crate) fn is_lock_free() -> bool {
        #[cfg(target_arch = "x86_64")]
        vex::detect();
        portable_atomic::AtomicU128::is_lock_free()
    }

    #[inline]
    pub(crate) fn load(&self, order: Ordering) -> (u64, u64) {
        #[cfg(target_arch = "x86_64")]
        if vex::usable() {
            // SAFETY: `self` is 16-byte aligned and valid (`from_ptr`), and only accessed
            // atomically; `usable` says 16-byte VEX loads are atomic on this CPU.
            return unsafe { vex::load(self.0.as_ptr() as *const u8) };
        }
        unpack(self.0.load(order))
    }

    #[inline]
    pub(crate) fn store(&self, value: (u64, u64), order: Ordering) {
        #[cfg(target_arch = "x86_64")]
        if order != Ordering::SeqCst && vex::usable() {
            // SAFETY: as in `load`. A plain x86-64 store is a Release store; SeqCst (which
            // would need a fence after it) takes portable-atomic's path.
            unsafe { vex::store(self.0.as_ptr() as *mut u8, value) };
            return;
        }
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

/// The 16-byte loads and stores of [`Pair`], inlined on x86-64 CPUs with AVX.
///
/// portable-atomic does the same operation (`vmovdqa`) for the same CPUs, but behind a
/// function pointer chosen at run time: a call on every publish and every caught-up receive,
/// which also makes the compiler spill registers around it (stores that queue behind the
/// contended ones of the ring). Intel's and AMD's manuals guarantee that 16-byte aligned
/// `vmovdqa` loads and stores are atomic on processors that support AVX; a plain store has
/// Release and a plain load Acquire semantics on x86-64 (TSO).
#[cfg(all(not(loom), target_arch = "x86_64"))]
mod vex {
    use std::arch::asm;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Set once this process has seen AVX (never cleared): until then, portable-atomic's path.
    static USABLE: AtomicBool = AtomicBool::new(false);

    pub(super) fn detect() {
        if std::is_x86_feature_detected!("avx") {
            // ORDERING: Relaxed: a cache of what the CPU can do; either path is atomic.
            USABLE.store(true, Ordering::Relaxed);
        }
    }

    #[inline(always)]
    pub(super) fn usable() -> bool {
        // ORDERING: Relaxed: as in `detect`.
        USABLE.load(Ordering::Relaxed)
    }

    /// # Safety
    ///
    /// `ptr` is 16-byte aligned, valid for 16 bytes, only accessed atomically, and
    /// [`usable`] returned true (the CPU has AVX).
    #[inline(always)]
    pub(super) unsafe fn load(ptr: *const u8) -> (u64, u64) {
        let (lo, hi): (u64, u64);
        // SAFETY: the caller's contract; the instructions need AVX, which `usable` saw. No
        // `nomem`/`readonly` option: the block orders memory accesses like an Acquire load
        // (the compiler moves nothing across it).
        unsafe {
            asm!(
                "vmovdqa {x}, xmmword ptr [{p}]",
                "vmovq {lo}, {x}",
                "vpextrq {hi}, {x}, 1",
                p = in(reg) ptr,
                x = out(xmm_reg) _,
                lo = out(reg) lo,
                hi = out(reg) hi,
                options(nostack, preserves_flags),
            );
        }
        (lo, hi)
    }

    /// # Safety
    ///
    /// As [`load`], and `ptr` is valid for writes.
    #[inline(always)]
    pub(super) unsafe fn store(ptr: *mut u8, (lo, hi): (u64, u64)) {
        // SAFETY: as in `load`; the block orders memory accesses like a Release store.
        unsafe {
            asm!(
                "vmovq {x}, {lo}",
                "vpinsrq {x}, {x}, {hi}, 1",
                "vmovdqa xmmword ptr [{p}], {x}",
                p = in(reg) ptr,
                x = out(xmm_reg) _,
                lo = in(reg) lo,
                hi = in(reg) hi,
                options(nostack, preserves_flags),
            );
        }
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
