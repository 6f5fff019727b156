//! x86 bzImage: locate the compressed payload through the setup header and decompress it to
//! the vmlinux ELF (followed by the relocation table).

use crate::codec::Codec;

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
pub fn payload(image: &[u8]) -> Result<Payload, String> {
    if image.len() < 0x250 {
        return Err(format!(
            "{} bytes is too short for a bzImage setup header",
            image.len()
        ));
    }
    if &image[0x202..0x206] != b"HdrS" {
        return Err("no \"HdrS\" setup header magic at 0x202: not an x86 bzImage".into());
    }
    let protocol = u16::from_le_bytes([image[0x206], image[0x207]]);
    if protocol < 0x0208 {
        return Err(format!(
            "boot protocol {protocol:#06x} has no payload_offset (needs 2.08+)"
        ));
    }
    let mut setup_sects = image[0x1f1];
    if setup_sects == 0 {
        setup_sects = 4;
    }
    let pm_start = (setup_sects as usize + 1) * 512;
    let rd = |at: usize| {
        u32::from_le_bytes([image[at], image[at + 1], image[at + 2], image[at + 3]]) as usize
    };
    let offset = pm_start + rd(0x248);
    let len = rd(0x24c);
    let end = offset
        .checked_add(len)
        .filter(|&e| e <= image.len())
        .ok_or_else(|| {
            format!(
                "payload {offset}+{len} runs past the end of the {}-byte image",
                image.len()
            )
        })?;
    let codec = Codec::detect(&image[offset..end]);
    Ok(Payload {
        protocol,
        setup_sects,
        offset,
        len,
        codec,
    })
}

impl Payload {
    /// The compressed bytes, without the 4-byte decompressed-size trailer that every non-gzip
    /// payload carries (gzip's own trailer ends in the same size).
    pub fn bytes<'a>(&self, image: &'a [u8]) -> &'a [u8] {
        let whole = &image[self.offset..self.offset + self.len];
        match self.codec {
            Codec::Gzip => whole,
            _ => &whole[..whole.len().saturating_sub(4)],
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

/// Decompresses the payload of `image` into the vmlinux ELF (+ relocations).
pub fn extract_vmlinux(image: &[u8]) -> Result<(Payload, Vec<u8>), String> {
    let p = payload(image)?;
    if p.codec == Codec::None {
        return Err(format!(
            "payload at {:#x} has no known compression magic (saw {})",
            p.offset,
            hex::encode(&image[p.offset..(p.offset + 8).min(image.len())])
        ));
    }
    let out = p
        .codec
        .decompress(p.bytes(image), p.announced_size(image), super::MAX_VMLINUX)
        .map_err(|e| format!("payload ({}): {e}", p.codec.name()))?;
    Ok((p, out))
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
