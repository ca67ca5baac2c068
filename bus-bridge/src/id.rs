//! Identities: of a bus file (stable for the file's life) and of this host.
//!
//! The bus header has no id of its own, and the bridge must not change the file format. What
//! never changes after creation is the creation time (ns) in the header and the file's
//! device and inode; with the machine id, they name one bus file on one machine. The record
//! key is a secret and is not used. A copy of the file (another inode) is another bus, and a
//! bus re-created at the same path (another creation time) too, so a bridge never resumes a
//! new bus from an old one's position.

use std::os::unix::fs::MetadataExt;

use bus_core::Bus;

/// FNV-1a, 64 bits: a stable hash with no dependency (ids are not secrets).
pub fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        // A separator, so that ("ab", "c") and ("a", "bc") differ.
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// `/etc/machine-id`, else the host name.
fn machine_id() -> String {
    std::fs::read_to_string("/etc/machine-id")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(host_name)
}

/// The kernel's host name.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// The id of a bus file: 64 bits, never 0 (0 marks "no origin" in the import journal).
///
/// # Errors
///
/// The file could not be stat'ed.
pub fn bus_id(bus: &Bus) -> std::io::Result<u64> {
    let meta = std::fs::metadata(bus.path())?;
    let id = fnv1a(&[
        machine_id().as_bytes(),
        &meta.dev().to_le_bytes(),
        &meta.ino().to_le_bytes(),
        &bus.config().created_unix_ns.to_le_bytes(),
    ]);
    Ok(id.max(1))
}

/// How an id is written in headers and message ids.
pub fn hex(id: u64) -> String {
    format!("{id:016x}")
}

/// Parses [`hex`].
pub fn parse_hex(s: &str) -> Option<u64> {
    if s.len() != 16 {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

/// Longest consumer name [`consumer_name`] gives.
pub const MAX_CONSUMER_NAME: usize = 128;

/// The durable consumer name for `parts` (bridge name, bus, subject): [`sanitize`]d, and
/// when that is longer than [`MAX_CONSUMER_NAME`], its first bytes and a hash of the whole,
/// so that it stays unique and stable across restarts. (Names that fit are unchanged from
/// earlier versions, so existing consumers are found again.)
pub fn consumer_name(full: &str) -> String {
    let name = sanitize(full);
    if name.len() <= MAX_CONSUMER_NAME {
        return name;
    }
    let keep = MAX_CONSUMER_NAME - 17;
    format!("{}-{}", &name[..keep], hex(fnv1a(&[full.as_bytes()])))
}

/// A name safe in a consumer name or a file name: other bytes become '_'.
pub fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_names_are_bounded_unique_and_stable() {
        // Short names are what earlier versions made (their consumers are found again).
        assert_eq!(consumer_name("shmbus-h-bus-a.b"), "shmbus-h-bus-a_b");
        let long = |subject: &str| consumer_name(&format!("shmbus-h-bus-{subject}"));
        let a = long(&"a.".repeat(300));
        let b = long(&format!("{}b", "a.".repeat(300)));
        assert_eq!(a.len(), MAX_CONSUMER_NAME);
        assert_eq!(b.len(), MAX_CONSUMER_NAME);
        assert_ne!(a, b, "names differing only past the cut stay distinct");
        assert_eq!(a, long(&"a.".repeat(300)), "stable");
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        // Non-ASCII input: sanitized to one byte a character, so the cut is on a boundary.
        let c = long(&"é".repeat(300));
        assert_eq!(c.len(), MAX_CONSUMER_NAME);
    }
}
