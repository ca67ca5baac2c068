//! `top`: a terminal UI over every bus of a directory, refreshed every second.
//!
//! State lives in [`app`], drawing in [`ui`]; this file owns the terminal. The terminal is
//! restored (raw mode off, main screen back, cursor shown) on every way out: `q`, Esc and
//! Ctrl-C (a key in raw mode), SIGINT/SIGTERM from elsewhere, an error, and a panic (a panic
//! hook restores it before the message is printed, so the message is readable).

mod app;
mod ui;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::crossterm::{cursor, execute, terminal};
use ratatui::Terminal;

use crate::flags::TopArgs;
use app::App;

/// Exit status of `top` without a terminal: the command cannot work where it was started
/// (a usage error, as clap's are), whatever the buses' state.
pub const EXIT_NO_TERMINAL: u8 = 2;

/// How often the buses are read (the sparkline keeps [`app::HISTORY`] samples: a minute).
const REFRESH: Duration = Duration::from_secs(1);

/// Environment variable that makes `top` panic after its first frame: the test of the panic
/// hook (tests/top.rs). Not for users.
const TEST_PANIC_ENV: &str = "SHMBUS_TEST_TOP_PANIC";

pub fn run(args: &TopArgs) -> anyhow::Result<ExitCode> {
    if !std::io::stdout().is_terminal() {
        errln!(
            "shmbus: error: `top` needs a terminal, and standard output is not one. For a \
             feed a program can read, use `shmbus stat BUS --watch 1s --json` (one bus) or \
             `shmbus ls --json` (every bus, once)."
        );
        return Ok(ExitCode::from(EXIT_NO_TERMINAL));
    }
    let dir = args.dir.clone().unwrap_or_else(bus_core::default_dir);
    if dir.exists() && !dir.is_dir() {
        anyhow::bail!(
            "{} is not a directory: `top` watches the buses of a directory (for one bus: \
             `shmbus stat BUS --watch 1s`)",
            dir.display()
        );
    }
    let stop = crate::signals::install()?;
    let mut app = App::new(&dir);
    app.refresh();
    let mut term = TerminalGuard::enter().context("cannot set up the terminal")?;
    let result = event_loop(&mut term.terminal, &mut app, &stop);
    drop(term);
    result.map(|()| ExitCode::SUCCESS)
}

fn event_loop(
    terminal: &mut Terminal<CrosstermBackend<std::io::Stdout>>,
    app: &mut App,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let test_panic = std::env::var_os(TEST_PANIC_ENV).is_some();
    let mut next = Instant::now() + REFRESH;
    let mut dirty = true;
    loop {
        if dirty {
            terminal.draw(|f| ui::draw(f, app))?;
            dirty = false;
            if test_panic {
                panic!("{TEST_PANIC_ENV} is set: panicking on purpose");
            }
        }
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        // Short polls: an interrupt from elsewhere is seen within 100 ms.
        let wait = next
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(100));
        if event::poll(wait)? {
            match event::read()? {
                Event::Key(k) if k.kind != KeyEventKind::Release => {
                    match (k.code, k.modifiers.contains(KeyModifiers::CONTROL)) {
                        (KeyCode::Char('q') | KeyCode::Esc, _) => return Ok(()),
                        (KeyCode::Char('c'), true) => return Ok(()),
                        (KeyCode::Down | KeyCode::Char('j'), _) => app.select_next(),
                        (KeyCode::Up | KeyCode::Char('k'), _) => app.select_previous(),
                        (KeyCode::Home, _) => app.select_first(),
                        (KeyCode::End, _) => app.select_last(),
                        _ => continue,
                    }
                    dirty = true;
                }
                Event::Resize(..) => dirty = true,
                _ => {}
            }
        }
        if Instant::now() >= next {
            app.refresh();
            next += REFRESH;
            // After a stall (a suspended process), do not refresh in a burst to catch up.
            if next < Instant::now() {
                next = Instant::now() + REFRESH;
            }
            dirty = true;
        }
    }
}

/// The terminal in raw mode on the alternate screen, restored on drop and by the panic hook.
struct TerminalGuard {
    terminal: Terminal<CrosstermBackend<std::io::Stdout>>,
}

/// Whether the terminal is in `top`'s state (so that a restore runs once, by whichever of the
/// drop and the panic hook comes first).
static ENTERED: AtomicBool = AtomicBool::new(false);

impl TerminalGuard {
    fn enter() -> std::io::Result<TerminalGuard> {
        // The hook first: a panic anywhere after raw mode is on must find it.
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
        ENTERED.store(true, Ordering::SeqCst);
        let set_up = (|| {
            terminal::enable_raw_mode()?;
            execute!(
                std::io::stdout(),
                terminal::EnterAlternateScreen,
                cursor::Hide
            )?;
            Terminal::new(CrosstermBackend::new(std::io::stdout()))
        })();
        match set_up {
            Ok(terminal) => Ok(TerminalGuard { terminal }),
            Err(e) => {
                restore();
                Err(e)
            }
        }
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore();
    }
}

/// Raw mode off first (it has the wider effect), then the main screen and the cursor back.
/// Errors are ignored: this runs on the way out, and there is nowhere better to report them.
fn restore() {
    if ENTERED.swap(false, Ordering::SeqCst) {
        let _ = terminal::disable_raw_mode();
        let _ = execute!(
            std::io::stdout(),
            terminal::LeaveAlternateScreen,
            cursor::Show
        );
    }
}
