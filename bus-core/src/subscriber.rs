//! The subscribing handle.

use std::cell::Cell;
use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use crate::layout::{Mode, MAX_POSITION};
use crate::registry::{self, JoinError, Slot, SlotKind};
use crate::repair::{self, Unblock};
use crate::ring::{self, Polled, PositionError, Reader, RecordProblem};
use crate::wait::{self, Deadline, WaitStrategy};
use crate::{Shared, Start};

/// How long a sleeping reader sleeps before it looks again on its own (it is woken at once
/// by a publish; this only bounds how late it notices a dead producer). At most a quarter of
/// the unblock timeout.
const SLEEP_SLICE: Duration = Duration::from_millis(100);

/// A reader that keeps finding nothing looks for a stuck record every this many polls (and
/// before every sleep).
const STUCK_CHECK_EVERY: u32 = 256;

/// Longest pause between two polls of a busy-polling reader, in spin-loop hints (about
/// 14 µs on the Xeon of the README's runs, where a `pause` takes ~14 ns; on cores where it
/// takes ~140 cycles, Skylake's, about 50 µs: the trailing latency of a stream, not of
/// request/reply traffic, where the pause adapts down to one hint). A reader that
/// polls the record a producer is writing pulls its lines back on every poll; one that
/// trails a stream by a few microseconds reads whole lines the producer has finished. At
/// 64 B, raising this from 64 to 1024 took `shmbus-spin` from about 6.5 M to 12-14 M
/// messages/s on a shared bus (4096 gave no more).
const MAX_SPIN_PAUSE: u32 = 1024;

/// A subscriber could not be made. Returned by [`crate::Bus::subscribe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeError {
    /// No slot, or the control lock failed.
    #[error(transparent)]
    Join(#[from] JoinError),
    /// `Start::Position` names a position no longer retained (overwritten) or not written
    /// yet. Start at `Oldest` instead.
    #[error("position {requested} is not in the ring (oldest retained {oldest}, next {next})")]
    PositionNotRetained {
        /// The position asked for.
        requested: u64,
        /// The oldest retained position.
        oldest: u64,
        /// The position of the next message to be published.
        next: u64,
    },
    /// The ring's positions in the shared file are impossible (another process wrote
    /// garbage into the bus header). Re-create the bus.
    #[error("the ring's position {position} is corrupt (written by another process)")]
    RingCorrupt {
        /// The position found.
        position: u64,
    },
    /// `Start::Position` names a position inside the ring that is not the start of a record.
    #[error("position {requested} is not the start of a record")]
    NotARecord {
        /// The position asked for.
        requested: u64,
    },
}

impl SubscribeError {
    fn from_position(requested: u64, e: PositionError) -> Self {
        match e {
            PositionError::NotRetained { oldest, next } => SubscribeError::PositionNotRetained {
                requested,
                oldest,
                next,
            },
            PositionError::NotARecord => SubscribeError::NotARecord { requested },
        }
    }
}

// ---- errors, one enum per operation -----------------------------------------------------

/// [`Subscriber::recv`] and [`Subscriber::recv_ref`] did not deliver a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecvError {
    /// Lossy mode: this subscriber fell a whole ring behind (or producers died mid-message)
    /// and exactly this many messages were lost before the next one it will receive. Not
    /// fatal: the next call goes on from the oldest retained message.
    #[error("lost {0} messages")]
    Lost(u64),
    /// The record at `position` breaks the format (another process wrote garbage into the
    /// ring) and stayed so for the unblock timeout without the repairer being able to replace
    /// it (a header that repairs like a dead claim is counted in `unblocked` instead). The
    /// subscriber stays where it is; re-create the bus, or resume past it with a new
    /// subscriber at `Start::Oldest` or `Start::Latest`.
    #[error("corrupt record at position {position}: {problem}")]
    Corrupt {
        /// Where.
        position: u64,
        /// What is wrong.
        problem: RecordProblem,
    },
    /// This process is a child forked (without `exec`) since the handle was made: the
    /// handle's subscriber slot is the parent's, and a receive here would move the parent's
    /// read position (in reliable mode, letting producers overwrite what the parent has not
    /// read). Nothing was received. Open the bus again in this process and subscribe.
    #[error("this handle belongs to the process that made it, not to this forked child: open the bus again here")]
    Forked,
}

/// [`Subscriber::try_recv`] and [`Subscriber::try_recv_ref`] did not deliver a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TryRecvError {
    /// Nothing new right now.
    #[error("no message available")]
    Empty,
    /// As [`RecvError::Lost`].
    #[error("lost {0} messages")]
    Lost(u64),
    /// As [`RecvError::Corrupt`].
    #[error("corrupt record at position {position}: {problem}")]
    Corrupt {
        /// Where.
        position: u64,
        /// What is wrong.
        problem: RecordProblem,
    },
    /// As [`RecvError::Forked`].
    #[error("this handle belongs to the process that made it, not to this forked child: open the bus again here")]
    Forked,
}

/// [`Subscriber::recv_timeout`] and [`Subscriber::recv_ref_timeout`] did not deliver a
/// message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecvTimeoutError {
    /// Nothing arrived in time.
    #[error("timed out waiting for a message")]
    Timeout,
    /// As [`RecvError::Lost`].
    #[error("lost {0} messages")]
    Lost(u64),
    /// As [`RecvError::Corrupt`].
    #[error("corrupt record at position {position}: {problem}")]
    Corrupt {
        /// Where.
        position: u64,
        /// What is wrong.
        problem: RecordProblem,
    },
    /// As [`RecvError::Forked`].
    #[error("this handle belongs to the process that made it, not to this forked child: open the bus again here")]
    Forked,
}

impl From<RecvError> for TryRecvError {
    fn from(e: RecvError) -> TryRecvError {
        match e {
            RecvError::Lost(n) => TryRecvError::Lost(n),
            RecvError::Corrupt { position, problem } => TryRecvError::Corrupt { position, problem },
            RecvError::Forked => TryRecvError::Forked,
        }
    }
}

impl From<RecvError> for RecvTimeoutError {
    fn from(e: RecvError) -> RecvTimeoutError {
        match e {
            RecvError::Lost(n) => RecvTimeoutError::Lost(n),
            RecvError::Corrupt { position, problem } => {
                RecvTimeoutError::Corrupt { position, problem }
            }
            RecvError::Forked => RecvTimeoutError::Forked,
        }
    }
}

/// Why the next record is not there, before a public method names it in its own error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NextFail {
    /// Nothing yet, and the caller does not wait.
    Empty,
    /// Nothing until the deadline.
    Timeout,
    /// Lost or corrupt: what every receive shares.
    Recv(RecvError),
}

impl From<RecvError> for NextFail {
    fn from(e: RecvError) -> NextFail {
        NextFail::Recv(e)
    }
}

impl NextFail {
    fn try_(self) -> TryRecvError {
        match self {
            NextFail::Recv(e) => e.into(),
            NextFail::Empty | NextFail::Timeout => TryRecvError::Empty,
        }
    }

    fn timeout(self) -> RecvTimeoutError {
        match self {
            NextFail::Recv(e) => e.into(),
            NextFail::Empty | NextFail::Timeout => RecvTimeoutError::Timeout,
        }
    }
}

/// What [`Subscriber::recv`] delivered: the payload went into the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Message {
    /// Bus-wide sequence number.
    pub seq: u64,
    /// Absolute position of the record.
    pub position: u64,
    /// Payload length.
    pub len: usize,
}

/// A message borrowed in place (reliable mode) or from the subscriber's own buffer (lossy
/// mode, where it must be copied out and validated). Made by [`Subscriber::recv_ref`].
///
/// In reliable mode no producer may write these bytes while the sample lives: the
/// subscriber's published position stays at or before the record until the next call. A
/// process that writes into the ring outside the protocol can still change them under the
/// borrow (they stay in bounds; their content is then unspecified).
pub struct Sample<'a> {
    data: &'a [u8],
    /// Bus-wide sequence number.
    pub seq: u64,
    /// Absolute position of the record.
    pub position: u64,
}

impl Deref for Sample<'_> {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        self.data
    }
}

impl std::fmt::Debug for Sample<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sample")
            .field("seq", &self.seq)
            .field("position", &self.position)
            .field("len", &self.data.len())
            .finish()
    }
}

/// Receives every message of a bus from its start position on. Made by
/// [`crate::Bus::subscribe`]; holds a subscriber slot until dropped.
///
/// One owner: `Send` but not `Sync`. In reliable mode producers wait for it, so a subscriber
/// that stops reading (without dropping) eventually stops the bus; one that dies is evicted.
pub struct Subscriber {
    pub(crate) shared: Arc<Shared>,
    slot: Option<Slot>,
    /// Where the next record is, and the read protocol (`ring::Reader`: the one read path).
    reader: Reader,
    /// Last position stored in the slot (what producers see).
    published: u64,
    publish_every: u64,
    strategy: WaitStrategy,
    delivered: u64,
    /// Lossy-mode copies for `recv_ref`.
    scratch: Vec<u8>,
    /// Since when the record at this position has been claimed but not committed.
    stuck_since: Option<(std::time::Instant, u64)>,
    /// A problem the repairer reported to a `probe` at this position, for the next receive.
    pending: Option<(u64, RecordProblem)>,
    empty_polls: u32,
    /// Pauses between polls while busy-polling, and messages read since the last wait (see
    /// `adapt_spin`).
    spin_pause: u32,
    batch: u32,
    unblock_timeout: Duration,
    _not_sync: PhantomData<Cell<()>>,
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber")
            .field("bus", &self.shared.path)
            .field("position", &self.reader.pos)
            .field("seq", &self.reader.seq)
            .finish()
    }
}

impl Subscriber {
    fn pick(shared: &Shared, start: Start) -> Result<(u64, u64), SubscribeError> {
        let picked = Self::pick_unchecked(shared, start)?;
        // Positions and sequences in the header are another process's writes: one that no
        // producer could have reached makes every later step meaningless.
        if picked.0 > MAX_POSITION || picked.1 >= crate::layout::SEQ_MASK {
            return Err(SubscribeError::RingCorrupt { position: picked.0 });
        }
        // Every start is at or below the tail, which only grows: read after the pick, a tail
        // below it means the head (`Oldest`) was written past the tail by another process.
        if picked.0 > ring::latest(&shared.seg).0 {
            return Err(SubscribeError::RingCorrupt { position: picked.0 });
        }
        Ok(picked)
    }

    fn pick_unchecked(shared: &Shared, start: Start) -> Result<(u64, u64), SubscribeError> {
        let seg = &shared.seg;
        match start {
            Start::Latest => Ok(ring::latest(seg)),
            Start::Oldest => Ok(ring::oldest(seg)),
            Start::Position(p) => {
                // A record still being written has no header yet: give its producer the
                // time a repairer would (after which a dead one's claim is padding).
                let patience = Duration::from_nanos(seg.config.unblock_timeout_ns) * 2;
                let deadline = std::time::Instant::now() + patience;
                loop {
                    match ring::sequence_at(seg, &shared.params, p) {
                        Err(PositionError::NotARecord)
                            if ring::latest(seg).0 > p && std::time::Instant::now() < deadline =>
                        {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                        r => {
                            break r
                                .map(|s| (p, s))
                                .map_err(|e| SubscribeError::from_position(p, e))
                        }
                    }
                }
            }
        }
    }

    pub(crate) fn join(shared: Arc<Shared>, start: Start) -> Result<Subscriber, SubscribeError> {
        let (pos, seq) = Self::pick(&shared, start)?;
        let slot = registry::join(&shared, SlotKind::Subscriber, |seg, off| {
            // ORDERING: the start position SeqCst for the join protocol; both are published
            // again by the SeqCst store that activates the slot.
            seg.sub_slot(off).set_seq_relaxed(seq);
            seg.sub_slot(off).set_position_seqcst(pos);
        })?;
        let unblock_timeout = Duration::from_nanos(shared.seg.config.unblock_timeout_ns);
        let mut sub = Subscriber {
            publish_every: (shared.params.capacity / 8).max(1),
            shared,
            slot: Some(slot),
            reader: Reader::new(pos, seq),
            published: pos,
            strategy: WaitStrategy::default(),
            delivered: 0,
            scratch: Vec::new(),
            stuck_since: None,
            pending: None,
            empty_polls: 0,
            spin_pause: 1,
            batch: 0,
            unblock_timeout,
            _not_sync: PhantomData,
        };
        // The join protocol (ring::limit_after_head): with our start stored, a head that is
        // still at or before it can no longer pass it; one that passed it already means
        // pick again.
        loop {
            let head = ring::oldest(&sub.shared.seg);
            if head.0 <= sub.reader.pos {
                return Ok(sub);
            }
            // Head never passes the tail (a producer moves it only to make room for a claim
            // that then moves the tail past it), and both only grow: read after it, a tail
            // below it is another process's garbage, and picking again would find the same
            // tail below the same head forever.
            let tail = ring::latest(&sub.shared.seg);
            if head.0 > tail.0 {
                return Err(SubscribeError::RingCorrupt { position: head.0 });
            }
            if let Start::Position(p) = start {
                return Err(SubscribeError::PositionNotRetained {
                    requested: p,
                    oldest: head.0,
                    next: tail.0,
                });
            }
            let (pos, seq) = Self::pick(&sub.shared, start)?;
            sub.reader = Reader::new(pos, seq);
            sub.publish();
        }
    }

    /// Sets how blocking calls wait (default: spin briefly, then sleep on the futex). An
    /// async subscriber made from this one waits the same way through its executor.
    pub fn set_wait_strategy(&mut self, strategy: WaitStrategy) {
        self.strategy = strategy;
    }

    /// How blocking calls wait.
    pub fn wait_strategy(&self) -> WaitStrategy {
        self.strategy
    }

    /// The position of the next message this subscriber will read. Pass it to
    /// `Start::Position` to resume there later, in this process or another.
    pub fn position(&self) -> u64 {
        self.reader.pos
    }

    /// The sequence number of the next message this subscriber will read.
    pub fn next_seq(&self) -> u64 {
        self.reader.seq
    }

    /// Messages delivered so far.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// Messages lost so far (lossy mode; also records of producers that died mid-message).
    pub fn lost(&self) -> u64 {
        self.reader.lost
    }

    /// Records skipped because their producer died before committing them.
    pub fn unblocked(&self) -> u64 {
        self.reader.unblocked
    }

    /// Whether this process is a child forked (without exec) since the subscriber was made:
    /// then every receive fails with [`RecvError::Forked`]. For layers that keep a received
    /// message across calls (the C binding's `SHMBUS_BUFFER_TOO_SMALL`) and must not hand it
    /// out in the child either.
    pub fn forked(&self) -> bool {
        self.slot.as_ref().is_some_and(Slot::forked)
    }

    /// Busy-polling without chasing the writer (DESIGN.md: a reader that polls a record while
    /// its producer writes it drags the producer's cache lines over on every message). The
    /// pause between polls adapts when a wait ends, after `waited` pauses:
    /// * the previous wait was followed by a batch of several messages, or this one ended
    ///   within a few pauses: a stream; pause longer, so that records land between visits
    ///   and are read in batches;
    /// * a single message, after a longer wait: sparse messages (request/reply,
    ///   ping-pong), where only polling hard keeps latency low; pause less.
    fn adapt_spin(&mut self, waited: u32) {
        if self.strategy == WaitStrategy::Block {
            return;
        }
        let batch = std::mem::replace(&mut self.batch, 0);
        // `waited` counts pauses, not polls: with long pauses every wait is one poll.
        if batch >= 2 || waited <= 4 {
            self.spin_pause = (self.spin_pause * 2).min(MAX_SPIN_PAUSE);
        } else {
            self.spin_pause = (self.spin_pause / 2).max(1);
        }
    }

    fn slot_offset(&self) -> u64 {
        self.slot.as_ref().map_or(0, |s| s.offset)
    }

    /// Stores the read position (and counters) in the slot, where producers and `stat` see
    /// it, and wakes producers waiting for space.
    fn publish(&mut self) {
        let seg = &self.shared.seg;
        let off = self.slot_offset();
        // ORDERING: Relaxed: statistics; the SeqCst store below orders them for `stat`.
        let slot = seg.sub_slot(off);
        slot.set_seq_relaxed(self.reader.seq);
        slot.set_counters_relaxed(self.delivered, self.reader.lost, self.reader.unblocked);
        // ORDERING: SeqCst: producers' scans (join protocol) and the Dekker pattern with
        // producers asleep waiting for space (wait module): store, then load their count.
        slot.set_position_seqcst(self.reader.pos);
        self.published = self.reader.pos;
        wait::wake_if_waiting(seg.producers_waiting(), seg.space());
    }

    #[inline]
    fn maybe_publish(&mut self) {
        if self.reader.pos - self.published >= self.publish_every {
            self.publish();
        }
    }

    /// Nothing at our position: if something is claimed there (the tail is past it) and has
    /// stayed uncommitted for the unblock timeout, ask the repairer whether its producer died.
    /// Returns what the repairer said, if it was asked.
    fn check_stuck(&mut self) -> Option<Unblock> {
        let (pos, seq) = (self.reader.pos, self.reader.seq);
        let tail = ring::latest(&self.shared.seg);
        if tail.0 <= pos {
            self.stuck_since = None;
            return None;
        }
        let now = std::time::Instant::now();
        match self.stuck_since {
            Some((since, at)) if at == pos => {
                if now.duration_since(since) >= self.unblock_timeout {
                    self.stuck_since = Some((now, pos));
                    return Some(repair::unblock(&self.shared, pos, seq));
                }
            }
            _ => self.stuck_since = Some((now, pos)),
        }
        None
    }

    /// The record at our position has stayed unreadable for the unblock timeout and the
    /// repairer will not replace it: the error to report. In lossy mode a reader that has been
    /// lapped meanwhile resynchronises instead.
    fn unrepairable(&mut self, problem: RecordProblem) -> RecvError {
        if self.shared.params.mode == Mode::Lossy {
            match self.reader.validate_copy(&self.shared.seg) {
                Ok(()) => {}
                Err(Polled::Lost(n)) => return RecvError::Lost(n),
                Err(Polled::Corrupt(p)) => return self.corrupt(p),
                Err(_) => {}
            }
        }
        self.corrupt(problem)
    }

    fn corrupt(&self, problem: RecordProblem) -> RecvError {
        RecvError::Corrupt {
            position: self.reader.pos,
            problem,
        }
    }

    /// The next record: at once if it is there, else waiting until a poll has something (or
    /// the deadline passes).
    #[inline(always)]
    fn next(&mut self, deadline: Option<Deadline>) -> Result<(u64, u32, u64), NextFail> {
        if self.slot.as_ref().is_some_and(Slot::forked) {
            return Err(RecvError::Forked.into());
        }
        self.maybe_publish();
        // The fast path: a committed message at our position, below the tail last seen.
        if let Some(found) = self.reader.peek_data(&self.shared.seg, &self.shared.params) {
            self.batch += 1;
            return Ok(found);
        }
        self.next_waiting(deadline)
    }

    #[inline(never)]
    fn next_waiting(&mut self, deadline: Option<Deadline>) -> Result<(u64, u32, u64), NextFail> {
        let mut polls = 0u32;
        let mut waited = 0u32;
        // What a `probe` (WaitSet, async handle) learned from the repairer about the record at
        // our position, if we are still there: reported unless that record now reads.
        let mut pending = self
            .pending
            .take()
            .filter(|&(at, _)| at == self.reader.pos)
            .map(|(_, why)| why);
        loop {
            let params = self.shared.params;
            match self.reader.poll(&self.shared.seg, &params) {
                Polled::Data {
                    offset,
                    len,
                    extent,
                } => {
                    self.adapt_spin(waited);
                    return Ok((offset, len, extent));
                }
                Polled::Lost(n) => return Err(RecvError::Lost(n).into()),
                Polled::Corrupt(RecordProblem::CheckMismatch) => {
                    // Bytes of an earlier lap can carry the very sequence we expect (a payload
                    // word equal to it): until the unblock timeout that is a record not yet
                    // written, not corruption. After it the repairer replaces the header like
                    // a dead claim's (counted in `unblocked`); what it cannot replace, we
                    // report. A live owner may still commit: keep waiting for it. (A header
                    // that does not validate sleeps like nothing at all: `is_ready` is false
                    // for it, and the commit that replaces it wakes us.)
                    if let Some(why) = pending.take() {
                        return Err(self.unrepairable(why).into());
                    }
                    match self.check_stuck() {
                        Some(Unblock::Repaired { .. } | Unblock::NotStuck) => {
                            // Repaired (by us or by another repairer meanwhile), committed, or
                            // a repair that raced a claim: look again, taking what is there.
                            continue;
                        }
                        Some(Unblock::Implausible(why)) => {
                            return Err(self.unrepairable(why).into())
                        }
                        Some(Unblock::OwnerAlive) | None => {}
                    }
                }
                Polled::Corrupt(problem) => {
                    // A header that validates with the bus's key (or a tail) and still breaks
                    // a rule: only a process holding the key wrote that, and it will not
                    // change by waiting. Never repaired over; reported at once.
                    return Err(self.unrepairable(problem).into());
                }
                Polled::Empty => {
                    if let Some(why) = pending.take() {
                        return Err(self.unrepairable(why).into());
                    }
                }
            }
            // Caught up: let producers have the space.
            if self.published != self.reader.pos {
                self.publish();
            }
            self.empty_polls = self.empty_polls.wrapping_add(1);
            if self.empty_polls % STUCK_CHECK_EVERY == 0 {
                if let Some(Unblock::Implausible(why)) = self.check_stuck() {
                    return Err(self.unrepairable(why).into());
                }
            }
            let Some(deadline) = deadline else {
                return Err(NextFail::Empty);
            };
            if deadline.passed() {
                return Err(NextFail::Timeout);
            }
            let spin = match self.strategy {
                WaitStrategy::Spin => true,
                // Spins as `Spin` does, 4,096 pauses (40-80 µs here), then sleeps: under a stream the
                // next message comes within that, and the adapted pause keeps the reader off
                // the lines the producer is writing just as it does for `Spin`.
                WaitStrategy::SpinThenBlock => waited < wait::SPIN_THEN_BLOCK_PAUSES,
                WaitStrategy::Block => false,
            };
            if spin {
                // Within one wait the pause doubles every 8 polls: a long wait (a large
                // message being written, a quiet stream) is not worth polling hard for,
                // and hard polling steals the core from a producer on the SMT sibling.
                let pause = (self.spin_pause << (polls / 8).min(6)).min(MAX_SPIN_PAUSE);
                polls += 1;
                waited = waited.saturating_add(pause);
                for _ in 0..pause {
                    std::hint::spin_loop();
                }
                if self.strategy == WaitStrategy::SpinThenBlock && waited > wait::YIELD_AFTER_PAUSES
                {
                    // Past a short spin, leave the CPU to whoever needs it after each poll
                    // (see `YIELD_AFTER_PAUSES`): the producer may be waiting for this one.
                    std::thread::yield_now();
                }
                continue;
            }
            if let Some(Unblock::Implausible(why)) = self.check_stuck() {
                return Err(self.unrepairable(why).into());
            }
            let seg = &self.shared.seg;
            let reader = self.reader;
            wait::sleep_unless(
                seg.readers_waiting(),
                seg.slot(self.slot_offset()).sleeping(),
                seg.notify(),
                deadline.slice(SLEEP_SLICE.min(self.unblock_timeout / 4)),
                params.exclusive,
                || reader.is_ready(seg, &params),
            );
        }
    }

    /// Copies the record at the current position into `buf` and moves on.
    #[inline(always)]
    fn take_into(
        &mut self,
        buf: &mut Vec<u8>,
        offset: u64,
        len: u32,
        extent: u64,
    ) -> Result<Message, RecvError> {
        let seg = &self.shared.seg;
        buf.clear();
        buf.reserve(len as usize);
        // SAFETY: `peek` checked that `offset + len` lies inside the data region; `buf` has
        // capacity for `len` bytes and is process memory, so the ranges do not overlap. The
        // copy initialises exactly the `len` bytes that `set_len` then exposes.
        unsafe {
            std::ptr::copy_nonoverlapping(seg.data_ptr(offset), buf.as_mut_ptr(), len as usize);
            buf.set_len(len as usize);
        }
        if self.shared.params.mode == Mode::Lossy {
            if let Err(step) = self.reader.validate_copy(seg) {
                buf.clear();
                return Err(match step {
                    Polled::Corrupt(problem) => self.corrupt(problem),
                    Polled::Lost(n) => RecvError::Lost(n),
                    Polled::Data { .. } | Polled::Empty => unreachable!("a failed check resyncs"),
                });
            }
        }
        let m = Message {
            seq: self.reader.seq,
            position: self.reader.pos,
            len: len as usize,
        };
        self.reader.consume(extent);
        self.delivered += 1;
        Ok(m)
    }

    /// Receives the next message into `buf` (replacing its contents), waiting as long as it
    /// takes.
    ///
    /// # Errors
    ///
    /// [`RecvError::Lost`] (lossy mode; call again for the next message) and
    /// [`RecvError::Corrupt`].
    #[inline]
    pub fn recv(&mut self, buf: &mut Vec<u8>) -> Result<Message, RecvError> {
        let (offset, len, extent) = self.next_forever()?;
        self.take_into(buf, offset, len, extent)
    }

    /// The next record, waiting without a deadline: neither `Empty` nor `Timeout` comes
    /// back (a wait that ends anyway is taken up again).
    #[inline(always)]
    fn next_forever(&mut self) -> Result<(u64, u32, u64), RecvError> {
        loop {
            match self.next(Some(Deadline::never())) {
                Ok(found) => return Ok(found),
                Err(NextFail::Recv(e)) => return Err(e),
                Err(NextFail::Empty | NextFail::Timeout) => {}
            }
        }
    }

    /// Receives the next message into `buf` if one is there now.
    ///
    /// # Errors
    ///
    /// [`TryRecvError::Empty`] when there is none; otherwise as [`Subscriber::recv`].
    #[inline]
    pub fn try_recv(&mut self, buf: &mut Vec<u8>) -> Result<Message, TryRecvError> {
        let (offset, len, extent) = self.next(None).map_err(NextFail::try_)?;
        Ok(self.take_into(buf, offset, len, extent)?)
    }

    /// Receives the next message into `buf`, waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`RecvTimeoutError::Timeout`] when nothing came in time (any timeout, from zero to
    /// [`Duration::MAX`]); otherwise as [`Subscriber::recv`].
    pub fn recv_timeout(
        &mut self,
        buf: &mut Vec<u8>,
        timeout: Duration,
    ) -> Result<Message, RecvTimeoutError> {
        let (offset, len, extent) = self
            .next(Some(Deadline::after(timeout)))
            .map_err(NextFail::timeout)?;
        Ok(self.take_into(buf, offset, len, extent)?)
    }

    #[inline(always)]
    fn sample(&mut self, offset: u64, len: u32, extent: u64) -> Result<Sample<'_>, RecvError> {
        let (seq, position) = (self.reader.seq, self.reader.pos);
        if self.shared.params.mode == Mode::Lossy {
            let mut scratch = std::mem::take(&mut self.scratch);
            let r = self.take_into(&mut scratch, offset, len, extent);
            self.scratch = scratch;
            r?;
            return Ok(Sample {
                data: &self.scratch,
                seq,
                position,
            });
        }
        self.reader.consume(extent);
        self.delivered += 1;
        let ptr = self.shared.seg.data_ptr(offset);
        // SAFETY: reliable mode: `peek` bounds-checked the `len` bytes at `offset`, and no
        // producer writes them while our published position (which only `publish` moves, and
        // only in later calls that need `&mut self`) is at or before this record. The
        // returned borrow of `self` ends before any such call.
        let data = unsafe { std::slice::from_raw_parts(ptr, len as usize) };
        Ok(Sample {
            data,
            seq,
            position,
        })
    }

    /// Receives the next message without copying it (reliable mode), waiting as long as it
    /// takes. In lossy mode it is copied into a buffer the subscriber reuses.
    ///
    /// # Errors
    ///
    /// As [`Subscriber::recv`].
    ///
    /// # Examples
    ///
    /// ```
    /// # use bus_core::{Bus, BusOptions, Start};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let bus = Bus::create(dir.path().join("b.bus"), &BusOptions::new().capacity(1 << 16)).unwrap();
    /// let mut sub = bus.subscribe(Start::Latest).unwrap();
    /// bus.publisher().unwrap().send(b"in place").unwrap();
    /// let sample = sub.recv_ref().unwrap();
    /// assert_eq!(&sample[..], b"in place");
    /// ```
    ///
    /// The sample borrows the subscriber: the record stays protected from producers until it
    /// is dropped, so no other receive can happen meanwhile.
    ///
    /// ```compile_fail
    /// # use bus_core::{Bus, BusOptions, Start};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let bus = Bus::create(dir.path().join("b.bus"), &BusOptions::new().capacity(1 << 16)).unwrap();
    /// let mut sub = bus.subscribe(Start::Latest).unwrap();
    /// let first = sub.recv_ref().unwrap();
    /// let second = sub.recv_ref().unwrap(); // error: `sub` is still borrowed by `first`
    /// assert_ne!(first.seq, second.seq);
    /// ```
    #[inline]
    pub fn recv_ref(&mut self) -> Result<Sample<'_>, RecvError> {
        let (offset, len, extent) = self.next_forever()?;
        self.sample(offset, len, extent)
    }

    /// [`Subscriber::recv_ref`] if a message is there now.
    ///
    /// # Errors
    ///
    /// As [`Subscriber::try_recv`].
    #[inline]
    pub fn try_recv_ref(&mut self) -> Result<Sample<'_>, TryRecvError> {
        let (offset, len, extent) = self.next(None).map_err(NextFail::try_)?;
        Ok(self.sample(offset, len, extent)?)
    }

    /// [`Subscriber::recv_ref`], waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// As [`Subscriber::recv_timeout`].
    pub fn recv_ref_timeout(&mut self, timeout: Duration) -> Result<Sample<'_>, RecvTimeoutError> {
        let (offset, len, extent) = self
            .next(Some(Deadline::after(timeout)))
            .map_err(NextFail::timeout)?;
        Ok(self.sample(offset, len, extent)?)
    }
}

/// What a wait outside this type (a `WaitSet`, an async handle) needs: a look that consumes
/// nothing, and where to sleep.
impl Subscriber {
    /// Whether a receive would find something now (a message, or an error to report), without
    /// consuming anything. Caught up, it also does what a sync wait does before sleeping:
    /// publishes the read position (producers waiting for space need it) and asks the repairer
    /// about a record that has stayed claimed for the unblock timeout. `true` can be spurious:
    /// a `try_recv` may still find nothing.
    pub(crate) fn probe(&mut self) -> bool {
        if self.slot.as_ref().is_some_and(Slot::forked) {
            // Publishes nothing into the parent's slot; the receive that follows reports it.
            return true;
        }
        let (seg, params) = (&self.shared.seg, &self.shared.params);
        if self.reader.is_ready(seg, params) {
            return true;
        }
        if self.published != self.reader.pos {
            self.publish();
        }
        // A repair, a commit meanwhile, or a record to report: something to look at.
        match self.check_stuck() {
            None | Some(Unblock::OwnerAlive) => false,
            Some(Unblock::Implausible(why)) => {
                // The receive that follows must report it: asking again would find the
                // stuck timer just restarted and say "nothing yet", forever.
                self.pending = Some((self.reader.pos, why));
                true
            }
            Some(_) => true,
        }
    }

    /// Whether the next receive returns at once with a message: `Ok(true)` when a committed
    /// record is at our position (nothing consumed), `Err` for what the receive would report
    /// (a loss or a corrupt record: reported here, once), `Ok(false)` for nothing yet.
    #[cfg(feature = "async")]
    pub(crate) fn next_ready(&mut self) -> Result<bool, RecvError> {
        match self.next(None) {
            Ok(_) => Ok(true),
            Err(NextFail::Recv(e)) => Err(e),
            Err(NextFail::Empty | NextFail::Timeout) => Ok(false),
        }
    }

    /// The re-check of a sleep announced with [`crate::wait::Spot`]: [`probe`]'s first half
    /// (SeqCst loads, nothing written).
    ///
    /// [`probe`]: Subscriber::probe
    pub(crate) fn is_ready(&self) -> bool {
        self.reader.is_ready(&self.shared.seg, &self.shared.params)
    }

    /// Where this subscriber sleeps, and for how long at most before it looks again (records
    /// left claimed by a dead producer are found by looking).
    pub(crate) fn spot(&self) -> crate::wait::Spot {
        crate::wait::Spot::readers(self.shared.clone(), self.slot_offset())
    }

    /// The longest a sleep may last before [`Subscriber::probe`] runs again.
    pub(crate) fn sleep_slice(&self) -> Duration {
        SLEEP_SLICE.min(self.unblock_timeout / 4)
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        if !self.slot.as_ref().is_some_and(|s| s.is_ours()) {
            // A child forked since the join: the slot is the parent's (registry::leave); only
            // our copy of its descriptor closes, with `self.slot`.
            return;
        }
        self.publish();
        if let Some(slot) = self.slot.take() {
            registry::leave(&self.shared, slot);
            // Producers waiting on us may have room now.
            wait::wake_if_waiting(self.shared.seg.producers_waiting(), self.shared.seg.space());
        }
    }
}
