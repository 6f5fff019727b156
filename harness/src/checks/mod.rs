//! Checks are values: a catalogue id, a status and the evidence a maintainer needs to trust it.

pub mod guest;
pub mod static_;

use serde::Serialize;

/// Outcome of a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Fail,
    /// Not applicable to this package; `detail` says why.
    Skip,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::Skip => "skip",
        }
    }
}

/// The result of one check.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Stable catalogue id (DESIGN.md), e.g. `vmlinux.btf`.
    pub id: &'static str,
    pub status: Status,
    /// One line a person reads first.
    pub detail: String,
    /// Further lines of evidence (offending files, numbers).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<String>,
}

impl Check {
    pub fn pass(id: &'static str, detail: impl Into<String>) -> Check {
        Check {
            id,
            status: Status::Pass,
            detail: detail.into(),
            evidence: Vec::new(),
        }
    }
    pub fn fail(id: &'static str, detail: impl Into<String>) -> Check {
        Check {
            id,
            status: Status::Fail,
            detail: detail.into(),
            evidence: Vec::new(),
        }
    }
    pub fn skip(id: &'static str, detail: impl Into<String>) -> Check {
        Check {
            id,
            status: Status::Skip,
            detail: detail.into(),
            evidence: Vec::new(),
        }
    }
    pub fn with_evidence(mut self, lines: Vec<String>) -> Check {
        self.evidence = lines;
        self
    }
}

/// The static check ids, in the order they run.
pub const STATIC_IDS: [&str; 6] = [
    static_::KCONFIG_BTF,
    static_::VMLINUX_BTF,
    static_::MODULES_BTF,
    static_::MODULES_STRIPPED,
    static_::MODULES_BTF_BASE,
    static_::SIZE_BUDGET,
];
