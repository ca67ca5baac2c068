//! `shmbus bridge`: local buses to and from NATS.
//!
//! The bridge is an ordinary participant of each bus: a subscriber of the buses it exports
//! (`--out BUS=SUBJECT`) and a publisher of those it imports into (`--in SUBJECT=BUS`), on the
//! async handles of bus-core, in one tokio program. A **reliable** bus goes through
//! JetStream: persisted, acknowledged, de-duplicated by message id, exactly once across
//! crashes of the bridge and restarts of the server (see [`export`] and [`import`] for how).
//! A **lossy** bus goes through core NATS: at most once, and every loss is counted.
//!
//! Every exported message carries its origin (bus id and host) and its sequence in headers;
//! an importer never publishes a message of its own bus, and an exporter never exports a
//! message its own importer put on the bus, so two-way bridging does not loop.
//!
//! [`run`] is the whole command; bus-cli calls it for `shmbus bridge`, and the
//! `shmbus-bridge` binary is the same thing alone.

pub mod args;
pub mod export;
pub mod id;
pub mod import;
pub mod nats;
pub mod state;
pub mod stats;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Context};
use bus_core::{Bus, Mode};
use tokio::sync::watch;

pub use args::BridgeArgs;

/// The global allocator the bridge's binaries install (`shmbus` and `shmbus-bridge`):
/// async-nats allocates a few blocks a message on one tokio worker and frees them on the other,
/// which glibc's malloc serialises on its arena locks (a third of an importer's CPU at full
/// rate). mimalloc frees across threads without a lock: 25-30 % more bridged messages a second
/// on a lossy link, measured (README, "Scaling out").
pub use mimalloc::MiMalloc as Allocator;

/// Local sequence numbers this bridge imported into a bus and its exporter of that bus has
/// not yet passed: those it must not export (two-way bridging).
///
/// The importer inserts a sequence while it holds the message's loan, before the commit, so
/// an exporter that has received the message finds it here (the commit happens after the
/// insert, and the exporter's lock after its receive).
///
/// After a restart the importer loads the marks from its journal; until it has, the
/// exporter must not read the bus (it would take imports the journal knows for this bus's
/// own messages and send them out again), so it waits for [`Marks::wait_loaded`].
#[derive(Debug)]
pub struct Marks {
    set: Mutex<BTreeSet<u64>>,
    loaded: watch::Sender<bool>,
}

impl Default for Marks {
    fn default() -> Self {
        Self {
            set: Mutex::default(),
            loaded: watch::Sender::new(false),
        }
    }
}

impl Marks {
    /// The importer has inserted every mark its journal holds.
    pub fn set_loaded(&self) {
        self.loaded.send_replace(true);
    }
    /// Until the importer has loaded its journal's marks.
    pub async fn wait_loaded(&self) {
        let mut rx = self.loaded.subscribe();
        // The sender lives in `self`, so the channel cannot close while this waits.
        let _ = rx.wait_for(|&loaded| loaded).await;
    }
    pub fn insert(&self, seq: u64) {
        self.set.lock().unwrap().insert(seq);
    }
    pub fn contains(&self, seq: u64) -> bool {
        self.set.lock().unwrap().contains(&seq)
    }
    /// How many of the sequences `lo..hi` are marked.
    pub fn count_in(&self, lo: u64, hi: u64) -> u64 {
        if lo >= hi {
            return 0;
        }
        self.set.lock().unwrap().range(lo..hi).count() as u64
    }
    /// Forgets the sequences below `seq` (the exporter has passed them for good).
    pub fn prune_below(&self, seq: u64) {
        let mut set = self.set.lock().unwrap();
        if set.first().is_some_and(|&s| s < seq) {
            *set = set.split_off(&seq);
        }
    }
    pub fn len(&self) -> usize {
        self.set.lock().unwrap().len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A warning: text on stderr, and a JSON `warning` event with `--json`.
pub fn warn(json: bool, message: &str) {
    if json {
        stats::event(true, "warning", message);
    }
    stats::event(false, "warning", message);
}

/// The state directory of a bus: `--state DIR/<bus file name>`, else `<bus file>.bridge`.
fn state_dir(state: Option<&Path>, bus: &Path) -> PathBuf {
    let name = bus
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "bus".to_string());
    match state {
        Some(dir) => dir.join(id::sanitize(&name)),
        None => bus.with_file_name(format!("{name}.bridge")),
    }
}

/// Runs the bridge until SIGINT or SIGTERM (exit 0) or an error (returned: the caller
/// prints it and exits 1).
///
/// # Errors
///
/// Bad arguments, a missing bus, an unreachable server, conflicting stream settings, or a
/// link that failed, each with what is wrong.
pub fn run(args: &BridgeArgs) -> anyhow::Result<ExitCode> {
    let plan = args.plan()?;
    // Two workers: one thread (current_thread) costs about 10 % less CPU per message on a
    // reliable link, but a lossy importer alone on it falls behind core NATS, which then drops
    // messages as a slow consumer.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    rt.block_on(run_async(args, plan))
}

struct Opened {
    bus: Bus,
    id: u64,
    dir: PathBuf,
}

/// The JetStream consumer of an import link: bridge name, bus file stem and subject.
fn durable_name(bridge: &str, link: &args::LinkSpec) -> String {
    let stem = link
        .path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    id::consumer_name(&format!("shmbus-{bridge}-{stem}-{}", link.subject))
}

/// Refuses two reliable links that would share a state file or a JetStream consumer: their names are
/// made from the subject (and bus) with every character but letters, digits, '-' and '_'
/// as '_', so `app.events` and `app_events` into one bus meet. (Kept as they are, rather
/// than made unique, so that the consumers and state files of running bridges are found
/// again after an upgrade.)
fn refuse_shared_names(plan: &args::Plan, buses: &HashMap<PathBuf, Opened>) -> anyhow::Result<()> {
    let mut taken: HashMap<String, &args::LinkSpec> = HashMap::new();
    let show = |l: &args::LinkSpec| {
        if l.export {
            format!("--out {}={}", l.bus, l.subject)
        } else {
            format!("--in {}={}", l.subject, l.bus)
        }
    };
    // Only reliable links keep state files and consumers.
    for link in plan
        .links
        .iter()
        .filter(|l| buses[&l.path].bus.mode() == Mode::Reliable)
    {
        let side = if link.export { "out" } else { "in" };
        let file = buses[&link.path]
            .dir
            .join(format!("{side}-{}", id::sanitize(&link.subject)));
        let mut names = vec![format!("state file {}.*", file.display())];
        if !link.export {
            names.push(format!(
                "JetStream consumer {}",
                durable_name(&plan.name, link)
            ));
        }
        for name in names {
            if let Some(other) = taken.insert(name.clone(), link) {
                anyhow::bail!(
                    "{} and {} would share the {name} (the bridge names them after the bus and \
                     subject with every character but letters, digits, '-' and '_' as '_'): \
                     rename one of the subjects or buses",
                    show(other),
                    show(link)
                );
            }
        }
    }
    Ok(())
}

async fn run_async(args: &BridgeArgs, plan: args::Plan) -> anyhow::Result<ExitCode> {
    let json = args.json;
    // Open every bus first: a missing one is an error before anything reaches the network.
    let mut buses: HashMap<PathBuf, Opened> = HashMap::new();
    for link in &plan.links {
        if buses.contains_key(&link.path) {
            continue;
        }
        let bus = Bus::open(&link.path).with_context(|| format!("cannot open bus {}", link.bus))?;
        let id =
            id::bus_id(&bus).with_context(|| format!("cannot stat {}", link.path.display()))?;
        let dir = state_dir(args.state.as_deref(), &link.path);
        state::ensure_dir(&dir)?;
        buses.insert(link.path.clone(), Opened { bus, id, dir });
    }
    refuse_shared_names(&plan, &buses)?;
    let mut marks: HashMap<PathBuf, Arc<Marks>> = HashMap::new();
    for link in plan.links.iter().filter(|l| l.export) {
        if plan.links.iter().any(|l| !l.export && l.path == link.path) {
            marks.entry(link.path.clone()).or_default();
        }
    }
    let client = nats::connect(&plan.urls, &plan.name, args.connect_timeout).await?;
    let js = nats::jetstream(client.clone(), Duration::from_secs(2));
    let mut reliable: Vec<String> = plan
        .links
        .iter()
        .filter(|l| buses[&l.path].bus.mode() == Mode::Reliable)
        .map(|l| l.subject.clone())
        .collect();
    reliable.sort();
    reliable.dedup();
    if !reliable.is_empty() {
        nats::ensure_stream(&js, &plan.stream, &reliable, args.replicas).await?;
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(plan.links.len());
    let mut tasks = tokio::task::JoinSet::new();
    let mut all_stats = Vec::new();
    for link in &plan.links {
        let o = &buses[&link.path];
        let mode = o.bus.mode();
        let transport = if mode == Mode::Reliable {
            "jetstream"
        } else {
            "core"
        };
        let label = if link.export {
            format!("out {}={}", link.bus, link.subject)
        } else {
            format!("in {}={}", link.subject, link.bus)
        };
        let stats = Arc::new(stats::LinkStats::new(label, transport));
        all_stats.push(stats.clone());
        let m = marks.get(&link.path).cloned();
        let (ready, stop) = (ready_tx.clone(), stop_rx.clone());
        if link.export {
            let l = export::ExportLink {
                bus: o.bus.clone(),
                bus_id: o.id,
                subject: link.subject.clone(),
                host: plan.name.clone(),
                state_dir: o.dir.clone(),
                stats,
                marks: m,
                window: args.window,
                json,
            };
            if mode == Mode::Reliable {
                tasks.spawn(export::reliable(l, js.clone(), ready, stop));
            } else {
                tasks.spawn(export::lossy(l, client.clone(), ready, stop));
            }
        } else {
            let l = import::ImportLink {
                bus: o.bus.clone(),
                bus_id: o.id,
                subject: link.subject.clone(),
                durable: durable_name(&plan.name, link),
                state_dir: o.dir.clone(),
                stats,
                marks: m,
                json,
            };
            if mode == Mode::Reliable {
                tasks.spawn(import::reliable(
                    l,
                    js.clone(),
                    plan.stream.clone(),
                    ready,
                    stop,
                ));
            } else {
                tasks.spawn(import::lossy(l, client.clone(), ready, stop));
            }
        }
    }
    drop(ready_tx);

    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut printer = stats::Printer::new(json, all_stats.len());
    let mut pending_ready = plan.links.len();
    let mut tick = tokio::time::interval(args.stats_interval);
    tick.tick().await;
    let mut failure: Option<anyhow::Error> = None;
    loop {
        tokio::select! {
            r = ready_rx.recv(), if pending_ready > 0 => {
                if r.is_some() {
                    pending_ready -= 1;
                    if pending_ready == 0 {
                        stats::event(json, "ready", &format!("{} link(s) bridged through {}", plan.links.len(), plan.urls));
                    }
                } else {
                    pending_ready = 0;
                }
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = tick.tick() => printer.print("stats", &all_stats),
            done = tasks.join_next() => match done {
                None => break,
                // Links run until the stop signal: one that returns before it would leave
                // the bridge running without it.
                Some(Ok(Ok(()))) => { failure = Some(anyhow!("a link stopped on its own")); break; }
                Some(Ok(Err(e))) => { failure = Some(e); break; }
                Some(Err(e)) => { failure = Some(anyhow!("a link panicked: {e}")); break; }
            }
        }
    }
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(Duration::from_secs(8), async {
        while let Some(done) = tasks.join_next().await {
            if let Ok(Err(e)) = done {
                if failure.is_none() {
                    failure = Some(e);
                }
            }
        }
    })
    .await;
    if drained.is_err() {
        tasks.abort_all();
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), client.flush()).await;
    printer.print("final", &all_stats);
    match failure {
        Some(e) => Err(e),
        None => Ok(ExitCode::SUCCESS),
    }
}
