//! Uncompressed newc cpio archives (under TCG every byte the guest decompresses is slow), with
//! their content key: sha256 over every path, mode and content that goes in.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Where a file's content comes from.
#[derive(Debug, Clone)]
pub enum Source {
    Host(PathBuf),
    Bytes(Vec<u8>),
}

/// One entry of the archive (directories are implied by file paths).
#[derive(Debug, Clone)]
pub enum Node {
    File {
        path: String,
        mode: u32,
        source: Source,
    },
    Symlink {
        path: String,
        target: String,
    },
}

impl Node {
    pub fn file(path: &str, mode: u32, source: Source) -> Node {
        Node::File {
            path: path.trim_start_matches('/').to_string(),
            mode,
            source,
        }
    }
    pub fn path(&self) -> &str {
        match self {
            Node::File { path, .. } | Node::Symlink { path, .. } => path,
        }
    }
}

/// Sorts by path and keeps the last node for each path.
pub fn normalize(nodes: Vec<Node>) -> Vec<Node> {
    let mut by_path: BTreeMap<String, Node> = BTreeMap::new();
    for n in nodes {
        by_path.insert(n.path().to_string(), n);
    }
    by_path.into_values().collect()
}

fn read_source(s: &Source) -> crate::Result<Vec<u8>> {
    match s {
        Source::Bytes(b) => Ok(b.clone()),
        Source::Host(p) => std::fs::read(p).map_err(|e| crate::Error::io(p, "initramfs", e)),
    }
}

/// The content key of an archive: sha256 over (path, mode, sha256 of content) of every node.
pub fn key(nodes: &[Node]) -> crate::Result<String> {
    let mut h = Sha256::new();
    for n in nodes {
        match n {
            Node::File { path, mode, source } => {
                let content = match source {
                    Source::Bytes(b) => hex::encode(Sha256::digest(b)),
                    Source::Host(p) => crate::hash::sha256_file_memo(p)?,
                };
                h.update(format!("F {path} {mode:o} ").as_bytes());
                h.update(content.as_bytes());
            }
            Node::Symlink { path, target } => h.update(format!("L {path} {target}\n").as_bytes()),
        }
    }
    Ok(hex::encode(h.finalize()))
}

/// Writes the archive to `out` (through a temporary file renamed at the end).
pub fn write(nodes: &[Node], out: &Path) -> crate::Result<()> {
    let tmp = out.with_extension(format!("tmp{}", std::process::id()));
    // Removed by an interrupt while it is being written.
    let created = crate::scratch::Scratch::create(|| Ok((File::create(&tmp)?, tmp.clone())))
        .map_err(|e| crate::Error::io(&tmp, "initramfs", e))?;
    let result = (|| {
        // `&File` writes: the registered file itself, no second descriptor.
        let mut w = BufWriter::new(&*created);
        let mut dirs: Vec<String> = Vec::new();
        let mut ino = 1u32;
        let err = |e: std::io::Error| crate::Error::io(&tmp, "initramfs", e);
        for n in nodes {
            // Parent directories first, once.
            let p = Path::new(n.path());
            let mut parents: Vec<String> = p
                .ancestors()
                .skip(1)
                .filter(|a| !a.as_os_str().is_empty())
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            parents.reverse();
            for d in parents {
                if !dirs.contains(&d) {
                    w = cpio::NewcBuilder::new(&d)
                        .ino(ino)
                        .mode(0o040755)
                        .nlink(2)
                        .write(w, 0)
                        .finish()
                        .map_err(err)?;
                    ino += 1;
                    dirs.push(d);
                }
            }
            match n {
                Node::File { path, mode, source } => {
                    let data = read_source(source)?;
                    let mut fw = cpio::NewcBuilder::new(path)
                        .ino(ino)
                        .mode(0o100000 | mode)
                        .nlink(1)
                        .write(w, data.len() as u32);
                    fw.write_all(&data).map_err(err)?;
                    w = fw.finish().map_err(err)?;
                }
                Node::Symlink { path, target } => {
                    let mut fw = cpio::NewcBuilder::new(path)
                        .ino(ino)
                        .mode(0o120777)
                        .nlink(1)
                        .write(w, target.len() as u32);
                    fw.write_all(target.as_bytes()).map_err(err)?;
                    w = fw.finish().map_err(err)?;
                }
            }
            ino += 1;
        }
        let w = cpio::newc::trailer(w).map_err(err)?;
        w.into_inner()
            .map_err(|e| crate::Error::io(&tmp, "initramfs", e.into_error()))?
            .sync_all()
            .map_err(err)?;
        std::fs::rename(&tmp, out).map_err(|e| crate::Error::io(out, "initramfs", e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_lists_dirs_files_and_links() {
        let d = tempfile::tempdir().unwrap();
        let nodes = normalize(vec![
            Node::file("a/b/c.txt", 0o644, Source::Bytes(b"hello".to_vec())),
            Node::Symlink {
                path: "a/link".into(),
                target: "b/c.txt".into(),
            },
            Node::file("init", 0o755, Source::Bytes(b"#!/bin/sh\n".to_vec())),
        ]);
        let out = d.path().join("x.cpio");
        write(&nodes, &out).unwrap();
        let mut names = Vec::new();
        let mut r = File::open(&out).unwrap();
        loop {
            let e = cpio::NewcReader::new(r).unwrap();
            if e.entry().is_trailer() {
                break;
            }
            names.push((e.entry().name().to_string(), e.entry().mode()));
            r = e.finish().unwrap();
        }
        assert_eq!(
            names,
            vec![
                ("a".to_string(), 0o040755),
                ("a/b".to_string(), 0o040755),
                ("a/b/c.txt".to_string(), 0o100644),
                ("a/link".to_string(), 0o120777),
                ("init".to_string(), 0o100755),
            ]
        );
        let k1 = key(&nodes).unwrap();
        let mut changed = nodes.clone();
        changed[0] = Node::file("a/b/c.txt", 0o644, Source::Bytes(b"hellO".to_vec()));
        assert_ne!(k1, key(&changed).unwrap());
    }
}
