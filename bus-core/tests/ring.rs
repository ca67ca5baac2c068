//! The ring's promise that only what this bus's protocol wrote is a header (issue 8), through
//! the public API with real processes: a publisher whose payloads hold, at every 16-byte
//! aligned offset, a header in the documented format for the record a later lap starts at
//! that very place (right sequence, every state, a plausible length), checked with a guessed
//! key. Every subscriber receives every message exactly once, byte for byte (reliable), or
//! delivered + lost = published with every delivered message exact (lossy). In round 1 such
//! a stream lost 25 of 365 messages silently.

use std::time::Duration;

use bus_core::{Bus, BusOptions, Mode};
use testkit::Procs;

const PEER: &str = env!("CARGO_BIN_EXE_bus-peer");
const COUNT: u64 = 30_000;

fn planted(mode: Mode, producer_slots: u32, key: u64) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("planted.bus");
    Bus::create(
        &path,
        &BusOptions::new()
            .capacity(1 << 16)
            .max_message(4096)
            .max_producers(producer_slots)
            .mode(mode),
    )
    .unwrap();
    let path = path.to_str().unwrap();
    let (count, seed, key) = (COUNT.to_string(), "9".to_string(), key.to_string());
    let mut procs = Procs::new(Duration::from_secs(120));
    let strict = if mode == Mode::Reliable {
        "strict"
    } else {
        "lossy"
    };
    // A subscriber that keeps up, and one that naps (lapped in lossy mode, holding the
    // producer back in reliable mode: it reads at positions the producer is still writing).
    let subs: Vec<usize> = ["0", "500"]
        .iter()
        .map(|slow| {
            procs.spawn(
                "verifier",
                PEER,
                &["verify-planted", path, &count, &seed, &key, strict, slow],
            )
        })
        .collect();
    for &s in &subs {
        procs.expect_line(s, "ready");
    }
    let publ = procs.spawn("planter", PEER, &["plant", path, &count, &seed, &key]);
    procs.success(publ);
    for s in subs {
        let done = procs.expect_line(s, "done");
        procs.success(s);
        let field = |k: &str| -> u64 {
            done.split_whitespace()
                .find_map(|kv| kv.strip_prefix(k))
                .unwrap()
                .parse()
                .unwrap()
        };
        let (delivered, lost) = (field("delivered="), field("lost="));
        assert_eq!(
            delivered + lost,
            COUNT,
            "{mode:?} slots {producer_slots}: {done}"
        );
        if mode == Mode::Reliable {
            assert_eq!(lost, 0, "{done}");
        }
    }
}

#[test]
fn payloads_holding_headers_are_never_records_reliable_exclusive() {
    planted(Mode::Reliable, 1, 0);
    planted(Mode::Reliable, 1, 0x5eed_1234_abcd_0042);
}

#[test]
fn payloads_holding_headers_are_never_records_reliable_shared() {
    planted(Mode::Reliable, 8, 0);
    planted(Mode::Reliable, 8, 0x5eed_1234_abcd_0042);
}

#[test]
fn payloads_holding_headers_are_never_records_lossy_exclusive() {
    planted(Mode::Lossy, 1, 0);
    planted(Mode::Lossy, 1, 0x5eed_1234_abcd_0042);
}

#[test]
fn payloads_holding_headers_are_never_records_lossy_shared() {
    planted(Mode::Lossy, 8, 0);
    planted(Mode::Lossy, 8, 0x5eed_1234_abcd_0042);
}
