//! Gating a kernel bump: two (or more) packages of one flavour compared old → new, the numbers a maintainer reads and a verdict: did BTF survive, and what did it cost?

use crate::checks::{static_, Check, Status};
use crate::report::{Comparison, PackageReport, Row, Step, Unit};
use crate::size::grouped;

/// The gate's own checks (what each proves is in `checks::catalogue`).
pub use crate::checks::catalogue::{
    GATE_BTF_MODULES as BTF_MODULES, GATE_BTF_PRESENT as BTF_PRESENT, GATE_SIZE_DELTA as SIZE_DELTA,
};

/// The budgets a bump is gated against.
#[derive(Debug, Clone, Copy)]
pub struct Gate {
    /// Largest BTF cost of NEW, bytes.
    pub budget: u64,
    /// Largest package growth old → new, bytes (`None`: reported, not gated).
    pub max_growth: Option<u64>,
}

/// Compares `packages` (oldest first) pairwise: one gated step per consecutive pair.
pub fn compare(packages: Vec<PackageReport>, gate: Gate) -> Comparison {
    let steps = (1..packages.len())
        .map(|i| step(&packages, i - 1, i, gate))
        .collect();
    Comparison {
        packages,
        steps,
        budget: gate.budget,
        max_growth: gate.max_growth,
    }
}

fn status(p: &PackageReport, id: &str) -> Option<Status> {
    p.checks.iter().find(|c| c.id == id).map(|c| c.status)
}

/// BTF is present: the config says so and vmlinux has a valid `.BTF`.
fn has_btf(p: &PackageReport) -> bool {
    status(p, static_::KCONFIG_BTF) == Some(Status::Pass)
        && status(p, static_::VMLINUX_BTF) == Some(Status::Pass)
}

fn step(packages: &[PackageReport], old: usize, new: usize, gate: Gate) -> Step {
    let (o, n) = (&packages[old], &packages[new]);
    let (ob, nb) = (&o.size, &n.size);
    let flag = |p: &PackageReport, id| u64::from(status(p, id) == Some(Status::Pass));
    let bytes = |what: &str, old: Option<u64>, new: Option<u64>| Row {
        what: what.to_string(),
        unit: Unit::Bytes,
        old,
        new,
    };
    let count = |what: &str, old: usize, new: usize| Row {
        what: what.to_string(),
        unit: Unit::Count,
        old: Some(old as u64),
        new: Some(new as u64),
    };
    let rows = vec![
        Row {
            what: "CONFIG_DEBUG_INFO_BTF".into(),
            unit: Unit::Bool,
            old: Some(flag(o, static_::KCONFIG_BTF)),
            new: Some(flag(n, static_::KCONFIG_BTF)),
        },
        Row {
            what: "vmlinux .BTF valid".into(),
            unit: Unit::Bool,
            old: Some(flag(o, static_::VMLINUX_BTF)),
            new: Some(flag(n, static_::VMLINUX_BTF)),
        },
        count("modules", ob.module_count, nb.module_count),
        count(
            "modules with .BTF",
            ob.modules_with_btf,
            nb.modules_with_btf,
        ),
        bytes("package file", Some(ob.package), Some(nb.package)),
        bytes("installed size", ob.installed, nb.installed),
        bytes("vmlinuz", Some(ob.vmlinuz), Some(nb.vmlinuz)),
        bytes("modules (as stored)", Some(ob.modules), Some(nb.modules)),
        bytes(
            "vmlinux .BTF (raw)",
            Some(ob.vmlinux_btf_raw),
            Some(nb.vmlinux_btf_raw),
        ),
        bytes(
            "modules .BTF (raw)",
            Some(ob.modules_btf_raw),
            Some(nb.modules_btf_raw),
        ),
        bytes("BTF cost: vmlinuz share", ob.vmlinuz_btf, nb.vmlinuz_btf),
        bytes(
            "BTF cost: modules share",
            Some(ob.modules_btf),
            Some(nb.modules_btf),
        ),
        bytes("BTF cost (total)", Some(ob.total), Some(nb.total)),
    ];

    let mut gate_checks = vec![btf_present(o, n), btf_modules(o, n)];
    gate_checks.push(
        n.checks
            .iter()
            .find(|c| c.id == static_::SIZE_BUDGET)
            .cloned()
            .unwrap_or_else(|| Check::skip(static_::SIZE_BUDGET, "not measured")),
    );
    gate_checks.push(size_delta(ob.package, nb.package, gate.max_growth));
    // Every other static check of NEW that failed fails the bump too (unstripped modules,
    // split BTF that no longer fits its vmlinux, …).
    for c in &n.checks {
        let covered = [
            static_::KCONFIG_BTF,
            static_::VMLINUX_BTF,
            static_::MODULES_BTF,
            static_::SIZE_BUDGET,
        ];
        if c.status == Status::Fail && !covered.contains(&c.id) {
            gate_checks.push(c.clone());
        }
    }

    let mut notes = Vec::new();
    if flavour(&o.name) != flavour(&n.name) {
        notes.push(format!(
            "the packages look like different flavours ({} vs {}): a bump compares one flavour's versions",
            o.name, n.name
        ));
    }
    if o.arch != n.arch {
        notes.push(format!("architectures differ: {} vs {}", o.arch, n.arch));
    }
    if o.release.is_some() && o.release == n.release {
        notes.push(format!(
            "both packages hold kernel release {}",
            o.release.as_deref().unwrap_or_default()
        ));
    }
    Step {
        old,
        new,
        rows,
        gate: gate_checks,
        notes,
    }
}

fn btf_present(o: &PackageReport, n: &PackageReport) -> Check {
    let why = |p: &PackageReport| -> String {
        p.checks
            .iter()
            .filter(|c| {
                (c.id == static_::KCONFIG_BTF || c.id == static_::VMLINUX_BTF)
                    && c.status != Status::Pass
            })
            .map(|c| format!("{}: {}", c.id, c.detail))
            .collect::<Vec<_>>()
            .join("; ")
    };
    match (has_btf(o), has_btf(n)) {
        (_, true) => Check::pass(
            BTF_PRESENT,
            format!(
                "{} has BTF ({} bytes of vmlinux .BTF)",
                n.label,
                grouped(n.size.vmlinux_btf_raw)
            ),
        ),
        (true, false) => Check::fail(
            BTF_PRESENT,
            format!("BTF was lost: {} had it, {} does not", o.label, n.label),
        )
        .with_evidence(vec![why(n)]),
        (false, false) => Check::fail(
            BTF_PRESENT,
            format!("{} has no BTF (neither had {})", n.label, o.label),
        )
        .with_evidence(vec![why(n)]),
    }
}

fn btf_modules(o: &PackageReport, n: &PackageReport) -> Check {
    let (ob, nb) = (&o.size, &n.size);
    let line = format!(
        "modules with .BTF: {} of {} → {} of {}",
        ob.modules_with_btf, ob.module_count, nb.modules_with_btf, nb.module_count
    );
    let missing = nb.module_count - nb.modules_with_btf.min(nb.module_count);
    let was_missing = ob.module_count - ob.modules_with_btf.min(ob.module_count);
    if missing == 0 {
        return Check::pass(BTF_MODULES, line);
    }
    let evidence = n
        .checks
        .iter()
        .find(|c| c.id == static_::MODULES_BTF)
        .map(|c| c.evidence.clone())
        .unwrap_or_default();
    let detail = if was_missing == 0 {
        format!("{line}: {missing} module(s) lost their .BTF")
    } else {
        format!("{line}: {missing} module(s) without .BTF")
    };
    Check::fail(BTF_MODULES, detail).with_evidence(evidence)
}

/// `size.delta`: package growth from `old` to `new` bytes within `max` (skipped without one).
pub fn size_delta(old: u64, new: u64, max: Option<u64>) -> Check {
    let growth = new as i128 - old as i128;
    let line = format!(
        "package {} → {} bytes ({}{} bytes)",
        grouped(old),
        grouped(new),
        if growth < 0 { "−" } else { "+" },
        grouped(growth.unsigned_abs() as u64)
    );
    match max {
        None => Check::skip(SIZE_DELTA, format!("{line}; not gated (no --max-growth)")),
        Some(m) if growth <= m as i128 => Check::pass(
            SIZE_DELTA,
            format!("{line}, within the allowed growth of {}", grouped(m)),
        ),
        Some(m) => Check::fail(
            SIZE_DELTA,
            format!(
                "{line}: grew by more than the allowed {} (over by {})",
                grouped(m),
                grouped((growth - m as i128) as u64)
            ),
        ),
    }
}

pub use crate::report::flavour;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::size::Breakdown;

    fn breakdown(package: u64, vmlinux_btf: u64, modules: usize, with_btf: usize) -> Breakdown {
        Breakdown {
            package,
            installed: Some(package * 3),
            vmlinuz: 8 << 20,
            vmlinuz_btf: (vmlinux_btf > 0).then_some(vmlinux_btf / 4),
            vmlinuz_method: String::new(),
            modules: package / 2,
            module_count: modules,
            modules_with_btf: with_btf,
            vmlinux_btf_raw: vmlinux_btf,
            modules_btf_raw: with_btf as u64 * 1000,
            modules_btf: with_btf as u64 * 300,
            modules_compressed: false,
            modules_method: String::new(),
            total: vmlinux_btf / 4 + with_btf as u64 * 300,
        }
    }

    fn pkg(name: &str, version: &str, btf: bool, size: Breakdown, budget: u64) -> PackageReport {
        let st = |ok: bool, id: &'static str| {
            if ok {
                Check::pass(id, "ok")
            } else {
                Check::fail(id, "missing")
            }
        };
        let checks = vec![
            st(btf, static_::KCONFIG_BTF),
            st(btf, static_::VMLINUX_BTF),
            st(
                size.modules_with_btf == size.module_count,
                static_::MODULES_BTF,
            ),
            Check::pass(static_::MODULES_STRIPPED, "ok"),
            st(size.total <= budget, static_::SIZE_BUDGET),
        ];
        crate::report::sample::report(name, version, size, checks)
    }

    fn gate_status(s: &Step, id: &str) -> Status {
        s.gate
            .iter()
            .find(|c| c.id == id)
            .map(|c| c.status)
            .unwrap()
    }

    const BUDGET: u64 = 2 << 20;

    #[test]
    fn a_clean_bump_passes() {
        let c = compare(
            vec![
                pkg(
                    "linux-virt",
                    "6.12.19-r0",
                    true,
                    breakdown(27_000_000, 4_000_000, 100, 100),
                    BUDGET,
                ),
                pkg(
                    "linux-virt",
                    "6.12.20-r0",
                    true,
                    breakdown(27_100_000, 4_100_000, 101, 101),
                    BUDGET,
                ),
            ],
            Gate {
                budget: BUDGET,
                max_growth: Some(1 << 20),
            },
        );
        assert!(c.passed(), "{:#?}", c.steps[0].gate);
        let s = &c.steps[0];
        assert_eq!(gate_status(s, SIZE_DELTA), Status::Pass);
        let pkg_row = s.rows.iter().find(|r| r.what == "package file").unwrap();
        assert_eq!(pkg_row.delta(), Some(100_000));
        assert!(s.notes.is_empty(), "{:?}", s.notes);
    }

    #[test]
    fn losing_btf_fails_the_bump() {
        // Alpine linux-lts 6.12.19-r1: the config refresh dropped BTF.
        let c = compare(
            vec![
                pkg(
                    "linux-lts",
                    "6.12.19-r0",
                    true,
                    breakdown(90_000_000, 6_000_000, 3000, 3000),
                    BUDGET,
                ),
                pkg(
                    "linux-lts",
                    "6.12.19-r1",
                    false,
                    breakdown(88_000_000, 0, 3000, 0),
                    BUDGET,
                ),
            ],
            Gate {
                budget: BUDGET,
                max_growth: None,
            },
        );
        assert!(!c.passed());
        let s = &c.steps[0];
        let present = s.gate.iter().find(|c| c.id == BTF_PRESENT).unwrap();
        assert_eq!(present.status, Status::Fail);
        assert!(
            present.detail.contains("BTF was lost"),
            "{}",
            present.detail
        );
        assert_eq!(gate_status(s, BTF_MODULES), Status::Fail);
        assert_eq!(gate_status(s, SIZE_DELTA), Status::Skip);
    }

    #[test]
    fn growth_over_the_limit_fails_and_flavour_mismatch_is_noted() {
        // Unstripped modules: 259 MB → 4.1 GB.
        let c = compare(
            vec![
                pkg(
                    "linux-image-6.1.0-55-cloud-amd64",
                    "6.1.190-1",
                    true,
                    breakdown(259_000_000, 5_000_000, 10, 10),
                    u64::MAX,
                ),
                pkg(
                    "linux-image-6.1.0-56-amd64",
                    "6.1.192-2",
                    true,
                    breakdown(4_100_000_000, 5_000_000, 10, 10),
                    u64::MAX,
                ),
            ],
            Gate {
                budget: u64::MAX,
                max_growth: Some(10 << 20),
            },
        );
        let s = &c.steps[0];
        assert_eq!(gate_status(s, SIZE_DELTA), Status::Fail);
        assert!(s.notes[0].contains("different flavours"), "{:?}", s.notes);
    }

    #[test]
    fn three_packages_make_two_steps() {
        let b = || breakdown(1000, 100, 1, 1);
        let c = compare(
            vec![
                pkg("linux-virt", "1", true, b(), BUDGET),
                pkg("linux-virt", "2", true, b(), BUDGET),
                pkg("linux-virt", "3", false, b(), BUDGET),
            ],
            Gate {
                budget: BUDGET,
                max_growth: None,
            },
        );
        assert_eq!(c.steps.len(), 2);
        assert!(c.steps[0].passed());
        assert!(!c.steps[1].passed());
    }

    #[test]
    fn flavours_ignore_version_parts() {
        assert_eq!(
            flavour("linux-image-6.1.0-55-cloud-amd64"),
            "linux-image-cloud-amd64"
        );
        assert_eq!(flavour("linux-virt"), "linux-virt");
        assert_ne!(flavour("linux-lts"), flavour("linux-virt"));
    }
}
