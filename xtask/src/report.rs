//! Rendering of verdicts: the terminal table and the JSON object; writing the report files (Markdown, JUnit, SVG).

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use harness::checks::Check;
use harness::kernel::Kernel;
use harness::report::SetMember;
use harness::size::{grouped, Breakdown};
use serde_json::json;

/// The JSON object of one package's verdict.
pub fn json(k: &Kernel, checks: &[Check]) -> serde_json::Value {
    let b = Breakdown::of(k);
    let p = k.primary();
    json!({
        "package": {
            "path": p.source,
            "format": p.format,
            "name": p.meta.name,
            "version": p.meta.version,
            "arch": p.meta.arch,
            "installed_size": p.meta.installed_size,
            "file_size": p.meta.file_size,
            "signer": p.meta.signer,
        },
        "packages": SetMember::all(k),
        "kernel": {
            "release": k.release,
            "image": k.image.as_ref().map(|i| &i.path),
            "version_string": k.image.as_ref().and_then(|i| i.version_string.as_ref()),
            "config": k.config.as_ref().map(|c| &c.path),
            "modules": k.modules.len(),
            "vmlinux_btf": k.vmlinux_btf().map(|v| json!({
                "bytes": v.bytes.len(),
                "types": v.ntypes,
                "has_task_struct": v.has_task_struct,
            })),
        },
        "checks": checks,
        "size": b,
    })
}

/// The human table: package line, one row per check with its evidence, the size breakdown.
pub fn table(k: &Kernel, checks: &[Check], budget: u64) -> String {
    let mut s = String::new();
    for (p, member) in k.packages.iter().zip(SetMember::all(k)) {
        let m = &p.meta;
        let _ = writeln!(s, "package  {}", p.source.display());
        let _ = writeln!(
            s,
            "         {} {} {} ({:?}, {} bytes{}{}){}",
            m.name,
            m.version,
            m.arch,
            p.format,
            grouped(m.file_size),
            m.installed_size
                .map(|i| format!(", installed {}", grouped(i)))
                .unwrap_or_default(),
            m.signer
                .as_ref()
                .map(|k| format!(", signed by {k}"))
                .unwrap_or_default(),
            if k.packages.len() > 1 {
                format!(
                    "\n         holds {}; BTF cost {}",
                    member.holds,
                    grouped(member.btf_cost)
                )
            } else {
                String::new()
            }
        );
    }
    let _ = writeln!(
        s,
        "kernel   {}",
        k.release.as_deref().unwrap_or("(release unknown)")
    );
    let _ = writeln!(s);
    s.push_str(&checks_table(checks));
    let b = Breakdown::of(k);
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "{:<34} {:>14} {:>12} {:>14}",
        "SIZE", "with BTF", "BTF share", "without BTF"
    );
    for (what, with, share, without) in b.rows() {
        let _ = writeln!(
            s,
            "{what:<34} {:>14} {:>12} {:>14}",
            grouped(with),
            grouped(share),
            grouped(without)
        );
    }
    let _ = writeln!(
        s,
        "BTF cost {} of budget {} (vmlinuz: {}; modules: {})",
        grouped(b.total),
        grouped(budget),
        b.vmlinuz_method,
        b.modules_method
    );
    let _ = writeln!(s);
    s
}

/// One row per check with its evidence.
pub fn checks_table(checks: &[Check]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{:<18} {:<6} DETAIL", "CHECK", "STATUS");
    for c in checks {
        let _ = writeln!(
            s,
            "{:<18} {:<6} {}",
            c.id,
            c.status.as_str().to_uppercase(),
            c.detail
        );
        for e in &c.evidence {
            let _ = writeln!(s, "{:<25} {e}", "");
        }
    }
    s
}

/// The runtime part of the JSON object: accelerator, phases, transcript.
pub fn runtime_json(r: &harness::guest::Report) -> serde_json::Value {
    json!({
        "accel": r.accel.as_ref().map(|c| c.accel.name()),
        "accel_reason": r.accel.as_ref().map(|c| c.reason.clone()),
        "phases": r.phases.iter().map(|(p, s)| json!({"phase": p, "seconds": s})).collect::<Vec<_>>(),
        "transcript": r.transcript,
    })
}

/// The runtime summary under the table: accelerator, time per phase, where the transcript is.
pub fn runtime_table(r: &harness::guest::Report) -> String {
    let mut s = String::new();
    if let Some(c) = &r.accel {
        let _ = writeln!(s, "accelerator {} ({})", c.accel.name(), c.reason);
    }
    let total: f64 = r.phases.iter().map(|(_, t)| t).sum();
    let phases: Vec<String> = r
        .phases
        .iter()
        .map(|(p, t)| format!("{p} {t:.1}s"))
        .collect();
    let _ = writeln!(s, "runtime {total:.1}s: {}", phases.join(", "));
    let _ = writeln!(s, "transcript {}", r.transcript.display());
    if !r.console_tail.is_empty() {
        let _ = writeln!(s, "last console lines:\n{}", r.console_tail);
    }
    let _ = writeln!(s);
    s
}

/// Where the report files go.
#[derive(Args, Clone)]
pub struct ReportArgs {
    /// Directory for report.md (merge-request comment), junit.xml (CI) and sizes.svg (chart)
    #[arg(long, default_value = "btfgate-report")]
    pub report_dir: PathBuf,
}

impl ReportArgs {
    /// Writes the three reports (each to a temporary file renamed into place); returns the
    /// directory.
    pub fn write(&self, markdown: &str, junit: &str, svg: &str) -> Result<PathBuf> {
        let dir = &self.report_dir;
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        for (name, body) in [
            ("report.md", markdown),
            ("junit.xml", junit),
            ("sizes.svg", svg),
        ] {
            // Mode 0644 (less the umask): reports are for sharing, like any file the user writes.
            harness::atomic::write(&dir.join(name), body.as_bytes()).context("write the report")?;
        }
        Ok(dir.clone())
    }
}
