//! Typed buses across processes (issue 12): two programs with different message types on one
//! bus. The second is refused at join time with an error naming both types; the record
//! outlives the process that wrote it; two first joins at the same moment record one type.

use std::path::Path;
use std::time::Duration;

use bus_core::{Bus, BusOptions, Mode};
use testkit::Procs;

const PEER: &str = env!("CARGO_BIN_EXE_bus-typed-peer");

fn create(path: &Path) {
    let opts = BusOptions::new().capacity(1 << 16).mode(Mode::Reliable);
    Bus::create(path, &opts).unwrap();
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn a_second_program_of_another_type_is_refused_naming_both() {
    let mut procs = Procs::new(Duration::from_secs(60));
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("quotes.bus");
    create(&bus);

    let quotes = procs.spawn("quote publisher", PEER, &[s(&bus), "pub", "quote", "60000"]);
    procs.expect_line(quotes, "joined");

    let orders = procs.spawn("order subscriber", PEER, &[s(&bus), "sub", "order", "0"]);
    let refusal = procs.expect_line(orders, "refused");
    assert!(
        refusal.contains("Quote") && refusal.contains("Order"),
        "the error names both types: {refusal}"
    );
    let (status, _) = procs.wait(orders);
    assert_eq!(status.code(), Some(3), "{refusal}");

    // The right type joins and decodes what the first program sent.
    let reader = procs.spawn("quote subscriber", PEER, &[s(&bus), "sub", "quote", "0"]);
    procs.expect_line(reader, "joined");
    procs.expect_line(reader, "got AAPL");
    procs.success(reader);

    // The record is in the bus header: it outlives the process that wrote it.
    procs.signal(quotes, libc::SIGKILL);
    procs.wait(quotes);
    let late = procs.spawn(
        "late order publisher",
        PEER,
        &[s(&bus), "pub", "order", "0"],
    );
    let refusal = procs.expect_line(late, "refused");
    assert!(
        refusal.contains("Quote") && refusal.contains("Order"),
        "{refusal}"
    );
    assert_eq!(procs.wait(late).0.code(), Some(3));
}

#[test]
fn two_programs_joining_a_new_bus_at_once_record_one_type() {
    let mut procs = Procs::new(Duration::from_secs(120));
    let dir = tempfile::tempdir().unwrap();
    for round in 0..10 {
        let bus = dir.path().join(format!("race{round}.bus"));
        create(&bus);
        let a = procs.spawn("quote publisher", PEER, &[s(&bus), "pub", "quote", "0"]);
        let b = procs.spawn("order publisher", PEER, &[s(&bus), "pub", "order", "0"]);
        let (sa, _) = procs.wait(a);
        let (sb, _) = procs.wait(b);
        let codes = [sa.code(), sb.code()];
        assert!(
            codes == [Some(0), Some(3)] || codes == [Some(3), Some(0)],
            "round {round}: exactly one joins, the other is refused: {codes:?}"
        );
        let recorded = Bus::open(&bus).unwrap().message_type().unwrap().unwrap();
        let winner = if codes[0] == Some(0) {
            "Quote"
        } else {
            "Order"
        };
        assert!(recorded.name.ends_with(winner), "round {round}: {recorded}");
    }
}
