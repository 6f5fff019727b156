//! Guest images: an uncompressed newc initramfs holding busybox, the recipe's tools with their
//! shared-library closure, the package's own modules, and the init; cached by the sha256 of
//! everything that goes into it, so a second run with the same inputs builds nothing.

pub mod closure;
pub mod initramfs;

use crate::Error;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use initramfs::{Node, Source};

/// An image recipe (`images/<name>.yaml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// Static busybox on the host.
    pub busybox: PathBuf,
    /// Host binaries copied unchanged, with their shared-library closure.
    pub tools: Vec<PathBuf>,
    /// Extra host files: host path → guest path.
    #[serde(default)]
    pub files: BTreeMap<PathBuf, PathBuf>,
    /// Init script, relative to the recipe file.
    pub init: PathBuf,
    /// Modules loaded when a run names none.
    #[serde(default)]
    pub modules: Vec<String>,
    #[serde(skip)]
    pub dir: PathBuf,
}

impl Recipe {
    /// Loads `images/<name>.yaml` from `dir`.
    pub fn load(path: &Path) -> crate::Result<Recipe> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, "image recipe", e))?;
        let mut r: Recipe = serde_saphyr::from_str(&text)
            .map_err(|e| Error::bad(path, "image recipe", e.to_string()))?;
        r.dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Ok(r)
    }

    /// The recipe shipped in the repository's `images/`.
    pub fn builtin(name: &str) -> crate::Result<Recipe> {
        Recipe::load(
            &crate::paths::workspace_root()
                .join("images")
                .join(format!("{name}.yaml")),
        )
    }

    /// Host programs the recipe needs that are missing, as (path, Debian package) pairs.
    pub fn missing_tools(&self) -> Vec<PathBuf> {
        std::iter::once(&self.busybox)
            .chain(self.tools.iter())
            .filter(|p| !p.is_file())
            .cloned()
            .collect()
    }

    /// The image's nodes: busybox, the init, and with `tools` the recipe's tools with their
    /// libraries and its extra files (without: busybox and the init alone, for a guest that
    /// runs no tool).
    pub fn nodes(&self, tools: bool) -> crate::Result<Vec<Node>> {
        let mut nodes = vec![
            Node::file("bin/busybox", 0o755, Source::Host(self.busybox.clone())),
            Node::file("init", 0o755, Source::Host(self.dir.join(&self.init))),
        ];
        if !tools {
            return Ok(nodes);
        }
        for tool in &self.tools {
            nodes.extend(closure::nodes(tool)?);
        }
        for (host, guest) in &self.files {
            nodes.push(Node::file(
                guest.to_string_lossy().trim_start_matches('/'),
                0o644,
                Source::Host(host.clone()),
            ));
        }
        Ok(nodes)
    }
}

/// Bytes of images kept in the cache besides the one in use (`$BTFGATE_IMAGES_MAX`, a size such
/// as `4GiB`; default 2 GiB): an image holds the tools and one package's modules (~200 MB with
/// bpftrace), and every new kernel version or module set makes a new one.
pub const DEFAULT_KEEP: u64 = 2 << 30;

/// An image used this recently is never removed: another run may be about to boot it.
pub const RECENT: Duration = Duration::from_secs(3600);

/// Builds (or finds in `cache`) the cpio holding `nodes`; returns its path. A hit marks the
/// image used (mtime); a build then trims the cache ([`trim`]).
pub fn build(nodes: Vec<Node>, cache: &Path) -> crate::Result<PathBuf> {
    let nodes = initramfs::normalize(nodes);
    let key = initramfs::key(&nodes)?;
    let out = cache.join(format!("{key}.cpio"));
    if out.is_file() {
        // The mark only orders eviction; an image that cannot be marked is still good.
        let _ = mark_used(&out);
        return Ok(out);
    }
    std::fs::create_dir_all(cache).map_err(|e| Error::io(cache, "image cache", e))?;
    initramfs::write(&nodes, &out)?;
    let keep = match std::env::var("BTFGATE_IMAGES_MAX") {
        Ok(v) => crate::size::parse_size(&v).map_err(|e| e.context("$BTFGATE_IMAGES_MAX"))?,
        Err(_) => DEFAULT_KEEP,
    };
    trim(cache, &out, keep, RECENT)?;
    Ok(out)
}

fn mark_used(p: &Path) -> std::io::Result<()> {
    std::fs::File::options()
        .write(true)
        .open(p)?
        .set_modified(SystemTime::now())
}

/// Removes the least recently used `*.cpio` images of `cache` until the others fit in `keep`
/// bytes, never `current` nor an image used within `recent`. Returns what it removed.
pub fn trim(
    cache: &Path,
    current: &Path,
    keep: u64,
    recent: Duration,
) -> crate::Result<Vec<PathBuf>> {
    let err = |e: std::io::Error| Error::io(cache, "trim the image cache", e);
    let now = SystemTime::now();
    let mut images: Vec<(SystemTime, u64, PathBuf)> = Vec::new();
    for e in std::fs::read_dir(cache).map_err(err)? {
        let e = e.map_err(err)?;
        let p = e.path();
        if p == current || p.extension().is_none_or(|x| x != "cpio") {
            continue;
        }
        let md = e.metadata().map_err(err)?;
        if md.is_file() {
            images.push((md.modified().map_err(err)?, md.len(), p));
        }
    }
    let mut total: u64 = images.iter().map(|i| i.1).sum();
    images.sort();
    let mut removed = Vec::new();
    for (used, len, p) in images {
        if total <= keep {
            break;
        }
        if now.duration_since(used).unwrap_or_default() < recent {
            continue;
        }
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            // Another run trimmed it first.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&p, "trim the image cache", e)),
        }
        total -= len;
        removed.push(p);
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(dir: &Path, name: &str, len: usize, age_s: u64) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, vec![0u8; len]).unwrap();
        let f = std::fs::File::options().write(true).open(&p).unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(age_s))
            .unwrap();
        p
    }

    #[test]
    fn trims_least_recently_used_first_and_spares_current_and_recent() {
        let d = tempfile::tempdir().unwrap();
        let oldest = image(d.path(), "a.cpio", 100, 30_000);
        let old = image(d.path(), "b.cpio", 100, 20_000);
        let newer = image(d.path(), "c.cpio", 100, 10_000);
        let recent = image(d.path(), "d.cpio", 100, 60);
        let current = image(d.path(), "e.cpio", 1_000, 100_000);
        let temp = image(d.path(), "f.tmp123", 1_000, 100_000);
        // 400 bytes of other images, keep 250: the two least recently used go.
        let removed = trim(d.path(), &current, 250, Duration::from_secs(3600)).unwrap();
        assert_eq!(removed, vec![oldest.clone(), old.clone()]);
        assert!(!oldest.exists() && !old.exists() && newer.is_file());
        // Keep nothing: the older one goes, the recently used one stays all the same.
        let removed = trim(d.path(), &current, 0, Duration::from_secs(3600)).unwrap();
        assert_eq!(removed, vec![newer.clone()]);
        for p in [&current, &recent, &temp] {
            assert!(p.is_file(), "{} was removed", p.display());
        }
        // Under the limit: nothing goes, however old.
        assert!(trim(d.path(), &current, 1_000, Duration::ZERO)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn a_hit_marks_the_image_used() {
        let d = tempfile::tempdir().unwrap();
        let nodes = vec![Node::file("init", 0o755, Source::Bytes(b"x".to_vec()))];
        let p = build(nodes.clone(), d.path()).unwrap();
        let f = std::fs::File::options().write(true).open(&p).unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(10_000))
            .unwrap();
        assert_eq!(build(nodes, d.path()).unwrap(), p);
        let age = SystemTime::now()
            .duration_since(std::fs::metadata(&p).unwrap().modified().unwrap())
            .unwrap();
        assert!(age < Duration::from_secs(60), "{age:?}");
    }
}
