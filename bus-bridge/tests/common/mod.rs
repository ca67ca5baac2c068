//! What the bridge's tests share: nats-server children on free loopback ports, the bridge and
//! peer binaries, and reading their lines.
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use testkit::Procs;

pub const BRIDGE: &str = env!("CARGO_BIN_EXE_shmbus-bridge");
pub const PEER: &str = env!("CARGO_BIN_EXE_bridge-peer");

/// The nats-server binary. Missing, the test fails (never skips) and says how to install it.
pub fn nats_server() -> String {
    for dir in std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/sbin", "/usr/bin"])
    {
        let p = Path::new(dir).join("nats-server");
        if p.is_file() {
            return p.to_string_lossy().into_owned();
        }
    }
    panic!(
        "nats-server is not installed: the bridge tests need it. Run bus-bridge/ci-setup.sh \
         (apt-get install -y nats-server)"
    );
}

/// A port nothing listens on now (bound and released by the kernel's choice).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A temporary directory in /dev/shm when there is one (buses are memory there).
pub fn tempdir() -> tempfile::TempDir {
    if Path::new("/dev/shm").is_dir() {
        tempfile::Builder::new()
            .prefix("bridge-test")
            .tempdir_in("/dev/shm")
            .unwrap()
    } else {
        tempfile::tempdir().unwrap()
    }
}

/// One nats-server: how to start it again on the same port and store.
pub struct Server {
    pub port: u16,
    pub args: Vec<String>,
    pub proc: usize,
}

impl Server {
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

/// Waits until something accepts on `port`.
pub fn wait_listening(port: u16) {
    let until = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < until,
            "nats-server on port {port} did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts a JetStream server on a free port with its store in `dir`; `extra` adds arguments
/// (cluster routes).
pub fn start_server(
    procs: &mut Procs,
    dir: &Path,
    name: &str,
    port: u16,
    extra: &[String],
) -> Server {
    std::fs::create_dir_all(dir).unwrap();
    let mut args: Vec<String> = vec![
        "-a".into(),
        "127.0.0.1".into(),
        "-p".into(),
        port.to_string(),
        "-js".into(),
        "-sd".into(),
        dir.join("js").to_string_lossy().into_owned(),
        "-n".into(),
        name.into(),
        "-l".into(),
        dir.join("server.log").to_string_lossy().into_owned(),
    ];
    args.extend(extra.iter().cloned());
    let proc = spawn_server(procs, name, &args);
    wait_listening(port);
    Server { port, args, proc }
}

pub fn spawn_server(procs: &mut Procs, name: &str, args: &[String]) -> usize {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    procs.spawn(name, &nats_server(), &a)
}

/// Kills a server with SIGKILL and starts it again with the same store.
pub fn restart_server(procs: &mut Procs, s: &mut Server, down: Duration) {
    procs.signal(s.proc, libc::SIGKILL);
    procs.wait(s.proc);
    std::thread::sleep(down);
    s.proc = spawn_server(procs, "nats-server (again)", &s.args);
    wait_listening(s.port);
}

/// Starts a bridge with `--json` and the given arguments; waits for its `ready` event if
/// `wait_ready`.
pub fn bridge(procs: &mut Procs, name: &str, args: &[String], wait_ready: bool) -> usize {
    let mut a: Vec<&str> = args.iter().map(String::as_str).collect();
    a.push("--json");
    let i = procs.spawn(name, BRIDGE, &a);
    if wait_ready {
        procs.expect_line(i, "{\"event\":\"ready\"");
    }
    i
}

/// Creates a bus with the peer binary.
pub fn create_bus(path: &Path, capacity: u64, mode: &str) {
    let out = std::process::Command::new(PEER)
        .args([
            "create",
            path.to_str().unwrap(),
            &capacity.to_string(),
            mode,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "create {}: {out:?}", path.display());
}

/// Parses `key=value` fields of a `done ...` line.
pub fn field(line: &str, key: &str) -> String {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
        .to_string()
}

pub fn num(line: &str, key: &str) -> u64 {
    field(line, key).parse().unwrap()
}

/// A small deterministic generator (xorshift), seeded from the clock and printed, so that a
/// failing run can be replayed with BRIDGE_TEST_SEED.
pub struct Rng(u64);

impl Rng {
    pub fn new() -> Rng {
        let seed = std::env::var("BRIDGE_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        eprintln!("BRIDGE_TEST_SEED={seed}");
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in `lo..hi` milliseconds.
    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo))
    }
}

pub fn s(x: impl AsRef<std::ffi::OsStr>) -> String {
    x.as_ref().to_string_lossy().into_owned()
}

pub fn path_str(p: &Path) -> String {
    s(p)
}

pub fn join(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

/// The arguments of a bridge that exports `bus` to `subject` and imports `subject` into it
/// (two-way bridging on one subject), named `name`.
pub fn two_way_args(url: &str, bus: &Path, subject: &str, name: &str) -> Vec<String> {
    vec![
        "--nats".into(),
        url.into(),
        "--out".into(),
        format!("{}={subject}", bus.display()),
        "--in".into(),
        format!("{subject}={}", bus.display()),
        "--name".into(),
        name.into(),
    ]
}
