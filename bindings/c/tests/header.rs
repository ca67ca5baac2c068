//! `include/shmbus.h` is what cbindgen makes of `src/` today.
//!
//! Regenerate it with `SHMBUS_BLESS=1 cargo test -p bus-c --test header`.

use std::path::Path;

#[test]
fn header_is_current() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_config(config)
        .with_src(dir.join("src/lib.rs"))
        .generate()
        .expect("cbindgen could not generate the header")
        .write(&mut generated);
    let path = dir.join("include/shmbus.h");
    if std::env::var_os("SHMBUS_BLESS").is_some() {
        std::fs::write(&path, &generated).expect("write include/shmbus.h");
        return;
    }
    let committed = std::fs::read(&path).unwrap_or_default();
    if committed != generated {
        let new = Path::new(env!("CARGO_TARGET_TMPDIR")).join("shmbus.h.new");
        let _ = std::fs::write(&new, &generated);
        panic!(
            "include/shmbus.h is not what cbindgen makes of src/ (the new one is in {}).\n\
             Regenerate it with:\n    SHMBUS_BLESS=1 cargo test -p bus-c --test header",
            new.display()
        );
    }
}
