//! The external tool matrix (`cargo xtask matrix`): the guest lines that run one tool with a
//! workload, the facts of the guest that make a tool not applicable, and the pure judgement of
//! a tool's output (emitted / attached / failed / n/a). The xtask drives a [`super::Session`].

use serde::Serialize;

/// Which family a tool belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A `.bt` script of the bpftrace package, compiled in the guest.
    Bpftrace,
    /// A libbpf-tools binary (CO-RE: relocated against the kernel's BTF when it loads).
    Libbpf,
}

/// What one tool did on one kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum Cell {
    /// Attached and printed at least one event or summary line (the first one is kept).
    Emitted { evidence: String },
    /// Started and attached (ran until interrupted without an error) but printed nothing
    /// beyond its header; `note` is its first warning (e.g. a probe it skipped).
    Attached { note: Option<String> },
    /// The tool's own error line, or how it ended (`timeout` when the console's deadline hit).
    Failed { reason: String },
    /// Not applicable: the guest lacks what the tool observes (never counted as passing).
    #[serde(rename = "n/a")]
    NotApplicable { reason: String },
}

impl Cell {
    /// The word in the table.
    pub fn word(&self) -> &'static str {
        match self {
            Cell::Emitted { .. } => "emitted",
            Cell::Attached { .. } => "attached",
            Cell::Failed { .. } => "failed",
            Cell::NotApplicable { .. } => "n/a",
        }
    }

    /// Why it failed or is not applicable.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Cell::Failed { reason } | Cell::NotApplicable { reason } => Some(reason),
            _ => None,
        }
    }
}

/// The tool's arguments besides its name: the few tools that need one to start.
pub fn arguments(name: &str) -> &'static [&'static str] {
    match name {
        "funclatency" => &["vfs_read"],
        "ksnoop" => &["trace", "vfs_read"],
        // Threshold in microseconds (default 10 ms: nothing waits that long in the guest).
        "runqslower" => &["1"],
        // The generic names need the file system named; the matrix mounts an ext4.
        "fsdist" => &["-t", "ext4"],
        "fsslower" => &["-t", "ext4", "-m", "0"],
        "ext4slower" | "xfsslower" | "btrfsslower" | "nfsslower" => &["-m", "0"],
        "javagc" => &["-p", "1"],
        _ => &[],
    }
}

/// Shell lines run once per boot before the tools: the loopback up, an ext4 (busybox mke2fs,
/// mounted by ext4) on a loop device backed by a file in tmpfs when the kernel has loop
/// devices, the workload `mx_wl` and the runner `mx_run`. Each is one console line.
pub const SETUP: [&str; 3] = [
    "ip link set lo up 2>/dev/null; mkdir -p /mnt/mx; { timeout 20 dd if=/dev/zero of=/tmp/mx.img bs=1M count=16 && timeout 10 losetup /dev/loop0 /tmp/mx.img && timeout 20 mke2fs -q /dev/loop0 && timeout 10 mount -t ext4 /dev/loop0 /mnt/mx; } >/dev/null 2>&1; true",
    // The workload: reads, an exec, a stat, a signal, a file made and removed, block I/O
    // through the page cache to the ext4, a tmpfs mount, a TCP connection over loopback.
    "mx_wl() { { cat /proc/self/stat; ls /; /bin/true; stat /; kill -0 $$; echo x >/tmp/mx.f; rm -f /tmp/mx.f; if [ -d /mnt/mx/lost+found ]; then timeout 5 dd if=/dev/zero of=/mnt/mx/f bs=4k count=4 conv=fsync; echo 3 >/proc/sys/vm/drop_caches; cat /mnt/mx/f; rm -f /mnt/mx/f; fi; sync; mkdir -p /tmp/mx.m; mount -t tmpfs mx /tmp/mx.m && umount /tmp/mx.m; (timeout 2 nc -l -p 9000 &); sleep 0.1; echo hi | timeout 2 nc 127.0.0.1 9000; } >/dev/null 2>&1; }; mx_now() { read u _ </proc/uptime; echo ${u%.*}; }",
    // mx_run SECS WARM CAP TOOL ARGS…: the tool in the foreground, its output straight to the
    // console (a terminal: line-buffered, so what it printed survives a SIGKILL; SIGINT at
    // its default, not ignored as in a background job). Beside it a controller: the workload
    // once the tool holds a BPF link or perf event (attached) or WARM seconds passed; SIGINT
    // SECS seconds after that, or at CAP; SIGKILL 10 s after the SIGINT (bpftrace detaching
    // 72 kprobes under TCG took longer than 4 s and lost its map dump). Then a status line.
    "mx_run() { N=$1; W=$2; C=$3; shift 3; rm -f /tmp/mx.rc /tmp/mx.pid /tmp/mx.st; ( t0=$(mx_now); a=; r=; i=; k=; c=; X=; while [ ! -e /tmp/mx.rc ]; do t=$(( $(mx_now) - t0 )); [ -z \"$X\" ] && X=$(cat /tmp/mx.pid 2>/dev/null); if [ -z \"$a\" ] && [ -n \"$X\" ]; then if ls -l /proc/$X/fd 2>/dev/null | grep -q -e bpf-link -e perf_event; then a=$t; r=1; elif [ $t -ge $W ]; then a=$t; fi; fi; if [ -n \"$a\" ] && [ -z \"$i\" ]; then mx_wl; [ $(( t - a )) -ge $N ] && { kill -INT $X; i=$t; }; else sleep 0.2; fi; if [ -z \"$i\" ] && [ $t -ge $C ]; then kill -INT $X; i=$t; c=1; fi; if [ -n \"$i\" ] && [ -z \"$k\" ] && [ $(( t - i )) -ge 10 ]; then kill -KILL $X; k=$t; fi; done; echo \"first=$a linked=$r int=$i kill=$k cap=$c\" >/tmp/mx.st ) >/dev/null 2>&1 </dev/null & J=$!; sh -c 'echo $$ >/tmp/mx.pid; exec \"$@\"' mx \"$@\" </dev/null 2>&1; echo $? >/tmp/mx.rc; wait $J; echo \"@@MX $(cat /tmp/mx.st) rc=$(cat /tmp/mx.rc)@@\"; }",
];

/// Seconds between the SIGINT and the SIGKILL of a tool that has not stopped.
pub const KILL_GRACE: u64 = 10;

/// When a tool is ready for the workload, and how long it may take to get there.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Seconds of workload once ready; then SIGINT.
    pub secs: u64,
    /// Seconds after which the workload starts even if the tool printed nothing (libbpf-tools
    /// buffer their header when writing to a file).
    pub warm: u64,
    /// Seconds after which the tool gets SIGINT whatever it did.
    pub cap: u64,
}

/// The console line that runs `argv` with [`SETUP`]'s `mx_run`.
pub fn tool_line(argv: &[String], t: Timing) -> String {
    let words: Vec<String> = argv.iter().map(|a| super::command::quote(a)).collect();
    format!("mx_run {} {} {} {}", t.secs, t.warm, t.cap, words.join(" "))
}

/// The line that prints the guest's facts, one `MXFACT key value…` line each.
pub const FACTS: &str = "echo \"MXFACT block $(ls /sys/block 2>/dev/null | tr '\\n' ' ')\"; echo \"MXFACT mounts $(cut -d' ' -f3 /proc/mounts | sort -u | tr '\\n' ' ')\"; echo \"MXFACT lo $(ip -o link show lo 2>&1 | head -n 1)\"; echo \"MXFACT pmu $(ls /sys/bus/event_source/devices 2>/dev/null | tr '\\n' ' ')\"; echo \"MXFACT cpufreq $(ls /sys/devices/system/cpu/cpu0/cpufreq 2>/dev/null | wc -l)\"; echo \"MXFACT numa $(ls -d /sys/devices/system/node/node* 2>/dev/null | wc -l)\"; echo \"MXFACT swap $(tail -n +2 /proc/swaps | wc -l)\"; echo \"MXFACT md $([ -e /proc/mdstat ] && echo yes)\"; echo \"MXFACT bash $([ -x /bin/bash ] && echo yes)\"; echo \"MXFACT java $(command -v java)\"; echo \"MXFACT libssl $(ls /lib /usr/lib /lib/x86_64-linux-gnu /usr/lib/x86_64-linux-gnu 2>/dev/null | grep -c '^libssl\\.so')\"";

/// What the guest has, as [`FACTS`] printed it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Facts {
    pub block: Vec<String>,
    pub mounts: Vec<String>,
    pub lo_up: bool,
    pub pmu: Vec<String>,
    pub cpufreq: bool,
    pub numa_nodes: u32,
    pub swaps: u32,
    pub md: bool,
    pub bash: bool,
    pub java: bool,
    pub libssl: bool,
}

/// Reads [`FACTS`]' output.
pub fn parse_facts(out: &str) -> Facts {
    let mut f = Facts::default();
    for l in out.lines() {
        let Some(rest) = l.trim().strip_prefix("MXFACT ") else {
            continue;
        };
        let (key, val) = rest.split_once(' ').unwrap_or((rest, ""));
        let val = val.trim();
        let words = || val.split_whitespace().map(str::to_string).collect();
        let num = || val.parse::<u32>().unwrap_or(0);
        match key {
            "block" => f.block = words(),
            "mounts" => f.mounts = words(),
            "lo" => f.lo_up = val.contains(",UP") || val.contains("<UP"),
            "pmu" => f.pmu = words(),
            "cpufreq" => f.cpufreq = num() > 0,
            "numa" => f.numa_nodes = num(),
            "swap" => f.swaps = num(),
            "md" => f.md = val == "yes",
            "bash" => f.bash = val == "yes",
            "java" => f.java = !val.is_empty(),
            "libssl" => f.libssl = num() > 0,
            _ => {}
        }
    }
    f
}

/// The tool's name without `.bt`.
fn base(name: &str) -> &str {
    name.strip_suffix(".bt").unwrap_or(name)
}

/// Why `tool` cannot show anything in this guest, from the guest's facts: the short list of
/// what each tool observes that a guest may lack (none of it is BTF).
pub fn not_applicable(tool: &str, f: &Facts) -> Option<String> {
    let name = base(tool);
    let fs = |t: &str| {
        (!f.mounts.iter().any(|m| m == t)).then(|| {
            format!(
                "no {t} file system mounted (/proc/mounts: {})",
                f.mounts.join(" ")
            )
        })
    };
    match name {
        "biolatency" | "biopattern" | "biosnoop" | "biostacks" | "biotop" | "bitesize" => f
            .block
            .is_empty()
            .then(|| "no block device (/sys/block is empty)".to_string()),
        "mdflush" => (!f.md).then(|| "no md (RAID) driver: /proc/mdstat absent".to_string()),
        "ext4dist" | "ext4slower" | "fsdist" | "fsslower" => fs("ext4"),
        "xfsdist" | "xfsslower" => fs("xfs"),
        "btrfsdist" | "btrfsslower" => fs("btrfs"),
        "nfsdist" | "nfsslower" => fs("nfs"),
        "llcstat" => (!f.pmu.iter().any(|p| p == "cpu")).then(|| {
            format!(
                "no hardware performance counters (no cpu PMU; /sys/bus/event_source/devices: {})",
                f.pmu.join(" ")
            )
        }),
        "cpufreq" => (!f.cpufreq)
            .then(|| "no cpufreq driver (/sys/devices/system/cpu/cpu0/cpufreq absent)".into()),
        "numamove" => (f.numa_nodes < 2)
            .then(|| format!("{} NUMA node: no page migrates between nodes", f.numa_nodes)),
        "swapin" => (f.swaps == 0).then(|| "no swap (/proc/swaps lists none)".to_string()),
        "bashreadline" => (!f.bash).then(|| "no /bin/bash in the guest".to_string()),
        "javagc" => (!f.java).then(|| "no java in the guest".to_string()),
        "ssllatency" | "sslsnoop" => (!f.libssl).then(|| "no libssl in the guest".to_string()),
        "bindsnoop" | "solisten" | "tcpaccept" | "tcpconnect" | "tcpconnlat" | "tcpdrop"
        | "tcplife" | "tcpretrans" | "tcprtt" | "tcpstates" | "tcpsynbl" | "tcptop"
        | "tcptracer" => (!f.lo_up).then(|| "no network: the loopback is not up".to_string()),
        _ => None,
    }
}

/// How `mx_run` ended the tool (its `@@MX …@@` line).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ending {
    /// Seconds until its first output (or the warm-up ended).
    pub first: Option<u64>,
    /// It held a BPF link or a perf event (the runner saw it in /proc/PID/fd).
    pub linked: bool,
    /// Seconds when it got SIGINT.
    pub interrupted: Option<u64>,
    /// It did not stop within [`KILL_GRACE`] seconds of SIGINT and got SIGKILL.
    pub killed: bool,
    /// The SIGINT came at the cap, before any output.
    pub capped: bool,
    pub rc: Option<i32>,
}

fn parse_ending(l: &str) -> Option<Ending> {
    let body = l.trim().strip_prefix("@@MX ")?.strip_suffix("@@")?;
    let mut e = Ending::default();
    for kv in body.split_whitespace() {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        match k {
            "first" => e.first = v.parse().ok(),
            "int" => e.interrupted = v.parse().ok(),
            "kill" => e.killed = !v.is_empty(),
            "linked" => e.linked = !v.is_empty(),
            "cap" => e.capped = !v.is_empty(),
            "rc" => e.rc = v.parse().ok(),
            _ => {}
        }
    }
    Some(e)
}

/// A line that only frames the output: a banner, a header, a warning, the runner's markers.
fn is_noise(l: &str) -> bool {
    const PREFIXES: [&str; 14] = [
        "Attaching",
        "Tracing",
        "Hit Ctrl",
        "Sampling",
        "Reading",
        "Counting",
        "Summarizing",
        "Monitoring",
        "Printing",
        "Press",
        "Killed",
        "cannot attach",
        "libbpf:",
        "@@MX",
    ];
    const INSIDE: [&str; 7] = [
        "Ctrl-C", "Ctrl+C", "WARNING", "ERROR", "error", "loadavg:", "Usage:",
    ];
    PREFIXES.iter().any(|p| l.starts_with(p)) || INSIDE.iter().any(|p| l.contains(p))
}

/// An event or summary line: not framing, and carries a number other than zero (a column
/// header has none; a summary of zeros saw nothing); a histogram row, a count above zero.
fn is_event(l: &str) -> bool {
    let l = l.trim();
    // A histogram row counts by its count, not its bucket: libbpf-tools' `lo -> hi : n |…|`,
    // bpftrace's `[lo, hi) n |…|`.
    let count = if l.contains(" -> ") && l.contains('|') {
        l.split_once(':').map(|(_, r)| r)
    } else if l.starts_with('[') && l.contains('|') {
        l.split_once(')').map(|(_, r)| r)
    } else {
        None
    };
    if let Some(r) = count {
        return r
            .split_whitespace()
            .next()
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|n| n > 0);
    }
    !l.is_empty() && !is_noise(l) && l.bytes().any(|b| (b'1'..=b'9').contains(&b))
}

/// The tool's own error line: bpftrace's `ERROR: …`, clang's `fatal error: …`, libbpf-tools'
/// `failed to …`, a usage error. A path prefix (`/work/x.bt:3-4: `) is kept as bpftrace prints it.
fn error_line(lines: &[&str]) -> Option<String> {
    lines
        .iter()
        .map(|l| l.trim())
        .find(|l| {
            let low = l.to_ascii_lowercase();
            !l.starts_with("WARNING")
                && !low.contains("skipping")
                && (l.contains("ERROR")
                    || low.contains("error:")
                    || low.starts_with("failed to")
                    || (low.starts_with("libbpf:") && low.contains("fail"))
                    || low.starts_with("usage:")
                    || low.contains("unrecognized option")
                    || low.contains("invalid option"))
        })
        .map(|l| {
            let mut s: String = l.chars().take(300).collect();
            if s.len() < l.len() {
                s.push('…');
            }
            s
        })
}

/// A header the guest does not have: clang's `fatal error: 'sys/socket.h' file not found`
/// for a C library header (not a kernel one: those are what BTF replaces).
fn missing_libc_header(lines: &[&str]) -> Option<String> {
    lines.iter().find_map(|l| {
        let rest = &l[l.find("fatal error: '")? + "fatal error: '".len()..];
        let (h, tail) = rest.split_once('\'')?;
        let kernel = ["linux/", "asm/", "net/", "uapi/", "asm-generic/", "generated/"];
        (tail.contains("file not found") && !kernel.iter().any(|k| h.starts_with(k))).then(|| {
            format!(
                "needs the C library header <{h}>: the guest has no /usr/include (Debian's bpftrace does not depend on libc6-dev)"
            )
        })
    })
}

/// A library bpftrace looks up by name (`uprobe:libc:…`) through `/etc/ld.so.cache`, which the
/// guest (tools copied with their libraries, no ldconfig) does not have.
fn library_by_name(lines: &[&str]) -> Option<String> {
    lines.iter().find_map(|l| {
        let rest = &l[l.find("uprobe target file '")? + "uprobe target file '".len()..];
        let (lib, _) = rest.split_once('\'')?;
        (!lib.contains('/')).then(|| {
            format!("bpftrace looks up library '{lib}' in /etc/ld.so.cache, which the guest does not have")
        })
    })
}

/// Judges one tool's run from its output (the lines before and including `mx_run`'s status
/// line). Only a line that shows an event makes it `emitted`.
pub fn classify(kind: Kind, output: &[String]) -> Cell {
    let lines: Vec<&str> = output.iter().map(String::as_str).collect();
    let Some(end) = lines.iter().rev().find_map(|l| parse_ending(l)) else {
        return Cell::Failed {
            reason: "no end marker: the runner did not finish".into(),
        };
    };
    let last = lines
        .iter()
        .rev()
        .map(|l| l.trim())
        .find(|l| !l.is_empty() && !l.starts_with("@@MX"));
    // 0: it stopped on SIGINT; 130: it died of it; 137: the SIGKILL after it.
    let ours = |rc: i32| rc == 0 || (end.interrupted.is_some() && (rc == 130 || rc == 137));
    let error = error_line(&lines);
    match end.rc {
        Some(rc) if !ours(rc) => {
            if let Some(reason) = missing_libc_header(&lines).or_else(|| library_by_name(&lines)) {
                return Cell::NotApplicable { reason };
            }
            return Cell::Failed {
                reason: match (error, last) {
                    (Some(e), _) => e,
                    (None, Some(l)) => format!("exited {rc}: {l}"),
                    (None, None) => format!("exited {rc} without a word"),
                },
            };
        }
        None => {
            return Cell::Failed {
                reason: "no exit status".into(),
            }
        }
        _ => {}
    }
    // bpftrace's events come after "Attaching N probes..." (before it: its diagnostics).
    let from = match kind {
        Kind::Bpftrace => lines
            .iter()
            .position(|l| l.starts_with("Attaching "))
            .map_or(lines.len(), |i| i + 1),
        Kind::Libbpf => 0,
    };
    if let Some(ev) = lines[from..].iter().map(|l| l.trim()).find(|l| is_event(l)) {
        return Cell::Emitted {
            evidence: ev.chars().take(200).collect(),
        };
    }
    if let Some(reason) = missing_libc_header(&lines) {
        return Cell::NotApplicable { reason };
    }
    if let Some(reason) = error {
        return Cell::Failed { reason };
    }
    let started = end.linked
        || match kind {
            Kind::Bpftrace => lines.iter().any(|l| l.starts_with("Attaching ")),
            // A libbpf tool that cannot load or attach says so and exits at once.
            Kind::Libbpf => end.interrupted.is_some() || end.rc == Some(0),
        };
    if end.capped || !started {
        return Cell::Failed {
            reason: if end.capped {
                "no output before the cap: still starting when interrupted".into()
            } else {
                format!("ended without attaching ({})", last.unwrap_or("no output"))
            },
        };
    }
    let note = lines
        .iter()
        .map(|l| l.trim())
        .find(|l| l.contains("WARNING"))
        .map(|l| l.chars().take(200).collect());
    Cell::Attached { note }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(s: &str) -> Vec<String> {
        s.lines().map(str::to_string).collect()
    }

    #[test]
    fn bpftrace_error_is_failed_with_its_line() {
        let c = classify(
            Kind::Bpftrace,
            &out("/work/execsnoop.bt:21-23: ERROR: Struct/union of type 'struct task_struct' does not contain a field named 'real_parent'\n@@MX first=3 int= kill= cap= rc=1@@"),
        );
        assert_eq!(c.word(), "failed");
        assert!(c.reason().unwrap().contains("ERROR: Struct/union"), "{c:?}");
        let c = classify(
            Kind::Bpftrace,
            &out("/work/bashreadline.bt:22-24: ERROR: uprobe target file '/bin/bash' does not exist or is not executable\n@@MX first=6 int= kill= cap= rc=1@@"),
        );
        assert!(c.reason().unwrap().contains("/bin/bash"), "{c:?}");
    }

    #[test]
    fn header_only_is_attached() {
        let c = classify(
            Kind::Bpftrace,
            &out("Attaching 6 probes...\ncannot attach kprobe, probe entry may not exist\nWARNING: could not attach probe kprobe:blk_account_io_done, skipping.\nTracing block device I/O... Hit Ctrl-C to end.\n\nI/O size (bytes) histograms by process name:\n\n@@MX first=6 int=10 kill= cap= rc=0@@"),
        );
        assert_eq!(
            c,
            Cell::Attached {
                note: Some(
                    "WARNING: could not attach probe kprobe:blk_account_io_done, skipping.".into()
                )
            }
        );
        let c = classify(
            Kind::Libbpf,
            &out("Tracing OOM kills... Ctrl-C to stop.\nReadahead unused/total pages: 0/0\n@@MX first=1 int=5 kill= cap= rc=0@@"),
        );
        assert_eq!(c.word(), "attached", "{c:?}");
        let c = classify(
            Kind::Libbpf,
            &out("TIME      UID    PID    COMM\n@@MX first=2 int=6 kill= cap= rc=0@@"),
        );
        assert_eq!(c.word(), "attached", "{c:?}");
    }

    #[test]
    fn events_are_emitted() {
        let c = classify(
            Kind::Bpftrace,
            &out("Attaching 3 probes...\nTracing cap_capable syscalls... Hit Ctrl-C to end.\nTIME      UID    PID    COMM             CAP  NAME                 AUDIT\n02:34:50  0      1590   mount            21   CAP_SYS_ADMIN        0\nKilled\n@@MX first=12 int=16 kill=20 cap= rc=137@@"),
        );
        assert_eq!(
            c,
            Cell::Emitted {
                evidence: "02:34:50  0      1590   mount            21   CAP_SYS_ADMIN        0"
                    .into()
            }
        );
        let c = classify(
            Kind::Bpftrace,
            &out("Attaching 1 probe...\n\n@[sh]: 12\n@@MX first=4 int=8 kill= cap= rc=0@@"),
        );
        assert_eq!(c.word(), "emitted");
        let c = classify(
            Kind::Libbpf,
            &out("Tracing syscalls, printing top 10... Ctrl+C to quit.\n[02:35:01]\nSYSCALL                   COUNT\nread                        213\n@@MX first=2 int=6 kill= cap= rc=0@@"),
        );
        assert_eq!(c.word(), "emitted");
        // Histogram rows count by their count: empty buckets are not events.
        let empty = "Tracing run queue latency... Hit Ctrl-C to end.\n     usecs               : count    distribution\n         0 -> 1          : 0        |                                        |\n@[sleep]:\n[1, 2)                 0 |                                                    |\n@@MX first=2 int=6 kill= cap= rc=0@@";
        assert_eq!(classify(Kind::Libbpf, &out(empty)).word(), "attached");
        let full = empty.replace("1          : 0  ", "1          : 3  ");
        assert_eq!(classify(Kind::Libbpf, &out(&full)).word(), "emitted");
    }

    #[test]
    fn libbpf_error_is_failed() {
        let c = classify(
            Kind::Libbpf,
            &out("libbpf: failed to find valid kernel BTF\nfailed to load BPF object: -3\n@@MX first=1 int= kill= cap= rc=1@@"),
        );
        assert_eq!(
            c,
            Cell::Failed {
                reason: "libbpf: failed to find valid kernel BTF".into()
            }
        );
        let c = classify(
            Kind::Libbpf,
            &out("failed to open BPF object\n@@MX first=1 int= kill= cap= rc=1@@"),
        );
        assert_eq!(c.reason(), Some("failed to open BPF object"));
        // Silent and nonzero: the status and nothing else.
        let c = classify(Kind::Libbpf, &out("@@MX first=2 int= kill= cap= rc=2@@"));
        assert_eq!(c.reason(), Some("exited 2 without a word"));
    }

    #[test]
    fn missing_libc_header_is_not_applicable_but_kernel_header_fails() {
        let c = classify(
            Kind::Bpftrace,
            &out("definitions.h:3:10: fatal error: 'sys/socket.h' file not found\n@@MX first=5 int= kill= cap= rc=1@@"),
        );
        assert_eq!(c.word(), "n/a", "{c:?}");
        let c = classify(
            Kind::Bpftrace,
            &out("definitions.h:2:10: fatal error: 'linux/sched.h' file not found\n@@MX first=5 int= kill= cap= rc=1@@"),
        );
        assert_eq!(c.word(), "failed", "{c:?}");
        let c = classify(
            Kind::Bpftrace,
            &out("/work/gethostlatency.bt:27-29: ERROR: uprobe target file 'libc' does not exist or is not executable\n@@MX first=6 int= kill= cap= rc=1@@"),
        );
        assert!(c.reason().unwrap().contains("ld.so.cache"), "{c:?}");
        assert_eq!(c.word(), "n/a");
    }

    #[test]
    fn no_marker_or_cap_is_failed() {
        let c = classify(Kind::Bpftrace, &out("Attaching 1 probe..."));
        assert_eq!(c.word(), "failed");
        let c = classify(
            Kind::Bpftrace,
            &out("@@MX first=40 int=40 kill= cap=1 rc=0@@"),
        );
        assert!(c.reason().unwrap().contains("cap"), "{c:?}");
    }

    #[test]
    fn facts_decide_not_applicable() {
        let f = parse_facts("MXFACT block \nMXFACT mounts proc sysfs tmpfs\nMXFACT lo 1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536\nMXFACT pmu breakpoint kprobe software tracepoint uprobe\nMXFACT cpufreq 0\nMXFACT numa 1\nMXFACT swap 0\nMXFACT md \nMXFACT bash \nMXFACT java \nMXFACT libssl 0\n");
        assert!(f.lo_up && f.block.is_empty() && f.numa_nodes == 1);
        for t in [
            "biosnoop.bt",
            "biolatency",
            "ext4dist",
            "xfsdist.bt",
            "llcstat",
            "cpufreq",
            "numamove",
            "swapin.bt",
            "bashreadline",
            "javagc",
            "sslsnoop.bt",
            "mdflush",
        ] {
            assert!(not_applicable(t, &f).is_some(), "{t}");
        }
        for t in ["execsnoop.bt", "opensnoop", "tcpconnect", "tcplife.bt"] {
            assert_eq!(not_applicable(t, &f), None, "{t}");
        }
        let f = parse_facts("MXFACT block loop0 loop1\nMXFACT mounts ext4 proc");
        assert_eq!(not_applicable("biosnoop", &f), None);
        assert_eq!(not_applicable("ext4slower", &f), None);
        assert!(not_applicable("tcpconnect", &f).is_some());
    }

    #[test]
    fn tool_lines_quote_their_words() {
        let t = Timing {
            secs: 4,
            warm: 60,
            cap: 90,
        };
        let l = tool_line(&["bpftrace".into(), "it's.bt".into()], t);
        assert_eq!(l, "mx_run 4 60 90 bpftrace 'it'\\''s.bt'");
        for s in SETUP {
            assert!(!s.contains('\n') && s.len() < 3000, "{s}");
        }
    }
}
