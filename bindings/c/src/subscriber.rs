//! `shmbus_subscriber`: receiving into a caller's buffer, or borrowed in place.
//!
//! The Rust API has no non-consuming peek, and a C caller must be able to learn a
//! message's length without losing the message (`SHMBUS_BUFFER_TOO_SMALL`). So every receive
//! goes through `Subscriber::recv_ref`, and the handle keeps the borrowed [`Sample`]:
//!
//! * *pending*: received from the ring but not handed to C yet (the caller's buffer was too
//!   small). The next receive of any kind returns it first.
//! * *lent*: handed to C by `recv_ref`; its pointer stays valid until the next call on the
//!   subscriber, which drops it first.
//!
//! Keeping the `Sample` (not a copy) is what the Rust API promises to protect: in reliable
//! mode no producer overwrites its bytes while it lives; in lossy mode it is the subscriber's
//! own validated copy. A receive into a buffer that is large enough costs one copy, as
//! `Subscriber::recv` does in reliable mode (in lossy mode, two: `recv_ref` copies out of the
//! ring to validate).

use std::ffi::c_void;
use std::ptr::NonNull;
use std::time::Duration;

use bus_core::{RecvError, Sample, Start, Subscriber, WaitStrategy};

use crate::bus::{bus_ref, clear_out, shmbus_bus};
use crate::error::{ffi, ffi_void, required, shmbus_status, Failure, RecvFailure};

/// Receives every message of a bus from its start on. Made by `shmbus_bus_subscribe`; holds
/// one of the bus's subscriber slots until `shmbus_subscriber_free`.
///
/// Thread rules: one thread at a time (it may move between threads, but calls on one
/// subscriber must not overlap). In reliable mode producers wait for every live subscriber:
/// one that stops receiving (without being freed) eventually stops the bus.
pub struct shmbus_subscriber {
    /// The message held for the caller, if any. Borrows `*sub` (`'static` stands for "until
    /// taken"), so while it is `Some` only shared access to `*sub` happens.
    ///
    /// Drop order: the sample before the subscriber it borrows; see `Drop`.
    held: Option<Held>,
    /// Made by `Box::into_raw`, freed in `Drop`. A raw pointer, not a `Box`, so that the
    /// sample's borrow of it is never aliased by a unique owner.
    sub: NonNull<Subscriber>,
    /// A wait strategy set while a sample was possibly held: applied by the next receive
    /// that takes a message from the ring (the only kind that waits).
    strategy: Option<WaitStrategy>,
}

struct Held {
    sample: Sample<'static>,
    /// Handed to C by a `recv_ref` call (else: pending, not delivered yet).
    lent: bool,
}

impl Drop for shmbus_subscriber {
    fn drop(&mut self) {
        // The sample first: it borrows the subscriber.
        self.held = None;
        // SAFETY: `sub` came from `Box::into_raw` and is freed only here; no sample borrows
        // it any more.
        drop(unsafe { Box::from_raw(self.sub.as_ptr()) });
    }
}

/// A received message, filled by the receive functions.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct shmbus_message {
    /// The payload. After `shmbus_subscriber_recv*` (copy): the caller's buffer. After
    /// `shmbus_subscriber_recv_ref*` (borrow): bytes owned by the subscriber, valid until the
    /// next call on that subscriber (any call but the getters) or its free. NULL when no
    /// message was delivered.
    pub data: *const u8,
    /// Payload length in bytes. With `SHMBUS_BUFFER_TOO_SMALL`: the length needed.
    pub len: usize,
    /// Bus-wide sequence number.
    pub seq: u64,
    /// Absolute position of the message in the bus (pass it to `SHMBUS_START_POSITION`
    /// to read from this message on, in this process or another).
    pub position: u64,
    /// With `SHMBUS_LOST`: how many messages were lost before the next one; else 0.
    pub lost: u64,
}

impl shmbus_message {
    const NONE: shmbus_message = shmbus_message {
        data: std::ptr::null(),
        len: 0,
        seq: 0,
        position: 0,
        lost: 0,
    };
}

/// Where a new subscriber starts, for `shmbus_bus_subscribe`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum shmbus_start {
    /// Only messages published from now on.
    SHMBUS_START_LATEST = 0,
    /// The oldest message still in the ring.
    SHMBUS_START_OLDEST = 1,
    /// The message at `position` (a `shmbus_message.position`, or a
    /// `shmbus_subscriber_position`, saved earlier).
    SHMBUS_START_POSITION = 2,
}

/// How a subscriber's waiting receives wait, for `shmbus_subscriber_set_wait`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum shmbus_wait {
    /// Spin briefly, then sleep on the bus's futex (the default): low CPU use.
    SHMBUS_WAIT_SPIN_THEN_BLOCK = 0,
    /// Busy-poll, never sleep: lowest latency, one core per waiting subscriber.
    SHMBUS_WAIT_SPIN = 1,
    /// Sleep on the futex at once.
    SHMBUS_WAIT_BLOCK = 2,
}

/// How a receive waits.
#[derive(Clone, Copy)]
enum Wait {
    Forever,
    No,
    For(Duration),
}

impl shmbus_subscriber {
    /// Shared access to the subscriber: allowed while a sample is held (it borrows only the
    /// ring or the subscriber's separate scratch buffer, never the fields a getter reads).
    fn sub(&self) -> &Subscriber {
        // SAFETY: `sub` is live until `Drop`; shared access alongside a held sample, as above.
        unsafe { self.sub.as_ref() }
    }

    /// The next message: the pending one if any, else one from the ring. Drops a lent one
    /// first (its borrow ends with this call).
    fn next(&mut self, wait: Wait) -> Result<&Held, RecvFailure> {
        if self.held.as_ref().is_some_and(|h| h.lent) {
            self.held = None;
        }
        // A message kept from before a fork is the parent's to deliver: the child gets what
        // every receive through an inherited handle gets.
        if self.held.is_some() && self.sub().forked() {
            return Err(RecvError::Forked.into());
        }
        if self.held.is_none() {
            // SAFETY: `'static` stands for "until taken": `sub` lives until `Drop`, which
            // drops the sample first; no sample is held now (just checked), so this is the
            // only borrow; a failed receive ends it at once.
            let sub: &'static mut Subscriber = unsafe { &mut *self.sub.as_ptr() };
            if let Some(strategy) = self.strategy.take() {
                sub.set_wait_strategy(strategy);
            }
            let sample = match wait {
                Wait::Forever => sub.recv_ref()?,
                Wait::No => sub.try_recv_ref()?,
                Wait::For(t) => sub.recv_ref_timeout(t)?,
            };
            self.held = Some(Held {
                sample,
                lent: false,
            });
        }
        Ok(self.held.as_ref().expect("set above"))
    }

    /// Receives into `buf` (`cap` bytes), keeping the message if it does not fit.
    ///
    /// # Safety
    ///
    /// `buf` is valid for writes of `cap` bytes (or `cap` is 0).
    unsafe fn recv_into(
        &mut self,
        wait: Wait,
        buf: *mut c_void,
        cap: usize,
        msg: &mut shmbus_message,
    ) -> Result<(), RecvFailure> {
        if cap != 0 && buf.is_null() {
            return Err(Failure::invalid("buf is NULL with a nonzero capacity").into());
        }
        let held = self.next(wait)?;
        let s = &held.sample;
        msg.len = s.len();
        msg.seq = s.seq;
        msg.position = s.position;
        if s.len() > cap {
            return Err(Failure::new(
                shmbus_status::SHMBUS_BUFFER_TOO_SMALL,
                format!(
                    "message of {} bytes does not fit the buffer of {cap} bytes; it is kept \
                     for the next receive",
                    s.len()
                ),
            )
            .into());
        }
        if !s.is_empty() {
            // SAFETY: `buf` holds `cap >= len` bytes (caller's contract) and is the caller's
            // memory, not the ring's or the subscriber's, so the ranges do not overlap.
            unsafe { std::ptr::copy_nonoverlapping(s.as_ptr(), buf.cast::<u8>(), s.len()) };
        }
        msg.data = buf.cast::<u8>().cast_const();
        self.held = None;
        Ok(())
    }

    /// Lends the next message in place.
    fn recv_ref(&mut self, wait: Wait, msg: &mut shmbus_message) -> Result<(), RecvFailure> {
        self.next(wait)?;
        let held = self.held.as_mut().expect("set by next");
        held.lent = true;
        let s = &held.sample;
        *msg = shmbus_message {
            data: s.as_ptr(),
            len: s.len(),
            seq: s.seq,
            position: s.position,
            lost: 0,
        };
        Ok(())
    }

    /// The message not delivered yet, if any.
    fn pending(&self) -> Option<&Sample<'static>> {
        self.held.as_ref().filter(|h| !h.lent).map(|h| &h.sample)
    }
}

impl From<Failure> for RecvFailure {
    fn from(failure: Failure) -> RecvFailure {
        RecvFailure { failure, lost: 0 }
    }
}

/// Runs a receive: clears `*msg` first, and writes the lost count of `SHMBUS_LOST`.
///
/// # Safety
///
/// `s` is NULL or a live handle used by this thread only; `msg` is NULL or valid for a
/// write.
unsafe fn receive(
    s: *mut shmbus_subscriber,
    msg: *mut shmbus_message,
    body: impl FnOnce(&mut shmbus_subscriber, &mut shmbus_message) -> Result<(), RecvFailure>,
) -> shmbus_status {
    ffi(|| {
        required(s, "subscriber")?;
        required(msg, "msg")?;
        // SAFETY: not NULL, valid for a write (caller's contract).
        let msg = unsafe { &mut *msg };
        *msg = shmbus_message::NONE;
        // SAFETY: not NULL, a live handle used by one thread at a time (caller's contract).
        let s = unsafe { &mut *s };
        body(s, msg).map_err(|e| {
            msg.lost = e.lost;
            e.failure
        })
    })
}

/// A new subscriber on `bus` starting at `start` (a `shmbus_start` value; `position` is
/// read only for `SHMBUS_START_POSITION`), in `*out` (NULL on failure). Free it with
/// `shmbus_subscriber_free`.
///
/// Errors: `SHMBUS_NO_FREE_SLOT`, `SHMBUS_POSITION_NOT_RETAINED` (the position is no longer,
/// or not yet, in the ring), `SHMBUS_NOT_A_RECORD` (not the start of a message),
/// `SHMBUS_RING_CORRUPT`, `SHMBUS_LOCK_TIMEOUT`, `SHMBUS_IO`, `SHMBUS_INVALID_ARGUMENT`
/// (NULL pointers, unknown `start`).
///
/// # Safety
///
/// `bus` is a live handle; `out` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn shmbus_bus_subscribe(
    bus: *const shmbus_bus,
    start: u32,
    position: u64,
    out: *mut *mut shmbus_subscriber,
) -> shmbus_status {
    ffi(|| {
        // SAFETY: the caller's contract, passed on.
        unsafe { clear_out(out) }?;
        // SAFETY: as above.
        let bus = unsafe { bus_ref(bus) }?;
        let start = match start {
            s if s == shmbus_start::SHMBUS_START_LATEST as u32 => Start::Latest,
            s if s == shmbus_start::SHMBUS_START_OLDEST as u32 => Start::Oldest,
            s if s == shmbus_start::SHMBUS_START_POSITION as u32 => Start::Position(position),
            s => {
                return Err(Failure::invalid(format!(
                    "unknown start {s} (0 latest, 1 oldest, 2 position)"
                )))
            }
        };
        let sub = bus.subscribe(start)?;
        let handle = Box::new(shmbus_subscriber {
            held: None,
            sub: NonNull::from(Box::leak(Box::new(sub))),
            strategy: None,
        });
        // SAFETY: checked not NULL by `clear_out`; valid for a write (caller's contract).
        unsafe { out.write(Box::into_raw(handle)) };
        Ok(())
    })
}

/// Releases a subscriber and its slot. A message kept after `SHMBUS_BUFFER_TOO_SMALL` is
/// dropped undelivered. NULL does nothing.
///
/// # Safety
///
/// `subscriber` is NULL or a live handle, not used after this.
#[no_mangle]
pub unsafe extern "C" fn shmbus_subscriber_free(subscriber: *mut shmbus_subscriber) {
    ffi_void(|| {
        if !subscriber.is_null() {
            // SAFETY: made by `Box::into_raw` in `shmbus_bus_subscribe`, freed once.
            drop(unsafe { Box::from_raw(subscriber) });
        }
    })
}

/// Receives the next message into `buf` (`cap` bytes), waiting as long as it takes. On
/// success `msg->data == buf` and `msg->len` is the payload length.
///
/// If the message is longer than `cap`, returns `SHMBUS_BUFFER_TOO_SMALL` with the length
/// needed in `msg->len` (and its `seq`, `position`), and keeps the message: the next receive
/// call of any kind returns it. `buf` may be NULL when `cap` is 0 (to learn the length).
///
/// Errors: `SHMBUS_BUFFER_TOO_SMALL`, `SHMBUS_LOST` (lossy mode: `msg->lost` messages were
/// lost; receive again for the next one), `SHMBUS_CORRUPT`, `SHMBUS_FORKED` (this process
/// is a child forked since the subscriber was made), `SHMBUS_INVALID_ARGUMENT`.
///
/// # Safety
///
/// `subscriber` is a live handle; `buf` is valid for writes of `cap` bytes; `msg` is valid
/// for a write.
#[no_mangle]
pub unsafe extern "C" fn shmbus_subscriber_recv(
    subscriber: *mut shmbus_subscriber,
    buf: *mut c_void,
    cap: usize,
    msg: *mut shmbus_message,
) -> shmbus_status {
    // SAFETY: the caller's contract, passed on.
    unsafe {
        receive(subscriber, msg, |s, m| {
            s.recv_into(Wait::Forever, buf, cap, m)
        })
    }
}

/// `shmbus_subscriber_recv` if a message is there now: never waits. Errors: `SHMBUS_EMPTY`
/// when there is none; otherwise as `shmbus_subscriber_recv`.
///
/// # Safety
///
/// As `shmbus_subscriber_recv`.
#[no_mangle]
pub unsafe extern "C" fn shmbus_subscriber_try_recv(
    subscriber: *mut shmbus_subscriber,
    buf: *mut c_void,
    cap: usize,
    msg: *mut shmbus_message,
) -> shmbus_status {
    // SAFETY: the caller's contract, passed on.
    unsafe { receive(subscriber, msg, |s, m| s.recv_into(Wait::No, buf, cap, m)) }
}

/// `shmbus_subscriber_recv`, waiting at most `timeout_ns` nanoseconds (0: do not wait).
/// Errors: `SHMBUS_TIMEOUT` when nothing came in time; otherwise as
/// `shmbus_subscriber_recv`.
///
/// # Safety
///
/// As `shmbus_subscriber_recv`.
#[no_mangle]
pub unsafe extern "C" fn shmbus_subscriber_recv_timeout(
    subscriber: *mut shmbus_subscriber,
    buf: *mut c_void,
    cap: usize,
    timeout_ns: u64,
    msg: *mut shmbus_message,
) -> shmbus_status {
    let wait = Wait::For(Duration::from_nanos(timeout_ns));
    // SAFETY: the caller's contract, passed on.
    unsafe { receive(subscriber, msg, |s, m| s.recv_into(wait, buf, cap, m)) }
}

/// Receives the next message without copying it, waiting as long as it takes: `msg->data`
/// points to `msg->len` bytes owned by the subscriber, valid until the next call on this
/// subscriber (any receive, `shmbus_subscriber_release`, or the free; the getters do not
/// end it). In reliable mode they are the bytes in the ring, protected from producers until
/// then (so release them promptly); in lossy mode a validated copy.
///
/// Errors: `SHMBUS_LOST`, `SHMBUS_CORRUPT`, `SHMBUS_FORKED`, `SHMBUS_INVALID_ARGUMENT`.
///
/// # Safety
///
/// `subscriber` is a live handle; `msg` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn shmbus_subscriber_recv_ref(
    subscriber: *mut shmbus_subscriber,
    msg: *mut shmbus_message,
) -> shmbus_status {
    // SAFETY: the caller's contract, passed on.
    unsafe { receive(subscriber, msg, |s, m| s.recv_ref(Wait::Forever, m)) }
}

/// `shmbus_subscriber_recv_ref` if a message is there now. Errors: `SHMBUS_EMPTY` when
/// there is none; otherwise as `shmbus_subscriber_recv_ref`.
///
/// # Safety
///
/// As `shmbus_subscriber_recv_ref`.
#[no_mangle]
pub unsafe extern "C" fn shmbus_subscriber_try_recv_ref(
    subscriber: *mut shmbus_subscriber,
    msg: *mut shmbus_message,
) -> shmbus_status {
    // SAFETY: the caller's contract, passed on.
    unsafe { receive(subscriber, msg, |s, m| s.recv_ref(Wait::No, m)) }
}

/// `shmbus_subscriber_recv_ref`, waiting at most `timeout_ns` nanoseconds. Errors:
/// `SHMBUS_TIMEOUT` when nothing came in time; otherwise as `shmbus_subscriber_recv_ref`.
///
/// # Safety
///
/// As `shmbus_subscriber_recv_ref`.
#[no_mangle]
pub unsafe extern "C" fn shmbus_subscriber_recv_ref_timeout(
    subscriber: *mut shmbus_subscriber,
    timeout_ns: u64,
    msg: *mut shmbus_message,
) -> shmbus_status {
    let wait = Wait::For(Duration::from_nanos(timeout_ns));
    // SAFETY: the caller's contract, passed on.
    unsafe { receive(subscriber, msg, |s, m| s.recv_ref(wait, m)) }
}

/// Ends the borrow of the last `shmbus_subscriber_recv_ref` message early (in reliable mode
/// producers may then reuse its bytes). Does nothing if none is lent; a message kept after
/// `SHMBUS_BUFFER_TOO_SMALL` stays kept.
///
/// # Safety
///
/// `subscriber` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn shmbus_subscriber_release(
    subscriber: *mut shmbus_subscriber,
) -> shmbus_status {
    ffi(|| {
        required(subscriber, "subscriber")?;
        // SAFETY: a live handle used by one thread at a time (caller's contract).
        let s = unsafe { &mut *subscriber };
        if s.held.as_ref().is_some_and(|h| h.lent) {
            s.held = None;
        }
        Ok(())
    })
}

/// Sets how this subscriber's receives wait when there is no message yet: a `shmbus_wait`
/// value (default `SHMBUS_WAIT_SPIN_THEN_BLOCK`). Takes effect from the next receive that
/// waits. Errors: `SHMBUS_INVALID_ARGUMENT` (NULL, unknown value).
///
/// # Safety
///
/// `subscriber` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn shmbus_subscriber_set_wait(
    subscriber: *mut shmbus_subscriber,
    wait: u32,
) -> shmbus_status {
    ffi(|| {
        required(subscriber, "subscriber")?;
        let strategy = match wait {
            w if w == shmbus_wait::SHMBUS_WAIT_SPIN_THEN_BLOCK as u32 => {
                WaitStrategy::SpinThenBlock
            }
            w if w == shmbus_wait::SHMBUS_WAIT_SPIN as u32 => WaitStrategy::Spin,
            w if w == shmbus_wait::SHMBUS_WAIT_BLOCK as u32 => WaitStrategy::Block,
            w => {
                return Err(Failure::invalid(format!(
                    "unknown wait {w} (0 spin then block, 1 spin, 2 block)"
                )))
            }
        };
        // SAFETY: a live handle used by one thread at a time (caller's contract).
        let s = unsafe { &mut *subscriber };
        // Applied when no sample borrows the subscriber (see `next`).
        s.strategy = Some(strategy);
        Ok(())
    })
}

/// Reads a counter of a subscriber into `*out`.
///
/// # Safety
///
/// `s` is NULL or a live handle; `out` is NULL or valid for a write.
unsafe fn getter(
    s: *const shmbus_subscriber,
    out: *mut u64,
    get: impl FnOnce(&shmbus_subscriber) -> u64,
) -> shmbus_status {
    ffi(|| {
        required(s, "subscriber")?;
        required(out, "out")?;
        // SAFETY: a live handle, not used by another thread meanwhile (caller's contract).
        let v = get(unsafe { &*s });
        // SAFETY: not NULL, valid for a write (caller's contract).
        unsafe { out.write(v) };
        Ok(())
    })
}

/// The position of the next message this subscriber will deliver (a kept, undelivered
/// message counts as next). Save it and pass it to `SHMBUS_START_POSITION` to resume there
/// later, in this process or another.
///
/// # Safety
///
/// `subscriber` is a live handle; `out` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn shmbus_subscriber_position(
    subscriber: *const shmbus_subscriber,
    out: *mut u64,
) -> shmbus_status {
    // SAFETY: the caller's contract, passed on.
    unsafe {
        getter(subscriber, out, |s| {
            s.pending().map_or(s.sub().position(), |p| p.position)
        })
    }
}

/// The sequence number of the next message this subscriber will deliver.
///
/// # Safety
///
/// `subscriber` is a live handle; `out` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn shmbus_subscriber_next_seq(
    subscriber: *const shmbus_subscriber,
    out: *mut u64,
) -> shmbus_status {
    // SAFETY: the caller's contract, passed on.
    unsafe {
        getter(subscriber, out, |s| {
            s.pending().map_or(s.sub().next_seq(), |p| p.seq)
        })
    }
}

/// Messages delivered so far (a kept, undelivered message does not count).
///
/// # Safety
///
/// `subscriber` is a live handle; `out` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn shmbus_subscriber_delivered(
    subscriber: *const shmbus_subscriber,
    out: *mut u64,
) -> shmbus_status {
    // SAFETY: the caller's contract, passed on.
    unsafe {
        getter(subscriber, out, |s| {
            s.sub().delivered() - u64::from(s.pending().is_some())
        })
    }
}

/// Messages lost so far (lossy mode; also messages of producers that died mid-message).
///
/// # Safety
///
/// `subscriber` is a live handle; `out` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn shmbus_subscriber_lost(
    subscriber: *const shmbus_subscriber,
    out: *mut u64,
) -> shmbus_status {
    // SAFETY: the caller's contract, passed on.
    unsafe { getter(subscriber, out, |s| s.sub().lost()) }
}
