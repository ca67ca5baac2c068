//! Unblocking the records of producers that died between claim and commit.
//!
//! Aeron's answer, made liveness-based: a reader (or a producer whose walk of `head` is
//! stopped) that has found the same record uncommitted for the bus's *unblock timeout*
//! calls [`unblock`]. Under the control lock (one repairer at a time) it re-inspects the
//! record ([`ring::inspect_stuck`]), asks the producer slots which producers may own it (their
//! *claiming* words), and repairs only if every one of those is dead (its liveness lock is
//! gone). A live producer, even one stopped with SIGSTOP for an hour, is never unblocked over:
//! liveness decides, not time alone; the timeout only says when to look.

use crate::layout::SLOT_ACTIVE;
/// How long a repair waits for the control lock before giving up until its next try.
const REPAIR_LOCK_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(20);
use crate::mapping::Segment;
use crate::registry;
use crate::ring::{self, RecordProblem, Stuck};
use crate::sync::Ordering;
use crate::wait;
use crate::Shared;

/// What [`unblock`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unblock {
    /// The record (or the run of records) is padding now; `seqs` sequences were skipped (0:
    /// padding left by a repairer that died between the pieces of a GAP).
    Repaired { seqs: u64 },
    /// A live producer may still commit it: keep waiting.
    OwnerAlive,
    /// Nothing to repair (committed meanwhile, or not claimed yet).
    NotStuck,
    /// Not a crash's leftovers: a run of claims longer than crashes can leave, or a header or
    /// tail that contradicts the reader's position. Left for the reader to report.
    Implausible(RecordProblem),
}

/// Whether a live producer may own a claim of a sequence in `[from, to)`.
fn live_claimant(seg: &Segment, from: u64, to: u64) -> bool {
    (0..seg.config.max_producers).any(|i| {
        let off = seg.config.producer_slot_offset(i);
        // ORDERING: Acquire: pairs with the Release of the producer's claim CAS (which
        // publishes its claiming word) and of its clearing after commit.
        let slot = seg.prod_slot(off);
        let claiming = slot.claiming_acquire();
        claiming != 0
            && (from..to).contains(&(claiming - 1))
            && slot.state_acquire() == SLOT_ACTIVE
            && registry::is_alive(seg, off)
    })
}

/// Repairs the record at `{ pos, seq }` if its producer(s) died. See the module doc.
pub(crate) fn unblock(shared: &Shared, pos: u64, seq: u64) -> Unblock {
    let seg = &shared.seg;
    let p = &shared.params;
    // A short wait: repairs are retried every unblock timeout, and a receive that looks for a
    // stuck record must not block for long behind another repairer.
    let Ok(guard) = shared.lock.lock(seg, REPAIR_LOCK_TIMEOUT) else {
        // Another repairer (or a joiner) holds the lock for long: try again later.
        return Unblock::OwnerAlive;
    };
    if guard.recovered {
        registry::sweep(seg);
    }
    let outcome = match ring::inspect_stuck(seg, p, pos, seq) {
        Stuck::No => Unblock::NotStuck,
        Stuck::Impossible(problem) => Unblock::Implausible(problem),
        Stuck::Unheadered { end, end_seq } => {
            // `inspect_stuck` found `end_seq` at or past `seq`; checked all the same, as
            // everything derived from the mapping is.
            // `inspect_stuck` found `end_seq` in `[seq, seq + u32::MAX]` (it checks that the
            // claims fit their bytes).
            let count = end_seq - seq;
            if live_claimant(seg, seq, end_seq) {
                Unblock::OwnerAlive
            } else if ring::inspect_stuck(seg, p, pos, seq) != (Stuck::Unheadered { end, end_seq })
            {
                // A producer that owned a claim in the region committed (and cleared its
                // claiming word) between the scan and the liveness check: its header is
                // visible now (its Release store of `claiming`, our Acquire load). Look again
                // later rather than swallow its message.
                Unblock::NotStuck
            } else if ring::write_gap(seg, p, pos, seq, end, count as u32) {
                Unblock::Repaired { seqs: count }
            } else {
                Unblock::NotStuck
            }
        }
    };
    if let Unblock::Repaired { seqs } = outcome {
        // ORDERING: Relaxed: a statistic for `stat`.
        seg.unblocked().fetch_add(seqs, Ordering::Relaxed);
        // Readers asleep at this record (in any process) may go on.
        wait::futex_wake_all(seg.notify());
    }
    outcome
}
