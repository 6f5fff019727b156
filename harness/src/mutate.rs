//! Negative controls made from real packages: a module without `.BTF`, a module carrying
//! `.debug_info`, a `.BTF` with no data (`SHT_NOBITS`), a module whose split BTF the kernel rejects, a kernel image whose vmlinux lost
//! its `.BTF`, a config without BTF. Tests and benchmarks use these to show every check can fail.

use object::read::elf::{ElfFile64, FileHeader, SectionHeader};
use object::{Object, ObjectSection};

use crate::codec::Codec;
use crate::kernel::bzimage;

/// Renames ELF section `from` to `to` in place (`to` no longer than `from`), so readers that
/// look sections up by name (the kernel, libbpf, btfgate) no longer see `from`.
pub fn rename_section(elf: &mut [u8], from: &str, to: &str) -> Result<(), String> {
    if to.len() > from.len() {
        return Err(format!(
            "cannot rename {from} to the longer name {to} in place"
        ));
    }
    let (name_at, shared) = {
        let file =
            ElfFile64::<object::Endianness>::parse(&*elf).map_err(|e| format!("not ELF64: {e}"))?;
        let endian = file.endian();
        let shdrs = file.elf_section_table();
        let strtab_idx = file
            .elf_header()
            .shstrndx(endian, &*elf)
            .map_err(|e| format!("section name table index: {e}"))?;
        let strtab = shdrs
            .section(object::SectionIndex(strtab_idx as usize))
            .map_err(|e| format!("section name table: {e}"))?;
        let strtab_off = strtab.sh_offset(endian) as usize;
        let sec = file
            .section_by_name(from)
            .ok_or_else(|| format!("no section {from}"))?;
        let name_off = sec.elf_section_header().sh_name(endian) as usize;
        let end = name_off + from.len();
        // Another section whose name points into ours (suffix sharing) would be renamed too.
        let shared = shdrs.iter().any(|s| {
            let o = s.sh_name(endian) as usize;
            o > name_off && o <= end
        });
        (strtab_off + name_off, shared)
    };
    if shared {
        return Err(format!("the name {from} is shared with another section"));
    }
    let slot = elf
        .get_mut(name_at..name_at + from.len())
        .ok_or_else(|| "section name runs past the file".to_string())?;
    slot.fill(0);
    slot[..to.len()].copy_from_slice(to.as_bytes());
    Ok(())
}

/// Hides the `.BTF` section of a module or vmlinux (renamed `.BTX`).
pub fn remove_btf(elf: &mut [u8]) -> Result<(), String> {
    rename_section(elf, ".BTF", ".BTX")
}

/// Makes `.BTF` a section with no data (`SHT_NOBITS`), what `objcopy --only-keep-debug`
/// leaves: the name is still there for a reader that looks sections up by name.
pub fn btf_to_nobits(elf: &mut [u8]) -> Result<(), String> {
    let at = {
        let file =
            ElfFile64::<object::Endianness>::parse(&*elf).map_err(|e| format!("not ELF64: {e}"))?;
        let endian = file.endian();
        let e_shoff = file.elf_header().e_shoff(endian) as usize;
        let e_shentsize = file.elf_header().e_shentsize(endian) as usize;
        let sec = file.section_by_name(".BTF").ok_or("no section .BTF")?;
        // sh_type is the second 32-bit word of an Elf64_Shdr.
        e_shoff + sec.index().0 * e_shentsize + 4
    };
    let slot = elf
        .get_mut(at..at + 4)
        .ok_or_else(|| "section header runs past the file".to_string())?;
    slot.copy_from_slice(&object::elf::SHT_NOBITS.0.to_le_bytes());
    Ok(())
}

/// Makes a module look unstripped: one of its notes becomes a `.debug_info` section.
pub fn add_debug_info(elf: &mut [u8]) -> Result<(), String> {
    for victim in [
        ".note.Linux",
        ".note.gnu.build-id",
        ".gnu.linkonce.this_module",
    ] {
        if rename_section(elf, victim, ".debug_info").is_ok() {
            return Ok(());
        }
    }
    Err("no section long enough to become .debug_info".into())
}

/// Makes a module's split BTF one the kernel rejects, as it rejects the BTF of a module built
/// against another vmlinux whose references run past this one's strings: the first type's
/// name offset points past every string table. The kernel logs `BPF: [N] Invalid
/// name_offset:…` and `failed to validate module [m] BTF: -22`; with
/// `MODULE_ALLOW_BTF_MISMATCH=y` (Debian) the module loads without `/sys/kernel/btf/<m>`.
pub fn break_split_btf(elf: &mut [u8]) -> Result<(), String> {
    let (off, len) = crate::kernel::elf::sections(elf)
        .map_err(|e| e.message())?
        .btf
        .ok_or("no section .BTF")?;
    let btf = &mut elf[off..off + len];
    let h = crate::kernel::btf::Header::read(btf).map_err(|e| format!(".BTF: {e}"))?;
    if h.type_len < 12 {
        return Err(".BTF has no type to break".into());
    }
    let at = h.hdr_len as usize + h.type_off as usize;
    let slot = btf
        .get_mut(at..at + 4)
        .ok_or_else(|| ".BTF type section runs past the section".to_string())?;
    // Below BTF_MAX_NAME_OFFSET (0xffffff), so the kernel reports it as an invalid offset.
    slot.copy_from_slice(&0x00ff_ff00u32.to_le_bytes());
    Ok(())
}

/// Renames identifier `from` to `to` (same length) in the string section of an ELF's `.BTF`,
/// in place: every type or member named `from` is then named `to`. A kernel whose BTF lacks a
/// field a CO-RE tool relocates (`task_struct.real_parent` for execsnoop) is made this way.
pub fn rename_btf_name(elf: &mut [u8], from: &str, to: &str) -> Result<(), String> {
    if from.len() != to.len() {
        return Err(format!("{from} and {to} differ in length"));
    }
    let (off, len) = crate::kernel::elf::sections(elf)
        .map_err(|e| e.message())?
        .btf
        .ok_or("no section .BTF")?;
    let btf = &mut elf[off..off + len];
    let h = crate::kernel::btf::Header::read(btf).map_err(|e| format!(".BTF: {e}"))?;
    let start = h.hdr_len as usize + h.str_off as usize;
    let strings = btf
        .get_mut(start..start + h.str_len as usize)
        .ok_or(".BTF string section runs past the section")?;
    let needle = [&[0u8][..], from.as_bytes(), &[0u8][..]].concat();
    let at = strings
        .windows(needle.len())
        .position(|w| w == needle)
        .ok_or_else(|| format!("no string {from} in .BTF"))?;
    strings[at + 1..at + 1 + to.len()].copy_from_slice(to.as_bytes());
    Ok(())
}

/// Removes a module's appended signature (`~Module signature appended~`), so an edited module
/// still loads where signatures are checked but not enforced (a signature that does not verify
/// is fatal even then; an unsigned module only taints the kernel). Returns whether there was one.
pub fn strip_module_signature(ko: &mut Vec<u8>) -> Result<bool, String> {
    const MAGIC: &[u8] = b"~Module signature appended~\n";
    let Some(end) = ko.len().checked_sub(MAGIC.len()) else {
        return Ok(false);
    };
    if ko[end..] != *MAGIC {
        return Ok(false);
    }
    // struct module_signature: algo, hash, id_type, signer_len, key_id_len, pad[3], sig_len (be32).
    let info = end
        .checked_sub(12)
        .ok_or("module signature trailer is truncated")?;
    let sig_len = u32::from_be_bytes([ko[end - 4], ko[end - 3], ko[end - 2], ko[end - 1]]) as usize;
    let start = info
        .checked_sub(sig_len)
        .ok_or_else(|| format!("module signature of {sig_len} bytes is longer than the file"))?;
    ko.truncate(start);
    Ok(true)
}

/// Rebuilds a bzImage around a new vmlinux (recompressed with the image's own codec, `fast`
/// preset), updating the setup header's `payload_length`.
pub fn replace_vmlinux(image: &[u8], vmlinux: &[u8]) -> Result<Vec<u8>, String> {
    let p = bzimage::payload(image).map_err(|e| e.message())?;
    let mut payload = p.codec.compress(vmlinux, true).map_err(|e| e.to_string())?;
    if p.codec != Codec::Gzip {
        payload.extend_from_slice(&(vmlinux.len() as u32).to_le_bytes());
    }
    let mut out = Vec::with_capacity(image.len());
    out.extend_from_slice(&image[..p.offset]);
    out.extend_from_slice(&payload);
    out.extend_from_slice(&image[p.offset + p.len..]);
    out[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    Ok(out)
}

/// Removes BTF from a kernel image: vmlinux extracted, its `.BTF` hidden, image rebuilt.
pub fn image_without_btf(image: &[u8]) -> Result<Vec<u8>, String> {
    let (_, mut vmlinux) = bzimage::extract_vmlinux(image).map_err(|e| e.message())?;
    remove_btf(&mut vmlinux)?;
    replace_vmlinux(image, &vmlinux)
}

/// A config with BTF turned off the way `make olddefconfig` writes it.
pub fn config_without_btf(text: &str) -> String {
    text.lines()
        .map(|l| {
            if l.starts_with("CONFIG_DEBUG_INFO_BTF=") {
                "# CONFIG_DEBUG_INFO_BTF is not set".to_string()
            } else if l.starts_with("CONFIG_DEBUG_INFO_BTF_MODULES=") {
                "# CONFIG_DEBUG_INFO_BTF_MODULES is not set".to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_an_appended_signature_and_only_that() {
        let body = b"\x7fELF module bytes".to_vec();
        let mut signed = body.clone();
        signed.extend_from_slice(&[0xAA; 7]); // signature
        signed.extend_from_slice(&[0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 7]); // module_signature
        signed.extend_from_slice(b"~Module signature appended~\n");
        assert_eq!(strip_module_signature(&mut signed), Ok(true));
        assert_eq!(signed, body);
        let mut unsigned = body.clone();
        assert_eq!(strip_module_signature(&mut unsigned), Ok(false));
        assert_eq!(unsigned, body);
        let mut lying = b"~Module signature appended~\n".to_vec();
        assert!(strip_module_signature(&mut lying).is_err());
    }
}
