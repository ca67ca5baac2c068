//! The claim / commit / read protocol on a byte region: pure atomics, no I/O.
//!
//! A multi-producer, multi-subscriber broadcast ring of variable-length records, after
//! Aeron's IPC log buffers and broadcast transmitter/receiver
//! (<https://github.com/real-logic/aeron>, `TermAppender`, `BroadcastReceiver`) and the
//! two-phase slots of crossbeam's array channel: *reserve* bytes by advancing the shared tail,
//! *write* them, *publish* with a Release store that readers Acquire.
//!
//! Positions are absolute byte counters that never wrap; a record lives at
//! `position & (capacity - 1)` of the region. Every record carries the bus-wide sequence
//! number it was claimed with, so the sequence order *is* the ring order.
//!
//! # The rules
//!
//! * **Claim.** A producer reads `tail = { position, sequence }`, computes the record's
//!   extent (plus a WRAP padding record when it would straddle the end of the region), and
//!   replaces `tail` with `{ position + bytes, sequence + 1 }` by one 16-byte CAS. Before the
//!   CAS it stores `sequence + 1` in its slot's *claiming* word and clears it once the record
//!   is committed or abandoned, or when it gives up on a full ring (see `PROD_CLAIMING` in
//!   `layout`). A repairer (design question 2) thus knows which producers may own a record
//!   that is stuck, and repairs only when every one of them is dead.
//! * **Head before claim** (design question 1). `head = { position, sequence }` is the oldest
//!   retained record. A claim may end at most `capacity` bytes after `head`; a producer that
//!   needs more first walks `head` forward over *committed* records with a CAS. Hence
//!   `tail.position - head.position <= capacity` always, and a record at or after `head` is
//!   never being overwritten.
//! * **Reliable mode** bounds that walk by the lowest published subscriber position. A
//!   producer caches the limit it computed and rescans the slots only when a claim would pass
//!   it, so publishing is O(1) in the number of subscribers (design question 7).
//! * **Commit** is a CAS of word0 from CLAIMED to DATA (or ABANDONED for a dropped loan), so
//!   that a producer's late commit and a repairer's unblock cannot both win.
//! * **Exclusive buses** (one producer slot, [`Params::exclusive`]): the only producer claims
//!   with a Release store of the tail and commits with a Release store of word0 (no locked
//!   instruction per message), and moves `head` by jumps between boundaries of its own
//!   records ([`Marks`]). It relies on being the only writer: a second one (only possible if
//!   a process's liveness lock is lost, see the README) is detected, within a lap, by a tail
//!   that is not where this producer left it ([`ClaimError::Conflict`]).
//! * **Read.** A reader knows the position and sequence of its next record. It Acquire-loads
//!   word0 there; anything but `{ expected sequence, committed state }` means "not yet" (or,
//!   in lossy mode, "lapped" once `head` has passed it). Every length is bounds-checked
//!   before use: a bad value is [`Corrupt`], never an out-of-bounds access.
//! * **Lossy reads** copy the payload out, then (after an Acquire fence) check that `head`
//!   has not passed the record: a producer moves `head` before it claims the bytes, so an
//!   unchanged `head` proves the copy is not torn (design question 5; the seqlock pattern).
//!
//! The region is abstract ([`Region`]) so that the same code runs on the mapping in
//! production and on heap memory with loom's atomics in `tests/loom_ring.rs`.

// Under loom only the parts the models exercise are used.
#![cfg_attr(loom, allow(dead_code))]

use crate::layout::{
    header, pack_word0, record_check, record_extent, unpack_word0, unpack_word1, Mode, RecordKey,
    MAX_POSITION, RECORD_ALIGN, RECORD_HEADER, SEQ_MASK, STATE_ABANDONED, STATE_DATA, STATE_EMPTY,
    STATE_FILL, STATE_GAP, STATE_REPAIRING, STATE_WRAP,
};
use crate::sync::{fence, AtomicU64, Ordering, Pair};

/// The memory a ring lives in: the two position pairs and the data region.
pub(crate) trait Region {
    /// `{ position, sequence }` of the next claim.
    fn tail(&self) -> &Pair;
    /// `{ position, sequence }` of the oldest retained record.
    fn head(&self) -> &Pair;
    /// The 8-byte word at `offset` of the data region.
    ///
    /// Callers pass a multiple of 8 below the capacity; implementations may panic otherwise.
    fn word(&self, offset: u64) -> &AtomicU64;
    /// Copies `src` into the data region at `offset`.
    ///
    /// # Safety
    ///
    /// `offset` is a multiple of 16, `offset + src.len() <= capacity`, and the bytes are
    /// inside a record this producer claimed and has not committed.
    unsafe fn write_bytes(&self, offset: u64, src: &[u8]);
    /// Copies `dst.len()` bytes from the data region at `offset`. (The subscriber copies
    /// into uninitialised buffer space through `Segment::data_ptr` instead.)
    ///
    /// # Safety
    ///
    /// `offset` is a multiple of 16 and `offset + dst.len() <= capacity`. The bytes may be
    /// changing under the copy (lossy mode); the caller validates afterwards.
    #[cfg_attr(not(test), allow(dead_code))]
    unsafe fn read_bytes(&self, offset: u64, dst: &mut [u8]);
}

/// What the ring needs to know about subscribers (reliable mode).
pub(crate) trait Subscribers {
    /// The lowest published position of an active subscriber, `None` if there is none.
    ///
    /// Loads are SeqCst: see [`limit_after_head`] for the join protocol that relies on it.
    fn min_position(&self) -> Option<u64>;
}

/// The parameters of one ring, copied out of the validated header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Params {
    pub capacity: u64,
    pub max_message: u32,
    pub mode: Mode,
    /// The bus has one producer slot, so at most one producer writes the tail and commits at
    /// a time: the claim is a Release store of the tail and the commit a Release store of the
    /// header, where shared buses need two locked instructions per message (see
    /// [`try_claim`] and [`commit`]).
    pub exclusive: bool,
    /// The key of every record's check (`layout::record_check`).
    pub key: RecordKey,
}

impl Params {
    #[inline]
    fn mask(&self) -> u64 {
        self.capacity - 1
    }

    /// How far past the bytes it needs a producer walks `head` at once: fewer head updates
    /// (a contended line) against a little less history retained.
    fn head_chunk(&self) -> u64 {
        (self.capacity / 16).min(64 * 1024)
    }
}

/// A record claimed by this producer: `[start, start + pad)` is WRAP padding (if `pad > 0`)
/// and the record itself starts at `start + pad`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Claim {
    pub start: u64,
    pub pad: u64,
    pub seq: u64,
    pub len: u32,
    /// word0 of the record's header as the claim found it: what an earlier lap left there.
    /// Only a repairer changes it before our commit, which replaces exactly this value.
    /// (Not read on an exclusive bus, where the commit is a plain store: 0 there.)
    pub stale: u64,
}

impl Claim {
    /// Absolute position of the record (after any padding).
    #[inline]
    pub(crate) fn position(&self) -> u64 {
        self.start + self.pad
    }

    /// Offset of the payload in the data region.
    #[inline]
    pub(crate) fn payload_offset(&self, p: &Params) -> u64 {
        (self.position() & p.mask()) + RECORD_HEADER
    }
}

/// A claim failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClaimError {
    /// No room until `head` can move (subscribers read on, or a producer a lap behind
    /// commits). `stalled_at` is the `{ position, sequence }` of an uncommitted record that
    /// stopped `head` short of what the claim needs, if that is why: its producer may have
    /// died (see [`inspect_stuck`]).
    Full { stalled_at: Option<(u64, u64)> },
    /// The tail or head in the shared file is impossible (a position past [`MAX_POSITION`], or
    /// a sequence past what a header can carry): another process wrote it.
    Corrupt { position: u64 },
    /// Exclusive bus: the tail is not where this producer's last claim left it, so another
    /// producer has written it (`expected`, `found`: tail positions).
    Conflict { expected: u64, found: u64 },
}

/// Producer-local state: the position up to which this producer may claim without looking
/// at `head` or the subscribers again, and its guess of the tail. Both may be stale (too low),
/// never too high.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ProducerCursor {
    limit: u64,
    /// The tail after this producer's last claim: the expected value of its next CAS. A wrong
    /// guess only costs a failed CAS, which returns the real value; a right one (a producer
    /// alone, or the last to claim) saves a 16-byte load on every message. On an exclusive bus
    /// it is the tail itself (nobody else writes it) once this producer has claimed.
    tail: (u64, u64),
    /// Exclusive buses: where this producer's records begin, one every sixteenth of the ring.
    marks: Marks,
}

/// How many record boundaries [`Marks`] keeps: with one every sixteenth of the ring and
/// `tail - head <= capacity`, at most 17 are ahead of head at once.
const MARKS: usize = 32;

/// Record boundaries `{ position, sequence }` that an exclusive producer claimed, about one
/// every sixteenth of the ring, and where its first claim began.
///
/// On an exclusive bus every record from this producer's first claim up to its tail is its
/// own, and committed (it commits, or abandons, each claim before the next; a loan leaked
/// with `mem::forget` is abandoned by the publisher before its next claim; a repairer does
/// not touch the claims of a live producer): nothing there can stop head. So head may
/// jump from mark to mark instead of reading every header on the way, which is a dependent
/// chain of loads from a lap ago. Before the first claim (records of an earlier producer,
/// perhaps one that died mid-claim) head still walks.
///
/// Marks are a sixteenth of the ring apart, so a jump may leave head up to that much further
/// on than a walk would: an exclusive bus retains at least 15/16 of a lap of history.
#[derive(Debug, Clone, Copy, Default)]
struct Marks {
    at: [(u64, u64); MARKS],
    /// Index of the oldest mark in `at`, and how many there are.
    first: usize,
    len: usize,
    /// Position of this producer's first claim (`None`: no claim yet).
    since: Option<u64>,
    /// The next claim at or past this position is marked (one compare per message).
    next: u64,
}

impl Marks {
    /// Notes a claim at `{ pos, seq }` (WRAP padding included: it is a record boundary).
    #[inline]
    fn note(&mut self, pos: u64, seq: u64, spacing: u64) {
        if pos < self.next {
            return;
        }
        self.next = pos + spacing;
        self.since.get_or_insert(pos);
        if self.len == MARKS {
            self.first = (self.first + 1) % MARKS;
            self.len -= 1;
        }
        self.at[(self.first + self.len) % MARKS] = (pos, seq);
        self.len += 1;
    }

    /// Where head may jump from `head` towards `target` without reading headers: the first
    /// mark at or past `target`, if it is not past `bound`; else the last mark before it, to
    /// walk on from. `None` when head is not inside this producer's own records.
    fn jump(&mut self, head: u64, target: u64, bound: u64) -> Option<(u64, u64)> {
        if !self.since.is_some_and(|s| head >= s) {
            return None;
        }
        // Marks head has passed are of no more use.
        while self.len > 0 && self.at[self.first].0 <= head {
            self.first = (self.first + 1) % MARKS;
            self.len -= 1;
        }
        let mut best = None;
        for i in 0..self.len {
            let m = self.at[(self.first + i) % MARKS];
            if m.0 > bound {
                break;
            }
            best = Some(m);
            if m.0 >= target {
                break;
            }
        }
        best
    }
}

/// Reserves a record of `len` payload bytes (the caller has checked `len <= max_message`).
///
/// On success the record header is *not* written yet: call [`write_claimed`] at once.
#[inline(always)]
pub(crate) fn try_claim<R: Region, S: Subscribers>(
    r: &R,
    subs: &S,
    p: &Params,
    cursor: &mut ProducerCursor,
    claiming: &AtomicU64,
    len: u32,
) -> Result<Claim, ClaimError> {
    debug_assert!(len <= p.max_message);
    let extent = record_extent(len as u64);
    // Our guess of the tail: what our last claim left (derived from checked values, and only
    // ever used if the real tail equals it), or a value read below and checked at once.
    let mut t = cursor.tail;
    // Whether `t` was read from the tail (or returned by a failed CAS) in this call.
    let mut fresh = false;
    loop {
        let idx = t.0 & p.mask();
        let pad = if idx + extent > p.capacity {
            p.capacity - idx
        } else {
            0
        };
        let end = t.0 + pad + extent;
        if end > cursor.limit {
            if !fresh {
                // ORDERING: Relaxed: a fresh guess, so as not to wait on a stale one; the CAS
                // below validates it (on an exclusive bus, the check just below).
                t = checked_tail(r.tail().load(Ordering::Relaxed))?;
                fresh = true;
                if p.exclusive && cursor.marks.since.is_some() && t != cursor.tail {
                    // We are not the only producer: stop before overwriting the other's
                    // records (and before it overwrites more of ours).
                    return Err(ClaimError::Conflict {
                        expected: cursor.tail.0,
                        found: t.0,
                    });
                }
                continue;
            }
            let (limit, stalled_at) = refresh_limit(r, subs, p, &mut cursor.marks, end)?;
            cursor.limit = limit;
            if end > cursor.limit {
                // ORDERING: Relaxed: a producer that waits owns no claim; say so, so that
                // a repairer does not wait for us.
                claiming.store(0, Ordering::Relaxed);
                return Err(ClaimError::Full { stalled_at });
            }
        }
        // ORDERING: Release (a plain store on x86-64): published by the Release of the claim
        // below, so that a repairer that Acquires a tail including this claim sees which
        // sequence we were claiming; Release itself keeps the earlier clearing (0, after the
        // last commit) ordered for a repairer that reads this newer value.
        claiming.store(t.1 + 1, Ordering::Release);
        let claimed = if p.exclusive {
            // The only producer: nobody else moves the tail (a second producer cannot join
            // while this one lives: one slot, held by its liveness lock), and `t` is the tail
            // we last stored or one loaded fresh above. No locked instruction, so the stores
            // of consecutive messages stream out of the store buffer instead of each waiting
            // for the last to reach other cores.
            //
            // The claimed bytes are ours before anyone can see the claim (head, and in
            // reliable mode every subscriber, passed them when the limit was computed), so the
            // WRAP and the "not yet" word0 of the record go in *before* the tail publishes the
            // claim: a reader that sees the claim (tail first, then header) never sees an
            // earlier lap's bytes where these headers are.
            exclusive_prewrite(r, p, t, pad);
            // ORDERING: Release publishes `claiming` (above) to repairers, as the CAS does,
            // and the pre-written headers to readers that Acquire this tail.
            r.tail().store((end, t.1 + 1), Ordering::Release);
            Ok(())
        } else {
            // ORDERING: AcqRel on success: Release publishes `claiming` (above) to
            // repairers; Acquire orders our later reads of head after every earlier claim.
            r.tail()
                .compare_exchange(t, (end, t.1 + 1), Ordering::AcqRel, Ordering::Relaxed)
        };
        match claimed {
            Ok(()) => {
                cursor.tail = (end, t.1 + 1);
                let stale = if p.exclusive {
                    cursor.marks.note(t.0, t.1, p.capacity / 16);
                    // The stale header is not needed (`finish_word`), and loading it would
                    // wait for a line that a reader polling this very header holds.
                    0
                } else {
                    stale_word0(r, p, t.0 + pad, t.1)
                };
                return Ok(Claim {
                    start: t.0,
                    pad,
                    seq: t.1,
                    len,
                    stale,
                });
            }
            Err(now) => {
                t = checked_tail(now)?;
                fresh = true;
            }
        }
    }
}

/// Shared bus: word0 of a record just claimed, as the commit will find it.
///
/// Normally what an earlier lap left. If those bytes happen to carry the claimed sequence in
/// a committed state (payload bytes can hold anything), they are first replaced by
/// `{ seq, EMPTY }`: otherwise, once the commit stores word1, the header would be valid
/// before the commit's CAS, readers would take it, and a producer a lap later could write
/// the same word0 bits before that CAS, which would then fail on a delivered message. Only a
/// repairer writes this word after our claim (and only after the unblock timeout); if one
/// got there first, what it wrote is the value the commit's CAS must replace.
#[inline]
fn stale_word0<R: Region>(r: &R, p: &Params, pos: u64, seq: u64) -> u64 {
    let word = r.word(pos & p.mask());
    // ORDERING: Acquire (and the Acquire of the claim's CAS): the last write of an earlier
    // lap to this word happened before head passed it, and so before our claim.
    let stale = word.load(Ordering::Acquire);
    let (found, state) = unpack_word0(stale);
    if found != seq & SEQ_MASK || matches!(state, STATE_EMPTY | STATE_REPAIRING) {
        return stale;
    }
    let empty = pack_word0(seq, STATE_EMPTY);
    // ORDERING: Relaxed: EMPTY publishes nothing; the commit's SeqCst CAS publishes the
    // record.
    match word.compare_exchange(stale, empty, Ordering::Relaxed, Ordering::Relaxed) {
        Ok(_) => empty,
        Err(now) => now,
    }
}

/// A tail read from the mapping, if it is possible: `t.1 + 1` in a claim must neither wrap (to
/// the "idle" claiming word 0) nor leave the 60 bits a header carries, and positions stay
/// below [`MAX_POSITION`].
#[inline]
fn checked_tail(t: (u64, u64)) -> Result<(u64, u64), ClaimError> {
    if t.0 > MAX_POSITION || t.1 >= SEQ_MASK {
        return Err(ClaimError::Corrupt { position: t.0 });
    }
    Ok(t)
}

/// Exclusive bus, before the tail store of a claim at `{ t.0, t.1 }` with `pad` bytes of WRAP:
/// the WRAP header and word0 = `{ seq, EMPTY }` of the record.
#[inline(always)]
fn exclusive_prewrite<R: Region>(r: &R, p: &Params, t: (u64, u64), pad: u64) {
    // ORDERING: the seqlock writer's fence (see `write_claimed`): the head we advanced goes
    // before every byte we write over the earlier lap.
    fence(Ordering::Release);
    if pad > 0 {
        write_wrap(r, p, t.0, t.1, pad);
    }
    // ORDERING: Relaxed: published by the Release store of the tail that follows.
    r.word((t.0 + pad) & p.mask())
        .store(pack_word0(t.1, STATE_EMPTY), Ordering::Relaxed);
}

/// The WRAP padding record of `pad` bytes at `pos` before the record of `seq`.
#[inline]
fn write_wrap<R: Region>(r: &R, p: &Params, pos: u64, seq: u64, pad: u64) {
    let at = pos & p.mask();
    let units = (pad / RECORD_ALIGN) as u32;
    let (w0, w1) = header(p.key, pos, seq, STATE_WRAP, units);
    // ORDERING: Relaxed: published by the Release store of word0 just below.
    r.word(at + 8).store(w1, Ordering::Relaxed);
    // ORDERING: Release: a reader that Acquires this WRAP sees its word1.
    r.word(at).store(w0, Ordering::Release);
}

/// Writes the WRAP padding of `c`, if it has one (on an exclusive bus the claim wrote it). The record's own header is written only
/// at its commit ([`commit`] / [`abandon`]): until then word0 keeps whatever an earlier lap
/// left, so a reader polling it sees one change, not two, and a producer dying before the
/// commit leaves an unheadered claim that the repairer sizes from the next header.
#[inline]
pub(crate) fn write_claimed<R: Region>(r: &R, p: &Params, c: &Claim) {
    if p.exclusive {
        return;
    }
    // ORDERING: a lossy reader validates a copy by re-reading head after an Acquire fence;
    // this Release fence orders the head we advanced (or Acquired from another producer)
    // before every byte we write over the earlier lap from here on, the WRAP header
    // included (the seqlock writer's fence).
    fence(Ordering::Release);
    if c.pad > 0 {
        write_wrap(r, p, c.start, c.seq, c.pad);
    }
}

/// Outcome of [`commit`] / [`abandon`] when a repairer got there first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unblocked;

/// Publishes a claimed record (header DATA), then clears `claiming`.
///
/// Fails only if a repairer judged this producer dead and turned the record into padding.
#[inline]
pub(crate) fn commit<R: Region>(
    r: &R,
    p: &Params,
    c: &Claim,
    claiming: &AtomicU64,
) -> Result<(), Unblocked> {
    finish(r, p, c, claiming, STATE_DATA)
}

/// Gives a claimed record up (header ABANDONED: consumes its sequence, delivers nothing),
/// then clears `claiming`.
#[inline]
pub(crate) fn abandon<R: Region>(
    r: &R,
    p: &Params,
    c: &Claim,
    claiming: &AtomicU64,
) -> Result<(), Unblocked> {
    finish(r, p, c, claiming, STATE_ABANDONED)
}

#[inline]
fn finish<R: Region>(
    r: &R,
    p: &Params,
    c: &Claim,
    claiming: &AtomicU64,
    state: u64,
) -> Result<(), Unblocked> {
    let result = finish_word(r, p, c, state);
    // ORDERING: Release: a repairer that sees 0 here sees the record's final state.
    claiming.store(0, Ordering::Release);
    result
}

#[inline]
fn finish_word<R: Region>(r: &R, p: &Params, c: &Claim, state: u64) -> Result<(), Unblocked> {
    let at = c.position() & p.mask();
    let word = r.word(at);
    let (word0, word1) = header(p.key, c.position(), c.seq, state, c.len);
    if p.exclusive {
        // A repairer replaces a claim only once its producer's liveness lock is gone, so
        // while we live nobody else writes this header: plain stores commit, and nothing is
        // loaded from a line that a polling reader holds. The caller orders the commit before
        // its check of the readers-waiting count (`wait::ReaderWake`).
        // ORDERING: Release: see the shared path below.
        r.word(at + 8).store(word1, Ordering::Release);
        // ORDERING: Release: a reader whose Acquire load sees the new state sees word1 and
        // the payload.
        word.store(word0, Ordering::Release);
        return Ok(());
    }
    // word0 may hold anything an earlier lap left, our own sequence included (a payload word
    // can equal it): judge by change, not by content. Unless a repairer took the claim, it
    // still holds what the claim found, and the CAS below replaces exactly that; a repairer
    // that turned the claim into a GAP meanwhile wins, and we learn it.
    // ORDERING: Relaxed: a repair that already happened makes the CAS fail anyway; this
    // only spares word1 in the common case of a repair long done.
    if word.load(Ordering::Relaxed) != c.stale {
        return Err(Unblocked);
    }
    // word1 goes in just before the commit point (readers read it only after seeing word0).
    // ORDERING: Release (a plain store on x86-64), with the reader's Acquire load of word1:
    // stale bytes can make word0 look committed before it is (a payload word equal to the
    // header we are about to write); a reader that then finds our word1 valid also sees the
    // payload written before it, on weakly ordered CPUs too.
    r.word(at + 8).store(word1, Ordering::Release);
    // ORDERING: SeqCst. Release so that a reader whose Acquire load sees the new state sees
    // the payload; SeqCst because the caller next loads the readers-waiting count, and a
    // sleeping reader increments that count and then SeqCst-loads this word (the Dekker
    // pattern of design question 6: one of the two must see the other).
    word.compare_exchange(c.stale, word0, Ordering::SeqCst, Ordering::Relaxed)
        .map(|_| ())
        .map_err(|_| Unblocked)
}

/// Computes a new claim limit for a claim ending at `end`, moving `head` forward if needed.
/// Also returns where the walk of `head` stopped at an uncommitted record, if it did.
#[cold]
#[inline(never)]
fn refresh_limit<R: Region, S: Subscribers>(
    r: &R,
    subs: &S,
    p: &Params,
    marks: &mut Marks,
    end: u64,
) -> Result<(u64, Option<(u64, u64)>), ClaimError> {
    let target = end.saturating_sub(p.capacity);
    loop {
        // ORDERING: SeqCst: part of the join protocol, see `limit_after_head`.
        let h = r.head().load(Ordering::SeqCst);
        if h.0 > MAX_POSITION {
            // Written by another process: nothing can be claimed against it.
            return Err(ClaimError::Corrupt { position: h.0 });
        }
        if h.0 >= target {
            return Ok((limit_after_head(subs, p, h.0), None));
        }
        // Bytes up to `bound` may be discarded: everything, in lossy mode; what every
        // subscriber has read, in reliable mode.
        // ORDERING: Acquire: records before the tail we see were claimed before; their
        // headers are checked one by one below anyway.
        let tail = r.tail().load(Ordering::Acquire).0;
        let bound = match p.mode {
            Mode::Lossy => tail,
            Mode::Reliable => subs.min_position().map_or(tail, |m| m.min(tail)),
        };
        let goal = (target + p.head_chunk()).min(bound).max(target);
        let jumped = if p.exclusive {
            marks.jump(h.0, target, bound)
        } else {
            None
        };
        let (next, stalled) = match jumped {
            Some(m) if m.0 >= target => (m, false),
            // Short of the target: walk the rest from the mark.
            Some(m) => walk(r, p, m, goal, bound),
            None => walk(r, p, h, goal, bound),
        };
        let stalled_at = (stalled && next.0 < target).then_some(next);
        if next.0 == h.0 {
            return Ok((limit_after_head(subs, p, h.0), stalled_at));
        }
        // ORDERING: SeqCst: the join protocol (`limit_after_head`) and lossy readers' torn-copy
        // check both order themselves against this update of head.
        if r.head()
            .compare_exchange(h, next, Ordering::SeqCst, Ordering::Relaxed)
            .is_ok()
            && next.0 < target
        {
            return Ok((limit_after_head(subs, p, next.0), stalled_at));
        }
    }
}

/// The claim limit given a head position that was just SeqCst-loaded or CAS'd.
///
/// # The join protocol (design question 8)
///
/// A subscriber joins by storing its start position in its slot (SeqCst), then SeqCst-loading
/// `head`; if `head` has passed its start, it picks a new start and repeats. A producer
/// SeqCst-loads (or CASes) `head`, *then* scans the slots (SeqCst loads) and never claims
/// beyond `min(head, lowest subscriber) + capacity`. In the single total order of SeqCst
/// operations, either the producer's scan comes after the subscriber's store (the producer
/// respects the new start), or the subscriber's head load comes after the producer's head
/// access and sees a head at least as new (the subscriber re-picks its start). So no producer
/// overwrites a start that a subscriber has validated.
fn limit_after_head<S: Subscribers>(subs: &S, p: &Params, head: u64) -> u64 {
    let floor = match p.mode {
        Mode::Lossy => head,
        Mode::Reliable => subs.min_position().map_or(head, |m| m.min(head)),
    };
    floor.saturating_add(p.capacity)
}

/// Walks from `from` over committed records while below `goal` and `bound`; returns the first
/// boundary reached, and whether the walk stopped early at a record that is not committed (or
/// not valid): one that a producer a lap behind is still writing, or that a dead producer
/// left behind.
fn walk<R: Region>(
    r: &R,
    p: &Params,
    from: (u64, u64),
    goal: u64,
    bound: u64,
) -> ((u64, u64), bool) {
    let (mut pos, mut seq) = from;
    while pos < goal && pos < bound {
        match peek(r, p, pos, seq) {
            Peek::Data { extent, .. } => {
                pos += extent;
                seq += 1;
            }
            Peek::Skip { extent, seqs, .. } => {
                let Some(next) = seq.checked_add(seqs) else {
                    // Only a scribbled header counts that many: stop there.
                    return ((pos, seq), true);
                };
                pos += extent;
                seq = next;
            }
            Peek::NotReady | Peek::Corrupt(_) => return ((pos, seq), true),
        }
        if pos > bound {
            // A record crossing the bound cannot be: the bound is a boundary. Do not move.
            return (from, false);
        }
    }
    ((pos, seq), false)
}

/// Why a record header cannot be trusted. Carried by `Corrupt` errors of the subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordProblem {
    /// word0 has the expected sequence but a state no producer writes.
    #[error("unknown record state {state}")]
    UnknownState {
        /// The state bits found.
        state: u8,
    },
    /// The keyed check of `{ position, word0, low }` in word1 does not match.
    #[error("record check mismatch")]
    CheckMismatch,
    /// A message longer than the bus's maximum.
    #[error("record length {len} exceeds the bus maximum {max}")]
    TooLong {
        /// Length found.
        len: u64,
        /// The bus's max message.
        max: u64,
    },
    /// The record would run past the end of the data region.
    #[error("record of {extent} bytes at offset {offset} runs past the end of the ring")]
    PastEnd {
        /// Offset in the data region.
        offset: u64,
        /// Bytes the record claims.
        extent: u64,
    },
    /// A ring position in the shared file beyond [`crate::layout::MAX_POSITION`]: written by
    /// another process.
    #[error("ring position {position} is out of range")]
    PositionOutOfRange {
        /// The position found.
        position: u64,
    },
    /// A record at a position the tail has passed ends past the tail (claims are whole).
    #[error("a record ends at {end}, past the tail {tail}")]
    PastTail {
        /// Where the record ends.
        end: u64,
        /// The tail position.
        tail: u64,
    },
    /// A skip would take the reader's sequence past 2^64.
    #[error("skipping {skip} sequences from {seq} overflows")]
    SequenceOutOfRange {
        /// The reader's sequence.
        seq: u64,
        /// The sequences the record says it consumes.
        skip: u64,
    },
    /// A valid header of another sequence sits where this reader expects `expected`: the
    /// reader's position and the ring disagree.
    #[error("expected sequence {expected} but a valid record of sequence {found} is here")]
    SequenceMismatch {
        /// The sequence this reader expects.
        expected: u64,
        /// The sequence the header carries (its 60 stored bits).
        found: u64,
    },
    /// The reader's sequence is at or past the tail's although the tail's position is past
    /// the reader's: the ring's positions and sequences disagree.
    #[error("reader sequence {seq} is not below the tail sequence {tail_seq}")]
    SequencePastTail {
        /// The reader's sequence.
        seq: u64,
        /// The tail's sequence.
        tail_seq: u64,
    },
    /// Reliable mode: the ring has moved on past this reader (the tail more than a lap ahead,
    /// or the head beyond it). Producers no longer waited for it: its slot was taken from it
    /// (evicted while alive, after its process lost the liveness lock by closing descriptors it
    /// did not own), or another process wrote the ring's positions.
    #[error("the ring moved past this reader at {position} (tail {tail}): its slot was lost")]
    Overrun {
        /// The reader's position.
        position: u64,
        /// The tail position.
        tail: u64,
    },
    /// A run of claims without headers longer than its bytes can hold (every claim takes at
    /// least 16 bytes).
    #[error("{count} sequences without headers: more than the bytes can hold ({max})")]
    GapTooLong {
        /// Sequences in the run.
        count: u64,
        /// Most a repair covers.
        max: u64,
    },
    /// A WRAP padding record that does not end exactly at the end of the region.
    #[error(
        "wrap padding of {extent} bytes at offset {offset} does not reach the end of the ring"
    )]
    BadWrap {
        /// Offset in the data region.
        offset: u64,
        /// Bytes it claims.
        extent: u64,
    },
}

/// What sits at a reader's position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Peek {
    /// A committed message: payload at `offset` (in the region), `len` bytes.
    Data { offset: u64, len: u32, extent: u64 },
    /// Padding, an abandoned loan or a repaired record: skip `extent` bytes, `seqs` sequences.
    Skip {
        extent: u64,
        seqs: u64,
        kind: SkipKind,
    },
    /// Nothing committed here yet (or, in lossy mode, possibly overwritten: check head).
    NotReady,
    /// A header with the expected sequence that breaks a rule.
    Corrupt(RecordProblem),
}

/// Why a record is skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SkipKind {
    /// Padding at the end of the region.
    Wrap,
    /// A loan dropped by its producer.
    Abandoned,
    /// Records of dead producers, turned into padding by a repairer.
    Repaired,
}

/// Reads the header at `pos`, expecting sequence `seq`. Never reads outside the region.
///
/// The caller has observed a tail past `pos` (see [`Reader`]): bytes beyond the tail are an
/// earlier lap's and are never interpreted.
#[inline(always)]
pub(crate) fn peek<R: Region>(r: &R, p: &Params, pos: u64, seq: u64) -> Peek {
    let at = pos & p.mask();
    debug_assert_eq!(at % RECORD_ALIGN, 0);
    // ORDERING: Acquire pairs with the producer's Release store / SeqCst CAS of word0: seeing
    // the state means seeing word1 and the payload written before it.
    let w0 = r.word(at).load(Ordering::Acquire);
    let (found_seq, state) = unpack_word0(w0);
    if found_seq != seq & SEQ_MASK || matches!(state, STATE_EMPTY | STATE_REPAIRING) {
        return Peek::NotReady;
    }
    // ORDERING: Acquire: pairs with the producer's Release store of word1, for the case where
    // the word0 we read is stale bytes that happen to match (see `finish_word`).
    let (low, high) = unpack_word1(r.word(at + 8).load(Ordering::Acquire));
    // The keyed check binds position, word0 (sequence and state) and `low`: an earlier lap's
    // header, a payload, or word0 and word1 of two different writes fail it (layout doc).
    if high != record_check(p.key, pos, w0, low) {
        return Peek::Corrupt(RecordProblem::CheckMismatch);
    }
    let units_extent = low as u64 * RECORD_ALIGN;
    match state {
        STATE_DATA | STATE_ABANDONED => {
            if low > p.max_message {
                return Peek::Corrupt(RecordProblem::TooLong {
                    len: low as u64,
                    max: p.max_message as u64,
                });
            }
            let extent = record_extent(low as u64);
            if at + extent > p.capacity {
                return Peek::Corrupt(RecordProblem::PastEnd { offset: at, extent });
            }
            if state == STATE_DATA {
                Peek::Data {
                    offset: at + RECORD_HEADER,
                    len: low,
                    extent,
                }
            } else {
                Peek::Skip {
                    extent,
                    seqs: 1,
                    kind: SkipKind::Abandoned,
                }
            }
        }
        STATE_WRAP => {
            if units_extent == 0 || at + units_extent != p.capacity {
                return Peek::Corrupt(RecordProblem::BadWrap {
                    offset: at,
                    extent: units_extent,
                });
            }
            Peek::Skip {
                extent: units_extent,
                seqs: 0,
                kind: SkipKind::Wrap,
            }
        }
        STATE_GAP => Peek::Skip {
            extent: RECORD_HEADER,
            seqs: low as u64,
            kind: SkipKind::Repaired,
        },
        STATE_FILL => {
            if units_extent == 0 || at + units_extent > p.capacity {
                return Peek::Corrupt(RecordProblem::PastEnd {
                    offset: at,
                    extent: units_extent,
                });
            }
            Peek::Skip {
                extent: units_extent,
                seqs: 0,
                kind: SkipKind::Repaired,
            }
        }
        other => Peek::Corrupt(RecordProblem::UnknownState { state: other as u8 }),
    }
}

/// One step of a [`Reader`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Polled {
    /// A committed message at the reader's position: payload at `offset` of the region, `len`
    /// bytes, `extent` bytes of ring. Not consumed yet ([`Reader::consume`]).
    Data { offset: u64, len: u32, extent: u64 },
    /// Nothing to read yet.
    Empty,
    /// Lossy mode: this many messages were lost (lapped, or records of dead producers); the
    /// reader has moved past them.
    Lost(u64),
    /// The record at the reader's position breaks the format. Until the unblock timeout this
    /// may still be a record being written over bytes that happen to carry its sequence.
    Corrupt(RecordProblem),
}

/// Most padding records one poll skips before it reports "nothing yet".
const MAX_SKIPS_PER_POLL: u32 = 1024;

/// The read side of the protocol: where a reader is, and every rule of moving on. The
/// subscriber, the loom models and the property tests all drive this one state machine.
///
/// # Invariants
///
/// * `pos` is a record boundary and `seq` the sequence of the record there, unless the ring's
///   bytes say otherwise (then a poll reports `Corrupt`).
/// * `tail_seen` is a tail position this reader has Acquire-loaded (so `<= MAX_POSITION`):
///   it may be stale (too low), never ahead of the real tail. Bytes at or past it are never
///   interpreted: they are an earlier lap's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reader {
    pub pos: u64,
    pub seq: u64,
    tail_seen: u64,
    /// Messages lost so far (lossy mode, and repaired records in lossy mode).
    pub lost: u64,
    /// Sequences skipped because their producers died (repaired records).
    pub unblocked: u64,
}

impl Reader {
    /// A reader at `{ pos, seq }` (a position picked from the tail, the head, or a saved one).
    pub(crate) fn new(pos: u64, seq: u64) -> Reader {
        Reader {
            pos,
            seq,
            tail_seen: 0,
            lost: 0,
            unblocked: 0,
        }
    }

    /// The fast path: a committed message at the reader's position, if the tail is past it
    /// and the header there is a committed DATA record. The tail is loaded only when the
    /// reader has reached the one it saw last: once per batch of records already written.
    #[inline(always)]
    pub(crate) fn peek_data<R: Region>(&mut self, r: &R, p: &Params) -> Option<(u64, u32, u64)> {
        // Only bytes below a tail observed *before* reading them count (layout doc): a header
        // read first and checked against a tail loaded after could predate the claim.
        if self.pos >= self.tail_seen {
            // ORDERING: Acquire, as in `tail_is_past` (which also reports an impossible tail;
            // here it is only not taken).
            let t = r.tail().load(Ordering::Acquire).0;
            if t <= self.pos || t > MAX_POSITION {
                return None;
            }
            self.tail_seen = t;
        }
        match peek(r, p, self.pos, self.seq) {
            Peek::Data {
                offset,
                len,
                extent,
            } => Some((offset, len, extent)),
            _ => None,
        }
    }

    /// Moves past the message at the reader's position (after its payload was taken).
    #[inline(always)]
    pub(crate) fn consume(&mut self, extent: u64) {
        self.pos += extent;
        self.seq += 1;
    }

    /// Whether the tail is past the reader's position, loading it again if the one it saw is
    /// not. `Err` if the tail in the mapping is impossible.
    #[inline]
    fn tail_is_past<R: Region>(&mut self, r: &R) -> Result<bool, RecordProblem> {
        if self.pos < self.tail_seen {
            return Ok(true);
        }
        // ORDERING: Acquire: the claims below this tail happened before; their headers carry
        // their own Release/Acquire pairing.
        let t = r.tail().load(Ordering::Acquire).0;
        if t > MAX_POSITION {
            return Err(RecordProblem::PositionOutOfRange { position: t });
        }
        self.tail_seen = t;
        Ok(self.pos < t)
    }

    /// One step: skips padding, validates against the tail and (lossy mode) the head,
    /// resynchronises when lapped, counts what is lost. Never interprets bytes at or past the
    /// tail, never moves past the tail, and makes no arithmetic on values from the mapping that
    /// could overflow.
    pub(crate) fn poll<R: Region>(&mut self, r: &R, p: &Params) -> Polled {
        let lossy = p.mode == Mode::Lossy;
        // Padding is rare (one WRAP a lap, abandoned loans, repairs); a long run of it can
        // only be bytes another process wrote. Bound the work of one call either way.
        for _ in 0..MAX_SKIPS_PER_POLL {
            // The tail first, then the header: only what lies below a tail observed before it
            // was read counts.
            match self.tail_is_past(r) {
                Ok(true) => {}
                Ok(false) => return Polled::Empty,
                Err(problem) => return Polled::Corrupt(problem),
            }
            let peeked = peek(r, p, self.pos, self.seq);
            if lossy && !matches!(peeked, Peek::Data { .. }) {
                // Whatever we read may be bytes of a newer lap: trust it only while head has
                // not passed our position. (Data is validated after its copy instead.)
                if let Err(head) = still_retained(r, self.pos) {
                    return self.resync(head);
                }
            }
            match peeked {
                Peek::Data {
                    offset,
                    len,
                    extent,
                } => {
                    return Polled::Data {
                        offset,
                        len,
                        extent,
                    }
                }
                Peek::Skip { extent, seqs, kind } => {
                    let Some(seq) = self.seq.checked_add(seqs) else {
                        return Polled::Corrupt(RecordProblem::SequenceOutOfRange {
                            seq: self.seq,
                            skip: seqs,
                        });
                    };
                    // `pos < tail_seen <= MAX_POSITION` and `extent <= capacity`: no overflow.
                    let end = self.pos + extent;
                    if end > self.tail_seen {
                        // A record is claimed whole: one that ends past the tail is not one.
                        // ORDERING: Acquire, as in `tail_is_past`.
                        let t = r.tail().load(Ordering::Acquire).0;
                        if end > t {
                            return Polled::Corrupt(RecordProblem::PastTail { end, tail: t });
                        }
                    }
                    self.pos = end;
                    self.seq = seq;
                    if kind == SkipKind::Repaired && seqs > 0 {
                        self.unblocked += seqs;
                        if lossy {
                            self.lost += seqs;
                            return Polled::Lost(seqs);
                        }
                    }
                }
                Peek::NotReady => return Polled::Empty,
                Peek::Corrupt(problem) => return Polled::Corrupt(problem),
            }
        }
        Polled::Empty
    }

    /// Lossy mode: after copying the payload of the record at the reader's position out,
    /// whether the copy can be trusted; if not, moves to the oldest retained record and says
    /// how many messages were lost.
    #[inline]
    pub(crate) fn validate_copy<R: Region>(&mut self, r: &R) -> Result<(), Polled> {
        match still_retained(r, self.pos) {
            Ok(()) => Ok(()),
            Err(head) => Err(self.resync(head)),
        }
    }

    /// Lossy mode: moves to the oldest retained record after being lapped.
    fn resync(&mut self, head: (u64, u64)) -> Polled {
        if head.0 > MAX_POSITION {
            // Written by another process: do not follow it.
            return Polled::Corrupt(RecordProblem::PositionOutOfRange { position: head.0 });
        }
        let n = head.1.saturating_sub(self.seq);
        self.pos = head.0;
        self.seq = head.1;
        self.lost += n;
        Polled::Lost(n)
    }

    /// Whether a sleeping reader has something to do now: [`is_ready`] at its position.
    pub(crate) fn is_ready<R: Region>(&self, r: &R, p: &Params) -> bool {
        is_ready(r, p, self.pos, self.seq)
    }
}

/// Lossy mode: after copying a record at `pos` out, whether the copy can be trusted.
///
/// Returns the head found if the record was reclaimed (the copy may be torn).
#[inline]
pub(crate) fn still_retained<R: Region>(r: &R, pos: u64) -> Result<(), (u64, u64)> {
    // ORDERING: Acquire fence after the copy, pairing with the Release fence a producer
    // makes after moving head and before writing bytes (`write_claimed`): if our copy saw
    // any byte of a record that overwrote this one, the head we load below has passed it.
    fence(Ordering::Acquire);
    let h = r.head().load(Ordering::Relaxed);
    if h.0 > pos {
        Err(h)
    } else {
        Ok(())
    }
}

/// Whether a reader at `{ pos, seq }` has something to do: a committed (or corrupt) record,
/// or, in lossy mode, a head that has passed it.
///
/// SeqCst loads: this is the reader's re-check in the sleep protocol (see `wait`), ordered
/// against the producer's SeqCst commit.
pub(crate) fn is_ready<R: Region>(r: &R, p: &Params, pos: u64, seq: u64) -> bool {
    // ORDERING: SeqCst: the Dekker pattern of design question 6.
    let (found, state) = unpack_word0(r.word(pos & p.mask()).load(Ordering::SeqCst));
    if found == seq & SEQ_MASK && !matches!(state, STATE_EMPTY | STATE_REPAIRING) {
        // Bytes of an earlier lap can carry our sequence: ready only if they lie below the
        // tail and the header is whole. A genuine commit was claimed first, and our SeqCst
        // (so Acquire) load of it makes that claim visible to the tail load. (A commit after
        // our load writes word0 and then finds our waiter count: no lost wake.)
        // ORDERING: Acquire, as just said.
        return r.tail().load(Ordering::Acquire).0 > pos
            && !matches!(peek(r, p, pos, seq), Peek::Corrupt(_));
    }
    // ORDERING: SeqCst, as above: a lapping producer moved head before overwriting.
    p.mode == Mode::Lossy && r.head().load(Ordering::SeqCst).0 > pos
}

/// `{ position, sequence }` of the next record to be claimed.
pub(crate) fn latest<R: Region>(r: &R) -> (u64, u64) {
    // ORDERING: Acquire: a subscriber starting here reads records claimed after this point;
    // their headers carry their own Release/Acquire pairing.
    r.tail().load(Ordering::Acquire)
}

/// `{ position, sequence }` of the oldest retained record.
pub(crate) fn oldest<R: Region>(r: &R) -> (u64, u64) {
    // ORDERING: SeqCst: the subscriber's join validation (see `limit_after_head`).
    r.head().load(Ordering::SeqCst)
}

/// Why a start position cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PositionError {
    /// Outside `[head, tail]`: already discarded, or not written yet.
    NotRetained { oldest: u64, next: u64 },
    /// Inside the ring but not at the start of a record.
    NotARecord,
}

/// The sequence of the record that starts at `pos`, for a subscriber resuming there.
///
/// A record claimed but not yet headered reads as `NotARecord` for now; callers may retry.
pub(crate) fn sequence_at<R: Region>(r: &R, p: &Params, pos: u64) -> Result<u64, PositionError> {
    let head = oldest(r);
    let tail = latest(r);
    if pos < head.0 || pos > tail.0 {
        return Err(PositionError::NotRetained {
            oldest: head.0,
            next: tail.0,
        });
    }
    if pos == tail.0 {
        return Ok(tail.1);
    }
    if pos % RECORD_ALIGN != 0 {
        return Err(PositionError::NotARecord);
    }
    // ORDERING: Acquire, as in `peek`.
    let (found, _) = unpack_word0(r.word(pos & p.mask()).load(Ordering::Acquire));
    // Rebuild the full sequence from its 60 stored bits: it lies in [head.seq, tail.seq], the
    // tail's own sequence only for padding that consumes none (the FILLs after a GAP that ran
    // to the tail: a lossy reader that reported the GAP's loss stands on one).
    let seq = head.1.wrapping_add(found.wrapping_sub(head.1) & SEQ_MASK);
    if seq > tail.1 {
        return Err(PositionError::NotARecord);
    }
    // A record not committed yet has no header to recognise: the caller may try again.
    match peek(r, p, pos, seq) {
        Peek::Data { .. } | Peek::Skip { .. } if seq < tail.1 => {}
        Peek::Skip { seqs: 0, .. } => {}
        _ => return Err(PositionError::NotARecord),
    }
    if p.mode == Mode::Lossy && still_retained(r, pos).is_err() {
        let head = oldest(r);
        return Err(PositionError::NotRetained {
            oldest: head.0,
            next: tail.0,
        });
    }
    Ok(seq)
}

// ---- repairing the records of dead producers (design question 2) -------------------------

/// What holds a reader (or a walk of `head`) at `{ pos, seq }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stuck {
    /// Nothing: the tail has not passed `pos`, or the record is committed by now.
    No,
    /// Claims without headers: `[pos, end)` holds the claims of sequences `[seq, end_seq)`,
    /// none of which wrote a header yet.
    Unheadered { end: u64, end_seq: u64 },
    /// What sits at `pos` cannot be a claim of `seq`, and must not be repaired over: a valid
    /// header of another sequence, or a tail whose sequence is not past `seq`.
    Impossible(RecordProblem),
}

/// Looks at the record at `{ pos, seq }`.
///
/// A claim whose producer died before writing its header has no length anywhere. Its
/// length is recovered from what follows (design question 2): claims are contiguous and in
/// sequence order, so the claims of `seq..s` fill `[pos, q)` exactly, where `q` is the first
/// position after `pos` holding a valid header of a later sequence `s` (a header carries the
/// keyed check of its own position and word0, so stale or payload bytes do not pass), or
/// the tail if there is none. Which producers may own those claims is in their slots'
/// *claiming* words; the caller repairs only if none of them is alive.
pub(crate) fn inspect_stuck<R: Region>(r: &R, p: &Params, pos: u64, seq: u64) -> Stuck {
    let tail = latest(r);
    if tail.0 <= pos {
        return Stuck::No;
    }
    // More than a lap between a reader and the tail is not a crash: a lapped lossy reader
    // (which resynchronises instead), or, in reliable mode, a reader the producers no longer
    // wait for (its slot was lost) or a scribbled tail. Never scan or repair that.
    if tail.0 - pos > p.capacity || oldest(r).0 > pos {
        return match p.mode {
            Mode::Lossy => Stuck::No,
            Mode::Reliable => Stuck::Impossible(RecordProblem::Overrun {
                position: pos,
                tail: tail.0,
            }),
        };
    }
    if tail.1 < seq {
        return Stuck::Impossible(RecordProblem::SequencePastTail {
            seq,
            tail_seq: tail.1,
        });
    }
    if let Some(found) = valid_header_seq(r, p, pos) {
        if found == seq & SEQ_MASK {
            // Committed (or abandoned, or padding) by now: nothing to do.
            return Stuck::No;
        }
        // Never repair over a header that validates for its own position and sequence.
        return Stuck::Impossible(RecordProblem::SequenceMismatch {
            expected: seq,
            found,
        });
    }
    let mut q = pos + RECORD_ALIGN;
    while q < tail.0 {
        if let Some(s) = header_seq_at(r, p, q, seq, tail.1) {
            return Stuck::Unheadered { end: q, end_seq: s };
        }
        q += RECORD_ALIGN;
    }
    Stuck::Unheadered {
        end: tail.0,
        end_seq: tail.1,
    }
}

/// The (60-bit) sequence of a header at `pos` that validates for `pos` (any state a
/// producer or repairer writes), or `None` if what is there is not such a header (stale or
/// scribbled bytes, an unfinished repair).
fn valid_header_seq<R: Region>(r: &R, p: &Params, pos: u64) -> Option<u64> {
    let at = pos & p.mask();
    // ORDERING: Acquire, as in `peek`.
    let w0 = r.word(at).load(Ordering::Acquire);
    let (found, state) = unpack_word0(w0);
    if !matches!(
        state,
        STATE_DATA | STATE_ABANDONED | STATE_WRAP | STATE_GAP | STATE_FILL
    ) {
        return None;
    }
    // ORDERING: Acquire, as in `peek`.
    let (low, high) = unpack_word1(r.word(at + 8).load(Ordering::Acquire));
    (high == record_check(p.key, pos, w0, low)).then_some(found)
}

/// Whether the header at `pos` may be replaced by a repair of `seq`: it is not a valid header
/// of any sequence (stale bytes of an earlier lap, scribbled bytes, or an unfinished repair).
fn replaceable<R: Region>(r: &R, p: &Params, pos: u64) -> bool {
    valid_header_seq(r, p, pos).is_none()
}

/// The sequence of a valid record header at `q` whose sequence lies in `[from, before)`.
fn header_seq_at<R: Region>(r: &R, p: &Params, q: u64, from: u64, before: u64) -> Option<u64> {
    let found = valid_header_seq(r, p, q)?;
    // Rebuild the full sequence from its 60 stored bits.
    let s = from.wrapping_add(found.wrapping_sub(from) & SEQ_MASK);
    // The stuck sequence itself counts too: found after `pos`, it means `[pos, q)` holds no
    // claim at all (bytes a repairer that died before its GAP left covered by FILLs).
    (s >= from && s < before).then_some(s)
}

/// Turns `[pos, end)`, the claims of sequences `[seq, seq + count)` whose producers all died
/// before writing a header, into padding. False if a header appeared at `pos` meanwhile.
///
/// Takes word0 at `pos` first (a CAS to REPAIRING from the value found), so that a late
/// commit either won already or fails. Then covers `[pos + 16, end)` with FILL records (cut at
/// the end of the region and where a header's 32-bit unit count ends), and last writes the
/// 16-byte GAP at `pos` that consumes the `count` sequences: its word0 is the commit point,
/// and a reader that sees it finds every FILL already written.
pub(crate) fn write_gap<R: Region>(
    r: &R,
    p: &Params,
    pos: u64,
    seq: u64,
    end: u64,
    count: u32,
) -> bool {
    const MAX_PIECE: u64 = u32::MAX as u64 * RECORD_ALIGN;
    debug_assert!(end >= pos + RECORD_HEADER && end - pos <= p.capacity);
    let at = pos & p.mask();
    // ORDERING: Acquire: the value we replace; the CAS fails if it changed.
    let w0 = r.word(at).load(Ordering::Acquire);
    if !replaceable(r, p, pos) {
        return false;
    }
    // Take word0 before touching word1: a commit racing us either won already (our CAS
    // fails and we leave word1 alone) or fails its own CAS. (A producer only races a repair
    // if it was judged dead while alive; its word1 may then land on ours, which reads as a
    // corrupt header and is repaired again.)
    // ORDERING: Relaxed: REPAIRING publishes nothing; readers treat it as not ready.
    if r.word(at)
        .compare_exchange(
            w0,
            pack_word0(seq, STATE_REPAIRING),
            Ordering::Relaxed,
            Ordering::Relaxed,
        )
        .is_err()
    {
        return false;
    }
    let next_seq = seq + count as u64;
    let mut q = pos + RECORD_HEADER;
    while q < end {
        let len = (end - q).min(p.capacity - (q & p.mask())).min(MAX_PIECE);
        let fat = q & p.mask();
        let (f0, f1) = header(p.key, q, next_seq, STATE_FILL, (len / RECORD_ALIGN) as u32);
        // ORDERING: Relaxed: published by the Release store of word0 below.
        r.word(fat + 8).store(f1, Ordering::Relaxed);
        // ORDERING: Release: published again by the GAP's store; a walk of `head` or a
        // repairer's scan that reads it sees its word1.
        r.word(fat).store(f0, Ordering::Release);
        q += len;
    }
    crate::fault::hit(crate::fault::Point::MidRepair);
    let (g0, g1) = header(p.key, pos, seq, STATE_GAP, count);
    // ORDERING: Relaxed: we hold word0 (REPAIRING); the SeqCst store of GAP publishes this.
    r.word(at + 8).store(g1, Ordering::Relaxed);
    // ORDERING: SeqCst: the commit point; Release for the word1 and FILLs above, SeqCst
    // against sleeping readers' re-check.
    r.word(at).store(g0, Ordering::SeqCst);
    true
}

#[cfg(test)]
pub(crate) mod heap {
    //! A ring on heap memory, for unit tests, loom models (and Miri).
    use super::*;

    pub(crate) struct HeapRegion {
        pub tail: Pair,
        pub head: Pair,
        pub words: Vec<AtomicU64>,
    }

    /// What one step of a test reader got: a message `(sequence, bytes)`, or a loss.
    #[derive(Debug, PartialEq)]
    pub(crate) enum Got {
        Msg(u64, Vec<u8>),
        Lost(u64),
    }

    /// One step of a test reader, driving the subscriber's own read path ([`Reader`]) and
    /// copying the payload out as `Subscriber::take_into` does. `Ok(None)`: nothing yet.
    pub(crate) fn read_one(
        r: &HeapRegion,
        p: &Params,
        reader: &mut Reader,
    ) -> Result<Option<Got>, RecordProblem> {
        match reader.poll(r, p) {
            Polled::Data {
                offset,
                len,
                extent,
            } => {
                let mut v = vec![0; len as usize];
                // SAFETY: peek bounds-checked the payload.
                unsafe { r.read_bytes(offset, &mut v) };
                if p.mode == Mode::Lossy {
                    match reader.validate_copy(r) {
                        Ok(()) => {}
                        Err(Polled::Lost(n)) => return Ok(Some(Got::Lost(n))),
                        Err(Polled::Corrupt(e)) => return Err(e),
                        Err(other) => unreachable!("{other:?}"),
                    }
                }
                let got = Got::Msg(reader.seq, v);
                reader.consume(extent);
                Ok(Some(got))
            }
            Polled::Lost(n) => Ok(Some(Got::Lost(n))),
            Polled::Empty => Ok(None),
            Polled::Corrupt(e) => Err(e),
        }
    }

    impl std::fmt::Debug for HeapRegion {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("HeapRegion")
                .field("tail", &self.tail.load(Ordering::Relaxed))
                .field("head", &self.head.load(Ordering::Relaxed))
                .field("bytes", &(self.words.len() * 8))
                .finish()
        }
    }

    impl HeapRegion {
        pub(crate) fn new(capacity: u64, initial: u64) -> Self {
            HeapRegion {
                tail: Pair::new(initial, 0),
                head: Pair::new(initial, 0),
                words: (0..capacity / 8).map(|_| AtomicU64::new(0)).collect(),
            }
        }
    }

    impl Region for HeapRegion {
        fn tail(&self) -> &Pair {
            &self.tail
        }
        fn head(&self) -> &Pair {
            &self.head
        }
        fn word(&self, offset: u64) -> &AtomicU64 {
            &self.words[(offset / 8) as usize]
        }
        unsafe fn write_bytes(&self, offset: u64, src: &[u8]) {
            for (i, chunk) in src.chunks(8).enumerate() {
                let mut b = [0u8; 8];
                b[..chunk.len()].copy_from_slice(chunk);
                self.word(offset + 8 * i as u64)
                    .store(u64::from_ne_bytes(b), Ordering::Relaxed);
            }
        }
        unsafe fn read_bytes(&self, offset: u64, dst: &mut [u8]) {
            for (i, chunk) in dst.chunks_mut(8).enumerate() {
                let w = self.word(offset + 8 * i as u64).load(Ordering::Relaxed);
                chunk.copy_from_slice(&w.to_ne_bytes()[..chunk.len()]);
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::heap::{read_one, Got, HeapRegion};
    use super::*;
    use crate::layout::pack_word1;

    const KEY: RecordKey = RecordKey(0x005e_ed0f_7e57);

    struct NoSubs;
    impl Subscribers for NoSubs {
        fn min_position(&self) -> Option<u64> {
            None
        }
    }

    struct OneSub(AtomicU64);
    impl Subscribers for OneSub {
        fn min_position(&self) -> Option<u64> {
            Some(self.0.load(Ordering::SeqCst))
        }
    }

    fn params(capacity: u64, mode: Mode) -> Params {
        Params {
            capacity,
            max_message: (capacity / 2 - 16) as u32,
            mode,
            exclusive: false,
            key: KEY,
        }
    }

    fn send<S: Subscribers>(
        r: &HeapRegion,
        s: &S,
        p: &Params,
        c: &mut ProducerCursor,
        data: &[u8],
    ) -> Result<Claim, ClaimError> {
        let claiming = AtomicU64::new(0);
        let claim = try_claim(r, s, p, c, &claiming, data.len() as u32)?;
        write_claimed(r, p, &claim);
        // SAFETY: the claim owns `len` bytes at its payload offset.
        unsafe { r.write_bytes(claim.payload_offset(p), data) };
        commit(r, p, &claim, &claiming).unwrap();
        Ok(claim)
    }

    /// Reads everything available from (pos, seq); returns messages and the new cursor.
    fn drain(r: &HeapRegion, p: &Params, pos: u64, seq: u64) -> (Vec<Vec<u8>>, u64, u64) {
        let mut out = Vec::new();
        let mut reader = Reader::new(pos, seq);
        loop {
            match read_one(r, p, &mut reader) {
                Ok(Some(Got::Msg(_, v))) => out.push(v),
                Ok(Some(Got::Lost(_))) => {}
                Ok(None) => return (out, reader.pos, reader.seq),
                Err(e) => panic!("corrupt at {}: {e}", reader.pos),
            }
        }
    }

    #[test]
    fn wrap_inserts_padding_and_keeps_order() {
        let p = params(256, Mode::Reliable);
        // Start 48 bytes before the end: a 40-byte record (extent 64) must wrap.
        let r = HeapRegion::new(256, 1024 - 48);
        let sub = OneSub(AtomicU64::new(1024 - 48));
        let mut c = ProducerCursor::default();
        let a = send(&r, &sub, &p, &mut c, &[1; 8]).unwrap();
        assert_eq!(a.pad, 0);
        let b = send(&r, &sub, &p, &mut c, &[2; 40]).unwrap();
        assert_eq!((b.start, b.pad, b.seq), (1008, 16, 1));
        let (msgs, pos, seq) = drain(&r, &p, 1024 - 48, 0);
        assert_eq!(msgs, vec![vec![1; 8], vec![2; 40]]);
        assert_eq!((pos, seq), (1024 + 64, 2));
    }

    #[test]
    fn reliable_is_full_until_the_subscriber_moves() {
        let p = params(256, Mode::Reliable);
        let r = HeapRegion::new(256, 0);
        let sub = OneSub(AtomicU64::new(0));
        let mut c = ProducerCursor::default();
        let mut sent = 0;
        while send(&r, &sub, &p, &mut c, &[7; 48]).is_ok() {
            sent += 1;
        }
        assert_eq!(sent, 4, "four 64-byte records fill 256 bytes");
        let (msgs, pos, _) = drain(&r, &p, 0, 0);
        assert_eq!(msgs.len(), 4);
        assert!(send(&r, &sub, &p, &mut c, &[7; 48]).is_err());
        sub.0.store(pos, Ordering::SeqCst);
        assert!(send(&r, &sub, &p, &mut c, &[8; 48]).is_ok());
    }

    #[test]
    fn an_exclusive_producer_writes_the_same_ring_as_a_shared_one() {
        // Plain-store claims and commits must leave what the CAS path leaves: the same tail,
        // records, padding and sequences, across several wraps. (Head may stop at another
        // boundary: an exclusive producer jumps it from mark to mark.)
        for mode in [Mode::Reliable, Mode::Lossy] {
            let shared = params(256, mode);
            let exclusive = Params {
                exclusive: true,
                ..shared
            };
            let run = |p: &Params| {
                let r = HeapRegion::new(256, 1024 - 48);
                let mut c = ProducerCursor::default();
                let (mut pos, mut seq) = (1024 - 48, 0);
                let mut got = Vec::new();
                for i in 0..40u8 {
                    let len = 1 + (i as usize * 7) % 90;
                    let claim = send(&r, &NoSubs, p, &mut c, &vec![i; len]).unwrap();
                    assert_eq!(claim.seq, i as u64);
                    if mode == Mode::Reliable {
                        // Read as we go, so that reliable mode never laps the reader.
                        let (msgs, p2, s2) = drain(&r, p, pos, seq);
                        (pos, seq) = (p2, s2);
                        got.extend(msgs);
                    }
                }
                let (h, t) = (oldest(&r), latest(&r));
                assert!(t.0 - h.0 <= 256, "head within a lap of the tail");
                // Head is a record boundary with its sequence: reading from it reaches the
                // tail without a corrupt header (`drain` panics on one).
                let from_head = drain(&r, p, h.0, h.1);
                assert_eq!((from_head.1, from_head.2), t);
                if mode == Mode::Lossy {
                    got = from_head.0;
                }
                (got, t)
            };
            let (a, b) = (run(&shared), run(&exclusive));
            assert!(!a.0.is_empty());
            assert_eq!(a, b, "{mode:?}");
        }
    }

    #[test]
    fn lossy_never_fills_and_head_stays_within_a_lap() {
        let p = params(256, Mode::Lossy);
        let r = HeapRegion::new(256, 0);
        let mut c = ProducerCursor::default();
        for i in 0..100u8 {
            send(&r, &NoSubs, &p, &mut c, &[i; 20]).unwrap();
            let (t, h) = (latest(&r), oldest(&r));
            assert!(t.0 - h.0 <= 256);
            assert!(h.1 <= t.1);
        }
        let h = oldest(&r);
        let (msgs, _, seq) = drain(&r, &p, h.0, h.1);
        assert_eq!(seq, 100);
        assert_eq!(msgs.last().unwrap(), &vec![99; 20]);
    }

    #[test]
    fn stale_bytes_that_carry_the_claimed_sequence_do_not_look_like_a_repair() {
        let p = params(1024, Mode::Reliable);
        let r = HeapRegion::new(1024, 0);
        let mut c = ProducerCursor::default();
        send(&r, &NoSubs, &p, &mut c, b"first").unwrap();
        // An earlier lap left a payload word at the next header that reads as sequence 1
        // with a state no producer writes (as the crash loop's payloads did: id 13, index 88).
        let next = latest(&r).0;
        for state in [13, STATE_DATA, STATE_GAP, STATE_REPAIRING] {
            r.word(next).store(pack_word0(1, state), Ordering::Relaxed);
            // Not ready yet, as any uncommitted record; never a reason to give the claim up.
            assert!(!is_ready(&r, &p, next, 1), "state {state}");
        }
        let claiming = AtomicU64::new(0);
        let claim = try_claim(&r, &NoSubs, &p, &mut c, &claiming, 6).unwrap();
        write_claimed(&r, &p, &claim);
        // SAFETY: the claim owns 6 bytes at its payload offset.
        unsafe { r.write_bytes(claim.payload_offset(&p), b"second") };
        assert_eq!(commit(&r, &p, &claim, &claiming), Ok(()));
        assert!(is_ready(&r, &p, next, 1));
        let (msgs, _, seq) = drain(&r, &p, 0, 0);
        assert_eq!(msgs, vec![b"first".to_vec(), b"second".to_vec()]);
        assert_eq!(seq, 2);
    }

    #[test]
    fn a_repair_between_claim_and_commit_wins_over_the_commit() {
        let p = params(1024, Mode::Reliable);
        let r = HeapRegion::new(1024, 0);
        let mut c = ProducerCursor::default();
        let claiming = AtomicU64::new(0);
        let claim = try_claim(&r, &NoSubs, &p, &mut c, &claiming, 10).unwrap();
        write_claimed(&r, &p, &claim);
        assert!(write_gap(&r, &p, 0, 0, latest(&r).0, 1));
        assert_eq!(commit(&r, &p, &claim, &claiming), Err(Unblocked));
        let (msgs, _, seq) = drain(&r, &p, 0, 0);
        assert!(msgs.is_empty());
        assert_eq!(seq, 1);
    }

    #[test]
    fn abandoned_records_consume_a_sequence_and_deliver_nothing() {
        let p = params(1024, Mode::Reliable);
        let r = HeapRegion::new(1024, 0);
        let mut c = ProducerCursor::default();
        let claiming = AtomicU64::new(0);
        let claim = try_claim(&r, &NoSubs, &p, &mut c, &claiming, 10).unwrap();
        write_claimed(&r, &p, &claim);
        assert_eq!(peek(&r, &p, 0, 0), Peek::NotReady);
        assert_eq!(claiming.load(Ordering::Relaxed), 1, "claiming until commit");
        abandon(&r, &p, &claim, &claiming).unwrap();
        assert_eq!(claiming.load(Ordering::Relaxed), 0);
        assert_eq!(commit(&r, &p, &claim, &claiming), Err(Unblocked));
        send(&r, &NoSubs, &p, &mut c, b"after").unwrap();
        let (msgs, _, seq) = drain(&r, &p, 0, 0);
        assert_eq!(msgs, vec![b"after".to_vec()]);
        assert_eq!(seq, 2);
    }

    /// Stores a header `(word0, word1)` at `pos` of a heap ring.
    fn plant(r: &HeapRegion, p: &Params, pos: u64, (w0, w1): (u64, u64)) {
        let at = pos & (p.capacity - 1);
        r.word(at + 8).store(w1, Ordering::Relaxed);
        r.word(at).store(w0, Ordering::Release);
    }

    /// A ring whose tail is at `tail` (what claims would have left), so that readers look at
    /// the bytes below it.
    fn ring_with_tail(capacity: u64, tail: (u64, u64)) -> HeapRegion {
        let r = HeapRegion::new(capacity, 0);
        r.tail.store(tail, Ordering::Relaxed);
        r
    }

    #[test]
    fn stale_and_foreign_bytes_are_not_records() {
        let p = params(1024, Mode::Reliable);
        let r = ring_with_tail(1024, (512, 4));
        // A plausible word0 for sequence 0 without a matching check.
        plant(&r, &p, 0, (pack_word0(0, STATE_DATA), pack_word1(4, 12345)));
        assert_eq!(
            peek(&r, &p, 0, 0),
            Peek::Corrupt(RecordProblem::CheckMismatch)
        );
        // The check of another key, position, state or length does not pass either.
        for (key, pos, state, len) in [
            (RecordKey(1), 0, STATE_DATA, 4),
            (KEY, 1024, STATE_DATA, 4),
            (KEY, 0, STATE_ABANDONED, 4),
            (KEY, 0, STATE_DATA, 5),
        ] {
            // word1 says length 4; its check is of the variant.
            let check = record_check(key, pos, pack_word0(0, state), len);
            r.word(8).store(pack_word1(4, check), Ordering::Relaxed);
            assert_eq!(
                peek(&r, &p, 0, 0),
                Peek::Corrupt(RecordProblem::CheckMismatch),
                "{key:?} {pos} {state} {len}"
            );
        }
        // Right check, absurd length.
        plant(&r, &p, 0, header(KEY, 0, 0, STATE_DATA, 5000));
        assert!(matches!(
            peek(&r, &p, 0, 0),
            Peek::Corrupt(RecordProblem::TooLong { .. })
        ));
        // Unknown state, even with its check.
        plant(&r, &p, 0, header(KEY, 0, 0, 0xF, 4));
        assert!(matches!(
            peek(&r, &p, 0, 0),
            Peek::Corrupt(RecordProblem::UnknownState { state: 15 })
        ));
        // Another sequence: not ours, not yet.
        assert_eq!(peek(&r, &p, 0, 1), Peek::NotReady);
    }

    #[test]
    fn a_gap_skips_its_sequences_and_fills_pad() {
        let p = params(1024, Mode::Reliable);
        let r = ring_with_tail(1024, (512, 9));
        plant(&r, &p, 0, header(KEY, 0, 0, STATE_GAP, 3));
        assert_eq!(
            peek(&r, &p, 0, 0),
            Peek::Skip {
                extent: 16,
                seqs: 3,
                kind: SkipKind::Repaired
            }
        );
        plant(&r, &p, 16, header(KEY, 16, 3, STATE_FILL, 5));
        assert_eq!(
            peek(&r, &p, 16, 3),
            Peek::Skip {
                extent: 80,
                seqs: 0,
                kind: SkipKind::Repaired
            }
        );
        // A fill may not run past the end of the region.
        plant(&r, &p, 16, header(KEY, 16, 3, STATE_FILL, 64));
        assert!(matches!(
            peek(&r, &p, 16, 3),
            Peek::Corrupt(RecordProblem::PastEnd { .. })
        ));
    }

    /// Issue 8: headers in the documented format, written with the right key even, are not
    /// read at or past the tail the reader has seen; and the tail is read again only when the
    /// reader reaches the one it saw.
    #[test]
    fn nothing_at_or_past_the_tail_is_read() {
        let p = params(1024, Mode::Reliable);
        let r = ring_with_tail(1024, (0, 0));
        plant(&r, &p, 0, header(KEY, 0, 0, STATE_DATA, 8));
        let mut reader = Reader::new(0, 0);
        assert_eq!(reader.poll(&r, &p), Polled::Empty);
        assert_eq!(reader.peek_data(&r, &p), None);
        assert!(!reader.is_ready(&r, &p));
        // Claimed: now it is a record.
        r.tail.store((32, 1), Ordering::Relaxed);
        assert!(reader.is_ready(&r, &p));
        assert!(matches!(reader.poll(&r, &p), Polled::Data { len: 8, .. }));
        reader.consume(32);
        // A skip that would end past the tail is not a record.
        plant(&r, &p, 32, header(KEY, 32, 1, STATE_FILL, 4));
        r.tail.store((48, 2), Ordering::Relaxed);
        assert_eq!(
            reader.poll(&r, &p),
            Polled::Corrupt(RecordProblem::PastTail { end: 96, tail: 48 })
        );
        // An impossible tail is reported, not followed (once a header makes it matter).
        let mut far = Reader::new(2048, 7);
        plant(&r, &p, 2048, header(KEY, 2048, 7, STATE_DATA, 8));
        r.tail.store((MAX_POSITION + 16, 8), Ordering::Relaxed);
        assert_eq!(
            far.poll(&r, &p),
            Polled::Corrupt(RecordProblem::PositionOutOfRange {
                position: MAX_POSITION + 16
            })
        );
    }

    /// Review of issue 8: stale bytes that carry the claimed sequence in a committed state
    /// are replaced by `{ seq, EMPTY }` at the claim (shared bus), so the header never
    /// validates before the commit's CAS (which would otherwise fail on a delivered message
    /// once a later lap wrote the same bits); an exclusive bus writes that word (and the WRAP)
    /// before its tail store.
    #[test]
    fn a_claim_never_leaves_a_committed_looking_header_before_its_commit() {
        for exclusive in [false, true] {
            let p = Params {
                exclusive,
                ..params(256, Mode::Lossy)
            };
            let r = HeapRegion::new(256, 1024 - 48);
            // What the record's commit will write, planted by an earlier lap.
            plant(&r, &p, 1024 - 48, header(KEY, 1024 - 48, 0, STATE_DATA, 8));
            let claiming = AtomicU64::new(0);
            let mut c = ProducerCursor::default();
            let claim = try_claim(&r, &NoSubs, &p, &mut c, &claiming, 8).unwrap();
            write_claimed(&r, &p, &claim);
            assert_eq!(
                unpack_word0(r.word(208).load(Ordering::Relaxed)),
                (0, STATE_EMPTY),
                "exclusive {exclusive}"
            );
            assert_eq!(peek(&r, &p, 1024 - 48, 0), Peek::NotReady);
            // SAFETY: the claim owns its 8 payload bytes.
            unsafe { r.write_bytes(claim.payload_offset(&p), &[9; 8]) };
            commit(&r, &p, &claim, &claiming).unwrap();
            assert!(matches!(
                peek(&r, &p, 1024 - 48, 0),
                Peek::Data { len: 8, .. }
            ));
            // A record that wraps: the WRAP is there as soon as the claim is.
            let wrapping = try_claim(&r, &NoSubs, &p, &mut c, &claiming, 8).unwrap();
            assert_eq!(wrapping.pad, 16);
            write_claimed(&r, &p, &wrapping);
            assert!(matches!(
                peek(&r, &p, 1024 - 16, 1),
                Peek::Skip {
                    kind: SkipKind::Wrap,
                    ..
                }
            ));
            assert_eq!(peek(&r, &p, 1024, 1), Peek::NotReady);
        }
    }

    /// Review of issue 8: a lossy reader that reported a GAP's loss stands on a FILL whose
    /// sequence is the tail's; it may resume there.
    #[test]
    fn a_saved_position_on_a_fill_at_the_tail_sequence_is_a_record() {
        let p = params(1024, Mode::Lossy);
        let r = ring_with_tail(1024, (96, 3));
        plant(&r, &p, 0, header(KEY, 0, 0, STATE_GAP, 3));
        plant(&r, &p, 16, header(KEY, 16, 3, STATE_FILL, 5));
        assert_eq!(sequence_at(&r, &p, 16), Ok(3));
        assert_eq!(sequence_at(&r, &p, 0), Ok(0));
        // A DATA record cannot carry the tail's sequence.
        plant(&r, &p, 16, header(KEY, 16, 3, STATE_DATA, 5));
        assert_eq!(sequence_at(&r, &p, 16), Err(PositionError::NotARecord));
    }

    /// Review of issue 8: an impossible head is a typed error for producers, not `Full`.
    #[test]
    fn an_impossible_head_is_corrupt_not_full() {
        let p = params(1024, Mode::Lossy);
        let r = ring_with_tail(1024, (4096, 9));
        r.head.store((MAX_POSITION + 32, 2), Ordering::Relaxed);
        let claiming = AtomicU64::new(0);
        assert_eq!(
            try_claim(
                &r,
                &NoSubs,
                &p,
                &mut ProducerCursor::default(),
                &claiming,
                8
            ),
            Err(ClaimError::Corrupt {
                position: MAX_POSITION + 32
            })
        );
    }

    /// Issue 8: each overflow of values read from the mapping is a typed error.
    #[test]
    fn impossible_values_from_the_mapping_are_typed_errors() {
        // A tail sequence of u64::MAX (or past the 60 bits a header holds): no claim, and the
        // claiming word is never set to the wrapped value 0.
        for seq in [u64::MAX, SEQ_MASK] {
            let p = params(1024, Mode::Lossy);
            let r = ring_with_tail(1024, (64, seq));
            let mut c = ProducerCursor::default();
            let claiming = AtomicU64::new(0);
            assert_eq!(
                try_claim(&r, &NoSubs, &p, &mut c, &claiming, 8),
                Err(ClaimError::Corrupt { position: 64 })
            );
        }
        // A chain of GAPs whose counts would carry the reader's sequence past 2^64.
        let p = params(1024, Mode::Reliable);
        let r = ring_with_tail(1024, (512, u64::MAX));
        plant(&r, &p, 0, header(KEY, 0, u64::MAX - 2, STATE_GAP, 2));
        plant(&r, &p, 16, header(KEY, 16, u64::MAX, STATE_GAP, 9));
        let mut reader = Reader::new(0, u64::MAX - 2);
        assert_eq!(
            reader.poll(&r, &p),
            Polled::Corrupt(RecordProblem::SequenceOutOfRange {
                seq: u64::MAX,
                skip: 9
            })
        );
        // A chain of FILLs towards MAX_POSITION stops at the tail, below it.
        let r = ring_with_tail(1024, (MAX_POSITION, 5));
        let start = MAX_POSITION - 1024;
        for i in 0..16 {
            let at = start + 64 * i;
            plant(&r, &p, at, header(KEY, at, 5, STATE_FILL, 4));
        }
        let mut reader = Reader::new(start, 5);
        assert_eq!(reader.poll(&r, &p), Polled::Empty);
        assert_eq!(reader.pos, MAX_POSITION);
        // A reader sequence past the tail's: the repairer refuses, with the reason.
        let r = ring_with_tail(1024, (256, 3));
        assert_eq!(
            inspect_stuck(&r, &p, 0, 10),
            Stuck::Impossible(RecordProblem::SequencePastTail {
                seq: 10,
                tail_seq: 3
            })
        );
        // A committed header of another sequence is never repaired over.
        plant(&r, &p, 0, header(KEY, 0, 1, STATE_DATA, 8));
        assert_eq!(
            inspect_stuck(&r, &p, 0, 0),
            Stuck::Impossible(RecordProblem::SequenceMismatch {
                expected: 0,
                found: 1
            })
        );
        assert!(!write_gap(&r, &p, 0, 0, 32, 1));
    }

    /// A claim whose producer "died" right after the CAS: no header at all.
    fn dead_claim(r: &HeapRegion, p: &Params, c: &mut ProducerCursor, len: u32) -> Claim {
        let claiming = AtomicU64::new(0);
        try_claim(r, &NoSubs, p, c, &claiming, len).unwrap()
    }

    #[test]
    fn marks_jump_head_only_inside_the_producers_own_records() {
        let mut m = Marks::default();
        assert_eq!(m.jump(0, 100, 1000), None, "no claim yet");
        for (pos, seq) in [(64, 1), (80, 2), (128, 5), (200, 9), (300, 12)] {
            m.note(pos, seq, 64);
        }
        assert_eq!(m.len, 4, "80 fell within 64 bytes of the previous mark");
        assert_eq!(
            m.jump(0, 100, 1000),
            None,
            "head before the first claim: walk"
        );
        assert_eq!(
            m.jump(64, 100, 1000),
            Some((128, 5)),
            "first mark at or past the target"
        );
        assert_eq!(m.jump(64, 100, 127), None, "no mark up to the bound");
        assert_eq!(
            m.jump(64, 400, 1000),
            Some((300, 12)),
            "short of it: walk on from here"
        );
        assert_eq!(m.jump(64, 400, 299), Some((200, 9)));
        assert_eq!(
            m.jump(130, 400, 1000),
            Some((300, 12)),
            "passed marks are dropped"
        );
        assert_eq!(m.len, 2);
        for i in 0..(2 * MARKS as u64) {
            m.note(1000 + 64 * i, 100 + i, 64);
        }
        assert_eq!(m.len, MARKS, "a full ring drops its oldest mark");
        let newest = 1000 + 64 * (2 * MARKS as u64 - 1);
        assert_eq!(
            m.jump(130, newest, u64::MAX),
            Some((newest, 100 + 2 * MARKS as u64 - 1))
        );
    }

    #[test]
    fn a_second_writer_on_an_exclusive_ring_is_detected_within_a_lap() {
        // Two cursors on one exclusive ring: what a process that lost its liveness lock and
        // a newcomer would be. Each stores the tail from its own idea of it; the first to
        // refresh its limit finds the tail elsewhere and stops.
        let p = Params {
            exclusive: true,
            ..params(1024, Mode::Lossy)
        };
        let r = HeapRegion::new(1024, 0);
        let (mut a, mut b) = (ProducerCursor::default(), ProducerCursor::default());
        let conflict = (0..40).find_map(|_| {
            [&mut a, &mut b]
                .into_iter()
                .find_map(|c| send(&r, &NoSubs, &p, c, &[5; 40]).err())
        });
        assert!(
            matches!(conflict, Some(ClaimError::Conflict { .. })),
            "{conflict:?}"
        );
        // A producer alone never sees one, however many laps it writes.
        let r = HeapRegion::new(1024, 0);
        let mut c = ProducerCursor::default();
        for _ in 0..200 {
            send(&r, &NoSubs, &p, &mut c, &[6; 40]).unwrap();
        }
    }

    #[test]
    fn an_exclusive_producer_never_jumps_head_over_a_dead_predecessors_claim() {
        for mode in [Mode::Reliable, Mode::Lossy] {
            let p = Params {
                exclusive: true,
                ..params(1024, mode)
            };
            let r = HeapRegion::new(1024, 0);
            let first = send(&r, &NoSubs, &p, &mut ProducerCursor::default(), b"a").unwrap();
            // The predecessor died with a claim open; its successor starts a fresh cursor.
            let dead = dead_claim(&r, &p, &mut ProducerCursor::default(), 40);
            let mut c = ProducerCursor::default();
            // Within a lap it must run into the dead claim (bounded: a jump over it would
            // let it send forever).
            let stalled = (0..100)
                .find_map(|_| match send(&r, &NoSubs, &p, &mut c, &[3; 100]) {
                    Ok(_) => None,
                    Err(ClaimError::Full { stalled_at }) => Some(stalled_at),
                    Err(e) => panic!("{e:?}"),
                })
                .expect("head jumped over the dead claim");
            assert_eq!(stalled, Some((dead.position(), dead.seq)), "{mode:?}");
            assert_eq!(
                oldest(&r),
                (first.position() + 32, 1),
                "head stops at the dead claim"
            );
            // Once repaired, head passes it and the successor's marks take over.
            let end = dead.position() + 64;
            assert!(write_gap(&r, &p, dead.position(), dead.seq, end, 1));
            for _ in 0..40 {
                send(&r, &NoSubs, &p, &mut c, &[4; 100]).unwrap();
            }
            let (h, t) = (oldest(&r), latest(&r));
            assert!(h.0 > end && t.0 - h.0 <= 1024, "{mode:?}: {h:?} {t:?}");
            let (msgs, pos, seq) = drain(&r, &p, h.0, h.1);
            assert!(msgs.iter().all(|m| m == &[4; 100]));
            assert_eq!((pos, seq), t);
        }
    }

    #[test]
    fn a_dead_unheadered_claim_becomes_a_gap_sized_by_the_next_header() {
        let p = params(1024, Mode::Reliable);
        let r = HeapRegion::new(1024, 0);
        let mut c = ProducerCursor::default();
        let dead = dead_claim(&r, &p, &mut c, 40);
        let live = send(&r, &NoSubs, &p, &mut c, b"after").unwrap();
        assert_eq!(peek(&r, &p, 0, 0), Peek::NotReady, "the reader is stuck");
        assert_eq!(
            inspect_stuck(&r, &p, dead.position(), 0),
            Stuck::Unheadered {
                end: live.position(),
                end_seq: 1
            }
        );
        assert!(write_gap(&r, &p, 0, 0, live.position(), 1));
        let (msgs, _, seq) = drain(&r, &p, 0, 0);
        assert_eq!(msgs, vec![b"after".to_vec()]);
        assert_eq!(seq, 2);
        assert_eq!(inspect_stuck(&r, &p, 0, 0), Stuck::No);
    }

    #[test]
    fn dead_claims_at_the_tail_and_across_the_end_of_the_ring() {
        let p = params(256, Mode::Reliable);
        // The dead claims need padding at the end of the ring: the gap must be cut there.
        let r = HeapRegion::new(256, 256 - 32);
        let mut c = ProducerCursor::default();
        dead_claim(&r, &p, &mut c, 40);
        dead_claim(&r, &p, &mut c, 8);
        let tail = latest(&r);
        assert_eq!(
            inspect_stuck(&r, &p, 256 - 32, 0),
            Stuck::Unheadered {
                end: tail.0,
                end_seq: 2
            }
        );
        assert!(write_gap(&r, &p, 256 - 32, 0, tail.0, 2));
        send(&r, &NoSubs, &p, &mut c, b"next").unwrap();
        let (msgs, pos, seq) = drain(&r, &p, 256 - 32, 0);
        assert_eq!(msgs, vec![b"next".to_vec()]);
        assert_eq!((pos, seq), (latest(&r).0, 3));
    }

    #[test]
    fn a_gap_left_half_written_by_a_dead_repairer_is_finished() {
        let p = params(256, Mode::Reliable);
        // A dead claim that needed padding: [224, 256) pad + [256, 320) record, seq 0.
        let r = HeapRegion::new(256, 224);
        let mut c = ProducerCursor::default();
        dead_claim(&r, &p, &mut c, 40);
        let live = send(&r, &NoSubs, &p, &mut c, b"committed").unwrap();
        assert_eq!(live.position(), 320);
        // A repairer wrote the first piece of the GAP (to the end of the ring) and died
        // before the piece at the start of the next lap.
        assert!(write_gap(&r, &p, 224, 0, 256, 1));
        let (msgs, pos, seq) = drain(&r, &p, 224, 0);
        assert!(msgs.is_empty());
        assert_eq!(
            (pos, seq),
            (256, 1),
            "stuck where the missing piece should be"
        );
        // The next repairer finds the committed record of that very sequence further on: the
        // bytes before it hold no claim, a GAP of no sequences.
        assert_eq!(
            inspect_stuck(&r, &p, 256, 1),
            Stuck::Unheadered {
                end: 320,
                end_seq: 1
            }
        );
        assert!(write_gap(&r, &p, 256, 1, 320, 0));
        let (msgs, _, seq) = drain(&r, &p, 256, 1);
        assert_eq!(msgs, vec![b"committed".to_vec()]);
        assert_eq!(seq, 2);
    }

    #[test]
    fn a_scribbled_header_is_replaceable_and_a_valid_one_is_not() {
        let p = params(1024, Mode::Reliable);
        let r = HeapRegion::new(1024, 0);
        let mut c = ProducerCursor::default();
        send(&r, &NoSubs, &p, &mut c, b"one").unwrap();
        send(&r, &NoSubs, &p, &mut c, b"two").unwrap();
        assert_eq!(inspect_stuck(&r, &p, 0, 0), Stuck::No);
        assert!(
            !write_gap(&r, &p, 0, 0, 32, 1),
            "a valid header is never replaced"
        );
        r.word(8).store(0xdead_beef_dead_beef, Ordering::Relaxed);
        assert!(matches!(peek(&r, &p, 0, 0), Peek::Corrupt(_)));
        assert_eq!(
            inspect_stuck(&r, &p, 0, 0),
            Stuck::Unheadered {
                end: 32,
                end_seq: 1
            }
        );
        assert!(write_gap(&r, &p, 0, 0, 32, 1));
        let (msgs, _, _) = drain(&r, &p, 0, 0);
        assert_eq!(msgs, vec![b"two".to_vec()]);
    }

    #[test]
    fn a_tail_more_than_a_lap_ahead_is_not_scanned() {
        let p = params(1024, Mode::Reliable);
        let r = HeapRegion::new(1024, 0);
        r.tail.store((1 << 61, 5), Ordering::Relaxed);
        // Not scanned; in reliable mode the reader is told the ring moved past it, in lossy
        // mode it resynchronises on its own.
        assert_eq!(
            inspect_stuck(&r, &p, 0, 0),
            Stuck::Impossible(RecordProblem::Overrun {
                position: 0,
                tail: 1 << 61
            })
        );
        assert_eq!(
            inspect_stuck(&r, &params(1024, Mode::Lossy), 0, 0),
            Stuck::No
        );
        let claiming = AtomicU64::new(0);
        r.tail.store((MAX_POSITION + 16, 5), Ordering::Relaxed);
        assert!(matches!(
            try_claim(
                &r,
                &NoSubs,
                &p,
                &mut ProducerCursor::default(),
                &claiming,
                8
            ),
            Err(ClaimError::Corrupt { .. })
        ));
    }

    #[test]
    fn sequence_at_finds_records_and_rejects_the_middle_of_one() {
        let p = params(1024, Mode::Reliable);
        let r = HeapRegion::new(1024, 0);
        let mut c = ProducerCursor::default();
        let a = send(&r, &NoSubs, &p, &mut c, &[0; 40]).unwrap();
        let b = send(&r, &NoSubs, &p, &mut c, &[0; 40]).unwrap();
        assert_eq!(sequence_at(&r, &p, a.position()), Ok(0));
        assert_eq!(sequence_at(&r, &p, b.position()), Ok(1));
        assert_eq!(sequence_at(&r, &p, 128), Ok(2), "the tail");
        assert_eq!(sequence_at(&r, &p, 16), Err(PositionError::NotARecord));
        assert_eq!(sequence_at(&r, &p, 8), Err(PositionError::NotARecord));
        assert!(matches!(
            sequence_at(&r, &p, 4096),
            Err(PositionError::NotRetained { .. })
        ));
    }
}
