//! The C API from C and C++: the two examples, every error path (tests/c/errors.c), the
//! C++ wrapper's conventions (tests/c/wrapper.cpp), and a publisher and subscribers in
//! separate processes (tests/c/peer.c). Every program runs under a watchdog (testkit) in a
//! temporary directory of its own.

mod common;

use std::path::Path;
use std::time::Duration;

use bus_core::{Bus, BusOptions, Start};

use common::{compile, source, Link};
use testkit::Procs;

#[test]
fn the_c_example_runs() {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("pubsub");
    compile(
        "cc",
        "c11",
        &[source("examples/pubsub.c")],
        &exe,
        Link::Shared,
    );
    let bus = dir.path().join("example.bus");
    let mut procs = Procs::new(Duration::from_secs(60));
    let p = procs.spawn(
        "pubsub.c",
        exe.to_str().unwrap(),
        &[bus.to_str().unwrap(), "5000"],
    );
    let out = procs.success(p);
    assert!(
        out.iter()
            .any(|l| l.contains("sent and received 5000 messages in order")),
        "{out:?}"
    );
}

#[test]
fn the_cpp_example_runs() {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("pubsub");
    compile(
        "c++",
        "c++17",
        &[source("examples/pubsub.cpp")],
        &exe,
        Link::Shared,
    );
    let bus = dir.path().join("example.bus");
    let mut procs = Procs::new(Duration::from_secs(60));
    let p = procs.spawn(
        "pubsub.cpp",
        exe.to_str().unwrap(),
        &[bus.to_str().unwrap(), "100000"],
    );
    let out = procs.success(p);
    assert!(
        out.iter()
            .any(|l| l.contains("sent and received 100000 messages in order")),
        "{out:?}"
    );
}

/// Runs a checking program (`errors.c`, `wrapper.cpp`) in a directory of its own; it prints
/// "N checks, M failed" last.
fn run_checks(name: &str, exe: &std::path::Path, dir: &std::path::Path) {
    let work = dir.join("work");
    std::fs::create_dir(&work).unwrap();
    let mut procs = Procs::new(Duration::from_secs(60));
    let p = procs.spawn(name, exe.to_str().unwrap(), &[work.to_str().unwrap()]);
    let (status, out) = procs.wait(p);
    for line in &out {
        println!("{line}");
    }
    assert!(status.success(), "{name} failed: {status}");
    assert!(
        out.iter().any(|l| l.ends_with(" checks, 0 failed")),
        "{out:?}"
    );
}

#[test]
fn the_cpp_wrapper_throws_moves_and_abandons() {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("wrapper");
    compile(
        "c++",
        "c++17",
        &[source("tests/c/wrapper.cpp")],
        &exe,
        Link::Static,
    );
    run_checks("wrapper.cpp", &exe, dir.path());
}

#[test]
fn every_error_path_from_c() {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("errors");
    compile(
        "cc",
        "c11",
        &[source("tests/c/errors.c")],
        &exe,
        Link::Static,
    );
    run_checks("errors.c", &exe, dir.path());
}

/// A C publisher process and two C subscriber processes (one copying, one borrowing in
/// place) on one reliable bus much smaller than the stream: every message exactly once, in
/// order, with the publisher held back by the slowest subscriber.
#[test]
fn c_processes_publish_and_subscribe_on_one_reliable_bus() {
    const COUNT: &str = "100000";
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("peer");
    compile("cc", "c11", &[source("tests/c/peer.c")], &exe, Link::Static);
    let exe = exe.to_str().unwrap();
    let bus = dir.path().join("peers.bus");
    let bus = bus.to_str().unwrap();

    let mut procs = Procs::new(Duration::from_secs(120));
    let create = procs.spawn("create", exe, &["create", bus]);
    procs.success(create);
    let copy = procs.spawn("sub copy", exe, &["sub", bus, COUNT, "copy"]);
    let by_ref = procs.spawn("sub ref", exe, &["sub", bus, COUNT, "ref"]);
    procs.expect_line(copy, "ready");
    procs.expect_line(by_ref, "ready");
    let publ = procs.spawn("pub", exe, &["pub", bus, COUNT]);
    let sent = procs.success(publ);
    assert_eq!(sent, vec![format!("sent {COUNT}")]);
    for sub in [copy, by_ref] {
        let out = procs.success(sub);
        assert_eq!(out.last().unwrap(), &format!("received {COUNT} lost 0"));
    }
}

/// The peer program, compiled into `dir`.
fn peer(dir: &Path) -> String {
    let exe = dir.join("peer");
    compile("cc", "c11", &[source("tests/c/peer.c")], &exe, Link::Static);
    exe.to_str().unwrap().to_string()
}

/// Message `i` of the peer program (its `fill()`).
fn message(i: u64) -> Vec<u8> {
    let len = 8 + ((i * 7919) % 300) as usize;
    let mut m = i.to_ne_bytes().to_vec();
    m.extend((8..len).map(|j| (i as usize + j) as u8));
    m
}

/// A C publisher process on a lossy bus much smaller than the stream, and a C subscriber
/// process: every message it gets is the right one, in order, and delivered + lost =
/// published, exactly.
#[test]
fn a_c_subscriber_on_a_lossy_bus_accounts_for_every_message() {
    const COUNT: u64 = 200_000;
    let dir = tempfile::tempdir().unwrap();
    let exe = peer(dir.path());
    let bus = dir.path().join("lossy.bus");
    let bus = bus.to_str().unwrap();
    let count = COUNT.to_string();

    let mut procs = Procs::new(Duration::from_secs(120));
    let create = procs.spawn("create", &exe, &["create", bus, "lossy"]);
    procs.success(create);
    let sub = procs.spawn("sub lossy", &exe, &["sub", bus, &count, "lossy"]);
    procs.expect_line(sub, "ready");
    let publ = procs.spawn("pub", &exe, &["pub", bus, &count]);
    procs.success(publ);
    let out = procs.success(sub);
    let last = out.last().unwrap();
    let nums: Vec<u64> = last
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert_eq!(nums.len(), 2, "{last}");
    assert_eq!(nums[0] + nums[1], COUNT, "{last}");
    assert!(nums[0] > 0, "{last}");
    println!("lossy across processes: {last}");
}

/// C and Rust on one bus: a C publisher process to a Rust subscriber (this process), and a
/// Rust publisher to a C subscriber process; the same messages, in the same order.
#[test]
fn c_and_rust_processes_share_a_bus() {
    const COUNT: u64 = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let exe = peer(dir.path());
    let count = COUNT.to_string();
    let mut procs = Procs::new(Duration::from_secs(120));

    // C publishes, Rust receives.
    let path = dir.path().join("c-to-rust.bus");
    let bus = Bus::create(
        &path,
        &BusOptions::new().capacity(1 << 16).max_message(1024),
    )
    .unwrap();
    let mut sub = bus.subscribe(Start::Oldest).unwrap();
    let publ = procs.spawn("pub", &exe, &["pub", path.to_str().unwrap(), &count]);
    let mut buf = Vec::new();
    for i in 0..COUNT {
        let m = sub.recv_timeout(&mut buf, Duration::from_secs(10)).unwrap();
        assert_eq!(m.seq, i);
        assert_eq!(buf, message(i), "message {i}");
    }
    procs.success(publ);

    // Rust publishes, C receives.
    let path = dir.path().join("rust-to-c.bus");
    let bus = Bus::create(
        &path,
        &BusOptions::new().capacity(1 << 16).max_message(1024),
    )
    .unwrap();
    let sub = procs.spawn("sub", &exe, &["sub", path.to_str().unwrap(), &count, "ref"]);
    procs.expect_line(sub, "ready");
    let mut publ = bus.publisher().unwrap();
    for i in 0..COUNT {
        let sent = publ
            .send_timeout(&message(i), Duration::from_secs(10))
            .unwrap();
        assert_eq!(sent.seq, i);
    }
    let out = procs.success(sub);
    assert_eq!(out.last().unwrap(), &format!("received {COUNT} lost 0"));
}
