//! `demo`: the first thing a newcomer runs. A bus in a temporary directory, one publisher and
//! several subscriber processes (this binary, re-executed), progress while messages flow, and
//! a summary next to the same run over Unix sockets on this machine.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use bus_bench::{transport, Throughput};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::flags::DemoArgs;

fn per_second(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2} M", v / 1e6)
    } else {
        format!("{:.0} k", v / 1e3)
    }
}

fn micros(ns: u64) -> String {
    format!("{:.1} µs", ns as f64 / 1e3)
}

/// 1234567 -> "1,234,567"
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn summary(r: &Throughput, label: &str) -> std::io::Result<()> {
    outln!(
        "{label}: {} messages published (the first {} as warm-up)",
        thousands(r.total),
        thousands(r.total - r.messages)
    )?;
    for (i, s) in r.per_receiver.iter().enumerate() {
        outln!(
            "  subscriber {}  received {:>10}  {:>9} msgs/s   one-way latency p50 {:>9}  p99 {:>9}  p99.9 {:>9}",
            i + 1,
            thousands(s.delivered),
            per_second(s.msgs_per_s),
            micros(s.p50_ns),
            micros(s.p99_ns),
            micros(s.p999_ns),
        )?;
    }
    outln!(
        "  every message checked in order; {:.2} µs of CPU per message (publisher + one subscriber)",
        r.cpu_s_per_msg * 1e6
    )?;
    Ok(())
}

pub fn run(args: &DemoArgs) -> anyhow::Result<ExitCode> {
    let size = args.size;
    let dir = crate::bench::run_dir(&args.dir);
    let engine = crate::bench::engine(&args.dir, true)?;
    let k = args.subscribers;
    outln!(
        "shmbus demo: a bus in a temporary directory under {}, 1 publisher and {k} subscriber processes,\n{} messages of {size} bytes (subscribers sleep on a futex when idle{}).\n",
        dir.display(),
        args.messages,
        if engine.pinned() { "; publisher pinned to CPU 0" } else { "" }
    )?;
    let bars = MultiProgress::new();
    let style =
        ProgressStyle::with_template("  subscriber {prefix} [{bar:40}] {pos:>10}/{len} {per_sec}")
            .expect("valid template")
            .progress_chars("=> ");
    let subs: Vec<ProgressBar> = (1..=k)
        .map(|i| {
            let b = bars.add(ProgressBar::new(args.messages));
            b.set_style(style.clone());
            b.set_prefix(i.to_string());
            b
        })
        .collect();
    let shm = engine
        .throughput(
            &transport::Shmbus::BLOCK,
            size,
            args.messages,
            k,
            None,
            &mut |p| {
                if let Some(d) = &p.delivered {
                    for (bar, n) in subs.iter().zip(d) {
                        bar.set_position((*n).min(args.messages));
                    }
                }
            },
        )
        .context("shmbus run")?;
    for b in &subs {
        b.set_position(args.messages);
        b.finish();
    }
    drop(bars);
    outln!()?;
    summary(&shm, "shmbus")?;

    // The same over Unix stream sockets: the publisher writes each message to every
    // subscriber's socket. Fewer messages, so that the demo stays short.
    let n = (args.messages / 10).max(1000);
    let spin = ProgressBar::new_spinner();
    spin.set_message(format!("the same over Unix sockets ({n} messages)..."));
    spin.enable_steady_tick(Duration::from_millis(100));
    let unix = engine
        .throughput(&transport::Stream::UNIX, size, n, k, None, &mut |_| {})
        .context("Unix socket run")?;
    spin.finish_and_clear();
    outln!()?;
    summary(
        &unix,
        "Unix stream sockets, same machine, same message size",
    )?;
    outln!(
        "\nshmbus delivered {:.0}× the messages per second of Unix sockets, each subscriber receiving every one.",
        shm.msgs_per_s / unix.msgs_per_s
    )?;
    outln!("Next: `shmbus bench --quick` compares pipes, sockets and TCP; `shmbus --help` for the commands.")?;
    Ok(ExitCode::SUCCESS)
}
