//! Crashes at every point of the protocol, in real processes: producers killed (or stopped)
//! exactly after claim, in the middle of the payload copy and before commit; a process killed
//! holding the control lock; a repairer killed half-way; a crash loop of 200 rounds; a
//! process scribbling over the ring. Fault points come from bus-core's `fault-injection`
//! feature (see src/fault.rs), which the tests turn on through testkit.

use std::process::Command;
use std::time::{Duration, Instant};

use bus_core::{Bus, BusOptions, Mode, RecvTimeoutError, Start, Subscriber, TryRecvError};
use testkit::{eventually, Procs};

const PEER: &str = env!("CARGO_BIN_EXE_bus-peer");
const SEED: &str = "11";

fn bus(dir: &tempfile::TempDir, mode: Mode, unblock_ms: u64) -> (Bus, String) {
    bus_with_producers(dir, mode, unblock_ms, 64)
}

/// A bus with `producers` producer slots (1: exclusive, plain-store claims and commits).
fn bus_with_producers(
    dir: &tempfile::TempDir,
    mode: Mode,
    unblock_ms: u64,
    producers: u32,
) -> (Bus, String) {
    let path = dir.path().join("c.bus");
    let bus = Bus::create(
        &path,
        &BusOptions::new()
            .capacity(64 * 1024)
            .max_message(1024)
            .mode(mode)
            .max_producers(producers)
            .unblock_timeout(Duration::from_millis(unblock_ms)),
    )
    .unwrap();
    (bus, path.to_str().unwrap().to_string())
}

fn peer(args: &[&str], fault: Option<&str>) -> Command {
    let mut c = Command::new(PEER);
    c.args(args);
    if let Some(f) = fault {
        c.env("SHMBUS_FAULT", f);
    }
    c
}

/// `(producer id, index)` of a bus-peer message.
fn parse(msg: &[u8]) -> (u8, u64) {
    (msg[0], u64::from_le_bytes(msg[1..9].try_into().unwrap()))
}

/// Reads until producer 0's message `last`; returns how many messages of producer 1 came, and
/// the losses reported. Checks each producer's order.
fn read_until(sub: &mut Subscriber, last: u64) -> (u64, u64) {
    let mut next = [0u64; 2];
    let mut lost = 0;
    let mut buf = Vec::new();
    loop {
        match sub.recv_timeout(&mut buf, Duration::from_secs(20)) {
            Ok(_) => {
                let (id, index) = parse(&buf);
                assert_eq!(
                    index, next[id as usize],
                    "producer {id} in order, exactly once"
                );
                next[id as usize] += 1;
                if id == 0 && index == last {
                    return (next[1], lost);
                }
            }
            Err(RecvTimeoutError::Lost(n)) => lost += n,
            Err(e) => panic!("subscriber: {e} (after {next:?})"),
        }
    }
}

#[test]
fn a_producer_killed_at_every_fault_point_never_wedges_the_bus() {
    // On an exclusive bus (one producer slot) the survivor can join only once the victim's
    // slot is freed, and its claims are plain stores: the repair must still win.
    for (mode, producers) in [
        (Mode::Reliable, 64),
        (Mode::Lossy, 64),
        (Mode::Reliable, 1),
        (Mode::Lossy, 1),
    ] {
        for point in ["after-claim", "mid-copy", "before-commit"] {
            let dir = tempfile::tempdir().unwrap();
            let (bus, p) = bus_with_producers(&dir, mode, 50, producers);
            let mut sub = bus.subscribe(Start::Latest).unwrap();
            let mut procs = Procs::new(Duration::from_secs(60));
            // Producer 1 dies at the fault point of its 6th message (index 5). mid-copy is
            // only on the send path, which bus-peer uses for odd indices: the 6th is one.
            let fault = format!("{point}:kill:{}", if point == "mid-copy" { 3 } else { 6 });
            let victim = procs.spawn_command(
                "victim",
                peer(
                    &["produce", &p, "1", "100", "16", "200", SEED],
                    Some(&fault),
                ),
            );
            let (status, _) = procs.wait(victim);
            assert_eq!(
                std::os::unix::process::ExitStatusExt::signal(&status),
                Some(libc::SIGKILL),
                "{point}: the victim died at its fault point"
            );
            let started = Instant::now();
            let survivor = procs.spawn(
                "survivor",
                PEER,
                &["produce", &p, "0", "50", "16", "200", SEED],
            );
            let (from_victim, lost) = read_until(&mut sub, 49);
            procs.success(survivor);
            println!(
                "{mode} {producers} producer slots {point}: went on {:?} after the victim died; {from_victim} of its messages delivered",
                started.elapsed()
            );
            assert_eq!(
                from_victim, 5,
                "{mode} {point}: the five committed messages, not the sixth"
            );
            assert_eq!(sub.unblocked(), 1, "{mode} {point}: one claim unblocked");
            assert_eq!(lost, if mode == Mode::Lossy { 1 } else { 0 });
            assert_eq!(bus.stats().unblocked, 1);
        }
    }
}

/// Waits until child `victim` has stopped (at its `stop` fault point).
fn wait_stopped(procs: &Procs, victim: usize) {
    assert!(eventually(Duration::from_secs(10), || {
        // SAFETY: waitpid with WNOHANG|WUNTRACED on our own child only inspects it.
        let mut status = 0;
        unsafe {
            libc::waitpid(
                procs.pid(victim),
                &mut status,
                libc::WNOHANG | libc::WUNTRACED,
            ) > 0
        }
    }));
}

/// Receives until nothing comes for 300 ms; returns how many messages came.
fn receive_until_quiet(sub: &mut Subscriber, buf: &mut Vec<u8>) -> u64 {
    let mut got = 0;
    while sub.recv_timeout(buf, Duration::from_millis(300)).is_ok() {
        got += 1;
    }
    got
}

#[test]
fn a_stopped_producer_is_waited_for_not_unblocked() {
    let dir = tempfile::tempdir().unwrap();
    let (bus, p) = bus(&dir, Mode::Reliable, 50);
    let mut sub = bus.subscribe(Start::Latest).unwrap();
    let mut procs = Procs::new(Duration::from_secs(60));
    let victim = procs.spawn_command(
        "stopped",
        peer(
            &["produce", &p, "1", "10", "16", "200", SEED],
            Some("mid-copy:stop:2"),
        ),
    );
    let survivor = procs.spawn(
        "survivor",
        PEER,
        &["produce", &p, "0", "20", "16", "200", SEED],
    );
    procs.success(survivor);
    // Frozen in the middle of a message: alive, so nobody repairs over it; readers wait.
    wait_stopped(&procs, victim);
    let mut buf = Vec::new();
    let mut got = receive_until_quiet(&mut sub, &mut buf);
    assert!(got < 30, "everything after the frozen claim waits");
    assert_eq!(
        bus.stats().unblocked,
        0,
        "a live producer is never unblocked over"
    );
    procs.signal(victim, libc::SIGCONT);
    procs.success(victim);
    while got < 30 {
        sub.recv_timeout(&mut buf, Duration::from_secs(10)).unwrap();
        got += 1;
    }
    assert_eq!(sub.unblocked(), 0);
}

#[test]
fn an_exclusive_bus_waits_for_its_stopped_producer_and_admits_no_other() {
    let dir = tempfile::tempdir().unwrap();
    let (bus, p) = bus_with_producers(&dir, Mode::Reliable, 50, 1);
    let mut sub = bus.subscribe(Start::Latest).unwrap();
    let mut procs = Procs::new(Duration::from_secs(60));
    let victim = procs.spawn_command(
        "stopped",
        peer(
            &["produce", &p, "0", "10", "16", "200", SEED],
            Some("mid-copy:stop:2"),
        ),
    );
    wait_stopped(&procs, victim);
    // Alive: its slot is not free, so no second producer can write the tail beside it.
    assert!(matches!(
        bus.publisher(),
        Err(bus_core::JoinError::NoFreeSlot { max: 1, .. })
    ));
    let mut buf = Vec::new();
    let mut got = receive_until_quiet(&mut sub, &mut buf);
    // The victim stops on its 2nd mid-copy hit (mid-copy is on the send path, which bus-peer
    // uses for odd indices): message 3. Messages 0 to 2 came; nothing passes the frozen claim.
    assert_eq!(got, 3, "everything from the frozen claim on waits");
    assert_eq!(
        bus.stats().unblocked,
        0,
        "a live producer is never unblocked over"
    );
    procs.signal(victim, libc::SIGCONT);
    procs.success(victim);
    while got < 10 {
        sub.recv_timeout(&mut buf, Duration::from_secs(10)).unwrap();
        assert_eq!(parse(&buf), (0, got), "in order, exactly once");
        got += 1;
    }
    assert_eq!(sub.unblocked(), 0);
}

#[test]
fn a_process_killed_holding_the_control_lock_does_not_deadlock_anyone() {
    let dir = tempfile::tempdir().unwrap();
    let (bus, p) = bus(&dir, Mode::Reliable, 50);
    let mut procs = Procs::new(Duration::from_secs(60));
    // It dies inside the control lock, joining as a subscriber.
    let victim = procs.spawn_command("victim", peer(&["stall", &p], Some("in-control-lock:kill")));
    let (status, _) = procs.wait(victim);
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    let t = Instant::now();
    let _sub = bus.subscribe(Start::Latest).unwrap();
    let _publ = bus.publisher().unwrap();
    println!("joined {:?} after the lock holder died", t.elapsed());
    let st = bus.stats();
    assert_eq!(
        st.subscribers.len(),
        1,
        "no slot left behind by the dead joiner"
    );
    assert!(st.subscribers.iter().all(|s| s.alive));
}

#[test]
fn a_repairer_killed_half_way_is_finished_by_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let (bus, p) = bus(&dir, Mode::Reliable, 50);
    let mut sub = bus.subscribe(Start::Latest).unwrap();
    let mut procs = Procs::new(Duration::from_secs(60));
    // A reader that will die in the middle of its repair.
    let repairer = procs.spawn_command(
        "repairer",
        peer(
            &["consume", &p, "1000", "16", "200", SEED, "strict"],
            Some("mid-repair:kill"),
        ),
    );
    procs.expect_line(repairer, "ready");
    let victim = procs.spawn_command(
        "victim",
        peer(
            &["produce", &p, "1", "10", "16", "200", SEED],
            Some("after-claim:kill:1"),
        ),
    );
    procs.wait(victim);
    let survivor = procs.spawn(
        "survivor",
        PEER,
        &["produce", &p, "0", "3", "16", "200", SEED],
    );
    procs.success(survivor);
    let (status, _) = procs.wait(repairer);
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL),
        "the repairer died half-way"
    );
    let (from_victim, _) = read_until(&mut sub, 2);
    assert_eq!(from_victim, 0);
    assert_eq!(sub.unblocked(), 1);
}

/// A small deterministic generator for the crash loop (the seed is printed).
struct Rng(u64);
impl Rng {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

#[test]
fn a_crash_loop_of_200_rounds_loses_nothing_committed() {
    let dir = tempfile::tempdir().unwrap();
    let (bus, p) = bus(&dir, Mode::Reliable, 20);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    println!("crash loop seed {seed}");
    let mut rng = Rng(seed);
    let mut procs = Procs::new(Duration::from_secs(420));
    const LAST: u64 = 3999;
    let survivors: Vec<usize> = (0..2)
        .map(|i| {
            procs.spawn(
                &format!("survivor {i}"),
                PEER,
                &["survive", &p, &LAST.to_string(), "16", "200", SEED],
            )
        })
        .collect();
    for &s in &survivors {
        procs.expect_line(s, "ready");
    }
    // Producer 0 survives: paced so that it runs across all the rounds.
    let steady = procs.spawn(
        "steady producer",
        PEER,
        &[
            "produce",
            &p,
            "0",
            &(LAST + 1).to_string(),
            "16",
            "200",
            SEED,
            "800",
        ],
    );
    let faults = ["after-claim", "mid-copy", "before-commit"];
    for round in 1..=200u64 {
        let round_started = Instant::now();
        let id = round.to_string();
        let fault = (rng.next(3) > 0)
            .then(|| format!("{}:kill:{}", faults[rng.next(3) as usize], 1 + rng.next(30)));
        let producer = procs.spawn_command(
            &format!("victim producer {round}"),
            peer(
                &["produce", &p, &id, "1000000", "16", "200", SEED],
                fault.as_deref(),
            ),
        );
        let reader = (rng.next(2) == 0).then(|| {
            // Joined mid-stream, it reads whatever comes (verifying is the survivors' job).
            procs.spawn(
                &format!("victim reader {round}"),
                PEER,
                &["tolerate", &p, "60000"],
            )
        });
        std::thread::sleep(Duration::from_millis(rng.next(12)));
        procs.signal(producer, libc::SIGKILL);
        procs.wait(producer);
        if let Some(r) = reader {
            procs.signal(r, libc::SIGKILL);
            procs.wait(r);
        }
        assert!(
            round_started.elapsed() < Duration::from_secs(10),
            "round {round} took {:?}",
            round_started.elapsed()
        );
    }
    procs.success(steady);
    let done: Vec<String> = survivors
        .iter()
        .map(|&s| {
            let line = procs.expect_line(s, "done");
            procs.success(s);
            line
        })
        .collect();
    println!("survivors: {done:?}");
    let field = |line: &str, key: &str| -> String {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
            .unwrap()
            .to_string()
    };
    // Both saw the same messages in the same order; each producer's a prefix of what it
    // sent (checked by the survivors), producer 0's complete.
    assert_eq!(field(&done[0], "hash"), field(&done[1], "hash"));
    assert_eq!(field(&done[0], "ids"), field(&done[1], "ids"));
    assert!(field(&done[0], "ids").starts_with(&format!("0:{}", LAST + 1)));
    let st = bus.stats();
    println!(
        "after 200 rounds: {} claims unblocked, {} slots evicted",
        st.unblocked, st.evicted
    );
    assert!(st.evicted > 0);
}

#[test]
fn a_scribbler_never_crashes_or_hangs_the_readers() {
    for mode in [Mode::Reliable, Mode::Lossy] {
        let dir = tempfile::tempdir().unwrap();
        let (_bus, p) = bus(&dir, mode, 20);
        let mut procs = Procs::new(Duration::from_secs(120));
        let readers: Vec<usize> = (0..2)
            .map(|i| procs.spawn(&format!("reader {i}"), PEER, &["tolerate", &p, "3000"]))
            .collect();
        for &r in &readers {
            procs.expect_line(r, "ready");
        }
        let producer = procs.spawn(
            "producer",
            PEER,
            &["produce", &p, "0", "1000000", "16", "200", SEED, "20"],
        );
        let scribbler = procs.spawn("scribbler", PEER, &["scribble", &p, "2000", "7"]);
        procs.success(scribbler);
        for r in readers {
            // Each reader ran its 3 s and returned from every call: no signal, no hang.
            let line = procs.expect_line(r, "done");
            println!("{mode} reader under a scribbler: {line}");
            procs.success(r);
        }
        procs.signal(producer, libc::SIGKILL);
        procs.wait(producer);
    }
}

#[test]
fn a_scribbled_header_is_repaired_like_a_dead_claim() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let (bus, p) = bus(&dir, Mode::Reliable, 20);
    let mut publ = bus.publisher().unwrap();
    publ.send(b"first").unwrap();
    publ.send(b"second").unwrap();
    // Another process writes over word1 of the first record.
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.write_all_at(&[0xff; 8], bus.config().data_offset() + 8)
        .unwrap();
    let mut sub = bus.subscribe(Start::Oldest).unwrap();
    let mut buf = Vec::new();
    // Not followed; not ready until the unblock timeout (stale bytes look the same), then
    // repaired like a dead claim and counted.
    assert!(matches!(sub.try_recv(&mut buf), Err(TryRecvError::Empty)));
    let m = sub.recv_timeout(&mut buf, Duration::from_secs(5)).unwrap();
    assert_eq!((m.seq, &buf[..]), (1, &b"second"[..]));
    assert_eq!(sub.unblocked(), 1);
}

#[test]
fn stale_bytes_carrying_the_next_sequence_are_neither_corrupt_nor_a_repair() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    // A long unblock timeout: nothing here may be repaired.
    let (bus, p) = bus(&dir, Mode::Reliable, 60_000);
    let mut publ = bus.publisher().unwrap();
    let mut sub = bus.subscribe(Start::Oldest).unwrap();
    publ.send(b"first").unwrap();
    // An earlier lap's payload word at the next header that reads as sequence 1 with a
    // state no producer writes: what the crash loop's payloads (id, then index) produce.
    let next = bus.stats().tail_position;
    let forged = (1u64 << 4) | 13;
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.write_all_at(&forged.to_le_bytes(), bus.config().data_offset() + next)
        .unwrap();
    let mut buf = Vec::new();
    assert_eq!(sub.recv(&mut buf).unwrap().seq, 0);
    // Claimed by nobody yet: simply nothing to read.
    assert!(matches!(sub.try_recv(&mut buf), Err(TryRecvError::Empty)));
    // The producer's commit replaces the stale word; it is not mistaken for a repair.
    publ.send(b"second").unwrap();
    let m = sub.recv_timeout(&mut buf, Duration::from_secs(5)).unwrap();
    assert_eq!((m.seq, &buf[..]), (1, &b"second"[..]));
    assert_eq!(sub.unblocked(), 0);
}

#[test]
fn a_bad_header_the_repairer_cannot_replace_is_reported_as_corrupt() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let (bus, p) = bus(&dir, Mode::Reliable, 20);
    let mut publ = bus.publisher().unwrap();
    publ.send(b"first").unwrap();
    let second = bus.stats().tail_position;
    publ.send(b"second").unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    // word1 of the second record, and the tail's sequence (line 1 of the header page:
    // position, then sequence) pushed so far that the region would span more sequences
    // than a GAP can count.
    f.write_all_at(&[0xff; 8], bus.config().data_offset() + second + 8)
        .unwrap();
    let tail_seq = bus.stats().tail_seq;
    f.write_all_at(
        &(tail_seq + 100_000).to_le_bytes(),
        bus_core::layout::LINE as u64 + 8,
    )
    .unwrap();
    let mut sub = bus.subscribe(Start::Oldest).unwrap();
    let mut buf = Vec::new();
    assert_eq!(sub.recv(&mut buf).unwrap().seq, 0);
    match sub.recv_timeout(&mut buf, Duration::from_secs(5)) {
        Err(RecvTimeoutError::Corrupt { position, .. }) => assert_eq!(position, second),
        other => panic!("expected Corrupt at {second}, got {other:?}"),
    }
    assert_eq!(sub.unblocked(), 0);
}

/// Review of issue 8: a reliable reader the ring has moved past (here a tail written more
/// than a lap ahead by another process; in life, a slot lost while its owner lived) is told
/// so after the unblock timeout, instead of waiting forever.
#[test]
fn a_reliable_reader_the_ring_moved_past_is_told_not_left_waiting() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let (bus, p) = bus(&dir, Mode::Reliable, 20);
    let mut sub = bus.subscribe(Start::Latest).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    // Line 1 of the header page: the tail's position.
    let far = bus.config().capacity * 3;
    f.write_all_at(&far.to_le_bytes(), bus_core::layout::LINE as u64)
        .unwrap();
    let mut buf = Vec::new();
    match sub.recv_timeout(&mut buf, Duration::from_secs(10)) {
        Err(RecvTimeoutError::Corrupt {
            position: 0,
            problem: bus_core::RecordProblem::Overrun { position: 0, tail },
        }) => assert_eq!(tail, far),
        other => panic!("expected Overrun, got {other:?}"),
    }
}

/// Review of round 2: a head written past the tail by another process after the bus was
/// opened. Joining at `Latest` re-picked the tail, found the head past it, and picked the
/// same tail again forever (100 % CPU, deaf to signals in the bindings); every start must
/// be a typed error instead. The joins run on a thread with a deadline, so a regression
/// fails here rather than hanging the suite.
#[test]
fn a_head_written_past_the_tail_is_a_typed_error_for_every_start() {
    use bus_core::SubscribeError;
    use std::os::unix::fs::FileExt;
    for mode in [Mode::Reliable, Mode::Lossy] {
        for producers in [1, 64] {
            let dir = tempfile::tempdir().unwrap();
            let (bus, p) = bus_with_producers(&dir, mode, 20, producers);
            let mut publ = bus.publisher().unwrap();
            for _ in 0..10 {
                publ.send(b"before").unwrap();
            }
            let tail = bus.stats().tail_position;
            let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
            // Line 2 of the header page: head's position; just past the tail (still a
            // plausible position), and far past it.
            for head in [tail + 16, tail + 3 * bus.config().capacity, u64::MAX >> 3] {
                f.write_all_at(&head.to_le_bytes(), 2 * bus_core::layout::LINE as u64)
                    .unwrap();
                for start in [Start::Latest, Start::Oldest, Start::Position(0)] {
                    let bus = bus.clone();
                    let (tx, rx) = std::sync::mpsc::channel();
                    std::thread::spawn(move || {
                        let _ = tx.send(bus.subscribe(start).map(|_| ()));
                    });
                    let r = rx
                        .recv_timeout(Duration::from_secs(10))
                        .unwrap_or_else(|_| {
                            panic!("{mode:?}, {producers} producers, head {head}: {start:?} hangs")
                        });
                    assert!(
                        matches!(
                            r,
                            Err(SubscribeError::RingCorrupt { .. }
                                | SubscribeError::PositionNotRetained { .. })
                        ),
                        "{mode:?}, {producers} producers, head {head}, {start:?}: {r:?}"
                    );
                }
            }
        }
    }
}
