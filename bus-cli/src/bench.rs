//! `bench`: the benchmark suite of bus-bench, from the command line.
//!
//! The report is bus-bench's Markdown; on stdout it is printed as aligned plain-text tables
//! unless `--markdown` asks for the Markdown itself (for the README and `.ci/run`'s log).

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
    // `--dir`, else `$SHMBUS_DIR` (where the user keeps buses), else /dev/shm.
    let dir = match &args.dir {
        Some(d) => Some(d.clone()),
        None => std::env::var_os("SHMBUS_DIR")
            .filter(|d| !d.is_empty())
            .map(std::path::PathBuf::from),
    };
    if let Some(d) = &dir {
        bus_core::ensure_dir(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    let engine = engine(&dir, !args.no_pin)?;
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
    let markdown = report::markdown(&results);
    let text = if args.markdown {
        markdown
    } else {
        plain_text(&markdown)
    };
    std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes())?;
    if args.json.is_none() && args.csv.is_none() && args.svg.is_none() {
        errln!(
            "shmbus bench: --markdown prints these tables as Markdown; --json PATH, --csv PATH \
             and --svg PATH write the results and charts to files"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// bus-bench's Markdown report as plain text for a terminal: every table aligned in columns
/// (numbers to the right where the Markdown says so), `**bold**` and `code` marks removed.
pub fn plain_text(markdown: &str) -> String {
    let mut out = String::new();
    let mut table: Vec<&str> = Vec::new();
    for line in markdown.lines() {
        if line.trim_start().starts_with('|') {
            table.push(line);
            continue;
        }
        if !table.is_empty() {
            out.push_str(&render_table(&table));
            table.clear();
        }
        out.push_str(&line.replace("**", "").replace('`', ""));
        out.push('\n');
    }
    if !table.is_empty() {
        out.push_str(&render_table(&table));
    }
    out
}

fn cells(line: &str) -> Vec<String> {
    let t = line.trim();
    let t = t.strip_prefix('|').unwrap_or(t);
    let t = t.strip_suffix('|').unwrap_or(t);
    t.split('|')
        .map(|c| c.trim().replace("**", "").replace('`', ""))
        .collect()
}

fn is_rule(row: &[String]) -> bool {
    !row.is_empty()
        && row
            .iter()
            .all(|c| !c.is_empty() && c.chars().all(|ch| matches!(ch, '-' | ':')))
}

fn render_table(lines: &[&str]) -> String {
    let rows: Vec<Vec<String>> = lines.iter().map(|l| cells(l)).collect();
    let right: Vec<bool> = rows
        .iter()
        .find(|r| is_rule(r))
        .map(|r| r.iter().map(|c| c.ends_with(':')).collect())
        .unwrap_or_default();
    let body: Vec<&Vec<String>> = rows.iter().filter(|r| !is_rule(r)).collect();
    let columns = body.iter().map(|r| r.len()).max().unwrap_or(0);
    let mut width = vec![0; columns];
    for r in &body {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    for (n, r) in body.iter().enumerate() {
        let mut line = String::new();
        for (i, w) in width.iter().enumerate() {
            let c = r.get(i).map_or("", String::as_str);
            let pad = w - c.chars().count();
            if i > 0 {
                line.push_str("  ");
            }
            if right.get(i).copied().unwrap_or(false) {
                line.push_str(&" ".repeat(pad));
                line.push_str(c);
            } else {
                line.push_str(c);
                line.push_str(&" ".repeat(pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
        if n == 0 && rows.iter().any(|r| is_rule(r)) {
            let total = width.iter().sum::<usize>() + 2 * columns.saturating_sub(1);
            out.push_str(&"-".repeat(total));
            out.push('\n');
        }
    }
    out
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

#[cfg(test)]
mod tests {
    use super::plain_text;

    #[test]
    fn markdown_tables_become_aligned_columns() {
        let md = "**Fan-out**, msgs/s\n\n| transport | 1 | 16 |\n|---|---:|---:|\n| `pipe` | 1.2M | 3 |\n| shmbus-block | 10 | 2.25M |\n\nnot run: tcp\n";
        assert_eq!(
            plain_text(md),
            "Fan-out, msgs/s\n\n\
             transport        1     16\n\
             -------------------------\n\
             pipe          1.2M      3\n\
             shmbus-block    10  2.25M\n\
             \nnot run: tcp\n"
        );
    }
}
