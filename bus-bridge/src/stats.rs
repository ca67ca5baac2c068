//! Counters of each link, printed every few seconds: text on stderr, or JSON lines on stdout.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde::Serialize;

/// The counters of one `--out` or `--in`. Relaxed atomics: each value is exact, the set is
/// not one snapshot.
#[derive(Debug, Default)]
pub struct LinkStats {
    /// "out BUS -> SUBJECT" or "in SUBJECT -> BUS".
    pub label: String,
    /// "jetstream" or "core".
    pub transport: &'static str,
    /// Messages carried (exports: acknowledged by JetStream or handed to core NATS; imports:
    /// committed to the bus).
    pub forwarded: AtomicU64,
    /// Payload bytes carried.
    pub bytes: AtomicU64,
    /// Exports: publishes waiting for their acknowledgement. Imports: messages held back for
    /// an earlier one of the same origin.
    pub in_flight: AtomicU64,
    /// Messages seen again and not carried twice (JetStream redeliveries, duplicate
    /// acknowledgements).
    pub redelivered: AtomicU64,
    /// Messages lost: a lapped lossy subscriber (exports), gaps in a lossy origin's numbering
    /// (imports), or a reliable bus that overwrote what a stopped bridge had not exported.
    pub dropped: AtomicU64,
    /// Messages not carried because they came from this bus (imports) or were imported into
    /// it by this bridge (exports): what keeps two-way bridging from looping.
    pub looped: AtomicU64,
    /// Publishes sent again after a failure or a timeout.
    pub retries: AtomicU64,
}

impl LinkStats {
    pub fn new(label: String, transport: &'static str) -> LinkStats {
        LinkStats {
            label,
            transport,
            ..LinkStats::default()
        }
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

#[derive(Serialize)]
struct Line<'a> {
    event: &'a str,
    elapsed_s: f64,
    link: &'a str,
    transport: &'a str,
    forwarded: u64,
    rate: f64,
    bytes: u64,
    in_flight: u64,
    redelivered: u64,
    dropped: u64,
    looped: u64,
    retries: u64,
}

/// Prints the links' counters.
pub struct Printer {
    json: bool,
    start: Instant,
    last: Instant,
    last_forwarded: Vec<u64>,
}

impl Printer {
    pub fn new(json: bool, links: usize) -> Printer {
        let now = Instant::now();
        Printer {
            json,
            start: now,
            last: now,
            last_forwarded: vec![0; links],
        }
    }

    /// Prints one line per link; `event` is "stats" or "final".
    pub fn print(&mut self, event: &str, links: &[std::sync::Arc<LinkStats>]) {
        let now = Instant::now();
        let dt = now.duration_since(self.last).as_secs_f64().max(1e-9);
        self.last = now;
        let mut out = String::new();
        for (i, l) in links.iter().enumerate() {
            let forwarded = l.forwarded.load(Ordering::Relaxed);
            let rate = (forwarded - self.last_forwarded[i]) as f64 / dt;
            self.last_forwarded[i] = forwarded;
            let line = Line {
                event,
                elapsed_s: (now.duration_since(self.start).as_secs_f64() * 1000.0).round() / 1000.0,
                link: &l.label,
                transport: l.transport,
                forwarded,
                rate: rate.round(),
                bytes: l.bytes.load(Ordering::Relaxed),
                in_flight: l.in_flight.load(Ordering::Relaxed),
                redelivered: l.redelivered.load(Ordering::Relaxed),
                dropped: l.dropped.load(Ordering::Relaxed),
                looped: l.looped.load(Ordering::Relaxed),
                retries: l.retries.load(Ordering::Relaxed),
            };
            if self.json {
                out.push_str(&serde_json::to_string(&line).unwrap_or_default());
            } else {
                out.push_str(&format!(
                    "shmbus bridge: {}{} ({}): forwarded {} ({:.0}/s), in flight {}, \
                     redelivered {}, dropped {}, looped {}, retries {}",
                    if event == "final" { "final: " } else { "" },
                    line.link,
                    line.transport,
                    line.forwarded,
                    line.rate,
                    line.in_flight,
                    line.redelivered,
                    line.dropped,
                    line.looped,
                    line.retries
                ));
            }
            out.push('\n');
        }
        if self.json {
            let _ = std::io::stdout().write_all(out.as_bytes());
            let _ = std::io::stdout().flush();
        } else {
            let _ = std::io::stderr().write_all(out.as_bytes());
        }
    }
}

/// Prints an event line (`ready`, `warning`): JSON on stdout with `--json`, else text on
/// stderr.
pub fn event(json: bool, event: &str, message: &str) {
    if json {
        let line = serde_json::json!({ "event": event, "message": message });
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    } else {
        let _ = writeln!(std::io::stderr(), "shmbus bridge: {event}: {message}");
    }
}
