//! The host machine: which distribution it is, whether we are root, and installing the host
//! packages btfgate needs (apt-get on Debian, apk on Alpine, as root; otherwise the exact
//! command to run). The package lists are refreshed at most once per run. `build`, `test`,
//! `verify`, `fetch` and `bench` all set the host up through here.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use harness::process::Cmd;

/// Deadlines of the package manager's commands (a mirror that stops answering must not hang a
/// CI job; apt and apk retry on their own within these).
const QUERY: Duration = Duration::from_secs(60);
const REFRESH: Duration = Duration::from_secs(10 * 60);
const INSTALL: Duration = Duration::from_secs(30 * 60);

/// Infrastructure is missing (no package manager, no network): exit 69.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(pub String);

/// The host distribution family, from /etc/os-release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host {
    Debian,
    Alpine,
    Other,
}

pub fn host() -> Host {
    use harness::scenario::targets::host_is;
    if host_is("alpine") {
        Host::Alpine
    } else if host_is("debian") || host_is("ubuntu") {
        Host::Debian
    } else {
        Host::Other
    }
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The host packages the tests and benchmarks use, per distribution.
pub const TEST_PACKAGES: Packages = Packages {
    debian: &[
        "xz-utils",
        "lz4",
        "zstd",
        "time",
        "binutils",
        "qemu-system-x86",
        "busybox-static",
        "bpftrace",
        "bpftool",
        "libbpf-tools",
        "kmod",
        "libxml2-utils",
        "python3-pip",
    ],
    alpine: &[
        "xz",
        "lz4",
        "zstd",
        "binutils",
        "qemu-system-x86_64",
        "busybox-static",
        "bpftrace",
        "bpftool",
        "kmod",
        "libxml2-utils",
        "py3-pip",
    ],
};

/// What `verify` needs to boot a kernel and run the guest checks: QEMU, the guest's busybox,
/// bpftrace, bpftool and the CO-RE tools (execsnoop, opensnoop).
pub const RUNTIME_PACKAGES: Packages = Packages {
    debian: &[
        "qemu-system-x86",
        "busybox-static",
        "bpftrace",
        "bpftool",
        "libbpf-tools",
    ],
    alpine: &[
        "qemu-system-x86_64",
        "busybox-static",
        "bpftrace",
        "bpftool",
    ],
};

/// Package names per distribution.
pub struct Packages {
    pub debian: &'static [&'static str],
    pub alpine: &'static [&'static str],
}

impl Packages {
    fn for_host(&self) -> &'static [&'static str] {
        match host() {
            Host::Debian => self.debian,
            Host::Alpine => self.alpine,
            Host::Other => &[],
        }
    }
}

/// Installs the host's share of `pkgs` that is missing (as root), saying what it installs, or
/// fails with the exact command to run. Nothing to do on a host that is neither.
pub fn ensure(pkgs: &Packages) -> Result<()> {
    let list = pkgs.for_host();
    if list.is_empty() {
        return Ok(());
    }
    install(list)
}

/// The manager's install command line.
fn install_command() -> Option<&'static [&'static str]> {
    match host() {
        Host::Debian => Some(&["apt-get", "install", "-y", "-qq", "--no-install-recommends"]),
        Host::Alpine => Some(&["apk", "add", "--quiet"]),
        Host::Other => None,
    }
}

fn installed(p: &str) -> bool {
    match host() {
        Host::Debian => Cmd::new("dpkg-query", QUERY)
            .args(["-W", "-f=${Status}", p])
            .quiet()
            .read()
            .is_ok_and(|s| s.contains("install ok installed")),
        Host::Alpine => Cmd::new("apk", QUERY)
            .args(["info", "-e", p])
            .quiet()
            .capture()
            .is_ok_and(|(s, _)| s.success()),
        Host::Other => false,
    }
}

/// Installs the named host packages that are missing (as root), or says exactly what is missing.
pub fn install(pkgs: &[&str]) -> Result<()> {
    let Some(install) = install_command() else {
        anyhow::bail!(
            "cannot install {} on this host: install them by hand",
            pkgs.join(" ")
        );
    };
    let missing: Vec<&str> = pkgs.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        return Err(Unavailable(format!(
            "missing host packages: {} (install them as root: {} {})",
            missing.join(" "),
            install.join(" "),
            missing.join(" ")
        ))
        .into());
    }
    refresh_lists()?;
    eprintln!("installing host packages: {}", missing.join(" "));
    let (prog, rest) = install.split_first().context("empty install command")?;
    Cmd::new(prog, INSTALL)
        .args(rest)
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout_to_stderr()
        .run()
        .map_err(|e| Unavailable(format!("installing {}: {e}", missing.join(" "))))?;
    Ok(())
}

static REFRESHED: AtomicBool = AtomicBool::new(false);

/// Refreshes the package lists once per run (as root; otherwise says the lists may be old).
/// Old lists name an old kernel ABI as current and offer packages the mirror has dropped.
pub fn refresh_lists() -> Result<()> {
    if REFRESHED.swap(true, Ordering::SeqCst) {
        return Ok(());
    }
    let cmd = match host() {
        Host::Debian => Cmd::new("apt-get", REFRESH).args(["update", "-qq"]),
        Host::Alpine => Cmd::new("apk", REFRESH).args(["update", "--quiet"]),
        Host::Other => return Ok(()),
    };
    if !is_root() {
        eprintln!(
            "note: not root, the package lists were not refreshed (they may name an old kernel \
             as current): run `{}` as root",
            cmd.line()
        );
        return Ok(());
    }
    eprintln!("refreshing the package lists: {}", cmd.line());
    cmd.stdout_to_stderr()
        .run()
        .map_err(|e| Unavailable(format!("refreshing the package lists: {e}")))?;
    Ok(())
}
