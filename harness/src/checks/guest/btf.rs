//! guest.btf_vmlinux and guest.btf_modules: sysfs BTF compared with the package's `.BTF`, byte for byte,
//! and a module's BTF tested against the running kernel's base.

use super::*;

pub(super) fn btf_vmlinux(r: &Runner<'_>, m: &mut Machine) -> Result<Check, RunError> {
    let (_, out) = m.run(
        BTF_VMLINUX,
        &format!("if [ -e /sys/kernel/btf/vmlinux ]; then echo SIZE $(stat -c %s /sys/kernel/btf/vmlinux); {VMLINUX_SHA}; cat /tmp/btfvm.sha; else echo MISSING; fi"),
        r.command,
    )?;
    if out.contains("MISSING") {
        return Ok(Check::fail(
            BTF_VMLINUX,
            "/sys/kernel/btf/vmlinux does not exist in the guest",
        ));
    }
    let Some(stat) = r.k.vmlinux_btf() else {
        return Ok(Check::fail(
            BTF_VMLINUX,
            "the guest exports /sys/kernel/btf/vmlinux but the package's vmlinux has no valid .BTF to compare it with",
        ));
    };
    let want = sha256_hex(&stat.bytes);
    let got = out
        .lines()
        .find(|l| l.ends_with("/sys/kernel/btf/vmlinux"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or("");
    let size = value(&out, "SIZE ").unwrap_or_default();
    let ev = vec![
        format!("guest: {size} bytes sha256 {got}"),
        format!("static: {} bytes sha256 {want}", stat.bytes.len()),
    ];
    Ok(if got == want {
        Check::pass(
            BTF_VMLINUX,
            format!("/sys/kernel/btf/vmlinux is byte-identical to the static .BTF ({size} bytes)"),
        )
        .with_evidence(ev)
    } else {
        Check::fail(
            BTF_VMLINUX,
            "/sys/kernel/btf/vmlinux differs from the .BTF in the package's vmlinux",
        )
        .with_evidence(ev)
    })
}

const MODULES_END: &str = "BTFGATE_MODULES_END";

pub(super) fn btf_modules(r: &Runner<'_>, m: &mut Machine) -> Result<Check, RunError> {
    let p = r.prep;
    if p.load_order.is_empty() {
        return Ok(judge_btf_modules(r.prep, r.k, ""));
    }
    let order = p.load_order.join(" ");
    let wanted: Vec<&str> = p.wanted.iter().map(|(n, _)| n.as_str()).collect();
    // The running kernel's base BTF is hashed once (guest.btf_vmlinux reads the same file).
    let cmd = format!(
        "for m in {order}; do modprobe $m >/tmp/mp.err 2>&1; echo \"MOD $m $? $(head -c 200 /tmp/mp.err)\"; done; if [ -e /sys/kernel/btf/vmlinux ]; then {VMLINUX_SHA}; echo \"BASE $(cat /tmp/btfvm.sha)\"; else echo 'BASE none'; fi; for m in {}; do if [ -e /sys/kernel/btf/$m ]; then sha256sum /sys/kernel/btf/$m; else echo \"NOBTF $m\"; fi; done; echo {MODULES_END}",
        wanted.join(" ")
    );
    let (_, out) = m.run(BTF_MODULES, &cmd, r.command)?;
    Ok(judge_btf_modules(r.prep, r.k, &out))
}

/// guest.btf_modules from the guest's output: every wanted module loaded, its
/// `/sys/kernel/btf/<mod>` equal to the `.ko`'s `.BTF`, and that BTF fitting the running
/// kernel's base. The kernel can accept a module BTF built against another vmlinux without a
/// word (a name offset that lands inside another identifier still looks valid), so equal bytes
/// are not enough: the guest's `/sys/kernel/btf/vmlinux` must be the package's `.BTF` (same
/// sha256), and then the base-fit test of the static pass, run on exactly these bytes, decides.
/// Passes only when at least one module was compared and nothing was wrong.
pub fn judge_btf_modules(p: &Prepared, k: &Kernel, out: &str) -> Check {
    if p.wanted.is_empty() && p.missing.is_empty() {
        return Check::fail(
            BTF_MODULES,
            "no module to load: checking nothing is not a pass (the package has none of the named modules, or none were named)",
        );
    }
    let mut ev: Vec<String> = p.missing.clone();
    let mut bad = p.missing.len();
    if p.wanted.is_empty() {
        return Check::fail(
            BTF_MODULES,
            format!("{bad} problem(s): none of the named modules is in the package"),
        )
        .with_evidence(ev);
    }
    if let Some(cut) = missing_end(out, BTF_MODULES, MODULES_END) {
        ev.extend(out.lines().rev().take(5).map(str::to_string));
        return Check::fail(BTF_MODULES, cut).with_evidence(ev);
    }
    for l in lines_with(out, "MOD ") {
        let mut it = l.split_whitespace().skip(1);
        let (name, rc) = (it.next().unwrap_or(""), it.next().unwrap_or(""));
        if rc != "0" {
            bad += 1;
            ev.push(format!("modprobe {name} failed: {l}"));
        }
    }
    let base_guest = value(out, "BASE ")
        .and_then(|v| v.split_whitespace().next())
        .unwrap_or("none");
    let base_static = k.vmlinux_btf().map(|b| sha256_hex(&b.bytes));
    let base_same = base_static.as_deref() == Some(base_guest);
    let mut compared = 0usize;
    for (name, want) in &p.wanted {
        let got = out
            .lines()
            .find(|l| l.ends_with(&format!("/sys/kernel/btf/{name}")))
            .and_then(|l| l.split_whitespace().next());
        match (got, want) {
            (Some(g), Some(w)) if g == w => {
                if !base_same {
                    bad += 1;
                    ev.push(format!(
                        "{name}: /sys/kernel/btf/{name} = .BTF of the .ko, but the running kernel's /sys/kernel/btf/vmlinux (sha256 {}) is not the package's .BTF ({}): cannot prove the module's BTF fits it",
                        short(base_guest),
                        base_static.as_deref().map(short).unwrap_or("none")
                    ));
                    continue;
                }
                match k.module(name).and_then(|m| m.base_fit.as_ref()) {
                    Some(Ok(f)) if f.ok() && f.name_refs == 0 => {
                        bad += 1;
                        ev.push(format!("{name}: its .BTF refers to no name, so its fit with the running kernel's BTF is unproven"));
                    }
                    Some(Ok(f)) if f.ok() => {
                        compared += 1;
                        ev.push(format!(
                            "{name}: /sys/kernel/btf/{name} = .BTF of the .ko (sha256 {}), fits the running kernel's BTF ({} name references land on identifiers)",
                            short(g),
                            f.name_refs
                        ));
                    }
                    Some(Ok(f)) => {
                        bad += 1;
                        ev.push(format!(
                            "{name}: loaded, /sys/kernel/btf/{name} = .BTF of the .ko, but it does not fit the running kernel's BTF: {} of {} name offsets miss a string start, {} type ids out of range (the kernel accepted a module BTF built against another vmlinux)",
                            f.bad_names, f.name_refs, f.bad_type_ids
                        ));
                    }
                    Some(Err(e)) => {
                        bad += 1;
                        ev.push(format!("{name}: its .BTF could not be checked against the running kernel's: {}", e.message()));
                    }
                    None => {
                        bad += 1;
                        ev.push(format!(
                            "{name}: its .BTF was not checked against the running kernel's"
                        ));
                    }
                }
            }
            (Some(g), Some(w)) => {
                bad += 1;
                ev.push(format!(
                    "{name}: /sys/kernel/btf/{name} sha256 {g} differs from the .ko's .BTF {w}"
                ));
            }
            (Some(_), None) => {
                bad += 1;
                ev.push(format!(
                    "{name}: the .ko has no .BTF but the kernel exports one"
                ));
            }
            (None, _) => {
                bad += 1;
                ev.push(format!(
                    "{name}: /sys/kernel/btf/{name} missing after modprobe"
                ));
            }
        }
    }
    if bad == 0 && compared > 0 {
        Check::pass(
            BTF_MODULES,
            format!(
                "{compared} modules loaded ({} with deps); each /sys/kernel/btf/<mod> equals its .ko's .BTF and fits the running kernel's BTF",
                p.load_order.len()
            ),
        )
        .with_evidence(ev)
    } else {
        Check::fail(
            BTF_MODULES,
            format!(
                "{} problem(s) loading modules or matching their BTF ({compared} of {} modules proven to fit the running kernel)",
                bad.max(1),
                p.wanted.len()
            ),
        )
        .with_evidence(ev)
    }
}

/// The first 16 hex digits of a digest, for evidence lines.
fn short(hex: &str) -> &str {
    hex.get(..16).unwrap_or(hex)
}
