//! Python bindings of shmbus: the extension module `shmbus._shmbus`, re-exported by the
//! package `shmbus` (python/shmbus/__init__.py).
//!
//! Thin by design (STYLE.md 19): every class wraps one bus-core handle, every error kind of
//! the Rust API has its exception class (errors.rs), every wait releases the GIL in slices of
//! at most 20 ms and looks at Python's signals between them (so Ctrl-C interrupts a blocked
//! `recv` or `send`), and bytes move through the buffer protocol both ways (buffer.rs,
//! region.rs). asyncio: `recv_async`, `send_async` and `async for` drive bus-core's async
//! handles from the event loop without a thread per call (aio.rs). A Rust panic reaches
//! Python as pyo3's `PanicException`, never as an abort: the crate is built with
//! `panic = "unwind"` (the default).

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod aio;
mod buffer;
mod bus;
mod closing;
mod errors;
mod publisher;
mod region;
mod subscriber;

use pyo3::prelude::*;

/// The directory that holds named buses: $SHMBUS_DIR, else /dev/shm/shmbus.
#[pyfunction]
fn default_dir() -> std::path::PathBuf {
    bus_core::default_dir()
}

/// Resolves a bus name or path: a string with a slash is a path used as given; a bare name
/// NAME is default_dir()/NAME.bus.
#[pyfunction]
fn resolve(name_or_path: &str) -> PyResult<std::path::PathBuf> {
    bus::path_arg(bus_core::resolve(name_or_path))
}

#[pymodule]
fn _shmbus(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<bus::Bus>()?;
    m.add_class::<publisher::Publisher>()?;
    m.add_class::<publisher::Loan>()?;
    m.add_class::<subscriber::Subscriber>()?;
    m.add_class::<subscriber::Message>()?;
    m.add_class::<subscriber::View>()?;
    m.add_class::<aio::Pending>()?;
    m.add_class::<aio::Driver>()?;
    errors::register(m)?;
    m.add_function(wrap_pyfunction!(default_dir, m)?)?;
    m.add_function(wrap_pyfunction!(resolve, m)?)?;
    m.add("DEFAULT_CAPACITY", bus_core::DEFAULT_CAPACITY)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
