//! Calibration rings: what a shared-memory ring *without* shmbus's features moves between two
//! processes on this machine, measured in the same run as shmbus, so that "shmbus × the
//! featureless ring" is a measured ratio, not a remembered one (DESIGN.md: "features must not
//! eat the room").
//!
//! Two rings, each a few dozen lines of protocol over a file mapped by both processes:
//!
//! * `ring-spsc`: one writer, one reader, Lamport's ring with cached indices (as rtrb): the
//!   writer publishes its `tail` with a Release store per message, the reader its `head`.
//! * `ring-mpmc`: the claim of a multi-producer ring: producers reserve bytes with a CAS on
//!   the shared `tail`, write, then commit by a Release store of the record's commit word;
//!   the reader polls the commit word of its next record, never the tail (Aeron's IPC log).
//!
//! What they leave out, and shmbus has: several subscribers, a file format and its checks
//! (a header, versions, keyed record checks against stale or planted bytes), liveness and
//! repair of dead producers, futex sleeps, lossy mode, statistics. What they share with it,
//! so that the ratio isolates those features: the copy of the message in by the sender and
//! the read in place by the receiver (as `send` + `recv_ref`), 16-byte record headers (16-byte
//! aligned payloads), WRAP padding at the end of the region, the ring's size (the bus's
//! capacity for that message size), and the reader's waiting: read every record already
//! there, publish the read position once per batch (or each quarter ring), and when caught up
//! pause between polls with shmbus's own adaptive busy-poll (see `Subscriber::adapt_spin`).
//!
//! Both are references for calibration only: one receiver, no fan-out, and no protection
//! against a bad peer (a hostile process can make them read out of bounds; they trust the file).

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::transport::{DuplexEnds, Rx, Shmbus, Side, Transport, Tx};

/// Offset of the writer's `tail` in the file; `head` sits two cache lines further (no line,
/// nor the adjacent-line prefetch pair, is shared between the two sides' hot words).
const TAIL: usize = 0;
const HEAD: usize = 128;
/// Where the data region starts (a page: records are page-aligned where the ring is).
const DATA: usize = 4096;
/// Record header: word0 = commit word (MPMC: position + 1 once committed), word1 = length or
/// [`PAD`].
const REC_HEADER: u64 = 16;
/// word1 of a WRAP padding record: the rest of the region up to its end is skipped.
const PAD: u64 = u64::MAX;
/// word1 of an alignment padding record: `SKIP | bytes` (see [`Layout`]).
const SKIP: u64 = 1 << 63;
/// Messages of at least this many bytes get the payload alignment of [`Layout`].
const LARGE: u64 = 4096;
/// Longest pause between two polls, in spin-loop hints (shmbus's `MAX_SPIN_PAUSE`).
const MAX_SPIN_PAUSE: u32 = 1024;

/// Experiments on large messages (issue 13), from the environment of the benchmark (the
/// children inherit it, so both ends agree):
/// * `SHMBUS_BENCH_RING_ALIGN=A` (a power of two, default 16): payloads of messages of 4 KiB
///   and more start `A`-aligned, after an alignment padding record where needed (64: a cache
///   line, 4096: a page);
/// * `SHMBUS_BENCH_RING_NT=1`: such payloads are copied in with non-temporal stores.
#[derive(Debug, Clone, Copy)]
struct Layout {
    align: u64,
    non_temporal: bool,
}

impl Layout {
    fn from_env() -> Layout {
        let align = std::env::var("SHMBUS_BENCH_RING_ALIGN")
            .ok()
            .and_then(|a| a.parse::<u64>().ok())
            .filter(|a| a.is_power_of_two() && *a >= 16)
            .unwrap_or(16);
        let non_temporal = std::env::var("SHMBUS_BENCH_RING_NT").is_ok_and(|v| v == "1");
        Layout {
            align,
            non_temporal,
        }
    }

    /// Bytes of alignment padding before a record of `len` bytes at `pos`: 0, or at least a
    /// header's 16.
    #[inline(always)]
    fn skip(&self, pos: u64, len: u64) -> u64 {
        if len < LARGE || self.align == 16 {
            return 0;
        }
        match (pos + REC_HEADER) & (self.align - 1) {
            0 => 0,
            off if self.align - off < REC_HEADER => 2 * self.align - off,
            off => self.align - off,
        }
    }
}

/// Copies `len` bytes with non-temporal stores (16-byte aligned destination).
///
/// # Safety
///
/// As `copy_nonoverlapping`, and `dst` is 16-aligned.
#[cfg(target_arch = "x86_64")]
unsafe fn copy_nt(src: *const u8, dst: *mut u8, len: usize) {
    use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_sfence, _mm_stream_si128};
    let whole = len & !15;
    let mut i = 0;
    while i < whole {
        // SAFETY: `i + 16 <= len` on both sides; `dst + i` is 16-aligned; SSE2 is part of
        // x86-64.
        unsafe {
            let v = _mm_loadu_si128(src.add(i) as *const __m128i);
            _mm_stream_si128(dst.add(i) as *mut __m128i, v);
        }
        i += 16;
    }
    // SAFETY: the tail, inside both buffers; the fence orders the streaming stores before
    // the Release store that publishes the record.
    unsafe {
        std::ptr::copy_nonoverlapping(src.add(whole), dst.add(whole), len - whole);
        _mm_sfence();
    }
}

/// A featureless ring as a benchmark transport.
pub struct Ring {
    name: &'static str,
    about: &'static str,
    mpmc: bool,
}

impl Ring {
    /// One writer, one reader: Release stores of tail and head.
    pub const SPSC: Ring = Ring {
        name: "ring-spsc",
        about: "calibration: a featureless SPSC ring in shared memory (Release-stored tail, cached indices, 16-byte record headers)",
        mpmc: false,
    };
    /// CAS claim on the tail, commit word per record, reader polls commit words.
    pub const MPMC: Ring = Ring {
        name: "ring-mpmc",
        about: "calibration: a featureless multi-producer ring in shared memory (CAS claim of the tail, a commit word per record)",
        mpmc: true,
    };

    fn file(dir: &Path, which: &str) -> std::path::PathBuf {
        dir.join(format!("{which}.ring"))
    }

    fn tx(&self, dir: &Path, which: &str) -> io::Result<RingTx> {
        let map = Map::open(&Self::file(dir, which))?;
        Ok(RingTx {
            mpmc: self.mpmc,
            tail: 0,
            head: 0,
            buf: Vec::new(),
            layout: Layout::from_env(),
            map,
        })
    }

    fn rx(&self, dir: &Path, which: &str) -> io::Result<RingRx> {
        let map = Map::open(&Self::file(dir, which))?;
        Ok(RingRx {
            mpmc: self.mpmc,
            pos: 0,
            published: 0,
            tail: 0,
            spin_pause: 1,
            batch: 0,
            map,
        })
    }
}

/// The shared file, mapped.
struct Map {
    ptr: *mut u8,
    len: usize,
    /// Data region size: a power of two.
    cap: u64,
}

impl Map {
    fn open(path: &Path) -> io::Result<Map> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let len = file.metadata()?.len() as usize;
        if len <= DATA || !((len - DATA) as u64).is_power_of_two() {
            return Err(io::Error::other("ring file of a bad size"));
        }
        // SAFETY: maps `len` bytes of a file we opened read-write, shared; the pointer is only
        // used inside that length while `Map` lives, and unmapped in `drop`.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::SHARED,
                &file,
                0,
            )?
        };
        Ok(Map {
            ptr: ptr.cast(),
            len,
            cap: (len - DATA) as u64,
        })
    }

    /// The 8-byte word at `offset` of the file.
    #[inline(always)]
    fn word(&self, offset: usize) -> &AtomicU64 {
        debug_assert!(offset % 8 == 0 && offset + 8 <= self.len);
        // SAFETY: in bounds (callers pass header offsets or data offsets below the capacity,
        // 8-aligned), the mapping is page-aligned, and the word is only accessed atomically
        // or as bytes of a payload that its owner no longer writes.
        unsafe { &*(self.ptr.add(offset) as *const AtomicU64) }
    }

    #[inline(always)]
    fn data_word(&self, idx: u64) -> &AtomicU64 {
        self.word(DATA + idx as usize)
    }

    /// The payload bytes of the record at data offset `idx`.
    #[inline(always)]
    fn payload(&self, idx: u64) -> *mut u8 {
        debug_assert!(DATA as u64 + idx + REC_HEADER <= self.len as u64);
        // SAFETY: `idx` is a data offset below the capacity, so the result is inside the
        // mapping (or one past its end for an empty payload at the very end).
        unsafe { self.ptr.add(DATA + (idx + REC_HEADER) as usize) }
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `open` mapped; no reference into it outlives `self`.
        let _ = unsafe { rustix::mm::munmap(self.ptr.cast(), self.len) };
    }
}

/// The bytes a record of `len` payload bytes takes: header plus payload, 16-aligned.
#[inline(always)]
fn extent(len: u64) -> u64 {
    REC_HEADER + ((len + 15) & !15)
}

/// Aligned to two cache lines so that where the allocator puts it (glibc and mimalloc differ)
/// cannot change which lines its hot fields share: it moved `ring-mpmc` by 6 %.
#[repr(align(128))]
struct RingTx {
    mpmc: bool,
    /// SPSC: the tail (only this writer moves it). MPMC: the guess of the next CAS, what our
    /// last claim left (a wrong guess costs a failed CAS, which returns the real value).
    tail: u64,
    /// The reader's position as last loaded: may be stale (too low), never too high.
    head: u64,
    buf: Vec<u8>,
    layout: Layout,
    map: Map,
}

impl RingTx {
    /// Waits until `end` is at most a capacity past the reader.
    #[inline(always)]
    fn room(&mut self, end: u64) {
        while end - self.head > self.map.cap {
            // ORDERING: Acquire: pairs with the reader's Release store of head; the bytes it
            // read before are no longer read once we overwrite them.
            self.head = self.map.word(HEAD).load(Ordering::Acquire);
            if end - self.head > self.map.cap {
                std::hint::spin_loop();
            }
        }
    }

    /// Where a record of `len` bytes at `pos` goes: WRAP bytes, then alignment padding
    /// bytes, before it, and its end.
    #[inline(always)]
    fn place(&self, pos: u64, len: u64) -> (u64, u64, u64) {
        let ext = extent(len);
        let idx = pos & (self.map.cap - 1);
        let skip = self.layout.skip(pos, len);
        if idx + skip + ext > self.map.cap {
            let pad = self.map.cap - idx;
            let skip = self.layout.skip(pos + pad, len);
            (pad, skip, pos + pad + skip + ext)
        } else {
            (0, skip, pos + skip + ext)
        }
    }

    /// A padding record at `pos` of `word1` (PAD, or SKIP with its length).
    #[inline(always)]
    fn write_pad(&self, pos: u64, word1: u64) {
        let idx = pos & (self.map.cap - 1);
        // ORDERING: Relaxed: published by the commit (Release) below, or the tail store.
        self.map.data_word(idx + 8).store(word1, Ordering::Relaxed);
        if self.mpmc {
            // ORDERING: Release: the reader Acquires the commit word, then reads word1.
            self.map.data_word(idx).store(pos + 1, Ordering::Release);
        }
    }

    #[inline(always)]
    fn write_record(&self, pos: u64, pad: u64, skip: u64, len: usize) {
        if pad > 0 {
            self.write_pad(pos, PAD);
        }
        if skip > 0 {
            self.write_pad(pos + pad, SKIP | skip);
        }
        let rec = pos + pad + skip;
        let idx = rec & (self.map.cap - 1);
        // ORDERING: Relaxed: published by the commit word's (or the tail's) Release store.
        self.map
            .data_word(idx + 8)
            .store(len as u64, Ordering::Relaxed);
        let dst = self.map.payload(idx);
        #[cfg(target_arch = "x86_64")]
        if self.layout.non_temporal && len as u64 >= LARGE {
            // SAFETY: as below; payloads are 16-aligned (the region is page-aligned and
            // records 16-aligned).
            unsafe { copy_nt(self.buf.as_ptr(), dst, len) };
            self.commit(rec, idx);
            return;
        }
        // SAFETY: the record `[idx, idx + extent)` lies inside the region (`place`), was
        // reserved by this writer and is not read until committed; `buf` is process memory.
        unsafe { std::ptr::copy_nonoverlapping(self.buf.as_ptr(), dst, len) };
        self.commit(rec, idx);
    }

    #[inline(always)]
    fn commit(&self, rec: u64, idx: u64) {
        if self.mpmc {
            // ORDERING: Release: a reader whose Acquire load sees this sees word1 and the
            // payload.
            self.map.data_word(idx).store(rec + 1, Ordering::Release);
        }
    }
}

impl Tx for RingTx {
    fn send(&mut self, size: usize, fill: &mut dyn FnMut(&mut [u8])) -> io::Result<()> {
        if extent(size as u64) + self.layout.align > self.map.cap / 2 {
            return Err(io::Error::other("message too large for the ring"));
        }
        self.buf.resize(size, 0);
        fill(&mut self.buf);
        if !self.mpmc {
            let pos = self.tail;
            let (pad, skip, end) = self.place(pos, size as u64);
            self.room(end);
            self.write_record(pos, pad, skip, size);
            // ORDERING: Release: the reader Acquires the tail, then reads the records below.
            self.map.word(TAIL).store(end, Ordering::Release);
            self.tail = end;
            return Ok(());
        }
        let mut t = self.tail;
        let (pos, pad, skip) = loop {
            let (pad, skip, end) = self.place(t, size as u64);
            self.room(end);
            // ORDERING: AcqRel on success (the claim orders after the head we checked, and
            // other producers' claims before it); Relaxed on failure (we retry from `now`).
            match self
                .map
                .word(TAIL)
                .compare_exchange(t, end, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => {
                    self.tail = end;
                    break (t, pad, skip);
                }
                Err(now) => t = now,
            }
        };
        self.write_record(pos, pad, skip, size);
        Ok(())
    }
}

/// Aligned like [`RingTx`].
#[repr(align(128))]
struct RingRx {
    mpmc: bool,
    /// Position of the next record.
    pos: u64,
    /// What was last stored in head.
    published: u64,
    /// SPSC: the tail as last loaded (may be stale, never too high).
    tail: u64,
    /// The adaptive pause of shmbus's busy-polling subscriber (`Subscriber::adapt_spin`).
    spin_pause: u32,
    batch: u32,
    map: Map,
}

impl RingRx {
    fn publish(&mut self) {
        // ORDERING: Release: the writer that Acquires this may overwrite what we read.
        self.map.word(HEAD).store(self.pos, Ordering::Release);
        self.published = self.pos;
    }

    /// The record at `pos`, if committed: `(idx, word1)`.
    #[inline(always)]
    fn poll(&mut self) -> Option<(u64, u64)> {
        let idx = self.pos & (self.map.cap - 1);
        if self.mpmc {
            // ORDERING: Acquire: pairs with the commit's Release store (word1, payload).
            if self.map.data_word(idx).load(Ordering::Acquire) != self.pos + 1 {
                return None;
            }
        } else if self.pos == self.tail {
            // ORDERING: Acquire: pairs with the writer's Release store of the tail.
            self.tail = self.map.word(TAIL).load(Ordering::Acquire);
            if self.pos == self.tail {
                return None;
            }
        }
        // ORDERING: Relaxed: ordered by the Acquire above.
        Some((idx, self.map.data_word(idx + 8).load(Ordering::Relaxed)))
    }

    fn adapt_spin(&mut self, waited: u32) {
        let batch = std::mem::replace(&mut self.batch, 0);
        if batch >= 2 || waited <= 4 {
            self.spin_pause = (self.spin_pause * 2).min(MAX_SPIN_PAUSE);
        } else {
            self.spin_pause = (self.spin_pause / 2).max(1);
        }
    }
}

impl Rx for RingRx {
    fn recv(&mut self, f: &mut dyn FnMut(&[u8])) -> io::Result<()> {
        if self.pos - self.published >= self.map.cap / 4 {
            self.publish();
        }
        let mut polls = 0u32;
        let mut waited = 0u32;
        loop {
            if let Some((idx, word1)) = self.poll() {
                if word1 == PAD {
                    self.pos += self.map.cap - idx;
                    continue;
                }
                if word1 & SKIP != 0 {
                    self.pos += word1 & !SKIP;
                    continue;
                }
                if polls > 0 {
                    self.adapt_spin(waited);
                }
                let len = word1 as usize;
                if idx + extent(word1) > self.map.cap {
                    return Err(io::Error::other("ring record out of bounds"));
                }
                // SAFETY: the record is committed and inside the region (checked above); the
                // writer does not overwrite it before head passes it, after `f` returns.
                let msg = unsafe { std::slice::from_raw_parts(self.map.payload(idx), len) };
                f(msg);
                self.pos += extent(word1);
                self.batch += 1;
                return Ok(());
            }
            // Caught up: let the writer have the space, then pause before polling again.
            if self.published != self.pos {
                self.publish();
            }
            let pause = (self.spin_pause << (polls / 8).min(6)).min(MAX_SPIN_PAUSE);
            polls += 1;
            waited = waited.saturating_add(pause);
            for _ in 0..pause {
                std::hint::spin_loop();
            }
        }
    }
}

impl Transport for Ring {
    fn name(&self) -> &'static str {
        self.name
    }
    fn about(&self) -> &'static str {
        self.about
    }
    fn is_calibration(&self) -> bool {
        true
    }
    fn prepare(&self, dir: &Path, receivers: u32, size: usize, duplex: bool) -> io::Result<()> {
        if receivers > 1 {
            return Err(io::Error::other(format!(
                "{} has one receiver (no fan-out)",
                self.name
            )));
        }
        let len = DATA as u64 + Shmbus::capacity(size);
        for which in if duplex { &["a", "b"][..] } else { &["a"] } {
            let f = File::create_new(Self::file(dir, which))?;
            f.set_len(len)?;
        }
        Ok(())
    }
    fn receiver(&self, dir: &Path, _index: u32) -> io::Result<(Box<dyn Rx>, String)> {
        Ok((Box::new(self.rx(dir, "a")?), String::new()))
    }
    fn sender(&self, dir: &Path, _tokens: &[String]) -> io::Result<Box<dyn Tx>> {
        Ok(Box::new(self.tx(dir, "a")?))
    }
    fn duplex(&self, dir: &Path, side: Side, _token: &str) -> io::Result<DuplexEnds> {
        let (out, inp) = match side {
            Side::A => ("a", "b"),
            Side::B => ("b", "a"),
        };
        Ok((
            Box::new(self.tx(dir, out)?),
            Box::new(self.rx(dir, inp)?),
            String::new(),
        ))
    }
}
