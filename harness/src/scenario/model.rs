//! The scenario and target schemas (serde, `deny_unknown_fields`, no untagged or flattened
//! parts, so every error keeps its location).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::build::BuildSpec;

/// One scenario file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// What the scenario shows, for people.
    #[serde(default)]
    pub description: String,
    /// Target names from `targets.yaml`; one trial per target.
    pub targets: Vec<Spanned<String>>,
    /// Every listed check must end with this status.
    pub expect: Expect,
    /// Why a failure is expected (required with `expect: fail`).
    #[serde(default)]
    pub reason: Option<String>,
    pub checks: Checks,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Expect {
    Pass,
    Fail,
}

/// A check without parameters: `kconfig.btf: {}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetParams {
    /// e.g. `2MiB`, `500k`.
    pub budget: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootParams {
    /// Seconds from QEMU start to the init's prompt.
    #[serde(default)]
    pub timeout: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModulesParams {
    /// Modules to modprobe and compare with `/sys/kernel/btf/<mod>` (at least one; absent:
    /// the image recipe's list).
    #[serde(default)]
    pub modules: Option<Spanned<Vec<String>>>,
}

pub use crate::guest::ModuleProbe;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BpftraceParams {
    #[serde(default)]
    pub module_probe: Option<ModuleProbe>,
    /// Seconds for each guest command.
    #[serde(default)]
    pub timeout: Option<u64>,
}

/// One command of `guest.run`: a reporter's reproducer, run in the guest's `/work`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserRun {
    /// One shell line (the image's tools on `PATH`).
    pub command: Spanned<String>,
    /// Files or directories copied into `/work` (relative to the scenario file).
    #[serde(default)]
    pub copy: Vec<Spanned<PathBuf>>,
    /// The exit status that passes (default 0).
    #[serde(default)]
    pub expect_status: i32,
    /// A regular expression some output line must match.
    #[serde(default)]
    pub expect_output: Option<Spanned<String>>,
    /// A regular expression no output line may match.
    #[serde(default)]
    pub reject_output: Option<Spanned<String>>,
    /// Seconds the command may run (default 60); past them the guest is stopped.
    #[serde(default)]
    pub timeout: Option<u64>,
}

/// The checks of a scenario, by catalogue id. An unknown id is an unknown field: an error
/// with its location.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checks {
    #[serde(rename = "kconfig.btf")]
    pub kconfig_btf: Option<Spanned<NoParams>>,
    #[serde(rename = "vmlinux.btf")]
    pub vmlinux_btf: Option<Spanned<NoParams>>,
    #[serde(rename = "modules.btf")]
    pub modules_btf: Option<Spanned<NoParams>>,
    #[serde(rename = "modules.stripped")]
    pub modules_stripped: Option<Spanned<NoParams>>,
    #[serde(rename = "modules.btf_base")]
    pub modules_btf_base: Option<Spanned<NoParams>>,
    #[serde(rename = "size.budget")]
    pub size_budget: Option<Spanned<BudgetParams>>,
    #[serde(rename = "guest.boot")]
    pub guest_boot: Option<Spanned<BootParams>>,
    #[serde(rename = "guest.btf_vmlinux")]
    pub guest_btf_vmlinux: Option<Spanned<NoParams>>,
    #[serde(rename = "guest.btf_modules")]
    pub guest_btf_modules: Option<Spanned<ModulesParams>>,
    #[serde(rename = "guest.bpftrace")]
    pub guest_bpftrace: Option<Spanned<BpftraceParams>>,
    #[serde(rename = "guest.bpftool")]
    pub guest_bpftool: Option<Spanned<NoParams>>,
    #[serde(rename = "guest.core")]
    pub guest_core: Option<Spanned<NoParams>>,
    #[serde(rename = "guest.dmesg")]
    pub guest_dmesg: Option<Spanned<NoParams>>,
    #[serde(rename = "guest.run")]
    pub guest_run: Option<Spanned<Vec<UserRun>>>,
}

impl Checks {
    /// (id, line) of every listed check, in catalogue order.
    pub fn listed(&self) -> Vec<(&'static str, u32)> {
        let line = |l: &serde_saphyr::Location| l.line() as u32;
        let mut v = Vec::new();
        macro_rules! add {
            ($field:ident, $id:expr) => {
                if let Some(s) = &self.$field {
                    v.push(($id, line(&s.referenced)));
                }
            };
        }
        use crate::checks::catalogue as c;
        add!(kconfig_btf, c::KCONFIG_BTF);
        add!(vmlinux_btf, c::VMLINUX_BTF);
        add!(modules_btf, c::MODULES_BTF);
        add!(modules_stripped, c::MODULES_STRIPPED);
        add!(modules_btf_base, c::MODULES_BTF_BASE);
        add!(size_budget, c::SIZE_BUDGET);
        add!(guest_boot, c::GUEST_BOOT);
        add!(guest_btf_vmlinux, c::GUEST_BTF_VMLINUX);
        add!(guest_btf_modules, c::GUEST_BTF_MODULES);
        add!(guest_bpftrace, c::GUEST_BPFTRACE);
        add!(guest_bpftool, c::GUEST_BPFTOOL);
        add!(guest_core, c::GUEST_CORE);
        add!(guest_dmesg, c::GUEST_DMESG);
        add!(guest_run, c::GUEST_RUN);
        v
    }

    /// Whether any runtime (guest.*) check is listed: the trial boots.
    pub fn boots(&self) -> bool {
        self.listed().iter().any(|(id, _)| {
            crate::checks::catalogue::def(id).map(|d| d.kind)
                == Some(crate::checks::catalogue::Kind::Guest)
        })
    }
}

/// `targets.yaml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetsFile {
    pub targets: BTreeMap<String, Target>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    #[serde(default)]
    pub description: String,
    pub source: Source,
}

/// Where a target's package comes from.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// The host's apt, `cargo xtask fetch apt NAME` (Debian hosts).
    Apt(String),
    /// The host's apk, `cargo xtask fetch apk NAME` (Alpine hosts).
    Apk(String),
    /// A package file or directory on disk.
    File(PathBuf),
    /// A kernel built from source by `cargo xtask build` (modules stripped).
    Build(BuildSpec),
    /// The same build with its modules not stripped.
    BuildUnstripped(BuildSpec),
    /// A directory package: the kernel image and config of one target with the modules of another.
    Mix(MixSpec),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MixSpec {
    pub boot: String,
    pub modules: String,
}
