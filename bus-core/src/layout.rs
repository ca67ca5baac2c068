//! Every offset, size, magic, version and flag of the bus file, and validation of a header.
//!
//! This is the only module that knows byte offsets. Everything else asks it.
//!
//! ```text
//!  0            4096                     data_offset                     data_offset + capacity
//!  +------------+------------------------+-----------------------------------------------+
//!  | header     | slot table             | data region: `capacity` bytes used as a ring   |
//!  | (1 page)   | subscribers, producers |  of 16-byte aligned records                    |
//!  +------------+------------------------+-----------------------------------------------+
//! ```
//!
//! The header page, one 128-byte line per concern (128 rather than 64 because adjacent-line
//! prefetchers pull cache lines in pairs):
//!
//! ```text
//!  line  offset  contents                                   written by
//!  0     0       identity and configuration (below)          creator, once
//!  1     128     tail  { position: u64, sequence: u64 }      producers (16-byte CAS)
//!  2     256     head  { position: u64, sequence: u64 }      producers (16-byte CAS)
//!  3     384     notify: u32, readers_waiting: u32           futex for readers
//!  4     512     space: u32, producers_waiting: u32          futex for blocked producers
//!  5     640     control: dirty u32, holder pid u32,         control-lock holders
//!                unblocked u64, evicted u64
//!  6-7   768     the message type (below), 32 words           first typed handle, once,
//!                                                             under the control lock
//! ```
//!
//! The type record (format 3), 32 little-endian u64 words, all zero on a bus no typed handle
//! has joined:
//!
//! ```text
//!  word 0      state (low 32 bits: 0 none, 1 being written, 2 set) | flags (high 32: bit 0,
//!              the fingerprint covers the traced schema; 0, only the type's name)
//!  word 1      schema fingerprint
//!  words 2-3   codec name, 16 bytes, NUL-padded ("postcard", "bincode")
//!  word 4      type name length in bytes (at most 208)
//!  words 5-30  type name, UTF-8, NUL-padded
//!  word 31     FNV-1a 64 of words 0..31 (state read as 2)
//! ```
//!
//! Line 0, as a 32-bit ruler:
//!
//! ```text
//!   0 +--------------------------------+--------------------------------+
//!     | magic "SHMBUS\x1a\n"                                            |
//!   8 +--------------------------------+--------------------------------+
//!     | format version                 | byte-order mark 0x01020304     |
//!  16 +--------------------------------+--------------------------------+
//!     | init state 0/1/2               | mode 1 reliable / 2 lossy      |
//!  24 +--------------------------------+--------------------------------+
//!     | capacity (bytes, power of two)                                  |
//!  32 +--------------------------------+--------------------------------+
//!     | max message (bytes)            | max subscribers                |
//!  40 +--------------------------------+--------------------------------+
//!     | max producers                  | flags (bit 0: sparse)          |
//!  48 +--------------------------------+--------------------------------+
//!     | slot table offset                                               |
//!  56 +-----------------------------------------------------------------+
//!     | data region offset                                              |
//!  64 +-----------------------------------------------------------------+
//!     | file size                                                       |
//!  72 +-----------------------------------------------------------------+
//!     | created (ns since the Unix epoch)                               |
//!  80 +-----------------------------------------------------------------+
//!     | unblock timeout (ns)                                            |
//!  88 +-----------------------------------------------------------------+
//!     | initial position                                                |
//!  96 +--------------------------------+--------------------------------+
//!     | word size (8)                  | record alignment (16)          |
//! 104 +--------------------------------+--------------------------------+
//!     | slot size (128)                | reserved (0)                   |
//! 112 +--------------------------------+--------------------------------+
//!     | record key: 64 random bits drawn at creation (see "records")   |
//! 120 +-----------------------------------------------------------------+
//!     | checksum: FNV-1a 64 of bytes 0..120, init state read as 0       |
//! 128 +-----------------------------------------------------------------+
//! ```
//!
//! A record in the data region (16-byte header, payload 16-byte aligned):
//!
//! ```text
//!   0 +-----------------------------------------------------------------+
//!     | word0: { sequence: 60 bits, state: 4 bits }   (the commit word)  |
//!   8 +--------------------------------+--------------------------------+
//!     | word1 low: `low` (by state:    | word1 high: check =            |
//!     |   length, units or count)      |   keyed(key, position, word0,  |
//!     |                                |         low)                   |
//!  16 +--------------------------------+--------------------------------+
//!     | payload ...                                                     |
//! ```
//!
//! | state | word1 low | extent | sequences it consumes |
//! |---|---|---|---|
//! | DATA (2) | payload length | `record_extent(len)` | 1 |
//! | ABANDONED (4) | payload length | `record_extent(len)` | 1 |
//! | WRAP (3) | extent in 16-byte units, reaching the end of the region exactly | units x 16 | 0 |
//! | GAP (6) | count of sequences | 16 | count |
//! | FILL (5) | extent in 16-byte units, not past the end of the region | units x 16 | 0 |
//!
//! # Only what this bus's protocol wrote is a header
//!
//! A reader looks at bytes that an earlier lap left, and a payload may hold any bytes,
//! including headers in this very format (a publisher relays data it does not choose). Two
//! rules make sure no such bytes are taken for a record a producer has not written:
//!
//! 1. **Readers never interpret bytes at or beyond a tail they have observed** (`ring`):
//!    everything ahead of the tail is an earlier lap's. What remains is the window between a
//!    claim (which moves the tail) and its commit (which writes the header), where the
//!    record's header words still hold an earlier lap's bytes.
//! 2. **The check is keyed** with a 64-bit secret drawn from the operating system when the bus
//!    is created ([`record_check`]): it binds the position, the sequence, the state and the
//!    `low` word, so an earlier lap's real header (another position), a header whose word0
//!    and word1 come from different writes (another state or length), and any bytes written
//!    without the key fail it. Bytes crafted without the key pass with probability 2^-32,
//!    only in that window and only at the one position where they sit. The key is in the
//!    file (mode 0600 by default): a process that can read it can also write the ring, which
//!    no format can defend against.

// Under loom only the ring is built; most of the file format is unused there.
#![cfg_attr(loom, allow(dead_code))]

use std::fmt;

/// Bytes at offset 0 of every bus file.
pub const MAGIC: [u8; 8] = *b"SHMBUS\x1a\n";
/// Format version; any change of this layout bumps it and `open` refuses a mismatch.
///
/// 2: the keyed record check (record key at offset 112), GAP and FILL records.
/// 3: the message type record (lines 6-7), which typed handles check at join time.
pub const FORMAT_VERSION: u32 = 3;
/// Written in native order; reads back differently on a machine of the other byte order.
pub const BYTE_ORDER_MARK: u32 = 0x0102_0304;
/// Size of the header page.
pub const HEADER_SIZE: u64 = 4096;
/// The unit of isolation between hot words (two 64-byte lines, see the module doc).
pub const LINE: usize = 128;

// ---- line 0: identity and configuration -------------------------------------------------

pub(crate) const MAGIC_OFFSET: usize = 0;
pub(crate) const VERSION_OFFSET: usize = MAGIC_OFFSET + 8;
pub(crate) const BYTE_ORDER_OFFSET: usize = VERSION_OFFSET + 4;
/// 0 empty, 1 initialising, 2 ready. The only word of line 0 that is not covered by the
/// checksum.
pub(crate) const INIT_STATE_OFFSET: usize = BYTE_ORDER_OFFSET + 4;
pub(crate) const MODE_OFFSET: usize = INIT_STATE_OFFSET + 4;
pub(crate) const CAPACITY_OFFSET: usize = MODE_OFFSET + 4;
pub(crate) const MAX_MESSAGE_OFFSET: usize = CAPACITY_OFFSET + 8;
pub(crate) const MAX_SUBSCRIBERS_OFFSET: usize = MAX_MESSAGE_OFFSET + 4;
pub(crate) const MAX_PRODUCERS_OFFSET: usize = MAX_SUBSCRIBERS_OFFSET + 4;
pub(crate) const FLAGS_OFFSET: usize = MAX_PRODUCERS_OFFSET + 4;
pub(crate) const SLOTS_OFFSET_OFFSET: usize = FLAGS_OFFSET + 4;
pub(crate) const DATA_OFFSET_OFFSET: usize = SLOTS_OFFSET_OFFSET + 8;
pub(crate) const FILE_SIZE_OFFSET: usize = DATA_OFFSET_OFFSET + 8;
pub(crate) const CREATED_OFFSET: usize = FILE_SIZE_OFFSET + 8;
pub(crate) const UNBLOCK_TIMEOUT_OFFSET: usize = CREATED_OFFSET + 8;
pub(crate) const INITIAL_POSITION_OFFSET: usize = UNBLOCK_TIMEOUT_OFFSET + 8;
pub(crate) const WORD_SIZE_OFFSET: usize = INITIAL_POSITION_OFFSET + 8;
pub(crate) const RECORD_ALIGN_OFFSET: usize = WORD_SIZE_OFFSET + 4;
pub(crate) const SLOT_SIZE_OFFSET: usize = RECORD_ALIGN_OFFSET + 4;
/// The record key (see the module doc); 4 reserved bytes precede it.
pub(crate) const RECORD_KEY_OFFSET: usize = SLOT_SIZE_OFFSET + 8;
pub(crate) const CHECKSUM_OFFSET: usize = RECORD_KEY_OFFSET + 8;
/// Bytes of line 0 that `decode` reads.
pub(crate) const CONFIG_BYTES: usize = CHECKSUM_OFFSET + 8;

const _: () = assert!(SLOT_SIZE_OFFSET + 4 <= RECORD_KEY_OFFSET && RECORD_KEY_OFFSET % 8 == 0);
const _: () = assert!(RECORD_KEY_OFFSET == 112 && CHECKSUM_OFFSET == 120);
const _: () = assert!(CONFIG_BYTES == LINE);
const _: () = assert!(CAPACITY_OFFSET % 8 == 0 && SLOTS_OFFSET_OFFSET % 8 == 0);
const _: () = assert!(INITIAL_POSITION_OFFSET % 8 == 0 && CREATED_OFFSET % 8 == 0);

// ---- lines 1-5: hot words ---------------------------------------------------------------

/// `{ position, sequence }` of the next claim. Only producers write it (16-byte CAS).
pub(crate) const TAIL_OFFSET: usize = LINE;
/// `{ position, sequence }` of the oldest retained record. Producers move it forward before
/// they claim bytes it covered, so `tail.position - head.position <= capacity` always.
pub(crate) const HEAD_OFFSET: usize = TAIL_OFFSET + LINE;
/// Futex word that producers bump to wake sleeping readers.
pub(crate) const NOTIFY_OFFSET: usize = HEAD_OFFSET + LINE;
/// Number of readers inside the sleep protocol; producers make the wake syscall only if > 0.
pub(crate) const READERS_WAITING_OFFSET: usize = NOTIFY_OFFSET + 4;
/// Futex word that subscribers bump to wake producers waiting for space (reliable mode).
pub(crate) const SPACE_OFFSET: usize = NOTIFY_OFFSET + LINE;
/// Number of producers inside the sleep protocol.
pub(crate) const PRODUCERS_WAITING_OFFSET: usize = SPACE_OFFSET + 4;
/// Control line. The byte range `[CONTROL_OFFSET, CONTROL_OFFSET + 1)` of the *file* is the
/// open-file-description lock that is the control lock (see `lock`).
pub(crate) const CONTROL_OFFSET: usize = SPACE_OFFSET + LINE;
/// 1 while a control-lock holder is inside its critical section; a locker that finds 1 knows
/// the previous holder died there and repairs.
pub(crate) const CONTROL_DIRTY_OFFSET: usize = CONTROL_OFFSET;
/// Pid of the current control-lock holder (informational, for `stat`).
pub(crate) const CONTROL_HOLDER_OFFSET: usize = CONTROL_DIRTY_OFFSET + 4;
/// Records turned into padding because their producer died (bus-wide counter).
pub(crate) const UNBLOCKED_OFFSET: usize = CONTROL_HOLDER_OFFSET + 4;
/// Slots reclaimed from dead participants (bus-wide counter).
pub(crate) const EVICTED_OFFSET: usize = UNBLOCKED_OFFSET + 8;

/// The message type record: [`TYPE_WORDS`] words (see the module doc).
pub(crate) const TYPE_OFFSET: usize = CONTROL_OFFSET + LINE;
/// Words in the type record.
pub(crate) const TYPE_WORDS: usize = 32;
/// Longest type name the record holds, in bytes.
pub const TYPE_NAME_MAX: usize = 26 * 8;

const _: () = assert!(TYPE_OFFSET + TYPE_WORDS * 8 <= HEADER_SIZE as usize);
const _: () = assert!(TAIL_OFFSET % 16 == 0 && HEAD_OFFSET % 16 == 0);
const _: () = assert!(TAIL_OFFSET / LINE != HEAD_OFFSET / LINE);
const _: () = assert!(EVICTED_OFFSET + 8 <= CONTROL_OFFSET + LINE);
const _: () = assert!(CONTROL_OFFSET + LINE <= HEADER_SIZE as usize);

// ---- the slot table ---------------------------------------------------------------------

/// One slot per participant, each on its own line.
pub const SLOT_SIZE: usize = LINE;

/// Slot state: nobody.
pub(crate) const SLOT_FREE: u32 = 0;
/// Slot state: owned by a live (or not yet evicted) participant.
pub(crate) const SLOT_ACTIVE: u32 = 1;

/// Both kinds of slot: `SLOT_FREE` or `SLOT_ACTIVE`.
pub(crate) const SLOT_STATE: usize = 0;
/// Both kinds of slot: pid of the owner (informational; liveness is the OFD lock).
pub(crate) const SLOT_PID: usize = 4;
/// Both kinds: when the owner joined, ns since the Unix epoch.
pub(crate) const SLOT_JOINED: usize = 8;

/// Both kinds: 1 while the owner is counted in a waiting count (`READERS_WAITING_OFFSET`
/// or `PRODUCERS_WAITING_OFFSET`), so that evicting a participant that died asleep can
/// give its count back. Set after the increment, cleared before the decrement.
pub(crate) const SLOT_SLEEPING: usize = 56;

/// Subscriber: published read position, a record boundary; producers never claim beyond
/// it plus the capacity (reliable mode). Only increases while the slot is active.
pub(crate) const SUB_POSITION: usize = 16;
/// Subscriber: the sequence expected at `SUB_POSITION` (for lag in messages).
pub(crate) const SUB_SEQ: usize = 24;
/// Subscriber: messages delivered.
pub(crate) const SUB_DELIVERED: usize = 32;
/// Subscriber: messages lost (lossy mode, and records repaired after a producer died).
pub(crate) const SUB_LOST: usize = 40;
/// Subscriber: records skipped because their producer died (unblocked).
pub(crate) const SUB_UNBLOCKED: usize = 48;

/// Producer: 0 when idle, else 1 + the sequence this producer is claiming. Set before the
/// claim CAS and cleared once the record is committed or abandoned (or the ring was full), so
/// that a repairer knows which producers may own a stuck record.
pub(crate) const PROD_CLAIMING: usize = 16;
/// Producer: messages committed.
pub(crate) const PROD_SENT: usize = 24;
/// Producer: payload bytes committed.
pub(crate) const PROD_BYTES: usize = 32;
/// Producer: loans abandoned (dropped without commit).
pub(crate) const PROD_ABANDONED: usize = 40;

const _: () = assert!(SUB_UNBLOCKED + 8 <= SLOT_SLEEPING && PROD_ABANDONED + 8 <= SLOT_SLEEPING);
const _: () = assert!(SLOT_SLEEPING + 4 <= SLOT_SIZE);
const _: () = assert!(SUB_POSITION % 8 == 0 && PROD_CLAIMING % 8 == 0 && SLOT_JOINED % 8 == 0);

// ---- records ----------------------------------------------------------------------------

/// Bytes of a record header; payloads start 16-byte aligned.
pub const RECORD_HEADER: u64 = 16;
/// Alignment of every record.
pub const RECORD_ALIGN: u64 = 16;

/// Record state (low 4 bits of word0): never written (a fresh, zeroed file).
pub const STATE_EMPTY: u64 = 0;
/// Committed message.
pub const STATE_DATA: u64 = 2;
/// Padding to the end of the region before a record that would straddle it; carries the
/// sequence of the record that follows and consumes none.
pub const STATE_WRAP: u64 = 3;
/// A loan dropped without commit; consumes its sequence, delivered to nobody.
pub const STATE_ABANDONED: u64 = 4;
/// Padding after a GAP, up to the end of the repaired region (or of the ring, or of what
/// one header can describe); consumes no sequence. Carries the sequence that follows the
/// GAP. word1 low: extent in 16-byte units.
pub const STATE_FILL: u64 = 5;
/// The first 16 bytes of a region of claims whose producers died before writing their
/// headers: consumes `count` sequences (word1 low), and FILL records cover the rest.
pub const STATE_GAP: u64 = 6;
/// A repairer has taken a claim that had no header and is writing its GAP; readers wait.
/// (Taking word0 first, by CAS, before touching word1 means a commit racing the repair
/// either wins outright or finds word0 taken; the two never mix their words.)
pub const STATE_REPAIRING: u64 = 7;

const STATE_BITS: u32 = 4;
const STATE_MASK: u64 = (1 << STATE_BITS) - 1;
/// Sequences are 60 bits wide in a record header (2^60 messages: centuries at 10^8/s).
pub const SEQ_MASK: u64 = (1 << (64 - STATE_BITS)) - 1;

/// word0 of a record: `{ sequence, state }`.
#[inline]
pub fn pack_word0(seq: u64, state: u64) -> u64 {
    debug_assert!(state <= STATE_MASK);
    ((seq & SEQ_MASK) << STATE_BITS) | state
}

/// Splits word0 into `{ sequence, state }`.
#[inline]
pub(crate) fn unpack_word0(w: u64) -> (u64, u64) {
    (w >> STATE_BITS, w & STATE_MASK)
}

/// The 64-bit secret of a bus, drawn from the operating system at creation and kept at
/// header offset 112 (`RECORD_KEY_OFFSET`); it keys every record's check (module doc). Its
/// `Debug` output does not show it.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct RecordKey(pub u64);

impl fmt::Debug for RecordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RecordKey(..)")
    }
}

impl RecordKey {
    /// A fresh key from the operating system's random source (getrandom(2)). Should that
    /// fail (a kernel before 3.17, a seccomp filter), the clock, the pid and an address are
    /// mixed instead: unpredictable enough to tell laps and payloads apart, if not secret.
    pub(crate) fn generate() -> RecordKey {
        let mut b = [0u8; 8];
        let mut filled = 0;
        while filled < b.len() {
            match rustix::rand::getrandom(&mut b[filled..], rustix::rand::GetRandomFlags::empty()) {
                Ok(n) => filled += n,
                Err(rustix::io::Errno::INTR) => {}
                Err(_) => break,
            }
        }
        let mut k = u64::from_ne_bytes(b);
        if filled < b.len() {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            k ^= mix64(t ^ mix64(std::process::id() as u64 ^ (&b as *const _ as u64)));
        }
        RecordKey(k)
    }
}

/// A bijective 64-bit finaliser (splitmix64's).
#[inline]
fn mix64(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The 32-bit check of a record header: keyed with the bus's [`RecordKey`], it binds the
/// record's absolute `position`, its whole `word0` (sequence and state) and the `low` half of
/// word1 (length, units or count).
///
/// With `y = (((position ^ key) * K1) ^ word0) * K2 ^ low`: `hi32((y ^ (y >> 32)) * K3)`, with
/// odd constants `K1..K3`.
///
/// For a key unknown to whoever wrote some bytes, the check of any header they could write is
/// uniformly distributed: the key enters through `position ^ key` and a multiplication by an
/// odd constant (a bijection), and every later step is a bijection in the running value and
/// in each of the other inputs (xor, multiplication by an odd constant, xor-shift). The high
/// half of a product depends on every bit of its operand, and the xor-shift brings the high
/// bits down first, so a difference in any input reaches the 32 bits kept. So a header not
/// written with the key passes with probability 2^-32, and a header of one
/// `{ position, word0, low }` does not pass for another except by that chance.
/// Three multiplications: it runs once per message on each side (see docs/benchmarks.md,
/// instruction counts).
#[inline]
pub fn record_check(key: RecordKey, position: u64, word0: u64, low: u32) -> u32 {
    let x = (position ^ key.0).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ word0;
    let x = x.wrapping_mul(0xD6E8_FEB8_6659_FD93) ^ low as u64;
    // Fold the high half in, so that the key's high bits reach every bit of the result.
    ((x ^ (x >> 32)).wrapping_mul(0xBF58_476D_1CE4_E5B9) >> 32) as u32
}

/// word1 of a record: `{ low, check }`.
#[inline]
pub fn pack_word1(low: u32, check: u32) -> u64 {
    (low as u64) | ((check as u64) << 32)
}

/// The complete header `(word0, word1)` of a record of `state` with `low` at `position`.
#[inline]
pub fn header(key: RecordKey, position: u64, seq: u64, state: u64, low: u32) -> (u64, u64) {
    let w0 = pack_word0(seq, state);
    (w0, pack_word1(low, record_check(key, position, w0, low)))
}

/// Splits word1 into `{ low, high }`.
#[inline]
pub(crate) fn unpack_word1(w: u64) -> (u32, u32) {
    (w as u32, (w >> 32) as u32)
}

/// Bytes a record with a payload of `len` bytes occupies in the ring.
#[inline]
pub const fn record_extent(len: u64) -> u64 {
    (RECORD_HEADER + len + RECORD_ALIGN - 1) & !(RECORD_ALIGN - 1)
}

// ---- limits -----------------------------------------------------------------------------

/// Smallest ring.
pub const MIN_CAPACITY: u64 = 4096;
/// Largest ring (1 TiB; rings beyond memory belong on disk, as sparse files).
pub const MAX_CAPACITY: u64 = 1 << 40;
/// Most subscriber (or producer) slots.
pub const MAX_SLOTS: u32 = 4096;
/// Largest absolute position a bus may reach (2^62 bytes: centuries at any speed). Keeps
/// every `position + length` of the protocol far from overflow, whatever a header says.
pub const MAX_POSITION: u64 = 1 << 62;
/// Shortest unblock timeout (1 ms): readers sleep in slices of a quarter of it.
pub const MIN_UNBLOCK_TIMEOUT_NS: u64 = 1_000_000;
/// Longest unblock timeout a header may carry (one hour).
pub const MAX_UNBLOCK_TIMEOUT_NS: u64 = 3_600_000_000_000;

/// Flag: the file's blocks were not reserved at creation.
pub(crate) const FLAG_SPARSE: u32 = 1;
const KNOWN_FLAGS: u32 = FLAG_SPARSE;

/// Init state: the creator is still writing the header.
pub(crate) const INIT_INITIALISING: u32 = 1;
/// Init state: the header is complete.
pub(crate) const INIT_READY: u32 = 2;

/// What happens when the ring is full.
///
/// Chosen when the bus is created and stored in its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Producers never overwrite a record that a live subscriber has not read: a full ring
    /// makes `send` wait (or `try_send` return `Full`).
    Reliable,
    /// Producers never wait: a subscriber that falls a whole ring behind is lapped, skips to
    /// the oldest retained record and is told exactly how many messages it lost.
    Lossy,
}

impl Mode {
    fn to_raw(self) -> u32 {
        match self {
            Mode::Reliable => 1,
            Mode::Lossy => 2,
        }
    }

    fn from_raw(raw: u32) -> Option<Mode> {
        match raw {
            1 => Some(Mode::Reliable),
            2 => Some(Mode::Lossy),
            _ => None,
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Reliable => "reliable",
            Mode::Lossy => "lossy",
        })
    }
}

/// The parameters of a bus, as stored in line 0 of its header.
///
/// Decoded once at open and kept in process memory: later writes to the header by another
/// process cannot change what this process believes the capacity is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Delivery mode.
    pub mode: Mode,
    /// Bytes of the data region, a power of two.
    pub capacity: u64,
    /// Largest payload.
    pub max_message: u32,
    /// Subscriber slots.
    pub max_subscribers: u32,
    /// Producer slots.
    pub max_producers: u32,
    /// Whether the file's blocks were left unreserved.
    pub sparse: bool,
    /// Creation time, ns since the Unix epoch.
    pub created_unix_ns: u64,
    /// How long a record may stay claimed by a dead producer before readers repair it.
    pub unblock_timeout_ns: u64,
    /// Absolute position of the first record ever written (a multiple of 16).
    pub initial_position: u64,
    /// The key of every record's check (drawn at creation; not shown by `Debug`).
    pub record_key: RecordKey,
}

/// A parameter of a bus that is out of range, from [`crate::BusOptions`] or from a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The capacity must be a power of two. Round it to one.
    #[error("capacity {capacity} is not a power of two")]
    CapacityNotPowerOfTwo {
        /// The value given.
        capacity: u64,
    },
    /// The capacity is below [`MIN_CAPACITY`] or above [`MAX_CAPACITY`].
    #[error("capacity {capacity} is out of range ({MIN_CAPACITY}..={MAX_CAPACITY})")]
    CapacityOutOfRange {
        /// The value given.
        capacity: u64,
    },
    /// A message of the maximum size must fit in half the ring (so that a record and the
    /// padding before it always fit), and the maximum must be at least 1.
    #[error("max message {max_message} is out of range (1..={limit} for this capacity)")]
    MaxMessageOutOfRange {
        /// The value given.
        max_message: u64,
        /// The largest allowed for this capacity.
        limit: u64,
    },
    /// Subscriber slots must be 1..=[`MAX_SLOTS`].
    #[error("max subscribers {found} is out of range (1..={MAX_SLOTS})")]
    SubscribersOutOfRange {
        /// The value given.
        found: u32,
    },
    /// Producer slots must be 1..=[`MAX_SLOTS`].
    #[error("max producers {found} is out of range (1..={MAX_SLOTS})")]
    ProducersOutOfRange {
        /// The value given.
        found: u32,
    },
    /// The unblock timeout must be at least a millisecond and at most an hour.
    #[error("unblock timeout {found_ns} ns is out of range (1 ms..=1 h)")]
    UnblockTimeoutOutOfRange {
        /// The value given, in nanoseconds.
        found_ns: u64,
    },
    /// The initial position must be a multiple of the record alignment (16).
    #[error("initial position {position} is not a multiple of {RECORD_ALIGN}")]
    InitialPositionUnaligned {
        /// The value given.
        position: u64,
    },
    /// The initial position must stay well below 2^64 ([`MAX_POSITION`]).
    #[error("initial position {position} is above {MAX_POSITION}")]
    InitialPositionTooLarge {
        /// The value given.
        position: u64,
    },
    /// A bus file's mode is permission bits only (at most 0o777): no set-user-id,
    /// set-group-id or sticky bit on a data file, and nothing silently masked off.
    #[error("file mode {mode:#o} is not permission bits (at most 0o777)")]
    FileModeOutOfRange {
        /// The value given.
        mode: u32,
    },
}

/// Checks a bus file's mode ([`ConfigError::FileModeOutOfRange`]).
pub fn check_file_mode(mode: u32) -> Result<(), ConfigError> {
    if mode & !0o777 != 0 {
        return Err(ConfigError::FileModeOutOfRange { mode });
    }
    Ok(())
}

/// Largest max-message for a capacity: a record of that size fits in half the ring.
pub const fn max_message_limit(capacity: u64) -> u64 {
    let limit = capacity / 2 - RECORD_HEADER;
    if limit > u32::MAX as u64 - RECORD_ALIGN {
        u32::MAX as u64 - RECORD_ALIGN
    } else {
        limit
    }
}

impl Config {
    /// Checks every parameter; the same rules apply at creation and at open.
    ///
    /// # Errors
    ///
    /// The first parameter found out of range.
    pub fn check(&self) -> Result<(), ConfigError> {
        let capacity = self.capacity;
        if !capacity.is_power_of_two() {
            return Err(ConfigError::CapacityNotPowerOfTwo { capacity });
        }
        if !(MIN_CAPACITY..=MAX_CAPACITY).contains(&capacity) {
            return Err(ConfigError::CapacityOutOfRange { capacity });
        }
        let limit = max_message_limit(capacity);
        if self.max_message == 0 || self.max_message as u64 > limit {
            return Err(ConfigError::MaxMessageOutOfRange {
                max_message: self.max_message as u64,
                limit,
            });
        }
        if !(1..=MAX_SLOTS).contains(&self.max_subscribers) {
            return Err(ConfigError::SubscribersOutOfRange {
                found: self.max_subscribers,
            });
        }
        if !(1..=MAX_SLOTS).contains(&self.max_producers) {
            return Err(ConfigError::ProducersOutOfRange {
                found: self.max_producers,
            });
        }
        if !(MIN_UNBLOCK_TIMEOUT_NS..=MAX_UNBLOCK_TIMEOUT_NS).contains(&self.unblock_timeout_ns) {
            return Err(ConfigError::UnblockTimeoutOutOfRange {
                found_ns: self.unblock_timeout_ns,
            });
        }
        if self.initial_position % RECORD_ALIGN != 0 {
            return Err(ConfigError::InitialPositionUnaligned {
                position: self.initial_position,
            });
        }
        if self.initial_position > MAX_POSITION {
            return Err(ConfigError::InitialPositionTooLarge {
                position: self.initial_position,
            });
        }
        Ok(())
    }

    /// Offset of the slot table in the file.
    pub fn slots_offset(&self) -> u64 {
        HEADER_SIZE
    }

    /// Offset of subscriber slot `i`.
    pub(crate) fn subscriber_slot_offset(&self, i: u32) -> u64 {
        debug_assert!(i < self.max_subscribers);
        self.slots_offset() + i as u64 * SLOT_SIZE as u64
    }

    /// Offset of producer slot `i` (after all subscriber slots).
    pub(crate) fn producer_slot_offset(&self, i: u32) -> u64 {
        debug_assert!(i < self.max_producers);
        self.slots_offset() + (self.max_subscribers as u64 + i as u64) * SLOT_SIZE as u64
    }

    /// The bytes of subscriber slot `i` in the file (`None` past the last slot). They are also
    /// the range of its owner's liveness lock, an OFD write lock (see `registry`), which the
    /// kernel lists in `/proc/PID/fdinfo`: tools tell from it which process owns a slot, in
    /// any PID namespace.
    pub fn subscriber_slot_range(&self, i: u32) -> Option<std::ops::Range<u64>> {
        (i < self.max_subscribers).then(|| {
            let start = self.subscriber_slot_offset(i);
            start..start + SLOT_SIZE as u64
        })
    }

    /// The bytes of producer slot `i`, the range of its owner's liveness lock (as
    /// [`Config::subscriber_slot_range`]); `None` past the last slot.
    pub fn producer_slot_range(&self, i: u32) -> Option<std::ops::Range<u64>> {
        (i < self.max_producers).then(|| {
            let start = self.producer_slot_offset(i);
            start..start + SLOT_SIZE as u64
        })
    }

    /// Offset of the data region: after the slot table, page aligned.
    pub fn data_offset(&self) -> u64 {
        let slots = (self.max_subscribers as u64 + self.max_producers as u64) * SLOT_SIZE as u64;
        (self.slots_offset() + slots).next_multiple_of(HEADER_SIZE)
    }

    /// Size of the whole file.
    pub fn file_size(&self) -> u64 {
        self.data_offset() + self.capacity
    }

    /// Line 0 of a header holding this configuration, init state `INIT_READY`.
    pub(crate) fn encode(&self) -> [u8; CONFIG_BYTES] {
        let mut b = [0u8; CONFIG_BYTES];
        b[MAGIC_OFFSET..MAGIC_OFFSET + 8].copy_from_slice(&MAGIC);
        put_u32(&mut b, VERSION_OFFSET, FORMAT_VERSION);
        put_u32(&mut b, BYTE_ORDER_OFFSET, BYTE_ORDER_MARK);
        put_u32(&mut b, INIT_STATE_OFFSET, INIT_READY);
        put_u32(&mut b, MODE_OFFSET, self.mode.to_raw());
        put_u64(&mut b, CAPACITY_OFFSET, self.capacity);
        put_u32(&mut b, MAX_MESSAGE_OFFSET, self.max_message);
        put_u32(&mut b, MAX_SUBSCRIBERS_OFFSET, self.max_subscribers);
        put_u32(&mut b, MAX_PRODUCERS_OFFSET, self.max_producers);
        put_u32(
            &mut b,
            FLAGS_OFFSET,
            if self.sparse { FLAG_SPARSE } else { 0 },
        );
        put_u64(&mut b, SLOTS_OFFSET_OFFSET, self.slots_offset());
        put_u64(&mut b, DATA_OFFSET_OFFSET, self.data_offset());
        put_u64(&mut b, FILE_SIZE_OFFSET, self.file_size());
        put_u64(&mut b, CREATED_OFFSET, self.created_unix_ns);
        put_u64(&mut b, UNBLOCK_TIMEOUT_OFFSET, self.unblock_timeout_ns);
        put_u64(&mut b, INITIAL_POSITION_OFFSET, self.initial_position);
        put_u32(&mut b, WORD_SIZE_OFFSET, usize::BITS / 8);
        put_u32(&mut b, RECORD_ALIGN_OFFSET, RECORD_ALIGN as u32);
        put_u32(&mut b, SLOT_SIZE_OFFSET, SLOT_SIZE as u32);
        put_u64(&mut b, RECORD_KEY_OFFSET, self.record_key.0);
        let sum = checksum(&b);
        put_u64(&mut b, CHECKSUM_OFFSET, sum);
        b
    }

    /// Validates line 0 of a header read from a file of `file_len` bytes.
    ///
    /// Every field that can be checked on its own is checked first, so that a corrupted
    /// field is named; the checksum last catches what no rule can (a changed creation time).
    ///
    /// # Errors
    ///
    /// The first problem found; see [`HeaderError`].
    pub fn decode(b: &[u8; CONFIG_BYTES], file_len: u64) -> Result<Config, HeaderError> {
        if file_len < HEADER_SIZE {
            return Err(HeaderError::FileTooSmall {
                size: file_len,
                minimum: HEADER_SIZE,
            });
        }
        let mut magic = [0u8; 8];
        magic.copy_from_slice(&b[MAGIC_OFFSET..MAGIC_OFFSET + 8]);
        if magic != MAGIC {
            return Err(HeaderError::BadMagic { found: magic });
        }
        let bom = get_u32(b, BYTE_ORDER_OFFSET);
        if bom != BYTE_ORDER_MARK {
            return Err(HeaderError::ForeignByteOrder { found: bom });
        }
        let version = get_u32(b, VERSION_OFFSET);
        if version != FORMAT_VERSION {
            return Err(HeaderError::UnsupportedVersion {
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        let word = get_u32(b, WORD_SIZE_OFFSET);
        if word != usize::BITS / 8 {
            return Err(HeaderError::ForeignWordSize { found: word });
        }
        for (field, offset, expected) in [
            ("record alignment", RECORD_ALIGN_OFFSET, RECORD_ALIGN as u32),
            ("slot size", SLOT_SIZE_OFFSET, SLOT_SIZE as u32),
        ] {
            let found = get_u32(b, offset);
            if found != expected {
                return Err(HeaderError::LayoutMismatch {
                    field,
                    found: found as u64,
                    expected: expected as u64,
                });
            }
        }
        let state = get_u32(b, INIT_STATE_OFFSET);
        if state != INIT_READY {
            return Err(HeaderError::NotReady { state });
        }
        let raw_mode = get_u32(b, MODE_OFFSET);
        let mode = Mode::from_raw(raw_mode).ok_or(HeaderError::UnknownMode { found: raw_mode })?;
        let flags = get_u32(b, FLAGS_OFFSET);
        if flags & !KNOWN_FLAGS != 0 {
            return Err(HeaderError::UnknownFlags { found: flags });
        }
        let config = Config {
            mode,
            capacity: get_u64(b, CAPACITY_OFFSET),
            max_message: get_u32(b, MAX_MESSAGE_OFFSET),
            max_subscribers: get_u32(b, MAX_SUBSCRIBERS_OFFSET),
            max_producers: get_u32(b, MAX_PRODUCERS_OFFSET),
            sparse: flags & FLAG_SPARSE != 0,
            created_unix_ns: get_u64(b, CREATED_OFFSET),
            unblock_timeout_ns: get_u64(b, UNBLOCK_TIMEOUT_OFFSET),
            initial_position: get_u64(b, INITIAL_POSITION_OFFSET),
            record_key: RecordKey(get_u64(b, RECORD_KEY_OFFSET)),
        };
        config.check().map_err(HeaderError::Config)?;
        for (field, offset, expected) in [
            (
                "slot table offset",
                SLOTS_OFFSET_OFFSET,
                config.slots_offset(),
            ),
            ("data offset", DATA_OFFSET_OFFSET, config.data_offset()),
            ("file size", FILE_SIZE_OFFSET, config.file_size()),
        ] {
            let found = get_u64(b, offset);
            if found != expected {
                return Err(HeaderError::LayoutMismatch {
                    field,
                    found,
                    expected,
                });
            }
        }
        if file_len != config.file_size() {
            return Err(HeaderError::SizeMismatch {
                header: config.file_size(),
                actual: file_len,
            });
        }
        let stored = get_u64(b, CHECKSUM_OFFSET);
        let computed = checksum(b);
        if stored != computed {
            return Err(HeaderError::ChecksumMismatch { stored, computed });
        }
        Ok(config)
    }
}

/// Why a file is not a valid bus header. Returned (inside [`crate::OpenError`]) by
/// [`crate::Bus::open`] and [`crate::Bus::open_or_create`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// The file is shorter than a header page: truncated, or not a bus.
    #[error(
        "file is {size} bytes, smaller than a bus header ({minimum} bytes): truncated or not a bus"
    )]
    FileTooSmall {
        /// Actual size.
        size: u64,
        /// Smallest possible bus file.
        minimum: u64,
    },
    /// The first 8 bytes are not the bus magic: this is not a bus file.
    #[error("not a bus file (magic {found:02x?})")]
    BadMagic {
        /// The first 8 bytes.
        found: [u8; 8],
    },
    /// Written by a version of shmbus with another file format.
    #[error("format version {found} is not supported (this build reads version {supported})")]
    UnsupportedVersion {
        /// Version in the file.
        found: u32,
        /// Version this build reads.
        supported: u32,
    },
    /// Written on a machine of the other byte order.
    #[error(
        "byte-order mark {found:#010x}: the bus was written on a machine of another byte order"
    )]
    ForeignByteOrder {
        /// The mark as read here.
        found: u32,
    },
    /// Written by a build with another word size.
    #[error("word size {found}: the bus was written by a build with another word size")]
    ForeignWordSize {
        /// Word size in the file.
        found: u32,
    },
    /// The creator never finished writing the header.
    #[error("header is not ready (init state {state}): its creator did not finish")]
    NotReady {
        /// The init state found.
        state: u32,
    },
    /// The delivery mode field holds no known mode.
    #[error("unknown delivery mode {found}")]
    UnknownMode {
        /// The raw value.
        found: u32,
    },
    /// The flags field has bits this build does not know.
    #[error("unknown flags {found:#x}")]
    UnknownFlags {
        /// The raw value.
        found: u32,
    },
    /// A parameter is out of range.
    #[error("{0}")]
    Config(ConfigError),
    /// A derived field disagrees with the parameters it derives from.
    #[error("{field} is {found}, but the parameters give {expected}")]
    LayoutMismatch {
        /// Which field.
        field: &'static str,
        /// Value in the file.
        found: u64,
        /// Value derived from the parameters.
        expected: u64,
    },
    /// The file's size disagrees with its header: truncated or extended since creation.
    #[error(
        "file is {actual} bytes but its header describes {header} bytes: truncated or extended"
    )]
    SizeMismatch {
        /// Size the header describes.
        header: u64,
        /// Size of the file.
        actual: u64,
    },
    /// Every field looks plausible but the checksum disagrees: a field was changed.
    #[error("header checksum mismatch (stored {stored:#018x}, computed {computed:#018x}): the header was modified")]
    ChecksumMismatch {
        /// Checksum in the file.
        stored: u64,
        /// Checksum of the fields.
        computed: u64,
    },
}

/// FNV-1a 64 over line 0 with the init state word read as zero and the checksum excluded.
fn checksum(b: &[u8; CONFIG_BYTES]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, &byte) in b[..CHECKSUM_OFFSET].iter().enumerate() {
        let byte = if (INIT_STATE_OFFSET..INIT_STATE_OFFSET + 4).contains(&i) {
            0
        } else {
            byte
        };
        h ^= byte as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn put_u32(b: &mut [u8], offset: usize, v: u32) {
    b[offset..offset + 4].copy_from_slice(&v.to_ne_bytes());
}

fn put_u64(b: &mut [u8], offset: usize, v: u64) {
    b[offset..offset + 8].copy_from_slice(&v.to_ne_bytes());
}

fn get_u32(b: &[u8], offset: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[offset..offset + 4]);
    u32::from_ne_bytes(a)
}

fn get_u64(b: &[u8], offset: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[offset..offset + 8]);
    u64::from_ne_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config {
            mode: Mode::Reliable,
            capacity: 1 << 16,
            max_message: 1024,
            max_subscribers: 8,
            max_producers: 4,
            sparse: false,
            created_unix_ns: 1_700_000_000_000_000_000,
            unblock_timeout_ns: 200_000_000,
            initial_position: 0,
            record_key: RecordKey(0x0123_4567_89ab_cdef),
        }
    }

    fn decode(b: &[u8; CONFIG_BYTES]) -> Result<Config, HeaderError> {
        Config::decode(b, config().file_size())
    }

    /// Re-encodes with a valid checksum after `edit`, so that the field check (not the
    /// checksum) is what fails.
    fn edited(edit: impl FnOnce(&mut [u8; CONFIG_BYTES])) -> [u8; CONFIG_BYTES] {
        let mut b = config().encode();
        edit(&mut b);
        let sum = checksum(&b);
        put_u64(&mut b, CHECKSUM_OFFSET, sum);
        b
    }

    #[test]
    fn round_trip() {
        let c = config();
        assert_eq!(decode(&c.encode()), Ok(c));
        let lossy = Config {
            mode: Mode::Lossy,
            sparse: true,
            initial_position: 1 << 20,
            ..c
        };
        assert_eq!(
            Config::decode(&lossy.encode(), lossy.file_size()),
            Ok(lossy)
        );
    }

    #[test]
    fn every_bad_header_has_its_own_error() {
        let c = config();
        let good = c.encode();
        assert_eq!(
            Config::decode(&good, 100),
            Err(HeaderError::FileTooSmall {
                size: 100,
                minimum: HEADER_SIZE
            })
        );
        let b = edited(|b| b[0] = b'X');
        assert!(matches!(decode(&b), Err(HeaderError::BadMagic { .. })));
        let b = edited(|b| put_u32(b, BYTE_ORDER_OFFSET, BYTE_ORDER_MARK.swap_bytes()));
        assert!(matches!(
            decode(&b),
            Err(HeaderError::ForeignByteOrder { .. })
        ));
        let b = edited(|b| put_u32(b, VERSION_OFFSET, FORMAT_VERSION + 1));
        assert_eq!(
            decode(&b),
            Err(HeaderError::UnsupportedVersion {
                found: FORMAT_VERSION + 1,
                supported: FORMAT_VERSION
            })
        );
        let b = edited(|b| put_u32(b, WORD_SIZE_OFFSET, 4));
        assert_eq!(decode(&b), Err(HeaderError::ForeignWordSize { found: 4 }));
        let b = edited(|b| put_u32(b, RECORD_ALIGN_OFFSET, 8));
        assert!(matches!(
            decode(&b),
            Err(HeaderError::LayoutMismatch {
                field: "record alignment",
                ..
            })
        ));
        let b = edited(|b| put_u32(b, INIT_STATE_OFFSET, INIT_INITIALISING));
        assert_eq!(decode(&b), Err(HeaderError::NotReady { state: 1 }));
        let b = edited(|b| put_u32(b, MODE_OFFSET, 7));
        assert_eq!(decode(&b), Err(HeaderError::UnknownMode { found: 7 }));
        let b = edited(|b| put_u32(b, FLAGS_OFFSET, 0x80));
        assert_eq!(decode(&b), Err(HeaderError::UnknownFlags { found: 0x80 }));
        let b = edited(|b| put_u64(b, CAPACITY_OFFSET, 3 << 14));
        assert_eq!(
            decode(&b),
            Err(HeaderError::Config(ConfigError::CapacityNotPowerOfTwo {
                capacity: 3 << 14
            }))
        );
        let b = edited(|b| put_u64(b, CAPACITY_OFFSET, 1024));
        assert_eq!(
            decode(&b),
            Err(HeaderError::Config(ConfigError::CapacityOutOfRange {
                capacity: 1024
            }))
        );
        let b = edited(|b| put_u32(b, MAX_MESSAGE_OFFSET, 1 << 20));
        assert!(matches!(
            decode(&b),
            Err(HeaderError::Config(
                ConfigError::MaxMessageOutOfRange { .. }
            ))
        ));
        let b = edited(|b| put_u32(b, MAX_SUBSCRIBERS_OFFSET, 0));
        assert_eq!(
            decode(&b),
            Err(HeaderError::Config(ConfigError::SubscribersOutOfRange {
                found: 0
            }))
        );
        let b = edited(|b| put_u32(b, MAX_PRODUCERS_OFFSET, MAX_SLOTS + 1));
        assert!(matches!(
            decode(&b),
            Err(HeaderError::Config(ConfigError::ProducersOutOfRange { .. }))
        ));
        let b = edited(|b| put_u64(b, UNBLOCK_TIMEOUT_OFFSET, 0));
        assert!(matches!(
            decode(&b),
            Err(HeaderError::Config(
                ConfigError::UnblockTimeoutOutOfRange { .. }
            ))
        ));
        let b = edited(|b| put_u64(b, INITIAL_POSITION_OFFSET, 8));
        assert!(matches!(
            decode(&b),
            Err(HeaderError::Config(
                ConfigError::InitialPositionUnaligned { .. }
            ))
        ));
        let b = edited(|b| put_u64(b, DATA_OFFSET_OFFSET, 0));
        assert!(matches!(
            decode(&b),
            Err(HeaderError::LayoutMismatch {
                field: "data offset",
                ..
            })
        ));
        assert_eq!(
            Config::decode(&good, c.file_size() - 4096),
            Err(HeaderError::SizeMismatch {
                header: c.file_size(),
                actual: c.file_size() - 4096
            })
        );
        // A field no rule can judge: only the checksum notices.
        let mut b = good;
        put_u64(&mut b, CREATED_OFFSET, 5);
        assert!(matches!(
            decode(&b),
            Err(HeaderError::ChecksumMismatch { .. })
        ));
    }

    #[test]
    fn every_single_byte_corruption_is_detected() {
        let good = config().encode();
        for i in 0..CONFIG_BYTES {
            if (INIT_STATE_OFFSET..INIT_STATE_OFFSET + 4).contains(&i) {
                continue;
            }
            for flip in [0x01u8, 0x80, 0xff] {
                let mut b = good;
                b[i] ^= flip;
                assert!(decode(&b).is_err(), "byte {i} ^ {flip:#x} went unnoticed");
            }
        }
    }

    #[test]
    fn record_words() {
        let w = pack_word0(SEQ_MASK, STATE_GAP);
        assert_eq!(unpack_word0(w), (SEQ_MASK, STATE_GAP));
        assert_eq!(
            unpack_word0(pack_word0(SEQ_MASK + 5, STATE_DATA)),
            (4, STATE_DATA)
        );
        assert_eq!(unpack_word1(pack_word1(7, 0xdead_beef)), (7, 0xdead_beef));
        assert_eq!(record_extent(0), 16);
        assert_eq!(record_extent(1), 32);
        assert_eq!(record_extent(16), 32);
        assert_eq!(record_extent(17), 48);
        // The check differs between laps of the same index, between sequences, states,
        // lengths and keys.
        let k = RecordKey(0x5eed);
        let w = pack_word0(9, STATE_DATA);
        assert_ne!(
            record_check(k, 4096, w, 5),
            record_check(k, 4096 + (1 << 36), w, 5)
        );
        assert_ne!(
            record_check(k, 4096, w, 5),
            record_check(k, 4096, pack_word0(10, STATE_DATA), 5)
        );
        assert_ne!(
            record_check(k, 4096, w, 5),
            record_check(k, 4096, pack_word0(9, STATE_ABANDONED), 5)
        );
        assert_ne!(record_check(k, 4096, w, 5), record_check(k, 4096, w, 6));
        assert_ne!(
            record_check(k, 4096, w, 5),
            record_check(RecordKey(0x5eee), 4096, w, 5)
        );
    }

    /// For a fixed record, the check over many keys looks uniform: every bit is set about half
    /// the time (a key-independent bit would let bytes written without the key pass more often
    /// than 2^-32).
    #[test]
    fn the_check_depends_on_every_bit_of_the_key() {
        let w = pack_word0(77, STATE_DATA);
        let mut ones = [0u32; 32];
        let n = 4096u64;
        for i in 0..n {
            let c = record_check(RecordKey(mix64(i)), 1 << 20, w, 100);
            for (b, one) in ones.iter_mut().enumerate() {
                *one += (c >> b) & 1;
            }
        }
        for (b, &one) in ones.iter().enumerate() {
            assert!(
                (1800..=2300).contains(&one),
                "bit {b} set {one} times of {n}"
            );
        }
        // And one bit of the key changes about half the check's bits.
        for bit in 0..64 {
            let a = record_check(RecordKey(0xfeed), 1 << 20, w, 100);
            let b = record_check(RecordKey(0xfeed ^ (1 << bit)), 1 << 20, w, 100);
            assert!((a ^ b).count_ones() >= 4, "key bit {bit}: {a:08x} {b:08x}");
        }
    }

    #[test]
    fn offsets_fit_the_file() {
        let c = config();
        assert_eq!(c.slots_offset(), HEADER_SIZE);
        assert_eq!(c.data_offset() % HEADER_SIZE, 0);
        assert!(c.producer_slot_offset(c.max_producers - 1) + SLOT_SIZE as u64 <= c.data_offset());
        assert_eq!(c.file_size(), c.data_offset() + c.capacity);
        assert_eq!(max_message_limit(1 << 40), u32::MAX as u64 - RECORD_ALIGN);
    }

    #[test]
    fn slot_ranges_are_the_slots_and_none_past_the_last() {
        let c = config();
        let s = c.subscriber_slot_range(1).unwrap();
        assert_eq!(s, c.subscriber_slot_offset(1)..c.subscriber_slot_offset(2));
        let last = c.subscriber_slot_range(c.max_subscribers - 1).unwrap();
        assert_eq!(c.producer_slot_range(0).unwrap().start, last.end);
        assert_eq!(c.subscriber_slot_range(c.max_subscribers), None);
        assert_eq!(c.producer_slot_range(c.max_producers), None);
        assert_eq!(c.producer_slot_range(u32::MAX), None);
    }
}
