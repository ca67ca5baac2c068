//! `shmbus.Bus`: create, open, and make publishers and subscribers.

use std::path::PathBuf;
use std::time::Duration;

use bus_core::{BusOptions, Mode, OpenOptions, Start, WaitStrategy};
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use crate::errors::{join_err, lock_err, open_err, subscribe_err};
use crate::publisher::Publisher;
use crate::subscriber::Subscriber;

/// A timeout argument in seconds: `None` waits forever (as does `math.inf`).
pub fn timeout_arg(timeout: Option<f64>) -> PyResult<Option<Duration>> {
    match timeout {
        None => Ok(None),
        Some(t) if t.is_nan() || t < 0.0 => Err(PyValueError::new_err(
            "timeout must be a non-negative number of seconds or None",
        )),
        Some(t) if t.is_infinite() || t >= u64::MAX as f64 => Ok(None),
        Some(t) => Ok(Some(Duration::from_secs_f64(t))),
    }
}

fn mode_arg(mode: &str) -> PyResult<Mode> {
    match mode {
        "reliable" => Ok(Mode::Reliable),
        "lossy" => Ok(Mode::Lossy),
        _ => Err(PyValueError::new_err(format!(
            "mode must be \"reliable\" or \"lossy\", not {mode:?}"
        ))),
    }
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Reliable => "reliable",
        Mode::Lossy => "lossy",
    }
}

fn start_arg(start: &Bound<'_, PyAny>) -> PyResult<Start> {
    if let Ok(s) = start.cast::<PyString>() {
        return match s.to_str()? {
            "latest" => Ok(Start::Latest),
            "oldest" => Ok(Start::Oldest),
            other => Err(PyValueError::new_err(format!(
                "start must be \"latest\", \"oldest\" or a position (int), not {other:?}"
            ))),
        };
    }
    if start.is_instance_of::<pyo3::types::PyBool>() {
        return Err(PyTypeError::new_err(
            "start must be a str or an int, not bool",
        ));
    }
    if let Ok(p) = start.extract::<u64>() {
        return Ok(Start::Position(p));
    }
    // An int of the wrong value (negative, or past 2^64) is a ValueError; anything else
    // (a float, None) a TypeError.
    if start.is_instance_of::<pyo3::types::PyInt>() {
        return Err(PyValueError::new_err(format!(
            "start position must be between 0 and 2^64 - 1, not {start}"
        )));
    }
    Err(PyTypeError::new_err(
        "start must be \"latest\", \"oldest\" or a position (a non-negative int)",
    ))
}

fn wait_arg(wait: &str) -> PyResult<WaitStrategy> {
    match wait {
        "spin_then_block" => Ok(WaitStrategy::SpinThenBlock),
        "spin" => Ok(WaitStrategy::Spin),
        "block" => Ok(WaitStrategy::Block),
        _ => Err(PyValueError::new_err(format!(
            "wait must be \"spin_then_block\", \"spin\" or \"block\", not {wait:?}"
        ))),
    }
}

#[allow(clippy::too_many_arguments)]
fn options(
    capacity: u64,
    mode: &str,
    max_message: Option<u32>,
    max_subscribers: u32,
    max_producers: u32,
    file_mode: u32,
    sparse: bool,
    unblock_timeout: Option<f64>,
) -> PyResult<BusOptions> {
    let mut o = BusOptions::new()
        .capacity(capacity)
        .mode(mode_arg(mode)?)
        .max_subscribers(max_subscribers)
        .max_producers(max_producers)
        .file_mode(file_mode)
        .sparse(sparse);
    if let Some(m) = max_message {
        o = o.max_message(m);
    }
    if let Some(t) = unblock_timeout {
        let t = timeout_arg(Some(t))?
            .ok_or_else(|| PyValueError::new_err("unblock_timeout must be finite"))?;
        o = o.unblock_timeout(t);
    }
    Ok(o)
}

/// An open bus: the mapped file. Publishers and subscribers made from it keep it mapped.
///
/// Make one with `Bus.create`, `Bus.open` or `Bus.open_or_create`. A bus object may be
/// shared between threads; its publishers and subscribers are used by one thread at a time.
#[pyclass(module = "shmbus", frozen)]
pub struct Bus {
    inner: bus_core::Bus,
}

/// A path as the system takes it: a NUL byte inside would end it early (Python's own `os`
/// functions say "embedded null byte" too).
pub(crate) fn path_arg(path: PathBuf) -> PyResult<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    if path.as_os_str().as_bytes().contains(&0) {
        return Err(PyValueError::new_err(format!(
            "embedded null byte in the path {path:?}"
        )));
    }
    Ok(path)
}

#[pymethods]
impl Bus {
    /// Creates a new bus file at `path` (its directory must exist). Fails with `OpenError`
    /// (kind "already_exists") if anything is there.
    #[staticmethod]
    #[pyo3(signature = (path, *, capacity=bus_core::DEFAULT_CAPACITY, mode="reliable",
        max_message=None, max_subscribers=64, max_producers=64, file_mode=0o600, sparse=false,
        unblock_timeout=None))]
    #[allow(clippy::too_many_arguments)]
    fn create(
        py: Python<'_>,
        path: PathBuf,
        capacity: u64,
        mode: &str,
        max_message: Option<u32>,
        max_subscribers: u32,
        max_producers: u32,
        file_mode: u32,
        sparse: bool,
        unblock_timeout: Option<f64>,
    ) -> PyResult<Bus> {
        let o = options(
            capacity,
            mode,
            max_message,
            max_subscribers,
            max_producers,
            file_mode,
            sparse,
            unblock_timeout,
        )?;
        let path = path_arg(path)?;
        py.detach(|| bus_core::Bus::create(&path, &o))
            .map(|inner| Bus { inner })
            .map_err(|e| open_err(py, &e))
    }

    /// Opens an existing bus. Symbolic links and files of other users are refused unless
    /// asked for.
    #[staticmethod]
    #[pyo3(signature = (path, *, follow_symlinks=false, allow_other_owner=false))]
    fn open(
        py: Python<'_>,
        path: PathBuf,
        follow_symlinks: bool,
        allow_other_owner: bool,
    ) -> PyResult<Bus> {
        let o = OpenOptions::new()
            .follow_symlinks(follow_symlinks)
            .allow_other_owner(allow_other_owner);
        let path = path_arg(path)?;
        py.detach(|| bus_core::Bus::open_with(&path, &o))
            .map(|inner| Bus { inner })
            .map_err(|e| open_err(py, &e))
    }

    /// Opens the bus at `path`, creating it with these parameters if there is none (an
    /// existing bus keeps its own). Safe against concurrent callers.
    #[staticmethod]
    #[pyo3(signature = (path, *, capacity=bus_core::DEFAULT_CAPACITY, mode="reliable",
        max_message=None, max_subscribers=64, max_producers=64, file_mode=0o600, sparse=false,
        unblock_timeout=None))]
    #[allow(clippy::too_many_arguments)]
    fn open_or_create(
        py: Python<'_>,
        path: PathBuf,
        capacity: u64,
        mode: &str,
        max_message: Option<u32>,
        max_subscribers: u32,
        max_producers: u32,
        file_mode: u32,
        sparse: bool,
        unblock_timeout: Option<f64>,
    ) -> PyResult<Bus> {
        let o = options(
            capacity,
            mode,
            max_message,
            max_subscribers,
            max_producers,
            file_mode,
            sparse,
            unblock_timeout,
        )?;
        let path = path_arg(path)?;
        py.detach(|| bus_core::Bus::open_or_create(&path, &o))
            .map(|inner| Bus { inner })
            .map_err(|e| open_err(py, &e))
    }

    /// A new publisher (holds a producer slot until closed or collected).
    fn publisher(&self, py: Python<'_>) -> PyResult<Publisher> {
        let bus = self.inner.clone();
        py.detach(move || bus.publisher())
            .map(Publisher::new)
            .map_err(|e| join_err(py, e))
    }

    /// A new subscriber starting at `start`: "latest" (only new messages, the default),
    /// "oldest" (the oldest message still in the ring) or a position saved from
    /// `Subscriber.position`. `wait` chooses how blocking calls wait: "spin_then_block"
    /// (default), "spin" (busy-poll: lowest latency, one core) or "block".
    #[pyo3(signature = (start=None, *, wait="spin_then_block"))]
    fn subscribe(
        &self,
        py: Python<'_>,
        start: Option<&Bound<'_, PyAny>>,
        wait: &str,
    ) -> PyResult<Subscriber> {
        let start = match start {
            None => Start::Latest,
            Some(s) => start_arg(s)?,
        };
        let strategy = wait_arg(wait)?;
        let bus = self.inner.clone();
        let mut sub = if let Start::Position(_) = start {
            // A position a producer is still writing makes the core wait (up to twice the
            // bus's unblock timeout, which may be an hour): on a thread of its own, so that
            // this one answers Ctrl-C every `SLICE` as the other blocking calls do. If
            // interrupted, the thread's subscriber, when it comes, is dropped (its slot
            // freed).
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::Builder::new()
                .name("shmbus-subscribe".into())
                .spawn(move || {
                    let _ = tx.send(bus.subscribe(start));
                })
                .map_err(|e| PyOSError::new_err(format!("cannot start a thread: {e}")))?;
            let mut rx = rx;
            loop {
                // (The receiver goes to the detached closure and back: it is not `Sync`.)
                let (back, got) = py.detach(move || {
                    let got = rx.recv_timeout(crate::publisher::SLICE);
                    (rx, got)
                });
                rx = back;
                match got {
                    Ok(r) => break r,
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => py.check_signals()?,
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                        return Err(PyRuntimeError::new_err("the subscribing thread failed"))
                    }
                }
            }
        } else {
            py.detach(move || bus.subscribe(start))
        }
        .map_err(|e| subscribe_err(py, e))?;
        sub.set_wait_strategy(strategy);
        Ok(Subscriber::new(sub))
    }

    /// The path the bus was opened with.
    #[getter]
    fn path(&self) -> PathBuf {
        self.inner.path().to_path_buf()
    }

    /// "reliable" or "lossy".
    #[getter]
    fn mode(&self) -> &'static str {
        mode_name(self.inner.mode())
    }

    /// Bytes of the ring.
    #[getter]
    fn capacity(&self) -> u64 {
        self.inner.config().capacity
    }

    /// The largest message the bus takes.
    #[getter]
    fn max_message(&self) -> u32 {
        self.inner.config().max_message
    }

    /// Subscriber slots.
    #[getter]
    fn max_subscribers(&self) -> u32 {
        self.inner.config().max_subscribers
    }

    /// Producer slots.
    #[getter]
    fn max_producers(&self) -> u32 {
        self.inner.config().max_producers
    }

    /// msync: on a disk file, everything published so far becomes durable.
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        // pyo3's conversion keeps the errno (`OSError.errno`) and picks the subclass.
        py.detach(|| self.inner.flush()).map_err(PyErr::from)
    }

    /// Frees the slots of participants whose processes died; returns how many.
    fn evict_dead(&self, py: Python<'_>) -> PyResult<usize> {
        py.detach(|| self.inner.evict_dead())
            .map_err(|e| lock_err(py, e))
    }

    /// A snapshot of the bus state (what `shmbus stat` shows), as a dict.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.inner.stats();
        let d = PyDict::new(py);
        d.set_item("mode", mode_name(s.config.mode))?;
        d.set_item("capacity", s.config.capacity)?;
        d.set_item("max_message", s.config.max_message)?;
        d.set_item("tail_position", s.tail_position)?;
        d.set_item("tail_seq", s.tail_seq)?;
        d.set_item("head_position", s.head_position)?;
        d.set_item("head_seq", s.head_seq)?;
        d.set_item("unblocked", s.unblocked)?;
        d.set_item("evicted", s.evicted)?;
        let subs = s
            .subscribers
            .iter()
            .map(|x| {
                let e = PyDict::new(py);
                e.set_item("index", x.index)?;
                e.set_item("pid", x.pid)?;
                e.set_item("alive", x.alive)?;
                e.set_item("position", x.position)?;
                e.set_item("seq", x.seq)?;
                e.set_item("lag_messages", x.lag_messages)?;
                e.set_item("delivered", x.delivered)?;
                e.set_item("lost", x.lost)?;
                Ok(e)
            })
            .collect::<PyResult<Vec<_>>>()?;
        d.set_item("subscribers", subs)?;
        let prods = s
            .producers
            .iter()
            .map(|x| {
                let e = PyDict::new(py);
                e.set_item("index", x.index)?;
                e.set_item("pid", x.pid)?;
                e.set_item("alive", x.alive)?;
                e.set_item("sent", x.sent)?;
                e.set_item("abandoned", x.abandoned)?;
                Ok(e)
            })
            .collect::<PyResult<Vec<_>>>()?;
        d.set_item("producers", prods)?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        format!(
            "shmbus.Bus({:?}, mode={:?}, capacity={})",
            self.inner.path().display().to_string(),
            mode_name(self.inner.mode()),
            self.inner.config().capacity
        )
    }
}
