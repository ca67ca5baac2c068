//! The claim / commit / read protocol on a byte region: pure atomics, no I/O.
//!
//! A multi-producer, multi-subscriber broadcast ring of variable-length records, after
//! Aeron's IPC log buffers and broadcast transmitter/receiver
//! (<https://github.com/real-logic/aeron>, `TermAppender`, `BroadcastReceiver`) and the
//! two-phase slots of crossbeam's array channel: *reserve* bytes by advancing the shared tail,
//! *write* them, *publish* with a Release store that readers Acquire.
//!
//! Positions are absolute byte counters that never wrap; a record lives at
//! `position & (capacity - 1)` of the region. Every record carries the bus-wide sequence
//! number it was claimed with, so the sequence order *is* the ring order.
//!
//! # The rules
//!
//! * **Claim.** A producer reads `tail = { position, sequence }`, computes the record's
//!   extent (plus a WRAP padding record when it would straddle the end of the region), and
//!   replaces `tail` with `{ position + bytes, sequence + 1 }` by one 16-byte CAS. Before the
//!   CAS it stores `sequence + 1` in its slot's *claiming* word and clears it once the record
//!   is committed or abandoned, or when it gives up on a full ring (see `PROD_CLAIMING` in
//!   `layout`). A repairer (design question 2) thus knows which producers may own a record
//!   that is stuck, and repairs only when every one of them is dead.
//! * **Head before claim** (design question 1). `head = { position, sequence }` is the oldest
//!   retained record. A claim may end at most `capacity` bytes after `head`; a producer that
//!   needs more first walks `head` forward over *committed* records with a CAS. Hence
//!   `tail.position - head.position <= capacity` always, and a record at or after `head` is
//!   never being overwritten.
//! * **Reliable mode** bounds that walk by the lowest published subscriber position. A
//!   producer caches the limit it computed and rescans the slots only when a claim would pass
//!   it, so publishing is O(1) in the number of subscribers (design question 7).
//! * **Commit** stores word1, then CASes word0 from the value the claim found there (what an
//!   earlier lap left, or `{ seq, EMPTY }` when those bytes already read as this very header)
//!   to DATA (or ABANDONED for a dropped loan), so that a producer's late commit and a
//!   repairer's unblock cannot both win.
//! * **Exclusive buses** (one producer slot, [`Params::exclusive`]): the only producer claims
//!   with a Release store of the tail and commits with a Release store of word0 (no locked
//!   instruction per message), and moves `head` by jumps between boundaries of its own
//!   records (`Marks`). It relies on being the only writer: a second one (only possible if
//!   a process's liveness lock is lost, see docs/failure-model.md) is detected, within a lap,
//!   by a tail that is not where this producer left it ([`ClaimError::Conflict`]). It writes
//!   the WRAP and a `{ seq, EMPTY }` word0 *before* the tail store that publishes a claim.
//! * **Read** ([`Reader`], the one read path). A reader knows the position and sequence of
//!   its next record. It acts only on bytes below a tail it loaded *before* reading them
//!   (everything at or past the tail is an earlier lap's), then Acquire-loads word0 there;
//!   anything but `{ expected sequence, committed state }` means "not yet" (or, in lossy
//!   mode, "lapped" once `head` has passed it). The header must pass its keyed check
//!   (`layout::record_check`: position, word0 and length, keyed with the bus's secret), so
//!   an earlier lap's bytes and payload bytes shaped like headers are never records. Every
//!   length is bounds-checked before use and every sum checked: a bad value is a
//!   [`RecordProblem`], never an out-of-bounds access or an overflow.
//! * **Lossy reads** copy the payload out, then (after an Acquire fence) check that `head`
//!   has not passed the record: a producer moves `head` before it claims the bytes, so an
//!   unchanged `head` proves the copy is not torn (design question 5; the seqlock pattern).
//!
//! The region is abstract ([`Region`]) so that the same code runs on the mapping in
//! production and on heap memory with loom's atomics in `tests/loom_ring.rs`.

//!
//! # Where each rule lives
//!
//! | file | rules |
//! |---|---|
//! | `claim.rs` | claim, WRAP, commit and abandon, moving `head` (and the exclusive marks) |
//! | `read.rs` | what a header says, the reader's state machine, joining positions |
//! | `gaps.rs` | sizing and repairing the claims of dead producers |
//! | `heap.rs` | a ring on heap memory for tests and loom |

// Under loom only the parts the models exercise are used.
#![cfg_attr(loom, allow(dead_code))]

mod claim;
mod gaps;
#[cfg(test)]
pub(crate) mod heap;
mod read;
#[cfg(all(test, not(loom)))]
mod tests;

// Under loom the rest of the crate, which uses these, is not built.
#[cfg_attr(loom, allow(unused_imports))]
pub(crate) use claim::*;
#[cfg_attr(loom, allow(unused_imports))]
pub(crate) use gaps::*;
pub use read::RecordProblem;
pub(crate) use read::*;

use crate::layout::{Mode, RecordKey};
use crate::sync::{AtomicU64, Pair};

/// The memory a ring lives in: the two position pairs and the data region.
pub(crate) trait Region {
    /// `{ position, sequence }` of the next claim.
    fn tail(&self) -> &Pair;
    /// `{ position, sequence }` of the oldest retained record.
    fn head(&self) -> &Pair;
    /// The 8-byte word at `offset` of the data region.
    ///
    /// Callers pass a multiple of 8 below the capacity; implementations may panic otherwise.
    fn word(&self, offset: u64) -> &AtomicU64;
    /// Copies `src` into the data region at `offset`.
    ///
    /// # Safety
    ///
    /// `offset` is a multiple of 16, `offset + src.len() <= capacity`, and the bytes are
    /// inside a record this producer claimed and has not committed.
    unsafe fn write_bytes(&self, offset: u64, src: &[u8]);
    /// Copies `dst.len()` bytes from the data region at `offset`. (The subscriber copies
    /// into uninitialised buffer space through `Segment::data_ptr` instead.)
    ///
    /// # Safety
    ///
    /// `offset` is a multiple of 16 and `offset + dst.len() <= capacity`. The bytes may be
    /// changing under the copy (lossy mode); the caller validates afterwards.
    #[cfg_attr(not(test), allow(dead_code))]
    unsafe fn read_bytes(&self, offset: u64, dst: &mut [u8]);
}

/// What the ring needs to know about subscribers (reliable mode).
pub(crate) trait Subscribers {
    /// The lowest published position of an active subscriber, `None` if there is none.
    ///
    /// Loads are SeqCst: see [`limit_after_head`] for the join protocol that relies on it.
    fn min_position(&self) -> Option<u64>;
}

/// The parameters of one ring, copied out of the validated header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Params {
    pub capacity: u64,
    pub max_message: u32,
    pub mode: Mode,
    /// The bus has one producer slot, so at most one producer writes the tail and commits at
    /// a time: the claim is a Release store of the tail and the commit a Release store of the
    /// header, where shared buses need two locked instructions per message (see
    /// [`try_claim`] and [`commit`]).
    pub exclusive: bool,
    /// The key of every record's check (`layout::record_check`).
    pub key: RecordKey,
}

impl Params {
    #[inline]
    fn mask(&self) -> u64 {
        self.capacity - 1
    }

    /// How far past the bytes it needs a producer walks `head` at once: fewer head updates
    /// (a contended line) against a little less history retained.
    fn head_chunk(&self) -> u64 {
        (self.capacity / 16).min(64 * 1024)
    }
}
