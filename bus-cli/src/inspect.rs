//! `create`, `stat` and `rm`: the bus as a file.
//!
//! `stat` and the checks of `rm` and `create --force` open the bus read-only and join
//! nothing ([`crate::open_observer`]): read permission is enough, and nothing is written.
//! `stat`'s byte counts are bytes of the ring's records (payload, 16-byte header and
//! padding), labelled so, in binary units (KiB, MiB/s) throughout.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use anyhow::bail;
use bus_core::{Bus, BusStats, OpenErrorKind};
use serde::Serialize;

use crate::flags::{CreateArgs, RmArgs, StatArgs};
use crate::pids::{Owners, Resolver};
use crate::{bus_options, bus_path, ensure_parent, open_observer, plural};

/// The pids of the live subscribers of the bus at `path`, looked at read-only (empty if it is
/// not a bus that can be opened).
fn live_subscribers(path: &Path) -> Vec<u32> {
    match crate::ls::open_observer(path) {
        Ok(bus) => bus
            .stats()
            .subscribers
            .iter()
            .filter(|s| s.alive)
            .map(|s| s.pid)
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// "2 live subscribers attached (pid 10, 11)".
fn attached(pids: &[u32]) -> String {
    format!(
        "{} attached (pid {})",
        plural(pids.len() as u64, "live subscriber", "live subscribers"),
        pids.iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// What `rm --force` and `create --force` say when they pull the file from under live
/// subscribers.
fn warn_orphaned(path: &Path, what: &str, pids: &[u32]) {
    if !pids.is_empty() {
        errln!(
            "shmbus: warning: {what} {} with {}; they stay attached to the deleted file, \
             receive nothing more, and print a warning",
            path.display(),
            attached(pids)
        );
    }
}

pub fn create(args: &CreateArgs) -> anyhow::Result<ExitCode> {
    ensure_parent(&args.bus)?;
    let path = bus_path(&args.bus);
    let opts = bus_options(&args.opts)?;
    // Before --force replaces anything: invalid options must not cost the old bus.
    opts.check()
        .map_err(|e| anyhow::anyhow!("bus {}: invalid options: {e}", path.display()))?;
    let live = live_subscribers(&path);
    // The mode is applied as given: with the umask cleared for the one call that creates the
    // file, it is born with exactly these bits (no window in which it has others, as a chmod
    // afterwards would leave). Nothing else runs in this process meanwhile.
    // SAFETY: umask only swaps the process's file mode mask; it cannot fail.
    let old_mask = unsafe { libc::umask(0) };
    // --force replaces the old file in one step (a rename over it): the path is never
    // missing, and two at once both succeed (it used to be remove, then create).
    let created = if args.force {
        Bus::create_replacing(&path, &opts)
    } else {
        Bus::create(&path, &opts)
    };
    // SAFETY: as above, restoring the mask.
    unsafe { libc::umask(old_mask) };
    let bus = match created {
        Err(e) if e.kind == OpenErrorKind::AlreadyExists && !live.is_empty() => {
            bail!(
                "{e}, with {}; use --force to replace it anyway",
                attached(&live)
            )
        }
        Err(e) if e.kind == OpenErrorKind::AlreadyExists => {
            bail!("{e} (use --force to replace it)")
        }
        Err(e) => return Err(crate::explain(&args.bus, e, false)),
        Ok(bus) => bus,
    };
    let mode = std::fs::metadata(&path)
        .map(|m| m.mode() & 0o7777)
        .unwrap_or(args.opts.file_mode);
    let c = bus.config();
    outln!(
        "created {}: {} mode, capacity {}, max message {}, file mode {:04o}",
        path.display(),
        c.mode,
        bytes(c.capacity),
        bytes(c.max_message as u64),
        mode
    )?;
    warn_orphaned(&path, "replaced", &live);
    // A file others may open, in a directory they cannot enter, is shared with nobody.
    if mode & 0o066 != 0 {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        if let Ok(m) = std::fs::metadata(dir) {
            let dmode = m.permissions().mode() & 0o777;
            let group_in = dmode & 0o010 != 0;
            let others_in = dmode & 0o001 != 0;
            if (mode & 0o060 != 0 && !group_in) || (mode & 0o006 != 0 && !others_in) {
                errln!(
                    "shmbus: note: the directory {} has mode {dmode:04o}: other users cannot \
                     reach the bus through it (chmod the directory, or create the bus in a \
                     shared one)",
                    dir.display()
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn rm(args: &RmArgs) -> anyhow::Result<ExitCode> {
    let path = bus_path(&args.bus);
    let mut live = Vec::new();
    match open_observer(&args.bus) {
        Ok(bus) => {
            live = bus
                .stats()
                .subscribers
                .iter()
                .filter(|s| s.alive)
                .map(|s| s.pid)
                .collect();
            if !live.is_empty() && !args.force {
                bail!(
                    "bus {}: {}; use --force to remove it anyway",
                    path.display(),
                    attached(&live)
                );
            }
        }
        // Nothing there (the error says so, with a near name if there is one).
        Err(e) if std::fs::symlink_metadata(&path).is_err() => return Err(e),
        Err(e) if !args.force => bail!("{e:#}; not removed (use --force to remove it anyway)"),
        Err(_) => {}
    }
    std::fs::remove_file(&path)
        .map_err(|e| anyhow::anyhow!("bus {}: cannot remove: {e}", path.display()))?;
    warn_orphaned(&path, "removed", &live);
    Ok(ExitCode::SUCCESS)
}

/// `stat --json`: one object per snapshot.
#[derive(Serialize)]
struct StatJson<'a> {
    path: String,
    version: u32,
    /// The recorded message type (`null`: untyped), as "name (codec, schema ...)".
    #[serde(rename = "type")]
    message_type: Option<String>,
    mode: String,
    capacity: u64,
    max_message: u32,
    max_subscribers: u32,
    max_producers: u32,
    sparse: bool,
    created_unix_ns: u64,
    unblock_timeout_ns: u64,
    tail: u64,
    seq: u64,
    head: u64,
    head_seq: u64,
    published_messages: u64,
    published_bytes: u64,
    retained_bytes: u64,
    unblocked: u64,
    evicted: u64,
    readers_waiting: u32,
    producers_waiting: u32,
    /// Whether the bus was opened read-only (always, for `stat`).
    read_only: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    rate: Option<Rate>,
    subscribers: Vec<SubJson>,
    producers: &'a [ProdJson],
}

#[derive(Serialize, Clone, Copy)]
struct Rate {
    msgs_per_s: f64,
    /// Bytes of ring records (payloads, headers, padding) a second, in MiB (2^20 B).
    mib_per_s: f64,
}

#[derive(Serialize)]
struct SubJson {
    slot: u32,
    pid: u32,
    /// The owner's pid in this reader's PID namespace (`null`: foreign, dead or unverified);
    /// `pid` is the one it recorded in its own. See pids.rs.
    pid_here: Option<u32>,
    pid_ns: &'static str,
    alive: bool,
    position: u64,
    seq: u64,
    lag_bytes: u64,
    lag_messages: u64,
    delivered: u64,
    lost: u64,
    unblocked: u64,
    waiting: bool,
    joined_unix_ns: u64,
}

#[derive(Serialize)]
struct ProdJson {
    slot: u32,
    pid: u32,
    pid_here: Option<u32>,
    pid_ns: &'static str,
    alive: bool,
    sent: u64,
    bytes: u64,
    abandoned: u64,
    waiting: bool,
    joined_unix_ns: u64,
}

fn to_json<'a>(
    bus: &Bus,
    st: &BusStats,
    rate: Option<Rate>,
    owners: &Owners,
    producers: &'a [ProdJson],
) -> StatJson<'a> {
    let c = &st.config;
    StatJson {
        path: bus.path().display().to_string(),
        version: bus_core::layout::FORMAT_VERSION,
        message_type: match &st.message_type {
            Ok(t) => t.as_ref().map(|t| t.to_string()),
            Err(e) => Some(e.to_string()),
        },
        mode: c.mode.to_string(),
        capacity: c.capacity,
        max_message: c.max_message,
        max_subscribers: c.max_subscribers,
        max_producers: c.max_producers,
        sparse: c.sparse,
        created_unix_ns: c.created_unix_ns,
        unblock_timeout_ns: c.unblock_timeout_ns,
        tail: st.tail_position,
        seq: st.tail_seq,
        head: st.head_position,
        head_seq: st.head_seq,
        published_messages: st.tail_seq,
        published_bytes: st.tail_position.saturating_sub(c.initial_position),
        retained_bytes: st.tail_position.saturating_sub(st.head_position),
        unblocked: st.unblocked,
        evicted: st.evicted,
        readers_waiting: live_waiting(st).0 as u32,
        producers_waiting: live_waiting(st).1 as u32,
        read_only: bus.is_read_only(),
        rate,
        subscribers: st
            .subscribers
            .iter()
            .enumerate()
            .map(|(i, s)| SubJson {
                slot: s.index,
                pid: s.pid,
                pid_here: owners.subscriber(i, s.pid).here(),
                pid_ns: owners.subscriber(i, s.pid).namespace(),
                alive: s.alive,
                position: s.position,
                seq: s.seq,
                lag_bytes: s.lag_bytes,
                lag_messages: s.lag_messages,
                delivered: s.delivered,
                lost: s.lost,
                unblocked: s.unblocked,
                waiting: s.waiting,
                joined_unix_ns: s.joined_unix_ns,
            })
            .collect(),
        producers,
    }
}

/// (readers, producers) asleep now, counting only live ones: the header's counters keep a
/// participant that died asleep until a join or a full ring sweeps its slot, and `stat`
/// evicts nothing.
pub fn live_waiting(st: &BusStats) -> (u64, u64) {
    (
        st.subscribers.iter().filter(|s| s.waiting).count() as u64,
        st.producers.iter().filter(|p| p.waiting).count() as u64,
    )
}

/// 1536 -> "1.5 KiB"
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else if v.fract() == 0.0 {
        format!("{v:.0} {}", UNITS[u])
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn time(ns: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_nanos(ns)).to_string()
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "DEAD"
    }
}

fn print_human(
    out: &mut impl Write,
    bus: &Bus,
    st: &BusStats,
    rate: Option<Rate>,
    owners: &Owners,
) -> std::io::Result<()> {
    let c = &st.config;
    writeln!(out, "bus        {}", bus.path().display())?;
    writeln!(
        out,
        "format     version {}, {} mode, capacity {}, max message {}{}",
        bus_core::layout::FORMAT_VERSION,
        c.mode,
        bytes(c.capacity),
        bytes(c.max_message as u64),
        if c.sparse { ", sparse" } else { "" }
    )?;
    match &st.message_type {
        Ok(Some(t)) => writeln!(out, "type       {t}")?,
        Ok(None) => writeln!(out, "type       none (no typed handle has joined)")?,
        Err(e) => writeln!(out, "type       {e}")?,
    }
    writeln!(
        out,
        "created    {}, unblock timeout {:?}",
        time(c.created_unix_ns),
        Duration::from_nanos(c.unblock_timeout_ns)
    )?;
    writeln!(
        out,
        "tail       position {}, seq {}   (published {}, {} of ring records)",
        st.tail_position,
        st.tail_seq,
        plural(st.tail_seq, "message", "messages"),
        bytes(st.tail_position.saturating_sub(c.initial_position))
    )?;
    writeln!(
        out,
        "head       position {}, seq {}   (retained {}, {} of ring records)",
        st.head_position,
        st.head_seq,
        plural(
            st.tail_seq.saturating_sub(st.head_seq),
            "message",
            "messages"
        ),
        bytes(st.tail_position.saturating_sub(st.head_position))
    )?;
    writeln!(
        out,
        "           (ring records: payloads plus a 16-byte header each, 16-byte aligned, and padding)"
    )?;
    if let Some(r) = rate {
        writeln!(
            out,
            "rate       {:.0} msgs/s, {:.1} MiB/s of ring records",
            r.msgs_per_s, r.mib_per_s
        )?;
    }
    let waiting_pids = |pids: Vec<String>| {
        if pids.is_empty() {
            String::new()
        } else {
            format!(" (pid {})", pids.join(", "))
        }
    };
    writeln!(
        out,
        "repairs    {} unblocked, {} evicted; {} asleep, {} waiting for space{}",
        plural(st.unblocked, "record", "records"),
        plural(st.evicted, "slot", "slots"),
        plural(live_waiting(st).0, "reader", "readers"),
        plural(live_waiting(st).1, "producer", "producers"),
        waiting_pids(
            st.producers
                .iter()
                .enumerate()
                .filter(|(_, p)| p.waiting)
                .map(|(i, p)| owners.producer(i, p.pid).label())
                .collect()
        )
    )?;
    writeln!(
        out,
        "\nsubscribers {}/{}",
        st.subscribers.len(),
        c.max_subscribers
    )?;
    // Pids as this namespace sees them; "7 (foreign)" widens the column.
    let sub_pids: Vec<String> = (st.subscribers.iter().enumerate())
        .map(|(i, s)| owners.subscriber(i, s.pid).label())
        .collect();
    let prod_pids: Vec<String> = (st.producers.iter().enumerate())
        .map(|(i, p)| owners.producer(i, p.pid).label())
        .collect();
    let w = sub_pids
        .iter()
        .chain(&prod_pids)
        .map(String::len)
        .max()
        .unwrap_or(0)
        .max(8);
    if !st.subscribers.is_empty() {
        writeln!(
            out,
            "  {:>4} {:>w$} {:>5} {:>14} {:>12} {:>10} {:>12} {:>10} {:>9}",
            "slot",
            "pid",
            "alive",
            "position",
            "lag bytes",
            "lag msgs",
            "delivered",
            "lost",
            "unblocked"
        )?;
        for (s, pid) in st.subscribers.iter().zip(&sub_pids) {
            writeln!(
                out,
                "  {:>4} {:>w$} {:>5} {:>14} {:>12} {:>10} {:>12} {:>10} {:>9}",
                s.index,
                pid,
                yes(s.alive),
                s.position,
                s.lag_bytes,
                s.lag_messages,
                s.delivered,
                s.lost,
                s.unblocked
            )?;
        }
    }
    writeln!(
        out,
        "producers   {}/{}",
        st.producers.len(),
        c.max_producers
    )?;
    if !st.producers.is_empty() {
        writeln!(
            out,
            "  {:>4} {:>w$} {:>5} {:>12} {:>14} {:>9}",
            "slot", "pid", "alive", "sent", "bytes", "abandoned"
        )?;
        for (p, pid) in st.producers.iter().zip(&prod_pids) {
            writeln!(
                out,
                "  {:>4} {:>w$} {:>5} {:>12} {:>14} {:>9}",
                p.index,
                pid,
                yes(p.alive),
                p.sent,
                p.bytes,
                p.abandoned
            )?;
        }
    }
    Ok(())
}

pub fn stat(args: &StatArgs) -> anyhow::Result<ExitCode> {
    // Handlers before the bus is opened, so that an interrupt at any point of a watch ends it
    // cleanly; every wait below checks them.
    let stop = match args.watch {
        Some(_) => crate::signals::install()?,
        None => Arc::new(AtomicBool::new(false)),
    };
    let (mut bus, mut id) = open_identified(&args.bus)?;
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut prev: Option<(Instant, u64, u64)> = None;
    let mut pids = Resolver::new(bus.path());
    // Whether the path has been found without a bus (said once until one is back).
    let mut missing = false;
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(ExitCode::SUCCESS);
        }
        if args.watch.is_some() {
            // Follow the path, as `tail -F` does: a bus removed and created again (a
            // service restarting) is watched anew, not the old file forever.
            match file_id(bus.path()) {
                Ok(now) if now == id => {}
                found => match open_identified(&args.bus) {
                    Ok((new, new_id)) => {
                        errln!(
                            "shmbus: bus {} {}; watching the new file",
                            bus.path().display(),
                            if missing {
                                "is back"
                            } else {
                                "was replaced by another file"
                            }
                        );
                        (bus, id, missing, prev) = (new, new_id, false, None);
                        pids = Resolver::new(bus.path());
                    }
                    Err(e) => {
                        if !missing {
                            let what = match found {
                                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                                    "was removed".to_string()
                                }
                                _ => format!("cannot be opened any more ({e:#})"),
                            };
                            errln!(
                                "shmbus: bus {} {what}; waiting for a bus there again",
                                bus.path().display()
                            );
                            missing = true;
                        }
                        if !sleep_unless_stopped(&stop, args.watch.unwrap_or_default()) {
                            return Ok(ExitCode::SUCCESS);
                        }
                        continue;
                    }
                },
            }
        }
        let st = bus.stats();
        let owners = pids.owners(&st);
        let now = Instant::now();
        let rate = prev.map(|(t, seq, pos)| {
            let dt = now.duration_since(t).as_secs_f64().max(1e-9);
            Rate {
                msgs_per_s: st.tail_seq.saturating_sub(seq) as f64 / dt,
                mib_per_s: st.tail_position.saturating_sub(pos) as f64 / dt / (1 << 20) as f64,
            }
        });
        prev = Some((now, st.tail_seq, st.tail_position));
        let mut out = std::io::stdout().lock();
        if args.json {
            let producers: Vec<ProdJson> = st
                .producers
                .iter()
                .enumerate()
                .map(|(i, p)| ProdJson {
                    slot: p.index,
                    pid: p.pid,
                    pid_here: owners.producer(i, p.pid).here(),
                    pid_ns: owners.producer(i, p.pid).namespace(),
                    alive: p.alive,
                    sent: p.sent,
                    bytes: p.bytes,
                    abandoned: p.abandoned,
                    waiting: p.waiting,
                    joined_unix_ns: p.joined_unix_ns,
                })
                .collect();
            // Serialised in memory, written as an io::Error-returning write, so that a closed
            // pipe is recognised (serde_json's error would hide it).
            let mut line = serde_json::to_vec(&to_json(&bus, &st, rate, &owners, &producers))?;
            line.push(b'\n');
            out.write_all(&line)?;
        } else {
            if tty && args.watch.is_some() {
                // Redraw in place.
                write!(out, "\x1b[H\x1b[2J")?;
            }
            print_human(&mut out, &bus, &st, rate, &owners)?;
            if args.watch.is_some() && !tty {
                writeln!(out)?;
            }
        }
        out.flush()?;
        drop(out);
        let Some(every) = args.watch else {
            return Ok(ExitCode::SUCCESS);
        };
        if !sleep_unless_stopped(&stop, every) {
            return Ok(ExitCode::SUCCESS);
        }
    }
}

/// Sleeps for `every` in slices of 50 ms; false if `stop` was raised meanwhile.
fn sleep_unless_stopped(stop: &AtomicBool, every: Duration) -> bool {
    // (`every` is at most a century: `flags::MAX_DURATION`.)
    let until = Instant::now() + every;
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}

/// Device and inode of the file at `path`.
fn file_id(path: &Path) -> std::io::Result<(u64, u64)> {
    std::fs::metadata(path).map(|m| (m.dev(), m.ino()))
}

/// Opens BUS for watching, with the identity of the file opened: the same before and after
/// the open, so that a file replaced meanwhile is not taken for the one mapped. A path
/// replaced again and again (a crash loop re-creating it) is tried for about a second.
fn open_identified(bus: &str) -> anyhow::Result<(Bus, (u64, u64))> {
    let path = bus_path(bus);
    for _ in 0..100 {
        let before = file_id(&path);
        let opened = open_observer(bus)?;
        match (before, file_id(&path)) {
            (Ok(a), Ok(b)) if a == b => return Ok((opened, a)),
            // Replaced (or removed) while we opened it: look again.
            _ => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    bail!(
        "bus {}: the file keeps being replaced while it is opened",
        path.display()
    )
}
