//! The baseline of the bridge's benchmark: a plain async-nats publisher and subscriber, built
//! twice: `nats-plain` with the default allocator (a plain client as written), and
//! `nats-plain-mimalloc` with the bridge's (`bus_bridge::Allocator`), so that the ratio of the
//! bridge to the plain client can be read with and without the allocator's share.
//!
//! ```text
//! nats-plain throughput URL COUNT SIZE   core NATS, one client publishing, one subscribing
//! nats-plain throughput-origin URL COUNT SIZE  the same, every message carrying the one
//!                                          `Shmbus-Origin` header a lossy bridge writes,
//!                                          formatted and parsed as the bridges do: the
//!                                          client's share of the header's cost
//! nats-plain jetstream URL COUNT SIZE    JetStream publishes with 256 acks in flight
//! nats-plain jetstream-e2e[-id] URL COUNT SIZE  the same publisher and, at the same time, a durable
//!                                          pull consumer acknowledging every 256th (AckAll):
//!                                          what the bridge pair does, without the buses
//!                                          (`-id`: with a `Nats-Msg-Id` per message)
//! nats-plain rtt URL COUNT               request/reply round trips: p50, p99
//! ```

use std::time::Instant;

use bus_bridge::nats::{Origin, ORIGIN};
use futures_util::StreamExt;

const USAGE: &str = "usage: nats-plain throughput|throughput-origin|jetstream|jetstream-e2e|jetstream-e2e-id|rtt URL COUNT [SIZE]";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
pub async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        return Err(USAGE.into());
    }
    let (what, url, count) = (&args[1], &args[2], args[3].parse::<u64>()?);
    let size: usize = args.get(4).map_or(Ok(64), |s| s.parse())?;
    let payload = bytes::Bytes::from(vec![7u8; size]);
    let p = async_nats::connect(url.as_str()).await?;
    let s = async_nats::connect(url.as_str()).await?;
    match what.as_str() {
        "throughput" | "throughput-origin" => {
            let origin = what == "throughput-origin";
            let mut sub = s.subscribe("plain.bench").await?;
            s.flush().await?;
            let t = Instant::now();
            // Timed to the last message received: core NATS drops messages for a slow
            // consumer, and the wait for ones that never come is not throughput.
            let reader = tokio::spawn(async move {
                let mut n = 0u64;
                let mut last = Instant::now();
                while n < count {
                    let Some(m) =
                        tokio::time::timeout(std::time::Duration::from_secs(3), sub.next())
                            .await
                            .ok()
                            .flatten()
                    else {
                        break;
                    };
                    // What an importer reads of every message before it publishes it.
                    if origin && Origin::of(m.headers.as_ref()).is_none() {
                        return Err("a message without its origin header".to_string());
                    }
                    n += 1;
                    last = Instant::now();
                }
                Ok((n, last))
            });
            // Like a lossy exporter's: bus id, sequence, run and index, host name.
            let run = 0x1234_5678_9abc_def0;
            for i in 0..count {
                if origin {
                    let mut h = async_nats::HeaderMap::new();
                    let o = Origin {
                        bus: 0x0123_4567_89ab_cdef,
                        seq: Some(i),
                        prev: None,
                        index: Some((run, i)),
                        host: "plain",
                    };
                    h.insert(ORIGIN, o.format());
                    p.publish_with_headers("plain.bench", h, payload.clone())
                        .await?;
                } else {
                    p.publish("plain.bench", payload.clone()).await?;
                }
            }
            p.flush().await?;
            let (n, last) = reader.await??;
            let secs = last.duration_since(t).as_secs_f64();
            println!("{what} received={n} msgs_per_s={:.0}", n as f64 / secs);
        }
        "jetstream" => {
            let js = async_nats::jetstream::new(p.clone());
            let _ = js.delete_stream("PLAIN").await;
            js.create_stream(async_nats::jetstream::stream::Config {
                name: "PLAIN".into(),
                subjects: vec!["plain.js".into()],
                ..Default::default()
            })
            .await?;
            let t = Instant::now();
            let mut q = std::collections::VecDeque::new();
            for _ in 0..count {
                if q.len() >= 256 {
                    let f: async_nats::jetstream::context::PublishAckFuture =
                        q.pop_front().unwrap();
                    f.await?;
                }
                q.push_back(js.publish("plain.js", payload.clone()).await?);
            }
            for f in q {
                f.await?;
            }
            let secs = t.elapsed().as_secs_f64();
            println!(
                "jetstream acked={count} msgs_per_s={:.0}",
                count as f64 / secs
            );
        }
        "jetstream-e2e" | "jetstream-e2e-id" => {
            // `-id`: each publish carries a `Nats-Msg-Id`, as it must for JetStream to drop
            // a message sent again after a timeout or a crash (what the bridge relies on).
            let with_id = what == "jetstream-e2e-id";
            use async_nats::jetstream::consumer;
            let js = async_nats::jetstream::new(p.clone());
            let _ = js.delete_stream("PLAINE2E").await;
            let stream = js
                .create_stream(async_nats::jetstream::stream::Config {
                    name: "PLAINE2E".into(),
                    subjects: vec!["plain.e2e".into()],
                    ..Default::default()
                })
                .await?;
            let c: consumer::PullConsumer = stream
                .create_consumer(consumer::pull::Config {
                    durable_name: Some("plain".into()),
                    ack_policy: consumer::AckPolicy::All,
                    max_ack_pending: 65536,
                    ..Default::default()
                })
                .await?;
            let t = Instant::now();
            let reader = tokio::spawn(async move {
                let mut msgs = c
                    .stream()
                    .max_messages_per_batch(1000)
                    .messages()
                    .await
                    .map_err(|e| e.to_string())?;
                let mut n = 0u64;
                while n < count {
                    let m =
                        match tokio::time::timeout(std::time::Duration::from_secs(5), msgs.next())
                            .await
                        {
                            Ok(Some(Ok(m))) => m,
                            _ => break,
                        };
                    n += 1;
                    if n.is_multiple_of(256) || n == count {
                        m.ack().await.map_err(|e| e.to_string())?;
                    }
                }
                Ok::<u64, String>(n)
            });
            let mut q = std::collections::VecDeque::new();
            for i in 0..count {
                if q.len() >= 256 {
                    let f: async_nats::jetstream::context::PublishAckFuture =
                        q.pop_front().unwrap();
                    f.await?;
                }
                if with_id {
                    let mut h = async_nats::HeaderMap::new();
                    h.insert("Nats-Msg-Id", format!("plain-{i}").as_str());
                    q.push_back(
                        js.publish_with_headers("plain.e2e", h, payload.clone())
                            .await?,
                    );
                } else {
                    q.push_back(js.publish("plain.e2e", payload.clone()).await?);
                }
            }
            for f in q {
                f.await?;
            }
            let n = reader.await??;
            let secs = t.elapsed().as_secs_f64();
            println!("{what} received={n} msgs_per_s={:.0}", n as f64 / secs);
        }
        "rtt" => {
            let mut sub = s.subscribe("plain.rtt").await?;
            let s2 = s.clone();
            tokio::spawn(async move {
                while let Some(m) = sub.next().await {
                    if let Some(r) = m.reply {
                        let _ = s2.publish(r, m.payload).await;
                    }
                }
            });
            s.flush().await?;
            let mut lat = Vec::new();
            for _ in 0..count {
                let t = Instant::now();
                p.request("plain.rtt", payload.clone()).await?;
                lat.push(t.elapsed().as_nanos() as u64);
            }
            lat.sort_unstable();
            println!(
                "rtt p50_us={} p99_us={}",
                lat[lat.len() / 2] / 1000,
                lat[lat.len() * 99 / 100] / 1000
            );
        }
        _ => return Err(USAGE.into()),
    }
    Ok(())
}
