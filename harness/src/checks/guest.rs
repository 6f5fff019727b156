//! The guest checks (runtime): each runs one or a few shell lines in the booted guest and
//! compares what the guest shows with what the package holds.

use std::time::Duration;

use super::Check;
use crate::guest::Prepared;
use crate::kernel::{sha256_hex, Kernel};
use crate::qemu::args::Spec;
use crate::qemu::machine::{Machine, RunError};

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
    pub command: Duration,
    pub module_probe: &'a crate::guest::ModuleProbe,
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

/// Runs before the checks: hides sysfs BTF for the control, then starts the bpftool dump in
/// the background so that it overlaps with the module and bpftrace checks (its result is read
/// by the bpftool check).
pub fn setup(r: &Runner<'_>, m: &mut Machine) -> Result<(), RunError> {
    let hide = if r.hide_sysfs_btf {
        "mount -t tmpfs none /sys/kernel/btf; "
    } else {
        ""
    };
    m.run(
        "setup",
        &format!(
            "{hide}(bpftool btf dump file /sys/kernel/btf/vmlinux format c > /tmp/vmlinux.h 2>/tmp/bpftool.err; echo $? > /tmp/bpftool.rc) & BPFTOOL_PID=$!"
        ),
        r.command,
    )?;
    Ok(())
}

fn btf_vmlinux(r: &Runner<'_>, m: &mut Machine) -> Result<Check, RunError> {
    let (_, out) = m.run(
        BTF_VMLINUX,
        "if [ -e /sys/kernel/btf/vmlinux ]; then echo SIZE $(stat -c %s /sys/kernel/btf/vmlinux); sha256sum /sys/kernel/btf/vmlinux; else echo MISSING; fi",
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
    let size = lines_with(&out, "SIZE ")
        .first()
        .map(|l| l[5..].trim().to_string())
        .unwrap_or_default();
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

fn btf_modules(r: &Runner<'_>, m: &mut Machine) -> Result<Check, RunError> {
    let p = r.prep;
    let mut ev: Vec<String> = p.missing.clone();
    if p.load_order.is_empty() && p.missing.is_empty() {
        return Ok(Check::skip(
            BTF_MODULES,
            "no modules to load (the package has none, or none were named)",
        ));
    }
    let order = p.load_order.join(" ");
    let wanted: Vec<&str> = p.wanted.iter().map(|(n, _)| n.as_str()).collect();
    let cmd = format!(
        "for m in {order}; do modprobe $m >/tmp/mp.err 2>&1; echo \"MOD $m $? $(head -c 200 /tmp/mp.err)\"; done; for m in {}; do if [ -e /sys/kernel/btf/$m ]; then sha256sum /sys/kernel/btf/$m; else echo \"NOBTF $m\"; fi; done",
        wanted.join(" ")
    );
    let (_, out) = m.run(BTF_MODULES, &cmd, r.command)?;
    let mut bad = p.missing.len();
    for l in lines_with(&out, "MOD ") {
        let mut it = l.split_whitespace().skip(1);
        let (name, rc) = (it.next().unwrap_or(""), it.next().unwrap_or(""));
        if rc != "0" {
            bad += 1;
            ev.push(format!("modprobe {name} failed: {l}"));
        }
    }
    for (name, want) in &p.wanted {
        let got = out
            .lines()
            .find(|l| l.ends_with(&format!("/sys/kernel/btf/{name}")))
            .and_then(|l| l.split_whitespace().next());
        match (got, want) {
            (Some(g), Some(w)) if g == w => ev.push(format!(
                "{name}: /sys/kernel/btf/{name} = .BTF of the .ko (sha256 {})",
                &g[..16]
            )),
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
    Ok(if bad == 0 {
        Check::pass(
            BTF_MODULES,
            format!("{} modules loaded ({} with deps); each /sys/kernel/btf/<mod> equals its .ko's .BTF", p.wanted.len(), p.load_order.len()),
        )
        .with_evidence(ev)
    } else {
        Check::fail(
            BTF_MODULES,
            format!("{bad} problem(s) loading modules or matching their BTF"),
        )
        .with_evidence(ev)
    })
}

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
        "H=$(ls -d /usr/include/linux /usr/src/linux* /lib/modules/*/build 2>/dev/null); echo \"HEADERS [$H]\"; {workload}; timeout -s INT {limit} bpftrace -e '{prog}' 2>&1; echo \"BT_RC $?\"; kill $W"
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
    let mut ev = Vec::new();
    let mut bad = Vec::new();
    let headers = lines_with(&out, "HEADERS [")
        .first()
        .copied()
        .unwrap_or("HEADERS [?]");
    if headers != "HEADERS []" {
        bad.push(format!("kernel headers present in the guest: {headers}"));
    }
    match lines_with(&out, "SIZEOF ")
        .first()
        .and_then(|l| l[7..].trim().parse::<u64>().ok())
    {
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
        if out.contains(&fired) {
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
    match lines_with(&out, "@vfs_read_count: ").first() {
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
    Ok(if bad.is_empty() {
        Check::pass(BPFTRACE, "bpftrace resolves types and arguments, attaches and fires kfuncs (vmlinux and module), with no headers")
            .with_evidence(ev)
    } else {
        let detail = bad.join("; ");
        ev.extend(bad);
        Check::fail(BPFTRACE, detail).with_evidence(ev)
    })
}

fn bpftool(r: &Runner<'_>, m: &mut Machine) -> Result<Check, RunError> {
    let (_, out) = m.run(
        BPFTOOL,
        "wait $BPFTOOL_PID; echo \"BPFTOOL_RC $(cat /tmp/bpftool.rc)\"; echo \"TASK_STRUCT $(grep -c '^struct task_struct {' /tmp/vmlinux.h)\"; echo \"BYTES $(wc -c < /tmp/vmlinux.h)\"; head -c 300 /tmp/bpftool.err",
        r.command,
    )?;
    let rc = lines_with(&out, "BPFTOOL_RC ")
        .first()
        .map(|l| l[11..].trim().to_string())
        .unwrap_or_default();
    let ts = lines_with(&out, "TASK_STRUCT ")
        .first()
        .map(|l| l[12..].trim().to_string())
        .unwrap_or_default();
    let bytes = lines_with(&out, "BYTES ")
        .first()
        .map(|l| l[6..].trim().to_string())
        .unwrap_or_default();
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
    } else {
        Check::fail(
            BPFTOOL,
            format!("bpftool btf dump: rc {rc}, struct task_struct definitions {ts}"),
        )
        .with_evidence(ev)
    })
}

fn core(r: &Runner<'_>, m: &mut Machine) -> Result<Check, RunError> {
    let (_, out) = m.run(
        CORE,
        // libbpf-tools buffer their output when it is a file: stop execsnoop, then read it.
        // Programs are listed once loaded but fire only once attached: wait for execsnoop's two
        // tracepoint links (bpftool link show), then exec.
        "execsnoop > /tmp/es.out 2>&1 & E=$!; i=0; while [ $i -lt 240 ] && kill -0 $E 2>/dev/null && [ $(bpftool link show 2>/dev/null | grep -c perf_event) -lt 2 ]; do sleep 0.25; i=$((i+1)); done; for j in 1 2 3 4 5; do /bin/true; sleep 0.1; done; sleep 0.5; kill -INT $E 2>/dev/null; wait $E; echo \"CORE_RC $?\"; head -c 1500 /tmp/es.out",
        r.command,
    )?;
    let events: Vec<&str> = out.lines().filter(|l| l.starts_with("true ")).collect();
    let ev: Vec<String> = out
        .lines()
        .filter(|l| !l.is_empty())
        .take(12)
        .map(str::to_string)
        .collect();
    Ok(if !events.is_empty() {
        Check::pass(
            CORE,
            format!(
                "execsnoop (libbpf-tools, CO-RE, copied unchanged) reported: {}",
                events[0].trim()
            ),
        )
    } else {
        Check::fail(CORE, "execsnoop (CO-RE) reported no event").with_evidence(ev)
    })
}

fn dmesg(r: &Runner<'_>, m: &mut Machine) -> Result<Check, RunError> {
    let (_, out) = m.run(
        DMESG,
        "dmesg | grep -E 'failed to validate module|BTF: .*[Ii]nvalid|BPF: .*[Ii]nvalid|WARNING:|BUG:|Oops|Call Trace|general protection' | head -20; echo DMESG_DONE",
        r.command,
    )?;
    let hits: Vec<String> = out
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with("DMESG_DONE"))
        .map(str::to_string)
        .collect();
    Ok(if hits.is_empty() {
        Check::pass(DMESG, "no BTF errors, WARN, BUG or Oops in dmesg")
    } else {
        Check::fail(DMESG, format!("{} suspicious dmesg line(s)", hits.len())).with_evidence(hits)
    })
}
