//! Builders of the campaign's inputs: the BTF layout (record walker, a real BTF's subset, a
//! module's split BTF remapped onto it), a minimal ELF, a bzImage around it, and tar, APK v2,
//! ar and .deb containers written byte by byte (no validation: hostile entries are the point).

use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Write};
use std::ops::Range;

use harness::codec::Codec;
use harness::kernel::bzimage;
use sha2::{Digest, Sha256};

pub fn u16le(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
pub fn u32le(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
pub fn u64le(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

// ---------------------------------------------------------------------------------------------
// BTF layout (the kernel's table, as kernel/btf.rs walks it): record walker, subsetting and the
// remapping of a module's split BTF onto a subset base.

#[derive(Debug, Clone, Copy)]
pub struct BtfHdr {
    pub hdr_len: usize,
    pub type_off: usize,
    pub type_len: usize,
    pub str_off: usize,
    pub str_len: usize,
}

impl BtfHdr {
    pub fn read(b: &[u8]) -> Option<BtfHdr> {
        if b.len() < 24 || u16le(b, 0) != 0xeb9f {
            return None;
        }
        let h = BtfHdr {
            hdr_len: u32le(b, 4) as usize,
            type_off: u32le(b, 8) as usize,
            type_len: u32le(b, 12) as usize,
            str_off: u32le(b, 16) as usize,
            str_len: u32le(b, 20) as usize,
        };
        (h.hdr_len + h.type_off + h.type_len <= b.len()
            && h.hdr_len + h.str_off + h.str_len <= b.len())
        .then_some(h)
    }
    pub fn types<'a>(&self, b: &'a [u8]) -> &'a [u8] {
        &b[self.hdr_len + self.type_off..][..self.type_len]
    }
    pub fn strings<'a>(&self, b: &'a [u8]) -> &'a [u8] {
        &b[self.hdr_len + self.str_off..][..self.str_len]
    }
}

pub fn btf_trailer(kind: u8, vlen: usize) -> usize {
    match kind {
        1 | 14 | 17 => 4,
        3 => 12,
        4 | 5 | 15 | 19 => vlen * 12,
        6 | 13 => vlen * 8,
        _ => 0,
    }
}

/// (offset, kind, vlen) of each record of a type section.
pub fn btf_records(types: &[u8]) -> Vec<(usize, u8, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 12 <= types.len() {
        let info = u32le(types, at + 4);
        let (kind, vlen) = (((info >> 24) & 0x1f) as u8, (info & 0xffff) as usize);
        out.push((at, kind, vlen));
        at += 12 + btf_trailer(kind, vlen);
    }
    out
}

/// Offsets (relative to the record) of the name (false) and type id (true) fields of a record.
pub fn btf_fields(kind: u8, vlen: usize) -> Vec<(usize, bool)> {
    let mut f = vec![(0, false)];
    if matches!(kind, 2 | 8..=14 | 17 | 18) {
        f.push((8, true));
    }
    for i in 0..vlen {
        match kind {
            4 | 5 => f.extend([(12 + 12 * i, false), (16 + 12 * i, true)]),
            6 => f.push((12 + 8 * i, false)),
            19 => f.push((12 + 12 * i, false)),
            13 => f.extend([(12 + 8 * i, false), (16 + 8 * i, true)]),
            15 => f.push((12 + 12 * i, true)),
            _ => {}
        }
    }
    if kind == 3 {
        f.extend([(12, true), (16, true)]);
    }
    f
}

pub fn c_str(strings: &[u8], off: usize) -> &[u8] {
    let rest = &strings[off.min(strings.len())..];
    &rest[..rest.iter().position(|&b| b == 0).unwrap_or(rest.len())]
}

pub fn find_type(btf: &[u8], kind: u8, name: &str) -> Option<u32> {
    let h = BtfHdr::read(btf)?;
    let (types, strings) = (h.types(btf), h.strings(btf));
    btf_records(types)
        .iter()
        .position(|&(at, k, _)| {
            k == kind && c_str(strings, u32le(types, at) as usize) == name.as_bytes()
        })
        .map(|i| i as u32 + 1)
}

/// A subset of a standalone BTF: the closure of `roots` (structs and unions other than `full`
/// keep their name and size but lose their members), ids renumbered, strings re-laid, with
/// the strings at `names` kept. Returns the blob and the id and string-offset maps.
pub fn subset_btf(
    base: &[u8],
    roots: &[u32],
    full: &[u32],
    names: &[u32],
) -> (Vec<u8>, HashMap<u32, u32>, HashMap<u32, u32>) {
    let h = BtfHdr::read(base).unwrap();
    let (types, strings) = (h.types(base), h.strings(base));
    let recs = btf_records(types);
    let mut keep = BTreeSet::new();
    let mut stack: Vec<u32> = roots.to_vec();
    let stub = |id: u32, kind: u8| matches!(kind, 4 | 5) && !full.contains(&id);
    while let Some(id) = stack.pop() {
        if id == 0 || id as usize > recs.len() || !keep.insert(id) {
            continue;
        }
        let (at, kind, vlen) = recs[id as usize - 1];
        let vlen = if stub(id, kind) { 0 } else { vlen };
        for (off, is_type) in btf_fields(kind, vlen) {
            if is_type {
                stack.push(u32le(types, at + off));
            }
        }
    }
    let ids: HashMap<u32, u32> = keep
        .iter()
        .enumerate()
        .map(|(i, &id)| (id, i as u32 + 1))
        .collect();
    let mut new_strings = vec![0u8];
    let mut strs: HashMap<u32, u32> = HashMap::new();
    let mut add = |off: u32, new_strings: &mut Vec<u8>| -> u32 {
        if off == 0 {
            return 0;
        }
        *strs.entry(off).or_insert_with(|| {
            let at = new_strings.len() as u32;
            new_strings.extend_from_slice(c_str(strings, off as usize));
            new_strings.push(0);
            at
        })
    };
    for &n in names {
        add(n, &mut new_strings);
    }
    let mut new_types = Vec::new();
    for &id in &keep {
        let (at, kind, vlen) = recs[id as usize - 1];
        let vlen = if stub(id, kind) { 0 } else { vlen };
        let mut r = types[at..at + 12 + btf_trailer(kind, vlen)].to_vec();
        let info = (u32le(&r, 4) & !0xffff) | vlen as u32;
        r[4..8].copy_from_slice(&info.to_le_bytes());
        for (off, is_type) in btf_fields(kind, vlen) {
            let v = u32le(&r, off);
            let nv = if is_type {
                if v == 0 {
                    0
                } else {
                    ids[&v]
                }
            } else {
                add(v, &mut new_strings)
            };
            r[off..off + 4].copy_from_slice(&nv.to_le_bytes());
        }
        new_types.extend_from_slice(&r);
    }
    let mut blob = Vec::new();
    blob.extend_from_slice(&0xeb9fu16.to_le_bytes());
    blob.extend_from_slice(&[1, 0]);
    for v in [24, 0, new_types.len(), new_types.len(), new_strings.len()] {
        blob.extend_from_slice(&(v as u32).to_le_bytes());
    }
    blob.extend_from_slice(&new_types);
    blob.extend_from_slice(&new_strings);
    (blob, ids, strs)
}

/// The base type ids and base string offsets a split BTF refers to.
pub fn split_refs(split: &[u8], base_n: u32, base_strlen: u32) -> (Vec<u32>, Vec<u32>) {
    let h = BtfHdr::read(split).unwrap();
    let types = h.types(split);
    let (mut ids, mut names) = (BTreeSet::new(), BTreeSet::new());
    for (at, kind, vlen) in btf_records(types) {
        for (off, is_type) in btf_fields(kind, vlen) {
            let v = u32le(types, at + off);
            if is_type && v != 0 && v <= base_n {
                ids.insert(v);
            } else if !is_type && v != 0 && v < base_strlen {
                names.insert(v);
            }
        }
    }
    (ids.into_iter().collect(), names.into_iter().collect())
}

/// Rewrites a split BTF in place from one base onto another (same length).
pub fn remap_split(
    split: &mut [u8],
    old: (u32, u32),
    new: (u32, u32),
    ids: &HashMap<u32, u32>,
    strs: &HashMap<u32, u32>,
) {
    let h = BtfHdr::read(split).unwrap();
    let t0 = h.hdr_len + h.type_off;
    let recs = btf_records(h.types(split));
    for (at, kind, vlen) in recs {
        for (off, is_type) in btf_fields(kind, vlen) {
            let p = t0 + at + off;
            let v = u32le(split, p);
            let nv = match (is_type, v) {
                (_, 0) => 0,
                (true, v) if v <= old.0 => ids[&v],
                (true, v) => v - old.0 + new.0,
                (false, v) if v < old.1 => strs[&v],
                (false, v) => v - old.1 + new.1,
            };
            split[p..p + 4].copy_from_slice(&nv.to_le_bytes());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Builders: a minimal ELF, a bzImage around it, tar, APK v2, ar/.deb.

/// A minimal little-endian ELF64 (x86-64) with the given sections, plus `.shstrtab`.
pub fn mini_elf(e_type: u16, sections: &[(&str, u32, &[u8])]) -> Vec<u8> {
    let mut shstrtab = vec![0u8];
    let mut out = vec![0u8; 64];
    let mut headers = vec![[0u8; 64]];
    let sec = |name: &str, ty: u32, data: &[u8], out: &mut Vec<u8>, shstrtab: &mut Vec<u8>| {
        while !out.len().is_multiple_of(8) {
            out.push(0);
        }
        let mut h = [0u8; 64];
        h[0..4].copy_from_slice(&(shstrtab.len() as u32).to_le_bytes());
        shstrtab.extend_from_slice(name.as_bytes());
        shstrtab.push(0);
        h[4..8].copy_from_slice(&ty.to_le_bytes());
        h[24..32].copy_from_slice(&(out.len() as u64).to_le_bytes());
        h[32..40].copy_from_slice(&(data.len() as u64).to_le_bytes());
        h[48..56].copy_from_slice(&1u64.to_le_bytes());
        out.extend_from_slice(data);
        h
    };
    for (name, ty, data) in sections {
        headers.push(sec(name, *ty, data, &mut out, &mut shstrtab));
    }
    let mut names = shstrtab.clone();
    names.extend_from_slice(b".shstrtab\0");
    let strtab_name = shstrtab.len() as u32;
    let mut h = sec(".shstrtab", 3, &names, &mut out, &mut shstrtab);
    h[0..4].copy_from_slice(&strtab_name.to_le_bytes());
    headers.push(h);
    while !out.len().is_multiple_of(8) {
        out.push(0);
    }
    let shoff = out.len() as u64;
    for h in &headers {
        out.extend_from_slice(h);
    }
    out[0..16].copy_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
    out[16..18].copy_from_slice(&e_type.to_le_bytes());
    out[18..20].copy_from_slice(&62u16.to_le_bytes());
    out[20..24].copy_from_slice(&1u32.to_le_bytes());
    out[40..48].copy_from_slice(&shoff.to_le_bytes());
    out[52..54].copy_from_slice(&64u16.to_le_bytes());
    out[54..56].copy_from_slice(&56u16.to_le_bytes());
    out[58..60].copy_from_slice(&64u16.to_le_bytes());
    out[60..62].copy_from_slice(&(headers.len() as u16).to_le_bytes());
    out[62..64].copy_from_slice(&(headers.len() as u16 - 1).to_le_bytes());
    out
}

/// `real`'s setup code around `vmlinux` compressed with `codec` (payload length updated).
pub fn wrap_image(real: &[u8], vmlinux: &[u8], codec: Codec) -> Vec<u8> {
    let p = bzimage::payload(real).unwrap();
    let mut payload = codec.compress(vmlinux, true).unwrap();
    if codec != Codec::Gzip {
        payload.extend_from_slice(&(vmlinux.len() as u32).to_le_bytes());
    }
    let mut out = real[..p.offset].to_vec();
    out.extend_from_slice(&payload);
    out.extend_from_slice(&real[p.offset + p.len..]);
    out[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    out
}

/// One entry of a package tree, with its path as written (no validation at all).
#[derive(Debug, Clone)]
pub enum Node {
    File(Vec<u8>),
    /// A file whose header declares `size` bytes but holds `data`.
    Lying(Vec<u8>, u64),
    Dir,
    Symlink(Vec<u8>),
    Hardlink(Vec<u8>),
    Fifo,
    CharDev,
    /// A GNU long-name entry (`L`) of this name, then a file.
    LongName(Vec<u8>),
}

pub type TreeEntry = (Vec<u8>, Node);
pub type Tree = Vec<TreeEntry>;

pub fn pad512(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(512) {
        out.push(0);
    }
}

pub fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let rest = key.len() + value.len() + 3;
    let mut len = rest + 1;
    while rest + len.to_string().len() != len {
        len = rest + len.to_string().len();
    }
    let mut r = format!("{len} {key}=").into_bytes();
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

pub fn raw_header(name: &[u8], ty: tar::EntryType, size: u64, link: &[u8]) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    let n = name.len().min(100);
    h.as_old_mut().name[..n].copy_from_slice(&name[..n]);
    let l = link.len().min(100);
    h.as_old_mut().linkname[..l].copy_from_slice(&link[..l]);
    h.set_entry_type(ty);
    h.set_size(size);
    h.set_mode(if ty == tar::EntryType::Directory {
        0o755
    } else {
        0o644
    });
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h.set_cksum();
    h
}

/// A tar of `tree`; with `apk`, each file and symlink carries its `APK-TOOLS.checksum.SHA1`.
/// Names and link targets past 100 bytes go to PAX `path`/`linkpath` records.
pub fn tar_of(tree: &[TreeEntry], apk: bool) -> Vec<u8> {
    use sha1::Sha1;
    use tar::EntryType as T;
    let mut out = Vec::new();
    for (name, node) in tree {
        let (ty, data, size, link): (T, &[u8], u64, &[u8]) = match node {
            Node::File(d) | Node::LongName(d) => (T::Regular, d, d.len() as u64, b""),
            Node::Lying(d, size) => (T::Regular, d, *size, b""),
            Node::Dir => (T::Directory, b"", 0, b""),
            Node::Symlink(t) => (T::Symlink, b"", 0, t),
            Node::Hardlink(t) => (T::Link, b"", 0, t),
            Node::Fifo => (T::Fifo, b"", 0, b""),
            Node::CharDev => (T::Char, b"", 0, b""),
        };
        let mut pax = Vec::new();
        if name.len() > 100 && !matches!(node, Node::LongName(_)) {
            pax.extend(pax_record("path", name));
        }
        if link.len() > 100 {
            pax.extend(pax_record("linkpath", link));
        }
        if apk && matches!(ty, T::Regular) {
            pax.extend(pax_record(
                "APK-TOOLS.checksum.SHA1",
                hex::encode(Sha1::digest(data)).as_bytes(),
            ));
        } else if apk && ty == T::Symlink {
            pax.extend(pax_record(
                "APK-TOOLS.checksum.SHA1",
                hex::encode(Sha1::digest(link)).as_bytes(),
            ));
        }
        if !pax.is_empty() {
            out.extend_from_slice(
                raw_header(b"PaxHeaders/x", T::XHeader, pax.len() as u64, b"").as_bytes(),
            );
            out.extend_from_slice(&pax);
            pad512(&mut out);
        }
        if let Node::LongName(_) = node {
            let mut h = tar::Header::new_gnu();
            h.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
            h.set_entry_type(T::GNULongName);
            h.set_size(name.len() as u64 + 1);
            h.set_cksum();
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(name);
            out.push(0);
            pad512(&mut out);
        }
        out.extend_from_slice(raw_header(name, ty, size, link).as_bytes());
        out.extend_from_slice(data);
        pad512(&mut out);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

pub fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// An unsigned APK v2 around a data tar: a control member whose `.PKGINFO` carries the data
/// member's `datahash` (read with untrusted packages allowed).
pub fn apk_of(data_tar: &[u8]) -> Vec<u8> {
    apk_of_parts(&gz(data_tar), "")
}

pub fn apk_of_parts(data_member: &[u8], extra: &str) -> Vec<u8> {
    let pkginfo = format!(
        "# Generated by btfgate's campaign\npkgname = linux-mini\npkgver = 6.1.192-r0\narch = x86_64\nsize = 100000\ndatahash = {}\n{extra}",
        hex::encode(Sha256::digest(data_member))
    );
    let mut control = Vec::new();
    control.extend_from_slice(
        raw_header(
            b".PKGINFO",
            tar::EntryType::Regular,
            pkginfo.len() as u64,
            b"",
        )
        .as_bytes(),
    );
    control.extend_from_slice(pkginfo.as_bytes());
    pad512(&mut control);
    [gz(&control), data_member.to_vec()].concat()
}

/// Byte ranges of the gzip members of `data` (stops at the first undecodable byte).
pub fn gzip_members(data: &[u8]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let mut dec = flate2::bufread::GzDecoder::new(&data[pos..]);
        if std::io::copy(&mut dec, &mut std::io::sink()).is_err() {
            break;
        }
        let rest = dec.into_inner().len();
        let end = data.len() - rest;
        out.push(pos..end);
        pos = end;
    }
    out
}

pub use harness::bomb::ar_of;

/// The first member of the ar archive at `path` whose name starts with `prefix`: (name, data),
/// reading only the headers before it.
pub fn ar_member(path: &std::path::Path, prefix: &[u8]) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
    use std::io::{Seek, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    let mut magic = [0u8; 8];
    f.read_exact(&mut magic)?;
    loop {
        let mut h = [0u8; 60];
        f.read_exact(&mut h)?;
        let name: Vec<u8> = h[..16].iter().copied().take_while(|&b| b != b' ').collect();
        let size: u64 = std::str::from_utf8(&h[48..58])
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .ok_or_else(|| std::io::Error::other("ar member size"))?;
        if name.starts_with(prefix) {
            let mut data = vec![0u8; size as usize];
            f.read_exact(&mut data)?;
            return Ok((name, data));
        }
        f.seek(SeekFrom::Current((size + (size & 1)) as i64))?;
    }
}

pub fn deb_control_tar(control: &str) -> Vec<u8> {
    tar_of(
        &[
            (b"./".to_vec(), Node::Dir),
            (
                b"./control".to_vec(),
                Node::File(control.as_bytes().to_vec()),
            ),
        ],
        false,
    )
}

pub const MINI_CONTROL: &str = "Package: linux-image-mini\nVersion: 6.1.192-1\nArchitecture: amd64\nInstalled-Size: 120\nDescription: campaign\n";

/// A .deb: `debian-binary`, the control member, `data.tar.<codec>` of `data_tar`.
pub fn deb_of(control_member: &(Vec<u8>, Vec<u8>), data_tar: &[u8], codec: Codec) -> Vec<u8> {
    let (name, data) = data_member(data_tar, codec);
    ar_of(&[
        (b"debian-binary", b"2.0\n"),
        (&control_member.0, &control_member.1),
        (&name, &data),
    ])
}

pub fn data_member(data_tar: &[u8], codec: Codec) -> (Vec<u8>, Vec<u8>) {
    let ext = match codec {
        Codec::Xz => ".xz",
        Codec::Zstd => ".zst",
        Codec::Gzip => ".gz",
        _ => "",
    };
    (
        format!("data.tar{ext}").into_bytes(),
        codec.compress(data_tar, true).unwrap(),
    )
}

/// Debian-style paths: `./` prefixed.
pub fn debian_paths(tree: &[TreeEntry]) -> Tree {
    let mut t: Tree = vec![(b"./".to_vec(), Node::Dir)];
    t.extend(tree.iter().map(|(p, n)| {
        let mut q = b"./".to_vec();
        q.extend_from_slice(p);
        (q, n.clone())
    }));
    t
}
