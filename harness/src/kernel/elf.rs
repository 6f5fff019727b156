//! ELF section lookup for vmlinux and modules (the `object` crate, section headers only).

use object::read::elf::{ElfFile64, FileHeader, SectionHeader};
use object::{Object, ObjectSection};

/// Sections of an ELF file that the checks care about.
#[derive(Debug, Clone, Default)]
pub struct Sections {
    /// Offset and size of `.BTF` in the file, if present with data.
    pub btf: Option<(usize, usize)>,
    /// `.BTF` exists but is `SHT_NOBITS`: a header with no bytes in the file (what
    /// `objcopy --only-keep-debug` leaves, a split-debug file mistaken for the binary).
    pub btf_nobits: bool,
    /// `.debug_*` sections with their sizes.
    pub debug: Vec<(String, u64)>,
    /// `.modinfo` content range, if present.
    pub modinfo: Option<(usize, usize)>,
}

/// Reads the section table of a little-endian ELF64 file. `data` may carry trailing bytes
/// (vmlinux is followed by its relocation table inside the bzImage payload).
pub fn sections(data: &[u8]) -> Result<Sections, String> {
    let elf = ElfFile64::<object::Endianness>::parse(data)
        .map_err(|e| format!("not an ELF64 file: {e}"))?;
    if !elf.elf_header().is_little_endian() {
        return Err("big-endian ELF is not supported".into());
    }
    let mut s = Sections::default();
    for sec in elf.sections() {
        let Ok(name) = sec.name() else { continue };
        let range = || sec.file_range().map(|(o, l)| (o as usize, l as usize));
        if name == ".BTF" {
            if sec.elf_section_header().sh_type(elf.endian()) == object::elf::SHT_NOBITS {
                s.btf_nobits = true;
            } else {
                s.btf = range();
            }
        } else if name == ".modinfo" {
            s.modinfo = range();
        } else if name.starts_with(".debug_") || name.starts_with(".zdebug_") {
            s.debug.push((name.to_string(), sec.size()));
        }
    }
    if let Some((o, l)) = s.btf {
        if o.checked_add(l).is_none_or(|e| e > data.len()) {
            return Err(format!(
                ".BTF section {o}+{l} runs past the {}-byte file",
                data.len()
            ));
        }
    }
    Ok(s)
}

/// `key=value` pairs of a `.modinfo` section.
pub fn modinfo(data: &[u8], range: (usize, usize)) -> Vec<(String, String)> {
    data.get(range.0..range.0 + range.1)
        .unwrap_or_default()
        .split(|&b| b == 0)
        .filter_map(|kv| {
            let kv = std::str::from_utf8(kv).ok()?;
            let (k, v) = kv.split_once('=')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect()
}

/// Why a file has no `.BTF` data: "no .BTF section" or the `SHT_NOBITS` case.
pub fn no_btf_reason(s: &Sections) -> &'static str {
    if s.btf_nobits {
        ".BTF is SHT_NOBITS: the section header is there but holds no data (a split-debug copy?)"
    } else {
        "no .BTF section"
    }
}
