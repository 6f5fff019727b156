//! The kernel model every check consumes (release, image, config, modules), built from a
//! package in one streaming pass: entries are parsed as they arrive while a worker thread
//! decompresses vmlinux and checks module BTF against it.

pub mod btf;
pub mod bzimage;
pub mod elf;
pub mod kconfig;

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use serde::Serialize;

use crate::codec::Codec;
use crate::package::{self, Entry, EntryKind, Format, PackageMeta, ReadOptions, Visitor};
use crate::{Error, Result};
use btf::{Base, BaseFit, Btf};
use kconfig::Kconfig;

// Limits on what btfgate holds in memory from a package, checked while reading or
// decompressing (never after); past one, the package is bad input naming the member and the
// limit. The largest real values, measured on Debian 6.1 (generic, cloud) and 6.12 (cloud):
// kernel image 14.2 MB, vmlinux 65.9 MB (6.1 generic), module ELF 19.5 MB (amdgpu.ko),
// config 0.3 MB. Unstripped modules (the control) are larger, hence the headroom.
/// Largest kernel image file.
const MAX_IMAGE: u64 = 512 << 20;
/// Largest vmlinux decompressed from a kernel image.
pub const MAX_VMLINUX: u64 = 512 << 20;
/// Largest config file.
const MAX_CONFIG: u64 = 64 << 20;
/// Largest module file, as stored.
const MAX_MODULE: u64 = 512 << 20;
/// Largest module ELF once decompressed (`.ko.gz`, `.ko.xz`, `.ko.zst`).
pub const MAX_MODULE_ELF: u64 = 512 << 20;

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
            let worker = s.spawn(move || worker(rx));
            let mut c = Collector::new(path, tx);
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
    Image(Vec<u8>),
    Module {
        idx: usize,
        btf: Vec<u8>,
        codec: Codec,
    },
}

#[derive(Default)]
struct WorkerResults {
    payload: Option<std::result::Result<PayloadInfo, String>>,
    vmlinux: Option<std::result::Result<VmlinuxBtf, String>>,
    /// (module index, base fit, standalone compressed cost when the module file is compressed)
    modules: Vec<(usize, std::result::Result<BaseFit, String>, Option<u64>)>,
}

fn worker(rx: mpsc::Receiver<Job>) -> WorkerResults {
    let mut out = WorkerResults::default();
    let mut pending: Vec<(usize, Vec<u8>, Codec)> = Vec::new();
    let mut base: Option<std::result::Result<Base, String>> = None;
    for job in rx {
        match job {
            Job::Image(bytes) => {
                let (payload, btf) = analyse_image(&bytes);
                drop(bytes);
                base = Some(match &btf {
                    Ok(v) => Btf::parse(&v.bytes, None)
                        .map(|b| b.as_base())
                        .map_err(|e| format!("vmlinux .BTF: {e}")),
                    Err(e) => Err(format!("no valid vmlinux .BTF to check against ({e})")),
                });
                out.payload = Some(payload);
                out.vmlinux = Some(btf);
                for (idx, b, codec) in std::mem::take(&mut pending) {
                    out.modules
                        .push(analyse_module_btf(idx, &b, codec, base.as_ref()));
                }
            }
            Job::Module { idx, btf, codec } => {
                if base.is_some() {
                    out.modules
                        .push(analyse_module_btf(idx, &btf, codec, base.as_ref()));
                } else {
                    pending.push((idx, btf, codec));
                }
            }
        }
    }
    for (idx, b, codec) in pending {
        out.modules.push(analyse_module_btf(idx, &b, codec, None));
    }
    out
}

fn analyse_image(
    image: &[u8],
) -> (
    std::result::Result<PayloadInfo, String>,
    std::result::Result<VmlinuxBtf, String>,
) {
    let (payload, vmlinux) = match bzimage::extract_vmlinux(image) {
        Ok(v) => v,
        Err(e) => return (Err(e.clone()), Err(format!("no vmlinux: {e}"))),
    };
    let info = PayloadInfo {
        codec: payload.codec,
        compressed: payload.bytes(image).len() as u64,
        vmlinux: vmlinux.len() as u64,
    };
    let btf = (|| {
        let sections = elf::sections(&vmlinux).map_err(|e| format!("vmlinux: {e}"))?;
        let (off, len) = sections
            .btf
            .ok_or_else(|| format!("vmlinux: {}", elf::no_btf_reason(&sections)))?;
        let bytes = vmlinux[off..off + len].to_vec();
        let parsed =
            Btf::parse(&bytes, None).map_err(|e| format!("vmlinux .BTF is invalid: {e}"))?;
        let (ntypes, type_len, str_len) =
            (parsed.ntypes, parsed.header.type_len, parsed.header.str_len);
        let kinds = parsed.kind_summary();
        let has_task_struct = parsed.has_struct("task_struct");
        let cost = payload.codec.compressed_len(&bytes);
        Ok(VmlinuxBtf {
            bytes,
            ntypes,
            type_len,
            str_len,
            kinds,
            has_task_struct,
            cost,
        })
    })();
    (Ok(info), btf)
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
}

impl<'p> Collector<'p> {
    fn new(file: &'p Path, tx: mpsc::Sender<Job>) -> Self {
        Collector {
            file,
            tx,
            release_dirs: BTreeSet::new(),
            config: None,
            image: None,
            modules: Vec::new(),
            open_span: None,
            packed_end: None,
        }
    }

    fn read_limited(
        &self,
        entry: &Entry,
        data: &mut dyn Read,
        limit: u64,
        what: &'static str,
    ) -> Result<Vec<u8>> {
        if entry.size > limit {
            return Err(Error::bad(
                self.file,
                what,
                format!(
                    "{} is {} bytes, more than the {limit}-byte limit",
                    entry.path.display(),
                    entry.size
                ),
            ));
        }
        let mut buf = Vec::with_capacity(entry.size as usize);
        data.take(limit + 1).read_to_end(&mut buf).map_err(|e| {
            Error::bad(
                self.file,
                what,
                format!("read {}: {e}", entry.path.display()),
            )
        })?;
        Ok(buf)
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
        if let (Some((idx, start)), Some(now)) = (self.open_span.take(), entry.packed_offset) {
            self.modules[idx].packed_span = Some(now.saturating_sub(start));
        }
        if let Some((release, rest)) = modules_path(&entry.path) {
            self.release_dirs.insert(release);
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
            let raw = self.read_limited(entry, data, MAX_MODULE, "read module")?;
            let mut m = Module {
                path: entry.path.clone(),
                codec,
                file_size: raw.len() as u64,
                elf_size: 0,
                btf_len: None,
                btf_nobits: false,
                debug: Vec::new(),
                error: None,
                base_fit: None,
                btf_cost: 0,
                packed_span: None,
                btf_sha256: None,
                depends: Vec::new(),
                softdep_pre: Vec::new(),
                aliases: Vec::new(),
            };
            let elf = if codec == Codec::None {
                Ok(raw)
            } else {
                match codec.decompress(&raw, raw.len() * 4, MAX_MODULE_ELF) {
                    Ok(elf) => Ok(elf),
                    Err(e @ crate::codec::Decompress::TooLarge { .. }) => {
                        return Err(Error::bad(
                            self.file,
                            "decompress module",
                            format!("{}: {e}", entry.path.display()),
                        ))
                    }
                    Err(e) => Err(e.to_string()),
                }
            };
            match elf.and_then(|elf| elf::sections(&elf).map(|s| (elf, s))) {
                Ok((elf, s)) => {
                    m.elf_size = elf.len() as u64;
                    m.btf_nobits = s.btf_nobits;
                    m.debug = s.debug;
                    if let Some(range) = s.modinfo {
                        let info = elf::modinfo(&elf, range);
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
                        m.btf_len = Some(l as u64);
                        m.btf_sha256 = Some(sha256_hex(&elf[o..o + l]));
                        let job = Job::Module {
                            idx: self.modules.len(),
                            btf: elf[o..o + l].to_vec(),
                            codec,
                        };
                        // The worker only goes away if it panicked; load() reports that.
                        let _ = self.tx.send(job);
                    }
                }
                Err(e) => m.error = Some(e),
            }
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
            let bytes = self.read_limited(entry, data, MAX_IMAGE, "read kernel image")?;
            self.image = Some(Image {
                path: entry.path.clone(),
                file_size: bytes.len() as u64,
                version_string: bzimage::version_string(&bytes),
                payload: Err("not analysed yet".into()),
                btf: Err("not analysed yet".into()),
            });
            let _ = self.tx.send(Job::Image(bytes));
        } else if name.starts_with("config") {
            let bytes = self.read_limited(entry, data, MAX_CONFIG, "read kernel config")?;
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
        fn visit<'k>(
            k: &'k Kernel,
            name: &str,
            required_by: Option<&str>,
            soft: bool,
            out: &mut Vec<&'k Module>,
            stack: &mut Vec<String>,
        ) -> std::result::Result<(), String> {
            let Some(m) = k.module(name) else {
                if soft {
                    return Ok(());
                }
                return Err(match required_by {
                    Some(by) => format!("module {name} (needed by {by}) is not in the package"),
                    None => format!("module {name} is not in the package"),
                });
            };
            if out.iter().any(|o| std::ptr::eq(*o, m)) || stack.iter().any(|s| s == name) {
                return Ok(());
            }
            stack.push(name.to_string());
            for d in &m.softdep_pre {
                visit(k, d, Some(name), true, out, stack)?;
            }
            for d in &m.depends {
                visit(k, d, Some(name), false, out, stack)?;
            }
            stack.pop();
            out.push(m);
            Ok(())
        }
        let mut out = Vec::new();
        for w in wanted {
            visit(self, w, None, false, &mut out, &mut Vec::new())?;
        }
        Ok(out)
    }
}
