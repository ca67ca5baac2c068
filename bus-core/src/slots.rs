//! Typed views of the slot table: one line per participant (see `layout` for the offsets).
//!
//! Every accessor names its ordering, as the header's do (`Segment::tail`, ...); the words a
//! protocol hands to another module whole (the claiming word to the ring, the sleeping flag
//! to the futex wait) are lent as atomics. Call sites keep their `// ORDERING:` reason.

use crate::layout::{
    PROD_ABANDONED, PROD_BYTES, PROD_CLAIMING, PROD_SENT, SLOT_JOINED, SLOT_PID, SLOT_SIZE,
    SLOT_SLEEPING, SLOT_STATE, SUB_DELIVERED, SUB_LOST, SUB_POSITION, SUB_SEQ, SUB_UNBLOCKED,
};
use crate::mapping::Segment;
use crate::sync::{AtomicU32, AtomicU64, Ordering};

/// The words every slot has: state, pid, join time, sleeping flag.
#[derive(Clone, Copy)]
pub(crate) struct SlotRef<'a> {
    seg: &'a Segment,
    /// File offset of the slot (from `Config::*_slot_offset`).
    pub(crate) offset: u64,
}

impl<'a> SlotRef<'a> {
    pub(crate) fn new(seg: &'a Segment, offset: u64) -> Self {
        SlotRef { seg, offset }
    }

    fn u32(&self, field: usize) -> &'a AtomicU32 {
        self.seg.slot32(self.offset, field)
    }

    fn u64(&self, field: usize) -> &'a AtomicU64 {
        self.seg.slot64(self.offset, field)
    }

    /// `SLOT_FREE` or `SLOT_ACTIVE`.
    pub(crate) fn state_seqcst(&self) -> u32 {
        self.u32(SLOT_STATE).load(Ordering::SeqCst)
    }
    pub(crate) fn state_acquire(&self) -> u32 {
        self.u32(SLOT_STATE).load(Ordering::Acquire)
    }
    pub(crate) fn state_relaxed(&self) -> u32 {
        self.u32(SLOT_STATE).load(Ordering::Relaxed)
    }
    pub(crate) fn set_state_seqcst(&self, state: u32) {
        self.u32(SLOT_STATE).store(state, Ordering::SeqCst);
    }

    pub(crate) fn pid_relaxed(&self) -> u32 {
        self.u32(SLOT_PID).load(Ordering::Relaxed)
    }
    pub(crate) fn set_pid_relaxed(&self, pid: u32) {
        self.u32(SLOT_PID).store(pid, Ordering::Relaxed);
    }

    pub(crate) fn joined_relaxed(&self) -> u64 {
        self.u64(SLOT_JOINED).load(Ordering::Relaxed)
    }
    pub(crate) fn set_joined_relaxed(&self, unix_ns: u64) {
        self.u64(SLOT_JOINED).store(unix_ns, Ordering::Relaxed);
    }

    /// The flag a participant sets while it is counted as asleep (`wait::sleep_unless`).
    pub(crate) fn sleeping(&self) -> &'a AtomicU32 {
        self.u32(SLOT_SLEEPING)
    }

    /// Zeroes every field after the pid (before the slot turns ACTIVE).
    pub(crate) fn clear_fields_relaxed(&self) {
        for field in (SLOT_JOINED..SLOT_SIZE).step_by(8) {
            self.u64(field).store(0, Ordering::Relaxed);
        }
    }
}

/// A subscriber's slot.
#[derive(Clone, Copy)]
pub(crate) struct SubSlot<'a>(pub(crate) SlotRef<'a>);

impl<'a> std::ops::Deref for SubSlot<'a> {
    type Target = SlotRef<'a>;
    fn deref(&self) -> &SlotRef<'a> {
        &self.0
    }
}

impl SubSlot<'_> {
    /// The published read position: producers never claim past it plus the capacity.
    pub(crate) fn position_seqcst(&self) -> u64 {
        self.u64(SUB_POSITION).load(Ordering::SeqCst)
    }
    pub(crate) fn position_acquire(&self) -> u64 {
        self.u64(SUB_POSITION).load(Ordering::Acquire)
    }
    pub(crate) fn set_position_seqcst(&self, position: u64) {
        self.u64(SUB_POSITION).store(position, Ordering::SeqCst);
    }

    /// The sequence at the published position.
    pub(crate) fn seq_acquire(&self) -> u64 {
        self.u64(SUB_SEQ).load(Ordering::Acquire)
    }
    pub(crate) fn set_seq_relaxed(&self, seq: u64) {
        self.u64(SUB_SEQ).store(seq, Ordering::Relaxed);
    }

    /// `(delivered, lost, unblocked)`.
    pub(crate) fn counters_relaxed(&self) -> (u64, u64, u64) {
        (
            self.u64(SUB_DELIVERED).load(Ordering::Relaxed),
            self.u64(SUB_LOST).load(Ordering::Relaxed),
            self.u64(SUB_UNBLOCKED).load(Ordering::Relaxed),
        )
    }
    pub(crate) fn set_counters_relaxed(&self, delivered: u64, lost: u64, unblocked: u64) {
        self.u64(SUB_DELIVERED).store(delivered, Ordering::Relaxed);
        self.u64(SUB_LOST).store(lost, Ordering::Relaxed);
        self.u64(SUB_UNBLOCKED).store(unblocked, Ordering::Relaxed);
    }
}

/// A producer's slot.
#[derive(Clone, Copy)]
pub(crate) struct ProdSlot<'a>(pub(crate) SlotRef<'a>);

impl<'a> std::ops::Deref for ProdSlot<'a> {
    type Target = SlotRef<'a>;
    fn deref(&self) -> &SlotRef<'a> {
        &self.0
    }
}

impl<'a> ProdSlot<'a> {
    /// 0 when idle, else 1 + the sequence being claimed (the ring writes it).
    pub(crate) fn claiming(&self) -> &'a AtomicU64 {
        self.u64(PROD_CLAIMING)
    }
    pub(crate) fn claiming_acquire(&self) -> u64 {
        self.u64(PROD_CLAIMING).load(Ordering::Acquire)
    }

    /// `(sent, bytes, abandoned)`.
    pub(crate) fn counters_relaxed(&self) -> (u64, u64, u64) {
        (
            self.u64(PROD_SENT).load(Ordering::Relaxed),
            self.u64(PROD_BYTES).load(Ordering::Relaxed),
            self.u64(PROD_ABANDONED).load(Ordering::Relaxed),
        )
    }
    #[inline]
    pub(crate) fn set_sent_relaxed(&self, sent: u64, bytes: u64) {
        self.u64(PROD_SENT).store(sent, Ordering::Relaxed);
        self.u64(PROD_BYTES).store(bytes, Ordering::Relaxed);
    }
    pub(crate) fn set_abandoned_relaxed(&self, abandoned: u64) {
        self.u64(PROD_ABANDONED).store(abandoned, Ordering::Relaxed);
    }
}

impl Segment {
    /// The slot at file offset `offset`, as either kind.
    pub(crate) fn slot(&self, offset: u64) -> SlotRef<'_> {
        SlotRef::new(self, offset)
    }
    /// The subscriber slot at file offset `offset`.
    pub(crate) fn sub_slot(&self, offset: u64) -> SubSlot<'_> {
        SubSlot(SlotRef::new(self, offset))
    }
    /// The producer slot at file offset `offset`.
    pub(crate) fn prod_slot(&self, offset: u64) -> ProdSlot<'_> {
        ProdSlot(SlotRef::new(self, offset))
    }
}
