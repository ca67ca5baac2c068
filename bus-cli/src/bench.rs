//! `bench`: the benchmark suite of bus-bench, from the command line.

use std::process::ExitCode;

use anyhow::Context;
use bus_bench::{report, Engine, Suite};

use crate::flags::BenchArgs;

/// Where benchmark runs put their buses, FIFOs and sockets.
pub fn run_dir(dir: &Option<std::path::PathBuf>) -> std::path::PathBuf {
    dir.clone().unwrap_or_else(|| {
        let shm = std::path::Path::new("/dev/shm");
        if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        }
    })
}

pub fn run(args: &BenchArgs) -> anyhow::Result<ExitCode> {
    let mut suite = if args.quick {
        Suite::quick()
    } else {
        Suite::full()
    };
    if !args.sizes.is_empty() {
        suite.sizes = args.sizes.clone();
    }
    if !args.transports.is_empty() {
        suite.transports = args.transports.clone();
        suite
            .fanout_transports
            .retain(|f| suite.transports.iter().any(|t| t.name() == f.name()));
    }
    if args.no_fanout {
        suite.fanout.clear();
    }
    let engine = engine(&args.dir, !args.no_pin)?;
    let results =
        bus_bench::run_suite(&engine, &suite, &mut |what| errln!("shmbus bench: {what}"))?;
    // The files first: a closed stdout must not lose the results of a long run.
    if let Some(p) = &args.json {
        std::fs::write(p, report::json_lines(&results))
            .with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(p) = &args.csv {
        std::fs::write(p, report::csv(&results))
            .with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(p) = &args.svg {
        report::svg(&results, p).with_context(|| format!("writing {}", p.display()))?;
    }
    std::io::Write::write_all(
        &mut std::io::stdout(),
        report::markdown(&results).as_bytes(),
    )?;
    Ok(ExitCode::SUCCESS)
}

/// An engine that re-executes this binary, stops (and cleans up) on SIGINT/SIGTERM, and
/// exits at once on a second one.
pub fn engine(dir: &Option<std::path::PathBuf>, pin: bool) -> anyhow::Result<Engine> {
    let exe = std::env::current_exe().context("finding this executable")?;
    let mut engine = Engine::new(exe, run_dir(dir));
    engine.set_pinning(pin);
    let stop = crate::signals::install()?;
    engine.set_interrupt(stop);
    Ok(engine)
}
