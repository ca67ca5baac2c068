//! `--out BUS=SUBJECT`: the bridge as a subscriber of a local bus.
//!
//! Reliable bus → JetStream. The loop is `recv → publish → await ack → persist` with up to
//! `--window` publishes in flight, acknowledged in bus order:
//!
//! ```text
//!   bus ──recv──▶ [ in flight: seq, payload, ack future ] ──acks in order──▶ acked position
//!                                                                            │ every 100 ms
//!                                                                            ▼
//!                                                      out-SUBJECT.state (tmp, fsync, rename)
//! ```
//!
//! Every publish carries `Nats-Msg-Id: <bus id>-<seq>`. A publish that fails or times out
//! sends the whole window again, in order, with the same ids: JetStream drops those it had
//! stored. A bridge killed at any instant restarts at the saved position and sends again
//! what was in flight, which JetStream drops too (within its duplicate window; after it,
//! importers recognise them by origin and sequence).
//!
//! Lossy bus → core NATS, at most once. A lapped subscriber's losses are counted, and each
//! message carries its index among the messages this run has accounted for, so that the far
//! side counts the losses on the way as gaps.

use std::collections::VecDeque;
use std::future::{Future, IntoFuture};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream::context::{PublishAckFuture, PublishError};
use async_nats::jetstream::publish::PublishAck;
use async_nats::{HeaderMap, Subject};
use bus_core::{Bus, RecvError, Start, SubscribeError, TryRecvError};
use bytes::Bytes;
use tokio::sync::watch;

use crate::nats::{Origin as OriginHeader, MSG_ID, ORIGIN};
use crate::state::{self, ExportState};
use crate::stats::LinkStats;
use crate::Marks;

/// What an exporter needs.
pub struct ExportLink {
    pub bus: Bus,
    pub bus_id: u64,
    pub subject: String,
    pub host: String,
    pub state_dir: PathBuf,
    pub stats: Arc<LinkStats>,
    /// Local sequences this bridge imported into the bus (two-way bridging): not exported.
    pub marks: Option<Arc<Marks>>,
    pub window: usize,
    pub json: bool,
}

type AckFuture = Pin<Box<dyn Future<Output = Result<PublishAck, PublishError>> + Send>>;

/// A message between its `recv` and its acknowledgement.
struct InFlight {
    seq: u64,
    /// The subscriber's position after it: where to resume once it is acknowledged.
    next_position: u64,
    /// `None` for a message not exported (imported by this bridge): it only moves the
    /// position when it reaches the front. Otherwise the sequence of the message exported
    /// before it (`prev=` in its origin header) and the payload: what a retry needs to
    /// publish it again.
    publish: Option<(Option<u64>, Bytes)>,
    /// The acknowledgement; `None` until (re-)published.
    ack: Option<AckFuture>,
}

/// What a reliable export's headers carry besides its sequence.
struct Origin {
    bus: u64,
    host: String,
    subject: Subject,
}

impl Origin {
    fn headers(&self, seq: u64, prev: Option<u64>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        // `<crate::id::hex of the bus>-<seq>`.
        headers.insert(MSG_ID, format!("{:016x}-{seq}", self.bus));
        let origin = OriginHeader {
            bus: self.bus,
            seq: Some(seq),
            prev,
            index: None,
            host: &self.host,
        };
        headers.insert(ORIGIN, origin.format());
        headers
    }

    /// Publishes message `seq`: the future of its acknowledgement.
    async fn publish(
        &self,
        js: &async_nats::jetstream::Context,
        seq: u64,
        prev: Option<u64>,
        payload: &Bytes,
    ) -> Result<AckFuture, PublishError> {
        let fut: PublishAckFuture = js
            .send_publish(
                self.subject.clone(),
                async_nats::jetstream::message::PublishMessage::build()
                    .headers(self.headers(seq, prev))
                    .payload(payload.clone()),
            )
            .await?;
        Ok(fut.into_future())
    }
}

/// How long to wait before sending a failed window again (doubling up to 2 s).
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);
/// How often the acknowledged position is saved.
const SAVE_EVERY: Duration = Duration::from_millis(100);

/// The reliable exporter. Returns when `stop` turns true (after waiting a little for the
/// acknowledgements in flight and saving the position), or on an error that a retry cannot
/// cure (a corrupt bus, an unwritable state directory).
///
/// # Errors
///
/// As above, with context.
pub async fn reliable(
    link: ExportLink,
    js: async_nats::jetstream::Context,
    ready: tokio::sync::mpsc::Sender<()>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let path = state::export_path(&link.state_dir, &link.subject);
    let hex = crate::id::hex(link.bus_id);
    if let Some(marks) = &link.marks {
        // Two-way: the importer's journal says which messages on the bus are imports.
        tokio::select! {
            () = marks.wait_loaded() => {}
            _ = stop.changed() => return Ok(()),
        }
    }
    let saved = ExportState::load(&path)?;
    let (start, last_published) = match &saved {
        Some(s) if s.bus_id == hex => (Start::Position(s.position), s.last_published),
        Some(_) => {
            crate::warn(
                link.json,
                &format!(
                    "{}: the saved state is of another bus at this path; exporting it from its \
                     oldest message",
                    link.stats.label
                ),
            );
            (Start::Oldest, None)
        }
        None => (Start::Oldest, None),
    };
    let sub = match link.bus.subscribe(start) {
        Ok(s) => s,
        Err(SubscribeError::PositionNotRetained {
            requested, oldest, ..
        }) if requested < oldest => {
            let sub = link
                .bus
                .subscribe(Start::Oldest)
                .context("cannot subscribe")?;
            let from = saved.as_ref().map_or(0, |s| s.next_seq);
            let lost = sub.next_seq().saturating_sub(from);
            LinkStats::add(&link.stats.dropped, lost);
            crate::warn(
                link.json,
                &format!(
                    "{}: the bus overwrote {lost} messages (sequences {from}..{}) while the \
                     bridge was stopped; they are lost. Give the bus a ring large enough for \
                     the bridge's outages.",
                    link.stats.label,
                    sub.next_seq()
                ),
            );
            sub
        }
        Err(e) => {
            return Err(e).with_context(|| format!("cannot subscribe to {}", link.stats.label))
        }
    };
    let mut sub = sub.into_async().context("cannot start the async waiter")?;
    let mut acked = ExportState {
        bus_id: hex.clone(),
        subject: link.subject.clone(),
        position: sub.get_ref().position(),
        next_seq: sub.get_ref().next_seq(),
        last_published,
    };
    acked.save(&path)?;
    let mut saved_state = acked.clone();
    let _ = ready.send(()).await;

    let mut prev = last_published;
    let origin = Origin {
        bus: link.bus_id,
        host: link.host.clone(),
        subject: Subject::from(link.subject.as_str()),
    };
    let mut q: VecDeque<InFlight> = VecDeque::with_capacity(link.window);
    let mut buf = Vec::new();
    let mut tick = tokio::time::interval(SAVE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut retry_in: Option<Duration> = None;
    let mut backoff = RETRY_FIRST;
    let mut stopping = false;
    let mut stop_deadline = None;

    loop {
        // Messages not exported move the position once everything before them is acknowledged.
        while q.front().is_some_and(|e| e.publish.is_none()) {
            let e = q.pop_front().unwrap();
            acked.position = e.next_position;
            acked.next_seq = e.seq + 1;
        }
        if stopping && (q.is_empty() || retry_in.is_some()) {
            break;
        }
        if let Some(delay) = retry_in.take() {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop.changed() => break,
            }
            // Send the whole window again, in order, with the same message ids.
            let mut failed = None;
            for e in q.iter_mut() {
                e.ack = None;
            }
            for e in q.iter_mut() {
                if let Some((prev, payload)) = &e.publish {
                    match origin.publish(&js, e.seq, *prev, payload).await {
                        Ok(f) => e.ack = Some(f),
                        Err(err) => {
                            failed = Some(err);
                            break;
                        }
                    }
                    LinkStats::add(&link.stats.retries, 1);
                }
            }
            if let Some(err) = failed {
                crate::warn(
                    link.json,
                    &format!("{}: publish failed: {err}", link.stats.label),
                );
                backoff = (backoff * 2).min(RETRY_MAX);
                retry_in = Some(backoff);
            }
            continue;
        }
        let front_waiting = q.front().is_some_and(|e| e.ack.is_some());
        let room = !stopping && q.len() < link.window;
        tokio::select! {
            biased;
            r = async { q.front_mut().unwrap().ack.as_mut().unwrap().await }, if front_waiting => {
                match r {
                    Ok(ack) => {
                        let e = q.pop_front().unwrap();
                        if ack.duplicate {
                            LinkStats::add(&link.stats.redelivered, 1);
                        }
                        LinkStats::add(&link.stats.forwarded, 1);
                        if let Some((_, p)) = &e.publish {
                            LinkStats::add(&link.stats.bytes, p.len() as u64);
                        }
                        acked.position = e.next_position;
                        acked.next_seq = e.seq + 1;
                        acked.last_published = Some(e.seq);
                        backoff = RETRY_FIRST;
                    }
                    Err(err) => {
                        crate::warn(
                            link.json,
                            &format!(
                                "{}: no acknowledgement for sequence {} ({err}); sending {} \
                                 messages again",
                                link.stats.label,
                                q.front().map_or(0, |e| e.seq),
                                q.len()
                            ),
                        );
                        retry_in = Some(backoff);
                        backoff = (backoff * 2).min(RETRY_MAX);
                    }
                }
            }
            _ = stop.changed(), if !stopping => {
                stopping = true;
                stop_deadline = Some(tokio::time::Instant::now() + Duration::from_secs(5));
            }
            _ = async { tokio::time::sleep_until(stop_deadline.unwrap()).await }, if stop_deadline.is_some() => break,
            r = sub.recv(&mut buf), if room => {
                let m = match r {
                    Ok(m) => m,
                    Err(RecvError::Lost(n)) => {
                        // Reliable buses do not lap; this counts records of producers that
                        // died mid-message (repaired, never delivered to anyone).
                        LinkStats::add(&link.stats.dropped, n);
                        continue;
                    }
                    Err(e) => {
                        return Err(e).with_context(|| format!("{}: cannot read the bus", link.stats.label))
                    }
                };
                let next_position = sub.get_ref().position();
                if link.marks.as_ref().is_some_and(|marks| marks.contains(m.seq)) {
                    LinkStats::add(&link.stats.looped, 1);
                    q.push_back(InFlight { seq: m.seq, next_position, publish: None, ack: None });
                    continue;
                }
                let payload = Bytes::copy_from_slice(&buf);
                let ack = match origin.publish(&js, m.seq, prev, &payload).await {
                    Ok(f) => Some(f),
                    Err(err) => {
                        crate::warn(link.json, &format!("{}: publish failed: {err}", link.stats.label));
                        retry_in = Some(backoff);
                        None
                    }
                };
                q.push_back(InFlight { seq: m.seq, next_position, publish: Some((prev, payload)), ack });
                prev = Some(m.seq);
            }
            _ = tick.tick() => {
                link.stats.in_flight.store(q.len() as u64, std::sync::atomic::Ordering::Relaxed);
                if acked != saved_state {
                    acked.save(&path)?;
                    saved_state = acked.clone();
                }
                // Every tick, not only on progress: after a restart the importer loads marks
                // from its journal that this exporter passed before the crash.
                if let Some(marks) = &link.marks {
                    marks.prune_below(saved_state.next_seq);
                }
            }
        }
    }
    if acked != saved_state {
        acked.save(&path)?;
    }
    link.stats
        .in_flight
        .store(q.len() as u64, std::sync::atomic::Ordering::Relaxed);
    Ok(())
}

/// Most messages a lossy link forwards between two looks at its stop signal and heartbeat.
const DRAIN: u32 = 64;

/// The lossy exporter: core NATS, at most once, every loss counted.
///
/// # Errors
///
/// A corrupt bus.
pub async fn lossy(
    link: ExportLink,
    client: async_nats::Client,
    ready: tokio::sync::mpsc::Sender<()>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    // This run of the exporter: a new index sequence starts at 0 with it.
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut sub = link
        .bus
        .subscribe(Start::Latest)
        .with_context(|| format!("cannot subscribe to {}", link.stats.label))?
        .into_async()
        .context("cannot start the async waiter")?;
    let _ = ready.send(()).await;
    // Messages accounted for so far (sent or lost): the next message's index.
    let mut index: u64 = 0;
    let mut buf = Vec::new();
    let mut heartbeat = tokio::time::interval(Duration::from_millis(500));
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // One header a message (see `nats::Origin`); a heartbeat's has no `seq`.
    let header = |seq: Option<u64>, index: u64| {
        let mut h = HeaderMap::new();
        let origin = OriginHeader {
            bus: link.bus_id,
            seq,
            prev: None,
            index: Some((run, index)),
            host: &link.host,
        };
        h.insert(ORIGIN, origin.format());
        h
    };
    loop {
        let first = tokio::select! {
            biased;
            _ = stop.changed() => break,
            r = sub.recv(&mut buf) => r,
            _ = heartbeat.tick() => {
                let h = header(None, index);
                let _ = client.publish_with_headers(link.subject.clone(), h, Bytes::new()).await;
                continue;
            }
        };
        // Then whatever else is already on the bus, without a `select!` a message (its
        // futures, the stop signal's registration, the timer's check): up to `DRAIN` before
        // the stop signal and the heartbeat are looked at again.
        let mut next = Some(first);
        let mut drained = 0;
        while let Some(r) = next.take() {
            let m = match r {
                Ok(m) => Some(m),
                Err(RecvError::Lost(n)) => {
                    // The lost sequences are the `n` just before the next one; those this
                    // bridge imported were never to be exported (looped), and the far side
                    // must not count them lost either: only the rest move the index.
                    let next = sub.get_ref().next_seq();
                    let mine = link.marks.as_ref().map_or(0, |marks| {
                        let mine = marks.count_in(next.saturating_sub(n), next);
                        marks.prune_below(next);
                        mine
                    });
                    LinkStats::add(&link.stats.looped, mine);
                    LinkStats::add(&link.stats.dropped, n - mine);
                    index += n - mine;
                    None
                }
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("{}: cannot read the bus", link.stats.label))
                }
            };
            if let Some(m) = m {
                let looped = link.marks.as_ref().is_some_and(|marks| {
                    let mine = marks.contains(m.seq);
                    marks.prune_below(m.seq);
                    mine
                });
                if looped {
                    LinkStats::add(&link.stats.looped, 1);
                } else {
                    let h = header(Some(m.seq), index);
                    index += 1;
                    let len = buf.len() as u64;
                    match client
                        .publish_with_headers(link.subject.clone(), h, Bytes::copy_from_slice(&buf))
                        .await
                    {
                        Ok(()) => {
                            LinkStats::add(&link.stats.forwarded, 1);
                            LinkStats::add(&link.stats.bytes, len);
                        }
                        Err(_) => LinkStats::add(&link.stats.dropped, 1),
                    }
                }
            }
            drained += 1;
            if drained < DRAIN {
                next = match sub.get_mut().try_recv(&mut buf) {
                    Ok(m) => Some(Ok(m)),
                    Err(TryRecvError::Empty) => None,
                    Err(TryRecvError::Lost(n)) => Some(Err(RecvError::Lost(n))),
                    Err(TryRecvError::Corrupt { position, problem }) => {
                        Some(Err(RecvError::Corrupt { position, problem }))
                    }
                    Err(TryRecvError::Forked) => Some(Err(RecvError::Forked)),
                };
            }
        }
    }
    let h = header(None, index);
    let _ = client
        .publish_with_headers(link.subject.clone(), h, Bytes::new())
        .await;
    let _ = tokio::time::timeout(Duration::from_secs(2), client.flush()).await;
    Ok(())
}
