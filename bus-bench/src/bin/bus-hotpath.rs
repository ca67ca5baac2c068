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

use std::process::ExitCode;

use bus_core::{Bus, BusOptions, Start, WaitStrategy};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: bus-hotpath send|copy|loan SIZE COUNT [PRODUCERS]";
    let producers = match args.get(4).map(|s| s.parse::<u32>()) {
        None => Some(1),
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => None,
    };
    let (Some(mode), Some(size), Some(count), Some(producers)) = (
        args.get(1),
        args.get(2).and_then(|s| s.parse::<usize>().ok()),
        args.get(3).and_then(|s| s.parse::<u64>().ok()),
        producers,
    ) else {
        eprintln!("{usage}");
        return ExitCode::from(2);
    };
    match run(mode, size, count, producers) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bus-hotpath: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(
    mode: &str,
    size: usize,
    count: u64,
    producers: u32,
) -> Result<(), Box<dyn std::error::Error>> {
    if !["send", "copy", "loan"].contains(&mode) {
        return Err(format!("unknown mode {mode:?}").into());
    }
    let dir = tempfile::tempdir_in("/dev/shm").or_else(|_| tempfile::tempdir())?;
    let bus = Bus::create(
        dir.path().join("hot.bus"),
        &BusOptions::new().capacity(2 << 20).max_producers(producers),
    )?;
    let mut publ = bus.publisher()?;
    let mut sub = bus.subscribe(Start::Latest)?;
    sub.set_wait_strategy(WaitStrategy::Spin);
    let msg = vec![7u8; size];
    let mut buf = Vec::with_capacity(size);
    let mut sum = 0u64;
    for i in 0..count {
        if mode == "loan" {
            let mut loan = publ.loan(size)?;
            loan.fill(i as u8);
            loan.commit()?;
        } else {
            publ.send(&msg)?;
        }
        if mode == "copy" {
            sub.recv(&mut buf)?;
            sum += buf[0] as u64;
        } else {
            let sample = sub.recv_ref()?;
            sum += sample.first().copied().unwrap_or(0) as u64;
        }
    }
    std::hint::black_box(sum);
    Ok(())
}
