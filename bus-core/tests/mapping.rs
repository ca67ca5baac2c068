//! The file: rings larger than memory on a sparse disk file, and persistence across opens.

use bus_core::{Bus, BusOptions, Start};

/// Resident set size of this process, from /proc/self/status.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

#[test]
fn a_sparse_ring_larger_than_memory_is_written_at_both_ends() {
    use std::os::unix::fs::MetadataExt;
    // On disk (the target directory), not tmpfs: a sparse 32 GiB file costs nothing there.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("huge.bus");
    let capacity = 32u64 << 30;
    // Start 64 KiB before the end of the region: the messages run off its end and on at
    // its start.
    let start = capacity - 64 * 1024;
    let rss_before = rss_bytes();
    {
        let bus = Bus::create(
            &path,
            &BusOptions::new()
                .capacity(capacity)
                .max_message(4096)
                .sparse(true)
                .initial_position(start),
        )
        .unwrap();
        let mut publ = bus.publisher().unwrap();
        for i in 0..100u32 {
            let msg = vec![(i % 251) as u8; 1000 + i as usize];
            publ.send(&msg).unwrap();
        }
        let st = bus.stats();
        assert!(
            st.tail_position > capacity,
            "the tail passed the end of the region"
        );
        bus.flush().unwrap();
    }
    let meta = std::fs::metadata(&path).unwrap();
    assert!(meta.len() > capacity);
    let allocated = meta.blocks() * 512;
    assert!(allocated < 16 << 20, "sparse: {allocated} bytes allocated");
    let bus = Bus::open(&path).unwrap();
    let mut sub = bus.subscribe(Start::Oldest).unwrap();
    let mut buf = Vec::new();
    for i in 0..100u32 {
        let m = sub.recv(&mut buf).unwrap();
        assert_eq!(m.seq, i as u64);
        assert_eq!(buf, vec![(i % 251) as u8; 1000 + i as usize]);
    }
    let grown = rss_bytes().saturating_sub(rss_before);
    println!(
        "32 GiB ring: {allocated} bytes allocated on disk, resident memory grew {grown} bytes"
    );
    assert!(
        grown < 64 << 20,
        "resident memory stayed small (grew {grown} bytes)"
    );
}

/// KiB of files and shared memory mapped into this process and resident (RssFile +
/// RssShmem of /proc/self/status).
fn mapped_resident_kib() -> i64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .filter(|l| l.starts_with("RssFile:") || l.starts_with("RssShmem:"))
        .map(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|n| n.parse::<i64>().ok())
                .unwrap()
        })
        .sum()
}

/// Review of round 2: every non-sparse open populated the whole mapping (MAP_POPULATE), the
/// read-only opens of `stat`, `ls` and `top` included, which read the header and slots only.
/// A read-only open of a 64 MiB bus and a look at its stats now map a few pages of it; a
/// read-write open still maps the ring up front (the publish path pays no faults).
#[test]
fn a_read_only_open_does_not_populate_the_ring() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.bus");
    drop(Bus::create(&path, &BusOptions::new().capacity(64 << 20)).unwrap());
    let before = mapped_resident_kib();
    let observer = Bus::open_with(&path, &bus_core::OpenOptions::new().read_only(true)).unwrap();
    let st = observer.stats();
    let read_only = mapped_resident_kib() - before;
    assert!(st.subscribers.is_empty());
    let before = mapped_resident_kib();
    let participant = Bus::open(&path).unwrap();
    let read_write = mapped_resident_kib() - before;
    drop((observer, participant));
    assert!(
        read_only < 8 << 10,
        "read-only open: {read_only} KiB resident"
    );
    assert!(
        read_write >= 60 << 10,
        "read-write open populates: {read_write} KiB resident"
    );
}
