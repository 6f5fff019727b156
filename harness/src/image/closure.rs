//! The shared-library closure of a host binary (ELF `DT_NEEDED`, resolved like ld.so with
//! lddtree), as image nodes at the paths the guest's loader will search.

use std::path::{Path, PathBuf};

use super::initramfs::{Node, Source};

/// `tool` at its own path, its interpreter, and every library it needs.
pub fn nodes(tool: &Path) -> crate::Result<Vec<Node>> {
    let tree = lddtree::DependencyAnalyzer::new(PathBuf::from("/"))
        .analyze(tool)
        .map_err(|e| crate::Error::bad(tool, "resolve the libraries", e.to_string()))?;
    let rel = |p: &Path| p.to_string_lossy().trim_start_matches('/').to_string();
    let mut out = vec![Node::file(
        &rel(tool),
        0o755,
        Source::Host(tool.to_path_buf()),
    )];
    if let Some(interp) = &tree.interpreter {
        let p = Path::new(interp);
        out.push(Node::file(&rel(p), 0o755, Source::Host(real(p))));
    }
    for (name, lib) in &tree.libraries {
        if !lib.found() {
            return Err(crate::Error::bad(
                tool,
                "resolve the libraries",
                format!("library {name} not found on the host"),
            ));
        }
        let src = lib.realpath.clone().unwrap_or_else(|| lib.path.clone());
        out.push(Node::file(&rel(&lib.path), 0o755, Source::Host(src)));
    }
    Ok(out)
}

fn real(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}
