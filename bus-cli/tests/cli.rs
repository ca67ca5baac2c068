//! The `shmbus` binary in real processes: the command contract of the README.

use std::io::Write;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use bus_core::Bus;
use testkit::{eventually, Procs};

const SHMBUS: &str = env!("CARGO_BIN_EXE_shmbus");

/// A temporary `$SHMBUS_DIR`.
struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(SHMBUS);
        c.args(args).env("SHMBUS_DIR", self.dir.path());
        c
    }

    /// Runs to completion (bounded by a watchdog) with `stdin`.
    /// Runs `shmbus args` with no input and asserts that it succeeds.
    fn ok(&self, args: &[&str]) -> Output {
        let o = self.run(args, b"");
        assert!(
            o.status.success(),
            "shmbus {args:?} failed ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
        o
    }

    fn run(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut c = self.cmd(args);
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        let mut input = child.stdin.take().unwrap();
        let data = stdin.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = input.write_all(&data);
        });
        let pid = child.id() as i32;
        let watchdog = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(60));
            // SAFETY: signalling our own child; harmless if it already exited.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        });
        let out = child.wait_with_output().unwrap();
        drop(watchdog);
        writer.join().unwrap();
        assert_ne!(
            out.status.signal(),
            Some(libc::SIGKILL),
            "watchdog: {args:?} hung"
        );
        out
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.bus"))
    }

    fn bus(&self, name: &str) -> Bus {
        Bus::open(self.path(name)).unwrap()
    }

    fn spawn(&self, procs: &mut Procs, name: &str, args: &[&str]) -> usize {
        procs.spawn_command(name, self.cmd(args))
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Exit status `code`, a message naming `needle`, never a panic or a signal.
fn assert_fails(o: &Output, code: i32, needle: &str) {
    assert_eq!(o.status.signal(), None, "killed by a signal: {o:?}");
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout {} stderr {}",
        stdout(o),
        stderr(o)
    );
    assert!(
        stderr(o).contains(needle),
        "stderr should mention {needle:?}: {}",
        stderr(o)
    );
    assert!(!stderr(o).contains("panicked"), "{}", stderr(o));
}

fn wait_subscribers(env: &Env, name: &str, n: usize) {
    let bus = env.bus(name);
    assert!(
        eventually(Duration::from_secs(30), || bus.stats().subscribers.len()
            >= n),
        "{n} subscriber(s) should join"
    );
}

#[test]
fn a_subscriber_receives_the_lines_a_publisher_reads_from_stdin() {
    let env = Env::new();
    env.ok(&["create", "t", "--capacity", "1MiB"]);
    let mut procs = Procs::new(Duration::from_secs(60));
    let sub = env.spawn(
        &mut procs,
        "sub",
        &["sub", "t", "--count", "4", "--timeout", "30s"],
    );
    wait_subscribers(&env, "t", 1);
    let lines = "first line\nsecond\n\nlast, with ünïcode\n";
    let o = env.run(&["pub", "t"], lines.as_bytes());
    assert!(o.status.success(), "{}", stderr(&o));
    let out = procs.success(sub);
    assert_eq!(out, ["first line", "second", "", "last, with ünïcode"]);
}

#[test]
fn three_publishers_two_subscribers_every_line_exactly_once_in_order() {
    let env = Env::new();
    // A small ring, so that publishers wait for the subscribers.
    env.ok(&["create", "m", "--capacity", "64KiB"]);
    const N: usize = 3000;
    let mut procs = Procs::new(Duration::from_secs(120));
    let total = (3 * N).to_string();
    let subs: Vec<usize> = (0..2)
        .map(|i| {
            env.spawn(
                &mut procs,
                &format!("sub {i}"),
                &["sub", "m", "--count", &total],
            )
        })
        .collect();
    wait_subscribers(&env, "m", 2);
    let pubs: Vec<usize> = (0..3)
        .map(|p| {
            let mut cmd = env.cmd(&["pub", "m"]);
            cmd.stdin(Stdio::piped());
            let i = procs.spawn_command(&format!("pub {p}"), cmd);
            let mut stdin = procs.child(i).stdin.take().unwrap();
            std::thread::spawn(move || {
                let text: String = (0..N).map(|k| format!("p{p} {k}\n")).collect();
                stdin.write_all(text.as_bytes()).unwrap();
            });
            i
        })
        .collect();
    for p in pubs {
        procs.success(p);
    }
    for s in subs {
        let lines = procs.success(s);
        assert_eq!(lines.len(), 3 * N);
        let mut next = [0usize; 3];
        for line in &lines {
            let (p, k) = line[1..].split_once(' ').unwrap();
            let (p, k): (usize, usize) = (p.parse().unwrap(), k.parse().unwrap());
            assert_eq!(k, next[p], "publisher {p}: in order, exactly once");
            next[p] += 1;
        }
        assert_eq!(next, [N; 3]);
    }
}

#[test]
fn a_stopped_lossy_subscriber_reports_exactly_what_it_lost() {
    let env = Env::new();
    assert!(env
        .run(
            &["create", "l", "--mode", "lossy", "--capacity", "64KiB"],
            b""
        )
        .status
        .success());
    let mut procs = Procs::new(Duration::from_secs(120));
    let sub = env.spawn(&mut procs, "sub", &["sub", "l", "--format", "json"]);
    wait_subscribers(&env, "l", 1);
    procs.signal(sub, libc::SIGSTOP);
    const N: u64 = 20_000;
    let o = env.run(
        &["pub", "l", "--count", &N.to_string(), "--size", "64"],
        b"",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    procs.signal(sub, libc::SIGCONT);
    let bus = env.bus("l");
    assert!(eventually(Duration::from_secs(30), || {
        bus.stats()
            .subscribers
            .first()
            .is_some_and(|s| s.lag_messages == 0)
    }));
    // SIGTERM: the subscriber leaves its slot and exits 0.
    procs.signal(sub, libc::SIGTERM);
    let lines = procs.success(sub);
    let (mut printed, mut lost, mut last_seq) = (0u64, 0u64, None::<u64>);
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if let Some(n) = v.get("lost") {
            lost += n.as_u64().unwrap();
        } else {
            let seq = v["seq"].as_u64().unwrap();
            assert!(last_seq.is_none_or(|l| seq > l));
            last_seq = Some(seq);
            assert_eq!(v["len"].as_u64(), Some(64));
            printed += 1;
        }
    }
    assert!(lost > 0, "the stopped subscriber was lapped");
    assert_eq!(printed + lost, N, "printed + reported lost == published");
    assert!(eventually(Duration::from_secs(5), || bus
        .stats()
        .subscribers
        .is_empty()));
}

#[test]
fn stat_json_shows_the_live_subscribers() {
    let env = Env::new();
    env.ok(&["create", "s"]);
    let mut procs = Procs::new(Duration::from_secs(60));
    let sub = env.spawn(&mut procs, "sub", &["sub", "s", "--timeout", "30s"]);
    wait_subscribers(&env, "s", 1);
    env.ok(&["pub", "s", "one", "two"]);
    let o = env.run(&["stat", "s", "--json"], b"");
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["mode"], "reliable");
    assert_eq!(v["capacity"], 64 << 20);
    assert_eq!(v["seq"], 2);
    assert!(v["tail"].as_u64().unwrap() > 0);
    assert!(v["max_message"].as_u64().unwrap() > 0);
    let subs = v["subscribers"].as_array().unwrap();
    assert_eq!(subs.len(), 1);
    assert_eq!(subs[0]["pid"], procs.pid(sub));
    assert_eq!(subs[0]["alive"], true);
    assert!(subs[0]["lag_bytes"].is_u64());
    let human = env.run(&["stat", "s"], b"");
    assert!(
        stdout(&human).contains("subscribers 1/64"),
        "{}",
        stdout(&human)
    );
    // rm refuses while the subscriber lives, and says why.
    assert_fails(&env.run(&["rm", "s"], b""), 1, "live subscriber");
    env.ok(&["rm", "s", "--force"]);
    assert!(!env.path("s").exists());
}

#[test]
fn every_output_format() {
    let env = Env::new();
    env.ok(&["create", "f"]);
    let mut frames = Vec::new();
    for m in [&b"\x00\xffbinary"[..], b"", b"text"] {
        frames.extend_from_slice(&(m.len() as u32).to_le_bytes());
        frames.extend_from_slice(m);
    }
    assert!(env
        .run(&["pub", "f", "--input", "len"], &frames)
        .status
        .success());
    let read = |format: &str| {
        env.run(
            &[
                "sub", "f", "--from", "oldest", "--count", "3", "--format", format,
            ],
            b"",
        )
    };
    assert_eq!(read("len").stdout, frames, "len frames round-trip");
    assert_eq!(read("raw").stdout, b"\x00\xffbinarytext");
    assert_eq!(stdout(&read("hex")), "00ff62696e617279\n\n74657874\n");
    let json = stdout(&read("json"));
    let lines: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["data_b64"], "AP9iaW5hcnk=");
    assert_eq!(lines[2]["data"], "text");
    assert_eq!(lines[2]["seq"], 2);
    // Resume from a position printed earlier.
    let pos = lines[2]["position"].as_u64().unwrap().to_string();
    let o = env.run(&["sub", "f", "--from", &pos, "--count", "1"], b"");
    assert_eq!(stdout(&o), "text\n");
    // raw: all of stdin is one message.
    assert!(env
        .run(&["pub", "f", "--input", "raw"], b"a\nb\n")
        .status
        .success());
    let o = env.run(
        &[
            "sub", "f", "--from", &pos, "--count", "2", "--format", "json",
        ],
        b"",
    );
    assert!(stdout(&o).contains(r#""data":"a\nb\n""#), "{}", stdout(&o));
    // Generated messages start with their number.
    env.ok(&["pub", "f", "--count", "3", "--size", "16"]);
    let o = env.run(
        &[
            "sub", "f", "--from", "oldest", "--count", "7", "--format", "hex",
        ],
        b"",
    );
    let last = stdout(&o).lines().last().unwrap().to_string();
    assert_eq!(last, "02000000000000000000000000000000");
}

fn patch(path: &Path, offset: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, offset).unwrap();
}

#[test]
fn every_error_path_has_its_exit_code_and_message() {
    let env = Env::new();
    let p = |n: &str| env.path(n).to_str().unwrap().to_string();
    // Usage errors: clap's exit 2.
    assert_eq!(env.run(&["create"], b"").status.code(), Some(2));
    assert_eq!(
        env.run(&["create", "x", "--capacity", "lots"], b"")
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        env.run(&["sub", "x", "--from", "yesterday"], b"")
            .status
            .code(),
        Some(2)
    );
    assert_eq!(env.run(&["frobnicate"], b"").status.code(), Some(2));
    // Invalid creation parameters: a capacity clap can check is a usage error (issue 12).
    assert_fails(
        &env.run(&["create", "x", "--capacity", "3000"], b""),
        2,
        "power of two",
    );
    // Missing.
    for cmd in [
        &["sub", "nope"][..],
        &["pub", "nope", "x"],
        &["stat", "nope"],
        &["rm", "nope"],
    ] {
        assert_fails(&env.run(cmd, b""), 1, "no such bus");
        assert_fails(&env.run(cmd, b""), 1, &p("nope"));
    }
    // Exists.
    env.ok(&["create", "b", "--capacity", "4KiB"]);
    assert_fails(&env.run(&["create", "b"], b""), 1, "already exists");
    env.ok(&["create", "b", "--force", "--capacity", "4KiB"]);
    // Too large.
    let big = "x".repeat(600);
    assert_fails(
        &env.run(&["pub", "b", &big], b""),
        1,
        "exceeds the bus maximum",
    );
    // Files that are not buses, or damaged ones: every command, a clear error.
    let dir = env.dir.path();
    std::fs::write(dir.join("text.bus"), "hello, I am not a bus\n".repeat(400)).unwrap();
    std::fs::write(dir.join("empty.bus"), b"").unwrap();
    std::fs::copy(env.path("b"), dir.join("short.bus")).unwrap();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("short.bus"))
        .unwrap();
    f.set_len(5000).unwrap();
    std::fs::copy(env.path("b"), dir.join("future.bus")).unwrap();
    patch(&dir.join("future.bus"), 8, &99u32.to_ne_bytes());
    std::fs::copy(env.path("b"), dir.join("corrupt.bus")).unwrap();
    patch(&dir.join("corrupt.bus"), 72, &1u64.to_ne_bytes());
    std::fs::create_dir(dir.join("adir.bus")).unwrap();
    for (name, needle) in [
        ("text", "not a bus file"),
        ("empty", "smaller than a bus header"),
        ("short", "truncated"),
        ("future", "format version 99 is not supported"),
        ("corrupt", "checksum"),
        ("adir", "is a directory"),
    ] {
        for cmd in [&["sub", name][..], &["pub", name, "x"], &["stat", name]] {
            assert_fails(&env.run(cmd, b""), 1, needle);
        }
        if name != "adir" {
            assert_fails(&env.run(&["rm", name], b""), 1, "use --force");
        }
    }
    // A full reliable ring: a publisher with --timeout gives up, saying why.
    let mut procs = Procs::new(Duration::from_secs(60));
    let sub = env.spawn(&mut procs, "sub", &["sub", "b"]);
    wait_subscribers(&env, "b", 1);
    procs.signal(sub, libc::SIGSTOP);
    let o = env.run(
        &[
            "pub",
            "b",
            "--count",
            "200",
            "--size",
            "100",
            "--timeout",
            "200ms",
        ],
        b"",
    );
    assert_fails(&o, 1, "timed out waiting for space");
    procs.signal(sub, libc::SIGCONT);
    // sub --timeout: 124.
    let o = env.run(&["sub", "b", "--timeout", "100ms"], b"");
    assert_eq!(o.status.code(), Some(124));
}

#[test]
fn permission_denied_is_an_error_for_another_user() {
    // Tests run as root, which ignores file modes: run the command as nobody.
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        return; // As a normal user the 0600 check below is the same test without setuid.
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let path = dir.path().join("private.bus");
    let o = Command::new(SHMBUS)
        .args(["create", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success());
    let mode = std::fs::metadata(&path).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    for args in [&["sub"][..], &["pub"], &["stat"]] {
        let mut c = Command::new(SHMBUS);
        c.args(args).arg(&path);
        if args[0] == "pub" {
            c.arg("x");
        }
        // SAFETY: setgid/setuid between fork and exec are async-signal-safe.
        unsafe {
            c.pre_exec(|| {
                if libc::setgid(65534) != 0 || libc::setuid(65534) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let o = c.output().unwrap();
        assert_fails(&o, 1, "permission denied");
    }
}

#[test]
fn interrupting_a_subscriber_leaves_its_slot() {
    let env = Env::new();
    env.ok(&["create", "i"]);
    let mut procs = Procs::new(Duration::from_secs(60));
    let sub = env.spawn(&mut procs, "sub", &["sub", "i"]);
    wait_subscribers(&env, "i", 1);
    procs.signal(sub, libc::SIGINT);
    procs.success(sub);
    let st = env.bus("i").stats();
    assert!(st.subscribers.is_empty());
    assert_eq!(st.evicted, 0, "it left by itself, nobody had to evict it");
}

/// Issue 8: `sub` used to take its slot before installing its handlers, so an interrupt right
/// after start killed it with the slot held. Interrupts at every moment of start-up now
/// either end it before it joins (killed, nothing held) or make it leave cleanly.
#[test]
fn an_interrupt_at_start_up_never_strands_a_slot() {
    let env = Env::new();
    env.ok(&["create", "s"]);
    let mut procs = Procs::new(Duration::from_secs(120));
    for round in 0..240u64 {
        let sub = env.spawn(&mut procs, "sub", &["sub", "s"]);
        // From at once to well after the join, in steps of 25 µs (the window this guards
        // was a few microseconds wide).
        std::thread::sleep(Duration::from_micros(round * 25));
        procs.signal(sub, libc::SIGINT);
        let (status, out) = procs.wait(sub);
        assert!(
            status.success() || status.signal() == Some(libc::SIGINT),
            "round {round}: {status} {out:?}"
        );
        let st = env.bus("s").stats();
        assert!(
            st.subscribers.iter().all(|s| s.alive),
            "round {round}: a dead subscriber's slot is held: {:?}",
            st.subscribers
        );
        assert!(
            st.subscribers.is_empty(),
            "round {round}: {:?}",
            st.subscribers
        );
    }
    assert_eq!(env.bus("s").stats().evicted, 0, "nobody had to be evicted");
}

#[test]
fn stat_refuses_a_watch_interval_that_would_spin() {
    let env = Env::new();
    env.ok(&["create", "z"]);
    for dur in ["0s", "0ms", "5ms"] {
        assert_fails(
            &env.run(&["stat", "z", "--watch", dur], b""),
            2,
            "shortest refresh interval",
        );
    }
}

#[test]
fn a_closed_stdout_is_not_an_error() {
    let env = Env::new();
    env.ok(&["create", "c"]);
    env.ok(&["pub", "c", "--count", "5000", "--size", "64"]);
    // `shmbus sub ... | head -c 10`: the reader goes away early.
    let mut child = env
        .cmd(&[
            "sub", "c", "--from", "oldest", "--count", "5000", "--format", "hex",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut first = [0u8; 10];
    std::io::Read::read_exact(&mut out, &mut first).unwrap();
    drop(out);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");
}

/// Runs `sub BUS --from oldest --format hex` with `stdout` as its output, reads its first
/// line (one 8-byte message) through `reader`, then hangs up (drops `reader`) and waits for
/// it, killing it after 30 s (a hung test fails instead of stalling the suite).
fn sub_until_hung_up(
    env: &Env,
    bus: &str,
    stdout: impl Into<Stdio>,
    mut reader: impl std::io::Read,
) -> std::process::ExitStatus {
    let mut child = env
        .cmd(&["sub", bus, "--from", "oldest", "--format", "hex"])
        .stdout(stdout)
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let watchdog = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(30));
        // SAFETY: signalling our own child; harmless if it already exited.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    });
    let mut line = [0u8; 17];
    reader.read_exact(&mut line).unwrap();
    assert_eq!(&line[16..], b"\n", "one message printed");
    drop(reader);
    let status = child.wait().unwrap();
    drop(watchdog);
    status
}

/// `shmbus sub bus | head -1` on a bus that then goes quiet: no write ever finds the pipe
/// closed, so `sub` used to wait for a next message forever (a pipeline that never ended).
/// It now notices the reader has gone while it waits, and leaves its slot.
#[test]
fn a_subscriber_on_a_quiet_bus_ends_when_its_reader_goes() {
    let env = Env::new();
    env.ok(&["create", "q"]);
    env.ok(&["pub", "q", "--count", "1", "--size", "8"]);
    let (reader, writer) = std::io::pipe().unwrap();
    let status = sub_until_hung_up(&env, "q", writer, reader);
    assert_eq!(
        status.code(),
        Some(0),
        "{status:?} (SIGKILL: the watchdog; it hung)"
    );
    let st = env.bus("q").stats();
    assert!(st.subscribers.is_empty(), "{:?}", st.subscribers);
}

/// The same with a stream socket for stdout (its peer shuts down); and a file for stdout is
/// never taken for a reader that went away (`sub` runs to its timeout, 124).
#[test]
fn a_subscriber_ends_with_its_socket_peer_but_not_on_a_file() {
    let env = Env::new();
    env.ok(&["create", "s"]);
    env.ok(&["pub", "s", "--count", "1", "--size", "8"]);
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let status = sub_until_hung_up(&env, "s", std::os::fd::OwnedFd::from(theirs), ours);
    assert_eq!(
        status.code(),
        Some(0),
        "{status:?} (SIGKILL: the watchdog; it hung)"
    );

    let out = std::fs::File::create(env.dir.path().join("out.txt")).unwrap();
    let status = env
        .cmd(&["sub", "s", "--from", "oldest", "--timeout", "300ms"])
        .stdout(out)
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(124), "ran to its timeout: {status:?}");
    let written = std::fs::read(env.dir.path().join("out.txt")).unwrap();
    assert_eq!(written.len(), 9, "one message of 8 bytes and its newline");
}

#[test]
fn completions_are_generated() {
    let env = Env::new();
    for shell in ["bash", "zsh", "fish"] {
        let o = env.run(&["completions", shell], b"");
        assert!(o.status.success());
        assert!(stdout(&o).contains("shmbus"));
    }
}

#[test]
fn the_demo_runs_to_completion() {
    let env = Env::new();
    let o = env.run(
        &[
            "demo",
            "--messages",
            "20000",
            "--subscribers",
            "2",
            "--dir",
            env.dir.path().to_str().unwrap(),
        ],
        b"",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("subscriber 2  received"), "{out}");
    assert!(out.contains("Unix stream sockets"), "{out}");
    assert!(out.contains("× the messages per second"), "{out}");
    // It cleaned up after itself.
    assert_eq!(std::fs::read_dir(env.dir.path()).unwrap().count(), 0);
}

#[test]
fn the_default_directory_is_created_private() {
    let top = tempfile::tempdir().unwrap();
    let dir = top.path().join("new/shmbus");
    let o = Command::new(SHMBUS)
        .args(["create", "fresh"])
        .env("SHMBUS_DIR", &dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let mode = std::fs::metadata(&dir).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o700
    );
    assert!(dir.join("fresh.bus").exists());
}

/// Review of round 2: a default directory another user made first with mode 0777 was used as
/// it was, so anyone could rename or delete the buses created in it. Refused now (unless it
/// is sticky, as /tmp is), with what to do.
#[test]
fn a_bus_directory_anyone_may_write_to_is_refused_unless_sticky() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let set = |mode| {
        std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(mode)).unwrap()
    };
    set(0o777);
    assert_fails(
        &env.run(&["create", "open"], b""),
        1,
        "is writable by every user (mode 0777) without the sticky bit",
    );
    assert!(!env.path("open").exists());
    set(0o1777);
    env.ok(&["create", "sticky"]);
    set(0o700);
    env.ok(&["pub", "private", "--create", "x"]);
}

#[test]
fn stat_watch_refreshes_with_rates_until_interrupted() {
    let env = Env::new();
    env.ok(&["create", "w"]);
    let mut procs = Procs::new(Duration::from_secs(60));
    let watch = env.spawn(
        &mut procs,
        "stat --watch",
        &["stat", "w", "--json", "--watch", "50ms"],
    );
    let first = procs.expect_line(watch, "{");
    env.ok(&["pub", "w", "--count", "1000", "--size", "64"]);
    // A later snapshot carries the rate and sees the messages.
    let mut later = serde_json::Value::Null;
    for _ in 0..100 {
        later = serde_json::from_str(&procs.expect_line(watch, "{")).unwrap();
        if later["seq"] == 1000 {
            break;
        }
    }
    let first: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert!(
        first.get("rate").is_none(),
        "no rate before a second snapshot"
    );
    assert_eq!(later["seq"], 1000);
    assert!(later["rate"]["msgs_per_s"].is_number());
    procs.signal(watch, libc::SIGINT);
    procs.success(watch);
}

/// `stat --watch` follows the path as `tail -F` does: it used to show the removed file's last
/// numbers forever. Removed, it says so once and waits; created again, it watches the new
/// bus (its capacity, its messages); replaced in one step (`create --force`), the same.
#[test]
fn stat_watch_follows_a_bus_removed_and_created_again() {
    let env = Env::new();
    env.ok(&["create", "f", "--capacity", "1MiB"]);
    let mut procs = Procs::new(Duration::from_secs(60));
    // stderr into the captured stdout, to see the notes in order with the snapshots.
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "exec \"$0\" stat f --json --watch 50ms 2>&1", SHMBUS])
        .env("SHMBUS_DIR", env.dir.path());
    let watch = procs.spawn_command("stat --watch", cmd);
    let first: serde_json::Value = serde_json::from_str(&procs.expect_line(watch, "{")).unwrap();
    assert_eq!(first["capacity"], 1 << 20);
    std::fs::remove_file(env.path("f")).unwrap();
    let gone = procs.expect_line(watch, "shmbus: bus");
    assert!(
        gone.ends_with("was removed; waiting for a bus there again"),
        "{gone}"
    );
    env.ok(&["create", "f", "--capacity", "2MiB"]);
    env.ok(&["pub", "f", "--count", "3", "--size", "8"]);
    let back = procs.expect_line(watch, "shmbus: bus");
    assert!(back.ends_with("is back; watching the new file"), "{back}");
    let mut now: serde_json::Value = serde_json::from_str(&procs.expect_line(watch, "{")).unwrap();
    assert!(
        now.get("rate").is_none(),
        "rates start again with the new file: {now}"
    );
    for _ in 0..100 {
        if now["seq"] == 3 {
            break;
        }
        now = serde_json::from_str(&procs.expect_line(watch, "{")).unwrap();
    }
    assert_eq!(
        (now["capacity"].clone(), now["seq"].clone()),
        ((2 << 20).into(), 3.into())
    );
    env.ok(&["create", "f", "--capacity", "4MiB", "--force"]);
    let replaced = procs.expect_line(watch, "shmbus: bus");
    assert!(
        replaced.ends_with("was replaced by another file; watching the new file"),
        "{replaced}"
    );
    let newest: serde_json::Value = serde_json::from_str(&procs.expect_line(watch, "{")).unwrap();
    assert_eq!(newest["capacity"], 4 << 20);
    procs.signal(watch, libc::SIGINT);
    procs.success(watch);
}

#[test]
fn bench_and_pub_reject_what_they_cannot_do() {
    let env = Env::new();
    // Usage errors: clap's exit 2, with the reason.
    assert_fails(
        &env.run(&["bench", "--transports", "carrier-pigeon"], b""),
        2,
        "unknown transport",
    );
    assert_fails(&env.run(&["bench", "--sizes", "8"], b""), 2, "out of range");
    assert_fails(
        &env.run(&["pub", "x", "--count", "1", "--size", "4"], b""),
        2,
        "too small",
    );
    // A huge generated message is an error before anything is allocated.
    env.ok(&["create", "p", "--capacity", "64KiB"]);
    assert_fails(
        &env.run(&["pub", "p", "--count", "1", "--size", "1EiB"], b""),
        1,
        "exceeds the bus maximum",
    );
    // An endless line or raw input stops at the bus maximum.
    let big = vec![b'x'; 20_000];
    assert_fails(&env.run(&["pub", "p"], &big), 1, "exceeds the bus maximum");
    assert_fails(
        &env.run(&["pub", "p", "--input", "raw"], &big),
        1,
        "exceeds the bus maximum",
    );
}

#[test]
fn create_force_with_bad_options_keeps_the_old_bus() {
    let env = Env::new();
    env.ok(&["create", "keep", "--capacity", "64KiB"]);
    env.ok(&["pub", "keep", "precious"]);
    // Options checked against each other (the maximum message against the capacity): a
    // usage error, like any bad value, and before --force removes anything.
    assert_fails(
        &env.run(
            &[
                "create",
                "keep",
                "--force",
                "--capacity",
                "64KiB",
                "--max-message",
                "1MiB",
            ],
            b"",
        ),
        2,
        "a ring of 65536 bytes takes messages of 1 to 32752 bytes",
    );
    for (flag, bad) in [("--unblock-timeout", "0s"), ("--unblock-timeout", "61m")] {
        assert_fails(
            &env.run(&["create", "keep", "--force", flag, bad], b""),
            2,
            "an unblock timeout is 1ms to 1h",
        );
    }
    let o = env.run(&["sub", "keep", "--from", "oldest", "--count", "1"], b"");
    assert_eq!(stdout(&o), "precious\n");
}

/// Review of round 2: `create --force` was remove-then-create, so two at once could fail
/// ("use --force to replace it") or remove each other's fresh bus. Both now succeed, each
/// replacing the file in one step.
#[test]
fn concurrent_forced_creates_all_succeed() {
    let env = Env::new();
    env.ok(&["create", "hot", "--capacity", "64KiB"]);
    for round in 0..10 {
        let mut children: Vec<_> = (0..3)
            .map(|_| {
                env.cmd(&["create", "hot", "--force", "--capacity", "64KiB"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for c in children.drain(..) {
            let o = c.wait_with_output().unwrap();
            assert!(
                o.status.success(),
                "round {round}: {} {}",
                o.status,
                String::from_utf8_lossy(&o.stderr)
            );
        }
        env.ok(&["stat", "hot"]);
    }
    let names: Vec<_> = std::fs::read_dir(env.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("hot.bus")]);
}

#[test]
fn odd_arguments_and_closed_pipes_never_panic() {
    use std::os::unix::ffi::OsStrExt;
    let env = Env::new();
    let odd = std::ffi::OsStr::from_bytes(b"/tmp/\xff.bus");
    // Not a name shmbus can take (BUS is text): a usage error, not a panic.
    let o = env.cmd(&["stat"]).arg(odd).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("UTF-8"));
    // stat --json into a pipe closed early: exit 0, no error message.
    env.ok(&["create", "c"]);
    let mut child = env
        .cmd(&["stat", "c", "--json", "--watch", "10ms"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut first = [0u8; 1];
    std::io::Read::read_exact(&mut out, &mut first).unwrap();
    drop(out);
    let o = child.wait_with_output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn sub_timeout_bounds_a_run_that_never_goes_quiet() {
    let env = Env::new();
    env.ok(&["create", "busy", "--mode", "lossy"]);
    let mut procs = Procs::new(Duration::from_secs(60));
    let sub = env.spawn(
        &mut procs,
        "sub",
        &["sub", "busy", "--timeout", "300ms", "--format", "hex"],
    );
    wait_subscribers(&env, "busy", 1);
    // A publisher that keeps the bus busy for longer than the timeout.
    let mut pub_cmd = env.cmd(&["pub", "busy", "--count", "100000000", "--size", "64"]);
    pub_cmd.stdout(Stdio::null());
    let publ = procs.spawn_command("pub", pub_cmd);
    let (status, _) = procs.wait(sub);
    assert_eq!(status.code(), Some(124));
    procs.signal(publ, libc::SIGKILL);
}

/// Review of round 2: `timeout` (and process managers) send SIGTERM to a process and to its
/// group, so one stop request can arrive twice at once; exiting at the second one left the
/// subscriber's slot dead on the bus. Only a second SIGINT (Ctrl-C again) exits at once.
#[test]
fn two_sigterms_at_once_still_leave_the_slot_cleanly_and_a_second_ctrl_c_exits_at_once() {
    let env = Env::new();
    env.ok(&["create", "t", "--capacity", "64KiB"]);
    let mut procs = Procs::new(Duration::from_secs(120));
    for round in 0..5 {
        let sub = env.spawn(&mut procs, "sub", &["sub", "t"]);
        wait_subscribers(&env, "t", 1);
        procs.signal(sub, libc::SIGTERM);
        procs.signal(sub, libc::SIGTERM);
        let (status, _) = procs.wait(sub);
        assert_eq!(status.code(), Some(0), "round {round}: {status:?}");
        let bus = env.bus("t");
        let st = bus.stats();
        assert!(
            st.subscribers.is_empty(),
            "round {round}: a slot was left behind: {:?}",
            st.subscribers
        );
    }
    // Ctrl-C twice: the second one ends it at once, with 130.
    let sub = env.spawn(&mut procs, "sub", &["sub", "t"]);
    wait_subscribers(&env, "t", 1);
    procs.signal(sub, libc::SIGSTOP);
    procs.signal(sub, libc::SIGINT);
    procs.signal(sub, libc::SIGINT);
    procs.signal(sub, libc::SIGCONT);
    let (status, _) = procs.wait(sub);
    assert!(
        status.code() == Some(130) || status.code() == Some(0),
        "{status:?}"
    );
}

/// Review of round 2: durations humantime accepts but the clock cannot hold were a panic
/// (exit 101) once added to it.
#[test]
fn durations_beyond_a_century_are_usage_errors_not_panics() {
    let env = Env::new();
    env.ok(&["create", "d", "--capacity", "64KiB"]);
    for args in [
        &["sub", "d", "--timeout", "500000000000y", "--count", "0"][..],
        &["sub", "d", "--timeout", "18446744073709551615s"],
        &["stat", "d", "--watch", "500000000000y"],
        &["pub", "d", "x", "--timeout", "9223372036854775807s"],
    ] {
        let o = env.run(args, b"");
        assert_fails(&o, 2, "longer than 100 years");
    }
}

/// Review of round 2: `pub` had no signal handling, so the README's own `tail -f app.log |
/// shmbus pub logs` ended by Ctrl-C left a dead producer slot (and `ls` said the bus was not
/// ok). Stopped while waiting for input, or on a full ring, it leaves its slot and exits 0.
#[test]
fn pub_stopped_by_a_signal_while_waiting_leaves_its_slot() {
    let env = Env::new();
    env.ok(&["create", "p", "--capacity", "64KiB"]);
    let mut procs = Procs::new(Duration::from_secs(120));
    let bus = env.bus("p");
    let producers = |bus: &Bus| bus.stats().producers.len();
    for (round, sig) in [libc::SIGINT, libc::SIGTERM].into_iter().enumerate() {
        // Waiting for input on a pipe that stays open.
        let (reader, mut writer) = std::io::pipe().unwrap();
        let mut cmd = env.cmd(&["pub", "p"]);
        cmd.stdin(reader);
        let publ = procs.spawn_command("pub", cmd);
        writer.write_all(b"first\n").unwrap();
        assert!(eventually(Duration::from_secs(30), || bus.stats().tail_seq
            > round as u64));
        assert!(
            eventually(Duration::from_secs(30), || producers(&bus) == 1),
            "{:?}",
            bus.stats()
        );
        procs.signal(publ, sig);
        let (status, _) = procs.wait(publ);
        assert_eq!(status.code(), Some(0), "{sig}: {status:?}");
        assert_eq!(
            producers(&bus),
            0,
            "{sig}: the producer slot was left behind"
        );
        drop(writer);
    }
    // Waiting for room on a full ring that a stopped subscriber holds.
    let sub = env.spawn(&mut procs, "sub", &["sub", "p"]);
    wait_subscribers(&env, "p", 1);
    procs.signal(sub, libc::SIGSTOP);
    let publ = env.spawn(
        &mut procs,
        "pub",
        &["pub", "p", "--count", "100000", "--size", "64"],
    );
    assert!(eventually(Duration::from_secs(30), || {
        let st = bus.stats();
        st.producers.len() == 1
            && st
                .subscribers
                .first()
                .is_some_and(|s| s.lag_bytes > 32 << 10)
    }));
    procs.signal(publ, libc::SIGTERM);
    let (status, _) = procs.wait(publ);
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert_eq!(
        producers(&bus),
        0,
        "the waiting producer's slot was left behind"
    );
    procs.signal(sub, libc::SIGCONT);
    procs.signal(sub, libc::SIGTERM);
    procs.wait(sub);
}

/// Review of round 2: "all 1 subscriber slots are in use: all 1 subscriber slots are in use":
/// an error that wraps another printed it twice, once as its own text and once as its source.
#[test]
fn a_wrapped_error_is_printed_once() {
    let env = Env::new();
    env.ok(&[
        "create",
        "one",
        "--capacity",
        "64KiB",
        "--max-subscribers",
        "1",
    ]);
    let mut procs = Procs::new(Duration::from_secs(60));
    let sub = env.spawn(&mut procs, "sub", &["sub", "one"]);
    wait_subscribers(&env, "one", 1);
    let o = env.run(&["sub", "one", "--timeout", "1s"], b"");
    assert_fails(&o, 1, "subscriber slots are in use");
    assert_eq!(
        stderr(&o).matches("subscriber slots are in use").count(),
        1,
        "{}",
        stderr(&o)
    );
    procs.signal(sub, libc::SIGTERM);
    procs.wait(sub);
}
