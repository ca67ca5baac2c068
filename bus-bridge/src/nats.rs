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
/// The bus a message was first published on ([`crate::id::hex`] of its bus id).
pub const ORIGIN: HeaderName = HeaderName::from_static("Shmbus-Origin");
/// The bridge (host) that exported it.
pub const HOST: HeaderName = HeaderName::from_static("Shmbus-Host");
/// Its sequence number on the origin bus.
pub const SEQ: HeaderName = HeaderName::from_static("Shmbus-Seq");
/// Reliable exports: the sequence of the message exported before it from the same bus, so
/// that an importer commits an origin's messages in its order even if a failover reordered
/// them in the stream.
pub const PREV: HeaderName = HeaderName::from_static("Shmbus-Prev");
/// Lossy exports: `INSTANCE:N`, the exporter's run and how many bus messages it has accounted
/// for (sent or lost) before this one. A gap at the far side is a loss.
pub const INDEX: HeaderName = HeaderName::from_static("Shmbus-Index");
/// Lossy exports: a message without payload that only carries the next `Shmbus-Index`, so that
/// losses at the end of a burst are counted too. Never published to a bus.
pub const HEARTBEAT: HeaderName = HeaderName::from_static("Shmbus-Heartbeat");

/// How long JetStream keeps message ids to drop duplicates, for a stream this bridge creates
/// (the server's default). A bridge that restarts within it re-publishes without duplicates;
/// after it, importers still recognise duplicates by origin and sequence.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// How long the server waits for an importer's acknowledgement before it redelivers.
pub const ACK_WAIT: Duration = Duration::from_secs(10);

/// Connects, failing after `timeout` with an error naming the server.
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

/// A header's value as text.
pub fn header(h: Option<&HeaderMap>, name: HeaderName) -> Option<&str> {
    h?.get(name).map(|v| v.as_str())
}

/// A header's value as a number.
pub fn header_u64(h: Option<&HeaderMap>, name: HeaderName) -> Option<u64> {
    header(h, name)?.parse().ok()
}
