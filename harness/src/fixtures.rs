//! Locates data that tests and benchmarks use but the repository never holds: the shared Alpine
//! reference files and the host distribution's kernel packages fetched into the cache.

use std::path::PathBuf;

pub use crate::paths::{cache_dir, host_kernel, workspace_root, Flavor, JUNIT_XSD};

/// Gives each guest of a test binary (and of the `xtask` processes it starts, which inherit
/// the environment) one vCPU, unless `$BTFGATE_VCPUS` already says how many. The test binaries
/// call it first in `main`, before any thread starts.
///
/// One verdict alone is faster on two vCPUs (its tools run side by side), but most of a
/// guest's time is its boot, which is serial: with one vCPU each, as many guests as the host
/// has cores run at once (a guest holds one VM slot per vCPU). Measured on a 2-core host under
/// TCG, the same binaries with two vCPUs per guest and with one: the runtime controls 62 s and
/// 46 s, the scenarios 77 s and 64 s, the CLI trials 108 s and 86 s.
pub fn one_vcpu_per_guest() {
    let var = crate::qemu::args::VCPUS_ENV;
    if std::env::var_os(var).is_none() {
        std::env::set_var(var, "1");
    }
}

/// The shared Alpine reference data (`$BTFGATE_ALPINE_DIR`, else `<workspace>/../shared/alpine`),
/// or the reason it is unavailable.
pub fn alpine_dir() -> Result<PathBuf, String> {
    let dir = match std::env::var_os("BTFGATE_ALPINE_DIR") {
        Some(d) => PathBuf::from(d),
        None => workspace_root().join("../shared/alpine"),
    };
    if dir.join("fixtures").is_dir() && dir.join("keys").is_dir() {
        Ok(dir)
    } else {
        Err(format!(
            "shared Alpine data not found at {} (set BTFGATE_ALPINE_DIR)",
            dir.display()
        ))
    }
}

/// The common JUnit schema (Jenkins xunit plugin's `junit-10.xsd`): `$BTFGATE_JUNIT_XSD`, else
/// `<cache>/schemas/junit-10.xsd` where `cargo xtask test` puts it; or why it is unavailable.
pub fn junit_schema() -> Result<PathBuf, String> {
    let p = match std::env::var_os("BTFGATE_JUNIT_XSD") {
        Some(p) => PathBuf::from(p),
        None => cache_dir().join("schemas").join(JUNIT_XSD),
    };
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!(
            "the common JUnit schema is not at {} (`cargo xtask test` fetches it; or set BTFGATE_JUNIT_XSD)",
            p.display()
        ))
    }
}

/// Marks `trial` ignored when `need` is an error, printing the reason once on stderr: skips
/// are decided when trials are listed, never by returning Ok at run time.
pub fn needs<T, E: std::fmt::Display>(
    trial: libtest_mimic::Trial,
    need: &Result<T, E>,
) -> libtest_mimic::Trial {
    match need {
        Ok(_) => trial,
        Err(reason) => {
            let reason = reason.to_string();
            use std::sync::Mutex;
            static SHOWN: Mutex<Vec<String>> = Mutex::new(Vec::new());
            if let Ok(mut shown) = SHOWN.lock() {
                if !shown.contains(&reason) {
                    eprintln!("ignored: {reason}");
                    shown.push(reason);
                }
            }
            trial.with_ignored_flag(true)
        }
    }
}

/// The host tools the guest image copies (busybox, bpftrace, bpftool, libbpf-tools…), or
/// which are missing: the need of every trial that boots.
pub fn runtime_tools() -> Result<(), String> {
    let recipe = crate::image::Recipe::builtin("btf").map_err(|e| e.to_string())?;
    let missing = crate::guest::missing_host_tools(&recipe);
    if missing.is_empty() {
        return Ok(());
    }
    Err(format!(
        "runtime tools missing: {} (cargo xtask test installs them)",
        missing
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ))
}
