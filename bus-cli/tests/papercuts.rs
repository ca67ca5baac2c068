//! Issue 12, part 7: the CLI as a new user meets it. Each test is one paper cut that was seen,
//! checked by its exact message and exit status, in a temporary directory of its own.
//!
//! Tests run as root, which ignores file modes: what another user sees is checked from a
//! child that drops to `nobody` (uid and gid 65534) before it runs `shmbus`.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::FromRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use assert_cmd::Command;

const SHMBUS: &str = env!("CARGO_BIN_EXE_shmbus");
const NOBODY: u32 = 65534;

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

    /// A directory other users may enter (for the tests of sharing).
    fn shared() -> Env {
        let env = Env::new();
        std::fs::set_permissions(env.dir.path(), PermissionsExt::from_mode(0o755)).unwrap();
        env
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(SHMBUS);
        c.args(args)
            .env("SHMBUS_DIR", self.dir.path())
            .timeout(Duration::from_secs(60));
        c
    }

    /// The same, run as `nobody`.
    fn cmd_as_nobody(&self, args: &[&str]) -> Command {
        let mut c = std::process::Command::new(SHMBUS);
        c.args(args).env("SHMBUS_DIR", self.dir.path());
        as_nobody(&mut c);
        let mut c = Command::from_std(c);
        c.timeout(Duration::from_secs(60));
        c
    }

    /// A long-running `shmbus` with its stderr read line by line.
    fn spawn(&self, args: &[&str]) -> Running {
        let mut c = std::process::Command::new(SHMBUS);
        c.args(args)
            .env("SHMBUS_DIR", self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        Running::new(c.spawn().unwrap())
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.bus"))
    }

    fn p(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self
            .cmd(args)
            .assert()
            .success()
            .get_output()
            .stdout
            .clone();
        String::from_utf8(out).unwrap()
    }

    /// Runs and returns (exit status, stdout, stderr).
    fn run(&self, args: &[&str]) -> (i32, String, String) {
        outcome(self.cmd(args).output().unwrap())
    }

    /// `stat --json` as root (read-only, like every stat).
    fn stat(&self, name: &str) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["stat", name, "--json"])).unwrap()
    }
}

fn outcome(o: std::process::Output) -> (i32, String, String) {
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(o.status.signal(), None, "killed by a signal: {o:?}");
    (
        o.status.code().unwrap(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Makes the command drop to uid/gid 65534 with no supplementary groups before exec.
fn as_nobody(c: &mut std::process::Command) {
    // SAFETY: setgroups, setgid and setuid are async-signal-safe, as pre_exec needs.
    unsafe {
        c.pre_exec(|| {
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(NOBODY) != 0
                || libc::setuid(NOBODY) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A child whose stderr lines arrive on a channel.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Running {
    fn new(mut child: Child) -> Running {
        let (tx, lines) = mpsc::channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running { child, lines }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next stderr line, within `limit`.
    fn line(&self, limit: Duration) -> Option<String> {
        self.lines.recv_timeout(limit).ok()
    }

    fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `cond` for up to 20 s.
fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(20);
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn live_subscribers(env: &Env, name: &str) -> usize {
    env.stat(name)["subscribers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["alive"] == true)
        .count()
}

// ---------------------------------------------------------------------------------------
// Sharing

#[test]
fn an_explicit_file_mode_is_applied_as_given_and_printed() {
    let env = Env::shared();
    let mut c = std::process::Command::new(SHMBUS);
    c.args(["create", "x", "--capacity", "64KiB", "--file-mode", "666"])
        .env("SHMBUS_DIR", env.dir.path());
    // SAFETY: umask is async-signal-safe.
    unsafe {
        c.pre_exec(|| {
            libc::umask(0o022);
            Ok(())
        });
    }
    let (code, out, err) = outcome(c.output().unwrap());
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        format!(
            "created {}: reliable mode, capacity 64 KiB, max message 8 KiB, file mode 0666\n",
            env.p("x")
        )
    );
    assert_eq!(err, "");
    let mode = std::fs::metadata(env.path("x"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o666, "the umask 022 must not narrow it");
    // The default stays private, and a shared file in a closed directory gets a note.
    let private = Env::new();
    std::fs::set_permissions(private.dir.path(), PermissionsExt::from_mode(0o700)).unwrap();
    let (code, out, err) =
        private.run(&["create", "y", "--capacity", "64KiB", "--file-mode", "660"]);
    assert_eq!(code, 0);
    assert!(out.ends_with("file mode 0660\n"), "{out}");
    assert_eq!(
        err,
        format!(
            "shmbus: note: the directory {} has mode 0700: other users cannot reach the bus \
             through it (chmod the directory, or create the bus in a shared one)\n",
            private.dir.path().display()
        )
    );
}

#[test]
fn another_user_joins_a_shared_bus_with_allow_other_owner() {
    if !is_root() {
        eprintln!("skipped: needs root to run a child as another user");
        return;
    }
    let env = Env::shared();
    env.ok(&[
        "create",
        "shared",
        "--capacity",
        "64KiB",
        "--file-mode",
        "666",
    ]);
    let p = env.p("shared");
    let (code, _, err) = outcome(
        env.cmd_as_nobody(&["sub", &p, "--timeout", "100ms"])
            .output()
            .unwrap(),
    );
    assert_eq!(code, 1);
    assert_eq!(
        err,
        format!(
            "shmbus: error: bus {p}: is owned by uid 0, not by this user (uid 65534) (to join a \
             bus another user shares, pass --allow-other-owner)\n"
        )
    );
    // With the flag: a subscriber (exit 124 when its timeout runs out) and a publisher.
    env.cmd_as_nobody(&["pub", &p, "--allow-other-owner", "from nobody"])
        .assert()
        .success();
    env.cmd_as_nobody(&["sub", &p, "--allow-other-owner", "--timeout", "100ms"])
        .assert()
        .code(124);
    let (_, out, _) = env.run(&["sub", "shared", "--from", "oldest", "--count", "1"]);
    assert_eq!(out, "from nobody\n");
}

#[test]
fn stat_and_ls_look_with_read_permission_alone() {
    if !is_root() {
        eprintln!("skipped: needs root to run a child as another user");
        return;
    }
    let env = Env::shared();
    env.ok(&["create", "ro", "--capacity", "64KiB", "--file-mode", "644"]);
    env.ok(&["pub", "ro", "one", "two"]);
    let p = env.p("ro");
    // Joining needs write access: the error says why, and what needs less.
    let (code, _, err) = outcome(
        env.cmd_as_nobody(&["sub", &p, "--allow-other-owner"])
            .output()
            .unwrap(),
    );
    assert_eq!(code, 1);
    assert_eq!(
        err,
        format!(
            "shmbus: error: bus {p}: permission denied: need permission to read and write the \
             bus file (the file has mode 0644 and owner uid 0; a subscriber or publisher takes a \
             slot, so it needs read and write access; `shmbus stat` needs only read access)\n"
        )
    );
    // Looking needs only read access, and another user's file is fine for an observer.
    let (code, out, err) = outcome(env.cmd_as_nobody(&["stat", &p, "--json"]).output().unwrap());
    assert_eq!((code, err.as_str()), (0, ""));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["read_only"], true);
    assert_eq!(v["published_messages"], 2);
    let (code, out, _) = outcome(
        env.cmd_as_nobody(&["ls", "--json", env.dir.path().to_str().unwrap()])
            .output()
            .unwrap(),
    );
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(v["name"], "ro");
    assert_eq!(v["ok"], true, "{v}");
    // Without read access even looking is refused, with the mode in the message.
    std::fs::set_permissions(env.path("ro"), PermissionsExt::from_mode(0o600)).unwrap();
    let (code, _, err) = outcome(env.cmd_as_nobody(&["stat", &p]).output().unwrap());
    assert_eq!(code, 1);
    assert_eq!(
        err,
        format!(
            "shmbus: error: bus {p}: permission denied: need permission to read the bus file \
             (the file has mode 0600 and owner uid 0)\n"
        )
    );
}

#[test]
fn a_read_only_stat_sees_liveness_and_evicts_nothing() {
    let env = Env::new();
    env.ok(&["create", "live", "--capacity", "64KiB"]);
    let sub = env.spawn(&["sub", "live"]);
    assert!(eventually(|| live_subscribers(&env, "live") == 1));
    // The liveness query (F_OFD_GETLK) works on the read-only descriptor of stat.
    let v = env.stat("live");
    assert_eq!(v["subscribers"][0]["pid"], sub.pid());
    sub.signal(libc::SIGKILL);
    assert!(eventually(
        || env.stat("live")["subscribers"][0]["alive"] == false
    ));
    // stat changed nothing: the dead slot is still there, not evicted.
    let v = env.stat("live");
    assert_eq!(v["subscribers"].as_array().unwrap().len(), 1);
    assert_eq!(v["evicted"], 0);
    let human = env.ok(&["stat", "live"]);
    assert!(human.contains(" DEAD "), "{human}");
}

// ---------------------------------------------------------------------------------------
// Removing and replacing a bus under its subscribers

#[test]
fn create_force_refuses_then_warns_and_the_subscriber_notices() {
    let env = Env::new();
    env.ok(&["create", "t", "--capacity", "64KiB"]);
    let sub = env.spawn(&["sub", "t"]);
    assert!(eventually(|| live_subscribers(&env, "t") == 1));
    let pid = sub.pid();
    let (code, _, err) = env.run(&["create", "t", "--capacity", "64KiB"]);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        format!(
            "shmbus: error: bus {}: already exists, with 1 live subscriber attached (pid {pid}); \
             use --force to replace it anyway\n",
            env.p("t")
        )
    );
    let (code, out, err) = env.run(&["create", "t", "--capacity", "64KiB", "--force"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("created "), "{out}");
    assert_eq!(
        err,
        format!(
            "shmbus: warning: replaced {} with 1 live subscriber attached (pid {pid}); they stay \
             attached to the deleted file, receive nothing more, and print a warning\n",
            env.p("t")
        )
    );
    assert_eq!(
        sub.line(Duration::from_secs(10)).as_deref(),
        Some(
            format!(
                "shmbus: warning: bus {} was replaced by another file; this subscriber is still \
                 attached to the old file, which new publishers cannot reach (restart it to use \
                 the bus at that path)",
                env.p("t")
            )
            .as_str()
        )
    );
}

#[test]
fn rm_force_warns_and_the_subscriber_notices() {
    let env = Env::new();
    env.ok(&["create", "t", "--capacity", "64KiB"]);
    let sub = env.spawn(&["sub", "t"]);
    assert!(eventually(|| live_subscribers(&env, "t") == 1));
    let pid = sub.pid();
    let (code, _, err) = env.run(&["rm", "t"]);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        format!(
            "shmbus: error: bus {}: 1 live subscriber attached (pid {pid}); use --force to \
             remove it anyway\n",
            env.p("t")
        )
    );
    let (code, _, err) = env.run(&["rm", "t", "--force"]);
    assert_eq!(code, 0);
    assert_eq!(
        err,
        format!(
            "shmbus: warning: removed {} with 1 live subscriber attached (pid {pid}); they stay \
             attached to the deleted file, receive nothing more, and print a warning\n",
            env.p("t")
        )
    );
    assert_eq!(
        sub.line(Duration::from_secs(10)).as_deref(),
        Some(
            format!(
                "shmbus: warning: bus {} was removed; this subscriber is still attached to the \
                 old file, which new publishers cannot reach (restart it to use the bus at that \
                 path)",
                env.p("t")
            )
            .as_str()
        )
    );
}

#[test]
fn a_publisher_notices_its_bus_removed() {
    let env = Env::new();
    env.ok(&["create", "t", "--capacity", "64KiB"]);
    // A publisher that waits on its standard input (a pipe we keep open).
    let mut c = std::process::Command::new(SHMBUS);
    c.args(["pub", "t"])
        .env("SHMBUS_DIR", env.dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut publ = Running::new(c.spawn().unwrap());
    let mut stdin = publ.child.stdin.take().unwrap();
    writeln!(stdin, "first").unwrap();
    assert!(eventually(|| env.stat("t")["published_messages"] == 1));
    std::fs::remove_file(env.path("t")).unwrap();
    assert_eq!(
        publ.line(Duration::from_secs(10)).as_deref(),
        Some(
            format!(
                "shmbus: warning: bus {} was removed; this publisher is still attached to the old \
                 file, which new subscribers cannot reach (restart it to use the bus at that path)",
                env.p("t")
            )
            .as_str()
        )
    );
}

// ---------------------------------------------------------------------------------------
// Errors

#[test]
fn an_oversized_line_is_named_with_its_real_size() {
    let env = Env::new();
    env.ok(&["create", "b", "--capacity", "64KiB"]);
    let mut input = b"first\nsecond\n".to_vec();
    input.extend(std::iter::repeat_n(b'x', 9000));
    input.extend(b"\nfourth\n");
    let o = env.cmd(&["pub", "b"]).write_stdin(input).output().unwrap();
    let (code, _, err) = outcome(o);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        format!(
            "shmbus: error: bus {}: line 3 of standard input, 9000 bytes, exceeds the bus maximum \
             of 8192 bytes; 2 messages before it were published, nothing after it (the maximum is \
             set when a bus is created: `shmbus create BUS --max-message SIZE`, at most half the \
             capacity)\n",
            env.p("b")
        )
    );
    assert_eq!(env.stat("b")["published_messages"], 2);
    // An argument: which one, and that nothing was published.
    let big = "y".repeat(8193);
    let (code, _, err) = env.run(&["pub", "b", &big, "after"]);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        format!(
            "shmbus: error: bus {}: argument 1, 8193 bytes, exceeds the bus maximum of 8192 \
             bytes; nothing was published (the maximum is set when a bus is created: `shmbus \
             create BUS --max-message SIZE`, at most half the capacity)\n",
            env.p("b")
        )
    );
}

#[test]
fn capacity_errors_are_usage_errors_that_say_what_would_do() {
    let env = Env::new();
    let cases = [
        (
            "10MB",
            "shmbus: error: invalid value '10MB' for '--capacity <SIZE>': \"10MB\" (10485760 \
             bytes) is not a power of two: try 8MiB or 16MiB\n",
        ),
        (
            "-5",
            "shmbus: error: invalid value '-5' for '--capacity <SIZE>': \"-5\" is negative: a size \
             is a number of bytes (examples: 4096, 64KiB, 16MiB, 1GiB)\n",
        ),
        (
            "lots",
            "shmbus: error: invalid value 'lots' for '--capacity <SIZE>': \"lots\" is not a size \
             (examples: 4096, 64KiB, 16MiB, 1GiB)\n",
        ),
        (
            "2TiB",
            "shmbus: error: invalid value '2TiB' for '--capacity <SIZE>': \"2TiB\" is out of \
             range: a capacity is a power of two from 4KiB to 1TiB\n",
        ),
    ];
    for (arg, want) in cases {
        let (code, _, err) = env.run(&["create", "c", &format!("--capacity={arg}")]);
        assert_eq!(code, 2, "{arg}: {err}");
        let first = err.lines().next().unwrap_or_default();
        assert_eq!(format!("{first}\n"), want, "{arg}");
        assert!(!env.path("c").exists());
    }
}

#[test]
fn a_ring_that_does_not_fit_points_at_sparse() {
    // tmpfs (/dev/shm) is smaller than 1 TiB on any machine these tests run on.
    let Ok(dir) = tempfile::tempdir_in("/dev/shm") else {
        eprintln!("skipped: no /dev/shm");
        return;
    };
    let path = dir.path().join("big.bus");
    let (code, _, err) = outcome(
        Command::new(SHMBUS)
            .args(["create", path.to_str().unwrap(), "--capacity", "1TiB"])
            .output()
            .unwrap(),
    );
    assert_eq!(code, 1, "{err}");
    assert_eq!(
        err,
        format!(
            "shmbus: error: bus {}: no space left to reserve 1099511648256 bytes (1.0 TiB): use a \
             smaller --capacity, or --sparse for a ring larger than memory on a disk file system\n",
            path.display()
        )
    );
    assert!(!path.exists());
}

#[test]
fn a_missing_bus_suggests_a_near_name_and_name_dot_bus_is_the_name() {
    let env = Env::new();
    env.ok(&["create", "ticks", "--capacity", "64KiB"]);
    let (code, _, err) = env.run(&["sub", "tikcs"]);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        format!(
            "shmbus: error: bus {}: no such bus; did you mean ticks? (`shmbus ls` lists them)\n",
            env.p("tikcs")
        )
    );
    // Nothing near: no suggestion.
    let (code, _, err) = env.run(&["stat", "quotes"]);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        format!("shmbus: error: bus {}: no such bus\n", env.p("quotes"))
    );
    // `ticks.bus` names the bus `ticks`, not a file ticks.bus.bus.
    env.ok(&["pub", "ticks.bus", "hello"]);
    let out = env.ok(&["sub", "ticks.bus", "--from", "oldest", "--count", "1"]);
    assert_eq!(out, "hello\n");
}

#[test]
fn a_wrong_mode_lists_both_modes_and_suggests_neither() {
    let env = Env::new();
    let (code, _, err) = env.run(&["create", "m", "--mode", "lossless"]);
    assert_eq!(code, 2);
    assert_eq!(
        err,
        "shmbus: error: invalid value 'lossless' for '--mode <MODE>': the modes are `reliable` \
         (producers wait for the slowest subscriber; nothing is lost) and `lossy` (producers \
         never wait; a subscriber that falls a ring behind loses messages, counted)\n"
    );
}

#[test]
fn every_error_begins_the_same_way() {
    let env = Env::new();
    for args in [
        &["frobnicate"][..],
        &["sub"],
        &["create", "x", "--max-subscribers", "0"],
        &["sub", "x", "--timeout", "soon"],
        &["sub", "nope"],
        &["rm", "nope"],
    ] {
        let (code, _, err) = env.run(args);
        assert!(code == 1 || code == 2, "{args:?}");
        assert!(
            err.starts_with("shmbus: error: "),
            "{args:?} should begin `shmbus: error: `: {err}"
        );
        assert!(!err.contains("\nerror:"), "{err}");
    }
}

// ---------------------------------------------------------------------------------------
// Silence

#[test]
fn sub_from_latest_points_at_from_oldest() {
    let env = Env::new();
    env.ok(&["pub", "fresh", "--create", "a", "b", "c"]);
    let (code, out, err) = env.run(&["sub", "fresh", "--timeout", "1500ms"]);
    assert_eq!((code, out.as_str()), (124, ""));
    assert_eq!(
        err,
        format!(
            "shmbus: waiting for new messages on {}; it already holds 3 messages from before \
             (`--from oldest` prints them)\n",
            env.p("fresh")
        )
    );
    // From oldest, or on an empty bus, nothing to point at.
    let (code, out, err) = env.run(&["sub", "fresh", "--from", "oldest", "--timeout", "1500ms"]);
    assert_eq!((code, out.as_str(), err.as_str()), (124, "a\nb\nc\n", ""));
}

/// A pseudo-terminal: (master, slave).
fn pty() -> (File, File) {
    // SAFETY: plain libc calls on descriptors we own; every result is checked.
    unsafe {
        let m = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        assert!(m >= 0);
        assert_eq!(libc::grantpt(m), 0);
        assert_eq!(libc::unlockpt(m), 0);
        let mut name = [0 as libc::c_char; 128];
        assert_eq!(libc::ptsname_r(m, name.as_mut_ptr(), name.len()), 0);
        let s = libc::open(
            name.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        );
        assert!(s >= 0);
        (File::from_raw_fd(m), File::from_raw_fd(s))
    }
}

#[test]
fn pub_on_a_terminal_says_what_it_reads() {
    let env = Env::new();
    env.ok(&["create", "tty", "--capacity", "64KiB"]);
    let (mut master, slave) = pty();
    let mut c = std::process::Command::new(SHMBUS);
    c.args(["pub", "tty"])
        .env("SHMBUS_DIR", env.dir.path())
        .stdin(Stdio::from(slave))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut publ = Running::new(c.spawn().unwrap());
    assert_eq!(
        publ.line(Duration::from_secs(10)).as_deref(),
        Some(
            format!(
                "shmbus: publishing each line you type to {} (Ctrl-D ends)",
                env.p("tty")
            )
            .as_str()
        )
    );
    // A line, then end-of-file (Ctrl-D at the start of a line).
    master.write_all(b"typed\n\x04").unwrap();
    let status = publ.child.wait().unwrap();
    assert!(status.success());
    let out = env.ok(&["sub", "tty", "--from", "oldest", "--count", "1"]);
    assert_eq!(out, "typed\n");
}

#[test]
fn a_held_publisher_says_which_subscriber_holds_it() {
    let env = Env::new();
    // 4 KiB ring, 100-byte messages: 128-byte records, 32 fill it exactly.
    env.ok(&["create", "full", "--capacity", "4KiB"]);
    let sub = env.spawn(&["sub", "full"]);
    assert!(eventually(|| live_subscribers(&env, "full") == 1));
    sub.signal(libc::SIGSTOP);
    let pid = sub.pid();
    let (code, _, err) = env.run(&[
        "pub",
        "full",
        "--count",
        "40",
        "--size",
        "100",
        "--timeout",
        "1500ms",
    ]);
    assert_eq!(code, 1);
    let p = env.p("full");
    let holder = format!(
        "subscriber pid {pid} (slot 0) is 32 messages (4096 bytes) behind; it may be stopped or \
         slow"
    );
    assert_eq!(
        err,
        format!(
            "shmbus: bus {p} is full; waiting for space ({holder})\n\
             shmbus: error: bus {p}: timed out waiting for space in the ring ({holder}); 32 \
             messages were published\n"
        )
    );
    sub.signal(libc::SIGCONT);
}

#[test]
fn stat_counts_only_live_waiting_producers() {
    let env = Env::new();
    env.ok(&["create", "w", "--capacity", "4KiB"]);
    let sub = env.spawn(&["sub", "w"]);
    assert!(eventually(|| live_subscribers(&env, "w") == 1));
    sub.signal(libc::SIGSTOP);
    let publ = env.spawn(&["pub", "w", "--count", "40", "--size", "100"]);
    assert!(eventually(|| env.stat("w")["producers_waiting"] == 1));
    // (The stopped subscriber may or may not have been asleep when it was stopped.)
    let repairs = |human: String| {
        let line = human.lines().find(|l| l.starts_with("repairs")).unwrap();
        let (head, tail) = line.split_once(" asleep, ").unwrap();
        assert!(
            head.ends_with("; 0 readers") || head.ends_with("; 1 reader"),
            "{line}"
        );
        tail.to_string()
    };
    assert_eq!(
        repairs(env.ok(&["stat", "w"])),
        format!("1 producer waiting for space (pid {})", publ.pid())
    );
    publ.signal(libc::SIGKILL);
    // Dead, it waits no more, although no sweep has given its count back yet.
    assert!(eventually(|| env.stat("w")["producers_waiting"] == 0));
    assert_eq!(
        repairs(env.ok(&["stat", "w"])),
        "0 producers waiting for space"
    );
    sub.signal(libc::SIGCONT);
}

// ---------------------------------------------------------------------------------------
// Help and output

#[test]
fn every_help_has_examples_formats_and_one_placeholder_style() {
    let env = Env::new();
    for cmd in [
        "create",
        "pub",
        "sub",
        "stat",
        "rm",
        "ls",
        "top",
        "demo",
        "bench",
        "completions",
    ] {
        let help = env.ok(&[cmd, "--help"]);
        assert!(help.contains("\nExamples:\n"), "{cmd} --help: {help}");
        for odd in ["<SUBSCRIBERS>", "<MESSAGES>", "<BYTES>", "<COUNT>"] {
            assert!(!help.contains(odd), "{cmd} --help has {odd}");
        }
        if help.contains("<DUR>") {
            assert!(
                help.contains("500ms, 2s, 1m"),
                "{cmd} --help: DUR unexplained"
            );
        }
    }
    let create = env.ok(&["create", "--help"]);
    for limit in [
        "from 4KiB to 1TiB",
        "at most half the capacity",
        "1 to 4096",
        "1ms to 1h",
    ] {
        assert!(create.contains(limit), "create --help should say {limit:?}");
    }
    assert!(env.ok(&["bench", "--help"]).contains("$SHMBUS_DIR"));
}

#[test]
fn stat_labels_ring_bytes_pluralises_and_uses_binary_units() {
    let env = Env::new();
    env.ok(&["create", "s", "--capacity", "64KiB"]);
    env.ok(&["pub", "s", "one"]);
    let human = env.ok(&["stat", "s"]);
    let tail = human.lines().find(|l| l.starts_with("tail")).unwrap();
    assert_eq!(
        tail,
        "tail       position 32, seq 1   (published 1 message, 32 B of ring records)"
    );
    assert!(human.contains(
        "(ring records: payloads plus a 16-byte header each, 16-byte aligned, and padding)"
    ));
    assert!(!human.contains(" 1 messages") && !human.contains(" 1 readers"));
    // The rate of --watch: MiB/s, and mib_per_s in JSON.
    let mut c = std::process::Command::new(SHMBUS);
    c.args(["stat", "s", "--watch", "100ms"])
        .env("SHMBUS_DIR", env.dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut watch = c.spawn().unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let rate = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.starts_with("rate"))
        .unwrap();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(watch.id() as i32, libc::SIGINT) };
    assert!(watch.wait().unwrap().success());
    assert!(rate.ends_with(" MiB/s of ring records"), "{rate}");
    let mut c = std::process::Command::new(SHMBUS);
    c.args(["stat", "s", "--watch", "100ms", "--json"])
        .env("SHMBUS_DIR", env.dir.path())
        .stdout(Stdio::piped());
    let mut watch = c.spawn().unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let second: serde_json::Value = serde_json::from_str(&lines.nth(1).unwrap().unwrap()).unwrap();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(watch.id() as i32, libc::SIGINT) };
    assert!(watch.wait().unwrap().success());
    assert!(second["rate"]["mib_per_s"].is_number(), "{second}");
    assert!(second["rate"].get("mb_per_s").is_none());
}

#[test]
fn bench_prints_aligned_text_or_markdown_and_uses_shmbus_dir() {
    let env = Env::new();
    // A directory that does not exist yet: bench creates it, which shows it used it.
    let dir = env.dir.path().join("benchdir");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "bench",
            "--quick",
            "--sizes",
            "64",
            "--transports",
            "pipe",
            "--no-fanout",
            "--no-pin",
        ];
        args.extend_from_slice(extra);
        let o = Command::new(SHMBUS)
            .args(&args)
            .env("SHMBUS_DIR", &dir)
            .timeout(Duration::from_secs(120))
            .output()
            .unwrap();
        outcome(o)
    };
    let (code, out, err) = run(&[]);
    assert_eq!(code, 0, "{err}");
    assert!(dir.is_dir(), "bench should run in $SHMBUS_DIR");
    assert!(!out.lines().any(|l| l.starts_with('|')), "{out}");
    assert!(!out.contains("**"), "{out}");
    assert!(out.lines().any(|l| l.starts_with("transport ")), "{out}");
    assert!(
        err.contains(
            "shmbus bench: --markdown prints these tables as Markdown; --json PATH, --csv PATH \
             and --svg PATH write the results and charts to files"
        ),
        "{err}"
    );
    let (code, out, _) = run(&["--markdown"]);
    assert_eq!(code, 0);
    assert!(out.lines().any(|l| l.starts_with("|---")), "{out}");
}
