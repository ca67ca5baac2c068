//! Zero copy on both sides: the publisher writes the message in place inside the ring (a
//! `Loan`), and the subscriber reads it in place (a borrowed `Sample`, reliable mode).
//!
//! `cargo run --example loan`

use bus_core::{Bus, BusOptions, Start};

/// A fixed-layout frame: 8-byte frame number, then pixels.
const FRAME: usize = 64 * 1024;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let bus = Bus::create(
        dir.path().join("frames.bus"),
        &BusOptions::new().capacity(4 << 20),
    )?;
    let mut sub = bus.subscribe(Start::Latest)?;
    let mut publ = bus.publisher()?;

    for frame in 0..8u64 {
        // Borrow FRAME bytes of the ring and fill them directly: no intermediate buffer.
        let mut loan = publ.loan(FRAME)?;
        loan[..8].copy_from_slice(&frame.to_le_bytes());
        loan[8..].fill(frame as u8);
        loan.commit()?;
    }
    // A loan dropped without commit is abandoned: subscribers never see it.
    drop(publ.loan(FRAME)?);

    for expected in 0..8u64 {
        let sample = sub.recv_ref()?; // borrows the bytes in the ring
        let frame = u64::from_le_bytes(sample[..8].try_into()?);
        assert_eq!(frame, expected);
        assert!(sample[8..].iter().all(|&b| b == frame as u8));
        println!(
            "frame {frame}: {} bytes read in place (seq {})",
            sample.len(),
            sample.seq
        );
    }
    assert!(
        sub.try_recv_ref().is_err(),
        "the abandoned loan was not delivered"
    );
    Ok(())
}
