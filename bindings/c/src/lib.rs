//! libshmbus: the C ABI of shmbus.
//!
//! A thin layer over `bus_core` (DESIGN.md, round 2: bindings wrap the Rust API, never the
//! file format). `include/shmbus.h` is generated from this crate by cbindgen
//! (`tests/header.rs` checks that it is current); `include/shmbus.hpp` wraps it for C++17.
//!
//! The conventions every exported function follows (rustls-ffi's pattern, iceoryx2's
//! handles):
//!
//! * It returns a [`shmbus_status`]; `SHMBUS_OK` (0) is success. On any other status,
//!   [`shmbus_last_error_message`] gives the text of the error on this thread.
//! * Results go through out-pointers, which are written only as each function documents.
//! * Handles are opaque pointers made by one function and released by its `_free`; a `_free`
//!   of NULL does nothing.
//! * No Rust panic unwinds into C: every body runs under `catch_unwind` (the private `ffi` module) and a panic
//!   becomes `SHMBUS_PANIC`.
//!
//! # Header
//!
//! The doc comments of the exported items are copied into the header, so they are written
//! for a C reader.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]
// The exported names are C names (`shmbus_bus`, `SHMBUS_OK`), as the header shows them.
#![allow(non_camel_case_types)]

mod bus;
mod error;
mod publisher;
mod subscriber;

pub use bus::*;
pub use error::*;
pub use publisher::*;
pub use subscriber::*;
