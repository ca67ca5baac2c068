//! Waiting: shared futexes on words inside the mapping, and the one backoff vocabulary.
//!
//! Futexes here are *shared* (no `FUTEX_PRIVATE_FLAG`): the kernel keys them by the file page
//! and offset, so a wake in one process reaches a sleeper in another. std's `Mutex`/`Condvar`
//! and the atomic-wait crates use private futexes and would never wake another process.
//!
//! The protocol (design question 6), for readers (producers waiting for space mirror it):
//!
//! ```text
//! reader                                   producer
//! waiting += 1            (SeqCst)         commit word0            (SeqCst CAS)
//! v = notify              (SeqCst)         if waiting > 0          (SeqCst load)
//! re-check word0          (SeqCst)             notify += 1; futex_wake(notify)
//! futex_wait(notify, v)
//! waiting -= 1
//! ```
//!
//! In the single order of SeqCst operations either the producer's load of `waiting` comes
//! after the reader's increment (it wakes, and the bump of `notify` makes a wait that has not
//! started yet return at once), or the reader's re-check comes after the commit (it does not
//! sleep). A publish with no sleeper makes no system call.
//!
//! A bus with one producer slot commits with a plain Release store instead of the SeqCst CAS
//! (ring::commit), and a store followed by a load needs a full barrier for the pattern to
//! hold: a locked instruction on every message, which waits for the message's stores to
//! reach other cores. There the barrier is made asymmetric: the producer puts only a
//! compiler fence between its commit and its load of `waiting`, and a reader about to sleep
//! calls `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)`, which runs a full barrier on every
//! CPU that is running a thread of a process registered for it (every exclusive producer
//! registers, [`ReaderWake::for_producer`]) before it returns. Either the barrier lands on
//! the producer before its commit (then its load of `waiting`, later still, sees the
//! increment, made before the call) or after it (then the commit is visible to the re-check
//! that follows the call). A producer that is not running has passed a context switch,
//! itself a full barrier. Producers that cannot register (a kernel before 4.16, a seccomp
//! filter) use a SeqCst fence instead; a reader whose membarrier fails sleeps in short slices
//! ([`sleep_unless`]), so a wake it might miss costs it at most a millisecond.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rustix::thread::{futex, membarrier, MembarrierCommand};

use crate::sync::{compiler_fence, fence, AtomicBool, AtomicU32, Ordering};

/// Pauses a [`WaitStrategy::SpinThenBlock`] subscriber spends before it sleeps: 40-80 µs
/// on the x86 hosts measured (a `pause` took 10-20 ns there; on CPUs where it takes ~140
/// cycles, several times that). Under a continuous stream the next message comes well within
/// this, so the receiver rarely sleeps and the producer rarely pays a futex wake. (crossbeam's
/// `Backoff`, used before, gave up after ~130 pauses and four `sched_yield`s, about 3 µs: a
/// blocking subscriber then slept between most messages of a stream and ran at a third of
/// the busy-polling rate.)
pub(crate) const SPIN_THEN_BLOCK_PAUSES: u32 = 4096;

/// Pauses after which a spinning waiter also yields the CPU after every poll: when more
/// processes than CPUs run, the one it waits for may need this very CPU (a subscriber spinning
/// 60 µs on the only CPU of its producer cut a 64 B stream to a third). On an idle CPU a
/// `sched_yield` returns in about a microsecond.
pub(crate) const YIELD_AFTER_PAUSES: u32 = 128;

/// Most pauses between two polls of a [`Spinner`]: long enough that polling does not flood
/// the cache line a producer is writing, short enough to see a message within a microsecond.
const MAX_PAUSES_PER_POLL: u32 = 64;

/// The bounded spin of a wait before it sleeps: pauses that double from one to
/// [`MAX_PAUSES_PER_POLL`] between polls, then the CPU yielded after each poll.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spinner {
    spent: u32,
    next: u32,
    yields: u32,
    budget: u32,
    yields_after_budget: u32,
}

impl Spinner {
    /// A subscriber's spin: [`SPIN_THEN_BLOCK_PAUSES`], yielding after each poll past
    /// [`YIELD_AFTER_PAUSES`].
    #[cfg_attr(not(feature = "async"), allow(dead_code))]
    pub(crate) const fn long() -> Spinner {
        Spinner::new(SPIN_THEN_BLOCK_PAUSES, 0)
    }

    /// A producer's wait for space (crossbeam's `Backoff`): 127 pauses, then four yields.
    /// A full ring empties only when its subscribers run; under a stream they publish
    /// their positions in steps of an eighth of the ring, so a long spin here buys nothing
    /// and takes the CPU from them when CPUs are short (3 publishers and a subscriber on 2
    /// CPUs ran at 0.6x with the long spin).
    pub(crate) const fn short() -> Spinner {
        Spinner::new(YIELD_AFTER_PAUSES - 1, 4)
    }

    const fn new(budget: u32, yields_after_budget: u32) -> Spinner {
        Spinner {
            spent: 0,
            next: 1,
            yields: yields_after_budget,
            budget,
            yields_after_budget,
        }
    }

    /// Spins (or yields) once, after which the caller polls again, and returns `true`; or
    /// returns `false` at once when the budget is spent: time to sleep.
    #[inline]
    pub(crate) fn spin(&mut self) -> bool {
        if self.spent >= self.budget {
            if self.yields == 0 {
                return false;
            }
            self.yields -= 1;
            std::thread::yield_now();
            return true;
        }
        let n = self.next.min(MAX_PAUSES_PER_POLL);
        for _ in 0..n {
            std::hint::spin_loop();
        }
        self.spent += n;
        self.next = n * 2;
        if self.spent > YIELD_AFTER_PAUSES {
            std::thread::yield_now();
        }
        true
    }

    /// Starts a new wait with the whole budget.
    #[cfg_attr(not(feature = "async"), allow(dead_code))]
    #[inline]
    pub(crate) fn reset(&mut self) {
        *self = Spinner::new(self.budget, self.yields_after_budget);
    }
}

/// How a blocking call waits when there is nothing to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WaitStrategy {
    /// Spin 4,096 pauses (40-80 µs on the hosts measured), then sleep on the futex. Under a
    /// stream the waiter rarely sleeps; when idle it costs no CPU after the spin, and the first
    /// message after a quiet spell costs a futex wake.
    #[default]
    SpinThenBlock,
    /// Busy-poll: never sleep. One core per waiting handle; lowest latency.
    Spin,
    /// Sleep on the futex at once.
    Block,
}

/// Sleeps on `word` while it holds `expected`, at most `timeout`. Returns on a wake, on a
/// changed value, on a signal, or when the time is up; the caller re-checks its condition.
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = rustix::time::Timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: timeout.subsec_nanos() as _,
    };
    // Flags::empty(): a shared futex, so that other processes' wakes reach us. Errors
    // (EAGAIN: value changed; ETIMEDOUT; EINTR) all mean "re-check", which the caller does.
    let _ = futex::wait(word, futex::Flags::empty(), expected, Some(&ts));
}

/// [`futex_wait`] on a process-private word (one only this process's threads wake).
pub(crate) fn futex_wait_private(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = rustix::time::Timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: timeout.subsec_nanos() as _,
    };
    // Errors all mean "re-check", as in `futex_wait`.
    let _ = futex::wait(word, futex::Flags::PRIVATE, expected, Some(&ts));
}

/// Wakes every sleeper on `word` (in any process). Returns how many the kernel woke (0 on
/// an error).
pub(crate) fn futex_wake_all(word: &AtomicU32) -> usize {
    // ORDERING: Release: the bump pairs with the sleeper's SeqCst load of the value it
    // passes to futex_wait; the new value makes a wait that has not started return at once.
    word.fetch_add(1, Ordering::Release);
    futex::wake(word, futex::Flags::empty(), i32::MAX as u32).unwrap_or(0)
}

/// What a wake found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Woke {
    /// The waiting count was 0: no system call.
    NoWaiters,
    /// The count said someone sleeps, and the kernel woke somebody.
    Some,
    /// The count said someone sleeps, but nobody was asleep on the word: a waiter between
    /// its announcement and its sleep, or one that died asleep (whose count stays until an
    /// eviction gives it back). Callers count these to decide when to look for the dead.
    Nobody,
}

/// Wakes sleepers on `word` if the `waiting` count says there are any.
///
/// The caller's preceding write (the commit, the new read position) must be SeqCst, and so is
/// this load: the Dekker pattern in the module doc.
#[inline]
pub(crate) fn wake_if_waiting(waiting: &AtomicU32, word: &AtomicU32) -> Woke {
    // ORDERING: SeqCst, see the module doc.
    if waiting.load(Ordering::SeqCst) != 0 {
        wake_counted(word)
    } else {
        Woke::NoWaiters
    }
}

#[cold]
fn wake_counted(word: &AtomicU32) -> Woke {
    if futex_wake_all(word) > 0 {
        Woke::Some
    } else {
        Woke::Nobody
    }
}

/// How a producer orders its commit before its look at the readers' waiter count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReaderWake {
    /// The commit was a SeqCst CAS (a bus shared by several producers).
    AfterSeqCst,
    /// The commit was a Release store and this process could not register for membarrier:
    /// a SeqCst fence.
    Fenced,
    /// The commit was a Release store and sleeping readers run membarrier: a compiler fence.
    Asymmetric,
}

impl ReaderWake {
    /// What a producer on a bus with (`exclusive`) or without one producer slot uses.
    pub(crate) fn for_producer(exclusive: bool) -> Self {
        if !exclusive {
            ReaderWake::AfterSeqCst
        } else if registered_for_membarrier() {
            ReaderWake::Asymmetric
        } else {
            ReaderWake::Fenced
        }
    }

    /// Wakes sleeping readers after a commit, if there are any.
    #[inline]
    pub(crate) fn wake(self, waiting: &AtomicU32, word: &AtomicU32) -> Woke {
        match self {
            ReaderWake::AfterSeqCst => wake_if_waiting(waiting, word),
            ReaderWake::Fenced => {
                // ORDERING: SeqCst fence between the Release commit and the SeqCst load:
                // the Dekker pattern with the reader's SeqCst increment and re-check.
                fence(Ordering::SeqCst);
                wake_if_waiting(waiting, word)
            }
            ReaderWake::Asymmetric => {
                // The compiler keeps the commit before the load; the CPU may not, and a
                // reader's membarrier covers that (module doc).
                compiler_fence(Ordering::SeqCst);
                // ORDERING: Relaxed: the reader's membarrier supplies the barrier.
                if waiting.load(Ordering::Relaxed) != 0 {
                    wake_counted(word)
                } else {
                    Woke::NoWaiters
                }
            }
        }
    }
}

/// Registers this process for `MEMBARRIER_CMD_GLOBAL_EXPEDITED` (once); whether it is.
fn registered_for_membarrier() -> bool {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    *REGISTERED.get_or_init(|| membarrier(MembarrierCommand::RegisterGlobalExpedited).is_ok())
}

/// Runs a full barrier on every CPU running a registered process (the readers' half of
/// [`ReaderWake::Asymmetric`]); false if the kernel refused, now or before (a refusal is
/// remembered: the syscall is not tried again).
fn global_barrier() -> bool {
    static REFUSED: AtomicBool = AtomicBool::new(false);
    // ORDERING: Relaxed: a cache of the kernel's answer; a stale `false` only retries.
    if REFUSED.load(Ordering::Relaxed) {
        return false;
    }
    let ok = membarrier(MembarrierCommand::GlobalExpedited).is_ok();
    if !ok {
        // ORDERING: Relaxed: as above.
        REFUSED.store(true, Ordering::Relaxed);
    }
    ok
}

/// A deadline, or none.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline(Option<Instant>);

impl Deadline {
    pub(crate) fn never() -> Self {
        Deadline(None)
    }

    pub(crate) fn after(d: Duration) -> Self {
        Deadline(Instant::now().checked_add(d))
    }

    /// Time left (`None`: no deadline), zero when passed.
    pub(crate) fn remaining(&self) -> Option<Duration> {
        self.0.map(|t| t.saturating_duration_since(Instant::now()))
    }

    pub(crate) fn passed(&self) -> bool {
        self.remaining() == Some(Duration::ZERO)
    }

    /// How long to sleep at most: `slice`, cut to the time left.
    pub(crate) fn slice(&self, slice: Duration) -> Duration {
        self.remaining().map_or(slice, |r| r.min(slice))
    }
}

/// Longest sleep of a reader whose membarrier failed, on a bus whose producer may commit
/// without a full barrier: the longest a wake it misses can keep it asleep.
pub(crate) const UNFENCED_SLICE: Duration = Duration::from_millis(1);

/// Sleeps on `word` as a registered waiter, unless `ready()` becomes true first.
///
/// Increments `waiting` for the duration (and sets `mine`, the caller's slot flag, so that
/// an evictor can give the count back if we die asleep), re-checks `ready` after reading the
/// futex value, and sleeps at most `slice`. `asymmetric`: the writer whose progress `ready`
/// checks may commit without a full barrier ([`ReaderWake::Asymmetric`]); run membarrier
/// between the announcement and the re-check. Returns whether `ready()` was seen true.
pub(crate) fn sleep_unless(
    waiting: &AtomicU32,
    mine: &AtomicU32,
    word: &AtomicU32,
    slice: Duration,
    asymmetric: bool,
    ready: impl Fn() -> bool,
) -> bool {
    let (v, fenced) = announce(waiting, mine, word, asymmetric);
    let was_ready = ready();
    if !was_ready {
        futex_wait(
            word,
            v,
            if fenced {
                slice
            } else {
                slice.min(UNFENCED_SLICE)
            },
        );
    }
    retract(waiting, mine);
    was_ready
}

/// The first half of a sleep ([`sleep_unless`], and the waits of `WaitSet` and the async
/// handles, which sleep elsewhere): counts the caller in `waiting`, sets its slot flag `mine`,
/// runs the asymmetric barrier if asked, and reads the futex value to sleep on. The caller
/// re-checks its condition next, and sleeps on `word` expecting the value returned only if it
/// still does not hold; then it calls [`retract`] (exactly once).
///
/// Returns the value and whether the announcement is fenced: `false` when `asymmetric` was
/// asked and the kernel refused membarrier, so a wake can be missed and the sleep must be
/// short ([`UNFENCED_SLICE`]).
pub(crate) fn announce(
    waiting: &AtomicU32,
    mine: &AtomicU32,
    word: &AtomicU32,
    asymmetric: bool,
) -> (u32, bool) {
    // ORDERING: SeqCst: announce before re-checking (module doc).
    waiting.fetch_add(1, Ordering::SeqCst);
    // ORDERING: Relaxed: read by an evictor only after this process died. Set at once, before
    // the membarrier syscall: an evictor that finds the count above the flags set takes the
    // difference for leaked, so the window between the two must stay a few instructions.
    mine.store(1, Ordering::Relaxed);
    let fenced = !asymmetric || global_barrier();
    // ORDERING: SeqCst: the value we sleep on is read before the re-check, so a wake that
    // follows the re-check changes it.
    (word.load(Ordering::SeqCst), fenced)
}

/// Announces several waits at once (a `WaitSet`): the same as [`announce`] for each, with
/// one barrier for all of them. `waits` gives `(waiting, mine, word, asymmetric)`; the values
/// to sleep on go into `values`. Returns whether every asymmetric announcement is fenced.
pub(crate) fn announce_all<'a>(
    waits: impl Iterator<Item = (&'a AtomicU32, &'a AtomicU32, &'a AtomicU32, bool)> + Clone,
    values: &mut Vec<u32>,
) -> bool {
    let mut asymmetric = false;
    for (waiting, mine, _, asym) in waits.clone() {
        // ORDERING: as in `announce`.
        waiting.fetch_add(1, Ordering::SeqCst);
        // ORDERING: as in `announce`.
        mine.store(1, Ordering::Relaxed);
        asymmetric |= asym;
    }
    let fenced = !asymmetric || global_barrier();
    values.clear();
    // ORDERING: SeqCst: as in `announce`.
    values.extend(waits.map(|(_, _, word, _)| word.load(Ordering::SeqCst)));
    fenced
}

/// The second half of a sleep: no longer counted in `waiting`, slot flag `mine` cleared.
pub(crate) fn retract(waiting: &AtomicU32, mine: &AtomicU32) {
    // ORDERING: Relaxed: read by an evictor only after this process died (as in `announce`).
    mine.store(0, Ordering::Relaxed);
    // ORDERING: Relaxed: only a count; an extra wake costs a syscall, never correctness.
    // Saturating: an evictor may have lowered a count it judged leaked (registry).
    let _ = waiting.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| w.checked_sub(1));
}

/// The most words one `futex_waitv` call watches (the kernel's `FUTEX_WAITV_MAX`).
pub(crate) const WAITV_MAX: usize = 128;

/// How [`waitv`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Waitv {
    /// Woken, a value differed, a signal, or the time ran out: re-check.
    Returned,
    /// The kernel has no `futex_waitv` (before Linux 5.16, or a seccomp filter refuses it):
    /// the caller polls instead.
    Unsupported,
}

/// Sleeps until one of `words` (each with the value it is expected to hold, and whether it
/// is a process-private futex) is woken or changed, or `timeout` passes: `futex_waitv`.
/// At most [`WAITV_MAX`] words.
pub(crate) fn waitv(words: &[(&AtomicU32, u32, bool)], timeout: Option<Duration>) -> Waitv {
    use futex::{Wait, WaitFlags, WaitPtr, WaitvFlags};
    static UNSUPPORTED: AtomicBool = AtomicBool::new(false);
    // ORDERING: Relaxed: a cache of the kernel's answer.
    if UNSUPPORTED.load(Ordering::Relaxed) || words.is_empty() || words.len() > WAITV_MAX {
        return Waitv::Unsupported;
    }
    let mut list = [Wait::new(); WAITV_MAX];
    for (w, &(word, val, private)) in list.iter_mut().zip(words) {
        w.val = u64::from(val);
        w.uaddr = WaitPtr::new(word.as_ptr().cast());
        w.flags = if private {
            WaitFlags::SIZE_U32 | WaitFlags::PRIVATE
        } else {
            // Shared: keyed by the file page, so that other processes' wakes reach us.
            WaitFlags::SIZE_U32
        };
    }
    // futex_waitv takes an absolute time on the clock it is given.
    let deadline = timeout.and_then(|t| {
        let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        let now = Duration::new(now.tv_sec as u64, now.tv_nsec as u32);
        now.checked_add(t).map(|d| rustix::time::Timespec {
            tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
            tv_nsec: d.subsec_nanos() as _,
        })
    });
    match futex::waitv(
        &list[..words.len()],
        WaitvFlags::empty(),
        deadline.as_ref(),
        rustix::time::ClockId::Monotonic,
    ) {
        Err(rustix::io::Errno::NOSYS | rustix::io::Errno::PERM) => {
            // ORDERING: Relaxed: as above.
            UNSUPPORTED.store(true, Ordering::Relaxed);
            Waitv::Unsupported
        }
        // Woken (the index of a word), EAGAIN (a value differed), ETIMEDOUT, EINTR.
        _ => Waitv::Returned,
    }
}

#[cfg_attr(not(feature = "async"), allow(dead_code))]
/// Wakes every thread of this process sleeping on the private futex `word` (a process-local
/// word in a [`waitv`] list), after changing its value so a sleep about to start returns.
pub(crate) fn wake_private(word: &AtomicU32) {
    // ORDERING: SeqCst: pairs with the sleeper's load of the value it passes to futex_waitv.
    word.fetch_add(1, Ordering::SeqCst);
    let _ = futex::wake(word, futex::Flags::PRIVATE, i32::MAX as u32);
}

/// Which side of a bus sleeps: readers wait for commits, producers for space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(feature = "async"), allow(dead_code))]
enum Side {
    Readers,
    Producers,
}

/// Where one participant sleeps: its bus's waiting count and futex word, and its own slot's
/// sleeping flag. Holds the mapping, so the words stay valid as long as the spot does (a
/// waiter thread may hold it after the participant's own handle has moved on).
#[derive(Clone)]
pub(crate) struct Spot {
    shared: std::sync::Arc<crate::Shared>,
    side: Side,
    slot: u64,
}

impl std::fmt::Debug for Spot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spot")
            .field("bus", &self.shared.path)
            .field("side", &self.side)
            .field("slot", &self.slot)
            .finish()
    }
}

#[cfg_attr(not(feature = "async"), allow(dead_code))]
impl Spot {
    /// A subscriber's: the readers' count and `notify`.
    pub(crate) fn readers(shared: std::sync::Arc<crate::Shared>, slot: u64) -> Spot {
        Spot {
            shared,
            side: Side::Readers,
            slot,
        }
    }

    /// A publisher's: the producers' count and `space`.
    pub(crate) fn producers(shared: std::sync::Arc<crate::Shared>, slot: u64) -> Spot {
        Spot {
            shared,
            side: Side::Producers,
            slot,
        }
    }

    pub(crate) fn waiting(&self) -> &AtomicU32 {
        match self.side {
            Side::Readers => self.shared.seg.readers_waiting(),
            Side::Producers => self.shared.seg.producers_waiting(),
        }
    }

    pub(crate) fn word(&self) -> &AtomicU32 {
        match self.side {
            Side::Readers => self.shared.seg.notify(),
            Side::Producers => self.shared.seg.space(),
        }
    }

    pub(crate) fn mine(&self) -> &AtomicU32 {
        self.shared.seg.slot(self.slot).sleeping()
    }

    /// Whether the writers this side waits for may commit without a full barrier (readers of
    /// a one-producer bus; subscribers always publish positions with a SeqCst store).
    pub(crate) fn asymmetric(&self) -> bool {
        self.side == Side::Readers && self.shared.params.exclusive
    }

    /// Which waiter thread serves this word: one word of one mapping.
    pub(crate) fn key(&self) -> (usize, bool) {
        (
            std::sync::Arc::as_ptr(&self.shared) as usize,
            self.side == Side::Readers,
        )
    }

    /// [`announce`] for this spot.
    pub(crate) fn announce(&self) -> (u32, bool) {
        announce(self.waiting(), self.mine(), self.word(), self.asymmetric())
    }

    /// [`retract`] for this spot.
    pub(crate) fn retract(&self) {
        retract(self.waiting(), self.mine())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn exclusive_producers_use_the_asymmetric_barrier_where_the_kernel_has_it() {
        assert_eq!(ReaderWake::for_producer(false), ReaderWake::AfterSeqCst);
        let exclusive = ReaderWake::for_producer(true);
        // Linux 4.16 and later have MEMBARRIER_CMD_GLOBAL_EXPEDITED; readers and producers
        // must agree on whether it is there.
        assert_eq!(
            exclusive == ReaderWake::Asymmetric,
            global_barrier(),
            "{exclusive:?}"
        );
    }

    /// A reader sleeping with a slice far longer than the test's watchdog, woken by commits
    /// made with `wake` right around its announcement: a wake it missed would leave it
    /// asleep past the watchdog.
    fn sleeper_is_always_woken(wake: ReaderWake, asymmetric: bool) {
        struct Shared {
            waiting: AtomicU32,
            mine: AtomicU32,
            word: AtomicU32,
            ready: AtomicBool,
        }
        for round in 0..300u32 {
            let s = Arc::new(Shared {
                waiting: AtomicU32::new(0),
                mine: AtomicU32::new(0),
                word: AtomicU32::new(0),
                ready: AtomicBool::new(false),
            });
            let s2 = s.clone();
            let (done_tx, done_rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                while !s2.ready.load(Ordering::Acquire) {
                    sleep_unless(
                        &s2.waiting,
                        &s2.mine,
                        &s2.word,
                        Duration::from_secs(60),
                        asymmetric,
                        || s2.ready.load(Ordering::SeqCst),
                    );
                }
                let _ = done_tx.send(());
            });
            // Commit at a different moment each round: maybe before the reader announces
            // itself, just after (the window before its re-check and its futex call), or once
            // it is surely asleep.
            if round % 3 != 0 {
                while s.waiting.load(Ordering::SeqCst) == 0 {
                    std::hint::spin_loop();
                }
            }
            for _ in 0..(round % 7) * 50 {
                std::hint::spin_loop();
            }
            if round % 3 == 2 {
                std::thread::sleep(Duration::from_millis(1));
            }
            let commit = if wake == ReaderWake::AfterSeqCst {
                Ordering::SeqCst
            } else {
                Ordering::Release
            };
            s.ready.store(true, commit);
            wake.wake(&s.waiting, &s.word);
            // Watchdog: the sleeper's slice is 60 s; a lost wake-up fails here.
            assert!(
                done_rx.recv_timeout(Duration::from_secs(10)).is_ok(),
                "{wake:?}: the reader slept through the commit in round {round}"
            );
        }
    }

    #[test]
    fn a_sleeping_reader_is_always_woken_by_a_shared_bus_commit() {
        sleeper_is_always_woken(ReaderWake::AfterSeqCst, false);
    }

    #[test]
    fn a_sleeping_reader_is_always_woken_by_an_exclusive_bus_commit() {
        sleeper_is_always_woken(ReaderWake::for_producer(true), true);
    }
}
