//! Creating and opening the bus file, and the typed view of its mapping.
//!
//! * **Creation is atomic.** The file is created nameless (`O_TMPFILE`) in the target
//!   directory, sized (fallocate, or ftruncate for a sparse bus), initialised completely, and
//!   only then linked under its name with `linkat`, which fails if the name exists. Two
//!   processes creating the same bus at once: exactly one link succeeds; the other sees
//!   `AlreadyExists` (and `open_or_create` opens the winner's file, which is already
//!   ready). No process can ever observe a half-written header, so `open` needs no wait
//!   for "ready": a file whose init state is not ready was not made by this library and is
//!   refused. Where `O_TMPFILE` is unsupported, a uniquely named hidden file created with
//!   `O_EXCL | O_NOFOLLOW` is linked the same way.
//! * **Opening trusts nothing.** The header is read with `pread` and validated
//!   ([`Config::decode`]) before anything is mapped; the file must be a regular file, not a
//!   symbolic link (unless asked), owned by the caller's user (unless asked), and exactly the
//!   size its header describes. The ring positions are checked for consistency.
//! * **The mapping is raw.** memmap2's `MmapRaw`: bytes that other processes write are
//!   reached through atomics and `ptr::copy_nonoverlapping`, never as `&[u8]`.
//! * **An observer may open read-only.** `O_RDONLY` and a `PROT_READ` mapping, for tools
//!   that only look (`shmbus stat`, `ls`, `top`) and for users with read permission alone.
//!   Such a segment must never be written: a write faults. [`Segment::read_only`] is checked
//!   by everything that would write without a slot (joining, eviction), and the 16-byte
//!   head and tail are read as two 8-byte halves ([`Segment::tail_snapshot`]), because a
//!   16-byte atomic load may be a `cmpxchg16b` (x86-64 without AVX) or an LL/SC pair
//!   (aarch64), which write.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use memmap2::MmapRaw;

use crate::layout::{
    Config, HeaderError, CONFIG_BYTES, CONTROL_DIRTY_OFFSET, CONTROL_HOLDER_OFFSET, EVICTED_OFFSET,
    HEADER_SIZE, HEAD_OFFSET, INIT_INITIALISING, INIT_READY, INIT_STATE_OFFSET, NOTIFY_OFFSET,
    PRODUCERS_WAITING_OFFSET, READERS_WAITING_OFFSET, RECORD_ALIGN, SLOT_SIZE, SPACE_OFFSET,
    TAIL_OFFSET, UNBLOCKED_OFFSET,
};
use crate::ring::Region;
use crate::sync::{AtomicU32, AtomicU64, Ordering, Pair};

/// What kind of file a path names, when it is not a regular file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A directory.
    Directory,
    /// A named pipe.
    Fifo,
    /// A Unix socket.
    Socket,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
    /// Anything else.
    Other,
}

impl std::fmt::Display for FileKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FileKind::Directory => "a directory",
            FileKind::Fifo => "a FIFO",
            FileKind::Socket => "a socket",
            FileKind::CharDevice => "a character device",
            FileKind::BlockDevice => "a block device",
            FileKind::Other => "not a regular file",
        })
    }
}

/// What went wrong creating or opening a bus file; see [`OpenError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenErrorKind {
    /// No file at the path. Create the bus first (or use `open_or_create`).
    #[error("no such bus")]
    NotFound,
    /// The directory that should hold the bus does not exist.
    #[error("directory does not exist")]
    DirectoryNotFound,
    /// `create` found a file (or link) at the path already. Remove it, or open it.
    #[error("already exists")]
    AlreadyExists,
    /// The caller lacks a permission; `need` says which.
    #[error("permission denied: need permission to {need}")]
    PermissionDenied {
        /// The permission missing.
        need: &'static str,
    },
    /// The path is a symbolic link, which is not followed unless
    /// [`crate::OpenOptions::follow_symlinks`] is set (a link planted in a shared directory
    /// could point anywhere).
    #[error("is a symbolic link (not followed unless asked)")]
    SymbolicLink,
    /// The path names something other than a regular file.
    #[error("is {kind}, not a bus file")]
    NotARegularFile {
        /// What it is.
        kind: FileKind,
    },
    /// The file belongs to another user; open it anyway with
    /// [`crate::OpenOptions::allow_other_owner`].
    #[error("is owned by uid {owner}, not by this user (uid {user})")]
    OwnedByOtherUser {
        /// Owner of the file.
        owner: u32,
        /// Effective uid of this process.
        user: u32,
    },
    /// The header is invalid.
    #[error("{0}")]
    Header(HeaderError),
    /// The header is valid but the ring positions contradict each other: corrupt.
    #[error("ring state is corrupt (head {head}, tail {tail})")]
    RingStateCorrupt {
        /// Head position found.
        head: u64,
        /// Tail position found.
        tail: u64,
    },
    /// The options passed to `create` are invalid.
    #[error("invalid options: {0}")]
    InvalidOptions(crate::layout::ConfigError),
    /// Not enough space on the file system to reserve the bus (tmpfs full?). Use a smaller
    /// capacity, or a sparse bus on a disk file system.
    #[error("no space left to reserve {needed} bytes")]
    NoSpace {
        /// Bytes the file needs.
        needed: u64,
    },
    /// This CPU has no lock-free 16-byte compare-and-swap; the ring needs one to be atomic
    /// across processes.
    #[error("this CPU has no lock-free 16-byte compare-and-swap (cmpxchg16b / casp)")]
    Unsupported128BitAtomics,
    /// Any other system error, with the operation that failed.
    #[error("{op} failed: {}", io::Error::from_raw_os_error(*errno))]
    Io {
        /// The operation.
        op: &'static str,
        /// The `errno` value.
        errno: i32,
    },
}

/// A bus file could not be created or opened. Returned by [`crate::Bus::create`],
/// [`crate::Bus::open`] and [`crate::Bus::open_or_create`]; names the file and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bus {}: {kind}", path.display())]
pub struct OpenError {
    /// The file.
    pub path: PathBuf,
    /// The problem.
    pub kind: OpenErrorKind,
}

impl OpenErrorKind {
    pub(crate) fn io(op: &'static str, e: io::Error) -> OpenErrorKind {
        let errno = e.raw_os_error().unwrap_or(libc::EIO);
        match errno {
            libc::ENOENT => OpenErrorKind::NotFound,
            libc::EEXIST => OpenErrorKind::AlreadyExists,
            libc::ELOOP => OpenErrorKind::SymbolicLink,
            libc::EISDIR => OpenErrorKind::NotARegularFile {
                kind: FileKind::Directory,
            },
            libc::ENOSPC => OpenErrorKind::NoSpace { needed: 0 },
            _ => OpenErrorKind::Io { op, errno },
        }
    }
}

/// How to open an existing bus file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct OpenFlags {
    pub follow_symlinks: bool,
    pub allow_other_owner: bool,
    /// `O_RDONLY` and a `PROT_READ` mapping: the segment can only be looked at.
    pub read_only: bool,
}

/// The mapped bus file: the only code that turns layout offsets into pointers.
pub(crate) struct Segment {
    /// Keeps the mapping alive; every pointer below points into it.
    _map: MmapRaw,
    base: *mut u8,
    data: *mut u8,
    /// `(capacity - 1) & !7`: what [`Region::word`] masks offsets with (computed once here,
    /// not on each of the several word accesses of every message).
    word_mask: u64,
    /// The open file (one open file description). Used for liveness probes and the control
    /// lock; never holds a slot lock.
    pub(crate) file: File,
    pub(crate) config: Config,
    /// Opened `O_RDONLY` and mapped `PROT_READ`: any write through `base` faults, so nothing
    /// may write (see the module doc).
    pub(crate) read_only: bool,
}

// SAFETY: `Segment` holds raw pointers into a shared mapping that lives as long as it does;
// all access through them is atomic or a byte copy whose result is validated, so sharing the
// pointers between threads adds nothing that other processes don't already do.
unsafe impl Send for Segment {}
// SAFETY: as for Send: no method hands out non-atomic references into the mapping.
unsafe impl Sync for Segment {}

impl Segment {
    fn word32(&self, offset: usize) -> &AtomicU32 {
        debug_assert!(offset % 4 == 0 && (offset as u64) < HEADER_SIZE);
        // SAFETY: `offset` is a header offset from `layout` (4-aligned, inside the first page,
        // which the mapping always covers); the word is only accessed atomically.
        unsafe { &*(self.base.add(offset) as *const AtomicU32) }
    }

    fn word64(&self, offset: u64) -> &AtomicU64 {
        debug_assert!(offset % 8 == 0 && offset + 8 <= self.config.data_offset());
        // SAFETY: `offset` is a header or slot offset (8-aligned, before the data region, so
        // inside the mapping); the word is only accessed atomically.
        unsafe { &*(self.base.add(offset as usize) as *const AtomicU64) }
    }

    pub(crate) fn notify(&self) -> &AtomicU32 {
        self.word32(NOTIFY_OFFSET)
    }
    pub(crate) fn readers_waiting(&self) -> &AtomicU32 {
        self.word32(READERS_WAITING_OFFSET)
    }
    pub(crate) fn space(&self) -> &AtomicU32 {
        self.word32(SPACE_OFFSET)
    }
    pub(crate) fn producers_waiting(&self) -> &AtomicU32 {
        self.word32(PRODUCERS_WAITING_OFFSET)
    }
    /// Word `i` of the message type record (`layout::TYPE_OFFSET`).
    pub(crate) fn type_word(&self, i: usize) -> &AtomicU64 {
        assert!(i < crate::layout::TYPE_WORDS);
        self.word64((crate::layout::TYPE_OFFSET + i * 8) as u64)
    }
    pub(crate) fn control_dirty(&self) -> &AtomicU32 {
        self.word32(CONTROL_DIRTY_OFFSET)
    }
    pub(crate) fn control_holder(&self) -> &AtomicU32 {
        self.word32(CONTROL_HOLDER_OFFSET)
    }
    pub(crate) fn unblocked(&self) -> &AtomicU64 {
        self.word64(UNBLOCKED_OFFSET as u64)
    }
    pub(crate) fn evicted(&self) -> &AtomicU64 {
        self.word64(EVICTED_OFFSET as u64)
    }

    /// The 32-bit field at `field` of the slot at file offset `slot`.
    pub(crate) fn slot32(&self, slot: u64, field: usize) -> &AtomicU32 {
        debug_assert!(field + 4 <= SLOT_SIZE && field % 4 == 0);
        // SAFETY: `slot` comes from `Config::*_slot_offset` (inside the slot table, which lies
        // inside the mapping) and `field` is a 4-aligned slot offset from `layout`.
        unsafe { &*(self.base.add((slot as usize) + field) as *const AtomicU32) }
    }

    /// The 64-bit field at `field` of the slot at file offset `slot`.
    pub(crate) fn slot64(&self, slot: u64, field: usize) -> &AtomicU64 {
        debug_assert!(field + 8 <= SLOT_SIZE && field % 8 == 0);
        self.word64(slot + field as u64)
    }

    /// Pointer to `offset` of the data region, for loans and borrowed reads.
    ///
    /// The pointer is valid for `capacity - offset` bytes; callers pass offsets the ring
    /// protocol has bounds-checked.
    pub(crate) fn data_ptr(&self, offset: u64) -> *mut u8 {
        debug_assert!(offset <= self.config.capacity);
        // SAFETY: `offset <= capacity`, and the data region spans `capacity` bytes of the
        // mapping, so the result is in bounds (or one past the end).
        unsafe { self.data.add(offset as usize) }
    }

    /// `{ position, sequence }` of the tail, for monitoring: on a read-only segment without
    /// a 16-byte atomic load (see [`Segment::pair_halves`]).
    pub(crate) fn tail_snapshot(&self) -> (u64, u64) {
        if self.read_only {
            self.pair_halves(TAIL_OFFSET)
        } else {
            crate::ring::latest(self)
        }
    }

    /// `{ position, sequence }` of the oldest retained record, as [`Segment::tail_snapshot`].
    pub(crate) fn head_snapshot(&self) -> (u64, u64) {
        if self.read_only {
            self.pair_halves(HEAD_OFFSET)
        } else {
            crate::ring::oldest(self)
        }
    }

    /// Reads the 16-byte pair at `offset` as two 8-byte atomic loads, never writing (a
    /// 16-byte atomic load may be implemented with a compare-and-swap, which faults on a
    /// `PROT_READ` mapping).
    ///
    /// `{ position, sequence }` of the tail and of the head change only together, by one
    /// 16-byte store or CAS, and the position strictly grows with every change. So if the
    /// position reads the same before and after the sequence, no change happened in
    /// between and the two halves belong to one value. A reader that keeps losing the race
    /// (a publisher claiming nonstop) gives up after a few rounds with a pair that may be
    /// one claim apart: a monitoring snapshot, not a protocol decision.
    fn pair_halves(&self, offset: usize) -> (u64, u64) {
        debug_assert!(offset % 16 == 0 && (offset as u64) + 16 <= HEADER_SIZE);
        // `Pair` packs the first word into the low 64 bits of the u128.
        let (first, second) = if cfg!(target_endian = "little") {
            (offset as u64, offset as u64 + 8)
        } else {
            (offset as u64 + 8, offset as u64)
        };
        let (first, second) = (self.word64(first), self.word64(second));
        let mut pair = (0, 0);
        for _ in 0..64 {
            // ORDERING: Acquire on each half: they pair with the Release (or SeqCst) 16-byte
            // stores and CASes of the producers; the re-read of the position detects a
            // change between the two halves (see above).
            let before = first.load(Ordering::Acquire);
            let seq = second.load(Ordering::Acquire);
            let after = first.load(Ordering::Acquire);
            pair = (after, seq);
            if before == after {
                break;
            }
            std::hint::spin_loop();
        }
        pair
    }

    /// msync of the whole mapping: makes everything written so far durable (disk buses).
    pub(crate) fn flush(&self) -> io::Result<()> {
        self._map.flush()
    }
}

impl Region for Segment {
    fn tail(&self) -> &Pair {
        // SAFETY: TAIL_OFFSET is 16-aligned inside the header page; the pair is only ever
        // accessed through `Pair`.
        unsafe { Pair::from_ptr(self.base.add(TAIL_OFFSET)) }
    }

    fn head(&self) -> &Pair {
        // SAFETY: as for `tail`.
        unsafe { Pair::from_ptr(self.base.add(HEAD_OFFSET)) }
    }

    #[inline]
    fn word(&self, offset: u64) -> &AtomicU64 {
        debug_assert!(offset % 8 == 0 && offset < self.config.capacity);
        // Callers pass positions masked into the data region and 8-aligned, for which this is
        // a no-op; for any other value it keeps the access inside the mapping (two
        // instructions where a release-mode assert cost four on every publish and receive).
        let offset = offset & self.word_mask;
        // SAFETY: `capacity` is a power of two (`Config::check`, at create and open) and
        // `word_mask` is `(capacity - 1) & !7`, so the masked offset is 8-aligned and at most `capacity - 8`: inside the data region.
        unsafe { &*(self.data.add(offset as usize) as *const AtomicU64) }
    }

    #[inline]
    unsafe fn write_bytes(&self, offset: u64, src: &[u8]) {
        debug_assert!(offset + src.len() as u64 <= self.config.capacity);
        // SAFETY: the caller guarantees the range is inside the data region and owned by its
        // claim; `src` is process memory, so the two cannot overlap.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.data_ptr(offset), src.len()) }
    }

    #[inline]
    unsafe fn read_bytes(&self, offset: u64, dst: &mut [u8]) {
        debug_assert!(offset + dst.len() as u64 <= self.config.capacity);
        // SAFETY: the caller guarantees the range is inside the data region; bytes are plain
        // `u8` (any value valid) and the caller validates the copy if writers may race it.
        unsafe { std::ptr::copy_nonoverlapping(self.data_ptr(offset), dst.as_mut_ptr(), dst.len()) }
    }
}

fn map(file: &File, config: Config, read_only: bool) -> Result<Segment, OpenErrorKind> {
    if !Pair::is_lock_free() {
        return Err(OpenErrorKind::Unsupported128BitAtomics);
    }
    let len = usize::try_from(config.file_size()).map_err(|_| OpenErrorKind::Io {
        op: "mmap",
        errno: libc::EFBIG,
    })?;
    let mut options = memmap2::MmapOptions::new();
    options.len(len);
    if !config.sparse && !read_only {
        // Map every page now (MAP_POPULATE): the blocks are reserved anyway, and the first
        // lap through the ring then pays no page faults on the publish and receive paths. A
        // sparse ring (larger than memory, on disk) is mapped lazily, and so is the ring of
        // a read-only open (`stat`, `ls`, `top`), which reads the header and slots only:
        // populating a large bus's ring there cost time and memory for nothing.
        options.populate();
    }
    let map = if read_only {
        options.map_raw_read_only(file)
    } else {
        options.map_raw(file)
    }
    .map_err(|e| OpenErrorKind::io("mmap", e))?;
    let base = map.as_mut_ptr();
    // SAFETY: data_offset < file_size == len, so the data pointer is inside the mapping.
    let data = unsafe { base.add(config.data_offset() as usize) };
    Ok(Segment {
        _map: map,
        base,
        data,
        word_mask: (config.capacity - 1) & !7,
        file: file.try_clone().map_err(|e| OpenErrorKind::io("dup", e))?,
        config,
        read_only,
    })
}

fn file_kind(mode: u32) -> FileKind {
    use rustix::fs::FileType;
    match FileType::from_raw_mode(mode as _) {
        FileType::Directory => FileKind::Directory,
        FileType::Fifo => FileKind::Fifo,
        FileType::Socket => FileKind::Socket,
        FileType::CharacterDevice => FileKind::CharDevice,
        FileType::BlockDevice => FileKind::BlockDevice,
        _ => FileKind::Other,
    }
}

/// Opens and validates an existing bus file.
pub(crate) fn open(path: &Path, flags: OpenFlags) -> Result<Segment, OpenErrorKind> {
    let mut custom = libc::O_NONBLOCK | libc::O_CLOEXEC;
    if !flags.follow_symlinks {
        custom |= libc::O_NOFOLLOW;
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(!flags.read_only)
        .custom_flags(custom)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::EACCES) | Some(libc::EPERM) => OpenErrorKind::PermissionDenied {
                need: if flags.read_only {
                    "read the bus file"
                } else {
                    "read and write the bus file"
                },
            },
            Some(libc::ENXIO) | Some(libc::EOPNOTSUPP) => OpenErrorKind::NotARegularFile {
                kind: FileKind::Socket,
            },
            _ => OpenErrorKind::io("open", e),
        })?;
    let meta = file.metadata().map_err(|e| OpenErrorKind::io("fstat", e))?;
    if !meta.file_type().is_file() {
        return Err(OpenErrorKind::NotARegularFile {
            kind: file_kind(meta.mode()),
        });
    }
    let user = rustix::process::geteuid().as_raw();
    if meta.uid() != user && !flags.allow_other_owner {
        return Err(OpenErrorKind::OwnedByOtherUser {
            owner: meta.uid(),
            user,
        });
    }
    let size = meta.len();
    let mut line0 = [0u8; CONFIG_BYTES];
    if size >= HEADER_SIZE {
        file.read_exact_at(&mut line0, 0)
            .map_err(|e| OpenErrorKind::io("read header", e))?;
    }
    let config = Config::decode(&line0, size).map_err(OpenErrorKind::Header)?;
    let seg = map(&file, config, flags.read_only)?;
    check_ring_state(&seg)?;
    Ok(seg)
}

/// The ring positions must describe a possible state: `initial <= head <= tail <=
/// head + capacity`, both 16-aligned.
fn check_ring_state(seg: &Segment) -> Result<(), OpenErrorKind> {
    // Never a 16-byte load on a read-only mapping (see `Segment::pair_halves`).
    let head = seg.head_snapshot();
    let tail = seg.tail_snapshot();
    let c = &seg.config;
    let ok = tail.0 <= crate::layout::MAX_POSITION
        && head.0 % RECORD_ALIGN == 0
        && tail.0 % RECORD_ALIGN == 0
        && head.0 >= c.initial_position
        && head.0 <= tail.0
        && tail.0 - head.0 <= c.capacity
        && head.1 <= tail.1
        && tail.1 - head.1 <= (tail.0 - head.0) / RECORD_ALIGN + 1;
    if ok {
        Ok(())
    } else {
        Err(OpenErrorKind::RingStateCorrupt {
            head: head.0,
            tail: tail.0,
        })
    }
}

/// What [`create`] does with a name that is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Existing {
    /// Fail with `AlreadyExists` (`linkat` never replaces).
    Keep,
    /// Replace it in one step (`renameat` of the finished file over it): the path is never
    /// missing, and whoever has the old file open keeps it.
    Replace,
}

/// Creates, initialises and links a new bus file at `path`.
pub(crate) fn create(
    path: &Path,
    config: Config,
    file_mode: u32,
    existing: Existing,
) -> Result<Segment, OpenErrorKind> {
    config.check().map_err(OpenErrorKind::InvalidOptions)?;
    crate::layout::check_file_mode(file_mode).map_err(OpenErrorKind::InvalidOptions)?;
    if !Pair::is_lock_free() {
        return Err(OpenErrorKind::Unsupported128BitAtomics);
    }
    let name = path.file_name().ok_or(OpenErrorKind::NotARegularFile {
        kind: FileKind::Directory,
    })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let dirfd = rustix::fs::open(
        dir,
        rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| match e {
        rustix::io::Errno::NOENT => OpenErrorKind::DirectoryNotFound,
        rustix::io::Errno::ACCESS => OpenErrorKind::PermissionDenied {
            need: "search the directory",
        },
        e => OpenErrorKind::io("open directory", e.into()),
    })?;
    let mode = rustix::fs::Mode::from_raw_mode(file_mode);
    let tmp = rustix::fs::openat(
        &dirfd,
        ".",
        rustix::fs::OFlags::TMPFILE | rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
        mode,
    );
    let dir_denied = OpenErrorKind::PermissionDenied {
        need: "create files in the directory",
    };
    let (fd, temp_name) = match tmp {
        Ok(fd) => (fd, None),
        Err(rustix::io::Errno::ACCESS) | Err(rustix::io::Errno::PERM) => return Err(dir_denied),
        Err(_) => {
            // No O_TMPFILE here: a hidden, uniquely named file, linked the same way.
            let temp = format!(
                ".{}.{}.{}.creating",
                name.to_string_lossy(),
                std::process::id(),
                now_unix_ns()
            );
            let fd = rustix::fs::openat(
                &dirfd,
                temp.as_str(),
                rustix::fs::OFlags::CREATE
                    | rustix::fs::OFlags::EXCL
                    | rustix::fs::OFlags::NOFOLLOW
                    | rustix::fs::OFlags::RDWR
                    | rustix::fs::OFlags::CLOEXEC,
                mode,
            )
            .map_err(|e| match e {
                rustix::io::Errno::ACCESS | rustix::io::Errno::PERM => dir_denied,
                e => OpenErrorKind::io("create", e.into()),
            })?;
            (fd, Some(temp))
        }
    };
    let file = File::from(fd);
    // Replacing: the finished file gets a hidden name of its own first (an O_TMPFILE has
    // none), which then is renamed over the target.
    let mut temp_name = temp_name;
    let result = initialise(&file, config).and_then(|seg| {
        let proc_path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&file));
        let linked = match (existing, &temp_name) {
            (Existing::Keep, None) => rustix::fs::linkat(
                rustix::fs::CWD,
                proc_path.as_str(),
                &dirfd,
                name,
                rustix::fs::AtFlags::SYMLINK_FOLLOW,
            ),
            (Existing::Keep, Some(temp)) => rustix::fs::linkat(
                &dirfd,
                temp.as_str(),
                &dirfd,
                name,
                rustix::fs::AtFlags::empty(),
            ),
            (Existing::Replace, _) => {
                if temp_name.is_none() {
                    let temp = format!(
                        ".{}.{}.{}.new",
                        name.to_string_lossy(),
                        std::process::id(),
                        now_unix_ns()
                    );
                    rustix::fs::linkat(
                        rustix::fs::CWD,
                        proc_path.as_str(),
                        &dirfd,
                        temp.as_str(),
                        rustix::fs::AtFlags::SYMLINK_FOLLOW,
                    )
                    .map_err(|e| match e {
                        rustix::io::Errno::ACCESS | rustix::io::Errno::PERM => dir_denied,
                        e => OpenErrorKind::io("link", e.into()),
                    })?;
                    temp_name = Some(temp);
                }
                let temp = temp_name.as_deref().unwrap_or_default();
                rustix::fs::renameat(&dirfd, temp, &dirfd, name)
            }
        };
        linked.map_err(|e| match e {
            rustix::io::Errno::EXIST => OpenErrorKind::AlreadyExists,
            rustix::io::Errno::ACCESS | rustix::io::Errno::PERM => {
                OpenErrorKind::PermissionDenied {
                    need: "create files in the directory",
                }
            }
            rustix::io::Errno::ISDIR => OpenErrorKind::NotARegularFile {
                kind: FileKind::Directory,
            },
            e => OpenErrorKind::io("link", e.into()),
        })?;
        Ok(seg)
    });
    // (After a rename the temporary name is gone: this finds nothing.)
    if let Some(temp) = temp_name {
        let _ = rustix::fs::unlinkat(&dirfd, temp.as_str(), rustix::fs::AtFlags::empty());
    }
    result
}

/// Reserves `size` bytes of `file` (fallocate) with every signal blocked: older kernels
/// abandon, and undo, a tmpfs fallocate when a signal is pending, so a process with a busy
/// timer (a profiler's SIGPROF) could never create a large bus. Signals that came meanwhile
/// are delivered when it returns (SIGKILL and SIGSTOP act as ever), so Ctrl-C waits for the
/// reservation, which takes about a second per few GiB on tmpfs.
///
/// One call, not chunks: tmpfs refuses a reservation larger than the whole file system at
/// once, where chunks would fill memory first (a 1 TiB ring on a 24 GiB /dev/shm got the
/// process killed by the OOM killer instead of a `NoSpace` error).
fn reserve(file: &File, size: u64) -> rustix::io::Result<()> {
    let mut all = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    let mut old = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigfillset initialises `all`; pthread_sigmask reads it and initialises `old`.
    let blocked = unsafe {
        libc::sigfillset(all.as_mut_ptr());
        libc::pthread_sigmask(libc::SIG_BLOCK, all.as_ptr(), old.as_mut_ptr()) == 0
    };
    let mut r = Err(rustix::io::Errno::INTR);
    for _ in 0..8 {
        r = rustix::fs::fallocate(file.as_fd(), rustix::fs::FallocateFlags::empty(), 0, size);
        if r != Err(rustix::io::Errno::INTR) {
            break;
        }
    }
    if blocked {
        // SAFETY: `old` was initialised by the successful call above.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, old.as_ptr(), std::ptr::null_mut()) };
    }
    r
}

/// Sizes the (still nameless) file, writes its header and ring state, and maps it.
fn initialise(file: &File, mut config: Config) -> Result<Segment, OpenErrorKind> {
    let size = config.file_size();
    if config.sparse {
        rustix::fs::ftruncate(file.as_fd(), size)
            .map_err(|e| OpenErrorKind::io("ftruncate", e.into()))?;
    } else {
        // Reserve every block now, so that a full tmpfs fails here and not with SIGBUS on
        // some later write through the mapping.
        match reserve(file, size) {
            Ok(()) => {}
            Err(rustix::io::Errno::NOSPC) | Err(rustix::io::Errno::FBIG) => {
                return Err(OpenErrorKind::NoSpace { needed: size })
            }
            Err(rustix::io::Errno::OPNOTSUPP) => {
                // A file system without fallocate (NFS before 4.2, some FUSE file systems):
                // size it, blocks are allocated on write, and say so in the header: the bus
                // is sparse, as `stat` then shows, not the reserved one it would claim to be.
                rustix::fs::ftruncate(file.as_fd(), size)
                    .map_err(|e| OpenErrorKind::io("ftruncate", e.into()))?;
                config.sparse = true;
            }
            Err(e) => return Err(OpenErrorKind::io("fallocate", e.into())),
        }
    }
    let mut line0 = config.encode();
    line0[INIT_STATE_OFFSET..INIT_STATE_OFFSET + 4]
        .copy_from_slice(&INIT_INITIALISING.to_ne_bytes());
    file.write_all_at(&line0, 0)
        .map_err(|e| OpenErrorKind::io("write header", e))?;
    let seg = map(file, config, false)?;
    let start = (config.initial_position, 0);
    // ORDERING: Relaxed: nobody else can see this file before it is linked; the Release
    // store of the init state below orders these for any later reader anyway.
    seg.tail().store(start, Ordering::Relaxed);
    seg.head().store(start, Ordering::Relaxed);
    // ORDERING: Release: "ready" is the last word written.
    seg.word32(INIT_STATE_OFFSET)
        .store(INIT_READY, Ordering::Release);
    Ok(seg)
}

/// Nanoseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}
