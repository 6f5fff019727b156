//! Unpacks selected entries of a package into a directory, never outside it: paths were
//! sanitized by the readers, and links are re-checked against the destination root.

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

use super::{check_link_target, Entry, EntryKind, PackageMeta, ReadOptions, Visitor};
use crate::{Error, Result};

const PHASE: &str = "extract package";

/// Extracts the entries of `package` for which `keep` returns true into `dest` (created if
/// missing). Returns the package metadata and the list of extracted paths (relative).
pub fn extract(
    package: &Path,
    opts: &ReadOptions,
    dest: &Path,
    keep: &dyn Fn(&Path) -> bool,
) -> Result<(PackageMeta, Vec<PathBuf>)> {
    fs::create_dir_all(dest).map_err(|e| Error::io(dest, PHASE, e))?;
    let mut x = Extractor {
        package,
        dest,
        keep,
        written: Vec::new(),
    };
    let meta = super::read(package, opts, &mut x)?;
    Ok((meta, x.written))
}

struct Extractor<'a> {
    package: &'a Path,
    dest: &'a Path,
    keep: &'a dyn Fn(&Path) -> bool,
    written: Vec<PathBuf>,
}

impl Extractor<'_> {
    fn parent_dir(&self, rel: &Path) -> Result<PathBuf> {
        let out = self.dest.join(rel);
        if let Some(parent) = out.parent() {
            fs::create_dir_all(parent).map_err(|e| Error::io(parent, PHASE, e))?;
        }
        Ok(out)
    }
}

impl Visitor for Extractor<'_> {
    fn visit(&mut self, entry: &Entry, data: &mut dyn Read) -> Result<()> {
        if !(self.keep)(&entry.path) {
            return Ok(());
        }
        match &entry.kind {
            EntryKind::Dir => {
                let d = self.dest.join(&entry.path);
                fs::create_dir_all(&d).map_err(|e| Error::io(&d, PHASE, e))?;
            }
            EntryKind::File => {
                let out = self.parent_dir(&entry.path)?;
                let mut f = File::create(&out).map_err(|e| Error::io(&out, PHASE, e))?;
                std::io::copy(data, &mut f).map_err(|e| {
                    Error::bad(
                        self.package,
                        PHASE,
                        format!("write {}: {e}", entry.path.display()),
                    )
                })?;
            }
            EntryKind::Symlink(target) => {
                check_link_target(self.package, &entry.path, target, false)?;
                let out = self.parent_dir(&entry.path)?;
                let _ = fs::remove_file(&out);
                std::os::unix::fs::symlink(target, &out).map_err(|e| Error::io(&out, PHASE, e))?;
            }
            EntryKind::Hardlink(target) => {
                let out = self.parent_dir(&entry.path)?;
                let src = self.dest.join(target);
                fs::hard_link(&src, &out).map_err(|e| Error::io(&out, PHASE, e))?;
            }
            EntryKind::Other => return Ok(()),
        }
        self.written.push(entry.path.clone());
        Ok(())
    }
}
