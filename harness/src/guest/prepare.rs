//! Preparing a guest on the host: the package unpacked (cached by content and module set), the
//! modules in load order, the kernel to boot (bzImage, or the vmlinux by PVH), the image.

use crate::codec::Codec;
use crate::image;
use crate::image::initramfs::Node;
use crate::image::initramfs::Source;
use crate::image::Recipe;
use crate::kernel::bzimage;
use crate::kernel::Kernel;
use crate::kernel::Module;
use crate::package::extract::extract;
use crate::qemu::args::Boot;
use crate::{Error, Result};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::path::Path;
use std::path::PathBuf;

use super::load_order::{find_module, load_order};
use super::{Params, Prepared, PREPARE};

/// The phase of unpacking the package into the cache.
const UNPACK: &str = "unpack the package for the guest";

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
pub(super) fn unpack(k: &Kernel, order: &[&Module]) -> Result<PathBuf> {
    // A directory may change under the same name: it is unpacked again every time.
    let any_dir = k.packages.iter().any(|p| p.source.is_dir());
    let mut h = Sha256::new();
    for p in &k.packages {
        if p.source.is_dir() {
            h.update(p.source.to_string_lossy().as_bytes());
        } else {
            h.update(crate::hash::sha256_file_memo(&p.source)?.as_bytes());
        }
        h.update(b"\n");
    }
    let pkg_key = hex::encode(h.finalize());
    let mut h = Sha256::new();
    for m in order {
        h.update(m.path.to_string_lossy().as_bytes());
        h.update(b"\n");
    }
    let set_key = hex::encode(h.finalize());
    let dir = crate::paths::cache_dir()
        .join("unpacked")
        .join(&pkg_key[..32])
        .join(&set_key[..16]);
    if dir.join(".complete").is_file() && !any_dir {
        return Ok(dir);
    }
    let parent = dir
        .parent()
        .ok_or_else(|| Error::failed(UNPACK, "cache path has no parent"))?;
    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, UNPACK, e))?;
    let tmp =
        crate::scratch::tempdir_in(parent, ".unpack-").map_err(|e| Error::io(parent, UNPACK, e))?;
    // Each package of the set gives what it holds: the image from one, modules from another.
    for (i, p) in k.packages.iter().enumerate() {
        let image = (k.image.as_ref())
            .filter(|img| img.package == i)
            .map(|img| img.path.clone());
        let wanted: BTreeSet<PathBuf> = (order.iter())
            .filter(|m| m.package == i)
            .map(|m| m.path.clone())
            .chain(image)
            .collect();
        if !wanted.is_empty() {
            extract(&p.source, &p.read, tmp.path(), &|q: &Path| {
                wanted.contains(q)
            })?;
        }
    }
    let complete = tmp.path().join(".complete");
    std::fs::write(&complete, b"").map_err(|e| Error::io(&complete, UNPACK, e))?;
    let from = tmp.path().display().to_string();
    tmp.rename_into_place(&dir)
        .map_err(|e| Error::failed(UNPACK, format!("rename {from} into place: {e}")))?;
    Ok(dir)
}

/// Prepares the kernel to boot and the image: the recipe's nodes plus the package's modules.
pub fn prepare(k: &Kernel, recipe: &Recipe, params: &Params) -> Result<Prepared> {
    let release = k
        .release
        .clone()
        .ok_or_else(|| Error::failed(PREPARE, "the package's kernel release is unknown"))?;
    let mut wanted_names: Vec<String> = params
        .modules
        .clone()
        .unwrap_or_else(|| recipe.modules.clone());
    let mut missing = Vec::new();
    let mut order: Vec<&Module> = Vec::new();
    // bpftrace's module kfunc probe needs its module: load it whenever the package has it.
    let mut to_load = wanted_names.clone();
    let probe = &params.module_probe.module;
    if find_module(k, probe).is_some() && !to_load.iter().any(|m| m == probe) {
        to_load.push(probe.clone());
    }
    for name in &to_load {
        match load_order(k, std::slice::from_ref(name)) {
            Ok(o) => {
                for m in o {
                    if !order.iter().any(|x| std::ptr::eq(*x, m)) {
                        order.push(m);
                    }
                }
            }
            // Shown as they were found, in the check's details.
            Err(e) => missing.push(e.message()),
        }
    }
    wanted_names.retain(|n| find_module(k, n).is_some());
    let dir = unpack(k, &order)?;
    let boot = kernel_to_boot(k, &dir, PREPARE)?;
    let mut nodes = recipe.nodes(params.runs_tools())?;
    nodes.extend(params.extra.iter().cloned());
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
            .filter_map(|d| find_module(k, d))
            .map(|d| modules_rel(&d.path))
            .collect();
        dep.push_str(&format!("{rel_in_tree}: {}\n", deps.join(" ")));
    }
    nodes.push(Node::file(
        &format!("lib/modules/{release}/modules.dep"),
        0o644,
        Source::Bytes(dep.into_bytes()),
    ));
    let initrd = image::build(nodes, &crate::paths::cache_dir().join("images"))?;
    Ok(Prepared {
        boot,
        initrd,
        load_order: order.iter().map(|m| m.name()).collect(),
        wanted: wanted_names
            .iter()
            .filter_map(|n| find_module(k, n).map(|m| (m.name(), m.btf_sha256.clone())))
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

/// The kernel to boot from the package unpacked in `dir`: its image as a bzImage, or the
/// vmlinux inside it through PVH ([`pvh_or_bzimage`]).
pub(super) fn kernel_to_boot(k: &Kernel, dir: &Path, phase: &'static str) -> Result<Boot> {
    let rel = &k
        .image
        .as_ref()
        .ok_or_else(|| Error::failed(phase, "the package has no kernel image"))?
        .path;
    pvh_or_bzimage(k, &dir.join(rel), dir)
}

/// Boots through PVH with the vmlinux decompressed on the host (once, kept beside the unpacked
/// package) when the kernel supports it (`CONFIG_PVH=y`) and its payload is compressed with a
/// codec btfgate decodes (gzip, xz, zstd, lz4); the bzImage otherwise. Under TCG the
/// bzImage's own decompressor is slow whatever the codec: measured on this project's 2-core
/// host, a bare boot of Debian's 6.12 cloud kernel (zstd) took 4.3–5.1 s from the bzImage and
/// 3.1–3.8 s by PVH, its 6.1 cloud kernel (lz4) 3.2–3.8 s and 2.7–3.0 s. The vmlinux booted
/// is the one the static checks read from the same image.
pub(super) fn pvh_or_bzimage(k: &Kernel, bz: &Path, dir: &Path) -> Result<Boot> {
    let pvh = k
        .config
        .as_ref()
        .is_some_and(|c| c.kconfig.is_y("CONFIG_PVH"));
    let compressed = k
        .image
        .as_ref()
        .and_then(|i| i.payload.as_ref().ok())
        .is_some_and(|p| p.codec != Codec::None && p.codec.decodes());
    if !(pvh && compressed) {
        return Ok(Boot::BzImage(bz.to_path_buf()));
    }
    let vmlinux = dir.join("vmlinux");
    if !vmlinux.is_file() {
        const PVH: &str = "decompress vmlinux to boot by PVH";
        let bytes = std::fs::read(bz).map_err(|e| Error::io(bz, PVH, e))?;
        let (_, elf) =
            bzimage::extract_vmlinux(&bytes).map_err(|e| Error::bad(bz, PVH, e.message()))?;
        crate::atomic::write(&vmlinux, &elf)
            .map_err(|e| Error::failed(PVH, format!("write {e}")))?;
    }
    Ok(Boot::Pvh(vmlinux))
}
