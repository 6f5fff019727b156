//! Hand-made reports for tests and examples: a passing and a failing package, a comparison where BTF was lost.

use std::path::PathBuf;

use super::{Comparison, PackageReport, Row, SetMember, Step, Unit};
use crate::checks::Check;
use crate::size::Breakdown;

/// A breakdown with the given package size and BTF shares.
pub fn breakdown(package: u64, vmlinuz_btf: Option<u64>, modules_btf: u64) -> Breakdown {
    Breakdown {
        package,
        installed: Some(package * 4),
        vmlinuz: 9_000_000,
        vmlinuz_btf,
        vmlinuz_method: "xz".to_string(),
        modules: package / 2,
        module_count: 3_900,
        modules_with_btf: if modules_btf > 0 { 3_900 } else { 0 },
        vmlinux_btf_raw: vmlinuz_btf.map(|v| v * 5).unwrap_or(0),
        modules_btf_raw: modules_btf * 4,
        modules_btf,
        modules_compressed: false,
        modules_method: "pro rata".to_string(),
        total: vmlinuz_btf.unwrap_or(0) + modules_btf,
    }
}

pub fn report(name: &str, version: &str, size: Breakdown, checks: Vec<Check>) -> PackageReport {
    let path = PathBuf::from(format!("/cache/{name}_{version}.deb"));
    PackageReport {
        label: format!("{name} {version}"),
        packages: vec![SetMember {
            label: format!("{name} {version}"),
            path: path.clone(),
            holds: "image, config, 3900 modules".to_string(),
            file_size: size.package,
            installed_size: size.installed,
            btf_cost: size.total,
        }],
        path,
        name: name.to_string(),
        version: version.to_string(),
        arch: "amd64".to_string(),
        release: Some(format!("{version}-amd64")),
        size,
        checks,
        runtime: None,
        runtime_unavailable: None,
    }
}

pub fn passing() -> PackageReport {
    report(
        "linux-image-amd64",
        "6.1.0-18",
        breakdown(70_000_000, Some(1_700_000), 300_000),
        vec![
            Check::pass("kconfig.btf", "CONFIG_DEBUG_INFO_BTF=y"),
            Check::pass("vmlinux.btf", "vmlinux .BTF: 5,123,456 bytes, valid"),
            Check::skip("guest.core", "not booted (no guest check listed)"),
        ],
    )
}

pub fn failing() -> PackageReport {
    report(
        "linux-image-amd64",
        "6.1.0-21",
        breakdown(71_000_000, None, 0),
        vec![
            Check::fail("vmlinux.btf", "no .BTF section | stripped <by> R&D").with_evidence(vec![
                "boot/vmlinuz-6.1.0-21: sections .text .data".to_string(),
                "a ``` fence and </details> inside".to_string(),
            ]),
            Check::skip("modules.btf", "no modules"),
        ],
    )
}

pub fn lost_btf() -> Comparison {
    let old = passing();
    let new = failing();
    let rows = vec![
        Row {
            what: "package file".to_string(),
            unit: Unit::Bytes,
            old: Some(old.size.package),
            new: Some(new.size.package),
        },
        Row {
            what: "BTF cost".to_string(),
            unit: Unit::Bytes,
            old: Some(old.size.total),
            new: Some(new.size.total),
        },
        Row {
            what: "modules with .BTF".to_string(),
            unit: Unit::Count,
            old: Some(3_900),
            new: Some(0),
        },
        Row {
            what: "BTF in vmlinux".to_string(),
            unit: Unit::Bool,
            old: Some(1),
            new: Some(0),
        },
        Row {
            what: "installed".to_string(),
            unit: Unit::Bytes,
            old: None,
            new: Some(5),
        },
    ];
    Comparison {
        packages: vec![old, new],
        steps: vec![Step {
            old: 0,
            new: 1,
            rows,
            gate: vec![
                Check::fail("btf.present", "NEW has no vmlinux BTF"),
                Check::pass("size.budget", "0 B of 2.00 MiB"),
            ],
            notes: vec!["flavours differ: cloud | generic".to_string()],
        }],
        budget: 2 << 20,
        max_growth: Some(1 << 20),
    }
}
