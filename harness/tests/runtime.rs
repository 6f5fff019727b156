//! Runtime controls: on real Debian kernels booted in QEMU, the guest checks FAIL when the guest
//! cannot provide them (a module the package lacks, BTF hidden from
//! the sysfs/libbpf path, a module whose BTF the kernel rejects, a forced kernel panic, a hung
//! init). No QEMU survives any trial. The passing runs on the same kernels are the scenarios'
//! `runtime/btf` trials (`debian-cloud`, `debian-generic`): booting them here again would
//! prove nothing more.
//! Trials needing qemu, the guest tools or a fetched kernel are listed as ignored with the reason.

#![allow(clippy::unwrap_used)]

#[macro_use]
mod support;

use support::R;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use harness::checks::guest as gid;
use harness::checks::{static_, Check, Status};
use harness::fixtures::{host_kernel, needs, Flavor};
use harness::guest::{self, Params, Report};
use harness::image::Recipe;
use harness::kernel::Kernel;
use harness::mutate;
use harness::package::{extract::extract, ReadOptions};
use harness::qemu::args::Accel;
use harness::qemu::machine::Deadlines;
use libtest_mimic::{Arguments, Failed, Trial};

static WORK: OnceLock<std::path::PathBuf> = OnceLock::new();

fn work() -> &'static std::path::Path {
    WORK.get().unwrap()
}

fn kernel(f: Flavor) -> &'static Kernel {
    static K: [OnceLock<Kernel>; 2] = [OnceLock::new(), OnceLock::new()];
    K[f as usize]
        .get_or_init(|| Kernel::load(&host_kernel(f).unwrap(), &ReadOptions::default()).unwrap())
}

fn recipe() -> Recipe {
    Recipe::builtin("btf").unwrap()
}

/// Runs the runtime verification in a fresh trial directory and proves no QEMU is left.
fn run(f: Flavor, name: &str, params: Params) -> Result<Report, Failed> {
    run_kernel(kernel(f), &format!("{name}-{}", f.name()), params)
}

fn run_kernel(k: &Kernel, name: &str, params: Params) -> Result<Report, Failed> {
    let dir = work().join(name);
    let r = guest::verify(k, &recipe(), &params, &dir)?;
    let left = guest::processes_matching(&guest::qemu_name(&dir));
    if !left.is_empty() {
        return Err(format!("qemu processes survived the trial: {left:?}").into());
    }
    Ok(r)
}

fn status(r: &Report, id: &str) -> Result<(Status, String), Failed> {
    let c: &Check = r
        .checks
        .iter()
        .find(|c| c.id == id)
        .ok_or(format!("no {id} in the report"))?;
    Ok((
        c.status,
        format!(
            "{}: {:?} {}\n{}",
            c.id,
            c.status,
            c.detail,
            c.evidence.join("\n")
        ),
    ))
}

fn expect(r: &Report, id: &str, want: Status) -> R {
    let (s, text) = status(r, id)?;
    if s != want {
        return Err(format!(
            "expected {want:?}; {text}\nconsole tail:\n{}\ntranscript {}",
            r.console_tail,
            r.transcript.display()
        )
        .into());
    }
    Ok(())
}

/// `expect`, and the check's text must say `needle`.
fn expect_saying(r: &Report, id: &str, want: Status, needle: &str) -> R {
    expect(r, id, want)?;
    let (_, text) = status(r, id)?;
    if !text.contains(needle) {
        return Err(format!(
            "{id} does not say {needle:?}: {text}\nconsole tail:\n{}\ntranscript {}",
            r.console_tail,
            r.transcript.display()
        )
        .into());
    }
    Ok(())
}

fn tcg() -> Params {
    // Forced here so every trial does not pay the probe; the probe has its own trial.
    Params {
        accel: Some(Accel::Tcg),
        ..Params::default()
    }
}

/// `tcg()` running only the checks `ids` (and guest.boot): a control that reads no BPF tool
/// boots the image without them (busybox and the modules), as a scenario listing only those
/// checks does.
fn tcg_only(ids: &[&'static str]) -> Params {
    let mut only = vec![gid::BOOT];
    only.extend_from_slice(ids);
    let p = Params {
        only: Some(only),
        ..tcg()
    };
    assert!(!p.runs_tools(), "{ids:?} start a tool");
    p
}

fn missing_module(f: Flavor) -> R {
    let p = Params {
        modules: Some(vec!["dummy".into(), "btfgate_no_such_module".into()]),
        ..tcg_only(&[gid::BTF_VMLINUX, gid::BTF_MODULES])
    };
    let r = run(f, "missing-module", p)?;
    expect(&r, "guest.btf_modules", Status::Fail)?;
    let (_, text) = status(&r, "guest.btf_modules")?;
    if !text.contains("btfgate_no_such_module is not in the package") {
        return Err(format!("failure does not name the module: {text}").into());
    }
    expect(&r, "guest.btf_vmlinux", Status::Pass)
}

fn hidden_sysfs_btf(f: Flavor) -> R {
    let p = Params {
        hide_sysfs_btf: true,
        modules: Some(vec!["dummy".into()]),
        ..tcg()
    };
    let r = run(f, "hidden-btf", p)?;
    expect(&r, "guest.btf_vmlinux", Status::Fail)?;
    expect(&r, "guest.bpftool", Status::Fail)?;
    expect(&r, "guest.core", Status::Fail)?;
    // bpftrace loads kernel BTF through the bpf() syscall, not sysfs (measured here on both Debian kernels): it still works.
    expect(&r, "guest.bpftrace", Status::Pass)
}

/// The real package's `boot/` and `dummy.ko` unpacked into a fresh directory `<name>-<flavour>`
/// (a small package to mutate): the directory and the paths written, relative to it.
fn boot_and_dummy(
    f: Flavor,
    name: &str,
) -> Result<(std::path::PathBuf, Vec<std::path::PathBuf>), Failed> {
    let dir = work().join(format!("{name}-{}", f.name()));
    let keep = |p: &std::path::Path| {
        p.starts_with("boot") || (p.starts_with("lib/modules") && p.ends_with("dummy.ko"))
    };
    let (_, written) = extract(&host_kernel(f)?, &ReadOptions::default(), &dir, &keep)?;
    Ok((dir, written))
}

/// A module whose split BTF the kernel rejects (a name offset past every string table, what a
/// module built against another vmlinux gives), made from the real package's
/// `dummy.ko` with its signature stripped so it still loads. Debian sets
/// `MODULE_ALLOW_BTF_MISMATCH=y`: the module loads without `/sys/kernel/btf/dummy` and dmesg
/// says `failed to validate module [dummy] BTF: -22`.
fn rejected_module_btf(f: Flavor) -> R {
    let opts = ReadOptions::default();
    let (dir, written) = boot_and_dummy(f, "rejected-btf-package")?;
    let ko = written
        .iter()
        .find(|p| p.ends_with("dummy.ko"))
        .map(|p| dir.join(p))
        .ok_or("the package has no dummy.ko")?;
    let mut bytes = std::fs::read(&ko).map_err(|e| format!("{}: {e}", ko.display()))?;
    if !mutate::strip_module_signature(&mut bytes)? {
        return Err("Debian modules are signed; dummy.ko has no signature to strip".into());
    }
    mutate::break_split_btf(&mut bytes)?;
    std::fs::write(&ko, bytes)?;
    let k = Kernel::load(&dir, &opts)?;
    let base = static_::run("modules.btf_base", &k, &static_::StaticParams::default())
        .ok_or("no modules.btf_base")?;
    if base.status != Status::Fail {
        return Err(format!(
            "modules.btf_base let the broken module through: {}",
            base.detail
        )
        .into());
    }
    let p = Params {
        modules: Some(vec!["dummy".into()]),
        ..tcg_only(&[gid::BTF_VMLINUX, gid::BTF_MODULES, gid::DMESG])
    };
    let r = run_kernel(&k, &format!("rejected-btf-{}", f.name()), p)?;
    expect(&r, "guest.btf_vmlinux", Status::Pass)?;
    expect_saying(
        &r,
        "guest.btf_modules",
        Status::Fail,
        "/sys/kernel/btf/dummy missing",
    )?;
    expect_saying(
        &r,
        "guest.dmesg",
        Status::Fail,
        "failed to validate module [dummy] BTF",
    )
}

/// Kernel headers reachable in the guest (a build tree by release, as a linux-headers package
/// installs) and an empty module list, in one boot: bpftrace's "no headers" claim and
/// guest.btf_modules both fail; the checks that do not depend on either still pass.
fn headers_and_no_modules(f: Flavor) -> R {
    let p = Params {
        plant_headers: true,
        modules: Some(Vec::new()),
        ..tcg()
    };
    let r = run(f, "headers", p)?;
    expect_saying(
        &r,
        "guest.bpftrace",
        Status::Fail,
        "headers present: cannot prove BTF was used (/lib/modules/",
    )?;
    expect_saying(
        &r,
        "guest.btf_modules",
        Status::Fail,
        "checking nothing is not a pass",
    )?;
    expect(&r, "guest.btf_vmlinux", Status::Pass)?;
    expect(&r, "guest.dmesg", Status::Pass)
}

/// The same kernel with `task_struct.real_parent` renamed in its BTF (vmlinux rebuilt; booted
/// through PVH from the vmlinux the package now holds): execsnoop relocates that field, so
/// guest.core fails, while the kernel's own BTF checks still pass.
fn core_field_missing(f: Flavor) -> R {
    let opts = ReadOptions::default();
    let (dir, written) = boot_and_dummy(f, "no-real-parent")?;
    let img = written
        .iter()
        .find(|p| p.starts_with("boot") && p.to_string_lossy().contains("vmlinuz"))
        .map(|p| dir.join(p))
        .ok_or("the package has no boot/vmlinuz")?;
    let bytes = std::fs::read(&img)?;
    let (_, mut vmlinux) = harness::kernel::bzimage::extract_vmlinux(&bytes)?;
    mutate::rename_btf_name(&mut vmlinux, "real_parent", "real_parenX")?;
    std::fs::write(&img, mutate::replace_vmlinux(&bytes, &vmlinux)?)?;
    let k = Kernel::load(&dir, &opts)?;
    let p = Params {
        modules: Some(vec!["dummy".into()]),
        ..tcg()
    };
    let r = run_kernel(&k, &format!("no-real-parent-{}", f.name()), p)?;
    expect(&r, "guest.btf_vmlinux", Status::Pass)?;
    expect(&r, "guest.core", Status::Fail)?;
    let (_, text) = status(&r, "guest.core")?;
    ensure!(
        text.contains("real_parent") || text.contains("no matching targets"),
        "guest.core fails without naming the relocation: {text}"
    );
    Ok(())
}

fn forced_panic(f: Flavor) -> R {
    let t0 = Instant::now();
    // Every check is reported failed however few were asked for: the guest never answered.
    let p = Params {
        append: vec!["rdinit=/btfgate/no/such/init".into()],
        ..tcg_only(&[])
    };
    let r = run(f, "panic", p)?;
    expect(&r, "guest.boot", Status::Fail)?;
    let (_, text) = status(&r, "guest.boot")?;
    if !text.contains("kernel panic") || !text.contains("Kernel panic") {
        return Err(format!("panic not reported as such, with its console tail: {text}").into());
    }
    for id in harness::checks::guest::ids().into_iter().skip(1) {
        expect(&r, id, Status::Fail)?;
    }
    if t0.elapsed() > Duration::from_secs(90) {
        return Err(format!("a panic took {:?} to end the run", t0.elapsed()).into());
    }
    Ok(())
}

fn hung_init(f: Flavor) -> R {
    let t0 = Instant::now();
    let p = Params {
        // busybox as init runs the applet named by the arguments after "--": sleep forever.
        append: vec![
            "rdinit=/bin/busybox".into(),
            "--".into(),
            "sleep".into(),
            "100000".into(),
        ],
        // Any deadline ends a boot whose init never answers, and the phase named must be the
        // boot. Until it expires the idle guest holds a VM slot; this one is longer than the
        // slim cloud guest's whole boot here (3-4 s under TCG), so the kernel does start.
        deadlines: Deadlines {
            boot: Duration::from_secs(6),
            ..Deadlines::default()
        },
        ..tcg_only(&[])
    };
    let r = run(f, "hung", p)?;
    expect(&r, "guest.boot", Status::Fail)?;
    let (_, text) = status(&r, "guest.boot")?;
    if !text.contains("TIMEOUT in phase boot") {
        return Err(format!("a hung init must end as a TIMEOUT naming the phase: {text}").into());
    }
    if t0.elapsed() > Duration::from_secs(60) {
        return Err(format!("the hung trial took {:?}", t0.elapsed()).into());
    }
    Ok(())
}

/// The probe's choice is the accelerator the guest really booted with (guest.boot's evidence),
/// and its reason fits the choice: KVM only after a probe boot, TCG with why KVM was refused
/// (on this machine: /dev/kvm missing, or QEMU aborting with "failed to set MSR").
fn kvm_probe_falls_back(f: Flavor) -> R {
    let p = Params {
        modules: Some(vec!["dummy".into()]),
        accel: None,
        ..tcg_only(&[])
    };
    let r = run(f, "probe", p)?;
    let c = r.accel.as_ref().ok_or("no accelerator choice reported")?;
    expect(&r, "guest.boot", Status::Pass)?;
    let (_, boot) = status(&r, "guest.boot")?;
    ensure!(
        boot.contains(&format!("accelerator {},", c.accel.name())),
        "the probe chose {} but the guest booted otherwise: {boot}",
        c.accel.name()
    );
    match c.accel {
        Accel::Kvm => ensure!(c.reason.contains("KVM booted"), "{}", c.reason),
        Accel::Tcg => {
            let kvm_opens = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/kvm")
                .is_ok();
            let why = if kvm_opens {
                "does not work here ("
            } else {
                "cannot be opened"
            };
            ensure!(
                c.reason.contains(why) && c.reason.contains("using TCG"),
                "TCG chosen without the reason this machine gives ({why:?}): {}",
                c.reason
            );
        }
    }
    Ok(())
}

/// `cargo test` interrupted during a runtime trial: this test binary, run on one runtime trial
/// (as cargo runs it, with its own temporary directory), gets `sig` once the trial's QEMU runs.
/// It exits 128 + sig naming what it interrupted, and 2 s later neither its QEMU nor its
/// temporary trial directory is left.
fn interrupted_trial(sig: nix::sys::signal::Signal) -> R {
    use harness::process::{Cmd, Output};
    let exe = std::env::current_exe()?;
    let tmp = tempfile::tempdir()?;
    let err = tempfile::NamedTempFile::new()?;
    let mut p = Cmd::new(&exe, Duration::from_secs(300))
        .args(["runtime::control::missing_module_fails::cloud", "--exact"])
        .env("TMPDIR", tmp.path())
        .spawn(Output::Null, Output::File(err.path()))?;
    let stderr =
        || String::from_utf8_lossy(&std::fs::read(err.path()).unwrap_or_default()).into_owned();
    let t0 = Instant::now();
    let qemu = loop {
        let mine = guest::children_matching(p.pid(), "\0-name\0btfgate-");
        if let Some(q) = mine.first() {
            break *q;
        }
        ensure!(
            t0.elapsed() < Duration::from_secs(240) && p.try_status()?.is_none(),
            "the trial started no QEMU: {}",
            stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(Duration::from_secs(1));
    let trial_dirs = std::fs::read_dir(tmp.path())?.count();
    ensure!(
        trial_dirs > 0,
        "the trial made no temporary directory in its TMPDIR"
    );
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(p.pid() as i32), sig)?;
    let status = p.wait_until(Instant::now() + Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(2));
    let qemu_left = guest::processes_matching("qemu-system").contains(&qemu);
    if qemu_left {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(qemu as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let status = status?;
    let want = 128 + sig as i32;
    ensure!(
        status.code() == Some(want),
        "the test binary exited {status} after {sig}, not {want}: {}",
        stderr()
    );
    let said = stderr();
    ensure!(
        said.contains(&format!("interrupted by {sig}")) && said.contains("qemu-system"),
        "the test binary does not say what it interrupted: {said}"
    );
    ensure!(
        !qemu_left,
        "QEMU {qemu} still runs 2 s after the test binary got {sig}"
    );
    let left: Vec<_> = std::fs::read_dir(tmp.path())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    ensure!(
        left.is_empty(),
        "temporary files left after {sig}: {left:?}"
    );
    Ok(())
}

/// A reporter's reproducer, run as `BTFGATE_SCENARIOS=DIR cargo test` runs it: a scenario
/// directory of its own (no targets.yaml: the repository's targets) asking the no-BTF tiny
/// kernel to pass `guest.run` with the repository's bpftrace script. The trial must fail, and
/// its message must carry bpftrace's own error and the script's status.
fn user_run_quotes_the_tools_error() -> R {
    let root = harness::paths::workspace_root().join("scenarios/runtime");
    let d = work().join("reporter");
    std::fs::create_dir_all(d.join("runtime"))?;
    std::fs::copy(
        root.join("reproducer/vfs_read.bt"),
        d.join("runtime/vfs_read.bt"),
    )?;
    std::fs::write(
        d.join("runtime/repro.yaml"),
        "targets: [tiny-nobtf]\nexpect: pass\nchecks:\n  guest.run:\n    - command: bpftrace vfs_read.bt\n      copy: [vfs_read.bt]\n      expect_output: '^@reads: [1-9]'\n",
    )?;
    let suite = harness::scenario::load::load(&d).map_err(|e| e.join("\n"))?;
    let kernels = harness::scenario::run::Kernels::default();
    let name = "runtime/repro::tiny-nobtf";
    let e = match harness::scenario::run::run(
        &suite,
        &suite.scenarios[0],
        "tiny-nobtf",
        &kernels,
        name,
    ) {
        Ok(()) => return Err("the reproducer passed on a kernel without BTF".into()),
        Err(e) => e.to_string(),
    };
    for needle in [
        "repro.yaml:5: guest.run on tiny-nobtf: expected pass, seen fail",
        "`bpftrace vfs_read.bt`",
        "exited 1, expected 0",
        "ERROR:",
    ] {
        if !e.contains(needle) {
            return Err(format!("the failure does not say {needle:?}:\n{e}").into());
        }
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    harness::fixtures::one_vcpu_per_guest();
    harness::process::exit_on_interrupt("runtime tests").expect("install the interrupt handler");
    // Trials run on as many threads as libtest-mimic chooses; how many guests run at once is
    // decided by the VM slots (one per host core, shared with every other process).
    let args = Arguments::from_args();
    // Registered, so an interrupt removes it with the trials' logs.
    let scratch = harness::scratch::tempdir_in(&std::env::temp_dir(), "btfgate-runtime-").unwrap();
    WORK.set(scratch.path().to_path_buf()).unwrap();
    let tools = harness::fixtures::runtime_tools();
    let mut trials = Vec::new();
    for f in Flavor::ALL {
        let need = host_kernel(f)
            .map(|_| ())
            .map_err(|e| e.to_string())
            .and(tools.clone());
        let n = f.name();
        let t = |name: &str, run: fn(Flavor) -> R| {
            needs(Trial::test(format!("{name}::{n}"), move || run(f)), &need)
        };
        if f == Flavor::Generic {
            // xz payload, CONFIG_PVH: booted from the vmlinux the package holds, as mutated.
            trials.push(t(
                "runtime::control::core_relocated_field_missing_fails",
                core_field_missing,
            ));
        }
        if f == Flavor::Cloud {
            // The controls boot the faster (lz4) kernel.
            trials.push(t("runtime::control::missing_module_fails", missing_module));
            trials.push(t(
                "runtime::control::hidden_sysfs_btf_fails",
                hidden_sysfs_btf,
            ));
            trials.push(t(
                "runtime::control::rejected_module_btf_fails",
                rejected_module_btf,
            ));
            trials.push(t(
                "runtime::control::forced_panic_ends_the_run",
                forced_panic,
            ));
            trials.push(t("runtime::control::hung_init_times_out", hung_init));
            trials.push(t(
                "runtime::control::headers_present_and_no_modules_fail",
                headers_and_no_modules,
            ));
            trials.push(t(
                "runtime::kvm_probe_reports_its_choice",
                kvm_probe_falls_back,
            ));
            use nix::sys::signal::Signal;
            for (name, sig) in [
                ("interrupt::sigint_during_a_runtime_trial", Signal::SIGINT),
                ("interrupt::sigterm_during_a_runtime_trial", Signal::SIGTERM),
            ] {
                trials.push(needs(
                    Trial::test(name, move || interrupted_trial(sig)),
                    &need,
                ));
            }
        }
    }
    let need = harness::scenario::load::load(&harness::scenario::load::scenarios_dir())
        .map_err(|e| e.join("\n"))
        .and_then(|s| {
            harness::scenario::targets::resolve(&s.targets, "tiny-nobtf").map_err(|e| e.to_string())
        })
        .map(|_| ())
        .and(tools.clone());
    trials.push(needs(
        Trial::test(
            "runtime::control::user_run_quotes_the_tools_error",
            user_run_quotes_the_tools_error,
        ),
        &need,
    ));
    let conclusion = libtest_mimic::run(&args, trials);
    drop(scratch);
    conclusion.exit_code()
}
