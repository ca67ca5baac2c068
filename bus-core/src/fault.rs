//! Fault points for the crash tests: places where a test can make this process die (or stop)
//! at an exact instruction of the protocol.
//!
//! Compiled to nothing unless the `fault-injection` feature is on (the workspace's tests turn
//! it on through `testkit`; release builds of the library and the CLI never have it). With
//! the feature, `SHMBUS_FAULT=POINT:ACTION[:N]` in the environment makes the N-th hit (default
//! the first) of `POINT` in this process do `ACTION`:
//!
//! | POINT | where |
//! |---|---|
//! | `after-claim` | a producer has moved the tail, nothing of its record is written |
//! | `mid-copy` | half of the payload is in the ring |
//! | `before-commit` | the payload is complete, the header is not written |
//! | `in-control-lock` | the control lock is held and marked dirty |
//! | `mid-repair` | a repairer has taken a dead claim's header (REPAIRING) and not written the GAP |
//!
//! ACTION is `kill` (SIGKILL: the process dies on the spot) or `stop` (SIGSTOP: alive, frozen).

/// A place in the protocol where a test may kill or stop the process.
#[cfg_attr(loom, allow(dead_code))] // loom builds only the ring
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Point {
    AfterClaim,
    MidCopy,
    BeforeCommit,
    InControlLock,
    MidRepair,
}

/// Called at each fault point; does nothing without the feature.
#[inline(always)]
pub(crate) fn hit(point: Point) {
    #[cfg(all(feature = "fault-injection", not(loom)))]
    imp::hit(point);
    #[cfg(not(all(feature = "fault-injection", not(loom))))]
    let _ = point;
}

#[cfg(all(feature = "fault-injection", not(loom)))]
mod imp {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;

    use super::Point;

    struct Fault {
        point: Point,
        signal: rustix::process::Signal,
        nth: u64,
    }

    fn parse(spec: &str) -> Option<Fault> {
        let mut parts = spec.split(':');
        let point = match parts.next()? {
            "after-claim" => Point::AfterClaim,
            "mid-copy" => Point::MidCopy,
            "before-commit" => Point::BeforeCommit,
            "in-control-lock" => Point::InControlLock,
            "mid-repair" => Point::MidRepair,
            _ => return None,
        };
        let signal = match parts.next()? {
            "kill" => rustix::process::Signal::KILL,
            "stop" => rustix::process::Signal::STOP,
            _ => return None,
        };
        let nth = parts.next().map_or(Some(1), |n| n.parse().ok())?;
        Some(Fault { point, signal, nth })
    }

    static FAULT: OnceLock<Option<Fault>> = OnceLock::new();
    static HITS: AtomicU64 = AtomicU64::new(0);

    pub(super) fn hit(point: Point) {
        let fault =
            FAULT.get_or_init(|| std::env::var("SHMBUS_FAULT").ok().and_then(|s| parse(&s)));
        if let Some(f) = fault {
            if f.point == point && HITS.fetch_add(1, Ordering::Relaxed) + 1 == f.nth {
                let me = rustix::process::getpid();
                // KILL ends us here; STOP returns once someone sends CONT.
                let _ = rustix::process::kill_process(me, f.signal);
            }
        }
    }
}
