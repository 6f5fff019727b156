//! Locates data that tests and benchmarks use but the repository never holds: the shared Alpine
//! reference files and the host distribution's kernel packages fetched into the cache.

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

/// The shared Alpine reference data (`$BTFGATE_ALPINE_DIR`, else `<workspace>/../shared/alpine`),
/// or the reason it is unavailable.
pub fn alpine_dir() -> Result<PathBuf, String> {
    let dir = match std::env::var_os("BTFGATE_ALPINE_DIR") {
        Some(d) => PathBuf::from(d),
        None => workspace_root().join("../shared/alpine"),
    };
    if dir.join("fixtures").is_dir() && dir.join("keys").is_dir() {
        Ok(dir)
    } else {
        Err(format!(
            "shared Alpine data not found at {} (set BTFGATE_ALPINE_DIR)",
            dir.display()
        ))
    }
}

/// The common JUnit schema (Jenkins xunit plugin's `junit-10.xsd`): `$BTFGATE_JUNIT_XSD`, else
/// `<cache>/schemas/junit-10.xsd` where `cargo xtask test` puts it; or why it is unavailable.
pub fn junit_schema() -> Result<PathBuf, String> {
    let p = match std::env::var_os("BTFGATE_JUNIT_XSD") {
        Some(p) => PathBuf::from(p),
        None => cache_dir().join("schemas").join(JUNIT_XSD),
    };
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!(
            "the common JUnit schema is not at {} (`cargo xtask test` fetches it; or set BTFGATE_JUNIT_XSD)",
            p.display()
        ))
    }
}

/// File name of the common JUnit schema in the cache.
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
        crate::scenario::targets::fetched_marker(self.debian_meta())
    }
}

/// The host kernel package of `flavor` fetched into the cache (`$BTFGATE_PKG_<FLAVOR>` overrides),
/// or the reason it is unavailable.
pub fn host_kernel(flavor: Flavor) -> Result<PathBuf, String> {
    let var = format!("BTFGATE_PKG_{}", flavor.name().to_uppercase());
    if let Some(p) = std::env::var_os(&var) {
        return Ok(PathBuf::from(p));
    }
    let marker = flavor.marker();
    let text = std::fs::read_to_string(&marker).map_err(|_| {
        format!(
            "no {} kernel package fetched ({} missing; run `cargo xtask fetch apt` or set {var})",
            flavor.name(),
            marker.display()
        )
    })?;
    let p = PathBuf::from(text.trim());
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!(
            "{} names {}, which does not exist",
            marker.display(),
            p.display()
        ))
    }
}

/// Marks `trial` ignored when `need` is an error, printing the reason once on stderr: skips
/// are decided when trials are listed, never by returning Ok at run time.
pub fn needs<T>(trial: libtest_mimic::Trial, need: &Result<T, String>) -> libtest_mimic::Trial {
    match need {
        Ok(_) => trial,
        Err(reason) => {
            use std::sync::Mutex;
            static SHOWN: Mutex<Vec<String>> = Mutex::new(Vec::new());
            if let Ok(mut shown) = SHOWN.lock() {
                if !shown.contains(reason) {
                    eprintln!("ignored: {reason}");
                    shown.push(reason.clone());
                }
            }
            trial.with_ignored_flag(true)
        }
    }
}
