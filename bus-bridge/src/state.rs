//! What a bridge keeps to survive a crash, beside the bus (or under `--state DIR`).
//!
//! * **Export** (`out-SUBJECT.state`): the position up to which every message of the bus
//!   has been acknowledged by JetStream, and the sequence of the last one published (the
//!   `prev=` chain of the origin header). One small JSON file, replaced atomically: written
//!   to a temporary file, fsynced, renamed over the old one, and the directory fsynced.
//! * **Import** (`in-SUBJECT.journal` and `in-SUBJECT.state`): one 64-byte entry per message
//!   committed to the bus, written (pwrite, in place, in a ring of [`JOURNAL_ENTRIES`]) while
//!   the message's loan is claimed and *before* it is committed, so that after a crash the
//!   bridge knows the local sequence number of the one message that might have been half done
//!   and can look at the bus to see whether it was committed. The state file is a checkpoint
//!   (per origin, the last sequence committed) taken before the journal ring comes round.
//!
//! The journal is not fsynced per entry: a process crash (SIGKILL) keeps what `pwrite` gave
//! the kernel. A machine crash loses a bus in /dev/shm anyway; for a bus on disk, both files
//! are fsynced at every checkpoint.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::id::fnv1a;

/// Writes `bytes` to `path` atomically: temporary file, fsync, rename, fsync of the directory.
///
/// # Errors
///
/// The failing system call, with the path.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("tmp");
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    drop(f);
    std::fs::rename(&tmp, path).with_context(|| format!("cannot rename to {}", path.display()))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync {}", dir.display()))?;
    Ok(())
}

/// Creates the state directory (0700) if missing.
///
/// # Errors
///
/// The mkdir error, with the path.
pub fn ensure_dir(dir: &Path) -> anyhow::Result<()> {
    bus_core::ensure_dir(dir)
        .with_context(|| format!("cannot create the state directory {}", dir.display()))
}

/// The file name part for a subject.
fn subject_file(prefix: &str, subject: &str, ext: &str) -> String {
    format!("{prefix}-{}.{ext}", crate::id::sanitize(subject))
}

// ---- export -------------------------------------------------------------------------------

/// The export checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportState {
    /// The bus this was taken from ([`crate::id::bus_id`], hex).
    pub bus_id: String,
    /// The subject.
    pub subject: String,
    /// Every message before this position is acknowledged (or was skipped).
    pub position: u64,
    /// Sequence of the next message at `position` (informational, and to prune).
    pub next_seq: u64,
    /// Sequence of the last message published and acknowledged.
    pub last_published: Option<u64>,
}

/// Path of an export state file.
pub fn export_path(dir: &Path, subject: &str) -> PathBuf {
    dir.join(subject_file("out", subject, "state"))
}

impl ExportState {
    /// Loads the state, or `None` if there is none.
    ///
    /// # Errors
    ///
    /// The file exists but cannot be read or parsed.
    pub fn load(path: &Path) -> anyhow::Result<Option<ExportState>> {
        match std::fs::read(path) {
            Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).with_context(|| {
                format!("{} is not a bridge state file", path.display())
            })?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Saves it atomically.
    ///
    /// # Errors
    ///
    /// As [`write_atomic`].
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        write_atomic(path, &serde_json::to_vec(self)?)
    }
}

// ---- import -------------------------------------------------------------------------------

/// Entries in the journal ring. A checkpoint is taken at least every quarter of it.
pub const JOURNAL_ENTRIES: u64 = 16384;
const ENTRY_SIZE: u64 = 64;
const JOURNAL_HEADER: u64 = 64;
const JOURNAL_MAGIC: &[u8; 8] = b"SHMBJRN1";

/// One message committed (or about to be) to the bus by an importer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Increasing from 1; 0 is an empty slot.
    pub counter: u64,
    /// Origin bus id (0: a message without origin headers, keyed by its stream sequence).
    pub origin: u64,
    /// Its sequence at the origin (or the stream sequence, for origin 0).
    pub seq: u64,
    /// Its JetStream stream sequence.
    pub stream_seq: u64,
    /// The local sequence number its loan got.
    pub local_seq: u64,
    /// Position of the previous import's record (where to look for this one), or u64::MAX.
    pub prev_position: u64,
    /// 1 live; 2 void (its loan was taken by a repairer: never delivered).
    pub kind: u64,
}

impl Entry {
    fn encode(&self) -> [u8; ENTRY_SIZE as usize] {
        let mut b = [0u8; ENTRY_SIZE as usize];
        let words = [
            self.counter,
            self.origin,
            self.seq,
            self.stream_seq,
            self.local_seq,
            self.prev_position,
            self.kind,
        ];
        for (i, w) in words.iter().enumerate() {
            b[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
        }
        let check = fnv1a(&[&b[..56]]);
        b[56..].copy_from_slice(&check.to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> Option<Entry> {
        let word = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap());
        if word(0) == 0 || word(7) != fnv1a(&[&b[..56]]) {
            return None;
        }
        Some(Entry {
            counter: word(0),
            origin: word(1),
            seq: word(2),
            stream_seq: word(3),
            local_seq: word(4),
            prev_position: word(5),
            kind: word(6),
        })
    }
}

/// The import checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportState {
    /// The target bus ([`crate::id::bus_id`], hex).
    pub bus_id: String,
    /// Journal entries up to this counter are reflected here.
    pub counter: u64,
    /// Per origin (hex; "0" for messages without origin), the last sequence committed.
    pub origins: BTreeMap<String, u64>,
}

/// The import journal of one `--in`.
pub struct Journal {
    file: File,
    path: PathBuf,
    state_path: PathBuf,
    bus_id: u64,
    /// Counter of the last entry written.
    pub counter: u64,
}

/// What a journal says after a restart.
#[derive(Debug, Default)]
pub struct Recovered {
    /// The checkpoint plus every later entry, except a last one that is still to be checked.
    pub state: ImportState,
    /// The newest entry, if it is newer than the checkpoint: committed or not, the bus says.
    pub pending: Option<Entry>,
    /// Local sequences of every live entry in the ring (for two-way bridging).
    pub local_seqs: Vec<u64>,
}

impl Journal {
    /// Opens (or creates) the journal of `subject` in `dir` for bus `bus_id`, and reads it.
    ///
    /// # Errors
    ///
    /// The files cannot be read or written, or belong to another bus.
    pub fn open(dir: &Path, subject: &str, bus_id: u64) -> anyhow::Result<(Journal, Recovered)> {
        let path = dir.join(subject_file("in", subject, "journal"));
        let state_path = dir.join(subject_file("in", subject, "state"));
        let hex = crate::id::hex(bus_id);
        let mut state = match std::fs::read(&state_path) {
            Ok(bytes) => serde_json::from_slice::<ImportState>(&bytes)
                .with_context(|| format!("{} is not a bridge state file", state_path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => ImportState::default(),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read {}", state_path.display()))
            }
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let mut header = [0u8; JOURNAL_HEADER as usize];
        let len = file.metadata()?.len();
        let fresh = len < JOURNAL_HEADER || {
            file.read_exact_at(&mut header, 0)?;
            &header[..8] != JOURNAL_MAGIC || header[8..16] != bus_id.to_le_bytes()
        };
        if fresh || state.bus_id != hex {
            // A new journal, or one of another bus (re-created at this path): start afresh.
            state = ImportState {
                bus_id: hex.clone(),
                ..ImportState::default()
            };
            let mut h = [0u8; JOURNAL_HEADER as usize];
            h[..8].copy_from_slice(JOURNAL_MAGIC);
            h[8..16].copy_from_slice(&bus_id.to_le_bytes());
            file.set_len(0)?;
            file.write_all_at(&h, 0)?;
            file.set_len(JOURNAL_HEADER + JOURNAL_ENTRIES * ENTRY_SIZE)?;
            file.sync_all()?;
            write_atomic(&state_path, &serde_json::to_vec(&state)?)?;
        }
        let mut all = vec![0u8; (JOURNAL_ENTRIES * ENTRY_SIZE) as usize];
        file.read_exact_at(&mut all, JOURNAL_HEADER)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let mut entries: Vec<Entry> = all
            .chunks_exact(ENTRY_SIZE as usize)
            .filter_map(Entry::decode)
            .collect();
        entries.sort_by_key(|e| e.counter);
        let counter = entries
            .last()
            .map_or(state.counter, |e| e.counter.max(state.counter));
        let mut rec = Recovered {
            local_seqs: entries
                .iter()
                .filter(|e| e.kind == 1)
                .map(|e| e.local_seq)
                .collect(),
            ..Recovered::default()
        };
        let newer: Vec<Entry> = entries
            .into_iter()
            .filter(|e| e.counter > state.counter && e.kind == 1)
            .collect();
        if let Some((last, before)) = newer.split_last() {
            for e in before {
                apply(&mut state, e);
            }
            rec.pending = Some(*last);
        }
        rec.state = state;
        Ok((
            Journal {
                file,
                path,
                state_path,
                bus_id,
                counter,
            },
            rec,
        ))
    }

    /// Writes the entry of the message about to be committed; returns its counter.
    ///
    /// # Errors
    ///
    /// The pwrite error.
    pub fn write(&mut self, mut e: Entry) -> anyhow::Result<u64> {
        self.counter += 1;
        e.counter = self.counter;
        self.put(&e)?;
        Ok(self.counter)
    }

    /// Marks an entry void (its loan was repaired away, the message never delivered).
    ///
    /// # Errors
    ///
    /// The pwrite error.
    pub fn void(&mut self, mut e: Entry) -> anyhow::Result<()> {
        e.kind = 2;
        self.put(&e)
    }

    fn put(&self, e: &Entry) -> anyhow::Result<()> {
        let off = JOURNAL_HEADER + (e.counter % JOURNAL_ENTRIES) * ENTRY_SIZE;
        self.file
            .write_all_at(&e.encode(), off)
            .with_context(|| format!("cannot write {}", self.path.display()))
    }

    /// Saves a checkpoint (everything committed up to `state.counter`).
    ///
    /// # Errors
    ///
    /// As [`write_atomic`].
    pub fn checkpoint(&self, state: &ImportState) -> anyhow::Result<()> {
        debug_assert_eq!(state.bus_id, crate::id::hex(self.bus_id));
        self.file.sync_data().ok();
        write_atomic(&self.state_path, &serde_json::to_vec(state)?)
    }
}

/// Applies a committed entry to a checkpoint.
pub fn apply(state: &mut ImportState, e: &Entry) {
    let key = origin_key(e.origin);
    let last = state.origins.entry(key).or_insert(0);
    *last = (*last).max(e.seq);
    state.counter = state.counter.max(e.counter);
}

/// How an origin is written in the checkpoint.
pub fn origin_key(origin: u64) -> String {
    if origin == 0 {
        "0".to_string()
    } else {
        crate::id::hex(origin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, rec) = Journal::open(dir.path(), "a.b", 7).unwrap();
        assert!(rec.pending.is_none() && rec.local_seqs.is_empty());
        for i in 0..3u64 {
            j.write(Entry {
                counter: 0,
                origin: 9,
                seq: 10 + i,
                stream_seq: i + 1,
                local_seq: 100 + i,
                prev_position: i * 64,
                kind: 1,
            })
            .unwrap();
        }
        drop(j);
        let (j, rec) = Journal::open(dir.path(), "a.b", 7).unwrap();
        assert_eq!(j.counter, 3);
        assert_eq!(rec.state.origins.get(&origin_key(9)), Some(&11));
        assert_eq!(rec.pending.unwrap().seq, 12);
        assert_eq!(rec.local_seqs, vec![100, 101, 102]);
        // Another bus at the same path: afresh.
        let (_, rec) = Journal::open(dir.path(), "a.b", 8).unwrap();
        assert!(rec.pending.is_none() && rec.state.origins.is_empty());
    }

    #[test]
    fn atomic_state() {
        let dir = tempfile::tempdir().unwrap();
        let p = export_path(dir.path(), "x.y");
        assert_eq!(ExportState::load(&p).unwrap(), None);
        let s = ExportState {
            bus_id: "00".into(),
            subject: "x.y".into(),
            position: 64,
            next_seq: 1,
            last_published: Some(0),
        };
        s.save(&p).unwrap();
        assert_eq!(ExportState::load(&p).unwrap(), Some(s));
    }
}
