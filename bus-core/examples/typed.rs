//! Typed messages with serde: a struct with strings, vectors and an enum, encoded straight
//! into the ring with postcard (the default codec) and decoded on the other side.
//!
//! `cargo run --example typed`

use std::time::Duration;

use bus_core::{Bus, BusOptions, Start, TypedPublisher, TypedSubscriber};
use serde::{Deserialize, Serialize};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Reading {
    Temperature { celsius: f32 },
    Humidity(f32),
    Offline,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Sample {
    sensor: String,
    at_ms: u64,
    readings: Vec<Reading>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let bus = Bus::create(
        dir.path().join("sensors.bus"),
        &BusOptions::new().capacity(1 << 20),
    )?;

    // Subscribe first: reliable mode delivers everything published after this.
    let mut sub: TypedSubscriber<Sample> = TypedSubscriber::new(bus.subscribe(Start::Latest)?)?;
    let mut publ: TypedPublisher<Sample> = TypedPublisher::new(bus.publisher()?)?;

    let reader = std::thread::spawn(
        move || -> Result<u32, bus_core::TypedRecvError<bus_core::RecvTimeoutError>> {
            let mut n = 0;
            loop {
                let msg = sub.recv_timeout(Duration::from_secs(5))?;
                println!("seq {}: {:?}", msg.seq, msg.value);
                n += 1;
                if msg.value.readings.contains(&Reading::Offline) {
                    return Ok(n);
                }
            }
        },
    );

    for i in 0..3u64 {
        publ.send(&Sample {
            sensor: format!("greenhouse-{i}"),
            at_ms: 1_000 * i,
            readings: vec![
                Reading::Temperature {
                    celsius: 20.5 + i as f32,
                },
                Reading::Humidity(0.4),
            ],
        })?;
    }
    publ.send(&Sample {
        sensor: "greenhouse-0".into(),
        at_ms: 5_000,
        readings: vec![Reading::Offline],
    })?;
    let received = reader.join().unwrap()?;
    assert_eq!(received, 4);
    println!("{received} typed messages round-tripped");
    Ok(())
}
