//! Loom models of the ring: claim/commit/read, wrap with padding, reliable back-pressure,
//! lossy lapping, and a subscriber joining while a producer runs.
//!
//! Run with `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test -p bus-core --release
//! --lib loom`. Regions are tiny (64 bytes: two records of up to 16 payload bytes) so that
//! every interleaving is explored in seconds.

use loom::sync::Arc;
use loom::thread;

use crate::layout::{Mode, RecordKey};
use crate::ring::heap::{self, Got, HeapRegion};
use crate::ring::{
    abandon, commit, inspect_stuck, latest, oldest, peek, try_claim, write_claimed, write_gap,
    Params, Peek, ProducerCursor, Reader, Region, Stuck, Subscribers,
};
use crate::sync::{AtomicU32, AtomicU64, Ordering};

const CAP: u64 = 64;

fn params(mode: Mode) -> Params {
    Params {
        capacity: CAP,
        max_message: 16,
        mode,
        exclusive: false,
        key: RecordKey(0x0100_5ca7),
    }
}

/// A bus with one producer slot: plain-store claims and commits.
fn exclusive(mode: Mode) -> Params {
    Params {
        exclusive: true,
        ..params(mode)
    }
}

/// One subscriber slot: active flag and published position.
struct Slot {
    active: AtomicU32,
    pos: AtomicU64,
}

impl Subscribers for Slot {
    fn min_position(&self) -> Option<u64> {
        if self.active.load(Ordering::SeqCst) == 1 {
            Some(self.pos.load(Ordering::SeqCst))
        } else {
            None
        }
    }
}

struct Shared {
    region: HeapRegion,
    slot: Slot,
}

fn shared(initial: u64, active: bool) -> Arc<Shared> {
    Arc::new(Shared {
        region: HeapRegion::new(CAP, initial),
        slot: Slot {
            active: AtomicU32::new(active as u32),
            pos: AtomicU64::new(initial),
        },
    })
}

/// Sends `len` bytes of `byte`, retrying (with a yield) while the ring is full.
fn send(s: &Shared, p: &Params, cursor: &mut ProducerCursor, byte: u8, len: usize) -> u64 {
    let claiming = AtomicU64::new(0);
    let claim = loop {
        match try_claim(&s.region, &s.slot, p, cursor, &claiming, len as u32) {
            Ok(c) => break c,
            Err(_) => thread::yield_now(),
        }
    };
    write_claimed(&s.region, p, &claim);
    // SAFETY: the claim owns `len` payload bytes at its payload offset.
    unsafe {
        s.region
            .write_bytes(claim.payload_offset(p), &vec![byte; len])
    };
    commit(&s.region, p, &claim, &claiming).unwrap();
    claim.seq
}

/// One step of the subscriber's own read path (`ring::Reader`): `None` if nothing is there
/// yet.
fn read_one(s: &Shared, p: &Params, rd: &mut Reader) -> Option<Got> {
    heap::read_one(&s.region, p, rd).unwrap_or_else(|e| panic!("corrupt record at {}: {e}", rd.pos))
}

#[test]
fn loom_two_producers_one_total_order() {
    loom::model(|| {
        let p = params(Mode::Reliable);
        let s = shared(0, true);
        let producers: Vec<_> = [1u8, 2]
            .into_iter()
            .map(|b| {
                let s = s.clone();
                thread::spawn(move || send(&s, &p, &mut ProducerCursor::default(), b, 8))
            })
            .collect();
        let mut rd = Reader::new(0, 0);
        let mut got = Vec::new();
        while got.len() < 2 {
            match read_one(&s, &p, &mut rd) {
                Some(Got::Msg(q, v)) => got.push((q, v)),
                Some(Got::Lost(_)) => panic!("loss in reliable mode"),
                None => thread::yield_now(),
            }
        }
        let seqs: Vec<u64> = producers.into_iter().map(|h| h.join().unwrap()).collect();
        // Each producer's message arrived under the sequence it was given, intact.
        for (i, b) in [1u8, 2].into_iter().enumerate() {
            let (q, v) = got.iter().find(|(q, _)| *q == seqs[i]).unwrap();
            assert_eq!(*q, seqs[i]);
            assert_eq!(v, &vec![b; 8]);
        }
        assert_eq!(got[0].0, 0);
        assert_eq!(got[1].0, 1);
    });
}

#[test]
fn loom_reliable_backpressure_across_the_wrap() {
    reliable_backpressure_across_the_wrap(params(Mode::Reliable));
}

#[test]
fn loom_exclusive_reliable_backpressure_across_the_wrap() {
    reliable_backpressure_across_the_wrap(exclusive(Mode::Reliable));
}

fn reliable_backpressure_across_the_wrap(p: Params) {
    loom::model(move || {
        // Start 16 bytes before the end: the first record needs a WRAP padding.
        let s = shared(CAP - 16, true);
        let s2 = s.clone();
        let producer = thread::spawn(move || {
            let mut c = ProducerCursor::default();
            for b in 0..3u8 {
                send(&s2, &p, &mut c, b, 16);
            }
        });
        let mut rd = Reader::new(CAP - 16, 0);
        let mut next = 0u8;
        while next < 3 {
            match read_one(&s, &p, &mut rd) {
                Some(Got::Msg(q, v)) => {
                    assert_eq!(q, next as u64);
                    assert_eq!(v, vec![next; 16], "never overwritten before it was read");
                    next += 1;
                    // Publish the read position: the producer may reuse the bytes now.
                    s.slot.pos.store(rd.pos, Ordering::SeqCst);
                }
                Some(Got::Lost(_)) => panic!("loss in reliable mode"),
                None => thread::yield_now(),
            }
        }
        producer.join().unwrap();
        let t = latest(&s.region);
        let h = oldest(&s.region);
        assert!(t.0 - h.0 <= CAP);
    });
}

/// An exclusive bus's reader that has read every record so far meets a WRAP written while it
/// polls: the WRAP never reads as ending past the tail, and the record after it is the one
/// claimed, intact. Records: 0 bytes at 0, 16 at 16, then 16 more that do not fit before the
/// end (WRAP at 48, record at 64).
#[test]
fn loom_an_exclusive_reader_meeting_a_wrap_follows_it() {
    loom::model(|| {
        let p = exclusive(Mode::Reliable);
        let s = shared(0, true);
        let s2 = s.clone();
        let producer = thread::spawn(move || {
            let mut c = ProducerCursor::default();
            for (b, len) in [(0u8, 0), (1, 16), (2, 16)] {
                send(&s2, &p, &mut c, b, len);
            }
        });
        let mut rd = Reader::new(0, 0);
        let mut got = Vec::new();
        while got.len() < 3 {
            match read_one(&s, &p, &mut rd) {
                Some(Got::Msg(q, v)) => {
                    got.push((q, v));
                    s.slot.pos.store(rd.pos, Ordering::SeqCst);
                }
                Some(Got::Lost(_)) => panic!("loss in reliable mode"),
                None => thread::yield_now(),
            }
        }
        producer.join().unwrap();
        assert_eq!(got, vec![(0, vec![]), (1, vec![1; 16]), (2, vec![2; 16])]);
        assert_eq!((rd.pos, rd.seq), (96, 3));
    });
}

#[test]
fn loom_lossy_lapping_is_counted_and_never_torn() {
    lossy_lapping_is_counted_and_never_torn(params(Mode::Lossy));
}

#[test]
fn loom_exclusive_lossy_lapping_is_counted_and_never_torn() {
    lossy_lapping_is_counted_and_never_torn(exclusive(Mode::Lossy));
}

fn lossy_lapping_is_counted_and_never_torn(p: Params) {
    loom::model(move || {
        let s = shared(0, false);
        let s2 = s.clone();
        const N: u8 = 3;
        let producer = thread::spawn(move || {
            let mut c = ProducerCursor::default();
            for b in 0..N {
                send(&s2, &p, &mut c, b, 16);
            }
        });
        let mut rd = Reader::new(0, 0);
        let (mut delivered, mut lost) = (0u64, 0u64);
        let mut last = None;
        // Read a couple of steps while the producer runs, then the rest after it is done.
        for _ in 0..2 {
            match read_one(&s, &p, &mut rd) {
                Some(Got::Msg(q, v)) => {
                    assert_eq!(v, vec![q as u8; 16], "a validated copy is never torn");
                    assert!(last.is_none_or(|l| q > l));
                    last = Some(q);
                    delivered += 1;
                }
                Some(Got::Lost(n)) => lost += n,
                None => thread::yield_now(),
            }
        }
        producer.join().unwrap();
        while let Some(g) = read_one(&s, &p, &mut rd) {
            match g {
                Got::Msg(q, v) => {
                    assert_eq!(v, vec![q as u8; 16]);
                    assert!(last.is_none_or(|l| q > l));
                    last = Some(q);
                    delivered += 1;
                }
                Got::Lost(n) => lost += n,
            }
        }
        assert_eq!(delivered + lost, N as u64, "delivered + lost == published");
    });
}

#[test]
fn loom_a_subscriber_joining_at_latest_is_never_overwritten() {
    loom::model(|| {
        let p = params(Mode::Reliable);
        let s = shared(0, false);
        let s2 = s.clone();
        let producer = thread::spawn(move || {
            let mut c = ProducerCursor::default();
            for b in 0..3u8 {
                send(&s2, &p, &mut c, b, 16);
            }
        });
        // Join: pick the tail, register it, then check head has not passed it.
        let (pos, seq) = latest(&s.region);
        let mut rd = Reader::new(pos, seq);
        s.slot.pos.store(pos, Ordering::SeqCst);
        s.slot.active.store(1, Ordering::SeqCst);
        while oldest(&s.region).0 > rd.pos {
            let (pos, seq) = latest(&s.region);
            rd = Reader::new(pos, seq);
            s.slot.pos.store(pos, Ordering::SeqCst);
        }
        // Everything from our start on arrives intact.
        while rd.seq < 3 {
            match read_one(&s, &p, &mut rd) {
                Some(Got::Msg(q, v)) => {
                    assert_eq!(v, vec![q as u8; 16]);
                    s.slot.pos.store(rd.pos, Ordering::SeqCst);
                }
                Some(Got::Lost(_)) => panic!("loss in reliable mode"),
                None => thread::yield_now(),
            }
        }
        producer.join().unwrap();
    });
}

#[test]
fn loom_an_abandoned_claim_is_skipped() {
    loom::model(|| {
        let p = params(Mode::Reliable);
        let s = shared(0, true);
        let s2 = s.clone();
        let producer = thread::spawn(move || {
            let mut c = ProducerCursor::default();
            let claiming = AtomicU64::new(0);
            let claim = try_claim(&s2.region, &s2.slot, &p, &mut c, &claiming, 8).unwrap();
            write_claimed(&s2.region, &p, &claim);
            abandon(&s2.region, &p, &claim, &claiming).unwrap();
            send(&s2, &p, &mut c, 9, 8);
        });
        let mut rd = Reader::new(0, 0);
        loop {
            match read_one(&s, &p, &mut rd) {
                Some(Got::Msg(q, v)) => {
                    assert_eq!((q, v), (1, vec![9; 8]));
                    break;
                }
                Some(Got::Lost(_)) => panic!("loss in reliable mode"),
                None => thread::yield_now(),
            }
        }
        producer.join().unwrap();
    });
}

#[test]
fn loom_a_late_commit_and_a_gap_repair_cannot_both_win() {
    loom::model(|| {
        let p = params(Mode::Reliable);
        let s = shared(0, true);
        let claiming = Arc::new(AtomicU64::new(0));
        let claim = try_claim(
            &s.region,
            &s.slot,
            &p,
            &mut ProducerCursor::default(),
            &claiming,
            8,
        )
        .unwrap();
        // `send`: no header until the commit.
        write_claimed(&s.region, &p, &claim);
        let (s2, c2) = (s.clone(), claiming.clone());
        let producer = thread::spawn(move || commit(&s2.region, &p, &claim, &c2).is_ok());
        let repaired = match inspect_stuck(&s.region, &p, 0, 0) {
            Stuck::Unheadered { end, end_seq } => {
                write_gap(&s.region, &p, 0, 0, end, (end_seq - 0) as u32)
            }
            _ => false,
        };
        let committed = producer.join().unwrap();
        assert!(
            committed != repaired,
            "exactly one of commit and repair wins"
        );
        // A repair only ever runs once every producer that may own the claim is dead; this
        // model lets one run against a live producer, to show that even then the two never
        // both win. What readers see then: the message (commit won), a skip (repair won),
        // or, if the live producer's word1 landed after the repairer's, a record that fails
        // its check (repair won, the producer was told `Unblocked`): never both.
        let mut rd = Reader::new(0, 0);
        match peek(&s.region, &p, rd.pos, rd.seq) {
            Peek::Corrupt(_) => assert!(repaired),
            _ => match read_one(&s, &p, &mut rd) {
                Some(Got::Msg(0, _)) => assert!(committed),
                None => assert!(repaired && rd.seq == 1, "skipped as repaired"),
                other => panic!("unexpected {other:?}"),
            },
        }
    });
}

/// The repairer's steps as `repair::unblock` takes them: scan, ask which producers may own
/// the claims (their claiming words), scan again, write. Returns whether it wrote a GAP.
fn repair_as_unblock_does(s: &Shared, p: &Params, claiming: &[&AtomicU64]) -> bool {
    let Stuck::Unheadered { end, end_seq } = inspect_stuck(&s.region, p, 0, 0) else {
        return false;
    };
    let live = claiming.iter().any(|c| {
        let c = c.load(Ordering::Acquire);
        c != 0 && (0..end_seq).contains(&(c - 1))
    });
    !live
        && inspect_stuck(&s.region, p, 0, 0) == (Stuck::Unheadered { end, end_seq })
        && write_gap(&s.region, p, 0, 0, end, end_seq as u32)
}

#[test]
fn loom_a_repair_never_swallows_a_message_committed_during_its_scan() {
    loom::model(|| {
        let p = params(Mode::Reliable);
        let s = shared(0, true);
        // Producer A claimed sequence 0 and died: no header, ever. (Its claiming word is
        // left set, but it is dead, so the repairer does not count it.)
        let dead = AtomicU64::new(0);
        try_claim(
            &s.region,
            &s.slot,
            &p,
            &mut ProducerCursor::default(),
            &dead,
            8,
        )
        .unwrap();
        // Producer B claimed sequence 1 and commits it while the repair runs.
        let claiming = Arc::new(AtomicU64::new(0));
        let claim = try_claim(
            &s.region,
            &s.slot,
            &p,
            &mut ProducerCursor::default(),
            &claiming,
            8,
        )
        .unwrap();
        assert_eq!(claim.seq, 1);
        write_claimed(&s.region, &p, &claim);
        let (s2, c2) = (s.clone(), claiming.clone());
        let producer = thread::spawn(move || {
            // SAFETY: the claim owns its 8 payload bytes.
            unsafe { s2.region.write_bytes(claim.payload_offset(&p), &[2; 8]) };
            commit(&s2.region, &p, &claim, &c2).is_ok()
        });
        let repaired = repair_as_unblock_does(&s, &p, &[&claiming]);
        let committed = producer.join().unwrap();
        assert!(committed, "B is alive: nobody takes its record");
        let mut rd = Reader::new(0, 0);
        match read_one(&s, &p, &mut rd) {
            Some(Got::Msg(1, v)) => {
                assert!(repaired);
                assert_eq!(v, vec![2; 8]);
            }
            // No repair this time (B's claim was live during it): the reader waits at A's
            // dead claim until the next one, with B's message still there.
            None => assert!(!repaired && rd.pos == 0),
            other => panic!("B's committed message was swallowed: {other:?}"),
        }
    });
}

/// What the memory a model starts from holds at every 16-byte offset: a header of a given
/// state carrying the very sequence a reader will expect there, ...
#[derive(Clone, Copy)]
enum Seed {
    /// ... that an earlier lap really wrote (the right key, the position one lap back);
    OwnLap,
    /// ... crafted from the documented format without the key (what a relayed payload can
    /// hold), at the position itself;
    Unkeyed,
    /// ... valid in every respect (the key, the position): what a crafted header passes the
    /// keyed check with, by a 2^-32 chance. Only the protocol keeps readers from it: the
    /// tail, and on an exclusive bus the `{ seq, EMPTY }` word0 written before the tail store
    /// that publishes a claim (a shared bus has a window between its claim and
    /// `stale_word0`, where only the check stands).
    Perfect,
}

/// Memory that looks valid (issue 8), seeded as `seed` says. The reader runs beside a
/// producer sending two 8-byte messages and must get exactly those two, intact, in order:
/// it never takes seeded bytes for a record, whether it polls ahead of the tail or in the
/// window between a claim and its commit.
fn stale_headers_model(state: u64, seed: Seed, exclusive_bus: bool) {
    use crate::layout::{header, pack_word0, pack_word1, record_check};
    loom::model(move || {
        let p = if exclusive_bus {
            exclusive(Mode::Reliable)
        } else {
            params(Mode::Reliable)
        };
        let start = 4 * CAP;
        let s = shared(start, true);
        // Records will be: seq 0 at +0 (8 bytes, extent 32), seq 1 at +32.
        for (off, seq) in [(0u64, 0u64), (16, 1), (32, 1), (48, 2)] {
            let (w0, w1) = match seed {
                Seed::OwnLap => header(p.key, start + off - CAP, seq, state, 8),
                Seed::Unkeyed => {
                    let w0 = pack_word0(seq, state);
                    let wrong = RecordKey(p.key.0 ^ 0x8000_0000_0000_0001);
                    (w0, pack_word1(8, record_check(wrong, start + off, w0, 8)))
                }
                Seed::Perfect => header(p.key, start + off, seq, state, 8),
            };
            s.region.word(off + 8).store(w1, Ordering::Relaxed);
            s.region.word(off).store(w0, Ordering::Relaxed);
        }
        let s2 = s.clone();
        let producer = thread::spawn(move || {
            let mut c = ProducerCursor::default();
            send(&s2, &p, &mut c, 1, 8);
            send(&s2, &p, &mut c, 2, 8);
        });
        let mut rd = Reader::new(start, 0);
        let mut got = Vec::new();
        while got.len() < 2 {
            match heap::read_one(&s.region, &p, &mut rd) {
                Ok(Some(Got::Msg(q, v))) => {
                    got.push((q, v));
                    s.slot.pos.store(rd.pos, Ordering::SeqCst);
                }
                Ok(Some(Got::Lost(n))) => panic!("lost {n} in reliable mode"),
                // Stale bytes with our sequence in the claim window: the subscriber waits
                // (until the unblock timeout) exactly as for a record not yet written.
                Ok(None) | Err(crate::ring::RecordProblem::CheckMismatch) => thread::yield_now(),
                Err(e) => panic!("seeded bytes read as a record: {e}"),
            }
        }
        producer.join().unwrap();
        assert_eq!(got, vec![(0, vec![1; 8]), (1, vec![2; 8])]);
        assert_eq!((rd.pos, rd.seq), (start + 64, 2));
    });
}

/// The models of `stale_headers_model` for every state a header can carry, on a shared and
/// on an exclusive bus (`Perfect` seeds on an exclusive bus only).
fn stale_headers_in_every_state(seed: Seed) {
    use crate::layout::{STATE_ABANDONED, STATE_DATA, STATE_FILL, STATE_GAP, STATE_WRAP};
    for state in [
        STATE_DATA,
        STATE_ABANDONED,
        STATE_WRAP,
        STATE_GAP,
        STATE_FILL,
    ] {
        if !matches!(seed, Seed::Perfect) {
            stale_headers_model(state, seed, false);
        }
        stale_headers_model(state, seed, true);
    }
}

#[test]
fn loom_stale_headers_of_an_earlier_lap_are_never_records() {
    stale_headers_in_every_state(Seed::OwnLap);
}

#[test]
fn loom_headers_crafted_without_the_key_are_never_records() {
    stale_headers_in_every_state(Seed::Unkeyed);
}

#[test]
fn loom_an_exclusive_bus_reads_only_headers_written_in_this_lap() {
    stale_headers_in_every_state(Seed::Perfect);
}

/// A repair's FILL and GAP writes race a producer whose claim needs `head` moved past the
/// repaired region, and a lossy reader's step (review of issue 8). The walk of `head` can pass
/// the dead claim only once its GAP is committed (REPAIRING reads as not ready), and the GAP
/// is written after its FILLs, so neither the walk nor the reader ever acts on a FILL's bytes
/// before they are written; afterwards a reader accounts for every sequence exactly. (One
/// attempt each, no spinning: loom explores the interleavings of those.)
#[test]
fn loom_a_repair_races_a_walk_of_head_and_a_reader() {
    loom::model(|| {
        let p = params(Mode::Lossy);
        let s = shared(0, false);
        // Sequence 0 at [0, 32): claimed, never headered (its producer died).
        let dead = AtomicU64::new(0);
        let mut c = ProducerCursor::default();
        try_claim(&s.region, &s.slot, &p, &mut c, &dead, 8).unwrap();
        dead.store(0, Ordering::Release);
        // Sequence 1 at [32, 64): committed.
        send(&s, &p, &mut c, 1, 8);
        let s2 = s.clone();
        let repairer = thread::spawn(move || repair_as_unblock_does(&s2, &p, &[]));
        let s3 = s.clone();
        // Sequence 2 needs [64, 96), the bytes of sequence 0: head must pass them first.
        let producer = thread::spawn(move || {
            let claiming = AtomicU64::new(0);
            let Ok(claim) = try_claim(&s3.region, &s3.slot, &p, &mut c, &claiming, 8) else {
                return false;
            };
            write_claimed(&s3.region, &p, &claim);
            // SAFETY: the claim owns its 8 payload bytes.
            unsafe { s3.region.write_bytes(claim.payload_offset(&p), &[2; 8]) };
            commit(&s3.region, &p, &claim, &claiming).unwrap();
            true
        });
        let mut rd = Reader::new(0, 0);
        let (mut got, mut lost) = (Vec::new(), 0u64);
        let mut take = |rd: &mut Reader| -> bool {
            match heap::read_one(&s.region, &p, rd) {
                Ok(Some(Got::Msg(q, v))) => got.push((q, v)),
                Ok(Some(Got::Lost(n))) => lost += n,
                Ok(None) => return false,
                Err(e) => panic!("read {e} at {}", rd.pos),
            }
            true
        };
        // One step while the others run.
        take(&mut rd);
        assert!(repairer.join().unwrap(), "nobody else repairs here");
        let sent = producer.join().unwrap();
        while take(&mut rd) {}
        let published = 2 + sent as u64;
        assert_eq!(rd.seq, published);
        assert_eq!(got.len() as u64 + lost, published, "{got:?} lost {lost}");
        assert!(lost >= 1, "the dead claim's sequence is reported lost");
        for (q, v) in got {
            assert_eq!(v, vec![q as u8; 8], "message {q} intact");
        }
    });
}
