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
    let packages: Vec<spec::Resolved> = if specs.is_empty() {
        fetch::host_defaults()?
            .into_iter()
            .map(|path| spec::Resolved {
                path,
                read: opts.read_options(),
            })
            .collect()
    } else {
        specs
            .iter()
            .map(|s| spec::resolve(s, mirror, &opts.read_options()))
            .collect::<Result<_>>()?
    };
    let recipe = Recipe::builtin(&rt.image).map_err(anyhow::Error::msg)?;
    let mut code = 0;
    let mut all = Vec::new();
    for spec::Resolved { path, read } in &packages {
        let kernel = Kernel::load(path, read)?;
        let mut checks = static_::run_all(
            &kernel,
            &static_::StaticParams {
                budget: opts.budget,
            },
        );
        let mut runtime = None;
        if !rt.static_only {
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
            let dir = run_dir(&kernel)?;
            if params.progress.is_some() {
                eprintln!(
                    "booting {} (transcript in {})",
                    kernel.release.as_deref().unwrap_or("?"),
                    dir.display()
                );
            }
            let rep = guest::verify(&kernel, &recipe, &params, read, &dir).map_err(|e| {
                fetch::Unavailable(format!("runtime checks of {}: {e}", path.display()))
            })?;
            checks.extend(rep.checks.iter().cloned());
            runtime = Some(rep);
        }
        if checks.iter().any(|c| c.status == Status::Fail) {
            code = crate::EXIT_FAIL;
        }
        if opts.json {
            let mut v = report::json(&kernel, &checks);
            if let Some(r) = &runtime {
                v["runtime"] = report::runtime_json(r);
            }
            println!("{}", serde_json::to_string(&v)?);
        } else {
            print!("{}", report::table(&kernel, &checks, opts.budget));
            if let Some(r) = &runtime {
                print!("{}", report::runtime_table(r));
            }
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
        all.push(pr);
    }
    let dir = reports.write(
        &harness::report::markdown::verify(&all, opts.budget),
        &harness::report::junit::verify(&all)?,
        &harness::report::svg::chart(&all, opts.budget)?,
    )?;
    eprintln!("reports: {}", dir.display());
    Ok(code)
}

/// A fresh directory for one run's transcript and logs, under the cache.
fn run_dir(k: &Kernel) -> Result<PathBuf> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let name = if k.meta.name.is_empty() {
        "kernel"
    } else {
        &k.meta.name
    };
    let dir = harness::fixtures::cache_dir()
        .join("runs")
        .join(format!("{name}-{stamp}"));
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    Ok(dir)
}
