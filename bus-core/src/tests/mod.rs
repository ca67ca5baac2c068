//! Model tests of the ring protocol under loom (`RUSTFLAGS="--cfg loom"`), and property
//! tests of the reader and the repairer over arbitrary ring bytes.

#[cfg(loom)]
mod loom_ring;
#[cfg(not(loom))]
mod prop_ring;
