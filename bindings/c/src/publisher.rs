//! `shmbus_publisher`: sending, and the zero-copy loan.

use std::ffi::c_void;
use std::ptr::NonNull;
use std::time::Duration;

use bus_core::{Loan, Publisher, Sent};

use crate::bus::{bus_ref, clear_out, shmbus_bus};
use crate::error::{ffi, ffi_void, required, shmbus_status, Failure};

/// Publishes messages on a bus. Made by `shmbus_bus_publisher`; holds one of the bus's
/// producer slots until `shmbus_publisher_free`.
///
/// Thread rules: one thread at a time (it may move between threads, but calls on one
/// publisher must not overlap). Use one publisher per thread; they share the bus lock-free.
/// A child process must not use a publisher its parent made before `fork`.
pub struct shmbus_publisher {
    /// The loan out now, if any. It borrows `*publ` (`'static` stands for "until taken"),
    /// so while it is `Some` nothing else touches `*publ`.
    ///
    /// Drop order: the loan (abandoned if still out) before the publisher it borrows; see
    /// `Drop`.
    loan: Option<Loan<'static>>,
    /// Made by `Box::into_raw`, freed in `Drop`. A raw pointer, not a `Box`, so that the
    /// loan's `&mut` borrow of it is never aliased by a unique owner.
    publ: NonNull<Publisher>,
}

impl Drop for shmbus_publisher {
    fn drop(&mut self) {
        // The loan first: it borrows the publisher.
        drop(self.loan.take());
        // SAFETY: `publ` came from `Box::into_raw` and is freed only here; no loan borrows
        // it any more.
        drop(unsafe { Box::from_raw(self.publ.as_ptr()) });
    }
}

impl shmbus_publisher {
    /// The publisher, if no loan is out.
    fn publisher(&mut self) -> Result<&mut Publisher, Failure> {
        if self.loan.is_some() {
            return Err(Failure::new(
                shmbus_status::SHMBUS_LOAN_OUTSTANDING,
                "a loan is out on this publisher: commit or abandon it first",
            ));
        }
        // SAFETY: `publ` is live (freed only in `Drop`), and with no loan out nothing else
        // borrows it; `&mut self` makes this the only access.
        Ok(unsafe { self.publ.as_mut() })
    }

    /// Makes a loan with `make` and keeps it; returns its bytes.
    fn lend<E>(
        &mut self,
        make: impl FnOnce(&'static mut Publisher) -> Result<Loan<'static>, E>,
    ) -> Result<*mut u8, Failure>
    where
        Failure: From<E>,
    {
        self.publisher()?;
        // SAFETY: `'static` stands for "until the loan is taken": `publ` lives until `Drop`,
        // which ends the loan first; while the loan is kept, `publisher()` refuses every other
        // borrow (checked just above that none is out now), and if `make` fails the borrow
        // ends with it.
        let publ: &'static mut Publisher = unsafe { &mut *self.publ.as_ptr() };
        let mut loan = make(publ)?;
        let data = loan.as_mut_ptr();
        self.loan = Some(loan);
        Ok(data)
    }
}

/// The publisher behind a handle.
///
/// # Safety
///
/// `p` is NULL or a live handle, not used by another thread meanwhile.
unsafe fn publ_mut<'a>(p: *mut shmbus_publisher) -> Result<&'a mut shmbus_publisher, Failure> {
    required(p, "publisher")?;
    // SAFETY: a live handle, used by one thread at a time (caller's contract).
    Ok(unsafe { &mut *p })
}

/// The bytes a C caller passed.
///
/// # Safety
///
/// `data` is valid for reads of `len` bytes, or `len` is 0.
unsafe fn c_bytes<'a>(data: *const c_void, len: usize) -> Result<&'a [u8], Failure> {
    if len == 0 {
        return Ok(&[]);
    }
    required(data, "data")?;
    // No object is larger than isize::MAX bytes (`from_raw_parts`'s own precondition); a
    // length beyond it is a caller's mistake (a negative length cast, say), not a message.
    if len > isize::MAX as usize {
        return Err(Failure::new(
            shmbus_status::SHMBUS_MESSAGE_TOO_LARGE,
            format!("a message of {len} bytes: no buffer can be that large"),
        ));
    }
    // SAFETY: not NULL, at most isize::MAX bytes (checked), and valid for `len` bytes
    // (caller's contract).
    Ok(unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len) })
}

/// Writes the sequence number of a sent message where the caller asked (NULL: nowhere).
///
/// # Safety
///
/// `seq` is NULL or valid for a write.
unsafe fn give_seq(seq: *mut u64, sent: Sent) {
    if !seq.is_null() {
        // SAFETY: not NULL, and valid for a write (caller's contract).
        unsafe { seq.write(sent.seq) };
    }
}

/// A new publisher on `bus`, in `*out` (NULL on failure). Free it with
/// `shmbus_publisher_free`.
///
/// Errors: `SHMBUS_NO_FREE_SLOT` (every producer slot is taken by a live publisher),
/// `SHMBUS_LOCK_TIMEOUT`, `SHMBUS_IO`, `SHMBUS_INVALID_ARGUMENT`.
///
/// # Safety
///
/// `bus` is a live handle; `out` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn shmbus_bus_publisher(
    bus: *const shmbus_bus,
    out: *mut *mut shmbus_publisher,
) -> shmbus_status {
    ffi(|| {
        // SAFETY: the caller's contract, passed on.
        unsafe { clear_out(out) }?;
        // SAFETY: as above.
        let bus = unsafe { bus_ref(bus) }?;
        let publ = bus.publisher()?;
        let handle = Box::new(shmbus_publisher {
            loan: None,
            publ: NonNull::from(Box::leak(Box::new(publ))),
        });
        // SAFETY: checked not NULL by `clear_out`; valid for a write (caller's contract).
        unsafe { out.write(Box::into_raw(handle)) };
        Ok(())
    })
}

/// Releases a publisher and its producer slot. A loan still out is abandoned. NULL does
/// nothing.
///
/// # Safety
///
/// `publisher` is NULL or a live handle, not used after this.
#[no_mangle]
pub unsafe extern "C" fn shmbus_publisher_free(publisher: *mut shmbus_publisher) {
    ffi_void(|| {
        if !publisher.is_null() {
            // SAFETY: made by `Box::into_raw` in `shmbus_bus_publisher`, freed once.
            drop(unsafe { Box::from_raw(publisher) });
        }
    })
}

/// Publishes `len` bytes at `data`, waiting while the ring is full (reliable mode). On
/// success, if `seq` is not NULL, `*seq` is the message's bus-wide sequence number.
///
/// `data` may be NULL when `len` is 0. The bytes are copied; the caller keeps them.
///
/// Errors: `SHMBUS_MESSAGE_TOO_LARGE`, `SHMBUS_UNBLOCKED`, `SHMBUS_RING_CORRUPT`,
/// `SHMBUS_PRODUCER_CONFLICT`, `SHMBUS_FORKED` (this process is a child forked since the
/// publisher was made), `SHMBUS_LOAN_OUTSTANDING`, `SHMBUS_INVALID_ARGUMENT`.
///
/// # Safety
///
/// `publisher` is a live handle; `data` is valid for reads of `len` bytes; `seq` is NULL or
/// valid for a write.
#[no_mangle]
pub unsafe extern "C" fn shmbus_publisher_send(
    publisher: *mut shmbus_publisher,
    data: *const c_void,
    len: usize,
    seq: *mut u64,
) -> shmbus_status {
    ffi(|| {
        // SAFETY: the caller's contract, passed on.
        unsafe {
            let p = publ_mut(publisher)?;
            let data = c_bytes(data, len)?;
            give_seq(seq, p.publisher()?.send(data)?);
        }
        Ok(())
    })
}

/// `shmbus_publisher_send` if there is room now: never waits.
///
/// Errors: `SHMBUS_FULL` when there is no room now; otherwise as `shmbus_publisher_send`.
///
/// # Safety
///
/// As `shmbus_publisher_send`.
#[no_mangle]
pub unsafe extern "C" fn shmbus_publisher_try_send(
    publisher: *mut shmbus_publisher,
    data: *const c_void,
    len: usize,
    seq: *mut u64,
) -> shmbus_status {
    ffi(|| {
        // SAFETY: the caller's contract, passed on.
        unsafe {
            let p = publ_mut(publisher)?;
            let data = c_bytes(data, len)?;
            give_seq(seq, p.publisher()?.try_send(data)?);
        }
        Ok(())
    })
}

/// `shmbus_publisher_send`, waiting at most `timeout_ns` nanoseconds for room (0: do not
/// wait; `UINT64_MAX`: about 584 years).
///
/// Errors: `SHMBUS_TIMEOUT` when there was no room in time; otherwise as
/// `shmbus_publisher_send`.
///
/// # Safety
///
/// As `shmbus_publisher_send`.
#[no_mangle]
pub unsafe extern "C" fn shmbus_publisher_send_timeout(
    publisher: *mut shmbus_publisher,
    data: *const c_void,
    len: usize,
    timeout_ns: u64,
    seq: *mut u64,
) -> shmbus_status {
    ffi(|| {
        // SAFETY: the caller's contract, passed on.
        unsafe {
            let p = publ_mut(publisher)?;
            let data = c_bytes(data, len)?;
            let t = Duration::from_nanos(timeout_ns);
            give_seq(seq, p.publisher()?.send_timeout(data, t)?);
        }
        Ok(())
    })
}

/// Lends `len` bytes inside the ring to write a message in place (zero copy), waiting
/// while the ring is full. On success `*data` points to the `len` bytes (not zeroed); write
/// them, then call `shmbus_publisher_commit` (publish) or `shmbus_publisher_abandon`.
///
/// Ownership: `*data` is valid until the commit, the abandon or `shmbus_publisher_free`
/// (which abandons). Subscribers wait at this message until then, so do not hold a loan
/// long. While a loan is out, every other call on this publisher returns
/// `SHMBUS_LOAN_OUTSTANDING`. An abandoned loan is never delivered (it still uses up a
/// sequence number).
///
/// Errors: `SHMBUS_MESSAGE_TOO_LARGE`, `SHMBUS_RING_CORRUPT`, `SHMBUS_PRODUCER_CONFLICT`,
/// `SHMBUS_FORKED`, `SHMBUS_LOAN_OUTSTANDING`, `SHMBUS_INVALID_ARGUMENT`. On failure `*data`
/// is NULL.
///
/// # Safety
///
/// `publisher` is a live handle; `data` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn shmbus_publisher_loan(
    publisher: *mut shmbus_publisher,
    len: usize,
    data: *mut *mut u8,
) -> shmbus_status {
    ffi(|| {
        // SAFETY: the caller's contract, passed on.
        unsafe {
            clear_out(data)?;
            let p = publ_mut(publisher)?;
            data.write(p.lend(|publ| publ.loan(len))?);
        }
        Ok(())
    })
}

/// `shmbus_publisher_loan` if there is room now. Errors: `SHMBUS_FULL` when there is none;
/// otherwise as `shmbus_publisher_loan`.
///
/// # Safety
///
/// As `shmbus_publisher_loan`.
#[no_mangle]
pub unsafe extern "C" fn shmbus_publisher_try_loan(
    publisher: *mut shmbus_publisher,
    len: usize,
    data: *mut *mut u8,
) -> shmbus_status {
    ffi(|| {
        // SAFETY: the caller's contract, passed on.
        unsafe {
            clear_out(data)?;
            let p = publ_mut(publisher)?;
            data.write(p.lend(|publ| publ.try_loan(len))?);
        }
        Ok(())
    })
}

/// `shmbus_publisher_loan`, waiting at most `timeout_ns` nanoseconds. Errors:
/// `SHMBUS_TIMEOUT` when there was no room in time; otherwise as `shmbus_publisher_loan`.
///
/// # Safety
///
/// As `shmbus_publisher_loan`.
#[no_mangle]
pub unsafe extern "C" fn shmbus_publisher_loan_timeout(
    publisher: *mut shmbus_publisher,
    len: usize,
    timeout_ns: u64,
    data: *mut *mut u8,
) -> shmbus_status {
    ffi(|| {
        // SAFETY: the caller's contract, passed on.
        unsafe {
            clear_out(data)?;
            let p = publ_mut(publisher)?;
            let t = Duration::from_nanos(timeout_ns);
            data.write(p.lend(|publ| publ.loan_timeout(len, t))?);
        }
        Ok(())
    })
}

fn take_loan(p: &mut shmbus_publisher) -> Result<Loan<'static>, Failure> {
    p.loan.take().ok_or_else(|| {
        Failure::new(
            shmbus_status::SHMBUS_NO_LOAN,
            "no loan is out on this publisher",
        )
    })
}

/// Publishes the loaned message. On success, if `seq` is not NULL, `*seq` is its sequence
/// number. Either way the loan is over: its bytes must not be touched again.
///
/// Errors: `SHMBUS_UNBLOCKED` (another process judged this publisher dead and turned the
/// record into padding), `SHMBUS_FORKED` (a child forked since the loan was taken; the
/// parent's claim is left alone), `SHMBUS_NO_LOAN`, `SHMBUS_INVALID_ARGUMENT`.
///
/// # Safety
///
/// `publisher` is a live handle; `seq` is NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn shmbus_publisher_commit(
    publisher: *mut shmbus_publisher,
    seq: *mut u64,
) -> shmbus_status {
    ffi(|| {
        // SAFETY: the caller's contract, passed on.
        unsafe {
            let p = publ_mut(publisher)?;
            give_seq(seq, take_loan(p)?.commit()?);
        }
        Ok(())
    })
}

/// Gives the loan up: the record becomes padding that no subscriber receives. Its bytes
/// must not be touched again. Errors: `SHMBUS_NO_LOAN`, `SHMBUS_INVALID_ARGUMENT`.
///
/// # Safety
///
/// `publisher` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn shmbus_publisher_abandon(
    publisher: *mut shmbus_publisher,
) -> shmbus_status {
    ffi(|| {
        // SAFETY: the caller's contract.
        let p = unsafe { publ_mut(publisher) }?;
        drop(take_loan(p)?);
        Ok(())
    })
}
