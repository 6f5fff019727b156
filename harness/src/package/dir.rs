//! A directory laid out like an installed package (`boot/`, `lib/modules/<release>/`).

use std::fs::File;
use std::path::{Path, PathBuf};

use super::{check_link_target, Entry, EntryKind, PackageMeta, Visitor};
use crate::{Error, Result};

const PHASE: &str = "walk package directory";

/// Walks `root` in sorted order, handing every entry to `visitor`. Symlinks are reported, never
/// followed; ones whose target leaves `root` are refused.
pub fn read(root: &Path, visitor: &mut dyn Visitor) -> Result<PackageMeta> {
    let mut total = 0u64;
    walk(root, root, Path::new(""), visitor, &mut total)?;
    visitor.end(None)?;
    let name = root
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| root.display().to_string());
    Ok(PackageMeta {
        name,
        version: String::new(),
        arch: String::new(),
        installed_size: Some(total),
        file_size: total,
        signer: None,
        data_codec: None,
    })
}

fn walk(
    root: &Path,
    dir: &Path,
    rel: &Path,
    visitor: &mut dyn Visitor,
    total: &mut u64,
) -> Result<()> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, PHASE, e))?
        .map(|e| e.map(|e| PathBuf::from(e.file_name())))
        .collect::<std::io::Result<_>>()
        .map_err(|e| Error::io(dir, PHASE, e))?;
    names.sort();
    for name in names {
        let full = dir.join(&name);
        let rel = rel.join(&name);
        let md = std::fs::symlink_metadata(&full).map_err(|e| Error::io(&full, PHASE, e))?;
        let ft = md.file_type();
        if ft.is_symlink() {
            let target = std::fs::read_link(&full).map_err(|e| Error::io(&full, PHASE, e))?;
            check_link_target(root, &rel, &target, false)?;
            let entry = Entry {
                path: rel,
                kind: EntryKind::Symlink(target),
                size: 0,
                packed_offset: None,
            };
            visitor.visit(&entry, &mut std::io::empty())?;
        } else if ft.is_dir() {
            let entry = Entry {
                path: rel.clone(),
                kind: EntryKind::Dir,
                size: 0,
                packed_offset: None,
            };
            visitor.visit(&entry, &mut std::io::empty())?;
            walk(root, &full, &rel, visitor, total)?;
        } else if ft.is_file() {
            *total += md.len();
            let mut f = File::open(&full).map_err(|e| Error::io(&full, PHASE, e))?;
            let entry = Entry {
                path: rel,
                kind: EntryKind::File,
                size: md.len(),
                packed_offset: None,
            };
            visitor.visit(&entry, &mut f)?;
        } else {
            let entry = Entry {
                path: rel,
                kind: EntryKind::Other,
                size: 0,
                packed_offset: None,
            };
            visitor.visit(&entry, &mut std::io::empty())?;
        }
    }
    Ok(())
}
