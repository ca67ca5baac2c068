//! Typed buses: the message type a bus carries, recorded in its header by the first typed
//! handle and checked by every later one at join time, before any message is decoded.
//!
//! A type is identified by its codec and a *fingerprint of its schema*: the serde data model
//! of the type as [`serde_reflection`] traces it (the containers reached from it, by their
//! serde names, with every field name, field order, field type, enum variant and variant
//! order), hashed. Renaming a field, reordering fields, changing a field's type, adding or
//! removing a variant, or renaming a struct (its serde name, `#[serde(rename)]` included)
//! changes the fingerprint; the module path, the Rust field visibility, derives other than
//! serde's and doc comments do not, so the same struct copied into two crates matches. A type
//! whose `Deserialize` cannot be traced without sample values (one that validates what it
//! reads, or uses `deserialize_any`: untagged enums, `serde_json::Value`) is recorded by its
//! Rust type name alone, and the record says so.
//!
//! Byte-level handles (`Publisher`, `Subscriber`, other languages' bindings, `shmbus pub`)
//! are always allowed: the type is a promise among typed handles.

use serde::de::DeserializeOwned;

use crate::layout::{TYPE_NAME_MAX, TYPE_WORDS};
use crate::lock::{LockError, LOCK_TIMEOUT};
use crate::sync::Ordering;
use crate::Shared;

const STATE_NONE: u64 = 0;
const STATE_WRITING: u64 = 1;
const STATE_SET: u64 = 2;
const FLAG_TRACED: u64 = 1;

/// The message type of a typed bus, as recorded in its header.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BusType {
    /// The Rust type name of the first typed handle (`std::any::type_name`, cut to 208
    /// bytes).
    pub name: String,
    /// The codec's name (`Codec::NAME`).
    pub codec: String,
    /// The schema fingerprint (see the module doc).
    pub fingerprint: u64,
    /// Whether the fingerprint covers the traced schema (`false`: the type name only).
    pub traced: bool,
}

impl BusType {
    /// The type's name without module paths, and the codec: `Quote/postcard`,
    /// `(String, f64)/postcard`, `Vec<Quote>/bincode`.
    pub fn short(&self) -> String {
        let mut out = String::new();
        let mut path = String::new();
        let flush = |path: &mut String, out: &mut String| {
            out.push_str(path.rsplit("::").next().unwrap_or(""));
            path.clear();
        };
        for c in self.name.chars() {
            if c.is_alphanumeric() || c == '_' || c == ':' {
                path.push(c);
            } else {
                flush(&mut path, &mut out);
                out.push(c);
            }
        }
        flush(&mut path, &mut out);
        format!("{out}/{}", self.codec)
    }
}

impl std::fmt::Display for BusType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}, schema {:016x}{})",
            self.name,
            self.codec,
            self.fingerprint,
            if self.traced { "" } else { ", by name only" }
        )
    }
}

/// A typed handle may not join this bus, or its type record cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TypeError {
    /// The bus carries another type (or the same type in another codec).
    #[error("the bus carries {bus}, not {ours}")]
    Mismatch {
        /// What the bus's header records.
        bus: Box<BusType>,
        /// What this handle would send or receive.
        ours: Box<BusType>,
    },
    /// The type record in the header breaks its checksum or its own rules (another process
    /// wrote into the header).
    #[error("the bus's type record is corrupt: {0}")]
    Corrupt(&'static str),
    /// The control lock, taken to record the type.
    #[error("{0}")]
    Lock(#[from] LockError),
}

/// FNV-1a 64.
fn fnv(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The type of `T` sent with codec `codec`.
pub(crate) fn type_of<T: DeserializeOwned>(codec: &str) -> BusType {
    let name = std::any::type_name::<T>();
    let traced = trace::<T>();
    let (fingerprint, traced) = match traced {
        // postcard of the serde-reflection formats: a canonical byte string of the schema
        // (the registry is a BTreeMap, so containers come in name order).
        Some(schema) => match postcard::to_stdvec(&schema) {
            Ok(bytes) => (fnv(bytes), true),
            Err(_) => (fnv(name.bytes()), false),
        },
        None => (fnv(name.bytes()), false),
    };
    BusType {
        name: cut(name, TYPE_NAME_MAX).to_string(),
        codec: cut(codec, 16).to_string(),
        fingerprint,
        traced,
    }
}

/// The serde data model of `T`: its root format and every container reached from it.
///
/// serde-reflection explores the variants of the root enum by itself; an enum nested inside
/// is left marked incomplete after one variant, and the registry names it. So: trace, learn
/// the names of the incomplete enums, and trace again with a fresh tracer, clearing their
/// marks after each pass so that the next pass explores their next variant.
fn trace<T: DeserializeOwned>() -> Option<(serde_reflection::Format, serde_reflection::Registry)> {
    use serde_reflection::{Error, Tracer, TracerConfig};
    let mut nested: Vec<String> = Vec::new();
    for _ in 0..16 {
        let mut tracer = Tracer::new(TracerConfig::default());
        let mut root = None;
        for _ in 0..1024 {
            root = Some(tracer.trace_simple_type::<T>().ok()?.0);
            let mut more = false;
            for name in &nested {
                more |= tracer.check_incomplete_enum(name).is_some();
            }
            if !more {
                break;
            }
        }
        match tracer.registry() {
            Ok(registry) => return Some((root?, registry)),
            Err(Error::MissingVariants(names)) => {
                if names.iter().all(|n| nested.contains(n)) {
                    return None;
                }
                nested.extend(names);
            }
            Err(_) => return None,
        }
    }
    None
}

/// `s` cut to at most `max` bytes, at a character boundary.
fn cut(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn pack(t: &BusType) -> [u64; TYPE_WORDS] {
    let mut w = [0u64; TYPE_WORDS];
    w[0] = STATE_SET | (if t.traced { FLAG_TRACED } else { 0 } << 32);
    w[1] = t.fingerprint;
    let mut codec = [0u8; 16];
    codec[..t.codec.len()].copy_from_slice(t.codec.as_bytes());
    w[2] = u64::from_le_bytes(codec[..8].try_into().expect("8 bytes"));
    w[3] = u64::from_le_bytes(codec[8..].try_into().expect("8 bytes"));
    w[4] = t.name.len() as u64;
    let mut name = [0u8; TYPE_NAME_MAX];
    name[..t.name.len()].copy_from_slice(t.name.as_bytes());
    for (i, chunk) in name.chunks(8).enumerate() {
        w[5 + i] = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
    }
    w[TYPE_WORDS - 1] = checksum(&w);
    w
}

fn checksum(w: &[u64; TYPE_WORDS]) -> u64 {
    fnv(w[..TYPE_WORDS - 1].iter().flat_map(|x| x.to_le_bytes()))
}

fn unpack(w: &[u64; TYPE_WORDS]) -> Result<BusType, TypeError> {
    if checksum(w) != w[TYPE_WORDS - 1] {
        return Err(TypeError::Corrupt("checksum mismatch"));
    }
    let bytes = |words: &[u64]| -> Vec<u8> { words.iter().flat_map(|x| x.to_le_bytes()).collect() };
    let codec = bytes(&w[2..4]);
    let codec_len = codec.iter().position(|&b| b == 0).unwrap_or(16);
    let codec = std::str::from_utf8(&codec[..codec_len])
        .map_err(|_| TypeError::Corrupt("codec name is not UTF-8"))?;
    let len = usize::try_from(w[4])
        .ok()
        .filter(|&l| l <= TYPE_NAME_MAX)
        .ok_or(TypeError::Corrupt("type name longer than the record"))?;
    let name = bytes(&w[5..TYPE_WORDS - 1]);
    let name = std::str::from_utf8(&name[..len])
        .map_err(|_| TypeError::Corrupt("type name is not UTF-8"))?;
    Ok(BusType {
        name: name.to_string(),
        codec: codec.to_string(),
        fingerprint: w[1],
        traced: (w[0] >> 32) & FLAG_TRACED != 0,
    })
}

/// The type recorded in `shared`'s header, if any.
pub(crate) fn read(shared: &Shared) -> Result<Option<BusType>, TypeError> {
    let seg = &shared.seg;
    // ORDERING: Acquire: pairs with the Release store of the state that publishes the record.
    let state = seg.type_word(0).load(Ordering::Acquire);
    match state & 0xffff_ffff {
        STATE_NONE | STATE_WRITING => return Ok(None),
        STATE_SET => {}
        _ => return Err(TypeError::Corrupt("unknown state")),
    }
    let mut w = [0u64; TYPE_WORDS];
    for (i, x) in w.iter_mut().enumerate() {
        // ORDERING: Relaxed: written before the Release store of the state we acquired, and
        // never again (the record is set once).
        *x = seg.type_word(i).load(Ordering::Relaxed);
    }
    unpack(&w).map(Some)
}

/// Records `ours` as the bus's type if it has none, or checks it against the recorded one.
pub(crate) fn claim(shared: &Shared, ours: &BusType) -> Result<(), TypeError> {
    let seg = &shared.seg;
    // Fast path: already set (no lock needed to compare).
    if let Some(bus) = read(shared)? {
        return check(bus, ours);
    }
    let _guard = shared.lock.lock(seg, LOCK_TIMEOUT)?;
    // Under the lock: set by another joiner meanwhile, or half-written by one that died
    // holding the lock (state WRITING: ours to write again).
    if let Some(bus) = read(shared)? {
        return check(bus, ours);
    }
    let w = pack(ours);
    // ORDERING: Relaxed: only under the control lock; the Release store of the state below
    // publishes the record to lock-free readers.
    seg.type_word(0).store(STATE_WRITING, Ordering::Relaxed);
    for (i, &x) in w.iter().enumerate().skip(1) {
        // ORDERING: as above.
        seg.type_word(i).store(x, Ordering::Relaxed);
    }
    // ORDERING: Release: publishes the words above with the state.
    seg.type_word(0).store(w[0], Ordering::Release);
    Ok(())
}

fn check(bus: BusType, ours: &BusType) -> Result<(), TypeError> {
    if bus.codec == ours.codec && bus.fingerprint == ours.fingerprint && bus.traced == ours.traced {
        Ok(())
    } else {
        Err(TypeError::Mismatch {
            bus: Box::new(bus),
            ours: Box::new(ours.clone()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_packs_and_unpacks_and_any_flipped_bit_is_caught() {
        let t = BusType {
            name: "my::Quote".into(),
            codec: "postcard".into(),
            fingerprint: 0x1234_5678_9abc_def0,
            traced: true,
        };
        let w = pack(&t);
        assert_eq!(unpack(&w).unwrap(), t);
        for word in 0..TYPE_WORDS {
            for bit in [0, 7, 33, 63] {
                let mut bad = w;
                bad[word] ^= 1 << bit;
                assert!(unpack(&bad).is_err(), "word {word} bit {bit}");
            }
        }
    }

    #[test]
    fn names_are_cut_at_character_boundaries() {
        let long = "é".repeat(200);
        let c = cut(&long, TYPE_NAME_MAX);
        assert!(c.len() <= TYPE_NAME_MAX && c.len() % 2 == 0);
    }
}
