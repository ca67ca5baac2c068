//! `shmbus.Subscriber`, `shmbus.Message` and `shmbus.View`.

use std::ffi::c_int;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;

use bus_core::{AsyncSubscriber, RecvTimeoutError, Sample, TryRecvError};
use futures_core::Stream;
use pyo3::ffi;
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};
use pyo3::PyTraverseError;

use crate::aio::{OpState, OpTicket, Pending, Step};
use crate::bus::timeout_arg;
use crate::closing::{self, Closable, Closing, Guard};
use crate::errors::{exc, Busy, Closed, RecvFail};
use crate::publisher::{deadline, next_slice, Deadline};
use crate::region::{Exit, Region};

/// A received message: `.data` (bytes), `.seq` (bus-wide sequence number), `.position`
/// (absolute position of the record; `subscribe(start=position)` resumes there).
// A freelist saves an allocation per message on the hot receive paths: large enough for the
// batches of `recv_many` (a list of 4096 messages is made while the previous one is still
// alive, then that one is freed into the list). With 1024 entries a `recv_many(4096)` paid
// 130 ns a message against 75 ns with 8192 (bench.py's batch size, one process); the most
// it holds is 8192 empty objects of 48 bytes.
#[pyclass(module = "shmbus", frozen, freelist = 8192)]
pub struct Message {
    #[pyo3(get)]
    data: Py<PyBytes>,
    #[pyo3(get)]
    seq: u64,
    #[pyo3(get)]
    position: u64,
}

#[pymethods]
impl Message {
    fn __len__(&self, py: Python<'_>) -> usize {
        self.data.bind(py).as_bytes().len()
    }

    fn __bytes__<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        self.data.bind(py).clone()
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let d = self.data.bind(py).as_bytes();
        let shown = &d[..d.len().min(32)];
        format!(
            "shmbus.Message(seq={}, position={}, data={}{})",
            self.seq,
            self.position,
            pyo3::types::PyBytes::new(py, shown)
                .repr()
                .map(|r| r.to_string())
                .unwrap_or_default(),
            if d.len() > 32 { "..." } else { "" }
        )
    }
}

/// One step of a `recv_async` (aio.rs): a message if one is there, else the subscriber's
/// async handle polled with the operation's waker. Consumes a message only when it returns
/// it.
pub(crate) fn recv_step(slf: &Bound<'_, Subscriber>, st: &mut OpState) -> PyResult<Step> {
    let py = slf.py();
    let mut g = slf.get().lock()?;
    let c = cell(&mut g)?;
    if let Err(e) = c.check(py, Some(st.id)) {
        c.end_async(st.id);
        return Err(e);
    }
    // At once: what `try_recv` does, on either kind of handle.
    match c.sub.get_mut().try_recv_ref() {
        Ok(s) => {
            let m = message(py, &s, s.seq, s.position);
            c.end_async(st.id);
            return m.map(Step::Done);
        }
        Err(TryRecvError::Empty) => {}
        Err(e) => {
            c.end_async(st.id);
            return Err(RecvFail::from(e).into_pyerr(py));
        }
    }
    let ticket = st.ticket(py)?;
    let polled = match c.sub.async_mut() {
        // The stream takes a message only in the poll that returns it, and leaves the
        // handle parked (with our waker) when it returns Pending.
        Ok(a) => st.poll(|cx| Pin::new(a).poll_next(cx)),
        Err(e) => {
            *g = None;
            return Err(e.into());
        }
    };
    let c = cell(&mut g)?;
    match polled {
        Poll::Pending => {
            c.async_op = Some(ticket);
            Ok(Step::Wait)
        }
        Poll::Ready(Some(Ok(m))) => {
            c.end_async(st.id);
            message(py, &m.data, m.seq, m.position).map(Step::Done)
        }
        Poll::Ready(Some(Err(e))) => {
            c.end_async(st.id);
            Err(RecvFail::from(e).into_pyerr(py))
        }
        Poll::Ready(None) => {
            c.end_async(st.id);
            Err(Closed::new_err("the subscriber's stream ended"))
        }
    }
}

/// A `recv_async` ended without a message (cancelled, closed, collected): the subscriber
/// forgets it and takes back its parking. If the subscriber is in use right now, its next
/// call does that instead (the operation's ticket says it is abandoned).
pub(crate) fn abandon_async(slf: &Bound<'_, Subscriber>, op: u64) {
    if let Ok(mut g) = slf.get().cell.try_lock() {
        if let Some(c) = g.as_mut() {
            if c.async_op.as_ref().is_some_and(|t| t.id == op) {
                c.async_op = None;
                c.sub.blocking();
            }
        }
    }
}

/// A `Message` object.
fn message(py: Python<'_>, data: &[u8], seq: u64, position: u64) -> PyResult<Py<PyAny>> {
    let data = PyBytes::new(py, data).unbind();
    Ok(Bound::new(
        py,
        Message {
            data,
            seq,
            position,
        },
    )?
    .into_any()
    .unbind())
}

/// A received message borrowed in place, pinned until its `View` object ends it.
struct PinnedSample {
    id: u64,
    /// Its lifetime is extended to 'static: see the SAFETY comment in `recv_view`. Never
    /// read: it is held for the borrow it stands for (the View reads the bytes).
    #[allow(dead_code)]
    sample: Sample<'static>,
    /// Set by the `View` object when nothing can reach the bytes any more: the next call
    /// on the subscriber drops the pin if the object could not.
    finished: Arc<AtomicBool>,
}

/// The bus-core handle: blocking, or async once `recv_async` has had to wait (async handles
/// park with bus-core's waiter thread, so a process that never awaits starts none).
enum Handle {
    Sync(bus_core::Subscriber),
    Async(AsyncSubscriber),
    /// Only between the two halves of a conversion that failed, after which the cell is
    /// dropped: never seen by any other code.
    Gone,
}

impl Handle {
    fn get(&self) -> &bus_core::Subscriber {
        match self {
            Handle::Sync(s) => s,
            Handle::Async(a) => a.get_ref(),
            Handle::Gone => unreachable!("a failed conversion drops the cell"),
        }
    }

    /// The subscriber for `try_` calls (both kinds of handle take them).
    fn get_mut(&mut self) -> &mut bus_core::Subscriber {
        match self {
            Handle::Sync(s) => s,
            Handle::Async(a) => a.get_mut(),
            Handle::Gone => unreachable!("a failed conversion drops the cell"),
        }
    }

    /// The subscriber for blocking calls: a blocking wait and a parking with the waiter
    /// thread must not be announced at once, so an async handle goes back first (which takes
    /// back its parking, if one lingers from an abandoned `recv_async`).
    fn blocking(&mut self) -> &mut bus_core::Subscriber {
        if let Handle::Async(_) = self {
            if let Handle::Async(a) = std::mem::replace(self, Handle::Gone) {
                *self = Handle::Sync(a.into_sync());
            }
        }
        self.get_mut()
    }

    /// The async handle (made from the blocking one on first use).
    fn async_mut(&mut self) -> std::io::Result<&mut AsyncSubscriber> {
        if let Handle::Sync(_) = self {
            if let Handle::Sync(s) = std::mem::replace(self, Handle::Gone) {
                // On an error the subscriber is gone with its slot (bus-core's `into_async`
                // consumes it); the caller drops the cell.
                *self = Handle::Async(s.into_async()?);
            }
        }
        match self {
            Handle::Async(a) => Ok(a),
            _ => unreachable!("converted above"),
        }
    }
}

struct Cell {
    /// Drop order matters: the sample points into memory that `sub` keeps valid (the
    /// mapping, or in lossy mode `sub`'s own copy), so it goes first.
    pinned: Option<PinnedSample>,
    sub: Handle,
    next_id: u64,
    /// A `Lost` found by `recv_many` after it had messages to return: raised by the next
    /// receive, so that every gap is reported exactly once.
    pending_lost: Option<u64>,
    /// The `recv_async` waiting on this subscriber (its waker has been given to bus-core).
    async_op: Option<OpTicket>,
}

impl Cell {
    /// Refuses a new receive while a view is out (an ended one is dropped first) or another
    /// task's `recv_async` (other than `op`) waits; reports a pending loss.
    fn check(&mut self, py: Python<'_>, op: Option<u64>) -> PyResult<()> {
        if let Some(p) = &self.pinned {
            if !p.finished.load(Ordering::Acquire) {
                return Err(Busy::new_err(
                    "a view of this subscriber is still open (or a buffer made from it is \
                     still alive)",
                ));
            }
            self.pinned = None;
        }
        if let Some(t) = &self.async_op {
            if t.is_live() && Some(t.id) != op {
                return Err(Busy::new_err(
                    "a recv_async of this subscriber is waiting (one task at a time)",
                ));
            }
            if !t.is_live() {
                self.async_op = None;
            }
        }
        if let Some(count) = self.pending_lost.take() {
            return Err(RecvFail::Lost(count).into_pyerr(py));
        }
        Ok(())
    }

    /// The subscriber for a new blocking (or `try_`) receive.
    fn ready(&mut self, py: Python<'_>) -> PyResult<&mut bus_core::Subscriber> {
        self.check(py, None)?;
        Ok(self.sub.blocking())
    }

    /// Forgets the async receive `op`, if it is the one waiting.
    fn end_async(&mut self, op: u64) {
        if self.async_op.as_ref().is_some_and(|t| t.id == op) {
            self.async_op = None;
        }
    }
}

/// Receives every message of a bus from its start on. Made by `Bus.subscribe()`; holds a
/// subscriber slot until closed (or collected). In reliable mode producers wait for it:
/// a subscriber that stops reading eventually stops the bus (one whose process dies is
/// evicted).
///
/// One thread at a time: a call from a second thread while one is blocked in `recv`
/// raises `Busy`. Iterating (`for msg in sub`) receives forever.
#[pyclass(module = "shmbus", frozen)]
pub struct Subscriber {
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

    fn take_waiter(&mut self) -> Option<std::task::Waker> {
        self.async_op
            .take()
            .filter(|t| t.is_live())
            .map(|t| t.waker)
    }
}

/// Collected without `close()`: see [`closing::drop_unlocked`].
impl Drop for Subscriber {
    fn drop(&mut self) {
        closing::drop_unlocked(&mut self.cell);
    }
}

impl Subscriber {
    pub fn new(sub: bus_core::Subscriber) -> Subscriber {
        Subscriber {
            cell: Mutex::new(Some(Cell {
                pinned: None,
                sub: Handle::Sync(sub),
                next_id: 1,
                pending_lost: None,
                async_op: None,
            })),
            closing: Closing::default(),
        }
    }

    fn lock(&self) -> PyResult<Guard<'_, Cell>> {
        closing::lock(&self.cell, &self.closing, "subscriber")
    }

    /// One message as `Message` parts (copied out into a new bytes object).
    fn recv_parts(&self, py: Python<'_>, wait: Option<Deadline>) -> PyResult<Message> {
        let mut g = self.lock()?;
        let sub = cell(&mut g)?.ready(py)?;
        let (data, seq, position) = receive(py, sub, wait, &self.closing, |s| {
            (PyBytes::new(py, &s).unbind(), s.seq, s.position)
        })?;
        drop(g);
        Ok(Message {
            data,
            seq,
            position,
        })
    }
}

fn cell(g: &mut Option<Cell>) -> PyResult<&mut Cell> {
    g.as_mut()
        .ok_or_else(|| Closed::new_err("the subscriber is closed"))
}

/// Receives one message and hands it to `f`: at once if one is there, else (`wait` =
/// `Some(deadline)`) waiting until the deadline in slices with the GIL released, looking at
/// signals between slices. `wait` = `None`: raise `Empty` instead of waiting.
fn receive<T>(
    py: Python<'_>,
    sub: &mut bus_core::Subscriber,
    wait: Option<Deadline>,
    closing: &Closing,
    f: impl for<'a> FnOnce(Sample<'a>) -> T,
) -> PyResult<T> {
    match sub.try_recv_ref() {
        Ok(s) => return Ok(f(s)),
        Err(TryRecvError::Empty) => {}
        Err(e) => return Err(RecvFail::from(e).into_pyerr(py)),
    }
    let Some(deadline) = wait else {
        return Err(RecvFail::Empty.into_pyerr(py));
    };
    loop {
        let Some(slice) = next_slice(deadline) else {
            return Err(RecvFail::Timeout.into_pyerr(py));
        };
        match py.detach(|| sub.recv_ref_timeout(slice)) {
            Ok(s) => return Ok(f(s)),
            Err(RecvTimeoutError::Timeout) => closing.between_slices(py)?,
            Err(e) => return Err(RecvFail::from(e).into_pyerr(py)),
        }
    }
}

#[pymethods]
impl Subscriber {
    /// Receives the next message, waiting at most `timeout` seconds (None: no limit) and
    /// then raising `Timeout`. Lossy mode: raises `Lost` (with `.count`) once for each gap;
    /// the next call goes on.
    #[pyo3(signature = (timeout=None))]
    fn recv(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Message> {
        let d = deadline(timeout_arg(timeout)?);
        self.recv_parts(py, Some(d))
    }

    /// Receives the next message if one is there now; raises `Empty` otherwise.
    fn try_recv(&self, py: Python<'_>) -> PyResult<Message> {
        self.recv_parts(py, None)
    }

    /// Receives up to `max` messages: waits (at most `timeout` seconds) for the first, then
    /// takes those already there without waiting. Returns a list of `Message`.
    #[pyo3(signature = (max, timeout=None))]
    fn recv_many<'py>(
        &self,
        py: Python<'py>,
        max: usize,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyList>> {
        let d = deadline(timeout_arg(timeout)?);
        if max == 0 {
            return Ok(PyList::empty(py));
        }
        let mut parts = Vec::with_capacity(max.min(4096));
        {
            let mut g = self.lock()?;
            let c = cell(&mut g)?;
            let sub = c.ready(py)?;
            let part = |s: Sample<'_>| (PyBytes::new(py, &s).unbind(), s.seq, s.position);
            parts.push(receive(py, sub, Some(d), &self.closing, part)?);
            let mut lost = None;
            while parts.len() < max {
                match sub.try_recv_ref() {
                    Ok(s) => parts.push(part(s)),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Lost(n)) => {
                        lost = Some(n);
                        break;
                    }
                    // Corrupt, Forked: the subscriber stays where it is, so the next call
                    // reports it.
                    Err(TryRecvError::Corrupt { .. } | TryRecvError::Forked) => break,
                }
            }
            c.pending_lost = lost;
        }
        // The list and the messages are made without the lock: allocating them may run the
        // garbage collector, and with it finalizers that use this subscriber. In one pass:
        // each message goes straight into its slot of a list made at its final length.
        PyList::new(
            py,
            parts.into_iter().map(|(data, seq, position)| Message {
                data,
                seq,
                position,
            }),
        )
    }

    /// Receives the next message without copying it, waiting at most `timeout` seconds.
    /// Use it as a context manager:
    ///
    ///     with sub.recv_view() as view:   # a read-only memoryview of the message
    ///         header = bytes(view[:8])
    ///
    /// Reliable mode: the memoryview points into the ring, and no producer overwrites the
    /// record until the block ends. Lossy mode: it points to the subscriber's validated copy.
    /// The memoryview raises `ValueError` after the block; the subscriber refuses other
    /// receives until then. The context manager has `.seq` and `.position`.
    #[pyo3(signature = (timeout=None))]
    fn recv_view(slf: &Bound<'_, Self>, timeout: Option<f64>) -> PyResult<View> {
        let py = slf.py();
        let d = deadline(timeout_arg(timeout)?);
        let this = slf.get();
        let mut g = this.lock()?;
        let c = cell(&mut g)?;
        let sub = c.ready(py)?;
        // SAFETY: the sample's bytes are in the mapping (reliable mode) or in the
        // subscriber's scratch buffer (lossy mode); both stay valid and unchanged until the
        // next `&mut` call on the subscriber, and the mapping until the subscriber drops. The
        // cell keeps the sample in `pinned`, refuses every `&mut` use of the subscriber while
        // it is there (`ready`), and drops it before the subscriber (field order): what the
        // borrow of `Sample<'a>` would have enforced. The sample holds no reference into the
        // `Subscriber` value itself, so reaching the cell through `&mut` does not touch it.
        let sample = receive(py, sub, Some(d), &this.closing, |s| unsafe {
            std::mem::transmute::<Sample<'_>, Sample<'static>>(s)
        })?;
        let (ptr, len) = (sample.as_ptr() as *mut u8, sample.len());
        let (seq, position) = (sample.seq, sample.position);
        let id = c.next_id;
        c.next_id += 1;
        let finished = Arc::new(AtomicBool::new(false));
        c.pinned = Some(PinnedSample {
            id,
            sample,
            finished: finished.clone(),
        });
        drop(g);
        // If making the Python object fails, this value's drop ends the pin.
        Ok(View {
            subscriber: slf.clone().unbind(),
            id,
            finished,
            seq,
            position,
            region: Region::new(ptr, len, true),
        })
    }

    /// The position of the next message: `subscribe(start=position)` resumes there, in this
    /// process or another.
    #[getter]
    fn position(&self) -> PyResult<u64> {
        let mut g = self.lock()?;
        Ok(cell(&mut g)?.sub.get().position())
    }

    /// The sequence number of the next message.
    #[getter]
    fn next_seq(&self) -> PyResult<u64> {
        let mut g = self.lock()?;
        Ok(cell(&mut g)?.sub.get().next_seq())
    }

    /// Messages delivered so far.
    #[getter]
    fn delivered(&self) -> PyResult<u64> {
        let mut g = self.lock()?;
        Ok(cell(&mut g)?.sub.get().delivered())
    }

    /// Messages lost so far (lossy mode; also records of producers that died mid-message).
    #[getter]
    fn lost(&self) -> PyResult<u64> {
        let mut g = self.lock()?;
        Ok(cell(&mut g)?.sub.get().lost())
    }

    /// Whether `close` was called.
    #[getter]
    fn closed(&self) -> PyResult<bool> {
        Ok(self.closing.requested() || self.lock()?.is_none())
    }

    /// Gives the subscriber slot back (producers stop waiting for it). Raises `Busy` while a
    /// view is open. Closing twice is harmless.
    ///
    /// A receive blocked on this subscriber in another thread (or `for msg in sub` there)
    /// raises `Closed` within 20 ms, and ends its loop; `close` returns once it has, with
    /// the slot given back. Called from a signal handler while this thread waits in a
    /// receive, it returns at once: the interrupted receive raises `Closed` and gives the
    /// slot back as it returns.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let Some(mut g) = closing::lock_for_close(py, &self.cell, &self.closing) else {
            return Ok(());
        };
        if let Some(c) = g.as_mut() {
            if c.pinned
                .as_ref()
                .is_some_and(|p| !p.finished.load(Ordering::Acquire))
            {
                // Not closed, and no close left pending either.
                self.closing.withdraw();
                return Err(Busy::new_err("a view of this subscriber is still open"));
            }
        }
        let old = g.take();
        let waiting = old.as_ref().and_then(|c| c.async_op.clone());
        // Leaving takes the control lock (rarely contended): without the GIL.
        py.detach(move || drop(old));
        // A task awaiting `recv_async` looks again, finds the subscriber closed and raises
        // `Closed` (`async for` ends).
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

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// asyncio: `await sub.recv_async()` receives the next message, as `recv` does, without
    /// blocking the event loop. A message that is there already is returned at once (no
    /// future, no loop call); otherwise the task waits, woken through the loop when a
    /// publish moves the bus (no thread per call). Raises `Lost` and `Corrupt` as `recv`
    /// does. For a timeout, wrap it: `await asyncio.wait_for(sub.recv_async(), 1.0)` or
    /// `async with asyncio.timeout(1.0)`.
    ///
    /// Cancellation-safe: a cancelled (or timed out) receive has consumed nothing, and the
    /// next receive gets the same message. One task at a time: a second task's
    /// `recv_async` while one waits raises `Busy`, as does a blocking receive.
    fn recv_async(slf: &Bound<'_, Self>) -> Pending {
        Pending::new_recv(slf.clone().unbind(), false)
    }

    fn __aiter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// `async for msg in sub`: `recv_async` forever; the loop ends when the subscriber is
    /// closed.
    fn __anext__(slf: &Bound<'_, Self>) -> Pending {
        Pending::new_recv(slf.clone().unbind(), true)
    }

    /// Blocking iteration: the next message. Stops when the subscriber is closed.
    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Message>> {
        match self.recv_parts(py, Some(None)) {
            Ok(m) => Ok(Some(m)),
            Err(e) if e.is_instance_of::<Closed>(py) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn __repr__(&self) -> String {
        match self.cell.try_lock().as_deref() {
            Ok(Some(c)) => format!(
                "<shmbus.Subscriber position={} next_seq={}>",
                c.sub.get().position(),
                c.sub.get().next_seq()
            ),
            Ok(None) => "<shmbus.Subscriber closed>".to_string(),
            Err(_) => "<shmbus.Subscriber busy>".to_string(),
        }
    }
}

/// A message borrowed in place: the context manager of `Subscriber.recv_view`. `with`
/// gives a read-only memoryview of the bytes, which raises `ValueError` after the block.
#[pyclass(module = "shmbus", frozen)]
pub struct View {
    subscriber: Py<Subscriber>,
    id: u64,
    finished: Arc<AtomicBool>,
    #[pyo3(get)]
    seq: u64,
    #[pyo3(get)]
    position: u64,
    region: Region,
}

impl View {
    /// Ends the pin: the subscriber may move past the record.
    fn end(&self) {
        self.finished.store(true, Ordering::Release);
        let s = self.subscriber.get();
        if let Ok(mut g) = s.cell.try_lock() {
            if let Some(c) = g.as_mut() {
                if c.pinned.as_ref().is_some_and(|p| p.id == self.id) {
                    c.pinned = None;
                }
            }
        }
        // Otherwise the subscriber drops the pin on its next call (`finished` is set).
    }
}

#[pymethods]
impl View {
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
            Exit::Free => {
                self.end();
                Ok(false)
            }
            Exit::Exported(_) if failed => Ok(false),
            Exit::Exported(n) => Err(exc!(
                py,
                pyo3::exceptions::PyBufferError,
                format!(
                    "{n} buffer(s) made from the view are still alive (a slice, a numpy \
                     array): the subscriber stays at this message until they are released"
                )
            )),
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
            self.end();
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
            "<shmbus.View seq={} position={} len={} {:?}>",
            self.seq,
            self.position,
            self.region.len(),
            self.region.stage()
        )
    }
}

impl Drop for View {
    fn drop(&mut self) {
        if self.region.finish_on_drop() {
            self.end();
        }
    }
}
