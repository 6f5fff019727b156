//! (feature `test-support`, tests only) Decompression bombs: packages of a few KB whose
//! members expand past a limit of [`crate::limits`]. A bomb is built without ever existing
//! expanded: its content is pieces of bytes and runs of zeros, and a run of zeros is one
//! compressed chunk repeated (gzip: deflate blocks cut at full flushes, inside one member;
//! xz, zstd, lz4: concatenated streams, frames or blocks, which the decoders read on).

use std::io::Write;

use flate2::{Compress, Compression, FlushCompress};
use sha2::Digest;

use crate::codec::Codec;

/// Zeros are compressed in chunks of this size.
const CHUNK: u64 = 8 << 20;

/// A compressed stream of pieces (bytes, runs of zeros), built piece by piece.
pub struct Stream {
    codec: Codec,
    out: Vec<u8>,
    /// gzip: CRC and length of the content so far.
    crc: flate2::Crc,
    /// The compressed form of one [`CHUNK`] of zeros.
    chunk: Option<Vec<u8>>,
    len: u64,
}

impl Stream {
    /// An empty stream in `codec` (gzip, xz, zstd, lz4 legacy frame, or none).
    pub fn new(codec: Codec) -> Result<Stream, String> {
        let mut out = Vec::new();
        match codec {
            Codec::Gzip => out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff]),
            Codec::Lz4 => out.extend_from_slice(&0x184c_2102u32.to_le_bytes()),
            Codec::None | Codec::Xz | Codec::Zstd => {}
            c => return Err(format!("no bomb in {}", c.name())),
        }
        Ok(Stream {
            codec,
            out,
            crc: flate2::Crc::new(),
            chunk: None,
            len: 0,
        })
    }

    /// Bytes of content so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `data` (small: it is compressed in memory).
    pub fn bytes(&mut self, data: &[u8]) -> Result<&mut Stream, String> {
        let piece = self.piece(data)?;
        self.out.extend_from_slice(&piece);
        self.crc.update(data);
        self.len += data.len() as u64;
        Ok(self)
    }

    /// Appends `n` zero bytes (never held: one compressed chunk, repeated).
    pub fn zeros(&mut self, n: u64) -> Result<&mut Stream, String> {
        let zeros = vec![0u8; CHUNK as usize];
        let mut left = n;
        while left >= CHUNK {
            if self.chunk.is_none() {
                self.chunk = Some(self.piece(&zeros)?);
            }
            if let Some(c) = &self.chunk {
                self.out.extend_from_slice(c);
            }
            self.crc.update(&zeros);
            self.len += CHUNK;
            left -= CHUNK;
        }
        self.bytes(&zeros[..left as usize])?;
        Ok(self)
    }

    /// The compressed stream.
    pub fn finish(mut self) -> Result<Vec<u8>, String> {
        if self.codec == Codec::Gzip {
            // A final empty fixed-Huffman block, then CRC-32 and length mod 2^32.
            self.out.extend_from_slice(&[0x03, 0x00]);
            self.out.extend_from_slice(&self.crc.sum().to_le_bytes());
            self.out.extend_from_slice(&(self.len as u32).to_le_bytes());
        }
        Ok(self.out)
    }

    /// `data` compressed as a piece that may be followed by any other piece.
    fn piece(&self, data: &[u8]) -> Result<Vec<u8>, String> {
        let err = |e: std::io::Error| format!("{} piece: {e}", self.codec.name());
        Ok(match self.codec {
            Codec::None => data.to_vec(),
            // Raw deflate ending at a full flush: byte-aligned, referring to nothing before.
            Codec::Gzip => {
                let mut c = Compress::new(Compression::best(), false);
                let mut out = Vec::with_capacity(data.len() / 500 + 64);
                let mut input = data;
                loop {
                    out.reserve(64 << 10);
                    let before = c.total_in();
                    c.compress_vec(input, &mut out, FlushCompress::Full)
                        .map_err(|e| format!("gzip piece: {e}"))?;
                    input = &input[(c.total_in() - before) as usize..];
                    if input.is_empty() && out.len() < out.capacity() {
                        break;
                    }
                }
                out
            }
            Codec::Xz => {
                let mut e = liblzma::write::XzEncoder::new(Vec::new(), 0);
                e.write_all(data).map_err(err)?;
                e.finish().map_err(err)?
            }
            Codec::Zstd => zstd::stream::encode_all(data, 1).map_err(err)?,
            // Legacy frame blocks: u32 length, then at most 8 MiB of input compressed.
            Codec::Lz4 => {
                let mut out = Vec::new();
                for block in data.chunks(8 << 20) {
                    let c = lz4::block::compress(block, None, false).map_err(err)?;
                    out.extend_from_slice(&(c.len() as u32).to_le_bytes());
                    out.extend_from_slice(&c);
                }
                out
            }
            c => return Err(format!("no bomb in {}", c.name())),
        })
    }
}

/// A ustar header of a regular file `path` of `size` bytes (mode 0644, owner 0).
pub fn tar_header(path: &str, size: u64) -> Result<[u8; 512], String> {
    tar_header_typed(path, size, tar::EntryType::Regular)
}

/// A ustar header of `kind` (`GNULongName`, `XHeader`, …) for `path` and `size`.
pub fn tar_header_typed(path: &str, size: u64, kind: tar::EntryType) -> Result<[u8; 512], String> {
    let mut h = tar::Header::new_gnu();
    h.set_path(path)
        .map_err(|e| format!("tar path {path}: {e}"))?;
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_cksum();
    let mut out = [0u8; 512];
    out.copy_from_slice(h.as_bytes());
    Ok(out)
}

/// Appends a tar member `path` of `size` zeros (header, content, padding) to `s`.
pub fn tar_zeros(s: &mut Stream, path: &str, size: u64) -> Result<(), String> {
    s.bytes(&tar_header(path, size)?)?;
    s.zeros(size.div_ceil(512) * 512)?;
    Ok(())
}

/// Appends a tar member `path` holding `data` to `s`.
pub fn tar_bytes(s: &mut Stream, path: &str, data: &[u8]) -> Result<(), String> {
    s.bytes(&tar_header(path, data.len() as u64)?)?;
    s.bytes(data)?;
    s.bytes(&vec![
        0u8;
        (data.len() as u64).div_ceil(512) as usize * 512
            - data.len()
    ])?;
    Ok(())
}

/// Ends a tar stream (two zero blocks) and finishes `s`.
pub fn tar_end(mut s: Stream) -> Result<Vec<u8>, String> {
    s.bytes(&[0u8; 1024])?;
    s.finish()
}

/// An x86 bzImage whose payload is `payload` (compressed, carrying its own 4-byte size
/// trailer when the codec needs one): boot protocol 2.15, one setup sector.
pub fn bzimage(payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 1024];
    out[0x1f1] = 1;
    out[0x202..0x206].copy_from_slice(b"HdrS");
    out[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
    out[0x248..0x24c].copy_from_slice(&0u32.to_le_bytes());
    out[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Writes to `s` a little-endian x86-64 ELF relocatable file (a module's shape) whose sections
/// are `sections` (name, size: zeros), followed by its section name table and section
/// headers, and `extra_headers` null section headers (a section table past
/// [`crate::limits::ELF_SECTIONS`]). Returns its length.
pub fn elf(s: &mut Stream, sections: &[(&str, u64)], extra_headers: u32) -> Result<u64, String> {
    let mut names = vec![0u8];
    let mut offs = Vec::new();
    for (n, _) in sections {
        offs.push(names.len() as u32);
        names.extend_from_slice(n.as_bytes());
        names.push(0);
    }
    let shstrtab_name = names.len() as u32;
    names.extend_from_slice(b".shstrtab\0");
    let data_len: u64 = sections.iter().map(|(_, l)| l).sum();
    let names_at = 64 + data_len;
    let shoff = (names_at + names.len() as u64).div_ceil(8) * 8;
    let count = sections.len() as u64 + 2 + u64::from(extra_headers);
    let start = s.len();
    let (e_shnum, e_shstrndx) = if count >= 0xff00 {
        (0u16, 0xffffu16)
    } else {
        (count as u16, sections.len() as u16 + 1)
    };
    let mut h = vec![0u8; 64];
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = 2; // ELFCLASS64
    h[5] = 1; // little-endian
    h[6] = 1; // EV_CURRENT
    h[16..18].copy_from_slice(&1u16.to_le_bytes()); // ET_REL
    h[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    h[20..24].copy_from_slice(&1u32.to_le_bytes());
    h[40..48].copy_from_slice(&shoff.to_le_bytes());
    h[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
    h[58..60].copy_from_slice(&64u16.to_le_bytes()); // e_shentsize
    h[60..62].copy_from_slice(&e_shnum.to_le_bytes());
    h[62..64].copy_from_slice(&e_shstrndx.to_le_bytes());
    s.bytes(&h)?;
    s.zeros(data_len)?;
    s.bytes(&names)?;
    s.bytes(&vec![0u8; (shoff - names_at - names.len() as u64) as usize])?;
    let shdr = |name: u32, ty: u32, off: u64, size: u64, link: u32| {
        let mut b = vec![0u8; 64];
        b[..4].copy_from_slice(&name.to_le_bytes());
        b[4..8].copy_from_slice(&ty.to_le_bytes());
        b[24..32].copy_from_slice(&off.to_le_bytes());
        b[32..40].copy_from_slice(&size.to_le_bytes());
        b[40..44].copy_from_slice(&link.to_le_bytes());
        b
    };
    // Section 0 carries the extended count and name table index when they overflow.
    let (size0, link0) = if e_shnum == 0 {
        (count, sections.len() as u32 + 1)
    } else {
        (0, 0)
    };
    let mut table = shdr(0, 0, 0, size0, link0);
    let mut at = 64u64;
    for ((_, len), name) in sections.iter().zip(&offs) {
        table.extend(shdr(*name, 1, at, *len, 0)); // SHT_PROGBITS
        at += len;
    }
    table.extend(shdr(shstrtab_name, 3, names_at, names.len() as u64, 0)); // SHT_STRTAB
    s.bytes(&table)?;
    s.zeros(64 * u64::from(extra_headers))?;
    Ok(s.len() - start)
}

/// A .deb (`ar` archive) of `debian-binary`, `control.tar<ext>` and `data.tar<ext>`, the
/// members given compressed.
pub fn deb(control: (&str, &[u8]), data: (&str, &[u8])) -> Vec<u8> {
    ar_of(&[
        (b"debian-binary", b"2.0\n"),
        (control.0.as_bytes(), control.1),
        (data.0.as_bytes(), data.1),
    ])
}

/// An `ar` archive of `members` (names up to 16 bytes, sizes as given), as a .deb is.
pub fn ar_of(members: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = b"!<arch>\n".to_vec();
    for (name, data) in members {
        let mut h = format!(
            "{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
            String::from_utf8_lossy(name),
            1_700_000_000u64,
            0,
            0,
            "100644",
            data.len()
        )
        .into_bytes();
        h.truncate(60);
        out.extend_from_slice(&h);
        out.extend_from_slice(data);
        if data.len() % 2 == 1 {
            out.push(b'\n');
        }
    }
    out
}

/// A control tar (`./control` of a kernel package) compressed with `codec`.
pub fn deb_control(codec: Codec) -> Result<Vec<u8>, String> {
    let mut s = Stream::new(codec)?;
    tar_bytes(
        &mut s,
        "./control",
        b"Package: linux-image-bomb\nVersion: 1\nArchitecture: amd64\n",
    )?;
    tar_end(s)
}

/// An unsigned APK v2 whose data member (a single gzip member) is `data`: its control member
/// holds a `.PKGINFO` with the data member's `datahash`. Read it with `--allow-untrusted`.
pub fn apk(data: &[u8]) -> Result<Vec<u8>, String> {
    let pkginfo = format!(
        "pkgname = linux-bomb\npkgver = 1-r0\narch = x86_64\nsize = 1\ndatahash = {}\n",
        hex::encode(sha2::Sha256::digest(data))
    );
    let mut c = Stream::new(Codec::Gzip)?;
    tar_bytes(&mut c, ".PKGINFO", pkginfo.as_bytes())?;
    let mut out = c.finish()?;
    out.extend_from_slice(data);
    Ok(out)
}

/// A tar member header carrying the `APK-TOOLS.checksum.SHA1` PAX record an APK data tar
/// needs before a file (any value: a bomb is refused before its checksum is compared).
pub fn apk_checksum_header() -> Result<Vec<u8>, String> {
    let body = format!(" APK-TOOLS.checksum.SHA1={}\n", "0".repeat(40));
    // The record's length counts its own digits: 66 bytes + "68".
    let record = format!("{}{body}", body.len() + 2);
    let mut out =
        tar_header_typed("PaxHeaders/x", record.len() as u64, tar::EntryType::XHeader)?.to_vec();
    out.extend_from_slice(record.as_bytes());
    out.resize(1024, 0);
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::io::Read;

    /// Every codec's bomb decodes to exactly its content (a gzip bomb is one member).
    #[test]
    fn bombs_decode_to_their_content() {
        for codec in [Codec::Gzip, Codec::Xz, Codec::Zstd, Codec::Lz4] {
            let mut s = Stream::new(codec).unwrap();
            s.bytes(b"head").unwrap();
            s.zeros(3 * CHUNK + 5).unwrap();
            s.bytes(b"tail").unwrap();
            let want = s.len();
            let blob = s.finish().unwrap();
            assert!(blob.len() < 300 << 10, "{codec:?}: {} bytes", blob.len());
            let mut out = Vec::new();
            let mut dec: Box<dyn Read> = if codec == Codec::Gzip {
                Box::new(flate2::read::GzDecoder::new(&blob[..]))
            } else {
                codec.decoder(&blob[..]).unwrap()
            };
            dec.read_to_end(&mut out).unwrap();
            assert_eq!(out.len() as u64, want, "{codec:?}");
            assert_eq!(&out[..4], b"head");
            assert_eq!(&out[out.len() - 4..], b"tail");
            assert!(out[4..out.len() - 4].iter().all(|&b| b == 0));
        }
    }

    #[test]
    fn elf_and_bzimage_parse() {
        let mut s = Stream::new(Codec::None).unwrap();
        elf(&mut s, &[(".modinfo", 16), (".BTF", 100)], 0).unwrap();
        let bytes = s.finish().unwrap();
        let secs = crate::kernel::elf::sections(&bytes).unwrap();
        assert_eq!(secs.btf.map(|(_, l)| l), Some(100));
        assert_eq!(secs.modinfo.map(|(_, l)| l), Some(16));
        let img = bzimage(b"\x28\xb5\x2f\xfd rest");
        let p = crate::kernel::bzimage::payload(&img).unwrap();
        assert_eq!((p.codec, p.offset), (Codec::Zstd, 1024));
    }
}
