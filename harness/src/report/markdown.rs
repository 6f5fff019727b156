//! Markdown report, fit to paste into a merge-request comment.
//!
//! Every free-text value (details, evidence, labels, paths, notes) goes through [`text`] or
//! [`code`] so a `|`, `<` or backtick in a package's data can never break a table or inject HTML.

use std::fmt::Write as _;

use super::{Comparison, PackageReport, Row, RuntimeSummary, Step, Unit};
use crate::checks::{Check, Status};
use crate::size::grouped;

pub use super::text::{code, human, text};
use super::text::{html, longest_run};

/// Evidence lines shown per failed check (a merge-request comment holds 64 KiB at most).
const EVIDENCE_MAX: usize = 40;

/// The report of `verify`: a verdict line, then per package its checks, size table and budget.
pub fn verify(reports: &[PackageReport], budget: u64) -> String {
    let mut out = String::new();
    let failed = reports.iter().filter(|r| !r.passed()).count();
    let all: Vec<&Check> = reports.iter().flat_map(|r| &r.checks).collect();
    let headline = if failed == 0 {
        format!(
            "## ✅ btfgate: {} of {} {} passed",
            reports.len(),
            reports.len(),
            plural(reports.len(), "package", "packages")
        )
    } else {
        format!(
            "## ❌ btfgate: {failed} of {} {} failed",
            reports.len(),
            plural(reports.len(), "package", "packages")
        )
    };
    let _ = writeln!(out, "{headline}\n");
    let _ = writeln!(out, "Checks: {}.\n", counts(all.iter().copied()));
    for r in reports {
        package(&mut out, r, budget);
    }
    out
}

fn package(out: &mut String, r: &PackageReport, budget: u64) {
    let _ = writeln!(out, "### {} {}\n", mark(r.passed()), text(&r.label));
    let mut facts = vec![text(&r.path.display().to_string())];
    if !r.arch.is_empty() {
        facts.push(text(&r.arch));
    }
    if let Some(rel) = &r.release {
        facts.push(format!("release {}", code(rel)));
    }
    let _ = writeln!(out, "{}\n", facts.join(" · "));
    if r.packages.len() > 1 {
        set_table(out, r);
    }
    checks_table(out, &r.checks);

    let _ = writeln!(out, "| | with BTF | BTF share | without BTF |");
    let _ = writeln!(out, "|---|---:|---:|---:|");
    for (what, with, share, without) in r.size.rows() {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            text(&what),
            grouped(with),
            grouped(share),
            grouped(without)
        );
    }
    let total = r.size.total;
    let (verdict, tail) = match total {
        0 => ("⚠️", ": no BTF is delivered"),
        t if t <= budget => ("✅", ""),
        _ => ("❌", ""),
    };
    let _ = writeln!(
        out,
        "\n{verdict} BTF cost **{}** ({} B) of budget {} ({} B){tail}\n",
        human(total),
        grouped(total),
        human(budget),
        grouped(budget)
    );
    if let Some(rt) = &r.runtime {
        runtime(out, rt);
    }
    if let Some(why) = &r.runtime_unavailable {
        let _ = writeln!(out, "⚠️ The runtime checks did not run: {}\n", text(why));
    }
}

/// The packages of a kernel split over several, each with what it holds and its own sizes.
fn set_table(out: &mut String, r: &PackageReport) {
    let _ = writeln!(
        out,
        "The kernel is a set of {} packages:\n",
        r.packages.len()
    );
    let _ = writeln!(out, "| package | holds | file | installed | BTF cost |");
    let _ = writeln!(out, "|---|---|---:|---:|---:|");
    for m in &r.packages {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            code(&m.label),
            text(&m.holds),
            grouped(m.file_size),
            m.installed_size.map(grouped).unwrap_or_else(|| "–".into()),
            grouped(m.btf_cost)
        );
    }
    let _ = writeln!(out);
}

/// What BTF costs each kernel of a comparison, oldest first.
fn series_table(out: &mut String, c: &Comparison) {
    let _ = writeln!(out, "What BTF costs across the series:\n");
    let _ = writeln!(
        out,
        "| kernel | release | packages | package files | BTF cost | vmlinuz share | modules share | modules with .BTF |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|");
    for p in &c.packages {
        let b = &p.size;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} of {} |",
            code(&p.label),
            p.release.as_deref().map(code).unwrap_or_else(|| "–".into()),
            p.packages.len(),
            human(b.package),
            human(b.total),
            b.vmlinuz_btf.map(human).unwrap_or_else(|| "–".into()),
            human(b.modules_btf),
            grouped(b.modules_with_btf as u64),
            grouped(b.module_count as u64)
        );
    }
    let _ = writeln!(out);
}

fn runtime(out: &mut String, rt: &RuntimeSummary) {
    let mut parts = vec![format!(
        "Runtime: accel {} ({})",
        code(&rt.accel),
        text(&rt.accel_reason)
    )];
    for (phase, secs) in &rt.phases {
        parts.push(format!("{} {}", text(phase), seconds(*secs)));
    }
    let total: f64 = rt
        .phases
        .iter()
        .map(|(_, s)| s)
        .filter(|s| s.is_finite())
        .sum();
    parts.push(format!("total {}", seconds(total)));
    let _ = writeln!(out, "{}\n", parts.join(" · "));
    let _ = writeln!(
        out,
        "Transcript: {}\n",
        text(&rt.transcript.display().to_string())
    );
}

fn seconds(s: f64) -> String {
    if s.is_finite() {
        format!("{s:.1} s")
    } else {
        "? s".to_string()
    }
}

/// The check table, then the evidence of every failed check in a collapsed block.
fn checks_table(out: &mut String, checks: &[Check]) {
    if checks.is_empty() {
        let _ = writeln!(out, "_No checks ran._\n");
        return;
    }
    let _ = writeln!(out, "| check | status | detail |");
    let _ = writeln!(out, "|---|---|---|");
    for c in checks {
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            code(c.id),
            status(c.status),
            text(&c.detail)
        );
    }
    out.push('\n');
    for c in checks
        .iter()
        .filter(|c| c.status == Status::Fail && !c.evidence.is_empty())
    {
        let n = c.evidence.len();
        // HTML block: the summary is HTML-escaped; the body is a fenced block, read literally.
        let _ = writeln!(
            out,
            "<details><summary>{}: {n} {}</summary>\n",
            html(c.id),
            plural(n, "line of evidence", "lines of evidence")
        );
        let mut body = c.evidence[..n.min(EVIDENCE_MAX)].join("\n");
        if n > EVIDENCE_MAX {
            let _ = write!(body, "\n… {} more", n - EVIDENCE_MAX);
        }
        if let Some(d) = crate::checks::catalogue::def(c.id) {
            // The catalogue's own Markdown: what the check would have proved by passing.
            let _ = writeln!(out, "A PASS proves: {}.\n", d.proves);
        }
        let fence = "`".repeat(longest_run(&body, '`').max(2) + 1);
        let _ = writeln!(out, "{fence}text\n{body}\n{fence}\n\n</details>\n");
    }
}

/// The report of `compare`: per step, the numbers old → new, the gate, and the notes.
pub fn compare(c: &Comparison) -> String {
    let mut out = String::new();
    let failed = c.steps.iter().filter(|s| !s.passed()).count();
    let n = c.steps.len();
    let headline = if failed == 0 {
        format!(
            "## ✅ btfgate compare: {n} of {n} {} passed",
            plural(n, "step", "steps")
        )
    } else {
        format!(
            "## ❌ btfgate compare: {failed} of {n} {} failed",
            plural(n, "step", "steps")
        )
    };
    let _ = writeln!(out, "{headline}\n");
    let mut gate = format!("Budget for BTF cost: {}", human(c.budget));
    if let Some(g) = c.max_growth {
        let _ = write!(gate, "; largest allowed package growth: {}", human(g));
    }
    let _ = writeln!(out, "{gate}.\n");
    series_table(&mut out, c);
    for s in &c.steps {
        step(&mut out, c, s);
    }
    out
}

fn label_of(c: &Comparison, i: usize) -> String {
    c.packages
        .get(i)
        .map(|p| p.label.clone())
        .unwrap_or_else(|| format!("package #{i}"))
}

fn step(out: &mut String, c: &Comparison, s: &Step) {
    let verdict = if s.passed() {
        "gate passed"
    } else {
        "gate FAILED"
    };
    let _ = writeln!(
        out,
        "### {} {} → {}: {verdict}\n",
        mark(s.passed()),
        code(&label_of(c, s.old)),
        code(&label_of(c, s.new))
    );
    if !s.rows.is_empty() {
        let _ = writeln!(out, "| | old | new | Δ |");
        let _ = writeln!(out, "|---|---:|---:|---:|");
        for r in &s.rows {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                text(&r.what),
                value(r.unit, r.old),
                value(r.unit, r.new),
                delta(r)
            );
        }
        out.push('\n');
    }
    checks_table(out, &s.gate);
    if !s.notes.is_empty() {
        let _ = writeln!(out, "Notes:\n");
        for n in &s.notes {
            let _ = writeln!(out, "- {}", text(n));
        }
        out.push('\n');
    }
}

fn value(unit: Unit, v: Option<u64>) -> String {
    let Some(v) = v else {
        return "—".to_string();
    };
    match unit {
        Unit::Bytes => format!("{} ({})", grouped(v), human(v)),
        Unit::Count => v.to_string(),
        Unit::Bool => if v != 0 { "yes" } else { "no" }.to_string(),
    }
}

fn delta(r: &Row) -> String {
    let Some(d) = r.delta() else {
        return "—".to_string();
    };
    if d == 0 {
        return "0".to_string();
    }
    let sign = if d > 0 { "+" } else { "−" };
    let abs = d.unsigned_abs();
    let abs64 = u64::try_from(abs).unwrap_or(u64::MAX);
    match r.unit {
        Unit::Bytes => format!("{sign}{} ({sign}{})", grouped(abs64), human(abs64)),
        Unit::Count => format!("{sign}{abs}"),
        Unit::Bool => if d > 0 { "gained" } else { "**lost**" }.to_string(),
    }
}

fn mark(passed: bool) -> &'static str {
    if passed {
        "✅"
    } else {
        "❌"
    }
}

fn status(s: Status) -> &'static str {
    match s {
        Status::Pass => "✅ pass",
        Status::Fail => "❌ fail",
        Status::Skip => "⏭️ skip",
    }
}

fn plural<'a>(n: usize, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 {
        one
    } else {
        many
    }
}

/// `3 passed, 1 failed, 2 skipped` (zero counts left out, except passed).
fn counts<'a>(checks: impl Iterator<Item = &'a Check>) -> String {
    let (mut p, mut f, mut s) = (0, 0, 0);
    for c in checks {
        match c.status {
            Status::Pass => p += 1,
            Status::Fail => f += 1,
            Status::Skip => s += 1,
        }
    }
    let mut parts = vec![format!("{p} passed")];
    if f > 0 {
        parts.push(format!("{f} failed"));
    }
    if s > 0 {
        parts.push(format!("{s} skipped"));
    }
    parts.join(", ")
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]
    use std::path::PathBuf;

    use super::*;
    use crate::report::sample::{failing, lost_btf, passing};
    use crate::report::SetMember;

    fn has(md: &str, parts: &[&str]) {
        for p in parts {
            assert!(md.contains(p), "no {p:?} in:\n{md}");
        }
    }

    #[test]
    fn verify_passing_package() {
        let md = verify(&[passing()], 2 << 20);
        assert!(
            md.starts_with("## ✅ btfgate: 1 of 1 package passed"),
            "{md}"
        );
        has(
            &md,
            &[
                "Checks: 2 passed, 1 skipped.",
                "| `kconfig.btf` | ✅ pass | CONFIG\\_DEBUG\\_INFO\\_BTF=y |",
                "| `guest.core` | ⏭️ skip | not booted (no guest check listed) |",
                // The Alpine-style size table, with grouped numbers.
                "| vmlinuz | 9,000,000 | 1,700,000 | 7,300,000 |",
                "| package file | 70,000,000 | 2,000,000 | 68,000,000 |",
                "| installed (raw module .BTF) | 280,000,000 |",
                "✅ BTF cost **1.91 MiB** (2,000,000 B) of budget 2.00 MiB (2,097,152 B)",
            ],
        );
        assert!(!md.contains("<details>"));
        assert!(!md.contains("Runtime"));
    }

    #[test]
    fn verify_failing_package_escapes_and_collapses_evidence() {
        let mut bad = failing();
        bad.runtime = Some(RuntimeSummary {
            accel: "tcg".to_string(),
            accel_reason: "no /dev/kvm".to_string(),
            phases: vec![("boot".to_string(), 3.25), ("checks".to_string(), 4.0)],
            transcript: PathBuf::from("/runs/x.log"),
        });
        let md = verify(&[passing(), bad], 2 << 20);
        assert!(
            md.starts_with("## ❌ btfgate: 1 of 2 packages failed"),
            "{md}"
        );
        has(
            &md,
            &[
                "Checks: 2 passed, 1 failed, 2 skipped.",
                "### ❌ linux-image-amd64 6.1.0-21",
                "| `vmlinux.btf` | ❌ fail | no .BTF section \\| stripped &lt;by&gt; R&amp;D |",
                "<details><summary>vmlinux.btf: 2 lines of evidence</summary>",
                "A PASS proves: the vmlinux inside the kernel image",
                // The evidence's own ``` cannot close the block: the fence is longer.
                "````text\nboot/vmlinuz-6.1.0-21",
                "</details> inside\n````\n\n</details>",
                "⚠️ BTF cost **0 B** (0 B) of budget 2.00 MiB (2,097,152 B): no BTF is delivered",
                "Runtime: accel `tcg` (no /dev/kvm) · boot 3.2 s · checks 4.0 s · total 7.2 s",
            ],
        );
        // Every table row has exactly its columns: no stray unescaped `|`.
        for line in md.lines().filter(|l| l.starts_with("| ")) {
            let cells = line.replace("\\|", "").matches('|').count();
            assert!(cells == 4 || cells == 5, "broken row: {line}");
        }
    }

    #[test]
    fn long_evidence_is_cut_and_over_budget_is_red() {
        let mut r = failing();
        r.checks[0].evidence = (0..100).map(|i| format!("module{i}.ko")).collect();
        let md = verify(&[r], 1_000);
        has(&md, &["module39.ko\n… 60 more\n```\n"]);
        assert!(!md.contains("module40.ko"));
        let md = verify(&[passing()], 1_000);
        has(
            &md,
            &["❌ BTF cost **1.91 MiB** (2,000,000 B) of budget 1000 B (1,000 B)"],
        );
        // Budget alone does not fail the verdict: only the checks do.
        assert!(md.starts_with("## ✅"), "{md}");
    }

    #[test]
    fn compare_lost_btf_fails_the_gate() {
        let md = compare(&lost_btf());
        assert!(
            md.starts_with("## ❌ btfgate compare: 1 of 1 step failed"),
            "{md}"
        );
        has(
            &md,
            &[
                "Budget for BTF cost: 2.00 MiB; largest allowed package growth: 1.00 MiB.",
                "### ❌ `linux-image-amd64 6.1.0-18` → `linux-image-amd64 6.1.0-21`: gate FAILED",
                "| | old | new | Δ |",
                "| package file | 70,000,000 (66.8 MiB) | 71,000,000 (67.7 MiB) | +1,000,000 (+977 KiB) |",
                "| BTF cost | 2,000,000 (1.91 MiB) | 0 (0 B) | −2,000,000 (−1.91 MiB) |",
                "| modules with .BTF | 3900 | 0 | −3900 |",
                "| BTF in vmlinux | yes | no | **lost** |",
                "| installed | — | 5 (5 B) | — |",
                "| `btf.present` | ❌ fail | NEW has no vmlinux BTF |",
                "- flavours differ: cloud \\| generic",
                "What BTF costs across the series:",
                "| `linux-image-amd64 6.1.0-18` | `6.1.0-18-amd64` | 1 | 66.8 MiB | 1.91 MiB | 1.62 MiB | 293 KiB | 3,900 of 3,900 |",
                "| `linux-image-amd64 6.1.0-21` | `6.1.0-21-amd64` | 1 | 67.7 MiB | 0 B | – | 0 B | 0 of 3,900 |",
            ],
        );
    }

    /// A kernel split over packages lists each with what it holds and its own sizes; one
    /// package gets no such table.
    #[test]
    fn a_set_of_packages_is_listed() {
        let mut r = passing();
        assert!(!verify(std::slice::from_ref(&r), 2 << 20).contains("set of"));
        let one = r.packages[0].clone();
        r.packages = vec![
            SetMember {
                label: "linux-binary-7.3.4 7.3.4-1".into(),
                holds: "image".into(),
                btf_cost: 1_400_000,
                ..one.clone()
            },
            SetMember {
                label: "linux-modules-7.3.4 7.3.4-1".into(),
                holds: "1019 modules".into(),
                installed_size: None,
                btf_cost: 4_600_000,
                ..one
            },
        ];
        has(
            &verify(&[r], 2 << 20),
            &[
                "The kernel is a set of 2 packages:",
                "| `linux-binary-7.3.4 7.3.4-1` | image | 70,000,000 | 280,000,000 | 1,400,000 |",
                "| `linux-modules-7.3.4 7.3.4-1` | 1019 modules | 70,000,000 | – | 4,600,000 |",
            ],
        );
    }

    #[test]
    fn compare_passing_step() {
        let mut c = lost_btf();
        c.steps[0].gate.retain(|g| g.status == Status::Pass);
        c.steps[0].rows.truncate(1);
        c.steps[0].rows[0].new = c.steps[0].rows[0].old;
        c.max_growth = None;
        let md = compare(&c);
        assert!(
            md.starts_with("## ✅ btfgate compare: 1 of 1 step passed"),
            "{md}"
        );
        has(&md, &[": gate passed", "| 70,000,000 (66.8 MiB) | 0 |"]);
        assert!(!md.contains("largest allowed"));
    }
}
