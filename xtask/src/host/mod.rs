//! The host machine: which distribution it is, whether we are root, and installing the host
//! packages btfgate needs (apt-get on Debian, apk on Alpine, as root; otherwise the exact
//! command to run). The package lists are refreshed at most once per run. `build`, `test`,
//! `verify`, `fetch` and `bench` all set the host up through here.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use harness::process::Cmd;

pub mod sources;

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
    let mut missing: Vec<&str> = pkgs.iter().copied().filter(|p| !installed(p)).collect();
    let backports = pkgs
        .contains(&QEMU_DEB)
        .then(qemu_backports)
        .flatten()
        .filter(|_| qemu_older_than_10());
    if missing.is_empty() && backports.is_none() {
        return Ok(());
    }
    if !is_root() {
        if let Some(suite) = backports {
            eprintln!(
                "note: {QEMU_DEB} from {suite} (QEMU 10) runs TCG guests on two vCPUs, this \
                 host's older QEMU on one: as root, add {suite} to apt's sources and run \
                 `apt-get install -t {suite} {QEMU_DEB}`"
            );
        }
        if missing.is_empty() {
            return Ok(());
        }
        return Err(Unavailable(format!(
            "missing host packages: {} (install them as root: {} {})",
            missing.join(" "),
            install.join(" "),
            missing.join(" ")
        ))
        .into());
    }
    refresh_lists()?;
    if let Some(suite) = backports {
        match qemu_from(suite) {
            Ok(()) => missing.retain(|p| *p != QEMU_DEB),
            Err(e) => eprintln!(
                "warning: {QEMU_DEB} from {suite} failed, keeping the host's own QEMU (TCG \
                 guests get one vCPU): {e:#}"
            ),
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
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

/// Debian's QEMU package. QEMU 10.0 runs a TCG guest on two vCPUs; 7.2, Debian 12's own,
/// locks a two-vCPU guest up after the kernel patches its text, so its guests get one
/// (`harness::qemu::args::default_cpus`). Measured on a 2-core host: the cloud kernel's verdict
/// went from 4.4x to about 3.4x its bare boot, and 30 verdicts in a row had no soft lockup.
const QEMU_DEB: &str = "qemu-system-x86";

/// The suite that carries QEMU 10 for this host, when its own release carries an older one:
/// Debian 12 (bookworm) and its backports.
fn qemu_backports() -> Option<&'static str> {
    let text = std::fs::read_to_string("/etc/os-release").ok()?;
    let bookworm = host() == Host::Debian
        && text
            .lines()
            .any(|l| l.trim() == "VERSION_CODENAME=bookworm");
    bookworm.then_some("bookworm-backports")
}

/// Whether the installed QEMU package is missing or older than 10 (its Debian version, epoch
/// aside: `1:7.2+dfsg-7+deb12u16`).
fn qemu_older_than_10() -> bool {
    let version = Cmd::new("dpkg-query", QUERY)
        .args(["-W", "-f=${Status} ${Version}", QEMU_DEB])
        .quiet()
        .read()
        .unwrap_or_default();
    qemu_major(&version).is_none_or(|major| major < 10)
}

/// The upstream major version in `dpkg-query`'s `${Status} ${Version}` of an installed package.
fn qemu_major(status_version: &str) -> Option<u32> {
    let version = status_version.strip_prefix("install ok installed ")?;
    let upstream = version.split_once(':').map_or(version, |(_, v)| v);
    upstream.split('.').next()?.parse().ok()
}

/// Installs [`QEMU_DEB`] from `suite` (as root): the host's apt with one more source, the
/// suite on the host's own mirror. The host's sources stay as they are: the list given to apt
/// is a copy of the host's `sources.list` (if any) with the suite's line added, under the
/// cache, and `sources.list.d` is read as usual. The next plain `apt-get update` forgets the
/// suite's lists again.
fn qemu_from(suite: &str) -> Result<()> {
    let etc = std::path::Path::new("/etc/apt");
    let mirror = sources::host_mirror(etc)?;
    let dir = harness::paths::cache_dir().join("apt").join("host-qemu");
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let mut list = std::fs::read_to_string(etc.join("sources.list")).unwrap_or_default();
    if !list.is_empty() && !list.ends_with('\n') {
        list.push('\n');
    }
    let signed = mirror
        .signed_by
        .as_ref()
        .map(|k| format!(" signed-by={k}"))
        .unwrap_or_default();
    list.push_str(&format!(
        "# Written by btfgate: QEMU 10 for TCG guests with two vCPUs.\n\
         deb [arch=amd64{signed}] {} {suite} main\n",
        mirror.uri
    ));
    let file = dir.join("sources.list");
    harness::atomic::write(&file, list.as_bytes()).context("write the QEMU sources list")?;
    let source = format!("Dir::Etc::SourceList={}", file.display());
    eprintln!("installing {QEMU_DEB} from {suite} (QEMU 10: TCG guests on two vCPUs)");
    Cmd::new("apt-get", REFRESH)
        .args(["-o", &source, "update", "-qq"])
        .stdout_to_stderr()
        .run()
        .with_context(|| format!("apt-get update with {suite}"))?;
    Cmd::new("apt-get", INSTALL)
        .args([
            "-o",
            &source,
            "install",
            "-y",
            "-qq",
            "--no-install-recommends",
        ])
        .args(["-t", suite, QEMU_DEB])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout_to_stderr()
        .run()
        .with_context(|| format!("apt-get install -t {suite} {QEMU_DEB}"))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_qemu_major_comes_from_an_installed_package_only() {
        assert_eq!(
            qemu_major("install ok installed 1:7.2+dfsg-7+deb12u16"),
            Some(7)
        );
        assert_eq!(
            qemu_major("install ok installed 1:10.0.2+ds-2+deb13u1~bpo12+1"),
            Some(10)
        );
        assert_eq!(qemu_major("install ok installed 10.1.0-1"), Some(10));
        assert_eq!(qemu_major("deinstall ok config-files 1:10.0.2+ds-2"), None);
        assert_eq!(qemu_major(""), None);
    }
}
