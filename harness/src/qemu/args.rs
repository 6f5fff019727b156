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

/// vCPUs when the caller does not choose: 2 under KVM; 1 under TCG. With two vCPUs under
/// multi-threaded TCG (QEMU 7.2), a guest that patches its own text while the other vCPU runs
/// it (a tracepoint or fentry being attached: execsnoop, bpftrace) sometimes keeps executing a
/// stale translation holding the `int3` of `text_poke_bp`: both vCPUs soft-lock for good
/// (`watchdog: BUG: soft lockup`, RIP in `asm_exc_int3` at `syscall_trace_enter`). Seen in 3 of
/// 33 boots of the rejected-module control; one vCPU never did (0 of 15), for 15–60% more time.
pub fn default_cpus(accel: Accel) -> u32 {
    match accel {
        Accel::Kvm => 2,
        Accel::Tcg => 1,
    }
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
