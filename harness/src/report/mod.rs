//! Reports of verdicts for people and CI: the data every renderer reads, and the Markdown,
//! JUnit XML and SVG renderings of it.
//!
//! `verify` produces one [`PackageReport`] per package; `compare` produces a [`Comparison`]
//! (the packages in order, oldest first, and one gated [`Step`] per consecutive pair). The
//! renderers are pure functions of these values, so they are tested on hand-made values.

pub mod junit;
pub mod markdown;
#[doc(hidden)]
#[cfg(any(test, feature = "test-support"))]
pub mod sample;
pub mod svg;
pub mod text;

use std::path::PathBuf;

use serde::Serialize;

use crate::checks::{Check, Status};
use crate::kernel::Kernel;
use crate::size::Breakdown;

/// One package's identity, numbers and check results.
#[derive(Debug, Clone, Serialize)]
pub struct PackageReport {
    /// Short label for tables and chart axes: `<name> <version>`.
    pub label: String,
    pub path: PathBuf,
    pub name: String,
    pub version: String,
    pub arch: String,
    /// `uname -r` of the kernel, when known.
    pub release: Option<String>,
    /// The packages the kernel was read from (one, or a set: image, modules, config split
    /// over packages), each with its own sizes. `label`, `path`, `name`, `version` and `arch`
    /// above are those of the one holding the kernel image.
    pub packages: Vec<SetMember>,
    /// The whole kernel's numbers (every package of the set summed).
    pub size: Breakdown,
    /// Static checks, then guest checks when the package was booted.
    pub checks: Vec<Check>,
    /// The runtime half, when the package was booted.
    pub runtime: Option<RuntimeSummary>,
    /// Why the runtime half could not run (no QEMU, the guest image could not be built), when
    /// it was asked for and did not run: the static verdict above stands, the gate is not
    /// complete.
    pub runtime_unavailable: Option<String>,
}

/// One package of a kernel, with what it holds and its own sizes.
#[derive(Debug, Clone, Serialize)]
pub struct SetMember {
    pub label: String,
    pub path: PathBuf,
    /// What it holds of the kernel: `image`, `config`, `N modules`, joined (`nothing` when it
    /// holds none of them).
    pub holds: String,
    pub file_size: u64,
    pub installed_size: Option<u64>,
    /// The BTF cost of what it holds (its image's vmlinux `.BTF` share, its modules' shares).
    pub btf_cost: u64,
}

impl SetMember {
    /// Every package of `k`, in order.
    pub fn all(k: &Kernel) -> Vec<SetMember> {
        (k.packages.iter().enumerate())
            .map(|(i, m)| SetMember::of(k, i, m))
            .collect()
    }

    fn of(k: &Kernel, i: usize, m: &crate::kernel::Member) -> SetMember {
        let image = k.image.as_ref().filter(|img| img.package == i);
        let modules: Vec<_> = k.modules.iter().filter(|x| x.package == i).collect();
        let mut holds = Vec::new();
        if image.is_some() {
            holds.push("image".to_string());
        }
        if k.config.as_ref().is_some_and(|c| c.package == i) {
            holds.push("config".to_string());
        }
        if !modules.is_empty() {
            holds.push(format!("{} modules", modules.len()));
        }
        let vmlinuz_btf = image
            .and_then(|_| k.vmlinux_btf())
            .and_then(|v| v.cost.as_ref().ok().copied())
            .unwrap_or(0);
        SetMember {
            label: m.label(),
            path: m.source.clone(),
            holds: if holds.is_empty() {
                "nothing".to_string()
            } else {
                holds.join(", ")
            },
            file_size: m.meta.file_size,
            installed_size: m.meta.installed_size,
            btf_cost: vmlinuz_btf + modules.iter().map(|x| x.btf_cost).sum::<u64>(),
        }
    }
}

/// How the guest run went, for the report's footer.
#[derive(Debug, Clone, Serialize)]
pub struct RuntimeSummary {
    /// `kvm` or `tcg`, and why it was chosen.
    pub accel: String,
    pub accel_reason: String,
    /// Wall seconds per phase, in order.
    pub phases: Vec<(String, f64)>,
    pub transcript: PathBuf,
}

impl PackageReport {
    /// The report of `kernel` with the checks run on it.
    pub fn new(kernel: &Kernel, checks: Vec<Check>) -> PackageReport {
        let p = kernel.primary();
        PackageReport {
            label: p.label(),
            path: p.source.clone(),
            name: p.name(),
            version: p.meta.version.clone(),
            arch: p.meta.arch.clone(),
            packages: SetMember::all(kernel),
            release: kernel.release.clone(),
            size: Breakdown::of(kernel),
            checks,
            runtime: None,
            runtime_unavailable: None,
        }
    }

    /// True when no check failed.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.status != Status::Fail)
    }
}

/// Several packages of one flavour, oldest first, each consecutive pair gated.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub packages: Vec<PackageReport>,
    pub steps: Vec<Step>,
    /// Budget for the BTF cost of each NEW package, in bytes.
    pub budget: u64,
    /// Largest allowed package growth from OLD to NEW, in bytes (`None`: not gated).
    pub max_growth: Option<u64>,
}

impl Comparison {
    /// True when every step's gate passed.
    pub fn passed(&self) -> bool {
        self.steps.iter().all(Step::passed)
    }
}

/// One bump: `packages[old]` → `packages[new]`.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub old: usize,
    pub new: usize,
    /// The numbers, old → new, in display order.
    pub rows: Vec<Row>,
    /// The gate: `btf.present` (BTF in both), `btf.modules` (module BTF coverage kept),
    /// `size.budget`, `size.delta`, and every static check of NEW that failed.
    pub gate: Vec<Check>,
    /// Things a reviewer should know that do not fail the gate (e.g. flavours differ).
    pub notes: Vec<String>,
}

impl Step {
    pub fn passed(&self) -> bool {
        self.gate.iter().all(|c| c.status != Status::Fail)
    }
}

/// One line of a comparison table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// What is measured, e.g. `package file`, `BTF cost`, `modules with .BTF`.
    pub what: String,
    pub unit: Unit,
    pub old: Option<u64>,
    pub new: Option<u64>,
}

impl Row {
    /// `new - old`, when both are known.
    pub fn delta(&self) -> Option<i128> {
        Some(self.new? as i128 - self.old? as i128)
    }
}

/// How a row's numbers read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    Bytes,
    Count,
    /// 1 = yes, 0 = no.
    Bool,
}

/// A package name without its version-like parts: `linux-image-6.1.0-55-cloud-amd64` →
/// `linux-image-cloud-amd64`, so Debian's ABI-versioned names of one flavour compare equal.
pub fn flavour(name: &str) -> String {
    name.split('-')
        .filter(|part| !part.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .collect::<Vec<_>>()
        .join("-")
}
