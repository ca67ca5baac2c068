//! The publishing handle.

use std::cell::Cell;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::fault;
use crate::layout::Mode;
use crate::registry::{self, JoinError, Slot, SlotKind, Subscribers, PROBE_LOCK_TIMEOUT};
use crate::repair;
use crate::ring::{self, Claim, ClaimError, ProducerCursor, Region};
use crate::sync::Ordering;
use crate::wait::{self, Deadline, ReaderWake, Spinner, Woke};
use crate::Shared;

/// Where a committed message went: its bus-wide sequence number and its position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sent {
    /// Bus-wide sequence number; all subscribers see messages in this order.
    pub seq: u64,
    /// Absolute position of the record.
    pub position: u64,
}

// ---- errors, one enum per operation -----------------------------------------------------
//
// Each public method returns exactly what can go wrong in it (crossbeam-channel's SendError /
// TrySendError / SendTimeoutError; iceoryx2's per-port errors). The variants mean the same in
// every enum; `From` composes them (a `LoanError` is a `SendError`, a `SendError` a
// `TrySendError`, ...). Bindings map them one to one.

/// [`Publisher::loan`] could not lend bytes. Also the claim part of every other error here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LoanError {
    /// The message is longer than the bus's max message (set at creation). Split it, or
    /// create the bus with a larger `max_message`.
    #[error("message of {len} bytes exceeds the bus maximum of {max} bytes")]
    MessageTooLarge {
        /// Length given.
        len: usize,
        /// The bus's max message.
        max: u32,
    },
    /// The ring's tail or head in the shared file is impossible (a position past 2^62 or a
    /// sequence past 2^60): another process wrote garbage into the bus header. Re-create the
    /// bus.
    #[error(
        "the ring's position {position} in the bus header is corrupt (written by another process)"
    )]
    RingCorrupt {
        /// The position found (of the tail, or of the head).
        position: u64,
    },
    /// Exclusive bus (one producer slot): another producer moved the tail, which only happens
    /// if this process lost its liveness lock (it closed descriptors it did not own, or a
    /// forked child published through an inherited handle) and a second publisher joined.
    /// Records of both may be overwritten; stop publishing through this handle.
    #[error(
        "another producer moved the tail of this one-producer bus (to {found}, expected \
         {expected}): this process lost its producer slot"
    )]
    ProducerConflict {
        /// Where this publisher's last claim left the tail.
        expected: u64,
        /// Where the tail was found.
        found: u64,
    },
    /// This process is a child forked (without `exec`) since the handle was made: the
    /// handle's producer slot is the parent's, and two processes publishing through one
    /// slot would overwrite each other's records. Nothing was sent. Open the bus again in
    /// this process and make a new publisher.
    #[error("this handle belongs to the process that made it, not to this forked child: open the bus again here")]
    Forked,
}

/// [`Publisher::try_loan`] could not lend bytes now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TryLoanError {
    /// No room now. In reliable mode the slowest live subscriber is a ring behind (a dead one
    /// is evicted within about 10 ms, on this path too); in lossy mode a producer a whole ring
    /// behind has not committed yet. Try again later, or wait with `loan` / `loan_timeout`.
    #[error("the ring is full")]
    Full,
    /// As [`LoanError::MessageTooLarge`].
    #[error("message of {len} bytes exceeds the bus maximum of {max} bytes")]
    MessageTooLarge {
        /// Length given.
        len: usize,
        /// The bus's max message.
        max: u32,
    },
    /// As [`LoanError::RingCorrupt`].
    #[error(
        "the ring's position {position} in the bus header is corrupt (written by another process)"
    )]
    RingCorrupt {
        /// The position found (of the tail, or of the head).
        position: u64,
    },
    /// As [`LoanError::ProducerConflict`].
    #[error("another producer moved the tail of this one-producer bus (to {found}, expected {expected})")]
    ProducerConflict {
        /// Where this publisher's last claim left the tail.
        expected: u64,
        /// Where the tail was found.
        found: u64,
    },
    /// As [`LoanError::Forked`].
    #[error("this handle belongs to the process that made it, not to this forked child: open the bus again here")]
    Forked,
}

/// [`Publisher::loan_timeout`] could not lend bytes in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LoanTimeoutError {
    /// Still no room when the time ran out (see [`TryLoanError::Full`] for why).
    #[error("timed out waiting for space in the ring")]
    Timeout,
    /// As [`LoanError::MessageTooLarge`].
    #[error("message of {len} bytes exceeds the bus maximum of {max} bytes")]
    MessageTooLarge {
        /// Length given.
        len: usize,
        /// The bus's max message.
        max: u32,
    },
    /// As [`LoanError::RingCorrupt`].
    #[error(
        "the ring's position {position} in the bus header is corrupt (written by another process)"
    )]
    RingCorrupt {
        /// The position found (of the tail, or of the head).
        position: u64,
    },
    /// As [`LoanError::ProducerConflict`].
    #[error("another producer moved the tail of this one-producer bus (to {found}, expected {expected})")]
    ProducerConflict {
        /// Where this publisher's last claim left the tail.
        expected: u64,
        /// Where the tail was found.
        found: u64,
    },
    /// As [`LoanError::Forked`].
    #[error("this handle belongs to the process that made it, not to this forked child: open the bus again here")]
    Forked,
}

/// [`Loan::commit`] could not publish the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    /// A repairer judged this publisher dead and turned the record into padding; the message
    /// was not delivered. Only possible if this process lost its liveness lock. (On an
    /// exclusive bus the commit is a plain store and cannot learn of a repair: there a lost
    /// liveness lock shows as [`LoanError::ProducerConflict`] instead, once another producer
    /// has joined.)
    #[error("the record was unblocked by another process (this publisher was judged dead)")]
    Unblocked,
    /// This process is a child forked since the loan was taken: the claim is the parent's
    /// (which may still commit it). Nothing was committed. (The loan's bytes are the ring's
    /// own, shared with the parent: what a child writes into them, the parent publishes.)
    #[error("this loan belongs to the process that took it, not to this forked child")]
    Forked,
}

/// [`Publisher::send`] could not publish the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// As [`LoanError::MessageTooLarge`].
    #[error("message of {len} bytes exceeds the bus maximum of {max} bytes")]
    MessageTooLarge {
        /// Length given.
        len: usize,
        /// The bus's max message.
        max: u32,
    },
    /// As [`CommitError::Unblocked`].
    #[error("the record was unblocked by another process (this publisher was judged dead)")]
    Unblocked,
    /// As [`LoanError::RingCorrupt`].
    #[error(
        "the ring's position {position} in the bus header is corrupt (written by another process)"
    )]
    RingCorrupt {
        /// The position found (of the tail, or of the head).
        position: u64,
    },
    /// As [`LoanError::ProducerConflict`].
    #[error("another producer moved the tail of this one-producer bus (to {found}, expected {expected})")]
    ProducerConflict {
        /// Where this publisher's last claim left the tail.
        expected: u64,
        /// Where the tail was found.
        found: u64,
    },
    /// As [`LoanError::Forked`].
    #[error("this handle belongs to the process that made it, not to this forked child: open the bus again here")]
    Forked,
}

/// [`Publisher::try_send`] could not publish the message now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TrySendError {
    /// As [`TryLoanError::Full`].
    #[error("the ring is full")]
    Full,
    /// As [`LoanError::MessageTooLarge`].
    #[error("message of {len} bytes exceeds the bus maximum of {max} bytes")]
    MessageTooLarge {
        /// Length given.
        len: usize,
        /// The bus's max message.
        max: u32,
    },
    /// As [`CommitError::Unblocked`].
    #[error("the record was unblocked by another process (this publisher was judged dead)")]
    Unblocked,
    /// As [`LoanError::RingCorrupt`].
    #[error(
        "the ring's position {position} in the bus header is corrupt (written by another process)"
    )]
    RingCorrupt {
        /// The position found (of the tail, or of the head).
        position: u64,
    },
    /// As [`LoanError::ProducerConflict`].
    #[error("another producer moved the tail of this one-producer bus (to {found}, expected {expected})")]
    ProducerConflict {
        /// Where this publisher's last claim left the tail.
        expected: u64,
        /// Where the tail was found.
        found: u64,
    },
    /// As [`LoanError::Forked`].
    #[error("this handle belongs to the process that made it, not to this forked child: open the bus again here")]
    Forked,
}

/// [`Publisher::send_timeout`] could not publish the message in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendTimeoutError {
    /// As [`LoanTimeoutError::Timeout`].
    #[error("timed out waiting for space in the ring")]
    Timeout,
    /// As [`LoanError::MessageTooLarge`].
    #[error("message of {len} bytes exceeds the bus maximum of {max} bytes")]
    MessageTooLarge {
        /// Length given.
        len: usize,
        /// The bus's max message.
        max: u32,
    },
    /// As [`CommitError::Unblocked`].
    #[error("the record was unblocked by another process (this publisher was judged dead)")]
    Unblocked,
    /// As [`LoanError::RingCorrupt`].
    #[error(
        "the ring's position {position} in the bus header is corrupt (written by another process)"
    )]
    RingCorrupt {
        /// The position found (of the tail, or of the head).
        position: u64,
    },
    /// As [`LoanError::ProducerConflict`].
    #[error("another producer moved the tail of this one-producer bus (to {found}, expected {expected})")]
    ProducerConflict {
        /// Where this publisher's last claim left the tail.
        expected: u64,
        /// Where the tail was found.
        found: u64,
    },
    /// As [`LoanError::Forked`].
    #[error("this handle belongs to the process that made it, not to this forked child: open the bus again here")]
    Forked,
}

/// `From` between the error enums: each variant becomes the variant of the same name. Every
/// source variant must exist in the target (the compiler checks).
macro_rules! widen {
    ($from:ident => $to:ident : $($vars:tt)*) => {
        widen!(@one $from $to $($vars)*);
    };
    ($from:ident => $to:ident, $($more:ident),+ : $($vars:tt)*) => {
        widen!(@one $from $to $($vars)*);
        widen!($from => $($more),+ : $($vars)*);
    };
    (@one $from:ident $to:ident $($unit:ident)* ; $($field:ident { $($f:ident),* })*) => {
        impl From<$from> for $to {
            fn from(e: $from) -> $to {
                match e {
                    $($from::$unit => $to::$unit,)*
                    $($from::$field { $($f),* } => $to::$field { $($f),* },)*
                }
            }
        }
    };
}

widen!(LoanError => SendError, TrySendError, SendTimeoutError, TryLoanError, LoanTimeoutError :
    Forked ; MessageTooLarge { len, max } RingCorrupt { position } ProducerConflict { expected, found });
widen!(CommitError => SendError, TrySendError, SendTimeoutError : Unblocked Forked ;);
widen!(SendError => TrySendError, SendTimeoutError : Unblocked Forked ;
    MessageTooLarge { len, max } RingCorrupt { position } ProducerConflict { expected, found });
widen!(TryLoanError => TrySendError : Full Forked ;
    MessageTooLarge { len, max } RingCorrupt { position } ProducerConflict { expected, found });
widen!(LoanTimeoutError => SendTimeoutError : Timeout Forked ;
    MessageTooLarge { len, max } RingCorrupt { position } ProducerConflict { expected, found });

/// What a wait for space compares against: the slowest subscriber's position and the head.
/// Read *before* an attempt to claim, so that progress made between the failed attempt and
/// the sleep shows as a change and the sleep is skipped (read after the attempt, it could
/// miss exactly that).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SpaceMark {
    min: Option<u64>,
    head: (u64, u64),
}

impl SpaceMark {
    fn read(seg: &crate::mapping::Segment) -> SpaceMark {
        SpaceMark {
            min: ring::Subscribers::min_position(&Subscribers(seg)),
            // ORDERING: SeqCst: the Dekker pattern with subscribers publishing positions.
            head: seg.head().load(Ordering::SeqCst),
        }
    }
}

#[cfg(feature = "async")]
impl TrySendError {
    /// The error a waiting send reports, or `None` for `Full` (wait and try again).
    pub(crate) fn into_send(self) -> Option<SendError> {
        Some(match self {
            TrySendError::Full => return None,
            TrySendError::MessageTooLarge { len, max } => SendError::MessageTooLarge { len, max },
            TrySendError::Unblocked => SendError::Unblocked,
            TrySendError::Forked => SendError::Forked,
            TrySendError::RingCorrupt { position } => SendError::RingCorrupt { position },
            TrySendError::ProducerConflict { expected, found } => {
                SendError::ProducerConflict { expected, found }
            }
        })
    }
}

impl SendTimeoutError {
    /// The error of a send without a deadline, or `None` for `Timeout`.
    pub(crate) fn into_send(self) -> Option<SendError> {
        Some(match self {
            SendTimeoutError::Timeout => return None,
            SendTimeoutError::MessageTooLarge { len, max } => {
                SendError::MessageTooLarge { len, max }
            }
            SendTimeoutError::Unblocked => SendError::Unblocked,
            SendTimeoutError::Forked => SendError::Forked,
            SendTimeoutError::RingCorrupt { position } => SendError::RingCorrupt { position },
            SendTimeoutError::ProducerConflict { expected, found } => {
                SendError::ProducerConflict { expected, found }
            }
        })
    }
}

/// Why a claim failed, before a public method names it in its own error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClaimFail {
    /// No room, and the caller does not wait (`deadline: None`).
    Full,
    /// No room until the deadline.
    Timeout,
    /// A claim problem every method shares.
    Loan(LoanError),
}

impl From<LoanError> for ClaimFail {
    fn from(e: LoanError) -> ClaimFail {
        ClaimFail::Loan(e)
    }
}

impl ClaimFail {
    fn try_(self) -> TryLoanError {
        match self {
            ClaimFail::Loan(e) => e.into(),
            ClaimFail::Full | ClaimFail::Timeout => TryLoanError::Full,
        }
    }

    fn timeout(self) -> LoanTimeoutError {
        match self {
            ClaimFail::Loan(e) => e.into(),
            ClaimFail::Full | ClaimFail::Timeout => LoanTimeoutError::Timeout,
        }
    }
}

/// How often a publisher that finds the ring full probes the subscribers' liveness locks,
/// whichever call it makes (`try_send`, `send_timeout` of any length, `send`): a dead
/// subscriber holds a reliable ring full for about this long at most.
const EVICT_INTERVAL: Duration = Duration::from_millis(10);

/// After this many wakes that found nobody asleep although the waiting count said otherwise,
/// a publisher looks for subscribers that died asleep (their count stays up, and every publish
/// would make a wake system call for nobody until an eviction gives it back).
const FRUITLESS_WAKES_BEFORE_SWEEP: u32 = 64;

/// Tracks an uncommitted record that keeps `head` from moving; once it has stayed for the
/// unblock timeout, asks the repairer whether its producer died.
fn watch_stall(
    shared: &Shared,
    stall: &mut Option<(Instant, (u64, u64))>,
    stalled_at: Option<(u64, u64)>,
) {
    let Some(at) = stalled_at else {
        *stall = None;
        return;
    };
    match *stall {
        Some((since, prev)) if prev == at => {
            let timeout = Duration::from_nanos(shared.seg.config.unblock_timeout_ns);
            if since.elapsed() >= timeout {
                repair::unblock(shared, at.0, at.1);
                *stall = Some((Instant::now(), at));
            }
        }
        _ => *stall = Some((Instant::now(), at)),
    }
}

/// Publishes messages on a bus. Made by [`crate::Bus::publisher`]; holds a producer slot
/// until dropped.
///
/// One owner: `Send` but not `Sync` (it caches the claim limit of its last look at the
/// subscribers). Use one publisher per thread; they share the bus lock-free.
pub struct Publisher {
    pub(crate) shared: Arc<Shared>,
    slot: Option<Slot>,
    /// File offset of our slot (kept apart from `slot` for the hot path).
    slot_offset: u64,
    cursor: ProducerCursor,
    sent: u64,
    bytes: u64,
    abandoned: u64,
    /// Where the walk of `head` has been stopped by an uncommitted record, and since when:
    /// after the unblock timeout we ask whether its producer died (see `repair`).
    stall: Option<(Instant, (u64, u64))>,
    /// How a commit is ordered before the look at sleeping readers (wait module).
    wake: ReaderWake,
    /// When this publisher last probed for dead subscribers (rate limit of
    /// [`EVICT_INTERVAL`], kept across calls so that `try_send` loops probe too).
    last_evict: Option<Instant>,
    /// Wakes since the last sweep that found nobody asleep (see
    /// [`FRUITLESS_WAKES_BEFORE_SWEEP`]).
    fruitless_wakes: u32,
    /// The claim of the loan out now, if any. A loan leaked with `mem::forget` is neither
    /// committed nor abandoned; the next claim (or the drop of this publisher) abandons it,
    /// so that it holds no reader and no walk of `head` (on an exclusive bus, head would
    /// otherwise jump past it while readers wait to repair it).
    loaned: Option<Claim>,
    _not_sync: PhantomData<Cell<()>>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("bus", &self.shared.path)
            .field("slot", &self.slot.as_ref().map(|s| s.index))
            .field("sent", &self.sent)
            .finish()
    }
}

impl Publisher {
    pub(crate) fn join(shared: Arc<Shared>) -> Result<Publisher, JoinError> {
        let slot = registry::join(&shared, SlotKind::Producer, |_, _| {})?;
        let wake = ReaderWake::for_producer(shared.params.exclusive);
        Ok(Publisher {
            wake,
            shared,
            slot_offset: slot.offset,
            slot: Some(slot),
            cursor: ProducerCursor::default(),
            sent: 0,
            bytes: 0,
            abandoned: 0,
            stall: None,
            last_evict: None,
            fruitless_wakes: 0,
            loaned: None,
            _not_sync: PhantomData,
        })
    }

    /// The largest message this bus takes.
    pub fn max_message(&self) -> u32 {
        self.shared.params.max_message
    }

    /// Messages this publisher has committed.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    #[inline]
    fn check_len(&self, len: usize) -> Result<u32, LoanError> {
        let max = self.shared.params.max_message;
        if len > max as usize {
            return Err(LoanError::MessageTooLarge { len, max });
        }
        Ok(len as u32)
    }

    /// Claims a record, waiting until `deadline` (`None`: do not wait).
    #[inline(always)]
    fn claim(&mut self, len: u32, deadline: Option<Deadline>) -> Result<Claim, ClaimFail> {
        if self.slot.as_ref().is_some_and(Slot::forked) {
            return Err(LoanError::Forked.into());
        }
        if self.loaned.is_some() {
            self.abandon_leaked_loan();
        }
        let seg = &self.shared.seg;
        let params = &self.shared.params;
        let claiming = seg.prod_slot(self.slot_offset).claiming();
        // The fast path: room in the ring.
        if let Ok(c) = ring::try_claim(
            seg,
            &Subscribers(seg),
            params,
            &mut self.cursor,
            claiming,
            len,
        ) {
            ring::write_claimed(seg, params, &c);
            if self.stall.is_some() {
                self.stall = None;
            }
            return Ok(c);
        }
        self.claim_waiting(len, deadline)
    }

    /// The ring was full: try again, waiting (spin, then futex) until `deadline`.
    #[inline(never)]
    fn claim_waiting(&mut self, len: u32, deadline: Option<Deadline>) -> Result<Claim, ClaimFail> {
        let shared = &*self.shared;
        let seg = &shared.seg;
        let params = &shared.params;
        let offset = self.slot_offset;
        let claiming = seg.prod_slot(offset).claiming();
        let subs = Subscribers(seg);
        let mut spinner = Spinner::short();
        loop {
            let mark = SpaceMark::read(seg);
            match ring::try_claim(seg, &subs, params, &mut self.cursor, claiming, len) {
                Ok(c) => {
                    ring::write_claimed(seg, params, &c);
                    self.stall = None;
                    return Ok(c);
                }
                Err(ClaimError::Full { stalled_at }) => {
                    watch_stall(shared, &mut self.stall, stalled_at)
                }
                Err(ClaimError::Corrupt { position }) => {
                    return Err(LoanError::RingCorrupt { position }.into())
                }
                Err(ClaimError::Conflict { expected, found }) => {
                    return Err(LoanError::ProducerConflict { expected, found }.into())
                }
            }
            // A subscriber that died holds a reliable ring full until evicted: probe on every
            // path, `try_send` included, at most once an interval.
            if Self::evict_due(&mut self.last_evict)
                && registry::evict_dead(shared, SlotKind::Subscriber, PROBE_LOCK_TIMEOUT)
                    .unwrap_or(0)
                    > 0
            {
                continue;
            }
            let Some(deadline) = deadline else {
                return Err(ClaimFail::Full);
            };
            if deadline.passed() {
                return Err(ClaimFail::Timeout);
            }
            if spinner.spin() {
                continue;
            }
            let slice = match params.mode {
                Mode::Reliable => EVICT_INTERVAL,
                // Waiting for a producer a lap behind to commit: nobody wakes us; poll.
                Mode::Lossy => Duration::from_millis(1),
            };
            wait::sleep_unless(
                seg.producers_waiting(),
                seg.slot(offset).sleeping(),
                seg.space(),
                deadline.slice(slice),
                // Subscribers publish their positions with a SeqCst store.
                false,
                || SpaceMark::read(seg) != mark,
            );
        }
    }

    /// Abandons the claim of a loan that was leaked (`mem::forget`): nothing can reach its
    /// bytes any more, since the loan that lent them is gone without running its drop.
    #[cold]
    #[inline(never)]
    fn abandon_leaked_loan(&mut self) {
        if let Some(c) = self.loaned.take() {
            self.abandon_claim(&c);
        }
    }

    /// Gives a claim up: its record becomes padding that consumes its sequence. Not in a
    /// child forked since the join: the claim is the parent's, which may still commit it.
    fn abandon_claim(&mut self, c: &Claim) {
        if !self.slot.as_ref().is_some_and(|s| s.is_ours()) {
            return;
        }
        let seg = &self.shared.seg;
        let offset = self.slot_offset;
        let claiming = seg.prod_slot(offset).claiming();
        if ring::abandon(seg, &self.shared.params, c, claiming).is_ok() {
            self.abandoned += 1;
            // ORDERING: Relaxed: a statistic for `stat`.
            seg.prod_slot(offset).set_abandoned_relaxed(self.abandoned);
            // Readers waiting at this record must move past it.
            self.wake.wake(seg.readers_waiting(), seg.notify());
        }
    }

    /// Whether a probe for dead subscribers is due (at most one per [`EVICT_INTERVAL`]);
    /// if so, starts the next interval. Reads the clock: only called on a full ring.
    fn evict_due(last: &mut Option<Instant>) -> bool {
        let now = Instant::now();
        match *last {
            Some(t) if now.duration_since(t) < EVICT_INTERVAL => false,
            _ => {
                *last = Some(now);
                true
            }
        }
    }

    /// A wake found the waiting count up but nobody asleep; after a run of those, look for
    /// subscribers that died asleep and give their counts back.
    #[cold]
    #[inline(never)]
    fn note_fruitless_wake(&mut self) {
        self.fruitless_wakes += 1;
        if self.fruitless_wakes >= FRUITLESS_WAKES_BEFORE_SWEEP {
            self.fruitless_wakes = 0;
            let _ = registry::evict_dead(&self.shared, SlotKind::Subscriber, PROBE_LOCK_TIMEOUT);
        }
    }

    /// Commits `c` and wakes sleeping readers.
    #[inline(always)]
    fn finish(&mut self, c: &Claim) -> Result<Sent, CommitError> {
        let seg = &self.shared.seg;
        let claiming = seg.prod_slot(self.slot_offset).claiming();
        fault::hit(fault::Point::BeforeCommit);
        ring::commit(seg, &self.shared.params, c, claiming).map_err(|_| CommitError::Unblocked)?;
        self.sent += 1;
        self.bytes += c.len as u64;
        let offset = self.slot_offset;
        // ORDERING: Relaxed: statistics for `stat`.
        seg.prod_slot(offset)
            .set_sent_relaxed(self.sent, self.bytes);
        if self.wake.wake(seg.readers_waiting(), seg.notify()) == Woke::Nobody {
            self.note_fruitless_wake();
        }
        Ok(Sent {
            seq: c.seq,
            position: c.position(),
        })
    }

    /// Claims without a deadline: neither `Full` nor `Timeout` can come back (and should a
    /// wait end anyway, it is simply taken up again).
    #[inline(always)]
    fn claim_forever(&mut self, len: u32) -> Result<Claim, LoanError> {
        loop {
            match self.claim(len, Some(Deadline::never())) {
                Ok(c) => return Ok(c),
                Err(ClaimFail::Loan(e)) => return Err(e),
                Err(ClaimFail::Full | ClaimFail::Timeout) => {}
            }
        }
    }

    /// Copies `data` into the claimed record and commits it.
    #[inline(always)]
    fn write_and_finish(&mut self, c: &Claim, data: &[u8]) -> Result<Sent, CommitError> {
        fault::hit(fault::Point::AfterClaim);
        let seg = &self.shared.seg;
        let at = c.payload_offset(&self.shared.params);
        if cfg!(feature = "fault-injection") {
            // Two halves, with the `mid-copy` fault point between them.
            let (first, second) = data.split_at((data.len() / 2) & !15);
            // SAFETY: the claim gives this publisher the record's `len` payload bytes at
            // `payload_offset`, inside the region, until it commits; `first` is a multiple
            // of 16 bytes long, so the second half also starts 16-aligned.
            unsafe { seg.write_bytes(at, first) };
            fault::hit(fault::Point::MidCopy);
            // SAFETY: as above.
            unsafe { seg.write_bytes(at + first.len() as u64, second) };
        } else {
            // SAFETY: the claim gives this publisher the record's `len` payload bytes at
            // `payload_offset`, inside the region, until it commits.
            unsafe { seg.write_bytes(at, data) };
        }
        self.finish(c)
    }

    /// Publishes `data`, waiting while the ring is full (reliable mode).
    ///
    /// # Errors
    ///
    /// [`SendError`]: the message is too large, or the ring or this publisher's claim is
    /// broken (see each variant).
    ///
    /// # Examples
    ///
    /// ```
    /// # use bus_core::{Bus, BusOptions};
    /// # let dir = tempfile::tempdir().unwrap();
    /// let bus = Bus::create(dir.path().join("b.bus"), &BusOptions::new().capacity(1 << 16)).unwrap();
    /// let mut publ = bus.publisher().unwrap();
    /// let sent = publ.send(b"tick").unwrap();
    /// assert_eq!(sent.seq, 0);
    /// assert!(publ.send(&vec![0; 1 << 20]).is_err()); // larger than max message
    /// ```
    #[inline]
    pub fn send(&mut self, data: &[u8]) -> Result<Sent, SendError> {
        let len = self.check_len(data.len())?;
        let c = self.claim_forever(len)?;
        Ok(self.write_and_finish(&c, data)?)
    }

    /// Publishes `data` if there is room now. Never waits and makes no system call, except to
    /// wake sleeping subscribers or (on a full ring, at most every 10 ms) to look for dead
    /// ones.
    ///
    /// # Errors
    ///
    /// [`TrySendError::Full`] when there is no room; otherwise as [`Publisher::send`].
    #[inline]
    pub fn try_send(&mut self, data: &[u8]) -> Result<Sent, TrySendError> {
        let len = self.check_len(data.len())?;
        let c = self.claim(len, None).map_err(ClaimFail::try_)?;
        Ok(self.write_and_finish(&c, data)?)
    }

    /// Publishes `data`, waiting at most `timeout` for room (any timeout, from zero to
    /// [`Duration::MAX`]).
    ///
    /// # Errors
    ///
    /// [`SendTimeoutError::Timeout`] when there was no room in time; otherwise as
    /// [`Publisher::send`].
    pub fn send_timeout(
        &mut self,
        data: &[u8],
        timeout: Duration,
    ) -> Result<Sent, SendTimeoutError> {
        let len = self.check_len(data.len())?;
        let c = self
            .claim(len, Some(Deadline::after(timeout)))
            .map_err(ClaimFail::timeout)?;
        Ok(self.write_and_finish(&c, data)?)
    }

    #[cfg(feature = "async")]
    /// See [`SpaceMark`].
    pub(crate) fn space_mark(&self) -> SpaceMark {
        SpaceMark::read(&self.shared.seg)
    }

    #[cfg(feature = "async")]
    /// Whether space may have been made since `mark` was read.
    pub(crate) fn space_changed(&self, mark: &SpaceMark) -> bool {
        self.space_mark() != *mark
    }

    #[cfg(feature = "async")]
    /// Where this publisher sleeps while the ring is full.
    pub(crate) fn spot(&self) -> crate::wait::Spot {
        crate::wait::Spot::producers(self.shared.clone(), self.slot_offset)
    }

    #[cfg(feature = "async")]
    /// The longest a sleep for space may last before trying again (and probing for dead
    /// subscribers, or, in lossy mode, for a lapped producer's commit that wakes nobody).
    pub(crate) fn sleep_slice(&self) -> Duration {
        match self.shared.params.mode {
            Mode::Reliable => EVICT_INTERVAL,
            Mode::Lossy => Duration::from_millis(1),
        }
    }

    /// Hands out a claimed record as a loan.
    #[inline]
    fn lend(&mut self, claim: Claim) -> Loan<'_> {
        self.loaned = Some(claim);
        fault::hit(fault::Point::AfterClaim);
        Loan {
            publisher: self,
            claim,
            done: false,
        }
    }

    /// Lends `len` bytes inside the ring to write a message in place (zero copy), waiting
    /// while the ring is full. The bytes hold whatever was there before (not zeroed).
    ///
    /// # Errors
    ///
    /// [`LoanError`]: the length is too large, or the ring or this publisher's claim is
    /// broken.
    ///
    /// # Examples
    ///
    /// ```
    /// # use bus_core::{Bus, BusOptions};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let bus = Bus::create(dir.path().join("b.bus"), &BusOptions::new().capacity(1 << 16)).unwrap();
    /// let mut publ = bus.publisher().unwrap();
    /// let mut loan = publ.loan(8).unwrap();
    /// loan.copy_from_slice(&42u64.to_le_bytes());
    /// loan.commit().unwrap();
    /// ```
    ///
    /// A loan borrows its publisher: nothing else is sent until it is committed or dropped.
    ///
    /// ```compile_fail
    /// # use bus_core::{Bus, BusOptions};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let bus = Bus::create(dir.path().join("b.bus"), &BusOptions::new().capacity(1 << 16)).unwrap();
    /// let mut publ = bus.publisher().unwrap();
    /// let loan = publ.loan(8).unwrap();
    /// publ.send(b"meanwhile").unwrap(); // error: `publ` is borrowed by `loan`
    /// loan.commit().unwrap();
    /// ```
    #[inline]
    pub fn loan(&mut self, len: usize) -> Result<Loan<'_>, LoanError> {
        let len = self.check_len(len)?;
        let claim = self.claim_forever(len)?;
        Ok(self.lend(claim))
    }

    /// [`Publisher::loan`] if there is room now.
    ///
    /// # Errors
    ///
    /// [`TryLoanError::Full`] when there is no room; otherwise as [`Publisher::loan`].
    #[inline]
    pub fn try_loan(&mut self, len: usize) -> Result<Loan<'_>, TryLoanError> {
        let len = self.check_len(len)?;
        let claim = self.claim(len, None).map_err(ClaimFail::try_)?;
        Ok(self.lend(claim))
    }

    /// [`Publisher::loan`], waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`LoanTimeoutError::Timeout`] when there was no room in time; otherwise as
    /// [`Publisher::loan`].
    pub fn loan_timeout(
        &mut self,
        len: usize,
        timeout: Duration,
    ) -> Result<Loan<'_>, LoanTimeoutError> {
        let len = self.check_len(len)?;
        let claim = self
            .claim(len, Some(Deadline::after(timeout)))
            .map_err(ClaimFail::timeout)?;
        Ok(self.lend(claim))
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        if self.slot.as_ref().is_some_and(|s| s.is_ours()) {
            self.abandon_leaked_loan();
        }
        if let Some(slot) = self.slot.take() {
            registry::leave(&self.shared, slot);
        }
    }
}

/// A message being written in place inside the ring. Made by [`Publisher::loan`].
///
/// Dereferences to the `len` payload bytes. [`Loan::commit`] publishes them; dropping the loan
/// without committing *abandons* it: the record becomes padding that no subscriber receives
/// (it still consumes its sequence number). Subscribers wait at this record until one or the
/// other happens, so do not hold a loan for long.
///
/// A loan leaked with `mem::forget` is abandoned by its publisher's next claim (any `send` or
/// `loan`) or by the publisher's drop; until then subscribers wait at it, and in reliable mode
/// producers stop a lap later, as for a loan held open. A forked child never abandons (or
/// commits) its parent's loans.
pub struct Loan<'a> {
    publisher: &'a mut Publisher,
    claim: Claim,
    done: bool,
}

impl Loan<'_> {
    /// Publishes the message.
    ///
    /// # Errors
    ///
    /// [`CommitError::Unblocked`] if a repairer took the record first.
    #[inline]
    pub fn commit(mut self) -> Result<Sent, CommitError> {
        if self.publisher.slot.as_ref().is_some_and(Slot::forked) {
            // The loan's drop leaves the parent's claim alone (`abandon_claim`).
            return Err(CommitError::Forked);
        }
        self.done = true;
        let claim = self.claim;
        self.publisher.loaned = None;
        self.publisher.finish(&claim)
    }

    /// The sequence number this message will have.
    #[inline]
    pub fn seq(&self) -> u64 {
        self.claim.seq
    }
}

impl Deref for Loan<'_> {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        let p = &self.publisher.shared;
        let ptr = p.seg.data_ptr(self.claim.payload_offset(&p.params));
        // SAFETY: the claim owns these `len` bytes inside the data region until commit or
        // abandon (both consume the loan): no other producer writes them, and readers that
        // follow the protocol wait at the record's header until its commit. A lossy reader a
        // lap behind may still be copying the earlier lap's bytes here; it validates that copy
        // against head afterwards and discards it (the seqlock pattern). The bytes are plain
        // `u8`, so no value is invalid.
        unsafe { std::slice::from_raw_parts(ptr, self.claim.len as usize) }
    }
}

impl DerefMut for Loan<'_> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [u8] {
        let p = &self.publisher.shared;
        let ptr = p.seg.data_ptr(self.claim.payload_offset(&p.params));
        // SAFETY: as in `deref`; `&mut self` makes this the only reference to the bytes.
        unsafe { std::slice::from_raw_parts_mut(ptr, self.claim.len as usize) }
    }
}

impl Drop for Loan<'_> {
    #[inline]
    fn drop(&mut self) {
        if self.done {
            return;
        }
        self.publisher.loaned = None;
        let claim = self.claim;
        self.publisher.abandon_claim(&claim);
    }
}
