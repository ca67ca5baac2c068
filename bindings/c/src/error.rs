//! Status codes, the thread-local error message, and the boundary every call crosses.
//!
//! Each error kind of the Rust API has one status value (STYLE.md 19: the bindings mirror
//! the Rust errors); the `From` impls below are the whole mapping, written as exhaustive
//! matches so that a new variant in bus-core fails to compile here until it is mapped.

use std::cell::RefCell;
use std::ffi::{c_char, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use bus_core::{
    CommitError, HeaderError, JoinError, LoanError, LoanTimeoutError, LockError, OpenError,
    OpenErrorKind, RecvError, RecvTimeoutError, SendError, SendTimeoutError, SubscribeError,
    TryLoanError, TryRecvError, TrySendError,
};

/// What a libshmbus call did. Every function returns one; `SHMBUS_OK` (0) is success, and
/// on anything else `shmbus_last_error_message()` describes the error.
///
/// The values are fixed (they are the ABI): new ones may be added, none renumbered. Each
/// names an error kind of the Rust API (`bus_core`); the Rust variant is in brackets.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum shmbus_status {
    /// Success.
    SHMBUS_OK = 0,

    // ---- misuse of the C API ----
    /// A required pointer was NULL, a path was empty, a mode or start value is unknown, or
    /// `data` was NULL with a nonzero length.
    SHMBUS_INVALID_ARGUMENT = 1,
    /// A Rust panic was caught at the boundary (a bug in libshmbus: please report it with
    /// the message). The handle it happened on should be freed.
    SHMBUS_PANIC = 2,
    /// The receive buffer is smaller than the message; the message's length is in
    /// `msg->len`, and the message is NOT consumed: the next receive call on this
    /// subscriber returns the same message (call again with a large enough buffer).
    SHMBUS_BUFFER_TOO_SMALL = 3,
    /// A loan is out on this publisher: commit or abandon it before sending or loaning
    /// again.
    SHMBUS_LOAN_OUTSTANDING = 4,
    /// `shmbus_publisher_commit` / `_abandon` without a loan out.
    SHMBUS_NO_LOAN = 5,

    // ---- publishing and receiving ----
    /// No room in the ring now (try_send / try_loan). [TrySendError::Full]
    SHMBUS_FULL = 10,
    /// The timeout passed: no room (send) or no message (recv). [SendTimeoutError::Timeout, RecvTimeoutError::Timeout]
    SHMBUS_TIMEOUT = 11,
    /// No message now (try_recv). [TryRecvError::Empty]
    SHMBUS_EMPTY = 12,
    /// The message is longer than the bus's max message. [LoanError::MessageTooLarge]
    SHMBUS_MESSAGE_TOO_LARGE = 13,
    /// Lossy mode: this subscriber was lapped and `msg->lost` messages were lost before the
    /// next one. Not fatal: receive again. [RecvError::Lost]
    SHMBUS_LOST = 14,
    /// A record in the ring breaks the format (another process wrote garbage there).
    /// [RecvError::Corrupt]
    SHMBUS_CORRUPT = 15,
    /// The ring's positions in the bus header are impossible (another process wrote
    /// garbage). Re-create the bus. [LoanError::RingCorrupt, OpenErrorKind::RingStateCorrupt]
    SHMBUS_RING_CORRUPT = 16,
    /// One-producer bus: another producer moved the tail; this process lost its producer
    /// slot. [LoanError::ProducerConflict]
    SHMBUS_PRODUCER_CONFLICT = 17,
    /// The record was turned into padding by another process that judged this publisher
    /// dead; the message was not delivered. [CommitError::Unblocked]
    SHMBUS_UNBLOCKED = 18,
    /// This process is a child forked (without exec) since the handle was made: the
    /// handle's slot is the parent's. Nothing was sent or received; open the bus again in
    /// the child. [LoanError::Forked, CommitError::Forked, RecvError::Forked]
    SHMBUS_FORKED = 19,

    // ---- joining ----
    /// Every publisher (or subscriber) slot of the bus is taken. [JoinError::NoFreeSlot]
    SHMBUS_NO_FREE_SLOT = 20,
    /// The bus's control lock stayed held by another live process. [LockError::Timeout]
    SHMBUS_LOCK_TIMEOUT = 21,
    /// A start position no longer (or not yet) in the ring.
    /// [SubscribeError::PositionNotRetained]
    SHMBUS_POSITION_NOT_RETAINED = 22,
    /// A start position that is not the start of a record. [SubscribeError::NotARecord]
    SHMBUS_NOT_A_RECORD = 23,

    // ---- creating and opening ----
    /// No file at the path. [OpenErrorKind::NotFound]
    SHMBUS_NOT_FOUND = 30,
    /// The directory of the path does not exist. [OpenErrorKind::DirectoryNotFound]
    SHMBUS_DIRECTORY_NOT_FOUND = 31,
    /// Create found something at the path. [OpenErrorKind::AlreadyExists]
    SHMBUS_ALREADY_EXISTS = 32,
    /// Permission denied. [OpenErrorKind::PermissionDenied]
    SHMBUS_PERMISSION_DENIED = 33,
    /// The path is a symbolic link (not followed). [OpenErrorKind::SymbolicLink]
    SHMBUS_SYMBOLIC_LINK = 34,
    /// The path is a directory, FIFO, socket or device. [OpenErrorKind::NotARegularFile]
    SHMBUS_NOT_A_REGULAR_FILE = 35,
    /// The file belongs to another user. [OpenErrorKind::OwnedByOtherUser]
    SHMBUS_OWNED_BY_OTHER_USER = 36,
    /// The file is not a bus (wrong magic, or shorter than a header).
    /// [HeaderError::BadMagic, HeaderError::FileTooSmall]
    SHMBUS_NOT_A_BUS = 37,
    /// A bus of another format version. [HeaderError::UnsupportedVersion]
    SHMBUS_UNSUPPORTED_VERSION = 38,
    /// A bus header that is invalid in another way: foreign byte order or word size,
    /// unfinished, unknown mode or flags, inconsistent, wrong size, bad checksum.
    /// [the other HeaderError variants]
    SHMBUS_BAD_HEADER = 39,
    /// Out-of-range options for create (capacity not a power of two, ...).
    /// [OpenErrorKind::InvalidOptions]
    SHMBUS_INVALID_OPTIONS = 40,
    /// No space on the file system for the bus. [OpenErrorKind::NoSpace]
    SHMBUS_NO_SPACE = 41,
    /// This CPU has no lock-free 16-byte compare-and-swap.
    /// [OpenErrorKind::Unsupported128BitAtomics]
    SHMBUS_UNSUPPORTED_CPU = 42,
    /// Another system call failed (the message names it and the errno).
    /// [OpenErrorKind::Io, JoinError::Io, LockError::Io]
    SHMBUS_IO = 43,
}

use shmbus_status::*;

/// A failed call: its status and the message for `shmbus_last_error_message`.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) status: shmbus_status,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn new(status: shmbus_status, message: impl Into<String>) -> Failure {
        Failure {
            status,
            message: message.into(),
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Failure {
        Failure::new(SHMBUS_INVALID_ARGUMENT, message)
    }
}

/// The result of a call body.
pub(crate) type Outcome = Result<(), Failure>;

thread_local! {
    /// The message of the last failed call on this thread.
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(message: String) {
    let c = CString::new(message).unwrap_or_else(|e| {
        let mut bytes = e.into_vec();
        bytes.retain(|&b| b != 0);
        CString::new(bytes).unwrap_or_default()
    });
    // During thread teardown the slot may be gone: then the message is dropped.
    let _ = LAST_ERROR.try_with(|last| *last.borrow_mut() = c);
}

/// Runs the body of an exported function: a failure sets this thread's error message, and a
/// panic is caught here (it must never unwind into C) and becomes `SHMBUS_PANIC`.
pub(crate) fn ffi(body: impl FnOnce() -> Outcome) -> shmbus_status {
    // AssertUnwindSafe: after a panic the caller is told to free the handle involved; no
    // broken invariant of ours is observed through it before that (each handle's state is
    // an `Option` set or taken in one step).
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => SHMBUS_OK,
        Ok(Err(failure)) => {
            set_last_error(failure.message);
            failure.status
        }
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic with a non-string payload".to_string());
            set_last_error(format!("libshmbus panicked (a bug; please report): {what}"));
            SHMBUS_PANIC
        }
    }
}

/// Runs the body of a `_free` function: nothing to return, and a panic is swallowed.
pub(crate) fn ffi_void(body: impl FnOnce()) {
    let _ = ffi(|| {
        body();
        Ok(())
    });
}

/// The text of the last error on the calling thread: a NUL-terminated UTF-8 string owned by
/// libshmbus, empty if no call on this thread has failed yet.
///
/// Valid until the next libshmbus call on the same thread (copy it to keep it). Successful
/// calls may leave an older message in place: read it only right after a call returned a
/// status other than `SHMBUS_OK`. Never returns NULL.
#[no_mangle]
pub extern "C" fn shmbus_last_error_message() -> *const c_char {
    static EMPTY: &[u8] = b"\0";
    catch_unwind(|| {
        LAST_ERROR
            .try_with(|last| last.borrow().as_ptr())
            .unwrap_or(EMPTY.as_ptr().cast())
    })
    .unwrap_or(EMPTY.as_ptr().cast())
}

/// The name of a status value as a static NUL-terminated string ("SHMBUS_FULL"), or
/// "SHMBUS_UNKNOWN_STATUS" for a value libshmbus does not define. Never returns NULL; the
/// string lives as long as the program.
#[no_mangle]
pub extern "C" fn shmbus_status_name(status: i32) -> *const c_char {
    let name: &'static [u8] = match status {
        0 => b"SHMBUS_OK\0",
        1 => b"SHMBUS_INVALID_ARGUMENT\0",
        2 => b"SHMBUS_PANIC\0",
        3 => b"SHMBUS_BUFFER_TOO_SMALL\0",
        4 => b"SHMBUS_LOAN_OUTSTANDING\0",
        5 => b"SHMBUS_NO_LOAN\0",
        10 => b"SHMBUS_FULL\0",
        11 => b"SHMBUS_TIMEOUT\0",
        12 => b"SHMBUS_EMPTY\0",
        13 => b"SHMBUS_MESSAGE_TOO_LARGE\0",
        14 => b"SHMBUS_LOST\0",
        15 => b"SHMBUS_CORRUPT\0",
        16 => b"SHMBUS_RING_CORRUPT\0",
        17 => b"SHMBUS_PRODUCER_CONFLICT\0",
        18 => b"SHMBUS_UNBLOCKED\0",
        19 => b"SHMBUS_FORKED\0",
        20 => b"SHMBUS_NO_FREE_SLOT\0",
        21 => b"SHMBUS_LOCK_TIMEOUT\0",
        22 => b"SHMBUS_POSITION_NOT_RETAINED\0",
        23 => b"SHMBUS_NOT_A_RECORD\0",
        30 => b"SHMBUS_NOT_FOUND\0",
        31 => b"SHMBUS_DIRECTORY_NOT_FOUND\0",
        32 => b"SHMBUS_ALREADY_EXISTS\0",
        33 => b"SHMBUS_PERMISSION_DENIED\0",
        34 => b"SHMBUS_SYMBOLIC_LINK\0",
        35 => b"SHMBUS_NOT_A_REGULAR_FILE\0",
        36 => b"SHMBUS_OWNED_BY_OTHER_USER\0",
        37 => b"SHMBUS_NOT_A_BUS\0",
        38 => b"SHMBUS_UNSUPPORTED_VERSION\0",
        39 => b"SHMBUS_BAD_HEADER\0",
        40 => b"SHMBUS_INVALID_OPTIONS\0",
        41 => b"SHMBUS_NO_SPACE\0",
        42 => b"SHMBUS_UNSUPPORTED_CPU\0",
        43 => b"SHMBUS_IO\0",
        _ => b"SHMBUS_UNKNOWN_STATUS\0",
    };
    name.as_ptr().cast()
}

// ---- the mapping from the Rust errors -------------------------------------------------

fn with_message(status: shmbus_status, e: &impl std::fmt::Display) -> Failure {
    Failure::new(status, e.to_string())
}

fn lock_status(e: &LockError) -> shmbus_status {
    match e {
        LockError::Timeout => SHMBUS_LOCK_TIMEOUT,
        LockError::Io { .. } => SHMBUS_IO,
    }
}

fn header_status(e: &HeaderError) -> shmbus_status {
    match e {
        HeaderError::FileTooSmall { .. } | HeaderError::BadMagic { .. } => SHMBUS_NOT_A_BUS,
        HeaderError::UnsupportedVersion { .. } => SHMBUS_UNSUPPORTED_VERSION,
        HeaderError::ForeignByteOrder { .. }
        | HeaderError::ForeignWordSize { .. }
        | HeaderError::NotReady { .. }
        | HeaderError::UnknownMode { .. }
        | HeaderError::UnknownFlags { .. }
        | HeaderError::Config(_)
        | HeaderError::LayoutMismatch { .. }
        | HeaderError::SizeMismatch { .. }
        | HeaderError::ChecksumMismatch { .. } => SHMBUS_BAD_HEADER,
    }
}

pub(crate) fn open_status(kind: &OpenErrorKind) -> shmbus_status {
    match kind {
        OpenErrorKind::NotFound => SHMBUS_NOT_FOUND,
        OpenErrorKind::DirectoryNotFound => SHMBUS_DIRECTORY_NOT_FOUND,
        OpenErrorKind::AlreadyExists => SHMBUS_ALREADY_EXISTS,
        OpenErrorKind::PermissionDenied { .. } => SHMBUS_PERMISSION_DENIED,
        OpenErrorKind::SymbolicLink => SHMBUS_SYMBOLIC_LINK,
        OpenErrorKind::NotARegularFile { .. } => SHMBUS_NOT_A_REGULAR_FILE,
        OpenErrorKind::OwnedByOtherUser { .. } => SHMBUS_OWNED_BY_OTHER_USER,
        OpenErrorKind::Header(h) => header_status(h),
        OpenErrorKind::RingStateCorrupt { .. } => SHMBUS_RING_CORRUPT,
        OpenErrorKind::InvalidOptions(_) => SHMBUS_INVALID_OPTIONS,
        OpenErrorKind::NoSpace { .. } => SHMBUS_NO_SPACE,
        OpenErrorKind::Unsupported128BitAtomics => SHMBUS_UNSUPPORTED_CPU,
        OpenErrorKind::Io { .. } => SHMBUS_IO,
    }
}

impl From<OpenError> for Failure {
    fn from(e: OpenError) -> Failure {
        with_message(open_status(&e.kind), &e)
    }
}

impl From<JoinError> for Failure {
    fn from(e: JoinError) -> Failure {
        let status = match &e {
            JoinError::NoFreeSlot { .. } => SHMBUS_NO_FREE_SLOT,
            JoinError::Lock(l) => lock_status(l),
            JoinError::Io { .. } => SHMBUS_IO,
        };
        with_message(status, &e)
    }
}

impl From<SubscribeError> for Failure {
    fn from(e: SubscribeError) -> Failure {
        let status = match &e {
            SubscribeError::Join(j) => return Failure::from(*j),
            SubscribeError::PositionNotRetained { .. } => SHMBUS_POSITION_NOT_RETAINED,
            SubscribeError::RingCorrupt { .. } => SHMBUS_RING_CORRUPT,
            SubscribeError::NotARecord { .. } => SHMBUS_NOT_A_RECORD,
        };
        with_message(status, &e)
    }
}

/// `From` for the publishing errors, whose variants share names across the enums.
macro_rules! publish_errors {
    ($($enum:ident { $($variant:ident $({ $($f:tt)* })? => $status:ident),* $(,)? })*) => {$(
        impl From<$enum> for Failure {
            fn from(e: $enum) -> Failure {
                let status = match &e {
                    $($enum::$variant $({ $($f)* })? => $status,)*
                };
                with_message(status, &e)
            }
        }
    )*};
}

publish_errors! {
    SendError {
        MessageTooLarge { .. } => SHMBUS_MESSAGE_TOO_LARGE,
        Unblocked => SHMBUS_UNBLOCKED,
        RingCorrupt { .. } => SHMBUS_RING_CORRUPT,
        ProducerConflict { .. } => SHMBUS_PRODUCER_CONFLICT,
        Forked => SHMBUS_FORKED,
    }
    TrySendError {
        Full => SHMBUS_FULL,
        MessageTooLarge { .. } => SHMBUS_MESSAGE_TOO_LARGE,
        Unblocked => SHMBUS_UNBLOCKED,
        RingCorrupt { .. } => SHMBUS_RING_CORRUPT,
        ProducerConflict { .. } => SHMBUS_PRODUCER_CONFLICT,
        Forked => SHMBUS_FORKED,
    }
    SendTimeoutError {
        Timeout => SHMBUS_TIMEOUT,
        MessageTooLarge { .. } => SHMBUS_MESSAGE_TOO_LARGE,
        Unblocked => SHMBUS_UNBLOCKED,
        RingCorrupt { .. } => SHMBUS_RING_CORRUPT,
        ProducerConflict { .. } => SHMBUS_PRODUCER_CONFLICT,
        Forked => SHMBUS_FORKED,
    }
    LoanError {
        MessageTooLarge { .. } => SHMBUS_MESSAGE_TOO_LARGE,
        RingCorrupt { .. } => SHMBUS_RING_CORRUPT,
        ProducerConflict { .. } => SHMBUS_PRODUCER_CONFLICT,
        Forked => SHMBUS_FORKED,
    }
    TryLoanError {
        Full => SHMBUS_FULL,
        MessageTooLarge { .. } => SHMBUS_MESSAGE_TOO_LARGE,
        RingCorrupt { .. } => SHMBUS_RING_CORRUPT,
        ProducerConflict { .. } => SHMBUS_PRODUCER_CONFLICT,
        Forked => SHMBUS_FORKED,
    }
    LoanTimeoutError {
        Timeout => SHMBUS_TIMEOUT,
        MessageTooLarge { .. } => SHMBUS_MESSAGE_TOO_LARGE,
        RingCorrupt { .. } => SHMBUS_RING_CORRUPT,
        ProducerConflict { .. } => SHMBUS_PRODUCER_CONFLICT,
        Forked => SHMBUS_FORKED,
    }
    CommitError {
        Unblocked => SHMBUS_UNBLOCKED,
        Forked => SHMBUS_FORKED,
    }
}

/// A failed receive: the failure, and the lost count for `SHMBUS_LOST`.
pub(crate) struct RecvFailure {
    pub(crate) failure: Failure,
    pub(crate) lost: u64,
}

impl From<RecvError> for RecvFailure {
    fn from(e: RecvError) -> RecvFailure {
        let (status, lost) = match &e {
            RecvError::Lost(n) => (SHMBUS_LOST, *n),
            RecvError::Corrupt { .. } => (SHMBUS_CORRUPT, 0),
            RecvError::Forked => (SHMBUS_FORKED, 0),
        };
        RecvFailure {
            failure: with_message(status, &e),
            lost,
        }
    }
}

impl From<TryRecvError> for RecvFailure {
    fn from(e: TryRecvError) -> RecvFailure {
        let (status, lost) = match &e {
            TryRecvError::Empty => (SHMBUS_EMPTY, 0),
            TryRecvError::Lost(n) => (SHMBUS_LOST, *n),
            TryRecvError::Corrupt { .. } => (SHMBUS_CORRUPT, 0),
            TryRecvError::Forked => (SHMBUS_FORKED, 0),
        };
        RecvFailure {
            failure: with_message(status, &e),
            lost,
        }
    }
}

impl From<RecvTimeoutError> for RecvFailure {
    fn from(e: RecvTimeoutError) -> RecvFailure {
        let (status, lost) = match &e {
            RecvTimeoutError::Timeout => (SHMBUS_TIMEOUT, 0),
            RecvTimeoutError::Lost(n) => (SHMBUS_LOST, *n),
            RecvTimeoutError::Corrupt { .. } => (SHMBUS_CORRUPT, 0),
            RecvTimeoutError::Forked => (SHMBUS_FORKED, 0),
        };
        RecvFailure {
            failure: with_message(status, &e),
            lost,
        }
    }
}

/// Checks that a required pointer is not NULL.
pub(crate) fn required<T>(p: *const T, what: &str) -> Outcome {
    if p.is_null() {
        Err(Failure::invalid(format!("{what} is NULL")))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    fn last() -> String {
        // SAFETY: the function returns a NUL-terminated string valid until our next call.
        unsafe { CStr::from_ptr(shmbus_last_error_message()) }
            .to_str()
            .unwrap()
            .to_string()
    }

    #[test]
    fn a_panic_becomes_a_status_and_a_message() {
        assert_eq!(ffi(|| panic!("boom {}", 7)), SHMBUS_PANIC);
        assert!(last().contains("boom 7"), "{}", last());
        assert_eq!(ffi(|| panic!("static")), SHMBUS_PANIC);
        assert!(last().contains("static"));
    }

    #[test]
    fn a_failure_sets_the_message_and_nul_bytes_do_not_lose_it() {
        let status = ffi(|| Err(Failure::new(SHMBUS_FULL, "ring\0 full")));
        assert_eq!(status, SHMBUS_FULL);
        assert_eq!(last(), "ring full");
    }

    #[test]
    fn every_status_has_its_name() {
        for s in [
            SHMBUS_OK,
            SHMBUS_PANIC,
            SHMBUS_LOST,
            SHMBUS_IO,
            SHMBUS_NO_LOAN,
            SHMBUS_FORKED,
        ] {
            // SAFETY: static NUL-terminated strings.
            let name = unsafe { CStr::from_ptr(shmbus_status_name(s as i32)) };
            assert_eq!(name.to_str().unwrap(), format!("{s:?}"));
        }
        // SAFETY: as above.
        let unknown = unsafe { CStr::from_ptr(shmbus_status_name(999)) };
        assert_eq!(unknown.to_str().unwrap(), "SHMBUS_UNKNOWN_STATUS");
    }
}
