//! APK v2 packages: splits the gzip members, verifies signature and datahash, streams the data tar, and writes signed APKs.
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

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use base64::Engine as _;
use flate2::write::GzEncoder;
use flate2::Compression;
use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey};
use rsa::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};
use sha1::{Digest, Sha1};
use sha2::{Sha256, Sha512};

use super::{walk_tar, CountingReader, PackageMeta, ReadOptions, TarWalk, Visitor};
use crate::limits::{self, Exceeded, Limit};
use crate::{Error, Result};

/// Largest public key file read from a keys directory.
const MAX_KEY_FILE: u64 = 1 << 20;
const BLOCK: usize = 512;

/// The `key = value` fields of a `.PKGINFO`, in file order (multi-valued keys such as
/// `depend`, `provides`, `replaces`, `install_if`, `triggers` appear once per value).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PkgInfo {
    pub fields: Vec<(String, String)>,
}

impl PkgInfo {
    /// Parses `.PKGINFO` text: `key = value` lines, `#` comments and blank lines skipped.
    pub fn parse(text: &str) -> std::result::Result<PkgInfo, String> {
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
                        return Err(format!(
                            "line {}: expected 'key = value', found {line:?}",
                            i + 1
                        ))
                    }
                },
            };
            let key = key.trim();
            if key.is_empty() || key.contains(char::is_whitespace) {
                return Err(format!("line {}: bad key in {line:?}", i + 1));
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
    let pkginfo =
        PkgInfo::parse(pkginfo_text).map_err(|e| Error::bad(path, "parse .PKGINFO", e))?;
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

/// Digest algorithm of a `.SIGN.<ALG>.<keyid>` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SigAlg {
    Sha1,
    Sha256,
    Sha512,
}

#[derive(Debug)]
pub(super) struct SignEntry {
    /// `None` for algorithms btfgate does not verify (DSA).
    alg: Option<SigAlg>,
    name: String,
    key_id: String,
    sig: Vec<u8>,
}

pub(super) fn parse_sign_entries(path: &Path, tar: &[(String, Vec<u8>)]) -> Result<Vec<SignEntry>> {
    let mut out = Vec::new();
    for (name, data) in tar {
        let rest = name.strip_prefix(".SIGN.").ok_or_else(|| {
            Error::bad(
                path,
                "read signature tar",
                format!("unexpected entry {name:?} in the signature member"),
            )
        })?;
        let (alg, key_id) = rest.split_once('.').ok_or_else(|| {
            Error::bad(
                path,
                "read signature tar",
                format!("{name:?} is not .SIGN.<ALG>.<keyid>"),
            )
        })?;
        if key_id.is_empty() || key_id.contains('/') || key_id == ".." || key_id.contains('\0') {
            return Err(Error::bad(
                path,
                "read signature tar",
                format!("refusing key id {key_id:?} in {name:?}"),
            ));
        }
        let alg = match alg {
            "RSA" => Some(SigAlg::Sha1),
            "RSA256" => Some(SigAlg::Sha256),
            "RSA512" => Some(SigAlg::Sha512),
            _ => None,
        };
        out.push(SignEntry {
            alg,
            name: name.clone(),
            key_id: key_id.to_string(),
            sig: data.clone(),
        });
    }
    Ok(out)
}

/// Verifies the first signature whose key is in `opts.keys_dir`. Returns the signer, or `None`
/// when the package is unsigned or no key is known and `opts.allow_untrusted` is set. A
/// signature that fails with a key that is present is an error in every case.
pub(super) fn verify_signature(
    path: &Path,
    opts: &ReadOptions,
    sigs: &[SignEntry],
    control: &[u8],
    legacy_data: Option<Range<u64>>,
) -> Result<Option<String>> {
    const PHASE: &str = "verify signature";
    for s in sigs {
        let Some(alg) = s.alg else { continue };
        let key_path = opts.keys_dir.join(&s.key_id);
        if !key_path.is_file() {
            continue;
        }
        let key = load_public_key(&key_path)?;
        let hash = match alg {
            SigAlg::Sha1 => signed_digest::<Sha1>(path, control, legacy_data.as_ref())?,
            SigAlg::Sha256 => signed_digest::<Sha256>(path, control, legacy_data.as_ref())?,
            SigAlg::Sha512 => signed_digest::<Sha512>(path, control, legacy_data.as_ref())?,
        };
        let verdict = match alg {
            SigAlg::Sha1 => key.pkcs1v15_verify_prehash::<Sha1>(&hash, &s.sig),
            SigAlg::Sha256 => key.pkcs1v15_verify_prehash::<Sha256>(&hash, &s.sig),
            SigAlg::Sha512 => key.pkcs1v15_verify_prehash::<Sha512>(&hash, &s.sig),
        };
        let covered = if legacy_data.is_some() {
            "control and data members (legacy package without datahash)"
        } else {
            "control member"
        };
        return match verdict {
            Ok(()) => Ok(Some(s.key_id.clone())),
            Err(e) => Err(Error::untrusted(
                path,
                PHASE,
                format!(
                    "signature {} does not verify with key {} ({e}): the {covered} was modified or signed by another key",
                    s.name,
                    key_path.display()
                ),
            )),
        };
    }
    if opts.allow_untrusted {
        return Ok(None);
    }
    if sigs.is_empty() {
        return Err(Error::untrusted(
            path,
            PHASE,
            "package is not signed (no .SIGN.* member); allow untrusted packages to read it anyway",
        ));
    }
    let described: Vec<String> = sigs
        .iter()
        .map(|s| match s.alg {
            Some(_) => format!("key id {}", s.key_id),
            None => format!("{} (unsupported algorithm)", s.name),
        })
        .collect();
    Err(Error::untrusted(
        path,
        PHASE,
        format!(
            "signed by {} but no such key in keys dir {}",
            described.join(", "),
            opts.keys_dir.display()
        ),
    ))
}

fn signed_digest<D: Digest>(
    path: &Path,
    control: &[u8],
    legacy_data: Option<&Range<u64>>,
) -> Result<Vec<u8>> {
    let mut h = D::new();
    h.update(control);
    if let Some(range) = legacy_data {
        hash_file_range(path, range, &mut h)?;
    }
    Ok(h.finalize().as_slice().to_vec())
}

/// Loads an RSA public key: PEM SPKI (`PUBLIC KEY`, Alpine's format) or PKCS#1 (`RSA PUBLIC KEY`).
fn load_public_key(key_path: &Path) -> Result<rsa::PublicKey> {
    const PHASE: &str = "read signing key";
    let mut text = String::new();
    File::open(key_path)
        .and_then(|f| f.take(MAX_KEY_FILE).read_to_string(&mut text))
        .map_err(|e| Error::io(key_path, PHASE, e))?;
    let parsed = if text.contains("-----BEGIN RSA PUBLIC KEY-----") {
        rsa::PublicKey::from_pkcs1_pem(text.trim()).map_err(|e| e.to_string())
    } else if text.contains("-----BEGIN PUBLIC KEY-----") {
        rsa::PublicKey::from_public_key_pem(text.trim()).map_err(|e| e.to_string())
    } else {
        Err("expected a PEM 'PUBLIC KEY' or 'RSA PUBLIC KEY'".to_string())
    };
    parsed.map_err(|e| Error::bad(key_path, PHASE, format!("not an RSA public key: {e}")))
}

fn hash_file_range(path: &Path, range: &Range<u64>, h: &mut impl Digest) -> Result<()> {
    let mut f = File::open(path).map_err(|e| Error::io(path, "open package", e))?;
    f.seek(SeekFrom::Start(range.start))
        .map_err(|e| Error::io(path, "hash package", e))?;
    let mut f = f.take(range.end - range.start);
    let mut buf = vec![0u8; 256 << 10];
    let mut total = 0u64;
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io(path, "hash package", e)),
        };
        h.update(&buf[..n]);
        total += n as u64;
    }
    if total != range.end - range.start {
        return Err(Error::bad(
            path,
            "hash package",
            format!("file shrank while being read: range {range:?}, read {total} bytes"),
        ));
    }
    Ok(())
}

/// A buffered reader that counts (and optionally records) the bytes consumed from it, so
/// gzip member boundaries are exact.
pub(super) struct Counted<R> {
    inner: BufReader<R>,
    pub(super) pos: u64,
    record: Option<Vec<u8>>,
    /// What the recording may grow to ([`limits::compressed_ceiling`] of this limit).
    record_limit: Option<Limit>,
}

impl<R: Read> Counted<R> {
    pub(super) fn new(inner: BufReader<R>) -> Self {
        Counted {
            inner,
            pos: 0,
            record: None,
            record_limit: None,
        }
    }

    pub(super) fn at_eof(&mut self) -> io::Result<bool> {
        Ok(self.inner.fill_buf()?.is_empty())
    }

    /// Refuses to go on once the recording passed its ceiling (a member of empty deflate
    /// blocks consumes input without output).
    fn check_record(&self) -> io::Result<()> {
        if let (Some(rec), Some(limit)) = (&self.record, self.record_limit) {
            if rec.len() as u64 > limits::compressed_ceiling(limit) {
                return Err(Exceeded::new(
                    limit,
                    format!("compressed member past {} bytes", rec.len()),
                )
                .into());
            }
        }
        Ok(())
    }
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.check_record()?;
        let n = self.inner.read(buf)?;
        self.pos += n as u64;
        if let Some(rec) = &mut self.record {
            rec.extend_from_slice(&buf[..n]);
        }
        Ok(n)
    }
}

impl<R: Read> BufRead for Counted<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.check_record()?;
        self.inner.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        let amt = amt.min(self.inner.buffer().len());
        if let Some(rec) = &mut self.record {
            rec.extend_from_slice(&self.inner.buffer()[..amt]);
        }
        self.pos += amt as u64;
        self.inner.consume(amt);
    }
}

/// Refuses what is not a gzip member at the reader's position (naming APK v3 when it is one).
pub(super) fn check_gzip_magic<R: Read>(
    path: &Path,
    r: &mut Counted<R>,
    first: bool,
) -> Result<()> {
    let pos = r.pos;
    let head = r
        .fill_buf()
        .map_err(|e| Error::io(path, "split gzip members", e))?;
    if head.starts_with(&[0x1f, 0x8b]) {
        return Ok(());
    }
    if first && head.starts_with(b"ADB") {
        return Err(Error::unsupported(
            path,
            "split gzip members",
            "APK v3 (ADB) packages are not supported",
        ));
    }
    let shown = &head[..head.len().min(8)];
    Err(Error::bad(
        path,
        "split gzip members",
        format!(
            "expected a gzip member (1f 8b) at offset {pos}, found bytes {}",
            hex::encode(shown)
        ),
    ))
}

pub(super) struct Member {
    pub(super) data: Vec<u8>,
    /// The member's compressed bytes when recorded.
    pub(super) compressed: Vec<u8>,
}

/// The limit of a gzip member's decompressed bytes.
#[derive(Debug, Clone, Copy)]
pub(super) enum MemberLimit {
    Fixed(Limit),
    /// The first member of an APK or an APKINDEX: [`limits::APK_SIGNATURE`] when its tar
    /// starts with a `.SIGN.` entry (seen in its first 512 bytes), else this.
    SignatureOr(Limit),
}

/// Decompresses the gzip member at the reader's position (within `limit`, checked while it
/// streams: past it, an [`Exceeded`] error), leaving the reader exactly after its trailer.
pub(super) fn gunzip_member<R: Read>(
    r: &mut Counted<R>,
    record: bool,
    limit: MemberLimit,
) -> io::Result<Member> {
    let first = match limit {
        MemberLimit::Fixed(l) | MemberLimit::SignatureOr(l) => l,
    };
    if record {
        r.record = Some(Vec::new());
        r.record_limit = Some(first);
    }
    let mut data = Vec::new();
    let res = (|| -> io::Result<()> {
        let mut dec = flate2::bufread::GzDecoder::new(&mut *r);
        let mut head = [0u8; 512];
        let n = super::read_up_to(&mut dec, &mut head)?;
        data.extend_from_slice(&head[..n]);
        let limit = match limit {
            MemberLimit::SignatureOr(_) if head.starts_with(b".SIGN.") => limits::APK_SIGNATURE,
            MemberLimit::Fixed(l) | MemberLimit::SignatureOr(l) => l,
        };
        if n as u64 <= limit.max {
            (&mut dec)
                .take(limit.max + 1 - n as u64)
                .read_to_end(&mut data)?;
        }
        if data.len() as u64 > limit.max {
            return Err(Exceeded::new(limit, "decompressed").into());
        }
        Ok(())
    })();
    r.record_limit = None;
    let compressed = r.record.take().unwrap_or_default();
    res?;
    Ok(Member { data, compressed })
}

/// The regular files of a small in-memory tar (end-of-archive blocks optional), in order.
pub(super) fn small_tar(data: &[u8]) -> io::Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut ar = tar::Archive::new(data);
    for entry in ar.entries()? {
        let mut entry = entry?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        if !entry.header().entry_type().is_file() {
            return Err(io::Error::other(format!(
                "entry {name:?} is not a regular file"
            )));
        }
        let mut content = Vec::new();
        entry.read_to_end(&mut content)?;
        out.push((name, content));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Writer

/// An RSA key that signs APKs; `name` is the key id written in `.SIGN.RSA.<name>` and the file
/// name its public half must have in a keys directory.
pub struct SigningKey {
    /// Key id, e.g. `btfgate-test.rsa.pub`.
    pub name: String,
    key: rsa::PrivateKey,
    public_pem: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Generates a new key of `bits` bits (from the OS random source).
    pub fn generate(name: impl Into<String>, bits: usize) -> anyhow::Result<Self> {
        let mut rng = Urandom(File::open("/dev/urandom").context("open /dev/urandom")?);
        let key = rsa::PrivateKey::new(&mut rng, bits)
            .map_err(|e| anyhow!("generate a {bits}-bit RSA key: {e}"))?;
        Self::new(name.into(), key)
    }

    /// Loads a private key from PEM: PKCS#8 (`PRIVATE KEY`) or PKCS#1 (`RSA PRIVATE KEY`).
    pub fn from_pem(name: impl Into<String>, pem: &str) -> anyhow::Result<Self> {
        let key = if pem.contains("-----BEGIN RSA PRIVATE KEY-----") {
            rsa::PrivateKey::from_pkcs1_pem(pem.trim())
                .map_err(|e| anyhow!("read PKCS#1 RSA private key: {e}"))?
        } else if pem.contains("-----BEGIN PRIVATE KEY-----") {
            rsa::PrivateKey::from_pkcs8_pem(pem.trim())
                .map_err(|e| anyhow!("read PKCS#8 private key: {e}"))?
        } else {
            bail!("expected a PEM 'PRIVATE KEY' or 'RSA PRIVATE KEY'");
        };
        Self::new(name.into(), key)
    }

    fn new(name: String, key: rsa::PrivateKey) -> anyhow::Result<Self> {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            bail!("key name {name:?} cannot be a file name in a keys directory");
        }
        let public_pem = key
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| anyhow!("encode public key: {e}"))?;
        Ok(SigningKey {
            name,
            key,
            public_pem,
        })
    }

    /// The public key as PEM SPKI (`PUBLIC KEY`): save it as `<keys_dir>/<name>`.
    pub fn public_pem(&self) -> String {
        self.public_pem.clone()
    }

    /// The private key as PEM PKCS#8 (`PRIVATE KEY`), to keep a key across runs.
    pub fn private_pem(&self) -> anyhow::Result<String> {
        let pem = self
            .key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| anyhow!("encode private key: {e}"))?;
        Ok(pem.as_str().to_string())
    }

    pub(super) fn sign_sha1(&self, bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
        self.key
            .pkcs1v15_sign_prehash::<Sha1>(&Sha1::digest(bytes))
            .map_err(|e| anyhow!("sign with key {}: {e}", self.name))
    }
}

/// `/dev/urandom` as a crypto RNG: rsa 0.10 re-exports no OS RNG for `PrivateKey::new`
/// (its own `Generate` only makes keys of the default size).
struct Urandom(File);

impl rsa::rand_core::TryRng for Urandom {
    type Error = io::Error;
    fn try_next_u32(&mut self) -> io::Result<u32> {
        let mut b = [0u8; 4];
        self.0.read_exact(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    fn try_next_u64(&mut self) -> io::Result<u64> {
        let mut b = [0u8; 8];
        self.0.read_exact(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> io::Result<()> {
        self.0.read_exact(dst)
    }
}

impl rsa::rand_core::TryCryptoRng for Urandom {}

/// Packs the directory tree `root` into an APK v2 at `out`, the way abuild does: a data tar
/// (entries sorted bytewise, uid/gid 0, PAX `APK-TOOLS.checksum.SHA1` on files and symlinks,
/// end-of-archive blocks kept), a control tar holding `.PKGINFO` (`pkginfo` plus the computed
/// `size` and `datahash`), and, with `key`, a signature tar `.SIGN.RSA.<key.name>` over the
/// SHA-1 of the control member; control and signature tars have their end blocks cut.
///
/// `pkginfo` must hold `pkgname`, `pkgver` and `arch`, and neither `size` nor `datahash`.
/// `size` approximates abuild's `du -sk`: regular files rounded up to 4 KiB, 4 KiB per
/// directory (root included), symlinks free. Hard links are stored as separate files.
/// Modification times are the files' own, clamped to `$SOURCE_DATE_EPOCH` when set.
/// The package is written to a temporary file next to `out` and renamed at the end.
pub fn write_apk(
    root: &Path,
    pkginfo: &[(&str, String)],
    key: Option<&SigningKey>,
    out: &Path,
) -> anyhow::Result<()> {
    write_apk_inner(root, pkginfo, key, out)
        .with_context(|| format!("write APK {} from {}", out.display(), root.display()))
}

fn write_apk_inner(
    root: &Path,
    pkginfo: &[(&str, String)],
    key: Option<&SigningKey>,
    out: &Path,
) -> anyhow::Result<()> {
    for required in ["pkgname", "pkgver", "arch"] {
        if !pkginfo.iter().any(|(k, _)| *k == required) {
            bail!("pkginfo lacks {required}");
        }
    }
    for (k, v) in pkginfo {
        if *k == "size" || *k == "datahash" {
            bail!("pkginfo must not set {k}: it is computed");
        }
        if k.is_empty() || k.contains(|c: char| c.is_whitespace() || c == '=') || v.contains('\n') {
            bail!("pkginfo field {k:?} = {v:?} cannot be written as one 'key = value' line");
        }
    }
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let base = out
        .file_name()
        .ok_or_else(|| anyhow!("output path {} has no file name", out.display()))?
        .to_string_lossy()
        .into_owned();
    let entries = collect_tree(root).with_context(|| format!("list {}", root.display()))?;

    // Data member first, into a temporary file: the control member needs its hash.
    let data_tmp = TempFile::create(dir, &format!(".{base}.data"))?;
    let (datahash, installed) = {
        let f = BufWriter::new(data_tmp.file()?);
        let hashing = HashingWriter {
            inner: f,
            hasher: Sha256::new(),
        };
        let mut gz = GzEncoder::new(hashing, Compression::default());
        let installed = write_data_tar(&entries, &mut gz)
            .with_context(|| format!("pack {}", root.display()))?;
        let mut hashing = gz.finish().context("compress data tar")?;
        hashing.inner.flush().context("write data member")?;
        (hex::encode(hashing.hasher.finalize()), installed)
    };

    let mut text = String::from("# Generated by btfgate\n");
    for (k, v) in pkginfo {
        text.push_str(&format!("{k} = {v}\n"));
    }
    text.push_str(&format!("size = {installed}\ndatahash = {datahash}\n"));
    let mut control_tar = Vec::new();
    tar_entry(
        &mut control_tar,
        &small_header(".PKGINFO", text.len() as u64)?,
        text.as_bytes(),
    )?;
    let control_gz = gzip(&control_tar)?;

    let out_tmp = TempFile::create(dir, &format!(".{base}"))?;
    {
        let mut w = BufWriter::new(out_tmp.file()?);
        if let Some(key) = key {
            let sig = key.sign_sha1(&control_gz)?;
            let mut sig_tar = Vec::new();
            let name = format!(".SIGN.RSA.{}", key.name);
            tar_entry(&mut sig_tar, &small_header(&name, sig.len() as u64)?, &sig)?;
            w.write_all(&gzip(&sig_tar)?)
                .context("write signature member")?;
        }
        w.write_all(&control_gz).context("write control member")?;
        let mut data = File::open(&data_tmp.path).context("reopen data member")?;
        io::copy(&mut data, &mut w).context("write data member")?;
        let f = w
            .into_inner()
            .map_err(|e| e.into_error())
            .context("write package")?;
        f.sync_all().context("sync package")?;
    }
    out_tmp.persist(out)?;
    Ok(())
}

/// A file in the destination directory removed on drop unless persisted.
struct TempFile {
    path: PathBuf,
    keep: bool,
    /// Removed by an interrupt while it exists.
    _scratch: crate::scratch::Scratch<()>,
}

impl TempFile {
    fn create(dir: &Path, prefix: &str) -> anyhow::Result<Self> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static SEQ: AtomicU64 = AtomicU64::new(0);
        for _ in 0..100 {
            let n = SEQ.fetch_add(1, Ordering::Relaxed);
            let path = dir.join(format!("{prefix}.tmp-{}-{n}", std::process::id()));
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(_) => {
                    let _scratch = crate::scratch::Scratch::new((), &path);
                    return Ok(TempFile {
                        path,
                        keep: false,
                        _scratch,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e).with_context(|| format!("create {}", path.display())),
            }
        }
        bail!("could not create a temporary file in {}", dir.display())
    }

    fn file(&self) -> anyhow::Result<File> {
        std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&self.path)
            .with_context(|| format!("open {}", self.path.display()))
    }

    fn persist(mut self, to: &Path) -> anyhow::Result<()> {
        std::fs::rename(&self.path, to)
            .with_context(|| format!("rename {} to {}", self.path.display(), to.display()))?;
        self.keep = true;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

struct HashingWriter<W, D> {
    inner: W,
    hasher: D,
}

impl<W: Write, D: Digest> Write for HashingWriter<W, D> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

pub(super) fn gzip(bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::best());
    gz.write_all(bytes).context("compress")?;
    gz.finish().context("compress")
}

/// One entry of the tree to pack: its archive path (`a/b`, `/`-separated) and source path.
struct TreeEntry {
    name: Vec<u8>,
    src: PathBuf,
    meta: std::fs::Metadata,
}

fn collect_tree(root: &Path) -> anyhow::Result<Vec<TreeEntry>> {
    let meta = std::fs::metadata(root)?;
    if !meta.is_dir() {
        bail!("not a directory");
    }
    let mut out = Vec::new();
    let mut stack = vec![(root.to_path_buf(), Vec::<u8>::new())];
    while let Some((dir, prefix)) = stack.pop() {
        for de in std::fs::read_dir(&dir).with_context(|| format!("read {}", dir.display()))? {
            let de = de.with_context(|| format!("read {}", dir.display()))?;
            let src = de.path();
            let meta = std::fs::symlink_metadata(&src)
                .with_context(|| format!("stat {}", src.display()))?;
            let mut name = prefix.clone();
            if !name.is_empty() {
                name.push(b'/');
            }
            name.extend_from_slice(de.file_name().as_encoded_bytes());
            if meta.is_dir() {
                stack.push((src.clone(), name.clone()));
            } else if !meta.is_file() && !meta.file_type().is_symlink() {
                bail!(
                    "{}: only directories, regular files and symlinks can be packed",
                    src.display()
                );
            }
            out.push(TreeEntry { name, src, meta });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Writes the data tar of `entries` to `w`; returns the installed size (see [`write_apk`]).
fn write_data_tar(entries: &[TreeEntry], w: &mut impl Write) -> anyhow::Result<u64> {
    use std::os::unix::fs::PermissionsExt;
    const DU_BLOCK: u64 = 4096;
    let epoch = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    let mut installed = DU_BLOCK; // the root directory
    for e in entries {
        let mtime = e
            .meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        let mtime = epoch.map_or(mtime, |ep| mtime.min(ep));
        let mode = e.meta.permissions().mode() & 0o7777;
        let mut pax: Vec<(&str, Vec<u8>)> = Vec::new();
        let mut h = tar::Header::new_ustar();
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(mtime);
        h.set_username("root")?;
        h.set_groupname("root")?;
        let ft = e.meta.file_type();
        if ft.is_dir() {
            installed += DU_BLOCK;
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
            let mut name = e.name.clone();
            name.push(b'/');
            set_name(&mut h, &name, &mut pax);
            h.set_cksum();
            write_pax(w, &e.name, &pax)?;
            tar_entry(w, &h, &[])?;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&e.src)
                .with_context(|| format!("readlink {}", e.src.display()))?;
            let target = target.as_os_str().as_encoded_bytes().to_vec();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            set_name(&mut h, &e.name, &mut pax);
            if target.len() <= 100 {
                h.as_old_mut().linkname[..target.len()].copy_from_slice(&target);
            } else {
                h.as_old_mut().linkname.copy_from_slice(&target[..100]);
                pax.push(("linkpath", target.clone()));
            }
            pax.push((
                "APK-TOOLS.checksum.SHA1",
                hex::encode(Sha1::digest(&target)).into_bytes(),
            ));
            h.set_cksum();
            write_pax(w, &e.name, &pax)?;
            tar_entry(w, &h, &[])?;
        } else {
            let size = e.meta.len();
            installed += size.div_ceil(DU_BLOCK) * DU_BLOCK;
            let mut hasher = Sha1::new();
            let mut f = File::open(&e.src).with_context(|| format!("open {}", e.src.display()))?;
            let hashed = io::copy(&mut f, &mut DigestWriter(&mut hasher))
                .with_context(|| format!("read {}", e.src.display()))?;
            if hashed != size {
                bail!("{} changed size while being packed", e.src.display());
            }
            pax.push((
                "APK-TOOLS.checksum.SHA1",
                hex::encode(hasher.finalize()).into_bytes(),
            ));
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(size);
            set_name(&mut h, &e.name, &mut pax);
            h.set_cksum();
            write_pax(w, &e.name, &pax)?;
            w.write_all(h.as_bytes())?;
            let mut f = File::open(&e.src).with_context(|| format!("open {}", e.src.display()))?;
            let copied = io::copy(&mut (&mut f).take(size), w)
                .with_context(|| format!("read {}", e.src.display()))?;
            if copied != size {
                bail!("{} changed size while being packed", e.src.display());
            }
            pad(w, size)?;
        }
    }
    w.write_all(&[0u8; 2 * BLOCK])?;
    Ok(installed)
}

struct DigestWriter<'a, D>(&'a mut D);

impl<D: Digest> Write for DigestWriter<'_, D> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Sets the ustar name (with prefix split when needed), falling back to a PAX `path` record.
fn set_name(h: &mut tar::Header, name: &[u8], pax: &mut Vec<(&'static str, Vec<u8>)>) {
    if name.len() <= 100 {
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        return;
    }
    // ustar: prefix (at most 155 bytes) + '/' + name (1 to 100 bytes).
    let split = name
        .iter()
        .enumerate()
        .filter(|(_, c)| **c == b'/')
        .map(|(i, _)| i)
        .find(|&i| i <= 155 && name.len() - i - 1 <= 100 && name.len() - i > 1);
    if let (Some(i), Some(ustar)) = (split, h.as_ustar_mut()) {
        ustar.prefix[..i].copy_from_slice(&name[..i]);
        ustar.name[..name.len() - i - 1].copy_from_slice(&name[i + 1..]);
        return;
    }
    h.as_old_mut().name.copy_from_slice(&name[..100]);
    pax.push(("path", name.to_vec()));
}

/// Writes a PAX extended header entry (`x`) with `records`, when there are any.
fn write_pax(w: &mut impl Write, name: &[u8], records: &[(&str, Vec<u8>)]) -> anyhow::Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    let mut body = Vec::new();
    for (k, v) in records {
        let rest = k.len() + v.len() + 3; // ' ', '=', '\n'
        let mut len = rest + 1;
        loop {
            let total = rest + len.to_string().len();
            if total == len {
                break;
            }
            len = total;
        }
        body.extend_from_slice(format!("{len} {k}=").as_bytes());
        body.extend_from_slice(v);
        body.push(b'\n');
    }
    let mut h = tar::Header::new_ustar();
    let base = name.rsplit(|c| *c == b'/').next().unwrap_or(name);
    let mut pax_name = b"PaxHeaders/".to_vec();
    pax_name.extend_from_slice(base);
    pax_name.truncate(100);
    h.as_old_mut().name[..pax_name.len()].copy_from_slice(&pax_name);
    h.set_entry_type(tar::EntryType::XHeader);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(body.len() as u64);
    h.set_cksum();
    tar_entry(w, &h, &body)
}

pub(super) fn small_header(name: &str, size: u64) -> anyhow::Result<tar::Header> {
    let mut h = tar::Header::new_ustar();
    if name.len() > 100 {
        bail!("tar entry name {name:?} is longer than 100 bytes");
    }
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_username("root")?;
    h.set_groupname("root")?;
    h.set_mtime(0);
    h.set_size(size);
    h.set_cksum();
    Ok(h)
}

/// Writes a tar header, `data` and the padding to the next 512-byte block.
pub(super) fn tar_entry(w: &mut impl Write, h: &tar::Header, data: &[u8]) -> anyhow::Result<()> {
    w.write_all(h.as_bytes())?;
    w.write_all(data)?;
    pad(w, data.len() as u64)
}

fn pad(w: &mut impl Write, len: u64) -> anyhow::Result<()> {
    let rem = (len % BLOCK as u64) as usize;
    if rem != 0 {
        w.write_all(&[0u8; BLOCK][..BLOCK - rem])?;
    }
    Ok(())
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
        assert!(PkgInfo::parse("pkgname alpine\n").is_err());
        assert!(PkgInfo::parse("pkgname=alpine\n").is_err());
        assert_eq!(PkgInfo::parse("url =\n").unwrap().get("url"), Some(""));
    }

    fn gz(bytes: &[u8]) -> Vec<u8> {
        gzip(bytes).unwrap()
    }

    #[test]
    fn members_split_at_exact_boundaries() {
        let a = gz(b"first member");
        let b = gz(&vec![7u8; 100_000]);
        let c = gz(b"third");
        let all = [a.clone(), b.clone(), c.clone()].concat();
        // A tiny buffer forces members to straddle buffer refills.
        let mut r = Counted::new(BufReader::with_capacity(7, &all[..]));
        let m = gunzip_member(&mut r, true, MemberLimit::Fixed(limits::APK_CONTROL)).unwrap();
        assert_eq!(m.data, b"first member");
        assert_eq!(m.compressed, a);
        assert_eq!(r.pos, a.len() as u64);
        let m = gunzip_member(&mut r, false, MemberLimit::Fixed(limits::APK_CONTROL)).unwrap();
        assert_eq!(m.data.len(), 100_000);
        assert_eq!(r.pos, (a.len() + b.len()) as u64);
        let m = gunzip_member(&mut r, true, MemberLimit::Fixed(limits::APK_CONTROL)).unwrap();
        assert_eq!(m.data, b"third");
        assert_eq!(m.compressed, c);
        assert_eq!(r.pos, all.len() as u64);
        assert!(r.at_eof().unwrap());
    }

    #[test]
    fn corrupt_member_is_an_error() {
        let mut a = gz(b"some text that compresses a little, some text that compresses");
        let n = a.len();
        a[n - 6] ^= 0xff; // CRC
        let mut r = Counted::new(BufReader::new(&a[..]));
        assert!(gunzip_member(&mut r, false, MemberLimit::Fixed(limits::APK_CONTROL)).is_err());
        let mut r = Counted::new(BufReader::new(&b"not gzip"[..]));
        assert!(gunzip_member(&mut r, false, MemberLimit::Fixed(limits::APK_CONTROL)).is_err());
    }

    /// A member of empty stored blocks consumes input without output: its recording (the
    /// signed bytes) stops at the ceiling of its limit, and the member is refused naming it.
    #[test]
    fn empty_blocks_cannot_grow_the_recording() {
        let mut m = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
        for _ in 0..20_000 {
            m.extend_from_slice(&[0x00, 0x00, 0x00, 0xff, 0xff]);
        }
        m.extend_from_slice(&[0x03, 0x00, 0, 0, 0, 0, 0, 0, 0, 0]);
        let limit = Limit {
            max: 1000,
            ..limits::APK_CONTROL
        };
        let mut r = Counted::new(BufReader::new(&m[..]));
        let e = gunzip_member(&mut r, true, MemberLimit::Fixed(limit))
            .err()
            .unwrap();
        assert_eq!(limits::exceeded(&e).map(|x| x.limit), Some(limit), "{e}");
        let mut r = Counted::new(BufReader::new(&m[..]));
        let m = gunzip_member(&mut r, false, MemberLimit::Fixed(limit)).unwrap();
        assert!(m.data.is_empty());
    }

    /// The first member's limit follows its first entry: a signature tar gets the
    /// signature limit, anything else the other one; both are checked while it streams.
    #[test]
    fn first_member_limit_follows_its_first_entry() {
        let mut sig = Vec::new();
        tar_entry(
            &mut sig,
            &small_header(".SIGN.RSA.k", 100_000).unwrap(),
            &vec![0u8; 100_000],
        )
        .unwrap();
        let member = gz(&sig);
        let mut r = Counted::new(BufReader::new(&member[..]));
        let e = gunzip_member(&mut r, true, MemberLimit::SignatureOr(limits::APK_CONTROL))
            .err()
            .unwrap();
        assert_eq!(
            limits::exceeded(&e).map(|x| x.limit),
            Some(limits::APK_SIGNATURE)
        );
        let mut control = Vec::new();
        tar_entry(
            &mut control,
            &small_header(".PKGINFO", 100_000).unwrap(),
            &vec![b'#'; 100_000],
        )
        .unwrap();
        let member = gz(&control);
        let mut r = Counted::new(BufReader::new(&member[..]));
        gunzip_member(&mut r, true, MemberLimit::SignatureOr(limits::APK_CONTROL)).unwrap();
    }

    #[test]
    fn small_tar_tolerates_missing_end_blocks() {
        let mut t = Vec::new();
        tar_entry(&mut t, &small_header(".PKGINFO", 3).unwrap(), b"a=b").unwrap();
        tar_entry(&mut t, &small_header(".post-install", 2).unwrap(), b"#!").unwrap();
        let entries = small_tar(&t).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0], (".PKGINFO".to_string(), b"a=b".to_vec()));
        assert_eq!(entries[1].0, ".post-install");
    }

    #[test]
    fn pax_record_lengths_count_themselves() {
        let mut out = Vec::new();
        let v = vec![b'x'; 90]; // record length crosses 99 -> 100
        write_pax(&mut out, b"f", &[("k", v)]).unwrap();
        let body = &out[BLOCK..];
        let text = std::str::from_utf8(&body[..body.iter().position(|c| *c == b'\n').unwrap() + 1])
            .unwrap();
        let (len, _) = text.split_once(' ').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), text.len());
    }

    #[test]
    fn long_names_use_prefix_or_pax() {
        let mut h = tar::Header::new_ustar();
        let mut pax = Vec::new();
        let name = format!("lib/modules/6.1.0/kernel/{}/x.ko", "d".repeat(90));
        set_name(&mut h, name.as_bytes(), &mut pax);
        assert!(pax.is_empty());
        assert_eq!(h.path().unwrap().to_str().unwrap(), name);
        let mut h = tar::Header::new_ustar();
        let name = "n".repeat(120);
        set_name(&mut h, name.as_bytes(), &mut pax);
        assert_eq!(pax, vec![("path", name.into_bytes())]);
    }
}
