//! Compiling the C and C++ programs of this crate against the library cargo just built.
//!
//! `cargo test` builds the library (all its crate types: `libshmbus.so`, `libshmbus.a`)
//! into the `deps` directory that holds the test binary itself, so the programs link
//! exactly the build under test, whatever the profile or `CARGO_TARGET_DIR`.

#![allow(dead_code)] // each test file uses a part

use std::path::{Path, PathBuf};
use std::process::Command;

/// The crate's directory (`bindings/c`).
pub fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Where cargo put the library of this test build: beside the test binary.
pub fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe
        .parent()
        .expect("the test binary's directory")
        .to_path_buf();
    for lib in ["libshmbus.a", "libshmbus.so"] {
        assert!(
            dir.join(lib).exists(),
            "{lib} is not in {} (cargo builds it there for tests)",
            dir.display()
        );
    }
    dir
}

/// How a program links the library.
#[derive(Clone, Copy, Debug)]
pub enum Link {
    /// `libshmbus.a`, and the system libraries Rust's standard library needs.
    Static,
    /// `libshmbus.so`, found at run time through the rpath.
    Shared,
}

/// Compiles `sources` with `compiler` (`cc` or `c++`) and `-Wall -Wextra -Werror`, as
/// `std`, into `out`. Panics with the compiler's output on failure.
pub fn compile(compiler: &str, std: &str, sources: &[PathBuf], out: &Path, link: Link) {
    let lib = lib_dir();
    let mut cmd = Command::new(compiler);
    cmd.arg(format!("-std={std}"))
        .args([
            "-Wall",
            "-Wextra",
            "-Werror",
            "-pedantic",
            "-O1",
            "-g",
            "-pthread",
        ])
        .arg("-I")
        .arg(crate_dir().join("include"))
        .args(sources)
        .arg("-o")
        .arg(out);
    match link {
        Link::Static => {
            cmd.arg(lib.join("libshmbus.a"))
                .args(["-lpthread", "-ldl", "-lm"]);
        }
        Link::Shared => {
            cmd.arg("-L")
                .arg(&lib)
                .arg("-lshmbus")
                .arg(format!("-Wl,-rpath,{}", lib.display()));
        }
    }
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {compiler} (a C/C++ compiler is needed): {e}"));
    assert!(
        output.status.success(),
        "{compiler} failed on {sources:?}:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A C source of this crate.
pub fn source(rel: &str) -> PathBuf {
    crate_dir().join(rel)
}
