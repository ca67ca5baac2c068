//! A region of memory lent to Python as a buffer for the length of a `with` block: the bytes
//! of a received message (`Subscriber.recv_view`) or of a loan (`Publisher.loan`).
//!
//! Python cannot be trusted to stop using a pointer, so the region is exported through an
//! object that counts its exports, and the memory stays pinned (the subscriber does not move
//! past the record, the loan is neither committed nor abandoned) until the last export is
//! gone:
//!
//! * `__enter__` exports one `memoryview`; `__exit__` calls its `release()`, so the name
//!   bound by `with ... as view` raises `ValueError` when used after the block (CPython's
//!   released-memoryview check: it never touches the memory again).
//! * A slice of that memoryview, or a numpy array made from it, is a further export of the
//!   region (CPython's managed buffer keeps our export until the last of them is released).
//!   If any is still alive at the block's exit, the exit raises `BufferError` and the region
//!   stays pinned (the handle answers `Busy`) until they are gone; then the view is dropped,
//!   or the loan abandoned. The memory they point to is never unmapped or reused meanwhile.
//! * After the exit, new exports are refused (`BufferError`).
//!
//! Stages: `Open` (exports allowed) → `Draining` (exited, exports remain) → `Done`.

use std::ffi::c_int;
use std::sync::Mutex;

use pyo3::exceptions::PyBufferError;
use pyo3::ffi;
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::types::PyMemoryView;
use pyo3::PyTraverseError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Pinned; exports allowed.
    Open,
    /// The block exited while exports remained; the pin ends with the last of them.
    Draining,
    /// The pin has ended (or is being ended by the caller of the transition).
    Done,
}

struct State {
    stage: Stage,
    exports: usize,
    /// The memoryview `__enter__` handed out, released by `__exit__`.
    entered: Option<Py<PyAny>>,
}

/// What `exit` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// No export left: the caller ends the pin now (the stage is `Done`).
    Free,
    /// Exports remain: the stage is `Draining`, and the pin ends with the last release.
    Exported(usize),
    /// The block was exited before.
    Again,
}

/// The lent bytes and their export count.
pub struct Region {
    ptr: *mut u8,
    len: usize,
    readonly: bool,
    state: Mutex<State>,
}

// SAFETY: `ptr` is only dereferenced by Python consumers of the exported buffer, under the
// rules of the buffer protocol; the region itself only hands the pointer out, with its state
// behind a mutex. The owner of the memory (a Subscriber or Publisher cell) keeps it valid
// while the region is not `Done` (module doc).
unsafe impl Send for Region {}
// SAFETY: as for Send: every mutable field is behind the mutex.
unsafe impl Sync for Region {}

impl Region {
    /// A region of `len` bytes at `ptr`, valid (and, unless `readonly`, writable) until the
    /// owner is told the pin ended.
    pub fn new(ptr: *mut u8, len: usize, readonly: bool) -> Region {
        Region {
            ptr,
            len,
            readonly,
            state: Mutex::new(State {
                stage: Stage::Open,
                exports: 0,
                entered: None,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // No code panics while holding the lock; should it, the counts are still whole.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn stage(&self) -> Stage {
        self.state().stage
    }

    /// `__getbuffer__`: one more export, while open.
    ///
    /// # Safety
    ///
    /// `view` and `flags` are what the interpreter passed to `__getbuffer__`, and `owner` is
    /// the object whose slot it called (it keeps the region alive through `view.obj`).
    pub unsafe fn get_buffer(
        &self,
        owner: &Bound<'_, PyAny>,
        view: *mut ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        let mut s = self.state();
        if s.stage != Stage::Open {
            return Err(PyBufferError::new_err(
                "the view or loan has been released (its `with` block ended)",
            ));
        }
        // SAFETY: the stage is `Open`, so the owner keeps the bytes valid (and writable when
        // not readonly) until the export count drops back (module doc); `fill` takes a
        // reference to `owner` for `view.obj`, so `release_buffer` runs before the region
        // can be dropped.
        unsafe { crate::buffer::fill(view, owner, self.ptr, self.len, self.readonly, flags)? };
        s.exports += 1;
        Ok(())
    }

    /// `__releasebuffer__`: one export less. True if that was the last export of a region
    /// whose block has exited: the caller ends the pin (the stage is now `Done`).
    pub fn release_buffer(&self) -> bool {
        let mut s = self.state();
        s.exports = s.exports.saturating_sub(1);
        if s.exports == 0 && s.stage == Stage::Draining {
            s.stage = Stage::Done;
            return true;
        }
        false
    }

    /// `__enter__`: a memoryview of the region (read-only or writable as the region is).
    pub fn enter<'py>(&self, owner: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        // Not under the state lock: making the memoryview calls `get_buffer`.
        let mv = PyMemoryView::from(owner)?.into_any();
        let old = self.state().entered.replace(mv.clone().unbind());
        // Entering twice: release the first memoryview as an exit would.
        if let Some(old) = old {
            let _ = old.bind(owner.py()).call_method0("release");
        }
        Ok(mv)
    }

    /// `__exit__`: releases the memoryview of `enter`, then ends the pin or leaves it to the
    /// last export.
    pub fn exit(&self, py: Python<'_>) -> Exit {
        let entered = {
            let mut s = self.state();
            if s.stage != Stage::Open {
                return Exit::Again;
            }
            s.entered.take()
        };
        if let Some(mv) = entered {
            // Fails with BufferError only if the memoryview itself is exported (an object
            // holds a buffer of it): that export holds ours, and is counted below.
            let _ = mv.bind(py).call_method0("release");
            drop(mv);
        }
        let mut s = self.state();
        if s.stage != Stage::Open {
            return Exit::Again;
        }
        if s.exports == 0 {
            s.stage = Stage::Done;
            Exit::Free
        } else {
            s.stage = Stage::Draining;
            Exit::Exported(s.exports)
        }
    }

    /// Drop of the owner: no export can exist (each holds a reference to the owner). True if
    /// the pin was still on and the caller must end it.
    pub fn finish_on_drop(&self) -> bool {
        let mut s = self.state();
        let was = s.stage;
        s.stage = Stage::Done;
        was != Stage::Done
    }

    /// `__traverse__`: the memoryview of `enter` refers back to the owner (a cycle).
    pub fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        // try_lock: the collector may run while this thread holds the lock; not visiting
        // then only keeps the objects alive a collection longer.
        if let Ok(s) = self.state.try_lock() {
            if let Some(mv) = &s.entered {
                visit.call(mv)?;
            }
        }
        Ok(())
    }

    /// `__clear__`: breaks the cycle.
    pub fn clear(&self) -> Option<Py<PyAny>> {
        self.state
            .try_lock()
            .ok()
            .and_then(|mut s| s.entered.take())
    }
}
