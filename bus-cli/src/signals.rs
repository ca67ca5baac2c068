//! SIGINT / SIGTERM as a flag that long-running commands poll.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// Exit status of a process ended by a second interrupt (128 + SIGINT, as shells report it).
const EXIT_INTERRUPTED: i32 = 130;

/// Installs the handlers of SIGINT and SIGTERM: either sets the returned flag (the command
/// then finishes cleanly, leaving its slot); a SIGINT after that ends the process at once
/// (Ctrl-C pressed again, say while a write to a stalled pipe does not return). A second
/// SIGTERM does not: `timeout` and process managers send SIGTERM to a process and to its
/// group, so one stop request can arrive twice within a microsecond, and exiting on the
/// second left the slot behind (they follow up with SIGKILL if the stop takes too long).
///
/// Call it before taking any resource a signal could strand (a bus slot, a child process).
/// Both signals are blocked while the two handlers of each are installed: one arriving
/// between them would otherwise find the exit handler without the flag handler, and be
/// ignored. A signal that came in meanwhile is delivered when they are unblocked.
pub fn install() -> std::io::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    let mut old = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises `set`; sigaddset takes valid signal numbers;
    // pthread_sigmask reads `set` and initialises `old`. All are plain libc calls on memory we
    // own.
    unsafe {
        libc::sigemptyset(set.as_mut_ptr());
        libc::sigaddset(set.as_mut_ptr(), libc::SIGINT);
        libc::sigaddset(set.as_mut_ptr(), libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, set.as_ptr(), old.as_mut_ptr());
    }
    let registered = (|| {
        // The conditional exit first: it looks at the flag as the earlier signal left it.
        signal_hook::flag::register_conditional_shutdown(
            libc::SIGINT,
            EXIT_INTERRUPTED,
            stop.clone(),
        )?;
        for sig in [libc::SIGINT, libc::SIGTERM] {
            signal_hook::flag::register(sig, stop.clone())?;
        }
        Ok(())
    })();
    // SAFETY: `old` was initialised by the pthread_sigmask call above.
    unsafe {
        libc::pthread_sigmask(libc::SIG_SETMASK, old.as_ptr(), std::ptr::null_mut());
    }
    registered.map(|()| stop)
}
