//! One QEMU process and its serial console, driven with rexpect over pipes. Every phase has a
//! deadline; a kernel panic ends the run at once; the full transcript goes to the trial
//! directory; the process group is killed on every path (Drop included).

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ChildStdin;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rexpect::reader::{Options, Regex};
use rexpect::session::StreamSession;
use rexpect::ReadUntil;

use super::args::{argv, Spec};
use crate::process::{Output, Process};

/// Deadlines of a run.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// QEMU start to the init's ready marker.
    pub boot: Duration,
    /// Default for one guest command.
    pub command: Duration,
    /// The whole run, boot included.
    pub total: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        // Scaled for TCG on a loaded 2-core host (a quiet boot takes 4-15 s there).
        Deadlines {
            boot: Duration::from_secs(120),
            command: Duration::from_secs(120),
            total: Duration::from_secs(900),
        }
    }
}

/// How a run ended when it did not end well.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("qemu could not start: {0}")]
    Start(String),
    #[error("kernel panic during {phase} after {:.1} s", .after.as_secs_f64())]
    Panic {
        phase: String,
        after: Duration,
        tail: String,
    },
    #[error("TIMEOUT in phase {phase} after {:.1} s", .after.as_secs_f64())]
    Timeout {
        phase: String,
        after: Duration,
        tail: String,
    },
    #[error("qemu exited during {phase} ({status}){}", if .stderr.is_empty() { String::new() } else { format!(": {}", .stderr) })]
    Exited {
        phase: String,
        status: String,
        stderr: String,
        tail: String,
    },
    #[error("console: {0}")]
    Console(String),
}

impl RunError {
    /// The last console lines, for the report.
    pub fn tail(&self) -> &str {
        match self {
            RunError::Panic { tail, .. }
            | RunError::Timeout { tail, .. }
            | RunError::Exited { tail, .. } => tail,
            _ => "",
        }
    }
}

/// Where an interactive session gets the console's bytes as they are read, unchanged.
type Tap = Arc<Mutex<Option<Sender<Vec<u8>>>>>;

/// Console bytes are copied to the transcript as they are read (and to the tap, if any).
struct Tee<R> {
    inner: R,
    log: Arc<Mutex<BufWriter<File>>>,
    tap: Tap,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Ok(mut log) = self.log.lock() {
            let _ = log.write_all(&buf[..n]);
            if buf[..n].contains(&b'\n') {
                let _ = log.flush();
            }
        }
        if let Ok(tap) = self.tap.lock() {
            if let Some(t) = tap.as_ref() {
                let _ = t.send(buf[..n].to_vec());
            }
        }
        Ok(n)
    }
}

const READY: &str = r"@@BTFGATE-READY ([^@]*)@@";
const RC: &str = r"@@BTFGATE-RC (\d+)@@";
const PANIC: &str = "Kernel panic - not syncing";

/// How an interactive session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The person pressed the quit key (or their input ended).
    Quit,
    /// QEMU exited (the guest's shell exited and the guest rebooted, or it died).
    GuestExited,
}

/// A booted guest at its command loop.
pub struct Machine {
    proc: Process,
    session: StreamSession<ChildStdin>,
    log: Arc<Mutex<BufWriter<File>>>,
    tap: Tap,
    pub transcript: PathBuf,
    stderr_log: PathBuf,
    started: Instant,
    total: Instant,
    /// `uname -r` reported by the guest.
    pub release: String,
    /// Seconds from QEMU start to the ready marker.
    pub boot_secs: f64,
    /// The VM slot this guest holds; declared last, so it is freed after QEMU is stopped.
    _slot: super::slot::Slot,
}

fn regex(s: &str) -> Result<Regex, RunError> {
    Regex::new(s).map_err(|e| RunError::Console(format!("bad pattern {s}: {e}")))
}

impl Machine {
    /// Takes a VM slot (waiting at most [`super::slot::WAIT`]), starts QEMU with `spec`,
    /// writing `console.log` and `qemu.stderr` into `dir`, and waits for the init's ready
    /// marker. The deadlines count from QEMU's start, not from the wait: a short boot (the KVM
    /// probe's) must not fail because other guests held the slots.
    pub fn boot(qemu: &Path, spec: &Spec, dir: &Path, d: &Deadlines) -> Result<Machine, RunError> {
        let slot =
            super::slot::acquire(spec.cpus, Instant::now() + super::slot::WAIT).map_err(|e| {
                RunError::Timeout {
                    phase: format!("waiting for a VM slot: {e}"),
                    after: Duration::ZERO,
                    tail: String::new(),
                }
            })?;
        let transcript = dir.join("console.log");
        let stderr_log = dir.join("qemu.stderr");
        let args = argv(spec);
        let _ = std::fs::write(
            dir.join("qemu.cmdline"),
            format!("{} {}\n", qemu.display(), args.join(" ")),
        );
        let mut proc = Process::spawn(qemu, &args, true, Output::Pipe, Output::File(&stderr_log))
            .map_err(|e| RunError::Start(e.to_string()))?;
        let (Some(stdin), Some(stdout)) = (proc.take_stdin(), proc.take_stdout()) else {
            return Err(RunError::Start("qemu has no stdio pipes".into()));
        };
        let file = File::create(&transcript)
            .map_err(|e| RunError::Start(format!("create {}: {e}", transcript.display())))?;
        let log = Arc::new(Mutex::new(BufWriter::new(file)));
        let tap: Tap = Arc::new(Mutex::new(None));
        let tee = Tee {
            inner: stdout,
            log: log.clone(),
            tap: tap.clone(),
        };
        // rexpect's own timeout is a polling slice; btfgate's deadlines are enforced around it.
        let opts = Options::new()
            .timeout_ms(Some(250))
            .strip_ansi_escape_codes(true);
        let session = StreamSession::new(tee, stdin, opts);
        let now = Instant::now();
        let mut m = Machine {
            proc,
            session,
            log,
            tap,
            transcript,
            stderr_log,
            started: now,
            total: now + d.total,
            release: String::new(),
            boot_secs: 0.0,
            _slot: slot,
        };
        let (_, marker) = m.expect(READY, "boot", now + d.boot)?;
        m.release = regex(READY)?
            .captures(&marker)
            .and_then(|c| c.get(1))
            .map(|g| g.as_str().to_string())
            .unwrap_or_default();
        m.boot_secs = now.elapsed().as_secs_f64();
        Ok(m)
    }

    /// Waits for `pattern` until `deadline` (and the run's total deadline), watching for a
    /// kernel panic and for QEMU exiting. Returns (text before, matched text).
    fn expect(
        &mut self,
        pattern: &str,
        phase: &str,
        deadline: Instant,
    ) -> Result<(String, String), RunError> {
        let re = regex(pattern)?;
        let deadline = deadline.min(self.total);
        loop {
            let needles = vec![
                ReadUntil::Regex(re.clone()),
                ReadUntil::String(PANIC.to_string()),
                ReadUntil::EOF,
            ];
            match self.session.exp_any(needles) {
                Ok((before, matched)) if matched.contains(PANIC) => {
                    // Let the panic message finish printing, then report it.
                    std::thread::sleep(Duration::from_millis(300));
                    let _ = self.session.exp_any(vec![ReadUntil::NBytes(1 << 20)]);
                    let _ = before;
                    return Err(RunError::Panic {
                        phase: phase.to_string(),
                        after: self.started.elapsed(),
                        tail: self.tail(40),
                    });
                }
                Ok((before, matched)) if re.is_match(&matched) => return Ok((before, matched)),
                Ok(_) => return Err(self.exited(phase)),
                Err(rexpect::error::Error::EOF { .. }) => return Err(self.exited(phase)),
                Err(rexpect::error::Error::Timeout { .. }) => {
                    if let Ok(Some(_)) = self.proc.try_status() {
                        return Err(self.exited(phase));
                    }
                    if Instant::now() >= deadline {
                        self.proc.kill();
                        return Err(RunError::Timeout {
                            phase: phase.to_string(),
                            after: self.started.elapsed(),
                            tail: self.tail(40),
                        });
                    }
                }
                Err(e) => return Err(RunError::Console(e.to_string())),
            }
        }
    }

    fn exited(&mut self, phase: &str) -> RunError {
        let status = match self
            .proc
            .wait_until(Instant::now() + Duration::from_secs(5))
        {
            Ok(s) => s.to_string(),
            Err(e) => e.to_string(),
        };
        let stderr = std::fs::read_to_string(&self.stderr_log)
            .map(|s| {
                s.lines()
                    .rev()
                    .take(5)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join(" | ")
            })
            .unwrap_or_default();
        RunError::Exited {
            phase: phase.to_string(),
            status,
            stderr,
            tail: self.tail(40),
        }
    }

    /// Sends one shell command line to the guest's command loop, noting it in the transcript.
    fn send_command(&mut self, phase: &str, cmd: &str) -> Result<(), RunError> {
        if cmd.contains('\n') {
            return Err(RunError::Console("guest commands are single lines".into()));
        }
        // Flushed now: a command that prints nothing for a while (`sleep 120`) would otherwise
        // keep its own line out of the transcript until its output arrives.
        if let Ok(mut log) = self.log.lock() {
            let _ = writeln!(log, "\n[btfgate host] {phase}: {cmd}");
            let _ = log.flush();
        }
        self.session
            .send_line(cmd)
            .map_err(|e| RunError::Console(format!("send to the console: {e}")))?;
        Ok(())
    }

    /// The exit status in a status marker the command loop printed.
    fn status_of(marker: &str) -> Result<i32, RunError> {
        Ok(regex(RC)?
            .captures(marker)
            .and_then(|c| c.get(1))
            .and_then(|g| g.as_str().parse().ok())
            .unwrap_or(-1))
    }

    /// Runs one shell command line in the guest; returns its exit status and output.
    pub fn run(
        &mut self,
        phase: &str,
        cmd: &str,
        timeout: Duration,
    ) -> Result<(i32, String), RunError> {
        self.send_command(phase, cmd)?;
        let (before, marker) = self.expect(RC, phase, Instant::now() + timeout)?;
        Ok((Self::status_of(&marker)?, before.replace('\r', "")))
    }

    /// Runs one shell command line in the guest, handing each line of its output to `line` as
    /// it arrives (not at the end); returns its exit status.
    pub fn run_streaming(
        &mut self,
        phase: &str,
        cmd: &str,
        timeout: Duration,
        line: &mut dyn FnMut(&str),
    ) -> Result<i32, RunError> {
        self.send_command(phase, cmd)?;
        let deadline = Instant::now() + timeout;
        // The left-most of a line end and the status marker: lines stream out one by one.
        let either = format!("{RC}|\n");
        // The end of the line the previous status marker was on comes first: not output.
        let mut first = true;
        loop {
            let (before, matched) = self.expect(&either, phase, deadline)?;
            let text = before.replace('\r', "");
            if matched == "\n" {
                if !(first && text.is_empty()) {
                    line(&text);
                }
                first = false;
                continue;
            }
            if !text.is_empty() {
                line(&text);
            }
            return Self::status_of(&matched);
        }
    }

    /// Hands the console to a person: sends the shell line `start`, then copies the console's
    /// bytes to `out` unchanged as they come and `input`'s bytes to the console, until `quit`
    /// is among them (the byte itself is not sent), `input` ends, or QEMU exits. A person is
    /// the deadline here: they leave with `quit`.
    pub fn interact(
        &mut self,
        start: &str,
        input: &Receiver<Vec<u8>>,
        out: &mut dyn Write,
        quit: u8,
    ) -> Result<Ended, RunError> {
        let (tx, rx) = std::sync::mpsc::channel();
        if let Ok(mut tap) = self.tap.lock() {
            *tap = Some(tx);
        }
        if let Ok(mut log) = self.log.lock() {
            let _ = writeln!(log, "\n[btfgate host] shell: {start}");
        }
        let console = |e: std::io::Error| RunError::Console(format!("the terminal: {e}"));
        let send = |s: &mut Self, bytes: &[u8]| {
            s.session
                .send(&String::from_utf8_lossy(bytes))
                .and_then(|_| s.session.flush())
                .map_err(|e| RunError::Console(format!("send to the console: {e}")))
        };
        send(self, format!("{start}\n").as_bytes())?;
        // Input bytes wait here until they are whole UTF-8 characters.
        let mut pending: Vec<u8> = Vec::new();
        let ended = loop {
            while let Ok(chunk) = rx.try_recv() {
                out.write_all(&chunk).map_err(console)?;
            }
            out.flush().map_err(console)?;
            // What rexpect buffered meanwhile is not wanted: the bytes went out through the tap.
            while self.session.try_read().is_some() {}
            if let Ok(Some(_)) = self.proc.try_status() {
                break Ended::GuestExited;
            }
            match input.recv_timeout(Duration::from_millis(20)) {
                Ok(bytes) => {
                    let (now, leave) = match bytes.iter().position(|b| *b == quit) {
                        Some(i) => (&bytes[..i], true),
                        None => (&bytes[..], false),
                    };
                    pending.extend_from_slice(now);
                    let whole = match std::str::from_utf8(&pending) {
                        Ok(_) => pending.len(),
                        Err(e) if e.error_len().is_none() && !leave => e.valid_up_to(),
                        Err(_) => pending.len(),
                    };
                    if whole > 0 {
                        let rest = pending.split_off(whole);
                        send(self, &pending)?;
                        pending = rest;
                    }
                    if leave {
                        break Ended::Quit;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break Ended::Quit,
            }
        };
        // The guest's last words, then the tap is closed.
        std::thread::sleep(Duration::from_millis(100));
        while let Ok(chunk) = rx.try_recv() {
            let _ = out.write_all(&chunk);
        }
        let _ = out.flush();
        if let Ok(mut tap) = self.tap.lock() {
            *tap = None;
        }
        Ok(ended)
    }

    /// Ends the guest and waits for QEMU to exit (killing it if it does not). `reboot -f`
    /// works without ACPI (tiny kernels): with `-no-reboot` QEMU exits at the reset.
    pub fn shutdown(mut self) {
        let _ = self.session.send_line("reboot -f");
        let _ = self
            .proc
            .wait_until(Instant::now() + Duration::from_secs(10));
    }

    /// The last `n` lines of the console transcript.
    pub fn tail(&self, n: usize) -> String {
        if let Ok(mut log) = self.log.lock() {
            let _ = log.flush();
        }
        tail_of(&self.transcript, n)
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn qemu_pid(&self) -> u32 {
        self.proc.pid()
    }
}

/// The last `n` lines of a file.
pub fn tail_of(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
