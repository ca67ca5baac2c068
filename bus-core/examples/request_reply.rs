//! Request/reply over two buses: clients publish requests on one bus, a server process
//! answers on another, and each client picks out the replies to its own requests.
//!
//! `cargo run --example request_reply` starts the server as a second process.

use std::process::Command;
use std::time::Duration;

use bus_core::{Bus, BusOptions, Start, TypedPublisher, TypedSubscriber};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
enum Request {
    Add { id: u64, a: i64, b: i64 },
    Shutdown,
}

#[derive(Debug, Serialize, Deserialize)]
struct Reply {
    id: u64,
    client: u32,
    sum: i64,
}

fn server(dir: &str) -> Result<(), Box<dyn std::error::Error>> {
    let requests = Bus::open(format!("{dir}/requests.bus"))?;
    let replies = Bus::open(format!("{dir}/replies.bus"))?;
    // Oldest: requests sent before the server was up are answered too.
    let mut rx: TypedSubscriber<(u32, Request)> =
        TypedSubscriber::new(requests.subscribe(Start::Oldest)?);
    let mut tx: TypedPublisher<Reply> = TypedPublisher::new(replies.publisher()?);
    loop {
        let (client, req) = rx.recv_timeout(Duration::from_secs(10))?.value;
        match req {
            Request::Add { id, a, b } => {
                tx.send(&Reply {
                    id,
                    client,
                    sum: a + b,
                })?;
            }
            Request::Shutdown => return Ok(()),
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 3 && args[1] == "server" {
        return server(&args[2]);
    }
    let dir = tempfile::tempdir()?;
    let opts = BusOptions::new().capacity(1 << 20);
    let requests = Bus::create(dir.path().join("requests.bus"), &opts)?;
    let replies = Bus::create(dir.path().join("replies.bus"), &opts)?;

    // Subscribe to replies before asking, so that none is missed.
    let me = std::process::id();
    let mut answers: TypedSubscriber<Reply> =
        TypedSubscriber::new(replies.subscribe(Start::Latest)?);
    let mut ask: TypedPublisher<(u32, Request)> = TypedPublisher::new(requests.publisher()?);

    let mut server = Command::new(std::env::current_exe()?)
        .args(["server", dir.path().to_str().unwrap()])
        .spawn()?;
    for id in 0..5u64 {
        ask.send(&(
            me,
            Request::Add {
                id,
                a: id as i64,
                b: 100,
            },
        ))?;
        // Replies to other clients would be skipped here.
        let reply = loop {
            let r = answers.recv_timeout(Duration::from_secs(10))?.value;
            if r.client == me && r.id == id {
                break r;
            }
        };
        println!("request {id}: {id} + 100 = {}", reply.sum);
        assert_eq!(reply.sum, id as i64 + 100);
    }
    ask.send(&(me, Request::Shutdown))?;
    assert!(server.wait()?.success());
    Ok(())
}
