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
        TypedSubscriber::new(bus.subscribe(Start::Latest).unwrap());
    let mut publ: TypedPublisher<Order, C> = TypedPublisher::new(bus.publisher().unwrap());
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
        TypedSubscriber::new(bus.subscribe(Start::Latest).unwrap());
    let mut raw = bus.publisher().unwrap();
    raw.send(&[0xff; 3]).unwrap();
    let mut publ: TypedPublisher<Order> = TypedPublisher::new(bus.publisher().unwrap());
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
