//! `demo`: the first thing a newcomer runs. Two phases, each run the same way over shmbus and
//! over Unix stream sockets, with the same counts, so that every number means what its label
//! says:
//!
//! 1. **Throughput under a flood**: one publisher and several subscriber processes (this
//!    binary, re-executed); the publisher sends as fast as it can and every subscriber
//!    receives and checks every message. Rates only: the time a message spends queued under a
//!    flood (more so when the processes outnumber the CPUs and take turns) is queueing, not
//!    the latency of the transport, and showing it as "latency" misled readers.
//! 2. **Latency, one message at a time**: a ping-pong between two processes, so that nothing
//!    queues; round-trip percentiles.
//!
//! The machine's CPU count is printed beside each phase, and when the processes outnumber the
//! CPUs the demo says so.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use bus_bench::{transport, Engine, Latency, Throughput, Transport};
use indicatif::{MultiProgress, ProgressBar, ProgressState, ProgressStyle};

use crate::flags::DemoArgs;

/// 1234567.8 -> "1.23 M", 295267.1 -> "295 k", 950.4 -> "950": a rate as a reader reads it.
fn per_second(v: f64) -> String {
    if !v.is_finite() || v < 0.0 {
        "-".into()
    } else if v >= 1e6 {
        format!("{:.2} M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.0} k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// 412 -> "0.41 µs", 45123 -> "45.1 µs", 1234567 -> "1,235 µs".
fn micros(ns: u64) -> String {
    let us = ns as f64 / 1e3;
    if us < 10.0 {
        format!("{us:.2} µs")
    } else if us < 1000.0 {
        format!("{us:.1} µs")
    } else {
        format!("{} µs", thousands(us.round() as u64))
    }
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

/// The warm-up [`Engine::throughput`] sends before it measures `messages` (it sends a tenth
/// as many, 1 to 100,000). Printed in the header, so that the header and the summaries agree;
/// the summaries print what the run reports, and the demo's test checks that they match.
fn throughput_warmup(messages: u64) -> u64 {
    (messages / 10).clamp(1, 100_000)
}

/// Round trips of phase 2 for a demo of `messages`: a twenty-fifth as many, 1,000 to 20,000
/// (20,000 round trips take about a second over a sleeping reader), so that `--messages`
/// alone sizes the demo and a small run is short in both phases.
fn round_trips(messages: u64) -> u64 {
    (messages / 25).clamp(1_000, 20_000)
}

/// "1 process", "4 processes".
fn processes(n: usize) -> String {
    if n == 1 {
        "1 process".into()
    } else {
        format!("{n} processes")
    }
}

/// One sentence on how `procs` processes share this machine's `cpus` CPUs (`placement`: where
/// they are pinned, if they are).
fn cpu_note(procs: usize, cpus: usize, placement: &str) -> String {
    let on = format!(
        "{} on {cpus} CPU{}{placement}",
        processes(procs),
        if cpus == 1 { "" } else { "s" }
    );
    if procs > cpus {
        format!(
            "{on}: the processes outnumber the CPUs and take turns, so messages wait in a queue while a subscriber is off its CPU."
        )
    } else {
        format!("{on}: each process has a CPU to itself.")
    }
}

/// `text` wrapped at `width` columns: the first line after `first`, the others after `rest`.
fn wrap(text: &str, first: &str, rest: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line = String::new();
    let mut indent = first;
    for word in text.split_whitespace() {
        if !line.is_empty()
            && indent.chars().count() + line.chars().count() + 1 + word.chars().count() > width
        {
            out.push_str(indent);
            out.push_str(&line);
            out.push('\n');
            line.clear();
            indent = rest;
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    out.push_str(indent);
    out.push_str(&line);
    out
}

/// Where the demo puts its temporary directory: `--dir`, else `$SHMBUS_DIR` (where named
/// buses live, created 0700 if missing), else /dev/shm (a tmpfs), else the temp directory.
fn demo_dir(args: &DemoArgs) -> anyhow::Result<std::path::PathBuf> {
    if let Some(d) = &args.dir {
        return Ok(d.clone());
    }
    match std::env::var_os("SHMBUS_DIR").filter(|d| !d.is_empty()) {
        Some(d) => {
            let d = std::path::PathBuf::from(d);
            bus_core::ensure_dir(&d).with_context(|| format!("cannot create {}", d.display()))?;
            Ok(d)
        }
        None => Ok(crate::bench::run_dir(&None)),
    }
}

fn flood_summary(r: &Throughput, label: &str, how: &str) -> std::io::Result<()> {
    outln!(
        "  {label}: {} messages published, {} measured; {how}",
        thousands(r.total),
        thousands(r.messages)
    )?;
    for (i, s) in r.per_receiver.iter().enumerate() {
        outln!(
            "    subscriber {}  received {:>10}  {:>8} msgs/s",
            i + 1,
            thousands(s.delivered),
            per_second(s.msgs_per_s),
        )?;
    }
    outln!(
        "    every message checked in order; {:.2} µs of CPU per message (publisher + one subscriber)",
        r.cpu_s_per_msg * 1e6
    )?;
    Ok(())
}

fn latency_row(label: &str, l: &Latency) -> std::io::Result<()> {
    outln!(
        "  {label:<36} {:>7} round trips  p50 {:>9}  p99 {:>9}  p99.9 {:>9}",
        thousands(l.round_trips),
        micros(l.p50_ns),
        micros(l.p99_ns),
        micros(l.p999_ns),
    )
}

/// A spinner saying what runs, indented like the results.
fn spinner(what: &str) -> ProgressBar {
    let spin = ProgressBar::new_spinner();
    spin.set_style(ProgressStyle::with_template("    {spinner} {msg}").expect("valid template"));
    spin.set_message(format!("{what}..."));
    spin
}

/// Phase 1 for one transport: per-subscriber progress bars for shmbus (the engine reads the
/// bus's slot counters), a spinner for a transport that reports no progress.
fn flood(
    engine: &Engine,
    t: &dyn Transport,
    args: &DemoArgs,
    total: u64,
    what: &str,
) -> anyhow::Result<Throughput> {
    let k = args.subscribers;
    let bars = MultiProgress::new();
    let style =
        ProgressStyle::with_template("    subscriber {prefix} [{bar:40}] {pos:>10}/{len} {rate}/s")
            .expect("valid template")
            .with_key("rate", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = w.write_str(&per_second(s.per_sec()));
            })
            .progress_chars("=> ");
    let subs: Vec<ProgressBar> = if t.is_shmbus() {
        (1..=k)
            .map(|i| {
                let b = bars.add(ProgressBar::new(total));
                b.set_style(style.clone());
                b.set_prefix(i.to_string());
                b
            })
            .collect()
    } else {
        let spin = bars.add(spinner(what));
        spin.enable_steady_tick(Duration::from_millis(100));
        vec![spin]
    };
    let r = engine
        .throughput(t, args.size, args.messages, k, None, &mut |p| {
            if let Some(d) = &p.delivered {
                for (bar, n) in subs.iter().zip(d) {
                    bar.set_position((*n).min(total));
                }
            }
        })
        .with_context(|| format!("{what}: the flood"));
    for b in &subs {
        b.finish_and_clear();
    }
    drop(bars);
    r
}

fn latency(
    engine: &Engine,
    t: &dyn Transport,
    size: usize,
    round_trips: u64,
    warmup: u64,
    what: &str,
) -> anyhow::Result<Latency> {
    let spin = spinner(what);
    spin.enable_steady_tick(Duration::from_millis(100));
    let r = engine
        .latency(t, size, round_trips, warmup)
        .with_context(|| format!("{what}: the ping-pong"));
    spin.finish_and_clear();
    r
}

pub fn run(args: &DemoArgs) -> anyhow::Result<ExitCode> {
    const WIDTH: usize = 96;
    let size = args.size;
    let k = args.subscribers;
    let dir = demo_dir(args)?;
    let engine = crate::bench::engine(&Some(dir.clone()), true)?;
    let cpus = bus_bench::child::allowed_cpus();
    let warmup = throughput_warmup(args.messages);
    let total = args.messages + warmup;
    let rt = round_trips(args.messages);
    let rt_warmup = (rt / 10).max(1);
    let list = |c: &[usize]| {
        c.iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    // Where the engine pins its processes: the sending side on the first CPU, the others on
    // the rest in turn.
    let (flood_cpus, pair_cpus) = if engine.pinned() {
        let rest = &cpus[1..];
        let s = if rest.len() == 1 { "" } else { "s" };
        (
            format!(
                " (the publisher on CPU {}, the subscribers on CPU{s} {})",
                cpus[0],
                list(rest)
            ),
            format!(" (CPUs {} and {})", cpus[0], cpus[1]),
        )
    } else {
        (String::new(), String::new())
    };

    outln!(
        "{}",
        wrap(
            &format!(
                "shmbus demo: {size}-byte messages between processes of this machine, over a bus in a temporary directory under {} and, for comparison, over Unix stream sockets, with the same counts for both.",
                dir.display()
            ),
            "",
            "",
            WIDTH
        )
    )?;

    // Phase 1.
    outln!(
        "\n{}\n{}",
        wrap(
            &format!(
                "1. Throughput under a flood: 1 publisher sends {} messages as fast as it can ({} to warm up, then {} measured) to {k} subscriber{}, each of which receives and checks every one.",
                thousands(total),
                thousands(warmup),
                thousands(args.messages),
                if k == 1 { "" } else { "s" },
            ),
            "",
            "   ",
            WIDTH
        ),
        wrap(&cpu_note(1 + k as usize, cpus.len(), &flood_cpus), "   ", "   ", WIDTH)
    )?;
    let shm = flood(&engine, &transport::Shmbus::BLOCK, args, total, "shmbus")?;
    flood_summary(&shm, "shmbus", "subscribers sleep on a futex when idle")?;
    let unix = flood(
        &engine,
        &transport::Stream::UNIX,
        args,
        total,
        "Unix stream sockets",
    )?;
    flood_summary(
        &unix,
        "Unix stream sockets",
        "one write per subscriber's socket",
    )?;
    outln!(
        "  shmbus delivered {:.1}× the messages per second of Unix sockets, each subscriber receiving every one.\n  (How long messages wait in a queue under a flood measures the queue, not the transport.)",
        shm.msgs_per_s / unix.msgs_per_s
    )?;

    // Phase 2.
    outln!(
        "\n{}\n{}",
        wrap(
            &format!(
                "2. Latency, one message at a time: a ping-pong between 2 processes, {} round trips per transport ({} to warm up, then {} measured); a round trip is two one-way trips.",
                thousands(rt + rt_warmup),
                thousands(rt_warmup),
                thousands(rt),
            ),
            "",
            "   ",
            WIDTH
        ),
        wrap(&cpu_note(2, cpus.len(), &pair_cpus), "   ", "   ", WIDTH)
    )?;
    let block = latency(
        &engine,
        &transport::Shmbus::BLOCK,
        size,
        rt,
        rt_warmup,
        "shmbus",
    )?;
    latency_row("shmbus, reader sleeps on a futex", &block)?;
    let sock = latency(
        &engine,
        &transport::Stream::UNIX,
        size,
        rt,
        rt_warmup,
        "Unix stream sockets",
    )?;
    latency_row("Unix stream sockets, reader in read", &sock)?;
    if cpus.len() >= 2 {
        let spin = latency(
            &engine,
            &transport::Shmbus::SPIN,
            size,
            rt,
            rt_warmup,
            "shmbus, busy-polling",
        )?;
        latency_row("shmbus, reader busy-polls", &spin)?;
        outln!(
            "{}",
            wrap(
                &format!(
                    "A sleeping reader's round trip is mostly the kernel waking it (shmbus's p50 is {:.2}× the sockets'); a reader that busy-polls pays for its speed with a CPU of its own.",
                    block.p50_ns as f64 / sock.p50_ns.max(1) as f64
                ),
                "  ",
                "  ",
                WIDTH
            )
        )?;
    } else {
        outln!(
            "  (No busy-polling run: on 1 CPU a spinning reader would only keep its peer off the CPU.)"
        )?;
    }
    outln!("\nNext: `shmbus bench --quick` compares pipes, sockets and TCP; `shmbus --help` for the commands.")?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_times_read_as_people_read_them() {
        assert_eq!(per_second(295_267.146_4), "295 k");
        assert_eq!(per_second(2_345_678.0), "2.35 M");
        assert_eq!(per_second(950.4), "950");
        assert_eq!(per_second(f64::NAN), "-");
        assert_eq!(micros(412), "0.41 µs");
        assert_eq!(micros(45_123), "45.1 µs");
        assert_eq!(micros(1_234_567), "1,235 µs");
        assert_eq!(thousands(2_100_000), "2,100,000");
        assert_eq!(thousands(999), "999");
    }

    #[test]
    fn the_cpu_note_says_when_processes_outnumber_cpus() {
        assert!(cpu_note(4, 2, "").contains("outnumber"));
        assert!(cpu_note(2, 2, " (CPUs 0 and 1)").starts_with("2 processes on 2 CPUs (CPUs 0"));
        assert!(cpu_note(2, 2, "").contains("a CPU to itself"));
        assert!(cpu_note(1, 1, "").starts_with("1 process on 1 CPU:"));
    }

    #[test]
    fn wrap_keeps_words_whole_and_indents() {
        assert_eq!(
            wrap("aaa bbb ccc ddd", "  ", "  ", 9),
            "  aaa bbb\n  ccc ddd"
        );
        assert_eq!(wrap("aaa bbb ccc", "", "   ", 8), "aaa bbb\n   ccc");
        assert_eq!(wrap("", "  ", "  ", 9), "  ");
    }
}
