//! Guest images: an uncompressed newc initramfs holding busybox, the recipe's tools with their
//! shared-library closure, the package's own modules, and the init; cached by the sha256 of
//! everything that goes into it, so a second run with the same inputs builds nothing.

pub mod closure;
pub mod initramfs;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
    pub fn load(path: &Path) -> Result<Recipe, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut r: Recipe =
            serde_saphyr::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        r.dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Ok(r)
    }

    /// The recipe shipped in the repository's `images/`.
    pub fn builtin(name: &str) -> Result<Recipe, String> {
        Recipe::load(
            &crate::fixtures::workspace_root()
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

    /// The image's nodes: busybox, tools and their libraries, extra files, the init.
    pub fn nodes(&self) -> Result<Vec<Node>, String> {
        let mut nodes = vec![
            Node::file("bin/busybox", 0o755, Source::Host(self.busybox.clone())),
            Node::file("init", 0o755, Source::Host(self.dir.join(&self.init))),
        ];
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

/// Builds (or finds in `cache`) the cpio holding `nodes`; returns its path.
pub fn build(nodes: Vec<Node>, cache: &Path) -> Result<PathBuf, String> {
    let nodes = initramfs::normalize(nodes);
    let key = initramfs::key(&nodes)?;
    let out = cache.join(format!("{key}.cpio"));
    if out.is_file() {
        return Ok(out);
    }
    std::fs::create_dir_all(cache).map_err(|e| format!("create {}: {e}", cache.display()))?;
    initramfs::write(&nodes, &out)?;
    Ok(out)
}
