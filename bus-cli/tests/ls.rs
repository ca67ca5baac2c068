//! `shmbus ls` in real processes: valid, corrupt, unreadable and half-dead buses side by side,
//! the aligned table and the `--json` contract (issue 12).

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use bus_core::Bus;
use testkit::{eventually, Procs};

const SHMBUS: &str = env!("CARGO_BIN_EXE_shmbus");

/// `shmbus args` with `$SHMBUS_DIR` = `dir`, no input, bounded by a watchdog.
fn run_in(dir: &Path, args: &[&str], pre: Option<fn() -> std::io::Result<()>>) -> Output {
    let mut c = Command::new(SHMBUS);
    c.args(args)
        .env("SHMBUS_DIR", dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(f) = pre {
        // SAFETY: the hooks used below only call setgid/setuid, async-signal-safe.
        unsafe { c.pre_exec(f) };
    }
    let child = c.spawn().unwrap();
    let pid = child.id() as i32;
    let watchdog = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(60));
        // SAFETY: signalling our own child; harmless if it already exited.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    });
    let out = child.wait_with_output().unwrap();
    drop(watchdog);
    assert_ne!(out.status.signal(), Some(libc::SIGKILL), "{args:?} hung");
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    out
}

fn ok_in(dir: &Path, args: &[&str]) -> String {
    let o = run_in(dir, args, None);
    assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    stdout(&o)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn by_name<'a>(rows: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    rows.iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no row {name}: {rows:?}"))
}

/// The line of the table that starts with `name`.
fn line<'a>(table: &'a str, name: &str) -> &'a str {
    table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no line {name}:\n{table}"))
}

fn subscribers(path: &Path, n: usize) {
    let bus = Bus::open(path).unwrap();
    assert!(
        eventually(Duration::from_secs(30), || bus.stats().subscribers.len()
            >= n),
        "{n} subscriber(s) should join {}",
        path.display()
    );
}

/// Every key of the `--json` contract, present on every line (null where unknown).
const KEYS: [&str; 25] = [
    "name",
    "path",
    "ok",
    "error",
    "error_kind",
    "type",
    "type_codec",
    "type_fingerprint",
    "mode",
    "capacity",
    "max_message",
    "subscribers",
    "producers",
    "dead_subscribers",
    "dead_producers",
    "published_messages",
    "published_bytes",
    "worst_lag_messages",
    "worst_lag_bytes",
    "unblocked",
    "evicted",
    "readers_waiting",
    "producers_waiting",
    "problems",
    "repairs",
];

#[test]
fn valid_corrupt_lagging_and_half_dead_buses_side_by_side() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ok_in(dir, &["create", "calm", "--capacity", "1MiB"]);
    ok_in(dir, &["create", "lagging", "--capacity", "1MiB"]);
    ok_in(
        dir,
        &[
            "create",
            "halfdead",
            "--mode",
            "lossy",
            "--capacity",
            "64KiB",
        ],
    );
    std::fs::write(dir.join("garbage.bus"), vec![0x5a; 8192]).unwrap();
    std::fs::write(dir.join("short.bus"), b"hello").unwrap();
    std::fs::create_dir(dir.join("folder.bus")).unwrap();
    // A FIFO (opening one must not block) and a link planted to a valid bus (not followed).
    let fifo = std::ffi::CString::new(dir.join("pipe.bus").to_str().unwrap()).unwrap();
    // SAFETY: mkfifo reads a valid C string.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    std::os::unix::fs::symlink(dir.join("calm.bus"), dir.join("link.bus")).unwrap();
    // Not a bus name: not listed from the directory.
    std::fs::write(dir.join("notes.txt"), b"x").unwrap();

    let mut procs = Procs::new(Duration::from_secs(60));
    // A live subscriber that stops reading: 10 messages of lag, all the published bytes.
    let mut c = Command::new(SHMBUS);
    c.args(["sub", "lagging", "--timeout", "50s"])
        .env("SHMBUS_DIR", dir);
    let slow = procs.spawn_command("slow sub", c);
    subscribers(&dir.join("lagging.bus"), 1);
    procs.signal(slow, libc::SIGSTOP);
    let ten: Vec<String> = (0..10).map(|i| format!("message {i}")).collect();
    let mut args = vec!["pub", "lagging"];
    args.extend(ten.iter().map(String::as_str));
    ok_in(dir, &args);
    // A subscriber killed outright: its slot stays until a participant evicts it, and `ls`
    // (which only looks) must report it without evicting it.
    let mut c = Command::new(SHMBUS);
    c.args(["sub", "halfdead", "--timeout", "50s"])
        .env("SHMBUS_DIR", dir);
    let doomed = procs.spawn_command("doomed sub", c);
    subscribers(&dir.join("halfdead.bus"), 1);
    procs.signal(doomed, libc::SIGKILL);
    let _ = procs.wait(doomed);

    let table = ok_in(dir, &["ls"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("NAME"), "{table}");
    // Sorted by name; notes.txt is not a bus name.
    let names: Vec<&str> = lines[1..]
        .iter()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(
        names,
        ["calm", "folder", "garbage", "halfdead", "lagging", "link", "pipe", "short"]
    );
    // Aligned: every row's STATUS starts where the header's does.
    let status_at = lines[0].find("STATUS").unwrap();
    for l in &lines[1..] {
        assert!(
            l.len() > status_at
                && l.as_bytes()[status_at - 1] == b' '
                && l.as_bytes()[status_at] != b' ',
            "misaligned:\n{table}"
        );
    }
    assert!(line(&table, "calm").ends_with("ok"), "{table}");
    assert!(
        line(&table, "garbage").contains("ERROR: not a bus file (magic"),
        "{table}"
    );
    assert!(
        line(&table, "short").contains("smaller than a bus header"),
        "{table}"
    );
    assert!(line(&table, "folder").contains("is a directory"), "{table}");
    assert!(
        line(&table, "halfdead").contains("1 dead subscriber slot not evicted"),
        "{table}"
    );
    let lag_line = line(&table, "lagging");
    let cols: Vec<&str> = lag_line.split_whitespace().collect();
    // NAME MODE CAPACITY(2 words) TYPE SUBS PRODS PUBLISHED LAG-MSGS LAG-BYTES(2 words) STATUS
    assert_eq!(cols[1], "reliable", "{table}");
    assert_eq!(cols[4], "-", "type column: {table}");
    assert_eq!(
        (cols[5], cols[6], cols[7], cols[8]),
        ("1", "0", "10", "10"),
        "{table}"
    );

    // The same through --json.
    let rows = json_lines(&ok_in(dir, &["ls", "--json"]));
    assert_eq!(rows.len(), 8);
    for r in &rows {
        let obj = r.as_object().unwrap();
        for k in KEYS {
            assert!(obj.contains_key(k), "{k} missing from {r}");
        }
        assert_eq!(obj.len(), KEYS.len(), "unexpected keys in {r}");
        assert!(r["type"].is_null());
    }
    let calm = by_name(&rows, "calm");
    assert_eq!(calm["ok"], true);
    assert_eq!(calm["mode"], "reliable");
    assert_eq!(calm["capacity"], 1 << 20);
    assert_eq!(calm["subscribers"], 0);
    assert_eq!(calm["published_messages"], 0);
    assert!(calm["error"].is_null());
    assert_eq!(calm["path"], dir.join("calm.bus").display().to_string());

    let lag = by_name(&rows, "lagging");
    assert_eq!(lag["ok"], true, "lag alone is not wrong: {lag}");
    assert_eq!(lag["subscribers"], 1);
    assert_eq!(lag["published_messages"], 10);
    assert_eq!(lag["worst_lag_messages"], 10);
    assert!(lag["worst_lag_bytes"].as_u64().unwrap() >= 10 * 16);
    assert_eq!(lag["worst_lag_bytes"], lag["published_bytes"]);

    let dead = by_name(&rows, "halfdead");
    assert_eq!(dead["ok"], false);
    assert_eq!(dead["mode"], "lossy");
    assert_eq!(dead["subscribers"], 0);
    assert_eq!(dead["dead_subscribers"], 1);
    assert_eq!(dead["evicted"], 0, "ls must not evict: {dead}");
    assert_eq!(
        dead["problems"][0], "1 dead subscriber slot not evicted",
        "{dead}"
    );
    // Looking twice changes nothing: the slot is still there.
    let again = json_lines(&ok_in(dir, &["ls", "--json", "halfdead"]));
    assert_eq!(again.len(), 1);
    assert_eq!(again[0]["dead_subscribers"], 1);
    // Once a participant evicts it, the problem is gone and the repair is remembered.
    assert_eq!(
        Bus::open(dir.join("halfdead.bus"))
            .unwrap()
            .evict_dead()
            .unwrap(),
        1
    );
    let after = json_lines(&ok_in(dir, &["ls", "--json", "halfdead"]));
    assert_eq!(after[0]["ok"], true);
    assert_eq!(after[0]["evicted"], 1);
    assert_eq!(after[0]["repairs"][0], "1 slot evicted");
    assert!(line(&ok_in(dir, &["ls", "halfdead"]), "halfdead")
        .ends_with("ok (earlier: 1 slot evicted)"));

    for (name, kind) in [
        ("garbage", "not_a_bus"),
        ("short", "not_a_bus"),
        ("folder", "not_a_regular_file"),
        ("pipe", "not_a_regular_file"),
        ("link", "symbolic_link"),
    ] {
        let r = by_name(&rows, name);
        assert_eq!(r["ok"], false, "{r}");
        assert_eq!(r["error_kind"], kind, "{r}");
        assert!(r["error"].as_str().unwrap().len() > 5, "{r}");
        assert!(r["mode"].is_null() && r["capacity"].is_null(), "{r}");
    }
    procs.signal(slow, libc::SIGCONT);
}

#[test]
fn a_file_that_cannot_be_read_is_a_row_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::set_permissions(dir, PermissionsExt::from_mode(0o755)).unwrap();
    ok_in(dir, &["create", "shared", "--capacity", "64KiB"]);
    ok_in(dir, &["create", "secret", "--capacity", "64KiB"]);
    std::fs::set_permissions(dir.join("shared.bus"), PermissionsExt::from_mode(0o666)).unwrap();
    // SAFETY: getuid has no preconditions.
    let root = unsafe { libc::getuid() } == 0;
    let o = if root {
        // Root ignores file modes: look as nobody, for whom the 0600 file is closed and the
        // 0666 one (owned by root) is open.
        fn nobody() -> std::io::Result<()> {
            // SAFETY: setgid/setuid between fork and exec are async-signal-safe.
            if unsafe { libc::setgid(65534) } != 0 || unsafe { libc::setuid(65534) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        }
        run_in(dir, &["ls", "--json"], Some(nobody))
    } else {
        std::fs::set_permissions(dir.join("secret.bus"), PermissionsExt::from_mode(0o000)).unwrap();
        run_in(dir, &["ls", "--json"], None)
    };
    assert!(o.status.success(), "{}", stderr(&o));
    let rows = json_lines(&stdout(&o));
    assert_eq!(rows.len(), 2);
    let secret = by_name(&rows, "secret");
    assert_eq!(secret["error_kind"], "permission_denied", "{secret}");
    assert!(
        secret["error"]
            .as_str()
            .unwrap()
            .contains("permission denied"),
        "{secret}"
    );
    let shared = by_name(&rows, "shared");
    assert_eq!(shared["ok"], true, "{shared}");
    assert_eq!(shared["capacity"], 65536);
}

#[test]
fn arguments_missing_buses_and_empty_directories() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // $SHMBUS_DIR not created yet: nothing to list, not an error.
    let unborn = dir.join("unborn");
    let o = run_in(&unborn, &["ls"], None);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "");
    assert!(stderr(&o).contains("no buses in"), "{}", stderr(&o));
    let o = run_in(&unborn, &["ls", "--json"], None);
    assert!(o.status.success());
    assert_eq!(stdout(&o), "");

    // A directory argument, a bus by name, a bus by path, and one that does not exist: the
    // listing goes on, the missing one is a row, and the exit status says something was.
    let other = dir.join("other");
    std::fs::create_dir(&other).unwrap();
    ok_in(dir, &["create", "named", "--capacity", "64KiB"]);
    ok_in(
        dir,
        &[
            "create",
            other.join("x.bus").to_str().unwrap(),
            "--capacity",
            "64KiB",
        ],
    );
    let by_path = other.join("x.bus").display().to_string();
    let o = run_in(
        dir,
        &[
            "ls",
            "--json",
            other.to_str().unwrap(),
            "named",
            &by_path,
            "missing",
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let rows = json_lines(&stdout(&o));
    let names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["x", "named", by_path.as_str(), "missing"]);
    assert_eq!(by_name(&rows, "named")["ok"], true);
    assert_eq!(by_name(&rows, &by_path)["ok"], true);
    assert_eq!(by_name(&rows, "missing")["error_kind"], "not_found");
    assert_eq!(
        by_name(&rows, "missing")["path"],
        dir.join("missing.bus").display().to_string()
    );
}

#[test]
fn typed_buses_show_their_type_in_ls_and_stat() {
    let dir = tempfile::tempdir().unwrap();
    let opts = bus_core::BusOptions::new().capacity(1 << 16);
    let typed = Bus::create(dir.path().join("ticks.bus"), &opts).unwrap();
    Bus::create(dir.path().join("raw.bus"), &opts).unwrap();
    let _publ = bus_core::TypedPublisher::<(String, f64)>::new(typed.publisher().unwrap()).unwrap();
    let rows = json_lines(&ok_in(dir.path(), &["ls", "--json"]));
    let t = by_name(&rows, "ticks");
    assert_eq!(t["type"], "(alloc::string::String, f64)");
    assert_eq!(t["type_codec"], "postcard");
    assert_eq!(t["type_fingerprint"].as_str().unwrap().len(), 16);
    assert!(by_name(&rows, "raw")["type"].is_null());
    let table = ok_in(dir.path(), &["ls"]);
    assert!(
        line(&table, "ticks").contains("(String, f64)/postcard"),
        "{table}"
    );
    let stat = ok_in(dir.path(), &["stat", "ticks"]);
    assert!(
        stat.contains("type       (alloc::string::String, f64) (postcard, schema"),
        "{stat}"
    );
}

/// Review of round 2: a bus whose file name is not UTF-8 was missing from `ls` (and its
/// `--json`), and a name with a newline or an escape sequence went raw to the terminal.
#[test]
fn names_that_are_not_utf8_or_hold_control_characters_are_listed_escaped() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    ok_in(dir.path(), &["create", "good", "--capacity", "64KiB"]);
    let good = dir.path().join("good.bus");
    let latin1 = dir.path().join(std::ffi::OsStr::from_bytes(b"caf\xe9.bus"));
    let escape = dir.path().join("evil\x1b[2J\nname.bus");
    std::fs::copy(&good, &latin1).unwrap();
    std::fs::copy(&good, &escape).unwrap();
    let table = ok_in(dir.path(), &["ls"]);
    assert!(table.contains("caf\u{fffd}"), "{table}");
    assert!(table.contains("evil\\u{1b}[2J\\nname"), "{table}");
    assert!(
        !table.contains('\x1b'),
        "a raw escape reached the terminal: {table:?}"
    );
    // One row a bus: the header, good, café, evil.
    assert_eq!(table.lines().count(), 4, "{table}");
    let rows = json_lines(&ok_in(dir.path(), &["ls", "--json"]));
    assert_eq!(rows.len(), 3, "{rows:?}");
}
