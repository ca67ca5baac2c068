//! `sub`: print messages as they arrive.
//!
//! Output goes through a 64 KiB buffer that is flushed whenever the subscriber has caught up
//! (before it waits for more), and after every message when stdout is a terminal: a reader
//! at the other end of a pipe sees each message as soon as nothing else is pending, and a
//! busy stream is written in large blocks.
//!
//! While the bus is quiet it looks every 50 ms whether whoever reads its output has gone
//! (`shmbus sub bus | head -3` ends with `head`, not at the next message).
//!
//! Started at `latest` on a bus that already holds messages, it says once on stderr that
//! `--from oldest` would show them: at once on a terminal, else after a second of nothing.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use base64::Engine;
use bus_core::{RecvTimeoutError, Sample, Start, TryRecvError, WaitStrategy};

use crate::flags::{From, OutputFormat, SubArgs};
use crate::{bus_path, open, plural, EXIT_TIMEOUT};

/// Longest single wait, so that a signal or the deadline is noticed promptly.
const SLICE: Duration = Duration::from_millis(50);

/// How long a subscriber started at `latest` waits for its first message before it points
/// at `--from oldest` (when it is not on a terminal; there it does so at once).
const HINT_AFTER: Duration = Duration::from_secs(1);

/// One line of `--format json`.
#[derive(serde::Serialize)]
struct JsonMessage<'a> {
    seq: u64,
    position: u64,
    len: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_b64: Option<String>,
}

struct Printer {
    out: std::io::BufWriter<std::io::Stdout>,
    format: OutputFormat,
    every_message: bool,
}

impl Printer {
    fn message(&mut self, s: &Sample<'_>) -> std::io::Result<()> {
        let out = &mut self.out;
        match self.format {
            OutputFormat::Text => {
                out.write_all(s)?;
                out.write_all(b"\n")?;
            }
            OutputFormat::Raw => out.write_all(s)?,
            OutputFormat::Len => {
                out.write_all(&(s.len() as u32).to_le_bytes())?;
                out.write_all(s)?;
            }
            OutputFormat::Hex => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                for &b in s.iter() {
                    out.write_all(&[HEX[(b >> 4) as usize], HEX[(b & 15) as usize]])?;
                }
                out.write_all(b"\n")?;
            }
            OutputFormat::Json => {
                let text = std::str::from_utf8(s).ok();
                let line = JsonMessage {
                    seq: s.seq,
                    position: s.position,
                    len: s.len(),
                    data: text,
                    data_b64: text
                        .is_none()
                        .then(|| base64::engine::general_purpose::STANDARD.encode(&s[..])),
                };
                serde_json::to_writer(&mut *out, &line)?;
                out.write_all(b"\n")?;
            }
        }
        if self.every_message {
            out.flush()?;
        }
        Ok(())
    }

    fn lost(&mut self, n: u64) -> std::io::Result<()> {
        if self.format == OutputFormat::Json {
            writeln!(self.out, "{{\"lost\":{n}}}")?;
        } else {
            // Keep stdout and stderr in order for a reader of both.
            self.out.flush()?;
            errln!("shmbus: lost {n} messages");
        }
        Ok(())
    }
}

pub fn run(args: &SubArgs) -> anyhow::Result<ExitCode> {
    // Handlers first, before the slot is taken: a signal between the join and their
    // installation would kill the process with its slot held (until a producer evicts it).
    let stop = crate::signals::install()?;
    let bus = open(&args.bus, args.share)?;
    let path = bus_path(&args.bus);
    let start = match args.from {
        From::Latest => Start::Latest,
        From::Oldest => Start::Oldest,
        From::Position(p) => Start::Position(p),
    };
    let mut sub = bus
        .subscribe(start)
        .with_context(|| format!("bus {}", path.display()))?;
    if args.spin {
        sub.set_wait_strategy(WaitStrategy::Spin);
    }
    crate::watch_bus_file(&path, "subscriber");
    let started = Instant::now();
    // Messages the bus held when we joined at `latest`, which this run will not show.
    let mut hint = match args.from {
        From::Latest => {
            let st = bus.stats();
            Some(st.tail_seq.saturating_sub(st.head_seq)).filter(|&n| n > 0)
        }
        _ => None,
    };
    if std::io::stderr().is_terminal() {
        if let Some(n) = hint.take() {
            errln!("{}", from_oldest_hint(&path, n));
        }
    }
    let stdout = std::io::stdout();
    let mut printer = Printer {
        every_message: stdout.is_terminal(),
        out: std::io::BufWriter::with_capacity(1 << 16, stdout),
        format: args.format,
    };
    let deadline = args.timeout.map(|t| Instant::now() + t);
    let mut received = 0u64;
    loop {
        if args.count.is_some_and(|c| received >= c) || stop.load(Ordering::Relaxed) {
            printer.out.flush()?;
            return Ok(ExitCode::SUCCESS);
        }
        // Also while messages keep coming: the timeout bounds the whole run.
        if deadline.is_some_and(|d| Instant::now() >= d) {
            printer.out.flush()?;
            return Ok(ExitCode::from(EXIT_TIMEOUT));
        }
        // Take what is there without waiting; flush before waiting for more.
        let got = match sub.try_recv_ref() {
            Err(TryRecvError::Empty) => {
                printer.out.flush()?;
                let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
                if left == Some(Duration::ZERO) {
                    return Ok(ExitCode::from(EXIT_TIMEOUT));
                }
                sub.recv_ref_timeout(left.map_or(SLICE, |l| l.min(SLICE)))
            }
            Ok(sample) => Ok(sample),
            Err(TryRecvError::Lost(n)) => Err(RecvTimeoutError::Lost(n)),
            Err(TryRecvError::Corrupt { position, problem }) => {
                Err(RecvTimeoutError::Corrupt { position, problem })
            }
            Err(TryRecvError::Forked) => Err(RecvTimeoutError::Forked),
        };
        match got {
            Ok(sample) => {
                printer.message(&sample)?;
                received += 1;
            }
            Err(RecvTimeoutError::Timeout) => {
                if reader_gone(libc::STDOUT_FILENO) {
                    // `sub | head -3` on a quiet bus: the write that would find the pipe
                    // closed may never come. Ends as a closed pipe found by a write does.
                    return Ok(ExitCode::SUCCESS);
                }
                if received == 0 && started.elapsed() >= HINT_AFTER {
                    if let Some(n) = hint.take() {
                        errln!("{}", from_oldest_hint(&path, n));
                    }
                }
            }
            Err(RecvTimeoutError::Lost(n)) => printer.lost(n)?,
            Err(e @ (RecvTimeoutError::Corrupt { .. } | RecvTimeoutError::Forked)) => {
                printer.out.flush()?;
                anyhow::bail!("bus {}: {e}", path.display());
            }
        }
    }
}

/// Whether `fd` is a pipe whose reading end is closed (POLLERR), or a stream socket whose
/// peer has shut down (POLLHUP): a write could only fail. Anything else is never taken for
/// gone: a terminal, a file, a pipe with a reader, and a socket with a pending error that a
/// write should report itself (a datagram socket after an ICMP "refused", say).
fn reader_gone(fd: libc::c_int) -> bool {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes a whole `stat` into the buffer we own, or fails and writes none.
    if unsafe { libc::fstat(fd, st.as_mut_ptr()) } != 0 {
        return false;
    }
    // SAFETY: fstat succeeded, so it initialised `st`.
    let kind = unsafe { st.assume_init() }.st_mode & libc::S_IFMT;
    let gone = match kind {
        libc::S_IFIFO => libc::POLLERR | libc::POLLHUP,
        libc::S_IFSOCK => libc::POLLHUP,
        _ => return false,
    };
    let mut fds = [libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    }];
    // SAFETY: one valid pollfd and its length; a zero timeout; a plain system call.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), 1, 0) };
    n > 0 && fds[0].revents & gone != 0
}

fn from_oldest_hint(path: &std::path::Path, held: u64) -> String {
    format!(
        "shmbus: waiting for new messages on {}; it already holds {} from before \
         (`--from oldest` prints them)",
        path.display(),
        plural(held, "message", "messages")
    )
}
