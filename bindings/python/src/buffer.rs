//! The buffer protocol, both ways: reading the bytes of any object that exports a buffer
//! (`send`), and exporting a region of the ring (views and loans).

use std::ffi::c_int;
use std::mem::MaybeUninit;

use pyo3::exceptions::PyBufferError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// A buffer obtained with `PyObject_GetBuffer`, released on drop (with the GIL held: it is
/// only made and dropped in code that holds a `Python` token).
///
/// While it lives the exporter keeps the memory where it is: `bytes` are immutable, a
/// `bytearray` refuses to resize while exported (`BufferError`), a numpy array keeps its
/// data, an `mmap` refuses to close. Its bytes may still be *written* by another Python
/// thread meanwhile (a `bytearray` item assignment), which is why `send` copies with the
/// GIL held for small messages (nothing else runs) and documents that a large message
/// mutated by another thread while it is sent arrives torn. The memory itself stays valid,
/// so reading it without the GIL is sound (the same rule `hashlib` and `io` follow).
struct Held {
    view: Box<MaybeUninit<ffi::Py_buffer>>,
}

impl Held {
    fn get(obj: &Bound<'_, PyAny>) -> PyResult<Held> {
        let mut view = Box::new(MaybeUninit::<ffi::Py_buffer>::uninit());
        // SAFETY: `obj` is a live object (we hold the GIL through the `Bound`), `view` points
        // to writable memory for one `Py_buffer` that stays at this address (boxed) until
        // `PyBuffer_Release` in drop. PyBUF_SIMPLE asks for one contiguous run of bytes;
        // an exporter that cannot give that (a non-contiguous numpy array) fails here.
        let rc =
            unsafe { ffi::PyObject_GetBuffer(obj.as_ptr(), view.as_mut_ptr(), ffi::PyBUF_SIMPLE) };
        if rc != 0 {
            return Err(PyErr::fetch(obj.py()));
        }
        Ok(Held { view })
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `PyObject_GetBuffer` succeeded, so the view is initialised; with
        // PyBUF_SIMPLE `buf` points to `len` contiguous bytes that stay valid until the view
        // is released (in our drop, after every borrow of `self` ended).
        unsafe {
            let v = &*self.view.as_ptr();
            if v.len <= 0 || v.buf.is_null() {
                return &[];
            }
            std::slice::from_raw_parts(v.buf as *const u8, v.len as usize)
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // SAFETY: the view was filled by a successful `PyObject_GetBuffer` and is released
        // exactly once. Every `Held` is dropped by code that holds the GIL (they never leave
        // the call that made them, and that call holds a `Python` token around them).
        unsafe { ffi::PyBuffer_Release(self.view.as_mut_ptr()) };
    }
}

/// Calls `f` with the bytes of `obj`: `bytes` directly, anything else through the buffer
/// protocol (bytearray, memoryview, array.array, a C-contiguous numpy array, mmap, ...).
/// No copy is made; the buffer is released when `f` returns.
pub fn with_bytes<R>(obj: &Bound<'_, PyAny>, f: impl FnOnce(&[u8]) -> R) -> PyResult<R> {
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(f(b.as_bytes()));
    }
    let held = Held::get(obj)?;
    Ok(f(held.bytes()))
}

/// Fills `view` for an export of `len` bytes at `ptr` owned by `owner` (a view or loan
/// object), refusing a writable request on read-only memory.
///
/// # Safety
///
/// `view` is the pointer the interpreter passed to `__getbuffer__`; `ptr..ptr+len` stays
/// valid (and, when `readonly` is false, writable) until the matching `__releasebuffer__`.
pub unsafe fn fill(
    view: *mut ffi::Py_buffer,
    owner: &Bound<'_, PyAny>,
    ptr: *mut u8,
    len: usize,
    readonly: bool,
    flags: c_int,
) -> PyResult<()> {
    if view.is_null() {
        return Err(PyBufferError::new_err("null Py_buffer"));
    }
    // SAFETY: per the contract above; `PyBuffer_FillInfo` takes a new reference to `owner`
    // (stored in `view.obj`, released by the interpreter with the view), checks the
    // PyBUF_WRITABLE request against `readonly`, and fills shape and strides from fields of
    // `view` itself.
    let rc = unsafe {
        ffi::PyBuffer_FillInfo(
            view,
            owner.as_ptr(),
            ptr.cast(),
            len as ffi::Py_ssize_t,
            c_int::from(readonly),
            flags,
        )
    };
    if rc != 0 {
        return Err(PyErr::fetch(owner.py()));
    }
    Ok(())
}
