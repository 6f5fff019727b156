//! Debian `.deb`: an `ar` archive of `debian-binary`, `control.tar.*` and `data.tar.*`.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use super::{tar_members, walk_tar, CountingReader, PackageMeta, TarWalk, Visitor};
use crate::codec::Codec;
use crate::limits::{self, Limited};
use crate::{Error, Result};

const PHASE_AR: &str = "read deb ar archive";

/// Codec of a `control.tar.*` / `data.tar.*` member, from its name.
fn member_codec(file: &Path, name: &str) -> Result<Codec> {
    let ext = name.rsplit_once(".tar").map(|(_, e)| e).unwrap_or("");
    match ext {
        "" => Ok(Codec::None),
        ".xz" => Ok(Codec::Xz),
        ".zst" => Ok(Codec::Zstd),
        ".gz" => Ok(Codec::Gzip),
        other => Err(Error::unsupported(
            file,
            PHASE_AR,
            format!("member {name}: compression {other} (expected .xz, .zst or .gz)"),
        )),
    }
}

/// One `ar` member header.
struct ArMember {
    name: String,
    size: u64,
    /// Offset of the member's data in the file.
    offset: u64,
}

/// Reads the `ar` member header at `offset` (`None` at the end of the file). A .deb's members
/// have plain names (deb(5)): the GNU name table (`//`), symbol table (`/`) and BSD long names
/// (`#1/…`), which `ar` readers load whole whatever size they declare, are refused.
fn ar_header(file: &Path, r: &mut BufReader<File>, offset: u64) -> Result<Option<ArMember>> {
    let mut h = [0u8; 60];
    let n = super::read_up_to(r, &mut h).map_err(|e| Error::io(file, PHASE_AR, e))?;
    if n == 0 {
        return Ok(None);
    }
    if n < h.len() || &h[58..60] != b"`\n" {
        return Err(Error::bad(
            file,
            PHASE_AR,
            format!("corrupt ar member header at offset {offset}"),
        ));
    }
    let raw = String::from_utf8_lossy(&h[..16]);
    let name = raw.trim_end_matches(' ');
    if name.starts_with('/') || name.starts_with("#1/") {
        return Err(Error::unsupported(
            file,
            PHASE_AR,
            format!(
                "ar member {name:?} at offset {offset}: a .deb's members have plain names (no GNU or BSD long-name tables)"
            ),
        ));
    }
    let name = name.strip_suffix('/').unwrap_or(name).to_string();
    let size_text = String::from_utf8_lossy(&h[48..58]);
    let size = size_text
        .trim_end_matches(' ')
        .parse::<u64>()
        .map_err(|_| {
            Error::bad(
                file,
                PHASE_AR,
                format!(
                    "ar member {name:?} at offset {offset}: size {size_text:?} is not a number"
                ),
            )
        })?;
    Ok(Some(ArMember {
        name,
        size,
        offset: offset + 60,
    }))
}

/// Bad input naming `member` when `e` passed a limit, else `Error::bad(phase, "{member}: {e}")`.
fn read_error(file: &Path, phase: &'static str, member: &str, e: std::io::Error) -> Error {
    match limits::exceeded(&e) {
        Some(x) => Error::bad(file, phase, x.to_string()),
        None => Error::bad(file, phase, format!("{member}: {e}")),
    }
}

/// The data member decoded on every core when it is a multi-block xz stream and this machine
/// has two cores or more (see `xzblocks`); `None`: one decoder reads it.
fn by_blocks(
    file: &File,
    codec: Codec,
    m: &ArMember,
    pos: &super::PackedPos,
) -> Option<super::xzblocks::Parallel> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if codec != Codec::Xz || cores < 2 {
        return None;
    }
    let layout = super::xzblocks::layout(file, m.offset, m.size)?;
    let file = file.try_clone().ok()?;
    super::xzblocks::Parallel::start(file, m.offset, layout, pos.clone()).ok()
}

/// Reads a .deb: metadata from `control.tar.*`, entries from `data.tar.*`.
pub fn read(path: &Path, visitor: &mut dyn Visitor) -> Result<PackageMeta> {
    let file = File::open(path).map_err(|e| Error::io(path, "open package", e))?;
    let file_size = file
        .metadata()
        .map_err(|e| Error::io(path, "open package", e))?
        .len();
    // A second handle for the threads that decode data.tar.xz by blocks (they read with pread).
    let shared = file
        .try_clone()
        .map_err(|e| Error::io(path, "open package", e))?;
    let mut r = BufReader::new(file);
    let mut magic = [0u8; 8];
    let n = super::read_up_to(&mut r, &mut magic).map_err(|e| Error::io(path, PHASE_AR, e))?;
    if &magic[..n] != b"!<arch>\n" {
        return Err(Error::bad(path, PHASE_AR, "no ar magic: not a .deb"));
    }
    let mut meta = None;
    let mut data_codec = None;
    let mut saw_binary = false;
    let mut offset = 8u64;
    while let Some(m) = ar_header(path, &mut r, offset)? {
        // A member cut short ends its reader early: the decoder or the tar reader says so.
        let end = m.offset.saturating_add(m.size);
        let name = m.name.as_str();
        let member = (&mut r).take(m.size);
        if name == "debian-binary" {
            let mut v = Vec::new();
            Limited::new(member, limits::DEB_BINARY, "debian-binary")
                .read_to_end(&mut v)
                .map_err(|e| read_error(path, PHASE_AR, name, e))?;
            let v = String::from_utf8_lossy(&v);
            if !v.starts_with("2.") {
                return Err(Error::unsupported(
                    path,
                    PHASE_AR,
                    format!("deb format version {:?}, expected 2.x", v.trim()),
                ));
            }
            saw_binary = true;
        } else if name.starts_with("control.tar") {
            let codec = member_codec(path, name)?;
            let dec = codec
                .decoder(member)
                .map_err(|e| Error::unsupported(path, "read deb control", e.message()))?;
            meta = Some(read_control(
                path,
                Limited::new(
                    dec,
                    limits::DEB_CONTROL_TAR,
                    format!("{name}, decompressed"),
                ),
            )?);
        } else if name.starts_with("data.tar") {
            let codec = member_codec(path, name)?;
            let (counting, pos) = CountingReader::new(member);
            let dec: Box<dyn Read> = match by_blocks(&shared, codec, &m, &pos) {
                Some(p) => Box::new(p),
                None => codec
                    .decoder(counting)
                    .map_err(|e| Error::unsupported(path, "read deb data", e.message()))?,
            };
            walk_tar(
                path,
                "read deb data tar",
                dec,
                TarWalk {
                    apk_checksums: false,
                    packed: Some(pos),
                },
                visitor,
            )?;
            data_codec = Some(codec);
        }
        // Members are 2-byte aligned.
        offset = end + (end & 1);
        r.seek(SeekFrom::Start(offset))
            .map_err(|e| Error::io(path, PHASE_AR, e))?;
    }
    if !saw_binary {
        return Err(Error::bad(
            path,
            PHASE_AR,
            "no debian-binary member: not a .deb",
        ));
    }
    let mut meta = meta.ok_or_else(|| Error::bad(path, PHASE_AR, "no control.tar.* member"))?;
    if data_codec.is_none() {
        return Err(Error::bad(path, PHASE_AR, "no data.tar.* member"));
    }
    meta.file_size = file_size;
    meta.data_codec = data_codec;
    Ok(meta)
}

/// Parses `./control` out of a control tar (the stream is bounded by the caller).
fn read_control(path: &Path, dec: impl Read) -> Result<PackageMeta> {
    const PHASE: &str = "read deb control";
    let mut text = None;
    tar_members(path, PHASE, dec, |m| {
        if text.is_none() && m.path.file_name().is_some_and(|n| n == "control") {
            let mut t = Vec::new();
            Limited::new(&mut *m.entry, limits::DEB_CONTROL, "control file")
                .read_to_end(&mut t)
                .map_err(|e| read_error(path, PHASE, "control file", e))?;
            text = Some(String::from_utf8_lossy(&t).into_owned());
        }
        Ok(())
    })?;
    match text {
        Some(t) => parse_control(path, &t),
        None => Err(Error::bad(path, PHASE, "control.tar has no ./control file")),
    }
}

/// Parses the fields of a Debian control file into package metadata.
pub fn parse_control(path: &Path, text: &str) -> Result<PackageMeta> {
    let mut meta = PackageMeta::default();
    for line in text.lines() {
        if line.starts_with([' ', '\t']) {
            continue; // continuation of a multi-line field
        }
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        match k {
            "Package" => meta.name = v.to_string(),
            "Version" => meta.version = v.to_string(),
            "Architecture" => meta.arch = v.to_string(),
            "Installed-Size" => {
                let kib: u64 = v.parse().map_err(|_| {
                    Error::bad(
                        path,
                        "read deb control",
                        format!("Installed-Size {v:?} is not a number"),
                    )
                })?;
                meta.installed_size = Some(kib * 1024);
            }
            _ => {}
        }
    }
    if meta.name.is_empty() || meta.version.is_empty() {
        return Err(Error::bad(
            path,
            "read deb control",
            "control file lacks Package or Version",
        ));
    }
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bomb;
    use crate::package::Entry;

    struct Count(usize);

    impl Visitor for Count {
        fn visit(&mut self, _: &Entry, _: &mut dyn Read) -> Result<()> {
            self.0 += 1;
            Ok(())
        }
    }

    /// Plain members are read; a GNU name table or a BSD long name (which `ar` readers load
    /// whole, here declaring ~10 GB) is refused before a byte of it is read.
    #[test]
    fn reads_plain_members_and_refuses_long_name_tables() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.deb");
        let control = bomb::deb_control(Codec::Xz).unwrap();
        let mut s = bomb::Stream::new(Codec::Xz).unwrap();
        bomb::tar_bytes(&mut s, "boot/x", b"x").unwrap();
        let data = bomb::tar_end(s).unwrap();
        let ok = bomb::deb(("control.tar.xz", &control), ("data.tar.xz", &data));
        std::fs::write(&p, &ok).unwrap();
        let mut c = Count(0);
        let meta = read(&p, &mut c).unwrap();
        assert_eq!((meta.name.as_str(), c.0), ("linux-image-bomb", 1));
        for name in ["//", "#1/20"] {
            let mut bad = b"!<arch>\n".to_vec();
            let h = format!(
                "{name:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
                0, 0, 0, "100644", 9_999_999_999u64
            );
            bad.extend_from_slice(h.as_bytes());
            bad.extend_from_slice(&ok[8..]);
            std::fs::write(&p, &bad).unwrap();
            let e = read(&p, &mut Count(0)).unwrap_err();
            assert!(
                matches!(e, Error::Unsupported { .. }) && e.to_string().contains("plain names"),
                "{e}"
            );
        }
    }
}
