//! APK v2 packages: splits the gzip members, verifies signature and datahash, streams the data tar; re-exports the writer.
//!
//! Layout (APK v2, as apk-tools writes it): `[signature tar] + control tar + data tar`, each its own gzip
//! member. The signature (`.SIGN.RSA.<keyid>`, RSA PKCS#1 v1.5) covers the exact compressed
//! bytes of the control member; `.PKGINFO`'s `datahash` (hex SHA-256 of the exact compressed
//! bytes of the data member) carries that trust to the data. Legacy packages without
//! `datahash` are signed over control + data; they are accepted when that signature verifies,
//! or unverified when the caller allows untrusted packages.
//!
//! The data member is taken to run to the end of the file: its hash is checked over
//! `[data start, EOF)` before any entry reaches the visitor (so appended bytes fail the
//! datahash), and [`read`] checks that the gzip member really ends at EOF.
//!
//! [`framing`] splits the gzip members, [`signature`] verifies (and [`SigningKey`] makes)
//! signatures, [`trust`] chooses the keys they are verified with by default (the host's or
//! btfgate's bundled Alpine keys), and [`write_apk`] writes packages; `framing` and `signature`
//! also read APKINDEX files.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::Path;

use base64::Engine as _;
use sha1::{Digest, Sha1};
use sha2::Sha256;

use super::{walk_tar, CountingReader, PackageMeta, ReadOptions, TarWalk, Visitor};
use crate::limits;
use crate::{Error, Result};
use framing::{check_gzip_magic, gunzip_member, hash_file_range, small_tar, Counted, MemberLimit};
use signature::{parse_sign_entries, verify_signature};

pub(super) mod framing;
pub(super) mod signature;
pub mod trust;
pub(super) mod writer;

pub use signature::SigningKey;
pub use writer::write_apk;

/// The `key = value` fields of a `.PKGINFO`, in file order (multi-valued keys such as
/// `depend`, `provides`, `replaces`, `install_if`, `triggers` appear once per value).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PkgInfo {
    pub fields: Vec<(String, String)>,
}

impl PkgInfo {
    /// Parses `.PKGINFO` text: `key = value` lines, `#` comments and blank lines skipped.
    pub fn parse(text: &str) -> std::result::Result<PkgInfo, PkgInfoError> {
        let mut fields = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, value) = match line.split_once(" = ") {
                Some(kv) => kv,
                None => match line.strip_suffix(" =") {
                    Some(k) => (k, ""),
                    None => {
                        return Err(PkgInfoError::NoSeparator {
                            line: i + 1,
                            text: line.to_string(),
                        })
                    }
                },
            };
            let key = key.trim();
            if key.is_empty() || key.contains(char::is_whitespace) {
                return Err(PkgInfoError::BadKey {
                    line: i + 1,
                    text: line.to_string(),
                });
            }
            fields.push((key.to_string(), value.to_string()));
        }
        Ok(PkgInfo { fields })
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `key`, in file order.
    pub fn get_all(&self, key: &str) -> Vec<&str> {
        self.fields
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// A `.PKGINFO` line that is not `key = value`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PkgInfoError {
    #[error("line {line}: expected 'key = value', found {text:?}")]
    NoSeparator { line: usize, text: String },
    #[error("line {line}: bad key in {text:?}")]
    BadKey { line: usize, text: String },
}

/// What [`inspect`] learned and verified about an APK, without walking its data.
#[derive(Debug, Clone)]
pub struct ApkInfo {
    /// Byte ranges of the gzip members: `[signature,] control, data` (2 for unsigned packages).
    /// The data member runs to the end of the file (see the module documentation).
    pub members: Vec<Range<u64>>,
    pub pkginfo: PkgInfo,
    /// Names of the control tar entries (`.PKGINFO` and the scripts), in archive order.
    pub control_files: Vec<String>,
    /// Package identity as written in APKINDEX `C:`: `"Q1" + base64(sha1(control member))`.
    pub identity: String,
    /// Key id of the verified signature (`None`: unsigned or unknown key, allowed by the caller).
    pub signer: Option<String>,
    /// `datahash` was present and matched the data member (false: legacy package without it).
    pub datahash_ok: bool,
}

/// Reads the APK at `path`: verifies it ([`inspect`]), then streams the data tar to `visitor`
/// (checking every entry's `APK-TOOLS.checksum.SHA1` and refusing paths that escape).
pub fn read(path: &Path, opts: &ReadOptions, visitor: &mut dyn Visitor) -> Result<PackageMeta> {
    let info = inspect(path, opts)?;
    let data = info
        .members
        .last()
        .cloned()
        .ok_or_else(|| Error::bad(path, "split gzip members", "no data member"))?;
    let mut file = File::open(path).map_err(|e| Error::io(path, "open package", e))?;
    file.seek(SeekFrom::Start(data.start))
        .map_err(|e| Error::io(path, "read data tar", e))?;
    let (counting, packed) = CountingReader::new(file.take(data.end - data.start));
    let mut buf = BufReader::new(counting);
    {
        let mut dec = flate2::bufread::GzDecoder::new(&mut buf);
        walk_tar(
            path,
            "read data tar",
            &mut dec,
            TarWalk {
                apk_checksums: true,
                packed: Some(packed),
            },
            visitor,
        )?;
        // The tar reader stops at the end-of-archive blocks: finish the member to check its CRC.
        io::copy(&mut dec, &mut io::sink()).map_err(|e| {
            Error::bad(
                path,
                "read data tar",
                format!("data member at offset {}: {e}", data.start),
            )
        })?;
    }
    let rest = buf
        .fill_buf()
        .map_err(|e| Error::io(path, "read data tar", e))?;
    if !rest.is_empty() {
        return Err(Error::bad(
            path,
            "split gzip members",
            format!(
                "unexpected bytes after the data member (which started at offset {}); an APK v2 has at most 3 gzip members",
                data.start
            ),
        ));
    }
    let p = &info.pkginfo;
    let required = |key: &str| {
        p.get(key)
            .map(str::to_string)
            .ok_or_else(|| Error::bad(path, "parse .PKGINFO", format!("no '{key}' field")))
    };
    let installed_size = match p.get("size") {
        None => None,
        Some(s) => Some(s.trim().parse::<u64>().map_err(|e| {
            Error::bad(
                path,
                "parse .PKGINFO",
                format!("size = {s:?} is not a byte count: {e}"),
            )
        })?),
    };
    Ok(PackageMeta {
        name: required("pkgname")?,
        version: required("pkgver")?,
        arch: required("arch")?,
        installed_size,
        file_size: data.end,
        signer: info.signer,
        data_codec: Some(crate::codec::Codec::Gzip),
    })
}

/// Splits the APK at `path` into its gzip members, parses `.PKGINFO`, verifies the signature
/// against `opts.keys_dir` and the `datahash`; does not walk the data tar.
pub fn inspect(path: &Path, opts: &ReadOptions) -> Result<ApkInfo> {
    const SPLIT: &str = "split gzip members";
    let file = File::open(path).map_err(|e| Error::io(path, "open package", e))?;
    let file_size = file
        .metadata()
        .map_err(|e| Error::io(path, "open package", e))?
        .len();
    let mut r = Counted::new(BufReader::with_capacity(64 << 10, file));

    check_gzip_magic(path, &mut r, true)?;
    let first = gunzip_member(&mut r, true, MemberLimit::SignatureOr(limits::APK_CONTROL))
        .map_err(|e| Error::bad(path, SPLIT, format!("gzip member 0 at offset 0: {e}")))?;
    let first_range = 0..r.pos;
    let first_tar = small_tar(&first.data)
        .map_err(|e| Error::bad(path, "read first member", format!("not a tar: {e}")))?;

    let mut members = Vec::new();
    let (sig_entries, control_tar, control_bytes) = if first_tar
        .first()
        .is_some_and(|(name, _)| name.starts_with(".SIGN."))
    {
        members.push(first_range);
        let sigs = parse_sign_entries(path, &first_tar)?;
        if r.at_eof().map_err(|e| Error::io(path, SPLIT, e))? {
            return Err(Error::bad(
                path,
                SPLIT,
                "signature member is followed by no control member",
            ));
        }
        check_gzip_magic(path, &mut r, false)?;
        let start = r.pos;
        let control = gunzip_member(&mut r, true, MemberLimit::Fixed(limits::APK_CONTROL))
            .map_err(|e| {
                Error::bad(path, SPLIT, format!("gzip member 1 at offset {start}: {e}"))
            })?;
        members.push(start..r.pos);
        let tar = small_tar(&control.data)
            .map_err(|e| Error::bad(path, "read control tar", format!("not a tar: {e}")))?;
        (sigs, tar, control.compressed)
    } else if first_tar.iter().any(|(name, _)| name == ".PKGINFO") {
        // Unsigned package: control + data.
        members.push(first_range);
        (Vec::new(), first_tar, first.compressed)
    } else {
        let names: Vec<&str> = first_tar.iter().map(|(n, _)| n.as_str()).collect();
        return Err(Error::bad(
            path,
            "read first member",
            format!("neither a signature tar (.SIGN.*) nor a control tar (.PKGINFO); entries: {names:?}"),
        ));
    };

    let data_start = r.pos;
    if r.at_eof().map_err(|e| Error::io(path, SPLIT, e))? {
        return Err(Error::bad(
            path,
            SPLIT,
            format!("no data member after the control member (file ends at offset {data_start})"),
        ));
    }
    check_gzip_magic(path, &mut r, false)?;
    drop(r);
    let data_range = data_start..file_size;
    members.push(data_range.clone());

    let pkginfo_raw = control_tar
        .iter()
        .find(|(n, _)| n == ".PKGINFO")
        .map(|(_, d)| d)
        .ok_or_else(|| {
            Error::bad(
                path,
                "read control tar",
                "no .PKGINFO in the control member",
            )
        })?;
    let pkginfo_text = std::str::from_utf8(pkginfo_raw)
        .map_err(|e| Error::bad(path, "parse .PKGINFO", format!("not UTF-8: {e}")))?;
    let pkginfo = PkgInfo::parse(pkginfo_text)
        .map_err(|e| Error::bad(path, "parse .PKGINFO", e.to_string()))?;
    let control_files = control_tar.iter().map(|(n, _)| n.clone()).collect();

    let identity = format!(
        "Q1{}",
        base64::engine::general_purpose::STANDARD.encode(Sha1::digest(&control_bytes))
    );

    let datahash = pkginfo.get("datahash").map(str::to_string);
    let legacy_data = if datahash.is_none() {
        Some(data_range.clone())
    } else {
        None
    };
    let signer = verify_signature(path, opts, &sig_entries, &control_bytes, legacy_data)?;

    let datahash_ok = match datahash {
        None => false,
        Some(want) => {
            let want_bytes = hex::decode(want.trim())
                .ok()
                .filter(|b| b.len() == 32)
                .ok_or_else(|| {
                    Error::bad(
                        path,
                        "parse .PKGINFO",
                        format!("datahash = {want:?} is not a hex SHA-256"),
                    )
                })?;
            let mut h = Sha256::new();
            hash_file_range(path, &data_range, &mut h)?;
            let got = h.finalize();
            if got.as_slice() != want_bytes.as_slice() {
                return Err(Error::bad(
                    path,
                    "verify datahash",
                    format!(
                        "data member [{}, {}) hashes to sha256 {}, .PKGINFO datahash says {}",
                        data_range.start,
                        data_range.end,
                        hex::encode(got),
                        want.trim()
                    ),
                ));
            }
            true
        }
    };

    Ok(ApkInfo {
        members,
        pkginfo,
        control_files,
        identity,
        signer,
        datahash_ok,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkginfo_parses_comments_multi_values_and_equals_in_values() {
        let text = "# Generated by abuild 3.9.0-r0\n# using fakeroot version 1.25.3\n\
                    pkgname = alpine-baselayout\npkgver = 3.2.0-r23\npkgdesc = \n\
                    depend = alpine-baselayout-data=3.2.0-r23\ndepend = /bin/sh\n\
                    provides = cmd:mkmntdirs=3.2.0-r23\ndepend = so:libc.musl-aarch64.so.1\n\n";
        let p = PkgInfo::parse(text).unwrap();
        assert_eq!(p.get("pkgname"), Some("alpine-baselayout"));
        assert_eq!(p.get("pkgdesc"), Some(""));
        assert_eq!(
            p.get_all("depend"),
            vec![
                "alpine-baselayout-data=3.2.0-r23",
                "/bin/sh",
                "so:libc.musl-aarch64.so.1"
            ]
        );
        assert_eq!(p.get("provides"), Some("cmd:mkmntdirs=3.2.0-r23"));
        assert_eq!(p.get("missing"), None);
        assert!(p.get_all("missing").is_empty());
        assert_eq!(p.fields.len(), 7);
    }

    #[test]
    fn pkginfo_refuses_lines_without_separator() {
        let e = PkgInfo::parse("# c\npkgname alpine\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "line 2: expected 'key = value', found \"pkgname alpine\""
        );
        assert!(PkgInfo::parse("pkgname=alpine\n").is_err());
        let e = PkgInfo::parse("a b = c\n").unwrap_err();
        assert_eq!(e.to_string(), "line 1: bad key in \"a b = c\"");
        assert_eq!(PkgInfo::parse("url =\n").unwrap().get("url"), Some(""));
    }
}
