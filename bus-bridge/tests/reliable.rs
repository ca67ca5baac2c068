//! Reliable buses through JetStream: exactly once across crashes (issue 11).
//!
//! Two "hosts" (two bus directories), a bridge each, one nats-server between them. A million
//! messages from three publisher processes on host A's reliable bus reach a subscriber on
//! host B exactly once and in A's total order while each bridge is SIGKILLed and restarted at
//! random moments, ten times in all. Then a second million while the server itself is
//! SIGKILLed and restarted (JetStream file store).

mod common;

use std::time::Duration;

use common::*;
use testkit::Procs;

/// Messages per phase.
const PHASE: u64 = 1_000_000;
/// Messages a second of each publisher: publishing spans most of the transfer.
const RATE: u64 = 6_000;

#[test]
fn exactly_once_across_bridge_kills_and_a_server_restart() {
    let mut procs = Procs::new(Duration::from_secs(600));
    let mut rng = Rng::new();
    let tmp = tempdir();
    let (host_a, host_b) = (tmp.path().join("hostA"), tmp.path().join("hostB"));
    std::fs::create_dir_all(&host_a).unwrap();
    std::fs::create_dir_all(&host_b).unwrap();
    let (bus_a, bus_b) = (host_a.join("events.bus"), host_b.join("events.bus"));
    // Large enough to hold both phases: a reliable bus protects only live subscribers, so a
    // killed bridge relies on the ring still holding what it had not exported.
    create_bus(&bus_a, 256 << 20, "reliable");
    create_bus(&bus_b, 256 << 20, "reliable");
    let mut server = start_server(
        &mut procs,
        &tmp.path().join("nats"),
        "nats",
        free_port(),
        &[],
    );
    let url = server.url();
    let args_a = vec![
        "--nats".into(),
        url.clone(),
        "--out".into(),
        format!("{}=bus.events", bus_a.display()),
        "--name".into(),
        "hostA".into(),
    ];
    let args_b = vec![
        "--nats".into(),
        url.clone(),
        "--in".into(),
        format!("bus.events={}", bus_b.display()),
        "--name".into(),
        "hostB".into(),
    ];
    let mut bridges = [
        bridge(&mut procs, "bridge A", &args_a, true),
        bridge(&mut procs, "bridge B", &args_b, true),
    ];
    let total = (2 * PHASE).to_string();
    let sub_b = procs.spawn("subscriber B", PEER, &["sub", &s(&bus_b), &total, "60000"]);
    procs.expect_line(sub_b, "ready");
    let ref_a = procs.spawn("reference A", PEER, &["sub", &s(&bus_a), &total, "60000"]);
    procs.expect_line(ref_a, "ready");

    // Phase 1: three publishers, ten kills (five of each bridge, in random order).
    let publishers = |procs: &mut Procs, first_id: u64| -> Vec<usize> {
        (0..3)
            .map(|k| {
                let count = PHASE / 3 + u64::from(k == 0) * (PHASE % 3);
                procs.spawn(
                    &format!("publisher {}", first_id + k),
                    PEER,
                    &[
                        "pub",
                        &s(&bus_a),
                        &(first_id + k).to_string(),
                        &count.to_string(),
                        "24",
                        &RATE.to_string(),
                    ],
                )
            })
            .collect()
    };
    let pubs = publishers(&mut procs, 0);
    let mut order = [0usize, 0, 0, 0, 0, 1, 1, 1, 1, 1];
    for i in (1..order.len()).rev() {
        order.swap(i, (rng.next() % (i as u64 + 1)) as usize);
    }
    for which in order {
        std::thread::sleep(rng.millis(300, 4000));
        procs.signal(bridges[which], libc::SIGKILL);
        procs.wait(bridges[which]);
        // Restarted at once, without waiting for it to be ready: the next kill may come
        // while it is still starting.
        let args = if which == 0 { &args_a } else { &args_b };
        bridges[which] = bridge(&mut procs, ["bridge A", "bridge B"][which], args, false);
        eprintln!("killed and restarted bridge {}", ["A", "B"][which]);
    }
    for p in pubs {
        procs.success(p);
    }
    procs.expect_line(sub_b, &format!("progress {PHASE}"));
    eprintln!("phase 1 delivered");

    // Phase 2: the server is SIGKILLed and restarted under load.
    let pubs = publishers(&mut procs, 3);
    std::thread::sleep(rng.millis(1500, 4000));
    restart_server(&mut procs, &mut server, Duration::from_millis(500));
    eprintln!("restarted nats-server");
    for p in pubs {
        procs.success(p);
    }
    let done_b = procs.expect_line(sub_b, "done");
    let done_a = procs.expect_line(ref_a, "done");
    eprintln!("A: {done_a}\nB: {done_b}");
    assert_eq!(num(&done_b, "delivered"), 2 * PHASE, "{done_b}");
    assert_eq!(num(&done_b, "dups"), 0, "{done_b}");
    assert_eq!(num(&done_b, "gaps"), 0, "{done_b}");
    assert_eq!(num(&done_b, "lost"), 0, "{done_b}");
    assert_eq!(num(&done_a, "delivered"), 2 * PHASE, "{done_a}");
    // Same messages in the same order as on host A.
    assert_eq!(field(&done_b, "hash"), field(&done_a, "hash"));
}
