//! `verify`: the main job. Static checks, then the package's kernel booted in QEMU with its
//! own modules and the guest checks. Without `--package`, the host distribution's default
//! kernel flavours are fetched and verified.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use harness::checks::{static_, Status};
use harness::guest;
use harness::image::Recipe;
use harness::kernel::Kernel;
use harness::qemu::args::Accel;

use crate::fetch::MirrorArgs;
use crate::report::ReportArgs;
use crate::{fetch, report, spec, CheckOpts};
use harness::report::{PackageReport, RuntimeSummary};

#[derive(Clone, Copy, ValueEnum)]
pub enum AccelArg {
    Kvm,
    Tcg,
}

/// Options of the runtime half.
#[derive(Args, Clone)]
pub struct RuntimeOpts {
    /// Run only the static checks (no boot)
    #[arg(long)]
    static_only: bool,
    /// Force an accelerator instead of probing KVM and falling back to TCG
    #[arg(long, value_enum)]
    accel: Option<AccelArg>,
    /// Modules to load and check in the guest (default: the image recipe's list)
    #[arg(long, value_delimiter = ',')]
    modules: Option<Vec<String>>,
    /// Image recipe in images/ (without .yaml)
    #[arg(long, default_value = "btf")]
    image: String,
}

fn progress(phase: &str, elapsed: Duration) {
    eprintln!("  [{:>6.1} s] {phase}", elapsed.as_secs_f64());
}

pub fn run(
    specs: &[String],
    opts: &CheckOpts,
    rt: &RuntimeOpts,
    mirror: &MirrorArgs,
    reports: &ReportArgs,
) -> Result<u8> {
    // Set the host up before anything is fetched: as root the runtime's tools are installed
    // now; otherwise the static verdict still comes, and the runtime part says what to run.
    let tools = if rt.static_only {
        Ok(())
    } else {
        crate::host::ensure(&crate::host::RUNTIME_PACKAGES).map_err(|e| format!("{e:#}"))
    };
    let read = opts.read_options()?;
    let packages: Vec<spec::Resolved> = if specs.is_empty() {
        fetch::host_default_sets()?
            .into_iter()
            .map(|set| spec::Resolved {
                parts: (set.into_iter())
                    .map(|path| harness::package::Part {
                        path,
                        read: read.clone(),
                    })
                    .collect(),
            })
            .collect()
    } else {
        specs
            .iter()
            .map(|s| spec::resolve(s, mirror, &read))
            .collect::<Result<_>>()?
    };
    let recipe = Recipe::builtin(&rt.image).map_err(anyhow::Error::msg)?;
    let mut failed = false;
    let mut unavailable = false;
    let mut all = Vec::new();
    for resolved in &packages {
        let kernel = Kernel::load_set(&resolved.parts)?;
        let mut checks = static_::run_all(
            &kernel,
            &static_::StaticParams {
                budget: opts.budget,
            },
        );
        if !opts.json {
            // The static verdict first: it stands whether or not the guest can run.
            print!("{}", report::table(&kernel, &checks, opts.budget));
            println!("{}", verdict_line("static", &checks));
        }
        let n_static = checks.len();
        let mut runtime = None;
        let mut runtime_unavailable = None;
        if !rt.static_only {
            match tools
                .clone()
                .and_then(|()| runtime_half(&kernel, &recipe, rt))
            {
                Ok(rep) => {
                    checks.extend(rep.checks.iter().cloned());
                    runtime = Some(rep);
                }
                Err(e) => {
                    let why = format!("runtime checks of {}: {e}", resolved.describe());
                    eprintln!("error: {why}");
                    runtime_unavailable = Some(why);
                    unavailable = true;
                }
            }
        }
        failed |= checks.iter().any(|c| c.status == Status::Fail);
        if opts.json {
            let mut v = report::json(&kernel, &checks);
            if let Some(r) = &runtime {
                v["runtime"] = report::runtime_json(r);
            }
            if let Some(why) = &runtime_unavailable {
                v["runtime_unavailable"] = why.as_str().into();
            }
            println!("{}", serde_json::to_string(&v)?);
        } else if let Some(r) = &runtime {
            print!("{}", report::checks_table(&checks[n_static..]));
            print!("{}", report::runtime_table(r));
            println!("{}\n", verdict_line("verdict", &checks));
        }
        let mut pr = PackageReport::new(&kernel, checks);
        pr.runtime = runtime.as_ref().map(|r| RuntimeSummary {
            accel: r
                .accel
                .as_ref()
                .map(|c| c.accel.name().to_string())
                .unwrap_or_default(),
            accel_reason: r
                .accel
                .as_ref()
                .map(|c| c.reason.clone())
                .unwrap_or_default(),
            phases: r.phases.iter().map(|(p, t)| (p.to_string(), *t)).collect(),
            transcript: r.transcript.clone(),
        });
        pr.runtime_unavailable = runtime_unavailable;
        all.push(pr);
    }
    let dir = reports.write(
        &harness::report::markdown::verify(&all, opts.budget),
        &harness::report::junit::verify(&all)?,
        &harness::report::svg::chart(&all, opts.budget)?,
    )?;
    eprintln!("reports: {}", dir.display());
    // A failed check is the verdict; a runtime that could not run leaves the gate incomplete.
    Ok(if failed {
        crate::EXIT_FAIL
    } else if unavailable {
        crate::EXIT_INFRA
    } else {
        0
    })
}

/// `static: PASS (7 of 7 checks passed)` or `verdict: FAIL (size.budget failed; …)`.
fn verdict_line(what: &str, checks: &[harness::checks::Check]) -> String {
    let failed: Vec<&str> = checks
        .iter()
        .filter(|c| c.status == Status::Fail)
        .map(|c| c.id)
        .collect();
    let passed = checks.iter().filter(|c| c.status == Status::Pass).count();
    if failed.is_empty() {
        format!("{what}: PASS ({passed} of {} checks passed)", checks.len())
    } else {
        format!(
            "{what}: FAIL ({} failed: {}; {passed} of {} passed)",
            failed.len(),
            failed.join(", "),
            checks.len()
        )
    }
}

/// Boots the package's kernel with its own modules and runs the guest checks.
fn runtime_half(
    kernel: &Kernel,
    recipe: &Recipe,
    rt: &RuntimeOpts,
) -> std::result::Result<guest::Report, String> {
    let params = guest::Params {
        modules: rt.modules.clone(),
        accel: rt.accel.map(|a| match a {
            AccelArg::Kvm => Accel::Kvm,
            AccelArg::Tcg => Accel::Tcg,
        }),
        progress: if std::io::stderr().is_terminal() {
            Some(progress)
        } else {
            None
        },
        ..guest::Params::default()
    };
    let dir = run_dir(kernel).map_err(|e| format!("{e:#}"))?;
    if params.progress.is_some() {
        eprintln!(
            "booting {} (transcript in {})",
            kernel.release.as_deref().unwrap_or("?"),
            dir.display()
        );
    }
    guest::verify(kernel, recipe, &params, &dir).map_err(|e| e.to_string())
}

/// A fresh directory for one run's transcript and logs, under the cache.
pub fn run_dir(k: &Kernel) -> Result<PathBuf> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let name = k.primary().name();
    let dir = harness::paths::cache_dir()
        .join("runs")
        .join(format!("{name}-{stamp}"));
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    Ok(dir)
}
