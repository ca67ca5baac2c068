//! `WaitSet`: one thread waits on subscribers of any number of buses at once.
//!
//! A wait announces every member as a sleeper on its bus (the `wait` module's protocol, one
//! membarrier for all of them), re-checks each, and sleeps in one `futex_waitv` call on the
//! distinct futex words of their buses: the caller's own thread sleeps, no thread is started.
//! `futex_waitv` takes at most 128 words; a set spanning more buses (or a kernel without it,
//! before Linux 5.16) sleeps in slices of a millisecond and looks again, so a message is
//! noticed at most a millisecond late.

use std::sync::Arc;
use std::time::Duration;

use crate::sync::{AtomicU32, Ordering};
use crate::wait::{self, Deadline, Waitv, UNFENCED_SLICE, WAITV_MAX};
use crate::Subscriber;

/// Names a subscriber in a [`WaitSet`]. A key of a removed subscriber never names another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WaitKey {
    index: u32,
    generation: u32,
}

struct Entry {
    sub: Subscriber,
    generation: u32,
}

/// Waits on many subscribers (of one bus or of many) from one thread, until at least one has
/// something to receive.
///
/// ```
/// # use bus_core::{Bus, BusOptions, Start, WaitSet};
/// # use std::time::Duration;
/// # let dir = tempfile::tempdir().unwrap();
/// let quotes = Bus::create(dir.path().join("quotes.bus"), &BusOptions::new().capacity(1 << 16))?;
/// let trades = Bus::create(dir.path().join("trades.bus"), &BusOptions::new().capacity(1 << 16))?;
/// let mut set = WaitSet::new();
/// let q = set.add(quotes.subscribe(Start::Latest)?);
/// let t = set.add(trades.subscribe(Start::Latest)?);
/// trades.publisher()?.send(b"AAPL 100 @ 189.5")?;
///
/// let mut buf = Vec::new();
/// let ready = set.wait(Some(Duration::from_secs(1)));
/// assert_eq!(ready, vec![t]);
/// for key in ready {
///     let sub = set.get_mut(key).unwrap();
///     while let Ok(msg) = sub.try_recv(&mut buf) {
///         println!("#{} {:?}", msg.seq, &buf[..]);
///     }
/// }
/// # let _ = q;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// Membership changes take `&mut self`, so they happen between waits (or in the callback of
/// [`WaitSet::wait_with`], through the subscriber it is given): a subscriber added is watched
/// from the next wait on; one removed is never reported again, and its key never names
/// another. Another thread can end a wait early with an [`Interrupter`].
///
/// "Ready" means a receive would find a message, or an error to report (a loss in lossy
/// mode, a corrupt record); it can be spurious, so receive with `try_recv` until it says
/// `Empty`. A member that is not drained stays ready, and the next wait returns at once.
pub struct WaitSet {
    entries: Vec<Option<Entry>>,
    /// Generations of free indexes (an index's next generation), for reuse.
    free: Vec<u32>,
    generations: Vec<u32>,
    interrupt: Arc<AtomicU32>,
    /// The interrupter's count as the last wait that ended on it saw it: an interrupt that
    /// comes between two waits ends the next one instead of being lost.
    seen: u32,
    values: Vec<u32>,
}

impl Default for WaitSet {
    fn default() -> Self {
        WaitSet::new()
    }
}

impl std::fmt::Debug for WaitSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WaitSet").field("len", &self.len()).finish()
    }
}

/// Ends a [`WaitSet::wait`] early from another thread (or the next one, if none is under
/// way: an interrupt is never lost between two waits). Made by [`WaitSet::interrupter`];
/// cheap to clone.
#[derive(Debug, Clone)]
pub struct Interrupter(Arc<AtomicU32>);

impl Interrupter {
    /// Makes the wait under way (or the next one) return, with what is ready then.
    pub fn interrupt(&self) {
        // ORDERING: SeqCst: pairs with the waiter's load of the value it sleeps on.
        self.0.fetch_add(1, Ordering::SeqCst);
        let _ = rustix::thread::futex::wake(&self.0, rustix::thread::futex::Flags::PRIVATE, 1);
    }
}

impl WaitSet {
    /// An empty set.
    pub fn new() -> WaitSet {
        WaitSet {
            entries: Vec::new(),
            free: Vec::new(),
            generations: Vec::new(),
            interrupt: Arc::new(AtomicU32::new(0)),
            seen: 0,
            values: Vec::new(),
        }
    }

    /// Adds a subscriber; its key names it from now on.
    pub fn add(&mut self, sub: Subscriber) -> WaitKey {
        let index = match self.free.pop() {
            Some(i) => i as usize,
            None => {
                self.entries.push(None);
                self.generations.push(0);
                self.entries.len() - 1
            }
        };
        let generation = self.generations[index];
        self.entries[index] = Some(Entry { sub, generation });
        WaitKey {
            index: index as u32,
            generation,
        }
    }

    /// Removes a subscriber and gives it back (`None` if the key was removed already).
    pub fn remove(&mut self, key: WaitKey) -> Option<Subscriber> {
        self.get_mut(key)?;
        let index = key.index as usize;
        let entry = self.entries[index].take()?;
        self.generations[index] = self.generations[index].wrapping_add(1);
        self.free.push(key.index);
        Some(entry.sub)
    }

    /// The subscriber of `key`.
    pub fn get_mut(&mut self, key: WaitKey) -> Option<&mut Subscriber> {
        match self.entries.get_mut(key.index as usize)? {
            Some(e) if e.generation == key.generation => Some(&mut e.sub),
            _ => None,
        }
    }

    /// How many subscribers the set holds.
    pub fn len(&self) -> usize {
        self.entries.iter().filter(|e| e.is_some()).count()
    }

    /// Whether the set holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The keys of every member.
    pub fn keys(&self) -> impl Iterator<Item = WaitKey> + '_ {
        self.entries.iter().enumerate().filter_map(|(i, e)| {
            e.as_ref().map(|e| WaitKey {
                index: i as u32,
                generation: e.generation,
            })
        })
    }

    /// A handle that ends a wait early from another thread.
    pub fn interrupter(&self) -> Interrupter {
        Interrupter(self.interrupt.clone())
    }

    /// Waits until at least one member is ready, at most `timeout` (`None`: as long as it
    /// takes), and returns the keys of the ready ones, in key order. Empty when the time ran
    /// out, the set is empty, or an [`Interrupter`] ended the wait with nothing ready.
    pub fn wait(&mut self, timeout: Option<Duration>) -> Vec<WaitKey> {
        let mut ready = Vec::new();
        self.wait_with(timeout, |key, _| ready.push(key));
        ready
    }

    /// [`WaitSet::wait`], calling `f` with each ready member instead of collecting keys
    /// (allocates nothing). Returns how many were ready.
    pub fn wait_with(
        &mut self,
        timeout: Option<Duration>,
        mut f: impl FnMut(WaitKey, &mut Subscriber),
    ) -> usize {
        let deadline = timeout.map_or(Deadline::never(), Deadline::after);
        // Not the count now but the one the last interrupted wait saw: an interrupt made
        // while no wait was under way ends this one (the stop pattern "set a flag, then
        // interrupt" must not depend on the waiter being asleep already). The futex sleep
        // below waits on this value, so a later interrupt ends the sleep at once too.
        let seen = self.seen;
        loop {
            let n = self.collect_ready(&mut f);
            if n > 0 {
                // Interrupts not taken: the next wait returns at once for them.
                return n;
            }
            // ORDERING: SeqCst: pairs with the interrupter's increment.
            let now = self.interrupt.load(Ordering::SeqCst);
            if now != seen {
                self.seen = now;
                return 0;
            }
            if self.entries.iter().all(Option::is_none) || deadline.passed() {
                return 0;
            }
            self.sleep(deadline, seen);
        }
    }

    /// Probes every member, calling `f` with the ready ones.
    fn collect_ready(&mut self, f: &mut impl FnMut(WaitKey, &mut Subscriber)) -> usize {
        let mut n = 0;
        for (i, e) in self.entries.iter_mut().enumerate() {
            if let Some(e) = e {
                if e.sub.probe() {
                    n += 1;
                    let key = WaitKey {
                        index: i as u32,
                        generation: e.generation,
                    };
                    f(key, &mut e.sub);
                }
            }
        }
        n
    }

    /// Announces every member, re-checks, and sleeps on their buses' words until one is
    /// woken, a slice ends (members must look for stuck records), or the deadline.
    fn sleep(&mut self, deadline: Deadline, interrupted: u32) {
        let spots: Vec<_> = self
            .entries
            .iter()
            .flatten()
            .map(|e| e.sub.spot())
            .collect();
        let slice = self
            .entries
            .iter()
            .flatten()
            .map(|e| e.sub.sleep_slice())
            .min()
            .unwrap_or(Duration::from_millis(100));
        let fenced = wait::announce_all(
            spots
                .iter()
                .map(|s| (s.waiting(), s.mine(), s.word(), s.asymmetric())),
            &mut self.values,
        );
        let ready = self.entries.iter().flatten().any(|e| e.sub.is_ready());
        if !ready {
            let mut slice = deadline.slice(slice);
            if !fenced {
                slice = slice.min(UNFENCED_SLICE);
            }
            // Distinct words (members of one bus share theirs), with the interrupt word.
            let mut words: Vec<(&AtomicU32, u32, bool)> = Vec::with_capacity(spots.len() + 1);
            words.push((&*self.interrupt, interrupted, true));
            for (s, &v) in spots.iter().zip(&self.values) {
                let w = s.word();
                if !words
                    .iter()
                    .any(|&(o, ov, _)| std::ptr::eq(o, w) && ov == v)
                {
                    words.push((w, v, false));
                }
            }
            if words.len() > WAITV_MAX || wait::waitv(&words, Some(slice)) == Waitv::Unsupported {
                // Too many buses for one call, or no futex_waitv: look again soon.
                wait::futex_wait_private(
                    &self.interrupt,
                    interrupted,
                    slice.min(Duration::from_millis(1)),
                );
            }
        }
        for s in &spots {
            s.retract();
        }
    }
}
