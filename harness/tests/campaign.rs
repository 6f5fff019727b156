//! Hostile-input campaign: small real inputs under thousands of seeded mutations, each case run
//! through the reader and the static checks in a worker thread with a deadline.
//!
//! Inputs (each set is one libtest-mimic trial; a set whose input is not on this machine is
//! listed as ignored with the reason): the source-built `tiny-btf` APK (signed) and its parts
//! (bzImage, vmlinux, the vmlinux `.BTF`, the `configs.ko` module), small kernel packages
//! assembled from those parts (APK v2, .deb with xz/zstd/gzip data, a directory; their vmlinux
//! BTF is a real subset of the tiny kernel's, the module's split BTF remapped onto it, so the
//! unmutated packages pass every static check), a .deb holding a real Debian control member,
//! config and module, and the shared Alpine fixtures (a signed APK, two signed indexes).
//!
//! Mutations: bit flips, byte values, truncations, inserted/deleted/duplicated bytes, length
//! and offset fields set to huge or boundary values (ELF section headers, BTF header and type
//! records, tar sizes in octal and base-256, ar sizes, gzip sizes, the bzImage setup header),
//! applied to the outer file, to the inner tar (recompressed, its datahash recomputed, so they
//! reach the tar walker) or to one member (the package rebuilt around it, so they reach the
//! kernel loader); and structural ones: `..`, absolute and symlink/hard-link entries that try
//! to leave the package, links written through on extraction, duplicated members, huge
//! declared sizes, long names, devices. Every case must end without a panic, within
//! [`DEADLINE`], with either an accepted package whose checks all carry a detail, or an error
//! that names the input file and a phase; extraction must write nothing outside its
//! destination. Peak RSS of the whole binary (VmHWM) is printed and bounded by [`MAX_RSS_MB`].
//!
//! Inputs that found bugs are replayed from `harness/tests/corpus/` (see [`CORPUS`]).
//! `BTFGATE_CAMPAIGN_SEED` changes the seed, `BTFGATE_CAMPAIGN_SCALE` multiplies the case
//! counts; a failing case is saved under the target directory and named in the failure.
//!
//! One file because: cargo builds each `tests/*.rs` as its own binary; the input sets and the
//! judge share one case type (builders and mutations are in `campaign/`).

#![allow(clippy::unwrap_used)]

#[macro_use]
mod support;
#[path = "campaign/build.rs"]
mod build;
#[path = "campaign/mutate.rs"]
mod mutate;

use build::*;
use mutate::*;

use support::R;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use harness::checks::{static_, Status};
use harness::codec::Codec;
use harness::fixtures::{alpine_dir, host_kernel, needs, Flavor};
use harness::kernel::btf::{Base, Btf};
use harness::kernel::{bzimage, elf, Kernel};
use harness::package::{self, Entry, EntryKind, ReadOptions, Visitor};
use harness::Error;
use libtest_mimic::{Arguments, Trial};

/// Per-case deadline: past it the case is a hang.
const DEADLINE: Duration = Duration::from_secs(5);
/// Bound on the binary's peak resident set (VmHWM).
const MAX_RSS_MB: u64 = 300;

// ---------------------------------------------------------------------------------------------
// Inputs found on this machine, prepared once.

/// Entries of a package, content included.
#[derive(Default)]
struct Collect {
    files: Vec<(PathBuf, EntryKind, Vec<u8>)>,
    /// Stop after the first module of at most this many bytes (and a config) was seen.
    stop_at_module: Option<u64>,
}

impl Visitor for Collect {
    fn visit(&mut self, entry: &Entry, data: &mut dyn Read) -> harness::Result<()> {
        let p = entry.path.to_string_lossy().into_owned();
        let module = p.ends_with(".ko");
        if let Some(max) = self.stop_at_module {
            let wanted = (module && entry.size <= max) || p.starts_with("boot/config");
            if !wanted {
                return Ok(());
            }
        }
        let mut content = Vec::new();
        data.read_to_end(&mut content)
            .map_err(|e| Error::io(&entry.path, "campaign collect", e))?;
        self.files
            .push((entry.path.clone(), entry.kind.clone(), content));
        if self.stop_at_module.is_some() && module {
            return Err(Error::bad(&entry.path, "campaign collect", "enough"));
        }
        Ok(())
    }
}

/// The source-built tiny kernel and what the campaign makes of it.
struct Tiny {
    apk: PathBuf,
    opts: ReadOptions,
    release: String,
    image: Vec<u8>,
    vmlinux: Vec<u8>,
    btf: Vec<u8>,
    module: Vec<u8>,
    config: Vec<u8>,
    /// The vmlinux .BTF subset and the module remapped onto it.
    mini_btf: Vec<u8>,
    mini_module: Vec<u8>,
    mini_vmlinux: Vec<u8>,
    small_files: Vec<(String, Vec<u8>)>,
    /// The small package trees, by payload codec: gzip (modules plain and .gz), lz4 (plain),
    /// zstd (.zst), xz (.xz).
    trees: Vec<Tree>,
}

fn tiny_target() -> Result<(PathBuf, ReadOptions), String> {
    use harness::scenario::{load, targets};
    let file = harness::fixtures::workspace_root().join("scenarios/targets.yaml");
    let text = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    let t = load::parse_targets(&file, &text).map_err(|e| e.to_string())?;
    match targets::resolve(&t, "tiny-btf").map_err(|e| e.to_string())? {
        targets::Package::Files(p) => match <[PathBuf; 1]>::try_from(p) {
            Ok([p]) => Ok((p, targets::read_options(&t, "tiny-btf"))),
            Err(_) => Err("tiny-btf is a set of packages".into()),
        },
        targets::Package::Mix { .. } => Err("tiny-btf is a mix".into()),
    }
}

fn tiny() -> &'static Tiny {
    static T: OnceLock<Tiny> = OnceLock::new();
    T.get_or_init(|| {
        let (apk, opts) = tiny_target().unwrap();
        let mut c = Collect::default();
        package::read(&apk, &opts, &mut c).unwrap();
        let get = |pred: &dyn Fn(&str) -> bool| {
            c.files
                .iter()
                .find(|(p, k, _)| *k == EntryKind::File && pred(&p.to_string_lossy()))
                .map(|(p, _, d)| (p.clone(), d.clone()))
                .unwrap()
        };
        let (_, image) = get(&|p| p.starts_with("boot/vmlinuz"));
        let (_, config) = get(&|p| p.starts_with("boot/config"));
        let (mpath, module) = get(&|p| p.ends_with("/configs.ko"));
        let release = mpath
            .components()
            .nth(2)
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .into_owned();
        let small_files = c
            .files
            .iter()
            .filter(|(p, k, d)| {
                *k == EntryKind::File
                    && d.len() < 4096
                    && p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("modules."))
            })
            .map(|(p, _, d)| {
                (
                    p.file_name().unwrap().to_string_lossy().into_owned(),
                    d.clone(),
                )
            })
            .collect();
        let (_, vmlinux) = bzimage::extract_vmlinux(&image).unwrap();
        let (o, l) = elf::sections(&vmlinux).unwrap().btf.unwrap();
        let btf = vmlinux[o..o + l].to_vec();
        let base = Btf::parse(&btf, None).unwrap();
        let base_n = base.ntypes;
        let base_strlen = base.header.str_len;
        let (mo, ml) = elf::sections(&module).unwrap().btf.unwrap();
        let (mut roots, names) = split_refs(&module[mo..mo + ml], base_n, base_strlen);
        let full: Vec<u32> = [(4, "list_head"), (4, "callback_head"), (4, "hlist_node")]
            .iter()
            .filter_map(|&(k, n)| find_type(&btf, k, n))
            .collect();
        roots.extend(full.iter().copied());
        roots.extend(
            [
                (4, "task_struct"),
                (12, "vfs_read"),
                (6, "pid_type"),
                (8, "u64"),
            ]
            .iter()
            .filter_map(|&(k, n)| find_type(&btf, k, n)),
        );
        let (mini_btf, ids, strs) = subset_btf(&btf, &roots, &full, &names);
        let mini = Btf::parse(&mini_btf, None).unwrap();
        assert!(mini.has_struct("task_struct"));
        let mut mini_module = module.clone();
        remap_split(
            &mut mini_module[mo..mo + ml],
            (base_n, base_strlen),
            (mini.ntypes, mini.header.str_len),
            &ids,
            &strs,
        );
        let split = Btf::parse(&mini_module[mo..mo + ml], Some(mini.ntypes)).unwrap();
        let fit = split.check_against_base(&mini.as_base());
        assert!(fit.ok() && fit.name_refs > 0, "{fit:?}");
        let text_at = 0x1000.min(vmlinux.len());
        let mini_vmlinux = mini_elf(
            2,
            &[
                (
                    ".text",
                    1,
                    &vmlinux[text_at..(text_at + 4096).min(vmlinux.len())],
                ),
                (".BTF", 1, &mini_btf),
            ],
        );
        let mut t = Tiny {
            apk,
            opts,
            release,
            image,
            vmlinux,
            btf,
            module,
            config,
            mini_btf,
            mini_module,
            mini_vmlinux,
            small_files,
            trees: Vec::new(),
        };
        t.trees = vec![
            t.tree(Codec::Gzip, &[Codec::None, Codec::Gzip]),
            t.tree(Codec::Lz4, &[Codec::None]),
            t.tree(Codec::Zstd, &[Codec::Zstd]),
            t.tree(Codec::Xz, &[Codec::Xz]),
        ];
        t
    })
}

impl Tiny {
    fn image_with(&self, codec: Codec) -> Vec<u8> {
        wrap_image(&self.image, &self.mini_vmlinux, codec)
    }

    /// The small kernel package tree: config, a bzImage around the mini vmlinux (`codec`), the
    /// remapped `configs.ko` stored as each of `modules` (plain, .gz, .xz, .zst), the small
    /// `modules.*` files, a `build` symlink.
    fn tree(&self, codec: Codec, modules: &[Codec]) -> Tree {
        let r = &self.release;
        let mut t: Tree = vec![
            (b"boot/".to_vec(), Node::Dir),
            (
                b"boot/config-mini".to_vec(),
                Node::File(self.config.clone()),
            ),
            (
                b"boot/vmlinuz-mini".to_vec(),
                Node::File(self.image_with(codec)),
            ),
            (b"lib/".to_vec(), Node::Dir),
            (b"lib/modules/".to_vec(), Node::Dir),
            (format!("lib/modules/{r}/").into_bytes(), Node::Dir),
            (
                format!("lib/modules/{r}/build").into_bytes(),
                Node::Symlink(format!("/usr/src/linux-headers-{r}").into_bytes()),
            ),
            (format!("lib/modules/{r}/kernel/").into_bytes(), Node::Dir),
            (
                format!("lib/modules/{r}/kernel/kernel/").into_bytes(),
                Node::Dir,
            ),
        ];
        for &c in modules {
            let (name, data) = match c {
                Codec::None => ("configs.ko".to_string(), self.mini_module.clone()),
                c => (
                    format!("configs_{}.ko.{}", c.name(), ext(c)),
                    c.compress(&self.mini_module, true).unwrap(),
                ),
            };
            t.push((
                format!("lib/modules/{r}/kernel/kernel/{name}").into_bytes(),
                Node::File(data),
            ));
        }
        for (name, data) in &self.small_files {
            t.push((
                format!("lib/modules/{r}/{name}").into_bytes(),
                Node::File(data.clone()),
            ));
        }
        t
    }
}

fn ext(c: Codec) -> &'static str {
    match c {
        Codec::Gzip => "gz",
        Codec::Xz => "xz",
        Codec::Zstd => "zst",
        _ => "",
    }
}

fn untrusted() -> ReadOptions {
    ReadOptions {
        keys_dir: PathBuf::from("/nonexistent/btfgate-campaign-keys"),
        allow_untrusted: true,
    }
}

/// Real Debian parts: the control member, the config and one small module of the cloud kernel.
struct Debian {
    control: (Vec<u8>, Vec<u8>),
    config: Vec<u8>,
    module: (String, Vec<u8>),
    release: String,
}

fn debian() -> &'static Debian {
    static D: OnceLock<Debian> = OnceLock::new();
    D.get_or_init(|| {
        let deb = host_kernel(Flavor::Cloud).unwrap();
        let control = ar_member(&deb, b"control.tar").unwrap();
        let mut c = Collect {
            stop_at_module: Some(40_000),
            ..Collect::default()
        };
        let _ = package::read(&deb, &ReadOptions::default(), &mut c);
        let config = c
            .files
            .iter()
            .find(|(p, _, _)| p.starts_with("boot"))
            .map(|(_, _, d)| d.clone())
            .unwrap();
        let (mpath, _, mdata) = c
            .files
            .iter()
            .find(|(p, _, _)| p.to_string_lossy().ends_with(".ko"))
            .unwrap();
        let release = mpath
            .components()
            .nth(2)
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .into_owned();
        let name = mpath.file_name().unwrap().to_string_lossy().into_owned();
        Debian {
            control,
            config: config.clone(),
            module: (name, mdata.clone()),
            release,
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Running a case: a worker thread, a deadline, panics caught; the outcome judged.

/// What a case ended as.
enum Outcome {
    /// Read and checked; a short summary (check statuses).
    Accepted(String),
    /// A library error (must name the input file and a phase).
    Refused(Error),
    /// A component parser's error string (BTF, ELF, bzImage) or a non-kernel refusal.
    Rejected(String),
    /// The contract is broken: an escape, a PASS without evidence, an empty detail...
    Violation(String),
}

struct Case {
    path: PathBuf,
    /// The extraction sandbox: `dest/` and `outside/` (with `victim`).
    sandbox: PathBuf,
    bytes: Vec<u8>,
}

type Runner = dyn Fn(&Case) -> Outcome + Send + Sync;

/// Counts of one set.
#[derive(Default)]
struct Tally {
    cases: usize,
    accepted: usize,
    refused: usize,
    rejected: usize,
    errors: BTreeSet<String>,
    outcomes: BTreeSet<String>,
    failures: Vec<String>,
    crashes: usize,
    hangs: usize,
    violations: usize,
    /// Seconds spent making the inputs.
    making: f64,
    /// The slowest case: (seconds, "set:i (what)").
    slowest: (f64, String),
}

static TOTALS: Mutex<BTreeMap<String, Tally>> = Mutex::new(BTreeMap::new());
static PANICS: AtomicUsize = AtomicUsize::new(0);

/// Normalized error text: numbers and hex runs folded, so "offset 17" and "offset 18" count once.
fn normalize(text: &str) -> String {
    let mut out = String::new();
    let mut last_digit = false;
    for c in text.chars().take(160) {
        if c.is_ascii_digit() {
            if !last_digit {
                out.push('#');
            }
            last_digit = true;
        } else {
            last_digit = false;
            out.push(c);
        }
    }
    out
}

/// The error names `file` (or a path in the extraction sandbox) and a phase, and says what.
fn judge_error(e: &Error, case: &Case) -> Result<String, String> {
    let (file, phase) = match e {
        Error::BadInput { file, phase, .. }
        | Error::Unsupported { file, phase, .. }
        | Error::Untrusted { file, phase, .. }
        | Error::Io { file, phase, .. } => (file, *phase),
        Error::Failed { .. } | Error::Process(_) | Error::At { .. } => {
            return Err(format!("a bad input failed as a step, naming no file: {e}"))
        }
    };
    let shown = e.to_string();
    if file != &case.path && !file.starts_with(&case.sandbox) {
        return Err(format!(
            "error names {}, neither the input nor a path in its destination: {shown}",
            file.display()
        ));
    }
    let prefix = format!("{}: {phase}: ", file.display());
    let msg = shown.strip_prefix(&prefix).unwrap_or("");
    if phase.trim().is_empty() || msg.trim().is_empty() {
        return Err(format!("error lacks a phase or a message: {shown:?}"));
    }
    if shown.contains("panicked") {
        return Err(format!("a panic reported as an error: {shown}"));
    }
    let rel = if file == &case.path {
        String::new()
    } else {
        "<dest> ".into()
    };
    Ok(normalize(&format!(
        "{rel}{phase}: {}",
        msg.replace(&case.sandbox.display().to_string(), "<sandbox>")
    )))
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(non-string panic)".into())
}

/// Where cases are written and extracted: `$BTFGATE_CAMPAIGN_TMP`, else `/dev/shm` (creating
/// and removing thousands of small trees on a disk file system costs seconds), else the
/// system's temporary directory.
fn scratch_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("BTFGATE_CAMPAIGN_TMP") {
        return PathBuf::from(d);
    }
    let shm = Path::new("/dev/shm");
    if tempfile::tempdir_in(shm).is_ok() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// Where failing inputs are saved for the corpus.
fn findings_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("campaign-findings")
}

/// Runs `n` cases of set `set`: `make` builds case i's input from its own seeded generator
/// (given the case's sandbox, for link targets), `run` reads it.
/// How a case ended, judged: `Ok` with the key it counts under, or the failure.
enum Judged {
    Accepted(String),
    Refused(String),
    Rejected(String),
    Crash(String),
    Hang,
    Violation(String),
}

/// Runs `run` on `case` in its own thread with [`DEADLINE`], catching panics; returns the
/// judgement and, unless it hung, after the thread ended.
fn run_case(name: &str, case: &Arc<Case>, run: &Arc<Runner>) -> Judged {
    let (tx, rx) = mpsc::channel();
    let (c2, r2) = (case.clone(), run.clone());
    let spawned = std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| r2(&c2)));
            let _ = tx.send(r.map_err(|p| panic_text(&*p)));
        });
    let worker = match spawned {
        Ok(w) => w,
        Err(e) => return Judged::Violation(format!("cannot start the case thread: {e}")),
    };
    let judged = match rx.recv_timeout(DEADLINE) {
        Ok(Ok(Outcome::Accepted(s))) => Judged::Accepted(s),
        Ok(Ok(Outcome::Refused(e))) => match judge_error(&e, case) {
            Ok(norm) => Judged::Refused(norm),
            Err(v) => Judged::Violation(v),
        },
        Ok(Ok(Outcome::Rejected(msg))) if msg.trim().is_empty() => {
            Judged::Violation("empty error message".into())
        }
        Ok(Ok(Outcome::Rejected(msg))) => Judged::Rejected(normalize(&msg)),
        Ok(Ok(Outcome::Violation(v))) => Judged::Violation(v),
        Ok(Err(p)) => Judged::Crash(format!("PANIC: {p}")),
        Err(mpsc::RecvTimeoutError::Timeout) => return Judged::Hang,
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            Judged::Crash("the case thread ended without an answer".into())
        }
    };
    let _ = worker.join();
    judged
}

/// Makes case i's input (and says what was done) from its generator and its sandbox.
type Maker<'a> = dyn Fn(&mut Rng, &Path) -> (Vec<u8>, String) + 'a;

/// With `ext`, the input is written to `case-<i>.<ext>` for readers that take a path.
fn campaign(set: &str, n: usize, ext: Option<&str>, make: &Maker, run: Arc<Runner>) -> R {
    let started = Instant::now();
    let dir = tempfile::tempdir_in(scratch_dir())?;
    let mut t = Tally::default();
    let only: Option<usize> = std::env::var("BTFGATE_CAMPAIGN_CASE")
        .ok()
        .and_then(|v| v.strip_prefix(&format!("{set}:"))?.parse().ok());
    for i in 0..n {
        if only.is_some_and(|o| o != i) {
            continue;
        }
        let mut rng = Rng::for_case(set, i);
        let path = dir
            .path()
            .join(format!("case-{i}.{}", ext.unwrap_or("bin")));
        let sandbox = dir.path().join(format!("case-{i}.sandbox"));
        let made = Instant::now();
        let (bytes, what) = make(&mut rng, &sandbox);
        t.making += made.elapsed().as_secs_f64();
        if ext.is_some() {
            std::fs::write(&path, &bytes)?;
        }
        let case = Arc::new(Case {
            path: path.clone(),
            sandbox: sandbox.clone(),
            bytes,
        });
        t.cases += 1;
        let case_started = Instant::now();
        let judged = run_case(&format!("{set}:{i}"), &case, &run);
        let secs = case_started.elapsed().as_secs_f64();
        if secs > t.slowest.0 {
            t.slowest = (secs, format!("{set}:{i} ({what})"));
        }
        let failure = match judged {
            Judged::Accepted(s) => {
                t.accepted += 1;
                t.outcomes.insert(s);
                None
            }
            Judged::Refused(e) => {
                t.refused += 1;
                t.errors.insert(e);
                None
            }
            Judged::Rejected(e) => {
                t.rejected += 1;
                t.errors.insert(e);
                None
            }
            Judged::Crash(c) => {
                t.crashes += 1;
                Some(c)
            }
            Judged::Hang => {
                t.hangs += 1;
                Some(format!("HANG: no answer within {DEADLINE:?}"))
            }
            Judged::Violation(v) => {
                t.violations += 1;
                Some(v)
            }
        };
        if let Some(f) = failure {
            let keep = findings_dir()
                .join(format!("{set}-{i}.{}", ext.unwrap_or("bin")).replace("::", "-"));
            let _ = std::fs::create_dir_all(findings_dir());
            let _ = std::fs::write(&keep, &case.bytes);
            t.failures.push(format!(
                "{set}:{i} ({what}): {f}\n    input saved as {} (rerun alone: BTFGATE_CAMPAIGN_CASE={set}:{i})",
                keep.display()
            ));
            if t.hangs > 0 {
                break; // the hung thread cannot be stopped; do not pile more on it
            }
        }
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_dir_all(&sandbox);
    }
    println!(
        "campaign {set}: {} cases in {:.1}s ({:.1}s making them): {} accepted, {} refused naming file and phase, {} rejected by a component, {} distinct errors, {} distinct verdicts; {} crashes, {} hangs, {} violations; slowest {:.2}s: {}",
        t.cases,
        started.elapsed().as_secs_f64(),
        t.making,
        t.accepted,
        t.refused,
        t.rejected,
        t.errors.len(),
        t.outcomes.len(),
        t.crashes,
        t.hangs,
        t.violations,
        t.slowest.0,
        t.slowest.1,
    );
    let failures = t.failures.clone();
    TOTALS.lock().unwrap().insert(set.to_string(), t);
    ensure!(
        failures.is_empty(),
        "{} failing cases:\n{}",
        failures.len(),
        failures
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Runners.

/// The reader and the static checks, then the report a user would get.
fn load_and_check(case: &Case, opts: &ReadOptions) -> Outcome {
    let k = match Kernel::load(&case.path, opts) {
        Ok(k) => k,
        Err(e) => return Outcome::Refused(e),
    };
    let checks = static_::run_all(&k, &static_::StaticParams::default());
    if checks.len() != harness::checks::static_ids().len() {
        return Outcome::Violation(format!("{} static checks ran", checks.len()));
    }
    for c in &checks {
        if c.detail.trim().is_empty() {
            return Outcome::Violation(format!("{}: empty detail", c.id));
        }
        if c.detail.contains("without evidence") {
            return Outcome::Violation(format!("{}: {}", c.id, c.detail));
        }
        if c.status == Status::Pass && c.evidence.iter().all(|e| e.trim().is_empty()) {
            return Outcome::Violation(format!("{}: PASS without evidence", c.id));
        }
    }
    for m in &k.modules {
        if m.error.as_ref().is_some_and(|e| e.trim().is_empty()) {
            return Outcome::Violation(format!("{}: empty module error", m.path.display()));
        }
    }
    let names: Vec<String> = k.modules.iter().map(|m| m.name()).collect();
    let _ = harness::guest::load_order(&k, &names);
    let verdict: String = checks
        .iter()
        .map(|c| match c.status {
            Status::Pass => 'P',
            Status::Fail => 'F',
            Status::Skip => 'S',
        })
        .collect();
    let report = harness::report::PackageReport::new(&k, checks);
    if let Err(e) = serde_json::to_string(&report) {
        return Outcome::Violation(format!("report does not serialize: {e}"));
    }
    Outcome::Accepted(verdict)
}

const VICTIM: &[u8] = b"outside the destination";

/// Extracts everything into `<sandbox>/dest` and proves nothing was written elsewhere:
/// `<sandbox>/outside/victim` (what escaping links point at) unchanged and not linked to,
/// nothing else in the sandbox or beside it.
fn extract_contained(case: &Case, opts: &ReadOptions) -> Option<Outcome> {
    let outside = case.sandbox.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("victim"), VICTIM).unwrap();
    let dest = case.sandbox.join("dest");
    let r = package::extract::extract(&case.path, opts, &dest, &|_: &Path| true);
    use std::os::unix::fs::MetadataExt;
    let mut escaped = Vec::new();
    let names = |d: &Path| -> Vec<String> {
        std::fs::read_dir(d)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    for n in names(&outside) {
        if n != "victim" {
            escaped.push(format!("outside/{n}"));
        }
    }
    match std::fs::symlink_metadata(outside.join("victim")) {
        Ok(m) if m.is_file() && m.nlink() == 1 => {}
        Ok(m) => escaped.push(format!(
            "outside/victim is now linked ({} links)",
            m.nlink()
        )),
        Err(e) => escaped.push(format!("outside/victim: {e}")),
    }
    if std::fs::read(outside.join("victim")).ok().as_deref() != Some(VICTIM) {
        escaped.push("outside/victim was written".into());
    }
    for n in names(&case.sandbox) {
        if !["dest", "outside", "pkg"].contains(&n.as_str()) {
            escaped.push(n);
        }
    }
    if let Some(trial_dir) = case.sandbox.parent() {
        for n in names(trial_dir) {
            if !n.starts_with("case-") {
                escaped.push(format!("../{n}"));
            }
        }
    }
    if !escaped.is_empty() {
        return Some(Outcome::Violation(format!(
            "extraction wrote outside its destination: {} (extract said {:?})",
            escaped.join(", "),
            r.as_ref().map(|(_, w)| w.len()).map_err(|e| e.to_string())
        )));
    }
    match r {
        Err(e) => Some(Outcome::Refused(e)),
        Ok(_) => None,
    }
}

fn kernel_runner(opts: ReadOptions, extract: bool) -> Arc<Runner> {
    Arc::new(move |case: &Case| {
        if !extract {
            return load_and_check(case, &opts);
        }
        match extract_contained(case, &opts) {
            None => load_and_check(case, &opts),
            Some(Outcome::Refused(e)) if e.phase() == "extract package" => Outcome::Refused(e),
            // The reader refused while extracting: it refuses the package whoever reads it.
            Some(Outcome::Refused(e)) => match load_and_check(case, &opts) {
                Outcome::Accepted(v) => Outcome::Violation(format!(
                    "extraction refused ({e}) but the kernel loader accepted the package ({v})"
                )),
                o => o,
            },
            Some(o) => o,
        }
    })
}

/// The vmlinux `.BTF` parser with what the checks read of it.
fn btf_runner() -> Arc<Runner> {
    Arc::new(|case: &Case| match Btf::parse(&case.bytes, None) {
        Ok(b) => {
            let kinds = b.kind_summary();
            let ts = b.has_struct("task_struct");
            let base = b.as_base();
            Outcome::Accepted(format!(
                "{} kinds, task_struct {ts}, {} strings",
                kinds.len(),
                base.strings.len().min(1)
            ))
        }
        Err(e) => Outcome::Rejected(e.to_string()),
    })
}

/// A module's split BTF against the real base.
fn split_runner(base: Arc<Base>) -> Arc<Runner> {
    Arc::new(
        move |case: &Case| match Btf::parse(&case.bytes, Some(base.ntypes)) {
            Ok(b) => Outcome::Accepted(format!("fit {}", b.check_against_base(&base).ok())),
            Err(e) => Outcome::Rejected(e.to_string()),
        },
    )
}

/// An ELF (module or vmlinux): the section table, `.modinfo`, and the `.BTF` checked as the
/// loader does (split against `base`, or standalone).
fn elf_runner(base: Option<Arc<Base>>) -> Arc<Runner> {
    Arc::new(move |case: &Case| {
        let data = &case.bytes;
        let s = match elf::sections(data) {
            Ok(s) => s,
            Err(e) => return Outcome::Rejected(e.to_string()),
        };
        let info = s.modinfo.map(|r| elf::modinfo(data, r)).unwrap_or_default();
        let Some((o, l)) = s.btf else {
            return Outcome::Accepted(format!(
                "no .BTF ({}), {} modinfo",
                elf::no_btf_reason(&s),
                info.len().min(1)
            ));
        };
        let btf = &data[o..o + l];
        let parsed = match &base {
            Some(b) => Btf::parse(btf, Some(b.ntypes)).map(|m| m.check_against_base(b).ok()),
            None => Btf::parse(btf, None).map(|b| b.has_struct("task_struct")),
        };
        match parsed {
            Ok(ok) => Outcome::Accepted(format!("btf ok {ok}, {} debug", s.debug.len())),
            Err(e) => Outcome::Rejected(format!("btf: {e}")),
        }
    })
}

/// The bzImage setup header (and the payload when it is small).
fn bzimage_runner() -> Arc<Runner> {
    Arc::new(|case: &Case| {
        let img = &case.bytes;
        let _ = bzimage::version_string(img);
        match bzimage::payload(img) {
            Err(e) => Outcome::Rejected(e.to_string()),
            Ok(p) => {
                let _ = (p.bytes(img).len(), p.announced_size(img));
                if p.len < (1 << 20) {
                    if let Err(e) = bzimage::extract_vmlinux(img) {
                        return Outcome::Rejected(e.to_string());
                    }
                }
                Outcome::Accepted(format!("payload {}", p.codec.name()))
            }
        }
    })
}

/// An APKINDEX: signature and records.
fn index_runner(opts: ReadOptions) -> Arc<Runner> {
    Arc::new(
        move |case: &Case| match harness::package::apkindex::read_index(&case.path, &opts) {
            Ok(i) => Outcome::Accepted(format!("{} entries", i.entries.len().min(1))),
            Err(e) => Outcome::Refused(e),
        },
    )
}

// ---------------------------------------------------------------------------------------------
// Case makers.

/// One member of `tree` mutated with a shape fitting its format; returns its path.
fn mutate_member(rng: &mut Rng, tree: &mut Tree, t: &Tiny) -> String {
    let files: Vec<usize> = tree
        .iter()
        .enumerate()
        .filter(|(_, (_, n))| matches!(n, Node::File(_)))
        .map(|(i, _)| i)
        .collect();
    let i = *rng.pick(&files);
    let name = String::from_utf8_lossy(&tree[i].0).into_owned();
    let Node::File(data) = &mut tree[i].1 else {
        unreachable!()
    };
    let what = if name.contains("vmlinuz") && rng.chance(50) {
        // Inside the image: the vmlinux ELF and its .BTF, recompressed into the payload.
        let codec = bzimage::payload(data)
            .map(|p| p.codec)
            .unwrap_or(Codec::Gzip);
        let mut v = t.mini_vmlinux.clone();
        let what = mutate(rng, &mut v, &elf_shape(&t.mini_vmlinux));
        *data = wrap_image(&t.image, &v, codec);
        format!("vmlinux: {what}")
    } else if name.contains("vmlinuz") {
        let shape = bzimage_shape(data);
        mutate(rng, data, &shape)
    } else if name.ends_with(".ko") {
        let shape = elf_shape(data);
        mutate(rng, data, &shape)
    } else if name.contains(".ko.") && rng.chance(50) {
        let codec = Codec::detect(data);
        let mut m = t.mini_module.clone();
        let what = mutate(rng, &mut m, &elf_shape(&t.mini_module));
        *data = codec.compress(&m, true).unwrap();
        format!("module ELF: {what}")
    } else if name.contains(".ko.") {
        let shape = stream_shape(data);
        mutate(rng, data, &shape)
    } else {
        mutate(rng, data, &Shape::default())
    };
    format!("member {name}: {what}")
}

/// How many kinds of structural edit [`structural`] makes.
const STRUCTURAL: usize = 24;

/// Structural edit `which`: entries that try to leave the package or the destination,
/// duplicates, lies about sizes, odd types and names. `outside` is where escaping links point.
fn structural(rng: &mut Rng, tree: &mut Tree, outside: &Path, which: usize) -> String {
    let out = outside.as_os_str().as_encoded_bytes().to_vec();
    let victim = [out.as_slice(), b"/victim"].concat();
    let at = |rng: &mut Rng, tree: &mut Tree, entries: Vec<(Vec<u8>, Node)>| {
        let p = rng.below(tree.len() + 1);
        for (k, e) in entries.into_iter().enumerate() {
            tree.insert(p + k, e);
        }
    };
    let image = tree
        .iter()
        .position(|(p, _)| p.ends_with(b"vmlinuz-mini"))
        .unwrap_or(0);
    let module = tree
        .iter()
        .position(|(p, _)| p.ends_with(b".ko"))
        .unwrap_or(0);
    let file = |b: &[u8]| Node::File(b.to_vec());
    match which % STRUCTURAL {
        0 => at(rng, tree, vec![(b"../evil".to_vec(), file(b"x"))]),
        1 => at(
            rng,
            tree,
            vec![([out.as_slice(), b"/abs"].concat(), file(b"x"))],
        ),
        2 => at(rng, tree, vec![(b"boot/../../evil".to_vec(), file(b"x"))]),
        3 => at(
            rng,
            tree,
            vec![(
                b"boot/up".to_vec(),
                Node::Symlink(b"../../../../evil".to_vec()),
            )],
        ),
        // An absolute link (allowed: it resolves inside the root once installed), then a file
        // written through it.
        4 => {
            tree.push((b"boot/out".to_vec(), Node::Symlink(out.clone())));
            tree.push((b"boot/out/evil".to_vec(), file(b"x")));
        }
        // A link where the image will be written, before the image.
        5 => tree.insert(
            image,
            (b"boot/vmlinuz-mini".to_vec(), Node::Symlink(victim.clone())),
        ),
        // The module directory replaced by a link out, before the modules.
        6 => {
            let dir = tree
                .iter()
                .position(|(p, _)| p.ends_with(b"/kernel/kernel/"))
                .unwrap_or(0);
            let name = tree[dir]
                .0
                .strip_suffix(b"/")
                .unwrap_or(&tree[dir].0)
                .to_vec();
            tree.insert(dir, (name, Node::Symlink(out.clone())));
        }
        7 => at(
            rng,
            tree,
            vec![(
                b"boot/h".to_vec(),
                Node::Hardlink(b"../outside/victim".to_vec()),
            )],
        ),
        8 => at(
            rng,
            tree,
            vec![(b"boot/h".to_vec(), Node::Hardlink(victim.clone()))],
        ),
        // A hard link through a symlinked directory to a file outside.
        9 => {
            tree.push((b"boot/d".to_vec(), Node::Symlink(out.clone())));
            tree.push((
                b"boot/e".to_vec(),
                Node::Hardlink(b"boot/d/victim".to_vec()),
            ));
        }
        10 => {
            let dup = tree[rng.below(tree.len())].clone();
            at(rng, tree, vec![dup]);
        }
        11 => tree.push((
            b"boot/vmlinuz-2".to_vec(),
            Node::Hardlink(b"boot/vmlinuz-mini".to_vec()),
        )),
        12 => at(
            rng,
            tree,
            vec![(b"boot/loop".to_vec(), Node::Symlink(b"loop".to_vec()))],
        ),
        13 => at(
            rng,
            tree,
            vec![
                (b"boot/vmlinuz-fifo".to_vec(), Node::Fifo),
                (b"boot/config-chr".to_vec(), Node::CharDev),
                (b"lib/modules/x/dir.ko".to_vec(), Node::Dir),
            ],
        ),
        // A header that declares far more than it holds (octal and base-256 sizes).
        14 => {
            if let Node::File(d) = &tree[module].1 {
                let size = *rng.pick(&[1 << 33, 1 << 40, u64::MAX >> 2, d.len() as u64 + 513]);
                tree[module].1 = Node::Lying(d.clone(), size);
            }
        }
        // A path deeper than PATH_MAX (4096) in a few hundred directories.
        15 => {
            let mut name = b"lib/modules/".to_vec();
            for _ in 0..(20 + rng.below(400)) {
                name.extend_from_slice(b"directory/");
            }
            name.extend_from_slice(b"deep.ko");
            at(rng, tree, vec![(name, Node::File(b"\x7fELF".to_vec()))]);
        }
        16 => {
            let mut name = vec![b'a'; 150];
            name.extend_from_slice(b"/../../evil");
            at(rng, tree, vec![(name, file(b"x"))]);
        }
        17 => at(
            rng,
            tree,
            vec![(
                b"boot/long".to_vec(),
                Node::Symlink([victim.as_slice(), &[b'/'; 120], b"x"].concat()),
            )],
        ),
        18 => {
            let n = 100 + rng.below(70_000);
            let name: Vec<u8> = (0..n).map(|i| b"abcdefgh/"[i % 9]).collect();
            at(rng, tree, vec![(name, Node::LongName(b"long".to_vec()))]);
        }
        19 => at(
            rng,
            tree,
            vec![
                (b"boot/\xff\xfe\x00name".to_vec(), file(b"x")),
                (b"".to_vec(), file(b"x")),
            ],
        ),
        20 => {
            for (_, n) in tree.iter_mut() {
                if let Node::File(d) = n {
                    if rng.chance(30) {
                        d.clear();
                    }
                }
            }
        }
        // A module that is a link to the image.
        21 => {
            let mut name = tree[module].0.clone();
            name.extend_from_slice(b".link.ko");
            at(
                rng,
                tree,
                vec![(
                    name,
                    Node::Symlink(b"../../../../boot/vmlinuz-mini".to_vec()),
                )],
            )
        }
        22 => at(
            rng,
            tree,
            vec![
                (b".".to_vec(), Node::Dir),
                (b"./".to_vec(), Node::Dir),
                (b"/".to_vec(), Node::Dir),
            ],
        ),
        _ => {
            // Two images, two configs, two module directories.
            let img = tree[image].1.clone();
            tree.push((b"boot/vmlinuz-other".to_vec(), img));
            tree.push((
                b"boot/config-other".to_vec(),
                file(b"CONFIG_DEBUG_INFO_BTF=y\n"),
            ));
            tree.push((
                b"lib/modules/9.9.9/kernel/x.ko".to_vec(),
                Node::File(vec![0x7f, b'E', b'L', b'F']),
            ));
        }
    }
    format!("structural {}", which % STRUCTURAL)
}

// ---------------------------------------------------------------------------------------------
// The sets.

fn set_btf() -> R {
    let t = tiny();
    let shape = btf_shape_at(&t.btf, 0, 4000);
    let mini_shape = btf_shape_at(&t.mini_btf, 0, 400);
    campaign(
        "btf::vmlinux",
        scaled(500),
        None,
        &|rng, _| {
            // The real blob (1.8 MB) and its subset (what the small packages carry).
            if rng.chance(60) {
                mutated(rng, &t.btf, &shape)
            } else {
                mutated(rng, &t.mini_btf, &mini_shape)
            }
        },
        btf_runner(),
    )
}

fn set_split_btf() -> R {
    let t = tiny();
    let (o, l) = elf::sections(&t.module).unwrap().btf.unwrap();
    let split = t.module[o..o + l].to_vec();
    let base = Arc::new(Btf::parse(&t.btf, None).unwrap().as_base());
    let shape = btf_shape_at(&split, 0, 100);
    campaign(
        "btf::module",
        scaled(800),
        None,
        &|rng, _| mutated(rng, &split, &shape),
        split_runner(base),
    )
}

fn set_elf_module() -> R {
    let t = tiny();
    let base = Arc::new(Btf::parse(&t.btf, None).unwrap().as_base());
    let shape = elf_shape(&t.module);
    campaign(
        "elf::module",
        scaled(1200),
        None,
        &|rng, _| mutated(rng, &t.module, &shape),
        elf_runner(Some(base)),
    )
}

fn set_elf_vmlinux() -> R {
    let t = tiny();
    let mut shape = elf_shape(&t.vmlinux);
    shape
        .hot
        .retain(|r| r.start < 4096 || r.start >= t.vmlinux.len() - (1 << 16));
    campaign(
        "elf::vmlinux",
        scaled(120),
        None,
        &|rng, _| mutated(rng, &t.vmlinux, &shape),
        elf_runner(None),
    )
}

fn set_bzimage() -> R {
    let t = tiny();
    let shape = bzimage_shape(&t.image);
    let mini = t.image_with(Codec::Gzip);
    let mini_shape = bzimage_shape(&mini);
    campaign(
        "bzimage",
        scaled(500),
        None,
        &|rng, _| {
            if rng.chance(50) {
                mutated(rng, &t.image, &shape)
            } else {
                mutated(rng, &mini, &mini_shape)
            }
        },
        bzimage_runner(),
    )
}

fn set_tiny_signed() -> R {
    let t = tiny();
    let real = std::fs::read(&t.apk)?;
    let members = gzip_members(&real);
    let mut shape = gzip_members_shape(&real, &members);
    // Member 0's gzip mtime/xfl/os bytes change nothing that is verified: such a case is the
    // whole package read and priced (1.6 s); leave them out.
    shape.hot.retain(|r| r.start != 0);
    shape.hot.push(10..members[0].end.min(real.len()));
    shape.hot.push(members.get(1).cloned().unwrap_or(0..0));
    shape.fields.retain(|f| f.at >= 10);
    campaign(
        "apk::tiny_signed",
        scaled(40),
        Some("apk"),
        &|rng, _| loop {
            let (mut b, what) = mutated(rng, &real, &shape);
            if b.len() > 10 {
                b[4..10].copy_from_slice(&real[4..10]);
            }
            if b != real {
                return (b, what);
            }
        },
        kernel_runner(t.opts.clone(), false),
    )
}

/// Base trees by payload codec and module storage; the xz one costs most (its BTF is priced
/// with xz -6) and is drawn less often.
fn pick_tree(rng: &mut Rng, t: &Tiny) -> Tree {
    let k = match rng.below(100) {
        0..=39 => 0,
        40..=69 => 1,
        70..=84 => 2,
        _ => 3,
    };
    t.trees[k].clone()
}

fn set_apk_mini() -> R {
    let t = tiny();
    campaign(
        "apk::mini",
        scaled(700),
        Some("apk"),
        &|rng, _| {
            let mut tree = pick_tree(rng, t);
            match rng.below(3) {
                0 => {
                    let apk = apk_of(&tar_of(&tree, true));
                    let shape = gzip_members_shape(&apk, &gzip_members(&apk));
                    let (b, what) = mutated(rng, &apk, &shape);
                    (b, format!("file: {what}"))
                }
                1 => {
                    let (tar, what) = mutate_tar(rng, &tar_of(&tree, true));
                    (apk_of(&tar), format!("data tar: {what}"))
                }
                _ => {
                    let what = mutate_member(rng, &mut tree, t);
                    (apk_of(&tar_of(&tree, true)), what)
                }
            }
        },
        kernel_runner(untrusted(), false),
    )
}

fn set_apk_structural() -> R {
    let t = tiny();
    campaign(
        "apk::structural",
        scaled(240),
        Some("apk"),
        &|rng, sandbox| {
            let mut tree = t.trees[1].clone();
            let which = rng.below(STRUCTURAL);
            let what = structural(rng, &mut tree, &sandbox.join("outside"), which);
            let mut tar = tar_of(&tree, true);
            let extra = if rng.chance(20) {
                let (m, w) = mutate_tar(rng, &tar);
                tar = m;
                format!(" + {w}")
            } else {
                String::new()
            };
            (apk_of(&tar), format!("{what}{extra}"))
        },
        kernel_runner(untrusted(), true),
    )
}

fn deb_codec(rng: &mut Rng) -> Codec {
    *rng.pick(&[Codec::Xz, Codec::Zstd, Codec::Gzip])
}

fn mini_control() -> (Vec<u8>, Vec<u8>) {
    (
        b"control.tar.gz".to_vec(),
        gz(&deb_control_tar(MINI_CONTROL)),
    )
}

/// A .deb case from `tree`: the file, the ar members, the control member, the data tar or a
/// member mutated.
fn deb_case(
    rng: &mut Rng,
    tree: &mut Tree,
    control: &(Vec<u8>, Vec<u8>),
    t: &Tiny,
) -> (Vec<u8>, String) {
    let codec = deb_codec(rng);
    match rng.below(4) {
        0 => {
            let deb = deb_of(control, &tar_of(&debian_paths(tree), false), codec);
            let shape = ar_shape(&deb);
            let (b, what) = mutated(rng, &deb, &shape);
            (b, format!("file ({}): {what}", codec.name()))
        }
        1 => {
            let (tar, what) = mutate_tar(rng, &tar_of(&debian_paths(tree), false));
            (
                deb_of(control, &tar, codec),
                format!("data tar ({}): {what}", codec.name()),
            )
        }
        2 => {
            // The control member: its tar or its compressed stream.
            let inner = Codec::detect(&control.1)
                .decompress(&control.1, 0, 1 << 24)
                .unwrap_or_default();
            let (member, what) = if rng.chance(50) {
                let (tar, what) = mutate_tar(rng, &inner);
                (
                    Codec::detect(&control.1)
                        .compress(&tar, true)
                        .unwrap_or_default(),
                    format!("control tar: {what}"),
                )
            } else {
                let (m, what) = mutated(rng, &control.1, &stream_shape(&control.1));
                (m, format!("control stream: {what}"))
            };
            let data = data_member(&tar_of(&debian_paths(tree), false), codec);
            let mut members: Vec<(Vec<u8>, Vec<u8>)> = vec![
                (b"debian-binary".to_vec(), b"2.0\n".to_vec()),
                (control.0.clone(), member),
                data,
            ];
            if rng.chance(30) {
                // Reordered, duplicated or missing ar members.
                match rng.below(4) {
                    0 => members.swap(1, 2),
                    1 => {
                        let m = members[rng.below(3)].clone();
                        members.push(m);
                    }
                    2 => {
                        members.remove(rng.below(3));
                    }
                    _ => members[0].1 = b"3.0\n".to_vec(),
                }
            }
            let refs: Vec<(&[u8], &[u8])> = members
                .iter()
                .map(|(a, b)| (a.as_slice(), b.as_slice()))
                .collect();
            (ar_of(&refs), what)
        }
        _ => {
            let what = mutate_member(rng, tree, t);
            (
                deb_of(control, &tar_of(&debian_paths(tree), false), codec),
                format!("{what} ({})", codec.name()),
            )
        }
    }
}

fn set_deb_mini() -> R {
    let t = tiny();
    let control = mini_control();
    campaign(
        "deb::mini",
        scaled(400),
        Some("deb"),
        &|rng, _| {
            let mut tree = pick_tree(rng, t);
            deb_case(rng, &mut tree, &control, t)
        },
        kernel_runner(ReadOptions::default(), false),
    )
}

fn set_deb_structural() -> R {
    let t = tiny();
    let control = mini_control();
    campaign(
        "deb::structural",
        scaled(200),
        Some("deb"),
        &|rng, sandbox| {
            let mut tree = t.trees[1].clone();
            let which = rng.below(STRUCTURAL);
            let what = structural(rng, &mut tree, &sandbox.join("outside"), which);
            let codec = deb_codec(rng);
            (
                deb_of(&control, &tar_of(&debian_paths(&tree), false), codec),
                format!("{what} ({})", codec.name()),
            )
        },
        kernel_runner(ReadOptions::default(), true),
    )
}

/// A .deb of real Debian parts (its control member, config and a module) around the mini image.
fn set_deb_debian() -> R {
    let t = tiny();
    let d = debian();
    let r = &d.release;
    let mut base = t.trees[0].clone();
    base.retain(|(p, _)| p.starts_with(b"boot/"));
    for (p, n) in base.iter_mut() {
        if p.starts_with(b"boot/config") {
            *n = Node::File(d.config.clone());
        }
    }
    base.extend([
        (format!("lib/modules/{r}/").into_bytes(), Node::Dir),
        (format!("lib/modules/{r}/kernel/").into_bytes(), Node::Dir),
        (
            format!("lib/modules/{r}/kernel/{}", d.module.0).into_bytes(),
            Node::File(d.module.1.clone()),
        ),
    ]);
    campaign(
        "deb::debian",
        scaled(200),
        Some("deb"),
        &|rng, _| {
            let mut tree = base.clone();
            deb_case(rng, &mut tree, &d.control, t)
        },
        kernel_runner(ReadOptions::default(), false),
    )
}

fn set_elf_debian_module() -> R {
    let d = debian();
    let shape = elf_shape(&d.module.1);
    campaign(
        "elf::debian_module",
        scaled(600),
        None,
        &|rng, _| mutated(rng, &d.module.1, &shape),
        elf_runner(None),
    )
}

/// A directory package: its files mutated, or links added; read in place and extracted.
fn set_dir_mini() -> R {
    let t = tiny();
    let runner = kernel_runner(ReadOptions::default(), true);
    let make = |rng: &mut Rng, sandbox: &Path| {
        let mut tree = pick_tree(rng, t);
        let what = if rng.chance(70) {
            mutate_member(rng, &mut tree, t)
        } else {
            let out = sandbox.join("outside");
            let (name, node) = match rng.below(4) {
                0 => ("boot/up", Node::Symlink(b"../../evil".to_vec())),
                1 => (
                    "boot/out",
                    Node::Symlink(out.as_os_str().as_encoded_bytes().to_vec()),
                ),
                2 => ("lib/modules/x.ko", Node::Dir),
                _ => ("boot/vmlinuz-link", Node::Symlink(b"vmlinuz-mini".to_vec())),
            };
            tree.push((name.as_bytes().to_vec(), node));
            format!("link {name}")
        };
        (tar_of(&tree, false), what)
    };
    // The case file is the tree as a tar; the runner lays it out as a directory and reads that.
    let dir_runner: Arc<Runner> = Arc::new(move |case: &Case| {
        let root = case.sandbox.join("pkg");
        let mut a = tar::Archive::new(&case.bytes[..]);
        a.set_preserve_permissions(false);
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let p = root.join(e.path().unwrap());
            match e.header().entry_type() {
                tar::EntryType::Directory => std::fs::create_dir_all(&p).unwrap(),
                tar::EntryType::Symlink => {
                    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                    std::os::unix::fs::symlink(e.link_name().unwrap().unwrap(), &p).unwrap();
                }
                _ => {
                    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                    let mut data = Vec::new();
                    e.read_to_end(&mut data).unwrap();
                    std::fs::write(&p, data).unwrap();
                }
            }
        }
        let dir_case = Case {
            path: root.clone(),
            sandbox: case.sandbox.clone(),
            bytes: Vec::new(),
        };
        // Errors name the directory, which lies in the case's sandbox.
        runner(&dir_case)
    });
    campaign("dir::mini", scaled(250), Some("tar"), &make, dir_runner)
}

fn alpine_keys() -> ReadOptions {
    ReadOptions {
        keys_dir: alpine_dir().unwrap().join("keys"),
        allow_untrusted: false,
    }
}

const ALPINE_APK: &str = "alpine-v3.16-aarch64-alpine-baselayout-3.2.0-r23.apk";

/// The real signed Alpine package, mutated and read with its keys.
fn set_alpine_apk() -> R {
    let real = std::fs::read(alpine_dir().unwrap().join("fixtures").join(ALPINE_APK))?;
    let shape = gzip_members_shape(&real, &gzip_members(&real));
    campaign(
        "alpine::apk",
        scaled(300),
        Some("apk"),
        &|rng, _| mutated(rng, &real, &shape),
        kernel_runner(alpine_keys(), false),
    )
}

/// Its data tar mutated, the package re-assembled unsigned (untrusted allowed) and extracted.
fn set_alpine_apk_data() -> R {
    let real = std::fs::read(alpine_dir().unwrap().join("fixtures").join(ALPINE_APK))?;
    let members = gzip_members(&real);
    let data_tar = gunzip(&real[members[members.len() - 1].clone()]);
    campaign(
        "alpine::apk_data",
        scaled(300),
        Some("apk"),
        &|rng, _| {
            let (tar, w) = mutate_tar(rng, &data_tar);
            (apk_of(&tar), w)
        },
        kernel_runner(untrusted(), true),
    )
}

const ALPINE_INDEXES: [&str; 2] = [
    "APKINDEX-v3.16-main-x86_64.tar.gz",
    "APKINDEX-v3.17-main-aarch64.tar.gz",
];

fn alpine_indexes() -> Vec<Vec<u8>> {
    let dir = alpine_dir().unwrap().join("fixtures");
    ALPINE_INDEXES
        .iter()
        .map(|f| std::fs::read(dir.join(f)).unwrap())
        .collect()
}

/// The real signed indexes, mutated and read with their keys.
fn set_alpine_index() -> R {
    let reals = alpine_indexes();
    let shapes: Vec<Shape> = reals
        .iter()
        .map(|r| gzip_members_shape(r, &gzip_members(r)))
        .collect();
    campaign(
        "alpine::index",
        scaled(150),
        Some("tar.gz"),
        &|rng, _| {
            let k = rng.below(reals.len());
            mutated(rng, &reals[k], &shapes[k])
        },
        index_runner(alpine_keys()),
    )
}

/// Their index tar (headers or `APKINDEX` text) mutated and re-gzipped unsigned.
fn set_alpine_index_data() -> R {
    let inner: Vec<Vec<u8>> = alpine_indexes()
        .iter()
        .map(|r| {
            let m = gzip_members(r);
            gunzip(&r[m[m.len() - 1].clone()])
        })
        .collect();
    campaign(
        "alpine::index_data",
        scaled(100),
        Some("tar.gz"),
        &|rng, _| {
            let t = &inner[rng.below(inner.len())];
            let (tar, w) = if rng.chance(50) {
                mutate_tar(rng, t)
            } else {
                let mut shape = Shape::default();
                shape.hot(512.min(t.len())..t.len());
                let (mut m, w) = mutated(rng, t, &shape);
                fix_tar_checksums(&mut m);
                (m, w)
            };
            (gz(&tar), w)
        },
        index_runner(untrusted()),
    )
}

// ---------------------------------------------------------------------------------------------
// The corpus: inputs that found bugs, replayed with their expected outcome.

/// Where a regression input comes from.
enum Source {
    /// Bytes kept in `harness/tests/corpus/`.
    File(&'static str),
    /// Made at run time: its links point into the case's sandbox (given), a path of the run.
    Gen(fn(&Path) -> Vec<u8>),
}

/// An input that found a bug, how it is read, and what must come of it: `accepted`, or the
/// phase of the error (which must name the input file and that phase).
struct Regression {
    name: &'static str,
    source: Source,
    ext: &'static str,
    reader: &'static str,
    expect: &'static str,
}

const CORPUS: &[Regression] = &[
    // A module whose .modinfo section header says offset 2^64 - 16: `offset + size` wrapped in
    // kernel::elf::modinfo ("attempt to add with overflow", a panic in the package reader).
    // Found by elf::module; this is a minimal ELF with that header (`modinfo_wraps`).
    Regression {
        name: "modinfo_offset_wraps",
        source: Source::File("modinfo-offset-wraps.ko"),
        ext: "ko",
        reader: "elf",
        expect: "accepted",
    },
    Regression {
        name: "modinfo_offset_wraps_in_a_package",
        source: Source::Gen(gen_modinfo_package),
        ext: "apk",
        reader: "kernel-untrusted",
        expect: "accepted",
    },
    // Extraction wrote through links it had extracted (found by apk::structural and
    // deb::structural): an absolute link (legal: it resolves inside the root once installed)
    // then a file under it; a link where a file is then written; a link replacing the modules
    // directory; a hard link through a linked directory to a file outside.
    Regression {
        name: "extract_file_under_absolute_link",
        source: Source::Gen(gen_file_under_link),
        ext: "apk",
        reader: "extract-untrusted",
        expect: "extract package",
    },
    Regression {
        name: "extract_file_over_link",
        source: Source::Gen(gen_file_over_link),
        ext: "apk",
        reader: "extract-untrusted",
        expect: "accepted",
    },
    Regression {
        name: "extract_linked_module_dir",
        source: Source::Gen(gen_linked_module_dir),
        ext: "deb",
        reader: "extract",
        expect: "extract package",
    },
    Regression {
        name: "extract_hardlink_through_link",
        source: Source::Gen(gen_hardlink_through_link),
        ext: "deb",
        reader: "extract",
        expect: "extract package",
    },
    // 80 `.ko.zst` modules, each with a small .BTF: pricing each with a streaming zstd -19
    // encoder that did not know the input's size set up level 19's full tables (~80 MB, 0.1 s)
    // per module (found by apk::mini: its zstd package was the slowest case by 100x). Each
    // case must end within the deadline.
    Regression {
        name: "zstd_modules_priced_quickly",
        source: Source::Gen(gen_zstd_modules),
        ext: "apk",
        reader: "kernel-untrusted",
        expect: "accepted",
    },
    // A `.modinfo` dependency chain of 6,000 modules: `guest::load_order` recursed once per
    // module (a stack overflow, which aborts the process, past ~20,000 on a 2 MiB thread
    // stack) and scanned the whole package per dependency (6,000 modules: seconds). Found
    // when the campaign's runner took every module of a package as wanted. The trial also
    // pins what the order is (dependencies first, soft dependencies optional, aliases
    // preferring `<alias>_generic`, cycles, a missing dependency named).
    Regression {
        name: "module_dependency_chain",
        source: Source::Gen(gen_module_chain),
        ext: "apk",
        reader: "module-order",
        expect: "accepted",
    },
];

/// Modules in the chain of `module_dependency_chain`.
const CHAIN: usize = 6000;

fn gen_module_chain(_: &Path) -> Vec<u8> {
    let module = |name: &str, info: &str| {
        (
            format!("lib/modules/1.0/kernel/{name}.ko").into_bytes(),
            Node::File(small_module(info.as_bytes(), None)),
        )
    };
    let mut tree: Vec<TreeEntry> = (0..CHAIN)
        .map(|i| {
            let next = if i + 1 < CHAIN {
                format!("m{}", i + 1)
            } else {
                String::new()
            };
            module(&format!("m{i}"), &format!("depends={next}\0"))
        })
        .collect();
    tree.extend([
        module("crc32c-intel", "alias=crc32c\0depends=\0"),
        module("crc32c_generic", "alias=crc32c\0depends=\0"),
        module("user", "softdep=pre: absent crc32c\0depends=m5998\0"),
        module("a", "depends=b\0"),
        module("b", "depends=a\0"),
        module("lonely", "depends=ghost\0"),
        not_an_image(),
    ]);
    apk_of(&tar_of(&tree, true))
}

/// `guest::load_order` on [`gen_module_chain`]'s package: what each order is.
fn module_order_runner() -> Arc<Runner> {
    Arc::new(|case: &Case| {
        let k = match Kernel::load(&case.path, &untrusted()) {
            Ok(k) => k,
            Err(e) => return Outcome::Refused(e),
        };
        let order = |w: &[&str]| {
            let w: Vec<String> = w.iter().map(|s| s.to_string()).collect();
            harness::guest::load_order(&k, &w)
                .map(|o| o.iter().map(|m| m.name()).collect::<Vec<_>>().join(" "))
        };
        let want: [(&[&str], Result<&str, &str>); 5] = [
            (&["m0"], Err("nest deeper than")),
            (&["user"], Ok("crc32c_generic m5999 m5998 user")),
            (&["a"], Ok("b a")),
            (
                &["lonely"],
                Err("module ghost (needed by lonely) is not in the package"),
            ),
            (&["m5997", "b"], Ok("m5999 m5998 m5997 a b")),
        ];
        for (w, expected) in want {
            let got = order(w);
            let ok = match (&got, expected) {
                (Ok(o), Ok(e)) => o == e,
                (Err(o), Err(e)) => o.to_string().contains(e),
                _ => false,
            };
            if !ok {
                let got: String = format!("{got:?}").chars().take(160).collect();
                return Outcome::Violation(format!(
                    "load_order({w:?}) = {got}, expected {expected:?}"
                ));
            }
        }
        Outcome::Accepted(format!("{} modules ordered", k.modules.len()))
    })
}

/// A minimal module ELF (`.modinfo` as given and a small split `.BTF`), `.modinfo`'s offset
/// overwritten when given.
fn small_module(modinfo: &[u8], modinfo_offset: Option<u64>) -> Vec<u8> {
    let btf = {
        // One INT named by the split string section, type id 1 (past an empty base).
        let strings = b"\0campaign_int\0";
        let mut t = 1u32.to_le_bytes().to_vec();
        t.extend_from_slice(&(1u32 << 24).to_le_bytes());
        t.extend_from_slice(&4u32.to_le_bytes());
        t.extend_from_slice(&32u32.to_le_bytes());
        let mut b = vec![0x9f, 0xeb, 1, 0];
        for v in [24, 0, t.len(), t.len(), strings.len()] {
            b.extend_from_slice(&(v as u32).to_le_bytes());
        }
        b.extend_from_slice(&t);
        b.extend_from_slice(strings);
        b
    };
    let mut elf = mini_elf(1, &[(".modinfo", 1, modinfo), (".BTF", 1, &btf)]);
    if let Some(off) = modinfo_offset {
        let shoff = u64le(&elf, 40) as usize;
        elf[shoff + 64 + 24..shoff + 64 + 32].copy_from_slice(&off.to_le_bytes());
    }
    elf
}

/// What `modinfo-offset-wraps.ko` holds.
fn modinfo_wraps() -> Vec<u8> {
    small_module(
        b"license=GPL\0depends=\0name=campaign\0",
        Some(u64::MAX - 15),
    )
}

/// A kernel image entry that is not a bzImage: modules alone are not a kernel (a set without
/// its image is refused before any module is judged), so the module cases carry one.
fn not_an_image() -> TreeEntry {
    (
        b"boot/vmlinuz-1.0".to_vec(),
        Node::File(vec![0u8; 64 << 10]),
    )
}

fn gen_modinfo_package(_: &Path) -> Vec<u8> {
    apk_of(&tar_of(
        &[
            not_an_image(),
            (
                b"lib/modules/1.0/kernel/wraps.ko".to_vec(),
                Node::File(modinfo_wraps()),
            ),
        ],
        true,
    ))
}

fn outside_of(sandbox: &Path) -> Vec<u8> {
    sandbox
        .join("outside")
        .as_os_str()
        .as_encoded_bytes()
        .to_vec()
}

fn gen_file_under_link(sandbox: &Path) -> Vec<u8> {
    apk_of(&tar_of(
        &[
            (b"boot/out".to_vec(), Node::Symlink(outside_of(sandbox))),
            (b"boot/out/evil".to_vec(), Node::File(b"x".to_vec())),
        ],
        true,
    ))
}

fn gen_file_over_link(sandbox: &Path) -> Vec<u8> {
    let victim = [outside_of(sandbox).as_slice(), b"/victim"].concat();
    apk_of(&tar_of(
        &[
            (b"boot/vmlinuz-x".to_vec(), Node::Symlink(victim)),
            (
                b"boot/vmlinuz-x".to_vec(),
                Node::File(b"not an image".to_vec()),
            ),
        ],
        true,
    ))
}

fn gen_linked_module_dir(sandbox: &Path) -> Vec<u8> {
    let tree = [
        (
            b"lib/modules/1.0/kernel".to_vec(),
            Node::Symlink(outside_of(sandbox)),
        ),
        (
            b"lib/modules/1.0/kernel/m.ko".to_vec(),
            Node::File(small_module(b"license=GPL\0", None)),
        ),
    ];
    deb_of(
        &mini_control(),
        &tar_of(&debian_paths(&tree), false),
        Codec::Gzip,
    )
}

fn gen_hardlink_through_link(sandbox: &Path) -> Vec<u8> {
    let tree = [
        (b"boot/d".to_vec(), Node::Symlink(outside_of(sandbox))),
        (
            b"boot/e".to_vec(),
            Node::Hardlink(b"boot/d/victim".to_vec()),
        ),
    ];
    deb_of(
        &mini_control(),
        &tar_of(&debian_paths(&tree), false),
        Codec::Gzip,
    )
}

fn gen_zstd_modules(_: &Path) -> Vec<u8> {
    let m = Codec::Zstd
        .compress(&small_module(b"license=GPL\0", None), true)
        .unwrap();
    let mut tree: Vec<TreeEntry> = (0..80)
        .map(|i| {
            (
                format!("lib/modules/1.0/kernel/m{i}.ko.zst").into_bytes(),
                Node::File(m.clone()),
            )
        })
        .collect();
    tree.push(not_an_image());
    apk_of(&tar_of(&tree, true))
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

fn replay(r: &Regression) -> R {
    let dir = tempfile::tempdir_in(scratch_dir())?;
    let path = dir.path().join(format!("case-0.{}", r.ext));
    let sandbox = dir.path().join("case-0.sandbox");
    let bytes = match &r.source {
        Source::File(f) => std::fs::read(corpus_dir().join(f))?,
        Source::Gen(g) => g(&sandbox),
    };
    std::fs::write(&path, &bytes)?;
    let case = Arc::new(Case {
        path,
        sandbox,
        bytes,
    });
    let runner = match r.reader {
        "kernel-untrusted" => kernel_runner(untrusted(), false),
        "extract" => kernel_runner(ReadOptions::default(), true),
        "extract-untrusted" => kernel_runner(untrusted(), true),
        "elf" => elf_runner(None),
        "module-order" => module_order_runner(),
        other => return Err(format!("unknown corpus reader {other}").into()),
    };
    let name = r.name;
    match (run_case(name, &case, &runner), r.expect) {
        (Judged::Accepted(_), "accepted") => Ok(()),
        (Judged::Refused(e) | Judged::Rejected(e), phase) if e.starts_with(phase) => Ok(()),
        (j, want) => Err(format!("{name}: expected {want}, got {}", describe(&j)).into()),
    }
}

fn describe(j: &Judged) -> String {
    match j {
        Judged::Accepted(s) => format!("accepted ({s})"),
        Judged::Refused(e) => format!("refused: {e}"),
        Judged::Rejected(e) => format!("rejected: {e}"),
        Judged::Crash(c) => format!("a crash: {c}"),
        Judged::Hang => format!("a hang (no answer within {DEADLINE:?})"),
        Judged::Violation(v) => format!("a violation: {v}"),
    }
}

/// The stored corpus file is what its generator makes (so it can be remade and explained;
/// `BTFGATE_CAMPAIGN_WRITE_CORPUS=1` writes it).
fn corpus_files_are_what_they_say() -> R {
    let file = corpus_dir().join("modinfo-offset-wraps.ko");
    if std::env::var_os("BTFGATE_CAMPAIGN_WRITE_CORPUS").is_some() {
        std::fs::write(&file, modinfo_wraps())?;
    }
    let stored = std::fs::read(&file)?;
    ensure!(
        stored == modinfo_wraps(),
        "modinfo-offset-wraps.ko differs from modinfo_wraps()"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------

fn peak_rss_mb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024)
}

fn main() {
    let args = Arguments::from_args();
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::Relaxed);
        default_hook(info);
    }));
    let tiny_need = tiny_target().map(|_| ());
    let debian_need = host_kernel(Flavor::Cloud)
        .map(|_| ())
        .map_err(|e| e.to_string())
        .and(tiny_need.clone());
    let alpine_need = alpine_dir().map(|_| ());
    /// A set's trial name, body and what it needs from this machine.
    type Set<'a> = (&'static str, fn() -> R, &'a Result<(), String>);
    let sets: Vec<Set> = vec![
        ("campaign::btf::vmlinux", set_btf, &tiny_need),
        ("campaign::btf::module", set_split_btf, &tiny_need),
        ("campaign::elf::module", set_elf_module, &tiny_need),
        ("campaign::elf::vmlinux", set_elf_vmlinux, &tiny_need),
        (
            "campaign::elf::debian_module",
            set_elf_debian_module,
            &debian_need,
        ),
        ("campaign::bzimage", set_bzimage, &tiny_need),
        ("campaign::apk::tiny_signed", set_tiny_signed, &tiny_need),
        ("campaign::apk::mini", set_apk_mini, &tiny_need),
        ("campaign::apk::structural", set_apk_structural, &tiny_need),
        ("campaign::deb::mini", set_deb_mini, &tiny_need),
        ("campaign::deb::structural", set_deb_structural, &tiny_need),
        ("campaign::deb::debian", set_deb_debian, &debian_need),
        ("campaign::dir::mini", set_dir_mini, &tiny_need),
        ("campaign::alpine::apk", set_alpine_apk, &alpine_need),
        (
            "campaign::alpine::apk_data",
            set_alpine_apk_data,
            &alpine_need,
        ),
        ("campaign::alpine::index", set_alpine_index, &alpine_need),
        (
            "campaign::alpine::index_data",
            set_alpine_index_data,
            &alpine_need,
        ),
    ];
    let mut trials: Vec<Trial> = sets
        .into_iter()
        .map(|(name, f, need)| needs(Trial::test(name, f), need))
        .collect();
    for r in CORPUS {
        trials.push(Trial::test(
            format!("campaign::corpus::{}", r.name),
            move || replay(r),
        ));
    }
    trials.push(Trial::test(
        "campaign::corpus::files_are_what_they_say",
        corpus_files_are_what_they_say,
    ));
    let started = Instant::now();
    let listing = args.list;
    let conclusion = libtest_mimic::run(&args, trials);
    let totals = TOTALS.lock().unwrap();
    if !listing && !totals.is_empty() {
        let cases: usize = totals.values().map(|t| t.cases).sum();
        let errors: BTreeSet<&String> = totals.values().flat_map(|t| t.errors.iter()).collect();
        let crashes: usize = totals.values().map(|t| t.crashes).sum();
        let hangs: usize = totals.values().map(|t| t.hangs).sum();
        let violations: usize = totals.values().map(|t| t.violations).sum();
        let rss = peak_rss_mb().unwrap_or(0);
        println!(
            "campaign: {cases} cases in {} sets, {:.1}s, seed {:#x}: {} distinct errors, {crashes} crashes, {hangs} hangs, {violations} violations, {} panics seen; peak RSS {rss} MB (bound {MAX_RSS_MB} MB)",
            totals.len(),
            started.elapsed().as_secs_f64(),
            seed(),
            errors.len(),
            PANICS.load(Ordering::Relaxed),
        );
        if rss >= MAX_RSS_MB {
            eprintln!("campaign: peak RSS {rss} MB is over the {MAX_RSS_MB} MB bound");
            std::process::exit(101);
        }
        if PANICS.load(Ordering::Relaxed) > 0 && crashes == 0 {
            eprintln!("campaign: a panic was caught inside the library (see above)");
            std::process::exit(101);
        }
    }
    drop(totals);
    conclusion.exit();
}
