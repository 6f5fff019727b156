//! Every limit on what btfgate reads from a package or an Alpine index, in one place.
//!
//! Packages come from merge requests: untrusted input. Each member btfgate decompresses or
//! parses has a limit that real packages never reach, checked while it streams (never after
//! it was read), and past a limit the input is bad input ([`crate::Error::BadInput`], exit 2)
//! naming the file, the member and the limit ([`Limit`]'s `Display`).
//!
//! Each limit gives the largest real value measured, on Debian 12's
//! `linux-image-6.1.0-57-amd64` (generic: 4,023 modules) and `-cloud-amd64` .debs, the tiny
//! kernels `cargo xtask build` packages as APKs (stripped and unstripped modules), and the
//! signed Alpine files of `../shared/alpine` (v3.16 and v3.17 main indexes, alpine-baselayout).
//!
//! # Peak memory
//!
//! `bench static` holds `inspect` under 300 MB. What a hostile package can make btfgate hold
//! at once, in MiB, with every limit reached at the same moment:
//!
//! - the thread reading the package: the container's decoder ([`DECODER_MEMORY`], 40; or, for
//!   a multi-block `data.tar.xz`, two block decoders, [`XZ_BLOCK_DECODER_MEMORY`], 10 each,
//!   and their output read ahead, 12 each: 44), the
//!   current module (up to [`MODULE_IN_MEMORY`], 16, held, with its decoder; a larger module
//!   spills to an anonymous temporary file and costs its decoder, 40, the sections read back
//!   from it, ~11, and its `.BTF`, 8), module `.BTF` waiting for the worker
//!   ([`MODULE_BTF_QUEUE`], 16; the rest waits in a temporary file), the module records
//!   ([`MODULE_RECORDS`], 16) and the config ([`CONFIG`], 1, ≤ 10 parsed): ≈ 144;
//! - the worker: the kernel image's payload decoder ([`PAYLOAD_DECODER_MEMORY`], 128: a zstd
//!   window is touched only as far as the output goes, and the vmlinux it writes, like the
//!   image it reads, is an anonymous temporary file), then the vmlinux `.BTF` and its base
//!   ([`VMLINUX_BTF`], 16 each), a module `.BTF` ([`MODULE_BTF`], 8, ~16 parsed) and the
//!   encoder that prices it (xz -6 or zstd -19, ≤ ~80): ≈ 136.
//!
//! That is ≈ 284 MiB (298 MB) in the worst case. Measured (GNU time, peak RSS of `inspect`):
//! the decompression bombs of `xtask/tests/bombs.rs`, 7–56 MB; Debian's generic kernel 106 MB
//! (219 MB when modules and the vmlinux were held whole, up to 512 MiB each: a 520 MiB zstd
//! module bomb then took 532 MB, a 400 MiB GNU long name in a data.tar.xz 1.3 GB).

use std::io::{self, Read};

/// A limit on what is read from a package, named in messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// The constant's name in this module, e.g. `MODULE_ELF`.
    pub name: &'static str,
    /// What is limited, e.g. `module ELF`.
    pub what: &'static str,
    pub max: u64,
    /// `bytes`, `entries`, …
    pub unit: &'static str,
}

impl Limit {
    const fn bytes(name: &'static str, what: &'static str, max: u64) -> Limit {
        Limit {
            name,
            what,
            max,
            unit: "bytes",
        }
    }
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} limit ({} {}", self.what, self.max, self.unit)?;
        if !self.name.is_empty() {
            write!(f, ", harness::limits::{}", self.name)?;
        }
        f.write_str(")")
    }
}

// ---- the kernel ---------------------------------------------------------------------------

/// A kernel image file (`boot/vmlinuz*`), spooled to an anonymous temporary file. Largest
/// real: 14,190,528 bytes (`vmlinuz-6.1.0-57-cloud-amd64`).
pub const IMAGE: Limit = Limit::bytes("IMAGE", "kernel image", 64 << 20);

/// The vmlinux a kernel image's payload decompresses to, written to an anonymous temporary
/// file. Largest real: 65,906,612 bytes (Debian 6.1 generic).
pub const VMLINUX: Limit = Limit::bytes("VMLINUX", "vmlinux", 128 << 20);

/// The vmlinux `.BTF` section, held and parsed. Largest real: 4,360,537 bytes (Debian 6.1
/// generic).
pub const VMLINUX_BTF: Limit = Limit::bytes("VMLINUX_BTF", "vmlinux .BTF", 16 << 20);

/// A kernel config file (`boot/config*`), held and parsed (a map of its options: ≤ ~10× the
/// text). Largest real: 259,621 bytes (`config-6.1.0-57-amd64`).
pub const CONFIG: Limit = Limit::bytes("CONFIG", "kernel config", 1 << 20);

/// A module ELF once decompressed (or as stored, for `.ko`). A module up to
/// [`MODULE_IN_MEMORY`] is held; a larger one spills to an anonymous temporary file and only
/// its section headers, section names, `.modinfo` and `.BTF` are read back, so this limit
/// costs disk, not memory: unstripped modules (which the gate must read, and fail on
/// `modules.stripped`) are many times larger than stripped ones. Largest real: 19,462,185
/// bytes (`amdgpu.ko`, stripped, Debian 6.1 generic); unstripped: 174,344 bytes (`configs.ko`
/// of the tiny source build, the only unstripped package measured).
pub const MODULE_ELF: Limit = Limit::bytes("MODULE_ELF", "module ELF", 512 << 20);

/// Modules up to this size are read in memory (every stripped module measured; only `amdgpu.ko`
/// comes close); larger ones spill to an anonymous temporary file. Not a refusal.
pub const MODULE_IN_MEMORY: u64 = 16 << 20;

/// One module's `.BTF` section. Largest real: 2,095,014 bytes (`amdgpu.ko`).
pub const MODULE_BTF: Limit = Limit::bytes("MODULE_BTF", "module .BTF", 8 << 20);

/// Every module's `.BTF` together (held until the worker checked it, or waiting in an
/// anonymous temporary file). Largest real: 60,427,087 bytes (4,023 modules, Debian generic).
pub const MODULE_BTF_TOTAL: Limit =
    Limit::bytes("MODULE_BTF_TOTAL", "total module .BTF", 512 << 20);

/// Module `.BTF` waiting in memory for the worker (which is busy with the vmlinux at first);
/// past it, waiting `.BTF` goes to an anonymous temporary file. Not a refusal.
pub const MODULE_BTF_QUEUE: u64 = 16 << 20;

/// A module's `.modinfo` section. Largest real: 76,055 bytes (`option.ko`).
pub const MODINFO: Limit = Limit::bytes("MODINFO", "module .modinfo", 1 << 20);

/// What the kernel model keeps per module (the record, its path, dependency, alias and debug
/// section names, `.BTF` hash), summed over the package. Largest real: 1,819,585 bytes (4,023
/// modules, Debian generic).
pub const MODULE_RECORDS: Limit = Limit::bytes("MODULE_RECORDS", "module records", 16 << 20);

/// Section headers of an ELF file (vmlinux or module). Largest real: 93 (`kvm.ko`); vmlinux 39.
pub const ELF_SECTIONS: Limit = Limit {
    name: "ELF_SECTIONS",
    what: "ELF section headers",
    max: 1 << 14,
    unit: "sections",
};

/// The section name table of an ELF file. Largest real: 938 bytes (`kvm.ko`); vmlinux 430.
pub const ELF_SECTION_NAMES: Limit =
    Limit::bytes("ELF_SECTION_NAMES", "ELF section name table", 1 << 20);

/// Distinct `lib/modules/<release>` directories of one package. Largest real: 1.
pub const RELEASE_DIRS: Limit = Limit {
    name: "RELEASE_DIRS",
    what: "lib/modules release directories",
    max: 64,
    unit: "directories",
};

// ---- codecs and containers ----------------------------------------------------------------

/// What one streaming decoder of a container or module may allocate: liblzma's memory limit,
/// and zstd's largest window (2^25, the largest power of two under it). A decoder's window is
/// touched only as far as its output goes, so a bomb costs at most this. Largest real: 33 MiB
/// (the xz of Debian's bzImage payload: the kernel's `--lzma2=dict=32MiB`; the .deb data
/// members, xz -6, need 9 MiB; module `.ko.xz` use a 1 MiB dictionary).
pub const DECODER_MEMORY: Limit = Limit::bytes("DECODER_MEMORY", "decoder memory", 40 << 20);

/// What each of the two decoders of a multi-block `data.tar.xz` decoded by blocks may allocate
/// (`package/xzblocks.rs`; a member whose blocks declare a larger dictionary is decoded by one
/// decoder within [`DECODER_MEMORY`] instead). Largest real: 9 MiB (xz -6, an 8 MiB
/// dictionary).
pub const XZ_BLOCK_DECODER_MEMORY: Limit = Limit::bytes(
    "XZ_BLOCK_DECODER_MEMORY",
    "xz block decoder memory",
    10 << 20,
);

/// A kernel image payload's decoder: the kernel compresses a zstd payload with
/// `zstd -22 --ultra` from a pipe, which declares a 2^27-byte window (measured: window
/// descriptor 0x88), and the window is touched only as far as the vmlinux goes ([`VMLINUX`]).
pub const PAYLOAD_DECODER_MEMORY: Limit = Limit::bytes(
    "PAYLOAD_DECODER_MEMORY",
    "payload decoder memory",
    128 << 20,
);

/// One GNU long name, GNU long link or PAX extended header record set of a tar stream (the
/// `tar` crate would read one whole, whatever its declared size). Largest real: 119 bytes
/// (Debian's GNU long names); PAX: 90 bytes (alpine-baselayout).
pub const TAR_EXTENSION: Limit = Limit::bytes("TAR_EXTENSION", "tar extended header", 64 << 10);

/// The signature member of an APK or an APKINDEX (a tar of `.SIGN.*` entries), decompressed.
/// Largest real: 1,024 bytes (one RSA-4096 signature).
pub const APK_SIGNATURE: Limit = Limit::bytes("APK_SIGNATURE", "APK signature member", 64 << 10);

/// The control member of an APK (a tar of `.PKGINFO` and the install scripts), decompressed.
/// Largest real: 12,288 bytes (alpine-baselayout: `.PKGINFO` and four scripts).
pub const APK_CONTROL: Limit = Limit::bytes("APK_CONTROL", "APK control member", 1 << 20);

/// The index member of an `APKINDEX.tar.gz` (a tar of `DESCRIPTION` and `APKINDEX`),
/// decompressed. Largest real: 1,952,768 bytes (v3.17 main aarch64).
pub const APKINDEX: Limit = Limit::bytes("APKINDEX", "APKINDEX member", 32 << 20);

/// An `APKINDEX.tar.gz` as downloaded. Largest real: 661,049 bytes (v3.17 main aarch64).
pub const APKINDEX_FILE: Limit = Limit::bytes("APKINDEX_FILE", "APKINDEX file", 32 << 20);

/// Records of one `APKINDEX` (each parsed into a record several times its text). Largest
/// real: 4,929 (v3.16 main x86_64).
pub const APKINDEX_ENTRIES: Limit = Limit {
    name: "APKINDEX_ENTRIES",
    what: "APKINDEX records",
    max: 100_000,
    unit: "records",
};

/// The gzip members above are recorded as compressed bytes (the signature covers them): a
/// member never takes much more room compressed than decompressed (stored blocks add 5 bytes
/// per 64 KiB), but empty blocks expand to nothing, so the recording has its own ceiling.
pub const fn compressed_ceiling(limit: Limit) -> u64 {
    limit.max.saturating_mul(2).saturating_add(64 << 10)
}

/// A .deb's `debian-binary` member. Real: 4 bytes (`2.0\n`).
pub const DEB_BINARY: Limit = Limit::bytes("DEB_BINARY", "debian-binary member", 64);

/// A .deb's `control.tar.*`, decompressed. Largest real: 419,840 bytes (Debian generic: the
/// md5sums of 4,023 modules).
pub const DEB_CONTROL_TAR: Limit = Limit::bytes("DEB_CONTROL_TAR", "deb control tar", 8 << 20);

/// The `control` file in a .deb's control tar. Largest real: 979 bytes.
pub const DEB_CONTROL: Limit = Limit::bytes("DEB_CONTROL", "deb control file", 1 << 20);

/// A limit passed, with what passed it (`lib/modules/…/x.ko.zst: zstd output`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}: past the {limit}")]
pub struct Exceeded {
    pub limit: Limit,
    pub detail: String,
}

impl Exceeded {
    pub fn new(limit: Limit, detail: impl Into<String>) -> Exceeded {
        Exceeded {
            limit,
            detail: detail.into(),
        }
    }
}

impl From<Exceeded> for io::Error {
    fn from(e: Exceeded) -> io::Error {
        io::Error::other(e)
    }
}

/// The [`Exceeded`] an I/O error carries, if it is one.
pub fn exceeded(e: &io::Error) -> Option<&Exceeded> {
    e.get_ref().and_then(|i| i.downcast_ref::<Exceeded>())
}

/// A reader that fails with [`Exceeded`] once more than `limit.max` bytes came through it (it
/// reads at most one byte more than the limit).
pub struct Limited<R> {
    inner: R,
    read: u64,
    limit: Limit,
    what: String,
}

impl<R: Read> Limited<R> {
    /// `what` names the member in the error (`control.tar.xz`).
    pub fn new(inner: R, limit: Limit, what: impl Into<String>) -> Limited<R> {
        Limited {
            inner,
            read: 0,
            limit,
            what: what.into(),
        }
    }

    /// Bytes read so far.
    pub fn count(&self) -> u64 {
        self.read
    }
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let room = self.limit.max.saturating_add(1).saturating_sub(self.read);
        let n = usize::try_from(room).unwrap_or(usize::MAX).min(buf.len());
        let got = self.inner.read(&mut buf[..n])?;
        self.read += got as u64;
        if self.read > self.limit.max {
            return Err(Exceeded::new(self.limit, format!("{}: more data", self.what)).into());
        }
        Ok(got)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn limited_reads_up_to_the_limit_and_refuses_one_byte_more() {
        let l = Limit::bytes("T", "test", 4);
        let mut out = Vec::new();
        Limited::new(&b"abcd"[..], l, "m")
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, b"abcd");
        let e = Limited::new(&b"abcde"[..], l, "m")
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        let x = exceeded(&e).unwrap();
        assert_eq!(x.limit, l);
        assert_eq!(
            e.to_string(),
            "m: more data: past the test limit (4 bytes, harness::limits::T)"
        );
    }
}
