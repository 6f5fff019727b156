//! APKINDEX.tar.gz: verifies an Alpine repository index's signature, parses its entries, and writes signed indexes.
//!
//! Layout (as apk-tools writes it): two gzip members, `[signature tar] + [tar of DESCRIPTION and
//! APKINDEX]`; the signature (`.SIGN.RSA.<keyid>`, RSA PKCS#1 v1.5 over SHA-1) covers the exact
//! compressed bytes of the second member, as for a package's control member. `APKINDEX` is
//! text: blank-line separated records of `X:value` lines.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use serde::Serialize;

use super::apk::framing::{check_gzip_magic, gunzip_member, small_tar, Counted, MemberLimit};
use super::apk::signature::{parse_sign_entries, verify_signature, SigningKey};
use super::apk::writer::{gzip, signature_member, small_tar_bytes};
use super::ReadOptions;
use crate::limits::{self, Exceeded};
use crate::{Error, Result};

/// A verified repository index.
#[derive(Debug, Clone)]
pub struct Index {
    /// Key id of the verified signature (`None`: unsigned or untrusted, allowed by the caller).
    pub signer: Option<String>,
    /// `DESCRIPTION`, e.g. `v3.16.3-13-g4d933a1fa3`.
    pub description: Option<String>,
    pub entries: Vec<IndexEntry>,
}

impl Index {
    /// The entries named `name`, in index order.
    pub fn named(&self, name: &str) -> Vec<&IndexEntry> {
        self.entries.iter().filter(|e| e.name == name).collect()
    }
}

/// One package of an index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IndexEntry {
    /// `C:` package identity: `Q1` + base64(SHA-1 of the control member).
    pub checksum: String,
    /// `P:`
    pub name: String,
    /// `V:`
    pub version: String,
    /// `A:`
    pub arch: String,
    /// `S:` size of the .apk file.
    pub size: u64,
    /// `I:` installed size.
    pub installed_size: u64,
    /// `T:`
    pub description: String,
    /// `o:` origin (the APKBUILD).
    pub origin: Option<String>,
    /// `t:` build time, seconds since the epoch.
    pub build_time: Option<u64>,
    /// `c:` aports commit.
    pub commit: Option<String>,
    /// `D:` dependencies.
    pub depends: Vec<String>,
    /// Line of the record's first field in `APKINDEX` (1-based), for error messages.
    #[serde(skip)]
    pub line: usize,
}

impl IndexEntry {
    /// The package's file name in the repository: `<name>-<version>.apk`.
    pub fn file_name(&self) -> String {
        format!("{}-{}.apk", self.name, self.version)
    }

    /// The record as `APKINDEX` text (fields in apk's order, ending with a blank line).
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "C:{}\nP:{}\nV:{}\nA:{}\nS:{}\nI:{}\nT:{}\n",
            self.checksum,
            self.name,
            self.version,
            self.arch,
            self.size,
            self.installed_size,
            self.description
        );
        if let Some(o) = &self.origin {
            s.push_str(&format!("o:{o}\n"));
        }
        if let Some(t) = self.build_time {
            s.push_str(&format!("t:{t}\n"));
        }
        if let Some(c) = &self.commit {
            s.push_str(&format!("c:{c}\n"));
        }
        if !self.depends.is_empty() {
            s.push_str(&format!("D:{}\n", self.depends.join(" ")));
        }
        s.push('\n');
        s
    }
}

/// Reads the index at `path`: splits its two gzip members, verifies the signature against
/// `opts.keys_dir` (an unsigned index or unknown key is refused unless `opts.allow_untrusted`),
/// then parses `APKINDEX`.
pub fn read_index(path: &Path, opts: &ReadOptions) -> Result<Index> {
    const SPLIT: &str = "split index gzip members";
    let file = File::open(path).map_err(|e| Error::io(path, "open index", e))?;
    let mut r = Counted::new(BufReader::with_capacity(64 << 10, file));
    check_gzip_magic(path, &mut r, true)?;
    let first = gunzip_member(&mut r, true, MemberLimit::SignatureOr(limits::APKINDEX))
        .map_err(|e| Error::bad(path, SPLIT, format!("gzip member 0 at offset 0: {e}")))?;
    let first_tar = small_tar(&first.data)
        .map_err(|e| Error::bad(path, "read index", format!("member 0 is not a tar: {e}")))?;
    let signed = first_tar
        .first()
        .is_some_and(|(name, _)| name.starts_with(".SIGN."));
    let (sigs, index_tar, index_bytes) = if signed {
        let sigs = parse_sign_entries(path, &first_tar)?;
        if r.at_eof().map_err(|e| Error::io(path, SPLIT, e))? {
            return Err(Error::bad(
                path,
                SPLIT,
                format!(
                    "the signature member is followed by no index member (file ends at offset {})",
                    r.pos
                ),
            ));
        }
        check_gzip_magic(path, &mut r, false)?;
        let start = r.pos;
        let m = gunzip_member(&mut r, true, MemberLimit::Fixed(limits::APKINDEX)).map_err(|e| {
            Error::bad(path, SPLIT, format!("gzip member 1 at offset {start}: {e}"))
        })?;
        let tar = small_tar(&m.data)
            .map_err(|e| Error::bad(path, "read index", format!("member 1 is not a tar: {e}")))?;
        (sigs, tar, m.compressed)
    } else {
        (Vec::new(), first_tar, first.compressed)
    };
    if !r.at_eof().map_err(|e| Error::io(path, SPLIT, e))? {
        return Err(Error::bad(
            path,
            SPLIT,
            format!(
                "unexpected bytes at offset {} after the index member",
                r.pos
            ),
        ));
    }
    let signer = verify_signature(path, opts, &sigs, &index_bytes, None)?;
    let text = index_tar
        .iter()
        .find(|(n, _)| n == "APKINDEX")
        .map(|(_, d)| d)
        .ok_or_else(|| {
            let names: Vec<&str> = index_tar.iter().map(|(n, _)| n.as_str()).collect();
            Error::bad(
                path,
                "read index",
                format!("no APKINDEX entry in the index tar (entries: {names:?})"),
            )
        })?;
    let text = std::str::from_utf8(text)
        .map_err(|e| Error::bad(path, "parse APKINDEX", format!("not UTF-8: {e}")))?;
    let description = index_tar
        .iter()
        .find(|(n, _)| n == "DESCRIPTION")
        .map(|(_, d)| String::from_utf8_lossy(d).trim().to_string());
    Ok(Index {
        signer,
        description,
        entries: parse_entries(text)
            .map_err(|e| Error::bad(path, "parse APKINDEX", e.to_string()))?,
    })
}

/// An `APKINDEX` text that cannot be read; each names its line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntriesError {
    #[error("{0}")]
    TooMany(Exceeded),
    #[error("line {line}: {text:?} is not an X:value field")]
    NotAField { line: usize, text: String },
    #[error("record at line {line}: no '{field}:' field")]
    Missing { line: usize, field: char },
    #[error("record at line {line}: {field}:{value} is not a byte count")]
    NotANumber {
        line: usize,
        field: char,
        value: String,
    },
}

/// Parses `APKINDEX` text. A record lacking `C`, `P`, `V`, `A`, `S` or `I`, or with a size
/// that is not a number, is an error naming its line; unknown fields are ignored (as apk does).
pub fn parse_entries(text: &str) -> std::result::Result<Vec<IndexEntry>, EntriesError> {
    let mut out: Vec<IndexEntry> = Vec::new();
    let mut fields: Vec<(char, &str)> = Vec::new();
    let mut start = 0;
    for (i, line) in text.lines().chain(std::iter::once("")).enumerate() {
        if line.is_empty() {
            if !fields.is_empty() {
                if out.len() as u64 >= limits::APKINDEX_ENTRIES.max {
                    let x =
                        Exceeded::new(limits::APKINDEX_ENTRIES, format!("record at line {start}"));
                    return Err(EntriesError::TooMany(x));
                }
                out.push(entry(&fields, start)?);
                fields.clear();
            }
            continue;
        }
        if fields.is_empty() {
            start = i + 1;
        }
        let mut chars = line.chars();
        match (chars.next(), chars.next()) {
            (Some(k), Some(':')) => fields.push((k, &line[k.len_utf8() + 1..])),
            _ => {
                return Err(EntriesError::NotAField {
                    line: i + 1,
                    text: line.to_string(),
                })
            }
        }
    }
    Ok(out)
}

fn entry(fields: &[(char, &str)], line: usize) -> std::result::Result<IndexEntry, EntriesError> {
    let get = |k: char| fields.iter().find(|(f, _)| *f == k).map(|(_, v)| *v);
    let req = |field: char| {
        get(field)
            .map(str::to_string)
            .ok_or(EntriesError::Missing { line, field })
    };
    let num = |field: char| -> std::result::Result<u64, EntriesError> {
        let value = req(field)?;
        value
            .parse()
            .map_err(|_| EntriesError::NotANumber { line, field, value })
    };
    Ok(IndexEntry {
        checksum: req('C')?,
        name: req('P')?,
        version: req('V')?,
        arch: req('A')?,
        size: num('S')?,
        installed_size: num('I')?,
        description: get('T').unwrap_or_default().to_string(),
        origin: get('o').map(str::to_string),
        build_time: get('t').and_then(|t| t.parse().ok()),
        commit: get('c').map(str::to_string),
        depends: get('D')
            .map(|d| d.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default(),
        line,
    })
}

/// Writes a signed (with `key`) or unsigned index of `entries` to `out`, the way `apk index`
/// and `abuild-sign` do; the file is written to a temporary name and renamed at the end.
pub fn write_index(
    entries: &[IndexEntry],
    description: &str,
    key: Option<&SigningKey>,
    out: &Path,
) -> Result<()> {
    const PHASE: &str = "write index";
    let text: String = entries.iter().map(IndexEntry::to_text).collect();
    let files: &[(&str, &[u8])] = &[
        ("DESCRIPTION", description.as_bytes()),
        ("APKINDEX", text.as_bytes()),
    ];
    let tar = small_tar_bytes(files, true).map_err(|e| Error::failed(PHASE, e.to_string()))?;
    let index_member = gzip(&tar).map_err(|e| Error::failed(PHASE, format!("compress: {e}")))?;
    let mut bytes = Vec::new();
    if let Some(key) = key {
        bytes.extend(signature_member(key, &index_member, PHASE)?);
    }
    bytes.extend(index_member);
    crate::atomic::write(out, &bytes)
        .map_err(|e| Error::failed(PHASE, format!("write the index: {e}")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str) -> IndexEntry {
        IndexEntry {
            checksum: "Q1ro6eW5joyaQST2qgK+fcT8yOmNA=".into(),
            name: name.into(),
            version: "6.12.19-r1".into(),
            arch: "x86_64".into(),
            size: 77414844,
            installed_size: 96276480,
            description: "Linux lts kernel".into(),
            origin: Some("linux-lts".into()),
            build_time: Some(1668161985),
            commit: Some("b4fa3f4d".into()),
            depends: vec!["mkinitfs>=3.6.0".into(), "linux-firmware-any".into()],
            line: 1,
        }
    }

    #[test]
    fn text_round_trips() {
        let a = sample("linux-lts");
        let mut b = sample("linux-virt");
        b.line = 13;
        let text = a.to_text() + &b.to_text();
        assert_eq!(parse_entries(&text).unwrap(), vec![a, b]);
    }

    #[test]
    fn missing_field_names_the_record_line() {
        let text = "C:Q1x=\nP:a\nV:1\nA:x86_64\nS:1\nI:1\n\nC:Q1y=\nP:b\nV:1\nA:x86_64\nI:1\n";
        let e = parse_entries(text).unwrap_err();
        assert_eq!(e.to_string(), "record at line 8: no 'S:' field");
    }

    #[test]
    fn bad_size_and_bad_line_are_errors() {
        let e = parse_entries("C:Q1x=\nP:a\nV:1\nA:x\nS:big\nI:1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("S:big is not a byte count"), "{e}");
        let e = parse_entries("C:Q1x=\nno colon here\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("line 2:"), "{e}");
    }

    #[test]
    fn records_past_the_limit_are_refused() {
        let one = "C:Q1x=\nP:a\nV:1\nA:x86_64\nS:1\nI:1\n\n";
        assert_eq!(parse_entries(&one.repeat(100)).unwrap().len(), 100);
        let text = one.repeat(limits::APKINDEX_ENTRIES.max as usize + 1);
        let e = parse_entries(&text).unwrap_err().to_string();
        assert!(e.contains("harness::limits::APKINDEX_ENTRIES"), "{e}");
    }

    #[test]
    fn signed_index_round_trips_and_tampering_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate("test.rsa.pub", 1024).unwrap();
        let keys = dir.path().join("keys");
        std::fs::create_dir(&keys).unwrap();
        std::fs::write(keys.join(&key.name), key.public_pem()).unwrap();
        let out = dir.path().join("APKINDEX.tar.gz");
        write_index(&[sample("linux-lts")], "v-test", Some(&key), &out).unwrap();
        let opts = ReadOptions {
            keys_dir: keys.clone(),
            allow_untrusted: false,
        };
        let idx = read_index(&out, &opts).unwrap();
        assert_eq!(idx.signer.as_deref(), Some("test.rsa.pub"));
        assert_eq!(idx.description.as_deref(), Some("v-test"));
        assert_eq!(idx.entries, vec![sample("linux-lts")]);

        // Flip one byte in the index member: the signature no longer verifies.
        let mut bytes = std::fs::read(&out).unwrap();
        let last = bytes.len() - 12;
        bytes[last] ^= 0x40;
        std::fs::write(&out, &bytes).unwrap();
        let e = read_index(&out, &opts).unwrap_err();
        assert!(
            matches!(e, Error::Untrusted { .. } | Error::BadInput { .. }),
            "{e}"
        );

        // Unsigned: refused unless untrusted indexes are allowed.
        write_index(&[sample("linux-lts")], "v-test", None, &out).unwrap();
        let e = read_index(&out, &opts).unwrap_err();
        assert!(e.to_string().contains("not signed"), "{e}");
        let loose = ReadOptions {
            allow_untrusted: true,
            ..opts
        };
        assert_eq!(read_index(&out, &loose).unwrap().signer, None);
    }
}
