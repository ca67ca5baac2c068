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

/// Payloads that hold, at every 16-byte aligned offset, a header in the documented format
/// (issue 8): for the record that a later lap starts there, and for the position itself, in
/// every state. With `key_known` the headers carry the bus's own key (what only a process
/// that read the bus file could write) and the reader polls only between whole publishes,
/// ahead of the tail: the tail rule alone must keep it from them. Without it (a guessed key:
/// what a relayed payload can hold) the reader also polls in every window between a claim
/// and its commit, where only the keyed check stands between it and the bytes. Either way
/// the reader delivers every message exactly once, byte for byte, and in lossy mode
/// delivered + lost = published.
fn planted_stream(key_known: bool) {
    use crate::layout::{
        header, record_extent, STATE_ABANDONED, STATE_DATA, STATE_FILL, STATE_GAP, STATE_WRAP,
    };
    use crate::ring::{commit, write_claimed, Region};
    let tried = std::cell::Cell::new(0u32);
    proptest!(quiet(CASES / 8), |(
        lens in prop::collection::vec(0usize..300, 1..120),
        lossy in any::<bool>(),
        exclusive in any::<bool>(),
        start16 in 0u64..64,
    )| {
        tried.set(tried.get() + 1);
        let start = start16 * RECORD_ALIGN + 4 * CAP;
        let p = Params {
            capacity: CAP,
            max_message: 300,
            mode: if lossy { Mode::Lossy } else { Mode::Reliable },
            exclusive,
            key: RecordKey(0x0bad_5eed),
        };
        let plant_key = if key_known { p.key } else { RecordKey(0x0bad_5eee) };
        let r = HeapRegion::new(CAP, start);
        let mut cursor = ProducerCursor::default();
        let mut reader = Reader::new(start, 0);
        let (mut got, mut lost) = (Vec::new(), 0u64);
        let drain = |r: &HeapRegion, reader: &mut Reader, got: &mut Vec<(u64, Vec<u8>)>,
                         lost: &mut u64| {
            for _ in 0..1000 {
                match heap::read_one(r, &p, reader) {
                    Ok(Some(Got::Msg(q, v))) => got.push((q, v)),
                    Ok(Some(Got::Lost(n))) => *lost += n,
                    Ok(None) | Err(crate::ring::RecordProblem::CheckMismatch) => return,
                    Err(e) => panic!("read a planted header as a record: {e}"),
                }
            }
            panic!("the reader did not stop");
        };
        let payload = |seq: u64, pos: u64, len: usize| -> Vec<u8> {
            let mut v: Vec<u8> = (0..len).map(|i| (seq as u8) ^ (i as u8)).collect();
            for off in (0..len.saturating_sub(15)).step_by(16) {
                let here = pos + RECORD_ALIGN + off as u64;
                let states = [STATE_DATA, STATE_ABANDONED, STATE_WRAP, STATE_GAP, STATE_FILL];
                let state = states[(here / 16 % 5) as usize];
                // Alternate: the next lap's record here, and this very position.
                let at = if off % 32 == 0 { here + CAP } else { here };
                let guess_seq = seq + 1 + (off as u64 / 16) % 4;
                let low = match state {
                    STATE_WRAP => ((CAP - (at % CAP)) / 16) as u32,
                    STATE_GAP | STATE_FILL => 1 + (off as u32 / 16) % 3,
                    _ => (off % 64) as u32,
                };
                let (w0, w1) = header(plant_key, at, guess_seq, state, low);
                v[off..off + 8].copy_from_slice(&w0.to_ne_bytes());
                v[off + 8..off + 16].copy_from_slice(&w1.to_ne_bytes());
            }
            v
        };
        let mut sent = Vec::new();
        for (i, &len) in lens.iter().enumerate() {
            let claiming = AtomicU64::new(0);
            let sub_pos = AtomicU64::new(reader.pos);
            let subs = OneSub(&sub_pos, lossy);
            let c = match try_claim(&r, &subs, &p, &mut cursor, &claiming, len as u32) {
                Ok(c) => c,
                Err(_) => {
                    // Reliable and full: read, then claim again.
                    drain(&r, &mut reader, &mut got, &mut lost);
                    sub_pos.store(reader.pos, Ordering::SeqCst);
                    try_claim(&r, &subs, &p, &mut cursor, &claiming, len as u32)
                        .expect("room after reading")
                }
            };
            write_claimed(&r, &p, &c);
            let data = payload(i as u64, c.position(), len);
            // SAFETY: the claim owns `len` bytes at its payload offset.
            unsafe { r.write_bytes(c.payload_offset(&p), &data) };
            if !key_known {
                // In the window between claim and commit.
                drain(&r, &mut reader, &mut got, &mut lost);
            }
            commit(&r, &p, &c, &claiming).unwrap();
            sent.push(data);
            drain(&r, &mut reader, &mut got, &mut lost);
            prop_assert!(record_extent(len as u64) <= CAP);
        }
        drain(&r, &mut reader, &mut got, &mut lost);
        prop_assert_eq!(got.len() as u64 + lost, sent.len() as u64);
        if !lossy {
            prop_assert_eq!(lost, 0);
        }
        let mut last = None;
        for (q, v) in &got {
            prop_assert!(last.is_none_or(|l| *q > l), "in order, once each");
            prop_assert_eq!(v, &sent[*q as usize], "message {} byte for byte", q);
            last = Some(*q);
        }
    });
    println!(
        "streams with planted headers (key known: {key_known}): {} cases tried",
        tried.get()
    );
    assert_eq!(tried.get(), CASES / 8);
}

/// One subscriber at `pos` in reliable mode (none in lossy mode).
struct OneSub<'a>(&'a AtomicU64, bool);
impl Subscribers for OneSub<'_> {
    fn min_position(&self) -> Option<u64> {
        (!self.1).then(|| self.0.load(Ordering::SeqCst))
    }
}

#[test]
fn payloads_holding_keyed_headers_are_not_read_ahead_of_the_tail() {
    planted_stream(true);
}

#[test]
fn payloads_holding_unkeyed_headers_are_never_records() {
    planted_stream(false);
}
