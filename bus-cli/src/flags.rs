//! The command line, as clap sees it. This module only parses and validates; `main` turns
//! the result into bus-core calls.

use std::time::Duration;

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
#[command(
    after_help = "Exit codes: 0 success, 1 runtime error, 2 usage error, 124 `sub --timeout` ran out."
)]
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
    /// Remove a bus file (refused while live subscribers are attached).
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
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// The creation parameters shared by `create` and `pub --create`.
#[derive(Debug, Args, Clone)]
pub struct CreateOpts {
    /// Ring size: a power of two (4096, 64KiB, 16MiB, 1GiB; K, KB and KiB all mean 1024).
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value = "64MiB")]
    pub capacity: u64,
    /// Largest message [default: capacity/8, at most 16MiB].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_message: Option<u64>,
    /// Delivery mode.
    #[arg(long, value_enum, default_value_t = ModeArg::Reliable)]
    pub mode: ModeArg,
    /// Subscriber slots.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub max_subscribers: u32,
    /// Producer slots.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub max_producers: u32,
    /// Permission bits of the file (the umask applies).
    #[arg(long, value_name = "OCTAL", value_parser = parse_octal, default_value = "600")]
    pub file_mode: u32,
    /// Do not reserve the file's blocks (for rings larger than memory, on disk).
    #[arg(long)]
    pub sparse: bool,
    /// How long a dead producer's unfinished message may block readers.
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "200ms")]
    pub unblock_timeout: Duration,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Bus name or path.
    pub bus: String,
    #[command(flatten)]
    pub opts: CreateOpts,
    /// Replace an existing file at that path.
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

#[derive(Debug, Args)]
pub struct PubArgs {
    /// Bus name or path.
    pub bus: String,
    /// Messages to publish, one per argument. Without any (and without --count), standard
    /// input is read.
    pub messages: Vec<String>,
    /// Create the bus (with the default parameters) if it does not exist.
    #[arg(long)]
    pub create: bool,
    /// How standard input becomes messages.
    #[arg(long, value_enum, default_value_t = InputFormat::Lines)]
    pub input: InputFormat,
    /// Publish N generated messages (needs --size); the first 8 bytes of each are its number
    /// 0..N-1, little-endian.
    #[arg(long, value_name = "N", requires = "size", conflicts_with = "messages")]
    pub count: Option<u64>,
    /// Size of each generated message (at least 8).
    #[arg(long, value_name = "BYTES", value_parser = parse_generated_size, requires = "count")]
    pub size: Option<u64>,
    /// Wait at most DUR for room in a full ring (reliable mode) before failing.
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
pub struct SubArgs {
    /// Bus name or path.
    pub bus: String,
    /// Where to start: latest (only new messages), oldest (everything retained), or a
    /// position printed earlier (json "position").
    #[arg(long, value_name = "latest|oldest|POSITION", value_parser = parse_from, default_value = "latest")]
    pub from: From,
    /// Exit 0 after N messages.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Exit 124 if DUR passes before --count messages arrived.
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
    /// Busy-poll instead of sleeping on the futex (one core, lowest latency).
    #[arg(long)]
    pub spin: bool,
}

#[derive(Debug, Args)]
pub struct StatArgs {
    /// Bus name or path.
    pub bus: String,
    /// One JSON object (per refresh with --watch).
    #[arg(long)]
    pub json: bool,
    /// Refresh every DUR (at least 10ms), with rates, until interrupted.
    #[arg(long, value_name = "DUR", value_parser = parse_watch_interval)]
    pub watch: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Subscriber processes.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub subscribers: u32,
    /// Messages measured per transport, at least 1000 (a tenth more are sent first to warm
    /// up; the ping-pong makes a 25th as many round trips, 1000 to 20000).
    #[arg(long, default_value_t = 500_000, value_parser = clap::value_parser!(u64).range(1000..))]
    pub messages: u64,
    /// Size of each message, 16 bytes to 1 GiB (it carries a number and a timestamp).
    #[arg(long, value_name = "BYTES", value_parser = parse_message_size, default_value = "64")]
    pub size: usize,
    /// Directory for the temporary bus [default: $SHMBUS_DIR, else /dev/shm].
    #[arg(long, value_name = "DIR")]
    pub dir: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// A short run (well under 30 s): fewer messages and round trips.
    #[arg(long)]
    pub quick: bool,
    /// Message sizes, 16 bytes to 1 GiB [default: 64,1KiB,16KiB,256KiB,1MiB].
    #[arg(long, value_name = "SIZE,...", value_delimiter = ',', value_parser = parse_message_size)]
    pub sizes: Vec<usize>,
    /// Transports [default: all]: shmbus-spin, shmbus-block, shmbus-loan, shmbus-shared,
    /// shmbus-async, shmbus-async-park, pipe, pipe-batched, unix-stream, unix-seqpacket, tcp,
    /// unix-stream-tokio.
    #[arg(long, value_name = "NAME,...", value_delimiter = ',', value_parser = parse_transport)]
    pub transports: Vec<&'static dyn bus_bench::Transport>,
    /// Skip the fan-out runs.
    #[arg(long)]
    pub no_fanout: bool,
    /// Write JSON lines here.
    #[arg(long, value_name = "PATH")]
    pub json: Option<std::path::PathBuf>,
    /// Write CSV here.
    #[arg(long, value_name = "PATH")]
    pub csv: Option<std::path::PathBuf>,
    /// Write the charts (SVG) here.
    #[arg(long, value_name = "PATH")]
    pub svg: Option<std::path::PathBuf>,
    /// Directory for the benchmark's buses, FIFOs and sockets [default: /dev/shm].
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
Keys: up/down (or k/j) select a bus, Home/End the first/last, q (or Esc, Ctrl-C) quits.

MB/s counts the bytes of the ring's records (payloads, 16-byte headers, padding), in 10^6 B.
Without a terminal, `top` exits 2 and points at `shmbus stat BUS --watch 1s --json`.")]
pub struct TopArgs {
    /// Directory whose *.bus files to watch [default: $SHMBUS_DIR].
    #[arg(value_name = "DIR")]
    pub dir: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Bus name or path.
    pub bus: String,
    /// Remove even with live subscribers attached, or if the file is not a valid bus.
    #[arg(long)]
    pub force: bool,
}

fn parse_size(s: &str) -> Result<u64, String> {
    parse_size::Config::new()
        .with_binary()
        .parse_size(s)
        .map_err(|e| format!("{e} (examples: 4096, 64KiB, 16MiB, 1GiB)"))
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

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 500ms, 5s, 2m)"))
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

fn parse_octal(s: &str) -> Result<u32, String> {
    let digits = s.trim_start_matches("0o");
    match u32::from_str_radix(digits, 8) {
        Ok(m) if m <= 0o7777 => Ok(m),
        _ => Err(format!(
            "{s:?} is not an octal file mode (examples: 600, 0640)"
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
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("soon").is_err());
        assert_eq!(parse_octal("640"), Ok(0o640));
        assert_eq!(parse_octal("0o600"), Ok(0o600));
        assert!(parse_octal("9").is_err());
        assert!(parse_octal("17777").is_err());
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
