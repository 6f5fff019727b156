//! `test`: the README's test command. Installs what the suite needs on a fresh Debian or
//! Alpine machine, fetches the host kernel packages, checks formatting and lints, then runs
//! `cargo test --workspace`.

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

use crate::fetch::{self, Host};

/// Host packages the tests and benchmarks use, per distribution.
const DEBIAN_PACKAGES: &[&str] = &[
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
];
const ALPINE_PACKAGES: &[&str] = &[
    "xz",
    "lz4",
    "zstd",
    "binutils",
    "qemu-system-x86_64",
    "busybox-static",
    "bpftrace",
    "bpftool",
    "kmod",
];

pub fn run(args: &[String]) -> Result<u8> {
    let sh = Shell::new()?;
    install_host_packages(&sh)?;
    let fetched = fetch::host_defaults().context("fetch the host's default kernel packages")?;
    for p in &fetched {
        eprintln!("kernel package: {}", p.display());
    }
    build_targets()?;
    let root = harness::fixtures::workspace_root();
    let _cd = sh.push_dir(&root);
    cmd!(sh, "cargo fmt --all --check")
        .run()
        .context("cargo fmt --check")?;
    cmd!(
        sh,
        "cargo clippy --workspace --all-targets --quiet -- -D warnings"
    )
    .run()
    .context("cargo clippy")?;
    match cmd!(sh, "cargo test --workspace -- {args...}").run() {
        Ok(()) => Ok(0),
        Err(_) => Ok(crate::EXIT_FAIL),
    }
}

/// Installs missing host packages (as root), or says exactly what is missing.
pub fn install_host_packages(sh: &Shell) -> Result<()> {
    match fetch::host() {
        Host::Debian => install(sh, DEBIAN_PACKAGES),
        Host::Alpine => install(sh, ALPINE_PACKAGES),
        Host::Other => Ok(()),
    }
}

/// Installs the named host packages that are missing (as root), or says exactly what is missing.
pub fn install(sh: &Shell, pkgs: &[&str]) -> Result<()> {
    let install: &[&str] = match fetch::host() {
        Host::Debian => &["apt-get", "install", "-y", "-qq", "--no-install-recommends"],
        Host::Alpine => &["apk", "add", "--quiet"],
        Host::Other => bail!(
            "cannot install {} on this host: install them by hand",
            pkgs.join(" ")
        ),
    };
    let status_fmt = "${Status}";
    let missing: Vec<&str> = pkgs
        .iter()
        .copied()
        .filter(|p| match fetch::host() {
            Host::Debian => cmd!(sh, "dpkg-query -W -f={status_fmt} {p}")
                .quiet()
                .ignore_stderr()
                .read()
                .map(|s| !s.contains("install ok installed"))
                .unwrap_or(true),
            _ => cmd!(sh, "apk info -e {p}")
                .quiet()
                .ignore_stdout()
                .ignore_stderr()
                .run()
                .is_err(),
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let is_root = cmd!(sh, "id -u")
        .quiet()
        .read()
        .map(|u| u.trim() == "0")
        .unwrap_or(false);
    if !is_root {
        return Err(fetch::Unavailable(format!(
            "missing host packages: {} (install them as root: {} {})",
            missing.join(" "),
            install.join(" "),
            missing.join(" ")
        ))
        .into());
    }
    let (prog, rest) = install.split_first().context("empty install command")?;
    if fetch::host() == Host::Debian {
        cmd!(sh, "apt-get update -qq")
            .quiet()
            .run()
            .context("apt-get update")?;
    }
    let to_install = missing.clone();
    cmd!(sh, "{prog} {rest...} {to_install...}")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .run()
        .map_err(|e| fetch::Unavailable(format!("installing {}: {e}", missing.join(" "))))?;
    Ok(())
}

/// Builds (or finds in the cache) every kernel the scenarios' targets build from source.
fn build_targets() -> Result<()> {
    use harness::scenario::model::Source;
    let dir = harness::scenario::load::scenarios_dir();
    let suite =
        harness::scenario::load::load(&dir).map_err(|e| anyhow::anyhow!("{}", e.join("\n")))?;
    let mut done = Vec::new();
    for (name, t) in &suite.targets.targets {
        if let Source::Build(spec) | Source::BuildUnstripped(spec) = &t.source {
            if done.contains(&spec) {
                continue;
            }
            eprintln!("kernel target {name}: building (or taking from the cache)");
            crate::build::build(spec).with_context(|| format!("build target {name}"))?;
            done.push(spec);
        }
    }
    Ok(())
}
