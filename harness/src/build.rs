//! Kernels built from source as negative (and positive) controls: the build spec, its cache key
//! (source + config + options), where the packages land, and the signing key they carry. The
//! building itself is `cargo xtask build`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::paths::{cache_dir, workspace_root};

/// Bumped when the build recipe changes in a way the key does not see.
const RECIPE_VERSION: &str = "btfgate-build-1";

/// What to build.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BuildSpec {
    /// Linux source: a tarball (`/usr/src/linux-source-6.1.tar.xz`) or an unpacked tree.
    #[serde(default = "default_source")]
    pub source: PathBuf,
    /// Base config: `tinyconfig`, `defconfig`, or a config file (e.g. Alpine's virt.x86_64.config).
    #[serde(default = "default_base")]
    pub base: String,
    /// Fragments merged over the base, relative to `images/kconfig/` unless absolute.
    #[serde(default)]
    pub fragments: Vec<PathBuf>,
    /// Append `btf.config` (true) or `nobtf.config` (false).
    pub btf: bool,
    /// Fragments merged after the BTF switch, overriding its choices (e.g. `dwarf5.config`
    /// replaces the toolchain's default DWARF version `btf.config` picks); same paths as
    /// `fragments`. Empty keeps the cache key of specs from before overrides existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<PathBuf>,
    /// Alpine flavour name: `/boot/vmlinuz-<flavor>`, package `linux-<flavor>`.
    pub flavor: String,
}

fn default_source() -> PathBuf {
    PathBuf::from("/usr/src/linux-source-6.1.tar.xz")
}

fn default_base() -> String {
    "tinyconfig".into()
}

/// The packages one build produces.
#[derive(Debug, Clone)]
pub struct Outputs {
    pub dir: PathBuf,
    /// Modules installed with `INSTALL_MOD_STRIP=1`, as Alpine does.
    pub stripped: PathBuf,
    /// The same build with modules not stripped (the 259 MB → 4.1 GB accident).
    pub unstripped: PathBuf,
    /// Build facts (wall time, build directory size, package sizes), written last.
    pub record: PathBuf,
}

impl BuildSpec {
    /// Fragment files in merge order: the fragments, the BTF switch, the overrides.
    pub fn fragment_paths(&self) -> Vec<PathBuf> {
        let kdir = workspace_root().join("images/kconfig");
        let path = |f: &PathBuf| {
            if f.is_absolute() {
                f.clone()
            } else {
                kdir.join(f)
            }
        };
        let mut v: Vec<PathBuf> = self.fragments.iter().map(path).collect();
        v.push(kdir.join(if self.btf {
            "btf.config"
        } else {
            "nobtf.config"
        }));
        v.extend(self.overrides.iter().map(path));
        v
    }

    /// sha256 over the recipe version, the source's identity, the base and every fragment.
    pub fn key(&self) -> crate::Result<String> {
        let mut h = Sha256::new();
        h.update(RECIPE_VERSION.as_bytes());
        let src = std::fs::metadata(&self.source)
            .map_err(|e| crate::Error::io(&self.source, "linux source", e))?;
        // The tarball's path, size and mtime identify a packaged source cheaply.
        let mtime = src
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs())
            .unwrap_or(0);
        h.update(format!("{} {} {mtime}\n", self.source.display(), src.len()).as_bytes());
        let base_file = Path::new(&self.base);
        if base_file.is_file() {
            h.update(
                std::fs::read(base_file)
                    .map_err(|e| crate::Error::io(base_file, "base config", e))?,
            );
        } else {
            h.update(self.base.as_bytes());
        }
        for f in self.fragment_paths() {
            h.update(std::fs::read(&f).map_err(|e| crate::Error::io(&f, "config fragment", e))?);
        }
        h.update(self.flavor.as_bytes());
        Ok(hex::encode(h.finalize()))
    }

    /// Where this build's packages are in the btfgate cache.
    pub fn outputs(&self) -> crate::Result<Outputs> {
        self.outputs_in(&cache_dir())
    }

    /// Where this build's packages are in the cache `cache`.
    pub fn outputs_in(&self, cache: &Path) -> crate::Result<Outputs> {
        let key = self.key()?;
        let dir = cache.join("builds").join(&key[..24]);
        Ok(Outputs {
            stripped: dir.join(format!("linux-{}.apk", self.flavor)),
            unstripped: dir.join(format!("linux-{}-unstripped.apk", self.flavor)),
            record: dir.join("build.json"),
            dir,
        })
    }
}

impl Outputs {
    /// Both packages and the record exist (the record is written last).
    pub fn complete(&self) -> bool {
        self.record.is_file() && self.stripped.is_file() && self.unstripped.is_file()
    }
}

/// The signing key of built packages: private half under the cache, public half in
/// [`trusted_keys_dir`] under the key's name.
pub const KEY_NAME: &str = "btfgate-build.rsa.pub";

pub fn trusted_keys_dir() -> PathBuf {
    cache_dir().join("keys").join("trusted")
}

pub fn private_key_path() -> PathBuf {
    cache_dir()
        .join("keys")
        .join("private")
        .join("btfgate-build.rsa")
}
