//! The state of `top`: the buses of one directory, their rates over the last minute, and the
//! selection. Nothing here draws; everything comes from [`bus_core::Bus::stats`], the
//! library's snapshot API (which reads without joining or evicting).

use std::collections::{HashMap, VecDeque};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use bus_core::{Bus, BusStats};

use crate::ls::{open_observer, scan_dir, Candidate, Summary};
use crate::pids::{Owners, Resolver};

/// Bytes in a MiB: `top` and `stat --watch` show rates in the same binary unit.
const MIB: f64 = (1u64 << 20) as f64;
/// Rate samples kept per bus: one a refresh, a minute at the one-second refresh.
pub const HISTORY: usize = 60;

/// Which kind of slot a [`SlotView`] shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SlotKind {
    Subscriber,
    Producer,
}

/// One subscriber or producer slot of the selected bus.
#[derive(Debug, Clone)]
pub struct SlotView {
    pub kind: SlotKind,
    pub index: u32,
    /// The owner's pid as this namespace sees it, or marked foreign (see `pids`).
    pub pid: String,
    pub alive: bool,
    /// Subscribers only.
    pub lag_messages: Option<u64>,
    pub lag_bytes: Option<u64>,
    /// Messages a second (delivered for a subscriber, sent for a producer) since the last
    /// refresh; `None` on a slot's first sight.
    pub rate: Option<f64>,
    /// Delivered (subscriber) or sent (producer), in all.
    pub total: u64,
    /// Subscribers only: messages lost, dead producers' records skipped.
    pub lost: Option<u64>,
    pub unblocked: Option<u64>,
    /// Producers only: loans dropped uncommitted.
    pub abandoned: Option<u64>,
}

/// One bus of the directory (or a file there that is not a usable bus).
pub struct BusView {
    pub name: String,
    pub path: PathBuf,
    /// The file the handle maps (device, inode): a bus removed and created again under the
    /// same name is a new bus, opened again.
    file_id: Option<(u64, u64)>,
    bus: Option<Bus>,
    /// Finds slot owners across PID namespaces, for the file `bus` maps.
    pids: Option<Resolver>,
    /// Why the file is not shown as a bus.
    pub error: Option<String>,
    pub stats: Option<BusStats>,
    pub summary: Summary,
    /// Messages a second and MiB a second (2^20 bytes of ring records: payloads, headers and
    /// padding, as `stat --watch` counts them) since the last refresh; `None` until two
    /// snapshots exist.
    pub rate: Option<(f64, f64)>,
    /// Messages a second at each refresh, oldest first, at most [`HISTORY`].
    pub history: VecDeque<u64>,
    prev: Option<(Instant, u64, u64)>,
    /// Counters of each slot at the last refresh, keyed by the slot and its join time (a slot
    /// reused by a new participant starts afresh).
    prev_slots: HashMap<(SlotKind, u32, u64), (Instant, u64)>,
    pub slots: Vec<SlotView>,
}

impl BusView {
    fn new(c: Candidate) -> BusView {
        BusView {
            name: c.name,
            path: c.path,
            file_id: None,
            bus: None,
            pids: None,
            error: None,
            stats: None,
            summary: Summary::default(),
            rate: None,
            history: VecDeque::with_capacity(HISTORY),
            prev: None,
            prev_slots: HashMap::new(),
            slots: Vec::new(),
        }
    }

    /// Takes a snapshot; (re)opens the file when it is new or was replaced.
    fn refresh(&mut self, now: Instant) {
        let id = std::fs::symlink_metadata(&self.path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        if id != self.file_id || (self.bus.is_none() && self.error.is_some()) {
            self.file_id = id;
            self.prev = None;
            self.prev_slots.clear();
            self.history.clear();
            match open_observer(&self.path) {
                Ok(bus) => {
                    self.pids = Some(Resolver::new(&self.path));
                    self.bus = Some(bus);
                    self.error = None;
                }
                Err(e) => {
                    self.bus = None;
                    self.stats = None;
                    self.rate = None;
                    self.slots.clear();
                    self.error = Some(e.kind.to_string());
                }
            }
        }
        let Some(bus) = &self.bus else {
            return;
        };
        let st = bus.stats();
        let owners: Owners = self
            .pids
            .as_mut()
            .map(|r| r.owners(&st))
            .unwrap_or_default();
        self.summary = Summary::of(&st);
        let bytes = self.summary.published_bytes;
        self.rate = self.prev.map(|(t, seq, b)| {
            let dt = now.duration_since(t).as_secs_f64().max(1e-9);
            (
                st.tail_seq.saturating_sub(seq) as f64 / dt,
                bytes.saturating_sub(b) as f64 / dt / MIB,
            )
        });
        self.prev = Some((now, st.tail_seq, bytes));
        if let Some((msgs, _)) = self.rate {
            if self.history.len() == HISTORY {
                self.history.pop_front();
            }
            self.history.push_back(msgs.round() as u64);
        }
        let mut seen = HashMap::new();
        let mut rate_of = |kind, index, joined, total: u64| {
            let key = (kind, index, joined);
            seen.insert(key, (now, total));
            self.prev_slots
                .get(&key)
                .map(|&(t, before): &(Instant, u64)| {
                    total.saturating_sub(before) as f64
                        / now.duration_since(t).as_secs_f64().max(1e-9)
                })
        };
        let mut slots = Vec::new();
        for (i, s) in st.subscribers.iter().enumerate() {
            slots.push(SlotView {
                kind: SlotKind::Subscriber,
                index: s.index,
                pid: owners.subscriber(i, s.pid).label(),
                alive: s.alive,
                lag_messages: Some(s.lag_messages),
                lag_bytes: Some(s.lag_bytes),
                rate: rate_of(SlotKind::Subscriber, s.index, s.joined_unix_ns, s.delivered),
                total: s.delivered,
                lost: Some(s.lost),
                unblocked: Some(s.unblocked),
                abandoned: None,
            });
        }
        for (i, p) in st.producers.iter().enumerate() {
            slots.push(SlotView {
                kind: SlotKind::Producer,
                index: p.index,
                pid: owners.producer(i, p.pid).label(),
                alive: p.alive,
                lag_messages: None,
                lag_bytes: None,
                rate: rate_of(SlotKind::Producer, p.index, p.joined_unix_ns, p.sent),
                total: p.sent,
                lost: None,
                unblocked: None,
                abandoned: Some(p.abandoned),
            });
        }
        self.prev_slots = seen;
        self.slots = slots;
        self.stats = Some(st);
    }

    /// What the STATUS column says: `ok`, what is wrong, or why the file is not a bus.
    pub fn status(&self) -> String {
        if let Some(e) = &self.error {
            return format!("ERROR: {e}");
        }
        match &self.stats {
            Some(st) => {
                let p = self.summary.problems(st);
                if p.is_empty() {
                    "ok".into()
                } else {
                    p.join(", ")
                }
            }
            None => String::new(),
        }
    }
}

/// Everything `top` shows.
pub struct App {
    pub dir: PathBuf,
    pub buses: Vec<BusView>,
    /// Index into `buses`; meaningless while it is empty.
    pub selected: usize,
    /// The directory could not be read (it may not exist yet: buses create it).
    pub dir_error: Option<String>,
    pub refreshes: u64,
}

impl App {
    pub fn new(dir: &Path) -> App {
        App {
            dir: dir.to_path_buf(),
            buses: Vec::new(),
            selected: 0,
            dir_error: None,
            refreshes: 0,
        }
    }

    /// Rescans the directory (buses come and go) and takes a snapshot of every bus. The
    /// selection stays on the same bus by name while it exists.
    pub fn refresh(&mut self) {
        let now = Instant::now();
        let selected = self.selected_bus().map(|b| b.name.clone());
        match scan_dir(&self.dir) {
            Ok(found) => {
                self.dir_error = None;
                let mut old: HashMap<String, BusView> =
                    self.buses.drain(..).map(|b| (b.name.clone(), b)).collect();
                self.buses = found
                    .into_iter()
                    .map(|c| old.remove(&c.name).unwrap_or_else(|| BusView::new(c)))
                    .collect();
            }
            Err(e) => {
                self.dir_error = Some(e.to_string());
                self.buses.clear();
            }
        }
        for b in &mut self.buses {
            b.refresh(now);
        }
        if let Some(name) = selected {
            if let Some(i) = self.buses.iter().position(|b| b.name == name) {
                self.selected = i;
            }
        }
        self.selected = self.selected.min(self.buses.len().saturating_sub(1));
        self.refreshes += 1;
    }

    pub fn selected_bus(&self) -> Option<&BusView> {
        self.buses.get(self.selected)
    }

    pub fn select_next(&mut self) {
        if self.selected + 1 < self.buses.len() {
            self.selected += 1;
        }
    }

    pub fn select_previous(&mut self) {
        self.selected = self.selected.saturating_sub(1);
    }

    pub fn select_first(&mut self) {
        self.selected = 0;
    }

    pub fn select_last(&mut self) {
        self.selected = self.buses.len().saturating_sub(1);
    }
}
