//! Gaps and repair: sizing the claims of producers that died before writing a header
//! (design question 2), and turning them into a GAP and FILL records.

#![cfg_attr(loom, allow(dead_code))]

use crate::layout::{
    header, pack_word0, record_check, unpack_word0, unpack_word1, Mode, RECORD_ALIGN,
    RECORD_HEADER, SEQ_MASK, STATE_ABANDONED, STATE_DATA, STATE_FILL, STATE_GAP, STATE_REPAIRING,
    STATE_WRAP,
};
use crate::sync::Ordering;

use super::*;

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
            return sized(r, p, pos, seq, q, s);
        }
        q += RECORD_ALIGN;
    }
    sized(r, p, pos, seq, tail.0, tail.1)
}

/// `[pos, end)` holds the claims of `[seq, end_seq)`, if that many claims fit: every claim
/// takes at least a 16-byte header, so more sequences than 16-byte units cannot be claims
/// (however many producers died there over time) — unless a repairer sized them already:
/// one that died after writing its FILLs and before its GAP left `{ seq, REPAIRING }` at
/// `pos` and, at `pos + 16`, a FILL carrying the sequence after the run. Its sizing stands.
fn sized<R: Region>(r: &R, p: &Params, pos: u64, seq: u64, end: u64, end_seq: u64) -> Stuck {
    let count = end_seq - seq;
    let fits = (end - pos) / RECORD_ALIGN;
    let resumed = end == pos + RECORD_HEADER && {
        // ORDERING: Acquire, as in `peek`.
        let (found, state) = unpack_word0(r.word(pos & p.mask()).load(Ordering::Acquire));
        let (_, fill) = unpack_word0(r.word(end & p.mask()).load(Ordering::Acquire));
        found == seq & SEQ_MASK && state == STATE_REPAIRING && fill == STATE_FILL
    };
    let max = if resumed {
        u32::MAX as u64
    } else {
        fits.min(u32::MAX as u64)
    };
    if count > max {
        return Stuck::Impossible(RecordProblem::GapTooLong { count, max });
    }
    Stuck::Unheadered { end, end_seq }
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
