//! Package readers: turn an APK v2, a .deb or a directory into a stream of entries, verified, with metadata.

pub mod apk;
pub mod apkindex;
pub mod deb;
pub mod dir;
pub mod extract;

use std::fs::File;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use serde::Serialize;
use sha1::{Digest, Sha1};

use crate::{Error, Result};

/// Container format of a package.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Apk,
    Deb,
    Dir,
}

/// What a package says about itself.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PackageMeta {
    pub name: String,
    pub version: String,
    pub arch: String,
    /// Installed size in bytes, as declared by the package (`size` in `.PKGINFO`,
    /// `Installed-Size` × 1024 in a .deb, the sum of file sizes for a directory).
    pub installed_size: Option<u64>,
    /// Size of the package file itself (sum of file sizes for a directory).
    pub file_size: u64,
    /// Key that signed the package, when it was signed and verified.
    pub signer: Option<String>,
    /// Compression of the solid data member (a .deb's data.tar.xz, an APK's gzip data member).
    pub data_codec: Option<crate::codec::Codec>,
}

/// Kind of an entry in a package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    /// Symbolic link with its target as written in the package.
    Symlink(PathBuf),
    /// Hard link to another entry (path relative to the package root).
    Hardlink(PathBuf),
    /// Devices, fifos and the like: listed, never read.
    Other,
}

/// One entry of a package, with a path already checked to stay inside the package root.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Relative path inside the package, without `./`, never absolute, never containing `..`.
    pub path: PathBuf,
    pub kind: EntryKind,
    /// Content size in bytes (0 for non-files).
    pub size: u64,
    /// For entries of a solid compressed container (a .deb's data.tar.xz), the compressed bytes
    /// consumed when this entry started: differences between entries price each entry.
    pub packed_offset: Option<u64>,
}

/// Receives the entries of a package in archive order. `data` yields the content of files;
/// the visitor may read all, part or none of it.
pub trait Visitor {
    fn visit(&mut self, entry: &Entry, data: &mut dyn Read) -> Result<()>;
    /// Called once after the last entry, with the container's final compressed offset.
    fn end(&mut self, _packed_end: Option<u64>) -> Result<()> {
        Ok(())
    }
}

/// How packages are trusted.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// Directory holding trusted public keys, named as in `.SIGN.RSA.<keyid>`.
    pub keys_dir: PathBuf,
    /// Accept packages that are unsigned or signed by an unknown key.
    pub allow_untrusted: bool,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            keys_dir: PathBuf::from("/etc/apk/keys"),
            allow_untrusted: false,
        }
    }
}

/// Detects the format of `path` from its first bytes (or it being a directory).
pub fn detect(path: &Path) -> Result<Format> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, "open package", e))?;
    if meta.is_dir() {
        return Ok(Format::Dir);
    }
    let mut magic = [0u8; 8];
    let mut f = File::open(path).map_err(|e| Error::io(path, "open package", e))?;
    let n = read_up_to(&mut f, &mut magic).map_err(|e| Error::io(path, "open package", e))?;
    let magic = &magic[..n];
    if magic.starts_with(b"!<arch>\n") {
        Ok(Format::Deb)
    } else if magic.starts_with(&[0x1f, 0x8b]) {
        Ok(Format::Apk)
    } else if magic.starts_with(b"ADB") {
        Err(Error::unsupported(
            path,
            "detect package format",
            "APK v3 (ADB) packages are not supported; btfgate reads APK v2 (gzip), .deb and directories",
        ))
    } else {
        Err(Error::bad(
            path,
            "detect package format",
            format!(
                "expected an APK v2 (gzip magic 1f 8b), a .deb (!<arch>) or a directory, found bytes {}",
                hex::encode(magic)
            ),
        ))
    }
}

/// Reads the package at `path`, streaming every entry to `visitor`, and returns its metadata.
pub fn read(path: &Path, opts: &ReadOptions, visitor: &mut dyn Visitor) -> Result<PackageMeta> {
    match detect(path)? {
        Format::Apk => apk::read(path, opts, visitor),
        Format::Deb => deb::read(path, visitor),
        Format::Dir => dir::read(path, visitor),
    }
}

/// Reads until `buf` is full or EOF; returns the number of bytes read.
pub(crate) fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Normalizes an archive path: strips `./`, refuses absolute paths and `..`.
pub fn sanitize_path(file: &Path, raw: &Path) -> Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::CurDir => {}
            Component::Normal(p) => out.push(p),
            Component::RootDir | Component::Prefix(_) => {
                return Err(Error::bad(
                    file,
                    "read entry path",
                    format!("refusing absolute entry path {}", raw.display()),
                ))
            }
            Component::ParentDir => {
                return Err(Error::bad(
                    file,
                    "read entry path",
                    format!("refusing entry path with '..': {}", raw.display()),
                ))
            }
        }
    }
    Ok(out)
}

/// Refuses a link at `entry` (relative, sanitized) whose target leaves the package root.
/// Absolute targets are read relative to the package root, as they resolve once installed.
pub fn check_link_target(file: &Path, entry: &Path, target: &Path, hard: bool) -> Result<()> {
    let mut depth: Vec<&std::ffi::OsStr> = Vec::new();
    if !hard && !target.is_absolute() {
        if let Some(parent) = entry.parent() {
            for c in parent.components() {
                if let Component::Normal(p) = c {
                    depth.push(p);
                }
            }
        }
    }
    for c in target.components() {
        match c {
            Component::RootDir | Component::Prefix(_) => depth.clear(),
            Component::CurDir => {}
            Component::Normal(p) => depth.push(p),
            Component::ParentDir => {
                if depth.pop().is_none() {
                    return Err(Error::bad(
                        file,
                        "read entry link",
                        format!(
                            "refusing link {} -> {}: target escapes the package root",
                            entry.display(),
                            target.display()
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Options of the shared tar walker.
#[derive(Debug, Clone, Default)]
pub(crate) struct TarWalk {
    /// Verify `APK-TOOLS.checksum.SHA1` PAX headers (APK data members).
    pub apk_checksums: bool,
    /// Compressed bytes of the container consumed so far, reported in [`Entry::packed_offset`].
    pub packed: Option<PackedPos>,
}

/// A shared count of compressed bytes read from a container (see [`CountingReader`]).
#[derive(Debug, Clone, Default)]
pub struct PackedPos(std::sync::Arc<std::sync::atomic::AtomicU64>);

impl PackedPos {
    pub fn get(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Counts the bytes read through it into a [`PackedPos`].
pub struct CountingReader<R> {
    inner: R,
    pos: PackedPos,
}

impl<R: Read> CountingReader<R> {
    pub fn new(inner: R) -> (Self, PackedPos) {
        let pos = PackedPos::default();
        (
            CountingReader {
                inner,
                pos: pos.clone(),
            },
            pos,
        )
    }
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pos
            .0
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}

/// Walks a tar stream, sanitizing paths, checking links (and APK checksums when asked), and
/// hands every entry to `visitor`. File contents not consumed by the visitor are drained.
pub(crate) fn walk_tar(
    file: &Path,
    phase: &'static str,
    reader: impl Read,
    walk: TarWalk,
    visitor: &mut dyn Visitor,
) -> Result<()> {
    let mut archive = tar::Archive::new(reader);
    let entries = archive
        .entries()
        .map_err(|e| Error::bad(file, phase, format!("not a tar stream: {e}")))?;
    for entry in entries {
        let mut entry =
            entry.map_err(|e| Error::bad(file, phase, format!("corrupt tar entry: {e}")))?;
        let raw_path = entry
            .path()
            .map_err(|e| Error::bad(file, phase, format!("tar entry path: {e}")))?
            .into_owned();
        let path = sanitize_path(file, &raw_path)?;
        if path.as_os_str().is_empty() {
            continue; // "./" itself
        }
        let ty = entry.header().entry_type();
        let kind = if ty.is_dir() {
            EntryKind::Dir
        } else if ty.is_symlink() || ty.is_hard_link() {
            let target = entry
                .link_name()
                .map_err(|e| {
                    Error::bad(file, phase, format!("link name of {}: {e}", path.display()))
                })?
                .ok_or_else(|| {
                    Error::bad(
                        file,
                        phase,
                        format!("link {} without a target", path.display()),
                    )
                })?
                .into_owned();
            check_link_target(file, &path, &target, ty.is_hard_link())?;
            if ty.is_hard_link() {
                EntryKind::Hardlink(sanitize_path(file, &target)?)
            } else {
                EntryKind::Symlink(target)
            }
        } else if ty.is_file() || ty == tar::EntryType::Continuous {
            EntryKind::File
        } else {
            EntryKind::Other
        };
        let expected_sha1 = if walk.apk_checksums {
            apk_checksum(file, &path, &mut entry)?
        } else {
            None
        };
        let size = if kind == EntryKind::File {
            entry.size()
        } else {
            0
        };
        let packed_offset = walk.packed.as_ref().map(PackedPos::get);
        let ent = Entry {
            path,
            kind,
            size,
            packed_offset,
        };
        match (&ent.kind, expected_sha1) {
            (EntryKind::File, Some(expected)) => {
                let mut hashing = HashingReader {
                    inner: &mut entry,
                    hasher: Sha1::new(),
                };
                visitor.visit(&ent, &mut hashing)?;
                std::io::copy(&mut hashing, &mut std::io::sink()).map_err(|e| {
                    Error::bad(file, phase, format!("read {}: {e}", ent.path.display()))
                })?;
                let got = hashing.hasher.finalize();
                if got.as_slice() != expected.as_slice() {
                    return Err(Error::bad(
                        file,
                        "verify data checksum",
                        format!(
                            "{}: APK-TOOLS.checksum.SHA1 says {}, content hashes to {}",
                            ent.path.display(),
                            hex::encode(&expected),
                            hex::encode(got)
                        ),
                    ));
                }
            }
            (EntryKind::Symlink(target), Some(expected)) => {
                let got = Sha1::digest(target.as_os_str().as_encoded_bytes());
                if got.as_slice() != expected.as_slice() {
                    return Err(Error::bad(
                        file,
                        "verify data checksum",
                        format!("{}: symlink target checksum mismatch", ent.path.display()),
                    ));
                }
                visitor.visit(&ent, &mut std::io::empty())?;
            }
            (EntryKind::File, None) if walk.apk_checksums => {
                return Err(Error::bad(
                    file,
                    "verify data checksum",
                    format!(
                        "{}: no APK-TOOLS.checksum.SHA1 PAX header",
                        ent.path.display()
                    ),
                ));
            }
            _ => {
                visitor.visit(&ent, &mut entry)?;
                std::io::copy(&mut entry, &mut std::io::sink()).map_err(|e| {
                    Error::bad(file, phase, format!("read {}: {e}", ent.path.display()))
                })?;
            }
        }
    }
    visitor.end(walk.packed.as_ref().map(PackedPos::get))
}

/// The `APK-TOOLS.checksum.SHA1` PAX value of a tar entry, decoded.
fn apk_checksum<R: Read>(
    file: &Path,
    path: &Path,
    entry: &mut tar::Entry<'_, R>,
) -> Result<Option<Vec<u8>>> {
    let Some(exts) = entry
        .pax_extensions()
        .map_err(|e| Error::bad(file, "read pax header", format!("{}: {e}", path.display())))?
    else {
        return Ok(None);
    };
    for ext in exts {
        let ext = ext
            .map_err(|e| Error::bad(file, "read pax header", format!("{}: {e}", path.display())))?;
        if ext.key_bytes() == b"APK-TOOLS.checksum.SHA1" {
            let v = hex::decode(ext.value_bytes()).map_err(|e| {
                Error::bad(
                    file,
                    "read pax header",
                    format!("{}: bad APK-TOOLS.checksum.SHA1: {e}", path.display()),
                )
            })?;
            return Ok(Some(v));
        }
    }
    Ok(None)
}

struct HashingReader<'a, R: Read> {
    inner: &'a mut R,
    hasher: Sha1,
}

impl<R: Read> Read for HashingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_strips_dot_and_refuses_escapes() {
        let f = Path::new("p");
        assert_eq!(
            sanitize_path(f, Path::new("./boot/x")).unwrap(),
            PathBuf::from("boot/x")
        );
        assert!(sanitize_path(f, Path::new("/etc/passwd")).is_err());
        assert!(sanitize_path(f, Path::new("lib/../../x")).is_err());
    }

    #[test]
    fn links_may_not_escape() {
        let f = Path::new("p");
        let e = Path::new("lib/modules/6.1/vmlinuz");
        assert!(check_link_target(f, e, Path::new("/boot/vmlinuz-virt"), false).is_ok());
        assert!(check_link_target(f, e, Path::new("../../../boot/x"), false).is_ok());
        assert!(check_link_target(f, e, Path::new("../../../../x"), false).is_err());
        assert!(check_link_target(f, e, Path::new("/../x"), false).is_err());
        assert!(check_link_target(f, e, Path::new("../x"), true).is_err());
    }
}
