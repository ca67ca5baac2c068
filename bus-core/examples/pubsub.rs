//! Two processes exchanging bytes over a bus.
//!
//! `cargo run --example pubsub` creates a bus in a temporary directory, starts a second
//! process (this program again, as the subscriber), publishes a few messages and waits for
//! the subscriber to print them.

use std::process::Command;
use std::time::Duration;

use bus_core::{Bus, BusOptions, Start};

fn subscriber(path: &str) -> Result<(), Box<dyn std::error::Error>> {
    let bus = Bus::open(path)?;
    // Oldest: also read what was published before this process subscribed.
    let mut sub = bus.subscribe(Start::Oldest)?;
    let mut buf = Vec::new();
    loop {
        let msg = sub.recv_timeout(&mut buf, Duration::from_secs(10))?;
        let text = String::from_utf8_lossy(&buf);
        println!(
            "[subscriber pid {}] seq {} : {text}",
            std::process::id(),
            msg.seq
        );
        if text == "bye" {
            return Ok(());
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 3 && args[1] == "sub" {
        return subscriber(&args[2]);
    }
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("chat.bus");
    let bus = Bus::create(&path, &BusOptions::new().capacity(1 << 20))?;
    let mut publ = bus.publisher()?;
    publ.send(b"hello from the publisher")?;
    let mut child = Command::new(std::env::current_exe()?)
        .args(["sub", path.to_str().unwrap()])
        .spawn()?;
    for i in 1..=3 {
        publ.send(format!("message {i}").as_bytes())?;
        std::thread::sleep(Duration::from_millis(50));
    }
    publ.send(b"bye")?;
    let status = child.wait()?;
    assert!(status.success(), "subscriber failed: {status}");
    println!("[publisher] done: {} messages sent", publ.sent());
    Ok(())
}
