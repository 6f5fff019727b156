//! guest.bpftrace, guest.bpftool and guest.core: the tools run on the kernel's BTF without headers.

use super::*;

/// Every door through which kernel headers reach bpftrace: the in-kernel archive
/// (`CONFIG_IKHEADERS`, built in, or the `kheaders` module bpftrace would load), a headers
/// build tree by release, kernel sources, the libc's kernel headers. Printed before and after
/// bpftrace runs (bpftrace can load `kheaders` itself).
const HEADERS_PROBE: &str = "H=''; for p in /sys/kernel/kheaders.tar.xz /lib/modules/*/build /lib/modules/*/source /usr/src/* /usr/include/linux $(find /lib/modules -name 'kheaders.ko*' 2>/dev/null); do [ -e \"$p\" ] && H=\"$H $p\"; done; echo \"HEADERS [${H# }]\"";
const BPFTRACE_END: &str = "BTFGATE_BPFTRACE_END";

/// The kernel struct whose size bpftrace must resolve from BTF, without headers, and match
/// with the package's `.BTF`. A small one: bpftrace turns the BTF of the struct and of every
/// type it contains into C for its clang parser, and `task_struct` (hundreds of types) cost
/// bpftrace ~1.7 s more under TCG than `path` (two pointers) for the same proof.
pub const SIZEOF_STRUCT: &str = "path";

/// The bpftrace probe run: whether the module probe's module is loaded, the `@map: 1` line
/// that shows it fired, and the guest shell line.
fn bpftrace_script(r: &Runner<'_>) -> (bool, String, String) {
    let probe = r.module_probe;
    let loaded = r
        .prep
        .load_order
        .iter()
        .any(|n| *n == probe.module.replace('-', "_"));
    let mut prog = format!(
        "BEGIN {{ printf(\"SIZEOF %d\\n\", sizeof(struct {SIZEOF_STRUCT})); }} kfunc:vmlinux:vfs_read {{ @vfs_read = 1; @vfs_read_count = args->count; }}",
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
    prog.push_str(&format!(" interval:ms:100 {{ if ({done}) {{ exit(); }} }}"));
    // The shell's own `read` calls vfs_read without starting a program (busybox cat would use
    // sendfile); the probe's workload runs its function. Under TCG every program started costs
    // CPU the tools running beside it need.
    let module_work = if loaded {
        format!("{}; ", probe.workload)
    } else {
        String::new()
    };
    let workload =
        format!("(while :; do read x < /proc/version; {module_work}sleep 0.3; done) & W=$!");
    let limit = r.command.as_secs().saturating_sub(10).max(10);
    let cmd = format!(
        "{HEADERS_PROBE}; {workload}; timeout -s INT {limit} bpftrace -e '{prog}' 2>&1; echo \"BT_RC $?\"; kill $W; {HEADERS_PROBE}; echo {BPFTRACE_END}"
    );
    (loaded, fired, cmd)
}

/// The guest line that starts the bpftrace probes in the background, first thing after boot,
/// so that they run while the other checks do; [`bpftrace`] collects the result. bpftrace is
/// the longest of the guest's tools (seconds of LLVM under TCG): it starts before the other
/// modules load, once the probe's own module is in (modprobe brings its dependencies; a
/// failure shows in guest.btf_modules, which loads every module again and reports each).
pub(super) fn bpftrace_start(r: &Runner<'_>) -> String {
    let (loaded, _, cmd) = bpftrace_script(r);
    let module = if loaded {
        format!("modprobe {} >/dev/null 2>&1; ", r.module_probe.module)
    } else {
        String::new()
    };
    format!("{module}( {cmd} ) > /tmp/bt.out 2>&1 & BT_PID=$!; ")
}

pub(super) fn bpftrace(r: &Runner<'_>, m: &mut Machine) -> Result<Check, RunError> {
    let probe = r.module_probe;
    let (loaded, fired, _) = bpftrace_script(r);
    let (_, out) = m.run(
        BPFTRACE,
        "wait $BT_PID; cat /tmp/bt.out",
        r.command + Duration::from_secs(30),
    )?;
    // The size the package's own .BTF gives the struct: what the guest's answer must equal.
    let want =
        r.k.vmlinux_btf()
            .and_then(|s| crate::kernel::btf::Btf::parse(&s.bytes, None).ok())
            .and_then(|b| b.struct_size(SIZEOF_STRUCT));
    Ok(judge_bpftrace(probe, loaded, &fired, &out, want))
}

/// guest.bpftrace from the guest's output: no headers anywhere (before and after bpftrace ran,
/// each door probed), a struct's size resolved and equal to `want` (the package's `.BTF`;
/// `None`: the package has no valid `.BTF` to compare with, so any size is a failure),
/// arguments resolved, kfuncs attached and fired.
pub fn judge_bpftrace(
    probe: &ModuleProbe,
    loaded: bool,
    fired: &str,
    out: &str,
    want: Option<u32>,
) -> Check {
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
    let s = SIZEOF_STRUCT;
    match (value(out, "SIZEOF ").and_then(|v| v.parse::<u32>().ok()), want) {
        (Some(n), Some(w)) if n == w && n > 0 => ev.push(format!(
            "sizeof(struct {s}) = {n} from BTF, no headers, as in the package's .BTF"
        )),
        (Some(n), Some(w)) => bad.push(format!(
            "sizeof(struct {s}) = {n} in the guest, {w} in the package's .BTF"
        )),
        (Some(n), None) => bad.push(format!(
            "sizeof(struct {s}) = {n} in the guest, but the package's .BTF has no struct {s} to compare with"
        )),
        (None, _) => bad.push(format!("sizeof(struct {s}) did not resolve")),
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

pub(super) fn bpftool(r: &Runner<'_>, m: &mut Machine) -> Result<Check, RunError> {
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

/// The guest line that starts execsnoop in the background with the other tools (see
/// [`super::setup`]): loading its BPF programs (libbpf reading the kernel's BTF, relocating,
/// the verifier) then overlaps with the modules loading. `-v` turns on libbpf's debug output:
/// the kernel BTF it loaded and each CO-RE relocation it applied.
pub(super) const CORE_START: &str = "execsnoop -v > /tmp/es.out 2>/tmp/es.err & E=$!; ";

pub(super) fn core(r: &Runner<'_>, m: &mut Machine) -> Result<Check, RunError> {
    let t = &r.token;
    let (_, out) = m.run(
        CORE,
        // libbpf-tools buffer their output when it is a file: stop execsnoop, then read it.
        // Programs fire only once attached, and their events reach execsnoop only once its perf
        // buffer is open: execsnoop attaches its two tracepoints (a perf_event file each),
        // then opens the buffer (an epoll file and a perf_event file per possible CPU). Wait
        // until its descriptors show all of that (polling /proc costs no program start, unlike
        // bpftool), then exec a command only this run names; execsnoop is woken by each event.
        // execsnoop was started by the setup ([`CORE_START`]).
        &format!("P=$(cat /sys/devices/system/cpu/possible); N=$((${{P##*[-,]}} + 3)); i=0; while [ $i -lt 1200 ] && kill -0 $E 2>/dev/null; do F=$(ls -l /proc/$E/fd 2>/dev/null); [ $(echo \"$F\" | grep -c 'perf_event') -ge $N ] && echo \"$F\" | grep -q eventpoll && break; sleep 0.05; i=$((i+1)); done; for j in 1 2 3 4 5; do /bin/true {t}; done; sleep 0.3; kill -INT $E 2>/dev/null; wait $E; echo \"CORE_RC $?\"; echo \"EVENTS $(grep -c ' {t}' /tmp/es.out)\"; grep -m2 ' {t}' /tmp/es.out; echo \"KBTF $(grep -m1 -E 'libbpf: (loading|loaded) kernel BTF' /tmp/es.err)\"; echo \"RELOS $(grep -c 'relo #[0-9]*: patched insn' /tmp/es.err)\"; grep -m3 -E 'relo #[0-9]+: (matching candidate|patched insn)' /tmp/es.err; grep -m8 -E 'no matching targets|failed|[Ee]rror|[Ii]nvalid|BTF for CO-RE' /tmp/es.err /tmp/es.out; echo {CORE_END}"),
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

    fn bpftrace_out(before: &str, after: &str) -> String {
        [
            format!("HEADERS [{before}]"),
            "SIZEOF 16".into(),
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
        let c = judge_bpftrace(&probe, true, fired, &bpftrace_out("", ""), Some(16));
        assert_eq!(c.status, Status::Pass, "{c:?}");
        for (before, after) in [
            ("/sys/kernel/kheaders.tar.xz", ""),
            ("", "/sys/kernel/kheaders.tar.xz"),
            ("/lib/modules/6.1.0-57-cloud-amd64/build", ""),
            ("/usr/src/linux-headers-6.1.0-57-common", ""),
            ("/usr/include/linux", ""),
            ("/lib/modules/6.1.0/kernel/kernel/kheaders.ko.xz", ""),
        ] {
            let c = judge_bpftrace(&probe, true, fired, &bpftrace_out(before, after), Some(16));
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
            judge_bpftrace(&probe, true, fired, &cut, Some(16)).status,
            Status::Fail
        );
        let once = bpftrace_out("", "").replacen("HEADERS []", "", 1);
        assert_eq!(
            judge_bpftrace(&probe, true, fired, &once, Some(16)).status,
            Status::Fail
        );
    }

    #[test]
    fn bpftrace_passes_only_with_the_struct_size_of_the_package() {
        let probe = ModuleProbe::default();
        let fired = "@ovl_fill_super: 1";
        let good = bpftrace_out("", "");
        assert_eq!(
            judge_bpftrace(&probe, true, fired, &good, Some(16)).status,
            Status::Pass
        );
        for (what, out, want) in [
            ("another size", good.clone(), Some(24)),
            ("nothing to compare with", good.clone(), None),
            (
                "not resolved",
                good.replace("SIZEOF 16", "SIZEOF "),
                Some(16),
            ),
            ("no line", good.replace("SIZEOF 16\n", ""), Some(16)),
        ] {
            let c = judge_bpftrace(&probe, true, fired, &out, want);
            assert_eq!(c.status, Status::Fail, "{what}: {c:?}");
            assert!(c.detail.contains("sizeof(struct path)"), "{what}: {c:?}");
        }
    }
}
