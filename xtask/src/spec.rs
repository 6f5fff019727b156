//! Package specs on the command line: a path, or where to get the package (`apt:NAME`, `alpine:NAME[=VERSION]`, `target:NAME` of scenarios/targets.yaml), resolved to verified files; a comma-separated list of specs is one kernel split over packages.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use harness::package::{Part, ReadOptions};

use crate::fetch::{self, MirrorArgs};

/// Help text shared by the commands that take specs.
pub const HELP: &str = "a file (.apk, .deb) or directory; apt:NAME[@SUITE|@previous]; \
    alpine:NAME[=VERSION] (Alpine mirror, see --mirror/--branch); target:NAME (scenarios/targets.yaml); \
    several of these joined by commas for a kernel split over packages";

/// A resolved spec: the packages of one kernel (one, or a set) and how each is verified.
pub struct Resolved {
    pub parts: Vec<Part>,
}

impl Resolved {
    /// The package paths, for messages.
    pub fn describe(&self) -> String {
        let paths: Vec<String> = (self.parts.iter())
            .map(|p| p.path.display().to_string())
            .collect();
        paths.join(", ")
    }
}

/// Resolves `spec`, one kernel: a comma-separated list is a kernel split over packages (each
/// element any spec); `read` is the default trust (from --keys-dir / --allow-untrusted).
pub fn resolve(spec: &str, mirror: &MirrorArgs, read: &ReadOptions) -> Result<Resolved> {
    let mut parts = Vec::new();
    for one in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        parts.extend(resolve_one(one, mirror, read)?);
    }
    if parts.is_empty() {
        anyhow::bail!("empty package spec {spec:?} (a package spec is {HELP})");
    }
    Ok(Resolved { parts })
}

fn resolve_one(spec: &str, mirror: &MirrorArgs, read: &ReadOptions) -> Result<Vec<Part>> {
    let plain = |path: PathBuf| Part {
        path,
        read: read.clone(),
    };
    if let Some(name) = spec.strip_prefix("apt:") {
        return Ok(fetch::apt_fetch_set(name)?.into_iter().map(plain).collect());
    }
    if let Some(name) = spec.strip_prefix("alpine:") {
        let f = mirror.fetcher(&read.keys_dir)?;
        let index = f.index().map_err(fetch::fetch_error)?;
        eprintln!(
            "{}",
            fetch::signed_by(
                &index,
                &harness::package::apk::trust::describe(&read.keys_dir)
            )
        );
        let entry = f.pick(&index, name).map_err(fetch::fetch_error)?.clone();
        return Ok(vec![plain(f.fetch(&entry).map_err(fetch::fetch_error)?)]);
    }
    if let Some(name) = spec.strip_prefix("target:") {
        use harness::scenario::{load, targets};
        let dir = load::scenarios_dir();
        let suite = load::load(&dir).map_err(|e| anyhow::anyhow!("{}", e.join("\n")))?;
        let pkg = targets::resolve(&suite.targets, name).map_err(|e| {
            harness::Error::bad(&dir.join("targets.yaml"), "resolve target", e.message())
        })?;
        let opts = targets::read_options(&suite.targets, name);
        return pkg
            .materialize(&opts)
            .map_err(|e| anyhow::anyhow!("target {name}: {e}"));
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
    Ok(vec![plain(
        std::fs::canonicalize(path).with_context(|| format!("resolve {}", path.display()))?,
    )])
}
