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

/// `shmbus_status_name` knows every value of `enum shmbus_status`, by the header's names.
#[test]
fn every_status_in_the_header_has_its_name() {
    let header =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("include/shmbus.h"))
            .expect("include/shmbus.h");
    let start = header
        .find("typedef enum shmbus_status {")
        .expect("the status enum");
    let end = start + header[start..].find("} shmbus_status;").expect("its end");
    let mut seen = 0;
    for line in header[start..end].lines() {
        let line = line.trim();
        let Some((name, value)) = line.trim_end_matches(',').split_once(" = ") else {
            continue;
        };
        let value: i32 = value.parse().expect("a numeric status value");
        // SAFETY: the function returns a static NUL-terminated string.
        let got = unsafe { std::ffi::CStr::from_ptr(shmbus::shmbus_status_name(value)) };
        assert_eq!(got.to_str().unwrap(), name, "shmbus_status_name({value})");
        seen += 1;
    }
    assert!(seen >= 30, "only {seen} statuses found in the header");
}
