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
    // Not made again once an interrupt is removing it (a caller's temporary directory).
    crate::scratch::creating(|| fs::create_dir_all(dest)).map_err(|e| Error::io(dest, PHASE, e))?;
    let root = fs::canonicalize(dest).map_err(|e| Error::io(dest, PHASE, e))?;
    let mut x = Extractor {
        package,
        dest,
        root,
        keep,
        written: Vec::new(),
    };
    let meta = super::read(package, opts, &mut x)?;
    Ok((meta, x.written))
}

struct Extractor<'a> {
    package: &'a Path,
    dest: &'a Path,
    /// `dest`, canonical: where links already extracted may lead.
    root: PathBuf,
    keep: &'a dyn Fn(&Path) -> bool,
    written: Vec<PathBuf>,
}

impl Extractor<'_> {
    /// Refuses `rel` when a directory on its way is a link already extracted that leads out
    /// of the destination (an absolute target is legal in a package: it resolves inside the
    /// root once installed, but here it resolves on this host): nothing is written through it.
    fn check_path(&self, rel: &Path) -> Result<()> {
        let mut at = self.dest.to_path_buf();
        for c in rel.parent().into_iter().flat_map(Path::components) {
            at.push(c);
            match fs::symlink_metadata(&at) {
                Ok(m) if m.file_type().is_symlink() => {
                    if !fs::canonicalize(&at).is_ok_and(|p| p.starts_with(&self.root)) {
                        return Err(Error::bad(
                            self.package,
                            PHASE,
                            format!(
                                "refusing {}: {} is a link leading out of the destination",
                                rel.display(),
                                at.strip_prefix(self.dest).unwrap_or(&at).display()
                            ),
                        ));
                    }
                }
                Ok(_) => {}
                Err(_) => break, // not there yet: created as a directory
            }
        }
        Ok(())
    }

    /// Removes what an earlier entry left at `out` (a link is replaced, never written through).
    fn replace(&self, out: &Path) -> Result<()> {
        match fs::symlink_metadata(out) {
            Ok(m) if !m.is_dir() => fs::remove_file(out).map_err(|e| Error::io(out, PHASE, e)),
            _ => Ok(()),
        }
    }

    fn parent_dir(&self, rel: &Path) -> Result<PathBuf> {
        self.check_path(rel)?;
        self.make_dirs(rel.parent().unwrap_or(Path::new("")))?;
        Ok(self.dest.join(rel))
    }

    /// Creates directory `rel` under `dest` one level at a time, never `dest` itself: when an
    /// interrupt removes the destination, this fails instead of creating it again.
    fn make_dirs(&self, rel: &Path) -> Result<()> {
        if crate::scratch::interrupted() {
            return Err(Error::bad(self.package, PHASE, "interrupted"));
        }
        let mut at = self.dest.to_path_buf();
        for c in rel.components() {
            at.push(c);
            match fs::create_dir(&at) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::io(&at, PHASE, e)),
            }
        }
        Ok(())
    }
}

impl Visitor for Extractor<'_> {
    fn visit(&mut self, entry: &Entry, data: &mut dyn Read) -> Result<()> {
        if !(self.keep)(&entry.path) {
            return Ok(());
        }
        match &entry.kind {
            EntryKind::Dir => {
                self.check_path(&entry.path)?;
                self.make_dirs(&entry.path)?;
            }
            EntryKind::File => {
                let out = self.parent_dir(&entry.path)?;
                self.replace(&out)?;
                // create_new: O_EXCL, which never follows a link.
                let mut f = File::create_new(&out).map_err(|e| Error::io(&out, PHASE, e))?;
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
                self.replace(&out)?;
                std::os::unix::fs::symlink(target, &out).map_err(|e| Error::io(&out, PHASE, e))?;
            }
            EntryKind::Hardlink(target) => {
                self.check_path(target)?;
                let out = self.parent_dir(&entry.path)?;
                self.replace(&out)?;
                let src = self.dest.join(target);
                fs::hard_link(&src, &out).map_err(|e| Error::io(&out, PHASE, e))?;
            }
            EntryKind::Other => return Ok(()),
        }
        self.written.push(entry.path.clone());
        Ok(())
    }
}
