//! `bus-typed-peer`: a process that joins a bus with a typed handle, for the typed-bus tests
//! across processes (issue 12). Not a user tool.
//!
//! ```text
//! bus-typed-peer BUS pub|sub quote|order HOLD_MS
//! ```
//!
//! Joins `BUS` with a `TypedPublisher` or a `TypedSubscriber` (from the oldest message) of
//! `quotes::Quote` or `orders::Order`, both with the default codec. Prints `joined`, or
//! `refused: <the error>` and exits 3. A publisher then sends one value; a subscriber
//! receives one (within 10 s) and prints `got <value>`. Either holds its handle HOLD_MS ms
//! before it exits.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use bus_core::{Bus, Start, TypeError, TypedPublisher, TypedSubscriber};

mod quotes {
    #[derive(Debug, serde::Serialize, serde::Deserialize)]
    pub struct Quote {
        pub symbol: String,
        pub bid: f64,
        pub ask: f64,
    }
}

mod orders {
    #[derive(Debug, serde::Serialize, serde::Deserialize)]
    pub struct Order {
        pub id: u64,
        pub qty: u32,
    }
}

fn say(line: &str) {
    println!("{line}");
    std::io::stdout().flush().ok();
}

fn run(args: &[String]) -> Result<bool, String> {
    let [_, path, role, ty, hold] = args else {
        return Err("usage: bus-typed-peer BUS pub|sub quote|order HOLD_MS".into());
    };
    let hold = Duration::from_millis(hold.parse().map_err(|_| format!("bad HOLD_MS {hold}"))?);
    let bus = Bus::open(path).map_err(|e| e.to_string())?;
    let refused = |e: TypeError| {
        say(&format!("refused: {e}"));
        Ok(false)
    };
    match (role.as_str(), ty.as_str()) {
        ("pub", "quote") => {
            let mut p = match TypedPublisher::<quotes::Quote>::new(
                bus.publisher().map_err(|e| e.to_string())?,
            ) {
                Ok(p) => p,
                Err(e) => return refused(e),
            };
            say("joined");
            p.send(&quotes::Quote {
                symbol: "AAPL".into(),
                bid: 189.5,
                ask: 189.6,
            })
            .map_err(|e| e.to_string())?;
        }
        ("pub", "order") => {
            let mut p = match TypedPublisher::<orders::Order>::new(
                bus.publisher().map_err(|e| e.to_string())?,
            ) {
                Ok(p) => p,
                Err(e) => return refused(e),
            };
            say("joined");
            p.send(&orders::Order { id: 7, qty: 100 })
                .map_err(|e| e.to_string())?;
        }
        ("sub", "quote") => {
            let sub = bus.subscribe(Start::Oldest).map_err(|e| e.to_string())?;
            let mut s = match TypedSubscriber::<quotes::Quote>::new(sub) {
                Ok(s) => s,
                Err(e) => return refused(e),
            };
            say("joined");
            let m = s
                .recv_timeout(Duration::from_secs(10))
                .map_err(|e| e.to_string())?;
            say(&format!("got {}", m.value.symbol));
        }
        ("sub", "order") => {
            let sub = bus.subscribe(Start::Oldest).map_err(|e| e.to_string())?;
            let mut s = match TypedSubscriber::<orders::Order>::new(sub) {
                Ok(s) => s,
                Err(e) => return refused(e),
            };
            say("joined");
            let m = s
                .recv_timeout(Duration::from_secs(10))
                .map_err(|e| e.to_string())?;
            say(&format!("got order {}", m.value.id));
        }
        _ => return Err(format!("unknown role or type: {role} {ty}")),
    }
    std::thread::sleep(hold);
    Ok(true)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(3),
        Err(e) => {
            eprintln!("bus-typed-peer: {e}");
            ExitCode::from(1)
        }
    }
}
