//! `shmbus.Publisher` and `shmbus.Loan`.

use std::ffi::c_int;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use bus_core::{Loan as RsLoan, SendTimeoutError, Sent, TryLoanError, TrySendError};
use pyo3::ffi;
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::PyTraverseError;

use crate::buffer::with_bytes;
use crate::bus::timeout_arg;
use crate::errors::{exc, Busy, Closed, SendFail};
use crate::region::{Exit, Region};

/// Longest stretch a blocking call waits without the GIL before it looks at Python's signal
/// flags (so that Ctrl-C interrupts it within about this long).
pub const SLICE: Duration = Duration::from_millis(20);

/// Messages at least this long are copied into the ring with the GIL released. Shorter ones
/// are copied with it held: releasing and re-taking the GIL costs more than their copy.
pub const NOGIL_COPY: usize = 64 << 10;

/// When a wait ends: `None` never.
pub type Deadline = Option<Instant>;

pub fn deadline(timeout: Option<Duration>) -> Deadline {
    timeout.and_then(|t| Instant::now().checked_add(t))
}

/// The next slice of a wait until `deadline`, or `None` if it has passed.
pub fn next_slice(deadline: Deadline) -> Option<Duration> {
    match deadline {
        None => Some(SLICE),
        Some(d) => {
            let left = d.saturating_duration_since(Instant::now());
            (!left.is_zero()).then(|| left.min(SLICE))
        }
    }
}

/// A loan out of a publisher, pinned until its `Loan` object ends it.
struct PinnedLoan {
    id: u64,
    loan: RsLoan<'static>,
    /// Set by the `Loan` object when nothing can reach the bytes any more: the next call on
    /// the publisher abandons the loan if the object could not.
    finished: Arc<AtomicBool>,
}

/// The publisher and the loan that borrows it.
struct Cell {
    /// Drop order matters: the loan borrows `*publ`, so it goes first (see `Drop`).
    pinned: Option<PinnedLoan>,
    /// Owned (from `Box::into_raw`), freed in `Drop`. Kept as a raw pointer so that a loan
    /// can borrow the publisher while this struct is still reached through `&mut`: the
    /// publisher lives in its own allocation, which no reborrow of the cell touches.
    publ: NonNull<bus_core::Publisher>,
    next_id: u64,
}

// SAFETY: the cell owns a `bus_core::Publisher` (Send) and a loan borrowing it (Send, as
// `&mut Publisher` is); moving both to another thread together is what `Send` of the
// publisher allows.
unsafe impl Send for Cell {}

impl Cell {
    fn new(p: bus_core::Publisher) -> Cell {
        Cell {
            pinned: None,
            publ: NonNull::from(Box::leak(Box::new(p))),
            next_id: 1,
        }
    }

    /// The publisher for a new operation: refused while a loan is out (an ended one is
    /// abandoned first).
    fn ready(&mut self) -> PyResult<&mut bus_core::Publisher> {
        if let Some(p) = &self.pinned {
            if !p.finished.load(Ordering::Acquire) {
                return Err(Busy::new_err(
                    "a loan of this publisher is still open (or a buffer made from it is \
                     still alive)",
                ));
            }
            self.pinned = None;
        }
        // SAFETY: `publ` is owned by the cell and valid until its drop; no loan borrows it
        // (`pinned` is None), and the returned borrow is tied to `&mut self`.
        Ok(unsafe { &mut *self.publ.as_ptr() })
    }

    /// Takes the loan `id` out, if it is still the one pinned.
    fn take(&mut self, id: u64) -> Option<RsLoan<'static>> {
        match &self.pinned {
            Some(p) if p.id == id => self.pinned.take().map(|p| p.loan),
            _ => None,
        }
    }
}

impl Drop for Cell {
    fn drop(&mut self) {
        // The loan first: it borrows the publisher (abandoning it writes through it).
        self.pinned = None;
        // SAFETY: `publ` came from `Box::leak` in `new` and is freed only here; no loan
        // borrows it any more.
        drop(unsafe { Box::from_raw(self.publ.as_ptr()) });
    }
}

/// Publishes messages on a bus. Made by `Bus.publisher()`; holds a producer slot until
/// closed (or collected).
///
/// One thread at a time: a call from a second thread while one is blocked in `send`
/// raises `Busy`.
#[pyclass(module = "shmbus", frozen)]
pub struct Publisher {
    cell: Mutex<Option<Cell>>,
}

impl Publisher {
    pub fn new(p: bus_core::Publisher) -> Publisher {
        Publisher {
            cell: Mutex::new(Some(Cell::new(p))),
        }
    }

    fn lock(&self) -> PyResult<MutexGuard<'_, Option<Cell>>> {
        match self.cell.try_lock() {
            Ok(g) => Ok(g),
            Err(TryLockError::WouldBlock) => Err(Busy::new_err(
                "another thread is using this publisher (one thread at a time)",
            )),
            // A panic inside bus-core surfaced as an exception; the publisher itself is
            // still consistent (every bus-core operation leaves it so).
            Err(TryLockError::Poisoned(p)) => Ok(p.into_inner()),
        }
    }
}

fn cell(g: &mut Option<Cell>) -> PyResult<&mut Cell> {
    g.as_mut()
        .ok_or_else(|| Closed::new_err("the publisher is closed"))
}

/// Publishes `bytes`, waiting until `deadline` in slices with the GIL released and looking
/// at signals between slices.
fn send_one(
    py: Python<'_>,
    p: &mut bus_core::Publisher,
    bytes: &[u8],
    deadline: Deadline,
) -> PyResult<Sent> {
    if bytes.len() < NOGIL_COPY {
        match p.try_send(bytes) {
            Ok(s) => return Ok(s),
            Err(TrySendError::Full) => {}
            Err(e) => return Err(SendFail::from(e).into_pyerr(py)),
        }
    }
    // Full, or a large message: wait (or copy) without the GIL. `bytes` stays valid: the
    // buffer it comes from is held by our caller until we return (buffer.rs).
    let mut first = bytes.len() >= NOGIL_COPY;
    loop {
        let slice = match next_slice(deadline) {
            Some(s) => s,
            None if first => Duration::ZERO,
            None => return Err(SendFail::Timeout.into_pyerr(py)),
        };
        first = false;
        match py.detach(|| p.send_timeout(bytes, slice)) {
            Ok(s) => return Ok(s),
            Err(SendTimeoutError::Timeout) => py.check_signals()?,
            Err(e) => return Err(SendFail::from(e).into_pyerr(py)),
        }
    }
}

#[pymethods]
impl Publisher {
    /// Publishes `data` (any object with the buffer protocol: bytes, bytearray, memoryview,
    /// a C-contiguous numpy array, ...) and returns its bus-wide sequence number. Waits
    /// while the ring is full (reliable mode), at most `timeout` seconds (None: no limit),
    /// then raises `Timeout`.
    #[pyo3(signature = (data, timeout=None))]
    fn send(&self, py: Python<'_>, data: &Bound<'_, PyAny>, timeout: Option<f64>) -> PyResult<u64> {
        let deadline = deadline(timeout_arg(timeout)?);
        let mut g = self.lock()?;
        let p = cell(&mut g)?.ready()?;
        with_bytes(data, |b| send_one(py, p, b, deadline).map(|s| s.seq))?
    }

    /// Publishes `data` if there is room now; raises `Full` otherwise.
    fn try_send(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<u64> {
        let mut g = self.lock()?;
        let p = cell(&mut g)?.ready()?;
        with_bytes(data, |b| {
            let r = if b.len() < NOGIL_COPY {
                p.try_send(b)
            } else {
                py.detach(|| p.try_send(b))
            };
            r.map(|s| s.seq)
                .map_err(|e| SendFail::from(e).into_pyerr(py))
        })?
    }

    /// Publishes every message of `messages` (an iterable of buffers) in order, as `send`
    /// does each, and returns the sequence number of the last (None if there were none).
    /// `timeout` bounds the whole batch. On an error, the exception's `.sent` attribute
    /// says how many of the messages were published.
    #[pyo3(signature = (messages, timeout=None))]
    fn send_many(
        &self,
        py: Python<'_>,
        messages: &Bound<'_, PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<Option<u64>> {
        let deadline = deadline(timeout_arg(timeout)?);
        let mut g = self.lock()?;
        let p = cell(&mut g)?.ready()?;
        let mut sent = 0usize;
        let mut last = None;
        let r = (|| -> PyResult<()> {
            for item in messages.try_iter()? {
                let item = item?;
                let s = with_bytes(&item, |b| send_one(py, p, b, deadline))??;
                last = Some(s.seq);
                sent += 1;
            }
            Ok(())
        })();
        match r {
            Ok(()) => Ok(last),
            Err(e) => {
                let _ = e.value(py).setattr("sent", sent);
                Err(e)
            }
        }
    }

    /// Lends `size` bytes inside the ring to write a message in place (zero copy), waiting
    /// while the ring is full (at most `timeout` seconds). Use it as a context manager:
    ///
    ///     with pub.loan(8) as buf:      # a writable memoryview of the bytes
    ///         buf[:] = b"abcdefgh"      # committed at exit; abandoned on an exception
    ///
    /// The bytes hold whatever was there before. The publisher refuses other calls until
    /// the loan ends.
    #[pyo3(signature = (size, timeout=None))]
    fn loan(slf: &Bound<'_, Self>, size: usize, timeout: Option<f64>) -> PyResult<Loan> {
        let deadline = deadline(timeout_arg(timeout)?);
        lend(slf, size, Some(deadline))
    }

    /// `loan` if there is room now; raises `Full` otherwise.
    fn try_loan(slf: &Bound<'_, Self>, size: usize) -> PyResult<Loan> {
        lend(slf, size, None)
    }

    /// The largest message the bus takes.
    #[getter]
    fn max_message(&self) -> PyResult<u32> {
        let mut g = self.lock()?;
        let c = cell(&mut g)?;
        // SAFETY: `publ` is valid while the cell lives; `max_message` reads a copy of the
        // bus parameters through `&self`, which touches nothing a loan writes.
        Ok(unsafe { c.publ.as_ref() }.max_message())
    }

    /// Messages this publisher has committed.
    #[getter]
    fn sent(&self) -> PyResult<u64> {
        let mut g = self.lock()?;
        let c = cell(&mut g)?;
        // SAFETY: as in `max_message`: a counter read through `&self`.
        Ok(unsafe { c.publ.as_ref() }.sent())
    }

    /// Whether `close` was called.
    #[getter]
    fn closed(&self) -> PyResult<bool> {
        Ok(self.lock()?.is_none())
    }

    /// Gives the producer slot back. Raises `Busy` while a loan is open. Closing twice is
    /// harmless.
    fn close(&self) -> PyResult<()> {
        let mut g = self.lock()?;
        if let Some(c) = g.as_mut() {
            c.ready()?;
        }
        *g = None;
        Ok(())
    }

    fn __enter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, _args: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<bool> {
        self.close()?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        match self.cell.try_lock().as_deref() {
            Ok(Some(c)) => {
                // SAFETY: as in `sent`.
                let p = unsafe { c.publ.as_ref() };
                format!("<shmbus.Publisher sent={}>", p.sent())
            }
            Ok(None) => "<shmbus.Publisher closed>".to_string(),
            Err(_) => "<shmbus.Publisher busy>".to_string(),
        }
    }
}

/// Claims a loan of `size` bytes (`wait`: None = try once, Some(deadline) = wait) and
/// pins it in the publisher's cell.
fn lend(slf: &Bound<'_, Publisher>, size: usize, wait: Option<Deadline>) -> PyResult<Loan> {
    let py = slf.py();
    let this = slf.get();
    let mut g = this.lock()?;
    let c = cell(&mut g)?;
    c.ready()?;
    let raw = c.publ;
    // The loan made from this borrow is stored in `c.pinned` with its lifetime extended to
    // 'static; the cell drops it before the publisher (Cell's Drop) and refuses every other
    // use of the publisher while it is there (`ready`), which is what the borrow would have
    // enforced.
    let publ = || -> &'static mut bus_core::Publisher {
        // SAFETY: `publ` is valid while the cell lives, and nothing else borrows it: `ready`
        // found no loan, we hold the cell's lock, and each borrow made here is dead before
        // the next is made (a failed claim returns no loan).
        unsafe { &mut *raw.as_ptr() }
    };
    let claimed: Result<RsLoan<'static>, SendFail> = match wait {
        None => publ().try_loan(size).map_err(|e: TryLoanError| e.into()),
        Some(deadline) => {
            let mut first = true;
            loop {
                let slice = match next_slice(deadline) {
                    Some(s) => s,
                    None if first => Duration::ZERO,
                    None => break Err(SendFail::Timeout),
                };
                first = false;
                let p = publ();
                match py.detach(move || p.loan_timeout(size, slice)) {
                    Ok(l) => break Ok(l),
                    Err(bus_core::LoanTimeoutError::Timeout) => py.check_signals()?,
                    Err(e) => break Err(e.into()),
                }
            }
        }
    };
    let mut loan = claimed.map_err(|e| e.into_pyerr(py))?;
    let ptr = loan.as_mut_ptr();
    let seq = loan.seq();
    let id = c.next_id;
    c.next_id += 1;
    let finished = Arc::new(AtomicBool::new(false));
    c.pinned = Some(PinnedLoan {
        id,
        loan,
        finished: finished.clone(),
    });
    drop(g);
    // If making the Python object fails, this value's drop abandons the loan.
    Ok(Loan {
        publisher: slf.clone().unbind(),
        id,
        finished,
        seq,
        region: Region::new(ptr, size, false),
        committed: Mutex::new(None),
    })
}

/// A message being written in place inside the ring: the context manager of
/// `Publisher.loan`. `with` gives a writable memoryview of the bytes; a normal exit commits
/// the message (then `.committed` holds its sequence number), an exception abandons it (it
/// becomes padding that no subscriber receives). The memoryview raises `ValueError` after
/// the block.
#[pyclass(module = "shmbus", frozen)]
pub struct Loan {
    publisher: Py<Publisher>,
    id: u64,
    finished: Arc<AtomicBool>,
    seq: u64,
    region: Region,
    committed: Mutex<Option<u64>>,
}

impl Loan {
    /// Ends the pin: commits (`commit`) or abandons the loan. `None` if the publisher could
    /// not be reached now (it will abandon the loan itself on its next call).
    fn end(&self, commit: bool) -> Option<Result<Sent, bus_core::CommitError>> {
        self.finished.store(true, Ordering::Release);
        let p = self.publisher.get();
        let mut g = p.cell.try_lock().ok()?;
        let loan = g.as_mut()?.take(self.id)?;
        if commit {
            Some(loan.commit())
        } else {
            drop(loan);
            None
        }
    }
}

#[pymethods]
impl Loan {
    /// The sequence number the message will have.
    #[getter]
    fn seq(&self) -> u64 {
        self.seq
    }

    /// The sequence number once committed; None before (or if abandoned).
    #[getter]
    fn committed(&self) -> Option<u64> {
        *self.committed.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn __len__(&self) -> usize {
        self.region.len()
    }

    fn __enter__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        slf.get().region.enter(slf.as_any())
    }

    #[pyo3(signature = (exc_type=None, _exc=None, _tb=None))]
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: Option<&Bound<'_, PyAny>>,
        _exc: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let failed = exc_type.is_some_and(|t| !t.is_none());
        match self.region.exit(py) {
            Exit::Again => Ok(false),
            Exit::Free if failed => {
                self.end(false);
                Ok(false)
            }
            Exit::Free => match self.end(true) {
                Some(Ok(sent)) => {
                    *self.committed.lock().unwrap_or_else(|p| p.into_inner()) = Some(sent.seq);
                    Ok(false)
                }
                Some(Err(e)) => Err(SendFail::from(e).into_pyerr(py)),
                None => Err(Busy::new_err(
                    "the publisher could not be reached to commit the loan; it was abandoned",
                )),
            },
            Exit::Exported(n) => {
                if failed {
                    return Ok(false);
                }
                Err(exc!(
                    py,
                    pyo3::exceptions::PyBufferError,
                    format!(
                        "{n} buffer(s) made from the loan are still alive (a slice, a numpy \
                         array): the message is not committed; it is abandoned when they are \
                         released"
                    )
                ))
            }
        }
    }

    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        // SAFETY: forwarded from the interpreter's call of this slot, with `slf` the owner.
        unsafe { slf.get().region.get_buffer(slf.as_any(), view, flags) }
    }

    unsafe fn __releasebuffer__(&self, _view: *mut ffi::Py_buffer) {
        if self.region.release_buffer() {
            self.end(false);
        }
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        self.region.traverse(&visit)
    }

    fn __clear__(&self) {
        drop(self.region.clear());
    }

    fn __repr__(&self) -> String {
        format!(
            "<shmbus.Loan seq={} len={} {:?}>",
            self.seq,
            self.region.len(),
            self.region.stage()
        )
    }
}

impl Drop for Loan {
    fn drop(&mut self) {
        if self.region.finish_on_drop() {
            self.end(false);
        }
    }
}
