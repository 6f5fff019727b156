//! Resolving a target to a package on this machine, or to the reason it cannot run here
//! (decided when trials are listed).

use std::path::{Path, PathBuf};

use super::model::{Source, TargetsFile};
use crate::fixtures::cache_dir;
use crate::package::ReadOptions;

/// A target's package, ready to read.
#[derive(Debug, Clone)]
pub enum Package {
    File(PathBuf),
    /// Kernel image and config of `boot`, modules of `modules`.
    Mix {
        boot: PathBuf,
        modules: PathBuf,
    },
}

/// The host distribution family (`/etc/os-release` ID and ID_LIKE).
pub fn host_is(id: &str) -> bool {
    let text = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    text.lines()
        .filter_map(|l| l.strip_prefix("ID=").or_else(|| l.strip_prefix("ID_LIKE=")))
        .any(|v| v.trim_matches('"').split_whitespace().any(|x| x == id))
}

/// Where `cargo xtask fetch` records the fetched file of package `name`.
pub fn fetched_marker(name: &str) -> PathBuf {
    cache_dir().join("host").join(format!("{name}.path"))
}

fn fetched(name: &str, how: &str) -> Result<PathBuf, String> {
    let m = fetched_marker(name);
    let p = std::fs::read_to_string(&m)
        .map(|t| PathBuf::from(t.trim()))
        .map_err(|_| format!("{name} is not fetched (run `cargo xtask fetch {how} {name}`; `cargo xtask test` does)"))?;
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!(
            "{} names {}, which is gone",
            m.display(),
            p.display()
        ))
    }
}

/// Resolves target `name`, or says why it cannot run on this machine.
pub fn resolve(targets: &TargetsFile, name: &str) -> Result<Package, String> {
    let t = targets
        .targets
        .get(name)
        .ok_or_else(|| format!("unknown target {name:?}"))?;
    match &t.source {
        Source::Apt(pkg) => {
            if !host_is("debian") {
                return Err(format!("target {name}: apt sources need a Debian host"));
            }
            fetched(pkg, "apt").map(Package::File)
        }
        Source::Apk(pkg) => {
            if !host_is("alpine") {
                return Err(format!("target {name}: apk sources need an Alpine host"));
            }
            fetched(pkg, "apk").map(Package::File)
        }
        Source::File(p) => {
            if p.exists() {
                Ok(Package::File(p.clone()))
            } else {
                Err(format!("target {name}: {} does not exist", p.display()))
            }
        }
        Source::Build(spec) | Source::BuildUnstripped(spec) => {
            let out = spec.outputs()?;
            if !out.complete() {
                return Err(format!(
                    "target {name}: not built yet (cargo xtask build --flavor {} --btf {}; `cargo xtask test` builds every build target)",
                    spec.flavor,
                    if spec.btf { "on" } else { "off" }
                ));
            }
            Ok(Package::File(if matches!(t.source, Source::Build(_)) {
                out.stripped
            } else {
                out.unstripped
            }))
        }
        Source::Mix(mix) => {
            let one = |n: &str| match resolve(targets, n)? {
                Package::File(p) => Ok(p),
                Package::Mix { .. } => Err(format!(
                    "target {name}: a mix cannot take parts from another mix ({n})"
                )),
            };
            Ok(Package::Mix {
                boot: one(&mix.boot)?,
                modules: one(&mix.modules)?,
            })
        }
    }
}

/// Read options for a target: built packages are signed with btfgate's build key.
pub fn read_options(targets: &TargetsFile, name: &str) -> ReadOptions {
    match targets.targets.get(name).map(|t| &t.source) {
        Some(Source::Build(_) | Source::BuildUnstripped(_)) => ReadOptions {
            keys_dir: crate::build::trusted_keys_dir(),
            allow_untrusted: false,
        },
        _ => ReadOptions::default(),
    }
}

impl Package {
    /// The path to read: the package itself, or the mix assembled once into the cache.
    pub fn materialize(&self, opts: &ReadOptions) -> Result<PathBuf, String> {
        match self {
            Package::File(p) => Ok(p.clone()),
            Package::Mix { boot, modules } => {
                use sha2::{Digest, Sha256};
                let key = hex::encode(Sha256::digest(
                    format!("{}\n{}", boot.display(), modules.display()).as_bytes(),
                ));
                let dir = cache_dir().join("mix").join(&key[..24]);
                if dir.join(".complete").is_file() {
                    return Ok(dir);
                }
                let parent = dir.parent().ok_or("cache path has no parent")?;
                std::fs::create_dir_all(parent)
                    .map_err(|e| format!("create {}: {e}", parent.display()))?;
                let tmp = tempfile::Builder::new()
                    .prefix(".mix-")
                    .tempdir_in(parent)
                    .map_err(|e| format!("create a temporary directory: {e}"))?;
                let in_boot = |p: &Path| p.starts_with("boot");
                let in_mods =
                    |p: &Path| p.starts_with("lib/modules") || p.starts_with("usr/lib/modules");
                crate::package::extract::extract(boot, opts, tmp.path(), &in_boot)
                    .map_err(|e| e.to_string())?;
                crate::package::extract::extract(modules, opts, tmp.path(), &in_mods)
                    .map_err(|e| e.to_string())?;
                std::fs::write(tmp.path().join(".complete"), b"").map_err(|e| e.to_string())?;
                let kept = tmp.keep();
                let _ = std::fs::remove_dir_all(&dir);
                std::fs::rename(&kept, &dir)
                    .map_err(|e| format!("rename {}: {e}", kept.display()))?;
                Ok(dir)
            }
        }
    }
}
