//! The one place that spawns processes: each child leads its own process group, every wait has
//! a deadline, and the whole group is terminated (SIGTERM, grace, SIGKILL) on every path,
//! including Drop, so nothing outlives its owner. Every live group is also registered, so an
//! interrupt (SIGINT, SIGTERM, SIGHUP) kills them all before the program exits
//! ([`exit_on_interrupt`]).
//!
//! One file because: spawning, the registry of live groups and the signal handler that kills
//! them share one piece of state (the registry), which must stay private to this file.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock};
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

/// What the interrupt path runs before it exits, besides killing groups and removing
/// temporaries (e.g. giving the terminal back its modes).
static AT_INTERRUPT: Mutex<Vec<fn()>> = Mutex::new(Vec::new());

/// Has the interrupt path run `f` before the program exits.
pub fn at_interrupt(f: fn()) {
    if let Ok(mut hooks) = AT_INTERRUPT.lock() {
        hooks.push(f);
    }
}

/// Installs the interrupt path for a program (`what` names it in the message): on SIGINT,
/// SIGTERM or SIGHUP every process group it started (QEMU, make, downloads, cargo) gets the
/// signal SIGTERM and up to `GRACE` to exit (a btfgate program among them runs its own
/// interrupt path and kills its QEMU), then SIGKILL; a second signal kills at once. Every
/// registered temporary path is removed ([`crate::scratch`]), what was interrupted is printed,
/// and the program exits 128 + the signal (130, 143, 129). The groups lead themselves, so a
/// terminal's Ctrl-C does not reach them and without this they would outlive the program.
pub fn exit_on_interrupt(what: &'static str) -> std::io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    std::thread::Builder::new()
        .name("btfgate-interrupt".into())
        .spawn(move || {
            let first = signals.forever().next();
            if let Some(sig) = first {
                let name = match sig {
                    SIGINT => "SIGINT",
                    SIGTERM => "SIGTERM",
                    _ => "SIGHUP",
                };
                // The registry stays locked until exit: no group can start after this point.
                let reg = live();
                let groups: Vec<Pid> = reg.keys().map(|g| Pid::from_raw(*g)).collect();
                let names: Vec<&str> = reg.values().map(String::as_str).collect();
                eprintln!(
                    "\n{what}: interrupted by {name}: stopping {} process group(s){}{}",
                    names.len(),
                    if names.is_empty() { "" } else { ": " },
                    names.join(", ")
                );
                for g in &groups {
                    let _ = killpg(*g, Signal::SIGTERM);
                }
                let until = Instant::now() + GRACE;
                let mut again = false;
                while !groups.iter().all(|g| group_gone(*g)) && Instant::now() < until {
                    if signals.pending().next().is_some() {
                        again = true;
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                let stubborn = groups.iter().filter(|g| !group_gone(**g)).count();
                for g in &groups {
                    let _ = killpg(*g, Signal::SIGKILL);
                }
                let removed = crate::scratch::remove_all();
                if let Ok(hooks) = AT_INTERRUPT.lock() {
                    for h in hooks.iter() {
                        h();
                    }
                }
                eprintln!(
                    "{what}: {}{} temporary path(s) removed; exiting {}",
                    if again {
                        "second signal: killed at once; ".to_string()
                    } else if stubborn > 0 {
                        format!("{stubborn} group(s) killed after {} s; ", GRACE.as_secs())
                    } else {
                        String::new()
                    },
                    removed,
                    128 + sig
                );
                std::process::exit(128 + sig);
            }
        })?;
    Ok(())
}

/// Whether no process of group `g` is left: its leader (our child) is reaped when it has
/// exited, and a signal 0 to the group finds nobody.
fn group_gone(g: Pid) -> bool {
    use nix::sys::wait::{waitpid, WaitPidFlag};
    // Reap any exited member that is our child (the leader), so a zombie does not count.
    while let Ok(s) = waitpid(Pid::from_raw(-g.as_raw()), Some(WaitPidFlag::WNOHANG)) {
        if s.pid().is_none() {
            break;
        }
    }
    killpg(g, None) == Err(nix::errno::Errno::ESRCH)
}

/// Where a child's output goes.
pub enum Output<'a> {
    /// A pipe the owner reads (`take_stdout`).
    Pipe,
    /// Appended to a log file.
    File(&'a Path),
    Null,
    /// The owner's own stdout or stderr (a command whose output the user watches).
    Inherit,
    /// The owner's stderr.
    Stderr,
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
    #[error("{program}: exited with {status}")]
    Failed { program: String, status: ExitStatus },
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
        Output::Inherit => Stdio::inherit(),
        Output::Stderr => {
            use std::os::fd::AsFd;
            let fd = std::io::stderr()
                .as_fd()
                .try_clone_to_owned()
                .map_err(|source| ProcessError::Io {
                    program: program.to_string(),
                    source,
                })?;
            Stdio::from(fd)
        }
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
        let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        Process::start(program, &args, &[], None, stdin_pipe, stdout, stderr)
    }

    fn start(
        program: &Path,
        args: &[OsString],
        env: &[(OsString, OsString)],
        dir: Option<&Path>,
        stdin_pipe: bool,
        stdout: Output<'_>,
        stderr: Output<'_>,
    ) -> Result<Process, ProcessError> {
        let name = program.display().to_string();
        // With util-linux's setpriv the child also dies when this process dies without a
        // chance to kill it (SIGKILL): the kernel sends it SIGKILL when the spawning thread
        // exits. Every owner here holds its process on the thread that started it.
        #[allow(clippy::disallowed_methods)] // this module is the one place that spawns
        let mut cmd = match death_signal_wrapper() {
            Some(setpriv) => {
                let mut c = Command::new(setpriv);
                c.args(["--pdeathsig", "KILL", "--"]).arg(program);
                c
            }
            None => Command::new(program),
        };
        cmd.args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .process_group(0)
            .stdin(if stdin_pipe {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(redirect(&stdout, &name)?)
            .stderr(redirect(&stderr, &name)?);
        if let Some(d) = dir {
            cmd.current_dir(d);
        }
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

/// util-linux's `setpriv`, when the host has one that can set a parent-death signal.
fn death_signal_wrapper() -> Option<&'static Path> {
    static FOUND: OnceLock<Option<&'static Path>> = OnceLock::new();
    *FOUND.get_or_init(|| {
        ["/usr/bin/setpriv", "/bin/setpriv"]
            .into_iter()
            .map(Path::new)
            .find(|p| p.is_file())
    })
}

/// A command run to completion with a deadline: xtask's package managers, compilers and
/// downloads, and the harness's short helpers. Started like every process here (own group,
/// registered for interrupts, killed with its group when the deadline passes).
pub struct Cmd {
    program: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    dir: Option<PathBuf>,
    timeout: Duration,
    quiet: bool,
    stdout_to_stderr: bool,
}

impl Cmd {
    /// `program` (a path, or a name looked up in `PATH`) that may run for at most `timeout`.
    pub fn new(program: impl AsRef<Path>, timeout: Duration) -> Cmd {
        Cmd {
            program: program.as_ref().to_path_buf(),
            args: Vec::new(),
            env: Vec::new(),
            dir: None,
            timeout,
            quiet: false,
            stdout_to_stderr: false,
        }
    }

    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Cmd {
        self.args.push(a.as_ref().to_owned());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    pub fn env(mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> Cmd {
        self.env
            .push((k.as_ref().to_owned(), v.as_ref().to_owned()));
        self
    }

    /// Runs in directory `d`.
    pub fn dir(mut self, d: impl AsRef<Path>) -> Cmd {
        self.dir = Some(d.as_ref().to_path_buf());
        self
    }

    /// Discards the command's stderr (and, for `run`, its stdout).
    pub fn quiet(mut self) -> Cmd {
        self.quiet = true;
        self
    }

    /// Sends the command's stdout to this program's stderr (`run`), so that stdout carries
    /// only results.
    pub fn stdout_to_stderr(mut self) -> Cmd {
        self.stdout_to_stderr = true;
        self
    }

    /// The command line, for messages.
    pub fn line(&self) -> String {
        std::iter::once(self.program.display().to_string())
            .chain(self.args.iter().map(|a| a.to_string_lossy().into_owned()))
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn start(&self, stdout: Output<'_>) -> Result<Process, ProcessError> {
        let stderr = if self.quiet {
            Output::Null
        } else {
            Output::Inherit
        };
        self.spawn(stdout, stderr)
    }

    /// Starts the command with the given output, for an owner that watches it run; the
    /// deadline is the owner's (`Process::wait_until`).
    pub fn spawn(&self, stdout: Output<'_>, stderr: Output<'_>) -> Result<Process, ProcessError> {
        let mut p = Process::start(
            &self.program,
            &self.args,
            &self.env,
            self.dir.as_deref(),
            false,
            stdout,
            stderr,
        )?;
        p.program = self.line();
        Ok(p)
    }

    /// Runs with the output on the user's terminal (or nowhere when quiet); exit status 0
    /// required.
    pub fn run(&self) -> Result<(), ProcessError> {
        let status = self.status()?;
        if status.success() {
            Ok(())
        } else {
            Err(ProcessError::Failed {
                program: self.line(),
                status,
            })
        }
    }

    /// Runs with the output on the user's terminal (or nowhere when quiet); its exit status.
    pub fn status(&self) -> Result<ExitStatus, ProcessError> {
        let mut p = self.start(if self.quiet {
            Output::Null
        } else if self.stdout_to_stderr {
            Output::Stderr
        } else {
            Output::Inherit
        })?;
        p.wait_until(Instant::now() + self.timeout)
    }

    /// Runs capturing stdout; exit status 0 required.
    pub fn read(&self) -> Result<String, ProcessError> {
        let (status, out) = self.capture()?;
        if !status.success() {
            return Err(ProcessError::Failed {
                program: self.line(),
                status,
            });
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// Runs capturing stdout; the exit status and the bytes.
    pub fn capture(&self) -> Result<(ExitStatus, Vec<u8>), ProcessError> {
        let p = self.start(Output::Pipe)?;
        let (status, out, _) = self.collect(p)?;
        Ok((status, out))
    }

    /// Runs capturing stdout and stderr (whatever `quiet` says); the exit status and both.
    pub fn output(&self) -> Result<(ExitStatus, Vec<u8>, Vec<u8>), ProcessError> {
        let p = self.spawn(Output::Pipe, Output::Pipe)?;
        self.collect(p)
    }

    /// Reads the piped outputs of `p` while waiting for it until the deadline.
    fn collect(&self, mut p: Process) -> Result<(ExitStatus, Vec<u8>, Vec<u8>), ProcessError> {
        use std::io::Read;
        fn drain(r: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                if let Some(mut r) = r {
                    let _ = r.read_to_end(&mut buf);
                }
                buf
            })
        }
        let out = drain(p.child.stdout.take());
        let err = drain(p.child.stderr.take());
        let status = p.wait_until(Instant::now() + self.timeout);
        // The pipes close when the group is gone (killed on timeout), so the readers end.
        drop(p);
        let out = out.join().unwrap_or_default();
        let err = err.join().unwrap_or_default();
        Ok((status?, out, err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh() -> &'static Path {
        Path::new("/bin/sh")
    }

    #[test]
    fn captures_output() {
        let (s, out) = Cmd::new(sh(), Duration::from_secs(10))
            .args(["-c", "echo hi"])
            .quiet()
            .capture()
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
        let err = Cmd::new(sh(), Duration::from_millis(500))
            .args(["-c", &script])
            .quiet()
            .capture()
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
    fn cmd_reports_failure_env_and_dir() {
        let d = tempfile::tempdir().unwrap();
        let out = Cmd::new(sh(), Duration::from_secs(10))
            .args(["-c", "echo $BTFGATE_X; pwd"])
            .env("BTFGATE_X", "x1")
            .dir(d.path())
            .read()
            .unwrap();
        let canon = std::fs::canonicalize(d.path()).unwrap();
        assert_eq!(out, format!("x1\n{}\n", canon.display()));
        let e = Cmd::new(sh(), Duration::from_secs(10))
            .args(["-c", "exit 3"])
            .run()
            .unwrap_err();
        assert!(
            matches!(&e, ProcessError::Failed { status, .. } if status.code() == Some(3)),
            "{e}"
        );
        assert!(e.to_string().contains("-c exit 3"), "{e}");
    }

    /// A child outlives neither its owner's death without cleanup (SIGKILL): the thread that
    /// started it ends without killing it, and the kernel's parent-death signal takes it.
    #[test]
    fn a_child_dies_with_the_thread_that_started_it() {
        assert!(
            death_signal_wrapper().is_some(),
            "util-linux's setpriv is missing: children would outlive a SIGKILLed btfgate"
        );
        let pid = std::thread::spawn(|| {
            let p = Process::spawn(sh(), ["-c", "sleep 60"], false, Output::Null, Output::Null)
                .unwrap();
            let pid = p.pid();
            // setpriv sets the signal, then execs: wait for the exec (the command line is the
            // shell's), or this thread could end before the signal was asked for.
            let t0 = Instant::now();
            while std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| !c.starts_with(b"/bin/sh\0"))
                && t0.elapsed() < Duration::from_secs(5)
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            // Leak it: no Drop, no kill; only the parent-death signal can end it.
            std::mem::forget(p);
            pid
        })
        .join()
        .unwrap();
        let gone = |pid: u32| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| s.contains(") Z "))
                .unwrap_or(true)
        };
        let t0 = Instant::now();
        while !gone(pid) && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        live().remove(&(pid as i32));
        assert!(gone(pid), "child {pid} outlived the thread that started it");
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
