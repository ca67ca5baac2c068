//! Review of round 2: async handles in a child made by `fork` (alone in its test binary: a
//! fork while other test threads hold locks could hang the child for reasons of its own).
//!
//! The child inherited the process's list of waiter threads but not the threads, and seated
//! its new handles with a thread that did not exist: nothing ever woke them.

use std::time::{Duration, Instant};

use bus_core::{Bus, BusOptions, Mode, RecvTimeoutError, Start, WaitStrategy};

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

#[test]
fn an_async_handle_made_in_a_forked_child_is_woken() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.bus");
    let bus = Bus::create(
        &path,
        &BusOptions::new()
            .capacity(64 * 1024)
            .max_message(1024)
            .mode(Mode::Reliable),
    )
    .unwrap();
    // The parent's waiter thread exists: one async wait.
    {
        let mut sub = bus.subscribe(Start::Latest).unwrap().into_async().unwrap();
        let mut buf = Vec::new();
        let r = current_thread().block_on(sub.recv_timeout(&mut buf, Duration::from_millis(20)));
        assert!(matches!(r, Err(RecvTimeoutError::Timeout)), "{r:?}");
    }
    // SAFETY: this test binary runs this one test, so no other thread holds a lock the child
    // needs; the child ends with `_exit`, and an alarm bounds it.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: in the child; SIGALRM's default action ends it if it hangs.
        unsafe { libc::alarm(60) };
        let code = std::panic::catch_unwind(|| {
            // What a child must do: open the bus and make its own handles.
            let bus = Bus::open(&path).unwrap();
            let mut s = bus.subscribe(Start::Latest).unwrap();
            s.set_wait_strategy(WaitStrategy::Block);
            let mut sub = s.into_async().unwrap();
            let mut publ = bus.publisher().unwrap();
            let th = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(200));
                publ.send(b"hello").unwrap();
            });
            let rt = current_thread();
            let mut buf = Vec::new();
            let t = Instant::now();
            let r = rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(20), sub.recv(&mut buf)).await
            });
            let woken_after = t.elapsed();
            th.join().unwrap();
            // A deadline is the waiter thread's to keep, too.
            let t = Instant::now();
            let r2 = rt.block_on(async {
                tokio::time::timeout(
                    Duration::from_secs(20),
                    sub.recv_timeout(&mut buf, Duration::from_millis(50)),
                )
                .await
            });
            let timed_out_after = t.elapsed();
            eprintln!(
                "child: {r:?} after {woken_after:?}; recv_timeout(50 ms): {r2:?} after {timed_out_after:?}"
            );
            let ok = matches!(r, Ok(Ok(_)))
                && woken_after < Duration::from_secs(10)
                && matches!(r2, Ok(Err(RecvTimeoutError::Timeout)))
                && timed_out_after < Duration::from_secs(10);
            if ok {
                0
            } else {
                1
            }
        })
        .unwrap_or(2);
        // SAFETY: ends the child without running the parent's exit handlers.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waits for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFEXITED(status),
        "the child was killed (hung?): {status:#x}"
    );
    assert_eq!(
        libc::WEXITSTATUS(status),
        0,
        "the child's async handle was not woken (see its stderr)"
    );
}
