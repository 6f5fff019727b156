//! The one place that spawns processes: each child leads its own process group, every wait has
//! a deadline, and the whole group is terminated (SIGTERM, grace, SIGKILL) on every path,
//! including Drop, so nothing outlives its owner. Every live group is also registered, so an
//! interrupt (SIGINT, SIGTERM, SIGHUP) kills them all before the program exits
//! ([`exit_on_interrupt`]).

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// Grace between SIGTERM and SIGKILL.
const GRACE: Duration = Duration::from_secs(2);

/// Process groups started here and not yet killed and reaped: group id → program.
static LIVE: Mutex<BTreeMap<i32, String>> = Mutex::new(BTreeMap::new());

fn live() -> std::sync::MutexGuard<'static, BTreeMap<i32, String>> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Installs the interrupt path for a program (`what` names it in the message): on SIGINT,
/// SIGTERM or SIGHUP every process group it started is killed (QEMU, make, downloads), what was
/// interrupted is printed, and the program exits 128 + the signal (130, 143, 129). The groups
/// lead themselves, so a terminal's Ctrl-C does not reach them and without this they would
/// outlive the program.
pub fn exit_on_interrupt(what: &'static str) -> std::io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    std::thread::Builder::new()
        .name("btfgate-interrupt".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                let name = match sig {
                    SIGINT => "SIGINT",
                    SIGTERM => "SIGTERM",
                    _ => "SIGHUP",
                };
                // The registry stays locked until exit: no group can start after the kill.
                let reg = live();
                for pgid in reg.keys() {
                    let _ = killpg(Pid::from_raw(*pgid), Signal::SIGKILL);
                }
                let killed: Vec<&String> = reg.values().collect();
                eprintln!(
                    "\n{what}: interrupted by {name}: killed {} process group(s){}{}",
                    killed.len(),
                    if killed.is_empty() { "" } else { ": " },
                    killed
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                // Every child group is gone; nothing left to drop that could outlive us.
                std::process::exit(128 + sig);
            }
        })?;
    Ok(())
}

/// Where a child's output goes.
pub enum Output<'a> {
    /// A pipe the owner reads (`take_stdout`).
    Pipe,
    /// Appended to a log file.
    File(&'a Path),
    Null,
}

/// What went wrong running a process.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("start {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{program}: still running after {:.1} s, killed", .after.as_secs_f64())]
    Timeout { program: String, after: Duration },
    #[error("{program}: {source}")]
    Io {
        program: String,
        #[source]
        source: std::io::Error,
    },
}

/// A running child process, leader of its own process group; killed with its group on drop.
pub struct Process {
    child: Child,
    program: String,
    started: Instant,
    reaped: Option<ExitStatus>,
}

fn redirect(o: &Output<'_>, program: &str) -> Result<Stdio, ProcessError> {
    Ok(match o {
        Output::Pipe => Stdio::piped(),
        Output::Null => Stdio::null(),
        Output::File(p) => {
            let f = File::options()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|source| ProcessError::Io {
                    program: format!("{program} (log {})", p.display()),
                    source,
                })?;
            Stdio::from(f)
        }
    })
}

impl Process {
    /// Starts `program args…` in a new process group. `stdin_pipe` gives the owner its stdin.
    pub fn spawn<I, S>(
        program: &Path,
        args: I,
        stdin_pipe: bool,
        stdout: Output<'_>,
        stderr: Output<'_>,
    ) -> Result<Process, ProcessError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let name = program.display().to_string();
        #[allow(clippy::disallowed_methods)] // this module is the one place that spawns
        let mut cmd = Command::new(program);
        cmd.args(args)
            .process_group(0)
            .stdin(if stdin_pipe {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(redirect(&stdout, &name)?)
            .stderr(redirect(&stderr, &name)?);
        // The registry is locked across the spawn, so an interrupt either kills this child
        // (registered once started) or exits before it starts.
        let mut reg = live();
        let child = cmd.spawn().map_err(|source| ProcessError::Spawn {
            program: name.clone(),
            source,
        })?;
        reg.insert(child.id() as i32, name.clone());
        drop(reg);
        Ok(Process {
            child,
            program: name,
            started: Instant::now(),
            reaped: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn program(&self) -> &str {
        &self.program
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.child.stdin.take()
    }

    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.stdout.take()
    }

    /// Exit status if the process has exited (reaps it), without waiting.
    pub fn try_status(&mut self) -> Result<Option<ExitStatus>, ProcessError> {
        if let Some(s) = self.reaped {
            return Ok(Some(s));
        }
        let s = self.child.try_wait().map_err(|source| ProcessError::Io {
            program: self.program.clone(),
            source,
        })?;
        self.reaped = s;
        Ok(s)
    }

    /// Waits until the process exits or `deadline` passes; on expiry the group is killed and
    /// `Timeout` returned.
    pub fn wait_until(&mut self, deadline: Instant) -> Result<ExitStatus, ProcessError> {
        loop {
            if let Some(s) = self.try_status()? {
                return Ok(s);
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(ProcessError::Timeout {
                    program: self.program.clone(),
                    after: self.elapsed(),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Terminates the whole process group: SIGTERM, up to `GRACE` to exit, then SIGKILL; reaps.
    pub fn kill(&mut self) {
        let pgid = Pid::from_raw(self.child.id() as i32);
        if self.reaped.is_none() {
            let _ = killpg(pgid, Signal::SIGTERM);
            let until = Instant::now() + GRACE;
            while Instant::now() < until {
                if let Ok(Some(s)) = self.child.try_wait() {
                    self.reaped = Some(s);
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        // Grandchildren may remain in the group even when the leader has exited.
        let _ = killpg(pgid, Signal::SIGKILL);
        if self.reaped.is_none() {
            self.reaped = self.child.wait().ok();
        }
        live().remove(&pgid.as_raw());
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs a command to completion with a deadline, capturing stdout (stderr to `stderr`).
pub fn run_capture<I, S>(
    program: &Path,
    args: I,
    timeout: Duration,
    stderr: Output<'_>,
) -> Result<(ExitStatus, Vec<u8>), ProcessError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    use std::io::Read;
    let mut p = Process::spawn(program, args, false, Output::Pipe, stderr)?;
    let mut out = p.take_stdout().ok_or_else(|| ProcessError::Io {
        program: p.program.clone(),
        source: std::io::Error::other("no stdout pipe"),
    })?;
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out.read_to_end(&mut buf);
        buf
    });
    let status = p.wait_until(Instant::now() + timeout);
    // The pipe closes when the group is gone (killed on timeout), so the reader ends.
    drop(p);
    let buf = reader.join().unwrap_or_default();
    Ok((status?, buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh() -> &'static Path {
        Path::new("/bin/sh")
    }

    #[test]
    fn captures_output() {
        let (s, out) = run_capture(
            sh(),
            ["-c", "echo hi"],
            Duration::from_secs(10),
            Output::Null,
        )
        .unwrap();
        assert!(s.success());
        assert_eq!(out, b"hi\n");
    }

    #[test]
    fn deadline_kills_the_whole_group() {
        let d = tempfile::tempdir().unwrap();
        let pidfile = d.path().join("grandchild.pid");
        let script = format!("sleep 60 & echo $! > {}; wait", pidfile.display());
        let t0 = Instant::now();
        let err = run_capture(
            sh(),
            ["-c", &script],
            Duration::from_millis(500),
            Output::Null,
        )
        .unwrap_err();
        assert!(matches!(err, ProcessError::Timeout { .. }), "{err}");
        assert!(t0.elapsed() < Duration::from_secs(5));
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The grandchild (sleep) is gone too: signal 0 fails once it has been reaped by init.
        std::thread::sleep(Duration::from_millis(200));
        let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false);
        assert!(!alive, "grandchild {pid} survived");
    }

    #[test]
    fn drop_kills() {
        let p =
            Process::spawn(sh(), ["-c", "sleep 60"], false, Output::Null, Output::Null).unwrap();
        let pid = p.pid();
        drop(p);
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists() || {
                let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                s.is_empty() || s.contains(") Z ")
            }
        );
    }
}
