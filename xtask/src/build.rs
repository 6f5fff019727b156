//! `build`: a kernel from a Linux source tree (default Debian's linux-source-6.1) with a base
//! config plus fragments from images/kconfig, BTF on or off, packaged as APK v2 with Alpine's
//! layout twice (modules stripped, and not), signed; cached by source + config + options.
//! `--configure-only` stops after the configure phase (base, fragments, olddefconfig, the
//! fragment check) and prints the final .config.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use harness::build::{private_key_path, trusted_keys_dir, BuildSpec, Outputs, KEY_NAME};
use harness::package::apk::{write_apk, SigningKey};
use harness::process::Cmd;

#[derive(Args)]
pub struct BuildArgs {
    /// Linux source tarball or unpacked tree
    #[arg(long, default_value = "/usr/src/linux-source-6.1.tar.xz")]
    source: PathBuf,
    /// Base config: tinyconfig, defconfig, or a config file
    #[arg(long, default_value = "tinyconfig")]
    base: String,
    /// Fragment merged over the base (repeatable; relative to images/kconfig/)
    #[arg(long = "fragment", default_values = ["common.config", "core.config"])]
    fragments: Vec<PathBuf>,
    /// BTF on or off
    #[arg(long, default_value = "on", value_parser = ["on", "off"])]
    btf: String,
    /// Fragment merged after the BTF switch, overriding its choices (repeatable; relative to
    /// images/kconfig/; e.g. dwarf5.config)
    #[arg(long = "override")]
    overrides: Vec<PathBuf>,
    /// Flavour name (package linux-<flavor>, /boot/vmlinuz-<flavor>)
    #[arg(long)]
    flavor: Option<String>,
    /// Only configure (base config, fragments, olddefconfig, every fragment option checked in
    /// the result), print the final .config path, build nothing
    #[arg(long)]
    configure_only: bool,
    /// Output directory for --configure-only (default: a new temporary directory, kept)
    #[arg(long, requires = "configure_only")]
    out: Option<PathBuf>,
    /// pahole for --configure-only, passed to make as PAHOLE= (Kconfig's PAHOLE_VERSION comes
    /// from it: a missing or old pahole drops DEBUG_INFO_BTF under DWARF5)
    #[arg(long, requires = "configure_only")]
    pahole: Option<PathBuf>,
}

/// Options the fragments asked for that the final .config lacks: the configure phase refused
/// the config (exit 1, the message names every dropped option).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Dropped(String);

/// Deadlines: a kernel build (a tiny config takes minutes here, a distribution config on two
/// cores hours), one make step (configure, install, kernelrelease), unpacking the source.
const BUILD: Duration = Duration::from_secs(4 * 3600);
const STEP: Duration = Duration::from_secs(20 * 60);
const UNPACK: Duration = Duration::from_secs(20 * 60);

/// Debian packages a kernel build needs.
const BUILD_PACKAGES: &[&str] = &[
    "linux-source-6.1",
    "dwarves",
    "flex",
    "bison",
    "libelf-dev",
    "bc",
    "libssl-dev",
    "make",
    "gcc",
    "kmod",
    "cpio",
];

pub fn run(a: BuildArgs) -> Result<u8> {
    let btf = a.btf == "on";
    let spec = BuildSpec {
        source: a.source,
        base: a.base,
        fragments: a.fragments,
        btf,
        overrides: a.overrides,
        flavor: a.flavor.unwrap_or_else(|| {
            if btf {
                "tiny-btf".into()
            } else {
                "tiny-nobtf".into()
            }
        }),
    };
    let done = if a.configure_only {
        configure_only(&spec, a.out, a.pahole.as_deref())
    } else {
        build(&spec).map(|out| {
            println!("{}", out.stripped.display());
            println!("{}", out.unstripped.display());
            println!(
                "{}",
                std::fs::read_to_string(&out.record)
                    .unwrap_or_default()
                    .trim()
            );
        })
    };
    match done {
        Ok(()) => Ok(0),
        // The config does not deliver what the fragments asked for: a failed check, not bad input.
        Err(e) if e.downcast_ref::<Dropped>().is_some() => {
            eprintln!("error: {e:#}");
            Ok(crate::EXIT_FAIL)
        }
        Err(e) => Err(e),
    }
}

/// `--configure-only`: configures `spec` into `out` (default a new temporary directory, kept)
/// and prints the final .config path.
fn configure_only(spec: &BuildSpec, out: Option<PathBuf>, pahole: Option<&Path>) -> Result<()> {
    let o = match out {
        Some(d) => d,
        None => tempfile::Builder::new()
            .prefix("btfgate-configure-")
            .tempdir()
            .context("create a temporary directory")?
            .keep(),
    };
    let src = source_tree(&spec.source)?;
    let cfg = configure(&src, spec, &o, pahole)?;
    println!("{}", cfg.display());
    Ok(())
}

/// Builds `spec` unless its packages are already in the cache; returns where they are.
pub fn build(spec: &BuildSpec) -> Result<Outputs> {
    if spec.source == Path::new("/usr/src/linux-source-6.1.tar.xz") && !spec.source.is_file() {
        crate::host::install(BUILD_PACKAGES)?;
    }
    let out = spec.outputs().map_err(anyhow::Error::msg)?;
    if out.complete() {
        return Ok(out);
    }
    let t0 = Instant::now();
    let src = source_tree(&spec.source)?;
    std::fs::create_dir_all(&out.dir).with_context(|| format!("create {}", out.dir.display()))?;
    let o = out.dir.join("out");
    let o_arg = format!("O={}", o.display());
    let cfg = configure(&src, spec, &o, None)?;
    let jobs = format!(
        "-j{}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    );
    let make = |timeout: Duration| {
        Cmd::new("make", timeout)
            .args(["-s", &o_arg, "ARCH=x86_64"])
            .dir(&src)
    };
    make(BUILD)
        .args([&jobs, "bzImage", "modules"])
        .stdout_to_stderr()
        .run()
        .context("make bzImage modules")?;
    let build_secs = t0.elapsed().as_secs_f64();
    let release = make(STEP)
        .arg("kernelrelease")
        .read()
        .context("make kernelrelease")?
        .trim()
        .to_string();
    let key = signing_key()?;
    let mut sizes = Vec::new();
    for (strip, apk) in [(true, &out.stripped), (false, &out.unstripped)] {
        let stage = harness::scratch::tempdir_in(&out.dir, ".stage-")?;
        let st = stage.path();
        let mod_path = format!("INSTALL_MOD_PATH={}", st.display());
        let strip_arg = if strip {
            "INSTALL_MOD_STRIP=1"
        } else {
            "INSTALL_MOD_STRIP="
        };
        make(STEP)
            .args([&mod_path, strip_arg, "modules_install"])
            .stdout_to_stderr()
            .run()
            .context("make modules_install")?;
        let boot = st.join("boot");
        std::fs::create_dir_all(&boot)?;
        std::fs::copy(
            o.join("arch/x86/boot/bzImage"),
            boot.join(format!("vmlinuz-{}", spec.flavor)),
        )?;
        std::fs::copy(&cfg, boot.join(format!("config-{}", spec.flavor)))?;
        std::fs::copy(
            o.join("System.map"),
            boot.join(format!("System.map-{}", spec.flavor)),
        )?;
        for link in ["build", "source"] {
            let _ = std::fs::remove_file(st.join("lib/modules").join(&release).join(link));
        }
        let info = vec![
            ("pkgname", format!("linux-{}", spec.flavor)),
            (
                "pkgver",
                format!("{}-r0", release.split('-').next().unwrap_or(&release)),
            ),
            ("arch", "x86_64".to_string()),
            (
                "pkgdesc",
                format!(
                    "btfgate control kernel ({}, BTF {})",
                    spec.flavor,
                    if spec.btf { "on" } else { "off" }
                ),
            ),
            ("license", "GPL-2.0-only".to_string()),
        ];
        write_apk(st, &info, Some(&key), apk)?;
        sizes.push(std::fs::metadata(apk)?.len());
    }
    let du = Cmd::new("du", STEP)
        .arg("-sb")
        .arg(&o)
        .read()
        .context("measure the build directory")?;
    let build_dir_bytes: u64 = du
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let record = serde_json::json!({
        "flavor": spec.flavor,
        "release": release,
        "btf": spec.btf,
        "base": spec.base,
        "build_wall_seconds": build_secs,
        "build_dir_bytes": build_dir_bytes,
        "package_bytes": sizes[0],
        "unstripped_package_bytes": sizes[1],
    });
    harness::atomic::write(
        &out.record,
        serde_json::to_string_pretty(&record)?.as_bytes(),
    )
    .context("write the build record")?;
    Ok(out)
}

/// The configure phase: the base config into `o`, the fragments merged over it, olddefconfig,
/// then every fragment option checked in the result ([`Dropped`] names what olddefconfig
/// dropped). `pahole` is passed to make as `PAHOLE=` (Kconfig derives PAHOLE_VERSION from it).
/// Returns the final .config.
fn configure(src: &Path, spec: &BuildSpec, o: &Path, pahole: Option<&Path>) -> Result<PathBuf> {
    std::fs::create_dir_all(o).with_context(|| format!("create {}", o.display()))?;
    let o_arg = format!("O={}", o.display());
    let pahole_arg = pahole.map(|p| format!("PAHOLE={}", p.display()));
    let make = || {
        Cmd::new("make", STEP)
            .args(["-s", &o_arg, "ARCH=x86_64"])
            .args(&pahole_arg)
            .dir(src)
    };
    let cfg = o.join(".config");
    let base = &spec.base;
    if Path::new(base).is_file() {
        std::fs::copy(base, &cfg).with_context(|| format!("copy base config {base}"))?;
        to_stderr(make().arg("olddefconfig"))?;
    } else {
        to_stderr(make().arg(base))?;
    }
    let frags = spec.fragment_paths();
    to_stderr(
        Cmd::new(src.join("scripts/kconfig/merge_config.sh"), STEP)
            .args(["-m", "-O"])
            .arg(o)
            .arg(&cfg)
            .args(&frags)
            .dir(src),
    )?;
    to_stderr(make().arg("olddefconfig"))?;
    check_fragments(&cfg, &frags)?;
    Ok(cfg)
}

/// Runs `c` with its output (kconfig's merge chatter) on stderr, so stdout holds only results.
fn to_stderr(c: Cmd) -> Result<()> {
    eprintln!("$ {}", c.line());
    c.stdout_to_stderr().run()?;
    Ok(())
}

/// What the fragments ask for, merged as merge_config.sh merges them (a later fragment's line
/// for an option replaces an earlier one), must be in the final config: olddefconfig drops
/// options whose dependencies are unmet, silently (the way Alpine lost BTF: DWARF5 with no or
/// too old pahole drops DEBUG_INFO_BTF). A [`Dropped`] error names every option and its fragment.
fn check_fragments(cfg: &Path, frags: &[PathBuf]) -> Result<()> {
    let have = std::fs::read_to_string(cfg).with_context(|| format!("read {}", cfg.display()))?;
    // (option, line, fragment), the last fragment's line per option.
    let mut want: Vec<(String, String, &Path)> = Vec::new();
    for f in frags {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("read fragment {}", f.display()))?;
        for line in text.lines() {
            let l = line.trim();
            let name = if l.starts_with("CONFIG_") {
                l.split('=').next()
            } else {
                l.strip_prefix("# ")
                    .and_then(|r| r.strip_suffix(" is not set"))
            };
            if let Some(name) = name {
                want.retain(|(n, _, _)| n != name);
                want.push((name.to_string(), l.to_string(), f));
            }
        }
    }
    let mut missing = Vec::new();
    for (name, l, f) in &want {
        if l.starts_with("CONFIG_") {
            if !have.lines().any(|h| h.trim() == l) {
                missing.push(format!("{}: {l}", f.display()));
            }
        } else if have
            .lines()
            .any(|h| h.starts_with(&format!("{name}=")) && !h.ends_with("=n"))
        {
            // "# CONFIG_X is not set": X must not be on (absent is fine: its menu may be hidden).
            missing.push(format!("{}: {l} (but it is on)", f.display()));
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let mut msg = format!(
        "olddefconfig dropped options the fragments ask for (unmet dependencies); not in {}:\n  {}",
        cfg.display(),
        missing.join("\n  ")
    );
    if missing.iter().any(|m| m.contains("CONFIG_DEBUG_INFO_BTF")) {
        // What DEBUG_INFO_BTF depends on (lib/Kconfig.debug): with DWARF5, PAHOLE_VERSION >= 121.
        let facts: Vec<&str> = have
            .lines()
            .filter(|h| {
                h.starts_with("CONFIG_PAHOLE_VERSION=")
                    || (h.starts_with("CONFIG_DEBUG_INFO_DWARF") && h.ends_with("=y"))
                    || h.starts_with("CONFIG_DEBUG_INFO_NONE=")
            })
            .collect();
        msg.push_str(&format!(
            "\nthe final .config has {} (DEBUG_INFO_BTF needs pahole >= 1.21 under DWARF5, \
             split module BTF pahole >= 1.19; PAHOLE_VERSION=0 is no pahole)",
            facts.join(", ")
        ));
    }
    Err(Dropped(msg).into())
}

/// The unpacked source tree: the directory itself, or a tarball unpacked once into the cache.
fn source_tree(source: &Path) -> Result<PathBuf> {
    if source.is_dir() {
        return Ok(source.to_path_buf());
    }
    let name = source
        .file_name()
        .map(|n| n.to_string_lossy().trim_end_matches(".tar.xz").to_string())
        .context("source tarball has no name")?;
    let root = harness::paths::cache_dir().join("src");
    let tree = root.join(&name);
    if tree.join("Makefile").is_file() {
        return Ok(tree);
    }
    std::fs::create_dir_all(&root)?;
    let tmp = harness::scratch::tempdir_in(&root, ".src-")?;
    let t = tmp.path();
    Cmd::new("tar", UNPACK)
        .arg("-xJf")
        .arg(source)
        .arg("-C")
        .arg(t)
        .run()
        .with_context(|| format!("unpack {}", source.display()))?;
    let inner = t.join(&name);
    std::fs::rename(&inner, &tree)
        .with_context(|| format!("move {} into place", inner.display()))?;
    Ok(tree)
}

/// The build signing key (generated once), its public half in the trusted keys dir.
fn signing_key() -> Result<SigningKey> {
    let private = private_key_path();
    let key = if private.is_file() {
        SigningKey::from_pem(KEY_NAME, &std::fs::read_to_string(&private)?)?
    } else {
        let k = SigningKey::generate(KEY_NAME, 2048)?;
        let dir = private.parent().context("key path has no parent")?;
        std::fs::create_dir_all(dir)?;
        let tmp = private.with_extension("tmp");
        std::fs::write(&tmp, k.private_pem()?)?;
        std::fs::rename(&tmp, &private)?;
        k
    };
    let trusted = trusted_keys_dir();
    std::fs::create_dir_all(&trusted)?;
    std::fs::write(trusted.join(KEY_NAME), key.public_pem())?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(config: &str, frags: &[&str]) -> Result<()> {
        let d = tempfile::tempdir().unwrap();
        let cfg = d.path().join(".config");
        std::fs::write(&cfg, config).unwrap();
        let paths: Vec<PathBuf> = frags
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let p = d.path().join(format!("{i}.config"));
                std::fs::write(&p, t).unwrap();
                p
            })
            .collect();
        check_fragments(&cfg, &paths)
    }

    #[test]
    fn every_fragment_option_must_survive() {
        let frag = "CONFIG_BPF=y\nCONFIG_DEBUG_INFO_BTF=y\n# CONFIG_FOO is not set\n";
        check("CONFIG_BPF=y\nCONFIG_DEBUG_INFO_BTF=y\n", &[frag]).unwrap();
        let e = check(
            "CONFIG_BPF=y\nCONFIG_PAHOLE_VERSION=120\nCONFIG_DEBUG_INFO_DWARF5=y\nCONFIG_FOO=y\n",
            &[frag],
        )
        .unwrap_err();
        assert!(e.downcast_ref::<Dropped>().is_some(), "{e:#}");
        let e = format!("{e:#}");
        assert!(e.contains("0.config: CONFIG_DEBUG_INFO_BTF=y"), "{e}");
        assert!(e.contains("# CONFIG_FOO is not set (but it is on)"), "{e}");
        assert!(
            e.contains("CONFIG_PAHOLE_VERSION=120, CONFIG_DEBUG_INFO_DWARF5=y"),
            "{e}"
        );
        assert!(!e.contains("CONFIG_BPF=y"), "{e}");
    }

    #[test]
    fn a_later_fragment_overrides_an_earlier_one() {
        let switch = "CONFIG_DEBUG_INFO_DWARF_TOOLCHAIN_DEFAULT=y\n";
        let dwarf5 =
            "CONFIG_DEBUG_INFO_DWARF5=y\n# CONFIG_DEBUG_INFO_DWARF_TOOLCHAIN_DEFAULT is not set\n";
        check("CONFIG_DEBUG_INFO_DWARF5=y\n", &[switch, dwarf5]).unwrap();
        let e = check("CONFIG_DEBUG_INFO_DWARF5=y\n", &[dwarf5, switch]).unwrap_err();
        assert!(
            format!("{e:#}").contains("CONFIG_DEBUG_INFO_DWARF_TOOLCHAIN_DEFAULT=y"),
            "{e:#}"
        );
    }
}
