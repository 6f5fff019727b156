//! A multi-block xz member decoded on every core, read back in order.
//!
//! Debian's `dpkg-deb` writes `data.tar.xz` with xz's threaded encoder: one stream of
//! independent blocks of 24 MiB each (17 for Debian 12's generic kernel), listed with their
//! sizes in the index at the stream's end. One decoder decodes them one after another on one
//! core; here each block becomes a stream of its own (the member's stream header, the block's
//! bytes, an index of that one block, a footer) and goes to a worker thread, and the reader
//! hands the output out in the member's order.
//!
//! Each worker counts the compressed bytes its decoder takes, so every chunk of output carries
//! the member's compressed offset at its end, as a counting reader under one decoder would give:
//! a module's compressed span, from which BTF's share is priced, means what it meant.
//!
//! Only a member this module fully understands is decoded this way: one stream, index and
//! footer whose CRC32s match, blocks that tile the stream exactly, at least two of them.
//! Anything else (one block, stream padding, concatenated streams, a damaged index) is left to
//! the one-thread decoder, which says what is wrong with it. Each block's own check (CRC64
//! here) is verified by its decoder, and the one-block index written for it makes the decoder
//! verify the block's sizes against the member's index.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::PackedPos;
use crate::codec::Codec;
use crate::limits::XZ_BLOCK_DECODER_MEMORY;
use crate::spool::FileRange;

/// The xz stream header's magic bytes.
const HEADER_MAGIC: [u8; 6] = [0xFD, b'7', b'z', b'X', b'Z', 0x00];
/// The footer's.
const FOOTER_MAGIC: [u8; 2] = [b'Y', b'Z'];
/// Largest index read: 16 bytes a block at most, so far more blocks than any package holds.
const INDEX_MAX: u64 = 1 << 20;
/// Output handed over per chunk.
const CHUNK: usize = 1 << 20;
/// Chunks a worker may decode ahead of the reader (memory: this many MiB a worker). Half a
/// block of dpkg-deb's (24 MiB) is about enough: while the reader takes one worker's block,
/// the other is half way through the next, and finishes it in the time the reader takes the
/// rest of this one.
const AHEAD: usize = 12;
/// Decoding threads: two decoders within [`XZ_BLOCK_DECODER_MEMORY`] and their read-ahead hold
/// 4 MiB more than the one decoder of the other path may (see `limits.rs`); more would add
/// memory for a gain only hosts with more cores see.
pub(crate) const WORKERS: usize = 2;
/// The largest LZMA2 dictionary decoded by blocks: xz -6's, what dpkg-deb uses.
const DICT_MAX: u64 = 8 << 20;

/// One block of the member: where its bytes are and what they decode to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Block {
    /// Offset from the member's start.
    offset: u64,
    /// Header, compressed data and check, without the padding to 4 bytes.
    unpadded: u64,
    uncompressed: u64,
}

impl Block {
    fn padded(&self) -> u64 {
        self.unpadded.div_ceil(4) * 4
    }
}

/// The member's layout when it can be decoded by blocks: its stream header and its blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Layout {
    header: [u8; 12],
    blocks: Vec<Block>,
}

fn crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

fn read_at(file: &File, offset: u64, len: u64) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; usize::try_from(len).ok()?];
    file.read_exact_at(&mut buf, offset).ok()?;
    Some(buf)
}

/// xz's variable-length integer at `*pos` (7 bits a byte, low bits first, at most 9 bytes).
fn varint(b: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for i in 0..9 {
        let byte = *b.get(*pos)?;
        *pos += 1;
        v |= u64::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            // A zero continuation byte would be a second spelling of a shorter number.
            return (i == 0 || byte != 0).then_some(v);
        }
    }
    None
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads the layout of the xz member at `start`..`start + len` of `file`; `None` when the member
/// is not one stream of two or more blocks with a sound index (then it is decoded in one piece).
pub(crate) fn layout(file: &File, start: u64, len: u64) -> Option<Layout> {
    if len < 24 {
        return None;
    }
    let h = read_at(file, start, 12)?;
    let flags = [h[6], h[7]];
    if h[..6] != HEADER_MAGIC || crc32(&flags).to_le_bytes() != h[8..12] {
        return None;
    }
    let f = read_at(file, start + len - 12, 12)?;
    if f[10..12] != FOOTER_MAGIC || f[8..10] != flags || crc32(&f[4..10]).to_le_bytes() != f[0..4] {
        return None;
    }
    let backward = (u64::from(u32::from_le_bytes([f[4], f[5], f[6], f[7]])) + 1) * 4;
    if backward > INDEX_MAX || backward + 24 > len {
        return None;
    }
    let index_at = len - 12 - backward;
    let ix = read_at(file, start + index_at, backward)?;
    let body = ix.len() - 4;
    if ix[0] != 0 || crc32(&ix[..body]).to_le_bytes() != ix[body..] {
        return None;
    }
    let mut pos = 1;
    let count = varint(&ix, &mut pos)?;
    let mut blocks = Vec::new();
    let mut offset = 12u64;
    for _ in 0..count {
        let unpadded = varint(&ix, &mut pos)?;
        let uncompressed = varint(&ix, &mut pos)?;
        if unpadded == 0 || pos > body {
            return None;
        }
        let b = Block {
            offset,
            unpadded,
            uncompressed,
        };
        if lzma2_dict(file, start + offset)? > DICT_MAX {
            return None;
        }
        offset = offset.checked_add(b.padded())?;
        blocks.push(b);
    }
    // Index padding: zeros up to the CRC32, which is 4-aligned.
    if pos > body || ix[pos..body].iter().any(|&x| x != 0) || body - pos >= 4 {
        return None;
    }
    if offset != index_at || blocks.len() < 2 {
        return None;
    }
    let mut header = [0u8; 12];
    header.copy_from_slice(&h);
    Some(Layout { header, blocks })
}

/// The dictionary size of the block whose header is at `at`, when its one filter is LZMA2.
fn lzma2_dict(file: &File, at: u64) -> Option<u64> {
    let size = (u64::from(*read_at(file, at, 1)?.first()?) + 1) * 4;
    if size == 4 {
        // 0x00 there is the index: not a block.
        return None;
    }
    let h = read_at(file, at, size)?;
    let flags = h[1];
    // One filter, no reserved bits.
    if flags & 0x3F != 0 {
        return None;
    }
    let mut pos = 2;
    if flags & 0x40 != 0 {
        varint(&h, &mut pos)?;
    }
    if flags & 0x80 != 0 {
        varint(&h, &mut pos)?;
    }
    let (id, props) = (varint(&h, &mut pos)?, varint(&h, &mut pos)?);
    let p = u64::from(*h.get(pos)?);
    if id != 0x21 || props != 1 || p > 40 {
        return None;
    }
    Some(if p == 40 {
        u64::from(u32::MAX)
    } else {
        (2 | (p & 1)) << (p / 2 + 11)
    })
}

/// Block `b` as a stream of its own: the member's header, the block, a one-record index, a footer.
fn lone_stream(file: Arc<File>, start: u64, header: [u8; 12], b: &Block) -> impl Read {
    let mut index = vec![0u8];
    put_varint(&mut index, 1);
    put_varint(&mut index, b.unpadded);
    put_varint(&mut index, b.uncompressed);
    while index.len() % 4 != 0 {
        index.push(0);
    }
    index.extend_from_slice(&crc32(&index).to_le_bytes());
    let mut footer = Vec::with_capacity(12);
    let backward = (index.len() / 4 - 1) as u32;
    footer.extend_from_slice(&[0; 4]);
    footer.extend_from_slice(&backward.to_le_bytes());
    footer.extend_from_slice(&header[6..8]);
    footer.extend_from_slice(&FOOTER_MAGIC);
    let crc = crc32(&footer[4..10]).to_le_bytes();
    footer[..4].copy_from_slice(&crc);
    index.extend_from_slice(&footer);
    std::io::Cursor::new(header)
        .chain(FileRange {
            file,
            pos: start + b.offset,
            end: start + b.offset + b.padded(),
        })
        .chain(std::io::Cursor::new(index))
}

/// Output of a block, with marks (end of the output of one decoder step, the member's compressed
/// bytes taken by then), the last at the chunk's end. An empty chunk ends its block.
type Chunk = std::io::Result<(Vec<u8>, Vec<(usize, u64)>)>;

/// Decodes the blocks `first, first + step, …` in turn into `tx`, one chunk at a time; stops at
/// the first error (sent) or when the reader is gone.
fn work(
    file: Arc<File>,
    start: u64,
    layout: Arc<Layout>,
    first: usize,
    step: usize,
    tx: SyncSender<Chunk>,
) {
    for b in layout.blocks.iter().skip(first).step_by(step) {
        let (counted, taken) =
            super::CountingReader::new(lone_stream(file.clone(), start, layout.header, b));
        // Compressed bytes of the member: the block's own, not the header written before it.
        let at = |taken: &PackedPos| b.offset + taken.get().saturating_sub(12).min(b.padded());
        let mut dec = match Codec::Xz.decoder_within(counted, XZ_BLOCK_DECODER_MEMORY) {
            Ok(d) => d,
            Err(e) => {
                let _ = tx.send(Err(std::io::Error::other(e.message())));
                return;
            }
        };
        loop {
            let mut buf = vec![0u8; CHUNK];
            let mut marks = Vec::new();
            let mut n = 0;
            let end = loop {
                match dec.read(&mut buf[n..]) {
                    Ok(0) => break true,
                    Ok(k) => {
                        n += k;
                        marks.push((n, at(&taken)));
                        if n == CHUNK {
                            break false;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                }
            };
            buf.truncate(n);
            if n > 0 && tx.send(Ok((buf, marks))).is_err() {
                return;
            }
            if end {
                break;
            }
        }
        // The block's end, even when it decoded to nothing.
        if tx
            .send(Ok((Vec::new(), vec![(0, b.offset + b.padded())])))
            .is_err()
        {
            return;
        }
    }
}

/// The member's decoded bytes in order, decoded by `workers` threads; `packed` follows the
/// compressed bytes behind what was handed out.
pub(crate) struct Parallel {
    rx: Vec<Receiver<Chunk>>,
    handles: Vec<JoinHandle<()>>,
    blocks: usize,
    /// Block being read, and how far into its current chunk.
    block: usize,
    chunk: Vec<u8>,
    at: usize,
    marks: Vec<(usize, u64)>,
    /// First mark not yet passed.
    mark: usize,
    packed: PackedPos,
    done: bool,
}

impl Parallel {
    /// Starts [`WORKERS`] threads on the member at `start` of `file`, laid out as `layout`;
    /// `packed` is what the counting reader of the one-thread path would have set.
    pub(crate) fn start(
        file: File,
        start: u64,
        layout: Layout,
        packed: PackedPos,
    ) -> std::io::Result<Parallel> {
        let file = Arc::new(file);
        let blocks = layout.blocks.len();
        let layout = Arc::new(layout);
        let workers = WORKERS.min(blocks);
        let mut rx = Vec::new();
        let mut handles = Vec::new();
        for w in 0..workers {
            let (tx, r) = sync_channel(AHEAD);
            let (file, layout) = (file.clone(), layout.clone());
            handles.push(
                std::thread::Builder::new()
                    .name(format!("xz-block-{w}"))
                    .spawn(move || work(file, start, layout, w, workers, tx))?,
            );
            rx.push(r);
        }
        Ok(Parallel {
            rx,
            handles,
            blocks,
            block: 0,
            chunk: Vec::new(),
            at: 0,
            marks: Vec::new(),
            mark: 0,
            packed,
            done: false,
        })
    }
}

impl Read for Parallel {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if self.at < self.chunk.len() {
                // Up to the end of the decoder step that made these bytes, as one decoder
                // under a counting reader hands them out.
                while self.mark + 1 < self.marks.len() && self.marks[self.mark].0 <= self.at {
                    self.mark += 1;
                }
                let (step_end, packed) = self.marks[self.mark];
                let n = buf.len().min(step_end.max(self.at + 1) - self.at);
                let n = n.min(self.chunk.len() - self.at);
                buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
                self.at += n;
                self.packed.set(packed);
                return Ok(n);
            }
            if self.done || self.block >= self.blocks {
                return Ok(0);
            }
            let rx = &self.rx[self.block % self.rx.len()];
            match rx.recv() {
                Ok(Ok((chunk, marks))) => {
                    if chunk.is_empty() {
                        if let Some((_, end)) = marks.last() {
                            self.packed.set(*end);
                        }
                        self.block += 1;
                    }
                    self.chunk = chunk;
                    self.at = 0;
                    self.marks = marks;
                    self.mark = 0;
                }
                Ok(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                Err(_) => {
                    self.done = true;
                    return Err(std::io::Error::other(format!(
                        "xz block {} of {}: its decoder stopped without a word",
                        self.block + 1,
                        self.blocks
                    )));
                }
            }
        }
    }
}

impl Drop for Parallel {
    fn drop(&mut self) {
        // Workers blocked on a full channel see it closed and end.
        self.rx.clear();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    /// An xz stream of `parts` as blocks of their own (a full flush ends a block).
    fn multi_block(parts: &[Vec<u8>]) -> Vec<u8> {
        multi_block_at(parts, 6)
    }

    fn multi_block_at(parts: &[Vec<u8>], level: u32) -> Vec<u8> {
        let mut e = liblzma::write::XzEncoder::new(Vec::new(), level);
        for p in parts {
            e.write_all(p).unwrap();
            e.flush().unwrap();
        }
        e.finish().unwrap()
    }

    fn parts() -> Vec<Vec<u8>> {
        let mut noise = crate::codec::Noise::new();
        vec![
            noise.bytes(300_000),
            vec![7u8; 3_000_000],
            noise.bytes(5_000),
            Vec::new(),
            noise.bytes(2_500_000),
        ]
    }

    fn file_with(prefix: &[u8], xz: &[u8]) -> (tempfile::NamedTempFile, u64) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(prefix).unwrap();
        f.write_all(xz).unwrap();
        f.flush().unwrap();
        (f, prefix.len() as u64)
    }

    /// The layout of `xz` as a whole file.
    fn layout_of(xz: &[u8]) -> Option<Layout> {
        let (f, _) = file_with(b"", xz);
        layout(&File::open(f.path()).unwrap(), 0, xz.len() as u64)
    }

    #[test]
    fn blocks_decode_in_order_with_their_compressed_offsets() {
        let parts = parts();
        let xz = multi_block(&parts);
        let (f, start) = file_with(b"ar member before it", &xz);
        let file = File::open(f.path()).unwrap();
        let layout = layout(&file, start, xz.len() as u64).expect("a multi-block layout");
        assert!(layout.blocks.len() >= 4, "{layout:?}");
        let packed = PackedPos::default();
        let mut p = Parallel::start(file, start, layout.clone(), packed.clone()).unwrap();
        // Read in small steps, noting the compressed offset at each output offset.
        let mut out = Vec::new();
        let mut seen = Vec::new();
        let mut buf = [0u8; 64 * 1024];
        loop {
            let n = p.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
            seen.push((out.len(), packed.get()));
        }
        assert_eq!(out, parts.concat());
        assert!(seen.windows(2).all(|w| w[0].1 <= w[1].1), "not monotonic");
        // The run of 7s (part 2) costs next to nothing; the random parts about their length.
        let at = |o: usize| seen.iter().find(|s| s.0 >= o).unwrap().1;
        let run = at(300_000 + 3_000_000) - at(300_000 + 1_100_000);
        assert!(run < 64 * 1024, "a run of one byte priced {run}");
        let last = layout.blocks.last().unwrap();
        assert_eq!(packed.get(), last.offset + last.padded());
    }

    #[test]
    fn the_one_thread_decoder_keeps_what_this_does_not_understand() {
        let parts = parts();
        let xz = multi_block(&parts);
        assert!(layout_of(&xz).is_some());
        // A dictionary larger than xz -6's (xz -9: 64 MiB) would need more decoder memory.
        assert_eq!(layout_of(&multi_block_at(&parts, 9)), None);
        // One block.
        assert_eq!(layout_of(&multi_block(&[parts[0].clone()])), None);
        // Stream padding, a damaged index, a damaged footer, a cut member.
        let mut padded = xz.clone();
        padded.extend_from_slice(&[0; 4]);
        let mut index = xz.clone();
        let n = index.len();
        index[n - 14] ^= 1;
        let mut footer = xz.clone();
        footer[n - 3] ^= 1;
        for (what, bytes) in [
            ("padded", padded),
            ("index", index),
            ("footer", footer),
            ("cut", xz[..xz.len() - 1].to_vec()),
        ] {
            assert_eq!(layout_of(&bytes), None, "{what}");
        }
    }

    #[test]
    fn a_damaged_block_is_an_error_not_a_short_read() {
        let parts = parts();
        let mut xz = multi_block(&parts);
        let l = layout_of(&xz).unwrap();
        // A byte inside the third block's compressed data.
        let b = &l.blocks[2];
        xz[(b.offset + b.unpadded / 2) as usize] ^= 0x55;
        let (g, _) = file_with(b"", &xz);
        let file = File::open(g.path()).unwrap();
        let mut p = Parallel::start(file, 0, l, PackedPos::default()).unwrap();
        let mut out = Vec::new();
        let e = p.read_to_end(&mut out).unwrap_err();
        assert!(out.len() < parts.concat().len(), "{e}");
        // Dropping the reader mid-stream ends its workers (the test would hang otherwise).
        drop(p);
    }

    #[test]
    fn varints_round_trip_and_refuse_overlong_spellings() {
        for v in [0u64, 1, 127, 128, 300, 25_165_824, u64::MAX >> 1] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            let mut pos = 0;
            assert_eq!(varint(&b, &mut pos), Some(v));
            assert_eq!(pos, b.len());
        }
        let mut pos = 0;
        assert_eq!(varint(&[0x81, 0x00], &mut pos), None);
        let mut pos = 0;
        assert_eq!(varint(&[0x80; 10], &mut pos), None);
    }
}
