//! Bad arguments, an unreachable server, a missing bus, conflicting stream settings: a clear
//! error naming what is wrong, and exit 1 (issue 11).

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use testkit::Procs;

/// Runs the bridge (bounded by `timeout`); returns its exit code and stderr.
fn run(args: &[String]) -> (i32, String) {
    let out = Command::new("timeout")
        .arg("30")
        .arg(BRIDGE)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn strings(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

#[test]
fn bad_arguments() {
    let cases: &[(&[&str], &str)] = &[
        (&["--out", "a=b"], "--nats URL is required"),
        (&["--nats", "nats://127.0.0.1:1"], "nothing to bridge"),
        (
            &["--nats", "nats://127.0.0.1:1", "--out", "justabus"],
            "expected BUS=SUBJECT",
        ),
        (
            &["--nats", "nats://127.0.0.1:1", "--in", "=bus"],
            "expected SUBJECT=BUS",
        ),
        (
            &["--nats", "nats://127.0.0.1:1", "--out", "bus=a.*"],
            "cannot hold wildcards",
        ),
        (
            &["--nats", "nats://127.0.0.1:1", "--out", "bus=a..b"],
            "not a NATS subject",
        ),
        (
            &[
                "--nats",
                "nats://127.0.0.1:1",
                "--out",
                "bus=a",
                "--window",
                "0",
            ],
            "--window 0",
        ),
        (
            &[
                "--nats",
                "nats://127.0.0.1:1",
                "--out",
                "bus=a",
                "--stream",
                "a.b",
            ],
            "--stream",
        ),
    ];
    // Names and subjects too long for the server's control line, or with bytes a header
    // cannot carry.
    let long_subject = format!("bus={}", vec!["x"; 600].join("."));
    let long_in = format!("{}=bus", vec!["x"; 600].join("."));
    let long_name = "n".repeat(129);
    let long_stream = "S".repeat(129);
    let more: &[(&[&str], &str)] = &[
        (
            &["--nats", "nats://127.0.0.1:1", "--out", &long_subject],
            "a subject of 1199 bytes: at most 1024",
        ),
        (
            &["--nats", "nats://127.0.0.1:1", "--in", &long_in],
            "a subject of 1199 bytes: at most 1024",
        ),
        (
            &[
                "--nats",
                "nats://127.0.0.1:1",
                "--out",
                "bus=a",
                "--name",
                &long_name,
            ],
            "--name",
        ),
        (
            &[
                "--nats",
                "nats://127.0.0.1:1",
                "--out",
                "bus=a",
                "--name",
                "a\x7fb",
            ],
            "control characters",
        ),
        (
            &[
                "--nats",
                "nats://127.0.0.1:1",
                "--out",
                "bus=a",
                "--stream",
                &long_stream,
            ],
            "1 to 128 letters",
        ),
        (
            &[
                "--nats",
                "nats://127.0.0.1:1",
                "--out",
                "bus=a",
                "--stats-interval",
                "500000000000y",
            ],
            "from 100ms to 1 day",
        ),
        (
            &[
                "--nats",
                "nats://127.0.0.1:1",
                "--out",
                "bus=a",
                "--connect-timeout",
                "500000000000y",
            ],
            "at most 1 day",
        ),
    ];
    for (args, want) in cases.iter().chain(more) {
        let (code, err) = run(&strings(args));
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err:?} should say {want:?}");
    }
}

#[test]
fn missing_bus_and_unreachable_server() {
    let tmp = tempdir();
    let missing = tmp.path().join("missing.bus");
    let (code, err) = run(&strings(&[
        "--nats",
        "nats://127.0.0.1:1",
        "--out",
        &format!("{}=x", missing.display()),
    ]));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("cannot open bus") && err.contains("missing.bus"),
        "{err}"
    );

    let bus = tmp.path().join("a.bus");
    create_bus(&bus, 1 << 20, "reliable");
    // Two reliable imports whose subjects differ only where the bridge's names have '_'
    // would share a journal and a consumer (each would get part of the other's messages):
    // refused before anything reaches the network. On a lossy bus (no state, no consumer)
    // they are fine, and the run goes on to the unreachable server.
    let shared = |bus: &std::path::Path| {
        run(&strings(&[
            "--nats",
            "nats://127.0.0.1:1",
            "--in",
            &format!("app.events={}", bus.display()),
            "--in",
            &format!("app_events={}", bus.display()),
            "--connect-timeout",
            "1s",
        ]))
    };
    let (code, err) = shared(&bus);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("--in app.events=") && err.contains("would share the state file"),
        "{err}"
    );
    let lossy = tmp.path().join("l.bus");
    create_bus(&lossy, 1 << 20, "lossy");
    let (code, err) = shared(&lossy);
    assert_eq!(code, 1, "{err}");
    assert!(!err.contains("would share"), "{err}");
    let port = free_port();
    let (code, err) = run(&strings(&[
        "--nats",
        &format!("nats://127.0.0.1:{port}"),
        "--out",
        &format!("{}=x", bus.display()),
        "--connect-timeout",
        "2s",
    ]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(
        err.contains("cannot connect") || err.contains("cannot reach"),
        "{err}"
    );
}

#[test]
fn conflicting_stream_settings() {
    let mut procs = Procs::new(Duration::from_secs(60));
    let tmp = tempdir();
    let server = start_server(
        &mut procs,
        &tmp.path().join("nats"),
        "nats",
        free_port(),
        &[],
    );
    let bus = tmp.path().join("a.bus");
    create_bus(&bus, 1 << 20, "reliable");
    let base = |subject: &str| -> Vec<String> {
        strings(&[
            "--nats",
            &server.url(),
            "--stream",
            "S1",
            "--out",
            &format!("{}={subject}", bus.display()),
        ])
    };
    // The first bridge creates stream S1 for subject one.
    let b = bridge(&mut procs, "bridge", &base("one"), true);
    procs.signal(b, libc::SIGTERM);
    procs.success(b);
    // A subject the stream does not capture.
    let (code, err) = run(&base("two"));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("conflicting stream settings") && err.contains("\"two\""),
        "{err}"
    );
    // Another replica count.
    let mut args = base("one");
    args.extend(strings(&["--replicas", "3"]));
    let (code, err) = run(&args);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("conflicting stream settings") && err.contains("replicas"),
        "{err}"
    );
    // Another stream already captures the subject.
    let mut args = base("one");
    args[3] = "S2".into();
    let (code, err) = run(&args);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("another stream already captures"), "{err}");
}
