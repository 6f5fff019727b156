//! QEMU argument vectors, built by small pure functions and tested against golden files.

use std::path::PathBuf;

use serde::Serialize;

/// The accelerator QEMU runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// How the kernel is handed to QEMU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Boot {
    /// The package's bzImage (the guest decompresses it).
    BzImage(PathBuf),
    /// vmlinux decompressed on the host, entered through PVH (`CONFIG_PVH=y`).
    Pvh(PathBuf),
}

/// Everything that shapes one QEMU invocation.
#[derive(Debug, Clone)]
pub struct Spec {
    pub accel: Accel,
    pub boot: Boot,
    pub initrd: PathBuf,
    /// Kernel command line additions (after btfgate's own).
    pub append: Vec<String>,
    pub memory_mb: u32,
    pub cpus: u32,
    /// `-name`: lets a test find the QEMU of one trial among all processes.
    pub name: String,
}

/// The kernel command line: serial console, panic ends the run at once, quiet console.
pub fn cmdline(extra: &[String]) -> String {
    let mut v: Vec<String> = [
        "console=ttyS0",
        "panic=-1",
        "oops=panic",
        "quiet",
        "loglevel=3",
        "rdinit=/init",
        "printk.devkmsg=on",
        "sysctl.vm.panic_on_oom=1",
        "softlockup_all_cpu_backtrace=1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(extra.iter().cloned());
    v.join(" ")
}

/// CPU model: KVM passes the host CPU through; under TCG `qemu64`+ a few features, since
/// `-cpu max` advertises SVM/VMX and makes module autoloading pull kvm_amd.
pub fn cpu(accel: Accel) -> &'static str {
    match accel {
        Accel::Kvm => "host",
        Accel::Tcg => "qemu64,+ssse3,+sse4.1,+sse4.2,+popcnt",
    }
}

/// The oldest QEMU whose multi-threaded TCG gets two vCPUs by default (see [`default_cpus`]).
pub const TCG_SMP_SINCE: (u32, u32) = (10, 0);

/// vCPUs when the caller does not choose: 2 under KVM; under TCG 2 with QEMU 10.0 or newer
/// (`qemu` is its version), else 1.
///
/// With two vCPUs under multi-threaded TCG in QEMU 7.2, a guest that patches its own text
/// while the other vCPU runs it (a tracepoint or fentry being attached: execsnoop, bpftrace)
/// sometimes keeps executing a stale translation holding the `int3` of `text_poke_bp`: both
/// vCPUs soft-lock for good (`watchdog: BUG: soft lockup`, RIP in `asm_exc_int3` at
/// `syscall_trace_enter`). Seen in 3 of 33 boots of the rejected-module control; one vCPU never
/// did (0 of 15). QEMU 10.0 (Debian 12's backports) ran the soak of `bench runtime` with two
/// vCPUs without one, and the guest's tools (bpftrace, the bpftool dump, the CO-RE tool)
/// then run side by side: a verdict takes about 0.85× the time of one vCPU.
pub fn default_cpus(accel: Accel, qemu: Option<(u32, u32)>) -> u32 {
    match accel {
        Accel::Kvm => 2,
        Accel::Tcg if qemu.is_some_and(|v| v >= TCG_SMP_SINCE) => 2,
        Accel::Tcg => 1,
    }
}

/// The environment variable that sets the vCPUs of every guest whose caller does not choose.
pub const VCPUS_ENV: &str = "BTFGATE_VCPUS";

/// vCPUs of a guest whose caller does not choose: `$BTFGATE_VCPUS` when set (a positive
/// number), else [`default_cpus`].
pub fn cpus(accel: Accel, qemu: Option<(u32, u32)>) -> u32 {
    cpus_from(std::env::var(VCPUS_ENV).ok().as_deref(), accel, qemu)
}

/// [`cpus`] with the variable's value given: a positive number wins, anything else (unset,
/// empty, zero, not a number) leaves [`default_cpus`].
fn cpus_from(var: Option<&str>, accel: Accel, qemu: Option<(u32, u32)>) -> u32 {
    var.and_then(|v| v.trim().parse::<u32>().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| default_cpus(accel, qemu))
}

/// The version (major, minor) in the first line of `qemu-system-x86_64 --version`
/// ("QEMU emulator version 10.0.2 (Debian …)").
pub fn parse_version(out: &str) -> Option<(u32, u32)> {
    let rest = out.lines().next()?.split("version ").nth(1)?;
    let mut it = rest.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

/// The argv (without the program) for `spec`. The serial console is QEMU's stdio (pipes, not
/// a terminal); no monitor, no display, no reboot.
pub fn argv(spec: &Spec) -> Vec<String> {
    let kernel = match &spec.boot {
        Boot::BzImage(p) | Boot::Pvh(p) => p.display().to_string(),
    };
    vec![
        "-name".into(),
        spec.name.clone(),
        "-nodefaults".into(),
        "-no-user-config".into(),
        "-display".into(),
        "none".into(),
        "-no-reboot".into(),
        "-machine".into(),
        "pc".into(),
        "-accel".into(),
        spec.accel.name().into(),
        "-cpu".into(),
        cpu(spec.accel).into(),
        "-m".into(),
        spec.memory_mb.to_string(),
        "-smp".into(),
        spec.cpus.to_string(),
        "-chardev".into(),
        "stdio,id=console,signal=off".into(),
        "-serial".into(),
        "chardev:console".into(),
        "-kernel".into(),
        kernel,
        "-initrd".into(),
        spec.initrd.display().to_string(),
        "-append".into(),
        cmdline(&spec.append),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_tcg_vcpus_only_from_qemu_10() {
        let v = |s: &str| parse_version(s);
        assert_eq!(
            v("QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)\nCopyright"),
            Some((10, 0))
        );
        assert_eq!(
            v("QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)"),
            Some((7, 2))
        );
        assert_eq!(v("qemu: command not found"), None);
        assert_eq!(
            default_cpus(Accel::Tcg, v("QEMU emulator version 7.2.22")),
            1
        );
        assert_eq!(
            default_cpus(Accel::Tcg, v("QEMU emulator version 9.2.0")),
            1
        );
        assert_eq!(
            default_cpus(Accel::Tcg, v("QEMU emulator version 10.0.2")),
            2
        );
        assert_eq!(
            default_cpus(Accel::Tcg, v("QEMU emulator version 11.1.3")),
            2
        );
        assert_eq!(default_cpus(Accel::Tcg, None), 1);
        assert_eq!(default_cpus(Accel::Kvm, None), 2);
    }

    #[test]
    fn btfgate_vcpus_overrides_the_default_when_positive() {
        let ten = Some((10, 0));
        assert_eq!(cpus_from(Some("1"), Accel::Tcg, ten), 1);
        assert_eq!(cpus_from(Some(" 3 "), Accel::Tcg, None), 3);
        for bad in [None, Some(""), Some("0"), Some("two"), Some("-1")] {
            assert_eq!(cpus_from(bad, Accel::Tcg, ten), 2, "{bad:?}");
            assert_eq!(cpus_from(bad, Accel::Tcg, None), 1, "{bad:?}");
        }
    }

    fn spec(accel: Accel, boot: Boot) -> Spec {
        Spec {
            accel,
            boot,
            initrd: PathBuf::from("/trial/initrd.cpio"),
            append: vec!["btfgate.x=1".into()],
            memory_mb: 2048,
            cpus: 2,
            name: "btfgate-trial".into(),
        }
    }

    #[test]
    fn golden_tcg_bzimage() {
        let got = argv(&spec(Accel::Tcg, Boot::BzImage("/trial/vmlinuz".into()))).join("\n") + "\n";
        assert_eq!(got, include_str!("golden/tcg-bzimage.args"));
    }

    #[test]
    fn golden_kvm_pvh() {
        let got = argv(&spec(Accel::Kvm, Boot::Pvh("/trial/vmlinux".into()))).join("\n") + "\n";
        assert_eq!(got, include_str!("golden/kvm-pvh.args"));
    }
}
