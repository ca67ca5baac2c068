//! A child made by `fork` (without `exec`) inherits the parent's handles but not their slots.
//! Before the `Forked` error, such a child publishing through an inherited publisher of an
//! exclusive bus claimed the very position the parent would claim next (both cursors said
//! so), and one overwrote the other's committed record: a message lost without a trace. A
//! child receiving through an inherited subscriber moved the parent's read position. Every
//! operation of an inherited handle now fails with `Forked` in the child and leaves the bus
//! as it was; the child opens the bus again to take part. (Alone in its test binary: a fork
//! while other test threads hold locks could hang the child for reasons of its own.)

use std::time::{Duration, Instant};

use bus_core::{
    Bus, BusOptions, CommitError, JoinError, LoanError, LoanTimeoutError, Mode, RecvError,
    RecvTimeoutError, SendError, SendTimeoutError, Start, TryLoanError, TryRecvError, TrySendError,
};

/// The tests of this binary fork one at a time: a fork while another test thread holds a lock
/// (the allocator's, a bus's) could hang the child for reasons of its own.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `f` in a forked child and returns what it said went wrong (`Ok` if nothing). The
/// child's verdict comes back through a pipe; the child is bounded by an alarm and the
/// parent's wait by a deadline, after which the child is killed.
fn in_child(f: impl FnOnce() -> Result<(), String>) -> Result<(), String> {
    let mut fds = [0; 2];
    // SAFETY: two ints for the pipe's ends.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let (r, w) = (fds[0], fds[1]);
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    // SAFETY: the tests of this binary fork one at a time (above) and nothing else runs in
    // it; the child only runs bus code (glibc's malloc is fork-safe) and ends with `_exit`;
    // an alarm bounds it.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: in the child; SIGALRM's default action ends it if it hangs.
        unsafe { libc::alarm(30) };
        let verdict = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
            .unwrap_or_else(|_| Err("the child panicked".into()));
        let text = match verdict {
            Ok(()) => String::from("ok"),
            Err(e) => e,
        };
        // SAFETY: writing our own buffer to our pipe end, then ending the child without
        // running the parent's destructors (which would leave the parent's slots).
        unsafe {
            libc::write(w, text.as_ptr().cast(), text.len());
            libc::_exit(0);
        }
    }
    // SAFETY: closing the parent's copy of the write end, so that EOF comes with the child's.
    unsafe { libc::close(w) };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut status = 0;
    loop {
        // SAFETY: polling our own child.
        let done = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if done == pid {
            break;
        }
        if Instant::now() > deadline {
            // SAFETY: killing and reaping our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            panic!("the child hung");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut out = vec![0u8; 4096];
    // SAFETY: reading into our buffer; the child has exited, so this does not block.
    let n = unsafe { libc::read(r, out.as_mut_ptr().cast(), out.len()) };
    // SAFETY: closing our read end.
    unsafe { libc::close(r) };
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the child died (status {status:#x})"
    );
    let text = String::from_utf8_lossy(&out[..n.max(0) as usize]).into_owned();
    if text == "ok" {
        Ok(())
    } else {
        Err(text)
    }
}

fn expect<T, E: std::fmt::Debug>(
    what: &str,
    r: Result<T, E>,
    ok: impl Fn(&E) -> bool,
) -> Result<(), String> {
    match r {
        Err(e) if ok(&e) => Ok(()),
        Err(e) => Err(format!("{what}: {e:?}, expected Forked")),
        Ok(_) => Err(format!("{what} went through in the child")),
    }
}

fn options(producers: u32) -> BusOptions {
    BusOptions::new()
        .capacity(64 * 1024)
        .max_message(1024)
        .max_producers(producers)
        .mode(Mode::Reliable)
}

#[test]
fn inherited_handles_refuse_every_operation_in_a_forked_child() {
    for producers in [1, 4] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.bus");
        let bus = Bus::create(&path, &options(producers)).unwrap();
        let mut publ = bus.publisher().unwrap();
        let mut sub = bus.subscribe(Start::Latest).unwrap();
        publ.send(b"parent 0").unwrap();

        let child = in_child(|| {
            let mut buf = Vec::new();
            expect("send", publ.send(b"child"), |e| *e == SendError::Forked)?;
            expect("try_send", publ.try_send(b"child"), |e| {
                *e == TrySendError::Forked
            })?;
            for t in [Duration::ZERO, Duration::from_millis(1), Duration::MAX] {
                expect("send_timeout", publ.send_timeout(b"child", t), |e| {
                    *e == SendTimeoutError::Forked
                })?;
                expect("loan_timeout", publ.loan_timeout(8, t).map(|_| ()), |e| {
                    *e == LoanTimeoutError::Forked
                })?;
                expect("recv_timeout", sub.recv_timeout(&mut buf, t), |e| {
                    *e == RecvTimeoutError::Forked
                })?;
                expect(
                    "recv_ref_timeout",
                    sub.recv_ref_timeout(t).map(|_| ()),
                    |e| *e == RecvTimeoutError::Forked,
                )?;
            }
            expect("loan", publ.loan(8).map(|_| ()), |e| {
                *e == LoanError::Forked
            })?;
            expect("try_loan", publ.try_loan(8).map(|_| ()), |e| {
                *e == TryLoanError::Forked
            })?;
            expect("recv", sub.recv(&mut buf), |e| *e == RecvError::Forked)?;
            expect("recv_ref", sub.recv_ref().map(|_| ()), |e| {
                *e == RecvError::Forked
            })?;
            expect("try_recv", sub.try_recv(&mut buf), |e| {
                *e == TryRecvError::Forked
            })?;
            expect("try_recv_ref", sub.try_recv_ref().map(|_| ()), |e| {
                *e == TryRecvError::Forked
            })?;
            // What the child should do instead: open the bus and make its own handles.
            let own = Bus::open(&path).map_err(|e| e.to_string())?;
            let mut mine = own.subscribe(Start::Oldest).map_err(|e| e.to_string())?;
            let got = mine
                .recv_timeout(&mut buf, Duration::from_secs(5))
                .map_err(|e| e.to_string())?;
            if buf != b"parent 0" || got.seq != 0 {
                return Err(format!(
                    "the child's own subscriber read {buf:?} (seq {})",
                    got.seq
                ));
            }
            match own.publisher() {
                // The one producer slot is the (live) parent's.
                Err(JoinError::NoFreeSlot { .. }) if producers == 1 => {}
                Ok(mut p) if producers > 1 => {
                    p.send(b"child's own").map_err(|e| e.to_string())?;
                }
                other => {
                    return Err(format!(
                        "the child's own publisher: {:?}",
                        other.map(|_| ())
                    ))
                }
            }
            // Dropping the inherited handles leaves the parent's slots alone.
            // SAFETY: in the child only, which never returns to the parent's use of them
            // (it `_exit`s): these bitwise copies are the only live ones here.
            drop(unsafe { std::ptr::read(&publ) });
            // SAFETY: as above.
            drop(unsafe { std::ptr::read(&sub) });
            Ok(())
        });
        assert_eq!(child, Ok(()), "{producers} producer slot(s)");
        // The child's drops did not give the parent's slots back.
        let stats = bus.stats();
        assert_eq!(stats.subscribers.len(), 1, "{producers} producer slot(s)");
        assert_eq!(stats.producers.len(), 1, "{producers} producer slot(s)");
        if producers == 1 {
            assert!(matches!(bus.publisher(), Err(JoinError::NoFreeSlot { .. })));
        }

        // The parent's handles are untouched: its next message follows its first, and its
        // subscriber reads from where it was.
        publ.send(b"parent 1").unwrap();
        let mut buf = Vec::new();
        let mut seen = Vec::new();
        while let Ok(m) = sub.recv_timeout(&mut buf, Duration::from_millis(200)) {
            seen.push((m.seq, buf.clone()));
        }
        let mut want = vec![(0, b"parent 0".to_vec())];
        if producers > 1 {
            want.push((1, b"child's own".to_vec()));
            want.push((2, b"parent 1".to_vec()));
        } else {
            want.push((1, b"parent 1".to_vec()));
        }
        assert_eq!(seen, want, "{producers} producer slot(s)");
    }
}

#[test]
fn a_loan_taken_before_the_fork_commits_in_the_parent_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.bus");
    let bus = Bus::create(&path, &options(1)).unwrap();
    let mut publ = bus.publisher().unwrap();
    let mut sub = bus.subscribe(Start::Latest).unwrap();
    let mut loan = publ.loan(6).unwrap();
    loan.copy_from_slice(b"parent");
    let child = in_child(|| {
        // The same claim, in the child's copy of memory: committing it would publish the
        // parent's record; dropping it must not abandon it either. (Writing into it would
        // write into the ring: a loan is a view of the shared mapping, in either process.)
        let copy = unsafe_copy(&loan);
        expect("commit", copy.commit(), |e| *e == CommitError::Forked)
    });
    assert_eq!(child, Ok(()));
    loan.commit().unwrap();
    let mut buf = Vec::new();
    let m = sub.recv_timeout(&mut buf, Duration::from_secs(5)).unwrap();
    assert_eq!((m.seq, buf.as_slice()), (0, &b"parent"[..]));
    assert!(matches!(
        sub.recv_timeout(&mut buf, Duration::from_millis(100)),
        Err(RecvTimeoutError::Timeout)
    ));
}

/// The child's copy of a loan it inherited: the same bytes as the parent's `Loan` (fork copied
/// the memory), taken over by value so that the child can commit it. Only in the child, which
/// never returns to the parent's use of `loan`.
fn unsafe_copy<'a>(loan: &bus_core::Loan<'a>) -> bus_core::Loan<'a> {
    // SAFETY: in the forked child only: the parent's `loan` is never used by this process
    // again (the child `_exit`s), so the bitwise copy is the only live one here.
    unsafe { std::ptr::read(loan) }
}
