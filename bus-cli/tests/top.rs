//! `shmbus top` in a real pseudo-terminal (issue 12): what is on the screen, that rates move,
//! that the arrow keys move the selection, and that the terminal is given back (canonical
//! mode and echo on, the main screen, the cursor shown) after `q`, Ctrl-C, SIGTERM and a
//! panic. The pty is libc's (posix_openpt); the vt100 crate turns the bytes `top` writes into
//! the screen a person would see. Without a terminal, `top` refuses (exit 2).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use testkit::Procs;

const SHMBUS: &str = env!("CARGO_BIN_EXE_shmbus");
const ROWS: u16 = 30;
const COLS: u16 = 140;

/// `shmbus top` on the slave side of a fresh pty, its screen parsed as it is written.
struct Top {
    child: Child,
    master: File,
    /// Kept open so that the terminal's modes can be read after `top` exits.
    slave: File,
    screen: Arc<Mutex<vt100::Parser>>,
}

fn check(r: libc::c_int, what: &str) -> libc::c_int {
    assert!(r >= 0, "{what}: {}", std::io::Error::last_os_error());
    r
}

impl Top {
    fn spawn(dir: &Path, env: &[(&str, &str)]) -> Top {
        // SAFETY: plain libc calls on a descriptor we own; ptsname_r writes into our buffer.
        let (master, slave) = unsafe {
            let m = check(
                libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC),
                "posix_openpt",
            );
            check(libc::grantpt(m), "grantpt");
            check(libc::unlockpt(m), "unlockpt");
            let mut name = [0 as libc::c_char; 128];
            assert_eq!(libc::ptsname_r(m, name.as_mut_ptr(), name.len()), 0);
            let ws = libc::winsize {
                ws_row: ROWS,
                ws_col: COLS,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            check(libc::ioctl(m, libc::TIOCSWINSZ, &ws), "TIOCSWINSZ");
            let s = check(
                libc::open(
                    name.as_ptr(),
                    libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
                ),
                "open pts",
            );
            (File::from_raw_fd(m), File::from_raw_fd(s))
        };
        let mut c = Command::new(SHMBUS);
        c.arg("top")
            .arg(dir)
            .env("TERM", "xterm-256color")
            .stdin(slave.try_clone().unwrap())
            .stdout(slave.try_clone().unwrap())
            .stderr(slave.try_clone().unwrap());
        for (k, v) in env {
            c.env(k, v);
        }
        // SAFETY: setsid, ioctl and prctl are async-signal-safe. The child leads a new session
        // whose controlling terminal is the pty (as a shell would arrange), and dies with the
        // test.
        unsafe {
            c.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = c.spawn().unwrap();
        let screen = Arc::new(Mutex::new(vt100::Parser::new(ROWS, COLS, 0)));
        let mut reader = master.try_clone().unwrap();
        let parser = screen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            // Ends with EIO once every slave descriptor is closed (or with the test process).
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                parser.lock().unwrap().process(&buf[..n]);
            }
        });
        Top {
            child,
            master,
            slave,
            screen,
        }
    }

    fn contents(&self) -> String {
        self.screen.lock().unwrap().screen().contents()
    }

    /// Waits until `cond` holds for the screen; panics with the screen after 20 s.
    fn wait_for(&mut self, what: &str, mut cond: impl FnMut(&str) -> bool) -> String {
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            let text = self.contents();
            if cond(&text) {
                return text;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("top exited ({status}) before {what}; screen:\n{text}");
            }
            if Instant::now() > until {
                let _ = self.child.kill();
                panic!("timed out waiting for {what}; screen:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn keys(&mut self, bytes: &[u8]) {
        self.master.write_all(bytes).unwrap();
    }

    fn wait_exit(&mut self) -> ExitStatus {
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                self.drain();
                return status;
            }
            if Instant::now() > until {
                let _ = self.child.kill();
                panic!("top did not exit; screen:\n{}", self.contents());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the screen holds everything written to the terminal so far: a window
    /// title set through the slave side comes out of the master after all of `top`'s bytes.
    fn drain(&mut self) {
        let mark = format!("drained-{}", self.child.id());
        write!(self.slave, "\x1b]2;{mark}\x07").unwrap();
        let until = Instant::now() + Duration::from_secs(20);
        while self.screen.lock().unwrap().screen().title() != mark {
            assert!(Instant::now() < until, "the pty's output never arrived");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The terminal is as `top` found it: canonical input and echo on, the main screen, the
    /// cursor visible.
    fn assert_restored(&self) {
        // SAFETY: tcgetattr fills the termios we pass, on a descriptor we own.
        let t = unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            check(libc::tcgetattr(self.slave.as_raw_fd(), &mut t), "tcgetattr");
            t
        };
        assert_ne!(t.c_lflag & libc::ICANON, 0, "raw mode left on (ICANON off)");
        assert_ne!(t.c_lflag & libc::ECHO, 0, "raw mode left on (ECHO off)");
        let p = self.screen.lock().unwrap();
        assert!(
            !p.screen().alternate_screen(),
            "still on the alternate screen"
        );
        assert!(!p.screen().hide_cursor(), "cursor left hidden");
    }

    /// Whether `top` has the terminal now (raw mode, alternate screen).
    fn assert_raw(&self) {
        // SAFETY: as in assert_restored.
        let t = unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            check(libc::tcgetattr(self.slave.as_raw_fd(), &mut t), "tcgetattr");
            t
        };
        assert_eq!(t.c_lflag & libc::ICANON, 0, "top should be in raw mode");
        assert!(self.screen.lock().unwrap().screen().alternate_screen());
    }
}

impl Drop for Top {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The screen line of bus `name` in the table (the selected one starts with "> ").
fn row<'a>(screen: &'a str, name: &str) -> Option<&'a str> {
    screen.lines().find(|l| {
        l.trim_start_matches("> ")
            .split_whitespace()
            .next()
            .is_some_and(|w| w == name)
    })
}

/// The MSGS/S cell of bus `name` (the 6th column: NAME MODE TYPE SUBS PRODS MSGS/S).
fn msgs_rate(screen: &str, name: &str) -> Option<f64> {
    row(screen, name)?
        .trim_start_matches("> ")
        .split_whitespace()
        .nth(5)?
        .parse()
        .ok()
}

fn selected(screen: &str) -> Option<&str> {
    screen
        .lines()
        .find(|l| l.starts_with("> "))
        .and_then(|l| l[2..].split_whitespace().next())
}

fn shmbus(dir: &Path, args: &[&str]) {
    let o = Command::new(SHMBUS)
        .args(args)
        .env("SHMBUS_DIR", dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{args:?}: {o:?}");
}

#[test]
fn top_shows_every_bus_moving_rates_and_follows_the_arrow_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    shmbus(dir, &["create", "alpha", "--capacity", "1MiB"]);
    shmbus(
        dir,
        &["create", "busy", "--mode", "lossy", "--capacity", "1MiB"],
    );
    shmbus(dir, &["create", "idle", "--capacity", "64KiB"]);
    std::fs::write(dir.join("junk.bus"), b"not a bus").unwrap();

    // A paced publisher on `busy`: about 200 messages a second, for as long as the test runs.
    let mut procs = Procs::new(Duration::from_secs(90));
    let mut c = Command::new(SHMBUS);
    c.args(["pub", "busy"])
        .env("SHMBUS_DIR", dir)
        .stdin(Stdio::piped());
    let publisher = procs.spawn_command("pub", c);
    let mut input = procs.child(publisher).stdin.take().unwrap();
    let feeding = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let feed = {
        let feeding = feeding.clone();
        std::thread::spawn(move || {
            let mut i = 0u64;
            while feeding.load(std::sync::atomic::Ordering::Relaxed) {
                if writeln!(input, "tick {i}")
                    .and_then(|()| input.flush())
                    .is_err()
                {
                    break;
                }
                i += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };

    let mut top = Top::spawn(dir, &[]);
    // Each wait holds its whole condition: the screen is read while `top` may be half-way
    // through writing a frame, so a check made after the wait could see a partial one.
    top.wait_for("the bus table", |s| {
        ["alpha", "busy", "idle", "junk"]
            .iter()
            .all(|n| row(s, n).is_some())
            && s.contains("shmbus top")
            && s.contains("MSGS/S")
            // The byte rate in the unit `stat --watch` uses (MiB/s, not 10^6 B).
            && s.contains("MIB/S")
            && s.contains("LAST MINUTE")
            && row(s, "junk")
                .unwrap()
                .contains("ERROR: file is 9 bytes, smaller than a bus header")
    });
    top.assert_raw();
    // The rates: `busy` moves, `idle` and `alpha` do not; the sparkline fills in. The
    // selection starts on the first bus, whose details are shown below.
    top.wait_for("a rate on busy", |s| {
        msgs_rate(s, "busy").is_some_and(|r| r > 20.0)
            && msgs_rate(s, "idle") == Some(0.0)
            && msgs_rate(s, "alpha") == Some(0.0)
            && row(s, "busy").unwrap().contains('█')
            && selected(s) == Some("alpha")
            && s.contains(" alpha: reliable mode")
    });

    // Selection: down twice (to `idle`), then up once (to `busy`).
    top.keys(b"\x1b[B");
    top.wait_for("busy selected", |s| selected(s) == Some("busy"));
    top.keys(b"\x1b[B");
    top.wait_for("idle selected", |s| {
        selected(s) == Some("idle") && s.contains(" idle: reliable mode")
    });
    top.keys(b"\x1b[A");
    // The selected bus's slots: the publisher's producer slot, alive, with its pid and rate.
    let pid = procs.pid(publisher).to_string();
    top.wait_for("busy's producer slot", |s| {
        selected(s) == Some("busy")
            && s.contains(" busy: lossy mode")
            && s.lines().any(|l| {
                l.starts_with("prod 0")
                    && l.contains(&pid)
                    && l.contains("alive")
                    // SLOT is two words: "prod 0", PID, STATE, "-", "-", MSGS/S, ...
                    && l.split_whitespace()
                        .nth(6)
                        .is_some_and(|r| r != "…" && r != "0")
            })
            && s.contains("msgs/s over the last minute")
    });
    // The selection stays on its bus when another bus appears before it.
    shmbus(dir, &["create", "aardvark", "--capacity", "64KiB"]);
    top.wait_for("the new bus, selection kept", |s| {
        row(s, "aardvark").is_some() && selected(s) == Some("busy")
    });

    top.keys(b"q");
    let status = top.wait_exit();
    assert_eq!(status.code(), Some(0), "{status}");
    top.assert_restored();

    feeding.store(false, std::sync::atomic::Ordering::Relaxed);
    feed.join().unwrap();
    procs.kill_all();
}

#[test]
fn ctrl_c_sigterm_and_a_panic_all_give_the_terminal_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    shmbus(dir, &["create", "one", "--capacity", "64KiB"]);
    let ready = |s: &str| row(s, "one").is_some();

    // Ctrl-C is a key in raw mode: a clean exit.
    let mut top = Top::spawn(dir, &[]);
    top.wait_for("the table", ready);
    top.assert_raw();
    top.keys(b"\x03");
    assert_eq!(top.wait_exit().code(), Some(0));
    top.assert_restored();

    // SIGTERM from elsewhere (a service manager, `kill`): a clean exit too.
    let mut top = Top::spawn(dir, &[]);
    top.wait_for("the table", ready);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(top.child.id() as i32, libc::SIGTERM) };
    assert_eq!(top.wait_exit().code(), Some(0));
    top.assert_restored();

    // A file where a directory belongs: an error, and the terminal never touched.
    let file = dir.join("one.bus");
    let mut top = Top::spawn(&file, &[]);
    assert_eq!(top.wait_exit().code(), Some(1));
    top.assert_restored();
    assert!(
        top.contents().contains("is not a directory"),
        "{}",
        top.contents()
    );

    // A panic: the hook restores the terminal, then the message is printed on it.
    let mut top = Top::spawn(dir, &[("SHMBUS_TEST_TOP_PANIC", "1")]);
    let status = top.wait_exit();
    assert_eq!(status.code(), Some(101), "{status}");
    assert_eq!(status.signal(), None);
    top.assert_restored();
    let screen = top.contents();
    assert!(screen.contains("panicked"), "{screen}");
    assert!(
        screen.contains("panicking on purpose"),
        "the panic message should be readable on the main screen:\n{screen}"
    );
}

#[test]
fn top_without_a_terminal_refuses_and_points_at_stat_watch_json() {
    let tmp = tempfile::tempdir().unwrap();
    let o = Command::new(SHMBUS)
        .args(["top"])
        .env("SHMBUS_DIR", tmp.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(o.stdout.is_empty());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("needs a terminal"), "{err}");
    assert!(err.contains("shmbus stat BUS --watch 1s --json"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
