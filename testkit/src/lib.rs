//! Child processes with a watchdog, for the workspace's multi-process tests: every test
//! bounds its own time, kills its children when it ends (or panics), and children die with
//! the test process (PR_SET_PDEATHSIG), so a bug fails a test instead of hanging CI.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

pub struct Proc {
    pub name: String,
    child: Child,
    lines: Receiver<String>,
    pub output: Vec<String>,
}

/// The processes of one test, all killed at the deadline or when this is dropped.
pub struct Procs {
    procs: Vec<Proc>,
    deadline: Instant,
}

impl Procs {
    pub fn new(limit: Duration) -> Self {
        Procs {
            procs: Vec::new(),
            deadline: Instant::now() + limit,
        }
    }

    fn left(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Starts `program args...` with stdout captured line by line; returns its index.
    pub fn spawn(&mut self, name: &str, program: &str, args: &[&str]) -> usize {
        let mut cmd = Command::new(program);
        cmd.args(args);
        self.spawn_command(name, cmd)
    }

    /// Starts a prepared command (stdin as the caller set it, stdout captured line by line).
    pub fn spawn_command(&mut self, name: &str, mut cmd: Command) -> usize {
        cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
        // SAFETY: prctl and sigaction are async-signal-safe. prctl asks the kernel to SIGKILL
        // the child when this process dies, so no child outlives a crashed test. The
        // sigaction calls give the child the default SIGINT, SIGTERM and SIGQUIT: a test
        // started in the background by a shell without job control inherits them ignored
        // (SigIgn 0x6), and a child would then drop the interrupts a test sends it before
        // its own handlers are in place, and never end.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGQUIT] {
                    let mut dfl: libc::sigaction = std::mem::zeroed();
                    dfl.sa_sigaction = libc::SIG_DFL;
                    if libc::sigaction(sig, &dfl, std::ptr::null_mut()) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        self.procs.push(Proc {
            name: name.to_string(),
            child,
            lines: rx,
            output: Vec::new(),
        });
        self.procs.len() - 1
    }

    /// Waits for a line starting with `prefix` from process `i`.
    pub fn expect_line(&mut self, i: usize, prefix: &str) -> String {
        let left = self.left();
        let p = &mut self.procs[i];
        let until = Instant::now() + left;
        loop {
            match p
                .lines
                .recv_timeout(until.saturating_duration_since(Instant::now()))
            {
                Ok(line) => {
                    p.output.push(line.clone());
                    if line.starts_with(prefix) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.kill_all();
                    panic!(
                        "watchdog: {} did not print {prefix:?} in time",
                        self.procs[i].name
                    );
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = p.child.wait().ok();
                    panic!("{} exited ({status:?}) before printing {prefix:?}", p.name);
                }
            }
        }
    }

    /// Waits for process `i` to exit; returns its status and remaining output.
    pub fn wait(&mut self, i: usize) -> (ExitStatus, Vec<String>) {
        loop {
            if let Some(status) = self.procs[i].child.try_wait().unwrap() {
                let p = &mut self.procs[i];
                while let Ok(line) = p.lines.recv_timeout(Duration::from_millis(200)) {
                    p.output.push(line);
                }
                return (status, p.output.clone());
            }
            if self.left().is_zero() {
                self.kill_all();
                panic!("watchdog: {} did not finish in time", self.procs[i].name);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits for process `i` and asserts it succeeded; returns its output.
    pub fn success(&mut self, i: usize) -> Vec<String> {
        let (status, out) = self.wait(i);
        assert!(
            status.success(),
            "{} failed: {status} (output {out:?})",
            self.procs[i].name
        );
        out
    }

    /// The child itself (to write to its stdin, say).
    pub fn child(&mut self, i: usize) -> &mut Child {
        &mut self.procs[i].child
    }

    pub fn pid(&self, i: usize) -> i32 {
        self.procs[i].child.id() as i32
    }

    pub fn signal(&self, i: usize, sig: i32) {
        // SAFETY: sending a signal to our own child's pid.
        unsafe { libc::kill(self.pid(i), sig) };
    }

    pub fn is_running(&mut self, i: usize) -> bool {
        self.procs[i].child.try_wait().unwrap().is_none()
    }

    pub fn kill_all(&mut self) {
        for p in &mut self.procs {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// Polls `cond` until it holds or `limit` passes.
pub fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    cond()
}
