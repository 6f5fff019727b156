//! Running one trial (a scenario on a target): the listed static checks, then, if any guest
//! check is listed, one boot; every listed check must end as the scenario expects.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use super::load::{Loaded, Suite};
use super::model::Expect;
use super::targets;
use crate::checks::{static_, Check, Status};
use crate::guest::{self, Params};
use crate::image::Recipe;
use crate::kernel::Kernel;
use crate::qemu::args::Accel;

type Shared = Arc<OnceLock<crate::Result<Arc<Kernel>>>>;

/// Kernels loaded once per target and shared by that target's trials (read-only).
#[derive(Default)]
pub struct Kernels {
    map: Mutex<HashMap<String, Shared>>,
}

impl Kernels {
    pub fn get(&self, suite: &Suite, target: &str) -> crate::Result<Arc<Kernel>> {
        let cell = {
            let mut m = self
                .map
                .lock()
                .map_err(|_| crate::Error::failed("scenario", "kernel cache poisoned"))?;
            m.entry(target.to_string()).or_default().clone()
        };
        cell.get_or_init(|| {
            let opts = targets::read_options(&suite.targets, target);
            let parts = targets::resolve(&suite.targets, target)?.materialize(&opts)?;
            Kernel::load_set(&parts).map(Arc::new)
        })
        .clone()
    }
}

/// The accelerator for trials: `$BTFGATE_ACCEL` (kvm|tcg), else probed.
fn accel() -> Option<Accel> {
    match std::env::var("BTFGATE_ACCEL").ok().as_deref() {
        Some("kvm") => Some(Accel::Kvm),
        Some("tcg") => Some(Accel::Tcg),
        _ => None,
    }
}

/// Runs scenario `sc` on `target`; `Err` is the failure message for the person reading CI.
pub fn run(
    suite: &Suite,
    sc: &Loaded,
    target: &str,
    kernels: &Kernels,
    trial_name: &str,
) -> crate::Result<()> {
    let k = kernels.get(suite, target)?;
    let s = &sc.scenario;
    let c = &s.checks;
    let mut results: Vec<Check> = Vec::new();
    let mut params = static_::StaticParams::default();
    if let Some(b) = &c.size_budget {
        params.budget = crate::size::parse_size(&b.value.budget).map_err(|e| {
            crate::Error::at(
                &sc.file,
                b.referenced.line() as usize,
                b.referenced.column() as usize,
                format!("size.budget: {e}"),
            )
        })?;
    }
    for (id, _) in c.listed() {
        if let Some(r) = static_::run(id, &k, &params) {
            results.push(r);
        }
    }
    let mut tail = String::new();
    let mut transcript = None;
    let mut trial_dir = None;
    if c.boots() {
        let recipe = Recipe::builtin("btf")?;
        // Only the guest checks the scenario lists are run (a listed id that is not a guest
        // check is never asked for).
        let mut p = Params {
            accel: accel(),
            only: Some(c.listed().into_iter().map(|(id, _)| id).collect()),
            ..Params::default()
        };
        if let Some(b) = &c.guest_boot {
            if let Some(t) = b.value.timeout {
                p.deadlines.boot = Duration::from_secs(t);
            }
        }
        if let Some(m) = &c.guest_btf_modules {
            p.modules = m.value.modules.as_ref().map(|l| l.value.clone());
        }
        if let Some(b) = &c.guest_bpftrace {
            if let Some(mp) = &b.value.module_probe {
                p.module_probe = mp.clone();
            }
            if let Some(t) = b.value.timeout {
                p.deadlines.command = Duration::from_secs(t);
            }
        }
        if c.guest_run.is_some() {
            p.user = sc.user.clone();
            p.extra = guest::copy_nodes(&sc.copies)?;
        }
        let dir = crate::paths::cache_dir()
            .join("trials")
            .join(trial_name.replace(['/', ':'], "_"));
        let _ = std::fs::remove_dir_all(&dir);
        // How many guests run at once is decided by the VM slots (one per host core).
        let report = guest::verify(&k, &recipe, &p, &dir)?;
        tail = report.console_tail.clone();
        transcript = Some(report.transcript.clone());
        trial_dir = Some(dir);
        results.extend(report.checks);
    }
    let want = match s.expect {
        Expect::Pass => Status::Pass,
        Expect::Fail => Status::Fail,
    };
    let mut problems = Vec::new();
    // A failure expected of the guest proves something only if the guest ran: a kernel that
    // never booted fails every guest check for a reason the scenario does not name.
    if want == Status::Fail && c.boots() && c.guest_boot.is_none() {
        if let Some(b) = results.iter().find(|r| r.id == crate::checks::guest::BOOT) {
            if b.status != Status::Pass {
                problems.push(format!(
                    "{}: {target}: the guest did not boot ({}), so the expected failures prove nothing",
                    sc.file.display(),
                    b.detail
                ));
            }
        }
    }
    for (id, line) in c.listed() {
        let Some(r) = results.iter().find(|r| r.id == id) else {
            problems.push(format!("{}:{line}: {id}: no result", sc.file.display()));
            continue;
        };
        if r.status != want {
            let why = if want == Status::Fail && r.status == Status::Pass {
                format!(
                    " — the gate let a broken kernel through (expected to fail because: {})",
                    s.reason.as_deref().unwrap_or("")
                )
            } else {
                String::new()
            };
            let mut p = format!(
                "{}:{line}: {id} on {target}: expected {}, seen {}: {}{why}",
                sc.file.display(),
                want.as_str(),
                r.status.as_str(),
                r.detail
            );
            for e in r.evidence.iter().take(12) {
                p.push_str(&format!("\n    {e}"));
            }
            problems.push(p);
        }
    }
    if problems.is_empty() {
        if let Some(d) = trial_dir {
            let _ = std::fs::remove_dir_all(d);
        }
        return Ok(());
    }
    let mut msg = problems.join("\n");
    if !tail.is_empty() {
        msg.push_str(&format!("\nlast console lines:\n{tail}"));
    }
    if let Some(t) = transcript {
        msg.push_str(&format!(
            "\ntranscript: {} (trial directory kept)",
            t.display()
        ));
    }
    let env = std::env::var_os("BTFGATE_SCENARIOS")
        .map(|d| format!("BTFGATE_SCENARIOS={} ", PathBuf::from(d).display()))
        .unwrap_or_default();
    msg.push_str(&format!(
        "\nrerun: {env}cargo test -p harness --test scenarios -- --exact '{trial_name}'"
    ));
    Err(crate::Error::failed("scenario", msg))
}
