//! The waiter threads of the async handles: a few threads per process, not one per handle.
//!
//! An async subscriber (or publisher) with nothing to do announces itself as a sleeper on its
//! bus exactly as a blocking one does (the `wait` module's protocol: count, slot flag, the
//! futex value read before the re-check), then, instead of sleeping, *parks* here: the value,
//! its `Waker`, and how long it may wait before it must look again. A waiter thread sleeps in
//! `futex_waitv` (Linux 5.16+) on the futex words of every parked handle's bus at once, plus
//! one private word of its own that a new parking bumps. When a word changes (a producer's
//! wake bumps it) or a deadline passes, the thread retracts the announcements it holds for
//! that word and wakes their wakers; the handles' next polls look again.
//!
//! No lost wake-up: a commit after a handle's re-check finds the count raised and bumps the
//! word, so the value the thread waits with is stale and `futex_waitv` returns at once (or
//! the thread is asleep on it and is woken). It is the blocking path's argument with the
//! sleep moved to another thread; the value travels with the parking.
//!
//! One thread serves up to [`WORDS_PER_THREAD`] words (a bus's readers' word and its
//! producers' word count separately): a process with async handles on up to 127 bus sides
//! has one waiter thread, and one more for each further 127. Without `futex_waitv` (older
//! kernels, a seccomp filter that refuses it) a thread looks at its words every millisecond
//! instead of sleeping on them: correct, a millisecond late at worst.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::Waker;
use std::time::{Duration, Instant};

use crate::sync::{AtomicU32, AtomicU64, Ordering};
use crate::wait::{self, Spot, Waitv, WAITV_MAX};

/// Words one waiter thread watches, besides its own.
pub(crate) const WORDS_PER_THREAD: usize = WAITV_MAX - 1;

/// Longest sleep without `futex_waitv`.
const POLL_SLICE: Duration = Duration::from_millis(1);

/// One handle's parking: its announced sleep, waiting for the word to leave `expected`.
struct Parked {
    spot: Spot,
    expected: u32,
    waker: Waker,
    deadline: Instant,
}

#[derive(Default)]
struct State {
    parked: HashMap<u64, Parked>,
    /// The thread is in (or about to enter) its sleep: a new parking must wake it.
    sleeping: bool,
}

/// One waiter thread and what it watches.
pub(crate) struct Reactor {
    state: Mutex<State>,
    /// Bumped to make the thread look at its parkings again (a private futex).
    control: AtomicU32,
}

impl Reactor {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave `State` inconsistent (every update is
        // one map operation): go on with it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Parks handle `id`: its announcement on `spot` read `expected`; wake `waker` when the
    /// word changes or at `deadline`, after retracting the announcement. Replaces an earlier
    /// parking of the same id (whose announcement the caller has retracted).
    pub(crate) fn park(&self, id: u64, spot: Spot, expected: u32, waker: Waker, deadline: Instant) {
        let mut st = self.lock();
        st.parked.insert(
            id,
            Parked {
                spot,
                expected,
                waker,
                deadline,
            },
        );
        if st.sleeping {
            wait::wake_private(&self.control);
        }
    }

    /// Whether `id` is still parked; if so, updates its waker (a poll by another task, or the
    /// same task with a new waker).
    pub(crate) fn still_parked(&self, id: u64, waker: &Waker) -> bool {
        let mut st = self.lock();
        match st.parked.get_mut(&id) {
            Some(p) => {
                if !p.waker.will_wake(waker) {
                    p.waker = waker.clone();
                }
                true
            }
            None => false,
        }
    }

    /// Takes `id`'s parking back. Returns whether it was still there: then the caller owns
    /// its announcement and must retract it; otherwise this thread already did.
    pub(crate) fn unpark(&self, id: u64) -> bool {
        self.lock().parked.remove(&id).is_some()
    }

    fn run(&self) {
        let mut fire: Vec<Waker> = Vec::new();
        let mut due: Vec<u64> = Vec::new();
        let mut words: Vec<(Spot, u32)> = Vec::new();
        loop {
            let mut st = self.lock();
            // ORDERING: SeqCst: read before the look, so a parking after it (which bumps the
            // word, seeing `sleeping`) makes the sleep below return at once.
            let control = self.control.load(Ordering::SeqCst);
            let now = Instant::now();
            let mut next = None::<Instant>;
            due.clear();
            words.clear();
            for (&id, p) in &st.parked {
                // ORDERING: SeqCst: the sleeper's re-read of the word (wait module).
                if p.spot.word().load(Ordering::SeqCst) != p.expected || p.deadline <= now {
                    due.push(id);
                    continue;
                }
                next = Some(next.map_or(p.deadline, |n| n.min(p.deadline)));
                let dup = words
                    .iter()
                    .any(|(s, v)| std::ptr::eq(s.word(), p.spot.word()) && *v == p.expected);
                if !dup {
                    words.push((p.spot.clone(), p.expected));
                }
            }
            for id in &due {
                if let Some(p) = st.parked.remove(id) {
                    p.spot.retract();
                    fire.push(p.waker);
                }
            }
            st.sleeping = true;
            drop(st);
            // Wake outside the lock: a waker may run its task inline and park again. A waker
            // is an executor's code: one that panics must not end this thread, or every handle
            // parked here (and every later one seated here) would never be woken again.
            for w in fire.drain(..) {
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| w.wake()));
            }
            let timeout = next.map(|n| n.saturating_duration_since(Instant::now()));
            let mut list: Vec<(&AtomicU32, u32, bool)> = Vec::with_capacity(words.len() + 1);
            list.push((&self.control, control, true));
            list.extend(words.iter().map(|(s, v)| (s.word(), *v, false)));
            if list.len() > WAITV_MAX || wait::waitv(&list, timeout) == Waitv::Unsupported {
                let slice = timeout.map_or(POLL_SLICE, |t| t.min(POLL_SLICE));
                wait::futex_wait_private(&self.control, control, slice);
            }
            drop(list);
            self.lock().sleeping = false;
        }
    }
}

/// A handle's place with a waiter thread: the thread serving its bus side. Counts the side
/// for as long as the seat lives.
pub(crate) struct Seat {
    pub(crate) reactor: Arc<Reactor>,
    key: (usize, bool),
    /// This handle's parking id.
    pub(crate) id: u64,
}

struct Shard {
    reactor: Arc<Reactor>,
    /// Bus sides served, with how many seats each.
    sides: HashMap<(usize, bool), usize>,
}

/// The waiter threads of this process, and which process that is: a child made by `fork`
/// inherits the list but not the threads, so a handle it makes must not be seated with one
/// of them (it would never be woken).
struct Shards {
    pid: u32,
    list: Vec<Shard>,
}

/// The waiter threads, started afresh in a process that is not the one that started them.
fn shards() -> MutexGuard<'static, Shards> {
    static SHARDS: OnceLock<Mutex<Shards>> = OnceLock::new();
    let mut shards = SHARDS
        .get_or_init(|| {
            Mutex::new(Shards {
                pid: std::process::id(),
                list: Vec::new(),
            })
        })
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let pid = std::process::id();
    if shards.pid != pid {
        // Forgotten, not dropped: their states hold the parent's wakers, which are not this
        // process's to run or free. The parent's handles the child still holds keep their
        // (dead) reactors through their own `Arc`s; handles do not cross a `fork`.
        std::mem::forget(std::mem::take(&mut shards.list));
        shards.pid = pid;
    }
    shards
}

impl Seat {
    /// A seat for a handle sleeping at `spot`: with the thread that already serves its bus
    /// side, or one with room, or a new thread.
    pub(crate) fn new(spot: &Spot) -> std::io::Result<Seat> {
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        // ORDERING: Relaxed: a unique number, nothing else.
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let key = spot.key();
        let mut guard = shards();
        let shards = &mut guard.list;
        let found = shards
            .iter()
            .position(|s| s.sides.contains_key(&key))
            .or_else(|| shards.iter().position(|s| s.sides.len() < WORDS_PER_THREAD));
        let index = match found {
            Some(i) => i,
            None => {
                let reactor = Arc::new(Reactor {
                    state: Mutex::new(State::default()),
                    control: AtomicU32::new(0),
                });
                let r = reactor.clone();
                std::thread::Builder::new()
                    .name(format!("shmbus-waiter-{}", shards.len()))
                    .spawn(move || r.run())?;
                shards.push(Shard {
                    reactor,
                    sides: HashMap::new(),
                });
                shards.len() - 1
            }
        };
        let shard = &mut shards[index];
        *shard.sides.entry(key).or_insert(0) += 1;
        Ok(Seat {
            reactor: shard.reactor.clone(),
            key,
            id,
        })
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        let mut shards = shards();
        for s in shards.list.iter_mut() {
            if Arc::ptr_eq(&s.reactor, &self.reactor) {
                if let Some(n) = s.sides.get_mut(&self.key) {
                    *n -= 1;
                    if *n == 0 {
                        s.sides.remove(&self.key);
                    }
                }
            }
        }
    }
}
