//! `shmbus_bus`: creating and opening a bus file.

use std::ffi::{c_char, CStr, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

use bus_core::{Bus, BusOptions, Mode};

use crate::error::{ffi, ffi_void, required, shmbus_status, Failure, Outcome};

/// An open bus: the mapped file. Made by `shmbus_bus_create`, `shmbus_bus_open` or
/// `shmbus_bus_open_or_create`; released by `shmbus_bus_free`.
///
/// Thread rules: a `shmbus_bus` may be used from several threads at once (its functions
/// take it as `const`). Publishers and subscribers made from it keep the mapping alive, so
/// the bus may be freed before them.
pub struct shmbus_bus {
    pub(crate) bus: Bus,
}

/// The delivery mode of a bus, for `shmbus_options.mode` and `shmbus_bus_info.mode`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum shmbus_mode {
    /// Producers never overwrite a message a live subscriber has not read: a full ring
    /// makes `send` wait (or `try_send` return `SHMBUS_FULL`).
    SHMBUS_MODE_RELIABLE = 1,
    /// Producers never wait: a subscriber a whole ring behind is lapped, skips to the
    /// oldest retained message and gets `SHMBUS_LOST` with the exact count.
    SHMBUS_MODE_LOSSY = 2,
}

/// Parameters of a new bus. Fill it with `shmbus_options_init` (the defaults), then change
/// what you need. Only `create` and `open_or_create` (when it creates) read it.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct shmbus_options {
    /// Bytes of the ring: a power of two from 4 KiB to 1 TiB (default 64 MiB).
    pub capacity: u64,
    /// Largest message in bytes; 0 for the default (capacity / 8, at most 16 MiB).
    pub max_message: u32,
    /// A `shmbus_mode` value (default `SHMBUS_MODE_RELIABLE`).
    pub mode: u32,
    /// Subscriber slots (default 64).
    pub max_subscribers: u32,
    /// Producer slots (default 64); 1 makes a faster one-producer bus.
    pub max_producers: u32,
    /// Permission bits of the file (default 0600; the umask applies); at most 0777, or
    /// creating the bus fails with `SHMBUS_INVALID_OPTIONS`.
    pub file_mode: u32,
    /// Nonzero: leave the file sparse instead of reserving its blocks (default 0).
    pub sparse: u32,
    /// How long a record may stay claimed by a dead producer before readers turn it into
    /// padding, in nanoseconds; 0 for the default (200 ms).
    pub unblock_timeout_ns: u64,
}

/// The parameters of an open bus, from `shmbus_bus_get_info`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct shmbus_bus_info {
    /// Bytes of the ring.
    pub capacity: u64,
    /// Largest message in bytes.
    pub max_message: u32,
    /// A `shmbus_mode` value.
    pub mode: u32,
    /// Subscriber slots.
    pub max_subscribers: u32,
    /// Producer slots.
    pub max_producers: u32,
}

fn mode_raw(mode: Mode) -> u32 {
    match mode {
        Mode::Reliable => shmbus_mode::SHMBUS_MODE_RELIABLE as u32,
        Mode::Lossy => shmbus_mode::SHMBUS_MODE_LOSSY as u32,
    }
}

fn defaults() -> shmbus_options {
    shmbus_options {
        capacity: bus_core::DEFAULT_CAPACITY,
        max_message: 0,
        mode: shmbus_mode::SHMBUS_MODE_RELIABLE as u32,
        max_subscribers: 64,
        max_producers: 64,
        file_mode: 0o600,
        sparse: 0,
        unblock_timeout_ns: 0,
    }
}

impl shmbus_options {
    fn to_rust(self) -> Result<BusOptions, Failure> {
        let mode = match self.mode {
            m if m == shmbus_mode::SHMBUS_MODE_RELIABLE as u32 => Mode::Reliable,
            m if m == shmbus_mode::SHMBUS_MODE_LOSSY as u32 => Mode::Lossy,
            m => {
                return Err(Failure::invalid(format!(
                    "unknown mode {m} (1 reliable, 2 lossy)"
                )))
            }
        };
        let mut o = BusOptions::new()
            .capacity(self.capacity)
            .mode(mode)
            .max_subscribers(self.max_subscribers)
            .max_producers(self.max_producers)
            .file_mode(self.file_mode)
            .sparse(self.sparse != 0);
        if self.max_message != 0 {
            o = o.max_message(self.max_message);
        }
        if self.unblock_timeout_ns != 0 {
            o = o.unblock_timeout(Duration::from_nanos(self.unblock_timeout_ns));
        }
        Ok(o)
    }
}

/// The path a C string names: any bytes but NUL (Linux paths need not be UTF-8).
///
/// # Safety
///
/// `path` is NULL or a NUL-terminated string.
unsafe fn c_path<'a>(path: *const c_char) -> Result<&'a Path, Failure> {
    required(path, "path")?;
    // SAFETY: not NULL (checked), and NUL-terminated by the caller's contract.
    let bytes = unsafe { CStr::from_ptr(path) }.to_bytes();
    if bytes.is_empty() {
        return Err(Failure::invalid("path is empty"));
    }
    Ok(Path::new(OsStr::from_bytes(bytes)))
}

/// The options a C caller passed (NULL for the defaults).
///
/// # Safety
///
/// `options` is NULL or points to a `shmbus_options`.
unsafe fn c_options(options: *const shmbus_options) -> Result<BusOptions, Failure> {
    // SAFETY: NULL or a valid `shmbus_options` by the caller's contract; copied out.
    let o = unsafe { options.as_ref() }
        .copied()
        .unwrap_or_else(defaults);
    o.to_rust()
}

/// Stores a new bus handle in `*out` (which the caller checked is not NULL).
///
/// # Safety
///
/// `out` is valid for a write.
unsafe fn give_bus(out: *mut *mut shmbus_bus, made: Result<Bus, bus_core::OpenError>) -> Outcome {
    let bus = made?;
    let handle = Box::into_raw(Box::new(shmbus_bus { bus }));
    // SAFETY: `out` is valid for a write (caller's contract).
    unsafe { out.write(handle) };
    Ok(())
}

/// Checks `out` and clears `*out`, so that it is NULL on every failure.
///
/// # Safety
///
/// `out` is NULL or valid for a write.
pub(crate) unsafe fn clear_out<T>(out: *mut *mut T) -> Outcome {
    required(out, "out")?;
    // SAFETY: not NULL (checked) and valid for a write (caller's contract).
    unsafe { out.write(std::ptr::null_mut()) };
    Ok(())
}

/// Fills `*options` with the defaults: 64 MiB, reliable, max message capacity/8, 64
/// subscribers, 64 producers, mode 0600, blocks reserved, unblock timeout 200 ms.
///
/// Returns `SHMBUS_INVALID_ARGUMENT` if `options` is NULL.
///
/// # Safety
///
/// `options` is NULL or valid for a write of a `shmbus_options`.
#[no_mangle]
pub unsafe extern "C" fn shmbus_options_init(options: *mut shmbus_options) -> shmbus_status {
    ffi(|| {
        required(options, "options")?;
        // SAFETY: not NULL, and valid for a write (caller's contract).
        unsafe { options.write(defaults()) };
        Ok(())
    })
}

/// Creates a new bus file at `path` (its directory must exist) and opens it. If two
/// processes create the same path at once, exactly one succeeds; the other gets
/// `SHMBUS_ALREADY_EXISTS`.
///
/// `options` may be NULL for the defaults. On success `*out` is a new handle to free with
/// `shmbus_bus_free`; on failure `*out` is NULL.
///
/// Errors: `SHMBUS_ALREADY_EXISTS`, `SHMBUS_INVALID_OPTIONS`, `SHMBUS_DIRECTORY_NOT_FOUND`,
/// `SHMBUS_PERMISSION_DENIED`, `SHMBUS_NO_SPACE`, `SHMBUS_INVALID_ARGUMENT` (NULL `path` or
/// `out`, empty path, unknown mode), `SHMBUS_IO`.
///
/// # Safety
///
/// `path` is a NUL-terminated string; `options` is NULL or points to a `shmbus_options`;
/// `out` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn shmbus_bus_create(
    path: *const c_char,
    options: *const shmbus_options,
    out: *mut *mut shmbus_bus,
) -> shmbus_status {
    ffi(|| {
        // SAFETY: the caller's contract, passed on.
        unsafe {
            clear_out(out)?;
            let path = c_path(path)?;
            let options = c_options(options)?;
            give_bus(out, Bus::create(path, &options))
        }
    })
}

/// Opens an existing bus file at `path`. Symbolic links and files of other users are
/// refused.
///
/// On success `*out` is a new handle to free with `shmbus_bus_free`; on failure `*out` is
/// NULL.
///
/// Errors: `SHMBUS_NOT_FOUND`, `SHMBUS_NOT_A_BUS` (any file that is not a bus),
/// `SHMBUS_UNSUPPORTED_VERSION`, `SHMBUS_BAD_HEADER`, `SHMBUS_RING_CORRUPT`,
/// `SHMBUS_SYMBOLIC_LINK`, `SHMBUS_NOT_A_REGULAR_FILE`, `SHMBUS_OWNED_BY_OTHER_USER`,
/// `SHMBUS_PERMISSION_DENIED`, `SHMBUS_UNSUPPORTED_CPU`, `SHMBUS_INVALID_ARGUMENT`,
/// `SHMBUS_IO`.
///
/// # Safety
///
/// `path` is a NUL-terminated string; `out` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn shmbus_bus_open(
    path: *const c_char,
    out: *mut *mut shmbus_bus,
) -> shmbus_status {
    // SAFETY: the caller's contract, passed on (the same as `shmbus_bus_open_with`'s).
    unsafe { shmbus_bus_open_with(path, 0, out) }
}

/// `shmbus_bus_open_with` flag: open a bus through a symbolic link (refused by default, so
/// that a link planted in a shared directory cannot redirect a process to another file).
pub const SHMBUS_OPEN_FOLLOW_SYMLINKS: u32 = 1;
/// `shmbus_bus_open_with` flag: open a bus file owned by another user (refused by default;
/// for a bus shared on purpose, created with a wider `file_mode`).
pub const SHMBUS_OPEN_ALLOW_OTHER_OWNER: u32 = 2;

/// `shmbus_bus_open` with `flags`: 0, or `SHMBUS_OPEN_FOLLOW_SYMLINKS` and
/// `SHMBUS_OPEN_ALLOW_OTHER_OWNER` or'ed together.
///
/// On success `*out` is a new handle to free with `shmbus_bus_free`; on failure `*out` is
/// NULL.
///
/// Errors: those of `shmbus_bus_open`; `SHMBUS_INVALID_ARGUMENT` for a flag this library does
/// not know.
///
/// # Safety
///
/// As `shmbus_bus_open`.
#[no_mangle]
pub unsafe extern "C" fn shmbus_bus_open_with(
    path: *const c_char,
    flags: u32,
    out: *mut *mut shmbus_bus,
) -> shmbus_status {
    ffi(|| {
        // SAFETY: the caller's contract, passed on.
        unsafe {
            clear_out(out)?;
            let path = c_path(path)?;
            let known = SHMBUS_OPEN_FOLLOW_SYMLINKS | SHMBUS_OPEN_ALLOW_OTHER_OWNER;
            if flags & !known != 0 {
                return Err(Failure::invalid(format!(
                    "unknown open flags {:#x}",
                    flags & !known
                )));
            }
            let options = bus_core::OpenOptions::new()
                .follow_symlinks(flags & SHMBUS_OPEN_FOLLOW_SYMLINKS != 0)
                .allow_other_owner(flags & SHMBUS_OPEN_ALLOW_OTHER_OWNER != 0);
            give_bus(out, Bus::open_with(path, &options))
        }
    })
}

/// Opens the bus at `path`, creating it with `options` (NULL for the defaults) if there is
/// none. Safe against concurrent callers: they all end up on the same file. An existing bus
/// keeps its own parameters.
///
/// Errors: those of `shmbus_bus_create` and `shmbus_bus_open`.
///
/// # Safety
///
/// As `shmbus_bus_create`.
#[no_mangle]
pub unsafe extern "C" fn shmbus_bus_open_or_create(
    path: *const c_char,
    options: *const shmbus_options,
    out: *mut *mut shmbus_bus,
) -> shmbus_status {
    ffi(|| {
        // SAFETY: the caller's contract, passed on.
        unsafe {
            clear_out(out)?;
            let path = c_path(path)?;
            let options = c_options(options)?;
            give_bus(out, Bus::open_or_create(path, &options))
        }
    })
}

/// Releases a bus handle. NULL does nothing. Publishers and subscribers made from it stay
/// usable (they keep the mapping alive).
///
/// # Safety
///
/// `bus` is NULL or a handle from this library not freed yet; it must not be used after.
#[no_mangle]
pub unsafe extern "C" fn shmbus_bus_free(bus: *mut shmbus_bus) {
    ffi_void(|| {
        if !bus.is_null() {
            // SAFETY: made by `Box::into_raw` in `give_bus`, freed once (caller's contract).
            drop(unsafe { Box::from_raw(bus) });
        }
    })
}

/// The handle behind a `const shmbus_bus *`.
///
/// # Safety
///
/// `bus` is NULL or a live handle.
pub(crate) unsafe fn bus_ref<'a>(bus: *const shmbus_bus) -> Result<&'a Bus, Failure> {
    required(bus, "bus")?;
    // SAFETY: a live handle (caller's contract); only shared access, and `Bus` is `Sync`.
    Ok(unsafe { &(*bus).bus })
}

/// Writes the parameters of the bus into `*info`.
///
/// # Safety
///
/// `bus` is a live handle; `info` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn shmbus_bus_get_info(
    bus: *const shmbus_bus,
    info: *mut shmbus_bus_info,
) -> shmbus_status {
    ffi(|| {
        // SAFETY: the caller's contract.
        let bus = unsafe { bus_ref(bus) }?;
        required(info, "info")?;
        let c = bus.config();
        let i = shmbus_bus_info {
            capacity: c.capacity,
            max_message: c.max_message,
            mode: mode_raw(c.mode),
            max_subscribers: c.max_subscribers,
            max_producers: c.max_producers,
        };
        // SAFETY: not NULL, valid for a write (caller's contract).
        unsafe { info.write(i) };
        Ok(())
    })
}

/// Flushes the mapping to its file (msync): on a disk file, everything published so far
/// becomes durable. Errors: `SHMBUS_IO`.
///
/// # Safety
///
/// `bus` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn shmbus_bus_flush(bus: *const shmbus_bus) -> shmbus_status {
    ffi(|| {
        // SAFETY: the caller's contract.
        let bus = unsafe { bus_ref(bus) }?;
        bus.flush().map_err(|e| {
            Failure::new(
                shmbus_status::SHMBUS_IO,
                format!("bus {}: msync failed: {e}", bus.path().display()),
            )
        })
    })
}

// The thread rules the header states rest on these.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Bus>();
};
