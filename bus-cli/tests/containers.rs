//! Buses shared with processes in other PID (and mount) namespaces, as containers share them
//! (`docker run --ipc=host -v /dev/shm/shmbus:/dev/shm/shmbus`): liveness is an OFD lock,
//! which knows nothing of pids, so a subscriber killed in another namespace is evicted and a
//! producer that dies there mid-claim is repaired; `stat` shows the pids as this namespace
//! sees them, or marks them foreign (issue 12, part 5).
//!
//! The namespaces come from `unshare --pid --fork --mount-proc` (util-linux), which needs
//! root or user namespaces. Where it is refused, each test says so on stderr (not captured by
//! the test harness) and returns; with `SHMBUS_REQUIRE_NAMESPACES=1` it fails instead.

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use testkit::{eventually, Procs};

const SHMBUS: &str = env!("CARGO_BIN_EXE_shmbus");

/// Whether `unshare` gives this test new PID and mount namespaces; if not, says why on the
/// terminal (stderr written directly, which the harness does not capture) and the test returns.
fn namespaces_or_skip(test: &str) -> bool {
    let probe = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "--", "true"])
        .stdin(Stdio::null())
        .output();
    let why = match probe {
        Ok(o) if o.status.success() => return true,
        Ok(o) => format!(
            "`unshare --pid --fork --mount-proc true` failed ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => format!("cannot run unshare: {e}"),
    };
    if std::env::var_os("SHMBUS_REQUIRE_NAMESPACES").is_some_and(|v| v == "1") {
        panic!("{test}: {why} (and SHMBUS_REQUIRE_NAMESPACES=1)");
    }
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: no new namespaces here: {why}"
    );
    false
}

/// `unshare --pid --fork --mount-proc --kill-child [extra...] -- program args...`: the program
/// is pid 1 of a new PID namespace, with its own /proc, and dies with `unshare`.
fn in_new_pid_namespace(extra: &[&str], program: &str, args: &[&str]) -> Command {
    let mut c = Command::new("unshare");
    c.args(["--pid", "--fork", "--mount-proc", "--kill-child"])
        .args(extra)
        .arg("--")
        .arg(program)
        .args(args);
    c
}

/// A reliable bus `c.bus` in `dir` with a 64 KiB ring and a short unblock timeout.
fn create_bus(dir: &Path) -> String {
    let path = dir.join("c.bus");
    let path = path.to_str().unwrap().to_string();
    let o = Command::new(SHMBUS)
        .args([
            "create",
            &path,
            "--capacity",
            "64KiB",
            "--max-message",
            "1KiB",
            "--unblock-timeout",
            "100ms",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    path
}

/// `shmbus stat --json BUS` run by `cmd` (here, or in a namespace).
fn stat_json_with(mut cmd: Command) -> Value {
    let o = cmd.stdin(Stdio::null()).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn stat_json(bus: &str) -> Value {
    let mut c = Command::new(SHMBUS);
    c.args(["stat", "--json", bus]);
    stat_json_with(c)
}

fn stat_text(bus: &str) -> String {
    let o = Command::new(SHMBUS).args(["stat", bus]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The pid, in this namespace, of the only child of `parent` (unshare's forked child: pid 1 of
/// the namespace).
fn only_child(parent: i32) -> i32 {
    let mut child = 0;
    assert!(
        eventually(Duration::from_secs(10), || {
            let list = std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children"))
                .unwrap_or_default();
            child = list
                .split_whitespace()
                .next()
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            child != 0
        }),
        "unshare {parent} forked no child"
    );
    child
}

/// Waits until the bus has `n` live subscribers.
fn wait_for_subscribers(bus: &str, n: usize) -> Value {
    let mut st = Value::Null;
    assert!(
        eventually(Duration::from_secs(20), || {
            st = stat_json(bus);
            st["subscribers"]
                .as_array()
                .is_some_and(|s| s.iter().filter(|s| s["alive"] == true).count() == n)
        }),
        "{n} live subscribers: {st}"
    );
    st
}

/// The pid column of the first row of the subscriber table of a `stat` text.
fn first_subscriber_pid(text: &str) -> String {
    let rows: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("subscribers"))
        .skip(2)
        .collect();
    let row = rows
        .first()
        .unwrap_or_else(|| panic!("no subscriber row in\n{text}"));
    // "     0  1 (foreign)   yes ...": everything between the slot and "yes"/"DEAD".
    let rest = row.trim_start().split_once(' ').unwrap().1;
    let end = rest
        .find(" yes")
        .or_else(|| rest.find(" DEAD"))
        .unwrap_or(rest.len());
    rest[..end].trim().to_string()
}

#[test]
fn a_subscriber_killed_in_another_pid_namespace_is_evicted() {
    if !namespaces_or_skip("a_subscriber_killed_in_another_pid_namespace_is_evicted") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bus = create_bus(dir.path());
    let mut procs = Procs::new(Duration::from_secs(90));
    let ns = procs.spawn_command(
        "subscriber in a new PID namespace",
        in_new_pid_namespace(&[], SHMBUS, &["sub", &bus]),
    );
    let st = wait_for_subscribers(&bus, 1);
    let here = only_child(procs.pid(ns));

    // It recorded pid 1 (its own namespace's); this namespace knows it as `here`.
    let sub = &st["subscribers"][0];
    assert_eq!(sub["pid"], 1, "{st}");
    assert_eq!(sub["pid_here"], here, "{st}");
    assert_eq!(sub["pid_ns"], "nested", "{st}");
    assert_eq!(first_subscriber_pid(&stat_text(&bus)), here.to_string());
    // From a third namespace, beside it, neither pid means anything: foreign.
    let beside = stat_json_with(in_new_pid_namespace(&[], SHMBUS, &["stat", "--json", &bus]));
    assert_eq!(beside["subscribers"][0]["pid_ns"], "foreign", "{beside}");
    assert_eq!(beside["subscribers"][0]["pid_here"], Value::Null);
    let o = in_new_pid_namespace(&[], SHMBUS, &["stat", &bus])
        .output()
        .unwrap();
    assert_eq!(
        first_subscriber_pid(&String::from_utf8_lossy(&o.stdout)),
        "1 (foreign)"
    );

    // The bus is shared: a message from this namespace reaches it.
    let o = Command::new(SHMBUS)
        .args(["pub", &bus, "across"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    procs.expect_line(ns, "across");

    // Killed from here; the namespace dies with its pid 1.
    // SAFETY: signalling the namespace's pid 1, our grandchild.
    assert_eq!(unsafe { libc::kill(here, libc::SIGKILL) }, 0);
    let (status, _) = procs.wait(ns);
    assert!(!status.success(), "unshare reports its child's death");
    // 200 KB through a 64 KiB reliable ring: only possible once the dead subscriber is out.
    let publisher = procs.spawn(
        "publisher",
        SHMBUS,
        &["pub", &bus, "--count", "2000", "--size", "100"],
    );
    procs.success(publisher);
    let st = stat_json(&bus);
    assert_eq!(st["subscribers"], serde_json::json!([]), "{st}");
    assert!(st["evicted"].as_u64().unwrap() >= 1, "{st}");
    assert_eq!(st["published_messages"], 2001, "{st}");
    assert!(
        stat_text(&bus).contains("subscribers 0/"),
        "the slot is gone"
    );
}

#[test]
fn a_producer_killed_mid_claim_in_another_pid_namespace_is_repaired() {
    if !namespaces_or_skip("a_producer_killed_mid_claim_in_another_pid_namespace_is_repaired") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bus = create_bus(dir.path());
    let mut procs = Procs::new(Duration::from_secs(90));
    let sub = procs.spawn("subscriber", SHMBUS, &["sub", &bus]);
    wait_for_subscribers(&bus, 1);

    // The victim must not be pid 1 of its namespace (pid 1 ignores its own SIGKILL): a shell
    // is, and runs it. It dies at its first claim, before writing a byte of the record
    // (bus-core's fault point, compiled into the test builds).
    let mut victim = in_new_pid_namespace(
        &[],
        "sh",
        &[
            "-c",
            r#""$0" pub "$1" doomed; echo "exit $?""#,
            SHMBUS,
            &bus,
        ],
    );
    victim.env("SHMBUS_FAULT", "after-claim:kill");
    let v = procs.spawn_command("producer in a new PID namespace", victim);
    let line = procs.expect_line(v, "exit ");
    assert_eq!(
        line, "exit 137",
        "killed by its own SIGKILL at the fault point"
    );
    procs.success(v);
    let st = stat_json(&bus);
    assert_eq!(st["seq"], 1, "the claim moved the tail: {st}");

    // A producer here goes on: the reader unblocks the dead claim and then gets this.
    let o = Command::new(SHMBUS)
        .args(["pub", &bus, "after"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    procs.expect_line(sub, "after");
    let mut st = stat_json(&bus);
    assert_eq!(st["unblocked"], 1, "one dead claim repaired: {st}");
    // The subscriber publishes its counters in batches.
    assert!(
        eventually(Duration::from_secs(10), || {
            st = stat_json(&bus);
            st["subscribers"][0]["unblocked"] == 1
        }),
        "{st}"
    );
    assert!(
        st["producers"].as_array().unwrap().is_empty(),
        "the dead producer's slot was evicted: {st}"
    );
    procs.signal(sub, libc::SIGINT);
    let (status, out) = procs.wait(sub);
    assert!(
        status.success() || status.signal() == Some(libc::SIGINT),
        "{status}"
    );
    assert!(!out.iter().any(|l| l.contains("doomed")), "{out:?}");
}

#[test]
fn a_subscriber_reaches_the_bus_through_a_bind_mount_in_another_mount_namespace() {
    if !namespaces_or_skip(
        "a_subscriber_reaches_the_bus_through_a_bind_mount_in_another_mount_namespace",
    ) {
        return;
    }
    let top = tempfile::tempdir().unwrap();
    let shared = top.path().join("shared");
    let elsewhere: PathBuf = top.path().join("elsewhere");
    std::fs::create_dir(&shared).unwrap();
    std::fs::create_dir(&elsewhere).unwrap();
    let bus = create_bus(&shared);
    let mut procs = Procs::new(Duration::from_secs(90));
    // In its own mount namespace (private propagation: the mount stays there), the directory
    // appears at another path, as a container's volume does.
    let ns = procs.spawn_command(
        "subscriber through a bind mount",
        in_new_pid_namespace(
            &["--mount"],
            "sh",
            &[
                "-c",
                r#"mount --bind "$1" "$2" && exec "$0" sub "$2/c.bus""#,
                SHMBUS,
                shared.to_str().unwrap(),
                elsewhere.to_str().unwrap(),
            ],
        ),
    );
    let st = wait_for_subscribers(&bus, 1);
    let here = only_child(procs.pid(ns));
    assert_eq!(st["subscribers"][0]["pid_here"], here, "{st}");
    assert_eq!(
        std::fs::read_dir(&elsewhere).unwrap().count(),
        0,
        "the bind mount is not visible here"
    );
    let o = Command::new(SHMBUS)
        .args(["pub", &bus, "through the mount"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    procs.expect_line(ns, "through the mount");

    // SAFETY: signalling the namespace's pid 1, our grandchild.
    assert_eq!(unsafe { libc::kill(here, libc::SIGKILL) }, 0);
    procs.wait(ns);
    assert_eq!(
        stat_json(&bus)["subscribers"][0]["alive"],
        false,
        "dead, not yet evicted"
    );
    // The next join evicts it.
    let o = Command::new(SHMBUS)
        .args(["pub", &bus, "again"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let st = stat_json(&bus);
    assert_eq!(st["subscribers"], serde_json::json!([]), "{st}");
}
