//! `ls`: every bus of a directory (or the paths given) in one table, or one JSON object a
//! bus. A file that is not a valid bus, or that cannot be opened, is a row with the reason,
//! never a failure of the whole listing.
//!
//! Everything shown comes from [`Bus::stats`], which reads the slots without joining, locking
//! or evicting: a slot's `alive` is a query of its liveness lock (`F_OFD_GETLK`), so `ls`
//! can report dead slots that no participant has evicted yet without evicting them itself.

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use bus_core::{Bus, BusStats, OpenError, OpenErrorKind, OpenOptions};
use serde::Serialize;

use crate::flags::LsArgs;
use crate::inspect::bytes;

/// One file that `ls` or `top` looks at: a name to show and the path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Candidate {
    /// The bus name for a `NAME.bus` file found in a directory; the path as given otherwise.
    pub name: String,
    pub path: PathBuf,
}

/// The `*.bus` files of `dir` (the suffix that bare bus names resolve to), sorted by name.
/// Anything with that suffix is a candidate, a directory or a socket included: it is then
/// listed with the reason it is not a bus.
///
/// # Errors
///
/// The directory cannot be read.
pub fn scan_dir(dir: &Path) -> std::io::Result<Vec<Candidate>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let file_name = entry.file_name();
        // By bytes: a name that is not UTF-8 is still a bus to list (it was skipped, though
        // `ls` promises a row for every file, even one it cannot open).
        let Some(stem) = file_name
            .as_bytes()
            .strip_suffix(b".bus")
            .filter(|s| !s.is_empty())
        else {
            continue;
        };
        found.push(Candidate {
            name: printable(&String::from_utf8_lossy(stem)),
            path: entry.path(),
        });
    }
    found.sort();
    Ok(found)
}

/// A file name as a table cell: control characters (a newline, an escape sequence a hostile
/// name could carry to the terminal) written as escapes; bytes that are not UTF-8 already
/// replaced.
fn printable(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Opens a bus only to look at it. Files of other users are allowed (an observer such as
/// root or an operator looks at every team's buses; opening joins nothing), symbolic links
/// are not followed (a planted link could point anywhere). The open is read-only (`O_RDONLY`,
/// a `PROT_READ` mapping): read permission on the file is enough, and nothing is written.
///
/// # Errors
///
/// The [`OpenError`] of the file.
pub fn open_observer(path: &Path) -> Result<Bus, OpenError> {
    Bus::open_with(
        path,
        &OpenOptions::new().allow_other_owner(true).read_only(true),
    )
}

/// What `ls` and `top` say about one bus's state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub live_subscribers: usize,
    pub dead_subscribers: usize,
    pub live_producers: usize,
    pub dead_producers: usize,
    /// The largest lag among live subscribers, in messages and in bytes (each its own
    /// maximum; usually the same subscriber).
    pub worst_lag_messages: u64,
    pub worst_lag_bytes: u64,
    /// Messages ever published (the tail's sequence).
    pub published_messages: u64,
    /// Record bytes ever claimed in the ring (payloads, 16-byte headers, padding).
    pub published_bytes: u64,
}

impl Summary {
    pub fn of(st: &BusStats) -> Summary {
        let live_subs = st.subscribers.iter().filter(|s| s.alive);
        Summary {
            live_subscribers: st.subscribers.iter().filter(|s| s.alive).count(),
            dead_subscribers: st.subscribers.iter().filter(|s| !s.alive).count(),
            live_producers: st.producers.iter().filter(|p| p.alive).count(),
            dead_producers: st.producers.iter().filter(|p| !p.alive).count(),
            worst_lag_messages: live_subs.clone().map(|s| s.lag_messages).max().unwrap_or(0),
            worst_lag_bytes: live_subs.map(|s| s.lag_bytes).max().unwrap_or(0),
            published_messages: st.tail_seq,
            published_bytes: st.tail_position.saturating_sub(st.config.initial_position),
        }
    }

    /// What is wrong now, worst first; empty when nothing is.
    pub fn problems(&self, st: &BusStats) -> Vec<String> {
        let mut p = Vec::new();
        if self.dead_subscribers > 0 {
            p.push(format!(
                "{} dead subscriber slot{} not evicted",
                self.dead_subscribers,
                plural(self.dead_subscribers as u64)
            ));
        }
        if self.dead_producers > 0 {
            p.push(format!(
                "{} dead producer slot{} not evicted",
                self.dead_producers,
                plural(self.dead_producers as u64)
            ));
        }
        if let Err(e) = &st.message_type {
            p.push(e.to_string());
        }
        // Live waiters only: the header's count keeps one that died asleep until a sweep.
        let waiting = crate::inspect::live_waiting(st).1;
        if st.config.mode == bus_core::Mode::Reliable
            && waiting > 0
            && self.worst_lag_bytes + u64::from(st.config.max_message) >= st.config.capacity
        {
            p.push(format!(
                "ring full, {} producer{} waiting",
                waiting,
                plural(waiting)
            ));
        }
        p
    }

    /// Repairs done in the past: not wrong now, but a sign that participants died.
    pub fn repairs(st: &BusStats) -> Vec<String> {
        let mut r = Vec::new();
        if st.unblocked > 0 {
            r.push(format!(
                "{} record{} unblocked",
                st.unblocked,
                plural(st.unblocked)
            ));
        }
        if st.evicted > 0 {
            r.push(format!("{} slot{} evicted", st.evicted, plural(st.evicted)));
        }
        r
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// A short, stable name for an open error's kind (the `error_kind` of `ls --json`).
pub fn error_kind(kind: &OpenErrorKind) -> &'static str {
    match kind {
        OpenErrorKind::NotFound | OpenErrorKind::DirectoryNotFound => "not_found",
        OpenErrorKind::PermissionDenied { .. } => "permission_denied",
        OpenErrorKind::SymbolicLink => "symbolic_link",
        OpenErrorKind::NotARegularFile { .. } => "not_a_regular_file",
        OpenErrorKind::OwnedByOtherUser { .. } => "owned_by_other_user",
        OpenErrorKind::Header(_) => "not_a_bus",
        OpenErrorKind::RingStateCorrupt { .. } => "corrupt",
        OpenErrorKind::Unsupported128BitAtomics => "unsupported_cpu",
        _ => "io",
    }
}

/// `ls --json`: one object a line, every key always present (`null` where unknown: an
/// unreadable file has no mode). `ok` is false when the file is not a usable bus or when
/// `problems` is not empty.
#[derive(Serialize)]
struct LsJson {
    name: String,
    path: String,
    ok: bool,
    /// Why the file could not be examined, when it could not.
    error: Option<String>,
    error_kind: Option<&'static str>,
    /// The message type recorded in the header of a typed bus: its Rust name, codec and
    /// schema fingerprint (null: untyped, or not a bus).
    #[serde(rename = "type")]
    type_name: Option<String>,
    type_codec: Option<String>,
    type_fingerprint: Option<String>,
    mode: Option<String>,
    capacity: Option<u64>,
    max_message: Option<u32>,
    subscribers: Option<usize>,
    producers: Option<usize>,
    dead_subscribers: Option<usize>,
    dead_producers: Option<usize>,
    published_messages: Option<u64>,
    published_bytes: Option<u64>,
    worst_lag_messages: Option<u64>,
    worst_lag_bytes: Option<u64>,
    unblocked: Option<u64>,
    evicted: Option<u64>,
    readers_waiting: Option<u32>,
    producers_waiting: Option<u32>,
    problems: Vec<String>,
    repairs: Vec<String>,
}

/// One row, examined.
struct Row {
    cand: Candidate,
    state: Result<(BusStats, Summary), OpenError>,
}

impl Row {
    fn examine(cand: Candidate) -> Row {
        let state = open_observer(&cand.path).map(|bus| {
            let st = bus.stats();
            let sum = Summary::of(&st);
            (st, sum)
        });
        Row { cand, state }
    }

    fn ok(&self) -> bool {
        match &self.state {
            Ok((st, sum)) => sum.problems(st).is_empty(),
            Err(_) => false,
        }
    }

    fn json(&self) -> LsJson {
        let mut j = LsJson {
            name: self.cand.name.clone(),
            path: self.cand.path.display().to_string(),
            ok: self.ok(),
            error: None,
            error_kind: None,
            type_name: None,
            type_codec: None,
            type_fingerprint: None,
            mode: None,
            capacity: None,
            max_message: None,
            subscribers: None,
            producers: None,
            dead_subscribers: None,
            dead_producers: None,
            published_messages: None,
            published_bytes: None,
            worst_lag_messages: None,
            worst_lag_bytes: None,
            unblocked: None,
            evicted: None,
            readers_waiting: None,
            producers_waiting: None,
            problems: Vec::new(),
            repairs: Vec::new(),
        };
        match &self.state {
            Err(e) => {
                j.error = Some(e.kind.to_string());
                j.error_kind = Some(error_kind(&e.kind));
            }
            Ok((st, sum)) => {
                if let Ok(Some(t)) = &st.message_type {
                    j.type_name = Some(t.name.clone());
                    j.type_codec = Some(t.codec.clone());
                    j.type_fingerprint = Some(format!("{:016x}", t.fingerprint));
                }
                j.mode = Some(st.config.mode.to_string());
                j.capacity = Some(st.config.capacity);
                j.max_message = Some(st.config.max_message);
                j.subscribers = Some(sum.live_subscribers);
                j.producers = Some(sum.live_producers);
                j.dead_subscribers = Some(sum.dead_subscribers);
                j.dead_producers = Some(sum.dead_producers);
                j.published_messages = Some(sum.published_messages);
                j.published_bytes = Some(sum.published_bytes);
                j.worst_lag_messages = Some(sum.worst_lag_messages);
                j.worst_lag_bytes = Some(sum.worst_lag_bytes);
                j.unblocked = Some(st.unblocked);
                j.evicted = Some(st.evicted);
                let (readers, producers) = crate::inspect::live_waiting(st);
                j.readers_waiting = Some(readers as u32);
                j.producers_waiting = Some(producers as u32);
                j.problems = sum.problems(st);
                j.repairs = Summary::repairs(st);
            }
        }
        j
    }

    /// The cells of the human table, in [`HEADER`] order.
    fn cells(&self) -> Vec<String> {
        let dash = || "-".to_string();
        match &self.state {
            Err(e) => {
                let mut c = vec![self.cand.name.clone()];
                c.extend(std::iter::repeat_with(dash).take(HEADER.len() - 2));
                c.push(format!("ERROR: {}", e.kind));
                c
            }
            Ok((st, sum)) => {
                let mut status = sum.problems(st);
                if status.is_empty() {
                    status.push("ok".into());
                }
                let mut status = status.join(", ");
                let repairs = Summary::repairs(st);
                if !repairs.is_empty() {
                    status = format!("{status} (earlier: {})", repairs.join(", "));
                }
                vec![
                    self.cand.name.clone(),
                    st.config.mode.to_string(),
                    bytes(st.config.capacity),
                    match &st.message_type {
                        Ok(Some(t)) => t.short(),
                        Ok(None) => dash(),
                        Err(_) => "corrupt".into(),
                    },
                    sum.live_subscribers.to_string(),
                    sum.live_producers.to_string(),
                    sum.published_messages.to_string(),
                    sum.worst_lag_messages.to_string(),
                    bytes(sum.worst_lag_bytes),
                    status,
                ]
            }
        }
    }
}

/// The human table's columns; the last (free text) is not padded.
const HEADER: [&str; 10] = [
    "NAME",
    "MODE",
    "CAPACITY",
    "TYPE",
    "SUBS",
    "PRODS",
    "PUBLISHED",
    "LAG MSGS",
    "LAG BYTES",
    "STATUS",
];

/// Columns aligned to the right (numbers).
const RIGHT: [bool; 10] = [
    false, false, true, false, true, true, true, true, true, false,
];

fn print_table(out: &mut impl Write, rows: &[Vec<String>]) -> std::io::Result<()> {
    let mut widths: Vec<usize> = HEADER.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let header: Vec<String> = HEADER.iter().map(|s| s.to_string()).collect();
    for r in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(c);
                break;
            }
            let pad = widths[i] - c.chars().count();
            if RIGHT[i] {
                line.push_str(&" ".repeat(pad));
                line.push_str(c);
            } else {
                line.push_str(c);
                line.push_str(&" ".repeat(pad));
            }
            line.push_str("  ");
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

/// The candidates that the arguments name. An argument that is a directory contributes its
/// `*.bus` files; any other argument is a BUS as elsewhere (a bare name in `$SHMBUS_DIR`, or
/// a path) and is examined whatever its name. Without arguments: `$SHMBUS_DIR`.
///
/// Returns the candidates and the directories that could not be read.
fn candidates(args: &LsArgs) -> (Vec<Candidate>, Vec<String>) {
    let mut found = Vec::new();
    let mut failed = Vec::new();
    if args.paths.is_empty() {
        let dir = bus_core::default_dir();
        match scan_dir(&dir) {
            Ok(c) => found.extend(c),
            // The default directory appears with the first bus: its absence is no error.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => failed.push(format!("cannot read {}: {e}", dir.display())),
        }
        return (found, failed);
    }
    for arg in &args.paths {
        let as_path = Path::new(arg);
        if as_path.is_dir() {
            match scan_dir(as_path) {
                Ok(c) => found.extend(c),
                Err(e) => failed.push(format!("cannot read {arg}: {e}")),
            }
        } else {
            found.push(Candidate {
                name: arg.clone(),
                path: crate::bus_path(arg),
            });
        }
    }
    (found, failed)
}

/// Exit status: 0 when every argument could be looked at (whatever the buses' state); 1 when
/// a directory could not be read or a named bus does not exist (the rest is still listed).
pub fn run(args: &LsArgs) -> anyhow::Result<ExitCode> {
    let (cands, failed) = candidates(args);
    let rows: Vec<Row> = cands.into_iter().map(Row::examine).collect();
    let missing = rows.iter().any(|r| {
        r.state
            .as_ref()
            .is_err_and(|e| e.kind == OpenErrorKind::NotFound)
    });
    let mut out = std::io::stdout().lock();
    if args.json {
        for r in &rows {
            // In memory first, then an io::Error-returning write: a closed pipe is recognised.
            let mut line = serde_json::to_vec(&r.json())?;
            line.push(b'\n');
            out.write_all(&line)?;
        }
    } else if !rows.is_empty() {
        let cells: Vec<Vec<String>> = rows.iter().map(Row::cells).collect();
        print_table(&mut out, &cells)?;
    }
    out.flush()?;
    for f in &failed {
        errln!("shmbus: error: {f}");
    }
    if rows.is_empty() && failed.is_empty() && !args.json {
        let dirs = if args.paths.is_empty() {
            bus_core::default_dir().display().to_string()
        } else {
            args.paths.join(", ")
        };
        errln!("shmbus: no buses in {dirs}");
    }
    Ok(if failed.is_empty() && !missing {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_aligned_and_the_status_is_free_text() {
        let rows = vec![
            vec![
                "a".into(),
                "reliable".into(),
                "64 MiB".into(),
                "-".into(),
                "1".into(),
                "0".into(),
                "12345".into(),
                "3".into(),
                "48 B".into(),
                "ok".into(),
            ],
            vec![
                "long-name".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "ERROR: not a bus".into(),
            ],
        ];
        let mut out = Vec::new();
        print_table(&mut out, &rows).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        // Every column starts at the same offset on every line.
        let status = lines[0].find("STATUS").unwrap();
        assert_eq!(lines[1].find("ok"), Some(status));
        assert_eq!(lines[2].find("ERROR"), Some(status));
        let published_end = lines[0].find("PUBLISHED").unwrap() + "PUBLISHED".len();
        assert_eq!(lines[1].find("12345").unwrap() + 5, published_end);
    }
}
