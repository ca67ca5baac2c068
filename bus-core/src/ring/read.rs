//! Reading: what a header says ([`peek`]), and the one read state machine ([`Reader`]) that
//! the subscriber, the loom models and the property tests drive.

#![cfg_attr(loom, allow(dead_code))]

use crate::layout::{
    record_check, record_extent, unpack_word0, unpack_word1, Mode, MAX_POSITION, RECORD_ALIGN,
    RECORD_HEADER, SEQ_MASK, STATE_ABANDONED, STATE_DATA, STATE_EMPTY, STATE_FILL, STATE_GAP,
    STATE_REPAIRING, STATE_WRAP,
};
use crate::sync::{fence, Ordering};

use super::*;

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
        // (An impossible tail is only not taken here; `poll` reports it.)
        if self.tail_is_past(r) != Ok(true) {
            return None;
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
    #[inline(always)]
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
