//! Bytes from a package kept in memory up to a threshold and past it in an anonymous
//! temporary file (unlinked from the start: nothing is left behind, even on SIGKILL), with a
//! hard limit checked on every write. Large modules, the kernel image and the vmlinux go
//! through here, so that their size costs disk, not memory.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;

use crate::limits::{Exceeded, Limit};

/// A growing spool; [`Spool::finish`] gives the [`Spooled`] bytes.
pub struct Spool {
    mem: Vec<u8>,
    file: Option<BufWriter<File>>,
    len: u64,
    limit: Limit,
    in_memory: u64,
    what: String,
}

impl Spool {
    /// A spool holding up to `in_memory` bytes in memory and refusing more than `limit`;
    /// `what` names the member in errors.
    pub fn new(limit: Limit, in_memory: u64, what: impl Into<String>) -> Spool {
        Spool {
            mem: Vec::new(),
            file: None,
            len: 0,
            limit,
            in_memory,
            what: what.into(),
        }
    }

    /// Reserves room in memory for `n` more bytes (a size the caller expects), within the
    /// in-memory threshold.
    pub fn reserve(&mut self, n: u64) {
        if self.file.is_none() {
            let room = self.in_memory.saturating_sub(self.len).min(n);
            self.mem.reserve(usize::try_from(room).unwrap_or(0));
        }
    }

    /// Copies `r` to the end of the spool; the bytes copied. An [`Exceeded`] error (see
    /// [`crate::limits::exceeded`]) when the limit is passed, or the reader's own error.
    pub fn fill_from(&mut self, r: &mut dyn Read) -> io::Result<u64> {
        let mut buf = vec![0u8; 64 << 10];
        let mut total = 0u64;
        loop {
            let n = match r.read(&mut buf) {
                Ok(0) => return Ok(total),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.write_all(&buf[..n])?;
            total += n as u64;
        }
    }

    /// The spooled bytes.
    pub fn finish(self) -> io::Result<Spooled> {
        match self.file {
            None => Ok(Spooled::Memory(self.mem)),
            Some(w) => {
                let file = w.into_inner().map_err(|e| e.into_error())?;
                Ok(Spooled::File {
                    file,
                    len: self.len,
                })
            }
        }
    }
}

impl Write for Spool {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let new_len = self.len.saturating_add(buf.len() as u64);
        if new_len > self.limit.max {
            return Err(Exceeded::new(
                self.limit,
                format!("{}: more than {} bytes", self.what, self.limit.max),
            )
            .into());
        }
        if self.file.is_none() && new_len > self.in_memory {
            let mut w = BufWriter::with_capacity(256 << 10, tempfile::tempfile()?);
            w.write_all(&self.mem)?;
            self.mem = Vec::new();
            self.file = Some(w);
        }
        match &mut self.file {
            Some(w) => w.write_all(buf)?,
            None => self.mem.extend_from_slice(buf),
        }
        self.len = new_len;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.file {
            Some(w) => w.flush(),
            None => Ok(()),
        }
    }
}

/// Spooled bytes: in memory, or in an anonymous temporary file.
#[derive(Debug)]
pub enum Spooled {
    Memory(Vec<u8>),
    File { file: File, len: u64 },
}

impl Spooled {
    pub fn len(&self) -> u64 {
        match self {
            Spooled::Memory(v) => v.len() as u64,
            Spooled::File { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `len` bytes at `offset` (the caller bounds `len`), fewer at the end.
    pub fn read_at(&self, offset: u64, len: u64) -> io::Result<Vec<u8>> {
        let end = offset.saturating_add(len).min(self.len());
        let start = offset.min(end);
        match self {
            Spooled::Memory(v) => Ok(v[start as usize..end as usize].to_vec()),
            Spooled::File { file, .. } => {
                let mut out = vec![0u8; (end - start) as usize];
                file.read_exact_at(&mut out, start)?;
                Ok(out)
            }
        }
    }

    /// A reader of `len` bytes at `offset` (fewer at the end).
    pub fn reader(&self, offset: u64, len: u64) -> Box<dyn Read + Send + '_> {
        let end = offset.saturating_add(len).min(self.len());
        let start = offset.min(end);
        match self {
            Spooled::Memory(v) => Box::new(&v[start as usize..end as usize]),
            Spooled::File { file, .. } => Box::new(io::BufReader::with_capacity(
                256 << 10,
                FileRange {
                    file,
                    pos: start,
                    end,
                },
            )),
        }
    }
}

/// Positional reads of a byte range of a file (no shared file offset), through a reference or
/// an `Arc` (threads reading one file each at their own place).
pub(crate) struct FileRange<F> {
    pub(crate) file: F,
    pub(crate) pos: u64,
    pub(crate) end: u64,
}

impl<F: std::ops::Deref<Target = File>> Read for FileRange<F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let room = usize::try_from(self.end - self.pos).unwrap_or(usize::MAX);
        let n = buf.len().min(room);
        if n == 0 {
            return Ok(0);
        }
        let got = self.file.read_at(&mut buf[..n], self.pos)?;
        self.pos += got as u64;
        Ok(got)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::limits;

    #[test]
    fn spills_past_the_threshold_and_refuses_past_the_limit() {
        let limit = Limit {
            max: 100,
            ..limits::MODULE_ELF
        };
        let mut s = Spool::new(limit, 10, "m.ko");
        s.fill_from(&mut &[7u8; 8][..]).unwrap();
        s.fill_from(&mut &[8u8; 92][..]).unwrap();
        let e = s.write_all(&[9]).unwrap_err();
        assert_eq!(limits::exceeded(&e).unwrap().limit, limit);
        let spooled = s.finish().unwrap();
        assert!(matches!(spooled, Spooled::File { len: 100, .. }));
        assert_eq!(spooled.read_at(6, 4).unwrap(), vec![7, 7, 8, 8]);
        let mut tail = Vec::new();
        spooled.reader(98, 10).read_to_end(&mut tail).unwrap();
        assert_eq!(tail, vec![8, 8]);

        let mut small = Spool::new(limit, 10, "m.ko");
        small.write_all(b"abc").unwrap();
        let small = small.finish().unwrap();
        assert!(matches!(&small, Spooled::Memory(v) if v == b"abc"));
        assert_eq!(small.read_at(1, 100).unwrap(), b"bc");
    }
}
