//! `bus-peer`: the other process in bus-core's multi-process tests. Not a user tool (that is
//! `shmbus`); its roles produce and verify deterministic message streams.
//!
//! ```text
//! bus-peer produce BUS ID COUNT MIN MAX SEED          send COUNT messages of producer ID
//! bus-peer consume BUS TOTAL MIN MAX SEED MODE [SLOW_EVERY SLOW_US]
//!                                                      MODE strict (reliable) or lossy;
//!                                                      prints "ready", then "done ..."
//! bus-peer stall BUS                                  subscribe, print "ready", never read
//! bus-peer sleep BUS                                  subscribe, print "ready", block in recv
//! bus-peer plant BUS COUNT SEED KEY                    publish COUNT messages whose payloads
//!                                                      hold record headers (see `Plan`)
//! bus-peer verify-planted BUS COUNT SEED KEY MODE [SLOW_EVERY]
//!                                                      receive and check them byte for byte
//!                                                      (a 1 ms nap every SLOW_EVERY messages);
//!                                                      prints "ready", then "done ..."
//! bus-peer create-or-open BUS                         print the creation time of the bus
//! bus-peer hang-in-loan BUS                           take a loan, print "loaned", hang
//! bus-peer survive BUS LAST MIN MAX SEED               verify until producer 0's message LAST
//! bus-peer tolerate BUS MILLIS                         read anything for MILLIS ms, count
//! bus-peer scribble BUS MILLIS SEED                    write random words into the ring
//! bus-peer serve REQUESTS REPLIES                     a request/reply `Server`: replies to
//!                                                      each request with "re:" + its payload;
//!                                                      prints "ready"; ends on "stop"
//!
//! `produce` takes an optional 8th argument, a pause in µs before each message.
//! ```
//!
//! A message of producer `id`, number `index`: byte 0 is `id`; if it has at least 9 bytes,
//! bytes 1..9 are `index` (little-endian); the rest is a pseudo-random stream seeded by
//! `(seed, id, index)`. Its length is a pseudo-random function of the same, so a consumer can
//! check every byte and every length without any other channel. Exit status: 0 verified,
//! 1 verification failed (reason on stderr), 2 usage, 3 timed out.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bus_core::{Bus, RecvTimeoutError, Start};

const TIMEOUT: Duration = Duration::from_secs(300);

fn mix(mut x: u64) -> u64 {
    // splitmix64 finaliser
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn key(seed: u64, id: u8, index: u64) -> u64 {
    mix(seed ^ mix((id as u64) << 56 ^ index))
}

/// Mostly small messages, one in 32 drawn from the whole range.
fn size_for(seed: u64, id: u8, index: u64, min: usize, max: usize) -> usize {
    let r = key(seed, id, index);
    let span = (max - min + 1) as u64;
    let span = if r % 32 == 0 { span } else { span.min(256) };
    min + ((r >> 8) % span) as usize
}

/// Fills `out` with the stream of `(seed, id, index)`.
fn fill(seed: u64, id: u8, index: u64, out: &mut [u8]) {
    let mut s = key(seed, id, index) | 1;
    for chunk in out.chunks_mut(8) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        chunk.copy_from_slice(&s.to_le_bytes()[..chunk.len()]);
    }
}

fn body_start(len: usize) -> usize {
    if len >= 9 {
        9
    } else {
        len.min(1)
    }
}

fn write_message(seed: u64, id: u8, index: u64, buf: &mut [u8]) {
    let len = buf.len();
    if len >= 1 {
        buf[0] = id;
    }
    if len >= 9 {
        buf[1..9].copy_from_slice(&index.to_le_bytes());
    }
    let start = body_start(len);
    fill(seed, id, index, &mut buf[start..]);
}

struct Spec {
    seed: u64,
    min: usize,
    max: usize,
}

impl Spec {
    /// `min max seed` from the arguments, starting at `at`.
    fn from_args(args: &[String], at: usize) -> Result<Spec, String> {
        Ok(Spec {
            min: arg(args, at, "min")?,
            max: arg(args, at + 1, "max")?,
            seed: arg(args, at + 2, "seed")?,
        })
    }
}

struct Verifier {
    spec: Spec,
    next: [u64; 256],
    scratch: Vec<u8>,
}

impl Verifier {
    /// Checks one message. `strict`: the producer's next index is implied (every message
    /// arrives); otherwise it is read from the message and must increase.
    fn check(&mut self, msg: &[u8], strict: bool) -> Result<(u8, u64), String> {
        let Some(&id) = msg.first() else {
            return Err("empty message".into());
        };
        let index = if msg.len() >= 9 {
            let i = u64::from_le_bytes(msg[1..9].try_into().unwrap());
            if strict && i != self.next[id as usize] {
                return Err(format!(
                    "producer {id}: got index {i}, expected {} (lost, duplicated or reordered)",
                    self.next[id as usize]
                ));
            }
            if !strict && i < self.next[id as usize] {
                return Err(format!("producer {id}: index {i} went backwards"));
            }
            i
        } else if strict {
            self.next[id as usize]
        } else {
            return Err(format!(
                "lossy test message of {} bytes has no index",
                msg.len()
            ));
        };
        let want = size_for(self.spec.seed, id, index, self.spec.min, self.spec.max);
        if msg.len() != want {
            return Err(format!(
                "producer {id} index {index}: {} bytes, expected {want}",
                msg.len()
            ));
        }
        let start = body_start(msg.len());
        self.scratch.resize(msg.len() - start, 0);
        fill(self.spec.seed, id, index, &mut self.scratch);
        if msg[start..] != self.scratch[..] {
            return Err(format!(
                "producer {id} index {index}: payload checksum mismatch"
            ));
        }
        self.next[id as usize] = index + 1;
        Ok((id, index))
    }
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> Result<T, String> {
    args.get(i)
        .ok_or_else(|| format!("missing {what}"))?
        .parse()
        .map_err(|_| format!("bad {what}: {}", args[i]))
}

fn produce(args: &[String]) -> Result<(), String> {
    let bus = Bus::open(&args[2]).map_err(|e| e.to_string())?;
    let id: u8 = arg(args, 3, "id")?;
    let count: u64 = arg(args, 4, "count")?;
    let spec = Spec::from_args(args, 5)?;
    let pace_us: u64 = args.get(8).map_or(Ok(0), |_| arg(args, 8, "pace_us"))?;
    let mut publ = bus.publisher().map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; spec.max];
    for index in 0..count {
        if pace_us > 0 {
            std::thread::sleep(Duration::from_micros(pace_us));
        }
        let len = size_for(spec.seed, id, index, spec.min, spec.max);
        if index % 2 == 0 {
            // Half through the zero-copy loan, half through send(&[u8]).
            let mut loan = publ
                .loan_timeout(len, TIMEOUT)
                .map_err(|e| format!("loan: {e}"))?;
            write_message(spec.seed, id, index, &mut loan);
            loan.commit().map_err(|e| e.to_string())?;
        } else {
            write_message(spec.seed, id, index, &mut buf[..len]);
            publ.send_timeout(&buf[..len], TIMEOUT)
                .map_err(|e| format!("send: {e}"))?;
        }
    }
    Ok(())
}

fn consume(args: &[String]) -> Result<(), String> {
    let bus = Bus::open(&args[2]).map_err(|e| e.to_string())?;
    let total: u64 = arg(args, 3, "total")?;
    let spec = Spec::from_args(args, 4)?;
    let strict = match args.get(7).map(String::as_str) {
        Some("strict") => true,
        Some("lossy") => false,
        other => return Err(format!("bad mode {other:?}")),
    };
    let slow_every: u64 = args.get(8).map_or(Ok(0), |_| arg(args, 8, "slow_every"))?;
    let slow_us: u64 = args.get(9).map_or(Ok(0), |_| arg(args, 9, "slow_us"))?;
    let mut sub = bus.subscribe(Start::Latest).map_err(|e| e.to_string())?;
    println!("ready");
    std::io::stdout().flush().ok();
    let mut v = Verifier {
        spec,
        next: [0; 256],
        scratch: Vec::new(),
    };
    let deadline = Instant::now() + TIMEOUT;
    let (mut delivered, mut lost, mut expected_seq) = (0u64, 0u64, 0u64);
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut buf = Vec::new();
    while expected_seq < total {
        let left = deadline.saturating_duration_since(Instant::now());
        let (seq, id, index) = if strict {
            // Reliable: verify in place, zero copy.
            match sub.recv_ref_timeout(left) {
                Ok(s) => {
                    let (id, index) = v.check(&s, true)?;
                    (s.seq, id, index)
                }
                Err(RecvTimeoutError::Timeout) => std::process::exit(3),
                Err(e) => return Err(format!("recv at seq {expected_seq}: {e}")),
            }
        } else {
            match sub.recv_timeout(&mut buf, left) {
                Ok(m) => {
                    let (id, index) = v.check(&buf, false)?;
                    (m.seq, id, index)
                }
                Err(RecvTimeoutError::Lost(n)) => {
                    lost += n;
                    expected_seq += n;
                    continue;
                }
                Err(RecvTimeoutError::Timeout) => std::process::exit(3),
                Err(e) => return Err(format!("recv at seq {expected_seq}: {e}")),
            }
        };
        if seq != expected_seq {
            return Err(format!("got seq {seq}, expected {expected_seq}"));
        }
        for x in [seq, id as u64, index] {
            hash = (hash ^ x).wrapping_mul(0x0000_0100_0000_01b3);
        }
        expected_seq += 1;
        delivered += 1;
        if slow_every > 0 && delivered % slow_every == 0 {
            std::thread::sleep(Duration::from_micros(slow_us));
        }
    }
    if delivered + lost != total {
        return Err(format!("delivered {delivered} + lost {lost} != {total}"));
    }
    if sub.lost() != lost {
        return Err(format!(
            "subscriber counted {} lost, events said {lost}",
            sub.lost()
        ));
    }
    println!("done delivered={delivered} lost={lost} hash={hash:016x}");
    Ok(())
}

/// The survivor of the crash tests: verifies every producer's messages in order (each a
/// prefix of what it sent: a killed producer's stream just stops), and stops once producer 0
/// has delivered `last + 1` messages. Sequences only increase (repaired claims skip some).
fn survive(args: &[String]) -> Result<(), String> {
    let bus = Bus::open(&args[2]).map_err(|e| e.to_string())?;
    let last: u64 = arg(args, 3, "last")?;
    let spec = Spec::from_args(args, 4)?;
    let mut sub = bus.subscribe(Start::Latest).map_err(|e| e.to_string())?;
    println!("ready");
    std::io::stdout().flush().ok();
    let mut v = Verifier {
        spec,
        next: [0; 256],
        scratch: Vec::new(),
    };
    let deadline = Instant::now() + TIMEOUT;
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut prev_seq = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let s = match sub.recv_ref_timeout(left) {
            Ok(s) => s,
            Err(RecvTimeoutError::Timeout) => std::process::exit(3),
            Err(e) => return Err(format!("recv: {e}")),
        };
        let (id, index) = v.check(&s, true)?;
        if prev_seq.is_some_and(|p| s.seq <= p) {
            return Err(format!("seq {} after {prev_seq:?}", s.seq));
        }
        prev_seq = Some(s.seq);
        for x in [s.seq, id as u64, index] {
            hash = (hash ^ x).wrapping_mul(0x0000_0100_0000_01b3);
        }
        if id == 0 && index == last {
            break;
        }
    }
    let ids: Vec<String> = (0..256)
        .filter(|&i| v.next[i] > 0)
        .map(|i| format!("{i}:{}", v.next[i]))
        .collect();
    println!(
        "done delivered={} unblocked={} hash={hash:016x} ids={}",
        sub.delivered(),
        sub.unblocked(),
        ids.join(",")
    );
    Ok(())
}

/// Reads whatever arrives for MILLIS ms, checking nothing but that every call returns:
/// messages, losses, corruption reports and timeouts are counted.
fn tolerate(args: &[String]) -> Result<(), String> {
    let bus = Bus::open(&args[2]).map_err(|e| e.to_string())?;
    let millis: u64 = arg(args, 3, "millis")?;
    let mut sub = bus.subscribe(Start::Latest).map_err(|e| e.to_string())?;
    println!("ready");
    std::io::stdout().flush().ok();
    let until = Instant::now() + Duration::from_millis(millis);
    let (mut messages, mut lost, mut corrupt, mut idle) = (0u64, 0u64, 0u64, 0u64);
    let mut buf = Vec::new();
    while Instant::now() < until {
        match sub.recv_timeout(&mut buf, Duration::from_millis(20)) {
            Ok(_) => messages += 1,
            Err(RecvTimeoutError::Lost(n)) => lost += n,
            Err(RecvTimeoutError::Corrupt { .. }) => corrupt += 1,
            Err(RecvTimeoutError::Timeout) => idle += 1,
            Err(e @ RecvTimeoutError::Forked) => return Err(e.to_string()),
        }
    }
    println!(
        "done messages={messages} lost={lost} corrupt={corrupt} idle={idle} unblocked={}",
        sub.unblocked()
    );
    Ok(())
}

/// Writes random words at random places of the data region for MILLIS ms.
fn scribble(args: &[String]) -> Result<(), String> {
    let bus = Bus::open(&args[2]).map_err(|e| e.to_string())?;
    let millis: u64 = arg(args, 3, "millis")?;
    let mut state: u64 = arg::<u64>(args, 4, "seed")? | 1;
    let (data, capacity) = (bus.config().data_offset(), bus.config().capacity);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&args[2])
        .map_err(|e| e.to_string())?;
    let map = memmap2::MmapOptions::new()
        .map_raw(&file)
        .map_err(|e| e.to_string())?;
    println!("ready");
    std::io::stdout().flush().ok();
    let until = Instant::now() + Duration::from_millis(millis);
    let mut writes = 0u64;
    while Instant::now() < until {
        for _ in 0..16 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let at = data + (state % capacity) / 8 * 8;
            let value = mix(state);
            // SAFETY: `at` is 8-aligned inside the mapping (data offset + less than the
            // capacity); the word is written atomically, as the bus reads it. This is the
            // hostile process of the test, writing outside every protocol.
            let word = unsafe {
                &*(map.as_mut_ptr().add(at as usize) as *const std::sync::atomic::AtomicU64)
            };
            word.store(value, std::sync::atomic::Ordering::Relaxed);
            writes += 1;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    println!("done writes={writes}");
    Ok(())
}

fn create_or_open(args: &[String]) -> Result<(), String> {
    let opts = bus_core::BusOptions::new().capacity(1 << 16);
    let bus = Bus::open_or_create(&args[2], &opts).map_err(|e| e.to_string())?;
    println!("created_unix_ns={}", bus.config().created_unix_ns);
    Ok(())
}

fn hang_in_loan(args: &[String]) -> Result<(), String> {
    let bus = Bus::open(&args[2]).map_err(|e| e.to_string())?;
    let mut publ = bus.publisher().map_err(|e| e.to_string())?;
    let loan = publ.loan(100).map_err(|e| e.to_string())?;
    println!("loaned seq={}", loan.seq());
    std::io::stdout().flush().ok();
    std::thread::sleep(TIMEOUT);
    drop(loan);
    std::process::exit(3);
}

fn stall(args: &[String]) -> Result<(), String> {
    let bus = Bus::open(&args[2]).map_err(|e| e.to_string())?;
    let _sub = bus.subscribe(Start::Latest).map_err(|e| e.to_string())?;
    println!("ready");
    std::io::stdout().flush().ok();
    std::thread::sleep(TIMEOUT);
    std::process::exit(3);
}

fn sleep(args: &[String]) -> Result<(), String> {
    let bus = Bus::open(&args[2]).map_err(|e| e.to_string())?;
    let mut sub = bus.subscribe(Start::Latest).map_err(|e| e.to_string())?;
    sub.set_wait_strategy(bus_core::WaitStrategy::Block);
    println!("ready");
    std::io::stdout().flush().ok();
    let mut buf = Vec::new();
    let _ = sub.recv_timeout(&mut buf, TIMEOUT);
    std::process::exit(3);
}

/// The stream of `plant`: message sizes from a seed, where each record will land (one
/// producer, from the tail it starts at), and payloads that hold, at every 16-byte aligned
/// offset, a record header in the documented format (layout module doc) for the record that
/// a later lap will start at that very place: the right sequence, a state cycling through
/// DATA, ABANDONED, WRAP, GAP and FILL, and a plausible `low`. The check is computed with
/// `key`, a guess at the bus's record key: what a publisher that relays bytes it does not
/// choose (or crafts them from the documentation) can do without reading the bus file.
struct Plan {
    key: bus_core::RecordKey,
    sizes: Vec<usize>,
    /// Record starts (WRAP padding included): position -> (sequence, low for a DATA record).
    starts: std::collections::HashMap<u64, (u64, u32)>,
    positions: Vec<u64>,
    capacity: u64,
}

impl Plan {
    fn new(count: u64, seed: u64, key: u64, start: u64, capacity: u64, max: usize) -> Plan {
        use bus_core::layout::record_extent;
        let mut sizes = Vec::new();
        let mut starts = std::collections::HashMap::new();
        let mut positions = Vec::new();
        let mut pos = start;
        for i in 0..count {
            let r = mix(seed ^ i);
            // Mostly small records (many record starts inside earlier payloads), some large
            // payloads (many planted headers each).
            let len = if r % 4 == 0 {
                200 + (r >> 8) as usize % (max - 200)
            } else {
                (r >> 8) as usize % 100
            };
            let extent = record_extent(len as u64);
            let idx = pos & (capacity - 1);
            if idx + extent > capacity {
                starts.insert(pos, (i, ((capacity - idx) / 16) as u32));
                pos += capacity - idx;
            }
            starts.insert(pos, (i, len as u32));
            positions.push(pos);
            sizes.push(len);
            pos += extent;
        }
        Plan {
            key: bus_core::RecordKey(key),
            sizes,
            starts,
            positions,
            capacity,
        }
    }

    /// The payload of message `i`.
    fn payload(&self, i: u64, out: &mut Vec<u8>) {
        use bus_core::layout::{
            header, STATE_ABANDONED, STATE_DATA, STATE_FILL, STATE_GAP, STATE_WRAP,
        };
        let len = self.sizes[i as usize];
        out.clear();
        out.resize(len, 0);
        fill(i, 7, i, out);
        let payload_at = self.positions[i as usize] + 16;
        for off in (0..len.saturating_sub(15)).step_by(16) {
            let here = payload_at + off as u64;
            // The record a later lap starts here, if any; else a guess one lap on.
            let (pos, seq, low) = (1..=3)
                .map(|lap| here + lap * self.capacity)
                .find_map(|q| self.starts.get(&q).map(|&(seq, low)| (q, seq, low)))
                .unwrap_or((here + self.capacity, i + 1, 8));
            let state = [
                STATE_DATA,
                STATE_ABANDONED,
                STATE_WRAP,
                STATE_GAP,
                STATE_FILL,
            ][(here / 16 % 5) as usize];
            let low = match state {
                STATE_WRAP => ((self.capacity - (pos & (self.capacity - 1))) / 16) as u32,
                STATE_GAP => 1 + (here / 16 % 3) as u32,
                STATE_FILL => 1 + (here / 16 % 7) as u32,
                _ => low,
            };
            let (w0, w1) = header(self.key, pos, seq, state, low);
            out[off..off + 8].copy_from_slice(&w0.to_ne_bytes());
            out[off + 8..off + 16].copy_from_slice(&w1.to_ne_bytes());
        }
    }
}

fn plan_for(bus: &Bus, args: &[String]) -> Result<Plan, String> {
    let count: u64 = arg(args, 3, "count")?;
    let seed: u64 = arg(args, 4, "seed")?;
    let key: u64 = arg(args, 5, "key")?;
    let c = bus.config();
    // The stream starts at the bus's first record (a fresh bus), wherever this role runs.
    Ok(Plan::new(
        count,
        seed,
        key,
        c.initial_position,
        c.capacity,
        (c.max_message as usize).min(2000),
    ))
}

fn plant(args: &[String]) -> Result<(), String> {
    let bus = Bus::open(&args[2]).map_err(|e| e.to_string())?;
    if bus.stats().tail_position != bus.config().initial_position {
        return Err("plant needs a fresh bus".into());
    }
    let plan = plan_for(&bus, args)?;
    let mut publ = bus.publisher().map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    for i in 0..plan.sizes.len() as u64 {
        plan.payload(i, &mut buf);
        let sent = publ
            .send_timeout(&buf, TIMEOUT)
            .map_err(|e| format!("send {i}: {e}"))?;
        if (sent.seq, sent.position) != (i, plan.positions[i as usize]) {
            return Err(format!(
                "message {i} went to seq {} position {}, planned {}",
                sent.seq, sent.position, plan.positions[i as usize]
            ));
        }
    }
    Ok(())
}

fn verify_planted(args: &[String]) -> Result<(), String> {
    let bus = Bus::open(&args[2]).map_err(|e| e.to_string())?;
    let plan = plan_for(&bus, args)?;
    let strict = args.get(6).map(String::as_str) == Some("strict");
    let slow_every: u64 = args.get(7).map_or(Ok(0), |_| arg(args, 7, "slow_every"))?;
    let mut sub = bus.subscribe(Start::Latest).map_err(|e| e.to_string())?;
    println!("ready");
    std::io::stdout().flush().ok();
    let total = plan.sizes.len() as u64;
    let deadline = Instant::now() + TIMEOUT;
    let (mut delivered, mut lost, mut next) = (0u64, 0u64, 0u64);
    let (mut buf, mut expected) = (Vec::new(), Vec::new());
    while next < total {
        let left = deadline.saturating_duration_since(Instant::now());
        match sub.recv_timeout(&mut buf, left) {
            Ok(m) => {
                if m.seq != next {
                    return Err(format!("got seq {}, expected {next}", m.seq));
                }
                plan.payload(m.seq, &mut expected);
                if buf != expected {
                    return Err(format!("message {} differs from what was sent", m.seq));
                }
                delivered += 1;
                next += 1;
                if slow_every > 0 && delivered % slow_every == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            Err(RecvTimeoutError::Lost(n)) if !strict => {
                lost += n;
                next += n;
            }
            Err(RecvTimeoutError::Timeout) => std::process::exit(3),
            Err(e) => return Err(format!("recv at seq {next}: {e}")),
        }
    }
    if next != total {
        return Err(format!("the stream ended at {next}, past {total}"));
    }
    println!("done delivered={delivered} lost={lost}");
    Ok(())
}

fn serve(args: &[String]) -> Result<(), String> {
    let requests = Bus::open(&args[2]).map_err(|e| e.to_string())?;
    let replies = Bus::open(args.get(3).ok_or("missing REPLIES")?).map_err(|e| e.to_string())?;
    let mut server = bus_core::Server::new(&requests, &replies).map_err(|e| e.to_string())?;
    println!("ready");
    std::io::stdout().flush().ok();
    server
        .serve(|req, out| {
            out.extend_from_slice(b"re:");
            out.extend_from_slice(req.data);
            req.data != b"stop"
        })
        .map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: bus-peer produce|consume|stall BUS ...");
        return ExitCode::from(2);
    }
    let r = match args[1].as_str() {
        "produce" => produce(&args),
        "consume" => consume(&args),
        "stall" => stall(&args),
        "sleep" => sleep(&args),
        "plant" => plant(&args),
        "verify-planted" => verify_planted(&args),
        "create-or-open" => create_or_open(&args),
        "hang-in-loan" => hang_in_loan(&args),
        "survive" => survive(&args),
        "tolerate" => tolerate(&args),
        "scribble" => scribble(&args),
        "serve" => serve(&args),
        other => {
            eprintln!("unknown role {other}");
            return ExitCode::from(2);
        }
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bus-peer {}: {e}", args[1]);
            ExitCode::from(1)
        }
    }
}
