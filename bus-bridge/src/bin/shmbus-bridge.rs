//! `shmbus-bridge`: `shmbus bridge` alone (same arguments, same exit codes).

use std::process::ExitCode;

use clap::Parser;

#[global_allocator]
static ALLOC: bus_bridge::Allocator = bus_bridge::Allocator;

/// Carry local shmbus buses to and from a NATS server.
#[derive(Debug, Parser)]
#[command(name = "shmbus-bridge", version, max_term_width = 100)]
struct Cli {
    #[command(flatten)]
    args: bus_bridge::BridgeArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match bus_bridge::run(&cli.args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("shmbus bridge: error: {e:#}");
            ExitCode::from(1)
        }
    }
}
