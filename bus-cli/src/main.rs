//! `shmbus`: the bus from a shell.
//!
//! Glue only: `flags` parses, each command module turns its arguments into bus-core calls,
//! and this file prints an error once and picks the exit status.
//!
//! Exit codes: 0 success; 1 runtime error; 2 usage error (clap's, and `top` without a
//! terminal); 124 `sub --timeout` ran out. A closed stdout (`shmbus sub | head`) is success.
//! Every error, usage or runtime, is one message on stderr that begins `shmbus: error: `;
//! warnings and hints begin `shmbus: `.

/// `println!` that returns an error for a closed stdout instead of panicking (`main` turns
/// a broken pipe into a quiet exit 0).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($arg)*)
    }};
}

/// `eprintln!` that ignores a closed stderr instead of panicking.
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod bench;
mod demo;
mod flags;
mod inspect;
mod ls;
mod pids;
mod publish;
mod signals;
mod subscribe;
mod top;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use bus_core::{Bus, BusOptions, Mode, OpenError, OpenErrorKind, OpenOptions};
use clap::{CommandFactory, Parser};

use crate::flags::{Cli, Command, CreateOpts, ModeArg, ShareOpts};

/// Exit status of `sub` when its `--timeout` ran out.
pub const EXIT_TIMEOUT: u8 = 124;

/// The bridge's allocator for the whole tool (`shmbus bridge` is its busiest allocating user;
/// the bus's publish and receive paths allocate nothing, so they do not see it).
#[global_allocator]
static ALLOC: bus_bridge::Allocator = bus_bridge::Allocator;

fn main() -> ExitCode {
    // `bench` and `demo` re-execute this binary for their processes. (args_os: an argument
    // that is not UTF-8 must reach clap, not panic here.)
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == bus_bench::CHILD_ARG)
    {
        let args: Vec<String> = std::env::args_os()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let status = bus_bench::child_main(&args).unwrap_or(2);
        return ExitCode::from(status as u8);
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    if let Command::Create(args) = &cli.command {
        if let Err(why) = args.opts.check() {
            // As clap reports a bad value: `shmbus create`'s usage line and tip follow.
            let kind = clap::error::ErrorKind::ValueValidation;
            let mut cmd = Cli::command();
            // (Built, so that the usage line names `shmbus create`.)
            cmd.build();
            let err = match cmd.find_subcommand_mut("create") {
                Some(create) => create.error(kind, &why),
                None => Cli::command().error(kind, &why),
            };
            return usage_error(&err);
        }
    }
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            errln!("shmbus: error: {err:#}");
            ExitCode::from(1)
        }
    }
}

/// Prints clap's error (or the help it was asked for) and returns its exit status (2 for a
/// usage error). Errors get the same `shmbus: ` prefix as runtime errors.
fn usage_error(e: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
        }
        _ => {
            // Rendered without colours: "error: …", then clap's usage line and tip.
            let text = e.render().to_string();
            use std::io::Write as _;
            let _ = write!(std::io::stderr(), "shmbus: {text}");
        }
    }
    ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2))
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Create(args) => inspect::create(&args),
        Command::Pub(args) => publish::run(&args),
        Command::Sub(args) => subscribe::run(&args),
        Command::Stat(args) => inspect::stat(&args),
        Command::Rm(args) => inspect::rm(&args),
        Command::Ls(args) => ls::run(&args),
        Command::Top(args) => top::run(&args),
        Command::Bridge(args) => bus_bridge::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Demo(args) => demo::run(&args),
        Command::Completions { shell } => {
            // Into memory first: clap_complete panics on a write error.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "shmbus", &mut script);
            std::io::Write::write_all(&mut std::io::stdout(), &script)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The file a BUS argument names (a bare name lives in `$SHMBUS_DIR`). A bare name may
/// carry the `.bus` suffix (`ticks.bus` is `ticks`), unless a file of that exact name exists.
pub fn bus_path(bus: &str) -> PathBuf {
    if !bus.contains('/') {
        if let Some(stem) = bus.strip_suffix(".bus").filter(|s| !s.is_empty()) {
            let exact = bus_core::resolve(bus);
            if std::fs::symlink_metadata(&exact).is_err() {
                return bus_core::resolve(stem);
            }
        }
    }
    bus_core::resolve(bus)
}

/// Opens BUS to join it (`sub`, `pub`), with an error that says what to do.
pub fn open(bus: &str, share: ShareOpts) -> anyhow::Result<Bus> {
    let path = bus_path(bus);
    Bus::open_with(
        &path,
        &OpenOptions::new().allow_other_owner(share.allow_other_owner),
    )
    .map_err(|e| explain(bus, e, true))
}

/// Opens BUS only to look at it (`stat`, `rm`'s check): read-only, files of other users
/// allowed (nothing is joined, nothing written; see `ls::open_observer`).
pub fn open_observer(bus: &str) -> anyhow::Result<Bus> {
    crate::ls::open_observer(&bus_path(bus)).map_err(|e| explain(bus, e, false))
}

/// An open error, with what the user can do about it: a near name for a missing bus, the
/// flag for another user's file, the file's mode for a permission denied, `--sparse` for a
/// ring that does not fit.
pub fn explain(bus: &str, e: OpenError, join: bool) -> anyhow::Error {
    let hint = match e.kind {
        OpenErrorKind::NotFound => did_you_mean(bus, &e.path),
        OpenErrorKind::OwnedByOtherUser { .. } if join => {
            " (to join a bus another user shares, pass --allow-other-owner)".to_string()
        }
        OpenErrorKind::PermissionDenied { .. } => match std::fs::metadata(&e.path) {
            Ok(m) if join => format!(
                " (the file has mode {:04o} and owner uid {}; a subscriber or publisher takes a \
                 slot, so it needs read and write access; `shmbus stat` needs only read access)",
                m.mode() & 0o7777,
                m.uid()
            ),
            Ok(m) => format!(
                " (the file has mode {:04o} and owner uid {})",
                m.mode() & 0o7777,
                m.uid()
            ),
            Err(_) => String::new(),
        },
        OpenErrorKind::NoSpace { needed } => format!(
            " ({}): use a smaller --capacity, or --sparse for a ring larger than memory on a \
             disk file system",
            crate::inspect::bytes(needed)
        ),
        _ => String::new(),
    };
    anyhow::anyhow!("{e}{hint}")
}

/// "; did you mean ticks?" when a bus of a similar name exists beside the missing one.
fn did_you_mean(bus: &str, path: &Path) -> String {
    let (Some(dir), Some(want)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return String::new();
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let want = want.strip_suffix(".bus").unwrap_or(want);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return String::new();
    };
    let mut best: Option<(usize, String)> = None;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".bus")) else {
            continue;
        };
        let d = edit_distance(want, stem);
        let near = d <= (want.chars().count() / 3).max(1);
        if near
            && best
                .as_ref()
                .is_none_or(|(bd, bs)| (d, stem) < (*bd, bs.as_str()))
        {
            best = Some((d, stem.to_string()));
        }
    }
    match best {
        Some((_, stem)) if bus.contains('/') => {
            format!(
                "; did you mean {}?",
                dir.join(format!("{stem}.bus")).display()
            )
        }
        Some((_, stem)) => format!("; did you mean {stem}? (`shmbus ls` lists them)"),
        None => String::new(),
    }
}

/// Edit distance in characters (optimal string alignment: insertions, deletions,
/// substitutions and swaps of two neighbours each cost 1, so `tikcs` is 1 from `ticks`).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

/// Tells the user, once, on stderr, if the bus file at `path` is removed or replaced while
/// this process is attached to it: it then talks to a file nobody new can reach. A thread
/// that looks once a second, so the message path pays nothing.
pub fn watch_bus_file(path: &Path, role: &'static str) {
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    let id = (meta.dev(), meta.ino());
    let path = path.to_path_buf();
    let _ = std::thread::Builder::new()
        .name("watch-bus-file".into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_secs(1));
            let what = match std::fs::metadata(&path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => "was removed",
                Ok(m) if (m.dev(), m.ino()) != id => "was replaced by another file",
                _ => continue,
            };
            errln!(
                "shmbus: warning: bus {} {what}; this {role} is still attached to the old file, \
                 which new {} cannot reach (restart it to use the bus at that path)",
                path.display(),
                if role == "subscriber" {
                    "publishers"
                } else {
                    "subscribers"
                }
            );
            return;
        });
}

/// "1 message", "2 messages".
pub fn plural(n: u64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("{n} {one}")
    } else {
        format!("{n} {many}")
    }
}

/// Creates the default directory (0700) when BUS is a bare name, and refuses one where other
/// users could rename or delete the buses made in it ([`unsafe_dir`]): say, another user
/// made `/dev/shm/shmbus` first, with mode 0777 or 1777.
pub fn ensure_parent(bus: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    if !bus.contains('/') {
        let dir = bus_core::default_dir();
        bus_core::ensure_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let meta =
            std::fs::metadata(&dir).with_context(|| format!("cannot look at {}", dir.display()))?;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        if let Some(why) = unsafe_dir(meta.mode(), meta.uid(), me) {
            anyhow::bail!(
                "the bus directory {} {why}, so others could rename or delete its buses: \
                 set SHMBUS_DIR to a directory of your own (or fix that one: chmod 700)",
                dir.display()
            );
        }
    }
    Ok(())
}

/// Why a directory of `mode`, owned by `owner`, would let users other than `me` rename or
/// delete files in it: writable by everyone without the sticky bit, or by anyone else at all
/// when another user (not root) owns it (the owner of a sticky directory may still remove
/// anything in it). `None` when it is safe.
fn unsafe_dir(mode: u32, owner: u32, me: u32) -> Option<String> {
    let bits = mode & 0o7777;
    if mode & 0o002 != 0 && mode & 0o1000 == 0 {
        return Some(format!(
            "is writable by every user (mode {bits:04o}) without the sticky bit"
        ));
    }
    if owner != me && owner != 0 && mode & 0o022 != 0 {
        return Some(format!(
            "belongs to another user (uid {owner}) and is writable by others (mode {bits:04o})"
        ));
    }
    None
}

/// Bus options from the shared creation flags.
pub fn bus_options(o: &CreateOpts) -> anyhow::Result<BusOptions> {
    let mut opts = BusOptions::new()
        .capacity(o.capacity)
        .mode(match o.mode {
            ModeArg::Reliable => Mode::Reliable,
            ModeArg::Lossy => Mode::Lossy,
        })
        .max_subscribers(o.max_subscribers)
        .max_producers(o.max_producers)
        .file_mode(o.file_mode)
        .sparse(o.sparse)
        .unblock_timeout(o.unblock_timeout);
    if let Some(m) = o.max_message {
        let m = u32::try_from(m).map_err(|_| anyhow::anyhow!("max message {m} is too large"))?;
        opts = opts.max_message(m);
    }
    Ok(opts)
}

#[cfg(test)]
mod tests {
    use super::edit_distance;

    #[test]
    fn a_directory_others_could_rename_our_buses_in_is_refused() {
        use super::unsafe_dir;
        let (me, other, root) = (1000, 1001, 0);
        for (mode, owner, refused) in [
            (0o700, me, false),
            (0o770, me, false),    // our group directory: our choice
            (0o1777, me, false),   // sticky, and we own it
            (0o1777, root, false), // as /tmp
            (0o777, me, true),
            (0o777, root, true),
            (0o1777, other, true), // its owner may remove anything
            (0o775, other, true),
            (0o755, other, false), // we cannot write there either (a plain EACCES)
        ] {
            assert_eq!(
                unsafe_dir(0o040000 | mode, owner, me).is_some(),
                refused,
                "mode {mode:o} owned by {owner}"
            );
        }
    }

    #[test]
    fn edit_distance_counts_a_swap_as_one() {
        assert_eq!(edit_distance("tikcs", "ticks"), 1);
        assert_eq!(edit_distance("tick", "ticks"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("quotes", "ticks"), 5);
    }
}
