//! The command line, as clap sees it. This module only parses and validates; `main` turns
//! the result into bus-core calls.

use std::time::Duration;

use clap::builder::{PossibleValue, TypedValueParser};
use clap::{Args, Parser, Subcommand, ValueEnum};

/// shmbus: a publish/subscribe bus in a shared file. BUS is a name (a file
/// `$SHMBUS_DIR/NAME.bus`, `$SHMBUS_DIR` defaulting to /dev/shm/shmbus) or a path containing a
/// slash (./x.bus, /var/lib/app/events.bus), used as given.
#[derive(Debug, Parser)]
#[command(
    name = "shmbus",
    version,
    propagate_version = true,
    max_term_width = 100
)]
#[command(after_help = "\
Examples:
  shmbus create ticks                   a 64 MiB reliable bus in $SHMBUS_DIR
  shmbus sub ticks &                    print what arrives
  seq 3 | shmbus pub ticks              publish three lines
  shmbus stat ticks                     who is attached, who lags

Sizes (SIZE) are bytes with an optional binary unit: 4096, 64KiB, 16MiB, 1GiB (K, KB and KiB
all mean 1024). Durations (DUR) are a number with a unit: 500ms, 2s, 1m.

Exit codes: 0 success, 1 runtime error, 2 usage error, 124 `sub --timeout` ran out.")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a bus.
    Create(CreateArgs),
    /// Publish messages: the MESSAGE arguments, generated ones, or standard input.
    Pub(PubArgs),
    /// Print messages as they arrive, like `tail -f`.
    Sub(SubArgs),
    /// Show a bus: header, positions, every subscriber and producer.
    Stat(StatArgs),
    /// Remove a bus file (refused while live subscribers are attached, unless --force).
    Rm(RmArgs),
    /// List every bus of $SHMBUS_DIR (or of DIR, or the BUSes named), with what is wrong.
    Ls(LsArgs),
    /// A terminal UI over every bus of a directory: rates, the last minute, every slot.
    Top(TopArgs),
    /// Carry buses to and from a NATS server (JetStream for reliable buses, core NATS for
    /// lossy ones).
    Bridge(bus_bridge::BridgeArgs),
    /// Run a publisher and subscriber processes on a temporary bus and show what they do.
    Demo(DemoArgs),
    /// Measure shmbus against pipes, Unix sockets and TCP, in separate processes.
    Bench(BenchArgs),
    /// Print a shell completion script.
    #[command(after_help = "\
Examples:
  shmbus completions bash > ~/.local/share/bash-completion/completions/shmbus
  shmbus completions zsh > ~/.zfunc/_shmbus")]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// The creation parameters shared by `create` and `pub --create`.
#[derive(Debug, Args, Clone)]
pub struct CreateOpts {
    /// Ring size: a power of two from 4KiB to 1TiB (64KiB, 16MiB, 1GiB; K, KB and KiB all
    /// mean 1024). The file takes this much memory (or disk) at once, unless --sparse.
    #[arg(long, value_name = "SIZE", value_parser = parse_capacity, default_value = "64MiB")]
    pub capacity: u64,
    /// Largest message, at most half the capacity less 16 bytes [default: capacity/8, at most
    /// 16MiB]. Fixed for the life of the bus.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_message: Option<u64>,
    /// Delivery mode, fixed for the life of the bus.
    #[arg(long, value_name = "MODE", value_parser = ModeParser, default_value = "reliable")]
    pub mode: ModeArg,
    /// Subscriber slots, 1 to 4096.
    #[arg(long, value_name = "N", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub max_subscribers: u32,
    /// Producer slots, 1 to 4096 (1: an exclusive, faster publisher).
    #[arg(long, value_name = "N", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub max_producers: u32,
    /// Permission bits of the file, applied as given (the umask does not narrow them): 600
    /// for this user only, 660 for its group, 666 for everyone. Other users then need
    /// `--allow-other-owner` to join, and a directory they can enter.
    #[arg(long, value_name = "OCTAL", value_parser = parse_octal, default_value = "600")]
    pub file_mode: u32,
    /// Do not reserve the file's blocks (for rings larger than memory, on disk).
    #[arg(long)]
    pub sparse: bool,
    /// How long a dead producer's unfinished message may block readers, 1ms to 1h (DUR: a
    /// number with a unit, e.g. 500ms, 2s, 1m).
    #[arg(long, value_name = "DUR", value_parser = parse_unblock_timeout, default_value = "200ms")]
    pub unblock_timeout: Duration,
}

impl CreateOpts {
    /// What the value parsers cannot see alone: a max message that fits the capacity. A
    /// usage error, like every other bad option.
    pub fn check(&self) -> Result<(), String> {
        let Some(m) = self.max_message else {
            return Ok(());
        };
        let limit = bus_core::layout::max_message_limit(self.capacity);
        if m == 0 || m > limit {
            return Err(format!(
                "invalid value '{m}' for '--max-message <SIZE>': a ring of {} bytes takes \
                 messages of 1 to {limit} bytes (half the capacity, less a 16-byte header); \
                 give a larger --capacity or a smaller --max-message",
                self.capacity
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  shmbus create ticks                               64 MiB, reliable, this user only
  shmbus create quotes --mode lossy --capacity 1GiB
  shmbus create /srv/bus/shared.bus --file-mode 666 a bus other users may join
                                                    (they pass --allow-other-owner)

Prints what it created. An existing bus with live subscribers is replaced only with --force,
and they are told: they stay attached to the old, deleted file.")]
pub struct CreateArgs {
    /// Bus name (a file NAME.bus in $SHMBUS_DIR, default /dev/shm/shmbus) or a path with a
    /// slash.
    #[arg(value_name = "BUS", value_parser = parse_bus)]
    pub bus: String,
    #[command(flatten)]
    pub opts: CreateOpts,
    /// Replace an existing file at that path (even a bus with live subscribers).
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// Producers wait for the slowest subscriber; nothing is lost.
    Reliable,
    /// Producers never wait; a subscriber that falls a ring behind loses messages, counted.
    Lossy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InputFormat {
    /// Each line is a message, without its newline.
    Lines,
    /// All of standard input is one message.
    Raw,
    /// Frames: a u32 little-endian length, then that many bytes.
    Len,
}

/// `--allow-other-owner`, shared by `sub` and `pub`.
#[derive(Debug, Args, Clone, Copy)]
pub struct ShareOpts {
    /// Join a bus file that another user owns (refused by default: a file planted in a shared
    /// directory is not trusted silently). The file's mode must also let this user read and
    /// write it.
    #[arg(long)]
    pub allow_other_owner: bool,
}

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  shmbus pub ticks hello world              two messages
  seq 1000 | shmbus pub ticks --create      one message a line; creates the bus if needed
  shmbus pub ticks --count 1000000 --size 64   a million generated 64-byte messages

A reliable bus makes `pub` wait while the ring is full; after a second it says which
subscriber holds it. A message larger than the bus's maximum (`shmbus stat` shows it; set by
`create --max-message`) stops `pub` with exit 1, after the messages before it.")]
pub struct PubArgs {
    /// Bus name or path.
    #[arg(value_name = "BUS", value_parser = parse_bus)]
    pub bus: String,
    /// Messages to publish, one per argument. Without any (and without --count), standard
    /// input is read.
    #[arg(value_name = "MESSAGE")]
    pub messages: Vec<String>,
    /// Create the bus (with the default parameters) if it does not exist.
    #[arg(long)]
    pub create: bool,
    #[command(flatten)]
    pub share: ShareOpts,
    /// How standard input becomes messages.
    #[arg(long, value_enum, default_value_t = InputFormat::Lines)]
    pub input: InputFormat,
    /// Publish N generated messages (needs --size); the first 8 bytes of each are its number
    /// 0..N-1, little-endian.
    #[arg(long, value_name = "N", requires = "size", conflicts_with = "messages")]
    pub count: Option<u64>,
    /// Size of each generated message (at least 8).
    #[arg(long, value_name = "SIZE", value_parser = parse_generated_size, requires = "count")]
    pub size: Option<u64>,
    /// Wait at most DUR for room in a full ring (reliable mode) before failing (DUR: a
    /// number with a unit, e.g. 500ms, 2s, 1m) [default: wait as long as it takes].
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// The payload, then a newline.
    Text,
    /// One JSON object a line: {"seq","position","len","data" or "data_b64"}.
    Json,
    /// The payload in hex, then a newline.
    Hex,
    /// Payloads back to back.
    Raw,
    /// Frames as `pub --input len` reads them.
    Len,
}

/// Where `sub` starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum From {
    Latest,
    Oldest,
    Position(u64),
}

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  shmbus sub ticks                          new messages, until Ctrl-C
  shmbus sub ticks --from oldest --count 10 --timeout 2s
  shmbus sub ticks --format json | jq .seq

A subscriber takes a slot of the bus while it runs (a reliable bus waits for it), and leaves
it on exit or Ctrl-C. If the bus file is removed or replaced meanwhile, it says so on stderr.")]
pub struct SubArgs {
    /// Bus name or path.
    #[arg(value_name = "BUS", value_parser = parse_bus)]
    pub bus: String,
    /// Where to start: latest (only new messages), oldest (everything retained), or a
    /// position printed earlier (json "position").
    #[arg(long, value_name = "latest|oldest|POSITION", value_parser = parse_from, default_value = "latest")]
    pub from: From,
    /// Exit 0 after N messages.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Exit 124 if DUR passes before --count messages arrived (DUR: a number with a unit,
    /// e.g. 500ms, 2s, 1m).
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
    /// Busy-poll instead of sleeping on the futex (one core, lowest latency).
    #[arg(long)]
    pub spin: bool,
    #[command(flatten)]
    pub share: ShareOpts,
}

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  shmbus stat ticks                     header, positions, every subscriber and producer
  shmbus stat ticks --watch 1s          refreshed every second, with rates
  shmbus stat ticks --json | jq '.subscribers[] | select(.alive | not)'

`stat` opens the bus read-only and joins nothing: read permission on the file is enough, and
it may belong to another user. It changes nothing (dead slots are shown, not evicted).")]
pub struct StatArgs {
    /// Bus name or path.
    #[arg(value_name = "BUS", value_parser = parse_bus)]
    pub bus: String,
    /// One JSON object (per refresh with --watch).
    #[arg(long)]
    pub json: bool,
    /// Refresh every DUR (at least 10ms; e.g. 500ms, 2s, 1m), with rates, until interrupted.
    #[arg(long, value_name = "DUR", value_parser = parse_watch_interval)]
    pub watch: Option<Duration>,
}

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  shmbus demo                               3 subscribers, 64-byte messages
  shmbus demo --subscribers 1 --size 4KiB")]
pub struct DemoArgs {
    /// Subscriber processes, 1 to 16.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub subscribers: u32,
    /// Messages measured per transport, at least 1000 (a tenth more are sent first to warm
    /// up; the ping-pong makes a 25th as many round trips, 1000 to 20000).
    #[arg(long, value_name = "N", default_value_t = 500_000, value_parser = clap::value_parser!(u64).range(1000..))]
    pub messages: u64,
    /// Size of each message, 16 bytes to 1 GiB (it carries a number and a timestamp).
    #[arg(long, value_name = "SIZE", value_parser = parse_message_size, default_value = "64")]
    pub size: usize,
    /// Directory for the temporary bus [default: $SHMBUS_DIR, else /dev/shm].
    #[arg(long, value_name = "DIR")]
    pub dir: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  shmbus bench --quick                              a short run, tables on stdout
  shmbus bench --sizes 64,4KiB --transports shmbus-block,unix-stream
  shmbus bench --markdown --csv r.csv --svg r.svg   for a report

Progress goes to stderr, the tables to stdout: aligned plain text, or Markdown with
--markdown. --json, --csv and --svg write the results to files as well.")]
pub struct BenchArgs {
    /// A short run (well under 30 s): fewer messages and round trips.
    #[arg(long)]
    pub quick: bool,
    /// Message sizes, 16 bytes to 1 GiB [default: 64,1KiB,16KiB,256KiB,1MiB].
    #[arg(long, value_name = "SIZE,...", value_delimiter = ',', value_parser = parse_message_size)]
    pub sizes: Vec<usize>,
    /// Transports [default: all]: shmbus-spin, shmbus-default, shmbus-block, shmbus-loan,
    /// shmbus-ready, shmbus-shared, shmbus-async, shmbus-async-park, pipe, pipe-batched, unix-stream,
    /// unix-seqpacket, tcp, unix-stream-tokio; the calibration rings ring-spsc and ring-mpmc;
    /// iceoryx2 when built with `--features iceoryx2`.
    #[arg(long, value_name = "NAME,...", value_delimiter = ',', value_parser = parse_transport)]
    pub transports: Vec<&'static dyn bus_bench::Transport>,
    /// Skip the fan-out runs.
    #[arg(long)]
    pub no_fanout: bool,
    /// Print the tables as Markdown (as the README shows them) instead of aligned text.
    #[arg(long)]
    pub markdown: bool,
    /// Write JSON lines here.
    #[arg(long, value_name = "PATH")]
    pub json: Option<std::path::PathBuf>,
    /// Write CSV here.
    #[arg(long, value_name = "PATH")]
    pub csv: Option<std::path::PathBuf>,
    /// Write the charts (SVG) here.
    #[arg(long, value_name = "PATH")]
    pub svg: Option<std::path::PathBuf>,
    /// Directory for the benchmark's buses, FIFOs and sockets [default: $SHMBUS_DIR if set,
    /// else /dev/shm].
    #[arg(long, value_name = "DIR")]
    pub dir: Option<std::path::PathBuf>,
    /// Do not pin sender and receiver to different CPUs.
    #[arg(long)]
    pub no_pin: bool,
}

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  shmbus ls                       every bus in $SHMBUS_DIR (default /dev/shm/shmbus)
  shmbus ls /var/lib/app          the *.bus files of a directory
  shmbus ls --json | jq 'select(.ok | not)'   the buses that need a look

STATUS is `ok`, or what is wrong now (dead slots not yet evicted, a full ring with producers
waiting); repairs done earlier follow in parentheses. Files that are not buses, or cannot be
opened, are listed with the reason. Exit status 1 if a directory could not be read or a BUS
named does not exist.")]
pub struct LsArgs {
    /// Directories (their *.bus files are listed) or buses (names or paths)
    /// [default: $SHMBUS_DIR].
    #[arg(value_name = "DIR|BUS")]
    pub paths: Vec<String>,
    /// One JSON object a bus, a line each.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  shmbus top                      every bus in $SHMBUS_DIR
  shmbus top /var/lib/app

Keys: up/down (or k/j) select a bus, Home/End the first/last, q (or Esc, Ctrl-C) quits.

MiB/s counts the bytes of the ring's records (payloads, 16-byte headers, padding), in 2^20 B,
as `stat --watch` does.
Without a terminal, `top` exits 2 and points at `shmbus stat BUS --watch 1s --json`.")]
pub struct TopArgs {
    /// Directory whose *.bus files to watch [default: $SHMBUS_DIR].
    #[arg(value_name = "DIR")]
    pub dir: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  shmbus rm ticks
  shmbus rm ticks --force           even with subscribers attached (they are told so)")]
pub struct RmArgs {
    /// Bus name or path.
    #[arg(value_name = "BUS", value_parser = parse_bus)]
    pub bus: String,
    /// Remove even with live subscribers attached, or if the file is not a valid bus. The
    /// subscribers stay attached to the deleted file, receive nothing more, and print a
    /// warning.
    #[arg(long)]
    pub force: bool,
}

const SIZE_EXAMPLES: &str = "examples: 4096, 64KiB, 16MiB, 1GiB";

fn parse_size(s: &str) -> Result<u64, String> {
    use parse_size::Error;
    let t = s.trim();
    if t.starts_with('-') {
        return Err(format!(
            "{s:?} is negative: a size is a number of bytes ({SIZE_EXAMPLES})"
        ));
    }
    parse_size::Config::new()
        .with_binary()
        .parse_size(t)
        .map_err(|e| match e {
            Error::Empty => format!("a size is needed ({SIZE_EXAMPLES})"),
            Error::PosOverflow => format!("{s:?} is too large ({SIZE_EXAMPLES})"),
            _ => format!("{s:?} is not a size ({SIZE_EXAMPLES})"),
        })
}

/// 16777216 -> "16MiB" (exact binary units only; otherwise the number of bytes).
pub fn size_arg(n: u64) -> String {
    for (shift, unit) in [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if n >= 1 << shift && n.is_multiple_of(1 << shift) {
            return format!("{}{unit}", n >> shift);
        }
    }
    n.to_string()
}

/// A ring capacity: a power of two from 4KiB to 1TiB. A usage error names the powers of
/// two around a value that is not one.
fn parse_capacity(s: &str) -> Result<u64, String> {
    use bus_core::layout::{MAX_CAPACITY, MIN_CAPACITY};
    let n = parse_size(s)?;
    if !(MIN_CAPACITY..=MAX_CAPACITY).contains(&n) {
        return Err(format!(
            "{s:?} is out of range: a capacity is a power of two from 4KiB to 1TiB"
        ));
    }
    if !n.is_power_of_two() {
        let below = 1u64 << (63 - n.leading_zeros());
        return Err(format!(
            "{s:?} ({n} bytes) is not a power of two: try {} or {}",
            size_arg(below),
            size_arg(below << 1)
        ));
    }
    Ok(n)
}

/// `--mode`: as clap's enum parser, but its error lists both modes with what they mean
/// (clap's own suggests the closest spelling: `lossless` would get `lossy`, its opposite).
#[derive(Debug, Clone, Copy)]
pub struct ModeParser;

impl TypedValueParser for ModeParser {
    type Value = ModeArg;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<ModeArg, clap::Error> {
        match value.to_str() {
            Some("reliable") => Ok(ModeArg::Reliable),
            Some("lossy") => Ok(ModeArg::Lossy),
            _ => Err(clap::Error::raw(
                clap::error::ErrorKind::InvalidValue,
                format!(
                    "invalid value '{}' for '--mode <MODE>': the modes are `reliable` (producers \
                     wait for the slowest subscriber; nothing is lost) and `lossy` (producers \
                     never wait; a subscriber that falls a ring behind loses messages, counted)\n",
                    value.to_string_lossy()
                ),
            )
            .with_cmd(cmd)),
        }
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(
            ModeArg::value_variants()
                .iter()
                .filter_map(ValueEnum::to_possible_value),
        ))
    }
}

/// A benchmark message: 16 bytes (sequence number and time stamp) to 1 GiB.
fn parse_message_size(s: &str) -> Result<usize, String> {
    match parse_size(s)? {
        n if (16..=1 << 30).contains(&n) => Ok(n as usize),
        n => Err(format!(
            "{n} is out of range (16 bytes to 1GiB: a message carries a 16-byte header)"
        )),
    }
}

/// A `pub --count` message: at least its 8-byte number.
fn parse_generated_size(s: &str) -> Result<u64, String> {
    match parse_size(s)? {
        n if n >= 8 => Ok(n),
        n => Err(format!(
            "{n} is too small: generated messages carry an 8-byte number"
        )),
    }
}

fn parse_transport(s: &str) -> Result<&'static dyn bus_bench::Transport, String> {
    bus_bench::transport::by_name(s).ok_or_else(|| {
        let known: Vec<_> = bus_bench::transport::all()
            .iter()
            .map(|t| t.name())
            .collect();
        format!("unknown transport {s:?} (known: {})", known.join(", "))
    })
}

/// Longest duration any flag takes: a century. Longer ones are surely a typo, and adding one
/// to the clock overflows it (a timeout of 500000000000y was a panic).
/// (A year as humantime counts it, 365.25 days.)
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 31_557_600);

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("{e} (a duration is a number with a unit: 500ms, 2s, 1m)"))?;
    if d > MAX_DURATION {
        return Err(format!(
            "{s:?} is longer than 100 years (to wait without end, leave the option out)"
        ));
    }
    Ok(d)
}

/// `create --unblock-timeout`: within what a bus header may carry (1 ms to 1 h).
fn parse_unblock_timeout(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    let ns = d.as_nanos();
    if ns < bus_core::layout::MIN_UNBLOCK_TIMEOUT_NS as u128
        || ns > bus_core::layout::MAX_UNBLOCK_TIMEOUT_NS as u128
    {
        return Err(format!(
            "{s:?} is out of range: an unblock timeout is 1ms to 1h"
        ));
    }
    Ok(d)
}

/// Shortest `stat --watch` interval: a refresh loop faster than this only burns a core.
pub const MIN_WATCH: Duration = Duration::from_millis(10);

fn parse_watch_interval(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < MIN_WATCH {
        return Err(format!(
            "{s:?} is shorter than the shortest refresh interval, 10ms"
        ));
    }
    Ok(d)
}

/// A bus name or path: not empty, not `.` or `..` (they would name the hidden files `.bus`
/// and `..bus`), not ending in `/` (`create d/` made a file `d` no command could then open).
fn parse_bus(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("a bus name cannot be empty".into());
    }
    if s == "." || s == ".." {
        return Err(format!("{s:?} is not a bus name"));
    }
    if s.ends_with('/') {
        return Err(format!(
            "{s:?} ends in '/': give the bus file's name or path, not a directory"
        ));
    }
    Ok(s.to_string())
}

fn parse_octal(s: &str) -> Result<u32, String> {
    let digits = s.trim_start_matches("0o");
    match u32::from_str_radix(digits, 8) {
        Ok(m) if m <= 0o777 => Ok(m),
        _ => Err(format!(
            "{s:?} is not an octal file mode of permission bits, at most 777 (examples: 600, 0640)"
        )),
    }
}

fn parse_from(s: &str) -> Result<From, String> {
    match s {
        "latest" => Ok(From::Latest),
        "oldest" => Ok(From::Oldest),
        p => p
            .parse()
            .map(From::Position)
            .map_err(|_| format!("{s:?} is not latest, oldest or a position")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_durations_modes_and_positions_parse() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("64K"), Ok(65536));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("-5").unwrap_err().contains("negative"));
        assert_eq!(parse_capacity("16MiB"), Ok(16 << 20));
        assert!(parse_capacity("10MB")
            .unwrap_err()
            .contains("try 8MiB or 16MiB"));
        assert!(parse_capacity("1KiB").unwrap_err().contains("out of range"));
        assert_eq!(size_arg(3 << 30), "3GiB");
        assert_eq!(size_arg(1000), "1000");
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("soon").is_err());
        // Accepted by humantime, and each overflowed the clock when added to it.
        for huge in [
            "500000000000y",
            "9223372036854775807s",
            "18446744073709551615s",
            "101y",
        ] {
            assert!(
                parse_duration(huge).unwrap_err().contains("100 years"),
                "{huge}"
            );
        }
        assert_eq!(parse_duration("100y"), Ok(MAX_DURATION));
        assert_eq!(parse_octal("640"), Ok(0o640));
        assert_eq!(parse_octal("0o600"), Ok(0o600));
        assert!(parse_octal("9").is_err());
        assert!(parse_octal("17777").is_err());
        for bad in ["", ".", "..", "d/", "/dev/shm/shmbus/"] {
            assert!(parse_bus(bad).is_err(), "{bad:?}");
        }
        for good in ["ticks", "ticks.bus", "./t", "/dev/shm/x.bus", "a.b"] {
            assert_eq!(parse_bus(good).as_deref(), Ok(good));
        }
        // Permission bits only: no set-user-id, set-group-id or sticky bit on a bus file.
        assert!(parse_octal("4600").is_err());
        assert!(parse_octal("1777").is_err());
        assert_eq!(parse_octal("777"), Ok(0o777));
        assert_eq!(parse_from("oldest"), Ok(From::Oldest));
        assert_eq!(parse_from("4096"), Ok(From::Position(4096)));
        assert!(parse_from("yesterday").is_err());
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
