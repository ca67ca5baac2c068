//! Property tests: the reader, the head walk and the repairer over arbitrary ring bytes.
//!
//! Another process can write any bytes into the ring. Whatever they are, a reader must never
//! read outside the region (the heap region panics on an out-of-bounds word, which fails the
//! test), never loop without end, never panic: it delivers, skips, waits, reports corruption,
//! or (lossy) resynchronises.

use proptest::prelude::*;

use crate::layout::{Mode, RecordKey, RECORD_ALIGN};
use crate::ring::heap::{self, Got, HeapRegion};
use crate::ring::{
    inspect_stuck, try_claim, write_gap, Params, ProducerCursor, Reader, Stuck, Subscribers,
};
use crate::sync::{AtomicU64, Ordering};

const CAP: u64 = 1024;
const CASES: u32 = 4000;

struct NoSubs;
impl Subscribers for NoSubs {
    fn min_position(&self) -> Option<u64> {
        None
    }
}

/// A ring of arbitrary bytes with a consistent-looking `{ head, tail }`.
fn ring() -> impl Strategy<Value = (HeapRegion, Params)> {
    (
        prop::collection::vec(any::<u64>(), (CAP / 8) as usize),
        0u64..1 << 20,
        0u64..=CAP / RECORD_ALIGN,
        0u64..1 << 20,
        0u64..40,
        any::<bool>(),
    )
        .prop_map(|(words, head16, span16, head_seq, seqs, lossy)| {
            let head = head16 * RECORD_ALIGN;
            let tail = head + span16 * RECORD_ALIGN;
            let r = HeapRegion::new(CAP, 0);
            for (i, w) in words.iter().enumerate() {
                r.words[i].store(*w, Ordering::Relaxed);
            }
            r.head.store((head, head_seq), Ordering::Relaxed);
            r.tail.store((tail, head_seq + seqs), Ordering::Relaxed);
            let p = Params {
                capacity: CAP,
                max_message: (CAP / 2 - 16) as u32,
                mode: if lossy { Mode::Lossy } else { Mode::Reliable },
                exclusive: false,
                key: RecordKey(0x00dd_5eed),
            };
            (r, p)
        })
}

/// A subscriber's read loop, bounded: returns how many steps it took.
fn read_all(r: &HeapRegion, p: &Params, pos: u64, seq: u64) -> usize {
    let mut reader = Reader::new(pos, seq);
    for step in 0..10_000 {
        match heap::read_one(r, p, &mut reader) {
            Ok(Some(Got::Msg(_, v))) => assert!(v.len() as u64 <= CAP),
            Ok(Some(Got::Lost(_))) => {}
            Ok(None) | Err(_) => return step,
        }
    }
    panic!("the reader did not stop in 10 000 steps at {}", reader.pos);
}

#[test]
fn a_reader_over_any_bytes_stays_in_bounds_and_stops() {
    let tried = std::cell::Cell::new(0u32);
    proptest!(quiet(CASES), |((r, p) in ring(), back in 0u64..64)| {
        tried.set(tried.get() + 1);
        let (head, head_seq) = r.head.load(Ordering::Relaxed);
        let (tail, _) = r.tail.load(Ordering::Relaxed);
        // Start anywhere between head and tail, aligned, with a plausible sequence.
        let pos = (head + back * RECORD_ALIGN).min(tail);
        let steps = read_all(&r, &p, pos, head_seq + back / 2);
        prop_assert!(steps <= 10_000);
    });
    println!(
        "a reader over arbitrary ring bytes: {} cases tried",
        tried.get()
    );
    assert_eq!(tried.get(), CASES);
}

#[test]
fn the_repairer_over_any_bytes_stays_in_bounds() {
    let tried = std::cell::Cell::new(0u32);
    proptest!(quiet(CASES), |((r, p) in ring())| {
        tried.set(tried.get() + 1);
        let (head, head_seq) = r.head.load(Ordering::Relaxed);
        if let Stuck::Unheadered { end, end_seq } = inspect_stuck(&r, &p, head, head_seq) {
            prop_assert!(end > head);
            let count = end_seq.saturating_sub(head_seq).min(u16::MAX as u64) as u32;
            if count > 0 && write_gap(&r, &p, head, head_seq, end, count) {
                // The gap reads back as a skip (or a following piece), never out of bounds.
                read_all(&r, &p, head, head_seq);
            }
        }
    });
    println!(
        "the repairer over arbitrary ring bytes: {} cases tried",
        tried.get()
    );
    assert_eq!(tried.get(), CASES);
}

#[test]
fn a_producer_walking_any_bytes_stops() {
    let tried = std::cell::Cell::new(0u32);
    proptest!(quiet(CASES), |((r, p) in ring(), len in 0u32..200)| {
        tried.set(tried.get() + 1);
        let claiming = AtomicU64::new(0);
        let mut cursor = ProducerCursor::default();
        // Full or not, the claim (and the walk of head inside it) must come back.
        let _ = try_claim(&r, &NoSubs, &p, &mut cursor, &claiming, len);
        let (h, t) = (r.head.load(Ordering::Relaxed), r.tail.load(Ordering::Relaxed));
        prop_assert!(t.0 - h.0 <= CAP, "tail - head <= capacity");
    });
    println!(
        "a producer over arbitrary ring bytes: {} cases tried",
        tried.get()
    );
    assert_eq!(tried.get(), CASES);
}

/// `cases` cases, without failure files (the seeds print on failure anyway).
fn quiet(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}
