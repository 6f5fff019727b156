//! Choosing the accelerator: KVM only if it really works (here `/dev/kvm` exists but QEMU
//! aborts with "failed to set MSR" or hangs), proven by a short real boot; TCG otherwise.

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use super::args::{Accel, Spec};
use super::machine::{Deadlines, Machine};

/// The accelerator chosen and why.
#[derive(Debug, Clone)]
pub struct Choice {
    pub accel: Accel,
    pub reason: String,
}

/// The version of the QEMU at `qemu`, asked once per process (`--version`); `None` when it
/// cannot tell (the guest then gets the vCPUs of the oldest QEMU, see
/// [`super::args::default_cpus`]).
pub fn qemu_version(qemu: &Path) -> Option<(u32, u32)> {
    static VERSION: OnceLock<Option<(u32, u32)>> = OnceLock::new();
    *VERSION.get_or_init(|| {
        crate::process::Cmd::new(qemu, Duration::from_secs(20))
            .arg("--version")
            .quiet()
            .read()
            .ok()
            .and_then(|out| super::args::parse_version(&out))
    })
}

/// Probes KVM once per process by booting `spec` (a small image) with it under a short
/// deadline; falls back to TCG with the reason.
pub fn probe(qemu: &Path, spec: &Spec, dir: &Path) -> Choice {
    static CHOICE: OnceLock<Choice> = OnceLock::new();
    CHOICE
        .get_or_init(|| probe_uncached(qemu, spec, dir))
        .clone()
}

/// One probe, not remembered (tests; [`probe`] remembers the first for the process).
pub fn probe_uncached(qemu: &Path, spec: &Spec, dir: &Path) -> Choice {
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        return Choice {
            accel: Accel::Tcg,
            reason: "/dev/kvm cannot be opened read-write; using TCG".into(),
        };
    }
    let mut kvm = spec.clone();
    kvm.accel = Accel::Kvm;
    let probe_dir = dir.join("kvm-probe");
    let _ = std::fs::create_dir_all(&probe_dir);
    let d = Deadlines {
        boot: Duration::from_secs(20),
        command: Duration::from_secs(10),
        total: Duration::from_secs(30),
    };
    match Machine::boot(qemu, &kvm, &probe_dir, &d) {
        Ok(m) => {
            m.shutdown();
            Choice {
                accel: Accel::Kvm,
                reason: "KVM booted the probe kernel".into(),
            }
        }
        Err(e) => Choice {
            accel: Accel::Tcg,
            reason: format!("/dev/kvm exists but KVM does not work here ({e}); using TCG"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qemu::args::Boot;

    /// A QEMU that cannot boot anything (here `/bin/false`) never makes the probe choose KVM:
    /// KVM is chosen only after a real boot, and the fallback says why.
    #[test]
    fn no_boot_no_kvm() {
        let dir = tempfile::tempdir().unwrap();
        let spec = Spec {
            accel: Accel::Kvm,
            boot: Boot::BzImage(dir.path().join("no-such-bzImage")),
            initrd: dir.path().join("no-such-initrd"),
            append: Vec::new(),
            memory_mb: 64,
            cpus: 1,
            name: "btfgate-probe-unit".into(),
        };
        let c = probe_uncached(Path::new("/bin/false"), &spec, dir.path());
        assert_eq!(c.accel, Accel::Tcg, "{c:?}");
        assert!(
            c.reason.contains("using TCG")
                && (c.reason.contains("cannot be opened") || c.reason.contains("does not work")),
            "{c:?}"
        );
    }
}
