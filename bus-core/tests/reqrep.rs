//! Request/reply across processes: a `Server` in `bus-peer serve`, clients here.

use std::time::Duration;

use bus_core::{Bus, BusOptions, Client, ConnectError, Mode, RequestError, Server, Start};
use testkit::Procs;

const PEER: &str = env!("CARGO_BIN_EXE_bus-peer");

fn buses(dir: &tempfile::TempDir) -> (Bus, Bus, String, String) {
    let opts = BusOptions::new().capacity(1 << 16).max_message(4096);
    let rq = dir.path().join("rq.bus");
    let rp = dir.path().join("rp.bus");
    let requests = Bus::create(&rq, &opts).unwrap();
    let replies = Bus::create(&rp, &opts).unwrap();
    (
        requests,
        replies,
        rq.to_str().unwrap().into(),
        rp.to_str().unwrap().into(),
    )
}

#[test]
fn many_clients_with_many_requests_in_flight_get_their_own_replies() {
    let dir = tempfile::tempdir().unwrap();
    let (requests, replies, rq, rp) = buses(&dir);
    let mut procs = Procs::new(Duration::from_secs(120));
    let server = procs.spawn("server", PEER, &["serve", &rq, &rp]);
    procs.expect_line(server, "ready");
    let threads: Vec<_> = (0..4u64)
        .map(|c| {
            let (requests, replies) = (requests.clone(), replies.clone());
            std::thread::spawn(move || {
                let mut client = Client::new(&requests, &replies).unwrap();
                let mut buf = Vec::new();
                // One at a time...
                for i in 0..500u64 {
                    let msg = format!("{c}/{i}");
                    client
                        .request(msg.as_bytes(), &mut buf, Duration::from_secs(30))
                        .unwrap();
                    assert_eq!(buf, format!("re:{msg}").as_bytes());
                }
                // ...then 32 in flight, collected in whatever order they come.
                let mut want = std::collections::HashMap::new();
                for i in 0..32u64 {
                    let msg = format!("{c}/burst/{i}");
                    let id = client.send_request(msg.as_bytes()).unwrap();
                    want.insert(id, format!("re:{msg}"));
                }
                assert_eq!(client.in_flight(), 32);
                while !want.is_empty() {
                    let id = client
                        .recv_reply(&mut buf, Duration::from_secs(30))
                        .unwrap();
                    assert_eq!(want.remove(&id).unwrap().as_bytes(), &buf[..]);
                }
                assert_eq!(client.in_flight(), 0);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut client = Client::new(&requests, &replies).unwrap();
    let mut buf = Vec::new();
    client
        .request(b"stop", &mut buf, Duration::from_secs(30))
        .unwrap();
    procs.success(server);
}

#[test]
fn a_client_waiting_on_a_killed_server_gets_server_gone_not_a_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (requests, replies, rq, rp) = buses(&dir);
    // No server yet: refused at once.
    assert_eq!(
        Client::new(&requests, &replies).unwrap_err(),
        ConnectError::NoServer
    );
    let mut procs = Procs::new(Duration::from_secs(60));
    let server = procs.spawn("server", PEER, &["serve", &rq, &rp]);
    procs.expect_line(server, "ready");
    let mut client = Client::new(&requests, &replies).unwrap();
    let mut buf = Vec::new();
    client
        .request(b"hello", &mut buf, Duration::from_secs(30))
        .unwrap();
    // Stop the server (SIGSTOP): alive, so a request times out...
    procs.signal(server, libc::SIGSTOP);
    assert_eq!(
        client.request(b"slow", &mut buf, Duration::from_millis(50)),
        Err(RequestError::Timeout)
    );
    // ...and killed, a request with an hour's timeout ends with ServerGone (the watchdog
    // would fail the test long before the hour).
    let waiter = std::thread::spawn(move || {
        let r = client.request(b"anyone?", &mut buf, Duration::from_secs(3600));
        (r, client)
    });
    std::thread::sleep(Duration::from_millis(50));
    procs.signal(server, libc::SIGKILL);
    let (r, mut client) = waiter.join().unwrap();
    assert_eq!(r, Err(RequestError::ServerGone));
    // Later requests say so too, and a new server needs a new client.
    assert_eq!(client.send_request(b"again"), Err(RequestError::ServerGone));
    let _ = procs.wait(server);
    let server2 = procs.spawn("server 2", PEER, &["serve", &rq, &rp]);
    procs.expect_line(server2, "ready");
    let mut client = Client::new(&requests, &replies).unwrap();
    let mut buf = Vec::new();
    client
        .request(b"stop", &mut buf, Duration::from_secs(30))
        .unwrap();
    procs.success(server2);
}

#[test]
fn a_server_skips_frames_too_short_to_be_requests() {
    let dir = tempfile::tempdir().unwrap();
    let (requests, replies, _, _) = buses(&dir);
    let mut server = Server::new(&requests, &replies).unwrap();
    let mut raw = requests.publisher().unwrap();
    raw.send(b"short").unwrap();
    raw.send(&[7u8; 16]).unwrap();
    let req = server.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(
        (req.client, req.id, req.data),
        (0x0707_0707_0707_0707, 0x0707_0707_0707_0707, &b""[..])
    );
    let to = req.reply_to();
    assert_eq!(server.malformed(), 1);
    // A byte-level reader of the replies bus sees the frame: ids, then the payload.
    let mut tap = replies.subscribe(Start::Latest).unwrap();
    server.reply(to, b"ok").unwrap();
    let mut buf = Vec::new();
    tap.recv(&mut buf).unwrap();
    assert_eq!(&buf[16..], b"ok");
    assert_eq!(&buf[..8], &to.client.to_le_bytes());
}

/// Runs `f` on a thread and waits at most `limit` for it: a hang fails the test (the thread is
/// left behind) instead of stalling the suite.
fn bounded<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .expect("watchdog: the call did not return in time")
}

fn small_buses(dir: &tempfile::TempDir, replies_mode: Mode) -> (Bus, Bus) {
    let opts = BusOptions::new().capacity(4096).max_message(1024);
    let requests = Bus::create(dir.path().join("rq.bus"), &opts).unwrap();
    let replies = Bus::create(dir.path().join("rp.bus"), &opts.mode(replies_mode)).unwrap();
    (requests, replies)
}

/// Review of round 2: `request`'s timeout did not cover sending, so a request to a live server
/// that had stopped reading (a full reliable requests ring) never returned.
#[test]
fn a_request_timeout_covers_the_wait_for_room_to_send() {
    let dir = tempfile::tempdir().unwrap();
    let (requests, replies) = small_buses(&dir, Mode::Reliable);
    let server = Server::new(&requests, &replies).unwrap();
    let results = bounded(Duration::from_secs(20), move || {
        let mut client = Client::new(&requests, &replies).unwrap();
        let mut buf = Vec::new();
        let r: Vec<_> = (0..8)
            .map(|_| client.request(&[1; 1000], &mut buf, Duration::from_millis(50)))
            .collect();
        (r, client.in_flight())
    });
    drop(server);
    // Each fits until the ring is full; every one of them ends in a timeout.
    assert!(
        results.0.iter().all(|r| *r == Err(RequestError::Timeout)),
        "{results:?}"
    );
    assert_eq!(results.1, 0, "timed-out requests are forgotten");
}

/// Review of round 2: a reply for another client was taken as "wait on" without a look at
/// the deadline, so while others' replies kept coming a request outlived its timeout (for
/// ever, under a steady stream). Past its deadline a wait now looks through what is already
/// in the ring for one liveness interval (10 ms) at most: here the ring holds over a million
/// of others' replies, far more than that reads, and a request with a zero timeout must not
/// read them all (had it, the ring would have room again).
#[test]
fn other_clients_replies_streaming_by_do_not_hold_a_request_past_its_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let requests = Bus::create(dir.path().join("rq.bus"), &BusOptions::new()).unwrap();
    let replies = Bus::create(
        dir.path().join("rp.bus"),
        &BusOptions::new().capacity(64 << 20),
    )
    .unwrap();
    let _server = Server::new(&requests, &replies).unwrap();
    let mut client = Client::new(&requests, &replies).unwrap();
    let mut others = replies.publisher().unwrap();
    let frame = [0xAAu8; 24];
    let mut queued = 0;
    while others.try_send(&frame).is_ok() {
        queued += 1;
    }
    assert!(queued > 1_000_000, "{queued}");
    let mut buf = Vec::new();
    assert_eq!(
        client.request(b"anyone?", &mut buf, Duration::ZERO),
        Err(RequestError::Timeout)
    );
    let room = (0..queued)
        .take_while(|_| others.try_send(&frame).is_ok())
        .count();
    assert!(
        room < queued / 2,
        "the request read {room} of {queued} others' replies past its deadline"
    );
}

/// Review of the fix above: past the deadline, a reply already in the ring behind another
/// client's is still taken (a zero timeout used to stop at the first other reply).
#[test]
fn a_zero_timeout_still_takes_a_reply_behind_others() {
    let dir = tempfile::tempdir().unwrap();
    let (requests, replies) = small_buses(&dir, Mode::Reliable);
    let mut server = replies.publisher().unwrap();
    let mut client = Client::new(&requests, &replies).unwrap();
    let id = client.send_request(b"q").unwrap();
    let frame = |c: u64, i: u64, d: &[u8]| [&c.to_le_bytes()[..], &i.to_le_bytes(), d].concat();
    server.send(&frame(!client.id(), id, b"not yours")).unwrap();
    server.send(&frame(client.id(), id, b"yours")).unwrap();
    let mut buf = Vec::new();
    assert_eq!(client.recv_reply(&mut buf, Duration::ZERO), Ok(id));
    assert_eq!(buf, b"yours");
}

/// Review of the lap fix: with no deadline (`Duration::MAX`) a lap that may have taken the
/// awaited reply ends the wait with `Lost` (it would never end otherwise) and the request is
/// no longer in flight; a lap entirely before the request was sent does not.
#[test]
fn a_wait_without_a_deadline_ends_when_a_lap_may_have_taken_its_reply() {
    let dir = tempfile::tempdir().unwrap();
    let (requests, replies) = small_buses(&dir, Mode::Lossy);
    let mut server = Server::new(&requests, &replies).unwrap();
    let mut client = Client::new(&requests, &replies).unwrap();
    let flood = |server: &mut Server| {
        for i in 0..200 {
            let to = bus_core::ReplyTo { client: 7, id: i };
            server.reply(to, &[0; 100]).unwrap();
        }
    };
    // A lap before the request: its reply is still coming, the wait goes on and gets it.
    flood(&mut server);
    let id = client.send_request(b"a").unwrap();
    let to = server
        .recv_timeout(Duration::from_secs(5))
        .unwrap()
        .reply_to();
    server.reply(to, b"re:a").unwrap();
    let mut buf = Vec::new();
    assert_eq!(client.recv_reply(&mut buf, Duration::MAX), Ok(id));
    // A lap after it, over its reply: Lost, not a wait for ever.
    let id = client.send_request(b"b").unwrap();
    let to = server
        .recv_timeout(Duration::from_secs(5))
        .unwrap()
        .reply_to();
    assert_eq!(to.id, id);
    server.reply(to, b"re:b").unwrap();
    flood(&mut server);
    let (r, in_flight) = bounded(Duration::from_secs(20), move || {
        let mut buf = Vec::new();
        let r = client.recv_reply(&mut buf, Duration::MAX);
        (r, client.in_flight())
    });
    assert!(
        matches!(r, Err(RequestError::Recv(bus_core::RecvError::Lost(_)))),
        "{r:?}"
    );
    assert_eq!(in_flight, 0);
}

/// Review of round 2: on a lossy replies bus a lap (almost always over other clients'
/// replies) failed the request in flight with `Lost` and dropped its reply, which came next.
#[test]
fn a_lapped_client_on_a_lossy_replies_bus_still_gets_its_reply() {
    let dir = tempfile::tempdir().unwrap();
    let (requests, replies) = small_buses(&dir, Mode::Lossy);
    let mut server = Server::new(&requests, &replies).unwrap();
    let mut client = Client::new(&requests, &replies).unwrap();
    let id = client.send_request(b"mine").unwrap();
    let to = server
        .recv_timeout(Duration::from_secs(5))
        .unwrap()
        .reply_to();
    assert_eq!(to.id, id);
    // Other clients' replies lap this client several times before its own comes.
    for i in 0..200u64 {
        server
            .reply(
                bus_core::ReplyTo {
                    client: !client.id(),
                    id: i,
                },
                &[0; 100],
            )
            .unwrap();
    }
    server.reply(to, b"re:mine").unwrap();
    let mut buf = Vec::new();
    assert_eq!(client.recv_reply(&mut buf, Duration::from_secs(5)), Ok(id));
    assert_eq!(buf, b"re:mine");
    assert!(client.replies_lost() > 0, "the lap was counted");
}

/// A client that keeps its handle without reading: on a lossy replies bus it only loses
/// replies (and says so when it next waits), the server and every other client go on; on a
/// reliable one `reply_timeout` bounds the server's wait instead of hanging it.
#[test]
fn an_idle_client_does_not_hold_the_server_up() {
    let dir = tempfile::tempdir().unwrap();
    let (requests, replies) = small_buses(&dir, Mode::Lossy);
    let mut server = Server::new(&requests, &replies).unwrap();
    let mut idle = Client::new(&requests, &replies).unwrap();
    let (rq, rp) = (requests.clone(), replies.clone());
    let serving = std::thread::spawn(move || {
        server
            .serve(|req, out| {
                out.extend_from_slice(req.data);
                req.data != b"stop"
            })
            .unwrap();
    });
    bounded(Duration::from_secs(60), move || {
        let mut c = Client::new(&rq, &rp).unwrap();
        let mut buf = Vec::new();
        for i in 0..2000u32 {
            c.request(&i.to_le_bytes(), &mut buf, Duration::from_secs(10))
                .unwrap();
            assert_eq!(buf, i.to_le_bytes());
        }
        c.request(b"stop", &mut buf, Duration::from_secs(10))
            .unwrap();
    });
    serving.join().unwrap();
    // (The server has stopped: the idle client's next wait reads what is left, then says so.)
    let mut buf = Vec::new();
    assert_eq!(
        idle.recv_reply(&mut buf, Duration::from_secs(5)),
        Err(RequestError::ServerGone)
    );
    assert!(idle.replies_lost() > 0, "it was lapped");

    let dir = tempfile::tempdir().unwrap();
    let (requests, replies) = small_buses(&dir, Mode::Reliable);
    let mut server = Server::new(&requests, &replies).unwrap();
    let _idle = Client::new(&requests, &replies).unwrap();
    let to = bus_core::ReplyTo { client: 1, id: 1 };
    let outcome = bounded(Duration::from_secs(20), move || {
        (0..100)
            .map(|_| server.reply_timeout(to, &[0; 500], Duration::from_millis(20)))
            .find(Result::is_err)
    });
    assert_eq!(outcome, Some(Err(bus_core::SendTimeoutError::Timeout)));
}

/// Review of round 2: one bus for both roles was accepted, and a client then read its own
/// request back as the reply.
#[test]
fn one_bus_for_requests_and_replies_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (requests, replies, rq, _) = buses(&dir);
    let again = Bus::open(&rq).unwrap();
    assert_eq!(
        Server::new(&requests, &requests).unwrap_err(),
        ConnectError::SameBus
    );
    let _server = Server::new(&requests, &replies).unwrap();
    assert_eq!(
        Client::new(&requests, &again).unwrap_err(),
        ConnectError::SameBus,
        "the same file opened twice"
    );
    // A client on two buses still connects.
    Client::new(&requests, &replies).unwrap();
}
