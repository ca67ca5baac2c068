//! The publisher and subscriber processes of the bridge's tests and benchmark.
//!
//! ```text
//! bridge-peer create PATH CAPACITY reliable|lossy
//! bridge-peer pub PATH ID COUNT SIZE RATE        (RATE messages/s, 0 = as fast as possible)
//! bridge-peer sub PATH COUNT IDLE_MS             (prints `ready`, then `done ...`)
//! ```
//!
//! A payload is `[publisher id: u64][counter: u64][send time, ns: u64]` then zeros to SIZE.
//! The subscriber checks, per publisher, that counters come in order without repeats, and
//! folds the order of everything it receives into a hash that another subscriber on another
//! bus can compare.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bus_core::{Bus, BusOptions, Mode, RecvTimeoutError, Start};

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn word(b: &[u8], i: usize) -> u64 {
    b.get(i * 8..i * 8 + 8)
        .map_or(0, |w| u64::from_le_bytes(w.try_into().unwrap()))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| -> &str { args.get(i).map(String::as_str).unwrap_or_else(|| usage()) };
    let num = |i: usize| -> u64 { arg(i).parse().unwrap_or_else(|_| usage()) };
    match arg(1) {
        "create" => {
            let mode = if arg(4) == "lossy" {
                Mode::Lossy
            } else {
                Mode::Reliable
            };
            Bus::create(arg(2), &BusOptions::new().capacity(num(3)).mode(mode)).expect("create");
            println!("created");
        }
        "pub" => {
            let bus = Bus::open(arg(2)).expect("open");
            let (id, count, size, rate) = (num(3), num(4), num(5).max(24) as usize, num(6));
            let mut publ = bus.publisher().expect("publisher");
            let mut payload = vec![0u8; size];
            let start = Instant::now();
            for i in 0..count {
                if rate > 0 && i % 64 == 0 {
                    let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                }
                payload[..8].copy_from_slice(&id.to_le_bytes());
                payload[8..16].copy_from_slice(&i.to_le_bytes());
                payload[16..24].copy_from_slice(&now_ns().to_le_bytes());
                publ.send(&payload).expect("send");
            }
            println!("published {count} in {:.3}s", start.elapsed().as_secs_f64());
        }
        "sub" => {
            let bus = Bus::open(arg(2)).expect("open");
            let (count, idle) = (num(3), Duration::from_millis(num(4)));
            let mut sub = bus.subscribe(Start::Oldest).expect("subscribe");
            println!("ready");
            let mut next: Vec<u64> = Vec::new();
            let (mut delivered, mut lost, mut dups, mut gaps) = (0u64, 0u64, 0u64, 0u64);
            let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
            let mut latencies: Vec<u64> = Vec::new();
            let mut buf = Vec::new();
            let mut first: Option<Instant> = None;
            let mut last = Instant::now();
            while delivered + lost < count {
                match sub.recv_timeout(&mut buf, idle) {
                    Ok(_) => {
                        let (id, counter, sent) = (word(&buf, 0), word(&buf, 1), word(&buf, 2));
                        latencies.push(now_ns().saturating_sub(sent));
                        first.get_or_insert_with(Instant::now);
                        last = Instant::now();
                        delivered += 1;
                        let id = id as usize;
                        if id >= next.len() {
                            next.resize(id + 1, 0);
                        }
                        if counter < next[id] {
                            dups += 1;
                        } else {
                            gaps += counter - next[id];
                            next[id] = counter + 1;
                        }
                        for w in [id as u64, counter] {
                            hash ^= w;
                            hash = hash.wrapping_mul(0x0100_0000_01b3);
                        }
                        if delivered % 100_000 == 0 {
                            println!("progress {delivered}");
                        }
                    }
                    Err(RecvTimeoutError::Lost(n)) => lost += n,
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(e) => panic!("recv: {e}"),
                }
            }
            latencies.sort_unstable();
            let pct = |p: f64| -> u64 {
                if latencies.is_empty() {
                    0
                } else {
                    latencies[((latencies.len() - 1) as f64 * p) as usize]
                }
            };
            let secs = first.map_or(0.0, |f| last.duration_since(f).as_secs_f64());
            println!(
                "done delivered={delivered} lost={lost} dups={dups} gaps={gaps} hash={hash:016x} \
                 secs={secs:.3} p50_us={} p99_us={}",
                pct(0.5) / 1000,
                pct(0.99) / 1000
            );
        }
        _ => usage(),
    }
}

fn usage() -> ! {
    eprintln!("usage: bridge-peer create PATH CAPACITY MODE | pub PATH ID COUNT SIZE RATE | sub PATH COUNT IDLE_MS");
    std::process::exit(2)
}
