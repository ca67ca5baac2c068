//! `pub`: messages from arguments, from a generator, or from standard input.
//!
//! A message that is too large stops `pub` with an error that names it (which argument, line
//! or frame, and its real size), says how many messages before it were published, and where
//! the bus's maximum comes from. A publish that waits on a full reliable ring for more than a
//! second says once, on stderr, which subscriber holds it.

use std::io::{BufRead, IsTerminal, Read};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bus_core::{Bus, BusOptions, Publisher, SendTimeoutError, TrySendError};

use crate::flags::{InputFormat, PubArgs};
use crate::{bus_path, ensure_parent, plural};

/// How long a publish waits on a full ring before it says who holds it.
const TELL_AFTER: Duration = Duration::from_secs(1);

/// Counting the rest of an oversized line or input stops here ("more than 1 GiB"): an endless
/// input (`/dev/zero`) ends in an error, not an endless count.
const COUNT_LIMIT: u64 = 1 << 30;

/// `pub` was asked to stop (SIGINT or SIGTERM): what it published is published, and its slot
/// is left cleanly. Not an error: `tail -f app.log | shmbus pub logs` ends this way.
#[derive(Debug)]
struct Stopped;

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stopped by a signal")
    }
}

impl std::error::Error for Stopped {}

/// How often a wait (for input, for room in the ring) looks at the stop flag.
const STOP_CHECK: Duration = Duration::from_millis(100);

struct Sink<'a> {
    bus: Bus,
    publ: Publisher,
    stop: Arc<AtomicBool>,
    timeout: Option<Duration>,
    path: &'a std::path::Path,
    /// Messages published so far.
    sent: u64,
    /// Whether the user was told who holds a full ring.
    told: bool,
}

impl Sink<'_> {
    fn stopped(&self) -> anyhow::Result<()> {
        // ORDERING: Relaxed: a flag the signal handler sets; nothing is published with it.
        if self.stop.load(Ordering::Relaxed) {
            return Err(Stopped.into());
        }
        Ok(())
    }

    fn send(&mut self, msg: &[u8]) -> anyhow::Result<()> {
        self.stopped()?;
        // The common case costs one try_send: no clock read, no system call.
        match self.publ.try_send(msg) {
            Ok(_) => {
                self.sent += 1;
                Ok(())
            }
            Err(TrySendError::Full) => self.send_slow(msg),
            Err(e) => bail!("bus {}: {e}", self.path.display()),
        }
    }

    /// The ring is full (reliable mode): wait, in slices, telling the user once after a second
    /// which subscriber holds it.
    fn send_slow(&mut self, msg: &[u8]) -> anyhow::Result<()> {
        let start = Instant::now();
        let deadline = self.timeout.map(|t| start + t);
        loop {
            self.stopped()?;
            let now = Instant::now();
            let mut wait = STOP_CHECK;
            if let Some(d) = deadline {
                wait = wait.min(d.saturating_duration_since(now));
            }
            if !self.told {
                wait = wait.min((start + TELL_AFTER).saturating_duration_since(now));
            }
            match self.publ.send_timeout(msg, wait) {
                Ok(_) => {
                    self.sent += 1;
                    return Ok(());
                }
                Err(SendTimeoutError::Timeout) => {
                    let now = Instant::now();
                    if deadline.is_some_and(|d| now >= d) {
                        bail!(
                            "bus {}: timed out waiting for space in the ring{}; {} published",
                            self.path.display(),
                            self.holder().map(|h| format!(" ({h})")).unwrap_or_default(),
                            plural(self.sent, "message was", "messages were")
                        );
                    }
                    if !self.told && now >= start + TELL_AFTER {
                        self.told = true;
                        errln!(
                            "shmbus: bus {} is full; waiting for space ({})",
                            self.path.display(),
                            self.holder().unwrap_or_else(|| {
                                "no live subscriber is behind: a dead one not yet evicted?"
                                    .to_string()
                            })
                        );
                    }
                }
                Err(e) => bail!("bus {}: {e}", self.path.display()),
            }
        }
    }

    /// The live subscriber furthest behind: the one a reliable ring waits for.
    fn holder(&self) -> Option<String> {
        let st = self.bus.stats();
        let s = st
            .subscribers
            .iter()
            .filter(|s| s.alive)
            .max_by_key(|s| s.lag_bytes)?;
        Some(format!(
            "subscriber pid {} (slot {}) is {} ({}) behind; it may be stopped or slow",
            s.pid,
            s.index,
            plural(s.lag_messages, "message", "messages"),
            plural(s.lag_bytes, "byte", "bytes"),
        ))
    }

    /// The error of a message larger than the bus maximum: which one, its size, and what was
    /// published before it.
    fn too_large(&self, what: &str, len: Length) -> anyhow::Error {
        let max = self.publ.max_message();
        let done = match self.sent {
            0 => "nothing was published".to_string(),
            n => format!(
                "{} before it {} published, nothing after it",
                plural(n, "message", "messages"),
                if n == 1 { "was" } else { "were" }
            ),
        };
        anyhow::anyhow!(
            "bus {}: {what}, {len}, exceeds the bus maximum of {max} bytes; {done} (the maximum \
             is set when a bus is created: `shmbus create BUS --max-message SIZE`, at most half \
             the capacity)",
            self.path.display()
        )
    }
}

/// The size of an oversized message, exact or (past [`COUNT_LIMIT`]) a lower bound.
#[derive(Debug, Clone, Copy)]
enum Length {
    Exact(u64),
    MoreThan(u64),
}

impl std::fmt::Display for Length {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Length::Exact(n) => write!(f, "{n} bytes"),
            Length::MoreThan(n) => write!(f, "more than {n} bytes"),
        }
    }
}

/// Reads and discards up to the end of the line (or of the input, `line: false`), and returns
/// the total length: `already` bytes read plus the rest, without the newline.
fn count_rest(input: &mut impl BufRead, already: u64, line: bool) -> std::io::Result<Length> {
    let mut n = already;
    loop {
        let buf = match input.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok(Length::Exact(n));
        }
        let (take, end) = match buf.iter().position(|&b| b == b'\n').filter(|_| line) {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        n += (take - usize::from(end)) as u64;
        input.consume(take);
        if end {
            return Ok(Length::Exact(n));
        }
        if n > COUNT_LIMIT {
            return Ok(Length::MoreThan(COUNT_LIMIT));
        }
    }
}

pub fn run(args: &PubArgs) -> anyhow::Result<ExitCode> {
    // Before the slot is taken: a signal must find the flag, not end the process with the slot
    // left dead on the bus.
    let stop = crate::signals::install()?;
    match publish(args, stop) {
        Err(e) if e.is::<Stopped>() => Ok(ExitCode::SUCCESS),
        r => r,
    }
}

/// Waits until standard input has bytes to read (or is at its end), looking at the stop flag
/// every [`STOP_CHECK`]: a read of a quiet pipe (`tail -f`) would not return on a signal.
fn wait_input(sink: &Sink<'_>, buffered: bool) -> anyhow::Result<()> {
    if buffered {
        return sink.stopped();
    }
    loop {
        sink.stopped()?;
        let mut fds = [libc::pollfd {
            fd: libc::STDIN_FILENO,
            events: libc::POLLIN,
            revents: 0,
        }];
        // SAFETY: one valid pollfd, its length; a plain system call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 1, STOP_CHECK.as_millis() as i32) };
        if n > 0 {
            // Readable, at its end, or in error: the read says which.
            return Ok(());
        }
        if n < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return Ok(());
        }
    }
}

fn publish(args: &PubArgs, stop: Arc<AtomicBool>) -> anyhow::Result<ExitCode> {
    let path = bus_path(&args.bus);
    let bus = if args.create {
        ensure_parent(&args.bus)?;
        Bus::open_or_create(&path, &BusOptions::new())
            .map_err(|e| crate::explain(&args.bus, e, true))?
    } else {
        crate::open(&args.bus, args.share)?
    };
    let publ = bus
        .publisher()
        .with_context(|| format!("bus {}", path.display()))?;
    crate::watch_bus_file(&path, "publisher");
    let mut sink = Sink {
        bus,
        publ,
        stop,
        timeout: args.timeout,
        path: &path,
        sent: 0,
        told: false,
    };
    let max = sink.publ.max_message() as usize;
    if let (Some(count), Some(size)) = (args.count, args.size) {
        // Checked before anything is allocated: --size 1EiB is an error, not an abort.
        let size = usize::try_from(size)
            .ok()
            .filter(|&s| s <= max)
            .ok_or_else(|| sink.too_large("each --size message", Length::Exact(size)))?;
        let mut msg = vec![0u8; size];
        for i in 0..count {
            msg[..8].copy_from_slice(&i.to_le_bytes());
            sink.send(&msg)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !args.messages.is_empty() {
        for (i, m) in args.messages.iter().enumerate() {
            if m.len() > max {
                return Err(sink.too_large(
                    &format!("argument {}", i + 1),
                    Length::Exact(m.len() as u64),
                ));
            }
            sink.send(m.as_bytes())?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        errln!(
            "shmbus: publishing {} to {} (Ctrl-D ends)",
            match args.input {
                InputFormat::Lines => "each line you type",
                InputFormat::Raw => "what you type, as one message,",
                InputFormat::Len => "length-prefixed frames",
            },
            path.display()
        );
    }
    let mut input = std::io::BufReader::with_capacity(1 << 16, stdin.lock());
    match args.input {
        InputFormat::Lines => {
            let mut line = Vec::new();
            let mut number = 0u64;
            loop {
                line.clear();
                wait_input(&sink, !input.buffer().is_empty())?;
                // At most one byte more than the largest message: an endless line is an
                // error, not an endless allocation.
                let n = (&mut input)
                    .take(max as u64 + 1)
                    .read_until(b'\n', &mut line)
                    .context("reading standard input")?;
                if n == 0 {
                    break;
                }
                number += 1;
                if line.len() > max && line.last() != Some(&b'\n') {
                    let len = count_rest(&mut input, line.len() as u64, true)
                        .context("reading standard input")?;
                    return Err(sink.too_large(&format!("line {number} of standard input"), len));
                }
                if line.last() == Some(&b'\n') {
                    line.pop();
                }
                sink.send(&line)?;
            }
        }
        InputFormat::Raw => {
            let mut all = Vec::new();
            let mut chunk = vec![0u8; 1 << 16];
            // Up to one byte more than the largest message, a chunk at a time.
            while all.len() <= max {
                wait_input(&sink, !input.buffer().is_empty())?;
                let want = (max + 1 - all.len()).min(chunk.len());
                let got = match input.read(&mut chunk[..want]) {
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e).context("reading standard input"),
                };
                if got == 0 {
                    break;
                }
                all.extend_from_slice(&chunk[..got]);
            }
            if all.len() > max {
                let len = count_rest(&mut input, all.len() as u64, false)
                    .context("reading standard input")?;
                return Err(sink.too_large("standard input (one message with --input raw)", len));
            }
            sink.send(&all)?;
        }
        InputFormat::Len => {
            let mut msg = Vec::new();
            let mut number = 0u64;
            loop {
                let mut len = [0u8; 4];
                wait_input(&sink, !input.buffer().is_empty())?;
                match read_full(&mut input, &mut len).context("reading standard input")? {
                    0 => break,
                    4 => {}
                    n => bail!("standard input ends inside a frame length ({n} of 4 bytes)"),
                }
                number += 1;
                let len = u32::from_le_bytes(len) as usize;
                if len > max {
                    return Err(sink.too_large(
                        &format!("frame {number} of standard input"),
                        Length::Exact(len as u64),
                    ));
                }
                msg.resize(len, 0);
                let got = read_full(&mut input, &mut msg).context("reading standard input")?;
                if got != len {
                    bail!("standard input ends inside a frame ({got} of {len} bytes)");
                }
                sink.send(&msg)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads until `buf` is full or EOF; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
