//! The bus handle: creating, opening and inspecting a bus, and making publishers and
//! subscribers of it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::layout::{Config, Mode, SLOT_ACTIVE};
use crate::lock::{ControlLock, LockError};
use crate::mapping::{self, OpenError, OpenErrorKind, OpenFlags, Segment};
use crate::registry::{self, JoinError, SlotKind};
use crate::ring::Params;
use crate::sync::Ordering;
use crate::{Publisher, SubscribeError, Subscriber};

/// Default capacity of a new bus: 64 MiB.
pub const DEFAULT_CAPACITY: u64 = 64 << 20;
/// Default unblock timeout: how long a record may stay claimed by a dead producer.
pub const DEFAULT_UNBLOCK_TIMEOUT: Duration = Duration::from_millis(200);

/// Parameters of a new bus, for [`Bus::create`] and [`Bus::open_or_create`].
///
/// ```
/// use bus_core::{BusOptions, Mode};
/// let opts = BusOptions::new().capacity(1 << 20).mode(Mode::Lossy).max_message(4096);
/// assert_eq!(opts.get_capacity(), 1 << 20);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusOptions {
    capacity: u64,
    max_message: Option<u32>,
    mode: Mode,
    max_subscribers: u32,
    max_producers: u32,
    file_mode: u32,
    sparse: bool,
    unblock_timeout: Duration,
    initial_position: u64,
}

impl Default for BusOptions {
    fn default() -> Self {
        BusOptions {
            capacity: DEFAULT_CAPACITY,
            max_message: None,
            mode: Mode::Reliable,
            max_subscribers: 64,
            max_producers: 64,
            file_mode: 0o600,
            sparse: false,
            unblock_timeout: DEFAULT_UNBLOCK_TIMEOUT,
            initial_position: 0,
        }
    }
}

impl BusOptions {
    /// The defaults: 64 MiB, reliable, max message capacity/8 (at most 16 MiB), 64
    /// subscribers, 64 producers, mode 0600, blocks reserved, unblock timeout 200 ms.
    pub fn new() -> Self {
        Self::default()
    }
    /// Bytes of the ring: a power of two from 4 KiB to 1 TiB.
    pub fn capacity(mut self, bytes: u64) -> Self {
        self.capacity = bytes;
        self
    }
    /// Largest message (default: capacity / 8, at most 16 MiB). At most about half the ring.
    pub fn max_message(mut self, bytes: u32) -> Self {
        self.max_message = Some(bytes);
        self
    }
    /// Delivery mode (default [`Mode::Reliable`]).
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }
    /// Subscriber slots (default 64).
    pub fn max_subscribers(mut self, n: u32) -> Self {
        self.max_subscribers = n;
        self
    }
    /// Producer slots (default 64): how many publishers may be attached at once.
    ///
    /// With 1 the bus is *exclusive*, and faster: with no other producer to race, a publish
    /// claims and commits with plain stores instead of two locked compare-and-swaps, and
    /// moves the oldest-record mark without reading old headers (at 64 B, about twice the
    /// messages a second; see the README's benchmarks). A second publisher gets
    /// [`crate::JoinError::NoFreeSlot`] while the first lives; one that died is replaced.
    /// A child forked (without exec) after the publisher was made cannot publish through it:
    /// [`crate::SendError::Forked`]; it opens the bus and makes its own.
    pub fn max_producers(mut self, n: u32) -> Self {
        self.max_producers = n;
        self
    }
    /// Permission bits of the file (default 0600; the umask applies): at most 0o777, or
    /// creating the bus fails with `InvalidOptions`.
    pub fn file_mode(mut self, mode: u32) -> Self {
        self.file_mode = mode;
        self
    }
    /// Leave the file sparse instead of reserving its blocks: for rings larger than memory,
    /// on a disk file system. A full file system then fails a later write with SIGBUS.
    pub fn sparse(mut self, sparse: bool) -> Self {
        self.sparse = sparse;
        self
    }
    /// How long a record may stay claimed by a dead producer before readers turn it into
    /// padding (default 200 ms).
    pub fn unblock_timeout(mut self, t: Duration) -> Self {
        self.unblock_timeout = t;
        self
    }
    /// Absolute position of the first record (a multiple of 16; default 0). Tests use it to
    /// start near a wrap or near the end of a huge ring.
    pub fn initial_position(mut self, position: u64) -> Self {
        self.initial_position = position;
        self
    }
    /// The capacity set.
    pub fn get_capacity(&self) -> u64 {
        self.capacity
    }

    /// Checks the options as [`Bus::create`] will, without creating anything.
    ///
    /// # Errors
    ///
    /// The first parameter out of range.
    pub fn check(&self) -> Result<(), crate::ConfigError> {
        crate::layout::check_file_mode(self.file_mode)?;
        self.config().check()
    }

    fn config(&self) -> Config {
        let max_message = self
            .max_message
            .unwrap_or_else(|| (self.capacity / 8).clamp(1, 16 << 20).min(u32::MAX as u64) as u32);
        Config {
            mode: self.mode,
            capacity: self.capacity,
            max_message,
            max_subscribers: self.max_subscribers,
            max_producers: self.max_producers,
            sparse: self.sparse,
            created_unix_ns: mapping::now_unix_ns(),
            unblock_timeout_ns: self.unblock_timeout.as_nanos().min(u64::MAX as u128) as u64,
            initial_position: self.initial_position,
            record_key: crate::layout::RecordKey::generate(),
        }
    }
}

/// How to open an existing bus, for [`Bus::open_with`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenOptions {
    flags: OpenFlags,
}

impl OpenOptions {
    /// The defaults: symbolic links refused, files of other users refused.
    pub fn new() -> Self {
        Self::default()
    }
    /// Follow a symbolic link at the path (refused by default: a link planted in a shared
    /// directory could point at another user's file).
    pub fn follow_symlinks(mut self, yes: bool) -> Self {
        self.flags.follow_symlinks = yes;
        self
    }
    /// Open a bus file owned by another user (refused by default).
    pub fn allow_other_owner(mut self, yes: bool) -> Self {
        self.flags.allow_other_owner = yes;
        self
    }
    /// Open only to look: the file `O_RDONLY`, the mapping `PROT_READ`, so read permission
    /// on the file is enough. [`Bus::stats`], [`Bus::config`] and [`Bus::message_type`]
    /// work, and nothing is ever written: no slot is taken, no dead participant is evicted,
    /// no lock is taken. [`Bus::publisher`], [`Bus::subscribe`] and [`Bus::evict_dead`]
    /// fail with `EBADF`, the kernel's answer to a write lock on a descriptor not open for
    /// writing (see [`Bus::is_read_only`]).
    ///
    /// ```
    /// use bus_core::{Bus, BusOptions, OpenOptions};
    /// let dir = tempfile::tempdir().unwrap();
    /// let path = dir.path().join("look.bus");
    /// let bus = Bus::create(&path, &BusOptions::new().capacity(1 << 16)).unwrap();
    /// let _sub = bus.subscribe(bus_core::Start::Latest).unwrap();
    /// let observer = Bus::open_with(&path, &OpenOptions::new().read_only(true)).unwrap();
    /// let st = observer.stats();
    /// assert!(st.subscribers[0].alive);
    /// assert!(observer.publisher().is_err());
    /// ```
    pub fn read_only(mut self, yes: bool) -> Self {
        self.flags.read_only = yes;
        self
    }
}

/// `errno` of a join or an eviction on a bus opened read-only: what `F_OFD_SETLK` with a
/// write lock returns on a descriptor not open for writing.
const READ_ONLY_ERRNO: i32 = libc::EBADF;

/// Where a new subscriber starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Only messages published from now on.
    Latest,
    /// The oldest message still retained in the ring.
    Oldest,
    /// A position returned by [`Subscriber::position`] earlier (possibly by another
    /// process): resume exactly there.
    Position(u64),
}

/// State shared by every handle made from one [`Bus`].
pub(crate) struct Shared {
    pub(crate) seg: Segment,
    pub(crate) lock: ControlLock,
    pub(crate) params: Params,
    pub(crate) path: PathBuf,
}

/// An open bus: the mapped file. Cheap to clone; publishers and subscribers keep it alive.
///
/// # Examples
///
/// ```
/// use bus_core::{Bus, BusOptions, Start};
/// let dir = tempfile::tempdir().unwrap();
/// let bus = Bus::create(dir.path().join("demo.bus"), &BusOptions::new().capacity(1 << 16)).unwrap();
/// let mut sub = bus.subscribe(Start::Latest).unwrap();
/// let mut publ = bus.publisher().unwrap();
/// publ.send(b"hello").unwrap();
/// let mut buf = Vec::new();
/// let msg = sub.recv(&mut buf).unwrap();
/// assert_eq!(&buf[..], b"hello");
/// assert_eq!(msg.seq, 0);
/// ```
#[derive(Clone)]
pub struct Bus {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("path", &self.shared.path)
            .field("config", &self.shared.seg.config)
            .finish()
    }
}

impl Bus {
    fn from_segment(path: &Path, seg: Segment) -> Bus {
        let c = seg.config;
        Bus {
            shared: Arc::new(Shared {
                params: Params {
                    capacity: c.capacity,
                    max_message: c.max_message,
                    mode: c.mode,
                    exclusive: c.max_producers == 1,
                    key: c.record_key,
                },
                seg,
                lock: ControlLock::new(),
                path: path.to_path_buf(),
            }),
        }
    }

    /// Creates a new bus file at `path` (the directory must exist).
    ///
    /// The file appears atomically, fully initialised; if two processes create the same
    /// path at once, exactly one succeeds and the other gets `AlreadyExists`.
    ///
    /// # Errors
    ///
    /// [`OpenError`] with `AlreadyExists` if anything exists at `path`, `InvalidOptions` for
    /// out-of-range options, `NoSpace` if the file system cannot hold it, `PermissionDenied`
    /// if the directory is not writable.
    pub fn create(path: impl AsRef<Path>, options: &BusOptions) -> Result<Bus, OpenError> {
        Self::create_as(path.as_ref(), options, mapping::Existing::Keep)
    }

    /// Creates a new bus file at `path`, replacing whatever file is there in one step: the
    /// path is never missing (an `open` meanwhile finds the old bus or the new one), and
    /// processes that have the old bus open keep it, detached from the path (`shmbus create
    /// --force`). Two processes replacing at once both succeed; the path ends on one bus.
    ///
    /// # Errors
    ///
    /// As [`Bus::create`], except `AlreadyExists`; `NotARegularFile` if `path` is a
    /// directory.
    pub fn create_replacing(
        path: impl AsRef<Path>,
        options: &BusOptions,
    ) -> Result<Bus, OpenError> {
        Self::create_as(path.as_ref(), options, mapping::Existing::Replace)
    }

    fn create_as(
        path: &Path,
        options: &BusOptions,
        existing: mapping::Existing,
    ) -> Result<Bus, OpenError> {
        mapping::create(path, options.config(), options.file_mode, existing)
            .map(|seg| Bus::from_segment(path, seg))
            .map_err(|kind| OpenError {
                path: path.to_path_buf(),
                kind,
            })
    }

    /// Opens an existing bus with the default [`OpenOptions`].
    ///
    /// # Errors
    ///
    /// [`OpenError`] naming the file and the problem: missing, not a regular file, a
    /// symbolic link, owned by another user, permission denied, or not a valid bus (its
    /// [`crate::HeaderError`]).
    pub fn open(path: impl AsRef<Path>) -> Result<Bus, OpenError> {
        Self::open_with(path, &OpenOptions::new())
    }

    /// Opens an existing bus.
    ///
    /// # Errors
    ///
    /// As [`Bus::open`].
    pub fn open_with(path: impl AsRef<Path>, options: &OpenOptions) -> Result<Bus, OpenError> {
        let path = path.as_ref();
        mapping::open(path, options.flags)
            .map(|seg| Bus::from_segment(path, seg))
            .map_err(|kind| OpenError {
                path: path.to_path_buf(),
                kind,
            })
    }

    /// Opens the bus at `path`, creating it with `options` if there is none. Safe against
    /// concurrent callers: they all end up on the same file.
    ///
    /// An existing bus keeps its own parameters; `options` apply only to a new one.
    ///
    /// # Errors
    ///
    /// As [`Bus::create`] and [`Bus::open`].
    pub fn open_or_create(path: impl AsRef<Path>, options: &BusOptions) -> Result<Bus, OpenError> {
        let path = path.as_ref();
        for _ in 0..16 {
            // Open first: a create reserves the whole ring before it finds the name taken,
            // which fails on a file system without room for a second copy (a 64 MiB /dev/shm
            // in a container) or in a directory the caller may not write to.
            match Bus::open(path) {
                Err(e) if e.kind == OpenErrorKind::NotFound => {}
                other => return other,
            }
            match Bus::create(path, options) {
                // Created by another process between our open and create: open that one.
                Err(e) if e.kind == OpenErrorKind::AlreadyExists => continue,
                other => return other,
            }
        }
        Err(OpenError {
            path: path.to_path_buf(),
            kind: OpenErrorKind::NotFound,
        })
    }

    /// A new publisher (takes a producer slot until dropped).
    ///
    /// # Errors
    ///
    /// [`JoinError::NoFreeSlot`] when `max_producers` live publishers exist;
    /// `JoinError::Io` with `EBADF` on a bus opened [read-only](OpenOptions::read_only).
    pub fn publisher(&self) -> Result<Publisher, JoinError> {
        if self.is_read_only() {
            return Err(JoinError::Io {
                errno: READ_ONLY_ERRNO,
            });
        }
        Publisher::join(self.shared.clone())
    }

    /// A new subscriber starting at `start` (takes a subscriber slot until dropped).
    ///
    /// # Errors
    ///
    /// [`SubscribeError`]: no free slot, or a `Start::Position` that is no longer (or not
    /// yet) in the ring, or is not the start of a record; `EBADF` (as for
    /// [`Bus::publisher`]) on a bus opened read-only.
    pub fn subscribe(&self, start: Start) -> Result<Subscriber, SubscribeError> {
        if self.is_read_only() {
            return Err(JoinError::Io {
                errno: READ_ONLY_ERRNO,
            }
            .into());
        }
        Subscriber::join(self.shared.clone(), start)
    }

    /// Whether the bus was opened with [`OpenOptions::read_only`]: it can be looked at
    /// ([`Bus::stats`]) but not joined.
    pub fn is_read_only(&self) -> bool {
        self.shared.seg.read_only
    }

    /// The parameters in the bus header.
    pub fn config(&self) -> &Config {
        &self.shared.seg.config
    }

    /// The delivery mode.
    pub fn mode(&self) -> Mode {
        self.shared.seg.config.mode
    }

    /// The path the bus was opened with.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Flushes the mapping to its file (msync): on a disk file, everything published so far
    /// becomes durable. A no-op in effect for a bus in `/dev/shm`.
    ///
    /// # Errors
    ///
    /// The msync error.
    pub fn flush(&self) -> std::io::Result<()> {
        self.shared.seg.flush()
    }

    /// Frees the slots of participants whose processes died. Publishers that find the ring
    /// full (on any call, at most every 10 ms), publishers whose wakes find nobody asleep,
    /// and every join do this by themselves; this is for tools.
    ///
    /// # Errors
    ///
    /// [`LockError`] if the control lock could not be taken (`LockError::Io` with `EBADF`
    /// on a bus opened read-only).
    pub fn evict_dead(&self) -> Result<usize, LockError> {
        if self.is_read_only() {
            return Err(LockError::Io {
                errno: READ_ONLY_ERRNO,
            });
        }
        let wait = crate::lock::LOCK_TIMEOUT;
        Ok(
            registry::evict_dead(&self.shared, SlotKind::Subscriber, wait)?
                + registry::evict_dead(&self.shared, SlotKind::Producer, wait)?,
        )
    }

    /// The message type its typed handles recorded, if any (`None`: no typed handle has
    /// joined; the bus is untyped, and every typed handle may claim it).
    ///
    /// # Errors
    ///
    /// [`crate::TypeError::Corrupt`] when the record breaks its checksum.
    pub fn message_type(&self) -> Result<Option<crate::BusType>, crate::TypeError> {
        crate::typeinfo::read(&self.shared)
    }

    /// A snapshot of the bus state, for monitoring (`shmbus stat`). Reads counters without
    /// locking; each value is exact but they are not taken at one instant. Writes nothing,
    /// so it works on a bus opened [read-only](OpenOptions::read_only).
    pub fn stats(&self) -> BusStats {
        let seg = &self.shared.seg;
        let tail = seg.tail_snapshot();
        let head = seg.head_snapshot();
        let mut subscribers = Vec::new();
        // ORDERING: Acquire on a slot's state and position pairs with the SeqCst stores that
        // publish them; the counters are Relaxed statistics (each exact, not one snapshot).
        for index in 0..seg.config.max_subscribers {
            let off = seg.config.subscriber_slot_offset(index);
            let slot = seg.sub_slot(off);
            if slot.state_acquire() != SLOT_ACTIVE {
                continue;
            }
            let position = slot.position_acquire();
            let seq = slot.seq_acquire();
            let (delivered, lost, unblocked) = slot.counters_relaxed();
            let alive = registry::is_alive(seg, off);
            let waiting = alive && seg.slot(off).sleeping().load(Ordering::Relaxed) != 0;
            subscribers.push(SubscriberStats {
                index,
                pid: slot.pid_relaxed(),
                alive,
                waiting,
                joined_unix_ns: slot.joined_relaxed(),
                position,
                seq,
                lag_bytes: tail.0.saturating_sub(position),
                lag_messages: tail.1.saturating_sub(seq),
                delivered,
                lost,
                unblocked,
            });
        }
        let mut producers = Vec::new();
        for index in 0..seg.config.max_producers {
            let off = seg.config.producer_slot_offset(index);
            let slot = seg.prod_slot(off);
            if slot.state_acquire() != SLOT_ACTIVE {
                continue;
            }
            let (sent, bytes, abandoned) = slot.counters_relaxed();
            let alive = registry::is_alive(seg, off);
            let waiting = alive && seg.slot(off).sleeping().load(Ordering::Relaxed) != 0;
            producers.push(ProducerStats {
                index,
                pid: slot.pid_relaxed(),
                alive,
                waiting,
                joined_unix_ns: slot.joined_relaxed(),
                sent,
                bytes,
                abandoned,
            });
        }
        BusStats {
            config: seg.config,
            tail_position: tail.0,
            tail_seq: tail.1,
            head_position: head.0,
            head_seq: head.1,
            unblocked: seg.unblocked().load(Ordering::Relaxed),
            evicted: seg.evicted().load(Ordering::Relaxed),
            readers_waiting: seg.readers_waiting().load(Ordering::Relaxed),
            producers_waiting: seg.producers_waiting().load(Ordering::Relaxed),
            subscribers,
            producers,
            message_type: crate::typeinfo::read(&self.shared),
        }
    }
}

/// A snapshot of a bus, from [`Bus::stats`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusStats {
    /// The header's parameters.
    pub config: Config,
    /// Position of the next claim (total bytes ever claimed, plus the initial position).
    pub tail_position: u64,
    /// Sequence of the next claim (messages ever claimed).
    pub tail_seq: u64,
    /// Position of the oldest retained record.
    pub head_position: u64,
    /// Sequence of the oldest retained record.
    pub head_seq: u64,
    /// Records of dead producers turned into padding.
    pub unblocked: u64,
    /// Slots freed from dead participants.
    pub evicted: u64,
    /// The header's count of readers asleep on the futex. It includes a reader that died
    /// asleep until its slot is swept; [`SubscriberStats::waiting`] counts only live ones.
    pub readers_waiting: u32,
    /// The header's count of producers asleep waiting for space, including one that died
    /// asleep until its slot is swept; [`ProducerStats::waiting`] counts only live ones.
    pub producers_waiting: u32,
    /// Active subscriber slots.
    pub subscribers: Vec<SubscriberStats>,
    /// Active producer slots.
    pub producers: Vec<ProducerStats>,
    /// The message type typed handles recorded (as [`Bus::message_type`]).
    pub message_type: Result<Option<crate::BusType>, crate::TypeError>,
}

/// One subscriber slot in [`BusStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriberStats {
    /// Slot index.
    pub index: u32,
    /// Pid of the owner when it joined.
    pub pid: u32,
    /// Whether the owner still holds its liveness lock.
    pub alive: bool,
    /// Whether it is alive and asleep waiting for messages now.
    pub waiting: bool,
    /// When it joined, ns since the Unix epoch.
    pub joined_unix_ns: u64,
    /// Its published read position (updated in batches).
    pub position: u64,
    /// The sequence at that position.
    pub seq: u64,
    /// Bytes between its position and the tail.
    pub lag_bytes: u64,
    /// Messages between its position and the tail.
    pub lag_messages: u64,
    /// Messages delivered to it.
    pub delivered: u64,
    /// Messages it lost (lossy mode, or repaired).
    pub lost: u64,
    /// Records of dead producers it skipped.
    pub unblocked: u64,
}

/// One producer slot in [`BusStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerStats {
    /// Slot index.
    pub index: u32,
    /// Pid of the owner when it joined.
    pub pid: u32,
    /// Whether the owner still holds its liveness lock.
    pub alive: bool,
    /// Whether it is alive and asleep waiting for space in a full ring now.
    pub waiting: bool,
    /// When it joined, ns since the Unix epoch.
    pub joined_unix_ns: u64,
    /// Messages committed.
    pub sent: u64,
    /// Payload bytes committed.
    pub bytes: u64,
    /// Loans dropped without commit.
    pub abandoned: u64,
}

/// The directory that holds named buses: `$SHMBUS_DIR`, else `/dev/shm/shmbus`.
pub fn default_dir() -> PathBuf {
    std::env::var_os("SHMBUS_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/dev/shm/shmbus"))
}

/// Resolves a bus name or path: a string with a slash is a path used as given; a bare name
/// `NAME` is `default_dir()/NAME.bus`.
///
/// ```
/// use bus_core::resolve;
/// assert_eq!(resolve("./x.bus"), std::path::PathBuf::from("./x.bus"));
/// assert!(resolve("ticks").ends_with("ticks.bus"));
/// ```
pub fn resolve(name_or_path: &str) -> PathBuf {
    if name_or_path.contains('/') {
        PathBuf::from(name_or_path)
    } else {
        default_dir().join(format!("{name_or_path}.bus"))
    }
}

/// Creates `dir` (and parents) with mode 0700 if missing.
///
/// # Errors
///
/// The `mkdir` error.
pub fn ensure_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A read-only open sees what a read-write one sees (liveness by `F_OFD_GETLK` works on
    /// an `O_RDONLY` descriptor), writes nothing, and refuses every join.
    #[test]
    fn a_read_only_open_looks_and_never_joins() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ro.bus");
        let bus = Bus::create(&path, &BusOptions::new().capacity(1 << 16)).unwrap();
        let sub = bus.subscribe(Start::Oldest).unwrap();
        let mut publ = bus.publisher().unwrap();
        for _ in 0..3 {
            publ.send(b"hello").unwrap();
        }
        let ro = Bus::open_with(&path, &OpenOptions::new().read_only(true)).unwrap();
        assert!(ro.is_read_only() && !bus.is_read_only());
        let (a, b) = (ro.stats(), bus.stats());
        assert_eq!(a, b);
        assert_eq!(a.tail_seq, 3);
        assert!(a.subscribers[0].alive && a.producers[0].alive);
        assert_eq!(a.readers_waiting + a.producers_waiting, 0);
        assert!(!a.subscribers[0].waiting && !a.producers[0].waiting);
        let ebadf = JoinError::Io { errno: libc::EBADF };
        assert_eq!(ro.publisher().unwrap_err(), ebadf);
        assert_eq!(
            ro.subscribe(Start::Latest).unwrap_err(),
            SubscribeError::Join(ebadf)
        );
        assert_eq!(
            ro.evict_dead().unwrap_err(),
            LockError::Io { errno: libc::EBADF }
        );
        // The two opens see the same live state as it changes.
        drop(sub);
        assert!(ro.stats().subscribers.is_empty());
        publ.send(b"more").unwrap();
        assert_eq!(ro.stats().tail_seq, 4);
    }
}
