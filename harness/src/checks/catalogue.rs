//! The one registry of check ids: every check btfgate reports (static, guest, and the gate of
//! a bump), what its PASS proves, and the controls in the suite that make it FAIL. The checks
//! take their ids from here, the scenario schema is tested against it, the Markdown report
//! prints what a failed check's PASS would have proved, and the README's check tables are
//! these rows (the tidy test renders them and compares, and checks every control exists).

use serde::Serialize;

/// When a check runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// On the package, without booting (`inspect`, `verify`, scenarios).
    Static,
    /// In the booted guest (`verify`, scenarios with `guest.*` checks).
    Guest,
    /// On a bump, old → new (`compare`).
    Gate,
}

/// One check of the catalogue.
#[derive(Debug, Clone, Copy)]
pub struct Def {
    pub id: &'static str,
    pub kind: Kind,
    /// What a PASS proves (Markdown, one sentence).
    pub proves: &'static str,
    /// The controls that make it fail: backticked `file::function` (a test body) or file (a
    /// scenario failing on the targets it names), with notes (Markdown).
    pub controls: &'static str,
}

pub const KCONFIG_BTF: &str = "kconfig.btf";
pub const VMLINUX_BTF: &str = "vmlinux.btf";
pub const MODULES_BTF: &str = "modules.btf";
pub const MODULES_STRIPPED: &str = "modules.stripped";
pub const MODULES_BTF_BASE: &str = "modules.btf_base";
pub const SIZE_BUDGET: &str = "size.budget";
pub const GUEST_BOOT: &str = "guest.boot";
pub const GUEST_BTF_VMLINUX: &str = "guest.btf_vmlinux";
pub const GUEST_BTF_MODULES: &str = "guest.btf_modules";
pub const GUEST_BPFTRACE: &str = "guest.bpftrace";
pub const GUEST_BPFTOOL: &str = "guest.bpftool";
pub const GUEST_CORE: &str = "guest.core";
pub const GUEST_DMESG: &str = "guest.dmesg";
pub const GUEST_RUN: &str = "guest.run";
pub const GATE_BTF_PRESENT: &str = "btf.present";
pub const GATE_BTF_MODULES: &str = "btf.modules";
pub const GATE_SIZE_DELTA: &str = "size.delta";

/// Every check, static ones and guest ones each in the order they are reported, then the gate
/// (whose `size.budget` is the static check of NEW).
pub const CATALOGUE: [Def; 17] = [
    Def {
        id: KCONFIG_BTF,
        kind: Kind::Static,
        proves: "the package's config (`boot/config-*`, or `(usr/)lib/modules/<release>/config` beside the modules) sets `CONFIG_DEBUG_INFO_BTF=y`, and `CONFIG_DEBUG_INFO_BTF_MODULES=y` when the package has modules",
        controls: "`harness/tests/static_checks.rs::kconfig_without_btf` (the config a refresh that drops BTF writes), `harness/tests/static_checks.rs::kconfig_missing`, `scenarios/static/no-btf.yaml` (a kernel built with BTF off); the source build itself refuses such a refresh: `xtask/tests/cli.rs::configure_refuses_dropped_btf`",
    },
    Def {
        id: VMLINUX_BTF,
        kind: Kind::Static,
        proves: "the vmlinux inside the kernel image (`boot/vmlinuz*`, or `(usr/)lib/modules/<release>/vmlinuz`; payload located by the setup header; gzip, xz, zstd, lz4 legacy) has a `.BTF` with data whose every type record walks to the exact end of the type section, with a valid string section, defining `struct task_struct`",
        controls: "`harness/tests/static_checks.rs::vmlinux_without_btf`, `harness/tests/static_checks.rs::vmlinux_btf_nobits` (`SHT_NOBITS`, what `objcopy --only-keep-debug` leaves), `harness/tests/static_checks.rs::vmlinux_btf_truncated`, `harness/tests/static_checks.rs::vmlinux_without_task_struct`, `scenarios/static/no-btf.yaml`",
    },
    Def {
        id: MODULES_BTF,
        kind: Kind::Static,
        proves: "every module (`.ko`, `.ko.gz`, `.ko.xz`, `.ko.zst`) was read and has a `.BTF` section with data",
        controls: "`harness/tests/static_checks.rs::module_without_btf`, `harness/tests/static_checks.rs::module_btf_stripped_on_some` (`objcopy --remove-section .BTF` on two modules, as an eu-strip-style stripper does), `harness/tests/static_checks.rs::module_btf_nobits`, `harness/tests/static_checks.rs::module_unreadable`",
    },
    Def {
        id: MODULES_STRIPPED,
        kind: Kind::Static,
        proves: "every module's section table was read and none carries `.debug_*` sections",
        controls: "`harness/tests/static_checks.rs::module_with_debug_info`, `harness/tests/static_checks.rs::module_unreadable`, `scenarios/static/unstripped.yaml` (modules installed without `INSTALL_MOD_STRIP`)",
    },
    Def {
        id: MODULES_BTF_BASE,
        kind: Kind::Static,
        proves: "each module's split BTF fits this vmlinux's BTF: every name offset lands on the start of an identifier in the base's or the module's strings, type ids in range (catches modules built against another kernel)",
        controls: "`harness/tests/static_checks.rs::cross_flavour_base`, `scenarios/static/mismatched-base.yaml`, `scenarios/static/rebuild-mismatch.yaml` (modules of a rebuild with more built in, both ways)",
    },
    Def {
        id: SIZE_BUDGET,
        kind: Kind::Static,
        proves: "the bytes BTF costs the package ≤ the budget",
        controls: "`harness/tests/static_checks.rs::over_budget` (a budget one byte short), `scenarios/static/over-budget.yaml`",
    },
    Def {
        id: GUEST_BOOT,
        kind: Kind::Guest,
        proves: "the kernel reached the init and answered on the console (a panic ends the run at once and is reported with the console tail; a hang ends as a TIMEOUT naming the phase)",
        controls: "`harness/tests/runtime.rs::forced_panic`, `harness/tests/runtime.rs::hung_init`",
    },
    Def {
        id: GUEST_BTF_VMLINUX,
        kind: Kind::Guest,
        proves: "`/sys/kernel/btf/vmlinux` is byte-identical (sha256) to the `.BTF` of the package's vmlinux",
        controls: "`harness/tests/runtime.rs::hidden_sysfs_btf`, `scenarios/runtime/no-btf.yaml`",
    },
    Def {
        id: GUEST_BTF_MODULES,
        kind: Kind::Guest,
        proves: "at least one module was compared: every listed module (with its deps and softdeps) loads with modprobe, `/sys/kernel/btf/<mod>` equals that `.ko`'s `.BTF`, and that BTF fits the running kernel's base (the guest's `/sys/kernel/btf/vmlinux` is proven to be the package's `.BTF`, then the base-fit test runs on those bytes: the kernel can accept a module BTF built against another vmlinux without a word). An empty `modules: []` is refused when the scenario loads",
        controls: "`harness/tests/runtime.rs::missing_module`, `harness/tests/runtime.rs::rejected_module_btf` (the kernel says `failed to validate module [dummy] BTF: -22`), `harness/tests/runtime.rs::headers_and_no_modules` (nothing to compare), `scenarios/runtime/rebuild-silent.yaml` (a rebuild's modules the kernel accepts without a word), `scenarios/runtime/rebuild-refused.yaml`",
    },
    Def {
        id: GUEST_BPFTRACE,
        kind: Kind::Guest,
        proves: "with no kernel headers anywhere, before and after it ran (`/sys/kernel/kheaders.tar.xz`, a `kheaders` module, `/lib/modules/*/build`, `/lib/modules/*/source`, `/usr/src/*`, `/usr/include/linux`), bpftrace resolves `sizeof(struct path)` to the size the package's `.BTF` gives it, a `kfunc:vmlinux:vfs_read` probe fires and reads its argument `args->count`, and `kfunc:overlay:ovl_fill_super` (a loaded module) fires",
        controls: "`harness/tests/runtime.rs::headers_and_no_modules` (\"headers present: cannot prove BTF was used\"), `scenarios/runtime/no-btf.yaml`, `harness/src/checks/guest/tools.rs::bpftrace_refuses_to_prove_btf_when_headers_are_reachable`",
    },
    Def {
        id: GUEST_BPFTOOL,
        kind: Kind::Guest,
        proves: "`bpftool btf dump file /sys/kernel/btf/vmlinux format c` exits 0 and writes a vmlinux.h defining `struct task_struct`",
        controls: "`harness/tests/runtime.rs::hidden_sysfs_btf`, `scenarios/runtime/no-btf.yaml`",
    },
    Def {
        id: GUEST_CORE,
        kind: Kind::Guest,
        proves: "libbpf-tools' `execsnoop`, copied unchanged from the host, exits 0 after reporting the exec of `/bin/true <a word unique to the run>` that the check ran, and libbpf's debug output shows it loaded the kernel's BTF and applied CO-RE relocations against it (`task_struct.real_parent`…)",
        controls: "`harness/tests/runtime.rs::core_field_missing` (the kernel's BTF without `task_struct.real_parent`), `harness/tests/runtime.rs::hidden_sysfs_btf`, `harness/src/checks/guest/tools.rs::core_passes_only_on_all_its_evidence`",
    },
    Def {
        id: GUEST_DMESG,
        kind: Kind::Guest,
        proves: "the whole log was read (dmesg exited 0, more than zero lines, the end marker seen) and holds no BTF validation errors, WARNING, BUG, Oops or call trace",
        controls: "`harness/tests/runtime.rs::rejected_module_btf`, `scenarios/runtime/rebuild-refused.yaml` (the kernel's own `failed to validate module [configs] BTF: -22`), `harness/src/checks/guest/dmesg.rs::dmesg_passes_only_when_the_whole_log_was_read`",
    },
    Def {
        id: GUEST_RUN,
        kind: Kind::Guest,
        proves: "(scenarios only, after the other checks) each listed command ran in `/work` of the guest, with its `copy` files, and exited with `expect_status` (default 0) before its `timeout`; some output line matched `expect_output` and none matched `reject_output` (regular expressions, checked when the scenario loads); an empty list is refused",
        controls: "`scenarios/runtime/reproducer-no-btf.yaml` (the reproducer's bpftrace script on the kernel without BTF), `harness/tests/runtime.rs::user_run_quotes_the_tools_error` (its failure names bpftrace's own error), `harness/src/checks/guest/user.rs::passes_on_status_and_expected_line_only`",
    },
    Def {
        id: GATE_BTF_PRESENT,
        kind: Kind::Gate,
        proves: "NEW has `CONFIG_DEBUG_INFO_BTF` and a valid vmlinux `.BTF` (\"BTF was lost\" when OLD had them)",
        controls: "`harness/src/compare.rs::losing_btf_fails_the_bump` (Alpine linux-lts 6.12.19-r1's config refresh), `xtask/tests/cli.rs::built_pair_btf_off` (a real pair: the same kernel built with BTF off)",
    },
    Def {
        id: GATE_BTF_MODULES,
        kind: Kind::Gate,
        proves: "NEW's modules carry `.BTF` at least as completely as OLD's did",
        controls: "`harness/src/compare.rs::losing_btf_fails_the_bump`, `xtask/tests/cli.rs::built_pair_btf_off`",
    },
    Def {
        id: GATE_SIZE_DELTA,
        kind: Kind::Gate,
        proves: "the package grew old → new by no more than `--max-growth` (skipped without it)",
        controls: "`harness/src/compare.rs::growth_over_the_limit_fails_and_flavour_mismatch_is_noted` (unstripped modules: 259 MB → 4.1 GB), `xtask/tests/cli.rs::debian_bump` (a zero growth limit fails whichever order grew)",
    },
];

/// The catalogue entry of `id`.
pub fn def(id: &str) -> Option<&'static Def> {
    CATALOGUE.iter().find(|d| d.id == id)
}

/// The ids of one kind, in catalogue order.
pub fn ids(kind: Kind) -> Vec<&'static str> {
    CATALOGUE
        .iter()
        .filter(|d| d.kind == kind)
        .map(|d| d.id)
        .collect()
}

/// The README table rows of one kind (`| id | PASS proves | the controls that make it fail |`).
pub fn readme_rows(kind: Kind) -> Vec<String> {
    CATALOGUE
        .iter()
        .filter(|d| d.kind == kind)
        .map(|d| format!("| `{}` | {} | {} |", d.id, d.proves, d.controls))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_kinds_match_their_prefix() {
        let mut seen = std::collections::BTreeSet::new();
        for d in CATALOGUE {
            assert!(seen.insert(d.id), "{} twice", d.id);
            assert_eq!(
                d.id.starts_with("guest."),
                d.kind == Kind::Guest,
                "{}",
                d.id
            );
            assert!(!d.proves.is_empty() && d.controls.contains('`'), "{}", d.id);
        }
        assert_eq!(ids(Kind::Static).len(), 6);
        assert_eq!(ids(Kind::Guest).len(), 8);
    }
}
