//! The static checks (no boot): kconfig, vmlinux BTF, module BTF presence, stripping, base fit,
//! and the size budget.

use super::Check;
use crate::kernel::Kernel;
use crate::size::{grouped, Breakdown};

pub use super::catalogue::{
    KCONFIG_BTF, MODULES_BTF, MODULES_BTF_BASE, MODULES_STRIPPED, SIZE_BUDGET, VMLINUX_BTF,
};

/// How many offenders a failing check names before summarizing.
const SHOW: usize = 10;

/// Parameters of the static checks.
#[derive(Debug, Clone)]
pub struct StaticParams {
    /// Budget for the BTF cost of the package, bytes.
    pub budget: u64,
}

impl Default for StaticParams {
    fn default() -> Self {
        StaticParams {
            budget: crate::size::DEFAULT_BUDGET,
        }
    }
}

/// Runs the check `id` on `k`. `None` when `id` is not a static check.
pub fn run(id: &str, k: &Kernel, p: &StaticParams) -> Option<Check> {
    run_unsettled(id, k, p).map(super::settle)
}

fn run_unsettled(id: &str, k: &Kernel, p: &StaticParams) -> Option<Check> {
    Some(match id {
        KCONFIG_BTF => kconfig_btf(k),
        VMLINUX_BTF => vmlinux_btf(k),
        MODULES_BTF => modules_btf(k),
        MODULES_STRIPPED => modules_stripped(k),
        MODULES_BTF_BASE => modules_btf_base(k),
        SIZE_BUDGET => size_budget(k, p.budget),
        _ => return None,
    })
}

/// Runs every static check in catalogue order.
pub fn run_all(k: &Kernel, p: &StaticParams) -> Vec<Check> {
    super::static_ids()
        .into_iter()
        .filter_map(|id| run(id, k, p))
        .collect()
}

pub fn kconfig_btf(k: &Kernel) -> Check {
    let Some(cfg) = &k.config else {
        return Check::fail(
            KCONFIG_BTF,
            "the package (or set) has no kernel config (boot/config-* or (usr/)lib/modules/<release>/config); a kernel split over packages is checked as a set: name the package holding the config too (Debian: linux-base-<release>)",
        );
    };
    let c = &cfg.kconfig;
    let mut want = vec!["CONFIG_DEBUG_INFO_BTF"];
    if !k.modules.is_empty() {
        want.push("CONFIG_DEBUG_INFO_BTF_MODULES");
    }
    let evidence: Vec<String> = want
        .iter()
        .chain(
            [
                "CONFIG_DEBUG_INFO_NONE",
                "CONFIG_PAHOLE_VERSION",
                "CONFIG_MODULE_ALLOW_BTF_MISMATCH",
            ]
            .iter(),
        )
        .map(|n| c.show(n))
        .collect();
    let missing: Vec<&str> = want.iter().copied().filter(|n| !c.is_y(n)).collect();
    let file = cfg.path.display();
    if missing.is_empty() {
        Check::pass(
            KCONFIG_BTF,
            format!(
                "{file}: {}",
                want.iter()
                    .map(|n| format!("{n}=y"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
        .with_evidence(evidence)
    } else {
        Check::fail(
            KCONFIG_BTF,
            format!(
                "{file}: {} (expected =y)",
                missing
                    .iter()
                    .map(|n| c.show(n))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
        .with_evidence(evidence)
    }
}

pub fn vmlinux_btf(k: &Kernel) -> Check {
    let Some(img) = &k.image else {
        return Check::fail(
            VMLINUX_BTF,
            "the package (or set) has no kernel image (boot/vmlinuz* or (usr/)lib/modules/<release>/vmlinuz); a kernel split over packages is checked as a set: name the package holding the image too (Debian: linux-binary-<release>)",
        );
    };
    let mut ev = vec![format!(
        "image {} ({} bytes)",
        img.path.display(),
        grouped(img.file_size)
    )];
    if let Some(v) = &img.version_string {
        ev.push(format!("version string: {v}"));
    }
    match &img.payload {
        Ok(p) => ev.push(format!(
            "payload {} {} bytes -> vmlinux {} bytes",
            p.codec.name(),
            grouped(p.compressed),
            grouped(p.vmlinux)
        )),
        Err(e) => {
            return Check::fail(
                VMLINUX_BTF,
                format!("{}: {}", img.path.display(), e.message()),
            )
            .with_evidence(ev)
        }
    }
    match &img.btf {
        Err(e) => Check::fail(
            VMLINUX_BTF,
            format!("{}: {}", img.path.display(), e.message()),
        )
        .with_evidence(ev),
        Ok(b) => {
            ev.push(format!(
                ".BTF {} bytes: types {} bytes, strings {} bytes",
                grouped(b.bytes.len() as u64),
                grouped(b.type_len as u64),
                grouped(b.str_len as u64)
            ));
            ev.push(format!(
                "kinds: {}",
                b.kinds
                    .iter()
                    .map(|(k, n)| format!("{k} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            if b.has_task_struct {
                Check::pass(
                    VMLINUX_BTF,
                    format!(
                        ".BTF valid: {} types walked to the end, struct task_struct present",
                        grouped(b.ntypes as u64)
                    ),
                )
                .with_evidence(ev)
            } else {
                Check::fail(
                    VMLINUX_BTF,
                    format!(
                        ".BTF has {} types but no struct task_struct",
                        grouped(b.ntypes as u64)
                    ),
                )
                .with_evidence(ev)
            }
        }
    }
}

fn no_modules(id: &'static str) -> Check {
    Check::skip(id, "the package has no kernel modules")
}

fn offenders<'a>(names: impl Iterator<Item = String> + 'a) -> Vec<String> {
    let all: Vec<String> = names.collect();
    let n = all.len();
    let mut out: Vec<String> = all.into_iter().take(SHOW).collect();
    if n > SHOW {
        out.push(format!("... and {} more", n - SHOW));
    }
    out
}

pub fn modules_btf(k: &Kernel) -> Check {
    if k.modules.is_empty() {
        return no_modules(MODULES_BTF);
    }
    let total = k.modules.len();
    // An empty `.BTF` (a header with no bytes) delivers nothing: it counts as missing.
    let bad: Vec<_> = k
        .modules
        .iter()
        .filter(|m| m.btf_len.unwrap_or(0) == 0)
        .collect();
    let raw: u64 = k.modules.iter().filter_map(|m| m.btf_len).sum();
    if bad.is_empty() {
        let sizes = k.modules.iter().filter_map(|m| Some((m.btf_len?, m)));
        let (lo, hi) = (
            sizes.clone().min_by_key(|(l, _)| *l),
            sizes.max_by_key(|(l, _)| *l),
        );
        let ev = [("smallest", lo), ("largest", hi)]
            .into_iter()
            .filter_map(|(w, x)| {
                let (l, m) = x?;
                Some(format!(
                    "{w} .BTF: {} bytes in {}",
                    grouped(l),
                    m.path.display()
                ))
            })
            .collect();
        Check::pass(
            MODULES_BTF,
            format!(
                "{total}/{total} modules have .BTF ({} bytes in all)",
                grouped(raw)
            ),
        )
        .with_evidence(ev)
    } else {
        Check::fail(
            MODULES_BTF,
            format!("{} of {total} modules have no .BTF section", bad.len()),
        )
        .with_evidence(offenders(bad.iter().map(|m| match &m.error {
            Some(e) => format!("{}: unreadable: {e}", m.path.display()),
            None if m.btf_nobits => format!(
                "{}: .BTF is SHT_NOBITS (a section header with no data)",
                m.path.display()
            ),
            None if m.btf_len == Some(0) => format!("{}: empty .BTF", m.path.display()),
            None => format!("{}: no .BTF", m.path.display()),
        })))
    }
}

pub fn modules_stripped(k: &Kernel) -> Check {
    if k.modules.is_empty() {
        return no_modules(MODULES_STRIPPED);
    }
    let total = k.modules.len();
    // A module that could not be read was not shown to be stripped: it fails this check too.
    let unreadable: Vec<_> = k.modules.iter().filter(|m| m.error.is_some()).collect();
    let bad: Vec<_> = k.modules.iter().filter(|m| !m.debug.is_empty()).collect();
    if bad.is_empty() && unreadable.is_empty() {
        let elf: u64 = k.modules.iter().map(|m| m.elf_size).sum();
        return Check::pass(
            MODULES_STRIPPED,
            format!("none of {total} modules carries .debug_* sections"),
        )
        .with_evidence(vec![format!(
            "{total} section tables read ({} bytes of ELF), 0 .debug_* sections",
            grouped(elf)
        )]);
    }
    let debug_bytes: u64 = bad
        .iter()
        .flat_map(|m| m.debug.iter().map(|(_, s)| *s))
        .sum();
    let mut what = Vec::new();
    if !bad.is_empty() {
        what.push(format!(
            "{} of {total} modules carry .debug_* sections ({} bytes of debug info)",
            bad.len(),
            grouped(debug_bytes)
        ));
    }
    if !unreadable.is_empty() {
        what.push(format!(
            "{} of {total} modules could not be read, so were not shown to be stripped",
            unreadable.len()
        ));
    }
    Check::fail(MODULES_STRIPPED, what.join("; ")).with_evidence(offenders(
        unreadable
            .iter()
            .map(|m| {
                format!(
                    "{}: unreadable: {}",
                    m.path.display(),
                    m.error.as_deref().unwrap_or_default()
                )
            })
            .chain(bad.iter().map(|m| {
                let names: Vec<&str> = m.debug.iter().map(|(n, _)| n.as_str()).collect();
                format!("{}: {}", m.path.display(), names.join(" "))
            })),
    ))
}

pub fn modules_btf_base(k: &Kernel) -> Check {
    if k.modules.is_empty() {
        return no_modules(MODULES_BTF_BASE);
    }
    let with_btf: Vec<_> = k.modules.iter().filter(|m| m.btf_len.is_some()).collect();
    if with_btf.is_empty() {
        return Check::fail(
            MODULES_BTF_BASE,
            "no module has .BTF to check (see modules.btf)",
        );
    }
    let mut bad = Vec::new();
    let mut refs = 0u64;
    for m in &with_btf {
        match &m.base_fit {
            Some(Ok(f)) if f.ok() => refs += f.name_refs as u64,
            Some(Ok(f)) => bad.push(format!(
                "{}: {} of {} name offsets miss a string start, {} type ids out of range",
                m.path.display(),
                f.bad_names,
                f.name_refs,
                f.bad_type_ids
            )),
            Some(Err(e)) => bad.push(format!("{}: {}", m.path.display(), e.message())),
            None => bad.push(format!("{}: not checked", m.path.display())),
        }
    }
    if bad.is_empty() && refs == 0 {
        return Check::fail(
            MODULES_BTF_BASE,
            "no module BTF refers to a name: nothing was compared with this vmlinux's BTF",
        );
    }
    if bad.is_empty() {
        let base = k
            .vmlinux_btf()
            .map(|b| format!("base: the vmlinux .BTF, {} types", grouped(b.ntypes as u64)))
            .unwrap_or_default();
        Check::pass(
            MODULES_BTF_BASE,
            format!(
                "{} module BTFs fit this vmlinux ({} name references land on identifiers)",
                with_btf.len(),
                grouped(refs)
            ),
        )
        .with_evidence(vec![
            base,
            format!(
                "{} modules checked: every name offset lands on an identifier start in the base or the module's strings, every type id in range",
                with_btf.len()
            ),
        ])
    } else {
        Check::fail(
            MODULES_BTF_BASE,
            format!(
                "{} of {} module BTFs do not fit this vmlinux's BTF (built against another kernel?)",
                bad.len(),
                with_btf.len()
            ),
        )
        .with_evidence(offenders(bad.into_iter()))
    }
}

pub fn size_budget(k: &Kernel, budget: u64) -> Check {
    let b = Breakdown::of(k);
    let ev = vec![
        format!(
            "vmlinuz: {} bytes ({})",
            grouped(b.vmlinuz_btf.unwrap_or(0)),
            b.vmlinuz_method
        ),
        format!(
            "modules: {} bytes ({})",
            grouped(b.modules_btf),
            b.modules_method
        ),
    ];
    let line = format!(
        "BTF costs {} bytes (vmlinuz {} + modules {}) against a budget of {}",
        grouped(b.total),
        grouped(b.vmlinuz_btf.unwrap_or(0)),
        grouped(b.modules_btf),
        grouped(budget)
    );
    if b.vmlinuz_btf.is_none() && k.vmlinux_btf().is_some() {
        return Check::fail(
            SIZE_BUDGET,
            format!("could not price the vmlinux .BTF: {}", b.vmlinuz_method),
        )
        .with_evidence(ev);
    }
    if b.total <= budget {
        Check::pass(SIZE_BUDGET, line).with_evidence(ev)
    } else {
        Check::fail(
            SIZE_BUDGET,
            format!("{line}: over by {}", grouped(b.total - budget)),
        )
        .with_evidence(ev)
    }
}
