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
//! a process-local mutex serialises the threads of this process first. A process forked from
//! the one that opened the bus shares its open file description (a lock through it would
//! not exclude the parent, and its unlock would release the parent's) and may have inherited
//! the mutex locked by a thread it does not have: it takes the lock through a description of
//! its own, reopened for each hold, which also excludes its own threads from each other. (A
//! process that forks while such a hold is out leaves the child a copy of that description:
//! until the child exits or execs, the hold outlives a holder that dies.)
//!
//! The liveness probe asks for *write* locks only: a process that may only read the file
//! can take read locks on it, and must not make a dead participant look alive (to `stat`, or
//! to a request/reply client watching its server). While it holds a read lock over the
//! control byte it still holds up everything that takes the control lock (joins, evictions,
//! repairs: they fail with [`LockError::Timeout`], and a reliable bus held full by a dead
//! subscriber stays full): the kernel lets a read lock block a write lock, and readers of the
//! file are trusted that far.
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

/// Whether another open file description holds a write lock on any byte of the range: the
/// liveness test of a slot's owner (participants hold write locks; a read lock, which any
/// reader of the file can take, is not one).
pub(crate) fn is_range_locked(fd: BorrowedFd<'_>, start: u64, len: u64) -> io::Result<bool> {
    // F_RDLCK asks for the locks that conflict with a read lock: write locks only.
    let fl = ofd(
        fd,
        libc::F_OFD_GETLK,
        libc::F_RDLCK as libc::c_short,
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
    /// The process that opened the bus (whose descriptor `seg.file` is its own): its pid and
    /// the fork generation then ([`forks`]; a pid alone can repeat, PID 1 in a new namespace).
    opener: (u32, u64),
}

/// Forks counted by the `pthread_atfork` child handler that [`forks`] registers.
static FORKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many times this process image has forked from its ancestors: a `pthread_atfork`
/// child handler counts every `fork` (a raw `clone` is caught by the pid instead).
pub(crate) fn forks() -> u64 {
    static REGISTER: std::sync::Once = std::sync::Once::new();
    extern "C" fn child() {
        // ORDERING: Relaxed: the child's only thread counts; nothing else is published.
        FORKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    // SAFETY: registers a child handler that only increments an atomic (async-signal-safe).
    REGISTER.call_once(|| unsafe {
        libc::pthread_atfork(None, None, Some(child));
    });
    // ORDERING: Relaxed: only this process's own forks change it, before this thread ran.
    FORKS.load(std::sync::atomic::Ordering::Relaxed)
}

/// [`forks`] without making sure that the handler counting them is registered: one load, for
/// the hot paths of handles that called [`forks`] when they were made (every fork since is
/// counted).
#[inline(always)]
pub(crate) fn forks_counted() -> u64 {
    // ORDERING: Relaxed: as in `forks`.
    FORKS.load(std::sync::atomic::Ordering::Relaxed)
}

fn this_process() -> (u32, u64) {
    (std::process::id(), forks())
}

/// Proof of holding the control lock; releases it on drop.
pub(crate) struct ControlGuard<'a> {
    seg: &'a Segment,
    _local: Option<MutexGuard<'a, ()>>,
    /// A forked process's own open file description, holding the lock.
    own: Option<File>,
    /// The previous holder died inside its critical section: the caller must repair.
    pub(crate) recovered: bool,
}

impl ControlGuard<'_> {
    fn fd(&self) -> BorrowedFd<'_> {
        lock_fd(self.seg, self.own.as_ref())
    }
}

/// The descriptor the control lock is taken through: a forked process's own, else the bus's.
fn lock_fd<'a>(seg: &'a Segment, own: Option<&'a File>) -> BorrowedFd<'a> {
    match own {
        Some(f) => std::os::fd::AsFd::as_fd(f),
        None => std::os::fd::AsFd::as_fd(&seg.file),
    }
}

impl ControlLock {
    pub(crate) fn new() -> Self {
        ControlLock {
            local: Mutex::new(()),
            opener: this_process(),
        }
    }

    /// The process-local mutex, waiting at most until `deadline` (short timeouts, such as
    /// a publisher's liveness probe, must not wait out another thread's long one).
    fn local(&self, deadline: &Deadline) -> Result<MutexGuard<'_, ()>, LockError> {
        let mut pause = Duration::from_micros(20);
        loop {
            match self.local.try_lock() {
                Ok(g) => return Ok(g),
                // A poisoned local mutex only means a thread panicked while holding it: its
                // guard's drop ran as it unwound, and every section is idempotent anyway.
                Err(std::sync::TryLockError::Poisoned(p)) => return Ok(p.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) => {}
            }
            if deadline.passed() {
                return Err(LockError::Timeout);
            }
            std::thread::sleep(deadline.slice(pause));
            pause = (pause * 2).min(Duration::from_millis(2));
        }
    }

    /// Takes the lock, waiting at most `timeout`.
    pub(crate) fn lock<'a>(
        &'a self,
        seg: &'a Segment,
        timeout: Duration,
    ) -> Result<ControlGuard<'a>, LockError> {
        let deadline = Deadline::after(timeout);
        let io_err = |e: io::Error| LockError::Io {
            errno: e.raw_os_error().unwrap_or(libc::EIO),
        };
        let (local, own) = if this_process() == self.opener {
            (Some(self.local(&deadline)?), None)
        } else {
            // Forked: a description of our own (see the module doc).
            (None, Some(reopen(&seg.file).map_err(io_err)?))
        };
        let fd = lock_fd(seg, own.as_ref());
        let mut pause = Duration::from_micros(20);
        loop {
            match try_lock_range(fd, CONTROL_OFFSET as u64, 1) {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => return Err(io_err(e)),
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
            own,
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
        // Unlock cannot fail for a range we hold on a valid descriptor; if it did, closing
        // the descriptor (when the bus is dropped, or now for a forked process's own)
        // releases it.
        let _ = unlock_range(self.fd(), CONTROL_OFFSET as u64, 1);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Bus, BusOptions};

    fn bus(dir: &tempfile::TempDir) -> Bus {
        Bus::create(
            dir.path().join("l.bus"),
            &BusOptions::new().capacity(1 << 16),
        )
        .unwrap()
    }

    /// Review of round 2: the process-local mutex was taken without a bound, so a 2 ms probe
    /// of a publisher waited out another thread's 5 s wait. Here the other thread holds the
    /// lock until our timed attempt has returned: before, that was a deadlock.
    #[test]
    fn a_short_timeout_is_kept_while_another_thread_holds_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let bus = bus(&dir);
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let b = bus.clone();
        let holder = std::thread::spawn(move || {
            let _g = b.shared.lock.lock(&b.shared.seg, LOCK_TIMEOUT).unwrap();
            held_tx.send(()).unwrap();
            // Hold it until the other attempt is over (or a minute, as a watchdog).
            let _ = done_rx.recv_timeout(Duration::from_secs(60));
        });
        held_rx.recv().unwrap();
        let r = bus
            .shared
            .lock
            .lock(&bus.shared.seg, Duration::from_millis(20))
            .map(|_| ());
        done_tx.send(()).unwrap();
        holder.join().unwrap();
        assert_eq!(r, Err(LockError::Timeout));
        // Released: it can be taken again.
        assert!(bus.shared.lock.lock(&bus.shared.seg, LOCK_TIMEOUT).is_ok());
    }

    /// Review of round 2: a forked child shared the parent's open file description, so its
    /// control lock did not exclude the parent (and it inherited the local mutex locked).
    /// With the parent holding the lock, the child's attempt must time out; with the child
    /// holding it, the parent's.
    #[test]
    fn a_forked_child_and_its_parent_exclude_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let bus = bus(&dir);
        let (seg, lock) = (&bus.shared.seg, &bus.shared.lock);
        let child = |f: &dyn Fn() -> bool| {
            // SAFETY: the child only takes file locks, allocates (glibc's malloc is fork-safe)
            // and ends with `_exit`; an alarm bounds it should it hang.
            let pid = unsafe { libc::fork() };
            assert!(pid >= 0, "fork failed");
            if pid == 0 {
                // SAFETY: SIGALRM's default action ends the child if it hangs.
                unsafe { libc::alarm(30) };
                let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(false);
                // SAFETY: ends the child without running the parent's destructors.
                unsafe { libc::_exit(if ok { 0 } else { 1 }) };
            }
            let mut status = 0;
            // SAFETY: waiting for our own child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            status
        };
        let guard = lock.lock(seg, LOCK_TIMEOUT).unwrap();
        let status = child(&|| {
            matches!(
                lock.lock(seg, Duration::from_millis(50)),
                Err(LockError::Timeout)
            )
        });
        assert_eq!(
            status, 0,
            "the child took the lock the parent holds (status {status:#x})"
        );
        // A pid can repeat (PID 1 in a new namespace, a reused pid after a double fork): a
        // lock whose opener has this very pid but an earlier fork count is still another
        // process's, and the child must not take it through the shared description.
        let status = child(&|| {
            let same_pid = ControlLock {
                local: Mutex::new(()),
                opener: (std::process::id(), lock.opener.1),
            };
            let took = same_pid.lock(seg, Duration::from_millis(50)).map(|_| ());
            took == Err(LockError::Timeout)
        });
        assert_eq!(
            status, 0,
            "a repeated pid hid the fork (status {status:#x})"
        );
        drop(guard);
        // The child holds it (through its own description) while the parent tries.
        let pipe = || {
            let mut fds = [0; 2];
            // SAFETY: two ints for the pipe's ends.
            assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
            (fds[0], fds[1])
        };
        let ((up_r, up_w), (down_r, down_w)) = (pipe(), pipe());
        // One byte, waiting 30 s at most (a watchdog: the other side may have died).
        let byte = |fd: i32| {
            let mut p = [libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            }];
            // SAFETY: one valid pollfd and its length.
            if unsafe { libc::poll(p.as_mut_ptr(), 1, 30_000) } != 1 {
                return None;
            }
            let mut b = [0u8; 1];
            // SAFETY: reading one byte into our buffer.
            let n = unsafe { libc::read(fd, b.as_mut_ptr().cast(), 1) };
            (n == 1).then_some(b[0])
        };
        // SAFETY: writing one byte from a static buffer.
        let send = |fd: i32, b: &'static [u8; 1]| unsafe { libc::write(fd, b.as_ptr().cast(), 1) };
        let (status, parent_try) = std::thread::scope(|s| {
            let parent = s.spawn(|| {
                // 'h': the child holds the lock; anything else: it could not take it.
                let said = byte(up_r);
                let got = lock.lock(seg, Duration::from_millis(50)).map(|_| ());
                send(down_w, b"x");
                (said, got)
            });
            let status = child(&|| {
                let held = lock.lock(seg, LOCK_TIMEOUT);
                send(up_w, if held.is_ok() { b"h" } else { b"n" });
                // Hold it until the parent has tried.
                byte(down_r);
                held.is_ok()
            });
            (status, parent.join().unwrap())
        });
        assert_eq!(status, 0, "child status {status:#x}");
        assert_eq!(parent_try.0, Some(b'h'));
        assert_eq!(
            parent_try.1,
            Err(LockError::Timeout),
            "the parent took the child's lock"
        );
        for fd in [up_r, up_w, down_r, down_w] {
            // SAFETY: closing our pipes' ends.
            unsafe { libc::close(fd) };
        }
    }
}
