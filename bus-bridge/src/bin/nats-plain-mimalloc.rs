//! The bridge benchmark's plain client, with the bridge's allocator (see `common/plain.rs`).

#[global_allocator]
static ALLOC: bus_bridge::Allocator = bus_bridge::Allocator;

#[path = "common/plain.rs"]
mod plain;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    plain::main()
}
