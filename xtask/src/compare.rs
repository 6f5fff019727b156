//! `compare`: gates a kernel bump. Reads two or more packages of one flavour (oldest first),
//! prints old → new with deltas and the gate's verdict, and writes the Markdown, JUnit and SVG
//! reports.

use anyhow::Result;
use clap::Args;
use harness::checks::static_;
use harness::compare::{compare, Gate};
use harness::kernel::Kernel;
use harness::report::{Comparison, PackageReport, Unit};
use harness::size::grouped;

use crate::fetch::MirrorArgs;
use crate::{report, spec, CheckOpts};

#[derive(Args)]
pub struct CompareArgs {
    /// Packages, oldest first (at least two): a file (.apk, .deb) or directory; apt:NAME;
    /// alpine:NAME[=VERSION] (see --mirror, --branch); target:NAME (scenarios/targets.yaml)
    #[arg(required = true, num_args = 2..)]
    packages: Vec<String>,
    /// Largest allowed growth of the package file from one version to the next (e.g. 5MiB)
    #[arg(long, value_parser = crate::parse_budget)]
    max_growth: Option<u64>,
    #[command(flatten)]
    opts: CheckOpts,
    #[command(flatten)]
    mirror: MirrorArgs,
    #[command(flatten)]
    reports: report::ReportArgs,
}

pub fn run(a: &CompareArgs) -> Result<u8> {
    let mut reports = Vec::new();
    for s in &a.packages {
        let r = spec::resolve(s, &a.mirror, &a.opts.read_options()?)?;
        let kernel = Kernel::load_set(&r.parts)?;
        let checks = static_::run_all(
            &kernel,
            &static_::StaticParams {
                budget: a.opts.budget,
            },
        );
        reports.push(PackageReport::new(&kernel, checks));
    }
    let c = compare(
        reports,
        Gate {
            budget: a.opts.budget,
            max_growth: a.max_growth,
        },
    );
    if a.opts.json {
        println!("{}", serde_json::to_string(&c)?);
    } else {
        print!("{}", table(&c));
    }
    let dir = a.reports.write(
        &harness::report::markdown::compare(&c),
        &harness::report::junit::compare(&c)?,
        &harness::report::svg::chart(&c.packages, c.budget)?,
    )?;
    eprintln!("reports: {}", dir.display());
    Ok(if c.passed() { 0 } else { crate::EXIT_FAIL })
}

/// The terminal rendering: per step, old → new with the delta, then the gate.
pub fn table(c: &Comparison) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    for step in &c.steps {
        let (o, n) = (&c.packages[step.old], &c.packages[step.new]);
        let _ = writeln!(s, "old  {}  ({})", o.label, o.path.display());
        let _ = writeln!(s, "new  {}  ({})", n.label, n.path.display());
        let _ = writeln!(s);
        let _ = writeln!(s, "{:<26} {:>16} {:>16} {:>14}", "", "OLD", "NEW", "DELTA");
        for r in &step.rows {
            let v = |x: Option<u64>| match (x, r.unit) {
                (None, _) => "-".to_string(),
                (Some(x), Unit::Bool) => if x == 1 { "yes" } else { "NO" }.to_string(),
                (Some(x), _) => grouped(x),
            };
            let d = match (r.delta(), r.unit) {
                (_, Unit::Bool) if r.old != r.new => "changed".to_string(),
                (_, Unit::Bool) => String::new(),
                (Some(0), _) => "0".to_string(),
                (Some(d), _) => format!(
                    "{}{}",
                    if d < 0 { "-" } else { "+" },
                    grouped(d.unsigned_abs() as u64)
                ),
                (None, _) => String::new(),
            };
            let _ = writeln!(
                s,
                "{:<26} {:>16} {:>16} {:>14}",
                r.what,
                v(r.old),
                v(r.new),
                d
            );
        }
        let _ = writeln!(s);
        let _ = writeln!(s, "{:<18} {:<6} DETAIL", "GATE", "STATUS");
        for g in &step.gate {
            let _ = writeln!(
                s,
                "{:<18} {:<6} {}",
                g.id,
                g.status.as_str().to_uppercase(),
                g.detail
            );
            for e in g.evidence.iter().take(10) {
                let _ = writeln!(s, "{:<25} {e}", "");
            }
        }
        for note in &step.notes {
            let _ = writeln!(s, "note: {note}");
        }
        let _ = writeln!(
            s,
            "\nverdict: {}\n",
            if step.passed() {
                "PASS: BTF survived the bump within budget"
            } else {
                "FAIL: the bump breaks the gate"
            }
        );
    }
    s
}
