//! A publish/subscribe message bus for processes on one Linux machine.
//!
//! Every participant maps the same file; messages move through a lock-free multi-producer
//! broadcast ring inside it. No broker, no socket, no copy through the kernel: a publish is a
//! 16-byte compare-and-swap, a copy and a store; a receive is a load and a copy (or a borrow).
//!
//! ```
//! use bus_core::{Bus, BusOptions, Start};
//! # let dir = tempfile::tempdir().unwrap();
//! # let path = dir.path().join("quotes.bus");
//! let bus = Bus::create(&path, &BusOptions::new().capacity(1 << 20))?;  // or Bus::open(&path)
//! let mut sub = bus.subscribe(Start::Latest)?;
//! let mut publ = bus.publisher()?;
//! publ.send(b"AAPL 189.5")?;
//! let mut buf = Vec::new();
//! let msg = sub.recv(&mut buf)?;
//! assert_eq!((msg.seq, &buf[..]), (0, &b"AAPL 189.5"[..]));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! * [`Bus`]: create / open the file ([`BusOptions`], [`Mode`]).
//! * [`Publisher`]: `send`, `try_send`, `send_timeout`, and the zero-copy [`Loan`].
//! * [`Subscriber`]: `recv`, `try_recv`, `recv_timeout`, and the borrowed [`Sample`].
//! * [`TypedPublisher`] / [`TypedSubscriber`]: serde values over a [`Codec`], on a bus that
//!   records its message type ([`BusType`]) and refuses typed handles of another.
//! * [`WaitSet`]: one thread waiting on subscribers of many buses.
//! * [`Server`] / [`Client`]: request/reply over two buses, with [`RequestError::ServerGone`]
//!   when the server's process dies.
//! * `AsyncSubscriber` / `AsyncPublisher` (feature `async`, alias `tokio`): futures and a
//!   `Stream`, for any executor, with one waiter thread per process, not one per handle.
//!
//! The modules follow the design notes: `layout` (the file format), `mapping` (create/open),
//! `ring` (the protocol), `wait` (futexes), `lock` (the control lock), `registry` (slots).

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]

#[cfg(not(target_os = "linux"))]
compile_error!("shmbus uses Linux futexes and open-file-description locks: Linux only");

mod fault;
pub mod layout;
pub(crate) mod ring;
pub(crate) mod sync;

#[cfg(all(not(loom), feature = "async"))]
mod async_bus;
#[cfg(not(loom))]
mod bus;
#[cfg(not(loom))]
mod lock;
#[cfg(not(loom))]
mod mapping;
#[cfg(not(loom))]
mod publisher;
#[cfg(all(not(loom), feature = "async"))]
mod reactor;
#[cfg(not(loom))]
mod registry;
#[cfg(not(loom))]
mod repair;
#[cfg(not(loom))]
mod reqrep;
#[cfg(not(loom))]
mod slots;
#[cfg(not(loom))]
mod subscriber;
#[cfg(not(loom))]
mod typed;
#[cfg(not(loom))]
mod typeinfo;
#[cfg(not(loom))]
mod wait;
#[cfg(not(loom))]
mod waitset;

#[cfg(all(not(loom), feature = "async"))]
pub use async_bus::{AsyncPublisher, AsyncSubscriber, OwnedMessage};
#[cfg(not(loom))]
pub(crate) use bus::Shared;
#[cfg(not(loom))]
pub use bus::{
    default_dir, ensure_dir, resolve, Bus, BusOptions, BusStats, OpenOptions, ProducerStats, Start,
    SubscriberStats, DEFAULT_CAPACITY, DEFAULT_UNBLOCK_TIMEOUT,
};
pub use layout::{Config, ConfigError, HeaderError, Mode, RecordKey};
#[cfg(not(loom))]
pub use lock::LockError;
#[cfg(not(loom))]
pub use mapping::{FileKind, OpenError, OpenErrorKind};
#[cfg(not(loom))]
pub use publisher::{
    CommitError, Loan, LoanError, LoanTimeoutError, Publisher, SendError, SendTimeoutError, Sent,
    TryLoanError, TrySendError,
};
#[cfg(not(loom))]
pub use registry::{JoinError, SlotKind};
#[cfg(all(not(loom), feature = "async"))]
pub use reqrep::AsyncClient;
#[cfg(not(loom))]
pub use reqrep::{Client, ConnectError, ReplyTo, Request, RequestError, Server, FRAME_HEADER};
pub use ring::RecordProblem;
#[cfg(not(loom))]
pub use subscriber::{
    Message, RecvError, RecvTimeoutError, Sample, SubscribeError, Subscriber, TryRecvError,
};
#[cfg(all(not(loom), feature = "bincode"))]
pub use typed::{Bincode, BINCODE_DECODE_LIMIT};
#[cfg(not(loom))]
pub use typed::{
    Codec, CodecError, Postcard, Typed, TypedPublisher, TypedRecvError, TypedSendError,
    TypedSubscriber,
};
#[cfg(not(loom))]
pub use typeinfo::{BusType, TypeError};
#[cfg(not(loom))]
pub use wait::WaitStrategy;
#[cfg(not(loom))]
pub use waitset::{Interrupter, WaitKey, WaitSet};

#[cfg(test)]
mod tests;
