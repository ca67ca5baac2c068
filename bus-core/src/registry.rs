//! Subscriber and producer slots: join, leave, liveness, eviction.
//!
//! Each participant owns one slot (one 128-byte line of the slot table). Its liveness token is
//! an OFD write lock on the slot's byte range of the file, taken through an open file
//! description of its own: the kernel releases it when the process dies, however it dies. A
//! slot that says ACTIVE while nobody holds its lock belongs to a dead process; the *sweep*
//! frees it (eviction), under the control lock.
//!
//! Crash-relevant order:
//! * join: take the slot's OFD lock, fill the fields, *then* store ACTIVE. Dying before ACTIVE
//!   leaves a FREE slot (its lock dies with us).
//! * leave: store FREE, *then* release the OFD lock. Dying in between leaves a FREE slot.
//! * sweep: for an ACTIVE slot with no lock holder, give back its waiting count if it died
//!   asleep, then store FREE.

use std::fs::File;
use std::os::fd::AsFd;

use crate::layout::{SLOT_ACTIVE, SLOT_FREE, SLOT_SIZE};
use crate::lock::{self, LockError, LOCK_TIMEOUT};
use crate::mapping::{now_unix_ns, Segment};
use crate::ring;
use crate::sync::Ordering;
use crate::Shared;

/// Which table a slot is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotKind {
    /// A subscriber slot.
    Subscriber,
    /// A producer slot.
    Producer,
}

impl std::fmt::Display for SlotKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SlotKind::Subscriber => "subscriber",
            SlotKind::Producer => "producer",
        })
    }
}

/// A publisher or subscriber could not join the bus. Returned by [`crate::Bus::publisher`]
/// (and, inside [`crate::SubscribeError`], by [`crate::Bus::subscribe`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    /// Every slot of this kind is held by a live participant. Create the bus with more
    /// (`max_subscribers` / `max_producers`), or stop one.
    #[error("all {max} {kind} slots are in use")]
    NoFreeSlot {
        /// Which kind.
        kind: SlotKind,
        /// How many slots the bus has.
        max: u32,
    },
    /// The control lock could not be taken.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// Opening a descriptor for the liveness lock, or locking the slot, failed.
    #[error("liveness lock failed: {}", std::io::Error::from_raw_os_error(*errno))]
    Io {
        /// The `errno` value.
        errno: i32,
    },
}

fn io_err(e: std::io::Error) -> JoinError {
    JoinError::Io {
        errno: e.raw_os_error().unwrap_or(libc::EIO),
    }
}

/// A slot this process owns.
pub(crate) struct Slot {
    pub(crate) index: u32,
    /// File offset of the slot.
    pub(crate) offset: u64,
    /// The open file description holding the slot's liveness lock.
    fd: File,
    /// The process that joined. A child forked without exec inherits the handle and the
    /// descriptor (the same open file description, so the same lock), but not the slot.
    owner: u32,
    /// The fork count of the process that joined ([`lock::forks`]): a pid alone can repeat
    /// (PID 1 in a new namespace), and comparing counts costs no system call.
    forks: u64,
}

impl Slot {
    /// Whether this process is the one that joined (not a child forked since).
    pub(crate) fn is_ours(&self) -> bool {
        std::process::id() == self.owner && !self.forked()
    }

    /// Whether this process is a child forked since the join (by `fork`: a raw `clone`
    /// without the fork handlers shows only in [`Slot::is_ours`]'s pid). One load: every
    /// publish and receive asks.
    #[inline(always)]
    pub(crate) fn forked(&self) -> bool {
        lock::forks_counted() != self.forks
    }
}

pub(crate) fn slot_offset(seg: &Segment, kind: SlotKind, index: u32) -> u64 {
    match kind {
        SlotKind::Subscriber => seg.config.subscriber_slot_offset(index),
        SlotKind::Producer => seg.config.producer_slot_offset(index),
    }
}

pub(crate) fn slot_count(seg: &Segment, kind: SlotKind) -> u32 {
    match kind {
        SlotKind::Subscriber => seg.config.max_subscribers,
        SlotKind::Producer => seg.config.max_producers,
    }
}

/// Takes a free slot of `kind`. `init` fills the slot's own fields (it runs before the slot
/// turns ACTIVE, so nobody sees them half-written).
pub(crate) fn join(
    shared: &Shared,
    kind: SlotKind,
    init: impl Fn(&Segment, u64),
) -> Result<Slot, JoinError> {
    let seg = &shared.seg;
    let guard = shared.lock.lock(seg, LOCK_TIMEOUT)?;
    // Every join reclaims the slots (and waiting counts) of the dead, on either kind of bus:
    // on a lossy bus nothing else would (no producer there ever waits for a subscriber).
    // Joining is rare and the probe is one fcntl per active slot.
    sweep(seg);
    let fd = lock::reopen(&seg.file).map_err(io_err)?;
    for index in 0..slot_count(seg, kind) {
        let offset = slot_offset(seg, kind, index);
        // ORDERING: SeqCst: under the control lock every slot transition is ours to see.
        if seg.slot(offset).state_seqcst() != SLOT_FREE {
            continue;
        }
        if !lock::try_lock_range(fd.as_fd(), offset, SLOT_SIZE as u64).map_err(io_err)? {
            // Held by a process that inherited a descriptor of a former owner: not free.
            continue;
        }
        // ORDERING: Relaxed: the slot is not active yet; the SeqCst store of SLOT_ACTIVE
        // below publishes these fields with it.
        let slot = seg.slot(offset);
        slot.clear_fields_relaxed();
        slot.set_pid_relaxed(std::process::id());
        slot.set_joined_relaxed(now_unix_ns());
        init(seg, offset);
        // ORDERING: SeqCst: the join protocol (ring::limit_after_head): the subscriber's
        // start position, written by `init`, becomes visible to producers' scans with it.
        slot.set_state_seqcst(SLOT_ACTIVE);
        drop(guard);
        return Ok(Slot {
            index,
            offset,
            fd,
            owner: std::process::id(),
            forks: lock::forks(),
        });
    }
    Err(JoinError::NoFreeSlot {
        kind,
        max: slot_count(seg, kind),
    })
}

/// Gives a slot back. Never fails: if the control lock cannot be taken, the slot is left
/// ACTIVE without a lock holder, and the next sweep frees it.
///
/// In a child forked since the join, does nothing but close the child's copy of the
/// descriptor: the lock belongs to the open file description the parent still holds, and
/// unlocking it (or marking the slot free) would hand the parent's live slot to someone else
/// (on an exclusive bus, a second producer writing the tail beside it).
pub(crate) fn leave(shared: &Shared, slot: Slot) {
    if !slot.is_ours() {
        return;
    }
    let seg = &shared.seg;
    let guard = shared.lock.lock(seg, LOCK_TIMEOUT).ok();
    if let Some(guard) = &guard {
        if guard.recovered {
            sweep(seg);
        }
        // ORDERING: SeqCst: producers' scans stop counting this subscriber.
        seg.slot(slot.offset).set_state_seqcst(SLOT_FREE);
    }
    // Unlocked while the control lock is still held: a joiner (which takes the control lock)
    // never finds the slot FREE but still locked, and so never reports it taken.
    let _ = lock::unlock_range(slot.fd.as_fd(), slot.offset, SLOT_SIZE as u64);
    drop(guard);
    // Dropping `slot.fd` closes the description, which would release the lock anyway.
}

/// Whether the owner of the slot at `offset` is alive (holds the slot's OFD lock). A probe that
/// fails answers "alive": never evict on doubt.
pub(crate) fn is_alive(seg: &Segment, offset: u64) -> bool {
    lock::is_range_locked(seg.file.as_fd(), offset, SLOT_SIZE as u64).unwrap_or(true)
}

/// Frees every ACTIVE slot whose owner is dead. The caller holds the control lock.
pub(crate) fn sweep(seg: &Segment) -> usize {
    let mut evicted = 0;
    for kind in [SlotKind::Subscriber, SlotKind::Producer] {
        for index in 0..slot_count(seg, kind) {
            let offset = slot_offset(seg, kind, index);
            let state = seg.slot(offset);
            // ORDERING: SeqCst: slot transitions happen under the lock we hold.
            if state.state_seqcst() != SLOT_ACTIVE || is_alive(seg, offset) {
                continue;
            }
            if state.sleeping().swap(0, Ordering::SeqCst) != 0 {
                let waiting = match kind {
                    SlotKind::Subscriber => seg.readers_waiting(),
                    SlotKind::Producer => seg.producers_waiting(),
                };
                // Give back the count of a participant that died asleep, so that producers
                // stop making a wake syscall for nobody. Saturating: never wrap below 0.
                // ORDERING: SeqCst: the waiter count is half of the Dekker pattern (wait).
                let _ =
                    waiting.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |w| w.checked_sub(1));
            }
            // ORDERING: SeqCst: slot transitions, as at join; `evicted` is a statistic.
            state.set_state_seqcst(SLOT_FREE);
            seg.evicted().fetch_add(1, Ordering::Relaxed);
            evicted += 1;
        }
    }
    if evicted > 0 {
        give_back_leaked_waits(seg);
        // Producers blocked on a dead subscriber may go on now.
        crate::wait::futex_wake_all(seg.space());
    }
    evicted
}

/// After a death: lowers each waiting count to the number of slots that say they sleep.
///
/// A participant killed in the two instructions between raising a count and flagging its
/// slot (or between clearing the flag and lowering the count) leaves a count nobody will give
/// back, and every publish would then make a wake syscall for nobody, for the life of the
/// file. A live sleeper caught in that same window by this correction loses at most one sleep
/// slice (its sleeps are bounded), never a message.
fn give_back_leaked_waits(seg: &Segment) {
    for kind in [SlotKind::Subscriber, SlotKind::Producer] {
        let sleeping = (0..slot_count(seg, kind))
            .map(|i| slot_offset(seg, kind, i))
            .filter(|&off| {
                // ORDERING: SeqCst: compared with the count below; a stale answer costs one
                // sleep slice at most (see above).
                seg.slot(off).state_seqcst() == SLOT_ACTIVE
                    && seg.slot(off).sleeping().load(Ordering::SeqCst) != 0
            })
            .count() as u32;
        let waiting = match kind {
            SlotKind::Subscriber => seg.readers_waiting(),
            SlotKind::Producer => seg.producers_waiting(),
        };
        // ORDERING: SeqCst: the waiter count is half of the Dekker pattern (wait).
        let _ = waiting.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |w| {
            (w > sleeping).then_some(sleeping)
        });
    }
}

/// How long a publisher's probe for dead subscribers waits for the control lock.
pub(crate) const PROBE_LOCK_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(2);

/// Probes the active slots of `kind` without the lock; if any owner is dead, takes the lock
/// and sweeps. Returns how many slots were freed.
///
/// Waits at most `lock_timeout` for the control lock: publishers probing on their way (a
/// `try_send` on a full ring, a wake that found nobody) pass [`PROBE_LOCK_TIMEOUT`], so that a
/// live process holding the lock long (stopped, in a debugger) delays them by that much, not
/// by seconds; the probe is simply repeated later.
pub(crate) fn evict_dead(
    shared: &Shared,
    kind: SlotKind,
    lock_timeout: std::time::Duration,
) -> Result<usize, LockError> {
    let seg = &shared.seg;
    let any_dead = (0..slot_count(seg, kind)).any(|index| {
        let offset = slot_offset(seg, kind, index);
        // ORDERING: Relaxed: a hint; the sweep re-checks under the lock.
        seg.slot(offset).state_relaxed() == SLOT_ACTIVE && !is_alive(seg, offset)
    });
    if !any_dead {
        return Ok(0);
    }
    let _guard = shared.lock.lock(seg, lock_timeout)?;
    Ok(sweep(seg))
}

/// The subscriber table, as the ring sees it.
pub(crate) struct Subscribers<'a>(pub(crate) &'a Segment);

impl ring::Subscribers for Subscribers<'_> {
    fn min_position(&self) -> Option<u64> {
        let seg = self.0;
        let mut min: Option<u64> = None;
        for index in 0..seg.config.max_subscribers {
            let offset = seg.config.subscriber_slot_offset(index);
            // ORDERING: SeqCst (both loads): the join protocol, see ring::limit_after_head.
            if seg.slot(offset).state_seqcst() == SLOT_ACTIVE {
                let p = seg.sub_slot(offset).position_seqcst();
                min = Some(min.map_or(p, |m| m.min(p)));
            }
        }
        min
    }
}
