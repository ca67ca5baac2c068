//! Request/reply across processes: a `Server` in `bus-peer serve`, clients here.

use std::time::Duration;

use bus_core::{Bus, BusOptions, Client, ConnectError, RequestError, Server, Start};
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
