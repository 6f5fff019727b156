//! `fetch`: kernel packages from an Alpine mirror (signed index, verified packages) or from the
//! host's package manager (apt on Debian, apk on Alpine, so the host's mirrors, proxies and keys
//! apply). Downloads land in a temporary file of the cache and are renamed into the
//! content-addressed store only once verified.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use harness::fetch::alpine::{Fetcher, Repo, DEFAULT_MIRROR};
use harness::fetch::{FetchError, Store};
use harness::paths::{cache_dir, Flavor};
use harness::process::Cmd;

use crate::host::{host, Host};

/// Deadlines of apt and apk: a query, and a download (a generic kernel is ~100 MB).
const QUERY: Duration = Duration::from_secs(60);
const DOWNLOAD: Duration = Duration::from_secs(30 * 60);

#[derive(Subcommand)]
pub enum Source {
    /// Download .apk packages from an Alpine mirror, verified against its signed APKINDEX
    Alpine(AlpineArgs),
    /// Download .deb packages with `apt-get download` (default: the host's default kernel flavours)
    Apt {
        /// Image packages, meta packages (linux-image-cloud-amd64: the image it depends on), or
        /// META@previous (the image package one ABI before the meta package's)
        packages: Vec<String>,
    },
    /// Download .apk packages with `apk fetch` (default: linux-lts linux-virt)
    Apk { packages: Vec<String> },
}

/// Where and what to fetch from an Alpine mirror.
#[derive(Args, Clone)]
pub struct AlpineArgs {
    #[command(flatten)]
    pub mirror: MirrorArgs,
    /// Directory of trusted signing keys (the index must be signed by one of them)
    #[arg(long, default_value = "/etc/apk/keys")]
    pub keys_dir: PathBuf,
    /// Print the matching index entries and download nothing
    #[arg(long)]
    pub list: bool,
    /// NAME or NAME=VERSION (default: linux-lts linux-virt)
    pub packages: Vec<String>,
}

/// Which Alpine repository to fetch from.
#[derive(Args, Clone)]
pub struct MirrorArgs {
    /// Alpine mirror root (http, https, file:// or a path)
    #[arg(long, default_value = DEFAULT_MIRROR)]
    pub mirror: String,
    /// Alpine branch: latest-stable, edge or vX.Y
    #[arg(long, default_value = "latest-stable")]
    pub branch: String,
    /// Alpine repository
    #[arg(long, default_value = "main")]
    pub repo: String,
    #[arg(long, default_value = "x86_64")]
    pub arch: String,
}

impl AlpineArgs {
    /// The fetcher these arguments describe, after checking them.
    pub fn fetcher(&self) -> Result<Fetcher> {
        self.mirror.fetcher(&self.keys_dir)
    }
}

impl MirrorArgs {
    /// A fetcher from this repository trusting the keys in `keys_dir`, after checking both.
    pub fn fetcher(&self, keys_dir: &Path) -> Result<Fetcher> {
        let repo = Repo {
            mirror: self.mirror.clone(),
            branch: self.branch.clone(),
            repo: self.repo.clone(),
            arch: self.arch.clone(),
        };
        repo.validate().map_err(|e| {
            harness::Error::bad(Path::new(&self.mirror), "fetch alpine", e.message())
        })?;
        if !keys_dir.is_dir() {
            return Err(harness::Error::bad(
                keys_dir,
                "fetch alpine",
                "the keys directory does not exist: pass --keys-dir with Alpine's signing keys \
                 (package alpine-keys, or https://alpinelinux.org/keys/)",
            )
            .into());
        }
        let mut f = Fetcher::new(repo, keys_dir.to_path_buf(), Store::default_cache());
        f.progress = std::io::stderr().is_terminal();
        Ok(f)
    }
}

/// Runs `fetch alpine`: lists or fetches; returns the stored paths.
pub fn alpine(a: &AlpineArgs) -> Result<Vec<PathBuf>> {
    let f = a.fetcher()?;
    let packages = if a.packages.is_empty() {
        Flavor::ALL
            .iter()
            .map(|f| f.alpine_package().to_string())
            .collect()
    } else {
        a.packages.clone()
    };
    let index = f.index().map_err(fetch_error)?;
    let entries = packages
        .iter()
        .map(|p| f.pick(&index, p).cloned().map_err(fetch_error))
        .collect::<Result<Vec<_>>>()?;
    if a.list {
        println!(
            "# {} ({}, signed by {})",
            f.repo.index_url(),
            index.description.as_deref().unwrap_or("no DESCRIPTION"),
            index.signer.as_deref().unwrap_or("nobody")
        );
        println!(
            "{:<24} {:<16} {:<8} {:>14} {:>14}",
            "NAME", "VERSION", "ARCH", "DOWNLOAD", "INSTALLED"
        );
        for e in &entries {
            println!(
                "{:<24} {:<16} {:<8} {:>14} {:>14}",
                e.name,
                e.version,
                e.arch,
                harness::size::grouped(e.size),
                harness::size::grouped(e.installed_size)
            );
        }
        return Ok(Vec::new());
    }
    entries
        .iter()
        .map(|e| f.fetch(e).map_err(fetch_error))
        .collect()
}

/// Maps a fetch error to the exit-code families: unavailable mirror → 69, the rest → 2.
pub fn fetch_error(e: FetchError) -> anyhow::Error {
    match e {
        FetchError::Unavailable { .. } | FetchError::Cache { .. } => {
            Unavailable(e.to_string()).into()
        }
        FetchError::NotFound { .. } | FetchError::Refused { .. } => BadFetch(e).into(),
    }
}

/// A fetch that was refused or asked for something that does not exist: exit 2.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct BadFetch(pub FetchError);

pub use crate::host::Unavailable;

pub fn run(source: Source) -> Result<()> {
    let paths = match source {
        Source::Alpine(a) => alpine(&a)?,
        Source::Apt { packages } if packages.is_empty() => host_defaults_apt()?,
        Source::Apt { packages } => packages
            .iter()
            .map(|p| apt_fetch_recorded(p))
            .collect::<Result<_>>()?,
        Source::Apk { packages } => {
            let packages = if packages.is_empty() {
                Flavor::ALL
                    .iter()
                    .map(|f| f.alpine_package().to_string())
                    .collect()
            } else {
                packages
            };
            packages
                .iter()
                .map(|p| {
                    let path = apk_fetch(p)?;
                    record(p, &path)?;
                    Ok(path)
                })
                .collect::<Result<_>>()?
        }
    };
    for p in paths {
        println!("{}", p.display());
    }
    Ok(())
}

/// Fetches the host distribution's default kernel flavours and returns their paths.
pub fn host_defaults() -> Result<Vec<PathBuf>> {
    // Old lists name an old ABI as the current kernel.
    crate::host::refresh_lists()?;
    match host() {
        Host::Debian => host_defaults_apt(),
        Host::Alpine => Flavor::ALL
            .iter()
            .map(|f| {
                let p = apk_fetch(f.alpine_package())?;
                record(f.alpine_package(), &p)?;
                Ok(p)
            })
            .collect(),
        Host::Other => Err(Unavailable(
            "this host is neither Debian nor Alpine: name packages with `cargo xtask verify --package FILE` \
             (an Alpine .apk, a Debian .deb, or a directory with boot/ and lib/modules/)"
                .into(),
        )
        .into()),
    }
}

fn host_defaults_apt() -> Result<Vec<PathBuf>> {
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

/// Remembers where the fetched package `name` is, for the tests and scenario targets.
fn record(name: &str, path: &Path) -> Result<()> {
    let marker = harness::scenario::targets::fetched_marker(name);
    let dir = marker.parent().context("marker path has no parent")?;
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    harness::atomic::write(&marker, format!("{}\n", path.display()).as_bytes())
        .context("record the fetched package")?;
    Ok(())
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

/// `apk fetch NAME` into the cache (apk verifies the signature with /etc/apk/keys).
pub fn apk_fetch(name: &str) -> Result<PathBuf> {
    let dest = cache_dir().join("apk");
    std::fs::create_dir_all(&dest).with_context(|| format!("create {}", dest.display()))?;
    let tmp = harness::scratch::tempdir_in(&dest, ".fetch-")?;
    let out = tmp.path();
    Cmd::new("apk", DOWNLOAD)
        .args(["fetch", "--quiet", "--output"])
        .arg(out)
        .arg(name)
        .run()
        .map_err(|e| Unavailable(format!("apk fetch {name} failed: {e}")))?;
    let got = single_file(out, ".apk")?;
    store(&got, "apk")
}

/// Moves a download the package manager verified into the content-addressed store and points
/// `<index>/<name>` at it; returns the stored path.
fn store(got: &Path, index: &str) -> Result<PathBuf> {
    let name = got
        .file_name()
        .context("downloaded file has no name")?
        .to_string_lossy()
        .into_owned();
    let tmp = tempfile::TempPath::try_from_path(got)
        .with_context(|| format!("take over {}", got.display()))?;
    Store::default_cache()
        .put(tmp, &name, index)
        .map_err(fetch_error)
}

fn single_file(dir: &Path, ext: &str) -> Result<PathBuf> {
    let files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(ext))
        .collect();
    match files.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!(
            "expected one {ext} file in {}, found {}",
            dir.display(),
            files.len()
        ),
    }
}
