//! The guest checks (runtime): each runs one or a few shell lines in the booted guest and
//! compares what the guest shows with what the package holds.

use std::time::Duration;

use super::Check;
use crate::hash::sha256_hex;
use crate::kernel::Kernel;
use crate::qemu::args::{Boot, Spec};
use crate::qemu::machine::{Machine, RunError};

/// The kfunc probe in a loaded module that guest.bpftrace attaches (default: overlay's
/// `ovl_fill_super`, run by mounting an overlay).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleProbe {
    pub module: String,
    pub function: String,
    /// A guest shell line that makes the function run.
    pub workload: String,
}

impl Default for ModuleProbe {
    fn default() -> Self {
        ModuleProbe {
            module: "overlay".into(),
            function: "ovl_fill_super".into(),
            workload: "mkdir -p /tmp/ol/l /tmp/ol/u /tmp/ol/w /tmp/ol/m; mount -t overlay ov -o lowerdir=/tmp/ol/l,upperdir=/tmp/ol/u,workdir=/tmp/ol/w /tmp/ol/m 2>/dev/null && umount /tmp/ol/m".into(),
        }
    }
}

/// Everything the guest needs, prepared on the host.
pub struct Prepared {
    pub boot: Boot,
    pub initrd: std::path::PathBuf,
    /// Modules in load order (softdeps and deps first).
    pub load_order: Vec<String>,
    /// Modules the run checks (`guest.btf_modules`), with the sha256 of their `.BTF`.
    pub wanted: Vec<(String, Option<String>)>,
    /// Wanted modules that are not in the package (a failure of `guest.btf_modules`).
    pub missing: Vec<String>,
}

pub const BOOT: &str = "guest.boot";
pub const BTF_VMLINUX: &str = "guest.btf_vmlinux";
pub const BTF_MODULES: &str = "guest.btf_modules";
pub const BPFTRACE: &str = "guest.bpftrace";
pub const BPFTOOL: &str = "guest.bpftool";
pub const CORE: &str = "guest.core";
pub const DMESG: &str = "guest.dmesg";

/// Every guest check id, in the order they run.
pub const IDS: [&str; 7] = [
    BOOT,
    BTF_VMLINUX,
    BTF_MODULES,
    BPFTRACE,
    BPFTOOL,
    CORE,
    DMESG,
];

/// What the steps need besides the machine.
pub struct Runner<'a> {
    pub prep: &'a Prepared,
    pub k: &'a Kernel,
    pub hide_sysfs_btf: bool,
    /// A control: kernel headers made reachable in the guest before the checks.
    pub plant_headers: bool,
    /// A word unique to this run: guest.core execs `/bin/true <token>` and must see it.
    pub token: String,
    pub command: Duration,
    pub module_probe: &'a ModuleProbe,
}

type Step = fn(&Runner<'_>, &mut Machine) -> Result<Check, RunError>;

/// The checks after boot, in order. bpftrace is started right after the modules load (see
/// [`start_bpftrace`]) and collected after the checks that run meanwhile.
pub const STEPS: [(&str, Step); 6] = [
    (BTF_MODULES, btf_modules),
    (BTF_VMLINUX, btf_vmlinux),
    (CORE, core),
    (BPFTOOL, bpftool),
    (BPFTRACE, bpftrace),
    (DMESG, dmesg),
];

/// All guest checks failed because the guest never reached its prompt.
pub fn not_booted(e: &RunError) -> Vec<Check> {
    let mut v = vec![Check::fail(BOOT, e.to_string())
        .with_evidence(e.tail().lines().map(str::to_string).collect())];
    for id in &IDS[1..] {
        v.push(Check::fail(id, "not run: the guest did not boot"));
    }
    v
}

pub fn booted(m: &Machine, spec: &Spec) -> Check {
    Check::pass(
        BOOT,
        format!(
            "guest {} answered on the console after {:.1} s",
            m.release, m.boot_secs
        ),
    )
    .with_evidence(vec![
        format!(
            "accelerator {}, {} vCPU, boot {:?}",
            spec.accel.name(),
            spec.cpus,
            spec.boot
        ),
        format!("initramfs {}", spec.initrd.display()),
        format!("transcript {}", m.transcript.display()),
    ])
}

fn lines_with<'a>(out: &'a str, prefix: &str) -> Vec<&'a str> {
    out.lines().filter(|l| l.starts_with(prefix)).collect()
}

/// The value of the first `KEY value` line the guest printed (`key` includes the space).
fn value<'a>(out: &'a str, key: &str) -> Option<&'a str> {
    out.lines().find_map(|l| l.strip_prefix(key)).map(str::trim)
}

/// The failure message when the guest's output of `phase` lacks its end marker: the command
/// did not run to its end, so nothing it printed before proves anything.
fn missing_end(out: &str, phase: &str, marker: &str) -> Option<String> {
    (!out.lines().any(|l| l.trim() == marker))
        .then(|| format!("phase {phase}: the guest's output ended before its end marker {marker}"))
}

/// Hashes the running kernel's BTF once into /tmp/btfvm.sha (guest.btf_modules and
/// guest.btf_vmlinux both read it).
const VMLINUX_SHA: &str =
    "[ -s /tmp/btfvm.sha ] || sha256sum /sys/kernel/btf/vmlinux > /tmp/btfvm.sha";

/// Runs before the checks: hides sysfs BTF for the control, then starts the bpftool dump in
/// the background so that it overlaps with the module and bpftrace checks (its result is read
/// by the bpftool check).
pub fn setup(r: &Runner<'_>, m: &mut Machine) -> Result<(), RunError> {
    let hide = if r.hide_sysfs_btf {
        "mount -t tmpfs none /sys/kernel/btf; "
    } else {
        ""
    };
    // What a linux-headers package installs: a build tree bpftrace would find by release.
    let plant = if r.plant_headers {
        "mkdir -p /lib/modules/$(uname -r)/build/include/linux && echo '/* planted by btfgate */' > /lib/modules/$(uname -r)/build/include/linux/sched.h; "
    } else {
        ""
    };
    m.run(
        "setup",
        &format!(
            "{hide}{plant}(bpftool btf dump file /sys/kernel/btf/vmlinux format c > /tmp/vmlinux.h 2>/tmp/bpftool.err; echo $? > /tmp/bpftool.rc) & BPFTOOL_PID=$!"
        ),
        r.command,
    )?;
    Ok(())
}

fn btf_vmlinux(r: &Runner<'_>, m: &mut Machine) -> Result<Check, RunError> {
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

fn btf_modules(r: &Runner<'_>, m: &mut Machine) -> Result<Check, RunError> {
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

/// Every door through which kernel headers reach bpftrace: the in-kernel archive
/// (`CONFIG_IKHEADERS`, built in, or the `kheaders` module bpftrace would load), a headers
/// build tree by release, kernel sources, the libc's kernel headers. Printed before and after
/// bpftrace runs (bpftrace can load `kheaders` itself).
const HEADERS_PROBE: &str = "H=''; for p in /sys/kernel/kheaders.tar.xz /lib/modules/*/build /lib/modules/*/source /usr/src/* /usr/include/linux $(find /lib/modules -name 'kheaders.ko*' 2>/dev/null); do [ -e \"$p\" ] && H=\"$H $p\"; done; echo \"HEADERS [${H# }]\"";
const BPFTRACE_END: &str = "BTFGATE_BPFTRACE_END";

/// The bpftrace probe run: whether the module probe's module is loaded, the `@map: 1` line
/// that shows it fired, and the guest shell line.
fn bpftrace_script(r: &Runner<'_>) -> (bool, String, String) {
    let probe = r.module_probe;
    let loaded = r
        .prep
        .load_order
        .iter()
        .any(|n| *n == probe.module.replace('-', "_"));
    let mut prog = String::from(
        "BEGIN { printf(\"SIZEOF %d\\n\", sizeof(struct task_struct)); } kfunc:vmlinux:vfs_read { @vfs_read = 1; @vfs_read_count = args->count; }",
    );
    let mut done = String::from("@vfs_read == 1");
    let fired = format!("@{}: 1", probe.function);
    if loaded {
        prog.push_str(&format!(
            " kfunc:{}:{} {{ @{} = 1; }}",
            probe.module, probe.function, probe.function
        ));
        done.push_str(&format!(" && @{} == 1", probe.function));
    }
    prog.push_str(&format!(" interval:ms:200 {{ if ({done}) {{ exit(); }} }}"));
    // busybox cat uses sendfile; read/dd call vfs_read; the probe's workload runs its function.
    let module_work = if loaded {
        format!("{}; ", probe.workload)
    } else {
        String::new()
    };
    let workload = format!(
        "(while :; do read x < /proc/version; dd if=/proc/version of=/dev/null 2>/dev/null; {module_work}sleep 0.3; done) & W=$!"
    );
    let limit = r.command.as_secs().saturating_sub(10).max(10);
    let cmd = format!(
        "{HEADERS_PROBE}; {workload}; timeout -s INT {limit} bpftrace -e '{prog}' 2>&1; echo \"BT_RC $?\"; kill $W; {HEADERS_PROBE}; echo {BPFTRACE_END}"
    );
    (loaded, fired, cmd)
}

/// Starts the bpftrace probes in the background once the modules are loaded, so that they run
/// while the other checks do; [`bpftrace`] collects the result.
pub fn start_bpftrace(r: &Runner<'_>, m: &mut Machine) -> Result<(), RunError> {
    let (_, _, cmd) = bpftrace_script(r);
    m.run(
        "start bpftrace",
        &format!("( {cmd} ) > /tmp/bt.out 2>&1 & BT_PID=$!"),
        r.command,
    )?;
    Ok(())
}

fn bpftrace(r: &Runner<'_>, m: &mut Machine) -> Result<Check, RunError> {
    let probe = r.module_probe;
    let (loaded, fired, _) = bpftrace_script(r);
    let (_, out) = m.run(
        BPFTRACE,
        "wait $BT_PID; cat /tmp/bt.out",
        r.command + Duration::from_secs(30),
    )?;
    Ok(judge_bpftrace(probe, loaded, &fired, &out))
}

/// guest.bpftrace from the guest's output: no headers anywhere (before and after bpftrace ran,
/// each door probed), types and arguments resolved, kfuncs attached and fired.
pub fn judge_bpftrace(probe: &ModuleProbe, loaded: bool, fired: &str, out: &str) -> Check {
    let mut ev = Vec::new();
    let mut bad = Vec::new();
    bad.extend(missing_end(out, BPFTRACE, BPFTRACE_END));
    let probes = lines_with(out, "HEADERS [");
    let read: Vec<&str> = probes
        .iter()
        .filter_map(|l| l.strip_prefix("HEADERS [")?.trim_end().strip_suffix(']'))
        .collect();
    let present: Vec<&str> = read.iter().flat_map(|l| l.split_whitespace()).collect();
    if probes.len() != 2 || read.len() != 2 {
        bad.push(format!(
            "the header probe ran {} time(s), not twice (before and after bpftrace): no headers is unproven",
            probes.len()
        ));
    } else if !present.is_empty() {
        let mut doors: Vec<&str> = present.clone();
        doors.sort_unstable();
        doors.dedup();
        bad.push(format!(
            "headers present: cannot prove BTF was used ({})",
            doors.join(", ")
        ));
    } else {
        ev.push("no kernel headers in the guest: /sys/kernel/kheaders.tar.xz, a kheaders module, /lib/modules/*/build, /lib/modules/*/source, /usr/src/*, /usr/include/linux all absent before and after".to_string());
    }
    match value(out, "SIZEOF ").and_then(|v| v.parse::<u64>().ok()) {
        Some(n) if n > 0 => ev.push(format!(
            "sizeof(struct task_struct) = {n} from BTF, no headers"
        )),
        _ => bad.push("sizeof(struct task_struct) did not resolve".into()),
    }
    if out.contains("@vfs_read: 1") {
        ev.push("kfunc:vmlinux:vfs_read attached and fired".into());
    } else {
        bad.push("kfunc:vmlinux:vfs_read did not fire".into());
    }
    let kf = format!("kfunc:{}:{}", probe.module, probe.function);
    if loaded {
        if out.contains(fired) {
            ev.push(format!("{kf} (a loaded module) attached and fired"));
        } else {
            bad.push(format!("{kf} in the loaded module did not fire"));
        }
    } else {
        bad.push(format!(
            "module {} is not loaded: cannot attach {kf}",
            probe.module
        ));
    }
    match lines_with(out, "@vfs_read_count: ").first() {
        Some(l) => ev.push(format!(
            "vfs_read's argument args->count resolved from BTF and read ({})",
            l.trim()
        )),
        None => bad.push("args->count of kfunc:vmlinux:vfs_read was not read".into()),
    }
    for l in out
        .lines()
        .filter(|l| l.contains("ERROR") || l.contains("error:"))
        .take(5)
    {
        ev.push(format!("bpftrace: {}", l.trim()));
    }
    if bad.is_empty() {
        Check::pass(BPFTRACE, "bpftrace resolves types and arguments, attaches and fires kfuncs (vmlinux and module), with no headers")
            .with_evidence(ev)
    } else {
        let detail = bad.join("; ");
        ev.extend(bad);
        Check::fail(BPFTRACE, detail).with_evidence(ev)
    }
}

fn bpftool(r: &Runner<'_>, m: &mut Machine) -> Result<Check, RunError> {
    let (_, out) = m.run(
        BPFTOOL,
        "wait $BPFTOOL_PID; echo \"BPFTOOL_RC $(cat /tmp/bpftool.rc)\"; echo \"TASK_STRUCT $(grep -c '^struct task_struct {' /tmp/vmlinux.h)\"; echo \"BYTES $(wc -c < /tmp/vmlinux.h)\"; head -c 300 /tmp/bpftool.err",
        r.command,
    )?;
    let rc = value(&out, "BPFTOOL_RC ").unwrap_or_default();
    let ts = value(&out, "TASK_STRUCT ").unwrap_or_default();
    let bytes = value(&out, "BYTES ").unwrap_or_default();
    let ev: Vec<String> = out
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    Ok(if rc == "0" && ts == "1" {
        Check::pass(
            BPFTOOL,
            format!("bpftool dumped a {bytes}-byte vmlinux.h defining struct task_struct"),
        )
        .with_evidence(ev)
    } else {
        Check::fail(
            BPFTOOL,
            format!("bpftool btf dump: rc {rc}, struct task_struct definitions {ts}"),
        )
        .with_evidence(ev)
    })
}

const CORE_END: &str = "BTFGATE_CORE_END";

fn core(r: &Runner<'_>, m: &mut Machine) -> Result<Check, RunError> {
    let t = &r.token;
    let (_, out) = m.run(
        CORE,
        // libbpf-tools buffer their output when it is a file: stop execsnoop, then read it.
        // Programs are listed once loaded but fire only once attached: wait for execsnoop's two
        // tracepoint links (bpftool link show), then exec a command only this run names.
        // `-v` turns on libbpf's debug output: the kernel BTF it loaded and each CO-RE
        // relocation it applied.
        &format!("execsnoop -v > /tmp/es.out 2>/tmp/es.err & E=$!; i=0; while [ $i -lt 240 ] && kill -0 $E 2>/dev/null && [ $(bpftool link show 2>/dev/null | grep -c perf_event) -lt 2 ]; do sleep 0.25; i=$((i+1)); done; for j in 1 2 3 4 5; do /bin/true {t}; sleep 0.1; done; sleep 0.5; kill -INT $E 2>/dev/null; wait $E; echo \"CORE_RC $?\"; echo \"EVENTS $(grep -c ' {t}' /tmp/es.out)\"; grep -m2 ' {t}' /tmp/es.out; echo \"KBTF $(grep -m1 -E 'libbpf: (loading|loaded) kernel BTF' /tmp/es.err)\"; echo \"RELOS $(grep -c 'relo #[0-9]*: patched insn' /tmp/es.err)\"; grep -m3 -E 'relo #[0-9]+: (matching candidate|patched insn)' /tmp/es.err; grep -m8 -E 'no matching targets|failed|[Ee]rror|[Ii]nvalid|BTF for CO-RE' /tmp/es.err /tmp/es.out; echo {CORE_END}"),
        r.command,
    )?;
    Ok(judge_core(t, &out))
}

/// guest.core from the guest's output: execsnoop (a CO-RE binary copied unchanged) exited 0,
/// reported the exec of the command this run made (`/bin/true <token>`), loaded this kernel's
/// BTF and applied at least one CO-RE relocation against it (libbpf's debug lines).
pub fn judge_core(token: &str, out: &str) -> Check {
    let mut ev: Vec<String> = Vec::new();
    let mut bad: Vec<String> = Vec::new();
    bad.extend(missing_end(out, CORE, CORE_END));
    match value(out, "CORE_RC ") {
        Some("0") => ev.push("execsnoop exited 0".into()),
        Some(rc) => bad.push(format!("execsnoop exited {rc}")),
        None => bad.push("execsnoop's exit status was not seen".into()),
    }
    let events = value(out, "EVENTS ")
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap_or(0);
    let event_line = out
        .lines()
        .find(|l| l.contains(token) && !l.starts_with("EVENTS "));
    match (events, event_line) {
        (n, Some(l)) if n > 0 => ev.push(format!(
            "{n} exec event(s) of /bin/true {token}, e.g. {}",
            l.trim()
        )),
        _ => bad.push(format!(
            "no exec event of /bin/true {token} (the command this check ran)"
        )),
    }
    // libbpf says `loading kernel BTF '<path>': 0` (1.x before 1.4) or `loaded kernel BTF from
    // '<path>'` (later).
    match value(out, "KBTF ") {
        Some(l) if l.ends_with(": 0") || l.contains("loaded kernel BTF from") => {
            ev.push(l.to_string())
        }
        Some("") | None => bad.push("libbpf did not report loading the kernel's BTF".into()),
        Some(l) => bad.push(format!("libbpf could not load the kernel's BTF: {l}")),
    }
    let relos = value(out, "RELOS ")
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap_or(0);
    if relos > 0 {
        ev.push(format!(
            "{relos} CO-RE relocations applied against this kernel's BTF"
        ));
        ev.extend(
            out.lines()
                .filter(|l| l.contains("matching candidate") || l.contains("patched insn"))
                .take(3)
                .map(|l| l.trim().to_string()),
        );
    } else {
        bad.push("no CO-RE relocation was applied against this kernel's BTF".into());
    }
    if bad.is_empty() {
        Check::pass(
            CORE,
            format!("execsnoop (libbpf-tools, CO-RE, copied unchanged) exited 0 after reporting /bin/true {token}, {relos} relocations applied against this kernel's BTF"),
        )
        .with_evidence(ev)
    } else {
        let detail = bad.join("; ");
        ev.extend(bad);
        ev.extend(
            out.lines()
                .filter(|l| {
                    l.contains("no matching targets")
                        || l.contains("failed")
                        || l.contains("rror")
                        || l.contains("nvalid")
                })
                .take(8)
                .map(|l| l.trim().to_string()),
        );
        Check::fail(CORE, detail).with_evidence(ev)
    }
}

const DMESG_END: &str = "BTFGATE_DMESG_END";

fn dmesg(r: &Runner<'_>, m: &mut Machine) -> Result<Check, RunError> {
    let (_, out) = m.run(
        DMESG,
        &format!("dmesg > /tmp/dmesg.all 2>/tmp/dmesg.err; echo \"DMESG_RC $? LINES $(wc -l < /tmp/dmesg.all)\"; grep -E 'failed to validate module|BTF: .*[Ii]nvalid|BPF: .*[Ii]nvalid|BPF: .*cycle|WARNING:|BUG:|Oops|Call Trace|general protection' /tmp/dmesg.all | head -20; echo {DMESG_END}"),
        r.command,
    )?;
    Ok(judge_dmesg(&out))
}

/// guest.dmesg from the guest's output: the whole log was read (dmesg exited 0, more than zero
/// lines, the end marker seen) and holds no BTF errors, WARN, BUG or Oops.
pub fn judge_dmesg(out: &str) -> Check {
    if let Some(cut) = missing_end(out, DMESG, DMESG_END) {
        return Check::fail(DMESG, format!("{cut}: the log was not read"))
            .with_evidence(out.lines().rev().take(5).map(str::to_string).collect());
    }
    // `DMESG_RC <rc> LINES <n>`
    let status = value(out, "DMESG_RC ").map(|v| {
        let mut it = v.split_whitespace();
        (
            it.next().unwrap_or("").to_string(),
            it.nth(1).and_then(|n| n.parse::<u64>().ok()),
        )
    });
    let lines = match status {
        Some((rc, Some(n))) if rc == "0" && n > 0 => n,
        Some((rc, n)) => {
            return Check::fail(
                DMESG,
                format!(
                    "dmesg exited {rc} with {} lines: the log was not read",
                    n.map(|n| n.to_string()).unwrap_or_else(|| "?".into())
                ),
            )
        }
        None => {
            return Check::fail(
                DMESG,
                "dmesg's exit status was not seen: the log was not read",
            )
        }
    };
    let hits: Vec<String> = out
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with("DMESG_RC ") && l.trim() != DMESG_END)
        .map(str::to_string)
        .collect();
    if hits.is_empty() {
        Check::pass(
            DMESG,
            format!("all {lines} lines of dmesg read: no BTF errors, WARN, BUG or Oops"),
        )
        .with_evidence(vec![format!(
            "dmesg exited 0, {lines} lines read, end marker {DMESG_END} seen, no line matched"
        )])
    } else {
        Check::fail(DMESG, format!("{} suspicious dmesg line(s)", hits.len())).with_evidence(hits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::Status;

    const TOKEN: &str = "btfgate0123456789ab";

    fn core_out() -> String {
        [
            "CORE_RC 0",
            "EVENTS 5",
            "true             312     290       0 /bin/true btfgate0123456789ab",
            "KBTF libbpf: loading kernel BTF '/sys/kernel/btf/vmlinux': 0",
            "RELOS 5",
            "libbpf: prog 'tracepoint__syscalls__sys_enter_execve': relo #1: matching candidate #0 <byte_off> [114] struct task_struct.real_parent (0:95 @ offset 1280)",
            "libbpf: prog 'tracepoint__syscalls__sys_enter_execve': relo #1: patched insn #48 (ALU/ALU64) imm 2512 -> 1280",
            CORE_END,
        ]
        .join("\n")
    }

    #[test]
    fn core_passes_only_on_all_its_evidence() {
        let good = core_out();
        let c = judge_core(TOKEN, &good);
        assert_eq!(c.status, Status::Pass, "{c:?}");
        let newer = good.replace(
            "libbpf: loading kernel BTF '/sys/kernel/btf/vmlinux': 0",
            "libbpf: loaded kernel BTF from '/sys/kernel/btf/vmlinux'",
        );
        assert_eq!(judge_core(TOKEN, &newer).status, Status::Pass);
        for (what, bad) in [
            ("exit status", good.replace("CORE_RC 0", "CORE_RC 1")),
            ("exec event", good.replace(TOKEN, "btfgateffffffffffff")),
            ("kernel BTF", good.replace("vmlinux': 0", "vmlinux': -2")),
            ("relocations", good.replace("RELOS 5", "RELOS 0")),
            ("end marker", good.replace(CORE_END, "")),
            // The token in a line, but no event counted for it.
            ("event count", good.replace("EVENTS 5", "EVENTS 0")),
        ] {
            let c = judge_core(TOKEN, &bad);
            assert_eq!(c.status, Status::Fail, "{what}: {c:?}");
        }
    }

    #[test]
    fn dmesg_passes_only_when_the_whole_log_was_read() {
        let clean = format!("DMESG_RC 0 LINES 412\n{DMESG_END}");
        assert_eq!(judge_dmesg(&clean).status, Status::Pass);
        for (what, out) in [
            ("no end marker", "DMESG_RC 0 LINES 412\n".to_string()),
            ("nothing at all", String::new()),
            ("dmesg failed", format!("DMESG_RC 1 LINES 0\n{DMESG_END}")),
            ("empty log", format!("DMESG_RC 0 LINES 0\n{DMESG_END}")),
            (
                "a BTF error",
                format!("DMESG_RC 0 LINES 412\n[    3.1] failed to validate module [configs] BTF: -22\n{DMESG_END}"),
            ),
        ] {
            let c = judge_dmesg(&out);
            assert_eq!(c.status, Status::Fail, "{what}: {c:?}");
        }
        let c = judge_dmesg("DMESG_RC 0 LINES 412\n");
        assert!(c.detail.contains("phase guest.dmesg"), "{c:?}");
    }

    fn bpftrace_out(before: &str, after: &str) -> String {
        [
            format!("HEADERS [{before}]"),
            "SIZEOF 9792".into(),
            "@vfs_read: 1".into(),
            "@vfs_read_count: 4096".into(),
            "@ovl_fill_super: 1".into(),
            "BT_RC 0".into(),
            format!("HEADERS [{after}]"),
            BPFTRACE_END.into(),
        ]
        .join("\n")
    }

    #[test]
    fn bpftrace_refuses_to_prove_btf_when_headers_are_reachable() {
        let probe = ModuleProbe::default();
        let fired = "@ovl_fill_super: 1";
        let c = judge_bpftrace(&probe, true, fired, &bpftrace_out("", ""));
        assert_eq!(c.status, Status::Pass, "{c:?}");
        for (before, after) in [
            ("/sys/kernel/kheaders.tar.xz", ""),
            ("", "/sys/kernel/kheaders.tar.xz"),
            ("/lib/modules/6.1.0-57-cloud-amd64/build", ""),
            ("/usr/src/linux-headers-6.1.0-57-common", ""),
            ("/usr/include/linux", ""),
            ("/lib/modules/6.1.0/kernel/kernel/kheaders.ko.xz", ""),
        ] {
            let c = judge_bpftrace(&probe, true, fired, &bpftrace_out(before, after));
            assert_eq!(c.status, Status::Fail, "{before}{after}: {c:?}");
            assert!(
                c.detail
                    .contains("headers present: cannot prove BTF was used")
                    && c.detail
                        .contains(if before.is_empty() { after } else { before }),
                "{c:?}"
            );
        }
        let cut = bpftrace_out("", "").replace(BPFTRACE_END, "");
        assert_eq!(
            judge_bpftrace(&probe, true, fired, &cut).status,
            Status::Fail
        );
        let once = bpftrace_out("", "").replacen("HEADERS []", "", 1);
        assert_eq!(
            judge_bpftrace(&probe, true, fired, &once).status,
            Status::Fail
        );
    }
}
