//! The NATS side: connecting, the JetStream stream and the durable consumers, and the
//! headers every bridged message carries.

use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use async_nats::header::HeaderName;
use async_nats::jetstream::{self, consumer, stream};
use async_nats::HeaderMap;

use crate::args::covers;

// Names as `HeaderName` constants: looking a header up or inserting it by `&str` validates
// and copies the name for every message.

/// `Nats-Msg-Id`: JetStream drops a second message with the same id within the stream's
/// duplicate window.
pub const MSG_ID: HeaderName = HeaderName::from_static("Nats-Msg-Id");
/// Where a bridged message comes from, in one header (see [`Origin`]).
pub const ORIGIN: HeaderName = HeaderName::from_static("Shmbus-Origin");

/// The headers of bridges before the one-header format, read (never written) so that a
/// bridge upgraded while older ones still run, or with their messages still in a stream,
/// neither loops them back nor imports them twice (see [`Origin::of`]).
mod legacy {
    use async_nats::header::HeaderName;
    pub const HOST: HeaderName = HeaderName::from_static("Shmbus-Host");
    pub const SEQ: HeaderName = HeaderName::from_static("Shmbus-Seq");
    pub const PREV: HeaderName = HeaderName::from_static("Shmbus-Prev");
    pub const INDEX: HeaderName = HeaderName::from_static("Shmbus-Index");
    pub const HEARTBEAT: HeaderName = HeaderName::from_static("Shmbus-Heartbeat");
}

/// What the `Shmbus-Origin` header of a bridged message says, as
/// `bus=HEX [seq=N] [prev=N] [index=RUN:N] host=NAME`:
/// * `bus`: the bus the message was first published on ([`crate::id::hex`] of its bus id,
///   never zero);
/// * `seq`: its sequence number there (absent on a lossy heartbeat, which is never published
///   to a bus);
/// * `prev`, reliable exports: the sequence of the message exported before it from the same
///   bus, so that an importer commits an origin's messages in its order even if a failover
///   reordered them in the stream;
/// * `index`, lossy exports: the exporter's run (hexadecimal) and how many bus messages it had
///   accounted for (sent or lost) before this one; a gap at the far side is a loss;
/// * `host`: the bridge that exported it (`--name`), last, so that fields added later go
///   before it.
///
/// One header rather than one each: async-nats keeps headers in a map with a vector and a
/// string per header, built for every message on both sides, and five of them cost the lossy
/// bridge half its throughput.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin<'a> {
    /// The origin bus's id (never 0: 0 stands for "not from a bridge").
    pub bus: u64,
    /// The message's sequence on it; `None` on a heartbeat.
    pub seq: Option<u64>,
    /// Reliable: the sequence exported before it from the same bus.
    pub prev: Option<u64>,
    /// Lossy: `(exporter run, messages accounted for before this one)`.
    pub index: Option<(u64, u64)>,
    /// The exporting bridge's name.
    pub host: &'a str,
}

impl<'a> Origin<'a> {
    /// The header value.
    pub fn format(&self) -> String {
        // Written by hand rather than with `write!`: on a lossy link this runs for every
        // message, and the formatting machinery was 6 % of the exporting bridge's CPU.
        let mut v = String::with_capacity(96 + self.host.len());
        v.push_str("bus=");
        push_hex(&mut v, self.bus, 16);
        if let Some(seq) = self.seq {
            v.push_str(" seq=");
            push_decimal(&mut v, seq);
        }
        if let Some(prev) = self.prev {
            v.push_str(" prev=");
            push_decimal(&mut v, prev);
        }
        if let Some((run, n)) = self.index {
            v.push_str(" index=");
            push_hex(&mut v, run, 1);
            v.push(':');
            push_decimal(&mut v, n);
        }
        v.push_str(" host=");
        v.push_str(self.host);
        v
    }

    /// Reads a header value; `None` if it is not one this bridge wrote (no `bus`, a zero
    /// `bus`, a field that does not parse).
    pub fn parse(v: &'a str) -> Option<Origin<'a>> {
        let mut o = Origin {
            bus: 0,
            seq: None,
            prev: None,
            index: None,
            host: "",
        };
        let mut rest = v;
        let mut bus = None;
        loop {
            if let Some(host) = rest.strip_prefix("host=") {
                o.host = host;
                break;
            }
            let (field, after) = rest.split_once(' ')?;
            rest = after;
            let (key, value) = field.split_once('=')?;
            // A field given twice is not something a bridge wrote (which `bus` would count?).
            let twice = match key {
                "bus" => bus.replace(nonzero_hex(value)?).is_some(),
                "seq" => o.seq.replace(number(value)?).is_some(),
                "prev" => o.prev.replace(number(value)?).is_some(),
                "index" => o.index.replace(run_index(value)?).is_some(),
                // A field of a later version: skipped.
                _ => false,
            };
            if twice {
                return None;
            }
        }
        o.bus = bus?;
        Some(o)
    }

    /// The origin of a message with headers `h`, if a bridge exported it: this format's one
    /// header, or the five headers of bridges before it (`Shmbus-Origin` holding the bare
    /// bus id, `Shmbus-Seq`, `-Prev`, `-Index`, `-Heartbeat`, `-Host`).
    /// A message with more than one `Shmbus-Origin` value has none (no bridge writes two).
    pub fn of(h: Option<&'a HeaderMap>) -> Option<Origin<'a>> {
        let h = h?;
        let mut values = h.get_all(ORIGIN);
        let v = values.next()?.as_str();
        if values.next().is_some() {
            return None;
        }
        if let Some(o) = Origin::parse(v) {
            return Some(o);
        }
        // The earlier format: `Shmbus-Origin` was the bare id.
        let bus = nonzero_hex(v)?;
        let get = |name| h.get(name).map(|v| v.as_str());
        let heartbeat = get(legacy::HEARTBEAT).is_some();
        let seq = match get(legacy::SEQ) {
            Some(s) => Some(number(s)?),
            None if heartbeat => None,
            None => return None,
        };
        let index = match get(legacy::INDEX) {
            Some(i) => Some(run_index(i)?),
            None => None,
        };
        Some(Origin {
            bus,
            seq: if heartbeat { None } else { seq },
            prev: get(legacy::PREV).and_then(number),
            index,
            host: get(legacy::HOST).unwrap_or(""),
        })
    }

    /// Whether a message whose origin [`Origin::of`] gave `from` names `bus` as its origin
    /// anywhere: the whole header's `bus`, or, when that did not parse, any `bus=` field of any
    /// `Shmbus-Origin` value, or a value that is the bare id (the earlier format). A message of
    /// our own bus come back must never be imported again, whatever else its header says (a
    /// field of a later version in a form this one does not know, a second value).
    pub fn names(from: Option<Origin<'_>>, h: Option<&HeaderMap>, bus: u64) -> bool {
        if let Some(o) = from {
            return o.bus == bus;
        }
        let Some(h) = h else { return false };
        // An id is its 16 digits: whatever follows them in a damaged field does not hide it.
        let is_ours = |id: &str| id.get(..16).and_then(nonzero_hex) == Some(bus);
        h.get_all(ORIGIN).any(|v| {
            let v = v.as_str();
            is_ours(v)
                || v.split(' ')
                    .any(|field| field.strip_prefix("bus=").is_some_and(is_ours))
        })
    }

    /// Whether this is a lossy exporter's heartbeat: no message, only its next index.
    pub fn is_heartbeat(&self) -> bool {
        self.seq.is_none() && self.index.is_some()
    }
}

/// `s` if it is 1 to 20 digits of `radix` (no sign, no spaces: `str::parse` would take `+5`).
fn digits(s: &str, radix: u32) -> Option<&str> {
    debug_assert!(radix == 10 || radix == 16);
    let ok = |b: &u8| match radix {
        16 => b.is_ascii_hexdigit(),
        _ => b.is_ascii_digit(),
    };
    (!s.is_empty() && s.len() <= 20 && s.as_bytes().iter().all(ok)).then_some(s)
}

/// Appends `n` in lowercase hexadecimal, at least `width` digits (zero-padded).
fn push_hex(v: &mut String, n: u64, width: usize) {
    let digits = ((64 - n.leading_zeros() as usize).div_ceil(4))
        .max(width)
        .min(16);
    for i in (0..digits).rev() {
        let d = ((n >> (4 * i)) & 0xf) as u8;
        v.push(char::from(if d < 10 { b'0' + d } else { b'a' + d - 10 }));
    }
}

/// Appends `n` in decimal.
fn push_decimal(v: &mut String, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &b in &buf[at..] {
        v.push(char::from(b));
    }
}

/// `RUN:N`, a lossy exporter's run (hexadecimal) and index (decimal).
fn run_index(v: &str) -> Option<(u64, u64)> {
    let (run, n) = v.split_once(':')?;
    Some((u64::from_str_radix(digits(run, 16)?, 16).ok()?, number(n)?))
}

/// A decimal u64, digits only.
fn number(s: &str) -> Option<u64> {
    digits(s, 10)?.parse().ok()
}

/// A bus id as written by [`crate::id::hex`]: 16 hexadecimal digits, not zero.
fn nonzero_hex(s: &str) -> Option<u64> {
    if s.len() != 16 {
        return None;
    }
    u64::from_str_radix(digits(s, 16)?, 16)
        .ok()
        .filter(|&b| b != 0)
}

/// How long JetStream keeps message ids to drop duplicates, for a stream this bridge creates
/// (the server's default). A bridge that restarts within it re-publishes without duplicates;
/// after it, importers still recognise duplicates by origin and sequence.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// How long the server waits for an importer's acknowledgement before it redelivers.
pub const ACK_WAIT: Duration = Duration::from_secs(10);

/// Connects, failing after `timeout` with an error naming the server.
///
/// The client does not check publish subjects (see below): a caller that publishes through
/// it uses subjects checked as [`crate::BridgeArgs`] checks them (no white space, no control
/// characters), or a subject like `"a b"` goes out as subject `a` with reply `b`.
///
/// # Errors
///
/// The server cannot be reached in time.
pub async fn connect(
    urls: &str,
    name: &str,
    timeout: Duration,
) -> anyhow::Result<async_nats::Client> {
    let opts = async_nats::ConnectOptions::new()
        .name(format!("shmbus-bridge {name}"))
        .connection_timeout(timeout)
        // Reconnect for ever, quickly: a restarted server or a failed-over cluster node is the
        // normal case; publishes are retried and acknowledged, nothing relies on the socket.
        .max_reconnects(None)
        // Servers in the order given: the first is this bridge's node, the others where it
        // fails over to.
        .retain_servers_order()
        // Every subject this client publishes or requests on is checked once before it is
        // used: a link's by `args::check_subject`; the JetStream API subjects async-nats
        // builds from the stream name (`args::valid_token`), the durable consumer name
        // (`id::sanitize`: letters, digits, '-', '_') and an `--in` filter (`check_subject`);
        // acknowledgement subjects come from the server, inboxes from the client. So the
        // client need not scan the subject again for every message.
        .skip_subject_validation(true)
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis((50u64 << attempts.min(5)).min(1000))
        });
    let addrs: Vec<async_nats::ServerAddr> = urls
        .split(',')
        .map(|u| {
            u.parse()
                .with_context(|| format!("--nats: {u:?} is not a server address"))
        })
        .collect::<anyhow::Result<_>>()?;
    // `connect` fails at once if nothing listens; a server that accepts and never answers is
    // caught by the flush bounded by `timeout`.
    let client = async_nats::connect_with_options(addrs, opts)
        .await
        .with_context(|| format!("cannot connect to the NATS server at {urls}"))?;
    match tokio::time::timeout(timeout, client.flush()).await {
        Ok(Ok(())) => Ok(client),
        Ok(Err(e)) => Err(anyhow!("cannot reach the NATS server at {urls}: {e}")),
        Err(_) => Err(anyhow!(
            "cannot reach the NATS server at {urls} (no answer in {timeout:?}; is nats-server \
             running there?)"
        )),
    }
}

/// A JetStream context whose publish acknowledgements time out after `timeout`.
pub fn jetstream(client: async_nats::Client, timeout: Duration) -> jetstream::Context {
    jetstream::context::ContextBuilder::new()
        .timeout(timeout)
        // Futures dropped on a retry hand their permits to async-nats's acker task, which
        // holds each until an answer or this timeout: keep both short and the pool large.
        .ack_timeout(timeout)
        .max_ack_inflight(64 * crate::args::MAX_WINDOW)
        .build(client)
}

/// Makes sure the stream `name` exists and captures every subject in `subjects`; creates it
/// (file storage, limits retention, `replicas`) if missing.
///
/// # Errors
///
/// JetStream is not enabled on the server, or the stream exists with settings that conflict
/// with exactly-once bridging (a subject it does not capture, interest retention, memory
/// storage, no duplicate window, another replica count than `--replicas`), or another stream
/// already captures one of the subjects.
pub async fn ensure_stream(
    js: &jetstream::Context,
    name: &str,
    subjects: &[String],
    replicas: Option<usize>,
) -> anyhow::Result<()> {
    for attempt in 0..2 {
        match js.get_stream(name).await {
            Ok(mut s) => {
                let info = s
                    .info()
                    .await
                    .with_context(|| format!("cannot read stream {name}"))?;
                return check_stream(name, &info.config, subjects, replicas);
            }
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(jetstream_error(e, name)),
        }
        let config = stream::Config {
            name: name.to_string(),
            subjects: subjects.to_vec(),
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            duplicate_window: DUPLICATE_WINDOW,
            num_replicas: replicas.unwrap_or(1),
            description: Some("shmbus bridge: reliable buses".to_string()),
            ..Default::default()
        };
        match js.create_stream(config).await {
            Ok(_) => return Ok(()),
            // Another bridge created it meanwhile: look at it again.
            Err(e) if attempt == 0 && e.to_string().contains("already in use") => continue,
            Err(e) => {
                let text = e.to_string();
                if text.contains("overlap") {
                    bail!(
                        "cannot create stream {name} for subjects {subjects:?}: another stream \
                         already captures one of them ({text}); pass that stream's name with \
                         --stream"
                    );
                }
                return Err(anyhow!("cannot create stream {name}: {text}"));
            }
        }
    }
    bail!("stream {name} keeps appearing and disappearing")
}

fn is_not_found(e: &jetstream::context::GetStreamError) -> bool {
    matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(ref j)
        if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND)
}

fn jetstream_error(e: jetstream::context::GetStreamError, name: &str) -> anyhow::Error {
    let text = e.to_string();
    if text.contains("not enabled") || text.contains("no responders") || text.contains("timed out")
    {
        anyhow!(
            "JetStream is not available on the server ({text}); reliable buses need a server \
             started with -js"
        )
    } else {
        anyhow!("cannot look up stream {name}: {text}")
    }
}

/// The settings of an existing stream that would break the bridge's guarantees.
fn check_stream(
    name: &str,
    c: &stream::Config,
    subjects: &[String],
    replicas: Option<usize>,
) -> anyhow::Result<()> {
    for s in subjects {
        if !c.subjects.iter().any(|p| covers(p, s)) {
            bail!(
                "conflicting stream settings: stream {name} exists with subjects {:?}, which do \
                 not capture {s:?}; add the subject to it, or use another --stream",
                c.subjects
            );
        }
    }
    if c.retention == stream::RetentionPolicy::Interest {
        bail!(
            "conflicting stream settings: stream {name} has interest retention, which drops \
             messages published before an importer's consumer exists; use limits or work-queue \
             retention"
        );
    }
    if c.storage == stream::StorageType::Memory {
        bail!(
            "conflicting stream settings: stream {name} keeps messages in memory only; a \
             restarted server would lose what the bridge had been told was stored"
        );
    }
    if c.duplicate_window.is_zero() {
        bail!(
            "conflicting stream settings: stream {name} has no duplicate window, so messages \
             re-published after a crash would be stored twice"
        );
    }
    if let Some(r) = replicas {
        if c.num_replicas != r {
            bail!(
                "conflicting stream settings: stream {name} has {} replicas, --replicas says {r}",
                c.num_replicas
            );
        }
    }
    Ok(())
}

/// The durable pull consumer of an importer: acknowledgements cover everything before them
/// (`AckPolicy::All`), delivery from the start of the stream.
///
/// # Errors
///
/// The stream is missing, or a consumer of that name exists with another filter or
/// acknowledgement policy.
pub async fn durable_consumer(
    js: &jetstream::Context,
    stream_name: &str,
    durable: &str,
    subject: &str,
) -> anyhow::Result<consumer::PullConsumer> {
    let stream = js
        .get_stream(stream_name)
        .await
        .map_err(|e| jetstream_error(e, stream_name))?;
    let config = consumer::pull::Config {
        durable_name: Some(durable.to_string()),
        description: Some("shmbus bridge importer".to_string()),
        filter_subject: subject.to_string(),
        ack_policy: consumer::AckPolicy::All,
        deliver_policy: consumer::DeliverPolicy::All,
        // What a restarted importer waits for the messages its previous run had been sent
        // but had not acknowledged: the server redelivers them only after this.
        ack_wait: ACK_WAIT,
        max_ack_pending: 65536,
        ..Default::default()
    };
    let mut consumer: consumer::PullConsumer = stream
        .get_or_create_consumer(durable, config)
        .await
        .map_err(|e| {
            anyhow!("cannot create the durable consumer {durable} on {stream_name}: {e}")
        })?;
    let info = consumer
        .info()
        .await
        .map_err(|e| anyhow!("cannot read consumer {durable}: {e}"))?;
    let c = &info.config;
    if c.filter_subject != subject || c.ack_policy != consumer::AckPolicy::All {
        bail!(
            "conflicting stream settings: consumer {durable} on {stream_name} exists with filter \
             {:?} and ack policy {:?}; delete it or give this bridge another --name",
            c.filter_subject,
            c.ack_policy
        );
    }
    Ok(consumer)
}

#[cfg(test)]
mod tests {
    use super::Origin;

    #[test]
    fn an_origin_header_reads_back_what_was_written() {
        let cases = [
            Origin {
                bus: 0x0123_4567_89ab_cdef,
                seq: Some(42),
                prev: Some(41),
                index: None,
                host: "host-a",
            },
            Origin {
                bus: u64::MAX,
                seq: Some(u64::MAX),
                prev: None,
                index: Some((0x18f3a, 7)),
                host: "b",
            },
            // A heartbeat: no sequence.
            Origin {
                bus: 1,
                seq: None,
                prev: None,
                index: Some((u64::MAX, 0)),
                host: "",
            },
        ];
        for o in cases {
            let v = o.format();
            assert_eq!(Origin::parse(&v), Some(o), "{v}");
        }
        assert_eq!(
            Origin {
                bus: 0xab,
                seq: Some(3),
                prev: Some(2),
                index: None,
                host: "h"
            }
            .format(),
            "bus=00000000000000ab seq=3 prev=2 host=h"
        );
    }

    #[test]
    fn the_hand_written_digits_match_the_standard_formatting() {
        // Edges of every digit count, in both bases, and a spread of values between.
        let mut values = vec![0u64, 1, 9, 10, 15, 16, 255, 256, u64::MAX, u64::MAX - 1];
        for shift in 0..64 {
            values.extend([1u64 << shift, (1u64 << shift) - 1, (1u64 << shift) + 1]);
        }
        for p in 0..20 {
            let t = 10u64.pow(p);
            values.extend([t, t - 1, t + 1]);
        }
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..1000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            values.push(x >> (x % 64));
        }
        for &n in &values {
            let o = Origin {
                bus: n,
                seq: Some(n),
                prev: Some(n),
                index: Some((n, n)),
                host: "h",
            };
            assert_eq!(
                o.format(),
                format!("bus={n:016x} seq={n} prev={n} index={n:x}:{n} host=h")
            );
        }
    }

    #[test]
    fn a_header_this_bridge_did_not_write_is_not_an_origin() {
        for v in [
            "",
            "host=h",                                               // no bus
            "bus=12 host=h",                                        // not 16 hex digits
            "bus=000000000000000g host=h",                          // not hex
            "bus=0000000000000001 seq=x host=h",                    // bad sequence
            "bus=0000000000000001 seq=-1 host=h",                   // negative
            "bus=0000000000000001 seq=18446744073709551616 host=h", // past u64
            "bus=0000000000000001 index=7 host=h",                  // index without run
            "bus=0000000000000001 seq=1",                           // no host
            "bus=0000000000000001 seq 1 host=h",                    // field without '='
            "0000000000000001",                                     // the old header's bare id
        ] {
            assert_eq!(Origin::parse(v), None, "{v:?}");
        }
        // A field of a later version is skipped.
        let o = Origin::parse("bus=0000000000000001 seq=5 zone=eu host=h").unwrap();
        assert_eq!((o.bus, o.seq, o.host), (1, Some(5), "h"));
    }

    #[test]
    fn the_five_headers_of_earlier_bridges_still_read_as_an_origin() {
        use super::{legacy, ORIGIN};
        use async_nats::HeaderMap;
        let old = |pairs: &[(async_nats::header::HeaderName, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(k.clone(), *v);
            }
            h
        };
        let reliable = old(&[
            (ORIGIN, "00000000000000ab"),
            (legacy::HOST, "a"),
            (legacy::SEQ, "7"),
            (legacy::PREV, "6"),
        ]);
        assert_eq!(
            Origin::of(Some(&reliable)),
            Some(Origin {
                bus: 0xab,
                seq: Some(7),
                prev: Some(6),
                index: None,
                host: "a"
            })
        );
        let heartbeat = old(&[
            (ORIGIN, "00000000000000ab"),
            (legacy::HOST, "a"),
            (legacy::INDEX, "18f3a:12"),
            (legacy::HEARTBEAT, "1"),
        ]);
        let o = Origin::of(Some(&heartbeat)).unwrap();
        assert!(o.is_heartbeat(), "{o:?}");
        assert_eq!(o.index, Some((0x18f3a, 12)));
        // An old message without its sequence is not an origin (it is imported as a plain
        // message), but its bus is still known, so it is never looped back.
        let no_seq = old(&[(ORIGIN, "00000000000000ab")]);
        assert_eq!(Origin::of(Some(&no_seq)), None);
        assert!(Origin::names(None, Some(&no_seq), 0xab));
        assert_eq!(Origin::of(None), None);
        assert_eq!(Origin::of(Some(&HeaderMap::new())), None);
    }

    #[test]
    fn a_header_that_does_not_parse_still_names_its_bus() {
        use super::ORIGIN;
        use async_nats::HeaderMap;
        let with = |values: &[&str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(ORIGIN, *v);
            }
            h
        };
        let ours = 0xab;
        let names = |values: &[&str]| {
            let h = with(values);
            Origin::names(Origin::of(Some(&h)), Some(&h), ours)
        };
        // A later version's field in a form this one does not know.
        let h = with(&["bus=00000000000000ab seq=1 weird host=a"]);
        assert_eq!(Origin::of(Some(&h)), None);
        assert!(names(&["bus=00000000000000ab seq=1 weird host=a"]));
        // Our id anywhere a `bus` can be, in headers no bridge writes.
        for forged in [
            &["bus=00000000000000ab bus=00000000000000cd seq=1 host=h"][..],
            &["bus=00000000000000cd bus=00000000000000ab seq=1 host=h"],
            &["zone=eu bus=00000000000000ab seq=x host=h"],
            &["bus=00000000000000abjunk seq=1 host=h"],
            &["00000000000000ab"],
            &[
                "bus=00000000000000cd seq=1 host=h",
                "bus=00000000000000ab seq=1 host=h",
            ],
            &[
                "bus=00000000000000ab seq=1 host=h",
                "bus=00000000000000cd seq=1 host=h",
            ],
        ] {
            assert!(names(forged), "{forged:?}");
        }
        // Any field given twice, or two values: not an origin at all.
        for twice in [
            &["bus=00000000000000cd bus=00000000000000ef seq=1 host=h"][..],
            &["bus=00000000000000cd seq=1 seq=2 host=h"],
            &["bus=00000000000000cd seq=1 prev=1 prev=2 host=h"],
            &["bus=00000000000000cd seq=1 index=1:2 index=1:3 host=h"],
            &[
                "bus=00000000000000cd seq=1 host=h",
                "bus=00000000000000cd seq=2 host=h",
            ],
        ] {
            assert_eq!(Origin::of(Some(&with(twice))), None, "{twice:?}");
        }
        // Another bus's, and nothing at all, are not ours.
        assert!(!names(&["bus=00000000000000cd seq=1 host=h"]));
        assert!(!names(&["bus=0000000000000000 seq=1 host=a"]));
        assert!(!names(&["bus=12"]));
        assert!(!names(&[""]));
        assert!(!names(&[]));
        assert!(!Origin::names(None, None, ours));
    }
}
