//! Typed messages: serde values through both codecs, and what happens with the wrong type.

use std::collections::BTreeMap;
use std::time::Duration;

use bus_core::{
    Bincode, Bus, BusOptions, Codec, CodecError, Mode, Postcard, Start, TypedPublisher,
    TypedRecvError, TypedSubscriber,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Side {
    Buy,
    Sell { limit: f64 },
    Cancel(u64),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Order {
    id: u64,
    symbol: String,
    side: Side,
    fills: Vec<(u32, f64)>,
    tags: BTreeMap<String, String>,
    note: Option<String>,
}

fn orders() -> Vec<Order> {
    (0..50u64)
        .map(|i| Order {
            id: i,
            symbol: format!("SYM{i}"),
            side: match i % 3 {
                0 => Side::Buy,
                1 => Side::Sell {
                    limit: i as f64 * 1.5,
                },
                _ => Side::Cancel(i * 7),
            },
            fills: (0..i % 5).map(|k| (k as u32, k as f64 / 3.0)).collect(),
            tags: [("desk".to_string(), format!("d{}", i % 4))].into(),
            note: (i % 2 == 0).then(|| "ünïcødé ✓".repeat(i as usize % 4)),
        })
        .collect()
}

fn round_trip<C: Codec>(mode: Mode) {
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::create(
        dir.path().join("t.bus"),
        &BusOptions::new().capacity(1 << 16).mode(mode),
    )
    .unwrap();
    let mut sub: TypedSubscriber<Order, C> =
        TypedSubscriber::new(bus.subscribe(Start::Latest).unwrap()).unwrap();
    let mut publ: TypedPublisher<Order, C> = TypedPublisher::new(bus.publisher().unwrap()).unwrap();
    let sent = orders();
    for o in &sent {
        publ.send(o).unwrap();
    }
    for (i, o) in sent.iter().enumerate() {
        let got = sub.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(&got.value, o);
        assert_eq!(got.seq, i as u64);
    }
}

#[test]
fn structs_with_strings_vectors_and_enums_round_trip() {
    round_trip::<Bincode>(Mode::Reliable);
    round_trip::<Bincode>(Mode::Lossy);
    round_trip::<Postcard>(Mode::Reliable);
    round_trip::<Postcard>(Mode::Lossy);
}

#[test]
fn the_wrong_type_is_a_decode_error_and_the_stream_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::create(
        dir.path().join("w.bus"),
        &BusOptions::new().capacity(1 << 16),
    )
    .unwrap();
    let mut sub: TypedSubscriber<Order> =
        TypedSubscriber::new(bus.subscribe(Start::Latest).unwrap()).unwrap();
    let mut raw = bus.publisher().unwrap();
    raw.send(&[0xff; 3]).unwrap();
    let mut publ: TypedPublisher<Order> = TypedPublisher::new(bus.publisher().unwrap()).unwrap();
    publ.send(&orders()[1]).unwrap();
    match sub.recv() {
        Err(TypedRecvError::Decode {
            seq: 0,
            error: CodecError::Decode { .. } | CodecError::TrailingBytes { .. },
        }) => {}
        other => panic!("expected a decode error, got {other:?}"),
    }
    assert_eq!(sub.recv().unwrap().value, orders()[1]);
}

#[test]
fn codecs_reject_trailing_bytes_and_truncation() {
    let o = &orders()[3];
    let mut buf = vec![0u8; Bincode::encoded_len(o).unwrap() + 1];
    let n = Bincode::encode(o, &mut buf).unwrap();
    assert_eq!(n + 1, buf.len());
    assert!(matches!(
        Bincode::decode::<Order>(&buf),
        Err(CodecError::TrailingBytes { .. })
    ));
    assert!(Bincode::decode::<Order>(&buf[..n - 1]).is_err());
    let mut buf = vec![0u8; Postcard::encoded_len(o).unwrap()];
    let n = Postcard::encode(o, &mut buf).unwrap();
    assert_eq!(Postcard::decode::<Order>(&buf[..n]).unwrap(), *o);
    assert!(Postcard::decode::<Order>(&buf[..n - 1]).is_err());
}

// ---- typed buses: the type in the header ------------------------------------------------------

mod v1 {
    use serde::{Deserialize, Serialize};
    /// The same struct as `v1_copy::Quote`, in another module.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct Quote {
        pub symbol: String,
        pub bid: f64,
        pub ask: f64,
    }
}

mod v1_copy {
    use serde::{Deserialize, Serialize};
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct Quote {
        pub symbol: String,
        pub bid: f64,
        pub ask: f64,
    }
}

/// Each a one-change variant of `v1::Quote`.
mod changed {
    use serde::{Deserialize, Serialize};
    #[derive(Serialize, Deserialize)]
    pub struct Quote {
        pub symbol: String,
        pub bid: f64,
        pub offer: f64, // renamed field
    }
    pub mod reordered {
        #[derive(serde::Serialize, serde::Deserialize)]
        pub struct Quote {
            pub bid: f64,
            pub symbol: String,
            pub ask: f64,
        }
    }
    pub mod retyped {
        #[derive(serde::Serialize, serde::Deserialize)]
        pub struct Quote {
            pub symbol: String,
            pub bid: f32,
            pub ask: f64,
        }
    }
    pub mod nested {
        #[derive(serde::Serialize, serde::Deserialize)]
        pub enum Venue {
            Xnas,
            Xnys,
        }
        #[derive(serde::Serialize, serde::Deserialize)]
        pub struct Quote {
            pub symbol: String,
            pub bid: f64,
            pub ask: f64,
            pub venue: Option<Venue>,
        }
    }
    pub mod more_variants {
        #[derive(serde::Serialize, serde::Deserialize)]
        pub enum Venue {
            Xnas,
            Xnys,
            Bats,
        }
        #[derive(serde::Serialize, serde::Deserialize)]
        pub struct Quote {
            pub symbol: String,
            pub bid: f64,
            pub ask: f64,
            pub venue: Option<Venue>,
        }
    }
}

fn typed_bus(dir: &tempfile::TempDir) -> Bus {
    Bus::create(
        dir.path().join("q.bus"),
        &BusOptions::new().capacity(1 << 16),
    )
    .unwrap()
}

fn fingerprint<T: Serialize + serde::de::DeserializeOwned>() -> u64 {
    // The type a fresh bus records for T.
    let dir = tempfile::tempdir().unwrap();
    let bus = typed_bus(&dir);
    TypedPublisher::<T>::new(bus.publisher().unwrap()).unwrap();
    let t = bus.message_type().unwrap().unwrap();
    assert!(t.traced, "{t}");
    t.fingerprint
}

#[test]
fn the_first_typed_handle_records_the_type_and_others_must_match() {
    let dir = tempfile::tempdir().unwrap();
    let bus = typed_bus(&dir);
    assert_eq!(bus.message_type().unwrap(), None, "a new bus is untyped");
    // Byte-level handles never record or check anything.
    let mut raw = bus.publisher().unwrap();
    assert_eq!(bus.message_type().unwrap(), None);
    let sub = TypedSubscriber::<v1::Quote>::new(bus.subscribe(Start::Latest).unwrap()).unwrap();
    let recorded = bus.message_type().unwrap().unwrap();
    assert!(recorded.name.ends_with("v1::Quote"), "{recorded}");
    assert_eq!(recorded.codec, "postcard");
    // The same schema from another module: accepted.
    let mut publ = TypedPublisher::<v1_copy::Quote>::new(bus.publisher().unwrap()).unwrap();
    // Another type: refused at join, naming both, before anything is decoded.
    let err = TypedSubscriber::<Order>::new(bus.subscribe(Start::Latest).unwrap()).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("v1::Quote") && text.contains("Order"),
        "{text}"
    );
    assert!(matches!(err, bus_core::TypeError::Mismatch { .. }));
    // The same type in another codec: refused too.
    let err = TypedPublisher::<v1::Quote, Bincode>::new(bus.publisher().unwrap()).unwrap_err();
    assert!(err.to_string().contains("bincode"), "{err}");
    // The refused handles' slots were given back (dropped with the error).
    assert_eq!(bus.stats().producers.len(), 2);
    // And the typed pair works.
    let mut sub = sub;
    publ.send(&v1_copy::Quote {
        symbol: "AAPL".into(),
        bid: 189.5,
        ask: 189.6,
    })
    .unwrap();
    assert_eq!(sub.recv().unwrap().value.symbol, "AAPL");
    raw.send(b"bytes are always allowed").unwrap();
}

#[test]
fn what_changes_the_fingerprint() {
    let base = fingerprint::<v1::Quote>();
    assert_eq!(
        base,
        fingerprint::<v1_copy::Quote>(),
        "module path does not count"
    );
    for (what, other) in [
        ("a renamed field", fingerprint::<changed::Quote>()),
        (
            "reordered fields",
            fingerprint::<changed::reordered::Quote>(),
        ),
        ("a field's type", fingerprint::<changed::retyped::Quote>()),
        ("an added field", fingerprint::<changed::nested::Quote>()),
    ] {
        assert_ne!(base, other, "{what} must change the fingerprint");
    }
    assert_ne!(
        fingerprint::<changed::nested::Quote>(),
        fingerprint::<changed::more_variants::Quote>(),
        "a variant added to a nested enum must change it"
    );
}

#[test]
fn two_first_joins_at_the_same_moment_record_exactly_one_type() {
    // Separate opens: separate open file descriptions, so the control lock excludes them as
    // it excludes processes.
    for round in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("race.bus");
        Bus::create(&path, &BusOptions::new().capacity(1 << 16)).unwrap();
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
        let (p1, b1) = (path.clone(), barrier.clone());
        let a = std::thread::spawn(move || {
            let bus = Bus::open(&p1).unwrap();
            let publ = bus.publisher().unwrap();
            b1.wait();
            TypedPublisher::<v1::Quote>::new(publ).is_ok()
        });
        let (p2, b2) = (path.clone(), barrier);
        let b = std::thread::spawn(move || {
            let bus = Bus::open(&p2).unwrap();
            let publ = bus.publisher().unwrap();
            b2.wait();
            TypedPublisher::<Order>::new(publ).is_ok()
        });
        let (a, b) = (a.join().unwrap(), b.join().unwrap());
        assert!(a ^ b, "round {round}: exactly one type wins ({a}, {b})");
        let t = Bus::open(&path).unwrap().message_type().unwrap().unwrap();
        assert_eq!(t.name.ends_with("Quote"), a, "{t}");
    }
}

#[test]
fn a_corrupt_type_record_is_a_typed_error_not_a_panic() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let bus = typed_bus(&dir);
    TypedPublisher::<v1::Quote>::new(bus.publisher().unwrap()).unwrap();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.path().join("q.bus"))
        .unwrap();
    // Flip a byte of the type name (offset 768 + 5 words).
    file.write_at(b"X", 768 + 40).unwrap();
    assert!(matches!(
        bus.message_type(),
        Err(bus_core::TypeError::Corrupt(_))
    ));
    assert!(matches!(
        TypedSubscriber::<v1::Quote>::new(bus.subscribe(Start::Latest).unwrap()),
        Err(bus_core::TypeError::Corrupt(_))
    ));
    // Byte-level handles go on.
    bus.publisher().unwrap().send(b"still a bus").unwrap();
}

#[test]
fn a_type_serde_reflection_cannot_trace_is_recorded_by_name() {
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(untagged)]
    enum Loose {
        N(u64),
        S(String),
    }
    let dir = tempfile::tempdir().unwrap();
    let bus = typed_bus(&dir);
    let mut publ = TypedPublisher::<Loose>::new(bus.publisher().unwrap()).unwrap();
    let t = bus.message_type().unwrap().unwrap();
    assert!(!t.traced && t.name.ends_with("Loose"), "{t}");
    let mut sub = TypedSubscriber::<Loose>::new(bus.subscribe(Start::Latest).unwrap()).unwrap();
    publ.send(&Loose::N(7)).unwrap();
    // (postcard cannot decode untagged enums; that is the codec's business, reported as a
    // decode error, not the type check's.)
    let _ = sub.recv_timeout(Duration::from_secs(1));
    assert!(TypedSubscriber::<Order>::new(bus.subscribe(Start::Latest).unwrap()).is_err());
}

/// A codec whose size pass says one byte more than it writes: a value that changes between
/// the two passes does the same. Review of round 2: the send committed the whole loan, stale
/// ring byte included, and every subscriber then got `TrailingBytes`; it is now an encode
/// error, nothing is published, and the next message goes through.
struct Inexact;

impl bus_core::Codec for Inexact {
    const NAME: &'static str = "inexact";
    fn encoded_len<T: Serialize + ?Sized>(_: &T) -> Result<usize, bus_core::CodecError> {
        Ok(9)
    }
    fn encode<T: Serialize + ?Sized>(
        value: &T,
        buf: &mut [u8],
    ) -> Result<usize, bus_core::CodecError> {
        bus_core::Postcard::encode(value, buf)
    }
    fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, bus_core::CodecError> {
        bus_core::Postcard::decode(bytes)
    }
}

#[test]
fn a_value_that_encodes_shorter_than_its_size_is_not_published() {
    let dir = tempfile::tempdir().unwrap();
    let bus = typed_bus(&dir);
    let mut sub = bus.subscribe(Start::Latest).unwrap();
    let mut publ = TypedPublisher::<[u8; 8], Inexact>::new_unchecked(bus.publisher().unwrap());
    let err = publ.send(&[7; 8]).unwrap_err();
    assert!(
        err.to_string()
            .contains("encoded to 8 bytes where its size pass said 9"),
        "{err}"
    );
    let mut buf = Vec::new();
    assert_eq!(
        sub.try_recv(&mut buf),
        Err(bus_core::TryRecvError::Empty),
        "nothing was delivered"
    );
    let mut exact = TypedPublisher::<[u8; 8]>::new_unchecked(bus.publisher().unwrap());
    exact.send(&[1; 8]).unwrap();
    sub.recv(&mut buf).unwrap();
    assert_eq!(buf, [1; 8]);
}
