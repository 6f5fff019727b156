//! The guest checks (runtime): each runs one or a few shell lines in the booted guest and
//! compares what the guest shows with what the package holds. This file holds what they share
//! (ids, the prepared run, the step table, the readers of the guest's output, the setup);
//! `btf.rs` compares sysfs BTF with the package's, `tools.rs` judges bpftrace, bpftool and a
//! CO-RE tool, `dmesg.rs` reads the kernel log.

mod btf;
mod dmesg;
mod tools;
mod user;

pub use btf::judge_btf_modules;
use btf::{btf_modules, btf_vmlinux};
use dmesg::dmesg;
pub use dmesg::judge_dmesg;
use tools::{bpftool, bpftrace, core};
use tools::{bpftrace_start, CORE_START};
pub use tools::{judge_bpftrace, judge_core};
pub use user::{judge as judge_user, Seen, UserCommand};

use std::time::Duration;

use super::Check;
use crate::hash::sha256_hex;
use crate::kernel::Kernel;
use crate::qemu::args::{Boot, Spec};
use crate::qemu::machine::{Machine, RunError};

/// The kfunc probe in a loaded module that guest.bpftrace attaches (default: overlay's
/// `ovl_fill_super`, run by mounting an overlay).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleProbe {
    pub module: String,
    pub function: String,
    /// A guest shell line that makes the function run.
    pub workload: String,
}

impl Default for ModuleProbe {
    fn default() -> Self {
        ModuleProbe {
            module: "overlay".into(),
            function: "ovl_fill_super".into(),
            workload: "mkdir -p /tmp/ol/l /tmp/ol/u /tmp/ol/w /tmp/ol/m; mount -t overlay ov -o lowerdir=/tmp/ol/l,upperdir=/tmp/ol/u,workdir=/tmp/ol/w /tmp/ol/m 2>/dev/null && umount /tmp/ol/m".into(),
        }
    }
}

/// Everything the guest needs, prepared on the host.
pub struct Prepared {
    pub boot: Boot,
    pub initrd: std::path::PathBuf,
    /// Modules in load order (softdeps and deps first).
    pub load_order: Vec<String>,
    /// Modules the run checks (`guest.btf_modules`), with the sha256 of their `.BTF`.
    pub wanted: Vec<(String, Option<String>)>,
    /// Wanted modules that are not in the package (a failure of `guest.btf_modules`).
    pub missing: Vec<String>,
}

pub use super::catalogue::{
    GUEST_BOOT as BOOT, GUEST_BPFTOOL as BPFTOOL, GUEST_BPFTRACE as BPFTRACE,
    GUEST_BTF_MODULES as BTF_MODULES, GUEST_BTF_VMLINUX as BTF_VMLINUX, GUEST_CORE as CORE,
    GUEST_DMESG as DMESG, GUEST_RUN as RUN,
};

/// The guest checks every runtime verification reports, in order (the catalogue's guest checks
/// but `guest.run`, which runs only the commands a scenario lists).
pub fn ids() -> Vec<&'static str> {
    super::catalogue::ids(super::catalogue::Kind::Guest)
        .into_iter()
        .filter(|id| *id != RUN)
        .collect()
}

/// What the steps need besides the machine.
pub struct Runner<'a> {
    pub prep: &'a Prepared,
    pub k: &'a Kernel,
    pub hide_sysfs_btf: bool,
    /// A control: kernel headers made reachable in the guest before the checks.
    pub plant_headers: bool,
    /// A word unique to this run: guest.core execs `/bin/true <token>` and must see it.
    pub token: String,
    pub command: Duration,
    pub module_probe: &'a ModuleProbe,
    /// Start the bpftool dump guest.bpftool reads (false when that check is not run).
    pub bpftool: bool,
    /// Start the bpftrace probes guest.bpftrace reads (false when that check is not run).
    pub bpftrace: bool,
    /// Start execsnoop, which guest.core drives and reads (false when that check is not run).
    pub core: bool,
}

type Step = fn(&Runner<'_>, &mut Machine) -> Result<Check, RunError>;

/// The checks after boot, in order. bpftrace, execsnoop and the bpftool dump are started by [`setup`] and
/// collected after the checks that run meanwhile.
pub const STEPS: [(&str, Step); 6] = [
    (BTF_MODULES, btf_modules),
    (BTF_VMLINUX, btf_vmlinux),
    (CORE, core),
    (BPFTOOL, bpftool),
    (BPFTRACE, bpftrace),
    (DMESG, dmesg),
];

/// All guest checks failed because the guest never reached its prompt.
pub fn not_booted(e: &RunError) -> Vec<Check> {
    let mut v = vec![Check::fail(BOOT, e.to_string())
        .with_evidence(e.tail().lines().map(str::to_string).collect())];
    for id in ids().into_iter().skip(1) {
        v.push(Check::fail(id, "not run: the guest did not boot"));
    }
    v
}

pub fn booted(m: &Machine, spec: &Spec) -> Check {
    Check::pass(
        BOOT,
        format!(
            "guest {} answered on the console after {:.1} s",
            m.release, m.boot_secs
        ),
    )
    .with_evidence(vec![
        format!(
            "accelerator {}, {} vCPU, boot {:?}",
            spec.accel.name(),
            spec.cpus,
            spec.boot
        ),
        format!("initramfs {}", spec.initrd.display()),
        format!("transcript {}", m.transcript.display()),
    ])
}

fn lines_with<'a>(out: &'a str, prefix: &str) -> Vec<&'a str> {
    out.lines().filter(|l| l.starts_with(prefix)).collect()
}

/// The value of the first `KEY value` line the guest printed (`key` includes the space).
fn value<'a>(out: &'a str, key: &str) -> Option<&'a str> {
    out.lines().find_map(|l| l.strip_prefix(key)).map(str::trim)
}

/// The failure message when the guest's output of `phase` lacks its end marker: the command
/// did not run to its end, so nothing it printed before proves anything.
fn missing_end(out: &str, phase: &str, marker: &str) -> Option<String> {
    (!out.lines().any(|l| l.trim() == marker))
        .then(|| format!("phase {phase}: the guest's output ended before its end marker {marker}"))
}

/// Hashes the running kernel's BTF once into /tmp/btfvm.sha (guest.btf_modules and
/// guest.btf_vmlinux both read it).
const VMLINUX_SHA: &str =
    "[ -s /tmp/btfvm.sha ] || sha256sum /sys/kernel/btf/vmlinux > /tmp/btfvm.sha";

/// Runs before the checks, in one command: hides sysfs BTF or plants headers for the controls,
/// then starts bpftrace, execsnoop and the bpftool dump in the background so that they overlap
/// with the other checks (guest.bpftrace, guest.core and guest.bpftool read their results).
pub fn setup(r: &Runner<'_>, m: &mut Machine) -> Result<(), RunError> {
    let hide = if r.hide_sysfs_btf {
        "mount -t tmpfs none /sys/kernel/btf; "
    } else {
        ""
    };
    // What a linux-headers package installs: a build tree bpftrace would find by release.
    let plant = if r.plant_headers {
        "mkdir -p /lib/modules/$(uname -r)/build/include/linux && echo '/* planted by btfgate */' > /lib/modules/$(uname -r)/build/include/linux/sched.h; "
    } else {
        ""
    };
    let dump = if r.bpftool {
        "(bpftool btf dump file /sys/kernel/btf/vmlinux format c > /tmp/vmlinux.h 2>/tmp/bpftool.err; echo $? > /tmp/bpftool.rc) & BPFTOOL_PID=$!"
    } else {
        ":"
    };
    let bpftrace = if r.bpftrace {
        bpftrace_start(r)
    } else {
        String::new()
    };
    let core = if r.core { CORE_START } else { "" };
    m.run(
        "setup",
        &format!("{hide}{plant}{bpftrace}{core}{dump}"),
        r.command,
    )?;
    Ok(())
}
