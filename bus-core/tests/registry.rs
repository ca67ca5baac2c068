//! Slots of dead participants are reclaimed on every path (issue 8): a publisher that only
//! ever calls `try_send` (or `send_timeout` with a tiny timeout) gets past a subscriber that
//! died holding the ring full, and lossy buses give back the slots and waiting counts of
//! subscribers that died asleep.

use std::time::{Duration, Instant};

use bus_core::{
    Bus, BusOptions, LoanTimeoutError, Mode, Publisher, SendTimeoutError, TryLoanError,
    TrySendError,
};
use testkit::{eventually, Procs};

const PEER: &str = env!("CARGO_BIN_EXE_bus-peer");

fn new_bus(dir: &tempfile::TempDir, mode: Mode, producers: u32) -> (Bus, String) {
    let path = dir.path().join("r.bus");
    let bus = Bus::create(
        &path,
        &BusOptions::new()
            .capacity(1 << 16)
            .mode(mode)
            .max_producers(producers),
    )
    .unwrap();
    (bus, path.to_str().unwrap().to_string())
}

/// Fills the ring until a `try_send` says `Full`, with a subscriber process that never reads.
fn fill_with_a_stalled_subscriber(bus: &Bus, path: &str, procs: &mut Procs) -> (Publisher, usize) {
    let stalled = procs.spawn("stalled subscriber", PEER, &["stall", path]);
    procs.expect_line(stalled, "ready");
    let mut publ = bus.publisher().unwrap();
    let mut sent = 0u64;
    loop {
        match publ.try_send(&[7u8; 1]) {
            Ok(_) => sent += 1,
            Err(TrySendError::Full) => break,
            Err(e) => panic!("unexpected {e:?}"),
        }
        assert!(
            sent <= 2048,
            "a 64 KiB ring holds at most 2048 32-byte records"
        );
    }
    assert!(sent > 100, "the ring took only {sent} messages");
    (publ, stalled)
}

/// Calls `attempt` (true: it got through; false: still full) until it gets through; returns
/// how long that took.
fn time_until_through(mut attempt: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if attempt() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "still full 20 s after its only subscriber died"
        );
        std::hint::spin_loop();
    }
}

fn killed_subscriber_releases(mode_of_call: &str, exclusive: bool) {
    let dir = tempfile::tempdir().unwrap();
    let (bus, path) = new_bus(&dir, Mode::Reliable, if exclusive { 1 } else { 8 });
    let mut procs = Procs::new(Duration::from_secs(60));
    let (mut publ, stalled) = fill_with_a_stalled_subscriber(&bus, &path, &mut procs);
    // Still full while it lives, whatever we call.
    assert_eq!(publ.try_send(b"x"), Err(TrySendError::Full));
    assert_eq!(
        publ.send_timeout(b"x", Duration::from_millis(30)),
        Err(SendTimeoutError::Timeout)
    );
    procs.signal(stalled, libc::SIGKILL);
    let _ = procs.wait(stalled);
    let took = match mode_of_call {
        "try_send" => time_until_through(|| match publ.try_send(b"after") {
            Ok(_) => true,
            Err(TrySendError::Full) => false,
            Err(e) => panic!("unexpected {e:?}"),
        }),
        "send_timeout" => {
            time_until_through(
                || match publ.send_timeout(b"after", Duration::from_millis(1)) {
                    Ok(_) => true,
                    Err(SendTimeoutError::Timeout) => false,
                    Err(e) => panic!("unexpected {e:?}"),
                },
            )
        }
        "try_loan" => time_until_through(|| match publ.try_loan(5) {
            Ok(_) => true,
            Err(TryLoanError::Full) => false,
            Err(e) => panic!("unexpected {e:?}"),
        }),
        "loan_timeout" => {
            time_until_through(|| match publ.loan_timeout(5, Duration::from_nanos(1)) {
                Ok(_) => true,
                Err(LoanTimeoutError::Timeout) => false,
                Err(e) => panic!("unexpected {e:?}"),
            })
        }
        other => unreachable!("{other}"),
    };
    // The probe runs at most every 10 ms; a second is the bound the README states, with
    // room for a loaded machine.
    assert!(
        took < Duration::from_secs(1),
        "{mode_of_call}: {took:?} to get past a dead subscriber"
    );
    let st = bus.stats();
    assert!(st.subscribers.is_empty(), "{:?}", st.subscribers);
    assert_eq!(st.evicted, 1);
}

#[test]
fn try_send_gets_past_a_subscriber_killed_while_the_ring_was_full() {
    killed_subscriber_releases("try_send", false);
    killed_subscriber_releases("try_send", true);
}

#[test]
fn send_timeout_of_one_millisecond_gets_past_a_killed_subscriber() {
    killed_subscriber_releases("send_timeout", false);
    killed_subscriber_releases("send_timeout", true);
}

#[test]
fn loans_get_past_a_killed_subscriber() {
    killed_subscriber_releases("try_loan", false);
    killed_subscriber_releases("loan_timeout", true);
}

/// A subscriber that died asleep leaves the readers' waiting count up: every publish would
/// make a wake system call for nobody. On a lossy bus no producer ever waits for a subscriber,
/// so the publisher's own wakes must notice.
#[test]
fn a_lossy_bus_gives_back_the_count_and_slot_of_a_subscriber_that_died_asleep() {
    for producers in [1, 8] {
        let dir = tempfile::tempdir().unwrap();
        let (bus, path) = new_bus(&dir, Mode::Lossy, producers);
        let mut procs = Procs::new(Duration::from_secs(60));
        let sleeper = procs.spawn("sleeping subscriber", PEER, &["sleep", &path]);
        procs.expect_line(sleeper, "ready");
        assert!(
            eventually(Duration::from_secs(10), || bus.stats().readers_waiting == 1),
            "the subscriber should go to sleep"
        );
        procs.signal(sleeper, libc::SIGKILL);
        let _ = procs.wait(sleeper);
        let st = bus.stats();
        assert_eq!(
            st.readers_waiting, 1,
            "the dead sleeper's count is still up"
        );
        assert_eq!(st.subscribers.len(), 1);
        let mut publ = bus.publisher().unwrap();
        for i in 0..200u32 {
            publ.try_send(&i.to_le_bytes()).unwrap();
        }
        let st = bus.stats();
        assert_eq!(st.readers_waiting, 0, "producers {producers}");
        assert!(st.subscribers.is_empty(), "{:?}", st.subscribers);
        assert_eq!(st.evicted, 1);
    }
}

/// A lossy bus reclaims the slot of a dead subscriber when someone joins, so dead subscribers
/// never use up the table.
#[test]
fn joining_a_lossy_bus_reclaims_dead_subscribers_slots() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.bus");
    let bus = Bus::create(
        &path,
        &BusOptions::new()
            .capacity(1 << 16)
            .mode(Mode::Lossy)
            .max_subscribers(2),
    )
    .unwrap();
    let path = path.to_str().unwrap();
    let mut procs = Procs::new(Duration::from_secs(60));
    for round in 0..5 {
        let s = procs.spawn("stalled subscriber", PEER, &["stall", path]);
        procs.expect_line(s, "ready");
        procs.signal(s, libc::SIGKILL);
        let _ = procs.wait(s);
        let _live = bus
            .subscribe(bus_core::Start::Latest)
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(bus.stats().evicted, round + 1);
    }
}
