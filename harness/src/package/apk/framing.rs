//! APK v2 framing: gzip members split at exact byte offsets (counted, and recorded for signing), small in-memory tars, and hashing a file's byte range; shared by packages and APKINDEX.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::Path;

use sha1::Digest;

use crate::limits::{self, Exceeded, Limit};
use crate::{Error, Result};

/// Feeds the bytes `range` of the file at `path` to `h` (a file that shrank is bad input).
pub(in crate::package) fn hash_file_range(
    path: &Path,
    range: &Range<u64>,
    h: &mut impl Digest,
) -> Result<()> {
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
pub(in crate::package) struct Counted<R> {
    inner: BufReader<R>,
    pub(in crate::package) pos: u64,
    record: Option<Vec<u8>>,
    /// What the recording may grow to ([`limits::compressed_ceiling`] of this limit).
    record_limit: Option<Limit>,
}

impl<R: Read> Counted<R> {
    pub(in crate::package) fn new(inner: BufReader<R>) -> Self {
        Counted {
            inner,
            pos: 0,
            record: None,
            record_limit: None,
        }
    }

    pub(in crate::package) fn at_eof(&mut self) -> io::Result<bool> {
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
pub(in crate::package) fn check_gzip_magic<R: Read>(
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

pub(in crate::package) struct Member {
    pub(in crate::package) data: Vec<u8>,
    /// The member's compressed bytes when recorded.
    pub(in crate::package) compressed: Vec<u8>,
}

/// The limit of a gzip member's decompressed bytes.
#[derive(Debug, Clone, Copy)]
pub(in crate::package) enum MemberLimit {
    Fixed(Limit),
    /// The first member of an APK or an APKINDEX: [`limits::APK_SIGNATURE`] when its tar
    /// starts with a `.SIGN.` entry (seen in its first 512 bytes), else this.
    SignatureOr(Limit),
}

/// Decompresses the gzip member at the reader's position (within `limit`, checked while it
/// streams: past it, an [`Exceeded`] error), leaving the reader exactly after its trailer.
pub(in crate::package) fn gunzip_member<R: Read>(
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
        let n = crate::package::read_up_to(&mut dec, &mut head)?;
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
pub(in crate::package) fn small_tar(data: &[u8]) -> io::Result<Vec<(String, Vec<u8>)>> {
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

#[cfg(test)]
mod tests {
    use super::super::writer::{gzip, small_tar_bytes};
    use super::*;

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
        let sig = small_tar_bytes(&[(".SIGN.RSA.k", &vec![0u8; 100_000][..])], false).unwrap();
        let member = gz(&sig);
        let mut r = Counted::new(BufReader::new(&member[..]));
        let e = gunzip_member(&mut r, true, MemberLimit::SignatureOr(limits::APK_CONTROL))
            .err()
            .unwrap();
        assert_eq!(
            limits::exceeded(&e).map(|x| x.limit),
            Some(limits::APK_SIGNATURE)
        );
        let control = small_tar_bytes(&[(".PKGINFO", &vec![b'#'; 100_000][..])], false).unwrap();
        let member = gz(&control);
        let mut r = Counted::new(BufReader::new(&member[..]));
        gunzip_member(&mut r, true, MemberLimit::SignatureOr(limits::APK_CONTROL)).unwrap();
    }

    #[test]
    fn small_tar_tolerates_missing_end_blocks() {
        let files: &[(&str, &[u8])] = &[(".PKGINFO", b"a=b"), (".post-install", b"#!")];
        let t = small_tar_bytes(files, false).unwrap();
        let entries = small_tar(&t).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0], (".PKGINFO".to_string(), b"a=b".to_vec()));
        assert_eq!(entries[1].0, ".post-install");
    }
}
