//! Which process owns a slot, as the reader's PID namespace sees it (`stat`, `top`).
//!
//! A slot records the pid its owner had when it joined, in the owner's own PID namespace: a
//! subscriber in a container (`docker run --ipc=host -v /dev/shm/shmbus:...`, or
//! `unshare --pid`) records 1 or 7, which on the host is some other process or none. The
//! reader finds the truth without a change of the file format: a slot's liveness token is an
//! OFD write lock on the slot's bytes ([`bus_core::Config::subscriber_slot_range`]), and Linux
//! lists every lock an open file holds in `/proc/PID/fdinfo/FD`:
//!
//! ```text
//! lock:    1: OFDLCK ADVISORY  WRITE -1 00:1a:4711 4096 4223
//! ```
//!
//! (type, mode, pid — always -1 for OFD locks —, device major:minor:inode, first and last byte).
//! So, for a live slot that recorded pid P:
//!
//! 1. if process P of this namespace holds the slot's lock, P is the owner: [`Owner::Same`];
//! 2. else, if a process Q here holds it (one scan of `/proc/*/fdinfo`), the owner
//!    runs in a namespace nested in the reader's and Q is its pid here: [`Owner::Nested`]
//!    (its `NSpid` line in /proc/Q/status ends with P when it is the one that joined);
//! 3. else no process visible here holds it: the owner lives in a namespace the reader cannot
//!    see into (the host, seen from a container): [`Owner::Foreign`], shown as `P (foreign)`;
//!    if part of /proc could not be read (another user's processes), it might also be one of
//!    those: [`Owner::Unverified`], shown as `P?`.
//!
//! Dead slots (no lock) show the pid they recorded. Recording the namespace's inode in the slot
//! would answer only "same namespace or not", needs a format change, and still not give the
//! pid here; the lock answers both, in the file's terms (the lock is the liveness).

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use bus_core::BusStats;

/// The owner of one live or dead slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// Process `.0` of this namespace holds the slot (the pid it recorded).
    Same(u32),
    /// The slot's holder is `here` in this namespace; it recorded `recorded`, its pid in its
    /// own (nested) PID namespace.
    Nested { here: u32, recorded: u32 },
    /// Alive, but no process this reader can see holds the slot: its owner is in a PID
    /// namespace outside this one's view. `.0` is the pid it recorded there.
    Foreign(u32),
    /// Alive, not found, and part of /proc could not be read: the owner may be foreign or a
    /// process this reader may not inspect.
    Unverified(u32),
    /// No live owner: the pid the slot recorded.
    Dead(u32),
}

impl Owner {
    /// What the pid column shows.
    pub fn label(&self) -> String {
        match *self {
            Owner::Same(p) | Owner::Dead(p) => p.to_string(),
            Owner::Nested { here, .. } => here.to_string(),
            Owner::Foreign(p) => format!("{p} (foreign)"),
            Owner::Unverified(p) => format!("{p}?"),
        }
    }

    /// The owner's pid in this namespace, where known.
    pub fn here(&self) -> Option<u32> {
        match *self {
            Owner::Same(p) => Some(p),
            Owner::Nested { here, .. } => Some(here),
            _ => None,
        }
    }

    /// `stat --json`'s `pid_ns`: "same", "nested", "foreign", "unverified" or "dead".
    pub fn namespace(&self) -> &'static str {
        match self {
            Owner::Same(_) => "same",
            Owner::Nested { .. } => "nested",
            Owner::Foreign(_) => "foreign",
            Owner::Unverified(_) => "unverified",
            Owner::Dead(_) => "dead",
        }
    }
}

/// The owners of a snapshot's slots, in the order of `BusStats::subscribers` and `producers`.
#[derive(Debug, Default)]
pub struct Owners {
    pub subscribers: Vec<Owner>,
    pub producers: Vec<Owner>,
}

impl Owners {
    /// The owner of the snapshot's `i`-th subscriber, which recorded `pid`.
    pub fn subscriber(&self, i: usize, pid: u32) -> Owner {
        self.subscribers
            .get(i)
            .copied()
            .unwrap_or(Owner::Unverified(pid))
    }

    /// The owner of the snapshot's `i`-th producer, which recorded `pid`.
    pub fn producer(&self, i: usize, pid: u32) -> Owner {
        self.producers
            .get(i)
            .copied()
            .unwrap_or(Owner::Unverified(pid))
    }
}

/// A file as fdinfo's lock lines name it: device major and minor, inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FileId {
    major: u32,
    minor: u32,
    ino: u64,
}

impl FileId {
    fn of(meta: &std::fs::Metadata) -> FileId {
        let dev = meta.dev();
        FileId {
            major: libc::major(dev),
            minor: libc::minor(dev),
            ino: meta.ino(),
        }
    }
}

/// One slot's identity across refreshes: a new owner joins with a new time.
type Key = (bool, u32, u64, u32);

/// Finds slot owners for one bus; keeps what it found for slots whose owner stays the same.
pub struct Resolver {
    proc_dir: PathBuf,
    file: Option<FileId>,
    known: HashMap<Key, Owner>,
}

impl Resolver {
    /// For the bus file at `path` (stat'ed now: a file replaced later is not followed).
    pub fn new(path: &Path) -> Resolver {
        Resolver {
            proc_dir: PathBuf::from("/proc"),
            file: std::fs::metadata(path).ok().map(|m| FileId::of(&m)),
            known: HashMap::new(),
        }
    }

    /// The owner of every slot of `st`.
    pub fn owners(&mut self, st: &BusStats) -> Owners {
        let c = &st.config;
        // (subscriber?, index, joined, recorded pid, alive, first byte of the slot)
        let slots: Vec<(bool, u32, u64, u32, bool, Option<u64>)> = st
            .subscribers
            .iter()
            .map(|s| {
                let r = c.subscriber_slot_range(s.index).map(|r| r.start);
                (true, s.index, s.joined_unix_ns, s.pid, s.alive, r)
            })
            .chain(st.producers.iter().map(|p| {
                let r = c.producer_slot_range(p.index).map(|r| r.start);
                (false, p.index, p.joined_unix_ns, p.pid, p.alive, r)
            }))
            .collect();
        let mut found: Vec<Option<Owner>> = slots
            .iter()
            .map(
                |&(sub, index, joined, pid, alive, start)| match (alive, start, self.file) {
                    (false, _, _) => Some(Owner::Dead(pid)),
                    // No range or no file: nothing to look for.
                    (true, None, _) | (true, _, None) => Some(Owner::Unverified(pid)),
                    (true, Some(start), Some(file)) => {
                        if let Some(o) = self.known.get(&(sub, index, joined, pid)) {
                            Some(*o)
                        } else if self.holds(pid, file).contains(&start) {
                            Some(Owner::Same(pid))
                        } else {
                            None
                        }
                    }
                },
            )
            .collect();
        if found.iter().any(Option::is_none) {
            if let Some(file) = self.file {
                let (holders, complete) = self.scan(file);
                for (o, &(_, _, _, pid, _, start)) in found.iter_mut().zip(&slots) {
                    if o.is_some() {
                        continue;
                    }
                    let start = start.expect("only slots with a range are looked up");
                    let mut here: Vec<u32> = holders
                        .iter()
                        .filter(|(_, s)| *s == start)
                        .map(|(q, _)| *q)
                        .collect();
                    here.sort_unstable();
                    // Several holders share the description (a fork after joining): the one
                    // whose pid in its own namespace is the recorded one.
                    let pick = here
                        .iter()
                        .copied()
                        .find(|&q| self.innermost_pid(q) == Some(pid))
                        .or_else(|| here.first().copied());
                    *o = Some(match pick {
                        Some(q) if q == pid => Owner::Same(pid),
                        Some(q) => Owner::Nested {
                            here: q,
                            recorded: pid,
                        },
                        None if complete => Owner::Foreign(pid),
                        None => Owner::Unverified(pid),
                    });
                }
            }
        }
        let mut out = Owners::default();
        for (o, &(sub, index, joined, pid, _, _)) in found.into_iter().zip(&slots) {
            let o = o.unwrap_or(Owner::Unverified(pid));
            // A live owner stays who it is until its slot is freed (a new join has a new
            // time); what could not be checked is tried again next time.
            if matches!(o, Owner::Same(_) | Owner::Nested { .. } | Owner::Foreign(_)) {
                self.known.insert((sub, index, joined, pid), o);
            }
            if sub {
                out.subscribers.push(o);
            } else {
                out.producers.push(o);
            }
        }
        // Forget slots that are gone.
        let live: std::collections::HashSet<Key> = slots
            .iter()
            .map(|&(sub, index, joined, pid, _, _)| (sub, index, joined, pid))
            .collect();
        self.known.retain(|k, _| live.contains(k));
        out
    }

    /// First bytes of the OFD write locks process `pid` holds on `file`, through any of its
    /// descriptors. Empty if it has none, or cannot be read.
    fn holds(&self, pid: u32, file: FileId) -> Vec<u64> {
        self.holds_checked(pid, file).unwrap_or_default()
    }

    /// As `holds`, with `Err` when the process's descriptors cannot be listed (another user's,
    /// say); a process that has exited meanwhile holds nothing.
    ///
    /// Only procfs is read: each descriptor's fdinfo names the file of its locks by device
    /// and inode. Nothing is stat'ed through a descriptor, which could hang on a dead network
    /// or FUSE mount that some unrelated process has open.
    fn holds_checked(&self, pid: u32, file: FileId) -> Result<Vec<u64>, ()> {
        let dir = self.proc_dir.join(pid.to_string()).join("fdinfo");
        let fds = match std::fs::read_dir(&dir) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(_) => return Err(()),
        };
        let mut starts = Vec::new();
        for fd in fds.flatten() {
            if let Ok(text) = std::fs::read_to_string(fd.path()) {
                starts.extend(lock_starts(&text, file));
            }
        }
        Ok(starts)
    }

    /// Every (pid, first byte) of an OFD write lock on `file` held by a process visible here,
    /// and whether every process's descriptors could be read.
    fn scan(&self, file: FileId) -> (Vec<(u32, u64)>, bool) {
        let mut out = Vec::new();
        let Ok(dir) = std::fs::read_dir(&self.proc_dir) else {
            return (out, false);
        };
        let mut complete = true;
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            match self.holds_checked(pid, file) {
                Ok(starts) => out.extend(starts.into_iter().map(|s| (pid, s))),
                Err(()) => complete = false,
            }
        }
        (out, complete)
    }

    /// Process `pid`'s pid in the innermost PID namespace it belongs to (the last field of
    /// the `NSpid` line of /proc/PID/status), which is what it recorded when it joined.
    fn innermost_pid(&self, pid: u32) -> Option<u32> {
        let status =
            std::fs::read_to_string(self.proc_dir.join(pid.to_string()).join("status")).ok()?;
        innermost_nspid(&status)
    }
}

/// The last pid of the `NSpid:` line of a /proc/PID/status text.
fn innermost_nspid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))?
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}

/// First bytes of the OFD write locks on `file` in an fdinfo text. Lines other than `lock:`
/// lines, other kinds of lock, other files and anything malformed are skipped.
fn lock_starts(fdinfo: &str, file: FileId) -> Vec<u64> {
    fdinfo
        .lines()
        .filter_map(|l| l.strip_prefix("lock:"))
        .filter_map(|l| {
            // "1: OFDLCK ADVISORY  WRITE -1 00:1a:4711 4096 4223"; a waiter's line has "->".
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 8 || f.contains(&"->") || f[1] != "OFDLCK" || f[3] != "WRITE" {
                return None;
            }
            let mut id = f[5].split(':');
            let major = u32::from_str_radix(id.next()?, 16).ok()?;
            let minor = u32::from_str_radix(id.next()?, 16).ok()?;
            let ino = id.next()?.parse::<u64>().ok()?;
            if (FileId { major, minor, ino }) != file {
                return None;
            }
            f[6].parse().ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: FileId = FileId {
        major: 0,
        minor: 0x1a,
        ino: 4711,
    };

    #[test]
    fn lock_lines_of_this_file_give_their_first_byte() {
        let info = "pos:\t0\nflags:\t02100002\nmnt_id:\t27\nino:\t4711\n\
                    lock:\t1: OFDLCK ADVISORY  WRITE -1 00:1a:4711 4096 4223\n\
                    lock:\t2: OFDLCK ADVISORY  WRITE -1 00:1a:4711 4352 4479\n";
        assert_eq!(lock_starts(info, FILE), vec![4096, 4352]);
    }

    #[test]
    fn other_files_kinds_and_garbage_are_skipped() {
        let info = "lock:\t1: OFDLCK ADVISORY  WRITE -1 00:1a:4712 4096 4223\n\
                    lock:\t2: POSIX  ADVISORY  WRITE 77 00:1a:4711 4096 4223\n\
                    lock:\t3: OFDLCK ADVISORY  READ -1 00:1a:4711 4096 4223\n\
                    lock:\t4: -> OFDLCK ADVISORY  WRITE -1 00:1a:4711 4096 4223\n\
                    lock:\t5: OFDLCK ADVISORY  WRITE -1 zz:1a:4711 4096 4223\n\
                    lock:\t6: OFDLCK ADVISORY  WRITE -1 00:1a:4711 x EOF\n\
                    lock:\t7: OFDLCK\n\
                    lock:\n";
        assert_eq!(lock_starts(info, FILE), Vec::<u64>::new());
        // A device with a major: fe:00.
        let disk = FileId {
            major: 254,
            minor: 0,
            ino: 9,
        };
        assert_eq!(
            lock_starts("lock:\t1: OFDLCK ADVISORY  WRITE -1 fe:00:9 0 0\n", disk),
            vec![0]
        );
    }

    #[test]
    fn the_innermost_pid_is_the_last_of_nspid() {
        assert_eq!(innermost_nspid("Name:\tx\nNSpid:\t4242\t7\n"), Some(7));
        assert_eq!(innermost_nspid("NSpid:\t4242\n"), Some(4242));
        assert_eq!(innermost_nspid("Name:\tx\n"), None);
        assert_eq!(innermost_nspid("NSpid:\n"), None);
    }

    #[test]
    fn labels_say_what_is_known() {
        assert_eq!(Owner::Same(12).label(), "12");
        assert_eq!(
            Owner::Nested {
                here: 4242,
                recorded: 1
            }
            .label(),
            "4242"
        );
        assert_eq!(Owner::Foreign(1).label(), "1 (foreign)");
        assert_eq!(Owner::Unverified(9).label(), "9?");
        assert_eq!(Owner::Dead(9).label(), "9");
        assert_eq!(Owner::Foreign(1).here(), None);
        assert_eq!(Owner::Same(3).namespace(), "same");
    }

    /// This process holds a slot's lock: found as itself, through /proc.
    #[test]
    fn a_slot_of_this_process_is_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.bus");
        let bus =
            bus_core::Bus::create(&path, &bus_core::BusOptions::new().capacity(1 << 16)).unwrap();
        let _sub = bus.subscribe(bus_core::Start::Latest).unwrap();
        let _publ = bus.publisher().unwrap();
        let mut r = Resolver::new(&path);
        let owners = r.owners(&bus.stats());
        let me = std::process::id();
        assert_eq!(owners.subscribers, vec![Owner::Same(me)]);
        assert_eq!(owners.producers, vec![Owner::Same(me)]);
        // Remembered: the same answer without /proc.
        r.proc_dir = dir.path().join("no-proc");
        assert_eq!(r.owners(&bus.stats()).subscribers, vec![Owner::Same(me)]);
    }
}
