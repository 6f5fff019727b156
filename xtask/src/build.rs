//! `build`: a kernel from a Linux source tree (default Debian's linux-source-6.1) with a base
//! config plus fragments from images/kconfig, BTF on or off, packaged as APK v2 with Alpine's
//! layout twice (modules stripped, and not), signed; cached by source + config + options.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use harness::build::{private_key_path, trusted_keys_dir, BuildSpec, Outputs, KEY_NAME};
use harness::package::apk::{write_apk, SigningKey};
use xshell::{cmd, Shell};

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
    /// Flavour name (package linux-<flavor>, /boot/vmlinuz-<flavor>)
    #[arg(long)]
    flavor: Option<String>,
}

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

pub fn run(a: BuildArgs) -> Result<()> {
    let btf = a.btf == "on";
    let spec = BuildSpec {
        source: a.source,
        base: a.base,
        fragments: a.fragments,
        btf,
        flavor: a.flavor.unwrap_or_else(|| {
            if btf {
                "tiny-btf".into()
            } else {
                "tiny-nobtf".into()
            }
        }),
    };
    let out = build(&spec)?;
    println!("{}", out.stripped.display());
    println!("{}", out.unstripped.display());
    println!(
        "{}",
        std::fs::read_to_string(&out.record)
            .unwrap_or_default()
            .trim()
    );
    Ok(())
}

/// Builds `spec` unless its packages are already in the cache; returns where they are.
pub fn build(spec: &BuildSpec) -> Result<Outputs> {
    let sh = Shell::new()?;
    if spec.source == Path::new("/usr/src/linux-source-6.1.tar.xz") && !spec.source.is_file() {
        crate::test::install(&sh, BUILD_PACKAGES)?;
    }
    let out = spec.outputs().map_err(anyhow::Error::msg)?;
    if out.complete() {
        return Ok(out);
    }
    let t0 = Instant::now();
    let src = source_tree(&sh, &spec.source)?;
    std::fs::create_dir_all(&out.dir).with_context(|| format!("create {}", out.dir.display()))?;
    let o = out.dir.join("out");
    let o_arg = format!("O={}", o.display());
    std::fs::create_dir_all(&o)?;
    let _cd = sh.push_dir(&src);
    let base = &spec.base;
    if Path::new(base).is_file() {
        std::fs::copy(base, o.join(".config"))
            .with_context(|| format!("copy base config {base}"))?;
        cmd!(sh, "make -s {o_arg} ARCH=x86_64 olddefconfig").run()?;
    } else {
        cmd!(sh, "make -s {o_arg} ARCH=x86_64 {base}").run()?;
    }
    let frags = spec.fragment_paths();
    let cfg = o.join(".config");
    let merge = frags.clone();
    cmd!(
        sh,
        "scripts/kconfig/merge_config.sh -m -O {o} {cfg} {merge...}"
    )
    .quiet()
    .run()?;
    cmd!(sh, "make -s {o_arg} ARCH=x86_64 olddefconfig").run()?;
    check_fragments(&cfg, &frags)?;
    let jobs = format!(
        "-j{}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    );
    cmd!(sh, "make -s {o_arg} ARCH=x86_64 {jobs} bzImage modules")
        .run()
        .context("make bzImage modules")?;
    let build_secs = t0.elapsed().as_secs_f64();
    let release = cmd!(sh, "make -s {o_arg} ARCH=x86_64 kernelrelease")
        .read()?
        .trim()
        .to_string();
    let key = signing_key()?;
    let mut sizes = Vec::new();
    for (strip, apk) in [(true, &out.stripped), (false, &out.unstripped)] {
        let stage = tempfile::tempdir_in(&out.dir)?;
        let st = stage.path();
        let mod_path = format!("INSTALL_MOD_PATH={}", st.display());
        let strip_arg = if strip {
            "INSTALL_MOD_STRIP=1"
        } else {
            "INSTALL_MOD_STRIP="
        };
        cmd!(
            sh,
            "make -s {o_arg} ARCH=x86_64 {mod_path} {strip_arg} modules_install"
        )
        .run()?;
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
    let du = cmd!(sh, "du -sb {o}").read()?;
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

/// Every `CONFIG_X=...` line of the fragments must be in the final config (olddefconfig drops
/// options whose dependencies are unmet, silently: the way Alpine lost BTF).
fn check_fragments(cfg: &Path, frags: &[PathBuf]) -> Result<()> {
    let have = std::fs::read_to_string(cfg)?;
    let mut missing = Vec::new();
    for f in frags {
        for line in std::fs::read_to_string(f)?.lines() {
            let l = line.trim();
            if l.starts_with("CONFIG_") && !have.lines().any(|h| h.trim() == l) {
                missing.push(format!("{}: {l}", f.display()));
            }
            // "# CONFIG_X is not set": X must not be on (absent is fine: its menu may be hidden).
            if let Some(name) = l
                .strip_prefix("# ")
                .and_then(|r| r.strip_suffix(" is not set"))
            {
                if have
                    .lines()
                    .any(|h| h.starts_with(&format!("{name}=")) && !h.ends_with("=n"))
                {
                    missing.push(format!("{}: {l} (but it is on)", f.display()));
                }
            }
        }
    }
    if !missing.is_empty() {
        bail!(
            "config options not in the final .config:\n  {}",
            missing.join("\n  ")
        );
    }
    Ok(())
}

/// The unpacked source tree: the directory itself, or a tarball unpacked once into the cache.
fn source_tree(sh: &Shell, source: &Path) -> Result<PathBuf> {
    if source.is_dir() {
        return Ok(source.to_path_buf());
    }
    let name = source
        .file_name()
        .map(|n| n.to_string_lossy().trim_end_matches(".tar.xz").to_string())
        .context("source tarball has no name")?;
    let root = harness::fixtures::cache_dir().join("src");
    let tree = root.join(&name);
    if tree.join("Makefile").is_file() {
        return Ok(tree);
    }
    std::fs::create_dir_all(&root)?;
    let tmp = tempfile::tempdir_in(&root)?;
    let t = tmp.path();
    cmd!(sh, "tar -xJf {source} -C {t}")
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
