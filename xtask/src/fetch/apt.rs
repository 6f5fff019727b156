//! Debian kernels through the host's apt: a meta package resolved to its image package (and
//! `@previous` to the ABI before it), downloaded with `apt-get download` (apt checks the file
//! against its signed index) into the store.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use harness::paths::{cache_dir, Flavor};
use harness::process::Cmd;

use super::store::{record, single_file, store};
use super::{Unavailable, DOWNLOAD, QUERY};

pub(super) fn host_defaults_apt() -> Result<Vec<PathBuf>> {
    Flavor::ALL
        .iter()
        .map(|f| {
            let name = apt_dependency(f.debian_meta())?;
            let p = apt_download(&name)?;
            record(f.debian_meta(), &p)?;
            Ok(p)
        })
        .collect()
}

/// Fetches the apt package `name` and records where it is (for the scenario targets).
pub fn apt_fetch_recorded(name: &str) -> Result<PathBuf> {
    let real = apt_image_package(name)?;
    let path = apt_download(&real)?;
    record(name, &path)?;
    Ok(path)
}

/// The image package `name` stands for: itself when it is versioned
/// (`linux-image-6.1.0-55-cloud-amd64`), the image a meta package depends on
/// (`linux-image-cloud-amd64`), or for `META@previous` the highest ABI below that one.
pub fn apt_image_package(name: &str) -> Result<String> {
    if let Some(meta) = name.strip_suffix("@previous") {
        return apt_previous(&apt_dependency(meta)?);
    }
    let versioned = name
        .strip_prefix("linux-image-")
        .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()));
    if versioned {
        return Ok(name.to_string());
    }
    Ok(apt_dependency(name).unwrap_or_else(|_| name.to_string()))
}

/// The image package of the highest ABI below `current`'s that apt can download
/// (`linux-image-6.1.0-56-cloud-amd64` → `linux-image-6.1.0-55-cloud-amd64`).
fn apt_previous(current: &str) -> Result<String> {
    let bad = || {
        harness::Error::bad(
            Path::new(current),
            "find the previous kernel ABI",
            "expected linux-image-<version>-<abi>-<flavour>",
        )
    };
    let rest = current.strip_prefix("linux-image-").ok_or_else(bad)?;
    let mut parts = rest.splitn(3, '-');
    let (version, abi, flavour) = match (parts.next(), parts.next(), parts.next()) {
        (Some(v), Some(a), Some(f)) => (v, a.parse::<u32>().map_err(|_| bad())?, f),
        _ => return Err(bad().into()),
    };
    let pattern = format!(
        "^linux-image-{}-[0-9]+-{}$",
        version.replace('.', "\\."),
        flavour
    );
    let out = Cmd::new("apt-cache", QUERY)
        .args(["search", "--names-only", &pattern])
        .read()
        .map_err(|e| Unavailable(format!("apt-cache search {pattern}: {e}")))?;
    let prefix = format!("linux-image-{version}-");
    let suffix = format!("-{flavour}");
    out.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|n| {
            let a = n.strip_prefix(&prefix)?.strip_suffix(&suffix)?;
            a.parse::<u32>().ok().map(|a| (a, n.to_string()))
        })
        .filter(|(a, _)| *a < abi)
        .max()
        .map(|(_, n)| n)
        .ok_or_else(|| {
            Unavailable(format!(
                "apt knows no {prefix}<abi>{suffix} older than {current}"
            ))
            .into()
        })
}

/// The kernel image package a Debian meta package depends on (`linux-image-amd64` →
/// `linux-image-6.1.0-48-amd64`), refreshing the package lists once if needed.
fn apt_dependency(meta: &str) -> Result<String> {
    let lookup = || -> Option<String> {
        let out = Cmd::new("apt-cache", QUERY)
            .args(["depends", meta])
            .quiet()
            .read()
            .ok()?;
        out.lines()
            .filter_map(|l| l.trim().strip_prefix("Depends: "))
            .find(|d| d.starts_with("linux-image-"))
            .map(str::to_string)
    };
    if let Some(d) = lookup() {
        return Ok(d);
    }
    crate::host::refresh_lists()?;
    lookup().ok_or_else(|| {
        Unavailable(format!(
            "apt knows no package {meta} (is this an amd64 Debian with main enabled?)"
        ))
        .into()
    })
}

/// `apt-get download NAME` into the cache (apt verifies the file against its signed index).
pub fn apt_download(name: &str) -> Result<PathBuf> {
    let dest = cache_dir().join("apt");
    std::fs::create_dir_all(&dest).with_context(|| format!("create {}", dest.display()))?;
    // Already fetched? apt names files <name>_<version>_<arch>.deb.
    let version = Cmd::new("apt-cache", QUERY)
        .args(["show", "--no-all-versions", name])
        .quiet()
        .read()
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("Version: ").map(str::to_string))
        });
    if let Some(v) = &version {
        let file = dest.join(format!("{name}_{}_amd64.deb", v.replace(':', "%3a")));
        if file.is_file() {
            return std::fs::canonicalize(&file)
                .with_context(|| format!("resolve {}", file.display()));
        }
    } else {
        crate::host::refresh_lists()?;
    }
    let tmp = harness::scratch::tempdir_in(&dest, ".fetch-")?;
    // apt drops to the _apt user to download unless told otherwise; the temporary directory
    // is private to root, so download as root (the file is still checked against apt's index).
    Cmd::new("apt-get", DOWNLOAD)
        .args(["download", "-q", "-o", "APT::Sandbox::User=root", name])
        .dir(tmp.path())
        .stdout_to_stderr()
        .run()
        .map_err(|e| Unavailable(format!("apt-get download {name} failed: {e}")))?;
    let got = single_file(tmp.path(), ".deb")?;
    store(&got, "apt")
}
