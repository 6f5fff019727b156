//! The kernel model every check consumes (release, image, config, modules), built from a
//! package in one streaming pass: entries are parsed as they arrive while a worker thread
//! decompresses vmlinux and checks module BTF against it.

pub mod btf;
pub mod bzimage;
pub mod elf;
pub mod kconfig;

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

use serde::Serialize;

use crate::codec::{Codec, Decompress};
use crate::limits::{self, Exceeded, Limit, Limited};
use crate::package::{self, Entry, EntryKind, Format, PackageMeta, ReadOptions, Visitor};
use crate::spool::{Spool, Spooled};
use crate::{Error, Result};
use btf::{Base, BaseFit, Btf};
use elf::SectionsError;
use kconfig::Kconfig;

// What is read from a package has a limit (`crate::limits`, with the largest real values
// measured), checked while reading or decompressing, never after; past one the package is bad
// input naming the member and the limit. The kernel image and the vmlinux are anonymous
// temporary files, a module is held only up to `limits::MODULE_IN_MEMORY`, module `.BTF`
// waits for the worker in memory only up to `limits::MODULE_BTF_QUEUE`: see `crate::limits`
// for what a hostile package can make btfgate hold at once.

/// A kernel package, as the checks see it.
#[derive(Debug)]
pub struct Kernel {
    pub source: PathBuf,
    pub format: Format,
    pub meta: PackageMeta,
    /// `uname -r`: the `lib/modules/<release>` directory, else the image's version string.
    pub release: Option<String>,
    /// Every `lib/modules/*` directory seen (more than one is reported by the checks).
    pub module_dirs: BTreeSet<String>,
    pub config: Option<Config>,
    pub image: Option<Image>,
    pub modules: Vec<Module>,
    /// Codec of the solid container the entries came from (a .deb's data.tar.xz), if any.
    pub container: Option<Codec>,
}

/// The kernel configuration file of a package.
#[derive(Debug)]
pub struct Config {
    pub path: PathBuf,
    pub kconfig: Kconfig,
}

/// The kernel image (bzImage) and what came out of it.
#[derive(Debug)]
pub struct Image {
    pub path: PathBuf,
    pub file_size: u64,
    pub version_string: Option<String>,
    /// Payload codec, compressed and decompressed sizes, or why it could not be read.
    pub payload: std::result::Result<PayloadInfo, String>,
    /// The vmlinux `.BTF`, validated, or why there is none.
    pub btf: std::result::Result<VmlinuxBtf, String>,
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
    pub cost: std::result::Result<u64, String>,
}

/// One kernel module file.
#[derive(Debug, Clone, Serialize)]
pub struct Module {
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
    pub base_fit: Option<std::result::Result<BaseFit, String>>,
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
    /// Reads the package at `path` and builds the kernel model.
    pub fn load(path: &Path, opts: &ReadOptions) -> Result<Kernel> {
        let format = package::detect(path)?;
        std::thread::scope(|s| {
            let (tx, rx) = mpsc::channel::<Job>();
            let queued = Arc::new(AtomicU64::new(0));
            let stop = Arc::new(AtomicBool::new(false));
            let (q, st) = (queued.clone(), stop.clone());
            let worker = s.spawn(move || worker(rx, &q, &st));
            let mut c = Collector::new(path, tx, queued, stop);
            let read = package::read(path, opts, &mut c);
            let Collector {
                tx,
                release_dirs,
                config,
                image,
                mut modules,
                packed_end,
                ..
            } = c;
            drop(tx);
            let results = worker
                .join()
                .map_err(|_| Error::bad(path, "analyse kernel", "analysis worker panicked"))?;
            // A limit the worker met stopped the reading: that is the error to report.
            if let Some((phase, msg)) = results.refused {
                return Err(Error::bad(path, phase, msg));
            }
            let meta = read?;
            let mut image = image;
            if let Some(img) = image.as_mut() {
                img.payload = results
                    .payload
                    .unwrap_or_else(|| Err("image was not analysed".into()));
                img.btf = results
                    .vmlinux
                    .unwrap_or_else(|| Err("image was not analysed".into()));
            }
            for (idx, fit, cost) in results.modules {
                let m = &mut modules[idx];
                m.base_fit = Some(fit);
                if let Some(cost) = cost {
                    m.btf_cost = cost;
                }
            }
            let container = packed_end.and(meta.data_codec);
            for m in &mut modules {
                if m.codec == Codec::None {
                    let btf = m.btf_len.unwrap_or(0);
                    m.btf_cost = match (container, m.packed_span) {
                        // Solid container: the module's compressed footprint, shared out by bytes.
                        (Some(c), Some(span)) if c != Codec::None && m.elf_size > 0 => {
                            (span as u128 * btf as u128 / m.elf_size as u128) as u64
                        }
                        _ => btf,
                    };
                }
            }
            let release = pick_release(&release_dirs, image.as_ref());
            Ok(Kernel {
                source: path.to_path_buf(),
                format,
                meta,
                release,
                module_dirs: release_dirs,
                config,
                image,
                modules,
                container,
            })
        })
    }

    /// The validated vmlinux BTF, if any.
    pub fn vmlinux_btf(&self) -> Option<&VmlinuxBtf> {
        self.image.as_ref().and_then(|i| i.btf.as_ref().ok())
    }
}

fn pick_release(dirs: &BTreeSet<String>, image: Option<&Image>) -> Option<String> {
    let from_image = image
        .and_then(|i| i.version_string.as_deref())
        .and_then(|v| v.split_whitespace().next())
        .map(str::to_string);
    match dirs.len() {
        1 => dirs.iter().next().cloned(),
        0 => from_image,
        _ => from_image.filter(|r| dirs.contains(r)),
    }
}

enum Job {
    /// The kernel image, spooled.
    Image(Spooled),
    Module {
        idx: usize,
        btf: QueuedBtf,
        codec: Codec,
    },
}

/// A module's `.BTF` on its way to the worker.
enum QueuedBtf {
    /// Held (counted in the queue until the worker is done with it).
    Memory(Vec<u8>),
    /// Past [`limits::MODULE_BTF_QUEUE`]: waiting in the spill file.
    Spilled {
        file: Arc<File>,
        offset: u64,
        len: u64,
    },
}

impl QueuedBtf {
    fn bytes(&self) -> std::result::Result<std::borrow::Cow<'_, [u8]>, String> {
        match self {
            QueuedBtf::Memory(v) => Ok(std::borrow::Cow::Borrowed(v)),
            QueuedBtf::Spilled { file, offset, len } => {
                let mut v = vec![0u8; *len as usize];
                file.read_exact_at(&mut v, *offset)
                    .map_err(|e| format!("read the module .BTF back from its spill file: {e}"))?;
                Ok(std::borrow::Cow::Owned(v))
            }
        }
    }

    /// Bytes it holds in memory.
    fn held(&self) -> u64 {
        match self {
            QueuedBtf::Memory(v) => v.len() as u64,
            QueuedBtf::Spilled { .. } => 0,
        }
    }
}

#[derive(Default)]
struct WorkerResults {
    payload: Option<std::result::Result<PayloadInfo, String>>,
    vmlinux: Option<std::result::Result<VmlinuxBtf, String>>,
    /// (module index, base fit, standalone compressed cost when the module file is compressed)
    modules: Vec<(usize, std::result::Result<BaseFit, String>, Option<u64>)>,
    /// A limit the kernel image's analysis met: (phase, message). The package is bad input.
    refused: Option<(&'static str, String)>,
}

fn worker(rx: mpsc::Receiver<Job>, queued: &AtomicU64, stop: &AtomicBool) -> WorkerResults {
    let mut out = WorkerResults::default();
    let mut pending: Vec<(usize, QueuedBtf, Codec)> = Vec::new();
    let mut base: Option<std::result::Result<Base, String>> = None;
    let analyse = |out: &mut WorkerResults,
                   idx,
                   btf: QueuedBtf,
                   codec,
                   base: Option<&std::result::Result<Base, String>>| {
        let r = match btf.bytes() {
            Ok(bytes) => analyse_module_btf(idx, &bytes, codec, base),
            Err(e) => (idx, Err(e), None),
        };
        queued.fetch_sub(btf.held(), Ordering::Relaxed);
        out.modules.push(r);
    };
    for job in rx.iter() {
        match job {
            Job::Image(image) => {
                let (payload, btf, b) = match analyse_image(image) {
                    Ok(r) => r,
                    Err(refusal) => {
                        out.refused = Some(refusal);
                        stop.store(true, Ordering::Relaxed);
                        // Drop what still comes until the reader stops.
                        rx.iter().for_each(drop);
                        return out;
                    }
                };
                base = Some(b);
                out.payload = Some(payload);
                out.vmlinux = Some(btf);
                for (idx, b, codec) in std::mem::take(&mut pending) {
                    analyse(&mut out, idx, b, codec, base.as_ref());
                }
            }
            Job::Module { idx, btf, codec } => {
                if base.is_some() {
                    analyse(&mut out, idx, btf, codec, base.as_ref());
                } else {
                    pending.push((idx, btf, codec));
                }
            }
        }
    }
    for (idx, b, codec) in pending {
        analyse(&mut out, idx, b, codec, None);
    }
    out
}

type ImageAnalysis = (
    std::result::Result<PayloadInfo, String>,
    std::result::Result<VmlinuxBtf, String>,
    std::result::Result<Base, String>,
);

/// Decompresses the image's payload to a temporary file and reads the vmlinux `.BTF` from it;
/// `Err((phase, message))` when a limit was met (bad input).
fn analyse_image(image: Spooled) -> std::result::Result<ImageAnalysis, (&'static str, String)> {
    let (payload, vmlinux) = match bzimage::spool_vmlinux(&image) {
        Ok(v) => v,
        Err(Decompress::Exceeded(x)) => {
            return Err(("decompress kernel image payload", x.to_string()))
        }
        Err(Decompress::Failed(e)) => {
            let no = format!("no vmlinux: {e}");
            return Ok((Err(e), Err(no.clone()), Err(no)));
        }
    };
    drop(image);
    let info = PayloadInfo {
        codec: payload.codec,
        compressed: payload.compressed_len() as u64,
        vmlinux: vmlinux.len(),
    };
    let no_base = |e: &str| Err(format!("no valid vmlinux .BTF to check against ({e})"));
    let sections = match elf::spooled_sections(&vmlinux) {
        Ok(s) => s,
        Err(SectionsError::Exceeded(x)) => return Err(("read vmlinux", format!("vmlinux: {x}"))),
        Err(SectionsError::Invalid(e)) => {
            let e = format!("vmlinux: {e}");
            return Ok((Ok(info), Err(e.clone()), no_base(&e)));
        }
    };
    let Some((off, len)) = sections.btf else {
        let e = format!("vmlinux: {}", elf::no_btf_reason(&sections));
        return Ok((Ok(info), Err(e.clone()), no_base(&e)));
    };
    if len as u64 > limits::VMLINUX_BTF.max {
        let x = Exceeded::new(limits::VMLINUX_BTF, format!("vmlinux: a {len}-byte .BTF"));
        return Err(("read vmlinux", x.to_string()));
    }
    let bytes = match vmlinux.read_at(off as u64, len as u64) {
        Ok(b) => b,
        Err(e) => {
            let e = format!("vmlinux: read .BTF: {e}");
            return Ok((Ok(info), Err(e.clone()), no_base(&e)));
        }
    };
    drop(vmlinux);
    let parsed = match Btf::parse(&bytes, None) {
        Ok(p) => p,
        Err(e) => {
            let e = format!("vmlinux .BTF is invalid: {e}");
            return Ok((Ok(info), Err(e.clone()), no_base(&e)));
        }
    };
    let (ntypes, type_len, str_len) =
        (parsed.ntypes, parsed.header.type_len, parsed.header.str_len);
    let kinds = parsed.kind_summary();
    let has_task_struct = parsed.has_struct("task_struct");
    let base = parsed.as_base();
    drop(parsed);
    let cost = payload
        .codec
        .compressed_len(&bytes)
        .map_err(|e| e.to_string());
    Ok((
        Ok(info),
        Ok(VmlinuxBtf {
            bytes,
            ntypes,
            type_len,
            str_len,
            kinds,
            has_task_struct,
            cost,
        }),
        Ok(base),
    ))
}

fn analyse_module_btf(
    idx: usize,
    btf: &[u8],
    codec: Codec,
    base: Option<&std::result::Result<Base, String>>,
) -> (usize, std::result::Result<BaseFit, String>, Option<u64>) {
    let fit = match base {
        None => Err("the package has no kernel image to check against".to_string()),
        Some(Err(e)) => Err(e.clone()),
        Some(Ok(base)) => Btf::parse(btf, Some(base.ntypes))
            .map(|m| m.check_against_base(base))
            .map_err(|e| format!("module .BTF is invalid: {e}")),
    };
    let cost = match codec {
        Codec::None => None,
        c => c.compressed_len(btf).ok(),
    };
    (idx, fit, cost)
}

struct Collector<'p> {
    file: &'p Path,
    tx: mpsc::Sender<Job>,
    release_dirs: BTreeSet<String>,
    config: Option<Config>,
    image: Option<Image>,
    modules: Vec<Module>,
    /// Module whose compressed span is still open: (index, packed offset at its start).
    open_span: Option<(usize, u64)>,
    packed_end: Option<u64>,
    /// Module `.BTF` bytes held in memory for the worker (it subtracts what it is done with).
    queued: Arc<AtomicU64>,
    /// The file module `.BTF` spills to past [`limits::MODULE_BTF_QUEUE`], and its length.
    spill: Option<(Arc<File>, u64)>,
    /// Every module `.BTF` byte seen ([`limits::MODULE_BTF_TOTAL`]).
    btf_total: u64,
    /// Bytes the module records keep ([`limits::MODULE_RECORDS`]).
    records: u64,
    /// Set by the worker when it refused the package: reading stops.
    stop: Arc<AtomicBool>,
}

impl<'p> Collector<'p> {
    fn new(
        file: &'p Path,
        tx: mpsc::Sender<Job>,
        queued: Arc<AtomicU64>,
        stop: Arc<AtomicBool>,
    ) -> Self {
        Collector {
            file,
            tx,
            release_dirs: BTreeSet::new(),
            config: None,
            image: None,
            modules: Vec::new(),
            open_span: None,
            packed_end: None,
            queued,
            spill: None,
            btf_total: 0,
            records: 0,
            stop,
        }
    }

    /// Bad input: `entry` passed `x`.
    fn exceeded(&self, phase: &'static str, entry: &Entry, x: &Exceeded) -> Error {
        Error::bad(self.file, phase, format!("{}: {x}", entry.path.display()))
    }

    /// Refuses an entry whose declared size is already past `limit`.
    fn check_declared(&self, entry: &Entry, limit: Limit, phase: &'static str) -> Result<()> {
        if entry.size > limit.max {
            let x = Exceeded::new(limit, format!("declared {} bytes", entry.size));
            return Err(self.exceeded(phase, entry, &x));
        }
        Ok(())
    }

    /// A whole small member (the config), within `limit`.
    fn read_limited(
        &self,
        entry: &Entry,
        data: &mut dyn Read,
        limit: Limit,
        phase: &'static str,
    ) -> Result<Vec<u8>> {
        self.check_declared(entry, limit, phase)?;
        let mut buf = Vec::with_capacity(entry.size as usize);
        Limited::new(data, limit, "contents")
            .read_to_end(&mut buf)
            .map_err(|e| match limits::exceeded(&e) {
                Some(x) => self.exceeded(phase, entry, x),
                None => Error::bad(
                    self.file,
                    phase,
                    format!("read {}: {e}", entry.path.display()),
                ),
            })?;
        Ok(buf)
    }

    /// Reads a module: decompresses it into a spool (held up to `limits::MODULE_IN_MEMORY`),
    /// reads its section table, `.modinfo` and `.BTF` within their limits, and queues the
    /// `.BTF` for the worker.
    fn read_module(&mut self, entry: &Entry, data: &mut dyn Read, codec: Codec) -> Result<Module> {
        const PHASE: &str = "read module";
        if codec == Codec::None {
            self.check_declared(entry, limits::MODULE_ELF, PHASE)?;
        }
        let what = match codec {
            Codec::None => "contents".to_string(),
            c => format!("{} output", c.name()),
        };
        let mut spool = Spool::new(limits::MODULE_ELF, limits::MODULE_IN_MEMORY, what);
        // The declared size is the ELF's for a `.ko`, a floor for a compressed one.
        spool.reserve(entry.size);
        let mut counted = Counted { inner: data, n: 0 };
        let decoded = match codec.decoder(&mut counted) {
            Ok(mut dec) => spool.fill_from(&mut dec).map(|_| ()),
            Err(e) => Err(io::Error::other(e)),
        };
        let mut error = None;
        if let Err(e) = decoded {
            if let Some(x) = limits::exceeded(&e) {
                return Err(self.exceeded(PHASE, entry, x));
            }
            if codec == Codec::None {
                return Err(Error::bad(
                    self.file,
                    PHASE,
                    format!("read {}: {e}", entry.path.display()),
                ));
            }
            error = Some(format!("{} decompression failed: {e}", codec.name()));
        }
        // The rest of the file (after a failed or finished decoder): counted, not kept.
        io::copy(&mut counted, &mut io::sink()).map_err(|e| {
            Error::bad(
                self.file,
                PHASE,
                format!("read {}: {e}", entry.path.display()),
            )
        })?;
        let mut m = Module {
            path: entry.path.clone(),
            codec,
            file_size: counted.n,
            elf_size: 0,
            btf_len: None,
            btf_nobits: false,
            debug: Vec::new(),
            error,
            base_fit: None,
            btf_cost: 0,
            packed_span: None,
            btf_sha256: None,
            depends: Vec::new(),
            softdep_pre: Vec::new(),
            aliases: Vec::new(),
        };
        if m.error.is_some() {
            return Ok(m);
        }
        let io_err = |e: io::Error| {
            Error::bad(
                self.file,
                PHASE,
                format!("{}: read back: {e}", entry.path.display()),
            )
        };
        let elf = spool.finish().map_err(io_err)?;
        m.elf_size = elf.len();
        let s = match elf::spooled_sections(&elf) {
            Ok(s) => s,
            Err(SectionsError::Exceeded(x)) => return Err(self.exceeded(PHASE, entry, &x)),
            Err(SectionsError::Invalid(e)) => {
                m.error = Some(e);
                return Ok(m);
            }
        };
        m.btf_nobits = s.btf_nobits;
        m.debug = s.debug;
        if let Some((o, l)) = s.modinfo {
            if l as u64 > limits::MODINFO.max {
                let x = Exceeded::new(limits::MODINFO, format!("a {l}-byte .modinfo"));
                return Err(self.exceeded(PHASE, entry, &x));
            }
            let bytes = elf.read_at(o as u64, l as u64).map_err(io_err)?;
            let info = elf::modinfo(&bytes, (0, bytes.len()));
            let (depends, softdep_pre) = module_deps(&info);
            m.depends = depends;
            m.softdep_pre = softdep_pre;
            m.aliases = info
                .into_iter()
                .filter(|(k, v)| k == "alias" && !v.contains([':', '*', '?', '[']))
                .map(|(_, v)| v)
                .collect();
        }
        if let Some((o, l)) = s.btf {
            if l as u64 > limits::MODULE_BTF.max {
                let x = Exceeded::new(limits::MODULE_BTF, format!("a {l}-byte .BTF"));
                return Err(self.exceeded(PHASE, entry, &x));
            }
            self.btf_total += l as u64;
            if self.btf_total > limits::MODULE_BTF_TOTAL.max {
                let x = Exceeded::new(
                    limits::MODULE_BTF_TOTAL,
                    format!("{} bytes of module .BTF so far", self.btf_total),
                );
                return Err(self.exceeded(PHASE, entry, &x));
            }
            let bytes = elf.read_at(o as u64, l as u64).map_err(io_err)?;
            drop(elf);
            m.btf_len = Some(l as u64);
            m.btf_sha256 = Some(sha256_hex(&bytes));
            let btf = self
                .queue_btf(bytes)
                .map_err(|e| Error::io(self.file, "spill module .BTF to a temporary file", e))?;
            let job = Job::Module {
                idx: self.modules.len(),
                btf,
                codec,
            };
            // The worker only goes away if it panicked; load() reports that.
            let _ = self.tx.send(job);
        }
        Ok(m)
    }

    /// Holds `bytes` for the worker while the queue has room, else writes them to the spill file.
    fn queue_btf(&mut self, bytes: Vec<u8>) -> io::Result<QueuedBtf> {
        let len = bytes.len() as u64;
        if self.queued.load(Ordering::Relaxed) + len <= limits::MODULE_BTF_QUEUE {
            self.queued.fetch_add(len, Ordering::Relaxed);
            return Ok(QueuedBtf::Memory(bytes));
        }
        let (file, end) = match self.spill.take() {
            Some(s) => s,
            None => (Arc::new(tempfile::tempfile()?), 0),
        };
        file.write_all_at(&bytes, end)?;
        let q = QueuedBtf::Spilled {
            file: file.clone(),
            offset: end,
            len,
        };
        self.spill = Some((file, end + len));
        Ok(q)
    }

    /// Counts what `m` keeps against [`limits::MODULE_RECORDS`].
    fn count_record(&mut self, m: &Module) -> Result<()> {
        let strings = |v: &[String]| v.iter().map(|s| s.len() as u64 + 24).sum::<u64>();
        self.records += std::mem::size_of::<Module>() as u64
            + m.path.as_os_str().len() as u64
            + m.btf_sha256.as_ref().map_or(0, |s| s.len() as u64)
            + m.error.as_ref().map_or(0, |s| s.len() as u64)
            + m.debug
                .iter()
                .map(|(n, _)| n.len() as u64 + 32)
                .sum::<u64>()
            + strings(&m.depends)
            + strings(&m.softdep_pre)
            + strings(&m.aliases);
        if self.records > limits::MODULE_RECORDS.max {
            let x = Exceeded::new(
                limits::MODULE_RECORDS,
                format!("{} modules, {} bytes", self.modules.len() + 1, self.records),
            );
            return Err(Error::bad(
                self.file,
                "read module",
                format!("{}: {x}", m.path.display()),
            ));
        }
        Ok(())
    }
}

/// Counts the bytes read through it.
struct Counted<'a> {
    inner: &'a mut dyn Read,
    n: u64,
}

impl Read for Counted<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let got = self.inner.read(buf)?;
        self.n += got as u64;
        Ok(got)
    }
}

/// Hex sha256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// `depends=` and the `pre:` part of `softdep=` from `.modinfo` pairs, names normalized.
fn module_deps(info: &[(String, String)]) -> (Vec<String>, Vec<String>) {
    let norm = |s: &str| s.trim().replace('-', "_");
    let mut depends = Vec::new();
    let mut pre = Vec::new();
    for (k, v) in info {
        match k.as_str() {
            "depends" => depends.extend(v.split(',').filter(|d| !d.trim().is_empty()).map(norm)),
            "softdep" => {
                let mut in_pre = false;
                for tok in v.split_whitespace() {
                    match tok {
                        "pre:" => in_pre = true,
                        "post:" => in_pre = false,
                        t if in_pre => pre.push(norm(t)),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    (depends, pre)
}

/// Splits `lib/modules/<release>/<rest>` (also under `usr/`).
fn modules_path(p: &Path) -> Option<(String, PathBuf)> {
    let p = p.strip_prefix("usr").unwrap_or(p);
    let rest = p.strip_prefix("lib/modules").ok()?;
    let mut comps = rest.components();
    let release = comps.next()?.as_os_str().to_string_lossy().into_owned();
    Some((release, comps.as_path().to_path_buf()))
}

impl Visitor for Collector<'_> {
    fn visit(&mut self, entry: &Entry, data: &mut dyn Read) -> Result<()> {
        if self.stop.load(Ordering::Relaxed) {
            // load() reports the worker's refusal instead.
            return Err(Error::bad(self.file, "analyse kernel", "analysis refused"));
        }
        if let (Some((idx, start)), Some(now)) = (self.open_span.take(), entry.packed_offset) {
            self.modules[idx].packed_span = Some(now.saturating_sub(start));
        }
        if let Some((release, rest)) = modules_path(&entry.path) {
            if self.release_dirs.insert(release)
                && self.release_dirs.len() as u64 > limits::RELEASE_DIRS.max
            {
                let x = Exceeded::new(
                    limits::RELEASE_DIRS,
                    format!("{} directories", self.release_dirs.len()),
                );
                return Err(self.exceeded("read module", entry, &x));
            }
            let name = rest
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if entry.kind != EntryKind::File {
                return Ok(());
            }
            let Some(codec) = Codec::from_module_name(&name) else {
                return Ok(());
            };
            let m = self.read_module(entry, data, codec)?;
            self.count_record(&m)?;
            if let Some(start) = entry.packed_offset {
                self.open_span = Some((self.modules.len(), start));
            }
            self.modules.push(m);
            return Ok(());
        }
        let Ok(rest) = entry.path.strip_prefix("boot") else {
            return Ok(());
        };
        if entry.kind != EntryKind::File || rest.components().count() != 1 {
            return Ok(());
        }
        let name = rest.to_string_lossy();
        if name.starts_with("vmlinuz") || name.starts_with("bzImage") {
            const PHASE: &str = "read kernel image";
            if let Some(prev) = &self.image {
                return Err(Error::bad(
                    self.file,
                    "find kernel image",
                    format!(
                        "two kernel images ({} and {}); a package must hold exactly one",
                        prev.path.display(),
                        entry.path.display()
                    ),
                ));
            }
            self.check_declared(entry, limits::IMAGE, PHASE)?;
            let mut spool = Spool::new(limits::IMAGE, 0, "contents");
            let spooled = spool
                .fill_from(data)
                .and_then(|_| spool.finish())
                .map_err(|e| match limits::exceeded(&e) {
                    Some(x) => self.exceeded(PHASE, entry, x),
                    None => Error::bad(
                        self.file,
                        PHASE,
                        format!("read {}: {e}", entry.path.display()),
                    ),
                })?;
            let head = spooled
                .read_at(0, bzimage::HEAD as u64)
                .map_err(|e| Error::io(self.file, PHASE, e))?;
            self.image = Some(Image {
                path: entry.path.clone(),
                file_size: spooled.len(),
                version_string: bzimage::version_string(&head),
                payload: Err("not analysed yet".into()),
                btf: Err("not analysed yet".into()),
            });
            let _ = self.tx.send(Job::Image(spooled));
        } else if name.starts_with("config") {
            let bytes = self.read_limited(entry, data, limits::CONFIG, "read kernel config")?;
            let text = String::from_utf8_lossy(&bytes);
            if let Some(prev) = &self.config {
                return Err(Error::bad(
                    self.file,
                    "find kernel config",
                    format!(
                        "two kernel configs ({} and {}); a package must hold exactly one",
                        prev.path.display(),
                        entry.path.display()
                    ),
                ));
            }
            self.config = Some(Config {
                path: entry.path.clone(),
                kconfig: Kconfig::parse(&text),
            });
        }
        Ok(())
    }

    fn end(&mut self, packed_end: Option<u64>) -> Result<()> {
        if let (Some((idx, start)), Some(end)) = (self.open_span.take(), packed_end) {
            self.modules[idx].packed_span = Some(end.saturating_sub(start));
        }
        self.packed_end = packed_end;
        Ok(())
    }
}

impl Kernel {
    /// Finds a module by its modprobe name, else by a plain alias (preferring the portable
    /// `<alias>_generic` implementation, e.g. crc32c_generic over crc32c-intel for `crc32c`).
    pub fn module(&self, name: &str) -> Option<&Module> {
        let norm = name.replace('-', "_");
        if let Some(m) = self.modules.iter().find(|m| m.name() == norm) {
            return Some(m);
        }
        let providers: Vec<&Module> = self
            .modules
            .iter()
            .filter(|m| m.aliases.iter().any(|a| a == name))
            .collect();
        let generic = format!("{norm}_generic");
        providers
            .iter()
            .find(|m| m.name() == generic)
            .or_else(|| providers.first())
            .copied()
    }

    /// The order in which to load `wanted` and everything they need: for each module its
    /// `softdep pre:` modules (if the package has them; absent softdeps are optional), then its
    /// `depends=` (which must exist), then itself. Errors name the missing module.
    pub fn load_order(&self, wanted: &[String]) -> std::result::Result<Vec<&Module>, String> {
        // `.modinfo` is untrusted and can chain thousands of modules: names resolve through an
        // index built once (not a scan of the package per dependency), each module is walked
        // once, and the walk stops at a depth no real chain nears (each level is a stack frame).
        const MAX_DEPTH: usize = 256;
        struct Walk<'k> {
            modules: &'k [Module],
            names: std::collections::HashMap<String, usize>,
            aliases: std::collections::HashMap<&'k str, Vec<usize>>,
            done: Vec<bool>,
            out: Vec<&'k Module>,
            stack: Vec<String>,
        }
        impl<'k> Walk<'k> {
            /// What [`Kernel::module`] finds.
            fn find(&self, name: &str) -> Option<usize> {
                let norm = name.replace('-', "_");
                if let Some(&i) = self.names.get(&norm) {
                    return Some(i);
                }
                let providers = self.aliases.get(name)?;
                let generic = format!("{norm}_generic");
                providers
                    .iter()
                    .copied()
                    .find(|&i| self.modules[i].name() == generic)
                    .or_else(|| providers.first().copied())
            }
            fn visit(
                &mut self,
                name: &str,
                required_by: Option<&str>,
                soft: bool,
            ) -> std::result::Result<(), String> {
                let Some(i) = self.find(name) else {
                    if soft {
                        return Ok(());
                    }
                    return Err(match required_by {
                        Some(by) => format!("module {name} (needed by {by}) is not in the package"),
                        None => format!("module {name} is not in the package"),
                    });
                };
                if self.done[i] || self.stack.iter().any(|s| s == name) {
                    return Ok(());
                }
                if self.stack.len() >= MAX_DEPTH {
                    return Err(format!(
                        "module {name}: dependencies nest deeper than {MAX_DEPTH} modules"
                    ));
                }
                let modules = self.modules;
                let m = &modules[i];
                self.stack.push(name.to_string());
                for d in &m.softdep_pre {
                    self.visit(d, Some(name), true)?;
                }
                for d in &m.depends {
                    self.visit(d, Some(name), false)?;
                }
                self.stack.pop();
                self.done[i] = true;
                self.out.push(m);
                Ok(())
            }
        }
        let mut w = Walk {
            modules: &self.modules,
            names: std::collections::HashMap::new(),
            aliases: std::collections::HashMap::new(),
            done: vec![false; self.modules.len()],
            out: Vec::new(),
            stack: Vec::new(),
        };
        for (i, m) in self.modules.iter().enumerate() {
            w.names.entry(m.name()).or_insert(i);
            for a in &m.aliases {
                w.aliases.entry(a.as_str()).or_default().push(i);
            }
        }
        for name in wanted {
            w.stack.clear();
            w.visit(name, None, false)?;
        }
        Ok(w.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A member longer than it declared (a directory package's file growing while it is
    /// read) is refused at its limit while it streams, not after.
    #[test]
    fn limits_hold_while_streaming_whatever_the_declared_size() {
        let (tx, _rx) = mpsc::channel();
        let mut c = Collector::new(Path::new("p"), tx, Arc::default(), Arc::default());
        for (path, limit) in [
            ("boot/config-x", limits::CONFIG),
            ("boot/vmlinuz-x", limits::IMAGE),
        ] {
            let entry = Entry {
                path: path.into(),
                kind: EntryKind::File,
                size: 10,
                packed_offset: None,
            };
            let mut data = io::repeat(0).take(limit.max + 1);
            let e = c.visit(&entry, &mut data).unwrap_err().to_string();
            assert!(
                e.contains(path) && e.contains(&format!("harness::limits::{}", limit.name)),
                "{e}"
            );
        }
    }

    /// A module larger than `MODULE_IN_MEMORY` spills to a temporary file and is read back
    /// the same: section table, `.modinfo`, `.BTF` (real: Debian's amdgpu.ko, 19.5 MB).
    #[test]
    fn a_large_module_is_read_from_its_spill_file() {
        let mut s = crate::bomb::Stream::new(Codec::None).unwrap();
        let len = crate::bomb::elf(
            &mut s,
            &[
                (".text", limits::MODULE_IN_MEMORY),
                (".modinfo", 10),
                (".BTF", 100),
                (".debug_info", 7),
            ],
            0,
        )
        .unwrap();
        let elf = s.finish().unwrap();
        let (tx, rx) = mpsc::channel();
        let mut c = Collector::new(Path::new("p"), tx, Arc::default(), Arc::default());
        let entry = Entry {
            path: "lib/modules/6.1/kernel/big.ko".into(),
            kind: EntryKind::File,
            size: len,
            packed_offset: None,
        };
        c.visit(&entry, &mut &elf[..]).unwrap();
        let m = &c.modules[0];
        assert_eq!(
            (m.elf_size, m.btf_len, m.error.as_deref()),
            (len, Some(100), None)
        );
        assert_eq!(m.debug, vec![(".debug_info".to_string(), 7)]);
        assert!(
            matches!(rx.try_recv(), Ok(Job::Module { btf: QueuedBtf::Memory(b), .. }) if b.len() == 100)
        );
    }
}
