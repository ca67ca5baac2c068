//! The cross-process control lock, and the open-file-description locks it is made of.
//!
//! The control lock guards only rare operations: joining and leaving (slot allocation) and
//! evicting dead participants. It must survive the death of its holder at any instruction.
//!
//! # Why an OFD lock, not a robust pthread mutex or raw_sync
//!
//! * raw_sync 0.1.5's mutex is not robust: a holder killed with SIGKILL blocks every later
//!   `lock()` forever, and its timed waits fail with EINVAL.
//! * A process-shared robust pthread mutex (EOWNERDEAD, `pthread_mutex_consistent`) keeps its
//!   owner as a thread id *inside the file*. A bus on disk outlives a reboot, after which
//!   that thread id means nothing (or names an unrelated thread) and the mutex stays held
//!   forever; its layout also differs between libc implementations that might map the
//!   same file.
//! * An open-file-description lock (`F_OFD_SETLK`) on one byte of the bus file is held by the
//!   kernel, not by the file: the kernel releases it when the last descriptor of the holder
//!   closes, which process death always does, in any PID namespace, with no PID reuse race,
//!   and nothing of it survives a reboot.
//!
//! What the kernel cannot do is repair the state the lock guards. The holder sets a *dirty*
//! word in the header on entry and clears it on exit; a locker that finds it set knows the
//! previous holder died inside, and the caller repairs (the registry's sweep of dead slots,
//! which is idempotent).
//!
//! OFD locks conflict between open file descriptions, not between threads that share one, so
//! a process-local mutex serialises the threads of this process first.
//!
//! The same OFD locks, one per slot byte range, are each participant's liveness token: see
//! `registry`.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::layout::CONTROL_OFFSET;
use crate::mapping::Segment;
use crate::sync::Ordering;
use crate::wait::Deadline;

fn ofd(
    fd: BorrowedFd<'_>,
    cmd: libc::c_int,
    kind: libc::c_short,
    start: u64,
    len: u64,
) -> io::Result<libc::flock> {
    // SAFETY: an all-zero `flock` is a valid value of this plain C struct.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = start as libc::off_t;
    fl.l_len = len as libc::off_t;
    // l_pid must be 0 for OFD locks.
    fl.l_pid = 0;
    // SAFETY: `fd` is a valid open descriptor for the call; `fl` is a valid flock that the
    // kernel may write (F_OFD_GETLK) and that outlives the call.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), cmd, &mut fl as *mut libc::flock) };
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(fl)
    }
}

/// Takes a write lock on `[start, start + len)` through `fd`'s open file description, without
/// waiting. `Ok(false)`: someone else holds it.
pub(crate) fn try_lock_range(fd: BorrowedFd<'_>, start: u64, len: u64) -> io::Result<bool> {
    match ofd(
        fd,
        libc::F_OFD_SETLK,
        libc::F_WRLCK as libc::c_short,
        start,
        len,
    ) {
        Ok(_) => Ok(true),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Releases a range locked by [`try_lock_range`] through the same descriptor.
pub(crate) fn unlock_range(fd: BorrowedFd<'_>, start: u64, len: u64) -> io::Result<()> {
    ofd(
        fd,
        libc::F_OFD_SETLK,
        libc::F_UNLCK as libc::c_short,
        start,
        len,
    )
    .map(|_| ())
}

/// Whether another open file description holds a lock on any byte of the range: the
/// liveness test of a slot's owner.
pub(crate) fn is_range_locked(fd: BorrowedFd<'_>, start: u64, len: u64) -> io::Result<bool> {
    let fl = ofd(
        fd,
        libc::F_OFD_GETLK,
        libc::F_WRLCK as libc::c_short,
        start,
        len,
    )?;
    Ok(fl.l_type != libc::F_UNLCK as libc::c_short)
}

/// The control lock could not be taken. Returned inside the errors of operations that join,
/// leave or evict (for example [`crate::JoinError`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LockError {
    /// Another live process held the control lock for the whole timeout.
    #[error("timed out waiting for the bus control lock")]
    Timeout,
    /// The lock call itself failed.
    #[error("control lock failed: {}", io::Error::from_raw_os_error(*errno))]
    Io {
        /// The `errno` value.
        errno: i32,
    },
}

/// How long joining, leaving and eviction wait for the control lock.
pub(crate) const LOCK_TIMEOUT: Duration = Duration::from_secs(5);

/// The control lock of one open bus (one per `Bus`, shared by its handles).
pub(crate) struct ControlLock {
    /// Serialises this process's threads (OFD locks do not).
    local: Mutex<()>,
}

/// Proof of holding the control lock; releases it on drop.
pub(crate) struct ControlGuard<'a> {
    seg: &'a Segment,
    _local: MutexGuard<'a, ()>,
    /// The previous holder died inside its critical section: the caller must repair.
    pub(crate) recovered: bool,
}

impl ControlLock {
    pub(crate) fn new() -> Self {
        ControlLock {
            local: Mutex::new(()),
        }
    }

    /// Takes the lock, waiting at most `timeout`.
    pub(crate) fn lock<'a>(
        &'a self,
        seg: &'a Segment,
        timeout: Duration,
    ) -> Result<ControlGuard<'a>, LockError> {
        // A poisoned local mutex only means a thread panicked while holding it; the state it
        // guards is in the file and gets the same repair as a dead process's.
        let local = self.local.lock().unwrap_or_else(|p| p.into_inner());
        let deadline = Deadline::after(timeout);
        let fd = std::os::fd::AsFd::as_fd(&seg.file);
        let mut pause = Duration::from_micros(20);
        loop {
            match try_lock_range(fd, CONTROL_OFFSET as u64, 1) {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => {
                    return Err(LockError::Io {
                        errno: e.raw_os_error().unwrap_or(libc::EIO),
                    })
                }
            }
            if deadline.passed() {
                return Err(LockError::Timeout);
            }
            // Control operations are rare and short: poll with a growing pause rather than
            // block in F_OFD_SETLKW, which has no timeout.
            std::thread::sleep(deadline.slice(pause));
            pause = (pause * 2).min(Duration::from_millis(2));
        }
        // ORDERING: SeqCst (both): the dirty word and the state it guards are read and written
        // only under the lock; the kernel lock hand-over orders holders, SeqCst costs nothing here.
        let recovered = seg.control_dirty().swap(1, Ordering::SeqCst) != 0;
        seg.control_holder()
            .store(std::process::id(), Ordering::SeqCst);
        crate::fault::hit(crate::fault::Point::InControlLock);
        Ok(ControlGuard {
            seg,
            _local: local,
            recovered,
        })
    }
}

impl Drop for ControlGuard<'_> {
    fn drop(&mut self) {
        // Crash-relevant order: clear dirty, *then* release. Dying between the two leaves a
        // clean state behind a lock the kernel releases.
        // ORDERING: SeqCst: both stores are visible before the unlock syscall below.
        self.seg.control_holder().store(0, Ordering::SeqCst);
        self.seg.control_dirty().store(0, Ordering::SeqCst);
        let fd = std::os::fd::AsFd::as_fd(&self.seg.file);
        // Unlock cannot fail for a range we hold on a valid descriptor; if it did, closing
        // the descriptor (when the bus is dropped) releases it.
        let _ = unlock_range(fd, CONTROL_OFFSET as u64, 1);
    }
}

/// Opens a new open file description of the same file (for a participant's own liveness
/// lock): `/proc/self/fd/N` reopens the very inode, even if the path was replaced.
pub(crate) fn reopen(file: &File) -> io::Result<File> {
    let path = format!("/proc/self/fd/{}", file.as_raw_fd());
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    use std::os::unix::fs::MetadataExt;
    let (a, b) = (file.metadata()?, f.metadata()?);
    if (a.dev(), a.ino()) != (b.dev(), b.ino()) {
        return Err(io::Error::other("reopened a different file"));
    }
    Ok(f)
}
