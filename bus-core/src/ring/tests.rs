//! Unit tests of the ring on heap memory.

use super::heap::{read_one, Got, HeapRegion};
use super::*;
use crate::layout::{
    header, pack_word0, pack_word1, record_check, unpack_word0, MAX_POSITION, SEQ_MASK,
    STATE_ABANDONED, STATE_DATA, STATE_EMPTY, STATE_FILL, STATE_GAP, STATE_REPAIRING,
};
use crate::sync::Ordering;

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

/// A repairer that died after writing its FILLs and before its GAP, over a run of two dead
/// claims followed by a committed record, is finished by the next repair: the FILL at
/// `pos + 16` carries the sequence after the run, and its sizing stands (16 bytes are not
/// too few for two sequences there). Without the REPAIRING mark, two sequences in 16 bytes
/// are not claims.
#[test]
fn a_repair_that_died_before_its_gap_is_finished() {
    let p = params(1024, Mode::Reliable);
    let r = ring_with_tail(1024, (128, 3));
    // Claims of sequences 0 and 1 at [0, 32) and [32, 64), never headered; sequence 2
    // committed at 64.
    plant(&r, &p, 64, header(KEY, 64, 2, STATE_DATA, 40));
    // The dead repairer: REPAIRING at 0, a FILL over [16, 64) carrying sequence 2.
    plant(&r, &p, 16, header(KEY, 16, 2, STATE_FILL, 3));
    r.word(0)
        .store(pack_word0(0, STATE_REPAIRING), Ordering::Release);
    assert_eq!(
        inspect_stuck(&r, &p, 0, 0),
        Stuck::Unheadered {
            end: 16,
            end_seq: 2
        }
    );
    assert!(write_gap(&r, &p, 0, 0, 16, 2));
    let mut reader = Reader::new(0, 0);
    assert!(matches!(reader.poll(&r, &p), Polled::Data { len: 40, .. }));
    assert_eq!((reader.pos, reader.seq, reader.unblocked), (64, 2, 2));
    // The same bytes without the mark: two sequences cannot be claims in 16 bytes.
    r.word(0).store(0, Ordering::Release);
    assert_eq!(
        inspect_stuck(&r, &p, 0, 0),
        Stuck::Impossible(RecordProblem::GapTooLong { count: 2, max: 1 })
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
