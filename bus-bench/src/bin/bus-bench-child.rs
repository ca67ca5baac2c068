//! The benchmark child for bus-bench's own tests: the engine re-executes this binary.
//! (`shmbus` and the criterion benches serve the same purpose for their engines.)

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match bus_bench::child_main(&args) {
        Some(status) => std::process::exit(status),
        None => {
            eprintln!("usage: bus-bench-child {} SPEC", bus_bench::CHILD_ARG);
            std::process::exit(2)
        }
    }
}
