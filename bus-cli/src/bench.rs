//! `bench`: the benchmark suite of bus-bench, from the command line.

use std::process::ExitCode;

use anyhow::{bail, Context};
use bus_bench::{report, transport, Engine, Suite};

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
        suite.sizes = args.sizes.iter().map(|&s| s as usize).collect();
        if let Some(s) = suite.sizes.iter().find(|&&s| s < 16) {
            bail!("--sizes: {s} is too small (messages carry a 16-byte header)");
        }
    }
    if !args.transports.is_empty() {
        suite.transports = args
            .transports
            .iter()
            .map(|n| {
                transport::by_name(n).with_context(|| {
                    let known: Vec<_> = transport::all().iter().map(|t| t.name()).collect();
                    format!("unknown transport {n:?} (known: {})", known.join(", "))
                })
            })
            .collect::<anyhow::Result<_>>()?;
        suite
            .fanout_transports
            .retain(|f| suite.transports.iter().any(|t| t.name() == f.name()));
    }
    if args.no_fanout {
        suite.fanout.clear();
    }
    let exe = std::env::current_exe().context("finding this executable")?;
    let mut engine = Engine::new(exe, run_dir(&args.dir));
    engine.set_pinning(!args.no_pin);
    let results = bus_bench::run_suite(&engine, &suite, &mut |what| {
        eprintln!("shmbus bench: {what}")
    })?;
    std::io::Write::write_all(
        &mut std::io::stdout(),
        report::markdown(&results).as_bytes(),
    )?;
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
    Ok(ExitCode::SUCCESS)
}
