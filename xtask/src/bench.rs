//! `bench`: performance targets measured in one run and printed as ratios (never timed tests).
//!
//! `bench runtime`: the whole runtime verdict of a kernel against its bare boot floor (boot,
//! `reboot -f`), interleaved rounds, medians; the first kernel (the cloud one by default) is
//! judged against the target, the others (the generic one) are printed beside it. Every
//! verdict is also a soak round: its console is searched for the kernel's soft-lockup and
//! RCU-stall reports, and the count of verdicts and of lockups is printed.
//!
//! `bench static`: for each host kernel package, the wall time and peak RSS of
//! `cargo xtask inspect` against the fastest way this machine has to merely decompress the
//! package's data: for a .deb, `xz -dc` (one thread), `xz -T0 -dc` and `dpkg-deb
//! --fsys-tarfile` (both decode a multi-block member on every core); for an .apk, `gzip -dc`.
//! Interleaved rounds, medians; the ratio is taken against the fastest median.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use harness::paths::{host_kernel, Flavor};
use harness::process::Cmd;

#[derive(Subcommand)]
pub enum What {
    /// The whole runtime verdict per kernel, per phase, next to the bare boot floor
    Runtime {
        /// Packages to boot, the first judged against the target (default: the host's
        /// cloud-like kernel, then its generic one, fetched)
        #[arg(long = "package")]
        packages: Vec<PathBuf>,
        /// Accelerator (default tcg: what CI machines here have)
        #[arg(long, default_value = "tcg")]
        accel: String,
        /// Rounds of floor and verdict, interleaved (medians are printed)
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// inspect time vs decompression time, and peak memory, for the host kernel packages
    Static {
        /// Rounds per measurement (medians are printed)
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Packages to measure (default: the host kernel packages, fetched)
        #[arg(long = "package")]
        packages: Vec<PathBuf>,
    },
}

/// Deadline of one measured command.
const STEP: Duration = Duration::from_secs(10 * 60);

/// Target: inspect ≤ 1.3 × decompression, peak RSS < 300 MB.
const TARGET_RATIO: f64 = 1.3;
const TARGET_RSS_KB: u64 = 300 * 1000;

pub fn run(what: What) -> Result<()> {
    match what {
        What::Static { rounds, packages } => bench_static(rounds, packages),
        What::Runtime {
            packages,
            accel,
            rounds,
        } => bench_runtime(packages, &accel, rounds),
    }
}

fn bench_static(rounds: usize, packages: Vec<PathBuf>) -> Result<()> {
    crate::host::ensure(&crate::host::TEST_PACKAGES)?;
    let packages = if packages.is_empty() {
        crate::fetch::host_defaults()?;
        Flavor::ALL
            .iter()
            .map(|f| host_kernel(*f).map_err(anyhow::Error::msg))
            .collect::<Result<Vec<_>>>()?
    } else {
        packages
    };
    let exe = std::env::current_exe().context("locate the xtask binary")?;
    println!(
        "{:<48} {:>10} {:>10} {:>7} {:>10} {:>10}",
        "package", "decomp s", "inspect s", "ratio", "peak MB", "target"
    );
    let mut all_met = true;
    for pkg in &packages {
        let tmp = harness::scratch::tempdir_in(&std::env::temp_dir(), "btfgate-bench-")?;
        let (tool, member) = data_member(pkg, tmp.path())?;
        let member_s = member.to_string_lossy().into_owned();
        let pkg_s = pkg.to_string_lossy().into_owned();
        let mut floors: Vec<(String, Vec<&str>)> =
            vec![(format!("{tool} -dc"), vec![tool, "-dc", &member_s])];
        if tool == "xz" {
            floors.push(("xz -T0 -dc".into(), vec!["xz", "-T0", "-dc", &member_s]));
        }
        if pkg_s.ends_with(".deb") {
            floors.push((
                "dpkg-deb --fsys-tarfile".into(),
                vec!["dpkg-deb", "--fsys-tarfile", &pkg_s],
            ));
        }
        let mut base: Vec<Vec<f64>> = vec![Vec::new(); floors.len()];
        let mut insp = Vec::new();
        let mut rss = 0u64;
        let exe_s = exe.to_string_lossy();
        for _ in 0..rounds.max(1) {
            for (i, (_, argv)) in floors.iter().enumerate() {
                base[i].push(timed(argv)?.0);
            }
            let (t, m) = timed(&[&exe_s, "inspect", "--json", &pkg_s])?;
            insp.push(t);
            rss = rss.max(m);
        }
        let medians: Vec<f64> = base.iter_mut().map(|v| median(v)).collect();
        for ((name, _), m) in floors.iter().zip(&medians) {
            println!("  {name:<30} {m:>8.2} s");
        }
        let (fastest, b) = medians
            .iter()
            .enumerate()
            .min_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, m)| (floors[i].0.clone(), *m))
            .context("no decompression was measured")?;
        let i = median(&mut insp);
        let ratio = i / b;
        let met = ratio <= TARGET_RATIO && rss < TARGET_RSS_KB;
        all_met &= met;
        let name = pkg
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        println!(
            "{name:<48} {b:>10.2} {i:>10.2} {ratio:>6.2}x {:>10.1} {:>10}   (fastest: {fastest})",
            rss as f64 / 1000.0,
            if met { "met" } else { "MISSED" }
        );
    }
    println!("targets: inspect <= {TARGET_RATIO}x the fastest decompression, peak RSS < {} MB; {rounds} rounds, medians", TARGET_RSS_KB / 1000);
    if !all_met {
        bail!("a static benchmark target was missed");
    }
    Ok(())
}

/// Extracts the data member of a package (the thing whose decompression is the floor) and
/// returns the tool that decompresses it.
fn data_member(pkg: &Path, dir: &Path) -> Result<(&'static str, PathBuf)> {
    if pkg.is_dir() {
        bail!(
            "{}: a directory has no compressed data member to compare with",
            pkg.display()
        );
    }
    let name = pkg.to_string_lossy();
    if name.ends_with(".apk") {
        // Decompressing the whole .apk (its three gzip members) is the floor.
        return Ok(("gzip", pkg.to_path_buf()));
    }
    Cmd::new("ar", STEP)
        .arg("x")
        .arg(pkg)
        .dir(dir)
        .run()
        .with_context(|| format!("ar x {}", pkg.display()))?;
    for (file, tool) in [
        ("data.tar.xz", "xz"),
        ("data.tar.zst", "zstd"),
        ("data.tar.gz", "gzip"),
    ] {
        let p = dir.join(file);
        if p.is_file() {
            return Ok((tool, p));
        }
    }
    bail!("{}: no data.tar.{{xz,zst,gz}} member", pkg.display())
}

/// Runs `argv` under `/usr/bin/time`, stdout discarded; returns (wall seconds, peak RSS KiB).
fn timed(argv: &[&str]) -> Result<(f64, u64)> {
    let measured = tempfile::NamedTempFile::new().context("create a file for /usr/bin/time")?;
    let status = Cmd::new("/usr/bin/time", STEP)
        .args(["-f", "%e %M", "-o"])
        .arg(measured.path())
        .args(argv)
        .quiet()
        .status()
        .with_context(|| format!("run {}", argv.join(" ")))?;
    if !status.success() && !argv.contains(&"inspect") {
        bail!("{} failed: {status}", argv.join(" "));
    }
    let err = std::fs::read_to_string(measured.path())
        .with_context(|| format!("read what /usr/bin/time measured of {}", argv.join(" ")))?;
    let last = err.lines().last().unwrap_or_default();
    let mut it = last.split_whitespace();
    let secs: f64 = it
        .next()
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("parse /usr/bin/time output {last:?}"))?;
    let kb: u64 = it
        .next()
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("parse /usr/bin/time output {last:?}"))?;
    Ok((secs, kb))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Target: the runtime verdict of the cloud kernel within 3× the bare boot floor.
const TARGET_RUNTIME_RATIO: f64 = 3.0;

/// What the kernel prints when a CPU made no progress for too long: a soak round with one of
/// these failed, whatever the checks said.
const LOCKUP: [&str; 2] = ["soft lockup", "self-detected stall"];

fn bench_runtime(packages: Vec<PathBuf>, accel: &str, rounds: usize) -> Result<()> {
    use harness::qemu::args::Accel;
    let accel = match accel {
        "tcg" => Accel::Tcg,
        "kvm" => Accel::Kvm,
        other => bail!("--accel {other}: expected kvm or tcg"),
    };
    if rounds == 0 {
        bail!("--rounds 0: expected at least 1");
    }
    let packages = if packages.is_empty() {
        crate::fetch::host_defaults()?;
        [Flavor::Cloud, Flavor::Generic]
            .into_iter()
            .map(|f| host_kernel(f).map_err(anyhow::Error::msg))
            .collect::<Result<Vec<_>>>()?
    } else {
        packages
    };
    let qemu = harness::guest::qemu_binary();
    let version = harness::qemu::accel::qemu_version(&qemu);
    let cpus = harness::qemu::args::cpus(accel, version);
    println!(
        "{} {}: {cpus} vCPU under {}{}",
        qemu.display(),
        version.map_or("(version unknown)".to_string(), |(a, b)| format!("{a}.{b}")),
        accel.name(),
        if cpus != harness::qemu::args::default_cpus(accel, version) {
            " (set by BTFGATE_VCPUS)"
        } else if cpus == 1 && accel == Accel::Tcg {
            " (QEMU 10.0 or newer gets two; Debian 12: qemu-system-x86 from bookworm-backports)"
        } else {
            ""
        }
    );
    let mut ratios = Vec::new();
    let (mut verdicts, mut lockups) = (0, Vec::new());
    for pkg in &packages {
        let m = measure_runtime(pkg, accel, rounds)?;
        verdicts += m.verdicts;
        lockups.extend(m.lockups);
        ratios.push((m.release, m.ratio));
    }
    println!();
    for (i, (release, ratio)) in ratios.iter().enumerate() {
        if i == 0 {
            println!(
                "ratio {ratio:.2}x for {release} (target <= {TARGET_RUNTIME_RATIO}x): {}",
                if *ratio <= TARGET_RUNTIME_RATIO {
                    "met"
                } else {
                    "MISSED"
                }
            );
        } else {
            println!("ratio {ratio:.2}x for {release} (beside it)");
        }
    }
    println!(
        "soak: {verdicts} verdicts in a row, {} with a soft lockup or RCU stall",
        lockups.len()
    );
    for l in &lockups {
        println!("  {l}");
    }
    if !lockups.is_empty() {
        bail!("{} verdicts hit a soft lockup or RCU stall", lockups.len());
    }
    Ok(())
}

/// One kernel's rounds.
struct Measured {
    release: String,
    ratio: f64,
    verdicts: usize,
    /// Each lockup seen: the transcript and its line.
    lockups: Vec<String>,
}

/// The kernel's report lines of a soft lockup or stall in a transcript. A verdict whose
/// transcript cannot be read is not counted as clean: that is an error.
fn lockups_in(transcript: &Path) -> Result<Vec<String>> {
    let text = std::fs::read(transcript).with_context(|| {
        format!(
            "soak: read the console transcript {} to search it for lockups",
            transcript.display()
        )
    })?;
    Ok(String::from_utf8_lossy(&text)
        .lines()
        .filter(|l| LOCKUP.iter().any(|w| l.contains(w)))
        .map(|l| format!("{}: {}", transcript.display(), l.trim()))
        .collect())
}

fn measure_runtime(
    pkg: &Path,
    accel: harness::qemu::args::Accel,
    rounds: usize,
) -> Result<Measured> {
    let opts = harness::package::ReadOptions::default();
    let kernel = harness::kernel::Kernel::load(pkg, &opts)?;
    let recipe = harness::image::Recipe::builtin("btf").map_err(anyhow::Error::msg)?;
    let scratch = tempfile::tempdir().context("create a scratch directory")?;
    let params = harness::guest::Params {
        accel: Some(accel),
        ..harness::guest::Params::default()
    };
    // Warm the caches (unpacked kernel, image) so both sides measure booting, not building.
    let warm = harness::guest::verify(&kernel, &recipe, &params, &scratch.path().join("warm"))
        .map_err(anyhow::Error::msg)?;
    let mut lockups = lockups_in(&warm.transcript)?;
    // Interleaved rounds, so that a noisy stretch of the host weighs on both sides.
    let mut floors = Vec::new();
    let mut runs = Vec::new();
    for i in 0..rounds {
        floors.push(
            harness::guest::boot_floor(
                &kernel,
                &recipe,
                accel,
                &scratch.path().join(format!("floor-{i}")),
            )
            .map_err(anyhow::Error::msg)?,
        );
        let t0 = std::time::Instant::now();
        let rep = harness::guest::verify(
            &kernel,
            &recipe,
            &params,
            &scratch.path().join(format!("run-{i}")),
        )
        .map_err(anyhow::Error::msg)?;
        lockups.extend(lockups_in(&rep.transcript)?);
        runs.push((t0.elapsed().as_secs_f64(), rep));
    }
    let floor = median(&mut floors);
    runs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (total, rep) = &runs[runs.len() / 2];
    let total = *total;
    println!(
        "rounds {rounds}: verdicts {} s; floors {} s",
        runs.iter()
            .map(|r| format!("{:.2}", r.0))
            .collect::<Vec<_>>()
            .join(", "),
        floors
            .iter()
            .map(|f| format!("{f:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let failed: Vec<&str> = rep
        .checks
        .iter()
        .filter(|c| c.status != harness::checks::Status::Pass)
        .map(|c| c.id)
        .collect();
    println!(
        "kernel {} ({}), accelerator {}",
        kernel.release.as_deref().unwrap_or("?"),
        pkg.display(),
        accel.name()
    );
    println!("{:<26} {:>8}   (the median run)", "phase", "seconds");
    for (p, s) in &rep.phases {
        println!("{p:<26} {s:>8.2}");
    }
    println!("{:<26} {total:>8.2}", "runtime verdict (median)");
    println!("{:<26} {floor:>8.2}", "bare boot floor (median)");
    let ratio = total / floor;
    println!("ratio {ratio:.2}x");
    if !failed.is_empty() {
        bail!("guest checks did not pass: {}", failed.join(", "));
    }
    Ok(Measured {
        release: kernel.release.clone().unwrap_or_else(|| "?".into()),
        ratio,
        // The warm-up verdict counts: it ran the same checks.
        verdicts: rounds + 1,
        lockups,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soak_counts_lockups_and_stalls_and_refuses_a_missing_transcript() {
        let dir = tempfile::tempdir().unwrap();
        let clean = dir.path().join("clean.log");
        std::fs::write(
            &clean,
            "[    0.000000] Linux version 6.1.0\n@@BTFGATE-READY 6.1.0@@\n@@BTFGATE-RC 0@@\n",
        )
        .unwrap();
        assert!(lockups_in(&clean).unwrap().is_empty());
        // The kernel's own words, as a two-vCPU TCG guest printed them.
        let locked = dir.path().join("locked.log");
        std::fs::write(
            &locked,
            "[   31.402110] watchdog: BUG: soft lockup - CPU#1 stuck for 26s! [execsnoop:212]\n\
             [   31.402200] RIP: 0010:asm_exc_int3+0x0/0x40\n\
             [   52.101000] rcu: INFO: rcu_preempt self-detected stall on CPU\n",
        )
        .unwrap();
        let found = lockups_in(&locked).unwrap();
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].contains("soft lockup - CPU#1"), "{found:?}");
        assert!(found[1].contains("self-detected stall"), "{found:?}");
        let err = lockups_in(&dir.path().join("absent.log")).unwrap_err();
        assert!(format!("{err:#}").contains("absent.log"), "{err:#}");
    }
}
