//! Checks are values: a catalogue id, a status and the evidence a maintainer needs to trust it.

pub mod catalogue;
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
    /// Stable catalogue id (README's check tables), e.g. `vmlinux.btf`.
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

/// The rule every static and guest verdict goes through: a check reports PASS only when it
/// compared something and kept the evidence (what was compared, the numbers seen). A PASS
/// without evidence is a defect of the check and is reported as a failure, never as a pass.
pub fn settle(mut c: Check) -> Check {
    if c.status == Status::Pass && c.evidence.iter().all(|e| e.trim().is_empty()) {
        c.status = Status::Fail;
        c.detail = format!(
            "reported PASS without evidence, so it proves nothing (a defect in btfgate's {} check): {}",
            c.id, c.detail
        );
    }
    c
}

/// The static check ids, in the order they run (the catalogue's static checks).
pub fn static_ids() -> Vec<&'static str> {
    catalogue::ids(catalogue::Kind::Static)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pass_without_evidence_is_a_failure() {
        let c = settle(Check::pass("modules.btf", "1/1 modules have .BTF"));
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert!(c.detail.contains("without evidence"), "{c:?}");
        let blank = settle(Check::pass("modules.btf", "x").with_evidence(vec![" ".into()]));
        assert_eq!(blank.status, Status::Fail);
        let ok = settle(Check::pass("modules.btf", "x").with_evidence(vec!["seen".into()]));
        assert_eq!(ok.status, Status::Pass);
        let fail = settle(Check::fail("modules.btf", "x"));
        assert_eq!(fail.status, Status::Fail);
    }
}
