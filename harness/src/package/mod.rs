//! Package readers: turn an APK v2, a .deb or a directory into a stream of entries, verified, with metadata.
//!
//! One file because: `Visitor`, `Entry`, path sanitizing and the tar walker are the one
//! contract every reader (apk, deb, dir) and the extractor share; the readers are beside it.

pub mod apk;
pub mod apkindex;
pub mod deb;
pub mod dir;
pub mod extract;
mod xzblocks;

use std::fs::File;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use serde::Serialize;
use sha1::{Digest, Sha1};

use crate::{limits, Error, Result};

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
    /// The default trust ([`apk::trust::resolve`]): the host's `/etc/apk/keys` when it exists,
    /// else btfgate's bundled Alpine keys (written into the cache once, checked every time).
    fn default() -> Self {
        ReadOptions {
            keys_dir: apk::trust::default_keys_dir(),
            allow_untrusted: false,
        }
    }
}

/// One package to read (a file or a directory) and how it is trusted: a kernel is one or
/// several of these ([`crate::kernel::Kernel::load_set`]).
#[derive(Debug, Clone)]
pub struct Part {
    pub path: PathBuf,
    pub read: ReadOptions,
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

    fn set(&self, v: u64) {
        self.0.store(v, std::sync::atomic::Ordering::Relaxed)
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

/// One member of a tar stream with its GNU long name / long link and PAX records applied
/// (read by [`tar_members`] within [`limits::TAR_EXTENSION`]).
pub(crate) struct TarMember<'e, 'a, R: Read> {
    /// The path as written (not sanitized).
    pub path: PathBuf,
    /// The link target as written, for links.
    pub link: Option<PathBuf>,
    /// The PAX extended header records that described this member.
    pub pax: Option<Vec<u8>>,
    pub entry: &'e mut tar::Entry<'a, R>,
}

/// Hands every member of a tar stream to `f`, in order. The `tar` crate reads a GNU long name,
/// long link or PAX header entry whole, whatever size its header declares; here they are read
/// raw, each within [`limits::TAR_EXTENSION`] (past it: bad input naming the member and the
/// limit), and applied as the crate would (long name, else PAX `path`, else the header).
/// GNU sparse members are refused (not in kernel packages; their extra headers would need
/// the crate's own walk), and so is a PAX `size` that disagrees with the header.
pub(crate) fn tar_members<R: Read>(
    file: &Path,
    phase: &'static str,
    reader: R,
    mut f: impl FnMut(TarMember<'_, '_, R>) -> Result<()>,
) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let bytes_path = |b: &[u8]| PathBuf::from(std::ffi::OsStr::from_bytes(b));
    let mut archive = tar::Archive::new(reader);
    let entries = archive
        .entries()
        .map_err(|e| Error::bad(file, phase, format!("not a tar stream: {e}")))?
        .raw(true);
    let mut long_name: Option<Vec<u8>> = None;
    let mut long_link: Option<Vec<u8>> = None;
    let mut pax: Option<Vec<u8>> = None;
    for entry in entries {
        let mut entry =
            entry.map_err(|e| Error::bad(file, phase, format!("corrupt tar entry: {e}")))?;
        let ty = entry.header().entry_type();
        let slot = match ty {
            tar::EntryType::GNULongName => Some((&mut long_name, "GNU long name")),
            tar::EntryType::GNULongLink => Some((&mut long_link, "GNU long link")),
            tar::EntryType::XHeader => Some((&mut pax, "PAX extended header")),
            _ => None,
        };
        if let Some((slot, what)) = slot {
            if slot.is_some() {
                return Err(Error::bad(
                    file,
                    phase,
                    format!("two {what} entries describe the same member"),
                ));
            }
            *slot = Some(read_extension(file, phase, &mut entry, what)?);
            continue;
        }
        if ty.is_gnu_sparse() {
            return Err(Error::unsupported(
                file,
                phase,
                format!(
                    "GNU sparse tar member {}",
                    String::from_utf8_lossy(&entry.path_bytes())
                ),
            ));
        }
        let records = |key: &[u8]| -> Option<Vec<u8>> {
            let p = pax.as_deref()?;
            tar::PaxExtensions::new(p)
                .filter_map(|r| r.ok())
                .find(|r| r.key_bytes() == key)
                .map(|r| r.value_bytes().to_vec())
        };
        let path = match (long_name.take(), records(b"path")) {
            (Some(mut n), _) => {
                while n.last() == Some(&0) {
                    n.pop();
                }
                bytes_path(&n)
            }
            (None, Some(p)) => bytes_path(&p),
            (None, None) => bytes_path(&entry.header().path_bytes()),
        };
        let link = match (long_link.take(), records(b"linkpath")) {
            (Some(mut n), _) => {
                while n.last() == Some(&0) {
                    n.pop();
                }
                Some(bytes_path(&n))
            }
            (None, Some(p)) => Some(bytes_path(&p)),
            (None, None) => entry.header().link_name_bytes().map(|b| bytes_path(&b)),
        };
        if let Some(size) = records(b"size") {
            let declared = entry.header().entry_size().ok();
            if std::str::from_utf8(&size).ok().and_then(|s| s.parse().ok()) != declared {
                return Err(Error::bad(
                    file,
                    phase,
                    format!(
                        "{}: PAX size {} differs from the header's {declared:?}",
                        path.display(),
                        String::from_utf8_lossy(&size)
                    ),
                ));
            }
        }
        f(TarMember {
            path,
            link,
            pax: pax.take(),
            entry: &mut entry,
        })?;
    }
    if long_name.is_some() || long_link.is_some() || pax.is_some() {
        return Err(Error::bad(
            file,
            phase,
            "the tar stream ends with extended headers describing no member",
        ));
    }
    Ok(())
}

/// The content of a GNU long name / long link / PAX header entry, within [`limits::TAR_EXTENSION`].
fn read_extension<R: Read>(
    file: &Path,
    phase: &'static str,
    entry: &mut tar::Entry<'_, R>,
    what: &str,
) -> Result<Vec<u8>> {
    let limit = limits::TAR_EXTENSION;
    let declared = entry.header().entry_size().unwrap_or(u64::MAX);
    let at = entry.raw_header_position();
    let exceeded = |detail: String| {
        let x = limits::Exceeded::new(limit, detail);
        Error::bad(file, phase, format!("tar header at offset {at}: {x}"))
    };
    if declared > limit.max {
        return Err(exceeded(format!("a {what} of {declared} bytes (declared)")));
    }
    let mut v = Vec::with_capacity(declared as usize);
    limits::Limited::new(&mut *entry, limit, what.to_string())
        .read_to_end(&mut v)
        .map_err(|e| match limits::exceeded(&e) {
            Some(x) => exceeded(x.detail.clone()),
            None => Error::bad(
                file,
                phase,
                format!("tar header at offset {at}: {what}: {e}"),
            ),
        })?;
    Ok(v)
}

/// Walks a tar stream ([`tar_members`]), sanitizing paths, checking links (and APK checksums
/// when asked), and hands every entry to `visitor`. File contents not consumed by the visitor
/// are drained.
pub(crate) fn walk_tar(
    file: &Path,
    phase: &'static str,
    reader: impl Read,
    walk: TarWalk,
    visitor: &mut dyn Visitor,
) -> Result<()> {
    tar_members(file, phase, reader, |m| {
        let TarMember {
            path: raw_path,
            link,
            pax,
            entry,
        } = m;
        let path = sanitize_path(file, &raw_path)?;
        if path.as_os_str().is_empty() {
            return Ok(()); // "./" itself
        }
        let ty = entry.header().entry_type();
        let kind = if ty.is_dir() {
            EntryKind::Dir
        } else if ty.is_symlink() || ty.is_hard_link() {
            let target = link.ok_or_else(|| {
                Error::bad(
                    file,
                    phase,
                    format!("link {} without a target", path.display()),
                )
            })?;
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
            apk_checksum(file, &path, pax.as_deref())?
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
                    inner: &mut *entry,
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
                visitor.visit(&ent, &mut *entry)?;
                std::io::copy(&mut *entry, &mut std::io::sink()).map_err(|e| {
                    Error::bad(file, phase, format!("read {}: {e}", ent.path.display()))
                })?;
            }
        }
        Ok(())
    })?;
    visitor.end(walk.packed.as_ref().map(PackedPos::get))
}

/// The `APK-TOOLS.checksum.SHA1` PAX value of a tar entry, decoded.
fn apk_checksum(file: &Path, path: &Path, pax: Option<&[u8]>) -> Result<Option<Vec<u8>>> {
    let Some(pax) = pax else {
        return Ok(None);
    };
    for ext in tar::PaxExtensions::new(pax) {
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

    /// What a walk hands out: (path, content).
    struct Seen(Vec<(PathBuf, Vec<u8>)>);

    impl Visitor for Seen {
        fn visit(&mut self, e: &Entry, data: &mut dyn Read) -> Result<()> {
            let mut v = Vec::new();
            data.read_to_end(&mut v)
                .map_err(|x| Error::io(Path::new("t.tar"), "test", x))?;
            self.0.push((e.path.clone(), v));
            Ok(())
        }
    }

    fn walk(tar: &[u8]) -> Result<Vec<(PathBuf, Vec<u8>)>> {
        let mut seen = Seen(Vec::new());
        walk_tar(
            Path::new("t.tar"),
            "walk",
            tar,
            TarWalk::default(),
            &mut seen,
        )?;
        Ok(seen.0)
    }

    fn header(kind: tar::EntryType, size: u64, path: &str) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_path(path).unwrap();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(0o644);
        h.set_cksum();
        h
    }

    /// Raw iteration applies GNU long names and PAX `path` records as the `tar` crate does.
    #[test]
    fn long_names_and_pax_paths_name_the_next_member() {
        let long = format!("lib/modules/6.1/{}/x.ko", "d".repeat(120));
        let mut b = tar::Builder::new(Vec::new());
        let mut h = header(tar::EntryType::Regular, 3, "x");
        b.append_data(&mut h, &long, &b"abc"[..]).unwrap();
        b.append_pax_extensions([("path", &b"boot/from-pax"[..])])
            .unwrap();
        let mut h = header(tar::EntryType::Regular, 1, "boot/short");
        b.append(&h, &b"z"[..]).unwrap();
        h.set_path("boot/plain").unwrap();
        h.set_cksum();
        b.append(&h, &b"y"[..]).unwrap();
        let seen = walk(&b.into_inner().unwrap()).unwrap();
        let paths: Vec<String> = seen.iter().map(|(p, _)| p.display().to_string()).collect();
        assert_eq!(paths, [long.as_str(), "boot/from-pax", "boot/plain"]);
        assert_eq!(seen[0].1, b"abc");
    }

    /// An extended header past its limit is refused by its declared size before a byte of it
    /// is read; two for one member, one for no member, a GNU sparse member and a PAX size
    /// that disagrees with the header are refused too.
    #[test]
    fn extended_headers_are_bounded_and_must_describe_one_member() {
        let ext = |kind, size: u64| {
            let mut t = header(kind, size, "././@LongLink").as_bytes().to_vec();
            t.resize(512 + (size as usize).div_ceil(512) * 512, b'n');
            t
        };
        let file = |path: &str| {
            let mut t = header(tar::EntryType::Regular, 0, path).as_bytes().to_vec();
            t.extend_from_slice(&[0u8; 1024]);
            t
        };
        let big = limits::TAR_EXTENSION.max + 1;
        for kind in [
            tar::EntryType::GNULongName,
            tar::EntryType::GNULongLink,
            tar::EntryType::XHeader,
        ] {
            let e = walk(&[ext(kind, big), file("boot/x")].concat()).unwrap_err();
            assert!(
                matches!(e, Error::BadInput { .. })
                    && e.to_string().contains("harness::limits::TAR_EXTENSION"),
                "{e}"
            );
        }
        let two = [
            ext(tar::EntryType::GNULongName, 10),
            ext(tar::EntryType::GNULongName, 10),
            file("boot/x"),
        ]
        .concat();
        assert!(walk(&two)
            .unwrap_err()
            .to_string()
            .contains("two GNU long name"));
        let mut dangling = ext(tar::EntryType::GNULongName, 10);
        dangling.extend_from_slice(&[0u8; 1024]);
        assert!(walk(&dangling)
            .unwrap_err()
            .to_string()
            .contains("describing no member"));
        let mut sparse = header(tar::EntryType::GNUSparse, 0, "boot/x")
            .as_bytes()
            .to_vec();
        sparse.extend_from_slice(&[0u8; 1024]);
        assert!(matches!(
            walk(&sparse).unwrap_err(),
            Error::Unsupported { .. }
        ));
        let record = b"9 size=5\n";
        let mut pax = header(tar::EntryType::XHeader, record.len() as u64, "PaxHeaders/x")
            .as_bytes()
            .to_vec();
        pax.extend_from_slice(record);
        pax.resize(1024, 0);
        let e = walk(&[pax, file("boot/x")].concat()).unwrap_err();
        assert!(e.to_string().contains("PAX size 5"), "{e}");
    }
}
