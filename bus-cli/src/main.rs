//! `shmbus`: the bus from a shell.
//!
//! Glue only: `flags` parses, each command module turns its arguments into bus-core calls,
//! and this file prints an error once and picks the exit status.
//!
//! Exit codes: 0 success; 1 runtime error (`shmbus: error: …` on stderr); 2 usage error
//! (clap's, and `top` without a terminal); 124 `sub --timeout` ran out. A closed stdout
//! (`shmbus sub | head`) is success.

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
mod publish;
mod signals;
mod subscribe;
mod top;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use bus_core::{Bus, BusOptions, Mode};
use clap::{CommandFactory, Parser};

use crate::flags::{Cli, Command, CreateOpts, ModeArg};

/// Exit status of `sub` when its `--timeout` ran out.
pub const EXIT_TIMEOUT: u8 = 124;

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
    let cli = Cli::parse();
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

/// The file a BUS argument names (a bare name lives in `$SHMBUS_DIR`).
pub fn bus_path(bus: &str) -> PathBuf {
    bus_core::resolve(bus)
}

/// Creates the default directory (0700) when BUS is a bare name.
pub fn ensure_parent(bus: &str) -> anyhow::Result<()> {
    if !bus.contains('/') {
        let dir = bus_core::default_dir();
        bus_core::ensure_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    Ok(())
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

/// Opens BUS, with the error naming the path.
pub fn open(bus: &str) -> anyhow::Result<Bus> {
    Ok(Bus::open(bus_path(bus))?)
}
