//! The bus in one process: files, errors, publish/receive semantics of both modes.
//! (Multi-process behaviour is in `multiprocess.rs`.)

use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::time::Duration;

use bus_core::{
    Bus, BusOptions, FileKind, HeaderError, JoinError, Mode, OpenErrorKind, OpenOptions,
    RecvTimeoutError, SendError, SendTimeoutError, SlotKind, Start, SubscribeError, TryRecvError,
    TrySendError, WaitStrategy,
};

fn small(mode: Mode) -> BusOptions {
    BusOptions::new()
        .capacity(64 * 1024)
        .max_message(4096)
        .mode(mode)
}

fn dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[test]
fn create_then_open_sees_the_same_bus() {
    let d = dir();
    let path = d.path().join("a.bus");
    let bus = Bus::create(&path, &small(Mode::Lossy)).unwrap();
    assert_eq!(bus.mode(), Mode::Lossy);
    let again = Bus::open(&path).unwrap();
    assert_eq!(again.config(), bus.config());
    let err = Bus::create(&path, &small(Mode::Reliable)).unwrap_err();
    assert_eq!(err.kind, OpenErrorKind::AlreadyExists);
    assert_eq!(err.path, path);
    assert!(err.to_string().contains("a.bus"), "{err}");
}

#[test]
fn files_are_created_0600_and_honour_the_umask_and_file_mode() {
    let d = dir();
    let p = d.path().join("m.bus");
    Bus::create(&p, &small(Mode::Reliable)).unwrap();
    assert_eq!(
        std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let q = d.path().join("g.bus");
    Bus::create(&q, &small(Mode::Reliable).file_mode(0o640)).unwrap();
    let mode = std::fs::metadata(&q).unwrap().permissions().mode() & 0o777;
    // The umask can only remove bits.
    assert_eq!(mode & !0o640, 0);
    assert_eq!(mode & 0o600, 0o600);
}

/// Review of round 2: modes were masked with 0o7777, so set-user-id, set-group-id and
/// sticky bits reached a data file, and larger values were silently cut.
#[test]
fn a_file_mode_beyond_the_permission_bits_is_refused() {
    let d = dir();
    for mode in [0o7777, 0o4600, 0o2660, 0o1666, 0o1000, 1 << 31, u32::MAX] {
        let p = d.path().join(format!("m{mode:o}.bus"));
        let options = small(Mode::Reliable).file_mode(mode);
        assert_eq!(
            options.check(),
            Err(bus_core::ConfigError::FileModeOutOfRange { mode })
        );
        let e = Bus::create(&p, &options).unwrap_err();
        assert!(
            matches!(
                e.kind,
                OpenErrorKind::InvalidOptions(bus_core::ConfigError::FileModeOutOfRange { .. })
            ),
            "{mode:o}: {e}"
        );
        assert!(e.to_string().contains("file mode"), "{e}");
        assert!(!p.exists(), "{mode:o}: nothing is created");
    }
    let p = d.path().join("all.bus");
    Bus::create(&p, &small(Mode::Reliable).file_mode(0o777)).unwrap();
    assert_eq!(
        std::fs::metadata(&p).unwrap().permissions().mode() & !0o777,
        0o100000
    );
}

#[test]
fn racing_creators_end_on_one_file() {
    let d = dir();
    let path = d.path().join("race.bus");
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let path = path.clone();
            std::thread::spawn(move || Bus::open_or_create(&path, &small(Mode::Reliable)).unwrap())
        })
        .collect();
    let buses: Vec<Bus> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let created = buses[0].config().created_unix_ns;
    assert!(buses.iter().all(|b| b.config().created_unix_ns == created));
    // One file, no temporary leftovers.
    let names: Vec<_> = std::fs::read_dir(d.path()).unwrap().collect();
    assert_eq!(names.len(), 1);
}

#[test]
fn open_errors_name_the_problem() {
    let d = dir();
    let missing = d.path().join("missing.bus");
    assert_eq!(
        Bus::open(&missing).unwrap_err().kind,
        OpenErrorKind::NotFound
    );

    let sub = d.path().join("adir");
    std::fs::create_dir(&sub).unwrap();
    assert_eq!(
        Bus::open(&sub).unwrap_err().kind,
        OpenErrorKind::NotARegularFile {
            kind: FileKind::Directory
        }
    );

    let fifo = d.path().join("fifo");
    rustix_mkfifo(&fifo);
    assert_eq!(
        Bus::open(&fifo).unwrap_err().kind,
        OpenErrorKind::NotARegularFile {
            kind: FileKind::Fifo
        }
    );

    let empty = d.path().join("empty.bus");
    std::fs::write(&empty, b"").unwrap();
    assert!(matches!(
        Bus::open(&empty).unwrap_err().kind,
        OpenErrorKind::Header(HeaderError::FileTooSmall { size: 0, .. })
    ));

    let garbage = d.path().join("garbage.bus");
    std::fs::write(&garbage, vec![0xa5u8; 8192]).unwrap();
    assert!(matches!(
        Bus::open(&garbage).unwrap_err().kind,
        OpenErrorKind::Header(HeaderError::BadMagic { .. })
    ));

    let real = d.path().join("real.bus");
    Bus::create(&real, &small(Mode::Reliable)).unwrap();
    let link = d.path().join("link.bus");
    symlink(&real, &link).unwrap();
    assert_eq!(
        Bus::open(&link).unwrap_err().kind,
        OpenErrorKind::SymbolicLink
    );
    Bus::open_with(&link, &OpenOptions::new().follow_symlinks(true)).unwrap();

    // A header from a future version.
    let future = d.path().join("future.bus");
    std::fs::copy(&real, &future).unwrap();
    patch(
        &future,
        8,
        &(bus_core::layout::FORMAT_VERSION + 1).to_ne_bytes(),
    );
    assert!(matches!(
        Bus::open(&future).unwrap_err().kind,
        OpenErrorKind::Header(HeaderError::UnsupportedVersion { .. })
    ));

    // Files of format 1 (round 1: unkeyed record checks, 16-bit GAP checks) and 2 (no type
    // record, which typed handles of older builds ignore): refused with the typed version
    // error, never read with the new rules.
    for version in [1u32, 2] {
        let old = d.path().join(format!("v{version}.bus"));
        std::fs::copy(&real, &old).unwrap();
        patch(&old, 8, &version.to_ne_bytes());
        assert_eq!(
            Bus::open(&old).unwrap_err().kind,
            OpenErrorKind::Header(HeaderError::UnsupportedVersion {
                found: version,
                supported: 3
            })
        );
    }

    // Truncated by a page.
    let short = d.path().join("short.bus");
    std::fs::copy(&real, &short).unwrap();
    let len = std::fs::metadata(&short).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&short)
        .unwrap()
        .set_len(len - 4096)
        .unwrap();
    assert!(matches!(
        Bus::open(&short).unwrap_err().kind,
        OpenErrorKind::Header(HeaderError::SizeMismatch { .. })
    ));

    // Ring positions that cannot be (head after tail).
    let bad = d.path().join("badring.bus");
    std::fs::copy(&real, &bad).unwrap();
    patch(&bad, 256, &1_000_000u64.to_ne_bytes());
    assert!(matches!(
        Bus::open(&bad).unwrap_err().kind,
        OpenErrorKind::RingStateCorrupt { .. }
    ));

    // Invalid options are refused before any file appears.
    let opts = BusOptions::new().capacity(3000);
    assert!(matches!(
        Bus::create(d.path().join("x.bus"), &opts).unwrap_err().kind,
        OpenErrorKind::InvalidOptions(_)
    ));
    assert!(!d.path().join("x.bus").exists());
    assert_eq!(
        Bus::create(d.path().join("nodir/x.bus"), &small(Mode::Lossy))
            .unwrap_err()
            .kind,
        OpenErrorKind::DirectoryNotFound
    );
}

fn patch(path: &std::path::Path, offset: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, offset).unwrap();
}

fn rustix_mkfifo(path: &std::path::Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc_mkfifo(c.as_ptr(), 0o600) }, 0);
}

extern "C" {
    #[link_name = "mkfifo"]
    fn libc_mkfifo(path: *const std::ffi::c_char, mode: u32) -> i32;
}

#[test]
fn send_and_receive_in_order_with_sequences() {
    let d = dir();
    let bus = Bus::create(d.path().join("b.bus"), &small(Mode::Reliable)).unwrap();
    let mut sub = bus.subscribe(Start::Latest).unwrap();
    let mut publ = bus.publisher().unwrap();
    let mut buf = Vec::new();
    assert_eq!(sub.try_recv(&mut buf), Err(TryRecvError::Empty));
    for i in 0..1000u32 {
        let sent = publ
            .send(&i.to_le_bytes().repeat(1 + (i % 7) as usize))
            .unwrap();
        assert_eq!(sent.seq, i as u64);
    }
    for i in 0..1000u32 {
        let m = sub.recv(&mut buf).unwrap();
        assert_eq!(m.seq, i as u64);
        assert_eq!(buf, i.to_le_bytes().repeat(1 + (i % 7) as usize));
    }
    assert_eq!(
        sub.recv_timeout(&mut buf, Duration::from_millis(20)),
        Err(RecvTimeoutError::Timeout)
    );
    assert_eq!(
        publ.send(&[0; 4097]),
        Err(SendError::MessageTooLarge {
            len: 4097,
            max: 4096
        })
    );
    // Empty messages are messages.
    publ.send(b"").unwrap();
    assert_eq!(sub.recv(&mut buf).unwrap().len, 0);
}

#[test]
fn reliable_waits_for_the_slowest_subscriber() {
    let d = dir();
    let bus = Bus::create(d.path().join("r.bus"), &small(Mode::Reliable)).unwrap();
    let mut fast = bus.subscribe(Start::Latest).unwrap();
    let mut slow = bus.subscribe(Start::Latest).unwrap();
    let mut publ = bus.publisher().unwrap();
    let mut buf = Vec::new();
    let mut sent = 0u64;
    loop {
        match publ.try_send(&[7; 1000]) {
            Ok(_) => sent += 1,
            Err(TrySendError::Full) => break,
            Err(e) => panic!("{e}"),
        }
        // The fast one keeps up; it must not be what fills the ring.
        fast.recv(&mut buf).unwrap();
    }
    assert!(
        (60..=65).contains(&sent),
        "64 KiB holds about 64 records of 1 KiB, sent {sent}"
    );
    assert_eq!(
        publ.send_timeout(&[7; 1000], Duration::from_millis(30)),
        Err(SendTimeoutError::Timeout)
    );
    for _ in 0..sent {
        slow.recv(&mut buf).unwrap();
    }
    // Caught up (and the position published): room again.
    assert_eq!(slow.try_recv(&mut buf), Err(TryRecvError::Empty));
    publ.try_send(&[8; 1000]).unwrap();
    drop(slow);
    // With the slow subscriber gone only the fast one counts.
    for _ in 0..200 {
        publ.send(&[9; 1000]).unwrap();
        fast.recv(&mut buf).unwrap();
    }
}

#[test]
fn lossy_reports_exactly_what_was_lost() {
    let d = dir();
    let bus = Bus::create(d.path().join("l.bus"), &small(Mode::Lossy)).unwrap();
    let mut sub = bus.subscribe(Start::Latest).unwrap();
    let mut publ = bus.publisher().unwrap();
    let total = 5000u64;
    for i in 0..total {
        publ.try_send(&i.to_le_bytes().repeat(10)).unwrap();
    }
    let mut buf = Vec::new();
    let (mut delivered, mut lost, mut last) = (0u64, 0u64, None);
    loop {
        match sub.try_recv(&mut buf) {
            Ok(m) => {
                let v = u64::from_le_bytes(buf[..8].try_into().unwrap());
                assert_eq!(v, m.seq, "payload matches its sequence");
                assert!(last.is_none_or(|l| m.seq > l));
                last = Some(m.seq);
                delivered += 1;
            }
            Err(TryRecvError::Lost(n)) => lost += n,
            Err(TryRecvError::Empty) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(lost > 0);
    assert_eq!(delivered + lost, total);
    assert_eq!(sub.lost(), lost);
    assert_eq!(last, Some(total - 1));
}

#[test]
fn start_oldest_and_resume_at_a_position() {
    let d = dir();
    let path = d.path().join("p.bus");
    {
        let bus = Bus::create(&path, &small(Mode::Reliable)).unwrap();
        let mut publ = bus.publisher().unwrap();
        for i in 0..10u8 {
            publ.send(&[i; 100]).unwrap();
        }
    }
    // Every process has let go: the messages are still in the file.
    let bus = Bus::open(&path).unwrap();
    let mut sub = bus.subscribe(Start::Oldest).unwrap();
    let mut buf = Vec::new();
    for i in 0..4u8 {
        sub.recv(&mut buf).unwrap();
        assert_eq!(buf, [i; 100]);
    }
    let saved = sub.position();
    drop(sub);
    let mut resumed = bus.subscribe(Start::Position(saved)).unwrap();
    assert_eq!(resumed.recv(&mut buf).unwrap().seq, 4);
    assert_eq!(buf, [4; 100]);
    assert_eq!(
        bus.subscribe(Start::Position(saved + 16)).unwrap_err(),
        SubscribeError::NotARecord {
            requested: saved + 16
        }
    );
    assert!(matches!(
        bus.subscribe(Start::Position(1 << 40)).unwrap_err(),
        SubscribeError::PositionNotRetained { .. }
    ));
    let mut latest = bus.subscribe(Start::Latest).unwrap();
    assert_eq!(latest.try_recv(&mut buf), Err(TryRecvError::Empty));
    bus.flush().unwrap();
}

#[test]
fn a_loan_is_committed_or_abandoned() {
    let d = dir();
    let bus = Bus::create(d.path().join("z.bus"), &small(Mode::Reliable)).unwrap();
    let mut sub = bus.subscribe(Start::Latest).unwrap();
    let mut publ = bus.publisher().unwrap();
    let mut loan = publ.loan(5).unwrap();
    loan.copy_from_slice(b"hello");
    assert_eq!(loan.seq(), 0);
    loan.commit().unwrap();
    {
        let mut dropped = publ.loan(3).unwrap();
        dropped.copy_from_slice(b"bye");
    }
    publ.send(b"after").unwrap();
    let s = sub.recv_ref().unwrap();
    assert_eq!((&s[..], s.seq), (&b"hello"[..], 0));
    let s = sub.recv_ref().unwrap();
    assert_eq!(
        (&s[..], s.seq),
        (&b"after"[..], 2),
        "the abandoned loan took seq 1"
    );
    assert_eq!(bus.stats().producers[0].abandoned, 1);
}

/// Issue 8: a loan leaked with `mem::forget` is neither committed nor abandoned; the next
/// claim of its publisher abandons it (readers move on at once, no repair, and on an
/// exclusive bus head never jumps past an open claim), and so does dropping the publisher.
#[test]
fn a_leaked_loan_is_abandoned_by_the_next_claim_or_the_drop() {
    for producers in [1, 4] {
        let d = dir();
        let opts = small(Mode::Reliable).max_producers(producers);
        let bus = Bus::create(d.path().join("f.bus"), &opts).unwrap();
        let mut sub = bus.subscribe(Start::Latest).unwrap();
        let mut publ = bus.publisher().unwrap();
        let mut leaked = publ.loan(4).unwrap();
        leaked.copy_from_slice(b"lost");
        std::mem::forget(leaked);
        let mut buf = Vec::new();
        assert_eq!(sub.try_recv(&mut buf), Err(TryRecvError::Empty));
        publ.try_send(b"next").unwrap();
        let m = sub.try_recv(&mut buf).unwrap();
        assert_eq!(
            (m.seq, &buf[..]),
            (1, &b"next"[..]),
            "producers {producers}"
        );
        // Every kind of claim abandons it: a loan too, and the drop.
        std::mem::forget(publ.try_loan(3).unwrap());
        let mut l = publ.loan_timeout(3, Duration::from_millis(1)).unwrap();
        l.copy_from_slice(b"3rd");
        l.commit().unwrap();
        assert_eq!(sub.try_recv(&mut buf).unwrap().seq, 3);
        std::mem::forget(publ.loan(2).unwrap());
        drop(publ);
        let mut publ = bus.publisher().unwrap();
        publ.send(b"last").unwrap();
        let m = sub.recv_timeout(&mut buf, Duration::from_secs(5)).unwrap();
        assert_eq!((m.seq, &buf[..]), (5, &b"last"[..]));
        let st = bus.stats();
        assert_eq!(st.unblocked, 0, "nothing waited for a repair");
        assert_eq!(sub.unblocked(), 0);
    }
}

/// Every variant of a call with a deadline takes any timeout: zero (a try), one nanosecond,
/// and `Duration::MAX` (no deadline; `Instant + MAX` would overflow).
#[test]
fn timeouts_from_zero_to_duration_max() {
    let d = dir();
    let bus = Bus::create(d.path().join("t.bus"), &small(Mode::Reliable)).unwrap();
    let mut sub = bus.subscribe(Start::Latest).unwrap();
    let mut publ = bus.publisher().unwrap();
    let mut buf = Vec::new();
    for t in [Duration::ZERO, Duration::from_nanos(1)] {
        assert_eq!(
            sub.recv_timeout(&mut buf, t),
            Err(RecvTimeoutError::Timeout)
        );
        assert_eq!(
            sub.recv_ref_timeout(t).map(|s| s.seq),
            Err(RecvTimeoutError::Timeout)
        );
    }
    for (i, t) in [Duration::ZERO, Duration::from_nanos(1), Duration::MAX]
        .into_iter()
        .enumerate()
    {
        publ.send_timeout(b"m", t).unwrap();
        publ.loan_timeout(1, t).unwrap().commit().unwrap();
        assert_eq!(sub.recv_timeout(&mut buf, t).unwrap().seq, 2 * i as u64);
        assert_eq!(sub.recv_ref_timeout(t).unwrap().seq, 2 * i as u64 + 1);
    }
}

#[test]
fn slots_run_out_and_come_back() {
    let d = dir();
    let bus = Bus::create(
        d.path().join("s.bus"),
        &small(Mode::Reliable).max_subscribers(2).max_producers(1),
    )
    .unwrap();
    let a = bus.subscribe(Start::Latest).unwrap();
    let _b = bus.subscribe(Start::Latest).unwrap();
    assert_eq!(
        bus.subscribe(Start::Latest).unwrap_err(),
        SubscribeError::Join(JoinError::NoFreeSlot {
            kind: SlotKind::Subscriber,
            max: 2
        })
    );
    let p = bus.publisher().unwrap();
    assert!(matches!(
        bus.publisher().unwrap_err(),
        JoinError::NoFreeSlot { max: 1, .. }
    ));
    drop(a);
    drop(p);
    bus.subscribe(Start::Latest).unwrap();
    bus.publisher().unwrap();
    let st = bus.stats();
    assert!(st
        .subscribers
        .iter()
        .all(|s| s.alive && s.pid == std::process::id()));
}

#[test]
fn a_sleeping_reader_is_woken_by_a_publish() {
    let d = dir();
    let bus = Bus::create(d.path().join("w.bus"), &small(Mode::Reliable)).unwrap();
    for strategy in [
        WaitStrategy::Block,
        WaitStrategy::SpinThenBlock,
        WaitStrategy::Spin,
    ] {
        let mut sub = bus.subscribe(Start::Latest).unwrap();
        sub.set_wait_strategy(strategy);
        let b2 = bus.clone();
        let t = std::thread::spawn(move || {
            let mut publ = b2.publisher().unwrap();
            for i in 0..200u32 {
                if i % 50 == 0 {
                    std::thread::sleep(Duration::from_millis(5));
                }
                publ.send(&i.to_le_bytes()).unwrap();
            }
        });
        let mut buf = Vec::new();
        for i in 0..200u32 {
            sub.recv_timeout(&mut buf, Duration::from_secs(20)).unwrap();
            assert_eq!(buf, i.to_le_bytes());
        }
        t.join().unwrap();
    }
}

#[test]
fn threads_share_one_total_order() {
    let d = dir();
    let bus = Bus::create(
        d.path().join("t.bus"),
        &BusOptions::new().capacity(1 << 16).max_message(2048),
    )
    .unwrap();
    const PER: u32 = 20_000;
    let subs: Vec<_> = (0..2)
        .map(|_| bus.subscribe(Start::Latest).unwrap())
        .collect();
    let readers: Vec<_> = subs
        .into_iter()
        .map(|mut sub| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut next = [0u32; 3];
                let mut order = Vec::with_capacity(3 * PER as usize);
                for _ in 0..3 * PER {
                    let m = sub.recv(&mut buf).unwrap();
                    let (id, i) = (
                        buf[0] as usize,
                        u32::from_le_bytes(buf[1..5].try_into().unwrap()),
                    );
                    assert_eq!(i, next[id], "producer {id} in order, exactly once");
                    assert_eq!(buf.len(), 5 + (i % 300) as usize);
                    next[id] += 1;
                    order.push(m.seq);
                }
                order
            })
        })
        .collect();
    let writers: Vec<_> = (0..3u8)
        .map(|id| {
            let bus = bus.clone();
            std::thread::spawn(move || {
                let mut publ = bus.publisher().unwrap();
                for i in 0..PER {
                    let mut m = vec![id];
                    m.extend_from_slice(&i.to_le_bytes());
                    m.resize(5 + (i % 300) as usize, 0xee);
                    publ.send(&m).unwrap();
                }
            })
        })
        .collect();
    writers.into_iter().for_each(|w| w.join().unwrap());
    let orders: Vec<Vec<u64>> = readers.into_iter().map(|r| r.join().unwrap()).collect();
    assert_eq!(orders[0], orders[1]);
    assert!(orders[0].iter().enumerate().all(|(i, &s)| s == i as u64));
}

#[test]
fn stats_describe_the_bus() {
    let d = dir();
    let bus = Bus::create(d.path().join("st.bus"), &small(Mode::Lossy)).unwrap();
    let mut sub = bus.subscribe(Start::Latest).unwrap();
    let mut publ = bus.publisher().unwrap();
    for _ in 0..3 {
        publ.send(&[1; 10]).unwrap();
    }
    let st = bus.stats();
    assert_eq!(st.tail_seq, 3);
    assert_eq!(st.tail_position, 3 * 32);
    assert_eq!(st.producers[0].sent, 3);
    assert_eq!(st.subscribers[0].lag_messages, 3);
    let mut buf = Vec::new();
    for _ in 0..3 {
        sub.recv(&mut buf).unwrap();
    }
    let _ = sub.try_recv(&mut buf);
    let st = bus.stats();
    assert_eq!(st.subscribers[0].lag_messages, 0);
    assert_eq!(st.subscribers[0].delivered, 3);
    let meta = std::fs::metadata(bus.path()).unwrap();
    assert_eq!(meta.len(), bus.config().file_size());
    assert!(
        meta.blocks() * 512 >= meta.len(),
        "blocks reserved up front"
    );
}

#[test]
fn a_forked_child_dropping_inherited_handles_leaves_the_parents_slots_alone() {
    // A child forked without exec shares the parent's liveness locks (same open file
    // descriptions). If dropping its copies gave the slots back, a second producer could join
    // an exclusive bus beside the live parent.
    let d = dir();
    let bus = Bus::create(
        d.path().join("fork.bus"),
        &small(Mode::Reliable).max_producers(1).max_subscribers(1),
    )
    .unwrap();
    let mut publ = bus.publisher().unwrap();
    let mut sub = bus.subscribe(Start::Latest).unwrap();
    // SAFETY: the child only drops the two handles (which, seeing another pid, close a
    // descriptor each and take no lock) and exits without running anything else.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        drop(publ);
        drop(sub);
        // SAFETY: ends the child at once, without the test harness's exit path.
        unsafe { libc::_exit(0) };
    }
    // Watchdog: the child must be gone within 10 s, or it is killed and the test fails.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut status = 0;
    loop {
        // SAFETY: waitpid on our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            break;
        }
        if std::time::Instant::now() > deadline {
            // SAFETY: kill and reap our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            panic!("the child did not exit");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    assert!(
        matches!(bus.publisher(), Err(JoinError::NoFreeSlot { .. })),
        "the producer slot is still the parent's"
    );
    assert!(matches!(
        bus.subscribe(Start::Latest),
        Err(SubscribeError::Join(JoinError::NoFreeSlot { .. }))
    ));
    publ.send(b"still mine").unwrap();
    let mut buf = Vec::new();
    sub.recv_timeout(&mut buf, Duration::from_secs(5)).unwrap();
    assert_eq!(buf, b"still mine");
}

/// Review of round 2: `create --force` removed the old bus and then created a new one, so an
/// `open` in between found nothing, and two at once could fail or orphan each other's bus.
/// `create_replacing` renames the finished file over the old one: openers always find a
/// bus, every replacement succeeds, nothing is left behind but the one file.
#[test]
fn replacing_a_bus_never_leaves_the_path_empty() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.bus");
    let old = Bus::create(&path, &BusOptions::new().capacity(1 << 16)).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let opener = {
        let (path, stop) = (path.clone(), stop.clone());
        std::thread::spawn(move || -> Result<u64, bus_core::OpenError> {
            let mut opens = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                Bus::open(&path)?;
                opens += 1;
            }
            Ok(opens)
        })
    };
    let replacers: Vec<_> = (0..4)
        .map(|i| {
            let path = path.clone();
            std::thread::spawn(move || {
                (0..25)
                    .map(|_| {
                        Bus::create_replacing(&path, &BusOptions::new().capacity(1 << (14 + i)))
                            .map(|_| ())
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for r in replacers {
        let results = r.join().unwrap();
        assert!(results.iter().all(Result::is_ok), "{results:?}");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let opens = opener
        .join()
        .unwrap()
        .expect("an open found no bus at the path");
    assert!(opens > 0);
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        vec![std::ffi::OsString::from("r.bus")],
        "nothing left behind"
    );
    // Whoever had the old bus keeps it, detached from the path.
    let mut sub = old.subscribe(bus_core::Start::Latest).unwrap();
    let mut publ = old.publisher().unwrap();
    publ.send(b"still here").unwrap();
    let mut buf = Vec::new();
    sub.recv(&mut buf).unwrap();
    assert_eq!(buf, b"still here");
    // A directory at the path is not replaced.
    let d = dir.path().join("d.bus");
    std::fs::create_dir(&d).unwrap();
    let e = Bus::create_replacing(&d, &BusOptions::new().capacity(1 << 16)).unwrap_err();
    assert!(
        matches!(e.kind, bus_core::OpenErrorKind::NotARegularFile { .. }),
        "{e}"
    );
    assert!(d.is_dir());
}
