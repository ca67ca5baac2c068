//! The shmbus benchmark engine, shared by `shmbus bench`, `shmbus demo` and `cargo bench`.
//!
//! Every measurement runs its sides as separate processes: the engine re-executes a binary
//! (the `shmbus` CLI, or a criterion bench binary) with [`CHILD_ARG`] and a JSON spec, and that
//! binary hands the spec to [`child_main`]. On machines with two or more CPUs the sender and
//! receiver (or the two sides of a ping-pong) are pinned to different CPUs.
//!
//! What is measured, per transport (see [`transport`]) and message size:
//! * **throughput**: one sender, one (or, for fan-out, several) receivers; every message is
//!   checked for its sequence number and its payload is touched; msgs/s and MB/s from the
//!   sender's first measured send to the receiver's last receive (CLOCK_MONOTONIC, shared by
//!   all processes); CPU seconds per message on each side (getrusage);
//! * **latency**: ping-pong round trips (two buses for shmbus), percentiles from hdrhistogram
//!   after a warm-up;
//! * **limits** of the machine in the same run: single-thread memcpy bandwidth and the
//!   cross-process cache-line round trip, the floor of any shared-memory latency.

pub mod calibration;
pub mod child;
#[cfg(feature = "iceoryx2")]
pub mod iceoryx;
pub mod report;
pub mod transport;

use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::Serialize;

pub use child::Inject;
use child::{Report, Role, Spec};
pub use transport::Transport;

/// The first argument of a re-executed benchmark child; the second is its JSON spec.
pub const CHILD_ARG: &str = "__bench-child";

/// Runs a benchmark child if `args` (as from `std::env::args`) say this process is one;
/// returns its exit status. Call it first thing in `main`.
pub fn child_main(args: &[String]) -> Option<i32> {
    if args.get(1).map(String::as_str) == Some(CHILD_ARG) {
        Some(child::main(args.get(2).map_or("", String::as_str)))
    } else {
        None
    }
}

/// One-way throughput of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    pub transport: String,
    pub size: usize,
    pub receivers: u32,
    /// Measured messages.
    pub messages: u64,
    /// Messages sent in all, the warm-up included.
    pub total: u64,
    pub secs: f64,
    /// Messages per second delivered to each receiver (the slowest one).
    pub msgs_per_s: f64,
    /// Messages per second the sender published: from its first measured send to its last
    /// (with fan-out, what the publisher achieves, apart from what each receiver gets).
    pub send_msgs_per_s: f64,
    pub mb_per_s: f64,
    /// CPU seconds per message, sender side.
    pub cpu_send_s_per_msg: f64,
    /// CPU seconds per message, receiver side (mean over receivers).
    pub cpu_recv_s_per_msg: f64,
    /// Both sides.
    pub cpu_s_per_msg: f64,
    /// One-way latency under load, slowest receiver.
    pub load_p50_ns: u64,
    pub load_p99_ns: u64,
    /// Each receiver on its own.
    pub per_receiver: Vec<ReceiverResult>,
    /// The cache-line round trip measured just before this run (`run_suite` probes it; see
    /// [`Engine::line_rtt`]), ns.
    pub line_rtt_ns: Option<f64>,
}

/// One receiver of a throughput run.
#[derive(Debug, Clone, Serialize)]
pub struct ReceiverResult {
    /// Messages it received and verified (warm-up included).
    pub delivered: u64,
    /// Measured messages per second it received.
    pub msgs_per_s: f64,
    /// One-way latency under load (sampled messages).
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
}

/// Round-trip latency of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub transport: String,
    pub size: usize,
    pub round_trips: u64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub max_ns: u64,
    /// CPU seconds per round trip, both sides.
    pub cpu_s_per_rt: f64,
    /// The cache-line round trip measured just before this run, ns.
    pub line_rtt_ns: Option<f64>,
}

/// The machine's limits, measured in the same run.
#[derive(Debug, Clone, Serialize)]
pub struct Limits {
    /// Single-thread memcpy of a 64 MiB buffer, GB/s (best of several).
    pub memcpy_gb_per_s: f64,
    /// Single-thread memcpy of one 1 MiB buffer into another, again and again, GB/s (best of
    /// several): the baseline of the 1 MiB target.
    pub memcpy_1mib_gb_per_s: f64,
    /// Two processes bouncing one atomic in a shared mapping: mean round trip, ns (best batch).
    pub cache_line_rtt_ns: f64,
}

/// Runs benchmark processes.
#[derive(Debug, Clone)]
pub struct Engine {
    program: PathBuf,
    dir: PathBuf,
    /// The CPUs this process may run on (its affinity mask), in order.
    cpus: Vec<usize>,
    pin: bool,
    /// Set (by a signal handler, say) to stop the run in progress: its processes are killed
    /// and its files removed.
    interrupt: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    /// Longest a run may take before its processes are killed and it fails.
    pub run_timeout: Duration,
}

/// Called every 50 ms while a throughput run is in flight.
#[derive(Debug, Clone)]
pub struct Progress {
    pub elapsed: Duration,
    /// For shmbus: messages delivered so far to each receiver (updated in batches).
    pub delivered: Option<Vec<u64>>,
}

struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    what: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Engine {
    /// An engine that re-executes `program` (which must call [`child_main`]), with run
    /// directories under `dir` (a tmpfs such as /dev/shm keeps shmbus off the disk).
    pub fn new(program: impl Into<PathBuf>, dir: impl Into<PathBuf>) -> Engine {
        let cpus = child::allowed_cpus();
        Engine {
            program: program.into(),
            dir: dir.into(),
            pin: cpus.len() >= 2,
            cpus,
            interrupt: None,
            run_timeout: Duration::from_secs(120),
        }
    }

    /// Stops the run in progress when `flag` becomes true (checked every 50 ms).
    pub fn set_interrupt(&mut self, flag: std::sync::Arc<std::sync::atomic::AtomicBool>) {
        self.interrupt = Some(flag);
    }

    fn interrupted(&self) -> io::Result<()> {
        match &self.interrupt {
            // ORDERING: Relaxed: a stop request; nothing else is read through it.
            Some(f) if f.load(std::sync::atomic::Ordering::Relaxed) => {
                Err(io::Error::new(io::ErrorKind::Interrupted, "interrupted"))
            }
            _ => Ok(()),
        }
    }

    /// Whether the two sides run pinned to different CPUs.
    pub fn pinned(&self) -> bool {
        self.pin
    }

    /// Turns pinning off (it is on when the machine has two or more CPUs).
    pub fn set_pinning(&mut self, on: bool) {
        self.pin = on && self.cpus.len() >= 2;
    }

    /// The sending side on the first allowed CPU, the others on the rest in turn.
    fn cpu_for(&self, role: Role, index: u32) -> Option<usize> {
        if !self.pin {
            return None;
        }
        Some(match role {
            Role::Send | Role::Ping | Role::LineA => self.cpus[0],
            _ => self.cpus[1 + index as usize % (self.cpus.len() - 1)],
        })
    }

    fn spawn(&self, spec: &Spec, what: String) -> io::Result<Proc> {
        let json = serde_json::to_string(spec).map_err(io::Error::other)?;
        let mut cmd = Command::new(&self.program);
        cmd.arg(CHILD_ARG)
            .arg(json)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: prctl is async-signal-safe; it asks the kernel to kill the child if this
        // process dies, so no benchmark process outlives an interrupted run.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| io::Error::other(format!("starting {}: {e}", self.program.display())))?;
        let out = child.stdout.take().expect("piped");
        let err = child.stderr.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if let Ok(mut s) = sink.lock() {
                    s.push_str(&line);
                    s.push('\n');
                }
            }
        });
        Ok(Proc {
            child,
            lines,
            stderr,
            what,
        })
    }

    /// Waits for a line starting with `prefix` ("ready" or "result") from `p`.
    fn line(&self, p: &mut Proc, prefix: &str, deadline: Instant) -> io::Result<String> {
        loop {
            self.interrupted()?;
            let left = deadline.saturating_duration_since(Instant::now());
            match p.lines.recv_timeout(left.min(Duration::from_millis(50))) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return Ok(rest.trim().to_string());
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) if left > Duration::ZERO => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("{}: timed out", p.what),
                    ))
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = p.child.wait()?;
                    std::thread::sleep(Duration::from_millis(20));
                    let err = p
                        .stderr
                        .lock()
                        .map(|s| s.trim().to_string())
                        .unwrap_or_default();
                    return Err(io::Error::other(format!(
                        "{} failed ({status}): {err}",
                        p.what
                    )));
                }
            }
        }
    }

    fn report(&self, p: &mut Proc, deadline: Instant) -> io::Result<Report> {
        let json = self.line(p, "result", deadline)?;
        serde_json::from_str(&json).map_err(io::Error::other)
    }

    fn run_dir(&self) -> io::Result<tempfile::TempDir> {
        std::fs::create_dir_all(&self.dir)?;
        tempfile::Builder::new()
            .prefix("shmbus-bench-")
            .tempdir_in(&self.dir)
    }

    fn spec(
        &self,
        role: Role,
        t: &dyn Transport,
        dir: &Path,
        size: usize,
        count: u64,
        warmup: u64,
    ) -> Spec {
        Spec {
            role,
            transport: t.name().to_string(),
            dir: dir.to_path_buf(),
            size,
            count,
            warmup,
            cpu: self.cpu_for(role, 0),
            tokens: Vec::new(),
            index: 0,
            inject: None,
        }
    }

    /// One sender to `receivers` receivers: `messages` measured messages of `size` bytes
    /// (after a warm-up of a tenth as many). Fails if any receiver sees a message out of
    /// sequence.
    pub fn throughput(
        &self,
        t: &dyn Transport,
        size: usize,
        messages: u64,
        receivers: u32,
        inject: Option<Inject>,
        observe: &mut dyn FnMut(&Progress),
    ) -> io::Result<Throughput> {
        let dir = self.run_dir()?;
        let deadline = Instant::now() + self.run_timeout;
        t.prepare(dir.path(), receivers, size, false)?;
        let warmup = (messages / 10).clamp(1, 100_000);
        let mut rx = Vec::new();
        let mut tokens = Vec::new();
        for i in 0..receivers {
            let mut spec = self.spec(Role::Recv, t, dir.path(), size, messages, warmup);
            spec.index = i;
            spec.cpu = self.cpu_for(Role::Recv, i);
            let mut p = self.spawn(&spec, format!("{} receiver {i}", t.name()))?;
            tokens.push(self.line(&mut p, "ready", deadline)?);
            rx.push(p);
        }
        let mut spec = self.spec(Role::Send, t, dir.path(), size, messages, warmup);
        spec.tokens = tokens;
        spec.inject = inject;
        let mut tx = self.spawn(&spec, format!("{} sender", t.name()))?;
        let started = Instant::now();
        let bus = if t.is_shmbus() {
            bus_core::Bus::open(dir.path().join("a.bus")).ok()
        } else {
            None
        };
        // Watch progress until every receiver has reported.
        let mut reports: Vec<Option<Report>> = vec![None; rx.len()];
        while reports.iter().any(Option::is_none) {
            self.interrupted()?;
            for (i, p) in rx.iter_mut().enumerate() {
                if reports[i].is_none() {
                    match p.lines.try_recv() {
                        Ok(line) => {
                            if let Some(json) = line.strip_prefix("result") {
                                reports[i] = Some(
                                    serde_json::from_str(json.trim()).map_err(io::Error::other)?,
                                );
                            }
                        }
                        Err(mpsc::TryRecvError::Empty) => {}
                        Err(mpsc::TryRecvError::Disconnected) => {
                            // Exited without a result: collect its error.
                            reports[i] = Some(self.report(p, deadline)?);
                        }
                    }
                }
            }
            if let Ok(Some(status)) = tx.child.try_wait() {
                if !status.success() {
                    // A receiver that found a bad sequence closes its end, which fails the
                    // sender: report the receiver's reason, the root cause. A receiver that
                    // is merely still waiting (shmbus sees no end of stream) tells nothing:
                    // then the sender's own error is the one.
                    let until = Instant::now() + Duration::from_millis(500);
                    for (i, p) in rx.iter_mut().enumerate() {
                        if reports[i].is_none() {
                            match self.report(p, until) {
                                Err(e) if e.kind() == io::ErrorKind::TimedOut => {}
                                Err(e) => return Err(e),
                                Ok(_) => {}
                            }
                        }
                    }
                    std::thread::sleep(Duration::from_millis(20));
                    let err = tx
                        .stderr
                        .lock()
                        .map(|s| s.trim().to_string())
                        .unwrap_or_default();
                    return Err(io::Error::other(format!(
                        "{} sender failed ({status}): {err}",
                        t.name()
                    )));
                }
            }
            if Instant::now() > deadline {
                return Err(io::Error::other(format!("{}: run timed out", t.name())));
            }
            observe(&Progress {
                elapsed: started.elapsed(),
                delivered: bus
                    .as_ref()
                    .map(|b| b.stats().subscribers.iter().map(|s| s.delivered).collect()),
            });
            std::thread::sleep(Duration::from_millis(20));
        }
        let sent = self.report(&mut tx, deadline)?;
        let reports: Vec<Report> = reports
            .into_iter()
            .map(|r| r.expect("all reported"))
            .collect();
        let slowest_end = reports.iter().map(|r| r.t_end_ns).max().unwrap_or(0);
        let secs = (slowest_end.saturating_sub(sent.t_start_ns)) as f64 / 1e9;
        let msgs_per_s = messages as f64 / secs.max(1e-9);
        let cpu_recv = reports.iter().map(|r| r.cpu_s).sum::<f64>() / reports.len() as f64;
        Ok(Throughput {
            transport: t.name().to_string(),
            size,
            receivers,
            messages,
            total: sent.count,
            secs,
            msgs_per_s,
            send_msgs_per_s: messages as f64
                / ((sent.t_end_ns.saturating_sub(sent.t_start_ns)) as f64 / 1e9).max(1e-9),
            mb_per_s: msgs_per_s * size as f64 / 1e6,
            cpu_send_s_per_msg: sent.cpu_s / messages as f64,
            cpu_recv_s_per_msg: cpu_recv / messages as f64,
            cpu_s_per_msg: (sent.cpu_s + cpu_recv) / messages as f64,
            load_p50_ns: reports.iter().map(|r| r.p50_ns).max().unwrap_or(0),
            load_p99_ns: reports.iter().map(|r| r.p99_ns).max().unwrap_or(0),
            per_receiver: reports
                .iter()
                .map(|r| ReceiverResult {
                    delivered: r.count,
                    msgs_per_s: messages as f64
                        / ((r.t_end_ns.saturating_sub(sent.t_start_ns)) as f64 / 1e9).max(1e-9),
                    p50_ns: r.p50_ns,
                    p99_ns: r.p99_ns,
                    p999_ns: r.p999_ns,
                })
                .collect(),
            line_rtt_ns: None,
        })
    }

    /// Ping-pong: `round_trips` measured round trips of `size`-byte messages after `warmup`.
    pub fn latency(
        &self,
        t: &dyn Transport,
        size: usize,
        round_trips: u64,
        warmup: u64,
    ) -> io::Result<Latency> {
        let dir = self.run_dir()?;
        let deadline = Instant::now() + self.run_timeout;
        t.prepare(dir.path(), 1, size, true)?;
        let spec = self.spec(Role::Pong, t, dir.path(), size, round_trips, warmup);
        let mut b = self.spawn(&spec, format!("{} pong", t.name()))?;
        let token = self.line(&mut b, "ready", deadline)?;
        let mut spec = self.spec(Role::Ping, t, dir.path(), size, round_trips, warmup);
        spec.tokens = vec![token];
        let mut a = self.spawn(&spec, format!("{} ping", t.name()))?;
        // Wait for ping, but not for the whole timeout if pong died: its error is the one.
        let ra = loop {
            match self.report(
                &mut a,
                (Instant::now() + Duration::from_millis(100)).min(deadline),
            ) {
                Ok(r) => break r,
                Err(e) if e.kind() == io::ErrorKind::TimedOut && Instant::now() < deadline => {
                    if let Ok(Some(status)) = b.child.try_wait() {
                        if !status.success() {
                            self.report(&mut b, deadline)?;
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        };
        let rb = self.report(&mut b, deadline)?;
        Ok(Latency {
            transport: t.name().to_string(),
            size,
            round_trips,
            p50_ns: ra.p50_ns,
            p99_ns: ra.p99_ns,
            p999_ns: ra.p999_ns,
            max_ns: ra.max_ns,
            cpu_s_per_rt: (ra.cpu_s + rb.cpu_s) / round_trips as f64,
            line_rtt_ns: None,
        })
    }

    /// The machine's limits: memcpy bandwidth (this process) and the cache-line round trip
    /// between two processes.
    pub fn limits(&self, rounds: u64) -> io::Result<Limits> {
        Ok(Limits {
            memcpy_gb_per_s: memcpy_bandwidth(),
            memcpy_1mib_gb_per_s: memcpy_1mib_bandwidth(),
            cache_line_rtt_ns: self.line_rtt(rounds)?,
        })
    }

    /// The cache-line round trip between two processes on the benchmark's two CPUs, ns:
    /// the floor of any shared-memory round trip. On a VM it is also a probe of where the
    /// hypervisor has placed the two virtual CPUs (sibling threads of one core, two cores,
    /// two dies), which can change during a run and moves every shared-memory result with it.
    pub fn line_rtt(&self, rounds: u64) -> io::Result<f64> {
        let dir = self.run_dir()?;
        let deadline = Instant::now() + self.run_timeout;
        let f = std::fs::File::create(dir.path().join("line"))?;
        f.set_len(4096)?;
        let dummy: &dyn Transport = &transport::Shmbus::SPIN;
        let spec = self.spec(Role::LineB, dummy, dir.path(), 64, rounds, 0);
        let mut b = self.spawn(&spec, "cache-line pong".into())?;
        self.line(&mut b, "ready", deadline)?;
        let spec = self.spec(Role::LineA, dummy, dir.path(), 64, rounds, 0);
        let mut a = self.spawn(&spec, "cache-line ping".into())?;
        let ra = self.report(&mut a, deadline)?;
        self.report(&mut b, deadline)?;
        Ok(ra.line_rtt_ns)
    }
}

/// Single-thread memcpy bandwidth over 64 MiB buffers, GB/s (best of 5).
pub fn memcpy_bandwidth() -> f64 {
    let n = 64 << 20;
    let src = vec![1u8; n];
    let mut dst = vec![0u8; n];
    let mut best = 0.0f64;
    for _ in 0..5 {
        let t0 = Instant::now();
        dst.copy_from_slice(&src);
        std::hint::black_box(&mut dst);
        best = best.max(n as f64 / t0.elapsed().as_secs_f64() / 1e9);
    }
    best
}

/// Single-thread memcpy of a 1 MiB buffer into another 1 MiB buffer, GB/s: the best of 5
/// batches of 64 copies (both buffers stay in the caches, as a sender's buffer and the ring's
/// hot records would at best).
pub fn memcpy_1mib_bandwidth() -> f64 {
    let n = 1 << 20;
    let src = vec![1u8; n];
    let mut dst = vec![0u8; n];
    dst.copy_from_slice(&src);
    let mut best = 0.0f64;
    for _ in 0..5 {
        let t0 = Instant::now();
        for _ in 0..64 {
            std::hint::black_box(&mut dst).copy_from_slice(std::hint::black_box(&src));
        }
        best = best.max(64.0 * n as f64 / t0.elapsed().as_secs_f64() / 1e9);
    }
    best
}

/// The machine, for the report header.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpu: String,
    pub cpus: usize,
    pub kernel: String,
    pub pinned: bool,
}

impl Machine {
    /// Reads /proc and uname.
    pub fn detect(engine: &Engine) -> Machine {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|m| m.trim().to_string())
            })
            .unwrap_or_else(|| "unknown CPU".into());
        let u = rustix::system::uname();
        Machine {
            cpu,
            cpus: engine.cpus.len(),
            kernel: format!(
                "{} {}",
                u.sysname().to_string_lossy(),
                u.release().to_string_lossy()
            ),
            pinned: engine.pin,
        }
    }
}

/// What to run in a suite.
#[derive(Clone)]
pub struct Suite {
    pub sizes: Vec<usize>,
    pub transports: Vec<&'static dyn Transport>,
    /// Bytes moved per throughput run (messages = bytes / size, within bounds).
    pub bytes_per_run: u64,
    pub max_messages: u64,
    pub round_trips: u64,
    pub fanout: Vec<u32>,
    pub fanout_transports: Vec<&'static dyn Transport>,
}

impl Suite {
    /// The full suite: 64 B to 1 MiB, every transport, fan-out to 1, 2, 4.
    pub fn full() -> Suite {
        Suite {
            sizes: vec![64, 1024, 16 << 10, 256 << 10, 1 << 20],
            transports: transport::all(),
            bytes_per_run: 2 << 30,
            max_messages: 5_000_000,
            round_trips: 50_000,
            fanout: vec![1, 2, 4],
            fanout_transports: vec![&transport::Shmbus::BLOCK, &transport::Stream::UNIX],
        }
    }

    /// A quick suite (well under 30 s): fewer messages and round trips.
    pub fn quick() -> Suite {
        Suite {
            bytes_per_run: 128 << 20,
            max_messages: 300_000,
            round_trips: 3_000,
            ..Suite::full()
        }
    }

    fn messages(&self, size: usize) -> u64 {
        (self.bytes_per_run / size as u64).clamp(2_000, self.max_messages)
    }
}

/// Everything one suite run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub machine: Machine,
    pub limits: Limits,
    pub throughput: Vec<Throughput>,
    pub latency: Vec<Latency>,
    pub fanout: Vec<Throughput>,
    /// Runs that could not be done (a transport's size limit), as "transport size: why".
    pub skipped: Vec<String>,
}

/// Round trips per batch of the placement probe before each run (eight batches: a few ms).
const PROBE_ROUNDS: u64 = 2_000;

/// Runs `suite`, telling `log` what it is doing. Before every run it probes the cache-line
/// round trip ([`Engine::line_rtt`]) and records it with the run, so that the report can
/// tell results measured in a far placement of the CPUs from the rest.
pub fn run_suite(engine: &Engine, suite: &Suite, log: &mut dyn FnMut(&str)) -> io::Result<Results> {
    log("machine limits");
    let limits = engine.limits(20_000)?;
    let mut r = Results {
        machine: Machine::detect(engine),
        limits,
        throughput: Vec::new(),
        latency: Vec::new(),
        fanout: Vec::new(),
        skipped: Vec::new(),
    };
    for &size in &suite.sizes {
        for &t in &suite.transports {
            if t.max_size().is_some_and(|m| size > m) {
                r.skipped.push(format!(
                    "{} {}: messages above {} bytes",
                    t.name(),
                    report::size_label(size),
                    t.max_size().unwrap_or(0)
                ));
                continue;
            }
            log(&format!(
                "throughput {} {}",
                t.name(),
                report::size_label(size)
            ));
            let line_rtt_ns = Some(engine.line_rtt(PROBE_ROUNDS)?);
            r.throughput.push(Throughput {
                line_rtt_ns,
                ..engine.throughput(t, size, suite.messages(size), 1, None, &mut |_| {})?
            });
            if t.is_reference() {
                continue;
            }
            log(&format!(
                "latency    {} {}",
                t.name(),
                report::size_label(size)
            ));
            let rts = (suite.round_trips * 1024 / size.max(1024) as u64).max(200);
            let line_rtt_ns = Some(engine.line_rtt(PROBE_ROUNDS)?);
            r.latency.push(Latency {
                line_rtt_ns,
                ..engine.latency(t, size, rts, rts / 10 + 10)?
            });
        }
    }
    let size = 64;
    for &k in &suite.fanout {
        for &t in &suite.fanout_transports {
            log(&format!("fan-out    {} to {k}", t.name()));
            let n = suite.messages(size) / k as u64;
            let line_rtt_ns = Some(engine.line_rtt(PROBE_ROUNDS)?);
            r.fanout.push(Throughput {
                line_rtt_ns,
                ..engine.throughput(t, size, n, k, None, &mut |_| {})?
            });
        }
    }
    Ok(r)
}
