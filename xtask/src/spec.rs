//! Package specs on the command line: a path, or where to get the package (`apt:NAME`, `alpine:NAME[=VERSION]`, `target:NAME` of scenarios/targets.yaml), resolved to a verified file.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use harness::package::ReadOptions;

use crate::fetch::{self, MirrorArgs};

/// Help text shared by the commands that take specs.
pub const HELP: &str = "a file (.apk, .deb) or directory; apt:NAME (host apt); \
    alpine:NAME[=VERSION] (Alpine mirror, see --mirror/--branch); target:NAME (scenarios/targets.yaml)";

/// A resolved spec: the file to read and how to verify it.
pub struct Resolved {
    pub path: PathBuf,
    pub read: ReadOptions,
}

/// Resolves `spec`; `read` is the default trust (from --keys-dir / --allow-untrusted).
pub fn resolve(spec: &str, mirror: &MirrorArgs, read: &ReadOptions) -> Result<Resolved> {
    let plain = |path: PathBuf| Resolved {
        path,
        read: read.clone(),
    };
    if let Some(name) = spec.strip_prefix("apt:") {
        let real = fetch::apt_image_package(name)?;
        return Ok(plain(fetch::apt_download(&real)?));
    }
    if let Some(name) = spec.strip_prefix("alpine:") {
        let f = mirror.fetcher(&read.keys_dir)?;
        let index = f.index().map_err(fetch::fetch_error)?;
        let entry = f.pick(&index, name).map_err(fetch::fetch_error)?.clone();
        return Ok(plain(f.fetch(&entry).map_err(fetch::fetch_error)?));
    }
    if let Some(name) = spec.strip_prefix("target:") {
        use harness::scenario::{load, targets};
        let dir = load::scenarios_dir();
        let suite = load::load(&dir).map_err(|e| anyhow::anyhow!("{}", e.join("\n")))?;
        let pkg = targets::resolve(&suite.targets, name).map_err(|e| {
            harness::Error::bad(&dir.join("targets.yaml"), "resolve target", e.message())
        })?;
        let opts = targets::read_options(&suite.targets, name);
        let path = pkg
            .materialize()
            .map_err(|e| anyhow::anyhow!("target {name}: {e}"))?;
        return Ok(Resolved { path, read: opts });
    }
    let path = Path::new(spec);
    if !path.exists() {
        return Err(harness::Error::bad(
            path,
            "resolve package",
            format!("no such file or directory (a package spec is {HELP})"),
        )
        .into());
    }
    Ok(plain(
        std::fs::canonicalize(path).with_context(|| format!("resolve {}", path.display()))?,
    ))
}
