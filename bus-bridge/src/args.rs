//! The `bridge` arguments (clap only validates their shape) and their conversion into links.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};

/// `shmbus bridge`: carry local buses to and from a NATS server. A reliable bus goes through
/// JetStream (persisted, acknowledged, de-duplicated: exactly once across crashes); a lossy bus
/// through core NATS (at most once; every loss counted).
#[derive(Debug, Clone, clap::Args)]
#[command(
    after_help = "Exit codes: 0 stopped by SIGINT/SIGTERM, 1 error (bad arguments, \
unreachable server, missing bus, conflicting stream settings, a link that failed), 2 usage error."
)]
pub struct BridgeArgs {
    /// The NATS server: nats://HOST:PORT, or several separated by commas (a cluster).
    #[arg(long, value_name = "URL")]
    pub nats: Option<String>,
    /// Export BUS (a name or a path) to SUBJECT. Repeatable.
    #[arg(long = "out", value_name = "BUS=SUBJECT")]
    pub outs: Vec<String>,
    /// Import SUBJECT into BUS. Repeatable.
    #[arg(long = "in", value_name = "SUBJECT=BUS")]
    pub ins: Vec<String>,
    /// The JetStream stream of reliable buses (created, file storage, if missing).
    #[arg(long, value_name = "NAME", default_value = "SHMBUS")]
    pub stream: String,
    /// Directory of the crash state [default: BUS.bridge beside each bus file].
    #[arg(long, value_name = "DIR")]
    pub state: Option<PathBuf>,
    /// Statistics as JSON lines on stdout (with `ready` and `final` events) instead of text
    /// on stderr.
    #[arg(long)]
    pub json: bool,
    /// This bridge's name: part of the durable consumer names and of the origin headers
    /// [default: the host name].
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Replicas of the stream when this bridge creates it (3 on a three-node cluster). An
    /// existing stream with another count is a conflict.
    #[arg(long, value_name = "N")]
    pub replicas: Option<usize>,
    /// JetStream publishes in flight per exported bus (1 to 1024).
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub window: usize,
    /// How often statistics are printed.
    #[arg(long, value_name = "DUR", value_parser = humantime::parse_duration, default_value = "2s")]
    pub stats_interval: Duration,
    /// How long to try reaching the server at start.
    #[arg(long, value_name = "DUR", value_parser = humantime::parse_duration, default_value = "5s")]
    pub connect_timeout: Duration,
}

/// The most publishes in flight: the importer's reorder tolerance and the exporter's replay
/// buffer are sized from it.
pub const MAX_WINDOW: usize = 1024;

/// One `--out` or `--in`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkSpec {
    /// Export (bus → subject) or import (subject → bus).
    pub export: bool,
    /// The BUS argument as given.
    pub bus: String,
    /// The bus file.
    pub path: PathBuf,
    /// The subject.
    pub subject: String,
}

/// What the arguments ask, checked.
#[derive(Debug, Clone)]
pub struct Plan {
    pub urls: String,
    pub links: Vec<LinkSpec>,
    pub stream: String,
    pub name: String,
}

impl BridgeArgs {
    /// Checks the arguments and resolves the buses (not opened yet).
    ///
    /// # Errors
    ///
    /// What is wrong, naming the argument.
    pub fn plan(&self) -> anyhow::Result<Plan> {
        let Some(urls) = self.nats.clone() else {
            bail!("--nats URL is required (for example --nats nats://127.0.0.1:4222)");
        };
        for url in urls.split(',') {
            // TLS is not built in (no crypto provider compiled): plain nats:// on a trusted
            // network, or a local TLS-terminating proxy.
            let rest = url.strip_prefix("nats://").unwrap_or(url);
            if rest.is_empty() || rest.contains(char::is_whitespace) || rest.contains('/') {
                bail!("--nats {urls:?}: {url:?} is not a server address (nats://HOST:PORT)");
            }
        }
        if self.outs.is_empty() && self.ins.is_empty() {
            bail!("nothing to bridge: give at least one --out BUS=SUBJECT or --in SUBJECT=BUS");
        }
        if self.window == 0 || self.window > MAX_WINDOW {
            bail!("--window {}: must be from 1 to {MAX_WINDOW}", self.window);
        }
        if let Some(r) = self.replicas {
            if !(1..=5).contains(&r) {
                bail!("--replicas {r}: JetStream allows 1 to 5");
            }
        }
        // (A duration added to the clock must not overflow it: 500000000000y parses.)
        const DAY: Duration = Duration::from_secs(24 * 3600);
        if self.stats_interval < Duration::from_millis(100) || self.stats_interval > DAY {
            bail!("--stats-interval: from 100ms to 1 day");
        }
        if self.connect_timeout > DAY {
            bail!("--connect-timeout: at most 1 day");
        }
        if !valid_token(&self.stream) || self.stream.len() > MAX_NAME {
            bail!(
                "--stream {:?}: a stream name is 1 to {MAX_NAME} letters, digits, '-' and '_'",
                self.stream
            );
        }
        let mut links = Vec::new();
        for spec in &self.outs {
            let (bus, subject) = split_pair(spec, "--out", "BUS=SUBJECT")?;
            check_subject(subject, false).with_context(|| format!("--out {spec:?}"))?;
            links.push(LinkSpec {
                export: true,
                bus: bus.to_string(),
                path: bus_core::resolve(bus),
                subject: subject.to_string(),
            });
        }
        for spec in &self.ins {
            let (subject, bus) = split_pair(spec, "--in", "SUBJECT=BUS")?;
            check_subject(subject, true).with_context(|| format!("--in {spec:?}"))?;
            links.push(LinkSpec {
                export: false,
                bus: bus.to_string(),
                path: bus_core::resolve(bus),
                subject: subject.to_string(),
            });
        }
        for (i, a) in links.iter().enumerate() {
            for b in &links[..i] {
                if a.export == b.export && a.path == b.path && a.subject == b.subject {
                    bail!(
                        "{} {}={} is given twice",
                        if a.export { "--out" } else { "--in" },
                        a.bus,
                        a.subject
                    );
                }
            }
        }
        let name = match &self.name {
            Some(n) => n.clone(),
            None => crate::id::host_name(),
        };
        if name.is_empty()
            || name.len() > MAX_NAME
            || name.contains(|c: char| c.is_whitespace() || c.is_control())
        {
            bail!("--name {name:?}: give a name of 1 to {MAX_NAME} bytes without spaces or control characters");
        }
        Ok(Plan {
            urls,
            links,
            stream: self.stream.clone(),
            name,
        })
    }
}

fn split_pair<'a>(spec: &'a str, flag: &str, shape: &str) -> anyhow::Result<(&'a str, &'a str)> {
    match spec.split_once('=') {
        Some((a, b)) if !a.is_empty() && !b.is_empty() => Ok((a, b)),
        _ => bail!("{flag} {spec:?}: expected {shape}"),
    }
}

/// Letters, digits, '-' and '_': a stream or consumer name.
fn valid_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Longest subject a link takes, in bytes. NATS has no limit of its own but the server's
/// control line (4 KiB by default), which a subject must share with the protocol's other
/// fields, and JetStream's consumer-creation subject with the stream and consumer names: a
/// longer subject would have the server close the connection at every publish instead of
/// failing once, with a message, here.
pub const MAX_SUBJECT: usize = 1024;

/// Longest `--name` and `--stream`, in bytes (they go into consumer names and headers).
pub const MAX_NAME: usize = 128;

/// A NATS subject: dot-separated non-empty tokens without spaces; wildcards only where a
/// subscription may use them.
fn check_subject(subject: &str, wildcards: bool) -> anyhow::Result<()> {
    if subject.len() > MAX_SUBJECT {
        bail!(
            "a subject of {} bytes: at most {MAX_SUBJECT}",
            subject.len()
        );
    }
    let tokens: Vec<&str> = subject.split('.').collect();
    for (i, t) in tokens.iter().enumerate() {
        if t.is_empty() || t.contains(|c: char| c.is_whitespace() || c.is_control()) {
            bail!("{subject:?} is not a NATS subject (empty token or white space)");
        }
        let wild = *t == "*" || *t == ">";
        if (t.contains('*') || t.contains('>')) && !wild {
            bail!("{subject:?}: '*' and '>' must be whole tokens");
        }
        if wild && !wildcards {
            bail!("{subject:?}: an exported subject cannot hold wildcards");
        }
        if *t == ">" && i + 1 != tokens.len() {
            bail!("{subject:?}: '>' must be the last token");
        }
    }
    Ok(())
}

/// Whether the subject pattern `pattern` (of a stream) matches every subject `subject`
/// (itself possibly a pattern) matches.
pub fn covers(pattern: &str, subject: &str) -> bool {
    let mut p = pattern.split('.');
    let mut s = subject.split('.');
    loop {
        match (p.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(t)) if t != ">" => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_coverage() {
        assert!(covers("a.b", "a.b"));
        assert!(covers("a.*", "a.b"));
        assert!(covers("a.>", "a.b.c"));
        assert!(covers(">", "a"));
        assert!(covers("a.*", "a.*"));
        assert!(!covers("a.*", "a.>"));
        assert!(!covers("a.b", "a.*"));
        assert!(!covers("a.*", "a.b.c"));
        assert!(!covers("a", "a.b"));
    }

    #[test]
    fn subjects() {
        assert!(check_subject("a.b", false).is_ok());
        assert!(check_subject("a.*", false).is_err());
        assert!(check_subject("a.*", true).is_ok());
        assert!(check_subject("a..b", true).is_err());
        assert!(check_subject("a.>.b", true).is_err());
        assert!(check_subject("a b", true).is_err());
        let long = |n: usize| vec!["t"; n.div_ceil(2)].join(".")[..n].to_string();
        assert!(check_subject(&long(MAX_SUBJECT - 1), false).is_ok());
        assert!(check_subject(&long(MAX_SUBJECT + 1), false).is_err());
        assert!(check_subject(&long(MAX_SUBJECT + 1), true).is_err());
    }
}
