//! `cargo bench`: time per message of the cross-process runs of the benchmark engine, for
//! regression tracking with criterion. (The full comparison table is `shmbus bench`.)
//!
//! The engine re-executes this binary for the sender and receiver processes, so `main`
//! first checks whether it is one of them.

use std::time::Duration;

use bus_bench::{transport, Engine, Transport};
use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};

fn engine() -> Engine {
    let exe = std::env::current_exe().expect("this executable");
    let dir = if std::path::Path::new("/dev/shm").is_dir() {
        std::path::PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    Engine::new(exe, dir)
}

fn one_way(c: &mut Criterion) {
    let engine = engine();
    let mut group = c.benchmark_group("one-way");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    let transports: [&dyn Transport; 5] = [
        &transport::Shmbus::SPIN,
        &transport::Shmbus::BLOCK,
        &transport::Stream::PIPE,
        &transport::Stream::UNIX,
        &transport::Seqpacket,
    ];
    for size in [64usize, 64 << 10] {
        group.throughput(Throughput::Bytes(size as u64));
        for t in transports {
            group.bench_with_input(BenchmarkId::new(t.name(), size), &size, |b, &size| {
                b.iter_custom(|iters| {
                    // Whole processes per call: measure at least a few thousand messages and
                    // scale the measured time to the iterations asked for.
                    let n = iters.max(5000);
                    let r = engine
                        .throughput(t, size, n, 1, None, &mut |_| {})
                        .expect("benchmark run");
                    Duration::from_secs_f64(r.secs * iters as f64 / n as f64)
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, one_way);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(status) = bus_bench::child_main(&args) {
        std::process::exit(status);
    }
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
}
