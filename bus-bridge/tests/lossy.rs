//! Lossy buses through core NATS: at most once, and delivered + reported lost = published at
//! the far side (issue 11).

mod common;

use std::time::Duration;

use common::*;
use testkit::Procs;

const COUNT: u64 = 200_000;

fn final_stats(procs: &mut Procs, bridge: usize) -> serde_json::Value {
    procs.signal(bridge, libc::SIGTERM);
    let line = procs.expect_line(bridge, "{\"event\":\"final\"");
    procs.success(bridge);
    serde_json::from_str(&line).unwrap()
}

#[test]
fn delivered_plus_lost_equals_published() {
    let mut procs = Procs::new(Duration::from_secs(120));
    let tmp = tempdir();
    let (bus_a, bus_b) = (tmp.path().join("a.bus"), tmp.path().join("b.bus"));
    // A small ring at A: the exporter is lapped by a publisher at full speed, and counts it.
    create_bus(&bus_a, 64 << 10, "lossy");
    create_bus(&bus_b, 16 << 20, "lossy");
    let server = start_server(
        &mut procs,
        &tmp.path().join("nats"),
        "nats",
        free_port(),
        &[],
    );
    let url = server.url();
    let ba = bridge(
        &mut procs,
        "bridge A",
        &[
            "--nats".into(),
            url.clone(),
            "--out".into(),
            format!("{}=ticks", bus_a.display()),
            "--name".into(),
            "hostA".into(),
        ],
        true,
    );
    let bb = bridge(
        &mut procs,
        "bridge B",
        &[
            "--nats".into(),
            url,
            "--in".into(),
            format!("ticks={}", bus_b.display()),
            "--name".into(),
            "hostB".into(),
        ],
        true,
    );
    let sub = procs.spawn(
        "subscriber B",
        PEER,
        &["sub", &s(&bus_b), &COUNT.to_string(), "3000"],
    );
    procs.expect_line(sub, "ready");
    let p = procs.spawn(
        "publisher",
        PEER,
        &["pub", &s(&bus_a), "0", &COUNT.to_string(), "24", "0"],
    );
    procs.success(p);
    let done = procs.expect_line(sub, "done");
    let b = final_stats(&mut procs, bb);
    let a = final_stats(&mut procs, ba);
    eprintln!("subscriber: {done}\nbridge A: {a}\nbridge B: {b}");
    let delivered = num(&done, "delivered");
    let lost_at_b = num(&done, "lost");
    let lost_on_the_way = b["dropped"].as_u64().unwrap();
    assert_eq!(num(&done, "dups"), 0, "{done}");
    assert_eq!(
        delivered + lost_at_b + lost_on_the_way,
        COUNT,
        "delivered {delivered} + lost at B {lost_at_b} + lost on the way {lost_on_the_way}"
    );
    // What the exporter lost to lapping is part of what the importer counted.
    assert!(a["dropped"].as_u64().unwrap() <= lost_on_the_way);
    assert_eq!(
        a["forwarded"].as_u64().unwrap() + a["dropped"].as_u64().unwrap(),
        COUNT,
        "{a}"
    );
}

/// The final statistics of every link of a bridge, by label (`out BUS=SUBJECT`,
/// `in SUBJECT=BUS`).
fn final_links(procs: &mut Procs, bridge: usize, links: usize) -> Vec<serde_json::Value> {
    procs.signal(bridge, libc::SIGTERM);
    let lines: Vec<serde_json::Value> = (0..links)
        .map(|_| serde_json::from_str(&procs.expect_line(bridge, "{\"event\":\"final\"")).unwrap())
        .collect();
    procs.success(bridge);
    lines
}

fn link<'a>(links: &'a [serde_json::Value], prefix: &str) -> &'a serde_json::Value {
    links
        .iter()
        .find(|l| l["link"].as_str().unwrap().starts_with(prefix))
        .unwrap_or_else(|| panic!("no link {prefix}… in {links:?}"))
}

/// Two-way on one subject with rings small enough that each exporter is lapped: what an
/// exporter loses to lapping includes messages its own importer put on the bus, which were
/// never to be exported. Those count as looped, not lost, so that at each importer
/// forwarded + lost = what the far side's publisher published, exactly.
#[test]
fn two_way_lapped_exporters_count_only_their_own_buses_messages_lost() {
    const EACH: u64 = 150_000;
    let mut procs = Procs::new(Duration::from_secs(120));
    let tmp = tempdir();
    let (bus_a, bus_b) = (tmp.path().join("a.bus"), tmp.path().join("b.bus"));
    create_bus(&bus_a, 128 << 10, "lossy");
    create_bus(&bus_b, 128 << 10, "lossy");
    let server = start_server(
        &mut procs,
        &tmp.path().join("nats"),
        "nats",
        free_port(),
        &[],
    );
    let url = server.url();
    let args = |bus: &std::path::Path, name: &str| two_way_args(&url, bus, "both.ways", name);
    let ba = bridge(&mut procs, "bridge A", &args(&bus_a, "hostA"), true);
    let bb = bridge(&mut procs, "bridge B", &args(&bus_b, "hostB"), true);
    let n = EACH.to_string();
    // Paced, so that imports keep arriving on each bus while its exporter is being lapped
    // (at full speed the burst is over before the far side's messages come in).
    let rate = "100000";
    let pa = procs.spawn(
        "publisher A",
        PEER,
        &["pub", &s(&bus_a), "0", &n, "24", rate],
    );
    let pb = procs.spawn(
        "publisher B",
        PEER,
        &["pub", &s(&bus_b), "1", &n, "24", rate],
    );
    procs.success(pa);
    procs.success(pb);
    // Let the exporters' final heartbeats and the last messages arrive before the importers
    // stop: each bridge stops its exporter and its importer at once.
    std::thread::sleep(Duration::from_secs(2));
    let a = final_links(&mut procs, ba, 2);
    std::thread::sleep(Duration::from_secs(1));
    let b = final_links(&mut procs, bb, 2);
    eprintln!("bridge A: {a:?}\nbridge B: {b:?}");
    let (out_a, in_b) = (link(&a, "out "), link(&b, "in "));
    let u = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap();
    // The exporter accounts for every message A's publisher put on bus A, sent or lost;
    // what it skipped of B's (imported into A) is looped.
    assert_eq!(
        u(out_a, "forwarded") + u(out_a, "dropped"),
        EACH,
        "A: {out_a}"
    );
    // B's importer: every message of A's publisher arrived or was counted lost.
    assert_eq!(
        u(in_b, "forwarded") + u(in_b, "dropped"),
        EACH,
        "B's importer: {in_b}"
    );
    assert!(u(out_a, "dropped") <= u(in_b, "dropped"), "{out_a} {in_b}");
}
