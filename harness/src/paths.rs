//! Where btfgate keeps what it fetches and builds, outside the work tree, and where the
//! workspace is: the cache directory, the markers `cargo xtask fetch` leaves, the host's
//! default kernel flavours. A leaf: it imports nothing of the crate.

use std::path::{Path, PathBuf};

/// The btfgate cache, outside the work tree: `$BTFGATE_CACHE`, else `$XDG_CACHE_HOME/btfgate`,
/// else `~/.cache/btfgate`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("BTFGATE_CACHE") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("btfgate");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    home.join(".cache").join("btfgate")
}

/// Root of the workspace (the directory holding the top-level Cargo.toml).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Where `cargo xtask fetch` records the fetched file of package `name`.
pub fn fetched_marker(name: &str) -> PathBuf {
    cache_dir().join("host").join(format!("{name}.path"))
}

/// File name of the common JUnit schema in the cache (`<cache>/schemas/`).
pub const JUNIT_XSD: &str = "junit-10.xsd";

/// A host kernel flavour the suite knows how to fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// Debian `linux-image-amd64` (≈ Alpine linux-lts).
    Generic,
    /// Debian `linux-image-cloud-amd64` (≈ Alpine linux-virt).
    Cloud,
}

impl Flavor {
    pub const ALL: [Flavor; 2] = [Flavor::Generic, Flavor::Cloud];
    pub fn name(self) -> &'static str {
        match self {
            Flavor::Generic => "generic",
            Flavor::Cloud => "cloud",
        }
    }
    /// The Debian meta package whose dependency names the current kernel package.
    pub fn debian_meta(self) -> &'static str {
        match self {
            Flavor::Generic => "linux-image-amd64",
            Flavor::Cloud => "linux-image-cloud-amd64",
        }
    }
    /// The Alpine package of the same role.
    pub fn alpine_package(self) -> &'static str {
        match self {
            Flavor::Generic => "linux-lts",
            Flavor::Cloud => "linux-virt",
        }
    }
    /// Where `cargo xtask fetch apt` records the fetched Debian package of this flavour.
    pub fn marker(self) -> PathBuf {
        fetched_marker(self.debian_meta())
    }
}

/// The host kernel package of `flavor` fetched into the cache (`$BTFGATE_PKG_<FLAVOR>` overrides),
/// or the reason it is unavailable.
pub fn host_kernel(flavor: Flavor) -> crate::Result<PathBuf> {
    let var = format!("BTFGATE_PKG_{}", flavor.name().to_uppercase());
    if let Some(p) = std::env::var_os(&var) {
        return Ok(PathBuf::from(p));
    }
    let marker = flavor.marker();
    let text = std::fs::read_to_string(&marker).map_err(|_| {
        crate::Error::failed(
            "fixtures",
            format!(
            "no {} kernel package fetched ({} missing; run `cargo xtask fetch apt` or set {var})",
            flavor.name(),
            marker.display()
            ),
        )
    })?;
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let [line] = lines[..] else {
        return Err(crate::Error::bad(
            &marker,
            "fetch marker",
            format!(
                "names {} packages: the host's {} kernel is a set of packages, and the tests made from it need one package",
                lines.len(),
                flavor.name()
            ),
        ));
    };
    let p = PathBuf::from(line);
    if p.is_file() {
        Ok(p)
    } else {
        Err(crate::Error::bad(
            &marker,
            "fetch marker",
            format!("names {}, which does not exist", p.display()),
        ))
    }
}
