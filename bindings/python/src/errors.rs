//! The exception classes, one per error kind of the Rust API, and the conversions.
//!
//! Every Rust error enum of bus-core maps variant by variant onto a class under
//! `shmbus.Error`; the variant's fields become attributes of the exception (`Lost.count`,
//! `OpenError.path`, ...). The message is the Rust error's `Display`.
//!
//! ```text
//! Error
//! ├── Empty                 try_recv: nothing new
//! ├── Full                  try_send / try_loan: no room
//! ├── Timeout               a timeout ran out
//! ├── MessageTooLarge       .len .max
//! ├── Lost                  .count (lossy mode; raised once per gap, then receiving goes on)
//! ├── Corrupt               .position .problem
//! ├── RingCorrupt           .position
//! ├── ProducerConflict      .expected .found
//! ├── Unblocked             the record was repaired away (this publisher was judged dead)
//! ├── Forked                the handle was made before os.fork(): open the bus again here
//! ├── JoinError             .errno (the liveness lock failed)
//! │   ├── NoFreeSlot        .kind ("subscriber" | "producer") .max
//! │   └── LockError         .errno (None: timed out on the control lock)
//! ├── PositionNotRetained   .requested .oldest .next
//! ├── NotARecord            .requested
//! ├── OpenError             .path .kind .reason .errno
//! ├── Busy                  the handle is in use (another thread, or an open view / loan)
//! └── Closed                the handle was closed
//! ```

use bus_core::{
    CommitError, JoinError as RsJoinError, LoanError, LoanTimeoutError, LockError as RsLockError,
    OpenError as RsOpenError, OpenErrorKind, RecordProblem, RecvError, RecvTimeoutError, SendError,
    SendTimeoutError, SubscribeError, TryLoanError, TryRecvError, TrySendError,
};
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

create_exception!(
    shmbus,
    Error,
    PyException,
    "Base class of every shmbus error."
);
create_exception!(shmbus, Empty, Error, "try_recv: no message available now.");
create_exception!(
    shmbus,
    Full,
    Error,
    "try_send / try_loan: the ring is full (reliable mode: the slowest live subscriber is a \
     ring behind; a dead one is evicted within about 10 ms)."
);
create_exception!(shmbus, Timeout, Error, "The timeout ran out.");
create_exception!(
    shmbus,
    MessageTooLarge,
    Error,
    "The message is longer than the bus's max_message (.len, .max)."
);
create_exception!(
    shmbus,
    Lost,
    Error,
    "Lossy mode: this subscriber was lapped and .count messages were lost. Raised once per \
     gap; the next receive goes on from the oldest retained message."
);
create_exception!(
    shmbus,
    Corrupt,
    Error,
    "The record at .position breaks the format (another process wrote garbage); .problem says \
     how. The subscriber stays where it is."
);
create_exception!(
    shmbus,
    RingCorrupt,
    Error,
    "The ring's positions in the bus header are impossible (.position): re-create the bus."
);
create_exception!(
    shmbus,
    ProducerConflict,
    Error,
    "One-producer bus: another producer moved the tail (.expected, .found); this process lost \
     its producer slot."
);
create_exception!(
    shmbus,
    Unblocked,
    Error,
    "The record was turned into padding by another process (this publisher was judged dead); \
     the message was not delivered."
);
create_exception!(
    shmbus,
    JoinError,
    Error,
    "A publisher or subscriber could not join the bus (.errno when the liveness lock failed)."
);
create_exception!(
    shmbus,
    NoFreeSlot,
    JoinError,
    "Every slot of .kind (\"subscriber\" or \"producer\") is held by a live participant (.max)."
);
create_exception!(
    shmbus,
    LockError,
    JoinError,
    "The bus control lock could not be taken (.errno; None when it timed out)."
);
create_exception!(
    shmbus,
    PositionNotRetained,
    Error,
    "subscribe(start=position): the position is no longer (or not yet) in the ring \
     (.requested, .oldest, .next)."
);
create_exception!(
    shmbus,
    NotARecord,
    Error,
    "subscribe(start=position): the position is not the start of a record (.requested)."
);
create_exception!(
    shmbus,
    OpenError,
    Error,
    "A bus file could not be created or opened (.path, .kind, .reason, .errno)."
);
create_exception!(
    shmbus,
    Busy,
    Error,
    "The handle is in use: another thread is blocked in a call on it, or a view or loan of it \
     is still open."
);
create_exception!(shmbus, Closed, Error, "The handle was closed.");
create_exception!(
    shmbus,
    Forked,
    Error,
    "This process is a child forked (os.fork, multiprocessing's fork start method) since the \
     handle was made: its slot is the parent's. Nothing was sent or received; open the bus \
     again in the child."
);

/// Registers every class in the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("Error", py.get_type::<Error>())?;
    m.add("Empty", py.get_type::<Empty>())?;
    m.add("Full", py.get_type::<Full>())?;
    m.add("Timeout", py.get_type::<Timeout>())?;
    m.add("MessageTooLarge", py.get_type::<MessageTooLarge>())?;
    m.add("Lost", py.get_type::<Lost>())?;
    m.add("Corrupt", py.get_type::<Corrupt>())?;
    m.add("RingCorrupt", py.get_type::<RingCorrupt>())?;
    m.add("ProducerConflict", py.get_type::<ProducerConflict>())?;
    m.add("Unblocked", py.get_type::<Unblocked>())?;
    m.add("JoinError", py.get_type::<JoinError>())?;
    m.add("NoFreeSlot", py.get_type::<NoFreeSlot>())?;
    m.add("LockError", py.get_type::<LockError>())?;
    m.add("PositionNotRetained", py.get_type::<PositionNotRetained>())?;
    m.add("NotARecord", py.get_type::<NotARecord>())?;
    m.add("OpenError", py.get_type::<OpenError>())?;
    m.add("Busy", py.get_type::<Busy>())?;
    m.add("Closed", py.get_type::<Closed>())?;
    m.add("Forked", py.get_type::<Forked>())?;
    Ok(())
}

/// An exception of class `$ty` with message `$msg` and the given attributes.
macro_rules! exc {
    ($py:expr, $ty:ty, $msg:expr $(, $k:ident = $v:expr)* $(,)?) => {{
        let err = PyErr::new::<$ty, _>($msg);
        #[allow(unused_variables)]
        let value = err.value($py);
        // Setting an attribute on a fresh exception instance cannot fail short of memory
        // exhaustion; the exception is still the right class without it.
        $( let _ = value.setattr(stringify!($k), $v); )*
        err
    }};
}
pub(crate) use exc;

/// Why a publish did not happen: the union of bus-core's send, loan and commit errors, each
/// variant as in the Rust enums.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendFail {
    Full,
    Timeout,
    TooLarge { len: usize, max: u32 },
    Unblocked,
    RingCorrupt { position: u64 },
    Conflict { expected: u64, found: u64 },
    Forked,
}

impl From<LoanError> for SendFail {
    fn from(e: LoanError) -> SendFail {
        match e {
            LoanError::MessageTooLarge { len, max } => SendFail::TooLarge { len, max },
            LoanError::RingCorrupt { position } => SendFail::RingCorrupt { position },
            LoanError::ProducerConflict { expected, found } => {
                SendFail::Conflict { expected, found }
            }
            LoanError::Forked => SendFail::Forked,
        }
    }
}

impl From<TryLoanError> for SendFail {
    fn from(e: TryLoanError) -> SendFail {
        match e {
            TryLoanError::Full => SendFail::Full,
            TryLoanError::MessageTooLarge { len, max } => SendFail::TooLarge { len, max },
            TryLoanError::RingCorrupt { position } => SendFail::RingCorrupt { position },
            TryLoanError::ProducerConflict { expected, found } => {
                SendFail::Conflict { expected, found }
            }
            TryLoanError::Forked => SendFail::Forked,
        }
    }
}

impl From<LoanTimeoutError> for SendFail {
    fn from(e: LoanTimeoutError) -> SendFail {
        match e {
            LoanTimeoutError::Timeout => SendFail::Timeout,
            LoanTimeoutError::MessageTooLarge { len, max } => SendFail::TooLarge { len, max },
            LoanTimeoutError::RingCorrupt { position } => SendFail::RingCorrupt { position },
            LoanTimeoutError::ProducerConflict { expected, found } => {
                SendFail::Conflict { expected, found }
            }
            LoanTimeoutError::Forked => SendFail::Forked,
        }
    }
}

impl From<CommitError> for SendFail {
    fn from(e: CommitError) -> SendFail {
        match e {
            CommitError::Unblocked => SendFail::Unblocked,
            CommitError::Forked => SendFail::Forked,
        }
    }
}

impl From<SendError> for SendFail {
    fn from(e: SendError) -> SendFail {
        SendTimeoutError::from(e).into()
    }
}

impl From<TrySendError> for SendFail {
    fn from(e: TrySendError) -> SendFail {
        match e {
            TrySendError::Full => SendFail::Full,
            TrySendError::MessageTooLarge { len, max } => SendFail::TooLarge { len, max },
            TrySendError::Unblocked => SendFail::Unblocked,
            TrySendError::RingCorrupt { position } => SendFail::RingCorrupt { position },
            TrySendError::ProducerConflict { expected, found } => {
                SendFail::Conflict { expected, found }
            }
            TrySendError::Forked => SendFail::Forked,
        }
    }
}

impl From<SendTimeoutError> for SendFail {
    fn from(e: SendTimeoutError) -> SendFail {
        match e {
            SendTimeoutError::Timeout => SendFail::Timeout,
            SendTimeoutError::MessageTooLarge { len, max } => SendFail::TooLarge { len, max },
            SendTimeoutError::Unblocked => SendFail::Unblocked,
            SendTimeoutError::RingCorrupt { position } => SendFail::RingCorrupt { position },
            SendTimeoutError::ProducerConflict { expected, found } => {
                SendFail::Conflict { expected, found }
            }
            SendTimeoutError::Forked => SendFail::Forked,
        }
    }
}

impl SendFail {
    pub fn into_pyerr(self, py: Python<'_>) -> PyErr {
        match self {
            SendFail::Full => PyErr::new::<Full, _>("the ring is full"),
            SendFail::Timeout => {
                PyErr::new::<Timeout, _>("timed out waiting for space in the ring")
            }
            SendFail::TooLarge { len, max } => exc!(
                py,
                MessageTooLarge,
                format!("message of {len} bytes exceeds the bus maximum of {max} bytes"),
                len = len,
                max = max,
            ),
            SendFail::Unblocked => PyErr::new::<Unblocked, _>(
                "the record was unblocked by another process (this publisher was judged dead)",
            ),
            SendFail::RingCorrupt { position } => exc!(
                py,
                RingCorrupt,
                format!(
                    "the ring's position {position} in the bus header is corrupt (written by \
                     another process)"
                ),
                position = position,
            ),
            SendFail::Conflict { expected, found } => exc!(
                py,
                ProducerConflict,
                format!(
                    "another producer moved the tail of this one-producer bus (to {found}, \
                     expected {expected}): this process lost its producer slot"
                ),
                expected = expected,
                found = found,
            ),
            SendFail::Forked => PyErr::new::<Forked, _>(
                "this handle belongs to the process that made it, not to this forked child: \
                 open the bus again here",
            ),
        }
    }
}

/// Why a receive delivered nothing: the union of bus-core's receive errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecvFail {
    Empty,
    Timeout,
    Lost(u64),
    Corrupt {
        position: u64,
        problem: RecordProblem,
    },
    Forked,
}

impl From<RecvError> for RecvFail {
    fn from(e: RecvError) -> RecvFail {
        match e {
            RecvError::Lost(n) => RecvFail::Lost(n),
            RecvError::Corrupt { position, problem } => RecvFail::Corrupt { position, problem },
            RecvError::Forked => RecvFail::Forked,
        }
    }
}

impl From<TryRecvError> for RecvFail {
    fn from(e: TryRecvError) -> RecvFail {
        match e {
            TryRecvError::Empty => RecvFail::Empty,
            TryRecvError::Lost(n) => RecvFail::Lost(n),
            TryRecvError::Corrupt { position, problem } => RecvFail::Corrupt { position, problem },
            TryRecvError::Forked => RecvFail::Forked,
        }
    }
}

impl From<RecvTimeoutError> for RecvFail {
    fn from(e: RecvTimeoutError) -> RecvFail {
        match e {
            RecvTimeoutError::Timeout => RecvFail::Timeout,
            RecvTimeoutError::Lost(n) => RecvFail::Lost(n),
            RecvTimeoutError::Corrupt { position, problem } => {
                RecvFail::Corrupt { position, problem }
            }
            RecvTimeoutError::Forked => RecvFail::Forked,
        }
    }
}

impl RecvFail {
    pub fn into_pyerr(self, py: Python<'_>) -> PyErr {
        match self {
            RecvFail::Empty => PyErr::new::<Empty, _>("no message available"),
            RecvFail::Timeout => PyErr::new::<Timeout, _>("timed out waiting for a message"),
            RecvFail::Lost(count) => {
                exc!(py, Lost, format!("lost {count} messages"), count = count)
            }
            RecvFail::Corrupt { position, problem } => exc!(
                py,
                Corrupt,
                format!("corrupt record at position {position}: {problem}"),
                position = position,
                problem = problem.to_string(),
            ),
            RecvFail::Forked => PyErr::new::<Forked, _>(
                "this handle belongs to the process that made it, not to this forked child: \
                 open the bus again here",
            ),
        }
    }
}

pub fn lock_err(py: Python<'_>, e: RsLockError) -> PyErr {
    let errno = match e {
        RsLockError::Timeout => None,
        RsLockError::Io { errno } => Some(errno),
    };
    exc!(py, LockError, e.to_string(), errno = errno)
}

pub fn join_err(py: Python<'_>, e: RsJoinError) -> PyErr {
    match e {
        RsJoinError::NoFreeSlot { kind, max } => exc!(
            py,
            NoFreeSlot,
            e.to_string(),
            kind = kind.to_string(),
            max = max,
            // A JoinError has `.errno`; a full bus is no system call's failure.
            errno = None::<i32>,
        ),
        RsJoinError::Lock(l) => lock_err(py, l),
        RsJoinError::Io { errno } => exc!(py, JoinError, e.to_string(), errno = errno),
    }
}

pub fn subscribe_err(py: Python<'_>, e: SubscribeError) -> PyErr {
    match e {
        SubscribeError::Join(j) => join_err(py, j),
        SubscribeError::PositionNotRetained {
            requested,
            oldest,
            next,
        } => exc!(
            py,
            PositionNotRetained,
            e.to_string(),
            requested = requested,
            oldest = oldest,
            next = next,
        ),
        SubscribeError::RingCorrupt { position } => {
            exc!(py, RingCorrupt, e.to_string(), position = position)
        }
        SubscribeError::NotARecord { requested } => {
            exc!(py, NotARecord, e.to_string(), requested = requested)
        }
    }
}

/// The name of an [`OpenErrorKind`] variant, for `OpenError.kind`.
fn open_kind_name(kind: &OpenErrorKind) -> (&'static str, Option<i32>) {
    match kind {
        OpenErrorKind::NotFound => ("not_found", None),
        OpenErrorKind::DirectoryNotFound => ("directory_not_found", None),
        OpenErrorKind::AlreadyExists => ("already_exists", None),
        OpenErrorKind::PermissionDenied { .. } => ("permission_denied", None),
        OpenErrorKind::SymbolicLink => ("symbolic_link", None),
        OpenErrorKind::NotARegularFile { .. } => ("not_a_regular_file", None),
        OpenErrorKind::OwnedByOtherUser { .. } => ("owned_by_other_user", None),
        OpenErrorKind::Header(_) => ("invalid_header", None),
        OpenErrorKind::RingStateCorrupt { .. } => ("ring_state_corrupt", None),
        OpenErrorKind::InvalidOptions(_) => ("invalid_options", None),
        OpenErrorKind::NoSpace { .. } => ("no_space", None),
        OpenErrorKind::Unsupported128BitAtomics => ("unsupported_128bit_atomics", None),
        OpenErrorKind::Io { errno, .. } => ("io", Some(*errno)),
    }
}

/// For kind "invalid_header": which of the C API's three header statuses it is, so that
/// "not a bus at all" and "a bus of another format version" can be told apart without
/// parsing the message.
fn header_problem(kind: &OpenErrorKind) -> Option<&'static str> {
    use bus_core::HeaderError as H;
    match kind {
        OpenErrorKind::Header(h) => Some(match h {
            H::FileTooSmall { .. } | H::BadMagic { .. } => "not_a_bus",
            H::UnsupportedVersion { .. } => "unsupported_version",
            _ => "bad_header",
        }),
        _ => None,
    }
}

pub fn open_err(py: Python<'_>, e: &RsOpenError) -> PyErr {
    let (kind, errno) = open_kind_name(&e.kind);
    exc!(
        py,
        OpenError,
        e.to_string(),
        path = e.path.to_string_lossy().into_owned(),
        kind = kind,
        reason = e.kind.to_string(),
        errno = errno,
        header_problem = header_problem(&e.kind),
    )
}
