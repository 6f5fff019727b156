//! The kernel model every check consumes (release, image, config, modules). [`Kernel::load`]
//! (`load.rs`) builds it from a package in one streaming pass: entries are parsed as they
//! arrive (`collect.rs`) while a worker thread decompresses vmlinux and checks module BTF
//! against it.

pub mod btf;
pub mod bzimage;
mod collect;
pub mod elf;
pub mod kconfig;
mod load;
mod queue;
pub mod share;

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::Serialize;

use crate::codec::Codec;
use crate::package::{Format, PackageMeta, ReadOptions};
use crate::Result;
use btf::BaseFit;
use kconfig::Kconfig;

// What is read from a package has a limit (`crate::limits`, with the largest real values
// measured), checked while reading or decompressing, never after; past one the package is bad
// input naming the member and the limit. The kernel image and the vmlinux are anonymous
// temporary files, a module is held only up to `limits::MODULE_IN_MEMORY`, module `.BTF`
// waits for the worker in memory only up to `limits::MODULE_BTF_QUEUE`: see `crate::limits`
// for what a hostile package can make btfgate hold at once.

/// A kernel, as the checks see it: one package, or a set of packages (Debian's split kernels:
/// image, modules and config in three packages) merged into one model as they are read.
#[derive(Debug)]
pub struct Kernel {
    /// The packages, in the order they were named (at least one).
    pub packages: Vec<Member>,
    /// `uname -r`: the `lib/modules/<release>` directory, else the image's version string.
    pub release: Option<String>,
    /// Every `lib/modules/*` directory seen (more than one is reported by the checks).
    pub module_dirs: BTreeSet<String>,
    pub config: Option<Config>,
    pub image: Option<Image>,
    pub modules: Vec<Module>,
}

/// One package of a kernel.
#[derive(Debug)]
pub struct Member {
    pub source: PathBuf,
    /// How it was verified when read (and is again when unpacked for a guest).
    pub read: ReadOptions,
    pub format: Format,
    pub meta: PackageMeta,
    /// Codec of the solid container the entries came from (a .deb's data.tar.xz), if any.
    pub container: Option<Codec>,
    /// The `lib/modules/*` directories it holds.
    pub module_dirs: BTreeSet<String>,
}

impl Member {
    /// The package's name, or its file name when it has none (a directory).
    pub fn name(&self) -> String {
        if self.meta.name.is_empty() {
            self.source
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "package".to_string())
        } else {
            self.meta.name.clone()
        }
    }

    /// `<name> <version>` (the name alone when there is no version).
    pub fn label(&self) -> String {
        if self.meta.version.is_empty() {
            self.name()
        } else {
            format!("{} {}", self.name(), self.meta.version)
        }
    }
}

/// The kernel configuration file of a package.
#[derive(Debug)]
pub struct Config {
    /// Index of the package that holds it in [`Kernel::packages`].
    pub package: usize,
    pub path: PathBuf,
    pub kconfig: Kconfig,
}

/// The kernel image (bzImage) and what came out of it.
#[derive(Debug)]
pub struct Image {
    /// Index of the package that holds it in [`Kernel::packages`].
    pub package: usize,
    pub path: PathBuf,
    pub file_size: u64,
    pub version_string: Option<String>,
    /// Payload codec, compressed and decompressed sizes, or why it could not be read.
    pub payload: Result<PayloadInfo>,
    /// The vmlinux `.BTF`, validated, or why there is none.
    pub btf: Result<VmlinuxBtf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PayloadInfo {
    pub codec: Codec,
    pub compressed: u64,
    pub vmlinux: u64,
}

/// The validated `.BTF` of vmlinux.
#[derive(Debug)]
pub struct VmlinuxBtf {
    pub bytes: Vec<u8>,
    pub ntypes: u32,
    pub type_len: u32,
    pub str_len: u32,
    pub kinds: Vec<(&'static str, u32)>,
    pub has_task_struct: bool,
    /// Bytes the `.BTF` adds to the compressed payload (standalone compression with the
    /// payload's codec), or why it could not be priced.
    pub cost: Result<u64>,
}

/// One kernel module file.
#[derive(Debug, Clone, Serialize)]
pub struct Module {
    /// Index of the package that holds it in [`Kernel::packages`].
    pub package: usize,
    pub path: PathBuf,
    pub codec: Codec,
    /// Size of the file in the package.
    pub file_size: u64,
    /// Size of the ELF after decompression.
    pub elf_size: u64,
    pub btf_len: Option<u64>,
    /// `.BTF` is there but `SHT_NOBITS` (no data): counted as no `.BTF`, said so.
    pub btf_nobits: bool,
    /// `.debug_*` sections and their sizes.
    pub debug: Vec<(String, u64)>,
    /// The module could not be decompressed or parsed.
    pub error: Option<String>,
    /// Fit of the module's split BTF with the package's vmlinux BTF.
    pub base_fit: Option<Result<BaseFit>>,
    /// Bytes the module's `.BTF` costs in the package, and how that was priced.
    pub btf_cost: u64,
    /// Compressed bytes of the solid container this module's entry spans.
    pub packed_span: Option<u64>,
    /// sha256 of the module's `.BTF` (what `/sys/kernel/btf/<name>` must equal once loaded).
    pub btf_sha256: Option<String>,
    /// `depends=` of `.modinfo`: modules that must be loaded first.
    pub depends: Vec<String>,
    /// `softdep=pre:` modules or aliases (busybox modprobe ignores these; btfgate loads them).
    pub softdep_pre: Vec<String>,
    /// Plain `alias=` names (not device patterns), e.g. `crc32c` for crc32c_generic.
    pub aliases: Vec<String>,
}

impl Module {
    /// Module name as modprobe knows it (`overlay` for `.../overlay.ko.xz`), `-` normalized to `_`.
    pub fn name(&self) -> String {
        let file = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        let stem = file.split(".ko").next().unwrap_or(&file);
        stem.replace('-', "_")
    }
}

impl Kernel {
    /// The package that names the kernel: the one holding the image (else the config, else
    /// the first).
    pub fn primary(&self) -> &Member {
        let idx = (self.image.as_ref().map(|i| i.package))
            .or(self.config.as_ref().map(|c| c.package))
            .unwrap_or(0);
        &self.packages[idx.min(self.packages.len().saturating_sub(1))]
    }

    /// Sum of the package files' sizes.
    pub fn file_size(&self) -> u64 {
        self.packages.iter().map(|p| p.meta.file_size).sum()
    }

    /// Sum of the packages' installed sizes, when every package declares one.
    pub fn installed_size(&self) -> Option<u64> {
        self.packages.iter().map(|p| p.meta.installed_size).sum()
    }

    /// Each package's label, joined with ` + ` (one label for a single package).
    pub fn label(&self) -> String {
        let labels: Vec<String> = self.packages.iter().map(Member::label).collect();
        labels.join(" + ")
    }

    /// The validated vmlinux BTF, if any.
    pub fn vmlinux_btf(&self) -> Option<&VmlinuxBtf> {
        self.image.as_ref().and_then(|i| i.btf.as_ref().ok())
    }
}
