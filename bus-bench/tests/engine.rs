//! The engine end to end: every transport in real processes, verification that catches an
//! injected drop or reorder, fan-out, limits, and every report format.

use bus_bench::{report, transport, Engine, Inject, Suite};

fn engine(dir: &tempfile::TempDir) -> Engine {
    let mut e = Engine::new(env!("CARGO_BIN_EXE_bus-bench-child"), dir.path());
    e.run_timeout = std::time::Duration::from_secs(60);
    e
}

#[test]
fn every_transport_moves_and_verifies_messages() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(&dir);
    for t in transport::all() {
        for size in [64, 4096] {
            let r = e
                .throughput(t, size, 500, 1, None, &mut |_| {})
                .unwrap_or_else(|err| panic!("{}: {err}", t.name()));
            assert_eq!(r.messages, 500);
            assert!(r.msgs_per_s > 0.0 && r.secs > 0.0, "{r:?}");
            assert!(r.cpu_send_s_per_msg >= 0.0);
        }
        if !t.is_reference() {
            let l = e
                .latency(t, 64, 200, 20)
                .unwrap_or_else(|err| panic!("{}: {err}", t.name()));
            assert!(
                l.p50_ns > 0 && l.p50_ns <= l.p99_ns && l.p99_ns <= l.max_ns,
                "{l:?}"
            );
        }
    }
    // Nothing is left behind in the run directory.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn verification_catches_a_dropped_and_a_reordered_message() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(&dir);
    for t in transport::all() {
        for inject in [Inject::Drop(250), Inject::Swap(250)] {
            let err = e
                .throughput(t, 64, 500, 1, Some(inject), &mut |_| {})
                .expect_err(&format!("{} with {inject:?} must fail", t.name()));
            assert!(
                err.to_string().contains("sequence check failed"),
                "{} {inject:?}: {err}",
                t.name()
            );
        }
    }
}

#[test]
fn fan_out_reaches_every_receiver() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(&dir);
    for t in [
        &transport::Shmbus::BLOCK as &dyn bus_bench::Transport,
        &transport::Stream::UNIX,
    ] {
        let mut seen = false;
        let r = e
            .throughput(t, 64, 2000, 3, None, &mut |p| seen |= p.delivered.is_some())
            .unwrap();
        assert_eq!(r.receivers, 3);
        assert_eq!(seen, t.is_shmbus(), "progress shows shmbus deliveries");
    }
}

#[test]
fn a_tiny_suite_renders_every_report() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(&dir);
    let suite = Suite {
        sizes: vec![64, 256 << 10],
        transports: vec![
            &transport::Shmbus::SPIN,
            &transport::Stream::PIPE,
            &transport::Seqpacket,
        ],
        bytes_per_run: 1 << 20,
        max_messages: 2000,
        round_trips: 200,
        fanout: vec![1, 2],
        fanout_transports: vec![&transport::Shmbus::BLOCK],
    };
    let mut log = Vec::new();
    let r = bus_bench::run_suite(&e, &suite, &mut |l| log.push(l.to_string())).unwrap();
    assert!(r.limits.memcpy_gb_per_s > 0.0 && r.limits.cache_line_rtt_ns > 0.0);
    assert!(
        r.skipped
            .iter()
            .any(|s| s.contains("unix-seqpacket 256 KiB")),
        "{:?}",
        r.skipped
    );
    let md = report::markdown(&r);
    for needle in [
        "shmbus-spin",
        "pipe",
        "64 B",
        "256 KiB",
        "Fan-out",
        "cache-line round trip",
        "×",
    ] {
        assert!(md.contains(needle), "markdown lacks {needle:?}:\n{md}");
    }
    // Every run carries the placement probe taken just before it.
    for t in r.throughput.iter().chain(&r.fanout) {
        assert!(t.line_rtt_ns.is_some_and(|v| v > 0.0), "{t:?}");
    }
    for l in &r.latency {
        assert!(l.line_rtt_ns.is_some_and(|v| v > 0.0), "{l:?}");
    }
    assert!(md.contains("probed again before every run"), "{md}");
    let csv = report::csv(&r);
    assert!(csv.starts_with("kind,transport,size"));
    assert!(csv.lines().count() > 6);
    let columns = csv.lines().next().unwrap().split(',').count();
    for line in csv.lines() {
        assert_eq!(line.split(',').count(), columns, "ragged CSV row {line:?}");
    }
    for line in report::json_lines(&r).lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(v["kind"].is_string());
    }
    let svg = dir.path().join("chart.svg");
    report::svg(&r, &svg).unwrap();
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.contains("<svg") && text.contains("shmbus-spin"));
    assert!(!log.is_empty());
}

#[test]
fn an_interrupted_run_stops_kills_its_processes_and_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = engine(&dir);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    e.set_interrupt(stop.clone());
    let flag = stop.clone();
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        flag.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let started = std::time::Instant::now();
    // Far more than 300 ms of work.
    let err = e
        .throughput(
            &transport::Stream::TCP,
            64,
            100_000_000,
            1,
            None,
            &mut |_| {},
        )
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::Interrupted);
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "run directory removed"
    );
}

#[test]
fn the_allowed_cpus_are_the_affinity_mask() {
    let cpus = bus_bench::child::allowed_cpus();
    assert!(!cpus.is_empty());
    assert!(cpus.windows(2).all(|w| w[0] < w[1]));
    let e = Engine::new("/bin/true", "/tmp");
    assert_eq!(e.pinned(), cpus.len() >= 2);
}
