//! The runtime half: prepare the guest (kernel to boot, image with the package's own modules),
//! choose the accelerator, boot QEMU, and run the guest checks, every phase timed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::checks::guest as gc;
use crate::checks::Check;
use crate::codec::Codec;
use crate::image::initramfs::{Node, Source};
use crate::image::{self, Recipe};
use crate::kernel::{bzimage, Kernel, Module};
use crate::package::{extract::extract, ReadOptions};
use crate::qemu::accel::{self, Choice};
use crate::qemu::args::{default_cpus, Accel, Boot, Spec};
use crate::qemu::machine::{Deadlines, Machine, RunError};

/// The kfunc probe in a loaded module that guest.bpftrace attaches (default: overlay's
/// `ovl_fill_super`, run by mounting an overlay).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleProbe {
    pub module: String,
    pub function: String,
    /// A guest shell line that makes the function run.
    pub workload: String,
}

impl Default for ModuleProbe {
    fn default() -> Self {
        ModuleProbe {
            module: "overlay".into(),
            function: "ovl_fill_super".into(),
            workload: "mkdir -p /tmp/ol/l /tmp/ol/u /tmp/ol/w /tmp/ol/m; mount -t overlay ov -o lowerdir=/tmp/ol/l,upperdir=/tmp/ol/u,workdir=/tmp/ol/w /tmp/ol/m 2>/dev/null && umount /tmp/ol/m".into(),
        }
    }
}

/// What a runtime verification is asked to do.
#[derive(Debug, Clone)]
pub struct Params {
    /// Modules to load and check (`None`: the recipe's list).
    pub modules: Option<Vec<String>>,
    /// Force an accelerator (`None`: probe KVM, fall back to TCG).
    pub accel: Option<Accel>,
    /// Mount an empty tmpfs over /sys/kernel/btf before the checks (a control: libbpf and
    /// bpftool read sysfs, bpftrace does not).
    pub hide_sysfs_btf: bool,
    /// Make kernel headers reachable in the guest before the checks (a control: guest.bpftrace
    /// must then refuse to call its result proof that BTF was used).
    pub plant_headers: bool,
    /// Extra kernel command line (controls: a bad `rdinit=` to force a panic or a hang).
    pub append: Vec<String>,
    pub deadlines: Deadlines,
    pub memory_mb: u32,
    /// vCPUs (`None`: [`crate::qemu::args::default_cpus`] of the accelerator used).
    pub cpus: Option<u32>,
    /// Called with each phase name as it starts (progress display).
    pub progress: Option<fn(&str, Duration)>,
    /// The module kfunc guest.bpftrace attaches.
    pub module_probe: ModuleProbe,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            modules: None,
            accel: None,
            hide_sysfs_btf: false,
            plant_headers: false,
            append: Vec::new(),
            deadlines: Deadlines::default(),
            memory_mb: 2048,
            cpus: None,
            progress: None,
            module_probe: ModuleProbe::default(),
        }
    }
}

/// The result of a runtime verification.
#[derive(Debug)]
pub struct Report {
    pub checks: Vec<Check>,
    pub accel: Option<Choice>,
    /// (phase, seconds), in order.
    pub phases: Vec<(String, f64)>,
    pub trial_dir: PathBuf,
    pub transcript: PathBuf,
    /// The last console lines when something failed.
    pub console_tail: String,
}

/// Everything the guest needs, prepared on the host.
pub struct Prepared {
    pub boot: Boot,
    pub initrd: PathBuf,
    /// Modules in load order (softdeps and deps first).
    pub load_order: Vec<String>,
    /// Modules the run checks (`guest.btf_modules`), with the sha256 of their `.BTF`.
    pub wanted: Vec<(String, Option<String>)>,
    /// Wanted modules that are not in the package (a failure of `guest.btf_modules`).
    pub missing: Vec<String>,
}

/// Host programs the runtime needs: qemu and the recipe's tools.
pub fn missing_host_tools(recipe: &Recipe) -> Vec<PathBuf> {
    let mut m = recipe.missing_tools();
    let q = qemu_binary();
    if !q.is_file() {
        m.push(q);
    }
    m
}

pub fn qemu_binary() -> PathBuf {
    PathBuf::from("/usr/bin/qemu-system-x86_64")
}

/// Unpacks what the guest needs (kernel image, the modules in `order`) into the cache, keyed by
/// the package's content and the module set; a second run unpacks nothing.
fn unpack(k: &Kernel, order: &[&Module], opts: &ReadOptions) -> Result<PathBuf, String> {
    let pkg_key = if k.source.is_dir() {
        hex::encode(Sha256::digest(k.source.to_string_lossy().as_bytes()))
    } else {
        crate::image::initramfs::sha256_file_memo(&k.source)?
    };
    let mut h = Sha256::new();
    for m in order {
        h.update(m.path.to_string_lossy().as_bytes());
        h.update(b"\n");
    }
    let set_key = hex::encode(h.finalize());
    let dir = crate::fixtures::cache_dir()
        .join("unpacked")
        .join(&pkg_key[..32])
        .join(&set_key[..16]);
    if dir.join(".complete").is_file() && !k.source.is_dir() {
        return Ok(dir);
    }
    let parent = dir.parent().ok_or("cache path has no parent")?;
    std::fs::create_dir_all(parent).map_err(|e| format!("create {}: {e}", parent.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix(".unpack-")
        .tempdir_in(parent)
        .map_err(|e| format!("create a temporary directory in {}: {e}", parent.display()))?;
    let image = k.image.as_ref().map(|i| i.path.clone());
    let wanted: BTreeSet<PathBuf> = order.iter().map(|m| m.path.clone()).chain(image).collect();
    extract(&k.source, opts, tmp.path(), &|p: &Path| wanted.contains(p))
        .map_err(|e| e.to_string())?;
    std::fs::write(tmp.path().join(".complete"), b"").map_err(|e| format!("mark unpacked: {e}"))?;
    let _ = std::fs::remove_dir_all(&dir);
    let kept = tmp.keep();
    std::fs::rename(&kept, &dir)
        .map_err(|e| format!("rename {} into place: {e}", kept.display()))?;
    Ok(dir)
}

/// Prepares the kernel to boot and the image: the recipe's nodes plus the package's modules.
pub fn prepare(
    k: &Kernel,
    recipe: &Recipe,
    params: &Params,
    opts: &ReadOptions,
) -> Result<Prepared, String> {
    let release = k
        .release
        .clone()
        .ok_or("the package's kernel release is unknown")?;
    let mut wanted_names: Vec<String> = params
        .modules
        .clone()
        .unwrap_or_else(|| recipe.modules.clone());
    let mut missing = Vec::new();
    let mut order: Vec<&Module> = Vec::new();
    // bpftrace's module kfunc probe needs its module: load it whenever the package has it.
    let mut to_load = wanted_names.clone();
    let probe = &params.module_probe.module;
    if k.module(probe).is_some() && !to_load.iter().any(|m| m == probe) {
        to_load.push(probe.clone());
    }
    for name in &to_load {
        match k.load_order(std::slice::from_ref(name)) {
            Ok(o) => {
                for m in o {
                    if !order.iter().any(|x| std::ptr::eq(*x, m)) {
                        order.push(m);
                    }
                }
            }
            Err(e) => missing.push(e),
        }
    }
    wanted_names.retain(|n| k.module(n).is_some());
    let dir = unpack(k, &order, opts)?;
    let img_rel = k
        .image
        .as_ref()
        .ok_or("the package has no kernel image")?
        .path
        .clone();
    let bz = dir.join(&img_rel);
    let boot = pvh_or_bzimage(k, &bz, &dir)?;
    let mut nodes = recipe.nodes()?;
    let mut dep = String::new();
    for m in &order {
        let rel_in_tree = modules_rel(&m.path);
        nodes.push(Node::file(
            &format!("lib/modules/{release}/{rel_in_tree}"),
            0o644,
            Source::Host(dir.join(&m.path)),
        ));
        let deps: Vec<String> = m
            .depends
            .iter()
            .filter_map(|d| k.module(d))
            .map(|d| modules_rel(&d.path))
            .collect();
        dep.push_str(&format!("{rel_in_tree}: {}\n", deps.join(" ")));
    }
    nodes.push(Node::file(
        &format!("lib/modules/{release}/modules.dep"),
        0o644,
        Source::Bytes(dep.into_bytes()),
    ));
    let initrd = image::build(nodes, &crate::fixtures::cache_dir().join("images"))?;
    Ok(Prepared {
        boot,
        initrd,
        load_order: order.iter().map(|m| m.name()).collect(),
        wanted: wanted_names
            .iter()
            .filter_map(|n| k.module(n).map(|m| (m.name(), m.btf_sha256.clone())))
            .collect(),
        missing,
    })
}

/// `kernel/fs/overlay/overlay.ko` from `lib/modules/<release>/kernel/fs/overlay/overlay.ko`.
fn modules_rel(p: &Path) -> String {
    let s = p.to_string_lossy();
    let s = s.strip_prefix("usr/").unwrap_or(&s);
    s.splitn(4, '/').nth(3).unwrap_or(s).to_string()
}

/// Boots through PVH with the vmlinux decompressed on the host when the kernel supports it and
/// its payload is slow to decompress under TCG (xz, bzip2, lzma); the bzImage otherwise.
fn pvh_or_bzimage(k: &Kernel, bz: &Path, dir: &Path) -> Result<Boot, String> {
    let pvh = k
        .config
        .as_ref()
        .is_some_and(|c| c.kconfig.is_y("CONFIG_PVH"));
    let slow = k
        .image
        .as_ref()
        .and_then(|i| i.payload.as_ref().ok())
        .is_some_and(|p| matches!(p.codec, Codec::Xz | Codec::Bzip2 | Codec::Lzma));
    if !(pvh && slow) {
        return Ok(Boot::BzImage(bz.to_path_buf()));
    }
    let vmlinux = dir.join("vmlinux");
    if !vmlinux.is_file() {
        let bytes = std::fs::read(bz).map_err(|e| format!("read {}: {e}", bz.display()))?;
        let (_, elf) = bzimage::extract_vmlinux(&bytes)?;
        crate::atomic::write(&vmlinux, &elf).map_err(|e| format!("write {e}"))?;
    }
    Ok(Boot::Pvh(vmlinux))
}

/// A word only this run uses (guest.core execs `/bin/true <token>` and must see that exec):
/// `btfgate` and hex digits of the time and the process id.
fn run_token(trial_dir: &Path) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut h = Sha256::new();
    h.update(trial_dir.to_string_lossy().as_bytes());
    h.update(nanos.to_le_bytes());
    h.update(std::process::id().to_le_bytes());
    format!("btfgate{}", &hex::encode(h.finalize())[..12])
}

/// The `-name` of the QEMU of the run in `trial_dir`: `btfgate-<dir name>`.
pub fn qemu_name(trial_dir: &Path) -> String {
    format!(
        "btfgate-{}",
        trial_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    )
}

/// Processes whose command line contains `needle` (to prove no QEMU outlived its run).
pub fn processes_matching(needle: &str) -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(needle))
                .unwrap_or(false)
        })
        .collect()
}

/// Boots the package's kernel and runs every guest check. Infrastructure problems (no qemu,
/// nothing to boot) are errors; everything the guest does or fails to do is a check result.
pub fn verify(
    k: &Kernel,
    recipe: &Recipe,
    params: &Params,
    opts: &ReadOptions,
    trial_dir: &Path,
) -> Result<Report, String> {
    let t0 = Instant::now();
    let mut phases: Vec<(String, f64)> = Vec::new();
    let mut mark =
        |name: &str, since: Instant| phases.push((name.to_string(), since.elapsed().as_secs_f64()));
    let progress = |p: &str| {
        if let Some(f) = params.progress {
            f(p, t0.elapsed());
        }
    };
    let missing = missing_host_tools(recipe);
    if !missing.is_empty() {
        return Err(format!(
            "missing host programs: {} (Debian: apt-get install qemu-system-x86 busybox-static bpftrace bpftool libbpf-tools)",
            missing.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        ));
    }
    std::fs::create_dir_all(trial_dir)
        .map_err(|e| format!("create {}: {e}", trial_dir.display()))?;
    progress("prepare image");
    let t = Instant::now();
    let prep = prepare(k, recipe, params, opts)?;
    mark("prepare image", t);
    let cpus = |a: Accel| params.cpus.unwrap_or(default_cpus(a));
    // The spec as the KVM probe boots it; the accelerator chosen then decides.
    let mut spec = Spec {
        accel: Accel::Kvm,
        boot: prep.boot.clone(),
        initrd: prep.initrd.clone(),
        append: params.append.clone(),
        memory_mb: params.memory_mb,
        cpus: cpus(Accel::Kvm),
        name: qemu_name(trial_dir),
    };
    let choice = match params.accel {
        Some(a) => Choice {
            accel: a,
            reason: format!("{} forced with --accel", a.name()),
        },
        None => {
            progress("probe kvm");
            let t = Instant::now();
            let c = accel::probe(&qemu_binary(), &spec, trial_dir);
            mark("probe kvm", t);
            c
        }
    };
    spec.accel = choice.accel;
    spec.cpus = cpus(choice.accel);
    progress("boot");
    let t = Instant::now();
    let machine = Machine::boot(&qemu_binary(), &spec, trial_dir, &params.deadlines);
    mark("boot", t);
    let transcript = trial_dir.join("console.log");
    let mut m = match machine {
        Ok(m) => m,
        Err(e) => {
            let tail = e.tail().to_string();
            return Ok(Report {
                checks: gc::not_booted(&e),
                accel: Some(choice),
                phases,
                trial_dir: trial_dir.to_path_buf(),
                transcript,
                console_tail: tail,
            });
        }
    };
    let mut checks = vec![gc::booted(&m, &spec)];
    let run = gc::Runner {
        prep: &prep,
        k,
        hide_sysfs_btf: params.hide_sysfs_btf,
        plant_headers: params.plant_headers,
        token: run_token(trial_dir),
        command: params.deadlines.command,
        module_probe: &params.module_probe,
    };
    let mut failed_run: Option<RunError> = None;
    let t = Instant::now();
    if let Err(e) = gc::setup(&run, &mut m) {
        failed_run = Some(e);
    }
    mark("setup", t);
    for (name, step) in gc::STEPS {
        if failed_run.is_some() {
            checks.push(Check::fail(
                name,
                "not run: the guest stopped answering (see the earlier failure)",
            ));
            continue;
        }
        progress(name);
        let t = Instant::now();
        let result = step(&run, &mut m).and_then(|c| {
            if name == gc::BTF_MODULES {
                gc::start_bpftrace(&run, &mut m)?;
            }
            Ok(c)
        });
        match result {
            Ok(c) => checks.push(c),
            Err(e) => {
                checks.push(
                    Check::fail(name, e.to_string())
                        .with_evidence(e.tail().lines().map(str::to_string).collect()),
                );
                failed_run = Some(e);
            }
        }
        mark(name, t);
    }
    let mut checks: Vec<Check> = checks.into_iter().map(crate::checks::settle).collect();
    // Report in catalogue order, whatever order they ran in.
    checks.sort_by_key(|c| {
        gc::IDS
            .iter()
            .position(|id| *id == c.id)
            .unwrap_or(usize::MAX)
    });
    let console_tail = if checks
        .iter()
        .any(|c| c.status == crate::checks::Status::Fail)
    {
        m.tail(40)
    } else {
        String::new()
    };
    let t = Instant::now();
    m.shutdown();
    mark("shutdown", t);
    Ok(Report {
        checks,
        accel: Some(choice),
        phases,
        trial_dir: trial_dir.to_path_buf(),
        transcript,
        console_tail,
    })
}

/// The bare floor for benchmarks: QEMU booting the same kernel (same boot path) with a minimal
/// busybox initramfs whose /init powers off at once; returns seconds from start to exit.
pub fn boot_floor(
    k: &Kernel,
    recipe: &Recipe,
    accel: Accel,
    opts: &ReadOptions,
    dir: &Path,
) -> Result<f64, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let unpacked = unpack(k, &[], opts)?;
    let img_rel = k
        .image
        .as_ref()
        .ok_or("the package has no kernel image")?
        .path
        .clone();
    let boot = pvh_or_bzimage(k, &unpacked.join(&img_rel), &unpacked)?;
    let nodes = vec![
        Node::file("bin/busybox", 0o755, Source::Host(recipe.busybox.clone())),
        Node::file(
            "init",
            0o755,
            Source::Bytes(b"#!/bin/busybox sh\n/bin/busybox reboot -f\n".to_vec()),
        ),
    ];
    let initrd = image::build(nodes, &crate::fixtures::cache_dir().join("images"))?;
    let spec = Spec {
        accel,
        boot,
        initrd,
        append: Vec::new(),
        memory_mb: 2048,
        cpus: default_cpus(accel),
        name: qemu_name(dir),
    };
    let args = crate::qemu::args::argv(&spec);
    let log = dir.join("console.log");
    let t0 = Instant::now();
    let mut p = crate::process::Process::spawn(
        &qemu_binary(),
        &args,
        false,
        crate::process::Output::File(&log),
        crate::process::Output::File(&dir.join("qemu.stderr")),
    )
    .map_err(|e| e.to_string())?;
    let status = p
        .wait_until(Instant::now() + Duration::from_secs(120))
        .map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("floor boot: qemu exited {status}"));
    }
    Ok(t0.elapsed().as_secs_f64())
}
