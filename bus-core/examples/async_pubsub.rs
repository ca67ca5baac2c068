//! One tokio program following three buses with `select!`.
//!
//! `cargo run --release --features async --example async_pubsub` creates three buses (quotes,
//! trades, news) in a temporary directory, starts a second process (this program again) that
//! publishes on all three at different rates, and follows them from one `current_thread`
//! runtime: no thread per bus, and a timer in the same `select!` prints progress.

use std::process::Command;
use std::time::Duration;

use bus_core::{Bus, BusOptions, Start};

const PER_BUS: u64 = 1000;

/// The other process: publishes `PER_BUS` messages on each bus, then "bye".
fn publisher(dir: &str) -> Result<(), Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    rt.block_on(async {
        let mut pubs = Vec::new();
        for name in ["quotes", "trades", "news"] {
            let bus = Bus::open(format!("{dir}/{name}.bus"))?;
            pubs.push(bus.publisher()?.into_async()?);
        }
        for i in 0..PER_BUS {
            // Quotes every round, trades every other, news every fourth... then the rest.
            for (b, publ) in pubs.iter_mut().enumerate() {
                if i % (1 << b) == 0 || i >= PER_BUS / 2 {
                    publ.send(format!("{b}:{i}").as_bytes()).await?;
                }
            }
            if i % 100 == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        for publ in &mut pubs {
            publ.send(b"bye").await?;
        }
        Ok(())
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 3 && args[1] == "publish" {
        return publisher(&args[2]);
    }
    let dir = tempfile::tempdir()?;
    let opts = BusOptions::new().capacity(1 << 16);
    let buses: Vec<Bus> = ["quotes", "trades", "news"]
        .iter()
        .map(|n| Bus::create(dir.path().join(format!("{n}.bus")), &opts))
        .collect::<Result<_, _>>()?;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    let counts = rt.block_on(async {
        // Subscribe before the publisher starts, so nothing is missed.
        let mut quotes = buses[0].subscribe(Start::Latest)?.into_async()?;
        let mut trades = buses[1].subscribe(Start::Latest)?.into_async()?;
        let mut news = buses[2].subscribe(Start::Latest)?.into_async()?;
        let mut child = Command::new(std::env::current_exe()?)
            .args(["publish", dir.path().to_str().ok_or("path")?])
            .spawn()?;

        let (mut q, mut t, mut n) = (Vec::new(), Vec::new(), Vec::new());
        let mut counts = [0u64; 3];
        let mut open = [true; 3];
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        while open.iter().any(|&o| o) {
            // Each branch borrows its own subscriber and buffer; a branch that loses the race
            // is dropped without consuming anything, so nothing is lost or seen twice.
            tokio::select! {
                m = quotes.recv(&mut q), if open[0] => { m?; open[0] = q != b"bye"; counts[0] += 1 }
                m = trades.recv(&mut t), if open[1] => { m?; open[1] = t != b"bye"; counts[1] += 1 }
                m = news.recv(&mut n), if open[2] => { m?; open[2] = n != b"bye"; counts[2] += 1 }
                _ = tick.tick() => println!("so far: quotes {}, trades {}, news {}", counts[0], counts[1], counts[2]),
            }
        }
        let status = child.wait()?;
        if !status.success() {
            return Err(format!("the publisher failed: {status}").into());
        }
        Ok::<_, Box<dyn std::error::Error>>(counts)
    })?;
    println!(
        "received quotes {}, trades {}, news {} (each with its \"bye\")",
        counts[0], counts[1], counts[2]
    );
    // What the publisher sent, plus "bye" on each bus.
    let expected = |b: u64| {
        (0..PER_BUS)
            .filter(|i| i % (1 << b) == 0 || *i >= PER_BUS / 2)
            .count() as u64
            + 1
    };
    assert_eq!(counts, [expected(0), expected(1), expected(2)]);
    Ok(())
}
