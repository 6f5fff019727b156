//! `matrix`: the external tools (every bpftrace tool and libbpf-tools binary the host's packages
//! ship) × kernels. One boot per kernel; each tool runs with a workload, and its output is
//! judged by `harness::guest::matrix::classify`: emitted, attached, failed or n/a.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use harness::guest::matrix::{self as mx, Cell, Facts, Kind, Timing};
use harness::guest::{self, Session};
use harness::image::Recipe;
use harness::kernel::Kernel;
use harness::process::Cmd;
use harness::qemu::args::Accel;
use harness::qemu::machine::RunError;

use crate::fetch::MirrorArgs;
use crate::spec;
use crate::verify::AccelArg;

/// The kernels of the matrix when none is named: Debian's cloud kernels 6.1, 6.12 and 7.x.
const DEFAULT_PACKAGES: [&str; 3] = [
    "target:debian-cloud",
    "target:debian-cloud-6.12",
    "target:debian-cloud-7",
];

/// bpftrace compiles its program before it attaches: under TCG on a busy 2-core host
/// `Attaching N probes` came 4–46 s after the start (measured on the cloud kernels).
const BPFTRACE_CAP: u64 = 90;
/// A libbpf tool loads in about a second; its header may sit in its stdio buffer.
const LIBBPF_WARM: u64 = 2;
const LIBBPF_CAP: u64 = 30;
/// Deadline of a console command past the tool's own cap and SIGKILL (the guest's `timeout`s
/// end the tool before it; this one ends a guest that stopped answering).
const CONSOLE_SLACK: u64 = 60;
/// Deadline of the setup lines (the loop device, mke2fs) and the facts.
const SETUP_DEADLINE: Duration = Duration::from_secs(120);
/// Boots per kernel: a console deadline or a guest failure costs the session, the next tool
/// boots a new one, at most this many times.
const MAX_BOOTS: usize = 3;

#[derive(Args)]
pub struct MatrixArgs {
    /// A kernel (repeatable; any spec as for run: file, apt:, alpine:, target:, a set);
    /// default: target:debian-cloud, target:debian-cloud-6.12, target:debian-cloud-7
    #[arg(long = "package")]
    packages: Vec<String>,
    /// Tools to run (default: all): bpftrace tools by file name (execsnoop.bt), libbpf-tools
    /// by name (execsnoop)
    #[arg(long, value_delimiter = ',')]
    tools: Option<Vec<String>>,
    /// Seconds each tool runs with the workload once it attached (bpftrace: once it printed
    /// `Attaching`; a libbpf tool: once it printed anything, or after 2 s), then SIGINT
    #[arg(long, default_value_t = 4)]
    per_tool: u64,
    /// Write the matrix as JSON to FILE
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Force an accelerator instead of probing KVM and falling back to TCG
    #[arg(long, value_enum)]
    accel: Option<AccelArg>,
    #[command(flatten)]
    trust: crate::TrustArgs,
    #[command(flatten)]
    mirror: MirrorArgs,
}

/// One tool of the matrix.
#[derive(Debug, Clone)]
pub struct Tool {
    pub name: String,
    pub kind: Kind,
    /// Where it is on the host.
    pub path: PathBuf,
}

impl Tool {
    /// The command the guest runs (bpftrace tools are copied into /work).
    fn argv(&self) -> Vec<String> {
        let mut v = match self.kind {
            Kind::Bpftrace => vec!["bpftrace".to_string(), self.name.clone()],
            Kind::Libbpf => vec![self.path.to_string_lossy().into_owned()],
        };
        v.extend(mx::arguments(&self.name).iter().map(|a| a.to_string()));
        v
    }
}

/// One kernel's column.
#[derive(Debug)]
struct Column {
    spec: String,
    label: String,
    release: String,
    accel: Option<String>,
    boots: usize,
    seconds: f64,
    facts: Option<Facts>,
    /// Tool name → what it did.
    cells: BTreeMap<String, Cell>,
}

/// The files of a host package under `/usr/sbin` (dpkg's list).
fn package_files(pkg: &str) -> Result<Vec<PathBuf>> {
    let out = Cmd::new("dpkg", Duration::from_secs(60))
        .args(["-L", pkg])
        .quiet()
        .read()
        .with_context(|| format!("list the files of {pkg} (dpkg -L {pkg})"))?;
    Ok(out
        .lines()
        .filter(|l| l.starts_with("/usr/sbin/") && l.len() > "/usr/sbin/".len())
        .map(PathBuf::from)
        .collect())
}

fn version(pkg: &str) -> String {
    Cmd::new("dpkg-query", Duration::from_secs(60))
        .args(["-W", "-f=${Version}", pkg])
        .quiet()
        .read()
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

/// Every `/usr/sbin/*.bt` of bpftrace and `/usr/sbin/*` of libbpf-tools, or those `wanted` names.
fn tools(wanted: Option<&[String]>) -> Result<Vec<Tool>> {
    let mut all = Vec::new();
    for p in package_files("bpftrace")? {
        if p.extension().is_some_and(|e| e == "bt") {
            all.push((Kind::Bpftrace, p));
        }
    }
    for p in package_files("libbpf-tools")? {
        all.push((Kind::Libbpf, p));
    }
    let mut tools: Vec<Tool> = all
        .into_iter()
        .filter_map(|(kind, path)| {
            let name = path.file_name()?.to_string_lossy().into_owned();
            Some(Tool { name, kind, path })
        })
        .collect();
    tools.sort_by(|a, b| (a.kind == Kind::Libbpf, &a.name).cmp(&(b.kind == Kind::Libbpf, &b.name)));
    if let Some(w) = wanted {
        let unknown: Vec<&String> = w
            .iter()
            .filter(|n| !tools.iter().any(|t| &&t.name == n))
            .collect();
        if !unknown.is_empty() {
            let names: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
            anyhow::bail!(
                "unknown tool(s) {unknown:?}; the host's tools are: {}",
                names.join(" ")
            );
        }
        tools.retain(|t| w.contains(&t.name));
    }
    Ok(tools)
}

pub fn run(a: &MatrixArgs) -> Result<u8> {
    crate::host::ensure(&crate::host::RUNTIME_PACKAGES)?;
    if crate::host::host() != crate::host::Host::Debian {
        anyhow::bail!("matrix lists the tools of the bpftrace and libbpf-tools packages with dpkg: it runs on Debian hosts");
    }
    let tools = tools(a.tools.as_deref())?;
    let versions: BTreeMap<&'static str, String> = [
        ("bpftrace", version("bpftrace")),
        ("libbpf-tools", version("libbpf-tools")),
    ]
    .into();
    let read = a.trust.read_options()?;
    let specs: Vec<String> = if a.packages.is_empty() {
        DEFAULT_PACKAGES.iter().map(|s| s.to_string()).collect()
    } else {
        a.packages.clone()
    };
    eprintln!(
        "matrix: {} tools (bpftrace {}, libbpf-tools {}) × {} kernels, {} s each after attaching",
        tools.len(),
        versions["bpftrace"],
        versions["libbpf-tools"],
        specs.len(),
        a.per_tool
    );
    let t0 = Instant::now();
    let mut columns = Vec::new();
    for s in &specs {
        columns.push(column(s, a, &read, &tools).with_context(|| format!("matrix on {s}"))?);
    }
    print_matrix(&tools, &columns);
    eprintln!("matrix: {:.0} s in all", t0.elapsed().as_secs_f64());
    if let Some(path) = &a.json {
        let m = serde_json::json!({
            "date": date(),
            "versions": versions,
            "per_tool": a.per_tool,
            "seconds": t0.elapsed().as_secs_f64(),
            "tools": tools.iter().map(|t| serde_json::json!({
                "name": t.name, "kind": t.kind, "path": t.path,
            })).collect::<Vec<_>>(),
            "kernels": columns.iter().map(|c| serde_json::json!({
                "spec": c.spec, "label": c.label, "release": c.release, "accel": c.accel,
                "boots": c.boots, "seconds": c.seconds, "facts": c.facts, "cells": c.cells,
            })).collect::<Vec<_>>(),
        });
        let bytes = serde_json::to_vec_pretty(&m).context("matrix as JSON")?;
        harness::atomic::write(path, &bytes)
            .with_context(|| format!("write {}", path.display()))?;
    }
    let failed = columns
        .iter()
        .any(|c| c.cells.values().any(|x| matches!(x, Cell::Failed { .. })));
    Ok(if failed { crate::EXIT_FAIL } else { 0 })
}

/// Today's date (UTC, `YYYY-MM-DD`).
fn date() -> String {
    chrono::Utc::now().format("%Y-%m-%d").to_string()
}

/// A booted guest with the setup done and its facts read.
fn open(
    k: &Kernel,
    recipe: &Recipe,
    params: &guest::Params,
) -> Result<std::result::Result<(Session, Facts), String>> {
    let dir = crate::verify::run_dir(k)?;
    eprintln!(
        "matrix: booting {}; transcript in {}",
        k.release.as_deref().unwrap_or("?"),
        dir.display()
    );
    let mut s = match Session::open(k, recipe, params, &dir)? {
        Ok(s) => s,
        Err(f) => return Ok(Err(format!("the guest failed: {}", f.error))),
    };
    for e in &s.module_errors {
        eprintln!("matrix: module not loaded: {e}");
    }
    for line in mx::SETUP {
        if let Err(e) = s.run("matrix setup", line, SETUP_DEADLINE, &mut |_| {}) {
            return Ok(Err(format!("the guest failed in the setup: {e}")));
        }
    }
    let mut out = String::new();
    if let Err(e) = s.run("matrix facts", mx::FACTS, SETUP_DEADLINE, &mut |l| {
        out.push_str(l);
        out.push('\n');
    }) {
        return Ok(Err(format!("the guest failed reading its facts: {e}")));
    }
    Ok(Ok((s, mx::parse_facts(&out))))
}

/// One kernel: boot, every tool in turn, shut down.
fn column(
    spec_: &str,
    a: &MatrixArgs,
    read: &harness::package::ReadOptions,
    tools: &[Tool],
) -> Result<Column> {
    let r = spec::resolve(spec_, &a.mirror, read)?;
    let kernel = Kernel::load_set(&r.parts)?;
    let mut recipe = Recipe::builtin("btf").map_err(anyhow::Error::msg)?;
    for t in tools.iter().filter(|t| t.kind == Kind::Libbpf) {
        if !recipe.tools.contains(&t.path) {
            recipe.tools.push(t.path.clone());
        }
    }
    let bt: Vec<PathBuf> = (tools.iter().filter(|t| t.kind == Kind::Bpftrace))
        .map(|t| t.path.clone())
        .collect();
    // The recipe's modules, and loop (a block device for the bio and ext4 tools) when the
    // kernel has it as a module.
    let mut modules = recipe.modules.clone();
    if guest::find_module(&kernel, "loop").is_some() {
        modules.push("loop".into());
    }
    let params = guest::Params {
        modules: Some(modules),
        accel: a.accel.map(|x| match x {
            AccelArg::Kvm => Accel::Kvm,
            AccelArg::Tcg => Accel::Tcg,
        }),
        extra: guest::copy_nodes(&bt)?,
        ..guest::Params::default()
    };
    let release = kernel.release.clone().unwrap_or_else(|| "?".into());
    let t0 = Instant::now();
    let mut col = Column {
        spec: spec_.to_string(),
        label: kernel.label(),
        release: release.clone(),
        accel: None,
        boots: 0,
        seconds: 0.0,
        facts: None,
        cells: BTreeMap::new(),
    };
    let mut session: Option<(Session, Facts)> = None;
    let mut lost: Option<String> = None;
    for t in tools {
        if session.is_none() && lost.is_none() {
            col.boots += 1;
            match open(&kernel, &recipe, &params)? {
                Ok((s, f)) => {
                    col.accel = Some(format!("{} ({})", s.accel.accel.name(), s.accel.reason));
                    col.facts.get_or_insert(f.clone());
                    session = Some((s, f));
                }
                Err(e) => {
                    eprintln!("matrix: {release}: {e}");
                    if col.boots >= MAX_BOOTS {
                        lost = Some(e);
                    } else {
                        // This tool is not to blame: it fails with the guest's reason.
                        col.cells.insert(t.name.clone(), Cell::Failed { reason: e });
                        continue;
                    }
                }
            }
        }
        let started = Instant::now();
        let mut over = false;
        let cell = match (&mut session, &lost) {
            (_, Some(e)) => Cell::Failed {
                reason: format!("not run: {e}"),
            },
            (None, None) => continue,
            (Some((s, facts)), None) => match mx::not_applicable(&t.name, facts) {
                Some(reason) => Cell::NotApplicable { reason },
                None => {
                    let (cell, ok) = one(s, t, a.per_tool);
                    over = !ok;
                    cell
                }
            },
        };
        if over {
            if let Some((s, _)) = session.take() {
                s.close();
            }
            if col.boots >= MAX_BOOTS {
                lost = Some(format!("the guest was lost {MAX_BOOTS} times"));
            }
        }
        eprintln!(
            "matrix: {release}: {:<16} {:<8} ({:.1} s){}",
            t.name,
            cell.word(),
            started.elapsed().as_secs_f64(),
            cell.reason().map(|r| format!(": {r}")).unwrap_or_default()
        );
        col.cells.insert(t.name.clone(), cell);
    }
    if let Some((s, _)) = session {
        s.close();
    }
    col.seconds = t0.elapsed().as_secs_f64();
    eprintln!(
        "matrix: {release}: {:.0} s, {} boot(s)",
        col.seconds, col.boots
    );
    Ok(col)
}

/// Runs one tool; `false` when the session is over (console deadline, guest failure).
fn one(s: &mut Session, t: &Tool, per_tool: u64) -> (Cell, bool) {
    let timing = match t.kind {
        Kind::Bpftrace => Timing {
            secs: per_tool,
            warm: BPFTRACE_CAP,
            cap: BPFTRACE_CAP,
        },
        Kind::Libbpf => Timing {
            secs: per_tool,
            warm: LIBBPF_WARM,
            cap: LIBBPF_CAP,
        },
    };
    let deadline = timing.cap + per_tool + mx::KILL_GRACE + CONSOLE_SLACK;
    let line = mx::tool_line(&t.argv(), timing);
    let mut out = Vec::new();
    let status = s.run(
        &format!("matrix {}", t.name),
        &line,
        Duration::from_secs(deadline),
        &mut |l| out.push(l.to_string()),
    );
    match status {
        Ok(_) => (mx::classify(t.kind, &out), true),
        Err(RunError::Timeout { .. }) => (
            Cell::Failed {
                reason: format!("timeout: the console command passed its {deadline} s deadline"),
            },
            false,
        ),
        Err(e) => (
            Cell::Failed {
                reason: format!("the guest failed: {e}"),
            },
            false,
        ),
    }
}

/// The table (rows tools, columns kernels, as Markdown), each failed or n/a cell's reason
/// (one line for the kernels that share it), and the counts per kernel.
fn print_matrix(tools: &[Tool], cols: &[Column]) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(
        o,
        "| tool | {} |",
        cols.iter()
            .map(|c| format!("`{}`", c.release))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    let _ = writeln!(o, "|---|{}", "---|".repeat(cols.len()));
    for t in tools {
        let cells: Vec<&str> = cols
            .iter()
            .map(|c| c.cells.get(&t.name).map_or("-", Cell::word))
            .collect();
        let _ = writeln!(o, "| `{}` | {} |", t.name, cells.join(" | "));
    }
    let _ = writeln!(o);
    for t in tools {
        // Reason → the kernels it holds on, in column order.
        let mut reasons: Vec<(String, Vec<&str>)> = Vec::new();
        for c in cols {
            let Some(cell) = c.cells.get(&t.name) else {
                continue;
            };
            let Some(r) = cell.reason() else { continue };
            let r = format!("{}: {r}", cell.word());
            match reasons.iter_mut().find(|(x, _)| *x == r) {
                Some((_, ks)) => ks.push(&c.release),
                None => reasons.push((r, vec![&c.release])),
            }
        }
        for (r, ks) in reasons {
            let on = if ks.len() == cols.len() && cols.len() > 1 {
                "all".to_string()
            } else {
                ks.join(", ")
            };
            let _ = writeln!(o, "- `{}` ({on}): {r}", t.name);
        }
    }
    let _ = writeln!(o);
    for c in cols {
        let n = |w: &str| c.cells.values().filter(|x| x.word() == w).count();
        let _ = writeln!(
            o,
            "{}: {} emitted, {} attached, {} failed, {} n/a ({:.0} s, {} boot(s))",
            c.release,
            n("emitted"),
            n("attached"),
            n("failed"),
            n("n/a"),
            c.seconds,
            c.boots
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_is_the_calendar_day() {
        let d = date();
        assert_eq!(d.len(), 10, "{d}");
        assert!(d.starts_with("20"), "{d}");
    }
}
