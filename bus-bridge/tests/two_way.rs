//! Two-way bridging between two hosts on one subject: no message seen twice on either side,
//! none lost, none looping back, across a SIGKILL of one bridge (issue 11).

mod common;

use std::time::Duration;

use common::*;
use testkit::Procs;

const EACH: u64 = 20_000;

#[test]
fn two_way_on_one_subject_without_duplicates() {
    let mut procs = Procs::new(Duration::from_secs(180));
    let tmp = tempdir();
    let (bus_a, bus_b) = (tmp.path().join("a.bus"), tmp.path().join("b.bus"));
    create_bus(&bus_a, 16 << 20, "reliable");
    create_bus(&bus_b, 16 << 20, "reliable");
    let server = start_server(
        &mut procs,
        &tmp.path().join("nats"),
        "nats",
        free_port(),
        &[],
    );
    let url = server.url();
    let args = |bus: &std::path::Path, name: &str| two_way_args(&url, bus, "both.ways", name);
    let (args_a, args_b) = (args(&bus_a, "hostA"), args(&bus_b, "hostB"));
    let ba = bridge(&mut procs, "bridge A", &args_a, true);
    let _bb = bridge(&mut procs, "bridge B", &args_b, true);
    // One more than will come: each subscriber ends when nothing arrives for 15 s (more
    // than the importer's acknowledgement wait, after which the server redelivers what the
    // killed bridge had been sent), so an echo would be seen.
    let want = (2 * EACH + 1).to_string();
    let sub_a = procs.spawn("subscriber A", PEER, &["sub", &s(&bus_a), &want, "15000"]);
    procs.expect_line(sub_a, "ready");
    let sub_b = procs.spawn("subscriber B", PEER, &["sub", &s(&bus_b), &want, "15000"]);
    procs.expect_line(sub_b, "ready");
    let rate = "8000";
    let pa = procs.spawn(
        "publisher A",
        PEER,
        &["pub", &s(&bus_a), "0", &EACH.to_string(), "24", rate],
    );
    let pb = procs.spawn(
        "publisher B",
        PEER,
        &["pub", &s(&bus_b), "1", &EACH.to_string(), "24", rate],
    );
    std::thread::sleep(Duration::from_millis(1200));
    procs.signal(ba, libc::SIGKILL);
    procs.wait(ba);
    let ba = bridge(&mut procs, "bridge A (again)", &args_a, false);
    procs.success(pa);
    procs.success(pb);
    let dones: Vec<String> = [sub_a, sub_b]
        .iter()
        .map(|&sub| procs.expect_line(sub, "done"))
        .collect();
    for (b, name) in [(ba, "A"), (_bb, "B")] {
        procs.signal(b, libc::SIGTERM);
        let (_, out) = procs.wait(b);
        for line in out.iter().filter(|l| !l.contains("\"stats\"")) {
            eprintln!("bridge {name}: {line}");
        }
    }
    for (name, done) in [("A", &dones[0]), ("B", &dones[1])] {
        eprintln!("{name}: {done}");
        assert_eq!(num(done, "delivered"), 2 * EACH, "{name}: {done}");
        assert_eq!(num(done, "dups"), 0, "{name}: {done}");
        assert_eq!(num(done, "gaps"), 0, "{name}: {done}");
    }
}
