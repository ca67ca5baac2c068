//! Real processes on one bus: the guarantees of each mode, checked message by message by
//! `bus-peer` (see its module doc for the message format it verifies).

use std::time::{Duration, Instant};

use bus_core::{Bus, BusOptions, Mode};
use testkit::{eventually, Procs};

const PEER: &str = env!("CARGO_BIN_EXE_bus-peer");

/// `done delivered=D lost=L hash=H` -> (D, L, H)
fn parse_done(line: &str) -> (u64, u64, String) {
    let mut d = 0;
    let mut l = 0;
    let mut h = String::new();
    for kv in line.split_whitespace().skip(1) {
        let (k, v) = kv.split_once('=').unwrap();
        match k {
            "delivered" => d = v.parse().unwrap(),
            "lost" => l = v.parse().unwrap(),
            "hash" => h = v.to_string(),
            _ => {}
        }
    }
    (d, l, h)
}

/// `producers` producer processes; a bus with one producer slot when there is one producer
/// (exclusive: plain-store claims and commits, readers' membarrier before sleeping).
fn run_producers_and_consumers(
    mode: Mode,
    capacity: u64,
    producers: u64,
    per_producer: u64,
    (min, max): (usize, usize),
    consumers: &[&[&str]],
    limit: Duration,
) -> Vec<(u64, u64, String)> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mp.bus");
    Bus::create(
        &path,
        &BusOptions::new()
            .capacity(capacity)
            .max_message(max as u32)
            .max_producers(if producers == 1 { 1 } else { 64 })
            .mode(mode),
    )
    .unwrap();
    let path = path.to_str().unwrap().to_string();
    let total = (producers * per_producer).to_string();
    let (min_s, max_s, seed) = (min.to_string(), max.to_string(), "42".to_string());
    let mut procs = Procs::new(limit);
    let subs: Vec<usize> = consumers
        .iter()
        .enumerate()
        .map(|(i, extra)| {
            let mut args = vec!["consume", &path, &total, &min_s, &max_s, &seed];
            args.extend_from_slice(extra);
            procs.spawn(&format!("consumer {i}"), PEER, &args)
        })
        .collect();
    for &s in &subs {
        procs.expect_line(s, "ready");
    }
    let count = per_producer.to_string();
    let prods: Vec<usize> = (0..producers)
        .map(|id| {
            let id = id.to_string();
            procs.spawn(
                &format!("producer {id}"),
                PEER,
                &["produce", &path, &id, &count, &min_s, &max_s, &seed],
            )
        })
        .collect();
    for p in prods {
        procs.success(p);
    }
    subs.into_iter()
        .map(|s| {
            let line = procs.expect_line(s, "done");
            println!("consumer: {line}");
            procs.success(s);
            parse_done(&line)
        })
        .collect()
}

#[test]
fn reliable_three_producers_three_subscribers_a_million_messages() {
    // 3 x 333,334 messages of 1 byte to 64 KiB through a 1 MiB ring: producers spend most
    // of their time waiting for the slowest subscriber.
    let per = 333_334;
    let results = run_producers_and_consumers(
        Mode::Reliable,
        1 << 20,
        3,
        per,
        (1, 64 * 1024),
        &[&["strict"], &["strict"], &["strict"]],
        Duration::from_secs(600),
    );
    for (delivered, lost, _) in &results {
        assert_eq!(*delivered, 3 * per, "every message exactly once");
        assert_eq!(*lost, 0);
    }
    assert!(
        results.iter().all(|r| r.2 == results[0].2),
        "all subscribers saw the same total order: {results:?}"
    );
}

#[test]
fn an_exclusive_producer_delivers_exactly_once_to_sleeping_subscribers() {
    // One producer slot: plain-store claims and commits, and subscribers that sleep
    // (SpinThenBlock) rely on their membarrier before each sleep to be woken. The napping
    // subscriber falls asleep often; the ring is small, so the producer waits for it too.
    let per = 200_000;
    let results = run_producers_and_consumers(
        Mode::Reliable,
        64 * 1024,
        1,
        per,
        (1, 4096),
        &[&["strict"], &["strict", "1000", "500"]],
        Duration::from_secs(300),
    );
    for (delivered, lost, _) in &results {
        assert_eq!(*delivered, per, "every message exactly once");
        assert_eq!(*lost, 0);
    }
    assert_eq!(results[0].2, results[1].2, "the same order: {results:?}");
}

#[test]
fn an_exclusive_producer_in_lossy_mode_accounts_for_every_message() {
    let per = 200_000;
    let results = run_producers_and_consumers(
        Mode::Lossy,
        64 * 1024,
        1,
        per,
        (9, 2048),
        &[&["lossy"], &["lossy", "500", "2000"]],
        Duration::from_secs(300),
    );
    for (delivered, lost, _) in &results {
        assert_eq!(delivered + lost, per, "delivered + lost == published");
    }
    assert!(
        results[1].1 > 0,
        "the slow subscriber was lapped: {results:?}"
    );
}

#[test]
fn lossy_with_a_slow_subscriber_accounts_for_every_message() {
    let per = 100_000;
    let results = run_producers_and_consumers(
        Mode::Lossy,
        256 * 1024,
        3,
        per,
        (9, 2048),
        // A subscriber that keeps up as best it can, and one that naps 2 ms every 500.
        &[&["lossy"], &["lossy", "500", "2000"]],
        Duration::from_secs(300),
    );
    for (delivered, lost, _) in &results {
        assert_eq!(delivered + lost, 3 * per, "delivered + lost == published");
    }
    assert!(
        results[1].1 > 0,
        "the slow subscriber was lapped: {results:?}"
    );
}

#[test]
fn a_killed_subscriber_unblocks_a_waiting_producer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.bus");
    let bus = Bus::create(
        &path,
        &BusOptions::new().capacity(64 * 1024).max_message(1024),
    )
    .unwrap();
    let p = path.to_str().unwrap();
    let mut procs = Procs::new(Duration::from_secs(120));
    let stalled = procs.spawn("stalled subscriber", PEER, &["stall", p]);
    procs.expect_line(stalled, "ready");
    // Far more than the ring holds.
    let producer = procs.spawn(
        "producer",
        PEER,
        &["produce", p, "0", "2000", "100", "1000", "7"],
    );
    assert!(
        eventually(Duration::from_secs(60), || bus.stats().producers_waiting
            > 0),
        "the producer should block on the full ring"
    );
    let tail = bus.stats().tail_seq;
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        procs.is_running(producer),
        "blocked while the subscriber lives"
    );
    assert_eq!(
        bus.stats().tail_seq,
        tail,
        "no progress while the subscriber lives"
    );

    // A reader that died between raising the readers' waiting count and flagging its slot
    // leaves a count nobody gives back; fake one (the count is at offset 388 of the header,
    // see layout.rs) and check that the eviction below repairs it.
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(&3u32.to_ne_bytes(), 388).unwrap();
    }
    assert_eq!(bus.stats().readers_waiting, 3);

    let killed = Instant::now();
    procs.signal(stalled, libc::SIGKILL);
    procs.success(producer);
    let resumed_after = killed.elapsed();
    println!("producer finished {resumed_after:?} after the subscriber was killed");
    let st = bus.stats();
    assert_eq!(st.tail_seq, 2000);
    assert!(st.evicted >= 1);
    assert!(st.subscribers.is_empty());
    assert_eq!(
        st.producers_waiting, 0,
        "the dead sleeper's count was given back"
    );
    assert_eq!(
        st.readers_waiting, 0,
        "the leaked readers' count was given back"
    );
}

#[test]
fn processes_racing_to_create_share_one_bus() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("race.bus");
    let p = path.to_str().unwrap();
    let mut procs = Procs::new(Duration::from_secs(60));
    // Each consumer opens; the bus is created by the first of several racing creators.
    let creators: Vec<usize> = (0..4)
        .map(|i| procs.spawn(&format!("creator {i}"), PEER, &["create-or-open", p]))
        .collect();
    let created: Vec<String> = creators
        .into_iter()
        .map(|c| procs.expect_line(c, "created_unix_ns="))
        .collect();
    assert!(created.iter().all(|c| c == &created[0]), "{created:?}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

/// Review of round 2: `open_or_create` created first, reserving a whole ring before it found
/// the name taken, so on a file system without room for a second copy (a container's 64 MiB
/// /dev/shm) it failed with NoSpace on a bus that existed. Here the process may not write a
/// file past 4 KiB (RLIMIT_FSIZE): it must open the existing bus, as it now does first.
#[test]
fn open_or_create_opens_an_existing_bus_without_room_for_another() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("full.bus");
    let bus = Bus::create(&path, &BusOptions::new().capacity(1 << 20)).unwrap();
    let mut cmd = std::process::Command::new(PEER);
    cmd.args(["create-or-open", path.to_str().unwrap()]);
    // SAFETY: setrlimit and signal are async-signal-safe; they only change this child.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 4096,
                rlim_max: 4096,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        });
    }
    let mut procs = Procs::new(Duration::from_secs(60));
    let peer = procs.spawn_command("create-or-open", cmd);
    let line = procs.expect_line(peer, "created_unix_ns=");
    assert_eq!(
        line,
        format!("created_unix_ns={}", bus.config().created_unix_ns),
        "the existing bus"
    );
    procs.success(peer);
}

/// Review of round 2: the liveness probe asked about any lock, so a process that may only
/// read the bus file (`stat`, a backup tool) could read-lock it and make every dead
/// participant look alive: never evicted, a reliable bus wedged. Only write locks (which a
/// participant holds) count now.
#[test]
fn a_read_lock_by_a_reader_of_the_file_does_not_make_the_dead_look_alive() {
    use std::os::fd::AsRawFd;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rl.bus");
    let bus = Bus::create(&path, &BusOptions::new().capacity(1 << 16)).unwrap();
    let mut procs = Procs::new(Duration::from_secs(60));
    let sub = procs.spawn(
        "stalled subscriber",
        PEER,
        &["stall", path.to_str().unwrap()],
    );
    procs.expect_line(sub, "ready");
    assert!(bus.stats().subscribers[0].alive);
    procs.signal(sub, libc::SIGKILL);
    let _ = procs.wait(sub);
    // A reader of the file read-locks all of it (an OFD lock, as `fcntl.lockf` would take a
    // POSIX one: the two kinds conflict alike).
    let reader = std::fs::File::open(&path).unwrap();
    // SAFETY: an all-zero flock is valid; F_OFD_SETLK reads it during the call.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_RDLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    // SAFETY: a valid descriptor and flock.
    let r = unsafe { libc::fcntl(reader.as_raw_fd(), libc::F_OFD_SETLK, &mut fl) };
    assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
    let st = bus.stats();
    assert_eq!(st.subscribers.len(), 1);
    assert!(
        !st.subscribers[0].alive,
        "the killed subscriber reads as dead"
    );
    drop(reader);
}

/// A producer holding a claim: stopped, it is waited for; killed, its record is skipped.
fn a_dead_producers_claim_is_unblocked(mode: Mode) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("u.bus");
    let bus = Bus::create(
        &path,
        &BusOptions::new()
            .capacity(64 * 1024)
            .mode(mode)
            .unblock_timeout(Duration::from_millis(100)),
    )
    .unwrap();
    let mut sub = bus.subscribe(bus_core::Start::Latest).unwrap();
    let mut procs = Procs::new(Duration::from_secs(60));
    let hung = procs.spawn(
        "producer in a loan",
        PEER,
        &["hang-in-loan", path.to_str().unwrap()],
    );
    procs.expect_line(hung, "loaned seq=0");
    let mut publ = bus.publisher().unwrap();
    publ.send(b"after").unwrap();
    let mut buf = Vec::new();
    // Alive, then stopped (SIGSTOP): liveness decides, not time, so nobody unblocks it.
    assert_eq!(
        sub.recv_timeout(&mut buf, Duration::from_millis(400)),
        Err(bus_core::RecvTimeoutError::Timeout)
    );
    procs.signal(hung, libc::SIGSTOP);
    assert_eq!(
        sub.recv_timeout(&mut buf, Duration::from_millis(400)),
        Err(bus_core::RecvTimeoutError::Timeout)
    );
    assert_eq!(bus.stats().unblocked, 0);

    let killed = Instant::now();
    procs.signal(hung, libc::SIGKILL);
    let first = sub.recv_timeout(&mut buf, Duration::from_secs(10));
    let m = match mode {
        Mode::Reliable => first.unwrap(),
        Mode::Lossy => {
            assert_eq!(
                first,
                Err(bus_core::RecvTimeoutError::Lost(1)),
                "counted as lost"
            );
            sub.recv_timeout(&mut buf, Duration::from_secs(10)).unwrap()
        }
    };
    println!(
        "{mode}: reader went on {:?} after the producer was killed",
        killed.elapsed()
    );
    assert_eq!((m.seq, &buf[..]), (1, &b"after"[..]));
    assert_eq!(sub.unblocked(), 1);
    assert_eq!(bus.stats().unblocked, 1);
}

#[test]
fn a_dead_producers_claim_is_unblocked_reliable() {
    a_dead_producers_claim_is_unblocked(Mode::Reliable);
}

#[test]
fn a_dead_producers_claim_is_unblocked_lossy() {
    a_dead_producers_claim_is_unblocked(Mode::Lossy);
}
