//! Debian `.deb`: an `ar` archive of `debian-binary`, `control.tar.*` and `data.tar.*`.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use super::{walk_tar, CountingReader, PackageMeta, TarWalk, Visitor};
use crate::codec::Codec;
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

/// Reads a .deb: metadata from `control.tar.*`, entries from `data.tar.*`.
pub fn read(path: &Path, visitor: &mut dyn Visitor) -> Result<PackageMeta> {
    let file = File::open(path).map_err(|e| Error::io(path, "open package", e))?;
    let file_size = file
        .metadata()
        .map_err(|e| Error::io(path, "open package", e))?
        .len();
    let mut ar = ar::Archive::new(BufReader::new(file));
    let mut meta = None;
    let mut data_codec = None;
    let mut saw_binary = false;
    while let Some(member) = ar.next_entry() {
        let member =
            member.map_err(|e| Error::bad(path, PHASE_AR, format!("corrupt ar member: {e}")))?;
        let name = String::from_utf8_lossy(member.header().identifier()).into_owned();
        if name == "debian-binary" {
            let mut v = String::new();
            let mut member = member;
            member
                .read_to_string(&mut v)
                .map_err(|e| Error::bad(path, PHASE_AR, format!("debian-binary: {e}")))?;
            if !v.starts_with("2.") {
                return Err(Error::unsupported(
                    path,
                    PHASE_AR,
                    format!("deb format version {:?}, expected 2.x", v.trim()),
                ));
            }
            saw_binary = true;
        } else if name.starts_with("control.tar") {
            let codec = member_codec(path, &name)?;
            let dec = codec
                .decoder(member)
                .map_err(|e| Error::unsupported(path, "read deb control", e))?;
            meta = Some(read_control(path, dec)?);
        } else if name.starts_with("data.tar") {
            let codec = member_codec(path, &name)?;
            let (counting, pos) = CountingReader::new(member);
            let dec = codec
                .decoder(counting)
                .map_err(|e| Error::unsupported(path, "read deb data", e))?;
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

/// Parses `./control` out of a control tar.
fn read_control(path: &Path, dec: impl Read) -> Result<PackageMeta> {
    let mut archive = tar::Archive::new(dec);
    let entries = archive
        .entries()
        .map_err(|e| Error::bad(path, "read deb control", format!("not a tar stream: {e}")))?;
    for entry in entries {
        let mut entry = entry
            .map_err(|e| Error::bad(path, "read deb control", format!("corrupt tar entry: {e}")))?;
        let p = entry
            .path()
            .map_err(|e| Error::bad(path, "read deb control", e.to_string()))?
            .into_owned();
        if p.file_name().is_some_and(|n| n == "control") {
            let mut text = String::new();
            entry
                .read_to_string(&mut text)
                .map_err(|e| Error::bad(path, "read deb control", format!("control file: {e}")))?;
            return parse_control(path, &text);
        }
    }
    Err(Error::bad(
        path,
        "read deb control",
        "control.tar has no ./control file",
    ))
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
