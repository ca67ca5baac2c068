//! The transports under test, behind one small trait: a new transport is one more impl.
//!
//! Every transport has per-message semantics: one framed message per send and per receive.
//! Byte streams (pipe, unix-stream, tcp) carry a 4-byte little-endian length before each
//! payload, written with the payload in one `write`, and read back with one read for the
//! length and one for the payload. `pipe-batched` is the exception, labelled as a reference:
//! its writer coalesces frames in a 64 KiB user-space buffer and its reader parses frames out
//! of 64 KiB reads — what a user who only wants throughput would try first.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use bus_core::{Bus, BusOptions, Publisher, Start, Subscriber, WaitStrategy};

/// Sends messages (one process).
pub trait Tx {
    /// Sends one message. `fill` writes the message into the buffer it is given (`size`
    /// bytes); transports that can lend memory in place (the shmbus loan) pass their own.
    /// A transport that sends a ready buffer (`shmbus-ready`) has it generated once and then
    /// passes only its first 16 bytes, the header `fill` stamps: `fill` must accept that.
    fn send(&mut self, size: usize, fill: &mut dyn FnMut(&mut [u8])) -> io::Result<()>;
    /// Sends one message per entry of `seqs`, `fill` writing message `seq` into its buffer.
    /// A throughput run's loop: async transports run it as one task (a tokio program's
    /// publishing loop), the others call [`Tx::send`] for each.
    fn send_batch(
        &mut self,
        size: usize,
        seqs: &[u64],
        fill: &mut dyn FnMut(u64, &mut [u8]),
    ) -> io::Result<()> {
        for &seq in seqs {
            self.send(size, &mut |buf| fill(seq, buf))?;
        }
        Ok(())
    }
    /// Pushes out anything buffered (`pipe-batched`).
    fn finish(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Receives messages (one process).
pub trait Rx {
    /// Waits for the next message and hands its bytes to `f` (in place where the transport
    /// allows it).
    fn recv(&mut self, f: &mut dyn FnMut(&[u8])) -> io::Result<()>;
    /// Receives `n` messages, handing each to `f` (which may fail the run). A throughput
    /// run's loop: async transports run it as one task, the others call [`Rx::recv`].
    fn recv_batch(&mut self, n: u64, f: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
        for _ in 0..n {
            let mut r = Ok(());
            self.recv(&mut |msg| r = f(msg))?;
            r?;
        }
        Ok(())
    }
}

/// A ping-pong side's endpoints: what it sends on, what it receives from, and a token for
/// the other side.
pub type DuplexEnds = (Box<dyn Tx>, Box<dyn Rx>, String);

/// One side of a ping-pong pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Sends first (measures).
    A,
    /// Echoes.
    B,
}

/// A way to move messages between processes.
pub trait Transport: Sync {
    /// Name in tables and on the command line.
    fn name(&self) -> &'static str;
    /// A one-line description.
    fn about(&self) -> &'static str;
    /// Whether this is a shared-memory transport (compared against the kernel ones).
    fn is_shmbus(&self) -> bool {
        false
    }
    /// A reference, not a per-message transport (excluded from "best kernel transport").
    fn is_reference(&self) -> bool {
        false
    }
    /// A featureless shared-memory ring (see [`crate::calibration`]): the report computes
    /// "shmbus × calibration ring" from it, and it is not a kernel transport.
    fn is_calibration(&self) -> bool {
        false
    }
    /// Another shared-memory IPC library (iceoryx2): a peer shmbus is compared with, not a
    /// kernel transport.
    fn is_peer(&self) -> bool {
        false
    }
    /// Largest message this transport can carry, if limited.
    fn max_size(&self) -> Option<usize> {
        None
    }
    /// Parent: creates what children need in `dir` for one sender and `receivers` receivers
    /// (or, with `duplex`, a ping-pong pair) of messages up to `size` bytes.
    fn prepare(&self, dir: &Path, receivers: u32, size: usize, duplex: bool) -> io::Result<()>;
    /// Receiver `index`: its endpoint, and a token for the sender (a port, say).
    fn receiver(&self, dir: &Path, index: u32) -> io::Result<(Box<dyn Rx>, String)>;
    /// The sender, given every receiver's token (in index order).
    fn sender(&self, dir: &Path, tokens: &[String]) -> io::Result<Box<dyn Tx>>;
    /// One side of a ping-pong pair. Side B is set up first and its token goes to side A.
    fn duplex(&self, dir: &Path, side: Side, token: &str) -> io::Result<DuplexEnds>;
}

impl std::fmt::Debug for dyn Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Every transport, in table order.
pub fn all() -> Vec<&'static dyn Transport> {
    vec![
        &Shmbus::SPIN,
        &Shmbus::DEFAULT,
        &Shmbus::BLOCK,
        &Shmbus::LOAN,
        &Shmbus::READY,
        &Shmbus::SHARED,
        &ShmAsync::SPIN_THEN_PARK,
        &ShmAsync::PARK,
        &Stream::PIPE,
        &Stream::PIPE_BATCHED,
        &Stream::UNIX,
        &Seqpacket,
        &Stream::TCP,
        &UnixTokio,
        &crate::calibration::Ring::SPSC,
        &crate::calibration::Ring::MPMC,
        #[cfg(feature = "iceoryx2")]
        &crate::iceoryx::Iceoryx2,
    ]
}

/// Looks a transport up by name.
pub fn by_name(name: &str) -> Option<&'static dyn Transport> {
    all().into_iter().find(|t| t.name() == name)
}

// ---- shmbus -------------------------------------------------------------------------------

/// shmbus over a bus file in the run directory.
pub struct Shmbus {
    name: &'static str,
    about: &'static str,
    strategy: WaitStrategy,
    loan: bool,
    /// The sender's message is generated once; each send stamps its header and copies it in.
    ready: bool,
    /// Producer slots of the bus: 1 makes it exclusive (plain-store claims and commits).
    producers: u32,
}

impl Shmbus {
    /// Receivers busy-poll.
    pub const SPIN: Shmbus = Shmbus {
        name: "shmbus-spin",
        about: "shmbus on an exclusive bus (one producer slot), receiver busy-polls (WaitStrategy::Spin)",
        strategy: WaitStrategy::Spin,
        loan: false,
        ready: false,
        producers: 1,
    };
    /// Receivers wait the default way: spin briefly, then sleep on the futex.
    pub const DEFAULT: Shmbus = Shmbus {
        name: "shmbus-default",
        about: "shmbus on an exclusive bus, receiver waits the default way (WaitStrategy::SpinThenBlock: spins briefly, then sleeps on the futex)",
        strategy: WaitStrategy::SpinThenBlock,
        loan: false,
        ready: false,
        producers: 1,
    };
    /// Receivers sleep on the futex whenever the ring is empty.
    pub const BLOCK: Shmbus = Shmbus {
        name: "shmbus-block",
        about: "shmbus on an exclusive bus, receiver sleeps on the futex when empty (WaitStrategy::Block)",
        strategy: WaitStrategy::Block,
        loan: false,
        ready: false,
        producers: 1,
    };
    /// The sender writes each message in place in a loan; receivers busy-poll.
    pub const LOAN: Shmbus = Shmbus {
        name: "shmbus-loan",
        about: "shmbus on an exclusive bus, sender fills each message in place (Loan), receiver busy-polls",
        strategy: WaitStrategy::Spin,
        loan: true,
        ready: false,
        producers: 1,
    };
    /// As `shmbus-spin`, but the sender sends a ready buffer: the message is generated once,
    /// and each `send` stamps its 16-byte header and copies it into the ring (one pass over
    /// the payload, as `send` of a frame that already exists, and as a memcpy).
    pub const READY: Shmbus = Shmbus {
        name: "shmbus-ready",
        about: "shmbus on an exclusive bus, sender sends a ready buffer (generated once; each send stamps the header and copies it in), receiver busy-polls",
        strategy: WaitStrategy::Spin,
        loan: false,
        ready: true,
        producers: 1,
    };
    /// As `shmbus-spin`, on a bus open to many producers: what the claim and commit CASes cost.
    pub const SHARED: Shmbus = Shmbus {
        name: "shmbus-shared",
        about: "shmbus on a bus with 64 producer slots (CAS claim and commit), receiver busy-polls",
        strategy: WaitStrategy::Spin,
        loan: false,
        ready: false,
        producers: 64,
    };

    /// The bus for messages of `size` bytes, with `producers` producer slots. The ring:
    /// 32 messages' worth, but at least 2 MiB and at
    /// most 8 MiB (room for four above 2 MiB), so that it stays in the caches, as a pipe's or
    /// a socket's kernel buffer does. (With the
    /// library's 64 MiB default, large messages go through DRAM on both sides and move at
    /// memory speed instead; `SHMBUS_BENCH_CAPACITY=BYTES` overrides the choice.)
    pub fn options(size: usize, producers: u32) -> BusOptions {
        let capacity = Self::capacity(size);
        let max = (capacity / 4).min(u32::MAX as u64) as u32;
        BusOptions::new()
            .capacity(capacity)
            .max_message(max.max(size.min(u32::MAX as usize) as u32))
            .max_producers(producers)
    }

    /// The ring's size for messages of `size` bytes (see [`Shmbus::options`]); the
    /// calibration rings and iceoryx2's queues get the same room.
    pub fn capacity(size: usize) -> u64 {
        std::env::var("SHMBUS_BENCH_CAPACITY")
            .ok()
            .and_then(|c| c.parse::<u64>().ok())
            .filter(|c| c.is_power_of_two())
            .unwrap_or_else(|| {
                ((size as u64) * 32)
                    .next_power_of_two()
                    .clamp(2 << 20, 8 << 20)
                    // Messages above 2 MiB: room for four.
                    .max((size as u64 * 4).next_power_of_two())
            })
    }

    fn open(path: &Path) -> io::Result<Bus> {
        Bus::open(path).map_err(io::Error::other)
    }
}

/// Aligned to two cache lines so that where the allocator puts it (glibc and mimalloc differ)
/// cannot change which lines its hot fields share: it moved `ring-mpmc` by 6 %.
#[repr(align(128))]
struct ShmTx {
    publ: Publisher,
    loan: bool,
    ready: bool,
    buf: Vec<u8>,
}

impl Tx for ShmTx {
    fn send(&mut self, size: usize, fill: &mut dyn FnMut(&mut [u8])) -> io::Result<()> {
        if self.loan {
            let mut loan = self.publ.loan(size).map_err(io::Error::other)?;
            fill(&mut loan);
            loan.commit().map_err(io::Error::other)?;
        } else {
            if self.ready && self.buf.len() == size {
                // Generated by an earlier send: only the header (sequence, time stamp) changes.
                let mut header = [0u8; 16];
                fill(&mut header);
                self.buf[..16].copy_from_slice(&header);
            } else {
                self.buf.resize(size, 0);
                fill(&mut self.buf);
            }
            self.publ.send(&self.buf).map_err(io::Error::other)?;
        }
        Ok(())
    }
}

/// Aligned like [`ShmTx`].
#[repr(align(128))]
struct ShmRx {
    sub: Subscriber,
}

impl Rx for ShmRx {
    fn recv(&mut self, f: &mut dyn FnMut(&[u8])) -> io::Result<()> {
        let sample = self.sub.recv_ref().map_err(io::Error::other)?;
        f(&sample);
        Ok(())
    }
}

impl Transport for Shmbus {
    fn name(&self) -> &'static str {
        self.name
    }
    fn about(&self) -> &'static str {
        self.about
    }
    fn is_shmbus(&self) -> bool {
        true
    }
    fn prepare(&self, dir: &Path, _receivers: u32, size: usize, duplex: bool) -> io::Result<()> {
        let opts = Self::options(size, self.producers);
        Bus::create(dir.join("a.bus"), &opts).map_err(io::Error::other)?;
        if duplex {
            Bus::create(dir.join("b.bus"), &opts).map_err(io::Error::other)?;
        }
        Ok(())
    }
    fn receiver(&self, dir: &Path, _index: u32) -> io::Result<(Box<dyn Rx>, String)> {
        let bus = Self::open(&dir.join("a.bus"))?;
        let mut sub = bus.subscribe(Start::Latest).map_err(io::Error::other)?;
        sub.set_wait_strategy(self.strategy);
        Ok((Box::new(ShmRx { sub }), String::new()))
    }
    fn sender(&self, dir: &Path, _tokens: &[String]) -> io::Result<Box<dyn Tx>> {
        let bus = Self::open(&dir.join("a.bus"))?;
        let publ = bus.publisher().map_err(io::Error::other)?;
        Ok(Box::new(ShmTx {
            publ,
            loan: self.loan,
            ready: self.ready,
            buf: Vec::new(),
        }))
    }
    fn duplex(&self, dir: &Path, side: Side, _token: &str) -> io::Result<DuplexEnds> {
        let (out, inp) = match side {
            Side::A => ("a.bus", "b.bus"),
            Side::B => ("b.bus", "a.bus"),
        };
        // Subscribe before anyone publishes: B subscribes to a.bus before A exists.
        let in_bus = Self::open(&dir.join(inp))?;
        let mut sub = in_bus.subscribe(Start::Latest).map_err(io::Error::other)?;
        sub.set_wait_strategy(self.strategy);
        let out_bus = Self::open(&dir.join(out))?;
        let publ = out_bus.publisher().map_err(io::Error::other)?;
        Ok((
            Box::new(ShmTx {
                publ,
                loan: self.loan,
                ready: self.ready,
                buf: Vec::new(),
            }),
            Box::new(ShmRx { sub }),
            String::new(),
        ))
    }
}

// ---- byte streams: pipe, pipe-batched, unix-stream, tcp -----------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum StreamKind {
    Pipe,
    Unix,
    Tcp,
}

/// A byte-stream transport with length-prefixed frames.
pub struct Stream {
    name: &'static str,
    about: &'static str,
    kind: StreamKind,
    batched: bool,
}

impl Stream {
    /// A named pipe (FIFO) per receiver.
    pub const PIPE: Stream = Stream {
        name: "pipe",
        about: "pipe (FIFO), one framed write and two reads per message",
        kind: StreamKind::Pipe,
        batched: false,
    };
    /// A pipe with user-space buffering on both ends: a reference, not per-message.
    pub const PIPE_BATCHED: Stream = Stream {
        name: "pipe-batched",
        about: "pipe with 64 KiB user-space buffers on both ends (reference: batches messages)",
        kind: StreamKind::Pipe,
        batched: true,
    };
    /// A Unix stream socket per receiver.
    pub const UNIX: Stream = Stream {
        name: "unix-stream",
        about: "Unix stream socket, one framed write and two reads per message",
        kind: StreamKind::Unix,
        batched: false,
    };
    /// TCP over 127.0.0.1 with TCP_NODELAY.
    pub const TCP: Stream = Stream {
        name: "tcp",
        about: "TCP over 127.0.0.1 (TCP_NODELAY), one framed write and two reads per message",
        kind: StreamKind::Tcp,
        batched: false,
    };

    fn fifo(dir: &Path, name: &str) -> PathBuf {
        dir.join(name)
    }

    fn sock(dir: &Path, index: u32) -> PathBuf {
        dir.join(format!("s{index}.sock"))
    }

    /// The receiving end of endpoint `index` (a listener is bound before "ready").
    fn listen(&self, dir: &Path, index: u32) -> io::Result<(Pending, String)> {
        match self.kind {
            StreamKind::Pipe => Ok((
                Pending::Fifo(Self::fifo(dir, &format!("f{index}"))),
                String::new(),
            )),
            StreamKind::Unix => Ok((
                Pending::Unix(UnixListener::bind(Self::sock(dir, index))?),
                String::new(),
            )),
            StreamKind::Tcp => {
                let l = TcpListener::bind("127.0.0.1:0")?;
                let port = l.local_addr()?.port().to_string();
                Ok((Pending::Tcp(l), port))
            }
        }
    }

    /// The sending end to endpoint `index` with `token`.
    fn connect(&self, dir: &Path, index: u32, token: &str) -> io::Result<Duplex> {
        match self.kind {
            StreamKind::Pipe => {
                let w = std::fs::OpenOptions::new()
                    .write(true)
                    .open(Self::fifo(dir, &format!("f{index}")))?;
                Ok(Duplex::Fifo(w))
            }
            StreamKind::Unix => Ok(Duplex::Unix(UnixStream::connect(Self::sock(dir, index))?)),
            StreamKind::Tcp => {
                let port: u16 = token.parse().map_err(io::Error::other)?;
                let s = TcpStream::connect(("127.0.0.1", port))?;
                s.set_nodelay(true)?;
                Ok(Duplex::Tcp(s))
            }
        }
    }
}

/// A receiving endpoint before the sender arrives.
enum Pending {
    Fifo(PathBuf),
    Unix(UnixListener),
    Tcp(TcpListener),
}

impl Pending {
    fn accept(self) -> io::Result<Box<dyn Read + Send>> {
        Ok(match self {
            Pending::Fifo(p) => Box::new(File::open(p)?),
            Pending::Unix(l) => Box::new(l.accept()?.0),
            Pending::Tcp(l) => {
                let s = l.accept()?.0;
                s.set_nodelay(true)?;
                Box::new(s)
            }
        })
    }
}

/// A connected stream.
enum Duplex {
    Fifo(File),
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Duplex {
    fn split(self) -> io::Result<(Box<dyn Write + Send>, Box<dyn Read + Send>)> {
        Ok(match self {
            Duplex::Fifo(_) => return Err(io::Error::other("a FIFO is one-way")),
            Duplex::Unix(s) => (Box::new(s.try_clone()?), Box::new(s)),
            Duplex::Tcp(s) => (Box::new(s.try_clone()?), Box::new(s)),
        })
    }

    fn writer(self) -> Box<dyn Write + Send> {
        match self {
            Duplex::Fifo(f) => Box::new(f),
            Duplex::Unix(s) => Box::new(s),
            Duplex::Tcp(s) => Box::new(s),
        }
    }
}

/// Writes `[len][payload]` frames to every output, one `write_all` per frame and output.
struct FrameTx {
    outs: Vec<Box<dyn Write + Send>>,
    frame: Vec<u8>,
}

impl Tx for FrameTx {
    fn send(&mut self, size: usize, fill: &mut dyn FnMut(&mut [u8])) -> io::Result<()> {
        self.frame.resize(4 + size, 0);
        self.frame[..4].copy_from_slice(&(size as u32).to_le_bytes());
        fill(&mut self.frame[4..]);
        for out in &mut self.outs {
            out.write_all(&self.frame)?;
        }
        Ok(())
    }
    fn finish(&mut self) -> io::Result<()> {
        for out in &mut self.outs {
            out.flush()?;
        }
        Ok(())
    }
}

/// Reads `[len][payload]` frames: one read for the length, one for the payload.
struct FrameRx {
    input: Box<dyn Read + Send>,
    buf: Vec<u8>,
}

impl Rx for FrameRx {
    fn recv(&mut self, f: &mut dyn FnMut(&[u8])) -> io::Result<()> {
        let mut len = [0u8; 4];
        self.input.read_exact(&mut len)?;
        self.buf.resize(u32::from_le_bytes(len) as usize, 0);
        self.input.read_exact(&mut self.buf)?;
        f(&self.buf);
        Ok(())
    }
}

/// Defers a receiver's accept to its first receive, so that "ready" can be printed while the
/// listener waits for the sender.
struct LazyRx {
    pending: Option<Pending>,
    batched: bool,
    rx: Option<FrameRx>,
}

impl Rx for LazyRx {
    fn recv(&mut self, f: &mut dyn FnMut(&[u8])) -> io::Result<()> {
        if self.rx.is_none() {
            let input = self.pending.take().expect("accepted once").accept()?;
            let input: Box<dyn Read + Send> = if self.batched {
                Box::new(BufReader::with_capacity(1 << 16, input))
            } else {
                input
            };
            self.rx = Some(FrameRx {
                input,
                buf: Vec::new(),
            });
        }
        self.rx.as_mut().expect("set above").recv(f)
    }
}

impl Transport for Stream {
    fn name(&self) -> &'static str {
        self.name
    }
    fn about(&self) -> &'static str {
        self.about
    }
    fn is_reference(&self) -> bool {
        self.batched
    }
    fn prepare(&self, dir: &Path, receivers: u32, _size: usize, duplex: bool) -> io::Result<()> {
        if self.kind == StreamKind::Pipe {
            let names: Vec<String> = if duplex {
                vec!["ab".into(), "ba".into()]
            } else {
                (0..receivers).map(|i| format!("f{i}")).collect()
            };
            for n in names {
                rustix::fs::mknodat(
                    rustix::fs::CWD,
                    Self::fifo(dir, &n),
                    rustix::fs::FileType::Fifo,
                    rustix::fs::Mode::from_raw_mode(0o600),
                    0,
                )?;
            }
        }
        Ok(())
    }
    fn receiver(&self, dir: &Path, index: u32) -> io::Result<(Box<dyn Rx>, String)> {
        let (pending, token) = self.listen(dir, index)?;
        Ok((
            Box::new(LazyRx {
                pending: Some(pending),
                batched: self.batched,
                rx: None,
            }),
            token,
        ))
    }
    fn sender(&self, dir: &Path, tokens: &[String]) -> io::Result<Box<dyn Tx>> {
        let mut outs = Vec::new();
        for (i, token) in tokens.iter().enumerate() {
            let w = self.connect(dir, i as u32, token)?.writer();
            outs.push(if self.batched {
                Box::new(BufWriter::with_capacity(1 << 16, w)) as Box<dyn Write + Send>
            } else {
                w
            });
        }
        Ok(Box::new(FrameTx {
            outs,
            frame: Vec::new(),
        }))
    }
    fn duplex(&self, dir: &Path, side: Side, token: &str) -> io::Result<DuplexEnds> {
        if self.batched {
            return Err(io::Error::other(
                "pipe-batched has no ping-pong: it batches",
            ));
        }
        let frames =
            |w: Box<dyn Write + Send>, r: Box<dyn Read + Send>| -> (Box<dyn Tx>, Box<dyn Rx>) {
                (
                    Box::new(FrameTx {
                        outs: vec![w],
                        frame: Vec::new(),
                    }),
                    Box::new(FrameRx {
                        input: r,
                        buf: Vec::new(),
                    }),
                )
            };
        if self.kind == StreamKind::Pipe {
            // Opening a FIFO blocks until the other end opens too, so both sides open on
            // first use (after "ready"): A opens ab for writing then ba for reading, B the
            // other way round, so the two blocking opens pair up.
            let conn = PendingDuplex::new(Opener::Fifo {
                side,
                ab: Self::fifo(dir, "ab"),
                ba: Self::fifo(dir, "ba"),
            });
            return Ok((Box::new(conn.tx()), Box::new(conn), String::new()));
        }
        match side {
            Side::B => {
                // B listens; it accepts on its first receive.
                let (pending, tok) = self.listen(dir, 0)?;
                let conn = PendingDuplex::new(Opener::Socket(pending));
                Ok((Box::new(conn.tx()), Box::new(conn), tok))
            }
            Side::A => {
                let (w, r) = self.connect(dir, 0, token)?.split()?;
                let (t, r) = frames(w, r);
                Ok((t, r, String::new()))
            }
        }
    }
}

/// A ping-pong side that connects on first use: side B of a socket pair (accepts, then
/// answers on the same connection), or either side of a FIFO pair.
struct PendingDuplex {
    shared: std::sync::Arc<std::sync::Mutex<DuplexState>>,
}

/// How a [`PendingDuplex`] connects.
enum Opener {
    Socket(Pending),
    Fifo {
        side: Side,
        ab: PathBuf,
        ba: PathBuf,
    },
}

enum DuplexState {
    Waiting(Option<Opener>),
    Open {
        r: Box<dyn Read + Send>,
        w: Box<dyn Write + Send>,
        buf: Vec<u8>,
        frame: Vec<u8>,
    },
}

impl PendingDuplex {
    fn new(p: Opener) -> Self {
        PendingDuplex {
            shared: std::sync::Arc::new(std::sync::Mutex::new(DuplexState::Waiting(Some(p)))),
        }
    }

    fn tx(&self) -> PendingDuplex {
        PendingDuplex {
            shared: self.shared.clone(),
        }
    }

    fn open(state: &mut DuplexState) -> io::Result<()> {
        if let DuplexState::Waiting(p) = state {
            let (w, r): (Box<dyn Write + Send>, Box<dyn Read + Send>) = match p
                .take()
                .expect("opened once")
            {
                Opener::Socket(Pending::Unix(l)) => Duplex::Unix(l.accept()?.0).split()?,
                Opener::Socket(Pending::Tcp(l)) => {
                    let s = l.accept()?.0;
                    s.set_nodelay(true)?;
                    Duplex::Tcp(s).split()?
                }
                Opener::Socket(Pending::Fifo(_)) => return Err(io::Error::other("not a socket")),
                Opener::Fifo {
                    side: Side::A,
                    ab,
                    ba,
                } => {
                    let w = std::fs::OpenOptions::new().write(true).open(ab)?;
                    (Box::new(w), Box::new(File::open(ba)?))
                }
                Opener::Fifo {
                    side: Side::B,
                    ab,
                    ba,
                } => {
                    let r = File::open(ab)?;
                    let w = std::fs::OpenOptions::new().write(true).open(ba)?;
                    (Box::new(w), Box::new(r))
                }
            };
            *state = DuplexState::Open {
                r,
                w,
                buf: Vec::new(),
                frame: Vec::new(),
            };
        }
        Ok(())
    }
}

impl Rx for PendingDuplex {
    fn recv(&mut self, f: &mut dyn FnMut(&[u8])) -> io::Result<()> {
        let mut state = self
            .shared
            .lock()
            .map_err(|_| io::Error::other("poisoned"))?;
        Self::open(&mut state)?;
        let DuplexState::Open { r, buf, .. } = &mut *state else {
            unreachable!("opened above")
        };
        let mut len = [0u8; 4];
        r.read_exact(&mut len)?;
        buf.resize(u32::from_le_bytes(len) as usize, 0);
        r.read_exact(buf)?;
        f(buf);
        Ok(())
    }
}

impl Tx for PendingDuplex {
    fn send(&mut self, size: usize, fill: &mut dyn FnMut(&mut [u8])) -> io::Result<()> {
        let mut state = self
            .shared
            .lock()
            .map_err(|_| io::Error::other("poisoned"))?;
        Self::open(&mut state)?;
        let DuplexState::Open { w, frame, .. } = &mut *state else {
            unreachable!("opened above")
        };
        frame.resize(4 + size, 0);
        frame[..4].copy_from_slice(&(size as u32).to_le_bytes());
        fill(&mut frame[4..]);
        w.write_all(frame)
    }
}

// ---- unix-seqpacket -----------------------------------------------------------------------

/// A Unix SOCK_SEQPACKET socket: the kernel keeps message boundaries, one send and one recv
/// per message, no framing.
pub struct Seqpacket;

/// Largest seqpacket message we ask the kernel for (the default socket buffer bounds it).
const SEQPACKET_MAX: usize = 128 * 1024;

struct SeqTx {
    socks: Vec<OwnedFd>,
    buf: Vec<u8>,
}

impl Tx for SeqTx {
    fn send(&mut self, size: usize, fill: &mut dyn FnMut(&mut [u8])) -> io::Result<()> {
        self.buf.resize(size, 0);
        fill(&mut self.buf);
        for s in &self.socks {
            let n = rustix::net::send(s, &self.buf, rustix::net::SendFlags::empty())?;
            if n != size {
                return Err(io::Error::other("short seqpacket send"));
            }
        }
        Ok(())
    }
}

struct SeqRx {
    listener: Option<OwnedFd>,
    sock: Option<OwnedFd>,
    buf: Vec<u8>,
    /// Side B of a ping-pong answers through this buffer.
    out: Vec<u8>,
}

impl SeqRx {
    fn connect_once(&mut self) -> io::Result<()> {
        if self.sock.is_none() {
            let l = self.listener.take().expect("accepted once");
            self.sock = Some(rustix::net::accept(&l)?);
        }
        Ok(())
    }
}

impl Rx for SeqRx {
    fn recv(&mut self, f: &mut dyn FnMut(&[u8])) -> io::Result<()> {
        self.buf.resize(SEQPACKET_MAX, 0);
        self.connect_once()?;
        let sock = self.sock.as_ref().expect("connected above");
        let (n, _) = rustix::net::recv(sock, &mut self.buf[..], rustix::net::RecvFlags::empty())?;
        if n == 0 {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
        }
        f(&self.buf[..n]);
        Ok(())
    }
}

fn seq_socket() -> io::Result<OwnedFd> {
    Ok(rustix::net::socket(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::SEQPACKET,
        None,
    )?)
}

fn seq_listen(path: &Path) -> io::Result<OwnedFd> {
    let s = seq_socket()?;
    rustix::net::bind(&s, &rustix::net::SocketAddrUnix::new(path)?)?;
    rustix::net::listen(&s, 8)?;
    Ok(s)
}

fn seq_connect(path: &Path) -> io::Result<OwnedFd> {
    let s = seq_socket()?;
    rustix::net::connect(&s, &rustix::net::SocketAddrUnix::new(path)?)?;
    Ok(s)
}

impl Transport for Seqpacket {
    fn name(&self) -> &'static str {
        "unix-seqpacket"
    }
    fn about(&self) -> &'static str {
        "Unix SOCK_SEQPACKET socket: the kernel keeps message boundaries"
    }
    fn max_size(&self) -> Option<usize> {
        Some(SEQPACKET_MAX)
    }
    fn prepare(&self, _dir: &Path, _receivers: u32, _size: usize, _duplex: bool) -> io::Result<()> {
        Ok(())
    }
    fn receiver(&self, dir: &Path, index: u32) -> io::Result<(Box<dyn Rx>, String)> {
        let l = seq_listen(&Stream::sock(dir, index))?;
        Ok((
            Box::new(SeqRx {
                listener: Some(l),
                sock: None,
                buf: Vec::new(),
                out: Vec::new(),
            }),
            String::new(),
        ))
    }
    fn sender(&self, dir: &Path, tokens: &[String]) -> io::Result<Box<dyn Tx>> {
        let socks = (0..tokens.len())
            .map(|i| seq_connect(&Stream::sock(dir, i as u32)))
            .collect::<io::Result<_>>()?;
        Ok(Box::new(SeqTx {
            socks,
            buf: Vec::new(),
        }))
    }
    fn duplex(&self, dir: &Path, side: Side, _token: &str) -> io::Result<DuplexEnds> {
        let path = Stream::sock(dir, 0);
        match side {
            Side::B => {
                // B accepts on its first receive and answers on the same socket.
                let l = seq_listen(&path)?;
                let conn = SeqDuplex::new(l);
                Ok((Box::new(conn.clone_handle()), Box::new(conn), String::new()))
            }
            Side::A => {
                let s = seq_connect(&path)?;
                let w = s.try_clone()?;
                Ok((
                    Box::new(SeqTx {
                        socks: vec![w],
                        buf: Vec::new(),
                    }),
                    Box::new(SeqRx {
                        listener: None,
                        sock: Some(s),
                        buf: Vec::new(),
                        out: Vec::new(),
                    }),
                    String::new(),
                ))
            }
        }
    }
}

/// Side B of a seqpacket ping-pong.
struct SeqDuplex {
    shared: std::sync::Arc<std::sync::Mutex<SeqRx>>,
}

impl SeqDuplex {
    fn new(l: OwnedFd) -> Self {
        SeqDuplex {
            shared: std::sync::Arc::new(std::sync::Mutex::new(SeqRx {
                listener: Some(l),
                sock: None,
                buf: Vec::new(),
                out: Vec::new(),
            })),
        }
    }
    fn clone_handle(&self) -> SeqDuplex {
        SeqDuplex {
            shared: self.shared.clone(),
        }
    }
}

impl Rx for SeqDuplex {
    fn recv(&mut self, f: &mut dyn FnMut(&[u8])) -> io::Result<()> {
        self.shared
            .lock()
            .map_err(|_| io::Error::other("poisoned"))?
            .recv(f)
    }
}

impl Tx for SeqDuplex {
    fn send(&mut self, size: usize, fill: &mut dyn FnMut(&mut [u8])) -> io::Result<()> {
        let mut guard = self
            .shared
            .lock()
            .map_err(|_| io::Error::other("poisoned"))?;
        let rx = &mut *guard;
        rx.connect_once()?;
        rx.out.resize(size, 0);
        fill(&mut rx.out);
        let sock = rx.sock.as_ref().expect("connected above");
        rustix::net::send(sock, &rx.out, rustix::net::SendFlags::empty())?;
        Ok(())
    }
}

// ---- async: shmbus-async, unix-stream-tokio -----------------------------------------------

/// A tokio current-thread runtime per endpoint. A throughput run's loop is one task (one
/// `block_on` of the whole loop, as a tokio program's publishing or consuming task); a
/// ping-pong is one `block_on` per message. Either way the task parks in the runtime (and
/// the runtime in its driver) exactly as a task of a tokio program waiting would.
fn runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
}

/// shmbus through `AsyncPublisher` / `AsyncSubscriber` on tokio.
pub struct ShmAsync {
    name: &'static str,
    about: &'static str,
    strategy: WaitStrategy,
}

impl ShmAsync {
    /// The default: polls through the executor for 40-80 µs, then park with the waiter thread.
    pub const SPIN_THEN_PARK: ShmAsync = ShmAsync {
        name: "shmbus-async",
        about: "shmbus on an exclusive bus through AsyncPublisher/AsyncSubscriber (default SpinThenBlock: polls for 40-80 µs, then parks), tokio current-thread at both ends",
        strategy: WaitStrategy::SpinThenBlock,
    };
    /// Parks at once: every wait goes through the waiter thread (the cost of the hop).
    pub const PARK: ShmAsync = ShmAsync {
        name: "shmbus-async-park",
        about: "as shmbus-async with WaitStrategy::Block: every empty poll parks with the waiter thread",
        strategy: WaitStrategy::Block,
    };
}

struct ShmAsyncTx {
    rt: tokio::runtime::Runtime,
    publ: bus_core::AsyncPublisher,
    buf: Vec<u8>,
}

impl Tx for ShmAsyncTx {
    fn send(&mut self, size: usize, fill: &mut dyn FnMut(&mut [u8])) -> io::Result<()> {
        self.buf.resize(size, 0);
        fill(&mut self.buf);
        self.rt
            .block_on(self.publ.send(&self.buf))
            .map_err(io::Error::other)?;
        Ok(())
    }

    fn send_batch(
        &mut self,
        size: usize,
        seqs: &[u64],
        fill: &mut dyn FnMut(u64, &mut [u8]),
    ) -> io::Result<()> {
        let (publ, buf) = (&mut self.publ, &mut self.buf);
        buf.resize(size, 0);
        self.rt.block_on(async {
            for &seq in seqs {
                fill(seq, buf);
                publ.send(buf).await.map_err(io::Error::other)?;
            }
            Ok(())
        })
    }
}

struct ShmAsyncRx {
    rt: tokio::runtime::Runtime,
    sub: bus_core::AsyncSubscriber,
}

impl Rx for ShmAsyncRx {
    fn recv(&mut self, f: &mut dyn FnMut(&[u8])) -> io::Result<()> {
        let sample = self
            .rt
            .block_on(self.sub.recv_ref())
            .map_err(io::Error::other)?;
        f(&sample);
        Ok(())
    }

    fn recv_batch(&mut self, n: u64, f: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
        let sub = &mut self.sub;
        self.rt.block_on(async {
            for _ in 0..n {
                let sample = sub.recv_ref().await.map_err(io::Error::other)?;
                f(&sample)?;
            }
            Ok(())
        })
    }
}

impl ShmAsync {
    fn tx(bus: &Bus) -> io::Result<ShmAsyncTx> {
        let publ = bus.publisher().map_err(io::Error::other)?.into_async()?;
        Ok(ShmAsyncTx {
            rt: runtime()?,
            publ,
            buf: Vec::new(),
        })
    }

    fn rx(&self, bus: &Bus) -> io::Result<ShmAsyncRx> {
        let mut sub = bus.subscribe(Start::Latest).map_err(io::Error::other)?;
        sub.set_wait_strategy(self.strategy);
        let sub = sub.into_async()?;
        Ok(ShmAsyncRx {
            rt: runtime()?,
            sub,
        })
    }
}

impl Transport for ShmAsync {
    fn name(&self) -> &'static str {
        self.name
    }
    fn about(&self) -> &'static str {
        self.about
    }
    fn is_shmbus(&self) -> bool {
        true
    }
    fn prepare(&self, dir: &Path, receivers: u32, size: usize, duplex: bool) -> io::Result<()> {
        Shmbus::BLOCK.prepare(dir, receivers, size, duplex)
    }
    fn receiver(&self, dir: &Path, _index: u32) -> io::Result<(Box<dyn Rx>, String)> {
        let bus = Shmbus::open(&dir.join("a.bus"))?;
        Ok((Box::new(self.rx(&bus)?), String::new()))
    }
    fn sender(&self, dir: &Path, _tokens: &[String]) -> io::Result<Box<dyn Tx>> {
        let bus = Shmbus::open(&dir.join("a.bus"))?;
        Ok(Box::new(Self::tx(&bus)?))
    }
    fn duplex(&self, dir: &Path, side: Side, _token: &str) -> io::Result<DuplexEnds> {
        let (out, inp) = match side {
            Side::A => ("a.bus", "b.bus"),
            Side::B => ("b.bus", "a.bus"),
        };
        let rx = self.rx(&Shmbus::open(&dir.join(inp))?)?;
        let tx = Self::tx(&Shmbus::open(&dir.join(out))?)?;
        Ok((Box::new(tx), Box::new(rx), String::new()))
    }
}

/// tokio's `UnixStream`, framed like `unix-stream`: what an async user has without the bus.
pub struct UnixTokio;

/// One end of a tokio Unix stream (each endpoint owns its runtime).
struct TokioStream {
    rt: tokio::runtime::Runtime,
    stream: Option<tokio::net::UnixStream>,
    /// A listener whose accept is deferred to the first receive (see `LazyRx`).
    listener: Option<UnixListener>,
    frame: Vec<u8>,
}

impl TokioStream {
    fn new(std: Option<UnixStream>, listener: Option<UnixListener>) -> io::Result<Self> {
        let rt = runtime()?;
        let stream = match std {
            Some(s) => Some(Self::adopt(&rt, s)?),
            None => None,
        };
        Ok(TokioStream {
            rt,
            stream,
            listener,
            frame: Vec::new(),
        })
    }

    fn adopt(rt: &tokio::runtime::Runtime, s: UnixStream) -> io::Result<tokio::net::UnixStream> {
        s.set_nonblocking(true)?;
        let _guard = rt.enter();
        tokio::net::UnixStream::from_std(s)
    }

    fn stream(&mut self) -> io::Result<&mut tokio::net::UnixStream> {
        if self.stream.is_none() {
            let l = self
                .listener
                .take()
                .ok_or_else(|| io::Error::other("not connected"))?;
            let s = Self::adopt(&self.rt, l.accept()?.0)?;
            self.stream = Some(s);
        }
        Ok(self.stream.as_mut().expect("set above"))
    }
}

impl Tx for TokioStream {
    fn send(&mut self, size: usize, fill: &mut dyn FnMut(&mut [u8])) -> io::Result<()> {
        use tokio::io::AsyncWriteExt;
        let mut frame = std::mem::take(&mut self.frame);
        frame.resize(4 + size, 0);
        frame[..4].copy_from_slice(&(size as u32).to_le_bytes());
        fill(&mut frame[4..]);
        self.stream()?;
        let (rt, stream) = (&self.rt, self.stream.as_mut().expect("connected"));
        let r = rt.block_on(stream.write_all(&frame));
        self.frame = frame;
        r
    }

    fn send_batch(
        &mut self,
        size: usize,
        seqs: &[u64],
        fill: &mut dyn FnMut(u64, &mut [u8]),
    ) -> io::Result<()> {
        use tokio::io::AsyncWriteExt;
        self.stream()?;
        let (rt, stream) = (&self.rt, self.stream.as_mut().expect("connected"));
        let frame = &mut self.frame;
        frame.resize(4 + size, 0);
        frame[..4].copy_from_slice(&(size as u32).to_le_bytes());
        rt.block_on(async {
            for &seq in seqs {
                fill(seq, &mut frame[4..]);
                stream.write_all(frame).await?;
            }
            Ok(())
        })
    }
}

impl Rx for TokioStream {
    fn recv(&mut self, f: &mut dyn FnMut(&[u8])) -> io::Result<()> {
        use tokio::io::AsyncReadExt;
        self.stream()?;
        let (rt, stream) = (&self.rt, self.stream.as_mut().expect("connected"));
        let mut frame = std::mem::take(&mut self.frame);
        let r = rt.block_on(async {
            let mut len = [0u8; 4];
            stream.read_exact(&mut len).await?;
            frame.resize(u32::from_le_bytes(len) as usize, 0);
            stream.read_exact(&mut frame).await?;
            Ok::<(), io::Error>(())
        });
        if r.is_ok() {
            f(&frame);
        }
        self.frame = frame;
        r
    }

    fn recv_batch(&mut self, n: u64, f: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
        use tokio::io::AsyncReadExt;
        self.stream()?;
        let (rt, stream) = (&self.rt, self.stream.as_mut().expect("connected"));
        let frame = &mut self.frame;
        rt.block_on(async {
            for _ in 0..n {
                let mut len = [0u8; 4];
                stream.read_exact(&mut len).await?;
                frame.resize(u32::from_le_bytes(len) as usize, 0);
                stream.read_exact(frame).await?;
                f(frame)?;
            }
            Ok(())
        })
    }
}

impl Transport for UnixTokio {
    fn name(&self) -> &'static str {
        "unix-stream-tokio"
    }
    fn about(&self) -> &'static str {
        "tokio UnixStream, framed as unix-stream, tokio current-thread at both ends"
    }
    fn prepare(&self, _dir: &Path, _receivers: u32, _size: usize, _duplex: bool) -> io::Result<()> {
        Ok(())
    }
    fn receiver(&self, dir: &Path, index: u32) -> io::Result<(Box<dyn Rx>, String)> {
        let l = UnixListener::bind(Stream::sock(dir, index))?;
        Ok((Box::new(TokioStream::new(None, Some(l))?), String::new()))
    }
    fn sender(&self, dir: &Path, tokens: &[String]) -> io::Result<Box<dyn Tx>> {
        if tokens.len() != 1 {
            return Err(io::Error::other("unix-stream-tokio has one receiver"));
        }
        let s = UnixStream::connect(Stream::sock(dir, 0))?;
        Ok(Box::new(TokioStream::new(Some(s), None)?))
    }
    fn duplex(&self, dir: &Path, side: Side, _token: &str) -> io::Result<DuplexEnds> {
        // B listens (before "ready") and accepts on first use; A connects. One stream, both
        // directions, shared by the two ends.
        let path = Stream::sock(dir, 0);
        let stream = match side {
            Side::B => TokioStream::new(None, Some(UnixListener::bind(&path)?))?,
            Side::A => TokioStream::new(Some(UnixStream::connect(&path)?), None)?,
        };
        let shared = std::sync::Arc::new(std::sync::Mutex::new(stream));
        Ok((
            Box::new(TokioDuplex(shared.clone())),
            Box::new(TokioDuplex(shared)),
            String::new(),
        ))
    }
}

/// Both ends of a ping-pong side over one tokio stream.
struct TokioDuplex(std::sync::Arc<std::sync::Mutex<TokioStream>>);

impl TokioDuplex {
    fn lock(&self) -> io::Result<std::sync::MutexGuard<'_, TokioStream>> {
        self.0.lock().map_err(|_| io::Error::other("poisoned"))
    }
}

impl Tx for TokioDuplex {
    fn send(&mut self, size: usize, fill: &mut dyn FnMut(&mut [u8])) -> io::Result<()> {
        self.lock()?.send(size, fill)
    }
}

impl Rx for TokioDuplex {
    fn recv(&mut self, f: &mut dyn FnMut(&[u8])) -> io::Result<()> {
        self.lock()?.recv(f)
    }
}
