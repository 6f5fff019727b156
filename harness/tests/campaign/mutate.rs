//! The campaign's mutations: a seeded generator, byte mutations aimed by a [`Shape`] (where
//! a format's structure lives, which integers hold lengths and offsets), and the shapes of the
//! formats met (ELF, BTF, tar, ar, gzip members, compressed streams, bzImage).

use std::ops::Range;

use harness::kernel::{bzimage, elf};

use crate::build::{btf_records, u16le, u64le, BtfHdr};

const DEFAULT_SEED: u64 = 0x6274_6667_6174_6521;

// ---------------------------------------------------------------------------------------------
// Seeded PRNG (splitmix64): every case is reproducible from (seed, set, index).

pub struct Rng(u64);

impl Rng {
    pub fn for_case(set: &str, i: usize) -> Rng {
        let mut h = seed();
        for b in set.bytes() {
            h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
        }
        Rng(h ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
}

pub fn seed() -> u64 {
    std::env::var("BTFGATE_CAMPAIGN_SEED")
        .ok()
        .and_then(|s| {
            let s = s.trim();
            s.strip_prefix("0x")
                .map_or_else(|| s.parse().ok(), |h| u64::from_str_radix(h, 16).ok())
        })
        .unwrap_or(DEFAULT_SEED)
}

pub fn scaled(n: usize) -> usize {
    let f: f64 = std::env::var("BTFGATE_CAMPAIGN_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    ((n as f64 * f).round() as usize).max(1)
}

// ---------------------------------------------------------------------------------------------
// Byte mutations, aimed by a shape: the ranges where structure lives and the integer fields
// that hold lengths and offsets.

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Enc {
    Le,
    /// tar numbers: octal text, or base-256 when it does not fit.
    Octal,
    /// ar numbers: decimal text padded with spaces.
    Decimal,
}

#[derive(Debug, Clone, Copy)]
pub struct Field {
    pub at: usize,
    pub width: usize,
    pub enc: Enc,
}

#[derive(Debug, Clone, Default)]
pub struct Shape {
    pub hot: Vec<Range<usize>>,
    pub fields: Vec<Field>,
}

impl Shape {
    pub fn field(&mut self, at: usize, width: usize, enc: Enc) {
        self.fields.push(Field { at, width, enc });
    }
    pub fn hot(&mut self, r: Range<usize>) {
        if r.start < r.end {
            self.hot.push(r);
        }
    }
}

pub fn read_field(data: &[u8], f: Field) -> u64 {
    let Some(b) = data.get(f.at..f.at + f.width) else {
        return 0;
    };
    match f.enc {
        Enc::Le => b.iter().rev().fold(0u64, |v, &x| (v << 8) | x as u64),
        Enc::Octal => std::str::from_utf8(b)
            .ok()
            .and_then(|s| {
                u64::from_str_radix(s.trim_matches(|c: char| c == '\0' || c == ' '), 8).ok()
            })
            .unwrap_or(0),
        Enc::Decimal => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0),
    }
}

pub fn write_field(data: &mut [u8], f: Field, v: u64) {
    let Some(b) = data.get_mut(f.at..f.at + f.width) else {
        return;
    };
    match f.enc {
        Enc::Le => {
            for (k, x) in b.iter_mut().enumerate() {
                *x = v.checked_shr(8 * k as u32).unwrap_or(0) as u8;
            }
        }
        Enc::Octal => {
            let text = format!("{v:0w$o}", w = f.width - 1);
            if text.len() < f.width {
                b[..text.len()].copy_from_slice(text.as_bytes());
                b[text.len()] = 0;
            } else {
                // GNU base-256: high bit set, big-endian value.
                b.fill(0);
                b[0] = 0x80;
                let n = b.len();
                for k in 0..8.min(n - 1) {
                    b[n - 1 - k] = (v >> (8 * k)) as u8;
                }
            }
        }
        Enc::Decimal => {
            let text = format!("{v:<w$}", w = f.width);
            if text.len() == f.width {
                b.copy_from_slice(text.as_bytes());
            } else {
                b.fill(b'9');
            }
        }
    }
}

/// Applies one to three mutations to `data`; returns what was done.
pub fn mutate(rng: &mut Rng, data: &mut Vec<u8>, shape: &Shape) -> String {
    let n = 1 + rng.below(3);
    let mut done = Vec::new();
    for _ in 0..n {
        done.push(mutate_once(rng, data, shape));
    }
    done.join(", ")
}

pub fn position(rng: &mut Rng, len: usize, shape: &Shape) -> usize {
    if !shape.hot.is_empty() && rng.chance(75) {
        let r = rng.pick(&shape.hot).clone();
        let p = r.start + rng.below(r.end - r.start);
        if p < len {
            return p;
        }
    }
    rng.below(len)
}

pub fn mutate_once(rng: &mut Rng, data: &mut Vec<u8>, shape: &Shape) -> String {
    if data.is_empty() {
        data.push(rng.next() as u8);
        return "grow empty".into();
    }
    let len = data.len();
    match rng.below(100) {
        0..=24 => {
            let p = position(rng, len, shape);
            let bit = rng.below(8);
            data[p] ^= 1 << bit;
            format!("flip bit {bit} at {p}")
        }
        25..=34 => {
            let p = position(rng, len, shape);
            let r = rng.next() as u8;
            let v = *rng.pick(&[0u8, 0xff, 0x7f, 0x80, 0x01, b'/', b'.', r]);
            data[p] = v;
            format!("byte {v:#04x} at {p}")
        }
        35..=59 if !shape.fields.is_empty() => {
            let f = *rng.pick(&shape.fields);
            let cur = read_field(data, f);
            let r = rng.next();
            let v = *rng.pick(&[
                0,
                1,
                cur.wrapping_add(1),
                cur.wrapping_sub(1),
                cur.wrapping_mul(2),
                len as u64,
                len as u64 + 1,
                0x7fff_ffff,
                0xffff_ffff,
                1 << 40,
                u64::MAX / 2,
                u64::MAX,
                u64::MAX - 64,
                r,
            ]);
            write_field(data, f, v);
            format!("field {:?}@{}+{} {cur} -> {v}", f.enc, f.at, f.width)
        }
        35..=64 => {
            let p = position(rng, len, shape);
            data.truncate(p);
            format!("truncate at {p}")
        }
        65..=74 => {
            let p = position(rng, len, shape);
            let k = 1 + rng.below(64);
            let bytes: Vec<u8> = (0..k).map(|_| rng.next() as u8).collect();
            data.splice(p..p, bytes);
            format!("insert {k} bytes at {p}")
        }
        75..=84 => {
            let p = position(rng, len, shape);
            let k = (1 + rng.below(64)).min(len - p);
            data.drain(p..p + k);
            format!("delete {k} bytes at {p}")
        }
        _ => {
            // Duplicate a block (a tar member, a record) somewhere else.
            let from = position(rng, len, shape);
            let k = (1 + rng.below(2048)).min(len - from);
            let to = rng.below(len + 1);
            let block = data[from..from + k].to_vec();
            data.splice(to..to, block);
            format!("duplicate {k} bytes from {from} to {to}")
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Shapes of the formats met.

/// ELF64: header fields, every section header's name/type/offset/size/link, the section
/// header table and the `.BTF` header as hot ranges.
pub fn elf_shape(data: &[u8]) -> Shape {
    let mut s = Shape::default();
    if data.len() < 64 {
        s.hot(0..data.len());
        return s;
    }
    s.hot(0..64);
    for (at, w) in [(32, 8), (40, 8), (56, 2), (58, 2), (60, 2), (62, 2)] {
        s.field(at, w, Enc::Le);
    }
    let shoff = u64le(data, 40) as usize;
    let shnum = u16le(data, 60) as usize;
    s.hot(shoff..shoff + shnum * 64);
    for i in 0..shnum {
        let h = shoff + i * 64;
        if h + 64 > data.len() {
            break;
        }
        for (at, w) in [(0, 4), (4, 4), (24, 8), (32, 8), (40, 4), (56, 8)] {
            s.field(h + at, w, Enc::Le);
        }
    }
    if let Ok(secs) = elf::sections(data) {
        if let Some((o, l)) = secs.btf {
            s.hot(o..o + l.min(24));
            s.fields.extend(btf_shape_at(&data[o..o + l], o, 64).fields);
        }
        if let Some((o, l)) = secs.modinfo {
            s.hot(o..o + l);
        }
        // The headers of the sections the loader reads (names, .BTF, .modinfo) weigh more.
        let shstrndx = u16le(data, 62) as usize;
        let read = [secs.btf.map(|r| r.0), secs.modinfo.map(|r| r.0)];
        for i in 0..shnum {
            let h = shoff + i * 64;
            if h + 64 > data.len() {
                break;
            }
            let off = Some(u64le(data, h + 24) as usize);
            if i == shstrndx || read.contains(&off) {
                for _ in 0..8 {
                    for (at, w) in [(4, 4), (24, 8), (32, 8)] {
                        s.field(h + at, w, Enc::Le);
                    }
                }
            }
        }
    }
    s
}

/// BTF: the five header lengths, and name/info/type fields of up to `records` type records.
pub fn btf_shape_at(btf: &[u8], base: usize, records: usize) -> Shape {
    let mut s = Shape::default();
    s.hot(base..base + btf.len().min(24));
    for at in [4, 8, 12, 16, 20] {
        s.field(base + at, 4, Enc::Le);
    }
    let Some(h) = BtfHdr::read(btf) else {
        return s;
    };
    let types = h.types(btf);
    let recs = btf_records(types);
    let step = (recs.len() / records.max(1)).max(1);
    let t0 = base + h.hdr_len + h.type_off;
    for &(at, _, _) in recs.iter().step_by(step) {
        s.hot(t0 + at..t0 + at + 12);
        for k in [0, 4, 8] {
            s.field(t0 + at + k, 4, Enc::Le);
        }
        s.field(t0 + at + 4, 2, Enc::Le); // vlen
    }
    let s0 = base + h.hdr_len + h.str_off;
    s.hot(s0..s0 + 64);
    s
}

/// A tar stream: every header's size (octal), mode, mtime, and its name, type, link name,
/// magic and prefix as hot ranges.
pub fn tar_shape(data: &[u8]) -> Shape {
    let mut s = Shape::default();
    for h in tar_headers(data) {
        for (at, w) in [(124, 12), (100, 8), (136, 12)] {
            s.field(h + at, w, Enc::Octal);
        }
        s.hot(h..h + 100);
        s.hot(h + 124..h + 136);
        s.hot(h + 156..h + 265);
        s.hot(h + 345..h + 400);
        s.hot(h + 512..h + 600); // start of the content (PAX records, ELF headers)
    }
    s
}

/// Offsets of the headers of a tar stream (stops at the end blocks or at garbage).
pub fn tar_headers(data: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut h = 0usize;
    while h + 512 <= data.len() && out.len() < 100_000 {
        let block = &data[h..h + 512];
        if block.iter().all(|&b| b == 0) {
            break;
        }
        out.push(h);
        let size = read_field(
            data,
            Field {
                at: h + 124,
                width: 12,
                enc: Enc::Octal,
            },
        ) as usize;
        let Some(next) = size
            .checked_add(511)
            .map(|s| s / 512 * 512)
            .and_then(|s| h.checked_add(512 + s))
        else {
            break;
        };
        h = next;
    }
    out
}

/// Recomputes the checksum of every block that looks like a ustar header, so that mutated
/// headers reach the code behind the checksum test.
pub fn fix_tar_checksums(data: &mut [u8]) {
    let mut h = 0;
    while h + 512 <= data.len() {
        if &data[h + 257..h + 262] == b"ustar" {
            let block = &mut data[h..h + 512];
            block[148..156].fill(b' ');
            let sum: u32 = block.iter().map(|&b| b as u32).sum();
            let text = format!("{sum:06o}\0 ");
            block[148..156].copy_from_slice(text.as_bytes());
        }
        h += 512;
    }
}

/// An ar archive: each member header's size (decimal), the headers and the start of each
/// member as hot ranges.
pub fn ar_shape(data: &[u8]) -> Shape {
    let mut s = Shape::default();
    s.hot(0..8);
    let mut h = 8usize;
    while h + 60 <= data.len() {
        s.hot(h..h + 60);
        s.field(h + 48, 10, Enc::Decimal);
        s.field(h + 16, 12, Enc::Decimal);
        s.hot(h + 60..(h + 60 + 64).min(data.len()));
        let size = read_field(
            data,
            Field {
                at: h + 48,
                width: 10,
                enc: Enc::Decimal,
            },
        ) as usize;
        h += 60 + size + (size & 1);
    }
    s
}

/// Concatenated gzip members: headers and trailers hot, each member's ISIZE as a field.
pub fn gzip_members_shape(data: &[u8], members: &[Range<usize>]) -> Shape {
    let mut s = Shape::default();
    for m in members {
        s.hot(m.start..(m.start + 16).min(data.len()));
        s.hot(m.end.saturating_sub(8)..m.end);
        if m.end >= 4 {
            s.field(m.end - 4, 4, Enc::Le);
            s.field(m.end - 8, 4, Enc::Le);
        }
        s.field(m.start + 4, 4, Enc::Le);
    }
    s
}

/// A compressed stream: its header and trailer.
pub fn stream_shape(data: &[u8]) -> Shape {
    let mut s = Shape::default();
    let n = data.len();
    s.hot(0..n.min(32));
    s.hot(n.saturating_sub(16)..n);
    if n >= 8 {
        s.field(n - 4, 4, Enc::Le);
        s.field(n - 8, 4, Enc::Le);
    }
    s
}

/// bzImage: the setup header fields that locate the payload, the payload's ends.
pub fn bzimage_shape(image: &[u8]) -> Shape {
    let mut s = Shape::default();
    s.hot(0x1f1..0x270);
    for (at, w) in [
        (0x1f1, 1),
        (0x1f4, 4),
        (0x206, 2),
        (0x20e, 2),
        (0x248, 4),
        (0x24c, 4),
    ] {
        s.field(at, w, Enc::Le);
    }
    if let Ok(p) = bzimage::payload(image) {
        s.hot(p.offset..p.offset + 64);
        s.hot(p.offset + p.len - 16..p.offset + p.len);
        s.field(p.offset + p.len - 4, 4, Enc::Le);
    }
    s
}

/// `base` mutated (never left unchanged: an unchanged package is a slow, pointless case).
pub fn mutated(rng: &mut Rng, base: &[u8], shape: &Shape) -> (Vec<u8>, String) {
    loop {
        let mut b = base.to_vec();
        let what = mutate(rng, &mut b, shape);
        if b != base {
            return (b, what);
        }
    }
}

/// A tar mutated with its shape, checksums usually fixed so the headers are read.
pub fn mutate_tar(rng: &mut Rng, tar: &[u8]) -> (Vec<u8>, String) {
    let (mut t, what) = mutated(rng, tar, &tar_shape(tar));
    if rng.chance(80) {
        fix_tar_checksums(&mut t);
    }
    (t, what)
}
