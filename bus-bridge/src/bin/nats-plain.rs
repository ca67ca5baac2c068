//! The bridge benchmark's plain client, with the default allocator (see `common/plain.rs`).

#[path = "common/plain.rs"]
mod plain;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    plain::main()
}
