//! Reports of a suite run: a Markdown table for the terminal and the README, CSV, JSON lines
//! and an SVG chart.

use std::fmt::Write as _;
use std::io;
use std::path::Path;

use plotters::prelude::*;

use crate::{transport, Latency, Results, Throughput};

/// 1024 -> "1 KiB"
pub fn size_label(size: usize) -> String {
    match size {
        s if s >= 1 << 20 && s % (1 << 20) == 0 => format!("{} MiB", s >> 20),
        s if s >= 1 << 10 && s % (1 << 10) == 0 => format!("{} KiB", s >> 10),
        s => format!("{s} B"),
    }
}

fn rate(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2} M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1} k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

fn micros(ns: u64) -> String {
    let us = ns as f64 / 1e3;
    if us >= 100.0 {
        format!("{us:.0}")
    } else if us >= 10.0 {
        format!("{us:.1}")
    } else {
        format!("{us:.2}")
    }
}

/// The best per-message kernel transport's value at `size` (higher is better).
fn best_kernel(rows: &[Throughput], size: usize) -> Option<&Throughput> {
    rows.iter()
        .filter(|r| r.size == size && is_kernel(&r.transport))
        .max_by(|a, b| a.msgs_per_s.total_cmp(&b.msgs_per_s))
}

fn is_kernel(name: &str) -> bool {
    transport::by_name(name)
        .is_some_and(|t| !t.is_shmbus() && !t.is_reference() && !t.is_calibration() && !t.is_peer())
}

/// The throughput run of `transport` at `size`, if there is one.
fn run_of<'a>(r: &'a Results, transport: &str, size: usize) -> Option<&'a Throughput> {
    r.throughput
        .iter()
        .find(|t| t.transport == transport && t.size == size)
}

/// One line of the targets table: a measured value against its baseline of the same run.
struct Target {
    what: String,
    measured: String,
    baseline: String,
    ratio: f64,
    /// The ratio to reach, if this line is a target (else it is shown for calibration).
    goal: Option<f64>,
}

/// The performance targets (issue 13) that this run's measurements speak to: each a ratio
/// of two results of the same run.
fn targets(r: &Results) -> Vec<Target> {
    let mut out = Vec::new();
    let mut pair = |what: String, a: &str, b: &str, size: usize, goal: Option<f64>| {
        if let (Some(x), Some(y)) = (run_of(r, a, size), run_of(r, b, size)) {
            out.push(Target {
                what,
                measured: format!("`{a}` {}", rate(x.msgs_per_s)),
                baseline: format!("`{b}` {}", rate(y.msgs_per_s)),
                ratio: x.msgs_per_s / y.msgs_per_s,
                goal,
            });
        }
    };
    let b64 = 64;
    pair(
        "64 B: busy-polling bus vs the featureless MPMC ring".into(),
        "shmbus-spin",
        "ring-mpmc",
        b64,
        Some(0.9),
    );
    pair(
        "64 B: busy-polling bus vs the featureless SPSC ring".into(),
        "shmbus-spin",
        "ring-spsc",
        b64,
        None,
    );
    pair(
        "64 B: shared bus (CAS claim) vs the featureless MPMC ring".into(),
        "shmbus-shared",
        "ring-mpmc",
        b64,
        None,
    );
    pair(
        "64 B: busy-polling bus vs a batching pipe".into(),
        "shmbus-spin",
        "pipe-batched",
        b64,
        Some(1.5),
    );
    pair(
        "64 B: loan vs send".into(),
        "shmbus-loan",
        "shmbus-spin",
        b64,
        Some(1.0),
    );
    pair(
        "64 B: SpinThenBlock (default) subscriber vs busy-polling".into(),
        "shmbus-default",
        "shmbus-spin",
        b64,
        Some(0.5),
    );
    for z in sizes(r) {
        pair(
            format!("{}: busy-polling bus vs iceoryx2", size_label(z)),
            "shmbus-spin",
            "iceoryx2",
            z,
            Some(1.0),
        );
    }
    // The sender of `shmbus-spin` generates every message and then `send` copies it in (two
    // passes over the megabyte); `shmbus-ready` sends a ready buffer (one copy, as the memcpy
    // does) and `shmbus-loan` generates in place (one pass).
    let mib = 1 << 20;
    let memcpy = r.limits.memcpy_1mib_gb_per_s * 1e3;
    for (name, what) in [
        ("shmbus-spin", "generating sender, `send`"),
        ("shmbus-ready", "`send` of a ready buffer"),
        ("shmbus-loan", "generating in a loan"),
    ] {
        let Some(x) = run_of(r, name, mib) else {
            continue;
        };
        if memcpy > 0.0 {
            out.push(Target {
                what: format!(
                    "1 MiB: busy-polling bus ({what}) vs one thread's memcpy of 1 MiB buffers"
                ),
                measured: format!("`{name}` {:.0} MB/s", x.mb_per_s),
                baseline: format!("memcpy {memcpy:.0} MB/s"),
                ratio: x.mb_per_s / memcpy,
                goal: Some(0.8),
            });
        }
    }
    out
}

fn is_shmbus(name: &str) -> bool {
    transport::by_name(name).is_some_and(|t| t.is_shmbus())
}

/// The cache-line round trips probed before the runs, sorted.
fn probes(r: &Results) -> Vec<f64> {
    let mut p: Vec<f64> = r
        .throughput
        .iter()
        .chain(&r.fanout)
        .filter_map(|t| t.line_rtt_ns)
        .chain(r.latency.iter().filter_map(|l| l.line_rtt_ns))
        .collect();
    p.sort_by(f64::total_cmp);
    p
}

/// Where the hypervisor had placed the two CPUs for a run, judged by its probe against the
/// run's usual (median) floor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placement {
    Usual,
    /// A floor above twice the usual: CPUs further apart (another die, say).
    Far,
    /// A floor below half the usual: two threads of one core, sharing its caches and its
    /// execution units.
    Siblings,
}

/// The run's usual floor: the median of its probes.
fn median_floor(probes: &[f64]) -> Option<f64> {
    probes.get(probes.len() / 2).copied()
}

fn placement(median: Option<f64>, line_rtt_ns: Option<f64>) -> Placement {
    let (Some(v), Some(median)) = (line_rtt_ns, median) else {
        return Placement::Usual;
    };
    if v > 2.0 * median {
        Placement::Far
    } else if v < median / 2.0 {
        Placement::Siblings
    } else {
        Placement::Usual
    }
}

/// The mark on a cell measured in an unusual placement.
fn mark(median: Option<f64>, line_rtt_ns: Option<f64>) -> &'static str {
    match placement(median, line_rtt_ns) {
        Placement::Usual => "",
        Placement::Far => " †",
        Placement::Siblings => " ‡",
    }
}

fn sizes(r: &Results) -> Vec<usize> {
    let mut s: Vec<usize> = r.throughput.iter().map(|t| t.size).collect();
    s.sort_unstable();
    s.dedup();
    s
}

fn names<'a>(rows: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for n in rows {
        if !out.iter().any(|o| o == n) {
            out.push(n.to_string());
        }
    }
    out
}

/// A table with a row per transport (in order of appearance) and a column per size; `key`
/// says which cell a measurement belongs to, `cell` what it shows.
fn matrix<T>(
    s: &mut String,
    title: &str,
    sizes: &[usize],
    rows: &[T],
    key: impl Fn(&T) -> (&str, usize),
    cell: impl Fn(&T) -> String,
) {
    let _ = write!(s, "{title}\n\n| transport |");
    for &z in sizes {
        let _ = write!(s, " {} |", size_label(z));
    }
    let _ = write!(s, "\n|---|");
    for _ in sizes {
        s.push_str("---:|");
    }
    s.push('\n');
    for t in names(rows.iter().map(|x| key(x).0)) {
        let _ = write!(s, "| {t} |");
        for &z in sizes {
            match rows.iter().find(|x| key(x) == (t.as_str(), z)) {
                Some(x) => {
                    let _ = write!(s, " {} |", cell(x));
                }
                None => s.push_str(" n/a |"),
            }
        }
        s.push('\n');
    }
    s.push('\n');
}

/// The Markdown report.
pub fn markdown(r: &Results) -> String {
    let mut s = String::new();
    let m = &r.machine;
    let _ = writeln!(
        s,
        "Machine: {}, {} CPUs, {}. {}.",
        m.cpu,
        m.cpus,
        m.kernel,
        if m.pinned {
            "Sender and receiver (ping and pong) pinned to different CPUs"
        } else {
            "Sender and receiver not pinned"
        }
    );
    let _ = writeln!(
        s,
        "Limits measured in this run: single-thread memcpy **{:.1} GB/s** (64 MiB buffers), **{:.1} GB/s** (1 MiB buffers); cache-line round trip between two processes **{:.0} ns** (the floor of any shared-memory round trip).\n",
        r.limits.memcpy_gb_per_s, r.limits.memcpy_1mib_gb_per_s, r.limits.cache_line_rtt_ns
    );
    let probes = probes(r);
    let usual = median_floor(&probes);
    let mark = |line_rtt_ns| mark(usual, line_rtt_ns);
    if let (Some(low), Some(high), Some(median)) = (probes.first(), probes.last(), usual) {
        let _ = write!(
            s,
            "The floor, probed again before every run, was {median:.0} ns (median) and ranged from {low:.0} to {high:.0} ns: it moves when the hypervisor moves the two virtual CPUs closer together or further apart, and every shared-memory result moves with it."
        );
        let seen = |p: Placement| probes.iter().any(|&v| placement(usual, Some(v)) == p);
        if seen(Placement::Far) {
            s.push_str(
                " Runs marked † began with the CPUs far apart (a floor above twice the median): \
                 every cache-line transfer cost more.",
            );
        }
        if seen(Placement::Siblings) {
            s.push_str(
                " Runs marked ‡ began on two threads of one core (a floor below half the \
                 median): transfers are cheap but the two sides share the core.",
            );
        }
        s.push_str(" The placement can change during a run, too.\n\n");
    }
    let sizes = sizes(r);
    matrix(
        &mut s,
        "**One-way throughput**, messages/s (for shmbus: × the best per-message kernel transport of the same size)",
        &sizes,
        &r.throughput,
        |x| (x.transport.as_str(), x.size),
        |x| {
            let ratio = if is_shmbus(&x.transport) {
                best_kernel(&r.throughput, x.size)
                    .map(|b| format!(" ({:.1}×)", x.msgs_per_s / b.msgs_per_s))
                    .unwrap_or_default()
            } else {
                String::new()
            };
            format!("{}{ratio}{}", rate(x.msgs_per_s), mark(x.line_rtt_ns))
        },
    );
    if r.throughput.iter().any(|x| x.transport == "pipe-batched") {
        s.push_str("(`pipe-batched` is a reference, not per-message: its ends batch messages in 64 KiB buffers.)\n\n");
    }
    if r.throughput
        .iter()
        .any(|x| transport::by_name(&x.transport).is_some_and(|t| t.is_calibration()))
    {
        s.push_str("(`ring-spsc` and `ring-mpmc` are calibration: featureless shared-memory rings with one receiver, no checks and no sleeping, the room shmbus's features may use.)\n\n");
    }
    let goals = targets(r);
    if !goals.is_empty() {
        s.push_str("**Targets**: ratios of two results of this run (a line without a goal is calibration)\n\n| | measured | baseline | ratio | goal | |\n|---|---:|---:|---:|---:|---|\n");
        for t in &goals {
            let (goal, status) = match t.goal {
                Some(g) if t.ratio >= g => (format!("≥ {g:.2}×"), "met".to_string()),
                Some(g) => (
                    format!("≥ {g:.2}×"),
                    format!("missed by {:.0} %", (1.0 - t.ratio / g) * 100.0),
                ),
                None => (String::new(), String::new()),
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {:.2}× | {goal} | {status} |",
                t.what, t.measured, t.baseline, t.ratio
            );
        }
        s.push('\n');
    }
    matrix(
        &mut s,
        "**One-way throughput**, MB/s",
        &sizes,
        &r.throughput,
        |x| (x.transport.as_str(), x.size),
        |x| format!("{:.0}{}", x.mb_per_s, mark(x.line_rtt_ns)),
    );
    matrix(
        &mut s,
        "**CPU per message**, µs (sender + receiver)",
        &sizes,
        &r.throughput,
        |x| (x.transport.as_str(), x.size),
        |x| format!("{:.2}{}", x.cpu_s_per_msg * 1e6, mark(x.line_rtt_ns)),
    );
    matrix(
        &mut s,
        "**Round-trip latency** (ping-pong), µs: p50 / p99 (for shmbus at p50: × the cache-line floor probed before the run)",
        &sizes,
        &r.latency,
        |x| (x.transport.as_str(), x.size),
        |x| {
            let floor = if is_shmbus(&x.transport) && Some(&x.size) == sizes.first() {
                let line = x.line_rtt_ns.unwrap_or(r.limits.cache_line_rtt_ns);
                format!(" ({:.1}×)", x.p50_ns as f64 / line)
            } else {
                String::new()
            };
            format!(
                "{} / {}{floor}{}",
                micros(x.p50_ns),
                micros(x.p99_ns),
                mark(x.line_rtt_ns)
            )
        },
    );
    if let Some(&z) = sizes.first() {
        let _ = writeln!(
            s,
            "**Round-trip latency at {}**, µs\n\n| transport | p50 | p99 | p99.9 | max | CPU µs per round trip |\n|---|---:|---:|---:|---:|---:|",
            size_label(z)
        );
        for x in r.latency.iter().filter(|x| x.size == z) {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {:.2}{} |",
                x.transport,
                micros(x.p50_ns),
                micros(x.p99_ns),
                micros(x.p999_ns),
                micros(x.max_ns),
                x.cpu_s_per_rt * 1e6,
                mark(x.line_rtt_ns)
            );
        }
    }
    if !r.fanout.is_empty() {
        let mut ks: Vec<u32> = r.fanout.iter().map(|f| f.receivers).collect();
        ks.dedup();
        let _ = write!(
            s,
            "\n**Fan-out** ({} messages, receivers block when idle): messages/s the publisher sent / delivered to each subscriber (the slowest)\n\n| transport |",
            size_label(r.fanout[0].size)
        );
        for k in &ks {
            let _ = write!(s, " to {k} |");
        }
        let _ = write!(s, "\n|---|");
        for _ in &ks {
            s.push_str("---:|");
        }
        s.push('\n');
        for t in names(r.fanout.iter().map(|f| f.transport.as_str())) {
            let _ = write!(s, "| {t} |");
            for &k in &ks {
                match r
                    .fanout
                    .iter()
                    .find(|f| f.transport == t && f.receivers == k)
                {
                    Some(f) => {
                        let _ = write!(
                            s,
                            " {} / {}{} |",
                            rate(f.send_msgs_per_s),
                            rate(f.msgs_per_s),
                            mark(f.line_rtt_ns)
                        );
                    }
                    None => s.push_str(" n/a |"),
                }
            }
            s.push('\n');
        }
    }
    for skip in &r.skipped {
        let _ = writeln!(s, "\nnot run: {skip}");
    }
    s
}

/// JSON lines: one object per measurement, with a `kind`.
pub fn json_lines(r: &Results) -> String {
    use serde_json::json;
    let mut out = Vec::new();
    out.push(json!({"kind": "machine", "cpu": r.machine.cpu, "cpus": r.machine.cpus, "kernel": r.machine.kernel, "pinned": r.machine.pinned}));
    out.push(json!({"kind": "limit", "name": "memcpy", "gb_per_s": r.limits.memcpy_gb_per_s}));
    out.push(
        json!({"kind": "limit", "name": "memcpy_1mib", "gb_per_s": r.limits.memcpy_1mib_gb_per_s}),
    );
    out.push(json!({"kind": "limit", "name": "cache_line_rtt", "ns": r.limits.cache_line_rtt_ns}));
    let tput = |kind: &str, t: &Throughput| {
        json!({"kind": kind, "transport": t.transport, "size": t.size, "receivers": t.receivers,
            "messages": t.messages, "msgs_per_s": t.msgs_per_s,
            "send_msgs_per_s": t.send_msgs_per_s, "mb_per_s": t.mb_per_s,
            "cpu_s_per_msg": t.cpu_s_per_msg, "cpu_send_s_per_msg": t.cpu_send_s_per_msg,
            "cpu_recv_s_per_msg": t.cpu_recv_s_per_msg, "load_p50_ns": t.load_p50_ns,
            "load_p99_ns": t.load_p99_ns, "line_rtt_ns": t.line_rtt_ns})
    };
    for t in &r.throughput {
        out.push(tput("throughput", t));
    }
    for l in &r.latency {
        out.push(
            json!({"kind": "latency", "transport": l.transport, "size": l.size,
            "round_trips": l.round_trips, "p50_ns": l.p50_ns, "p99_ns": l.p99_ns,
            "p999_ns": l.p999_ns, "max_ns": l.max_ns, "cpu_s_per_rt": l.cpu_s_per_rt,
            "line_rtt_ns": l.line_rtt_ns}),
        );
    }
    for f in &r.fanout {
        out.push(tput("fanout", f));
    }
    out.iter().map(|v| v.to_string() + "\n").collect()
}

/// A probed floor as a CSV field: empty when not probed.
fn probe(line_rtt_ns: Option<f64>) -> String {
    line_rtt_ns.map(|v| format!("{v:.0}")).unwrap_or_default()
}

/// CSV: one row per measurement; `line_rtt_ns` is the cache-line round trip probed just
/// before the run.
pub fn csv(r: &Results) -> String {
    let mut s = String::from(
        "kind,transport,size,receivers,msgs_per_s,mb_per_s,cpu_s_per_msg,p50_ns,p99_ns,p999_ns,max_ns,line_rtt_ns\n",
    );
    let row = |s: &mut String, kind: &str, t: &Throughput| {
        let _ = writeln!(
            s,
            "{kind},{},{},{},{:.0},{:.1},{:.3e},{},{},,,{}",
            t.transport,
            t.size,
            t.receivers,
            t.msgs_per_s,
            t.mb_per_s,
            t.cpu_s_per_msg,
            t.load_p50_ns,
            t.load_p99_ns,
            probe(t.line_rtt_ns)
        );
    };
    for t in &r.throughput {
        row(&mut s, "throughput", t);
    }
    for f in &r.fanout {
        row(&mut s, "fanout", f);
    }
    for l in &r.latency {
        let _ = writeln!(
            s,
            "latency,{},{},1,,,{:.3e},{},{},{},{},{}",
            l.transport,
            l.size,
            l.cpu_s_per_rt,
            l.p50_ns,
            l.p99_ns,
            l.p999_ns,
            l.max_ns,
            probe(l.line_rtt_ns)
        );
    }
    let _ = writeln!(
        s,
        "limit,memcpy_gb_per_s,,,,{:.2},,,,,,",
        r.limits.memcpy_gb_per_s
    );
    let _ = writeln!(
        s,
        "limit,memcpy_1mib_gb_per_s,,,,{:.2},,,,,,",
        r.limits.memcpy_1mib_gb_per_s
    );
    let _ = writeln!(
        s,
        "limit,cache_line_rtt_ns,,,,,,{:.0},,,,",
        r.limits.cache_line_rtt_ns
    );
    s
}

const COLORS: [RGBColor; 8] = [
    RGBColor(214, 39, 40),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(31, 119, 180),
    RGBColor(127, 127, 127),
    RGBColor(44, 160, 44),
    RGBColor(23, 190, 207),
    RGBColor(140, 86, 75),
];

fn color_of(name: &str) -> RGBColor {
    let i = transport::all()
        .iter()
        .position(|t| t.name() == name)
        .unwrap_or(0);
    COLORS[i % COLORS.len()]
}

/// Two charts in one SVG: throughput (MB/s) against message size, both on log axes, one
/// line per transport; round-trip latency percentiles at the smallest size, as bars.
pub fn svg(r: &Results, path: &Path) -> io::Result<()> {
    draw(r, path).map_err(|e| io::Error::other(e.to_string()))
}

fn draw(r: &Results, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (1400, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(760);
    let sizes = sizes(r);
    let (lo, hi) = (
        *sizes.first().unwrap_or(&64) as f64,
        *sizes.last().unwrap_or(&(1 << 20)) as f64,
    );
    let ymax = r.throughput.iter().map(|t| t.mb_per_s).fold(1.0, f64::max) * 2.0;
    let ymin = r
        .throughput
        .iter()
        .map(|t| t.mb_per_s)
        .fold(ymax, f64::min)
        .max(0.1)
        / 2.0;
    let mut chart = ChartBuilder::on(&left)
        .caption(
            "One-way throughput (MB/s) vs message size",
            ("sans-serif", 22),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d((lo * 0.8..hi * 1.25).log_scale(), (ymin..ymax).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("message size (bytes)")
        .y_desc("MB/s")
        .x_label_formatter(&|v| size_label(*v as usize))
        .draw()?;
    for t in names(r.throughput.iter().map(|t| t.transport.as_str())) {
        let c = color_of(&t);
        let pts: Vec<(f64, f64)> = r
            .throughput
            .iter()
            .filter(|x| x.transport == t)
            .map(|x| (x.size as f64, x.mb_per_s))
            .collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))?
            .label(t.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, c.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;

    let size = sizes.first().copied().unwrap_or(64);
    let lat: Vec<&Latency> = r.latency.iter().filter(|l| l.size == size).collect();
    let lmax = lat.iter().map(|l| l.p999_ns).max().unwrap_or(1000) as f64 / 1e3 * 2.0;
    let lmin = lat.iter().map(|l| l.p50_ns).min().unwrap_or(100) as f64 / 1e3 / 2.0;
    let mut chart = ChartBuilder::on(&right)
        .caption(
            format!(
                "Round-trip latency at {} (µs): p50, p99, p99.9",
                size_label(size)
            ),
            ("sans-serif", 22),
        )
        .margin(15)
        .x_label_area_size(90)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..lat.len() as f64, (lmin.max(0.01)..lmax).log_scale())?;
    let labels: Vec<String> = lat.iter().map(|l| l.transport.clone()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(lat.len().max(1) * 2 + 1)
        .x_label_formatter(&|v| {
            let i = v.floor() as usize;
            if (v - v.floor() - 0.5).abs() < 0.01 {
                labels.get(i).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc("µs (log)")
        .draw()?;
    for (i, l) in lat.iter().enumerate() {
        let c = color_of(&l.transport);
        for (k, (v, shade)) in [(l.p50_ns, 1.0), (l.p99_ns, 0.6), (l.p999_ns, 0.3)]
            .into_iter()
            .enumerate()
        {
            let x0 = i as f64 + 0.1 + k as f64 * 0.27;
            chart.draw_series(std::iter::once(Rectangle::new(
                [(x0, lmin.max(0.01)), (x0 + 0.25, v as f64 / 1e3)],
                c.mix(shade).filled(),
            )))?;
        }
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Limits, Machine};

    fn throughput(transport: &str, size: usize, line_rtt_ns: f64) -> Throughput {
        Throughput {
            transport: transport.into(),
            size,
            receivers: 1,
            messages: 1000,
            total: 1100,
            secs: 0.001,
            msgs_per_s: 1e6,
            send_msgs_per_s: 1e6,
            mb_per_s: size as f64,
            cpu_send_s_per_msg: 1e-7,
            cpu_recv_s_per_msg: 1e-7,
            cpu_s_per_msg: 2e-7,
            load_p50_ns: 100,
            load_p99_ns: 200,
            per_receiver: Vec::new(),
            line_rtt_ns: Some(line_rtt_ns),
        }
    }

    fn latency(transport: &str, size: usize, p50_ns: u64, line_rtt_ns: f64) -> Latency {
        Latency {
            transport: transport.into(),
            size,
            round_trips: 1000,
            p50_ns,
            p99_ns: p50_ns * 2,
            p999_ns: p50_ns * 3,
            max_ns: p50_ns * 4,
            cpu_s_per_rt: 1e-6,
            line_rtt_ns: Some(line_rtt_ns),
        }
    }

    fn results() -> Results {
        Results {
            machine: Machine {
                cpu: "test CPU".into(),
                cpus: 2,
                kernel: "Linux test".into(),
                pinned: true,
            },
            limits: Limits {
                memcpy_gb_per_s: 20.0,
                memcpy_1mib_gb_per_s: 25.0,
                cache_line_rtt_ns: 60.0,
            },
            // The usual placement (60–70 ns), but shmbus-spin 1 KiB and its 64 B round
            // trips began in a far one (300 ns).
            throughput: vec![
                throughput("shmbus-spin", 64, 60.0),
                throughput("pipe", 64, 70.0),
                throughput("shmbus-spin", 1024, 300.0),
                throughput("pipe", 1024, 60.0),
            ],
            latency: vec![
                latency("shmbus-spin", 64, 600, 300.0),
                latency("pipe", 64, 50_000, 60.0),
            ],
            fanout: Vec::new(),
            skipped: Vec::new(),
        }
    }

    #[test]
    fn runs_in_a_far_placement_are_marked_and_near_ones_are_not() {
        let r = results();
        let md = markdown(&r);
        assert!(md.contains("ranged from 60 to 300 ns"), "{md}");
        assert!(md.contains("marked †"), "{md}");
        assert!(!md.contains("marked ‡"), "{md}");
        let row = |name: &str, title: &str| -> String {
            let table = md.split(title).nth(1).unwrap();
            table
                .lines()
                .find(|l| l.starts_with(&format!("| {name} |")))
                .unwrap()
                .to_string()
        };
        let spin = row("shmbus-spin", "messages/s");
        let cells: Vec<&str> = spin.split('|').map(str::trim).collect();
        // | shmbus-spin | 64 B cell | 1 KiB cell |
        assert!(!cells[2].contains('†'), "{spin}");
        assert!(cells[3].ends_with('†'), "{spin}");
        // The round-trip ratio is against the floor probed before that run, not the first.
        let rtt = row("shmbus-spin", "p50 / p99");
        assert!(rtt.contains("(2.0×)") && rtt.contains('†'), "{rtt}");
        let pipe = row("pipe", "p50 / p99");
        assert!(!pipe.contains('†'), "{pipe}");
    }

    #[test]
    fn one_placement_marks_nothing() {
        let mut r = results();
        for t in &mut r.throughput {
            t.line_rtt_ns = Some(65.0);
        }
        for l in &mut r.latency {
            l.line_rtt_ns = Some(65.0);
        }
        let md = markdown(&r);
        assert!(!md.contains('†') && !md.contains('‡'), "{md}");
        assert!(md.contains("ranged from 65 to 65 ns"), "{md}");
    }

    #[test]
    fn siblings_are_marked_apart_from_the_usual_placement() {
        let mut r = results();
        // Usual 60 ns; one run on two threads of one core.
        r.throughput[1].line_rtt_ns = Some(60.0);
        r.throughput[2].line_rtt_ns = Some(25.0);
        r.throughput[3].line_rtt_ns = Some(60.0);
        r.latency[0].line_rtt_ns = Some(60.0);
        let md = markdown(&r);
        assert!(md.contains("marked ‡") && !md.contains("marked †"), "{md}");
        let row = md
            .lines()
            .find(|l| l.starts_with("| shmbus-spin |"))
            .unwrap();
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        assert!(!cells[2].contains('‡') && cells[3].ends_with('‡'), "{row}");
    }

    #[test]
    fn targets_are_ratios_of_the_same_run_with_their_status() {
        let mut r = results();
        let row = |name: &str, size: usize, msgs_per_s: f64| {
            let mut t = throughput(name, size, 60.0);
            t.msgs_per_s = msgs_per_s;
            t.mb_per_s = msgs_per_s * size as f64 / 1e6;
            t
        };
        r.throughput.extend([
            row("ring-mpmc", 64, 40e6),
            row("ring-spsc", 64, 50e6),
            row("pipe-batched", 64, 20e6),
            row("shmbus-spin", 1 << 20, 20_000.0),
            row("shmbus-ready", 1 << 20, 15_000.0),
        ]);
        // shmbus-spin 64 B is 1e6 in `results()`: make it 36 M (0.9× the ring: met).
        r.throughput[0].msgs_per_s = 36e6;
        let md = markdown(&r);
        let line = |what: &str| -> String {
            md.lines()
                .find(|l| l.starts_with(&format!("| {what}")))
                .unwrap_or_else(|| panic!("no {what:?} in\n{md}"))
                .to_string()
        };
        let mpmc = line("64 B: busy-polling bus vs the featureless MPMC ring");
        assert!(mpmc.contains("0.90×") && mpmc.contains("met"), "{mpmc}");
        let pipe = line("64 B: busy-polling bus vs a batching pipe");
        assert!(pipe.contains("1.80×") && pipe.contains("met"), "{pipe}");
        let spsc = line("64 B: busy-polling bus vs the featureless SPSC ring");
        assert!(spsc.contains("0.72×") && !spsc.contains("met"), "{spsc}");
        // 20,000 × 1 MiB = 20,972 MB/s against 25 GB/s: 0.84×.
        let mib =
            line("1 MiB: busy-polling bus (generating sender, `send`) vs one thread's memcpy");
        assert!(mib.contains("0.84×") && mib.contains("met"), "{mib}");
        // 15,000 × 1 MiB = 15,729 MB/s: 0.63×, missed.
        let ready =
            line("1 MiB: busy-polling bus (`send` of a ready buffer) vs one thread's memcpy");
        assert!(
            ready.contains("0.63×") && ready.contains("missed"),
            "{ready}"
        );
        r.throughput[0].msgs_per_s = 18e6;
        let md = markdown(&r);
        assert!(md.contains("| 0.45× | ≥ 0.90× | missed by 50 % |"), "{md}");
        // No iceoryx2 or loan runs: no such lines.
        assert!(
            !md.contains("iceoryx2") && !md.contains("loan vs send"),
            "{md}"
        );
    }

    #[test]
    fn csv_rows_all_have_the_header_s_columns_and_the_probe() {
        let csv = csv(&results());
        let mut lines = csv.lines();
        let header: Vec<&str> = lines.next().unwrap().split(',').collect();
        assert_eq!(header.last(), Some(&"line_rtt_ns"));
        for line in lines {
            let fields: Vec<&str> = line.split(',').collect();
            assert_eq!(fields.len(), header.len(), "{line}");
            if !line.starts_with("limit") {
                assert!(fields.last().unwrap().parse::<f64>().is_ok(), "{line}");
            }
        }
    }
}
