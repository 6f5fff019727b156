//! What a stretch of decompressed output costs in its compressed stream: while a decoder runs,
//! the compressed bytes it has taken are noted against the bytes it has given, so the cost of
//! a vmlinux's or a module's `.BTF` is read off the package's own stream as it is decoded
//! anyway, instead of compressing the section again at the kernel's settings (that second
//! compression was most of a static verdict's CPU time: xz -6 of a 5 MB vmlinux `.BTF`, and
//! one encoder per compressed module).
//!
//! Precision: input reaches the decoder in chunks of at most [`IN_CHUNK`] bytes and output is
//! taken in steps of at most [`OUT_STEP`] bytes, so each end of a stretch is placed within a
//! few KiB of compressed input, plus whatever the codec holds internally (gzip and xz decode as
//! they read; zstd takes a whole block, at most 128 KiB of output, before it gives any). Both
//! ends are placed the same way, so most of that lead cancels out. That is close enough for a
//! vmlinux `.BTF` of megabytes in a gzip, xz or zstd payload, but a zstd module is often one
//! block whole, and the kernel's lz4 images are made of 8 MiB blocks: [`precise_for_image`] and
//! [`precise_for_module`] say which, and the others' `.BTF` is still priced by compressing it.

use std::io::{self, Read};

use crate::codec::Codec;
use crate::limits::Limit;
use crate::package::{CountingReader, PackedPos};

/// Compressed input handed to a decoder per read, at most.
const IN_CHUNK: usize = 1 << 10;
/// Decoded output taken per step, at most; one point of the map per step (a vmlinux of 70 MB
/// makes about 18,000 of them). The map grows by 16 bytes per step, so it is bounded by the
/// limit on the output it maps (`limits::VMLINUX`, `limits::MODULE_ELF`): 1/256 of it.
const OUT_STEP: usize = 4 << 10;

/// Whether [`InputMap::span`] places a vmlinux `.BTF` (megabytes) in a kernel image's payload
/// closely enough to price it: gzip, xz, and zstd (to its 128 KiB blocks); not lz4, whose
/// kernel images are made of 8 MiB blocks.
pub fn precise_for_image(codec: Codec) -> bool {
    matches!(codec, Codec::Gzip | Codec::Xz | Codec::Zstd)
}

/// Whether [`InputMap::span`] places a module's `.BTF` (a few KiB) in its compressed file
/// closely enough to price it: gzip and xz decode as they read; zstd takes a whole block (up
/// to 128 KiB of output, often the whole module) before it gives anything.
pub fn precise_for_module(codec: Codec) -> bool {
    matches!(codec, Codec::Gzip | Codec::Xz)
}

/// (decoded bytes given, compressed bytes taken) after each step of a decoder, both rising.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputMap {
    points: Vec<(u64, u64)>,
}

impl InputMap {
    /// Compressed bytes taken by the time `out` decoded bytes had been given, interpolated
    /// within the step that reached `out` (the whole input past the end).
    fn taken_at(&self, out: u64) -> u64 {
        let i = self.points.partition_point(|&(o, _)| o < out);
        match (i.checked_sub(1).map(|j| self.points[j]), self.points.get(i)) {
            (Some((o0, t0)), Some(&(o1, t1))) if o1 > o0 => {
                let part = u128::from(out - o0) * u128::from(t1.saturating_sub(t0));
                t0 + u64::try_from(part / u128::from(o1 - o0)).unwrap_or(0)
            }
            (_, Some(&(_, t))) => t,
            (_, None) => self.points.last().map_or(0, |&(_, t)| t),
        }
    }

    /// The compressed bytes that encode decoded bytes `start..end`.
    pub fn span(&self, start: u64, end: u64) -> u64 {
        self.taken_at(end).saturating_sub(self.taken_at(start))
    }
}

/// Hands its reader's bytes over at most [`IN_CHUNK`] at a time, so that what a decoder has
/// taken is never far ahead of what it has decoded.
struct Chunked<R>(R);

impl<R: Read> Read for Chunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(IN_CHUNK);
        self.0.read(&mut buf[..n])
    }
}

/// A decoder that notes, after each read, the compressed bytes it has taken against the bytes
/// it has given; reads give at most [`OUT_STEP`] bytes. Copy it out as any reader (e.g.
/// `Spool::fill_from`), then take [`Mapped::into_map`].
pub struct Mapped<'a> {
    dec: Box<dyn Read + 'a>,
    taken: PackedPos,
    given: u64,
    points: Vec<(u64, u64)>,
}

impl<'a> Mapped<'a> {
    /// Decodes `input`, compressed with `codec`, within a window of `memory`.
    pub fn new(codec: Codec, input: impl Read + 'a, memory: Limit) -> crate::Result<Mapped<'a>> {
        let (counted, taken) = CountingReader::new(Chunked(input));
        Ok(Mapped {
            dec: codec.decoder_within(counted, memory)?,
            taken,
            given: 0,
            points: vec![(0, 0)],
        })
    }

    /// The map of what was read so far.
    pub fn into_map(self) -> InputMap {
        InputMap {
            points: self.points,
        }
    }
}

impl Read for Mapped<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let step = buf.len().min(OUT_STEP);
        let n = self.dec.read(&mut buf[..step])?;
        if n > 0 {
            self.given += n as u64;
            self.points.push((self.given, self.taken.get()));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits;

    /// Random bytes (incompressible), then a long run of one byte (almost free), then random
    /// bytes again: the run's share of the stream must be tiny, each random stretch's share
    /// close to its length.
    fn sample() -> Vec<u8> {
        let mut noise = crate::codec::Noise::new();
        let mut v = noise.bytes(300_000);
        v.extend(std::iter::repeat_n(b'A', 1_000_000));
        v.extend(noise.bytes(300_000));
        v
    }

    #[test]
    fn a_stretch_costs_what_its_compressed_bytes_take() {
        let data = sample();
        for codec in [Codec::Gzip, Codec::Xz, Codec::Zstd] {
            let packed = codec.compress(&data, false).unwrap();
            let mut dec = Mapped::new(codec, &packed[..], limits::DECODER_MEMORY).unwrap();
            let mut out = Vec::new();
            dec.read_to_end(&mut out).unwrap();
            let map = dec.into_map();
            assert_eq!(out, data, "{}", codec.name());
            let whole = map.span(0, data.len() as u64);
            let run = map.span(300_000, 1_300_000);
            let tail = map.span(1_300_000, 1_600_000);
            // Everything is accounted for, within the stream's own headers.
            assert!(
                whole <= packed.len() as u64 && whole + 64 >= packed.len() as u64,
                "{}: whole {whole} of {}",
                codec.name(),
                packed.len()
            );
            // The run of one byte costs next to nothing; random bytes cost about themselves.
            assert!(run < 150_000, "{}: run {run}", codec.name());
            assert!(
                (250_000..=450_000).contains(&tail),
                "{}: tail {tail}",
                codec.name()
            );
        }
    }

    #[test]
    fn a_stretch_past_the_end_or_empty_costs_what_is_there() {
        let map = InputMap {
            points: vec![(0, 0), (10, 4), (20, 9)],
        };
        assert_eq!(map.span(0, 20), 9);
        // Within a step, by the step's rate: 5 -> 2, 15 -> 4 + 2 (half of 5).
        assert_eq!(map.span(5, 15), 4);
        assert_eq!(map.span(12, 12), 0);
        assert_eq!(map.span(0, 1_000), 9);
        assert_eq!(map.span(30, 40), 0);
    }

    #[test]
    fn a_corrupt_stream_is_the_decoders_error() {
        let mut packed = Codec::Xz.compress(&sample(), true).unwrap();
        let mid = packed.len() / 2;
        packed[mid] ^= 0xff;
        let mut dec = Mapped::new(Codec::Xz, &packed[..], limits::DECODER_MEMORY).unwrap();
        assert!(dec.read_to_end(&mut Vec::new()).is_err());
    }
}
