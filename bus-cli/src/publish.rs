//! `pub`: messages from arguments, from a generator, or from standard input.

use std::io::{BufRead, Read};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use bus_core::{Bus, BusOptions, Publisher, SendTimeoutError};

use crate::flags::{InputFormat, PubArgs};
use crate::{bus_path, ensure_parent};

struct Sink<'a> {
    publ: Publisher,
    timeout: Option<Duration>,
    path: &'a std::path::Path,
}

impl Sink<'_> {
    fn send(&mut self, msg: &[u8]) -> anyhow::Result<()> {
        let r = match self.timeout {
            Some(t) => self.publ.send_timeout(msg, t),
            None => self.publ.send(msg).map_err(SendTimeoutError::from),
        };
        match r {
            Ok(_) => Ok(()),
            Err(SendTimeoutError::Timeout) => bail!(
                "bus {}: timed out waiting for space in the ring (a subscriber is not reading)",
                self.path.display()
            ),
            Err(e) => bail!("bus {}: {e}", self.path.display()),
        }
    }
}

pub fn run(args: &PubArgs) -> anyhow::Result<ExitCode> {
    let path = bus_path(&args.bus);
    let bus = if args.create {
        ensure_parent(&args.bus)?;
        Bus::open_or_create(&path, &BusOptions::new())?
    } else {
        Bus::open(&path)?
    };
    let publ = bus
        .publisher()
        .with_context(|| format!("bus {}", path.display()))?;
    let mut sink = Sink {
        publ,
        timeout: args.timeout,
        path: &path,
    };
    let max = sink.publ.max_message() as usize;
    let too_large = |len: usize| {
        anyhow::anyhow!(
            "bus {}: message of {len} bytes exceeds the bus maximum of {max} bytes",
            path.display()
        )
    };
    if let (Some(count), Some(size)) = (args.count, args.size) {
        // Checked before anything is allocated: --size 1EiB is an error, not an abort.
        let size = usize::try_from(size)
            .ok()
            .filter(|&s| s <= max)
            .ok_or_else(|| too_large(size as usize))?;
        let mut msg = vec![0u8; size];
        for i in 0..count {
            msg[..8].copy_from_slice(&i.to_le_bytes());
            sink.send(&msg)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !args.messages.is_empty() {
        for m in &args.messages {
            sink.send(m.as_bytes())?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let stdin = std::io::stdin();
    let mut input = std::io::BufReader::with_capacity(1 << 16, stdin.lock());
    match args.input {
        InputFormat::Lines => {
            let mut line = Vec::new();
            loop {
                line.clear();
                // At most one byte more than the largest message: an endless line is an
                // error, not an endless allocation.
                let n = (&mut input)
                    .take(max as u64 + 1)
                    .read_until(b'\n', &mut line)
                    .context("reading standard input")?;
                if n == 0 {
                    break;
                }
                if line.len() > max && line.last() != Some(&b'\n') {
                    return Err(too_large(line.len()).context("a line of standard input"));
                }
                if line.last() == Some(&b'\n') {
                    line.pop();
                }
                sink.send(&line)?;
            }
        }
        InputFormat::Raw => {
            let mut all = Vec::new();
            (&mut input)
                .take(max as u64 + 1)
                .read_to_end(&mut all)
                .context("reading standard input")?;
            if all.len() > max {
                return Err(too_large(all.len()).context("standard input"));
            }
            sink.send(&all)?;
        }
        InputFormat::Len => {
            let mut msg = Vec::new();
            loop {
                let mut len = [0u8; 4];
                match read_full(&mut input, &mut len).context("reading standard input")? {
                    0 => break,
                    4 => {}
                    n => bail!("standard input ends inside a frame length ({n} of 4 bytes)"),
                }
                let len = u32::from_le_bytes(len) as usize;
                if len > sink.publ.max_message() as usize {
                    bail!(
                        "bus {}: frame of {len} bytes exceeds the bus maximum of {} bytes",
                        path.display(),
                        sink.publ.max_message()
                    );
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
