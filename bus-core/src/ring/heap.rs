//! A ring on heap memory, for unit tests, loom models (and Miri).

//! A ring on heap memory, for unit tests, loom models (and Miri).
use super::*;
use crate::layout::Mode;
use crate::sync::{AtomicU64, Ordering, Pair};

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
