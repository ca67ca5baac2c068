//! `shmbus.Publisher` and `shmbus.Loan`.

use std::ffi::c_int;
use std::future::Future;
use std::pin::Pin;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use bus_core::{
    AsyncPublisher, Loan as RsLoan, SendError, SendTimeoutError, Sent, TryLoanError, TrySendError,
};
use pyo3::ffi;
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::PyTraverseError;

use crate::aio::{OpState, OpTicket, Pending, Step};
use crate::buffer::with_bytes;
use crate::bus::timeout_arg;
use crate::closing::{self, Closable, Closing, Guard};
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

/// The bus-core handle: blocking, or async once `send_async` has had to wait for room (so a
/// process that never awaits starts no waiter thread). Blocking calls work on both: an
/// async publisher parks only inside its send future, and drops the parking with it.
enum Handle {
    Sync(bus_core::Publisher),
    Async(AsyncPublisher),
    /// Only between the two halves of a conversion that failed, after which the cell is
    /// dropped: never seen by any other code.
    Gone,
}

impl Handle {
    fn get(&self) -> &bus_core::Publisher {
        match self {
            Handle::Sync(p) => p,
            Handle::Async(a) => a.get_ref(),
            Handle::Gone => unreachable!("a failed conversion drops the cell"),
        }
    }

    fn get_mut(&mut self) -> &mut bus_core::Publisher {
        match self {
            Handle::Sync(p) => p,
            Handle::Async(a) => a.get_mut(),
            Handle::Gone => unreachable!("a failed conversion drops the cell"),
        }
    }

    /// The async handle (made from the blocking one on first use).
    fn async_mut(&mut self) -> std::io::Result<&mut AsyncPublisher> {
        if let Handle::Sync(_) = self {
            if let Handle::Sync(p) = std::mem::replace(self, Handle::Gone) {
                // On an error the publisher is gone with its slot (bus-core's `into_async`
                // consumes it); the caller drops the cell.
                *self = Handle::Async(p.into_async()?);
            }
        }
        match self {
            Handle::Async(a) => Ok(a),
            _ => unreachable!("converted above"),
        }
    }
}

/// The future of a `send_async` that waits for room, borrowing the cell's async publisher.
type SendFuture = Pin<Box<dyn Future<Output = Result<Sent, SendError>> + Send>>;

/// A waiting `send_async`: its bus-core future (which owns a copy of the message).
struct PinnedSend {
    ticket: OpTicket,
    fut: SendFuture,
}

/// The publisher and the loan or send future that borrows it.
struct Cell {
    /// Drop order matters: the loan and the send future borrow `*publ`, so they go first
    /// (see `Drop`).
    pinned: Option<PinnedLoan>,
    sending: Option<PinnedSend>,
    /// Owned (from `Box::into_raw`), freed in `Drop`. Kept as a raw pointer so that a loan
    /// or a send future can borrow the publisher while this struct is still reached through
    /// `&mut`: the handle lives in its own allocation, which no reborrow of the cell touches.
    publ: NonNull<Handle>,
    next_id: u64,
}

// SAFETY: the cell owns a bus-core publisher (Send, blocking or async), and a loan or a send
// future borrowing it (Send, as `&mut Publisher` / `&mut AsyncPublisher` are, and the boxed
// future is `Send` by its type); moving them to another thread together is what `Send` of
// the publisher allows.
unsafe impl Send for Cell {}

impl Cell {
    fn new(p: bus_core::Publisher) -> Cell {
        Cell {
            pinned: None,
            sending: None,
            publ: NonNull::from(Box::leak(Box::new(Handle::Sync(p)))),
            next_id: 1,
        }
    }

    /// The handle, for reads of its counters and parameters: refused (`Busy`) while a loan
    /// or a send future borrows it mutably, since a shared borrow beside that one would be
    /// undefined behaviour whatever it reads.
    fn handle(&mut self) -> PyResult<&Handle> {
        self.check()?;
        // SAFETY: `publ` is valid while the cell lives, and `check` found no loan and no
        // send future borrowing it; the borrow is tied to `&mut self`, so none can be made
        // while it lives.
        Ok(unsafe { self.publ.as_ref() })
    }

    /// Refuses a new operation while a loan is out or a `send_async` waits (ended ones are
    /// dropped first).
    fn check(&mut self) -> PyResult<()> {
        if let Some(p) = &self.pinned {
            if !p.finished.load(Ordering::Acquire) {
                return Err(Busy::new_err(
                    "a loan of this publisher is still open (or a buffer made from it is \
                     still alive)",
                ));
            }
            self.pinned = None;
        }
        if let Some(s) = &self.sending {
            if s.ticket.is_live() {
                return Err(Busy::new_err(
                    "a send_async of this publisher is waiting for room (one task at a time)",
                ));
            }
            self.sending = None;
        }
        Ok(())
    }

    /// The publisher for a new operation: refused while a loan is out or a `send_async`
    /// waits.
    fn ready(&mut self) -> PyResult<&mut bus_core::Publisher> {
        self.check()?;
        // SAFETY: `publ` is owned by the cell and valid until its drop; no loan or send
        // future borrows it (`check` dropped any), and the returned borrow is tied to
        // `&mut self`.
        Ok(unsafe { &mut *self.publ.as_ptr() }.get_mut())
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
        // The loan and the send future first: they borrow the publisher (abandoning a loan
        // writes through it, dropping the future takes back its parking).
        self.pinned = None;
        self.sending = None;
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
    closing: Closing,
}

impl Closable for Cell {
    fn can_close(&self) -> bool {
        // ORDERING: Acquire: pairs with the Release that ends the pin (`finished`): what the
        // view or loan did with the handle happens before the handle is dropped.
        self.pinned
            .as_ref()
            .is_none_or(|p| p.finished.load(Ordering::Acquire))
    }

    /// A waiting `send_async` is dropped with the cell (nothing was published), as by
    /// `close()`; its task is woken to find the publisher closed.
    fn take_waiter(&mut self) -> Option<std::task::Waker> {
        self.sending
            .take()
            .map(|s| s.ticket)
            .filter(|t| t.is_live())
            .map(|t| t.waker)
    }
}

/// Collected without `close()`: see [`closing::drop_unlocked`].
impl Drop for Publisher {
    fn drop(&mut self) {
        closing::drop_unlocked(&mut self.cell);
    }
}

impl Publisher {
    pub fn new(p: bus_core::Publisher) -> Publisher {
        Publisher {
            cell: Mutex::new(Some(Cell::new(p))),
            closing: Closing::default(),
        }
    }

    fn lock(&self) -> PyResult<Guard<'_, Cell>> {
        closing::lock(&self.cell, &self.closing, "publisher")
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
    closing: &Closing,
) -> PyResult<Sent> {
    closing.check()?;
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
            Err(SendTimeoutError::Timeout) => closing.between_slices(py)?,
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
        with_bytes(data, |b| {
            send_one(py, p, b, deadline, &self.closing).map(|s| s.seq)
        })?
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
                let s = with_bytes(&item, |b| send_one(py, p, b, deadline, &self.closing))??;
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

    /// asyncio: `await pub.send_async(data)` publishes `data` (any buffer) as `send` does and
    /// returns its sequence number, without blocking the event loop. With room in the ring
    /// (always in lossy mode) it publishes at once, straight from the buffer, with no future
    /// and no loop call. On a full reliable ring it copies the message once and the task waits
    /// for room, woken through the loop (no thread per call). For a timeout, wrap it:
    /// `await asyncio.wait_for(pub.send_async(data), 1.0)`.
    ///
    /// Cancellation-safe: a cancelled (or timed out) send has published nothing. One task at
    /// a time: other calls on the publisher raise `Busy` while a send waits.
    fn send_async(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>) -> Pending {
        Pending::new_send(slf.clone().unbind(), data.clone().unbind())
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
        Ok(c.handle()?.get().max_message())
    }

    /// Messages this publisher has committed.
    #[getter]
    fn sent(&self) -> PyResult<u64> {
        let mut g = self.lock()?;
        let c = cell(&mut g)?;
        Ok(c.handle()?.get().sent())
    }

    /// Whether `close` was called.
    #[getter]
    fn closed(&self) -> PyResult<bool> {
        Ok(self.closing.requested() || self.lock()?.is_none())
    }

    /// Gives the producer slot back. Raises `Busy` while a loan is open. Closing twice is
    /// harmless.
    ///
    /// A `send` or `loan` waiting for room in another thread raises `Closed` within 20 ms;
    /// `close` returns once it has, with the slot given back. Called from a signal handler
    /// while this thread waits in a `send`, it returns at once: the interrupted call raises
    /// `Closed` and gives the slot back as it returns.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let Some(mut g) = closing::lock_for_close(py, &self.cell, &self.closing) else {
            return Ok(());
        };
        let mut waiting = None;
        if let Some(c) = g.as_mut() {
            // A waiting `send_async` is dropped (nothing was published); its task looks
            // again, finds the publisher closed and raises `Closed`.
            waiting = c.sending.take().map(|s| s.ticket);
            if let Err(e) = c.ready() {
                // A loan is open: not closed, and no close left pending either.
                self.closing.withdraw();
                return Err(e);
            }
        }
        let old = g.take();
        drop(g);
        // Leaving takes the bus's control lock (rarely contended, up to 5 s): without the
        // GIL, or every Python thread would wait with this one.
        py.detach(move || drop(old));
        if let Some(t) = waiting.filter(|t| t.is_live()) {
            t.waker.wake_by_ref();
        }
        Ok(())
    }

    fn __enter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// Closes the handle. If the block raised, a close that cannot happen now (a view or
    /// loan made in the block is still alive) does not replace the block's exception: the
    /// handle then closes when collected.
    #[pyo3(signature = (exc_type=None, _exc=None, _tb=None))]
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: Option<&Bound<'_, PyAny>>,
        _exc: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        closing::exit(py, exc_type, self.close(py))
    }

    fn __repr__(&self) -> String {
        let Ok(mut g) = self.cell.try_lock() else {
            return "<shmbus.Publisher busy>".to_string();
        };
        match g.as_mut().map(|c| c.handle().map(|h| h.get().sent())) {
            Some(Ok(sent)) => format!("<shmbus.Publisher sent={sent}>"),
            // A loan or a waiting send_async borrows the publisher.
            Some(Err(_)) => "<shmbus.Publisher busy>".to_string(),
            None => "<shmbus.Publisher closed>".to_string(),
        }
    }
}

/// One step of a `send_async` (aio.rs). The first tries at once from the caller's buffer; if
/// the ring is full it copies the message into a bus-core send future pinned in the cell,
/// which this and later steps poll with the operation's waker. Publishes only in the step
/// that returns the sequence number.
pub(crate) fn send_step(
    slf: &Bound<'_, Publisher>,
    st: &mut OpState,
    data: &mut Option<Py<PyAny>>,
) -> PyResult<Step> {
    let py = slf.py();
    let mut g = slf.get().lock()?;
    let c = cell(&mut g)?;
    let mut fut = match data.take() {
        Some(obj) => {
            let p = c.ready()?;
            let copy = with_bytes(obj.bind(py), |b| {
                let r = if b.len() < NOGIL_COPY {
                    p.try_send(b)
                } else {
                    py.detach(|| p.try_send(b))
                };
                match r {
                    Ok(s) => Ok(Err(s.seq)),
                    Err(TrySendError::Full) => Ok(Ok(b.to_vec())),
                    Err(e) => Err(SendFail::from(e).into_pyerr(py)),
                }
            })??;
            let bytes = match copy {
                Err(seq) => return Ok(Step::Done(seq.into_pyobject(py)?.into_any().unbind())),
                Ok(bytes) => bytes,
            };
            let raw = c.publ;
            // SAFETY: `publ` is valid while the cell lives and nothing else borrows it (`ready`
            // found no loan and no send future; we hold the cell's lock). The future made
            // from this borrow is stored in `c.sending` with its lifetime extended to
            // 'static: the cell drops it before the handle (Cell's Drop), refuses every other
            // use of the publisher while it is there (`check`), and never converts the handle
            // meanwhile, which is what the borrow would have enforced.
            let handle: &'static mut Handle = unsafe { &mut *raw.as_ptr() };
            let a = match handle.async_mut() {
                Ok(a) => a,
                Err(e) => {
                    *g = None;
                    return Err(e.into());
                }
            };
            let fut: SendFuture = Box::pin(async move { a.send(&bytes).await });
            fut
        }
        None => match c.sending.take() {
            Some(s) if s.ticket.id == st.id => s.fut,
            // Dropped by `close` (then `cell` above raised `Closed`) or never made: nothing
            // to go on with.
            other => {
                c.sending = other;
                return Err(Closed::new_err("the send was dropped"));
            }
        },
    };
    let ticket = st.ticket(py)?;
    match st.poll(|cx| fut.as_mut().poll(cx)) {
        Poll::Pending => {
            c.sending = Some(PinnedSend { ticket, fut });
            Ok(Step::Wait)
        }
        Poll::Ready(r) => {
            drop(fut);
            let sent = r.map_err(|e| SendFail::from(e).into_pyerr(py))?;
            Ok(Step::Done(sent.seq.into_pyobject(py)?.into_any().unbind()))
        }
    }
}

/// A `send_async` ended without publishing (cancelled, collected): the publisher drops its
/// future (which takes back its parking). If the publisher is in use right now, its next call
/// does that instead (the ticket says the operation is abandoned).
pub(crate) fn abandon_async(slf: &Bound<'_, Publisher>, op: u64) {
    if let Ok(mut g) = slf.get().cell.try_lock() {
        if let Some(c) = g.as_mut() {
            if c.sending.as_ref().is_some_and(|s| s.ticket.id == op) {
                c.sending = None;
            }
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
        // found no loan and no send future, we hold the cell's lock, and each borrow made
        // here is dead before the next is made (a failed claim returns no loan). The handle
        // is not converted while the loan lives (only `send_async` converts, after `ready`).
        unsafe { &mut *raw.as_ptr() }.get_mut()
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
                    Err(bus_core::LoanTimeoutError::Timeout) => this.closing.between_slices(py)?,
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
