//! The bare floor benchmarks compare a verdict with: the same kernel booted by the same path
//! with a minimal initramfs whose /init powers off at once.

use crate::image;
use crate::image::initramfs::Node;
use crate::image::initramfs::Source;
use crate::image::Recipe;
use crate::kernel::Kernel;
use crate::qemu::args::cpus;
use crate::qemu::args::Accel;
use crate::qemu::args::Spec;
use crate::{Error, Result};
use std::path::Path;
use std::time::Duration;
use std::time::Instant;

use super::prepare::{kernel_to_boot, qemu_binary, unpack};
use super::qemu_name;

/// The bare floor for benchmarks: QEMU booting the same kernel (same boot path) with a minimal
/// busybox initramfs whose /init powers off at once; returns seconds from start to exit.
pub fn boot_floor(k: &Kernel, recipe: &Recipe, accel: Accel, dir: &Path) -> Result<f64> {
    const FLOOR: &str = "floor boot";
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, FLOOR, e))?;
    let unpacked = unpack(k, &[])?;
    let boot = kernel_to_boot(k, &unpacked, FLOOR)?;
    let nodes = vec![
        Node::file("bin/busybox", 0o755, Source::Host(recipe.busybox.clone())),
        Node::file(
            "init",
            0o755,
            Source::Bytes(b"#!/bin/busybox sh\n/bin/busybox reboot -f\n".to_vec()),
        ),
    ];
    let initrd = image::build(nodes, &crate::paths::cache_dir().join("images"))?;
    let spec = Spec {
        accel,
        boot,
        initrd,
        append: Vec::new(),
        memory_mb: 2048,
        cpus: cpus(accel, crate::qemu::accel::qemu_version(&qemu_binary())),
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
    )?;
    let status = p.wait_until(Instant::now() + Duration::from_secs(120))?;
    if !status.success() {
        return Err(Error::failed(FLOOR, format!("qemu exited {status}")));
    }
    Ok(t0.elapsed().as_secs_f64())
}
