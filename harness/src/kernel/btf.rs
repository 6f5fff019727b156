//! BTF blobs: structural validation (header, every type record walked to the exact end of the
//! type section, string section) and the split-BTF base consistency detector.
//!
//! Hand-written on purpose: the checks need the raw `name_off`/type-id fields of every record
//! (to tell whether a module's split BTF was built against *this* vmlinux), which the BTF
//! crates (btf-rs, aya-obj) resolve away; see ARCHITECTURE.md.

use serde::Serialize;

pub const MAGIC: u16 = 0xeb9f;
const HDR_MIN: usize = 24;

/// Why a BTF blob is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BtfError {
    #[error("blob of {0} bytes is shorter than the 24-byte BTF header")]
    Short(usize),
    #[error("bad magic {0:#06x}, expected 0xeb9f (little-endian BTF)")]
    Magic(u16),
    #[error("unsupported BTF version {0}, expected 1")]
    Version(u8),
    #[error("header length {hdr_len} or sections (types {type_off}+{type_len}, strings {str_off}+{str_len}) do not fit the {total}-byte blob")]
    Layout {
        hdr_len: u32,
        type_off: u32,
        type_len: u32,
        str_off: u32,
        str_len: u32,
        total: usize,
    },
    #[error("type [{id}] at byte {at}: {what}")]
    Type { id: u32, at: usize, what: String },
    #[error("type walk ended at byte {at}, type section is {len} bytes")]
    WalkEnd { at: usize, len: usize },
    #[error("string section {0}")]
    Strings(&'static str),
}

/// Header fields.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Header {
    pub version: u8,
    pub flags: u8,
    pub hdr_len: u32,
    pub type_off: u32,
    pub type_len: u32,
    pub str_off: u32,
    pub str_len: u32,
}

/// BTF kinds, numbered as in `include/uapi/linux/btf.h`.
pub const KIND_NAMES: [&str; 20] = [
    "UNKN",
    "INT",
    "PTR",
    "ARRAY",
    "STRUCT",
    "UNION",
    "ENUM",
    "FWD",
    "TYPEDEF",
    "VOLATILE",
    "CONST",
    "RESTRICT",
    "FUNC",
    "FUNC_PROTO",
    "VAR",
    "DATASEC",
    "FLOAT",
    "DECL_TAG",
    "TYPE_TAG",
    "ENUM64",
];
const STRUCT: u8 = 4;
const UNION: u8 = 5;

/// One name reference found while walking: offset into the (combined) string space.
#[derive(Debug, Clone, Copy)]
struct NameRef {
    off: u32,
    /// Names of DATASEC/VAR may contain '.', others are C identifiers.
    dotted: bool,
}

/// A parsed, validated BTF blob.
#[derive(Debug, Clone)]
pub struct Btf<'a> {
    pub header: Header,
    types: &'a [u8],
    strings: &'a [u8],
    /// Number of type records in this blob (not counting void or the base).
    pub ntypes: u32,
    /// Records per kind, indexed by kind number.
    pub kinds: [u32; 20],
    names: Vec<NameRef>,
    type_refs: Vec<u32>,
    /// Byte offset of each STRUCT/UNION record named in `wanted` lookups (lazily scanned).
    struct_names: Vec<u32>,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl Header {
    /// Reads the header of a little-endian version 1 BTF blob (the sections are not checked).
    pub fn read(data: &[u8]) -> Result<Header, BtfError> {
        if data.len() < HDR_MIN {
            return Err(BtfError::Short(data.len()));
        }
        let magic = u16_at(data, 0);
        if magic != MAGIC {
            return Err(BtfError::Magic(magic));
        }
        let header = Header {
            version: data[2],
            flags: data[3],
            hdr_len: u32_at(data, 4),
            type_off: u32_at(data, 8),
            type_len: u32_at(data, 12),
            str_off: u32_at(data, 16),
            str_len: u32_at(data, 20),
        };
        if header.version != 1 {
            return Err(BtfError::Version(header.version));
        }
        Ok(header)
    }
}

impl<'a> Btf<'a> {
    /// Parses and validates `data`. For split BTF pass the number of types of the base, whose ids
    /// come first; `None` for a standalone (vmlinux) blob.
    pub fn parse(data: &'a [u8], base_ntypes: Option<u32>) -> Result<Btf<'a>, BtfError> {
        let header = Header::read(data)?;
        let h = header.hdr_len as usize;
        let layout_err = || BtfError::Layout {
            hdr_len: header.hdr_len,
            type_off: header.type_off,
            type_len: header.type_len,
            str_off: header.str_off,
            str_len: header.str_len,
            total: data.len(),
        };
        let body = data
            .get(h..)
            .filter(|_| h >= HDR_MIN)
            .ok_or_else(layout_err)?;
        let span = |off: u32, len: u32| -> Option<&'a [u8]> {
            let s = off as usize;
            body.get(s..s.checked_add(len as usize)?)
        };
        let types = span(header.type_off, header.type_len).ok_or_else(layout_err)?;
        let strings = span(header.str_off, header.str_len).ok_or_else(layout_err)?;
        if !header.type_off.is_multiple_of(4) {
            return Err(layout_err());
        }
        // Standalone BTF starts its strings with "" (offset 0 = anonymous); split BTF continues
        // the base's string space and may start with a name, or be empty.
        let split = base_ntypes.is_some();
        if !split && strings.first() != Some(&0) {
            return Err(BtfError::Strings("does not start with an empty string"));
        }
        if !strings.is_empty() && strings.last() != Some(&0) {
            return Err(BtfError::Strings("is not NUL-terminated"));
        }
        let mut btf = Btf {
            header,
            types,
            strings,
            ntypes: 0,
            kinds: [0; 20],
            names: Vec::new(),
            type_refs: Vec::new(),
            struct_names: Vec::new(),
        };
        btf.walk(base_ntypes.unwrap_or(0))?;
        if !split {
            // A standalone blob's names all live in its own string section.
            for r in &btf.names {
                if r.off >= header.str_len {
                    return Err(BtfError::Strings("has a name offset past its end"));
                }
            }
            let total = btf.ntypes;
            if let Some(bad) = btf.type_refs.iter().find(|&&t| t > total) {
                return Err(BtfError::Type {
                    id: 0,
                    at: 0,
                    what: format!("references type id {bad}, only {total} types exist"),
                });
            }
        }
        Ok(btf)
    }

    fn walk(&mut self, first_id_minus_one: u32) -> Result<(), BtfError> {
        let t = self.types;
        let mut at = 0usize;
        let mut id = first_id_minus_one;
        while at < t.len() {
            id += 1;
            let start = at;
            let err = |what: String| BtfError::Type {
                id,
                at: start,
                what,
            };
            if at + 12 > t.len() {
                return Err(err("record header runs past the type section".into()));
            }
            let name_off = u32_at(t, at);
            let info = u32_at(t, at + 4);
            let size_or_type = u32_at(t, at + 8);
            let vlen = (info & 0xffff) as usize;
            let kind = ((info >> 24) & 0x1f) as u8;
            let rec = at;
            at += 12;
            let trailer = match kind {
                1 | 14 | 17 => 4,             // INT, VAR, DECL_TAG
                3 => 12,                      // ARRAY
                4 | 5 | 15 | 19 => vlen * 12, // STRUCT, UNION, DATASEC, ENUM64
                6 | 13 => vlen * 8,           // ENUM, FUNC_PROTO
                2 | 7..=12 | 16 | 18 => 0,
                _ => return Err(err(format!("unknown kind {kind}"))),
            };
            if at + trailer > t.len() {
                return Err(err(format!(
                    "{} with vlen {vlen} runs past the type section",
                    KIND_NAMES[kind as usize]
                )));
            }
            self.kinds[kind as usize] += 1;
            if name_off != 0 {
                self.names.push(NameRef {
                    off: name_off,
                    dotted: matches!(kind, 14 | 15),
                });
            }
            if kind == STRUCT || kind == UNION {
                self.struct_names.push(rec as u32);
            }
            match kind {
                2 | 8..=12 | 14 | 17 | 18 => self.type_refs.push(size_or_type),
                13 => self.type_refs.push(size_or_type), // return type
                _ => {}
            }
            let tr = &t[at..at + trailer];
            match kind {
                3 => {
                    self.type_refs.push(u32_at(tr, 0));
                    self.type_refs.push(u32_at(tr, 4));
                }
                4 | 5 => {
                    for m in tr.chunks_exact(12) {
                        self.push_name(u32_at(m, 0), false);
                        self.type_refs.push(u32_at(m, 4));
                    }
                }
                6 => {
                    for m in tr.chunks_exact(8) {
                        self.push_name(u32_at(m, 0), false);
                    }
                }
                19 => {
                    for m in tr.chunks_exact(12) {
                        self.push_name(u32_at(m, 0), false);
                    }
                }
                13 => {
                    for m in tr.chunks_exact(8) {
                        self.push_name(u32_at(m, 0), false);
                        self.type_refs.push(u32_at(m, 4));
                    }
                }
                15 => {
                    for m in tr.chunks_exact(12) {
                        self.type_refs.push(u32_at(m, 0));
                    }
                }
                _ => {}
            }
            at += trailer;
        }
        if at != t.len() {
            return Err(BtfError::WalkEnd { at, len: t.len() });
        }
        self.ntypes = id - first_id_minus_one;
        Ok(())
    }

    fn push_name(&mut self, off: u32, dotted: bool) {
        if off != 0 {
            self.names.push(NameRef { off, dotted });
        }
    }

    /// The string section.
    pub fn strings(&self) -> &'a [u8] {
        self.strings
    }

    /// Whether a STRUCT (not a forward declaration) named `name` is defined in this blob.
    pub fn has_struct(&self, name: &str) -> bool {
        self.struct_names.iter().any(|&rec| {
            let rec = rec as usize;
            let info = u32_at(self.types, rec + 4);
            let kind = ((info >> 24) & 0x1f) as u8;
            kind == STRUCT
                && c_str(self.strings, u32_at(self.types, rec) as usize) == Some(name.as_bytes())
        })
    }

    /// The size in bytes of the STRUCT named `name` defined in this blob.
    pub fn struct_size(&self, name: &str) -> Option<u32> {
        self.struct_names.iter().find_map(|&rec| {
            let rec = rec as usize;
            let info = u32_at(self.types, rec + 4);
            let kind = ((info >> 24) & 0x1f) as u8;
            (kind == STRUCT
                && c_str(self.strings, u32_at(self.types, rec) as usize) == Some(name.as_bytes()))
            .then(|| u32_at(self.types, rec + 8))
        })
    }

    /// Kind counts by name, non-zero only, for evidence.
    pub fn kind_summary(&self) -> Vec<(&'static str, u32)> {
        let mut v: Vec<_> = KIND_NAMES
            .iter()
            .zip(self.kinds.iter())
            .filter(|(_, &n)| n > 0)
            .map(|(k, &n)| (*k, n))
            .collect();
        v.sort_by_key(|k| std::cmp::Reverse(k.1));
        v
    }

    /// Checks that this split BTF fits `base`: every name offset lands on the start of an
    /// identifier in the base's or its own string section, and every type id is in range.
    pub fn check_against_base(&self, base: &Base) -> BaseFit {
        let base_len = base.strings.len() as u32;
        let mut fit = BaseFit {
            name_refs: self.names.len() as u32,
            ..BaseFit::default()
        };
        for r in &self.names {
            let ok = if r.off < base_len {
                at_name_start(&base.strings, r.off as usize, r.dotted)
            } else {
                let local = (r.off - base_len) as usize;
                // The first byte of the split string section starts a string too.
                (local == 0 && is_name(c_str(self.strings, 0), r.dotted))
                    || at_name_start(self.strings, local, r.dotted)
            };
            if !ok {
                fit.bad_names += 1;
                if fit.first_bad_name.is_none() {
                    fit.first_bad_name = Some(r.off);
                }
            }
        }
        let max_id = base.ntypes + self.ntypes;
        fit.bad_type_ids = self.type_refs.iter().filter(|&&t| t > max_id).count() as u32;
        fit
    }
}

/// What split BTF needs from its base: the base's string section and type count.
#[derive(Debug, Clone)]
pub struct Base {
    pub strings: Vec<u8>,
    pub ntypes: u32,
}

impl Btf<'_> {
    /// The part of this (standalone) blob that split BTF refers into.
    pub fn as_base(&self) -> Base {
        Base {
            strings: self.strings.to_vec(),
            ntypes: self.ntypes,
        }
    }
}

/// Result of [`Btf::check_against_base`].
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct BaseFit {
    pub name_refs: u32,
    pub bad_names: u32,
    pub bad_type_ids: u32,
    pub first_bad_name: Option<u32>,
}

impl BaseFit {
    pub fn ok(&self) -> bool {
        self.bad_names == 0 && self.bad_type_ids == 0
    }
}

fn c_str(strings: &[u8], off: usize) -> Option<&[u8]> {
    let rest = strings.get(off..)?;
    let end = rest.iter().position(|&b| b == 0)?;
    Some(&rest[..end])
}

/// `off` is the start of a non-empty name (previous byte NUL) made of identifier characters.
fn at_name_start(strings: &[u8], off: usize, dotted: bool) -> bool {
    if off == 0 || strings.get(off - 1) != Some(&0) {
        return false;
    }
    is_name(c_str(strings, off), dotted)
}

/// A non-empty C identifier (section-like names with '.' when `dotted`).
fn is_name(s: Option<&[u8]>, dotted: bool) -> bool {
    match s {
        Some(s) if !s.is_empty() => {
            !s[0].is_ascii_digit()
                && s.iter()
                    .all(|&b| b.is_ascii_alphanumeric() || b == b'_' || (dotted && b == b'.'))
        }
        _ => false,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Builds a BTF blob from raw type records and a string section.
    pub(crate) fn blob(types: &[u8], strings: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&MAGIC.to_le_bytes());
        v.push(1);
        v.push(0);
        v.extend_from_slice(&24u32.to_le_bytes());
        v.extend_from_slice(&0u32.to_le_bytes());
        v.extend_from_slice(&(types.len() as u32).to_le_bytes());
        v.extend_from_slice(&(types.len() as u32).to_le_bytes());
        v.extend_from_slice(&(strings.len() as u32).to_le_bytes());
        v.extend_from_slice(types);
        v.extend_from_slice(strings);
        v
    }

    pub(crate) fn rec(name: u32, kind: u32, vlen: u32, size: u32) -> Vec<u8> {
        let mut v = name.to_le_bytes().to_vec();
        v.extend_from_slice(&((kind << 24) | vlen).to_le_bytes());
        v.extend_from_slice(&size.to_le_bytes());
        v
    }

    /// int (id 1) + struct task_struct { int pid; } (id 2).
    pub(crate) fn tiny_vmlinux() -> Vec<u8> {
        let strings = b"\0int\0task_struct\0pid\0";
        let mut t = rec(1, 1, 0, 4);
        t.extend_from_slice(&0x20u32.to_le_bytes()); // INT encoding: 32 bits
        t.extend(rec(5, 4, 1, 4));
        t.extend_from_slice(&17u32.to_le_bytes()); // member name "pid"
        t.extend_from_slice(&1u32.to_le_bytes()); // type int
        t.extend_from_slice(&0u32.to_le_bytes()); // offset
        blob(&t, strings)
    }

    #[test]
    fn walks_and_finds_task_struct() {
        let b = tiny_vmlinux();
        let btf = Btf::parse(&b, None).unwrap();
        assert_eq!(btf.ntypes, 2);
        assert!(btf.has_struct("task_struct"));
        assert!(!btf.has_struct("pid"));
        assert_eq!(btf.struct_size("task_struct"), Some(4));
        assert_eq!(btf.struct_size("pid"), None);
    }

    #[test]
    fn truncated_or_overlong_sections_fail() {
        let mut b = tiny_vmlinux();
        b[12] -= 4; // type_len 4 short: the walk no longer ends at the section end
        assert!(matches!(
            Btf::parse(&b, None),
            Err(BtfError::Type { .. } | BtfError::WalkEnd { .. })
        ));
        let b = tiny_vmlinux();
        assert!(matches!(
            Btf::parse(&b[..b.len() - 3], None),
            Err(BtfError::Layout { .. })
        ));
        let mut b = tiny_vmlinux();
        b[0] = 0;
        assert!(matches!(Btf::parse(&b, None), Err(BtfError::Magic(_))));
        let mut b = tiny_vmlinux();
        b[24 + 7] = 30; // kind 30 in the first record
        assert!(matches!(Btf::parse(&b, None), Err(BtfError::Type { .. })));
    }

    #[test]
    fn split_btf_fits_its_base_only() {
        let base_blob = tiny_vmlinux();
        let base = Btf::parse(&base_blob, None).unwrap();
        // split: PTR to task_struct (id 3) named by own string "p" and a FUNC named base "pid".
        let own = b"\0p\0";
        let base_len = base.strings().len() as u32;
        let mut t = rec(base_len + 1, 2, 0, 2);
        t.extend(rec(17, 12, 0, 3));
        let split_blob = blob(&t, own);
        let split = Btf::parse(&split_blob, Some(base.ntypes)).unwrap();
        assert!(split.check_against_base(&base.as_base()).ok());
        // Another base whose strings are laid out differently: offset 17 lands mid-string.
        let other_strings = b"\0int\0task_struct_x\0pid\0";
        let mut t2 = rec(1, 1, 0, 4);
        t2.extend_from_slice(&0x20u32.to_le_bytes());
        t2.extend(rec(0, 2, 0, 1));
        let other_blob = blob(&t2, other_strings);
        let other = Btf::parse(&other_blob, None).unwrap();
        let fit = split.check_against_base(&other.as_base());
        assert!(!fit.ok(), "{fit:?}");
    }
}
