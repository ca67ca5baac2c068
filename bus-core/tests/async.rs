//! The async handles and `WaitSet` in one process: cancellation, every receive variant, both
//! tokio runtimes, losses, and the bookkeeping of sleepers. (Across processes:
//! testkit/tests/async_procs.rs.)

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bus_core::{Bus, BusOptions, Mode, RecvError, Start, WaitSet, WaitStrategy};
use futures_util::StreamExt;

fn bus(dir: &tempfile::TempDir, name: &str, capacity: u64, mode: Mode) -> Bus {
    Bus::create(
        dir.path().join(name),
        &BusOptions::new()
            .capacity(capacity)
            .max_message(1024)
            .mode(mode),
    )
    .unwrap()
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

/// Publishes `count` messages (index as u64 LE) from a thread, pausing at pseudo-random
/// moments so that the receiver is sometimes ahead (asleep) and sometimes behind.
fn paced_publisher(bus: &Bus, count: u64) -> std::thread::JoinHandle<()> {
    let mut publ = bus.publisher().unwrap();
    std::thread::spawn(move || {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for i in 0..count {
            publ.send(&i.to_le_bytes()).unwrap();
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            match x % 64 {
                0 => std::thread::sleep(Duration::from_micros(200)),
                1..=3 => std::thread::yield_now(),
                _ => {}
            }
        }
    })
}

fn index(buf: &[u8]) -> u64 {
    u64::from_le_bytes(buf[..8].try_into().unwrap())
}

/// Ready on its `n`th poll, waking itself until then: races a receive for exactly `n` polls.
struct AfterPolls(u32);

impl std::future::Future for AfterPolls {
    type Output = ();
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.0 <= 1 {
            return std::task::Poll::Ready(());
        }
        self.0 -= 1;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

#[test]
fn receives_dropped_at_random_await_points_lose_and_repeat_nothing() {
    // 100,000 receives, each raced in a select! against a short timer, a yield, or a future
    // that is ready after a random number of polls: the losing receive is dropped wherever it
    // was (spinning, parked, woken). The strategy changes every 5,000 rounds, so receives are
    // dropped both while they re-poll and while they are parked. The received sequence must
    // still be gapless.
    const N: u64 = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let bus = bus(&dir, "c.bus", 1 << 16, Mode::Reliable);
    let mut sub = bus.subscribe(Start::Latest).unwrap().into_async().unwrap();
    let publisher = paced_publisher(&bus, N);
    let (mut cancelled, mut next) = (0u64, 0u64);
    current_thread().block_on(async {
        let mut buf = Vec::new();
        let mut round = 0u64;
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        while next < N {
            round += 1;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let strategy = if (round / 5000) % 2 == 0 {
                bus_core::WaitStrategy::Block
            } else {
                bus_core::WaitStrategy::SpinThenBlock
            };
            sub.get_mut().set_wait_strategy(strategy);
            let polls = AfterPolls(1 + (x % 12) as u32);
            let got = match round % 4 {
                0 => tokio::select! {
                    r = sub.recv(&mut buf) => Some(r.map(|m| (m.seq, index(&buf)))),
                    _ = tokio::time::sleep(Duration::from_micros(50)) => None,
                },
                1 => tokio::select! {
                    r = sub.recv_ref() => Some(r.map(|s| (s.seq, index(&s)))),
                    _ = tokio::task::yield_now() => None,
                },
                2 => tokio::select! {
                    biased;
                    _ = polls => None,
                    r = sub.recv(&mut buf) => Some(r.map(|m| (m.seq, index(&buf)))),
                },
                _ => tokio::select! {
                    biased;
                    _ = polls => None,
                    r = sub.recv_ref() => Some(r.map(|s| (s.seq, index(&s)))),
                },
            };
            match got {
                Some(r) => {
                    let (seq, i) = r.unwrap();
                    assert_eq!((seq, i), (next, next), "after {cancelled} cancellations");
                    next += 1;
                }
                None => cancelled += 1,
            }
        }
    });
    publisher.join().unwrap();
    // Not a measure of speed: the publisher pauses often, so the receives wait (and lose
    // races) thousands of times; a handful would mean the test no longer tests anything.
    assert!(cancelled > 100, "only {cancelled} receives were cancelled");
    // No announcement outlives the futures that made it.
    assert_eq!(bus.stats().readers_waiting, 0);
    eprintln!("{cancelled} receives cancelled");
}

#[test]
fn a_stream_of_owned_messages_on_the_multi_threaded_runtime() {
    const N: u64 = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let bus = bus(&dir, "s.bus", 1 << 14, Mode::Reliable);
    let sub = bus.subscribe(Start::Latest).unwrap().into_async().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let publ = bus.publisher().unwrap().into_async().unwrap();
    rt.block_on(async move {
        let sender = tokio::spawn(async move {
            let mut publ = publ;
            for i in 0..N {
                publ.send(&i.to_le_bytes()).await.unwrap();
            }
        });
        let got: Vec<_> = sub.take(N as usize).collect().await;
        sender.await.unwrap();
        for (i, m) in got.into_iter().enumerate() {
            let m = m.unwrap();
            assert_eq!((m.seq, index(&m.data)), (i as u64, i as u64));
        }
    });
}

#[test]
fn select_over_three_buses_and_a_timer() {
    let dir = tempfile::tempdir().unwrap();
    let buses: Vec<Bus> = (0..3)
        .map(|i| bus(&dir, &format!("{i}.bus"), 1 << 14, Mode::Reliable))
        .collect();
    let mut subs: Vec<_> = buses
        .iter()
        .map(|b| b.subscribe(Start::Latest).unwrap().into_async().unwrap())
        .collect();
    let mut pubs: Vec<_> = buses.iter().map(|b| b.publisher().unwrap()).collect();
    let t = std::thread::spawn(move || {
        for round in 0..300u64 {
            pubs[(round % 3) as usize]
                .send(&round.to_le_bytes())
                .unwrap();
            std::thread::sleep(Duration::from_micros(300));
        }
    });
    let mut seen = [0u64; 3];
    let mut ticks = 0;
    current_thread().block_on(async {
        let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
        let [s0, s1, s2] = &mut subs[..] else {
            unreachable!()
        };
        while seen.iter().sum::<u64>() < 300 {
            tokio::select! {
                r = s0.recv(&mut a) => { r.unwrap(); assert_eq!(index(&a) % 3, 0); seen[0] += 1 }
                r = s1.recv(&mut b) => { r.unwrap(); assert_eq!(index(&b) % 3, 1); seen[1] += 1 }
                r = s2.recv(&mut c) => { r.unwrap(); assert_eq!(index(&c) % 3, 2); seen[2] += 1 }
                _ = tokio::time::sleep(Duration::from_millis(5)) => ticks += 1,
            }
        }
    });
    t.join().unwrap();
    assert_eq!(seen, [100, 100, 100]);
    eprintln!("{ticks} timer ticks");
}

#[test]
fn a_lapped_async_subscriber_reports_the_exact_loss_once_and_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let bus = bus(&dir, "l.bus", 4096, Mode::Lossy);
    let mut sub = bus.subscribe(Start::Latest).unwrap().into_async().unwrap();
    let mut publ = bus.publisher().unwrap();
    for i in 0..1000u64 {
        publ.send(&i.to_le_bytes()).unwrap();
    }
    current_thread().block_on(async {
        let mut buf = Vec::new();
        let lost = match sub.recv(&mut buf).await {
            Err(RecvError::Lost(n)) => n,
            other => panic!("{other:?}"),
        };
        let first = sub.recv(&mut buf).await.unwrap();
        assert_eq!(
            first.seq, lost,
            "the loss counts exactly the messages skipped"
        );
        assert_eq!(index(&buf), lost);
        // Then it waits for the next one like any receive.
        let waiter = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            publ.send(&1000u64.to_le_bytes()).unwrap();
        });
        let mut seq = first.seq;
        loop {
            let m = sub.recv(&mut buf).await.unwrap();
            assert_eq!(m.seq, seq + 1);
            seq = m.seq;
            if index(&buf) == 1000 {
                break;
            }
        }
        waiter.join().unwrap();
    });
}

#[test]
fn into_sync_and_back_keeps_the_position() {
    let dir = tempfile::tempdir().unwrap();
    let bus = bus(&dir, "p.bus", 1 << 14, Mode::Reliable);
    let mut publ = bus.publisher().unwrap();
    let mut sub = bus.subscribe(Start::Latest).unwrap().into_async().unwrap();
    for i in 0..10u64 {
        publ.send(&i.to_le_bytes()).unwrap();
    }
    let mut buf = Vec::new();
    let rt = current_thread();
    rt.block_on(async {
        assert_eq!(sub.recv(&mut buf).await.unwrap().seq, 0);
    });
    let mut sync = sub.into_sync();
    assert_eq!(sync.recv(&mut buf).unwrap().seq, 1);
    let mut sub = sync.into_async().unwrap();
    rt.block_on(async {
        assert_eq!(sub.recv_ref().await.unwrap().seq, 2);
        assert_eq!(sub.get_mut().try_recv(&mut buf).unwrap().seq, 3);
    });
}

#[test]
fn a_pending_receive_dropped_leaves_no_sleeper_counted() {
    let dir = tempfile::tempdir().unwrap();
    let bus = bus(&dir, "w.bus", 1 << 14, Mode::Reliable);
    let mut subs: Vec<_> = (0..5)
        .map(|_| bus.subscribe(Start::Latest).unwrap().into_async().unwrap())
        .collect();
    let rt = current_thread();
    rt.block_on(async {
        let mut buf = Vec::new();
        for s in &mut subs {
            let r = tokio::time::timeout(Duration::from_millis(20), s.recv(&mut buf)).await;
            assert!(r.is_err(), "nothing was published");
        }
    });
    assert_eq!(bus.stats().readers_waiting, 0);
    // A subscriber dropped while its stream is parked also gives its count back.
    let mut stream = subs.pop().unwrap();
    rt.block_on(async {
        let r = tokio::time::timeout(Duration::from_millis(20), stream.next()).await;
        assert!(r.is_err());
    });
    assert_eq!(
        bus.stats().readers_waiting,
        1,
        "the stream stays parked between polls"
    );
    drop(stream);
    assert_eq!(bus.stats().readers_waiting, 0);
}

#[test]
fn an_async_send_waits_for_room_without_blocking_the_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let bus = bus(&dir, "f.bus", 4096, Mode::Reliable);
    let mut sub = bus.subscribe(Start::Latest).unwrap();
    let mut publ = bus.publisher().unwrap().into_async().unwrap();
    let rt = current_thread();
    let sent = rt.block_on(async {
        let mut sent = 0u64;
        while publ.try_send(&sent.to_le_bytes()).is_ok() {
            sent += 1;
        }
        // Full: a send waits, and the timer on the same thread still fires.
        let r = tokio::time::timeout(Duration::from_millis(30), publ.send(b"late")).await;
        assert!(r.is_err(), "the ring was full");
        sent
    });
    assert_eq!(
        bus.stats().producers_waiting,
        0,
        "the cancelled send left no sleeper"
    );
    // A reader on another thread makes room; the waiting send completes.
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        for i in 0..=sent {
            let m = sub.recv(&mut buf).unwrap();
            assert_eq!(m.seq, i);
        }
        buf
    });
    rt.block_on(async {
        std::thread::sleep(Duration::from_millis(10));
        publ.send(&sent.to_le_bytes()).await.unwrap();
    });
    assert_eq!(index(&reader.join().unwrap()), sent);
}

// ---- WaitSet --------------------------------------------------------------------------------

#[test]
fn a_waitset_times_out_empty_and_reports_only_ready_members() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (
        bus(&dir, "a.bus", 1 << 14, Mode::Reliable),
        bus(&dir, "b.bus", 1 << 14, Mode::Lossy),
    );
    let mut set = WaitSet::new();
    assert!(set.wait(Some(Duration::ZERO)).is_empty(), "an empty set");
    let ka = set.add(a.subscribe(Start::Latest).unwrap());
    let kb = set.add(b.subscribe(Start::Latest).unwrap());
    for t in [
        Duration::ZERO,
        Duration::from_nanos(1),
        Duration::from_millis(20),
    ] {
        let started = Instant::now();
        assert!(set.wait(Some(t)).is_empty());
        assert!(started.elapsed() >= t);
    }
    b.publisher().unwrap().send(b"b").unwrap();
    assert_eq!(set.wait(None), vec![kb]);
    // Not drained: still ready.
    assert_eq!(set.wait(Some(Duration::ZERO)), vec![kb]);
    let mut buf = Vec::new();
    set.get_mut(kb).unwrap().try_recv(&mut buf).unwrap();
    assert!(set.wait(Some(Duration::ZERO)).is_empty());
    // Removed: never reported again, and its key names nothing (not even a newcomer).
    let sub_a = set.remove(ka).unwrap();
    a.publisher().unwrap().send(b"a").unwrap();
    assert!(set.wait(Some(Duration::from_millis(5))).is_empty());
    let kc = set.add(sub_a);
    assert_ne!(kc, ka);
    assert!(set.get_mut(ka).is_none() && set.remove(ka).is_none());
    assert_eq!(set.wait(Some(Duration::ZERO)), vec![kc]);
    assert_eq!(a.stats().readers_waiting + b.stats().readers_waiting, 0);
}

#[test]
fn a_waitset_sleeper_is_woken_by_a_publish_and_by_an_interrupter() {
    let dir = tempfile::tempdir().unwrap();
    let buses: Vec<Bus> = (0..4)
        .map(|i| bus(&dir, &format!("{i}.bus"), 1 << 14, Mode::Reliable))
        .collect();
    let mut set = WaitSet::new();
    let keys: Vec<_> = buses
        .iter()
        .map(|b| set.add(b.subscribe(Start::Latest).unwrap()))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let interrupter = set.interrupter();
    let mut pubs: Vec<_> = buses.iter().map(|b| b.publisher().unwrap()).collect();
    let stop2 = stop.clone();
    let t = std::thread::spawn(move || {
        for i in 0..2000u64 {
            pubs[(i % 4) as usize].send(&i.to_le_bytes()).unwrap();
            if i % 16 == 0 {
                std::thread::sleep(Duration::from_micros(100));
            }
        }
        std::thread::sleep(Duration::from_millis(20));
        stop2.store(true, Ordering::SeqCst);
        interrupter.interrupt();
    });
    let mut next = [0u64; 4];
    let mut buf = Vec::new();
    loop {
        // Without the interrupter this wait would last an hour.
        set.wait_with(Some(Duration::from_secs(3600)), |key, sub| {
            let b = keys.iter().position(|k| *k == key).unwrap();
            while let Ok(m) = sub.try_recv(&mut buf) {
                assert_eq!(index(&buf) % 4, b as u64);
                assert_eq!(m.seq, next[b]);
                next[b] += 1;
            }
        });
        if stop.load(Ordering::SeqCst) {
            break;
        }
    }
    t.join().unwrap();
    assert_eq!(next, [500; 4]);
}

#[test]
fn a_waitset_over_more_buses_than_one_futex_waitv_takes() {
    // 130 buses: more words than futex_waitv takes; the set falls back to short sleeps and
    // still delivers everything.
    let dir = tempfile::tempdir().unwrap();
    let buses: Vec<Bus> = (0..130)
        .map(|i| bus(&dir, &format!("{i}.bus"), 4096, Mode::Reliable))
        .collect();
    let mut set = WaitSet::new();
    for b in &buses {
        set.add(b.subscribe(Start::Latest).unwrap());
    }
    let mut pubs: Vec<_> = buses.iter().map(|b| b.publisher().unwrap()).collect();
    let t = std::thread::spawn(move || {
        for i in 0..1300u64 {
            pubs[(i % 130) as usize].send(&i.to_le_bytes()).unwrap();
        }
    });
    let mut total = 0;
    let mut buf = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while total < 1300 && Instant::now() < deadline {
        set.wait_with(Some(Duration::from_secs(1)), |_, sub| {
            while sub.try_recv(&mut buf).is_ok() {
                total += 1;
            }
        });
    }
    t.join().unwrap();
    assert_eq!(total, 1300);
}

// ---- request/reply, async -------------------------------------------------------------------

#[test]
fn an_async_client_gets_replies_then_server_gone_when_the_server_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let requests = bus(&dir, "rq.bus", 1 << 14, Mode::Reliable);
    let replies = bus(&dir, "rp.bus", 1 << 14, Mode::Reliable);
    let mut server = bus_core::Server::new(&requests, &replies).unwrap();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let serving = std::thread::spawn(move || {
        // Answer until told to stop, then leave (dropping the server frees its slots).
        while stop_rx.try_recv().is_err() {
            let Ok(req) = server.recv_timeout(Duration::from_millis(5)) else {
                continue;
            };
            let mut out = b"re:".to_vec();
            out.extend_from_slice(req.data);
            let to = req.reply_to();
            server.reply(to, &out).unwrap();
        }
    });
    let mut client = bus_core::AsyncClient::new(&requests, &replies).unwrap();
    current_thread().block_on(async {
        let mut buf = Vec::new();
        for i in 0..200u32 {
            let msg = i.to_string();
            client
                .request(msg.as_bytes(), &mut buf, Duration::from_secs(10))
                .await
                .unwrap();
            assert_eq!(buf, format!("re:{msg}").as_bytes());
        }
        // Many in flight.
        let mut ids = std::collections::HashSet::new();
        for i in 0..16u32 {
            ids.insert(client.send_request(&i.to_le_bytes()).await.unwrap());
        }
        while !ids.is_empty() {
            let id = client
                .recv_reply(&mut buf, Duration::from_secs(10))
                .await
                .unwrap();
            assert!(ids.remove(&id));
        }
        stop_tx.send(()).unwrap();
        serving.join().unwrap();
        // The server's slot is gone: a request with an hour's timeout says so at once.
        let r = client
            .request(b"anyone?", &mut buf, Duration::from_secs(3600))
            .await;
        assert_eq!(r, Err(bus_core::RequestError::ServerGone));
    });
}

/// Review of round 2: an async `request` dropped after it was sent (under
/// `tokio::time::timeout`, the common way) stayed in flight for ever, and its late reply
/// turned up in a later `recv_reply` under an id the caller never saw.
#[test]
fn a_dropped_async_request_is_forgotten_and_its_late_reply_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let requests = bus(&dir, "rq.bus", 1 << 14, Mode::Reliable);
    let replies = bus(&dir, "rp.bus", 1 << 14, Mode::Reliable);
    let mut server = bus_core::Server::new(&requests, &replies).unwrap();
    let serving = std::thread::spawn(move || {
        // Two requests, each answered 20 ms after it came.
        for _ in 0..2 {
            let req = server.recv_timeout(Duration::from_secs(30)).unwrap();
            let (to, data) = (req.reply_to(), req.data.to_vec());
            std::thread::sleep(Duration::from_millis(20));
            server.reply(to, &data).unwrap();
        }
        server
    });
    let mut client = bus_core::AsyncClient::new(&requests, &replies).unwrap();
    current_thread().block_on(async {
        let mut buf = Vec::new();
        let early = tokio::time::timeout(
            Duration::from_millis(1),
            client.request(b"a", &mut buf, Duration::from_secs(10)),
        )
        .await;
        assert!(early.is_err(), "dropped by the outer timeout: {early:?}");
        assert_eq!(client.in_flight(), 0, "the dropped request does not count");
        client
            .request(b"b", &mut buf, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(buf, b"b", "its own reply, not the dropped one's");
        assert_eq!(client.in_flight(), 0);
        assert_eq!(
            client.recv_reply(&mut buf, Duration::from_millis(50)).await,
            Err(bus_core::RequestError::Timeout),
            "the late reply to the dropped request is skipped"
        );
    });
    drop(serving.join().unwrap());
}

/// `AsyncPublisher::send_timeout` gives up on a full reliable ring at its deadline (with any
/// timeout, zero included) and sends when there is room.
#[test]
fn an_async_send_with_a_timeout_gives_up_on_a_full_ring() {
    let dir = tempfile::tempdir().unwrap();
    let b = bus(&dir, "s.bus", 4096, Mode::Reliable);
    let _sub = b.subscribe(Start::Latest).unwrap();
    let mut publ = b.publisher().unwrap().into_async().unwrap();
    current_thread().block_on(async {
        while publ.try_send(&[1; 500]).is_ok() {}
        for t in [Duration::ZERO, Duration::from_millis(30)] {
            let started = Instant::now();
            assert_eq!(
                publ.send_timeout(&[1; 500], t).await,
                Err(bus_core::SendTimeoutError::Timeout)
            );
            assert!(started.elapsed() >= t);
        }
        assert!(matches!(
            publ.send_timeout(&[0; 2000], Duration::MAX).await,
            Err(bus_core::SendTimeoutError::MessageTooLarge { .. })
        ));
    });
}

#[test]
fn an_async_receive_with_a_timeout_needs_no_runtime_timer() {
    // A runtime built without its time driver: only the waiter thread can end this wait.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bus = bus(&dir, "t.bus", 1 << 14, Mode::Reliable);
    let mut sub = bus.subscribe(Start::Latest).unwrap().into_async().unwrap();
    let mut buf = Vec::new();
    rt.block_on(async {
        for t in [
            Duration::ZERO,
            Duration::from_nanos(1),
            Duration::from_millis(30),
        ] {
            let started = Instant::now();
            let r = sub.recv_timeout(&mut buf, t).await;
            assert_eq!(r, Err(bus_core::RecvTimeoutError::Timeout));
            assert!(started.elapsed() >= t);
        }
        bus.publisher().unwrap().send(b"x").unwrap();
        let m = sub.recv_timeout(&mut buf, Duration::MAX).await.unwrap();
        assert_eq!((m.seq, &buf[..]), (0, &b"x"[..]));
    });
    assert_eq!(bus.stats().readers_waiting, 0);
}

/// Sends dropped at random poll counts (a `select!` against a future ready on its nth poll)
/// on a full reliable 4 KiB ring, each retried until it completes: the reader (which naps at
/// random, so the ring fills) sees every index exactly once and in order, and no publisher is
/// left counted as waiting.
#[test]
fn sends_dropped_at_random_await_points_publish_each_message_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let bus = bus(&dir, "c.bus", 4096, Mode::Reliable);
    let mut sub = bus.subscribe(Start::Latest).unwrap();
    sub.set_wait_strategy(WaitStrategy::SpinThenBlock);
    let mut publ = bus.publisher().unwrap().into_async().unwrap();
    const N: u64 = 200_000;
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let mut x = 0x1234_5678u64;
        for i in 0..N {
            let m = sub
                .recv_timeout(&mut buf, Duration::from_secs(60))
                .expect("reader timed out: publisher stuck?");
            assert_eq!(
                u64::from_le_bytes(buf[..8].try_into().unwrap()),
                i,
                "seq {}",
                m.seq
            );
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if x % 128 == 0 {
                std::thread::sleep(Duration::from_micros(100));
            }
        }
    });
    let rt = current_thread();
    let (cancels, slow) = rt.block_on(async {
        let mut cancels = 0u64;
        let mut slow = 0u64;
        let mut x = 0x9E37_79B9u64;
        for i in 0..N {
            loop {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let t0 = Instant::now();
                let bytes = i.to_le_bytes();
                let r = if x % 3 == 0 {
                    Ok(publ.send(&i.to_le_bytes()).await)
                } else {
                    tokio::select! {
                        biased;
                        r = publ.send(&bytes) => Ok(r),
                        _ = AfterPolls((x % 6) as u32 + 1) => Err(()),
                    }
                };
                if t0.elapsed() > Duration::from_millis(8) {
                    slow += 1;
                }
                match r {
                    Ok(r) => {
                        r.unwrap();
                        break;
                    }
                    Err(_) => cancels += 1,
                }
            }
        }
        (cancels, slow)
    });
    reader.join().unwrap();
    println!("cancels={cancels} sends_over_8ms={slow}");
    assert!(
        cancels > 0,
        "no send was ever cancelled: the test tested nothing"
    );
    assert_eq!(bus.stats().producers_waiting, 0);
}

/// Review of round 2: a bus whose unblock timeout is short, for the corrupt-record cases.
fn bus_unblock(dir: &tempfile::TempDir, name: &str, unblock_ms: u64) -> (Bus, std::path::PathBuf) {
    let path = dir.path().join(name);
    let bus = Bus::create(
        &path,
        &BusOptions::new()
            .capacity(64 * 1024)
            .max_message(1024)
            .mode(Mode::Reliable)
            .unblock_timeout(Duration::from_millis(unblock_ms)),
    )
    .unwrap();
    (bus, path)
}

/// The tail's position written three laps ahead by another process: a reliable reader the
/// ring has (seemingly) moved past, which the blocking receive reports as `Corrupt` after the
/// unblock timeout.
fn scribble_tail_far(bus: &Bus, p: &std::path::Path) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
    let far = bus.config().capacity * 3;
    f.write_all_at(&far.to_le_bytes(), bus_core::layout::LINE as u64)
        .unwrap();
}

/// Review of round 2: the async receive and the WaitSet asked the repairer (in `probe`),
/// heard "implausible", and then let the receive that followed find the stuck timer fresh and
/// say "nothing yet": the async receive waited forever and the WaitSet reported the member
/// ready while `try_recv` said `Empty`, where the blocking receive reports `Corrupt`.
#[test]
fn async_receives_and_the_waitset_report_a_corrupt_record_as_the_blocking_receive_does() {
    use bus_core::{RecvTimeoutError, TryRecvError};
    let dir = tempfile::tempdir().unwrap();
    let mut buf = Vec::new();
    // Blocking, for reference.
    let (bus, p) = bus_unblock(&dir, "sync.bus", 20);
    let mut sub = bus.subscribe(Start::Latest).unwrap();
    scribble_tail_far(&bus, &p);
    let r = sub.recv_timeout(&mut buf, Duration::from_secs(10));
    assert!(matches!(r, Err(RecvTimeoutError::Corrupt { .. })), "{r:?}");
    // Async, with and without a timeout, under a runtime timer that only bounds the test.
    let rt = current_thread();
    for strategy in [WaitStrategy::Block, WaitStrategy::SpinThenBlock] {
        let (bus, p) = bus_unblock(&dir, &format!("async-{strategy:?}.bus"), 20);
        let mut s = bus.subscribe(Start::Latest).unwrap();
        s.set_wait_strategy(strategy);
        let mut sub = s.into_async().unwrap();
        scribble_tail_far(&bus, &p);
        let r = rt.block_on(sub.recv_timeout(&mut buf, Duration::from_secs(10)));
        assert!(
            matches!(r, Err(RecvTimeoutError::Corrupt { .. })),
            "{strategy:?}: {r:?}"
        );
        let r = rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(10), sub.recv(&mut buf)).await
        });
        assert!(
            matches!(r, Ok(Err(RecvError::Corrupt { .. }))),
            "{strategy:?}: {r:?}"
        );
    }
    // The WaitSet: ready, and then the receive says what is wrong.
    let (bus, p) = bus_unblock(&dir, "waitset.bus", 20);
    let mut set = WaitSet::new();
    let k = set.add(bus.subscribe(Start::Latest).unwrap());
    scribble_tail_far(&bus, &p);
    let start = Instant::now();
    let mut seen = Vec::new();
    while start.elapsed() < Duration::from_secs(10) {
        for key in set.wait(Some(Duration::from_millis(200))) {
            assert_eq!(key, k);
            seen.push(set.get_mut(key).unwrap().try_recv(&mut buf));
        }
        if seen
            .iter()
            .any(|r| matches!(r, Err(TryRecvError::Corrupt { .. })))
        {
            return;
        }
    }
    panic!("the WaitSet never let a receive report the corrupt record: {seen:?}");
}

/// Review of round 2: an interrupt made while no wait was under way was lost (the wait took
/// the count at its start), so "set a stop flag, then interrupt" could leave the waiter
/// asleep for good.
#[test]
fn an_interrupt_between_two_waits_ends_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let bus = bus(&dir, "i.bus", 1 << 16, Mode::Reliable);
    let mut set = WaitSet::new();
    set.add(bus.subscribe(Start::Latest).unwrap());
    let interrupter = set.interrupter();
    interrupter.interrupt();
    let t = Instant::now();
    assert!(set.wait(Some(Duration::from_secs(30))).is_empty());
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "the interrupt made before the wait was lost: it slept {:?}",
        t.elapsed()
    );
    // Taken once: the next wait sleeps its time.
    let t = Instant::now();
    assert!(set.wait(Some(Duration::from_millis(50))).is_empty());
    assert!(t.elapsed() >= Duration::from_millis(50));
    // Two interrupts before one wait end that one wait.
    interrupter.interrupt();
    interrupter.interrupt();
    assert!(set.wait(Some(Duration::from_secs(30))).is_empty());
    let t = Instant::now();
    assert!(set.wait(Some(Duration::from_millis(50))).is_empty());
    assert!(t.elapsed() >= Duration::from_millis(50));
}

/// Review of round 2: a waker that panicked ended the waiter thread that ran it, and every
/// async handle seated there afterwards was never woken again (only an outside timer
/// re-polled it).
#[test]
fn a_panicking_waker_does_not_stop_the_waiter_threads() {
    use std::future::Future;
    use std::task::{Context, Wake, Waker};
    struct Bomb(AtomicBool);
    impl Wake for Bomb {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref()
        }
        fn wake_by_ref(self: &Arc<Self>) {
            if self.0.swap(false, Ordering::SeqCst) {
                panic!("a waker panicked (on purpose, in a test)");
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let first = bus(&dir, "p.bus", 1 << 16, Mode::Reliable);
    let mut s = first.subscribe(Start::Latest).unwrap();
    s.set_wait_strategy(WaitStrategy::Block);
    let mut sub = s.into_async().unwrap();
    let mut buf = Vec::new();
    {
        let bomb = Arc::new(Bomb(AtomicBool::new(false)));
        let waker = Waker::from(bomb.clone());
        let mut cx = Context::from_waker(&waker);
        let mut fut = Box::pin(sub.recv(&mut buf));
        // Parks at once (Block); the waiter thread wakes it at the end of its slice, or at
        // the publish below, and the waker panics there.
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        bomb.0.store(true, Ordering::SeqCst);
        first.publisher().unwrap().send(b"boom").unwrap();
        let t = Instant::now();
        while bomb.0.load(Ordering::SeqCst) && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!bomb.0.load(Ordering::SeqCst), "the waker was never called");
    }
    // Another bus, another handle: the waiter threads must still wake it.
    let second = bus(&dir, "q.bus", 1 << 16, Mode::Reliable);
    let mut s = second.subscribe(Start::Latest).unwrap();
    s.set_wait_strategy(WaitStrategy::Block);
    let mut sub2 = s.into_async().unwrap();
    let mut publ = second.publisher().unwrap();
    let th = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        publ.send(b"x").unwrap();
    });
    let t = Instant::now();
    let r = current_thread().block_on(async {
        tokio::time::timeout(Duration::from_secs(20), sub2.recv(&mut buf)).await
    });
    th.join().unwrap();
    assert!(matches!(r, Ok(Ok(_))), "{r:?}");
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "woken only by the runtime's timer after {:?}: the waiter thread is gone",
        t.elapsed()
    );
}
