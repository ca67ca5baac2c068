//! asyncio: `Subscriber.recv_async`, `Publisher.send_async` and `async for msg in sub`.
//!
//! bus-core's async handles are plain `std::future`s that need no runtime: a handle with
//! nothing to do parks with the process's waiter thread (bus-core `reactor`), which calls its
//! `std::task::Waker` when the bus's futex word moves. This module bridges that to an asyncio
//! event loop without a thread per call and without taking the GIL on the waiter thread:
//!
//! * An operation is a [`Pending`] object: an awaitable whose `__next__` is one step of the
//!   operation, run by the asyncio task that awaits it. A step first tries at once (a message
//!   already there, room already there: no future, no loop call at all); otherwise it polls
//!   bus-core's future with a [`Waker`] of this module and, if that is pending, yields an
//!   `asyncio.Future` for the task to wait on.
//! * The waker runs on bus-core's waiter thread. It touches no Python object: it pushes the
//!   operation's id onto its loop's [`WakeQueue`] and, if the queue was empty, writes a byte
//!   to a socket pair whose other end the loop watches (`loop.add_reader`). The loop then
//!   calls the [`Driver`], which resolves the futures of the woken operations; their tasks
//!   run the next step. One socket pair per event loop, whatever the number of operations.
//! * A waker called *during* a step (bus-core's `SpinThenBlock` re-polls through the executor
//!   a few times before it parks) makes the step yield `None` instead: asyncio's bare yield,
//!   which runs the task again on the next loop iteration (what `asyncio.sleep(0)` does).
//!
//! **Nothing is consumed outside a step.** The waker and the driver only say "look again";
//! a message is taken from the ring (or a message published) only by the step that returns
//! it to the awaiting task, in that task. So cancelling the task (`task.cancel()`,
//! `asyncio.wait_for`, `asyncio.timeout`) at any await point loses nothing: the awaitable's
//! `throw` drops the operation's state, and the handle goes on from where it was
//! (bus-core's futures are cancellation-safe in the same way, STYLE.md 18).

use std::cell::Cell;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};

use pyo3::exceptions::{PyBaseException, PyRuntimeError, PyStopAsyncIteration, PyStopIteration};
use pyo3::gc::PyVisit;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;
use pyo3::PyTraverseError;

use crate::errors::Closed;
use crate::publisher::{self, Publisher};
use crate::subscriber::{self, Subscriber};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here is one collection operation: a panic cannot leave the
    // data half-updated, so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

// ---- waking, from any thread ---------------------------------------------------------------

/// Ids of the operations of one event loop that a waker has called, and the socket pair that
/// tells the loop to look at them.
struct WakeQueue {
    ids: Mutex<Vec<u64>>,
    /// Watched by the loop (`add_reader`); drained by [`Driver::drain`].
    rx: UnixStream,
    /// Written (one byte) when `ids` goes from empty to not empty.
    tx: UnixStream,
}

impl WakeQueue {
    fn new() -> std::io::Result<WakeQueue> {
        let (rx, tx) = UnixStream::pair()?;
        rx.set_nonblocking(true)?;
        tx.set_nonblocking(true)?;
        Ok(WakeQueue {
            ids: Mutex::new(Vec::new()),
            rx,
            tx,
        })
    }

    /// From any thread, without the GIL.
    fn push(&self, id: u64) {
        let first = {
            let mut ids = lock(&self.ids);
            ids.push(id);
            ids.len() == 1
        };
        if first {
            // A full socket buffer (WouldBlock) means a byte is already waiting to be read,
            // which is all the loop needs. Any other error cannot happen on a socket pair
            // whose other end we own.
            let _ = (&self.tx).write(&[1]);
        }
    }

    /// On the loop's thread: the ids woken since the last call. Reads the socket *before*
    /// taking the ids: a push after the read either finds ids already there (and they are
    /// taken below) or writes a byte that makes the loop call again.
    fn take(&self) -> Vec<u64> {
        let mut buf = [0u8; 256];
        while let Ok(n) = (&self.rx).read(&mut buf) {
            if n < buf.len() {
                break;
            }
        }
        std::mem::take(&mut *lock(&self.ids))
    }
}

thread_local! {
    /// The operation whose step is polling on this thread (0: none), and whether its waker
    /// was called during the poll.
    static POLLING: Cell<(u64, bool)> = const { Cell::new((0, false)) };
}

/// The `Waker` of one operation. Holds no Python object: it is called (and may be dropped)
/// on bus-core's waiter thread, which never takes the GIL.
struct OpWaker {
    queue: Arc<WakeQueue>,
    id: u64,
}

impl Wake for OpWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let inline = POLLING.with(|p| {
            let (id, _) = p.get();
            if id == self.id {
                p.set((id, true));
            }
            id == self.id
        });
        if !inline {
            self.queue.push(self.id);
        }
    }
}

// ---- the loop side ------------------------------------------------------------------------

/// The bridge of one asyncio event loop: its wake queue, and the futures that waiting
/// operations' tasks wait on. Registered with the loop as the reader callback of the queue's
/// socket, and kept as the loop's attribute `_shmbus_driver` (so it lives as long as the loop).
#[pyclass(module = "shmbus._shmbus", frozen)]
pub struct Driver {
    queue: Arc<WakeQueue>,
    /// Operation id -> the `asyncio.Future` its task waits on.
    waiting: Mutex<HashMap<u64, Py<PyAny>>>,
}

impl Driver {
    /// Forgets operation `id`'s future. (Dropped after the lock: freeing a future may run
    /// Python code, which may come back here.)
    fn forget(&self, id: u64) {
        let fut = lock(&self.waiting).remove(&id);
        drop(fut);
    }
}

#[pymethods]
impl Driver {
    /// The loop's reader callback: resolves the future of every operation woken since the
    /// last call, so that their tasks run their next step.
    fn __call__(&self, py: Python<'_>) -> PyResult<()> {
        let mut first_err = None;
        for id in self.queue.take() {
            let fut = lock(&self.waiting).remove(&id);
            if let Some(fut) = fut {
                // Every future is resolved even if one fails (it cannot, short of memory):
                // the ids are taken, and a task left out would wait forever.
                if let Err(e) = resolve(py, fut.bind(py)) {
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// The futures are reachable from the loop (through this object, its attribute) and
    /// refer back to it: a cycle the garbage collector must see.
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        // try_lock: the collector may run while this thread holds the lock; not visiting
        // then only keeps the objects alive a collection longer.
        if let Ok(w) = self.waiting.try_lock() {
            for fut in w.values() {
                visit.call(fut)?;
            }
        }
        Ok(())
    }

    fn __clear__(&self) {
        let futs = self
            .waiting
            .try_lock()
            .map(|mut w| std::mem::take(&mut *w))
            .unwrap_or_default();
        drop(futs);
    }
}

/// Sets a waiting future's result (None) unless it is done already (cancelled).
fn resolve(py: Python<'_>, fut: &Bound<'_, PyAny>) -> PyResult<()> {
    if !fut.call_method0(intern!(py, "done"))?.is_truthy()? {
        fut.call_method1(intern!(py, "set_result"), (py.None(),))?;
    }
    Ok(())
}

/// Loops whose objects take no attributes (not asyncio's own): their drivers, by address.
/// Each entry holds its loop, so the address is not reused while the entry exists; entries
/// of closed loops are dropped when another loop is added.
static OTHER_LOOPS: Mutex<Vec<(Py<PyAny>, Py<Driver>)>> = Mutex::new(Vec::new());

/// The running loop and its driver (made and registered on first use).
fn running_driver(py: Python<'_>) -> PyResult<(Bound<'_, PyAny>, Bound<'_, Driver>)> {
    static GET_RUNNING_LOOP: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let get = GET_RUNNING_LOOP.get_or_try_init(py, || {
        Ok::<_, PyErr>(py.import("asyncio")?.getattr("get_running_loop")?.unbind())
    })?;
    let lp = get.bind(py).call0()?;
    let attr = intern!(py, "_shmbus_driver");
    if let Ok(d) = lp.getattr(attr) {
        if let Ok(d) = d.cast_into::<Driver>() {
            return Ok((lp, d));
        }
    }
    let found = lock(&OTHER_LOOPS)
        .iter()
        .find(|(l, _)| l.bind(py).is(&lp))
        .map(|(_, d)| d.clone_ref(py));
    if let Some(d) = found {
        return Ok((lp, d.into_bound(py)));
    }
    let queue = Arc::new(WakeQueue::new()?);
    let fd = queue.rx.as_raw_fd();
    let d = Bound::new(
        py,
        Driver {
            queue,
            waiting: Mutex::new(HashMap::new()),
        },
    )?;
    lp.call_method1(intern!(py, "add_reader"), (fd, &d))?;
    if lp.setattr(attr, &d).is_err() {
        // Python code (`is_closed`) runs without the lock held: it may let another thread
        // take the GIL, which may then wait for the lock.
        let mut others = std::mem::take(&mut *lock(&OTHER_LOOPS));
        others.retain(|(l, _)| {
            !l.bind(py)
                .call_method0("is_closed")
                .and_then(|c| c.is_truthy())
                .unwrap_or(true)
        });
        others.push((lp.clone().unbind(), d.clone().unbind()));
        lock(&OTHER_LOOPS).extend(others);
    }
    Ok((lp, d))
}

// ---- operations ----------------------------------------------------------------------------

/// What a step found.
pub enum Step {
    /// The operation is complete: its result.
    Done(Py<PyAny>),
    /// Not yet; the waker will be called.
    Wait,
}

/// The part of an operation's state that the handle's cell also holds (to tell whether the
/// operation is still there, and to wake it when the handle is closed).
#[derive(Clone)]
pub struct OpTicket {
    pub id: u64,
    /// Set when the awaitable is finished or gone: the handle may forget the operation.
    pub abandoned: Arc<AtomicBool>,
    pub waker: Waker,
}

impl OpTicket {
    pub fn is_live(&self) -> bool {
        !self.abandoned.load(Ordering::Acquire)
    }
}

/// An operation's id, and its waker and loop once a step first has to wait.
pub struct OpState {
    pub id: u64,
    abandoned: Arc<AtomicBool>,
    bound: Option<(Py<Driver>, Waker)>,
    /// The waker was called during the last poll.
    woken: bool,
}

impl OpState {
    fn new() -> OpState {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        OpState {
            // ORDERING: Relaxed: a unique number, nothing else.
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            abandoned: Arc::new(AtomicBool::new(false)),
            bound: None,
            woken: false,
        }
    }

    /// The ticket the handle keeps while this operation waits. Binds the operation to the
    /// running loop on first use (raises RuntimeError outside a running loop).
    pub fn ticket(&mut self, py: Python<'_>) -> PyResult<OpTicket> {
        let waker = match &self.bound {
            Some((_, w)) => w.clone(),
            None => {
                let (_, d) = running_driver(py)?;
                let waker = Waker::from(Arc::new(OpWaker {
                    queue: d.get().queue.clone(),
                    id: self.id,
                }));
                self.bound = Some((d.unbind(), waker.clone()));
                waker
            }
        };
        Ok(OpTicket {
            id: self.id,
            abandoned: self.abandoned.clone(),
            waker,
        })
    }

    /// Polls with this operation's waker (call `ticket` first), noting whether the waker was
    /// called during the poll: then the future asks to be polled again soon (a spin).
    pub fn poll<R>(&mut self, f: impl FnOnce(&mut Context<'_>) -> Poll<R>) -> Poll<R> {
        struct Reset;
        impl Drop for Reset {
            fn drop(&mut self) {
                POLLING.with(|p| p.set((0, false)));
            }
        }
        let Some((_, waker)) = &self.bound else {
            unreachable!("OpState::poll before OpState::ticket");
        };
        POLLING.with(|p| p.set((self.id, false)));
        let reset = Reset;
        let mut cx = Context::from_waker(waker);
        let r = f(&mut cx);
        self.woken = POLLING.with(|p| p.get().1);
        drop(reset);
        r
    }
}

enum Op {
    Recv {
        sub: Py<Subscriber>,
        /// `__anext__`: a closed subscriber ends the iteration instead of raising `Closed`.
        iterating: bool,
    },
    Send {
        publ: Py<Publisher>,
        /// The message, until the first step (which copies it only if it has to wait).
        data: Option<Py<PyAny>>,
    },
}

/// An asyncio awaitable: one receive or send, as returned by `Subscriber.recv_async()`,
/// `Subscriber.__anext__()` and `Publisher.send_async()`. Await it once. Each step runs in
/// the awaiting task; cancelling the task loses no message.
#[pyclass(module = "shmbus")]
pub struct Pending {
    op: Option<Op>,
    state: OpState,
    /// Whether the first step has run (see [`YIELD_EVERY`]).
    stepped: bool,
}

/// Operations that may complete in their first step, one after the other, before one of them
/// yields to the event loop first. An operation that completes at once never yields (no
/// future, no loop call: the point of the fast path), so a task receiving a stream that the
/// ring always has ready, or sending into a ring that always has room, would otherwise hold
/// the loop for ever: other tasks, timers and `asyncio.timeout` would never run. The yield
/// comes *before* the step, so a task cancelled there has consumed nothing.
const YIELD_EVERY: u32 = 64;

thread_local! {
    /// Operations completed in their first step on this thread (an event loop's) since one
    /// yielded to the loop or had to wait.
    static AT_ONCE: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

impl Pending {
    pub fn new_recv(sub: Py<Subscriber>, iterating: bool) -> Pending {
        Pending {
            op: Some(Op::Recv { sub, iterating }),
            state: OpState::new(),
            stepped: false,
        }
    }

    pub fn new_send(publ: Py<Publisher>, data: Py<PyAny>) -> Pending {
        Pending {
            op: Some(Op::Send {
                publ,
                data: Some(data),
            }),
            state: OpState::new(),
            stepped: false,
        }
    }

    /// Ends the operation: the handle forgets it (a receive's parking is taken back, a
    /// send's future dropped, nothing consumed), and its future is no longer resolved.
    fn finish(&mut self, py: Python<'_>) {
        self.state.abandoned.store(true, Ordering::Release);
        if let Some((d, _)) = &self.state.bound {
            d.get().forget(self.state.id);
        }
        match self.op.take() {
            Some(Op::Recv { sub, .. }) => subscriber::abandon_async(sub.bind(py), self.state.id),
            Some(Op::Send { publ, .. }) => publisher::abandon_async(publ.bind(py), self.state.id),
            None => {}
        }
    }

    /// One step: the result (raised as StopIteration), or what the task waits on.
    fn step(&mut self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        if self.op.is_some()
            && !std::mem::replace(&mut self.stepped, true)
            && AT_ONCE.get() >= YIELD_EVERY
        {
            AT_ONCE.set(0);
            // Let the loop run once (a bare yield: the task runs again on its next
            // iteration), before anything is taken from or put into the ring. Only under a
            // running asyncio loop: driven by hand (or by another framework), the step goes
            // on as always.
            if running_driver(py).is_ok() {
                return Ok(py.None());
            }
        }
        let r = match &mut self.op {
            None => {
                return Err(PyRuntimeError::new_err(
                    "this shmbus operation has finished (await it only once)",
                ))
            }
            Some(Op::Recv { sub, iterating }) => {
                match subscriber::recv_step(sub.bind(py), &mut self.state) {
                    Err(e) if *iterating && e.is_instance_of::<Closed>(py) => {
                        Err(PyStopAsyncIteration::new_err(()))
                    }
                    r => r,
                }
            }
            Some(Op::Send { publ, data }) => {
                publisher::send_step(publ.bind(py), &mut self.state, data)
            }
        };
        match r.and_then(|s| match s {
            Step::Done(v) => {
                AT_ONCE.set(AT_ONCE.get().saturating_add(1));
                Ok(Err(v))
            }
            Step::Wait => {
                // The loop runs before this task does again.
                AT_ONCE.set(0);
                self.park(py).map(Ok)
            }
        }) {
            Ok(Ok(wait_on)) => Ok(wait_on),
            Ok(Err(v)) => {
                self.finish(py);
                Err(PyStopIteration::new_err((v,)))
            }
            Err(e) => {
                self.finish(py);
                Err(e)
            }
        }
    }

    /// The step waits: a bare yield (None) if its waker was called during the poll, so the
    /// task runs again on the next loop iteration; else a future that the driver resolves
    /// when the waker is called.
    fn park(&mut self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        if std::mem::take(&mut self.state.woken) {
            return Ok(py.None());
        }
        let (lp, d) = running_driver(py)?;
        if !self
            .state
            .bound
            .as_ref()
            .is_some_and(|(b, _)| b.bind(py).is(&d))
        {
            return Err(PyRuntimeError::new_err(
                "a shmbus operation was awaited on two event loops",
            ));
        }
        let fut = lp.call_method0(intern!(py, "create_future"))?;
        fut.setattr(intern!(py, "_asyncio_future_blocking"), true)?;
        let old = lock(&d.get().waiting).insert(self.state.id, fut.clone().unbind());
        drop(old);
        Ok(fut.unbind())
    }
}

#[pymethods]
impl Pending {
    /// `await`: the operation itself is the iterator the task drives.
    fn __await__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// As `__await__` (a generator-based coroutine may `yield from` it).
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// One step: raises StopIteration with the result, or yields what the task waits on (a
    /// future of the running loop, or None to run again on the next loop iteration).
    fn __next__(&mut self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.step(py)
    }

    /// The coroutine protocol: resumes the operation (the value is ignored).
    fn send(&mut self, py: Python<'_>, _value: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        self.step(py)
    }

    /// The coroutine protocol: the task was cancelled (or another exception was thrown in)
    /// while it waited. Ends the operation, having consumed nothing, and raises the exception.
    #[pyo3(signature = (typ, val=None, _tb=None))]
    fn throw(
        &mut self,
        py: Python<'_>,
        typ: &Bound<'_, PyAny>,
        val: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        self.finish(py);
        let err = match val.filter(|v| !v.is_none()) {
            Some(v) if v.is_instance_of::<PyBaseException>() => PyErr::from_value(v.clone()),
            Some(v) => match typ.cast::<PyType>() {
                Ok(t) => PyErr::from_type(t.clone(), (v.clone().unbind(),)),
                Err(_) => PyErr::from_value(typ.clone()),
            },
            None => match typ.cast::<PyType>() {
                Ok(t) => PyErr::from_type(t.clone(), ()),
                Err(_) => PyErr::from_value(typ.clone()),
            },
        };
        Err(err)
    }

    /// The coroutine protocol: ends the operation without consuming anything.
    fn close(&mut self, py: Python<'_>) {
        self.finish(py);
    }

    /// `Pending[Message]` in annotations evaluated at run time, as the stub declares it
    /// (`Generic[_T]`).
    #[classmethod]
    fn __class_getitem__(cls: &Bound<'_, PyType>, item: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let py = cls.py();
        let alias = py
            .import(intern!(py, "types"))?
            .getattr(intern!(py, "GenericAlias"))?;
        Ok(alias.call1((cls, item))?.unbind())
    }

    /// Says whether the operation is a receive or a send, and whether it has finished.
    fn __repr__(&self) -> &'static str {
        match &self.op {
            Some(Op::Recv { .. }) => "<shmbus.Pending receive>",
            Some(Op::Send { .. }) => "<shmbus.Pending send>",
            None => "<shmbus.Pending finished>",
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.op.is_some() {
            Python::attach(|py| self.finish(py));
        }
    }
}
