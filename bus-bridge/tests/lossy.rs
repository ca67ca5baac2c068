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
