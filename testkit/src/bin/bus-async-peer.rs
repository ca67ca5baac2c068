//! `bus-async-peer`: the other process of the async and `WaitSet` tests (testkit/tests/async_procs.rs).
//! Not a user tool. Every role runs on tokio's `current_thread` runtime unless it says
//! otherwise.
//!
//! ```text
//! bus-async-peer publish BUS COUNT SIZE [BURST]   AsyncPublisher: COUNT messages, payload
//!                                                 starting with the index (u64 LE); with
//!                                                 BURST, a 1 ms pause after every BURST
//! bus-async-peer consume BUS COUNT                AsyncSubscriber from Latest: prints
//!                                                 "ready", checks indexes 0..COUNT in
//!                                                 order, prints "done"
//! bus-async-peer fan-in DIR BUSES SUBS COUNT      SUBS AsyncSubscribers on each of the
//!                                                 BUSES buses DIR/b{i}.bus (COUNT messages
//!                                                 of `publish` each, from Oldest); prints
//!                                                 "ready", then "done max-threads=T"
//! bus-async-peer waitset DIR BUSES COUNT          the same with one sync WaitSet, one
//!                                                 subscriber a bus
//! bus-async-peer pong BUS_IN BUS_OUT COUNT        receive a message, send it back; COUNT
//!                                                 times
//! bus-async-peer ping BUS_OUT BUS_IN COUNT        send index i, await it back; COUNT times;
//!                                                 prints "done"
//! bus-async-peer slow BUS PAUSE_US                a blocking subscriber that naps PAUSE_US
//!                                                 after each message; prints "ready" and
//!                                                 reads until killed
//! ```
//!
//! Exit status: 0 verified, 1 failed (reason on stderr), 2 usage.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use bus_core::{Bus, Start, WaitSet};

/// `Threads:` of /proc/self/status.
fn threads() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:").map(|v| v.trim().parse().ok()))
                .flatten()
        })
        .unwrap_or(usize::MAX)
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> Result<T, String> {
    args.get(i)
        .ok_or_else(|| format!("missing {what}"))?
        .parse()
        .map_err(|_| format!("bad {what}: {:?}", args[i]))
}

fn ready() {
    println!("ready");
    std::io::stdout().flush().ok();
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime")
}

fn publish(args: &[String]) -> Result<(), String> {
    let bus = Bus::open(&args[2]).map_err(|e| e.to_string())?;
    let count: u64 = arg(args, 3, "count")?;
    let size: usize = arg(args, 4, "size")?;
    runtime().block_on(async {
        let mut publ = bus
            .publisher()
            .map_err(|e| e.to_string())?
            .into_async()
            .map_err(|e| e.to_string())?;
        let burst: u64 = args.get(5).map_or(Ok(0), |_| arg(args, 5, "burst"))?;
        let mut msg = vec![0u8; size.max(8)];
        for i in 0..count {
            msg[..8].copy_from_slice(&i.to_le_bytes());
            publ.send(&msg)
                .await
                .map_err(|e| format!("send {i}: {e}"))?;
            if burst > 0 && i % burst == burst - 1 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        Ok(())
    })
}

fn consume(args: &[String]) -> Result<(), String> {
    let bus = Bus::open(&args[2]).map_err(|e| e.to_string())?;
    let count: u64 = arg(args, 3, "count")?;
    runtime().block_on(async {
        let mut sub = bus
            .subscribe(Start::Latest)
            .map_err(|e| e.to_string())?
            .into_async()
            .map_err(|e| e.to_string())?;
        ready();
        let mut buf = Vec::new();
        for i in 0..count {
            let m = sub.recv(&mut buf).await.map_err(|e| e.to_string())?;
            let got = u64::from_le_bytes(buf[..8].try_into().unwrap());
            if got != i || m.seq != i {
                return Err(format!("expected {i}, got index {got} seq {}", m.seq));
            }
        }
        println!("done threads={}", threads());
        Ok(())
    })
}

/// The index of a message of `publish`: its first 8 bytes.
fn produced_index(buf: &[u8]) -> Result<u64, String> {
    buf.get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
        .ok_or_else(|| format!("a message of {} bytes", buf.len()))
}

fn fan_in(args: &[String]) -> Result<(), String> {
    let dir = std::path::PathBuf::from(&args[2]);
    let buses: usize = arg(args, 3, "buses")?;
    let subs: usize = arg(args, 4, "subs")?;
    let count: u64 = arg(args, 5, "count")?;
    let rt = runtime();
    let max_threads = rt.block_on(async {
        let mut handles = Vec::new();
        for b in 0..buses {
            let bus = Bus::open(dir.join(format!("b{b}.bus"))).map_err(|e| e.to_string())?;
            for _ in 0..subs {
                let sub = bus
                    .subscribe(Start::Oldest)
                    .map_err(|e| e.to_string())?
                    .into_async()
                    .map_err(|e| e.to_string())?;
                handles.push((b, sub));
            }
        }
        ready();
        let max = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(threads()));
        let mut tasks = Vec::new();
        for (b, mut sub) in handles {
            let max = max.clone();
            // Spawned on this current-thread runtime: every task runs on this one thread.
            tasks.push(tokio::spawn(async move {
                let mut buf = Vec::new();
                for i in 0..count {
                    let m = sub.recv(&mut buf).await.map_err(|e| e.to_string())?;
                    let got = produced_index(&buf)?;
                    if got != i || m.seq != i {
                        return Err(format!("bus {b}: expected {i}, got {got} (seq {})", m.seq));
                    }
                    if i % 64 == 0 {
                        max.fetch_max(threads(), std::sync::atomic::Ordering::Relaxed);
                    }
                }
                Ok::<(), String>(())
            }));
        }
        for t in tasks {
            t.await.map_err(|e| e.to_string())??;
        }
        Ok::<usize, String>(
            max.load(std::sync::atomic::Ordering::Relaxed)
                .max(threads()),
        )
    })?;
    println!("done max-threads={max_threads}");
    Ok(())
}

fn waitset(args: &[String]) -> Result<(), String> {
    let dir = std::path::PathBuf::from(&args[2]);
    let buses: usize = arg(args, 3, "buses")?;
    let count: u64 = arg(args, 4, "count")?;
    let mut set = WaitSet::new();
    let mut keys = Vec::new();
    for b in 0..buses {
        let bus = Bus::open(dir.join(format!("b{b}.bus"))).map_err(|e| e.to_string())?;
        keys.push(set.add(bus.subscribe(Start::Oldest).map_err(|e| e.to_string())?));
    }
    ready();
    let mut next = vec![0u64; buses];
    let mut max_threads = threads();
    let mut buf = Vec::new();
    let mut err = None;
    while next.iter().any(|&n| n < count) && err.is_none() {
        let n = set.wait_with(Some(Duration::from_secs(60)), |key, sub| {
            let b = keys.iter().position(|k| *k == key).unwrap();
            while let Ok(m) = sub.try_recv(&mut buf) {
                match produced_index(&buf) {
                    Ok(got) if got == next[b] && m.seq == next[b] => next[b] += 1,
                    Ok(got) => {
                        err = Some(format!("bus {b}: expected {}, got {got}", next[b]));
                        return;
                    }
                    Err(e) => err = Some(e),
                }
            }
        });
        if n == 0 && err.is_none() {
            err = Some(format!("a wait of 60 s ended with nothing: {next:?}"));
        }
        max_threads = max_threads.max(threads());
    }
    if let Some(e) = err {
        return Err(e);
    }
    println!("done max-threads={max_threads}");
    Ok(())
}

fn pong(args: &[String]) -> Result<(), String> {
    let bus_in = Bus::open(&args[2]).map_err(|e| e.to_string())?;
    let bus_out = Bus::open(&args[3]).map_err(|e| e.to_string())?;
    let count: u64 = arg(args, 4, "count")?;
    runtime().block_on(async {
        let mut sub = bus_in
            .subscribe(Start::Latest)
            .map_err(|e| e.to_string())?
            .into_async()
            .map_err(|e| e.to_string())?;
        let mut publ = bus_out
            .publisher()
            .map_err(|e| e.to_string())?
            .into_async()
            .map_err(|e| e.to_string())?;
        ready();
        let mut buf = Vec::new();
        for i in 0..count {
            let m = sub.recv(&mut buf).await.map_err(|e| e.to_string())?;
            if m.seq != i {
                return Err(format!("expected {i}, got seq {}", m.seq));
            }
            publ.send(&buf).await.map_err(|e| e.to_string())?;
        }
        Ok(())
    })
}

fn ping(args: &[String]) -> Result<(), String> {
    let bus_out = Bus::open(&args[2]).map_err(|e| e.to_string())?;
    let bus_in = Bus::open(&args[3]).map_err(|e| e.to_string())?;
    let count: u64 = arg(args, 4, "count")?;
    runtime().block_on(async {
        let mut sub = bus_in
            .subscribe(Start::Latest)
            .map_err(|e| e.to_string())?
            .into_async()
            .map_err(|e| e.to_string())?;
        let mut publ = bus_out
            .publisher()
            .map_err(|e| e.to_string())?
            .into_async()
            .map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        for i in 0..count {
            publ.send(&i.to_le_bytes())
                .await
                .map_err(|e| e.to_string())?;
            sub.recv(&mut buf).await.map_err(|e| e.to_string())?;
            if produced_index(&buf)? != i {
                return Err(format!("sent {i}, got {:?} back", &buf[..]));
            }
        }
        println!("done threads={}", threads());
        Ok(())
    })
}

fn slow(args: &[String]) -> Result<(), String> {
    let bus = Bus::open(&args[2]).map_err(|e| e.to_string())?;
    let pause: u64 = arg(args, 3, "pause")?;
    let mut sub = bus.subscribe(Start::Latest).map_err(|e| e.to_string())?;
    ready();
    let mut buf = Vec::new();
    loop {
        sub.recv(&mut buf).map_err(|e| e.to_string())?;
        std::thread::sleep(Duration::from_micros(pause));
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let r = match args.get(1).map(String::as_str) {
        Some("publish") if args.len() >= 5 => publish(&args),
        Some("consume") if args.len() >= 4 => consume(&args),
        Some("fan-in") if args.len() >= 6 => fan_in(&args),
        Some("waitset") if args.len() >= 5 => waitset(&args),
        Some("pong") if args.len() >= 5 => pong(&args),
        Some("ping") if args.len() >= 5 => ping(&args),
        Some("slow") if args.len() >= 4 => slow(&args),
        _ => {
            eprintln!("usage: see the module doc of bus-async-peer");
            return ExitCode::from(2);
        }
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bus-async-peer: {e}");
            ExitCode::from(1)
        }
    }
}
