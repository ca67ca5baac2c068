//! Request/reply between processes with `Server` and `Client`, and what it costs against a
//! plain ping-pong over the same two buses.
//!
//! `cargo run --release --example request_reply` starts the server as a second process
//! (this program again), sends a few requests, then times 20,000 round trips through the
//! request/reply API and 20,000 through a bare echo process, and prints both.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use bus_core::{Bus, BusOptions, Client, Server, Start};

const ROUNDS: usize = 20_000;

/// The server: `Server::serve` answers each request with the sum of the two numbers in it.
fn server(dir: &str) -> Result<(), Box<dyn std::error::Error>> {
    let requests = Bus::open(format!("{dir}/requests.bus"))?;
    let replies = Bus::open(format!("{dir}/replies.bus"))?;
    let mut server = Server::new(&requests, &replies)?;
    println!("ready");
    server.serve(|req, reply| {
        if req.data == b"stop" {
            return false;
        }
        let text = String::from_utf8_lossy(req.data);
        let sum: i64 = text
            .split('+')
            .filter_map(|n| n.trim().parse::<i64>().ok())
            .sum();
        reply.extend_from_slice(sum.to_string().as_bytes());
        true
    })?;
    Ok(())
}

/// The baseline: a bare echo over the same two buses, no ids, no filtering.
fn echo(dir: &str) -> Result<(), Box<dyn std::error::Error>> {
    let requests = Bus::open(format!("{dir}/requests.bus"))?;
    let replies = Bus::open(format!("{dir}/replies.bus"))?;
    let mut sub = requests.subscribe(Start::Latest)?;
    let mut publ = replies.publisher()?;
    println!("ready");
    let mut buf = Vec::new();
    loop {
        sub.recv(&mut buf)?;
        publ.send(&buf)?;
        if buf == b"stop" {
            return Ok(());
        }
    }
}

fn spawn(role: &str, dir: &str) -> Result<Child, Box<dyn std::error::Error>> {
    use std::io::BufRead;
    let mut child = Command::new(std::env::current_exe()?)
        .args([role, dir])
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    // Wait for "ready": its slots exist, so nothing sent from now on is missed.
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().ok_or("stdout")?).read_line(&mut line)?;
    Ok(child)
}

fn percentiles(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    (v[v.len() / 2], v[v.len() * 99 / 100])
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 3 && args[1] == "server" {
        return server(&args[2]);
    }
    if args.len() == 3 && args[1] == "echo" {
        return echo(&args[2]);
    }
    let dir = tempfile::tempdir()?;
    let d = dir.path().to_str().ok_or("path")?;
    let opts = BusOptions::new().capacity(1 << 20);
    let requests = Bus::create(dir.path().join("requests.bus"), &opts)?;
    // Lossy replies: a client that stops reading is lapped instead of holding the server up.
    let replies = Bus::create(
        dir.path().join("replies.bus"),
        &opts.clone().mode(bus_core::Mode::Lossy),
    )?;

    let mut child = spawn("server", d)?;
    // A client finds the server by its producer slot on the replies bus; it would get
    // `ConnectError::NoServer` before the server is up, and `RequestError::ServerGone` as
    // soon as it dies.
    let mut client = Client::new(&requests, &replies)?;
    let mut reply = Vec::new();
    for (a, b) in [(1, 2), (40, 2), (-7, 7)] {
        client.request(
            format!("{a}+{b}").as_bytes(),
            &mut reply,
            Duration::from_secs(10),
        )?;
        println!("{a} + {b} = {}", String::from_utf8_lossy(&reply));
    }
    // Several in flight at once, answered in order, collected as they come.
    let ids: Vec<u64> = (0..4)
        .map(|i| client.send_request(format!("{i}+{i}").as_bytes()))
        .collect::<Result<_, _>>()?;
    for _ in &ids {
        let id = client.recv_reply(&mut reply, Duration::from_secs(10))?;
        println!("request {id}: {}", String::from_utf8_lossy(&reply));
    }

    let mut api = Vec::with_capacity(ROUNDS);
    for i in 0..ROUNDS {
        let t = Instant::now();
        client.request(
            format!("{i}+1").as_bytes(),
            &mut reply,
            Duration::from_secs(10),
        )?;
        api.push(t.elapsed());
    }
    client.request(b"stop", &mut reply, Duration::from_secs(10))?;
    drop(client);
    child.wait()?;

    let mut child = spawn("echo", d)?;
    let mut publ = requests.publisher()?;
    let mut sub = replies.subscribe(Start::Latest)?;
    let mut plain = Vec::with_capacity(ROUNDS);
    for i in 0..ROUNDS {
        let t = Instant::now();
        publ.send(format!("{i}+1").as_bytes())?;
        sub.recv(&mut reply)?;
        plain.push(t.elapsed());
    }
    publ.send(b"stop")?;
    child.wait()?;

    let (a50, a99) = percentiles(api);
    let (p50, p99) = percentiles(plain);
    println!("round trip, {ROUNDS} each: Client::request p50 {a50:?} p99 {a99:?}; plain two-bus ping-pong p50 {p50:?} p99 {p99:?}; ratio at p50 {:.2}", a50.as_secs_f64() / p50.as_secs_f64());
    Ok(())
}
