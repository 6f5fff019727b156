//! ELF section lookup for vmlinux and modules (the `object` crate, section headers only), in
//! memory or in a spooled file (only the section headers and their names are read, each
//! within its limit).

use object::elf::FileHeader64;
use object::read::elf::{FileHeader, SectionHeader};
use object::{Endianness, ReadCache, ReadRef};

use crate::limits::{self, Exceeded};
use crate::spool::Spooled;

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

/// Why a section table was not read.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SectionsError {
    /// Not an ELF64 file btfgate reads, or a malformed one.
    #[error("{0}")]
    Invalid(String),
    /// More section headers or a larger name table than any real kernel file has.
    #[error(transparent)]
    Exceeded(Exceeded),
}

/// Reads the section table of a little-endian ELF64 file. `data` may carry trailing bytes
/// (vmlinux is followed by its relocation table inside the bzImage payload).
pub fn sections(data: &[u8]) -> crate::Result<Sections> {
    sections_in(data, data.len() as u64)
        .map_err(|e| crate::Error::failed("read ELF sections", e.to_string()))
}

/// [`sections`] of spooled bytes: in memory, or read back from the spool's file (the section
/// headers and the name table only, each within its limit).
pub fn spooled_sections(s: &Spooled) -> Result<Sections, SectionsError> {
    match s {
        Spooled::Memory(v) => sections_in(&v[..], v.len() as u64),
        Spooled::File { file, len } => sections_in(&ReadCache::new(file), *len),
    }
}

fn sections_in<'d, R: ReadRef<'d>>(data: R, len: u64) -> Result<Sections, SectionsError> {
    let invalid =
        |what: &str, e: object::read::Error| SectionsError::Invalid(format!("{what}: {e}"));
    let header =
        FileHeader64::<Endianness>::parse(data).map_err(|e| invalid("not an ELF64 file", e))?;
    if !header.is_little_endian() {
        return Err(SectionsError::Invalid(
            "big-endian ELF is not supported".into(),
        ));
    }
    let endian = header
        .endian()
        .map_err(|e| invalid("not an ELF64 file", e))?;
    let count = header
        .shnum(endian, data)
        .map_err(|e| invalid("not an ELF64 file", e))?;
    if u64::from(count) > limits::ELF_SECTIONS.max {
        return Err(SectionsError::Exceeded(Exceeded::new(
            limits::ELF_SECTIONS,
            format!("{count} section headers"),
        )));
    }
    let headers = header
        .section_headers(endian, data)
        .map_err(|e| invalid("not an ELF64 file", e))?;
    let names: &[u8] = if headers.is_empty() {
        &[]
    } else {
        let index = header
            .shstrndx(endian, data)
            .map_err(|e| invalid("section names", e))?;
        let table = headers.get(index as usize).ok_or_else(|| {
            SectionsError::Invalid(format!("section name table index {index} out of range"))
        })?;
        match table.file_range(endian) {
            None => &[],
            Some((offset, size)) => {
                if size > limits::ELF_SECTION_NAMES.max {
                    return Err(SectionsError::Exceeded(Exceeded::new(
                        limits::ELF_SECTION_NAMES,
                        format!("a {size}-byte section name table"),
                    )));
                }
                data.read_bytes_at(offset, size).map_err(|()| {
                    SectionsError::Invalid(format!(
                        "section name table {offset}+{size} runs past the {len}-byte file"
                    ))
                })?
            }
        }
    };
    let mut s = Sections::default();
    for sec in headers {
        let Some(name) = names
            .get(sec.sh_name(endian) as usize..)
            .and_then(|rest| rest.split(|&b| b == 0).next())
            .and_then(|n| std::str::from_utf8(n).ok())
        else {
            continue;
        };
        let range = || {
            sec.file_range(endian)
                .and_then(|(o, l)| Some((usize::try_from(o).ok()?, usize::try_from(l).ok()?)))
        };
        if name == ".BTF" {
            if sec.sh_type(endian) == object::elf::SHT_NOBITS {
                s.btf_nobits = true;
            } else {
                s.btf = range();
            }
        } else if name == ".modinfo" {
            s.modinfo = range();
        } else if name.starts_with(".debug_") || name.starts_with(".zdebug_") {
            s.debug.push((name.to_string(), sec.sh_size(endian)));
        }
    }
    if let Some((o, l)) = s.btf {
        if o.checked_add(l).is_none_or(|e| e as u64 > len) {
            return Err(SectionsError::Invalid(format!(
                ".BTF section {o}+{l} runs past the {len}-byte file"
            )));
        }
    }
    Ok(s)
}

/// `key=value` pairs of a `.modinfo` section.
pub fn modinfo(data: &[u8], range: (usize, usize)) -> Vec<(String, String)> {
    // The range is the section header's, unchecked: it may run past the file or wrap.
    range
        .0
        .checked_add(range.1)
        .and_then(|end| data.get(range.0..end))
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
