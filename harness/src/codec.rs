//! Compression formats met in kernel packages: detection by magic, streaming decoders, and
//! the encoders used to price BTF bytes "as compressed in the package".

use std::io::{Read, Write};

use serde::Serialize;

use crate::limits::{self, Exceeded, Limit};

/// A compression format, detected from its magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    None,
    Gzip,
    Xz,
    Zstd,
    /// LZ4 legacy frame (`lz4 -l`), what the kernel's `CONFIG_KERNEL_LZ4` produces.
    Lz4,
    Bzip2,
    Lzma,
    Lzo,
}

impl Codec {
    /// Detects the codec from the first bytes of a stream; `None` when no magic matches.
    pub fn detect(head: &[u8]) -> Codec {
        if head.starts_with(&[0x1f, 0x8b]) {
            Codec::Gzip
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
            Codec::Xz
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Codec::Zstd
        } else if head.starts_with(&[0x02, 0x21, 0x4c, 0x18])
            || head.starts_with(&[0x04, 0x22, 0x4d, 0x18])
        {
            Codec::Lz4
        } else if head.starts_with(b"BZh") {
            Codec::Bzip2
        } else if head.starts_with(&[0x5d, 0x00, 0x00]) {
            Codec::Lzma
        } else if head.starts_with(&[0x89, b'L', b'Z', b'O']) {
            Codec::Lzo
        } else {
            Codec::None
        }
    }

    /// Codec implied by a module file name (`.ko.gz`, `.ko.xz`, `.ko.zst`).
    pub fn from_module_name(name: &str) -> Option<Codec> {
        if name.ends_with(".ko") {
            Some(Codec::None)
        } else if name.ends_with(".ko.gz") {
            Some(Codec::Gzip)
        } else if name.ends_with(".ko.xz") {
            Some(Codec::Xz)
        } else if name.ends_with(".ko.zst") {
            Some(Codec::Zstd)
        } else {
            None
        }
    }

    /// Whether btfgate has a decoder for it ([`Self::decoder_within`]); `None` passes through.
    pub fn decodes(self) -> bool {
        !matches!(self, Codec::Bzip2 | Codec::Lzma | Codec::Lzo)
    }

    pub fn name(self) -> &'static str {
        match self {
            Codec::None => "none",
            Codec::Gzip => "gzip",
            Codec::Xz => "xz",
            Codec::Zstd => "zstd",
            Codec::Lz4 => "lz4",
            Codec::Bzip2 => "bzip2",
            Codec::Lzma => "lzma",
            Codec::Lzo => "lzo",
        }
    }

    /// Wraps `r` in a streaming decoder allowed [`limits::DECODER_MEMORY`]. Errors with the
    /// codec's name when btfgate has no decoder.
    pub fn decoder<'a>(self, r: impl Read + 'a) -> crate::Result<Box<dyn Read + 'a>> {
        self.decoder_within(r, limits::DECODER_MEMORY)
    }

    /// Wraps `r` in a streaming decoder whose window (xz dictionary, zstd window) may take up
    /// to `memory.max` bytes: a stream declaring more fails with an [`Exceeded`] error naming
    /// `memory` (see [`limits::exceeded`]) before the decoder allocates it.
    pub fn decoder_within<'a>(
        self,
        r: impl Read + 'a,
        memory: Limit,
    ) -> crate::Result<Box<dyn Read + 'a>> {
        let inner: Box<dyn Read + 'a> = match self {
            Codec::None => return Ok(Box::new(r)),
            Codec::Gzip => Box::new(flate2::read::MultiGzDecoder::new(r)),
            Codec::Xz => {
                let stream = liblzma::stream::Stream::new_stream_decoder(
                    memory.max,
                    liblzma::stream::CONCATENATED,
                )
                .map_err(|e| crate::Error::failed("decompress", format!("xz decoder: {e}")))?;
                Box::new(liblzma::read::XzDecoder::new_stream(r, stream))
            }
            Codec::Zstd => {
                let mut d = zstd::stream::read::Decoder::new(r).map_err(|e| {
                    crate::Error::failed("decompress", format!("zstd decoder: {e}"))
                })?;
                // The largest power of two the limit holds.
                let log = 63 - memory.max.max(1).leading_zeros();
                d.window_log_max(log).map_err(|e| {
                    crate::Error::failed(
                        "decompress",
                        format!("zstd decoder: window of 2^{log} bytes: {e}"),
                    )
                })?;
                Box::new(d)
            }
            Codec::Lz4 => Box::new(lz4_flex::frame::FrameDecoder::new(r)),
            Codec::Bzip2 | Codec::Lzma | Codec::Lzo => {
                return Err(crate::Error::failed(
                    "decompress",
                    format!("unsupported compression {}", self.name()),
                ))
            }
        };
        Ok(Box::new(NamedErrors {
            inner,
            codec: self,
            memory,
        }))
    }

    /// Decompresses a whole buffer, refusing output past `limit` bytes and a window past
    /// [`limits::DECODER_MEMORY`]: both are checked while the decoder streams, so a small bomb
    /// never expands in memory beyond them.
    pub fn decompress(
        self,
        data: &[u8],
        size_hint: usize,
        limit: u64,
    ) -> Result<Vec<u8>, Decompress> {
        let limit = Limit {
            name: "",
            what: "output",
            max: limit,
            unit: "bytes",
        };
        self.decompress_within(data, size_hint, limit, limits::DECODER_MEMORY)
    }

    /// [`Self::decompress`] within named limits: output past `limit`, a window past `memory`
    /// ([`Self::decoder_within`]).
    pub fn decompress_within(
        self,
        data: &[u8],
        size_hint: usize,
        limit: Limit,
        memory: Limit,
    ) -> Result<Vec<u8>, Decompress> {
        let mut out = Vec::with_capacity(size_hint.min(usize::try_from(limit.max).unwrap_or(0)));
        let read = self
            .decoder_within(data, memory)
            .map_err(|e| Decompress::Failed(e.message()))?
            .take(limit.max.saturating_add(1))
            .read_to_end(&mut out);
        if let Err(e) = read {
            return Err(match limits::exceeded(&e) {
                Some(x) => Decompress::Exceeded(x.clone()),
                None => Decompress::Failed(format!("{} decompression failed: {e}", self.name())),
            });
        }
        if out.len() as u64 > limit.max {
            return Err(Decompress::Exceeded(Exceeded::new(
                limit,
                format!("{} data expands further (stopped there)", self.name()),
            )));
        }
        Ok(out)
    }

    /// Size of `data` compressed with this codec at the settings kernel builds use
    /// (gzip -9, xz -6, zstd -19, lz4 -l -9). Prices the `.BTF` of an lz4 kernel image, whose
    /// 8 MiB blocks are too coarse to read its share off the stream (`kernel::share`):
    /// standalone compression of the `.BTF` bytes matches the measured growth of a vmlinuz
    /// within a few percent (measured on Debian 6.1 and tiny kernels built with BTF on and off).
    pub fn compressed_len(self, data: &[u8]) -> crate::Result<u64> {
        let mut sink = CountingSink(0);
        self.compress_into(data, &mut sink, false)?;
        Ok(sink.0)
    }

    /// Compresses `data` into a buffer (`fast`: lowest preset, for making test inputs).
    pub fn compress(self, data: &[u8], fast: bool) -> crate::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(data.len() / 3);
        self.compress_into(data, &mut out, fast)?;
        Ok(out)
    }

    /// Writes `data` compressed with this codec (the kernel's settings unless `fast`) to `w`.
    pub fn compress_into(self, data: &[u8], mut w: impl Write, fast: bool) -> crate::Result<()> {
        match self {
            Codec::None => w.write_all(data),
            Codec::Gzip => {
                let level = if fast {
                    flate2::Compression::fast()
                } else {
                    flate2::Compression::best()
                };
                let mut e = flate2::write::GzEncoder::new(&mut w, level);
                e.write_all(data).and_then(|_| e.finish().map(|_| ()))
            }
            Codec::Xz => {
                let mut e = liblzma::write::XzEncoder::new(&mut w, if fast { 0 } else { 6 });
                e.write_all(data).and_then(|_| e.finish().map(|_| ()))
            }
            // One call with the size known, as `zstd -19 FILE` does: the encoder's tables fit
            // the input (a streaming encoder that does not know the size set up level 19's
            // full tables, ~80 MB and 0.1 s, even for a 200-byte module .BTF).
            Codec::Zstd => {
                zstd::bulk::compress(data, if fast { 1 } else { 19 }).and_then(|c| w.write_all(&c))
            }
            // The kernel runs `lz4 -l -9` (LZ4HC); lz4_flex only has the fast mode, which
            // overprices BTF by ~25 %, so use liblz4's HC mode. Legacy frame: magic, then
            // 8 MiB blocks each prefixed by its u32 LE compressed length.
            Codec::Lz4 => {
                let mode = if fast {
                    lz4::block::CompressionMode::DEFAULT
                } else {
                    lz4::block::CompressionMode::HIGHCOMPRESSION(9)
                };
                w.write_all(&0x184c_2102u32.to_le_bytes()).and_then(|_| {
                    data.chunks(8 << 20).try_for_each(|block| {
                        let c = lz4::block::compress(block, Some(mode), false)?;
                        w.write_all(&(c.len() as u32).to_le_bytes())?;
                        w.write_all(&c)
                    })
                })
            }
            Codec::Bzip2 | Codec::Lzma | Codec::Lzo => {
                return Err(crate::Error::failed(
                    "compress",
                    format!("unsupported compression {}", self.name()),
                ))
            }
        }
        .map_err(|e| crate::Error::failed("compress", format!("{} failed: {e}", self.name())))
    }
}

struct CountingSink(u64);

impl Write for CountingSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Why a buffer did not decompress.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Decompress {
    /// Corrupt data or an unsupported codec.
    #[error("{0}")]
    Failed(String),
    /// The output ran past its limit (a decompression bomb, or not a kernel package), or the
    /// stream declared a window past the decoder's memory limit.
    #[error(transparent)]
    Exceeded(Exceeded),
}

/// A decoder whose errors name the codec, and whose "needs too much memory" errors are
/// [`Exceeded`] naming the memory limit it was given.
struct NamedErrors<'a> {
    inner: Box<dyn Read + 'a>,
    codec: Codec,
    memory: Limit,
}

impl Read for NamedErrors<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf).map_err(|e| {
            if limits::exceeded(&e).is_some() {
                return e;
            }
            let text = e.to_string();
            // liblzma: "memory limit reached"; zstd: "Frame requires too much memory for
            // decoding" (a window past window_log_max).
            let lower = text.to_ascii_lowercase();
            if lower.contains("memory limit") || lower.contains("too much memory") {
                Exceeded::new(self.memory, format!("{} stream: {text}", self.codec.name())).into()
            } else {
                std::io::Error::new(e.kind(), format!("{}: {text}", self.codec.name()))
            }
        })
    }
}

/// Incompressible bytes for tests: xorshift64 from a fixed seed, continued across calls.
#[cfg(test)]
pub(crate) struct Noise(u64);

#[cfg(test)]
impl Noise {
    pub(crate) fn new() -> Noise {
        Noise(0x2545_F491_4F6C_DD1D)
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n)
            .map(|_| {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                self.0 as u8
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn decodes_says_which_codecs_have_a_decoder() {
        use Codec::*;
        for c in [None, Gzip, Xz, Zstd, Lz4, Bzip2, Lzma, Lzo] {
            assert_eq!(c.decodes(), c.decoder(&[][..]).is_ok(), "{}", c.name());
        }
    }

    #[test]
    fn round_trips_through_every_supported_codec() {
        let data: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let gz = {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&data).unwrap();
            e.finish().unwrap()
        };
        let xz = {
            let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
            e.write_all(&data).unwrap();
            e.finish().unwrap()
        };
        let zst = zstd::stream::encode_all(&data[..], 3).unwrap();
        let lz4 = Codec::Lz4.compress(&data, false).unwrap();
        for (blob, codec) in [
            (gz, Codec::Gzip),
            (xz, Codec::Xz),
            (zst, Codec::Zstd),
            (lz4, Codec::Lz4),
        ] {
            assert_eq!(Codec::detect(&blob), codec);
            let limit = |max| Limit {
                max,
                ..limits::MODULE_ELF
            };
            assert_eq!(
                codec.decompress(&blob, 0, 1 << 20).unwrap(),
                data,
                "{codec:?}"
            );
            // One byte under the output's size: refused while streaming, in every codec.
            match codec.decompress_within(
                &blob,
                0,
                limit(data.len() as u64 - 1),
                limits::DECODER_MEMORY,
            ) {
                Err(Decompress::Exceeded(x)) => {
                    assert_eq!(x.limit, limit(data.len() as u64 - 1), "{codec:?}")
                }
                other => panic!("{codec:?}: {other:?}"),
            }
            assert!(codec.compressed_len(&data).unwrap() < data.len() as u64);
        }
    }

    /// A stream declaring a window past the decoder's memory limit is refused before its
    /// window is allocated, naming the limit: xz -9 (64 MiB dictionary) and a zstd window of
    /// 2^27 (the kernel's `zstd -22 --ultra`) pass the payload decoder, not the others.
    #[test]
    fn windows_past_the_memory_limit_are_refused() {
        let data = vec![1u8; 1000];
        let xz = {
            let mut e = liblzma::write::XzEncoder::new(Vec::new(), 9);
            e.write_all(&data).unwrap();
            e.finish().unwrap()
        };
        let zst = {
            let mut e = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
            e.window_log(27).unwrap();
            e.write_all(&data).unwrap();
            e.finish().unwrap()
        };
        for (blob, codec) in [(xz, Codec::Xz), (zst, Codec::Zstd)] {
            let mut out = Vec::new();
            let e = codec
                .decoder(&blob[..])
                .unwrap()
                .read_to_end(&mut out)
                .unwrap_err();
            let x = limits::exceeded(&e).unwrap_or_else(|| panic!("{codec:?}: {e}"));
            assert_eq!(x.limit, limits::DECODER_MEMORY, "{codec:?}");
            assert!(e.to_string().contains("DECODER_MEMORY"), "{e}");
            out.clear();
            codec
                .decoder_within(&blob[..], limits::PAYLOAD_DECODER_MEMORY)
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, data, "{codec:?}");
        }
    }

    #[test]
    fn unsupported_codecs_say_so() {
        let err = Codec::detect(b"BZh91AY")
            .decompress(b"BZh91AY", 0, 1 << 20)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unsupported compression bzip2"), "{err}");
        assert_eq!(Codec::detect(&[0x5d, 0, 0, 0x80]), Codec::Lzma);
    }
}
