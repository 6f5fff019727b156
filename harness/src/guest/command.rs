//! Running a user's command in the package's guest (`cargo xtask run`): the same guest the
//! checks use (the package's kernel, its modules loaded, the recipe's BPF tools), the user's
//! files under `/work`, the command's output streamed line by line as it comes, and the
//! kernel's messages kept apart from it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{start, Params, Phases, Started};
use crate::image::initramfs::{Node, Source};
use crate::image::Recipe;
use crate::kernel::Kernel;
use crate::qemu::accel::Choice;
use crate::qemu::machine::{Ended, Machine, RunError};
use crate::{Error, Result};

/// The phase of copying the user's files into the image.
const COPY: &str = "copy files into the guest";
/// The phase the user's command runs in (named by a timeout).
pub const RUN: &str = "run";

/// How a command run in the guest went.
#[derive(Debug)]
pub struct Ran {
    /// The command's exit status, or how the guest failed (boot, panic, timeout).
    pub status: std::result::Result<i32, RunError>,
    /// Kernel messages printed while the command ran (the console is quiet meanwhile).
    pub kernel_messages: Vec<String>,
    /// Modules that could not be loaded, with modprobe's words.
    pub module_errors: Vec<String>,
    pub accel: Choice,
    pub phases: Vec<(String, f64)>,
    pub transcript: PathBuf,
}

/// `s` as one shell word.
pub(crate) fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The image nodes for `paths`, each under `work/<its name>` (directories walked; links are
/// refused: the guest gets files, not references into the host).
pub fn copy_nodes(paths: &[PathBuf]) -> Result<Vec<Node>> {
    fn walk(host: &Path, guest: &str, out: &mut Vec<Node>) -> Result<()> {
        let meta = std::fs::symlink_metadata(host).map_err(|e| Error::io(host, COPY, e))?;
        if meta.is_dir() {
            let mut entries: Vec<_> = std::fs::read_dir(host)
                .map_err(|e| Error::io(host, COPY, e))?
                .filter_map(|e| e.ok())
                .collect();
            entries.sort_by_key(|e| e.file_name());
            for e in entries {
                let name = e.file_name().to_string_lossy().into_owned();
                walk(&e.path(), &format!("{guest}/{name}"), out)?;
            }
            Ok(())
        } else if meta.is_file() {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o7777;
            out.push(Node::file(guest, mode, Source::Host(host.to_path_buf())));
            Ok(())
        } else {
            Err(Error::bad(
                host,
                COPY,
                "not a regular file or directory (links and devices are not copied)",
            ))
        }
    }
    let mut out = Vec::new();
    for p in paths {
        let name = p
            .file_name()
            .ok_or_else(|| Error::bad(p, COPY, "expected a file or directory with a name"))?
            .to_string_lossy()
            .into_owned();
        walk(p, &format!("work/{name}"), &mut out)?;
    }
    Ok(out)
}

/// A guest booted for a user's commands: the package's kernel, its modules loaded, `/work`
/// made, the console quiet (kernel messages are read from the log, apart from the output).
/// Commands run one after another in the same boot; [`Session::close`] shuts it down (Drop
/// kills QEMU on every other path).
pub struct Session {
    m: Machine,
    ph: Phases,
    /// The deadline of the session's own short commands (modules, kernel messages).
    short: Duration,
    pub accel: Choice,
    /// Modules that could not be loaded, with modprobe's words.
    pub module_errors: Vec<String>,
    pub transcript: PathBuf,
}

/// A guest that did not reach its command loop (or failed while loading modules).
pub struct Failed {
    pub error: RunError,
    pub accel: Choice,
    pub phases: Vec<(String, f64)>,
    pub transcript: PathBuf,
}

/// The guest shell line that runs the user's shell line `cmd` in `/work`, stdin empty, stderr
/// with stdout, its status the line's. A quiet guest runs nothing but the command: a
/// background reader stands in for a real system's daemons (a read of /proc twice a second),
/// so that a probe on a common kernel function (vfs_read) fires as it would on the reporter's
/// machine.
pub(crate) fn in_work(cmd: &str) -> String {
    format!(
        "mkdir -p /work && cd /work && {{ (while :; do head -c 1 /proc/self/stat >/dev/null 2>&1; sleep 0.5; done) & }}; T=$!; eval {} </dev/null 2>&1; R=$?; kill $T 2>/dev/null; wait $T 2>/dev/null; cd /; (exit $R)",
        quote(cmd)
    )
}

/// Checks that `argv` can be sent to the guest, and gives it as one shell line.
pub fn command_line(argv: &[String]) -> Result<String> {
    if argv.is_empty() {
        return Err(Error::failed(RUN, "no command to run"));
    }
    if let Some(a) = argv.iter().find(|a| a.contains(['\n', '\r'])) {
        return Err(Error::failed(
            RUN,
            format!("{a:?}: arguments are single lines (put a script in a file and --copy it)"),
        ));
    }
    Ok(argv.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" "))
}

impl Session {
    /// Boots `k` as [`super::verify`] does and loads `params.modules` (default: the recipe's).
    /// Infrastructure problems are errors; a guest that fails is `Ok(Err(Failed))`.
    pub fn open(
        k: &Kernel,
        recipe: &Recipe,
        params: &Params,
        trial_dir: &Path,
    ) -> Result<std::result::Result<Session, Failed>> {
        let mut ph = Phases::new(params.progress);
        let Started {
            prep,
            choice,
            machine,
            ..
        } = start(k, recipe, params, trial_dir, &mut ph)?;
        let transcript = trial_dir.join("console.log");
        let failed = |error, ph: Phases| Failed {
            error,
            accel: choice.clone(),
            phases: ph.list,
            transcript: transcript.clone(),
        };
        let mut m = match machine {
            Ok(m) => m,
            Err(e) => return Ok(Err(failed(e, ph))),
        };
        let short = params.deadlines.command;
        // Modules first, quietly; then the console is made quiet (kernel messages are read
        // from the log afterwards) and the log's length noted.
        let t = ph.begin("load modules");
        let order = prep.load_order.join(" ");
        let setup = format!(
            "mkdir -p /work; for m in {order}; do modprobe $m >/tmp/mp.err 2>&1 || echo \"MODERR $m $(head -c 200 /tmp/mp.err)\"; done; dmesg -n 1 2>/dev/null; dmesg | wc -l > /tmp/dmesg.n"
        );
        let module_errors = match m.run("load modules", &setup, short) {
            Ok((_, out)) => out
                .lines()
                .filter_map(|l| l.strip_prefix("MODERR "))
                .map(str::to_string)
                .collect(),
            Err(e) => return Ok(Err(failed(e, ph))),
        };
        ph.mark("load modules", t);
        Ok(Ok(Session {
            m,
            ph,
            short,
            accel: choice.clone(),
            module_errors,
            transcript,
        }))
    }

    /// Runs the shell line `cmd` in `/work` (stdin empty, stderr with stdout), handing each
    /// output line to `line` as it comes, within `timeout`; returns its exit status. A timeout
    /// stops QEMU: the session is over after it.
    pub fn run(
        &mut self,
        phase: &str,
        cmd: &str,
        timeout: Duration,
        line: &mut dyn FnMut(&str),
    ) -> std::result::Result<i32, RunError> {
        let t = self.ph.begin(phase);
        let status = self.m.run_streaming(phase, &in_work(cmd), timeout, line);
        self.ph.mark(phase, t);
        status
    }

    /// Kernel messages printed since the modules were loaded (the console is quiet meanwhile).
    pub fn kernel_messages(&mut self) -> Vec<String> {
        self.m
            .run(
                "kernel messages",
                "dmesg | tail -n +$(( $(cat /tmp/dmesg.n) + 1 ))",
                self.short,
            )
            .map(|(_, out)| {
                (out.trim_start_matches('\n').lines())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Shuts the guest down; returns the phase timings.
    pub fn close(mut self) -> Vec<(String, f64)> {
        let t = self.ph.begin("shutdown");
        self.m.shutdown();
        self.ph.mark("shutdown", t);
        self.ph.list
    }

    /// Hands the guest to a person ([`Machine::interact`]): an interactive shell in `/work`
    /// on the console (its controlling terminal, so Ctrl-C reaches the guest's programs),
    /// the image's tools on `PATH`, the kernel's messages on again; leaving that shell ends
    /// the guest.
    pub fn interact(
        &mut self,
        input: &std::sync::mpsc::Receiver<Vec<u8>>,
        out: &mut dyn std::io::Write,
        quit: u8,
    ) -> std::result::Result<Ended, RunError> {
        let t = self.ph.begin("shell");
        let start = "stty sane 2>/dev/null; dmesg -n 7 2>/dev/null; cd /work; export PS1='btfgate:\\w# '; setsid cttyhack sh -i; reboot -f";
        let r = self.m.interact(start, input, out, quit);
        self.ph.mark("shell", t);
        r
    }
}

/// Boots `k` as [`super::verify`] does, loads `params.modules` (default: the recipe's), runs
/// `argv` in `/work` with the image's tools on `PATH`, handing each output line to `line` as
/// it comes, within `timeout`, and shuts the guest down. Kernel messages printed meanwhile are
/// returned apart.
pub fn run_command(
    k: &Kernel,
    recipe: &Recipe,
    params: &Params,
    argv: &[String],
    timeout: Duration,
    trial_dir: &Path,
    line: &mut dyn FnMut(&str),
) -> Result<Ran> {
    let cmd = command_line(argv)?;
    let mut s = match Session::open(k, recipe, params, trial_dir)? {
        Ok(s) => s,
        Err(f) => {
            return Ok(Ran {
                status: Err(f.error),
                kernel_messages: Vec::new(),
                module_errors: Vec::new(),
                accel: f.accel,
                phases: f.phases,
                transcript: f.transcript,
            })
        }
    };
    let status = s.run(RUN, &cmd, timeout, line);
    let kernel_messages = if status.is_ok() {
        s.kernel_messages()
    } else {
        Vec::new()
    };
    let (accel, module_errors, transcript) = (
        s.accel.clone(),
        s.module_errors.clone(),
        s.transcript.clone(),
    );
    let phases = s.close();
    Ok(Ran {
        status,
        kernel_messages,
        module_errors,
        accel,
        phases,
        transcript,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_quoted_for_the_guest_shell() {
        assert_eq!(quote("bpftrace"), "bpftrace");
        assert_eq!(quote("-e"), "-e");
        assert_eq!(
            quote("kfunc:vmlinux:vfs_read { @[comm] = count(); exit(); }"),
            "'kfunc:vmlinux:vfs_read { @[comm] = count(); exit(); }'"
        );
        assert_eq!(quote("it's"), "'it'\\''s'");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("$(reboot)"), "'$(reboot)'");
    }

    #[test]
    fn copies_go_under_work_and_links_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("repro");
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("a.bt"), b"x").unwrap();
        std::fs::write(dir.join("sub/b.sh"), b"y").unwrap();
        let nodes = copy_nodes(std::slice::from_ref(&dir)).unwrap();
        let paths: Vec<&str> = nodes.iter().map(|n| n.path()).collect();
        assert_eq!(paths, ["work/repro/a.bt", "work/repro/sub/b.sh"]);
        std::os::unix::fs::symlink("/etc/passwd", dir.join("evil")).unwrap();
        let e = copy_nodes(&[dir]).unwrap_err().to_string();
        assert!(
            e.contains("evil") && e.contains("not a regular file"),
            "{e}"
        );
    }
}
