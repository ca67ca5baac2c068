//! `--in SUBJECT=BUS`: the bridge as a publisher of a local bus.
//!
//! Reliable bus ← a JetStream durable pull consumer. Each message is committed to the bus
//! through a loan: the loan gives the message's local sequence number before anything is
//! visible, the journal records `{origin, origin seq, stream seq, local seq}`, and only then
//! is the loan committed. Acknowledgements (`AckPolicy::All`) go out after the commits they
//! cover, so a crash redelivers instead of losing; on restart the journal says which
//! messages are already on the bus (the newest one, possibly half done, is looked up on the
//! bus by its local sequence number), and a redelivery of one of them is acknowledged without
//! being published twice.
//!
//! Each origin's messages are committed in its order: a message whose `prev=` is not
//! yet committed (a failover put it in the stream before its predecessor, which the
//! exporter sends again) waits, unacknowledged, until the predecessor comes.
//!
//! Lossy bus ← a core NATS subscription, at most once; gaps in each origin's
//! `index=` are counted as losses.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use async_nats::jetstream;
use bus_core::{
    Bus, CommitError, Publisher, RecvTimeoutError, Start, SubscribeError, TryLoanError,
};
use futures_util::{FutureExt, StreamExt};
use tokio::sync::watch;

use crate::nats::Origin;
use crate::state::{self, Entry, ImportState, Journal, JOURNAL_ENTRIES};
use crate::stats::LinkStats;
use crate::Marks;

/// What an importer needs.
pub struct ImportLink {
    pub bus: Bus,
    pub bus_id: u64,
    pub subject: String,
    pub durable: String,
    pub state_dir: PathBuf,
    pub stats: Arc<LinkStats>,
    /// Shared with an exporter of the same bus (two-way bridging).
    pub marks: Option<Arc<Marks>>,
    pub json: bool,
}

/// Imports a two-way bridge may have committed that its exporter has not yet passed; more
/// wait (the journal must still hold them if the bridge restarts).
const MARKS_LIMIT: usize = (JOURNAL_ENTRIES / 2) as usize;
/// Acknowledge after this many messages, or at the next tick.
const ACK_EVERY: u64 = 256;

/// Publishes `payload` to the bus through a loan. With a journal, the entry (given its
/// local sequence number and counter) is written once the bytes are in place and before the
/// commit. Waits (polling every millisecond) while a reliable ring is full. Returns the
/// committed position and the entry written, or `None` if the message cannot be carried
/// (too large for the bus: the caller counts it as dropped).
async fn commit(
    publ: &mut Publisher,
    payload: &[u8],
    marks: Option<&Marks>,
    stop: &watch::Receiver<bool>,
    mut journal: Option<(&mut Journal, Entry)>,
) -> anyhow::Result<Option<(u64, Entry)>> {
    if let Some(marks) = marks {
        while marks.len() >= MARKS_LIMIT {
            if *stop.borrow() {
                anyhow::bail!("stopped");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    loop {
        match publ.try_loan(payload.len()) {
            Ok(mut loan) => {
                let seq = loan.seq();
                loan.copy_from_slice(payload);
                let mut entry = Entry {
                    counter: 0,
                    origin: 0,
                    seq: 0,
                    stream_seq: 0,
                    local_seq: seq,
                    prev_position: u64::MAX,
                    kind: 1,
                };
                if let Some((j, template)) = journal.as_mut() {
                    entry = Entry {
                        local_seq: seq,
                        ..*template
                    };
                    entry.counter = j.write(entry)?;
                }
                if let Some(marks) = marks {
                    marks.insert(seq);
                }
                match loan.commit() {
                    Ok(sent) => return Ok(Some((sent.position, entry))),
                    // Held past the unblock timeout (this process was stopped): a reader
                    // turned the record into padding. Never delivered; publish it again.
                    Err(CommitError::Unblocked) => {
                        if let Some((j, _)) = journal.as_mut() {
                            j.void(entry)?;
                        }
                    }
                    // A forked child's loan: never here (the bridge does not fork), and
                    // nothing was committed; the journal's verdict on restart finds that.
                    Err(e @ CommitError::Forked) => {
                        return Err(e).context("cannot publish to the bus")
                    }
                }
            }
            Err(TryLoanError::Full) => {
                if *stop.borrow() {
                    anyhow::bail!("stopped");
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(TryLoanError::MessageTooLarge { .. }) => return Ok(None),
            Err(e) => return Err(e).context("cannot publish to the bus"),
        }
    }
}

/// Where the journal's newest entry stands on the bus.
enum Verdict {
    /// On the bus, at this position.
    Committed(u64),
    /// Never committed (its loan was repaired away, or never claimed).
    NotCommitted,
    /// The bus no longer holds that part of the ring: assumed committed.
    Unknown,
}

/// Looks on the bus for the record of local sequence `e.local_seq`, reading from the
/// previous import's record. A claim whose process died stays claimed until a reader
/// repairs it after the bus's unblock timeout, so this waits up to twice that.
fn find_on_bus(bus: &Bus, e: &Entry) -> anyhow::Result<Verdict> {
    let start = if e.prev_position == u64::MAX {
        Start::Oldest
    } else {
        Start::Position(e.prev_position)
    };
    let mut sub = match bus.subscribe(start) {
        Ok(s) => s,
        Err(SubscribeError::PositionNotRetained { .. }) => return Ok(Verdict::Unknown),
        Err(err) => return Err(err).context("cannot subscribe to check the journal"),
    };
    if sub.next_seq() > e.local_seq {
        return Ok(if e.prev_position == u64::MAX {
            Verdict::Unknown
        } else {
            Verdict::NotCommitted
        });
    }
    let wait =
        Duration::from_nanos(bus.config().unblock_timeout_ns) * 2 + Duration::from_millis(500);
    let deadline = Instant::now() + wait;
    let mut buf = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match sub.recv_timeout(&mut buf, left) {
            Ok(m) if m.seq == e.local_seq => return Ok(Verdict::Committed(m.position)),
            Ok(m) if m.seq > e.local_seq => return Ok(Verdict::NotCommitted),
            Ok(_) | Err(RecvTimeoutError::Lost(_)) => {
                if sub.next_seq() > e.local_seq {
                    return Ok(Verdict::NotCommitted);
                }
            }
            Err(RecvTimeoutError::Timeout) => return Ok(Verdict::NotCommitted),
            Err(err) => return Err(err).context("cannot read the bus to check the journal"),
        }
    }
}

/// A message waiting for its origin's predecessor.
struct Held {
    msg: jetstream::Message,
    prev: u64,
}

/// The reliable importer's state between messages.
struct Reliable {
    link: ImportLink,
    journal: Journal,
    state: ImportState,
    checkpointed: u64,
    publ: Publisher,
    /// Position of the last record this importer committed (where to look after a crash).
    last_position: Option<u64>,
    /// Per origin, by sequence.
    held: BTreeMap<(u64, u64), Held>,
    /// The processed message to acknowledge (everything before it is processed).
    to_ack: Option<(u64, jetstream::Message)>,
    unacked: u64,
}

impl Reliable {
    fn held_min_stream_seq(&self) -> Option<u64> {
        self.held
            .values()
            .filter_map(|h| h.msg.info().ok().map(|i| i.stream_sequence))
            .min()
    }

    /// A message is done with (committed, recognised, or skipped): it may be acknowledged.
    /// `seq` is its stream sequence.
    async fn done(&mut self, msg: jetstream::Message, seq: u64) {
        if self.to_ack.as_ref().is_none_or(|(s, _)| *s < seq) {
            self.to_ack = Some((seq, msg));
        }
        self.unacked += 1;
        if self.unacked >= ACK_EVERY {
            self.ack().await;
        }
    }

    /// Acknowledges everything up to `to_ack`, unless that would cover a held message.
    async fn ack(&mut self) {
        let Some((seq, _)) = &self.to_ack else { return };
        if self.held_min_stream_seq().is_some_and(|h| h <= *seq) {
            return;
        }
        let (_, m) = self.to_ack.take().unwrap();
        self.unacked = 0;
        // A lost acknowledgement only means a redelivery, which is recognised.
        let _ = m.ack().await;
    }

    async fn checkpoint(&mut self, force: bool) -> anyhow::Result<()> {
        if self.state.counter != self.checkpointed
            && (force || self.journal.counter - self.checkpointed >= JOURNAL_ENTRIES / 4)
        {
            self.journal.checkpoint(&self.state)?;
            self.checkpointed = self.state.counter;
        }
        Ok(())
    }

    /// One message from the consumer.
    async fn handle(
        &mut self,
        msg: jetstream::Message,
        stop: &watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let stream_seq = msg
            .info()
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .stream_sequence;
        let from = Origin::of(msg.headers.as_ref());
        // Our own bus's message, come back (two-way bridging on one subject), is never
        // imported, even if the rest of its header does not parse.
        if Origin::names(from, msg.headers.as_ref(), self.link.bus_id) {
            LinkStats::add(&self.link.stats.looped, 1);
            self.done(msg, stream_seq).await;
            return Ok(());
        }
        let (origin, seq, prev) = match from {
            Some(Origin {
                bus,
                seq: Some(seq),
                prev,
                ..
            }) => (bus, seq, prev),
            _ => (0, stream_seq, None),
        };
        let key = state::origin_key(origin);
        let last = self.state.origins.get(&key).copied();
        if last.is_some_and(|l| seq <= l) {
            LinkStats::add(&self.link.stats.redelivered, 1);
            self.done(msg, stream_seq).await;
            return Ok(());
        }
        if let (Some(l), Some(p)) = (last, prev) {
            if p > l {
                if std::env::var_os("SHMBUS_BRIDGE_DEBUG").is_some() && self.held.is_empty() {
                    eprintln!(
                        "shmbus bridge: hold seq {seq} prev {p} last {l} stream {stream_seq}"
                    );
                }
                self.held.insert((origin, seq), Held { msg, prev: p });
                self.link
                    .stats
                    .in_flight
                    .store(self.held.len() as u64, std::sync::atomic::Ordering::Relaxed);
                return Ok(());
            }
        }
        self.commit_one(msg, origin, seq, stream_seq, stop).await?;
        // Release what waited for it.
        loop {
            let next = self
                .held
                .range((origin, 0)..=(origin, u64::MAX))
                .next()
                .map(|(k, h)| (*k, h.prev));
            let last = self.state.origins.get(&key).copied().unwrap_or(0);
            match next {
                Some((k, p)) if p <= last => {
                    let held = self.held.remove(&k).unwrap();
                    self.link
                        .stats
                        .in_flight
                        .store(self.held.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    let ss = held.msg.info().map_or(0, |i| i.stream_sequence);
                    if k.1 <= last {
                        LinkStats::add(&self.link.stats.redelivered, 1);
                        self.done(held.msg, ss).await;
                    } else {
                        self.commit_one(held.msg, origin, k.1, ss, stop).await?;
                    }
                }
                _ => break,
            }
        }
        Ok(())
    }

    async fn commit_one(
        &mut self,
        msg: jetstream::Message,
        origin: u64,
        seq: u64,
        stream_seq: u64,
        stop: &watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let template = Entry {
            counter: 0,
            origin,
            seq,
            stream_seq,
            local_seq: 0,
            prev_position: self.last_position.unwrap_or(u64::MAX),
            kind: 1,
        };
        let done = commit(
            &mut self.publ,
            &msg.payload,
            self.link.marks.as_deref(),
            stop,
            Some((&mut self.journal, template)),
        )
        .await?;
        match done {
            Some((p, entry)) => {
                self.last_position = Some(p);
                state::apply(&mut self.state, &entry);
                LinkStats::add(&self.link.stats.forwarded, 1);
                LinkStats::add(&self.link.stats.bytes, msg.payload.len() as u64);
            }
            None => {
                crate::warn(
                    self.link.json,
                    &format!(
                        "{}: a message of {} bytes is larger than the bus's max message; dropped",
                        self.link.stats.label,
                        msg.payload.len()
                    ),
                );
                LinkStats::add(&self.link.stats.dropped, 1);
                let key = state::origin_key(origin);
                let last = self.state.origins.entry(key).or_insert(0);
                *last = (*last).max(seq);
            }
        }
        self.done(msg, stream_seq).await;
        self.checkpoint(false).await
    }
}

/// The reliable importer.
///
/// # Errors
///
/// The state files, the bus, or the consumer cannot be used.
pub async fn reliable(
    link: ImportLink,
    js: jetstream::Context,
    stream_name: String,
    ready: tokio::sync::mpsc::Sender<()>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let (journal, rec) = Journal::open(&link.state_dir, &link.subject, link.bus_id)?;
    if let Some(marks) = &link.marks {
        for s in &rec.local_seqs {
            marks.insert(*s);
        }
        marks.set_loaded();
    }
    let mut state = rec.state;
    let mut last_position = None;
    if let Some(p) = rec.pending {
        let bus = link.bus.clone();
        let verdict = tokio::task::spawn_blocking(move || find_on_bus(&bus, &p))
            .await
            .context("journal check")??;
        match verdict {
            Verdict::Committed(pos) => {
                state::apply(&mut state, &p);
                last_position = Some(pos);
            }
            Verdict::Unknown => {
                crate::warn(
                    link.json,
                    &format!(
                        "{}: the bus no longer holds the last message this bridge was \
                         committing (origin sequence {}); taking it as committed",
                        link.stats.label, p.seq
                    ),
                );
                state::apply(&mut state, &p);
            }
            Verdict::NotCommitted => {
                last_position = (p.prev_position != u64::MAX).then_some(p.prev_position);
            }
        }
    }
    state.counter = journal.counter;
    journal.checkpoint(&state)?;
    if std::env::var_os("SHMBUS_BRIDGE_DEBUG").is_some() {
        eprintln!(
            "shmbus bridge: {}: resuming with {:?}, pending {:?}",
            link.stats.label, state.origins, rec.pending
        );
    }
    let consumer =
        crate::nats::durable_consumer(&js, &stream_name, &link.durable, &link.subject).await?;
    let publ = link.bus.publisher().context("cannot publish to the bus")?;
    let mut r = Reliable {
        checkpointed: state.counter,
        link,
        journal,
        state,
        publ,
        last_position,
        held: BTreeMap::new(),
        to_ack: None,
        unacked: 0,
    };
    let mut messages = None;
    let _ = ready.send(()).await;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_checkpoint = Instant::now();
    let mut backoff = Duration::from_millis(100);
    loop {
        if messages.is_none() {
            match consumer
                .stream()
                .max_messages_per_batch(1000)
                .heartbeat(Duration::from_secs(5))
                .expires(Duration::from_secs(30))
                .messages()
                .await
            {
                Ok(m) => {
                    messages = Some(m);
                    backoff = Duration::from_millis(100);
                }
                Err(e) => {
                    crate::warn(
                        r.link.json,
                        &format!("{}: cannot pull: {e}", r.link.stats.label),
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => break,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            }
        }
        let stream = messages.as_mut().unwrap();
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            m = stream.next() => match m {
                Some(Ok(msg)) => {
                    if let Err(e) = r.handle(msg, &stop).await {
                        if *stop.borrow() {
                            break;
                        }
                        return Err(e);
                    }
                }
                Some(Err(e)) => {
                    // Missed heartbeats while the server is away, and the like: the stream
                    // goes on (async-nats pulls again after reconnecting).
                    crate::warn(r.link.json, &format!("{}: {e}", r.link.stats.label));
                }
                None => messages = None,
            },
            _ = tick.tick() => {
                r.ack().await;
                if last_checkpoint.elapsed() >= Duration::from_secs(1) {
                    r.checkpoint(true).await?;
                    last_checkpoint = Instant::now();
                }
            }
        }
    }
    r.ack().await;
    r.checkpoint(true).await?;
    Ok(())
}

/// Most messages a lossy link imports between two looks at its stop signal.
const DRAIN: u32 = 64;

/// The lossy importer: a core NATS subscription, gaps counted as losses.
///
/// # Errors
///
/// The bus cannot be published to, or the subscription cannot be made.
pub async fn lossy(
    link: ImportLink,
    client: async_nats::Client,
    ready: tokio::sync::mpsc::Sender<()>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut sub = client
        .subscribe(link.subject.clone())
        .await
        .with_context(|| format!("cannot subscribe to {}", link.subject))?;
    client.flush().await.context("cannot subscribe")?;
    let mut publ = link.bus.publisher().context("cannot publish to the bus")?;
    if let Some(marks) = &link.marks {
        // No journal: nothing to load.
        marks.set_loaded();
    }
    let _ = ready.send(()).await;
    // Per (origin bus, exporter run): the index expected next. One entry per exporter start
    // (a few per day); a publisher forging runs could grow it, by 24 bytes an entry.
    let mut expected: HashMap<(u64, u64), u64> = HashMap::new();
    loop {
        let mut msg = tokio::select! {
            biased;
            _ = stop.changed() => break,
            m = sub.next() => match m {
                Some(m) => m,
                None => return Err(subscription_ended(&link.stats.label)),
            },
        };
        // This message, then whatever else the client has already read, without a `select!`
        // a message: up to `DRAIN` before the stop signal is looked at again.
        let mut drained = 0;
        loop {
            'one: {
                let from = Origin::of(msg.headers.as_ref());
                let origin = from.map_or(0, |o| o.bus);
                // A heartbeat carries the exporter's index and no message.
                let heartbeat = from.is_some_and(|o| o.is_heartbeat()) && msg.payload.is_empty();
                // Our own bus's message come back is never imported, even if the rest of its
                // header does not parse.
                if Origin::names(from, msg.headers.as_ref(), link.bus_id) {
                    if !heartbeat {
                        LinkStats::add(&link.stats.looped, 1);
                    }
                    break 'one;
                }
                if let Some((run, n)) = from.and_then(|o| o.index) {
                    let exp = expected.entry((origin, run)).or_insert(0);
                    if n > *exp {
                        LinkStats::add(&link.stats.dropped, n - *exp);
                        *exp = n;
                    }
                    if !heartbeat && n == *exp {
                        *exp = n.saturating_add(1);
                    }
                }
                if heartbeat {
                    break 'one;
                }
                match commit(&mut publ, &msg.payload, link.marks.as_deref(), &stop, None).await {
                    Ok(Some(_)) => {
                        LinkStats::add(&link.stats.forwarded, 1);
                        LinkStats::add(&link.stats.bytes, msg.payload.len() as u64);
                    }
                    Ok(None) => LinkStats::add(&link.stats.dropped, 1),
                    Err(_) if *stop.borrow() => return Ok(()),
                    Err(e) => return Err(e),
                }
            }
            drained += 1;
            if drained >= DRAIN {
                break;
            }
            msg = match sub.next().now_or_never() {
                Some(Some(m)) => m,
                Some(None) => return Err(subscription_ended(&link.stats.label)),
                None => break,
            };
        }
    }
    Ok(())
}

/// A core NATS subscription ends only when the client unsubscribes it or closes: nothing a
/// running bridge does, so a link must not go quietly while the bridge keeps running.
fn subscription_ended(label: &str) -> anyhow::Error {
    anyhow::anyhow!("{label}: the NATS subscription ended (the client closed it)")
}
