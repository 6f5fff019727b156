//! x86 bzImage: locate the compressed payload through the setup header and decompress it to
//! the vmlinux ELF (followed by the relocation table).

use super::share::{InputMap, Mapped};
use crate::codec::{Codec, Decompress};
use crate::limits;
use crate::spool::{Spool, Spooled};
use crate::{Error, Result};

/// The phase of setup header errors.
const HEADER: &str = "read bzImage setup header";

/// What the setup header says about the payload.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Payload {
    pub protocol: u16,
    pub setup_sects: u8,
    /// Offset of the payload in the file.
    pub offset: usize,
    /// Payload length in bytes, as in the header (includes the 4-byte size trailer).
    pub len: usize,
    pub codec: Codec,
}

/// Reads the setup header of `image` (`HdrS` at 0x202, `payload_offset/length` at 0x248/0x24c).
pub fn payload(image: &[u8]) -> Result<Payload> {
    let p = header(image, image.len() as u64)?;
    let magic = &image[p.offset..(p.offset + 8).min(p.offset + p.len)];
    Ok(Payload {
        codec: Codec::detect(magic),
        ..p
    })
}

/// [`payload`] of a spooled image: reads only its first [`HEAD`] bytes and the payload's magic.
pub fn spooled_payload(image: &Spooled) -> Result<Payload> {
    let head = image
        .read_at(0, HEAD as u64)
        .map_err(|e| Error::failed(HEADER, format!("read the setup header: {e}")))?;
    let p = header(&head, image.len())?;
    let magic = image
        .read_at(p.offset as u64, 8.min(p.len as u64))
        .map_err(|e| Error::failed(HEADER, format!("read the payload: {e}")))?;
    Ok(Payload {
        codec: Codec::detect(&magic),
        ..p
    })
}

/// The bytes of an image's head that [`payload`] and [`version_string`] read: the boot sector,
/// the setup header and the version string (`kernel_version` is a 16-bit offset past 0x200).
pub const HEAD: usize = 0x200 + 0x1_0000 + 512;

/// The setup header of an image of `len` bytes whose first bytes are `head` (codec unknown).
fn header(head: &[u8], len: u64) -> Result<Payload> {
    if head.len() < 0x250 {
        return Err(Error::failed(
            HEADER,
            format!(
                "{} bytes is too short for a bzImage setup header",
                head.len()
            ),
        ));
    }
    if &head[0x202..0x206] != b"HdrS" {
        return Err(Error::failed(
            HEADER,
            "no \"HdrS\" setup header magic at 0x202: not an x86 bzImage",
        ));
    }
    let protocol = u16::from_le_bytes([head[0x206], head[0x207]]);
    if protocol < 0x0208 {
        return Err(Error::failed(
            HEADER,
            format!("boot protocol {protocol:#06x} has no payload_offset (needs 2.08+)"),
        ));
    }
    let mut setup_sects = head[0x1f1];
    if setup_sects == 0 {
        setup_sects = 4;
    }
    let pm_start = (setup_sects as usize + 1) * 512;
    let rd = |at: usize| {
        u32::from_le_bytes([head[at], head[at + 1], head[at + 2], head[at + 3]]) as usize
    };
    let offset = pm_start + rd(0x248);
    let plen = rd(0x24c);
    offset
        .checked_add(plen)
        .filter(|&e| e as u64 <= len)
        .ok_or_else(|| {
            Error::failed(
                HEADER,
                format!("payload {offset}+{plen} runs past the end of the {len}-byte image"),
            )
        })?;
    Ok(Payload {
        protocol,
        setup_sects,
        offset,
        len: plen,
        codec: Codec::None,
    })
}

impl Payload {
    /// The compressed bytes, without the 4-byte decompressed-size trailer that every non-gzip
    /// payload carries (gzip's own trailer ends in the same size).
    pub fn bytes<'a>(&self, image: &'a [u8]) -> &'a [u8] {
        &image[self.offset..self.offset + self.compressed_len()]
    }

    /// Length of [`Self::bytes`].
    pub fn compressed_len(&self) -> usize {
        match self.codec {
            Codec::Gzip => self.len,
            _ => self.len.saturating_sub(4),
        }
    }

    /// The decompressed size the trailer announces.
    pub fn announced_size(&self, image: &[u8]) -> usize {
        let end = self.offset + self.len;
        if self.len < 4 {
            return 0;
        }
        u32::from_le_bytes([
            image[end - 4],
            image[end - 3],
            image[end - 2],
            image[end - 1],
        ]) as usize
    }
}

/// The phase of payload decompression errors.
const DECOMPRESS: &str = "decompress kernel image payload";

/// Decompresses the payload of `image` into the vmlinux ELF (+ relocations), in memory
/// (at most [`limits::VMLINUX`]).
pub fn extract_vmlinux(image: &[u8]) -> Result<(Payload, Vec<u8>)> {
    let p = payload(image)?;
    if p.codec == Codec::None {
        let magic = &image[p.offset..(p.offset + 8).min(image.len())];
        return Err(Error::failed(DECOMPRESS, no_codec(&p, magic)));
    }
    let out = p
        .codec
        .decompress_within(
            p.bytes(image),
            p.announced_size(image),
            limits::VMLINUX,
            limits::PAYLOAD_DECODER_MEMORY,
        )
        .map_err(|e| Error::failed(DECOMPRESS, format!("payload ({}): {e}", p.codec.name())))?;
    Ok((p, out))
}

/// Decompresses the payload of a spooled `image` into an anonymous temporary file, within
/// [`limits::VMLINUX`] and [`limits::PAYLOAD_DECODER_MEMORY`] (an [`Decompress::Exceeded`]
/// past either), with the map of what each stretch of it costs in the payload.
pub fn spool_vmlinux(image: &Spooled) -> Result<(Payload, Spooled, InputMap), Decompress> {
    let p = spooled_payload(image).map_err(|e| Decompress::Failed(e.message()))?;
    if p.codec == Codec::None {
        let magic = image.read_at(p.offset as u64, 8).unwrap_or_default();
        return Err(Decompress::Failed(no_codec(&p, &magic)));
    }
    let failed = |e: std::io::Error| match limits::exceeded(&e) {
        Some(x) => Decompress::Exceeded(x.clone()),
        None => Decompress::Failed(format!("payload ({}): {e}", p.codec.name())),
    };
    let mut out = Spool::new(
        limits::VMLINUX,
        0,
        format!("vmlinux ({} payload)", p.codec.name()),
    );
    let mut dec = Mapped::new(
        p.codec,
        image.reader(p.offset as u64, p.compressed_len() as u64),
        limits::PAYLOAD_DECODER_MEMORY,
    )
    .map_err(|e| Decompress::Failed(e.message()))?;
    out.fill_from(&mut dec).map_err(failed)?;
    Ok((p, out.finish().map_err(failed)?, dec.into_map()))
}

fn no_codec(p: &Payload, magic: &[u8]) -> String {
    format!(
        "payload at {:#x} has no known compression magic (saw {})",
        p.offset,
        hex::encode(magic)
    )
}

/// The kernel version string the setup header points at (`kernel_version` at 0x20e), e.g.
/// `6.1.0-48-amd64 (debian-kernel@lists.debian.org) #1 SMP ...`.
pub fn version_string(image: &[u8]) -> Option<String> {
    let ptr = u16::from_le_bytes([*image.get(0x20e)?, *image.get(0x20f)?]) as usize;
    if ptr == 0 {
        return None;
    }
    let rest = image.get(ptr + 0x200..)?;
    let end = rest.iter().take(512).position(|&b| b == 0)?;
    let s = std::str::from_utf8(&rest[..end]).ok()?;
    Some(s.to_string())
}
