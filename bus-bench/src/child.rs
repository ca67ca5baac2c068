//! The benchmark processes. The engine re-executes a binary with a JSON [`Spec`]; the child
//! prints `ready TOKEN` once its endpoint exists, does its part, and prints `result JSON`.
//!
//! Every message starts with its sequence number and the send time (CLOCK_MONOTONIC, which
//! all processes share): receivers check the sequence of every message (a drop or a
//! reorder fails the run), touch one byte per 64 of the payload, and record one-way
//! latency.

use std::io::{self, Write};

use serde::{Deserialize, Serialize};

use crate::transport::{self, Side};

/// What a benchmark child does.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spec {
    pub role: Role,
    pub transport: String,
    pub dir: std::path::PathBuf,
    pub size: usize,
    /// Measured messages (throughput) or round trips (latency).
    pub count: u64,
    /// Messages or round trips before measuring.
    pub warmup: u64,
    /// CPU to pin to.
    pub cpu: Option<usize>,
    /// Tokens of the receivers (sender) or of side B (side A).
    pub tokens: Vec<String>,
    /// Receiver index.
    pub index: u32,
    /// A fault to inject (tests of the verification).
    pub inject: Option<Inject>,
}

/// The part a child plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    Send,
    Recv,
    Ping,
    Pong,
    LineA,
    LineB,
}

/// A deliberate fault in the sender, to prove that verification catches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Inject {
    /// Never send the message with this sequence number.
    Drop(u64),
    /// Send this message and the next in the wrong order.
    Swap(u64),
}

/// What a child reports.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    /// Sender: when the first measured message was sent (CLOCK_MONOTONIC ns).
    pub t_start_ns: u64,
    /// Receiver: when the last message arrived. Sender: when its last send returned.
    pub t_end_ns: u64,
    /// Messages received (receiver) or round trips (ping).
    pub count: u64,
    /// User + system CPU seconds this process used while measuring.
    pub cpu_s: f64,
    /// Latency percentiles in ns: one way (receiver) or round trip (ping).
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub max_ns: u64,
    /// Cache-line ping-pong: mean round trip of the best batch.
    pub line_rtt_ns: f64,
    /// Sum of touched bytes (keeps the touches from being optimised away).
    pub touched: u64,
}

/// CLOCK_MONOTONIC in ns.
pub fn now_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// User + system CPU seconds of this process so far.
pub fn cpu_seconds() -> f64 {
    // SAFETY: an all-zero rusage is a valid value; getrusage fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// The CPUs this process may run on (its affinity mask), in order.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: an all-zero cpu_set_t is the empty set; sched_getaffinity fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 is this process; `set` is a writable cpu_set_t of the given size.
    let r = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if r != 0 {
        return vec![0];
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: CPU_ISSET on a valid set, with an index below CPU_SETSIZE.
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

/// Pins this process to `cpu`.
pub fn pin(cpu: usize) -> io::Result<()> {
    // SAFETY: an all-zero cpu_set_t is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: CPU_SET on a valid set with an index below CPU_SETSIZE (checked by the caller's
    // range: cpu < available CPUs).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 is this process; `set` is a valid cpu_set_t of the given size.
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn histogram() -> hdrhistogram::Histogram<u64> {
    hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid bounds")
}

fn percentiles(h: &hdrhistogram::Histogram<u64>, r: &mut Report) {
    r.p50_ns = h.value_at_quantile(0.5);
    r.p99_ns = h.value_at_quantile(0.99);
    r.p999_ns = h.value_at_quantile(0.999);
    r.max_ns = h.max();
}

fn stamp(buf: &mut [u8], seq: u64) {
    stamp_with(buf, seq, now_ns());
}

fn stamp_with(buf: &mut [u8], seq: u64, ts: u64) {
    buf[..8].copy_from_slice(&seq.to_le_bytes());
    buf[8..16].copy_from_slice(&ts.to_le_bytes());
}

/// Throughput runs time-stamp one message in this many (reading the clock costs about as
/// much as a shmbus send); receivers record the latency of those.
const SAMPLE_EVERY: u64 = 64;

fn header(msg: &[u8]) -> (u64, u64) {
    (
        u64::from_le_bytes(msg[..8].try_into().expect("16-byte header")),
        u64::from_le_bytes(msg[8..16].try_into().expect("16-byte header")),
    )
}

/// One byte per cache line.
fn touch(msg: &[u8]) -> u64 {
    msg.iter().step_by(64).map(|&b| b as u64).sum()
}

fn ready(token: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "ready {token}")?;
    out.flush()
}

fn finish(r: &Report) -> io::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "result {}",
        serde_json::to_string(r).map_err(io::Error::other)?
    )?;
    out.flush()
}

/// Runs the child described by the JSON `spec`; the return value is the exit status.
pub fn main(spec: &str) -> i32 {
    match serde_json::from_str::<Spec>(spec)
        .map_err(io::Error::other)
        .and_then(|s| run(&s))
    {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("bench child: {e}");
            1
        }
    }
}

fn run(spec: &Spec) -> io::Result<()> {
    if let Some(cpu) = spec.cpu {
        pin(cpu)?;
    }
    if matches!(spec.role, Role::LineA | Role::LineB) {
        return cache_line(spec);
    }
    let t = transport::by_name(&spec.transport)
        .ok_or_else(|| io::Error::other(format!("unknown transport {}", spec.transport)))?;
    if spec.size < 16 {
        return Err(io::Error::other(
            "messages carry a 16-byte header: size >= 16",
        ));
    }
    let total = spec.warmup + spec.count;
    match spec.role {
        Role::Recv => {
            let (mut rx, token) = t.receiver(&spec.dir, spec.index)?;
            ready(&token)?;
            let mut h = histogram();
            let mut r = Report::default();
            let mut expected = 0u64;
            let mut check = |msg: &[u8]| {
                let (seq, sent_at) = header(msg);
                if seq != expected || msg.len() != spec.size {
                    return Err(io::Error::other(format!(
                        "sequence check failed: expected message {expected} of {} bytes, got {seq} of {} bytes (dropped or reordered)",
                        spec.size,
                        msg.len()
                    )));
                }
                r.touched = r.touched.wrapping_add(touch(msg));
                if expected >= spec.warmup && sent_at != 0 {
                    let _ = h.record(now_ns().saturating_sub(sent_at).max(1));
                }
                expected += 1;
                Ok(())
            };
            rx.recv_batch(spec.warmup, &mut check)?;
            let cpu0 = cpu_seconds();
            rx.recv_batch(spec.count, &mut check)?;
            r.t_end_ns = now_ns();
            r.cpu_s = cpu_seconds() - cpu0;
            r.count = total;
            percentiles(&h, &mut r);
            finish(&r)
        }
        Role::Send => {
            let mut tx = t.sender(&spec.dir, &spec.tokens)?;
            let mut r = Report::default();
            let mut order: Vec<u64> = (0..total).collect();
            match spec.inject {
                Some(Inject::Drop(k)) => order.retain(|&s| s != k),
                Some(Inject::Swap(k)) if k + 1 < total => order.swap(k as usize, k as usize + 1),
                _ => {}
            }
            // Every sender generates each message: into its own buffer (then sent, a copy)
            // or, with a loan, in place in the ring.
            let mut fill = |seq: u64, buf: &mut [u8]| {
                let ts = if seq % SAMPLE_EVERY == 0 { now_ns() } else { 0 };
                buf[16..].fill(seq as u8);
                stamp_with(buf, seq, ts);
            };
            let warmup = (spec.warmup as usize).min(order.len());
            tx.send_batch(spec.size, &order[..warmup], &mut fill)?;
            let cpu0 = cpu_seconds();
            r.t_start_ns = now_ns();
            tx.send_batch(spec.size, &order[warmup..], &mut fill)?;
            tx.finish()?;
            r.t_end_ns = now_ns();
            r.cpu_s = cpu_seconds() - cpu0;
            r.count = order.len() as u64;
            finish(&r)
        }
        Role::Pong => {
            let (mut tx, mut rx, token) = t.duplex(&spec.dir, Side::B, "")?;
            ready(&token)?;
            // Counted from the first measured round trip, like ping's: not the warm-up, not
            // the wait for ping to start.
            let mut cpu0 = cpu_seconds();
            for expected in 0..total {
                if expected == spec.warmup {
                    cpu0 = cpu_seconds();
                }
                let mut seq = u64::MAX;
                rx.recv(&mut |msg| seq = header(msg).0)?;
                if seq != expected {
                    return Err(io::Error::other(format!(
                        "sequence check failed: expected {expected}, got {seq}"
                    )));
                }
                tx.send(spec.size, &mut |buf| {
                    buf[16..].fill(seq as u8);
                    stamp_with(buf, seq, 0)
                })?;
            }
            let r = Report {
                cpu_s: cpu_seconds() - cpu0,
                count: total,
                ..Report::default()
            };
            finish(&r)
        }
        Role::Ping => {
            let token = spec.tokens.first().map_or("", String::as_str);
            let (mut tx, mut rx, _) = t.duplex(&spec.dir, Side::A, token)?;
            let mut h = histogram();
            let mut r = Report::default();
            let mut cpu0 = 0.0;
            for i in 0..total {
                if i == spec.warmup {
                    cpu0 = cpu_seconds();
                }
                let t0 = now_ns();
                // Like every sender, generate the message: in a buffer (then copied) or,
                // with a loan, in place.
                tx.send(spec.size, &mut |buf| {
                    buf[16..].fill(i as u8);
                    stamp(buf, i)
                })?;
                let mut seq = u64::MAX;
                rx.recv(&mut |msg| seq = header(msg).0)?;
                let rtt = now_ns() - t0;
                if seq != i {
                    return Err(io::Error::other(format!(
                        "sequence check failed: expected echo {i}, got {seq}"
                    )));
                }
                if i >= spec.warmup {
                    let _ = h.record(rtt.max(1));
                }
            }
            r.cpu_s = cpu_seconds() - cpu0;
            r.count = spec.count;
            percentiles(&h, &mut r);
            finish(&r)
        }
        Role::LineA | Role::LineB => unreachable!("handled above"),
    }
}

/// Two processes bounce one atomic in a shared mapping: the floor of any shared-memory
/// round trip on this machine.
fn cache_line(spec: &Spec) -> io::Result<()> {
    use std::sync::atomic::{AtomicU64, Ordering};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(spec.dir.join("line"))?;
    // SAFETY: mapping 4096 bytes of a file we just opened (the parent sized it), shared.
    let ptr = unsafe {
        rustix::mm::mmap(
            std::ptr::null_mut(),
            4096,
            rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
            rustix::mm::MapFlags::SHARED,
            &file,
            0,
        )?
    };
    // SAFETY: the mapping is 4096 bytes, page aligned, and only accessed atomically here.
    let word = unsafe { &*(ptr as *const AtomicU64) };
    let rounds = spec.count;
    let mut r = Report::default();
    // ORDERING: Acquire/Release: the two sides hand one word back and forth, as a message
    // and its reply would (a plain handoff, no fence beyond what a message needs).
    if spec.role == Role::LineB {
        ready("")?;
        for i in 0..rounds * 8 {
            while word.load(Ordering::Acquire) != 2 * i + 1 {
                std::hint::spin_loop();
            }
            word.store(2 * i + 2, Ordering::Release);
        }
    } else {
        let mut best = f64::MAX;
        for batch in 0..8 {
            let t0 = now_ns();
            for k in 0..rounds {
                let i = batch * rounds + k;
                word.store(2 * i + 1, Ordering::Release);
                while word.load(Ordering::Acquire) != 2 * i + 2 {
                    std::hint::spin_loop();
                }
            }
            best = best.min((now_ns() - t0) as f64 / rounds as f64);
        }
        r.line_rtt_ns = best;
    }
    finish(&r)
}
