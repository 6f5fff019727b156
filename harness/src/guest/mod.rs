//! The runtime half: prepare the guest (kernel to boot, image with the package's own modules),
//! choose the accelerator, boot QEMU, and run the guest checks, every phase timed.

use crate::checks::guest as gc;
use crate::checks::Check;
use crate::image::initramfs::Node;
use crate::image::Recipe;
use crate::kernel::Kernel;
use crate::qemu::accel;
use crate::qemu::accel::Choice;
use crate::qemu::args::cpus as cpus_for;
use crate::qemu::args::Accel;
use crate::qemu::args::Spec;
use crate::qemu::machine::Deadlines;
use crate::qemu::machine::Machine;
use crate::qemu::machine::RunError;
use crate::{Error, Result};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;
use std::time::Instant;

pub use crate::checks::guest::{ModuleProbe, Prepared};
pub use command::{command_line, copy_nodes, run_command, Failed, Ran, Session};
pub use floor::boot_floor;
pub use load_order::{find_module, load_order};
pub use prepare::{missing_host_tools, prepare, qemu_binary};

mod command;
mod floor;
mod load_order;
pub mod matrix;
mod prepare;

/// The phase of what [`verify`] does on the host before the boot.
const PREPARE: &str = "prepare guest";

/// What a runtime verification is asked to do.
#[derive(Debug, Clone)]
pub struct Params {
    /// Modules to load and check (`None`: the recipe's list).
    pub modules: Option<Vec<String>>,
    /// Force an accelerator (`None`: probe KVM, fall back to TCG).
    pub accel: Option<Accel>,
    /// Mount an empty tmpfs over /sys/kernel/btf before the checks (a control: libbpf and
    /// bpftool read sysfs, bpftrace does not).
    pub hide_sysfs_btf: bool,
    /// Make kernel headers reachable in the guest before the checks (a control: guest.bpftrace
    /// must then refuse to call its result proof that BTF was used).
    pub plant_headers: bool,
    /// Extra kernel command line (controls: a bad `rdinit=` to force a panic or a hang).
    pub append: Vec<String>,
    pub deadlines: Deadlines,
    pub memory_mb: u32,
    /// vCPUs (`None`: [`crate::qemu::args::cpus`]: `$BTFGATE_VCPUS`, else by the accelerator
    /// and QEMU used).
    pub cpus: Option<u32>,
    /// Called with each phase name as it starts (progress display).
    pub progress: Option<fn(&str, Duration)>,
    /// The module kfunc guest.bpftrace attaches.
    pub module_probe: ModuleProbe,
    /// Files put into the image besides the recipe's (`xtask run --copy`: under `work/`).
    pub extra: Vec<Node>,
    /// A scenario's own commands (`guest.run`), run after the other checks.
    pub user: Vec<gc::UserCommand>,
    /// The guest checks to run and report (`None`: all of them). The modules are loaded
    /// whatever is listed (a scenario's own commands may need them); a check not listed costs
    /// nothing, so a scenario that lists only `guest.run` does not wait for bpftrace.
    pub only: Option<Vec<&'static str>>,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            modules: None,
            accel: None,
            hide_sysfs_btf: false,
            plant_headers: false,
            append: Vec::new(),
            deadlines: Deadlines::default(),
            memory_mb: 2048,
            cpus: None,
            progress: None,
            module_probe: ModuleProbe::default(),
            extra: Vec::new(),
            user: Vec::new(),
            only: None,
        }
    }
}

impl Params {
    /// Whether the guest runs anything but busybox: a check that starts bpftrace, bpftool or
    /// the CO-RE tool, or commands of a scenario or a user (which may call any tool, and read
    /// the files copied in). Without, the image holds busybox, the init and the modules alone:
    /// the kernel copies every byte of an initramfs before init runs, and the recipe's tools
    /// (bpftrace's LLVM, clang, ICU, z3) are ~200 MB, ~2 s of a boot under TCG.
    pub fn runs_tools(&self) -> bool {
        let tool = |id: &&str| [gc::BPFTRACE, gc::BPFTOOL, gc::CORE].contains(id);
        !self.user.is_empty()
            || !self.extra.is_empty()
            || self.only.as_ref().is_none_or(|o| o.iter().any(tool))
    }
}

/// The result of a runtime verification.
#[derive(Debug)]
pub struct Report {
    pub checks: Vec<Check>,
    pub accel: Option<Choice>,
    /// (phase, seconds), in order.
    pub phases: Vec<(String, f64)>,
    pub trial_dir: PathBuf,
    pub transcript: PathBuf,
    /// The last console lines when something failed.
    pub console_tail: String,
}

/// A word only this run uses (guest.core execs `/bin/true <token>` and must see that exec):
/// `btfgate` and hex digits of the time and the process id.
fn run_token(trial_dir: &Path) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut h = Sha256::new();
    h.update(trial_dir.to_string_lossy().as_bytes());
    h.update(nanos.to_le_bytes());
    h.update(std::process::id().to_le_bytes());
    format!("btfgate{}", &hex::encode(h.finalize())[..12])
}

/// The `-name` of the QEMU of the run in `trial_dir`: `btfgate-<dir name>`.
pub fn qemu_name(trial_dir: &Path) -> String {
    format!(
        "btfgate-{}",
        trial_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    )
}

/// Processes whose command line contains `needle` (to prove no QEMU outlived its run).
pub fn processes_matching(needle: &str) -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(needle))
                .unwrap_or(false)
        })
        .collect()
}

/// The fields of `/proc/<pid>/stat` after the command name (state, ppid, …).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// Children of `parent` whose command line contains `needle`.
pub fn children_matching(parent: u32, needle: &str) -> Vec<u32> {
    processes_matching(needle)
        .into_iter()
        .filter(|pid| {
            stat_fields(*pid).and_then(|f| f.get(1).and_then(|p| p.parse::<u32>().ok()))
                == Some(parent)
        })
        .collect()
}

/// Whether process `pid` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    stat_fields(pid).is_some_and(|f| f.first().is_some_and(|s| s != "Z"))
}

/// Phase timings of a run, and the progress display.
pub(crate) struct Phases {
    t0: Instant,
    pub(crate) list: Vec<(String, f64)>,
    progress: Option<fn(&str, Duration)>,
}

impl Phases {
    pub(crate) fn new(progress: Option<fn(&str, Duration)>) -> Phases {
        Phases {
            t0: Instant::now(),
            list: Vec::new(),
            progress,
        }
    }

    /// Says `name` starts; returns its start time for [`Phases::mark`].
    pub(crate) fn begin(&self, name: &str) -> Instant {
        if let Some(f) = self.progress {
            f(name, self.t0.elapsed());
        }
        Instant::now()
    }

    pub(crate) fn mark(&mut self, name: &str, since: Instant) {
        self.list
            .push((name.to_string(), since.elapsed().as_secs_f64()));
    }
}

/// A guest started for a run: what was prepared, how it was booted, and the machine at its
/// command loop (or how the boot failed).
pub(crate) struct Started {
    pub(crate) prep: Prepared,
    pub(crate) spec: Spec,
    pub(crate) choice: Choice,
    pub(crate) machine: std::result::Result<Machine, RunError>,
}

/// Prepares the guest (the package's kernel, its modules, the recipe's tools, `params.extra`),
/// chooses the accelerator and boots. Infrastructure problems (no qemu, nothing to boot) are
/// errors; a boot that fails is [`Started::machine`]'s error.
pub(crate) fn start(
    k: &Kernel,
    recipe: &Recipe,
    params: &Params,
    trial_dir: &Path,
    phases: &mut Phases,
) -> Result<Started> {
    let missing = missing_host_tools(recipe);
    if !missing.is_empty() {
        return Err(Error::failed(PREPARE, format!(
            "missing host programs: {} (Debian: apt-get install qemu-system-x86 busybox-static bpftrace bpftool libbpf-tools)",
            missing.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        )));
    }
    std::fs::create_dir_all(trial_dir).map_err(|e| Error::io(trial_dir, PREPARE, e))?;
    let t = phases.begin("prepare image");
    let prep = prepare(k, recipe, params)?;
    phases.mark("prepare image", t);
    let version = accel::qemu_version(&qemu_binary());
    let cpus = |a: Accel| params.cpus.unwrap_or_else(|| cpus_for(a, version));
    // The spec as the KVM probe boots it; the accelerator chosen then decides.
    let mut spec = Spec {
        accel: Accel::Kvm,
        boot: prep.boot.clone(),
        initrd: prep.initrd.clone(),
        append: params.append.clone(),
        memory_mb: params.memory_mb,
        cpus: cpus(Accel::Kvm),
        name: qemu_name(trial_dir),
    };
    let choice = match params.accel {
        Some(a) => Choice {
            accel: a,
            reason: format!("{} forced with --accel", a.name()),
        },
        None => {
            let t = phases.begin("probe kvm");
            let c = accel::probe(&qemu_binary(), &spec, trial_dir);
            phases.mark("probe kvm", t);
            c
        }
    };
    spec.accel = choice.accel;
    spec.cpus = cpus(choice.accel);
    let t = phases.begin("boot");
    let machine = Machine::boot(&qemu_binary(), &spec, trial_dir, &params.deadlines);
    phases.mark("boot", t);
    Ok(Started {
        prep,
        spec,
        choice,
        machine,
    })
}

/// Runs a scenario's own commands one after another (a timeout ends the guest: the rest are
/// not run) and judges them.
fn user_commands(list: &[gc::UserCommand], m: &mut Machine) -> Check {
    let mut results = Vec::new();
    for cmd in list {
        let mut seen = gc::Seen::default();
        let status = m.run_streaming(
            gc::RUN,
            &command::in_work(&cmd.line),
            cmd.timeout,
            &mut |l| seen.line(cmd, l),
        );
        let stop = status.is_err();
        results.push((cmd, status, seen));
        if stop {
            break;
        }
    }
    let mut c = gc::judge_user(&results);
    if results.len() < list.len() {
        c = Check::fail(
            gc::RUN,
            format!("{}; the later commands were not run", c.detail),
        )
        .with_evidence(c.evidence);
    }
    c
}

/// Boots the package's kernel and runs the guest checks (all, or those `params.only` names;
/// the modules are loaded either way), then the scenario's own commands. Infrastructure problems (no qemu,
/// nothing to boot) are errors; everything the guest does or fails to do is a check result.
pub fn verify(k: &Kernel, recipe: &Recipe, params: &Params, trial_dir: &Path) -> Result<Report> {
    let mut ph = Phases::new(params.progress);
    let Started {
        prep,
        spec,
        choice,
        machine,
    } = start(k, recipe, params, trial_dir, &mut ph)?;
    let transcript = trial_dir.join("console.log");
    let mut m = match machine {
        Ok(m) => m,
        Err(e) => {
            let tail = e.tail().to_string();
            let mut checks = gc::not_booted(&e);
            if !params.user.is_empty() {
                checks.push(Check::fail(gc::RUN, "not run: the guest did not boot"));
            }
            return Ok(Report {
                checks,
                accel: Some(choice),
                phases: ph.list,
                trial_dir: trial_dir.to_path_buf(),
                transcript,
                console_tail: tail,
            });
        }
    };
    let wants = |id: &str| params.only.as_ref().is_none_or(|l| l.contains(&id));
    let mut checks = vec![gc::booted(&m, &spec)];
    let run = gc::Runner {
        bpftool: wants(gc::BPFTOOL),
        bpftrace: wants(gc::BPFTRACE),
        core: wants(gc::CORE),
        prep: &prep,
        k,
        hide_sysfs_btf: params.hide_sysfs_btf,
        plant_headers: params.plant_headers,
        token: run_token(trial_dir),
        command: params.deadlines.command,
        module_probe: &params.module_probe,
    };
    let mut failed_run: Option<RunError> = None;
    let t = ph.begin("setup");
    if let Err(e) = gc::setup(&run, &mut m) {
        failed_run = Some(e);
    }
    ph.mark("setup", t);
    let not_run = |e: &RunError| format!("not run: the guest stopped answering ({e})");
    for (name, step) in gc::STEPS {
        // guest.btf_modules is the step that loads the modules: it runs even when not listed.
        let listed = wants(name);
        if !listed && name != gc::BTF_MODULES {
            continue;
        }
        if let Some(e) = &failed_run {
            checks.push(Check::fail(name, not_run(e)));
            continue;
        }
        let t = ph.begin(name);
        match step(&run, &mut m) {
            Ok(c) if listed => checks.push(c),
            Ok(_) => {}
            Err(e) => {
                checks.push(
                    Check::fail(name, e.to_string())
                        .with_evidence(e.tail().lines().map(str::to_string).collect()),
                );
                failed_run = Some(e);
            }
        }
        ph.mark(name, t);
    }
    if !params.user.is_empty() {
        let t = ph.begin(gc::RUN);
        checks.push(match &failed_run {
            Some(e) => Check::fail(gc::RUN, not_run(e)),
            None => user_commands(&params.user, &mut m),
        });
        ph.mark(gc::RUN, t);
    }
    let mut checks: Vec<Check> = checks.into_iter().map(crate::checks::settle).collect();
    // Report in catalogue order, whatever order they ran in.
    let order = gc::ids();
    checks.sort_by_key(|c| {
        order
            .iter()
            .position(|id| *id == c.id)
            .unwrap_or(usize::MAX)
    });
    let console_tail = if checks
        .iter()
        .any(|c| c.status == crate::checks::Status::Fail)
    {
        m.tail(40)
    } else {
        String::new()
    };
    let t = ph.begin("shutdown");
    m.shutdown();
    ph.mark("shutdown", t);
    Ok(Report {
        checks,
        accel: Some(choice),
        phases: ph.list,
        trial_dir: trial_dir.to_path_buf(),
        transcript,
        console_tail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tools_are_left_out_only_when_nothing_runs_them() {
        let only = |ids: &[&'static str]| Params {
            only: Some(ids.to_vec()),
            ..Params::default()
        };
        assert!(Params::default().runs_tools());
        assert!(!only(&[gc::BOOT, gc::BTF_MODULES, gc::BTF_VMLINUX, gc::DMESG]).runs_tools());
        for tool in [gc::BPFTRACE, gc::BPFTOOL, gc::CORE] {
            assert!(only(&[gc::BOOT, tool]).runs_tools(), "{tool}");
        }
        let user = Params {
            user: vec![gc::UserCommand {
                origin: "t.yaml:1".into(),
                line: "bpftrace x.bt".into(),
                expect_status: 0,
                expect_output: None,
                reject_output: None,
                timeout: Duration::from_secs(1),
            }],
            ..only(&[gc::BOOT])
        };
        assert!(user.runs_tools());
        let copied = Params {
            extra: vec![Node::file(
                "work/x",
                0o644,
                crate::image::initramfs::Source::Bytes(Vec::new()),
            )],
            ..only(&[gc::BOOT])
        };
        assert!(copied.runs_tools());
    }
}
