//! `shell`: the guest of `run`, interactive on the user's terminal. The terminal is put in raw
//! mode (every key goes to the guest, Ctrl-C included) and given back on every path: the end
//! of the session, an error, an interrupt. Ctrl-] leaves; QEMU is always stopped afterwards.

use std::io::{IsTerminal as _, Read as _};
use std::os::fd::AsFd as _;
use std::sync::Mutex;

use anyhow::{Context, Result};
use clap::Args;
use harness::guest::Session;
use harness::qemu::machine::Ended;
use nix::sys::termios::{self, SetArg, Termios};

use crate::run::GuestArgs;

/// The key that leaves the shell: Ctrl-] (as telnet and virsh console).
pub const QUIT: u8 = 0x1d;

/// The exit status when the shell cannot run here (no terminal).
pub const EXIT_NOT_A_TERMINAL: u8 = 2;

#[derive(Args)]
pub struct ShellArgs {
    #[command(flatten)]
    guest: GuestArgs,
}

/// The terminal's modes before raw mode, for every path that gives them back.
static SAVED: Mutex<Option<Termios>> = Mutex::new(None);

/// Gives the terminal back its modes (idempotent; also run by the interrupt path).
fn restore() {
    if let Ok(mut saved) = SAVED.lock() {
        if let Some(t) = saved.take() {
            let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, &t);
        }
    }
}

/// Raw mode for as long as it lives.
struct Raw;

impl Raw {
    fn enter() -> Result<Raw> {
        let stdin = std::io::stdin();
        let old = termios::tcgetattr(stdin.as_fd()).context("read the terminal's modes")?;
        let mut raw = old.clone();
        termios::cfmakeraw(&mut raw);
        if let Ok(mut saved) = SAVED.lock() {
            *saved = Some(old);
        }
        harness::process::at_interrupt(restore);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw)
            .context("put the terminal in raw mode")?;
        Ok(Raw)
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        restore();
    }
}

pub fn shell(a: &ShellArgs) -> Result<u8> {
    if !(std::io::stdin().is_terminal() && std::io::stdout().is_terminal()) {
        eprintln!(
            "shell: needs a terminal (stdin and stdout); to run a command in the same guest without one, use:\n  cargo xtask run --package {} -- CMD [ARGS…]",
            a.guest.package()
        );
        return Ok(EXIT_NOT_A_TERMINAL);
    }
    let g = a.guest.guest()?;
    g.say_booting("shell");
    let mut s = match Session::open(&g.kernel, &g.recipe, &g.params, &g.dir)
        .with_context(|| format!("shell in the guest of {}", g.described))?
    {
        Ok(s) => s,
        Err(f) => return Ok(crate::run::say_guest_failed("shell", &f.error)),
    };
    crate::run::say_started("shell", &s.accel, &s.module_errors);
    eprintln!("shell: Ctrl-] leaves (QEMU is stopped); so does `exit` in the guest's shell");
    // Keys are read on their own thread (a blocking read); it ends with the program.
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::Builder::new()
        .name("shell-keys".into())
        .spawn(move || {
            let mut buf = [0u8; 1024];
            let mut stdin = std::io::stdin();
            while let Ok(n) = stdin.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        })
        .context("start the keyboard reader")?;
    let ended = {
        let _raw = Raw::enter()?;
        let mut out = std::io::stdout();
        s.interact(&rx, &mut out, QUIT)
    };
    let transcript = s.transcript.clone();
    s.close();
    match ended {
        Ok(Ended::Quit) => eprintln!("\nshell: left with Ctrl-]; QEMU stopped"),
        Ok(Ended::GuestExited) => eprintln!("\nshell: the guest ended; QEMU stopped"),
        Err(e) => {
            eprintln!("\nshell: the console failed: {e}");
            return Ok(crate::run::EXIT_GUEST);
        }
    }
    eprintln!("shell: transcript {}", transcript.display());
    Ok(0)
}
