//! The C API from C and C++: the two examples, every error path (tests/c/errors.c), the
//! C++ wrapper's conventions (tests/c/wrapper.cpp), and a publisher and subscribers in
//! separate processes (tests/c/peer.c). Every program runs under a watchdog (testkit) in a
//! temporary directory of its own.

mod common;

use std::time::Duration;

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
