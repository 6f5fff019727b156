//! The package's entries as they arrive: the [`Collector`] keeps the kernel image, the config
//! and each module's record (section table, `.modinfo` dependencies, `.BTF`), each within its
//! limit, and queues the work for [`super::load`]'s worker.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

use super::elf::{self, SectionsError};
use super::kconfig::Kconfig;
use super::queue::{Job, QueuedBtf};
use super::share::{self, Mapped};
use super::{bzimage, Config, Image, Module};
use crate::codec::Codec;
use crate::limits::{self, Exceeded, Limit, Limited};
use crate::package::{CountingReader, Entry, EntryKind, Visitor};
use crate::spool::Spool;
use crate::{Error, Result};

/// The package reader's visitor: what [`super::Kernel::load`] builds the model from.
pub(super) struct Collector {
    /// The package being read (a kernel may be a set of packages, read one after another).
    file: PathBuf,
    /// Its index in the set, and every package of the set read so far.
    member: usize,
    files: Vec<PathBuf>,
    /// The `lib/modules/*` directories the package being read holds.
    pub(super) member_dirs: BTreeSet<String>,
    pub(super) tx: mpsc::Sender<Job>,
    pub(super) release_dirs: BTreeSet<String>,
    pub(super) config: Option<Config>,
    pub(super) image: Option<Image>,
    pub(super) modules: Vec<Module>,
    /// Module whose compressed span is still open: (index, packed offset at its start).
    open_span: Option<(usize, u64)>,
    pub(super) packed_end: Option<u64>,
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

impl Collector {
    pub(super) fn new(
        file: &Path,
        tx: mpsc::Sender<Job>,
        queued: Arc<AtomicU64>,
        stop: Arc<AtomicBool>,
    ) -> Self {
        Collector {
            file: file.to_path_buf(),
            member: 0,
            files: vec![file.to_path_buf()],
            member_dirs: BTreeSet::new(),
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

    /// Starts reading the next package of the set.
    pub(super) fn next_member(&mut self, file: &Path) {
        self.member = self.files.len();
        self.files.push(file.to_path_buf());
        self.file = file.to_path_buf();
        self.member_dirs.clear();
        self.open_span = None;
        self.packed_end = None;
    }

    /// `path` in the package `member` of the set, for messages: `<path>` alone when it is in
    /// the package being read, else `<package>: <path>`.
    fn located(&self, member: usize, path: &Path) -> String {
        match self.files.get(member) {
            Some(f) if member != self.member => format!("{}: {}", f.display(), path.display()),
            _ => path.display().to_string(),
        }
    }

    /// Bad input: `entry` passed `x`.
    fn exceeded(&self, phase: &'static str, entry: &Entry, x: &Exceeded) -> Error {
        Error::bad(&self.file, phase, format!("{}: {x}", entry.path.display()))
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
                    &self.file,
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
        let (mut counted, read) = CountingReader::new(data);
        // A gzip or xz module is decoded with the map of what each stretch of it costs in the
        // file: its `.BTF`'s share is read off that map (a zstd one is priced by the worker).
        let mut map = None;
        let decoded = if share::precise_for_module(codec) {
            Mapped::new(codec, &mut counted, limits::DECODER_MEMORY).map(|mut dec| {
                let filled = spool.fill_from(&mut dec).map(|_| ());
                map = Some(dec.into_map());
                filled
            })
        } else {
            codec
                .decoder(&mut counted)
                .map(|mut dec| spool.fill_from(&mut dec).map(|_| ()))
        };
        let decoded = decoded.unwrap_or_else(|e| Err(io::Error::other(e.message())));
        let mut error = None;
        if let Err(e) = decoded {
            if let Some(x) = limits::exceeded(&e) {
                return Err(self.exceeded(PHASE, entry, x));
            }
            if codec == Codec::None {
                return Err(Error::bad(
                    &self.file,
                    PHASE,
                    format!("read {}: {e}", entry.path.display()),
                ));
            }
            error = Some(format!("{} decompression failed: {e}", codec.name()));
        }
        // The rest of the file (after a failed or finished decoder): counted, not kept.
        io::copy(&mut counted, &mut io::sink()).map_err(|e| {
            Error::bad(
                &self.file,
                PHASE,
                format!("read {}: {e}", entry.path.display()),
            )
        })?;
        let mut m = Module {
            path: entry.path.clone(),
            codec,
            package: self.member,
            file_size: read.get(),
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
                &self.file,
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
            if let Some(map) = &map {
                m.btf_cost = map.span(o as u64, (o + l) as u64);
            }
            m.btf_sha256 = Some(crate::hash::sha256_hex(&bytes));
            let btf = self
                .queue_btf(bytes)
                .map_err(|e| Error::io(&self.file, "spill module .BTF to a temporary file", e))?;
            let job = Job::Module {
                idx: self.modules.len(),
                btf,
                price: (codec != Codec::None && map.is_none()).then_some(codec),
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
                &self.file,
                "read module",
                format!("{}: {x}", m.path.display()),
            ));
        }
        Ok(())
    }
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

impl Visitor for Collector {
    fn visit(&mut self, entry: &Entry, data: &mut dyn Read) -> Result<()> {
        if self.stop.load(Ordering::Relaxed) {
            // load() reports the worker's refusal instead.
            return Err(Error::bad(&self.file, "analyse kernel", "analysis refused"));
        }
        if let (Some((idx, start)), Some(now)) = (self.open_span.take(), entry.packed_offset) {
            self.modules[idx].packed_span = Some(now.saturating_sub(start));
        }
        if let Some((release, rest)) = modules_path(&entry.path) {
            self.member_dirs.insert(release.clone());
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
            // The image and config beside the modules, as Debian's split kernels (trixie-
            // backports, sid) and Fedora ship them: `(usr/)lib/modules/<release>/vmlinuz` and
            // `…/config`. Alpine's `lib/modules/<release>/vmlinuz` is a symlink to its
            // `/boot` image, and links were skipped above.
            if rest.as_os_str() == "vmlinuz" {
                return self.image_entry(entry, data);
            }
            if rest.as_os_str() == "config" {
                return self.config_entry(entry, data);
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
            self.image_entry(entry, data)
        } else if name.starts_with("config") {
            self.config_entry(entry, data)
        } else {
            Ok(())
        }
    }

    fn end(&mut self, packed_end: Option<u64>) -> Result<()> {
        if let (Some((idx, start)), Some(end)) = (self.open_span.take(), packed_end) {
            self.modules[idx].packed_span = Some(end.saturating_sub(start));
        }
        self.packed_end = packed_end;
        Ok(())
    }
}

impl Collector {
    /// The kernel image (`boot/vmlinuz*`, `boot/bzImage*` or `(usr/)lib/modules/<rel>/vmlinuz`),
    /// spooled and sent to the worker; a second one is bad input.
    fn image_entry(&mut self, entry: &Entry, data: &mut dyn Read) -> Result<()> {
        const PHASE: &str = "read kernel image";
        if let Some(prev) = &self.image {
            return Err(Error::bad(
                &self.file,
                "find kernel image",
                format!(
                    "two kernel images ({} and {}); a kernel's package or set of packages must hold exactly one",
                    self.located(prev.package, &prev.path),
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
                    &self.file,
                    PHASE,
                    format!("read {}: {e}", entry.path.display()),
                ),
            })?;
        let head = spooled
            .read_at(0, bzimage::HEAD as u64)
            .map_err(|e| Error::io(&self.file, PHASE, e))?;
        self.image = Some(Image {
            package: self.member,
            path: entry.path.clone(),
            file_size: spooled.len(),
            version_string: bzimage::version_string(&head),
            payload: Err(Error::failed("analyse kernel image", "not analysed yet")),
            btf: Err(Error::failed("analyse kernel image", "not analysed yet")),
        });
        let _ = self.tx.send(Job::Image(spooled));
        Ok(())
    }

    /// The kernel config (`boot/config*` or `(usr/)lib/modules/<rel>/config`); a second one is
    /// bad input.
    fn config_entry(&mut self, entry: &Entry, data: &mut dyn Read) -> Result<()> {
        let bytes = self.read_limited(entry, data, limits::CONFIG, "read kernel config")?;
        let text = String::from_utf8_lossy(&bytes);
        if let Some(prev) = &self.config {
            return Err(Error::bad(
                &self.file,
                "find kernel config",
                format!(
                    "two kernel configs ({} and {}); a kernel's package or set of packages must hold exactly one",
                    self.located(prev.package, &prev.path),
                    entry.path.display()
                ),
            ));
        }
        self.config = Some(Config {
            package: self.member,
            path: entry.path.clone(),
            kconfig: Kconfig::parse(&text),
        });
        Ok(())
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
