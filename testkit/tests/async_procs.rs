//! The async handles and `WaitSet` across real processes (children: `bus-async-peer`).
//!
//! What the async issue promises: many subscriptions without a thread each, no lost wake-up
//! with sleeping waiters on both sides, and an async publisher that survives the death of
//! the subscriber it waits for.

use std::time::{Duration, Instant};

use bus_core::{Bus, BusOptions, Mode, Start, TrySendError};
use testkit::Procs;

const PEER: &str = env!("CARGO_BIN_EXE_bus-async-peer");

fn create(path: &std::path::Path, capacity: u64) {
    Bus::create(
        path,
        &BusOptions::new()
            .capacity(capacity)
            .max_message(256)
            .mode(Mode::Reliable),
    )
    .unwrap();
}

/// `done max-threads=T` -> T
fn max_threads(line: &str) -> usize {
    line.split_once("max-threads=")
        .and_then(|(_, t)| t.trim().parse().ok())
        .unwrap_or_else(|| panic!("no thread count in {line:?}"))
}

/// 100 buses, a publisher process on each, one subscriber process with `subscriber_role`.
fn hundred_buses(subscriber_role: &[&str], count: u64) -> String {
    const BUSES: usize = 100;
    let dir = tempfile::tempdir().unwrap();
    for b in 0..BUSES {
        // Small rings: publishers wait for space as well as subscribers for messages.
        create(&dir.path().join(format!("b{b}.bus")), 16 << 10);
    }
    let d = dir.path().to_str().unwrap().to_string();
    let (buses, count_s) = (BUSES.to_string(), count.to_string());
    let mut procs = Procs::new(Duration::from_secs(240));
    let mut args = vec![subscriber_role[0], &d, &buses];
    args.extend_from_slice(&subscriber_role[1..]);
    args.push(&count_s);
    let sub = procs.spawn("subscriber", PEER, &args);
    procs.expect_line(sub, "ready");
    let paths: Vec<String> = (0..BUSES)
        .map(|b| {
            dir.path()
                .join(format!("b{b}.bus"))
                .to_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let pubs: Vec<usize> = paths
        .iter()
        .enumerate()
        .map(|(b, p)| {
            // Bursts of 50 with a millisecond between: the subscribers sleep between bursts.
            procs.spawn(
                &format!("publisher {b}"),
                PEER,
                &["publish", p, &count_s, "24", "50"],
            )
        })
        .collect();
    for p in pubs {
        procs.success(p);
    }
    let out = procs.success(sub);
    out.last().cloned().unwrap_or_default()
}

#[test]
fn a_thousand_async_subscribers_on_a_hundred_buses_need_at_most_two_threads() {
    // 10 AsyncSubscribers on each bus, all on one current-thread runtime: each checks that it
    // gets every message of its bus exactly once and in order.
    let done = hundred_buses(&["fan-in", "10"], 2_000);
    let threads = max_threads(&done);
    assert!(
        threads <= 2,
        "the subscribing process ran {threads} threads: the runtime's and more than one waiter"
    );
}

#[test]
fn one_waitset_thread_follows_a_hundred_buses() {
    let done = hundred_buses(&["waitset"], 2_000);
    let threads = max_threads(&done);
    assert_eq!(threads, 1, "a WaitSet needs no thread but the caller's");
}

#[test]
fn six_hundred_thousand_async_hand_offs_through_a_4_kib_ring_lose_no_wake_up() {
    // 4 KiB holds about a hundred 24-byte messages: the publisher sleeps for space and the
    // subscriber for messages, over and over. A lost wake-up leaves one asleep for good and
    // the watchdog fails the test.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("small.bus");
    create(&path, 4096);
    let p = path.to_str().unwrap();
    let mut procs = Procs::new(Duration::from_secs(240));
    let sub = procs.spawn("consumer", PEER, &["consume", p, "600000"]);
    procs.expect_line(sub, "ready");
    let publ = procs.spawn("publisher", PEER, &["publish", p, "600000", "24"]);
    procs.success(publ);
    let out = procs.success(sub);
    assert!(out.last().unwrap().starts_with("done"), "{out:?}");
}

#[test]
fn async_ping_pong_between_two_processes_loses_no_wake_up() {
    // Every hand-off finds the other side asleep: 2 x 50,000 wakes in both directions.
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.bus"), dir.path().join("b.bus"));
    create(&a, 4096);
    create(&b, 4096);
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    let mut procs = Procs::new(Duration::from_secs(240));
    let pong = procs.spawn("pong", PEER, &["pong", a, b, "50000"]);
    procs.expect_line(pong, "ready");
    let ping = procs.spawn("ping", PEER, &["ping", a, b, "50000"]);
    let out = procs.success(ping);
    assert!(out.last().unwrap().starts_with("done"), "{out:?}");
    procs.success(pong);
}

#[test]
fn an_async_publisher_waiting_on_a_slow_subscriber_goes_on_when_it_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("full.bus");
    create(&path, 4096);
    let bus = Bus::open(&path).unwrap();
    let mut procs = Procs::new(Duration::from_secs(60));
    let slow = procs.spawn("slow", PEER, &["slow", path.to_str().unwrap(), "2000"]);
    procs.expect_line(slow, "ready");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut publ = bus.publisher().unwrap().into_async().unwrap();
        // Fill the ring: the slow subscriber (2 ms a message) holds it full.
        let mut sent = 0u64;
        loop {
            match publ.try_send(&sent.to_le_bytes()) {
                Ok(_) => sent += 1,
                Err(TrySendError::Full) => break,
                Err(e) => panic!("{e}"),
            }
        }
        // A send waits (without blocking this thread: the timer fires) while it is slow...
        let started = Instant::now();
        let waited = tokio::time::timeout(Duration::from_millis(1), publ.send(b"x")).await;
        // (It may have found room as the subscriber read one; then the next ones wait.)
        if waited.is_ok() {
            sent += 1;
        }
        for _ in 0..50 {
            publ.send(&sent.to_le_bytes()).await.unwrap();
            sent += 1;
        }
        // ...which takes about 2 ms a message: it waited, it did not spin through.
        assert!(started.elapsed() >= Duration::from_millis(40));
        // Then it dies with the ring full; the publisher's waits look for the dead and go on.
        procs.signal(slow, libc::SIGKILL);
        let after = Instant::now();
        for _ in 0..1000 {
            tokio::time::timeout(Duration::from_secs(20), publ.send(&sent.to_le_bytes()))
                .await
                .expect("the publisher still waits for a subscriber that was killed")
                .unwrap();
            sent += 1;
        }
        eprintln!("1000 sends after the kill took {:?}", after.elapsed());
    });
    assert_eq!(
        bus.stats().subscribers.len(),
        0,
        "the dead subscriber was evicted"
    );
    // Later subscribers see the newest messages.
    let mut sub = bus.subscribe(Start::Oldest).unwrap();
    let mut buf = Vec::new();
    assert!(sub.try_recv(&mut buf).is_ok());
}
