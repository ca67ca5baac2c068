//! iceoryx2 as a transport (cargo feature `iceoryx2`): the comparison a user choosing a
//! shared-memory IPC library would make.
//!
//! Configured as shmbus's `shmbus-spin` runs, so that the two do the same work per message:
//! * publish-subscribe of `[u8]` slices, one service per direction in the run directory;
//! * the sender fills the message in its own buffer, loans an uninitialised slice of the
//!   publisher's shared-memory pool and copies the message into it (as `Publisher::send`
//!   copies into the ring), then sends;
//! * the receiver busy-polls `Subscriber::receive` and reads the sample in place (as
//!   `recv_ref`);
//! * **no drops**: safe overflow off (a full subscriber queue is never overwritten) and the
//!   publisher's backpressure strategy `RetryUntilDelivered` (it retries until the
//!   subscriber has room), so that every message reaches every subscriber, like a reliable bus;
//! * history 0 (subscribers exist before the first message);
//!
//! Known limit: under load a run can still lose its first messages (the publisher's `send`
//! reports them delivered, the subscriber never sees them: a race of the two ends setting up
//! their connection); the sequence check fails such a run, or it times out.
//! a subscriber queue as deep as the
//!   bus's ring has room for such messages ([`Shmbus::capacity`] / size, between 16 and 1024
//!   samples: deeper adds nothing once the reader keeps up, and the pool grows with it).

use std::io;
use std::path::Path;

use iceoryx2::prelude::*;
use iceoryx2::service::port_factory::publish_subscribe::PortFactory as PubSubFactory;

use crate::transport::{DuplexEnds, Rx, Shmbus, Side, Transport, Tx};

type Svc = ipc::Service;
/// A service of byte slices.
type Factory = PubSubFactory<Svc, [u8], ()>;

/// iceoryx2 publish-subscribe.
pub struct Iceoryx2;

/// Subscriber queue depth for `size`-byte messages.
fn depth(size: usize) -> usize {
    (Shmbus::capacity(size) / size.max(1) as u64).clamp(16, 1024) as usize
}

fn err(e: impl std::fmt::Debug) -> io::Error {
    io::Error::other(format!("iceoryx2: {e:?}"))
}

/// The node of this process and the service `which` of the run in `dir`.
fn service(dir: &Path, which: &str, size: usize) -> io::Result<(Node<Svc>, Factory)> {
    set_log_level(LogLevel::Error);
    let node = NodeBuilder::new().create::<Svc>().map_err(err)?;
    let run = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name: ServiceName = format!("shmbus-bench/{run}/{which}")
        .as_str()
        .try_into()
        .map_err(err)?;
    let factory = node
        .service_builder(&name)
        .publish_subscribe::<[u8]>()
        .enable_safe_overflow(false)
        .history_size(0)
        .subscriber_max_buffer_size(depth(size))
        .max_subscribers(8)
        .max_publishers(1)
        .open_or_create()
        .map_err(err)?;
    Ok((node, factory))
}

struct IceTx {
    publ: iceoryx2::port::publisher::Publisher<Svc, [u8], ()>,
    buf: Vec<u8>,
    /// Subscribers every message must reach.
    receivers: usize,
    // Dropped after the publisher.
    _factory: Factory,
    _node: Node<Svc>,
}

impl IceTx {
    fn new(dir: &Path, which: &str, size: usize, receivers: usize) -> io::Result<IceTx> {
        let (node, factory) = service(dir, which, size)?;
        let publ = factory
            .publisher_builder()
            .initial_max_slice_len(size)
            .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
            .create()
            .map_err(err)?;
        Ok(IceTx {
            publ,
            buf: Vec::new(),
            receivers,
            _factory: factory,
            _node: node,
        })
    }
}

impl Tx for IceTx {
    fn send(&mut self, size: usize, fill: &mut dyn FnMut(&mut [u8])) -> io::Result<()> {
        self.buf.resize(size, 0);
        fill(&mut self.buf);
        // `send` returns how many subscribers the sample reached. `RetryUntilDelivered` waits
        // while a connected subscriber's queue is full, but a subscriber whose end of the
        // connection is not set up yet (it connects on its next `receive`, later if it is
        // descheduled) is skipped silently once the queue is full: send again until the one
        // receiver has it. (Only at the start of a run; with one receiver nobody gets a
        // message twice.)
        let mut since = None;
        loop {
            let sample = self.publ.loan_slice_uninit(size).map_err(err)?;
            let sample = sample.write_from_slice(&self.buf);
            match sample.send().map_err(err)? {
                // A receiver that is gone (it found a bad sequence, say) never connects:
                // give up after a second.
                0 if since.get_or_insert_with(std::time::Instant::now).elapsed()
                    > std::time::Duration::from_secs(1) =>
                {
                    return Err(io::Error::other("iceoryx2: no subscriber took the message"))
                }
                0 => std::thread::yield_now(),
                n if n == self.receivers => return Ok(()),
                n => {
                    return Err(io::Error::other(format!(
                        "iceoryx2: a message reached {n} of {} subscribers",
                        self.receivers
                    )))
                }
            }
        }
    }
}

struct IceRx {
    sub: iceoryx2::port::subscriber::Subscriber<Svc, [u8], ()>,
    _factory: Factory,
    _node: Node<Svc>,
}

impl IceRx {
    fn new(dir: &Path, which: &str, size: usize) -> io::Result<IceRx> {
        let (node, factory) = service(dir, which, size)?;
        let sub = factory
            .subscriber_builder()
            .buffer_size(depth(size))
            .create()
            .map_err(err)?;
        Ok(IceRx {
            sub,
            _factory: factory,
            _node: node,
        })
    }
}

impl Rx for IceRx {
    fn recv(&mut self, f: &mut dyn FnMut(&[u8])) -> io::Result<()> {
        loop {
            if let Some(sample) = self.sub.receive().map_err(err)? {
                f(sample.payload());
                return Ok(());
            }
            std::hint::spin_loop();
        }
    }
}

/// The message size of a run, which the children know but `receiver`/`duplex` are not told:
/// the parent writes it into the run directory in `prepare`.
fn size_of_run(dir: &Path) -> io::Result<usize> {
    std::fs::read_to_string(dir.join("iceoryx2.size"))?
        .trim()
        .parse()
        .map_err(io::Error::other)
}

impl Transport for Iceoryx2 {
    fn name(&self) -> &'static str {
        "iceoryx2"
    }
    fn about(&self) -> &'static str {
        "iceoryx2 0.10 publish-subscribe: loaned slices, busy-polling subscriber, no drops (safe overflow off, RetryUntilDelivered)"
    }
    fn is_peer(&self) -> bool {
        true
    }
    fn prepare(&self, dir: &Path, receivers: u32, size: usize, _duplex: bool) -> io::Result<()> {
        if receivers > 1 {
            // A subscriber that connects late misses messages silently (see `IceTx::send`);
            // with one, resending is exact, with several it would duplicate.
            return Err(io::Error::other(
                "iceoryx2 runs with one receiver here (no fan-out)",
            ));
        }
        std::fs::write(dir.join("iceoryx2.size"), size.to_string())
    }
    fn receiver(&self, dir: &Path, _index: u32) -> io::Result<(Box<dyn Rx>, String)> {
        let size = size_of_run(dir)?;
        Ok((Box::new(IceRx::new(dir, "a", size)?), String::new()))
    }
    fn sender(&self, dir: &Path, tokens: &[String]) -> io::Result<Box<dyn Tx>> {
        let size = size_of_run(dir)?;
        Ok(Box::new(IceTx::new(dir, "a", size, tokens.len())?))
    }
    fn duplex(&self, dir: &Path, side: Side, _token: &str) -> io::Result<DuplexEnds> {
        let size = size_of_run(dir)?;
        let (out, inp) = match side {
            Side::A => ("a", "b"),
            Side::B => ("b", "a"),
        };
        // Subscribe first: B's subscriber exists before A publishes, A's before B replies.
        let rx = IceRx::new(dir, inp, size)?;
        let tx = IceTx::new(dir, out, size, 1)?;
        Ok((Box::new(tx), Box::new(rx), String::new()))
    }
}
