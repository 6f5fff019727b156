//! [`Kernel::load`]: the package read once by a [`Collector`] on this thread while a worker
//! thread decompresses the kernel image's vmlinux, validates its `.BTF` and checks each
//! module's split `.BTF` against it as it arrives.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

use super::btf::{Base, BaseFit, Btf};
use super::collect::Collector;
use super::elf::{self, SectionsError};
use super::queue::{Job, QueuedBtf};
use super::{bzimage, share, Image, Kernel, Member, Module, PayloadInfo, VmlinuxBtf};
use crate::codec::{Codec, Decompress};
use crate::limits::{self, Exceeded};
use crate::package::{self, Part, ReadOptions};
use crate::spool::Spooled;
use crate::{Error, Result};

/// The phase of what the model keeps about the kernel image (payload, vmlinux `.BTF`).
const ANALYSE_IMAGE: &str = "analyse kernel image";
/// The phase of a module's base fit.
const CHECK_MODULE_BTF: &str = "check module .BTF against vmlinux";

impl Kernel {
    /// Reads the package at `path` and builds the kernel model.
    pub fn load(path: &Path, opts: &ReadOptions) -> Result<Kernel> {
        Kernel::load_set(&[Part {
            path: path.to_path_buf(),
            read: opts.clone(),
        }])
    }

    /// Reads the packages of one kernel, one after another, each once, into one model: a
    /// kernel split over packages (Debian's `linux-binary-<rel>` image, `linux-modules-<rel>`
    /// modules and `linux-base-<rel>` config) is checked as the kernel it is. Bad input: a set
    /// with two images or two configs, packages holding different releases, or modules with no
    /// kernel image anywhere in the set (the message names what is missing).
    pub fn load_set(parts: &[Part]) -> Result<Kernel> {
        let first = parts.first().ok_or_else(|| {
            Error::failed(
                "read kernel packages",
                "no package was named for the kernel",
            )
        })?;
        let formats = parts
            .iter()
            .map(|p| package::detect(&p.path))
            .collect::<Result<Vec<_>>>()?;
        std::thread::scope(|s| {
            let (tx, rx) = mpsc::channel::<Job>();
            let queued = Arc::new(AtomicU64::new(0));
            let stop = Arc::new(AtomicBool::new(false));
            let (q, st) = (queued.clone(), stop.clone());
            let worker = s.spawn(move || worker(rx, &q, &st));
            let mut c = Collector::new(&first.path, tx, queued, stop);
            let mut packages = Vec::with_capacity(parts.len());
            let mut read_err = None;
            for (i, (part, format)) in parts.iter().zip(formats).enumerate() {
                if i > 0 {
                    c.next_member(&part.path);
                }
                match package::read(&part.path, &part.read, &mut c) {
                    Ok(meta) => packages.push(Member {
                        source: part.path.clone(),
                        read: part.read.clone(),
                        format,
                        container: c.packed_end.and(meta.data_codec),
                        meta,
                        module_dirs: std::mem::take(&mut c.member_dirs),
                    }),
                    Err(e) => {
                        read_err = Some(e);
                        break;
                    }
                }
            }
            let Collector {
                tx,
                release_dirs,
                config,
                image,
                mut modules,
                ..
            } = c;
            drop(tx);
            let results = worker.join().map_err(|_| {
                Error::bad(&first.path, "analyse kernel", "analysis worker panicked")
            })?;
            // A limit the worker met stopped the reading: that is the error to report.
            if let Some((phase, msg)) = results.refused {
                let file = image
                    .as_ref()
                    .map_or(&first.path, |i| &parts[i.package].path);
                return Err(Error::bad(file, phase, msg));
            }
            if let Some(e) = read_err {
                return Err(e);
            }
            let mut image = image;
            if let Some(img) = image.as_mut() {
                img.payload = results
                    .payload
                    .unwrap_or_else(|| Err(Error::failed(ANALYSE_IMAGE, "image was not analysed")));
                img.btf = results
                    .vmlinux
                    .unwrap_or_else(|| Err(Error::failed(ANALYSE_IMAGE, "image was not analysed")));
            }
            for (idx, fit, cost) in results.modules {
                let m = &mut modules[idx];
                m.base_fit = Some(fit);
                if let Some(cost) = cost {
                    m.btf_cost = cost;
                }
            }
            for m in &mut modules {
                if m.codec == Codec::None {
                    let btf = m.btf_len.unwrap_or(0);
                    m.btf_cost = match (packages[m.package].container, m.packed_span) {
                        // Solid container: the module's compressed footprint, shared out by bytes.
                        (Some(c), Some(span)) if c != Codec::None && m.elf_size > 0 => {
                            (span as u128 * btf as u128 / m.elf_size as u128) as u64
                        }
                        _ => btf,
                    };
                }
            }
            one_kernel(&packages, image.as_ref(), &modules)?;
            let release = pick_release(&release_dirs, image.as_ref());
            Ok(Kernel {
                packages,
                release,
                module_dirs: release_dirs,
                config,
                image,
                modules,
            })
        })
    }
}

/// Refuses a set whose packages are not one kernel: packages holding different releases, or
/// modules with no kernel image in the set (the modules alone cannot be checked: their split
/// BTF needs the vmlinux it was built against).
fn one_kernel(packages: &[Member], image: Option<&Image>, modules: &[Module]) -> Result<()> {
    let mut holding = packages.iter().filter(|p| !p.module_dirs.is_empty());
    if let Some(a) = holding.next() {
        if let Some(b) = holding.find(|b| b.module_dirs != a.module_dirs) {
            let dirs = |m: &Member| m.module_dirs.iter().cloned().collect::<Vec<_>>().join(", ");
            return Err(Error::bad(
                &b.source,
                "assemble the kernel from its packages",
                format!(
                    "holds lib/modules/{{{}}} but {} holds lib/modules/{{{}}}: the packages of one kernel share its release",
                    dirs(b),
                    a.source.display(),
                    dirs(a)
                ),
            ));
        }
    }
    if image.is_some() || modules.is_empty() {
        return Ok(());
    }
    let release = packages
        .iter()
        .flat_map(|p| p.module_dirs.iter())
        .next()
        .cloned()
        .unwrap_or_else(|| "<release>".to_string());
    let named: Vec<String> = packages
        .iter()
        .map(|p| p.source.display().to_string())
        .collect();
    let first = &packages[modules[0].package];
    Err(Error::bad(
        &first.source,
        "assemble the kernel from its packages",
        format!(
            "{} modules for release {release} but no kernel image (boot/vmlinuz*, boot/bzImage* \
             or (usr/)lib/modules/{release}/vmlinuz) in {}: this is part of a kernel split over \
             packages; name the whole set, the package with the image too (Debian: \
             linux-binary-{release}, linux-modules-{release} and linux-base-{release}, or \
             apt:linux-image-{release}), separated by commas",
            modules.len(),
            named.join(", ")
        ),
    ))
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

#[derive(Default)]
struct WorkerResults {
    payload: Option<Result<PayloadInfo>>,
    vmlinux: Option<Result<VmlinuxBtf>>,
    /// (module index, base fit, the `.BTF` compressed alone when the reader could not price it)
    modules: Vec<(usize, Result<BaseFit>, Option<u64>)>,
    /// A limit the kernel image's analysis met: (phase, message). The package is bad input.
    refused: Option<(&'static str, String)>,
}

fn worker(rx: mpsc::Receiver<Job>, queued: &AtomicU64, stop: &AtomicBool) -> WorkerResults {
    let mut out = WorkerResults::default();
    let mut pending: Vec<(usize, QueuedBtf, Option<Codec>)> = Vec::new();
    let mut base: Option<Result<Base>> = None;
    let analyse = |out: &mut WorkerResults,
                   idx,
                   btf: QueuedBtf,
                   price: Option<Codec>,
                   base: Option<&Result<Base>>| {
        let (fit, cost) = match btf.bytes() {
            Ok(bytes) => (
                module_fit(&bytes, base),
                price.and_then(|c| c.compressed_len(&bytes).ok()),
            ),
            Err(e) => (Err(e), None),
        };
        queued.fetch_sub(btf.held(), Ordering::Relaxed);
        out.modules.push((idx, fit, cost));
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
                for (idx, b, price) in std::mem::take(&mut pending) {
                    analyse(&mut out, idx, b, price, base.as_ref());
                }
            }
            Job::Module { idx, btf, price } => {
                if base.is_some() {
                    analyse(&mut out, idx, btf, price, base.as_ref());
                } else {
                    pending.push((idx, btf, price));
                }
            }
        }
    }
    for (idx, b, price) in pending {
        analyse(&mut out, idx, b, price, None);
    }
    out
}

type ImageAnalysis = (Result<PayloadInfo>, Result<VmlinuxBtf>, Result<Base>);

/// Decompresses the image's payload to a temporary file and reads the vmlinux `.BTF` from it;
/// `Err((phase, message))` when a limit was met (bad input).
fn analyse_image(image: Spooled) -> std::result::Result<ImageAnalysis, (&'static str, String)> {
    let (payload, vmlinux, map) = match bzimage::spool_vmlinux(&image) {
        Ok(v) => v,
        Err(Decompress::Exceeded(x)) => {
            return Err(("decompress kernel image payload", x.to_string()))
        }
        Err(Decompress::Failed(e)) => {
            let no = Error::failed(ANALYSE_IMAGE, format!("no vmlinux: {e}"));
            let no_base = Error::failed(CHECK_MODULE_BTF, format!("no vmlinux: {e}"));
            return Ok((Err(Error::failed(ANALYSE_IMAGE, e)), Err(no), Err(no_base)));
        }
    };
    drop(image);
    let info = PayloadInfo {
        codec: payload.codec,
        compressed: payload.compressed_len() as u64,
        vmlinux: vmlinux.len(),
    };
    // Why the vmlinux `.BTF` is missing: for the image, and for every module's base fit.
    let no_btf = |e: String| {
        Ok((
            Ok(info.clone()),
            Err(Error::failed(ANALYSE_IMAGE, e.clone())),
            Err(Error::failed(
                CHECK_MODULE_BTF,
                format!("no valid vmlinux .BTF to check against ({e})"),
            )),
        ))
    };
    let sections = match elf::spooled_sections(&vmlinux) {
        Ok(s) => s,
        Err(SectionsError::Exceeded(x)) => return Err(("read vmlinux", format!("vmlinux: {x}"))),
        Err(SectionsError::Invalid(e)) => return no_btf(format!("vmlinux: {e}")),
    };
    let Some((off, len)) = sections.btf else {
        return no_btf(format!("vmlinux: {}", elf::no_btf_reason(&sections)));
    };
    if len as u64 > limits::VMLINUX_BTF.max {
        let x = Exceeded::new(limits::VMLINUX_BTF, format!("vmlinux: a {len}-byte .BTF"));
        return Err(("read vmlinux", x.to_string()));
    }
    let bytes = match vmlinux.read_at(off as u64, len as u64) {
        Ok(b) => b,
        Err(e) => return no_btf(format!("vmlinux: read .BTF: {e}")),
    };
    drop(vmlinux);
    let parsed = match Btf::parse(&bytes, None) {
        Ok(p) => p,
        Err(e) => return no_btf(format!("vmlinux .BTF is invalid: {e}")),
    };
    let (ntypes, type_len, str_len) =
        (parsed.ntypes, parsed.header.type_len, parsed.header.str_len);
    let kinds = parsed.kind_summary();
    let has_task_struct = parsed.has_struct("task_struct");
    let base = parsed.as_base();
    drop(parsed);
    // What the `.BTF` takes of the payload as it is compressed; lz4's blocks are too coarse
    // for that, so its `.BTF` is compressed again at the kernel's settings (`kernel::share`).
    let cost = if share::precise_for_image(payload.codec) {
        Ok(map.span(off as u64, (off + len) as u64))
    } else {
        payload
            .codec
            .compressed_len(&bytes)
            .map_err(|e| Error::failed("price vmlinux .BTF", e.message()))
    };
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

/// How a module's split `.BTF` fits the vmlinux `.BTF` (`base`).
fn module_fit(btf: &[u8], base: Option<&Result<Base>>) -> Result<BaseFit> {
    match base {
        None => Err(Error::failed(
            CHECK_MODULE_BTF,
            "the package has no kernel image to check against",
        )),
        Some(Err(e)) => Err(e.clone()),
        Some(Ok(base)) => Btf::parse(btf, Some(base.ntypes))
            .map(|m| m.check_against_base(base))
            .map_err(|e| Error::failed(CHECK_MODULE_BTF, format!("module .BTF is invalid: {e}"))),
    }
}
