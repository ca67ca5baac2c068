//! Model tests of the ring protocol under loom (`RUSTFLAGS="--cfg loom"`).

mod loom_ring;
