//! A download the package manager verified, moved into the content-addressed store; the
//! marker that records where a fetched package is (for the tests and scenario targets).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use harness::fetch::Store;

use super::fetch_error;

/// Remembers where the fetched package `name` is (its files, one path a line: a kernel may be
/// several packages), for the tests and scenario targets.
pub(super) fn record(name: &str, paths: &[PathBuf]) -> Result<()> {
    let marker = harness::scenario::targets::fetched_marker(name);
    let dir = marker.parent().context("marker path has no parent")?;
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let text: String = paths.iter().map(|p| format!("{}\n", p.display())).collect();
    harness::atomic::write(&marker, text.as_bytes()).context("record the fetched package")?;
    Ok(())
}

/// Moves a download the package manager verified into the content-addressed store and points
/// `<index>/<name>` at it; returns the stored path.
pub(super) fn store(got: &Path, index: &str) -> Result<PathBuf> {
    let name = got
        .file_name()
        .context("downloaded file has no name")?
        .to_string_lossy()
        .into_owned();
    let tmp = tempfile::TempPath::try_from_path(got)
        .with_context(|| format!("take over {}", got.display()))?;
    Store::default_cache()
        .put(tmp, &name, index)
        .map_err(fetch_error)
}

pub(super) fn single_file(dir: &Path, ext: &str) -> Result<PathBuf> {
    let files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(ext))
        .collect();
    match files.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!(
            "expected one {ext} file in {}, found {}",
            dir.display(),
            files.len()
        ),
    }
}
