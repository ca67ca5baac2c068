//! `shmbus demo` as a newcomer runs it, at a small count: both phases (throughput under a flood,
//! latency from a ping-pong) are there, each with the same counts for shmbus and for Unix
//! sockets, the header's counts are the ones published, rates are printed as rates, and the
//! temporary bus goes where `$SHMBUS_DIR` says (issue 12, part 6).

use std::time::Duration;

use assert_cmd::Command;

/// The count after `label` in `text` ("1,100 messages" after "sends " gives 1100).
fn count_after(text: &str, label: &str) -> u64 {
    let at = text
        .find(label)
        .unwrap_or_else(|| panic!("{label:?} not in the output:\n{text}"));
    let digits: String = text[at + label.len()..]
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == ',')
        .filter(char::is_ascii_digit)
        .collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("no count after {label:?} in:\n{text}"))
}

/// The output's lines that start (after indentation) with `prefix`.
fn lines_starting<'a>(out: &'a str, prefix: &str) -> Vec<&'a str> {
    out.lines()
        .filter(|l| l.trim_start().starts_with(prefix))
        .collect()
}

/// The CPUs this process may run on (the demo's processes inherit the mask).
fn allowed_cpus() -> usize {
    // SAFETY: an all-zero cpu_set_t is the empty set; sched_getaffinity fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 is this process; `set` is a writable cpu_set_t of the given size.
    let r = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    assert_eq!(r, 0, "sched_getaffinity");
    // SAFETY: CPU_COUNT reads a valid set.
    unsafe { libc::CPU_COUNT(&set) as usize }
}

#[test]
fn the_demo_shows_both_phases_with_the_same_counts_for_both_transports() {
    let top = tempfile::tempdir().unwrap();
    // Not there yet: the demo creates it, as the library does for named buses.
    let dir = top.path().join("buses");
    let out = Command::cargo_bin("shmbus")
        .unwrap()
        .args(["demo", "--messages", "1000", "--subscribers", "2"])
        .env("SHMBUS_DIR", &dir)
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // Headers are wrapped to the terminal's width: read them as one line.
    let flat = stdout.split_whitespace().collect::<Vec<_>>().join(" ");

    // Where the bus went: $SHMBUS_DIR, emptied afterwards.
    assert!(
        flat.contains(&format!("temporary directory under {}", dir.display())),
        "{stdout}"
    );
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "cleaned up");

    // Phase 1: the header's counts are what each transport published and measured.
    assert!(flat.contains("1. Throughput under a flood"), "{stdout}");
    let sent = count_after(&flat, "1 publisher sends ");
    let warmup = count_after(&flat, "as fast as it can (");
    let measured = count_after(&flat, " to warm up, then ");
    assert_eq!(measured, 1000, "--messages is the measured count");
    assert_eq!(sent, warmup + measured, "{stdout}");
    for transport in ["shmbus: ", "Unix stream sockets: "] {
        let line = lines_starting(&stdout, transport);
        assert_eq!(line.len(), 1, "one summary for {transport}\n{stdout}");
        assert_eq!(count_after(line[0], transport), sent, "{}", line[0]);
        assert_eq!(
            count_after(line[0], " messages published, "),
            measured,
            "{}",
            line[0]
        );
    }
    // Every subscriber of both runs received every message, as a rate per second.
    let subs = lines_starting(&stdout, "subscriber ");
    assert_eq!(subs.len(), 4, "2 subscribers x 2 transports\n{stdout}");
    for s in &subs {
        assert_eq!(count_after(s, "received"), sent, "{s}");
        assert!(s.trim_end().ends_with("msgs/s"), "{s}");
    }
    assert!(flat.contains("× the messages per second of Unix sockets"));
    // 3 processes on this machine's CPUs: the header says whether they fit.
    let cpus = allowed_cpus();
    assert_eq!(
        flat.contains("3 processes on") && flat.contains("outnumber the CPUs"),
        cpus < 3,
        "{stdout}"
    );

    // Phase 2: a ping-pong, the same round trips for both transports, as the header says.
    assert!(
        flat.contains("2. Latency, one message at a time"),
        "{stdout}"
    );
    let phase2 = &flat[flat.find("2. Latency").unwrap()..];
    let rt = count_after(phase2, " to warm up, then ");
    assert!(rt > 0, "{stdout}");
    let rows: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("round trips  p50"))
        .collect();
    assert!(rows.len() >= 2, "{stdout}");
    let shm = rows
        .iter()
        .find(|l| l.trim_start().starts_with("shmbus, reader sleeps"))
        .expect("the shmbus row");
    let unix = rows
        .iter()
        .find(|l| l.trim_start().starts_with("Unix stream sockets"))
        .expect("the socket row");
    for row in [shm, unix] {
        let count: u64 = row
            .split("round trips")
            .next()
            .unwrap()
            .split_whitespace()
            .last()
            .unwrap()
            .replace(',', "")
            .parse()
            .unwrap();
        assert_eq!(count, rt, "{row}");
        for p in ["p50 ", "p99 ", "p99.9 "] {
            assert!(row.contains(p), "{row}");
        }
    }
    // Rates as people read them: never "295,267.1464/s".
    for word in stdout.split_whitespace() {
        if let Some((_, frac)) = word.split_once('.') {
            let digits = frac.chars().take_while(char::is_ascii_digit).count();
            assert!(digits <= 2, "{word:?} in\n{stdout}");
        }
    }
}
