//! Claim and commit: reserving bytes by advancing the tail, the WRAP padding, the commit of
//! a record, and moving `head` (with the marks of an exclusive producer) before a claim.

#![cfg_attr(loom, allow(dead_code))]

use crate::layout::{
    header, pack_word0, record_extent, unpack_word0, Mode, MAX_POSITION, RECORD_ALIGN,
    RECORD_HEADER, SEQ_MASK, STATE_ABANDONED, STATE_DATA, STATE_EMPTY, STATE_REPAIRING, STATE_WRAP,
};
use crate::sync::{fence, AtomicU64, Ordering};

use super::*;

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
pub(super) const MARKS: usize = 32;

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
pub(super) struct Marks {
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

/// Writes the WRAP padding of `c`, if it has one (on an exclusive bus the claim wrote it).
///
/// The record's own header is written at its commit ([`commit`] / [`abandon`]); until then
/// word0 holds what an earlier lap left (or `{ seq, EMPTY }`, see [`stale_word0`] and
/// [`exclusive_prewrite`]), and a producer dying before the commit leaves a claim without a
/// length, which the repairer sizes from the next header.
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

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

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
}
