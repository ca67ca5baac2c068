//! A three-node NATS cluster on loopback ports, the bridges on different nodes, one node
//! SIGKILLed mid-stream: nothing lost, nothing twice, in reliable mode (issue 11).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use testkit::Procs;

const COUNT: u64 = 100_000;

/// Whether the node's monitoring endpoint says it is healthy (JetStream current).
fn healthy(port: u16) -> bool {
    let Ok(mut c) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
    if c.write_all(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut reply = String::new();
    let _ = c.read_to_string(&mut reply);
    reply.starts_with("HTTP/1.0 200") || reply.starts_with("HTTP/1.1 200")
}

#[test]
fn a_node_dies_mid_stream_and_nothing_is_lost() {
    let mut procs = Procs::new(Duration::from_secs(240));
    let tmp = tempdir();
    let client: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let cluster: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let monitor: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let routes = cluster
        .iter()
        .map(|p| format!("nats://127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut nodes = Vec::new();
    for k in 0..3 {
        let extra = vec![
            "--cluster_name".into(),
            "shmbus".into(),
            "--cluster".into(),
            format!("nats://127.0.0.1:{}", cluster[k]),
            "--routes".into(),
            routes.clone(),
            "-m".into(),
            monitor[k].to_string(),
        ];
        nodes.push(start_server(
            &mut procs,
            &tmp.path().join(format!("node{k}")),
            &format!("node{k}"),
            client[k],
            &extra,
        ));
    }
    let until = Instant::now() + Duration::from_secs(60);
    while !(0..3).all(|k| healthy(monitor[k])) {
        assert!(Instant::now() < until, "the cluster did not become healthy");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (bus_a, bus_b) = (tmp.path().join("a.bus"), tmp.path().join("b.bus"));
    create_bus(&bus_a, 16 << 20, "reliable");
    create_bus(&bus_b, 16 << 20, "reliable");
    // Bridge A on node 0 (and node 2 to fail over to), bridge B on node 1.
    let url = |ks: &[usize]| {
        ks.iter()
            .map(|&k| format!("nats://127.0.0.1:{}", client[k]))
            .collect::<Vec<_>>()
            .join(",")
    };
    let ba = vec![
        "--nats".into(),
        url(&[0, 2]),
        "--out".into(),
        format!("{}=clustered", bus_a.display()),
        "--replicas".into(),
        "3".into(),
        "--name".into(),
        "hostA".into(),
    ];
    let bb = vec![
        "--nats".into(),
        url(&[1, 2]),
        "--in".into(),
        format!("clustered={}", bus_b.display()),
        "--replicas".into(),
        "3".into(),
        "--name".into(),
        "hostB".into(),
    ];
    // A fresh cluster may still be electing its meta leader: retry the first start.
    let mut started = None;
    for attempt in 0..20 {
        let out = std::process::Command::new("timeout")
            .arg("20")
            .arg(BRIDGE)
            .args(&ba)
            .arg("--json")
            .arg("--stats-interval")
            .arg("100ms")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        let mut out = out;
        match out.try_wait().unwrap() {
            None => {
                // SIGTERM to `timeout`, which passes it on to the bridge and waits for it: a
                // SIGKILL would end only `timeout` and leave the bridge running forever
                // (orphaned, retrying the cluster's dead ports after the test).
                // SAFETY: signalling our own child, which has not been reaped yet.
                unsafe { libc::kill(out.id() as i32, libc::SIGTERM) };
                out.wait().unwrap();
                started = Some(attempt);
                break;
            }
            Some(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
    assert!(
        started.is_some(),
        "the bridge never got a stream from the cluster"
    );
    let _a = bridge(&mut procs, "bridge A", &ba, true);
    let _b = bridge(&mut procs, "bridge B", &bb, true);
    let sub = procs.spawn(
        "subscriber B",
        PEER,
        &["sub", &s(&bus_b), &COUNT.to_string(), "60000"],
    );
    procs.expect_line(sub, "ready");
    let p = procs.spawn(
        "publisher A",
        PEER,
        &["pub", &s(&bus_a), "0", &COUNT.to_string(), "24", "10000"],
    );
    std::thread::sleep(Duration::from_secs(3));
    procs.signal(nodes[0].proc, libc::SIGKILL);
    procs.wait(nodes[0].proc);
    eprintln!("killed node 0");
    procs.success(p);
    let done = procs.expect_line(sub, "done");
    eprintln!("{done}");
    assert_eq!(num(&done, "delivered"), COUNT, "{done}");
    assert_eq!(num(&done, "dups"), 0, "{done}");
    assert_eq!(num(&done, "gaps"), 0, "{done}");
}
