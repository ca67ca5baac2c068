//! The publish and receive paths in one process, for instruction counting:
//!
//! ```sh
//! cargo build --release -p bus-bench --bin bus-hotpath
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out \
//!     target/release/bus-hotpath send 64 100000
//! callgrind_annotate /tmp/cg.out | head -30
//! ```
//!
//! `MODE` is `send` (send + recv_ref), `copy` (send + recv into a buffer) or `loan`
//! (loan + commit + recv_ref); each iteration publishes one `SIZE`-byte message and receives
//! it, so the total instructions divided by `COUNT` is the cost of one message through both
//! paths (minus the setup, which a run of 0 messages shows). `PRODUCERS` is the bus's number
//! of producer slots: 1 (the default, as in `shmbus bench`) makes it exclusive, more makes
//! the claim and commit CASes.
//!
//! `SUBSCRIBERS` (default 1) attaches that many subscribers: the first receives every message
//! as above, the others are idle (attached, reading nothing) until the ring is half full, then
//! each drains it, so that a reliable publisher keeps finding room. The publish and the
//! receive are separate functions that are never inlined (`publish`, `receive`), so callgrind
//! can count the publish path alone, whatever the subscribers cost:
//!
//! ```sh
//! valgrind --tool=callgrind --toggle-collect='bus_hotpath::publish' \
//!     target/release/bus-hotpath send 64 100000 1 64
//! ```
//!
//! (the instructions it reports, over `COUNT`, are one publish with 64 live subscribers).

use std::process::ExitCode;

use bus_core::{Bus, BusOptions, Publisher, Start, Subscriber, WaitStrategy};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: bus-hotpath send|copy|loan SIZE COUNT [PRODUCERS [SUBSCRIBERS]]";
    let optional = |i: usize| match args.get(i).map(|s| s.parse::<u32>()) {
        None => Some(1),
        Some(Ok(n)) if n >= 1 => Some(n),
        Some(_) => None,
    };
    let (Some(mode), Some(size), Some(count), Some(producers), Some(subscribers)) = (
        args.get(1),
        args.get(2).and_then(|s| s.parse::<usize>().ok()),
        args.get(3).and_then(|s| s.parse::<u64>().ok()),
        optional(4),
        optional(5),
    ) else {
        eprintln!("{usage}");
        return ExitCode::from(2);
    };
    match run(mode, size, count, producers, subscribers) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bus-hotpath: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Ring size of the bus.
const CAPACITY: u64 = 2 << 20;

fn run(
    mode: &str,
    size: usize,
    count: u64,
    producers: u32,
    subscribers: u32,
) -> Result<(), Box<dyn std::error::Error>> {
    if !["send", "copy", "loan"].contains(&mode) {
        return Err(format!("unknown mode {mode:?}").into());
    }
    let dir = tempfile::tempdir_in("/dev/shm").or_else(|_| tempfile::tempdir())?;
    let bus = Bus::create(
        dir.path().join("hot.bus"),
        &BusOptions::new()
            .capacity(CAPACITY)
            .max_producers(producers)
            .max_subscribers(subscribers.max(8)),
    )?;
    let mut publ = bus.publisher()?;
    let mut sub = bus.subscribe(Start::Latest)?;
    sub.set_wait_strategy(WaitStrategy::Spin);
    let mut idle = (1..subscribers)
        .map(|_| bus.subscribe(Start::Latest))
        .collect::<Result<Vec<_>, _>>()?;
    // The idle subscribers drain once the ring is about half full (a record is at least 32
    // bytes: a 16-byte header and a 16-aligned payload).
    let drain_every = (CAPACITY / 2 / (16 + (size as u64).next_multiple_of(16))).max(1);
    let msg = vec![7u8; size];
    let mut buf = Vec::with_capacity(size);
    let mut sum = 0u64;
    for i in 0..count {
        publish(&mut publ, mode, &msg, i)?;
        sum += receive(&mut sub, mode, &mut buf)?;
        if !idle.is_empty() && (i + 1) % drain_every == 0 {
            for s in &mut idle {
                while s.try_recv_ref().is_ok() {}
            }
        }
    }
    std::hint::black_box(sum);
    Ok(())
}

/// One message through the publish path.
#[inline(never)]
fn publish(
    publ: &mut Publisher,
    mode: &str,
    msg: &[u8],
    i: u64,
) -> Result<(), Box<dyn std::error::Error>> {
    if mode == "loan" {
        let mut loan = publ.loan(msg.len())?;
        loan.fill(i as u8);
        loan.commit()?;
    } else {
        publ.send(msg)?;
    }
    Ok(())
}

/// One message through the receive path.
#[inline(never)]
fn receive(
    sub: &mut Subscriber,
    mode: &str,
    buf: &mut Vec<u8>,
) -> Result<u64, Box<dyn std::error::Error>> {
    if mode == "copy" {
        sub.recv(buf)?;
        Ok(buf[0] as u64)
    } else {
        let sample = sub.recv_ref()?;
        Ok(sample.first().copied().unwrap_or(0) as u64)
    }
}
