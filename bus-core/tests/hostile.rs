//! Hostile input: any file contents, any header, any codec bytes give a typed error, never a
//! panic; files of other users and links into them are refused.

use std::collections::BTreeMap;
use std::os::unix::fs::{symlink, FileExt};

use bus_core::{Bincode, Bus, BusOptions, Codec, Config, OpenErrorKind, OpenOptions, Postcard};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};

#[test]
fn header_validation_of_any_bytes() {
    let tried = std::cell::Cell::new(0u32);
    let accepted = std::cell::Cell::new(0u32);
    proptest!(quiet(20_000), |(bytes in prop::array::uniform32(any::<u8>()), rest in prop::collection::vec(any::<u8>(), 96), len in any::<u64>())| {
        tried.set(tried.get() + 1);
        let mut line = [0u8; 128];
        line[..32].copy_from_slice(&bytes);
        line[32..].copy_from_slice(&rest);
        if let Ok(c) = Config::decode(&line, len) {
            // Only a header this build would write passes, and it describes itself.
            accepted.set(accepted.get() + 1);
            prop_assert_eq!(c.file_size(), len);
        }
    });
    println!(
        "header validation: {} arbitrary headers tried, {} accepted",
        tried.get(),
        accepted.get()
    );
    assert_eq!(
        accepted.get(),
        0,
        "random bytes never pass the checksum and the field rules"
    );
}

#[test]
fn opening_files_of_any_bytes_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("junk.bus");
    let tried = std::cell::Cell::new(0u32);
    proptest!(quiet(500), |(content in prop::collection::vec(any::<u8>(), 0..20_000))| {
        tried.set(tried.get() + 1);
        std::fs::write(&path, &content).unwrap();
        let err = Bus::open(&path).expect_err("random bytes are not a bus");
        prop_assert!(matches!(err.kind, OpenErrorKind::Header(_)), "{:?}", err.kind);
    });
    println!("open of arbitrary files: {} cases tried", tried.get());
}

#[test]
fn a_bus_truncated_at_every_length_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.bus");
    let opts = BusOptions::new()
        .capacity(4096)
        .max_subscribers(2)
        .max_producers(2);
    let bus = Bus::create(&path, &opts).unwrap();
    bus.publisher().unwrap().send(b"content").unwrap();
    drop(bus);
    let full = std::fs::read(&path).unwrap();
    let short = dir.path().join("short.bus");
    for len in 0..full.len() {
        std::fs::write(&short, &full[..len]).unwrap();
        let err = Bus::open(&short).expect_err("a truncated bus");
        assert!(
            matches!(err.kind, OpenErrorKind::Header(_)),
            "length {len}: {:?}",
            err.kind
        );
    }
    println!("truncation: all {} lengths refused", full.len());
    std::fs::write(&short, &full).unwrap();
    Bus::open(&short).unwrap();
}

#[test]
fn every_header_byte_changed_in_a_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.bus");
    Bus::create(&path, &BusOptions::new().capacity(1 << 16)).unwrap();
    let original = std::fs::read(&path).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    for offset in 0..128u64 {
        if (16..20).contains(&offset) {
            continue; // the init state word: checked on its own below
        }
        let b = original[offset as usize];
        f.write_all_at(&[b ^ 0x5a], offset).unwrap();
        assert!(
            Bus::open(&path).is_err(),
            "a changed byte {offset} went unnoticed"
        );
        f.write_all_at(&[b], offset).unwrap();
    }
    f.write_all_at(&1u32.to_ne_bytes(), 16).unwrap();
    assert!(matches!(
        Bus::open(&path).unwrap_err().kind,
        OpenErrorKind::Header(bus_core::HeaderError::NotReady { state: 1 })
    ));
}

#[test]
fn files_of_another_user_and_links_to_them_are_refused() {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        return; // chown needs root; as a user, other users' files are refused by the kernel.
    }
    let dir = tempfile::tempdir().unwrap();
    let theirs = dir.path().join("theirs.bus");
    Bus::create(&theirs, &BusOptions::new().capacity(1 << 16)).unwrap();
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
    assert_eq!(
        Bus::open(&theirs).unwrap_err().kind,
        OpenErrorKind::OwnedByOtherUser {
            owner: 65534,
            user: 0
        }
    );
    Bus::open_with(&theirs, &OpenOptions::new().allow_other_owner(true)).unwrap();
    let link = dir.path().join("mine.bus");
    symlink(&theirs, &link).unwrap();
    assert_eq!(
        Bus::open(&link).unwrap_err().kind,
        OpenErrorKind::SymbolicLink
    );
    // Creating over a planted link fails instead of following it.
    assert_eq!(
        Bus::create(&link, &BusOptions::new().capacity(1 << 16))
            .unwrap_err()
            .kind,
        OpenErrorKind::AlreadyExists
    );
}

#[derive(Debug, Serialize, Deserialize)]
enum Kind {
    A,
    B(String),
    C { x: Vec<u32> },
}

#[derive(Debug, Serialize, Deserialize)]
struct Msg {
    id: u64,
    name: String,
    tags: BTreeMap<String, Vec<u8>>,
    kind: Kind,
    maybe: Option<f64>,
}

#[test]
fn decoding_any_bytes_is_an_error_or_a_value() {
    let tried = std::cell::Cell::new(0u32);
    proptest!(quiet(20_000), |(bytes in prop::collection::vec(any::<u8>(), 0..256))| {
        tried.set(tried.get() + 1);
        let _ = Bincode::decode::<Msg>(&bytes);
        let _ = Postcard::decode::<Msg>(&bytes);
        let _ = Bincode::decode::<Vec<String>>(&bytes);
        let _ = Postcard::decode::<Vec<String>>(&bytes);
    });
    println!(
        "codec decode of arbitrary payloads: {} cases tried, both codecs, two types",
        tried.get()
    );
}

/// `cases` cases, without failure files (the seeds print on failure anyway).
fn quiet(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}
