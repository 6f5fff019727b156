//! `fetch`: kernel packages from an Alpine mirror (signed index, verified packages) or from the
//! host's package manager (apt on Debian, apk on Alpine, so the host's mirrors, proxies and keys
//! apply). Downloads land in a temporary file of the cache and are renamed into the
//! content-addressed store only once verified. This file holds the arguments, the Alpine mirror
//! path and the exit-code families; `apt.rs` resolves a kernel to its set of packages and
//! downloads them with apt (the host's, or btfgate's own configuration for a Debian suite,
//! `suites.rs`), `apk.rs` with the host's apk, `store.rs` moves a verified download into the
//! store and records where a fetched package is.

mod apk;
mod apt;
mod store;
mod suites;

use apk::apk_fetch;
use apt::host_default_sets_apt;
pub use apt::{apt_fetch_recorded, apt_fetch_set};
use store::record;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use harness::fetch::alpine::{Fetcher, Repo, DEFAULT_MIRROR};
use harness::fetch::{FetchError, Store};
use harness::package::apk::trust::{self, Trust};
use harness::package::apkindex::Index;
use harness::paths::Flavor;

use crate::host::{host, Host};

/// Deadlines of apt and apk: a query, and a download (a generic kernel is ~100 MB).
pub(super) const QUERY: Duration = Duration::from_secs(60);
pub(super) const DOWNLOAD: Duration = Duration::from_secs(30 * 60);

#[derive(Subcommand)]
pub enum Source {
    /// Download .apk packages from an Alpine mirror, verified against its signed APKINDEX
    Alpine(AlpineArgs),
    /// Download .deb packages with `apt-get download` (default: the host's default kernel flavours)
    Apt {
        /// Kernels, each fetched as the whole set of its packages: a meta package
        /// (linux-image-cloud-amd64) or a versioned one from the host's apt, META@previous (one
        /// ABI before the meta package's), or NAME@SUITE from btfgate's own apt configuration
        /// (SUITE: bookworm, bookworm-backports, trixie, trixie-backports, sid)
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
    /// Directory of trusted signing keys, the index must be signed by one of them (default:
    /// /etc/apk/keys if it exists, else btfgate's bundled Alpine keys)
    #[arg(long, value_name = "DIR")]
    pub keys_dir: Option<PathBuf>,
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
    /// The fetcher these arguments describe, after checking them, and the trust it reads with.
    pub fn fetcher(&self) -> Result<(Fetcher, Trust)> {
        let trust = keys_dir(self.keys_dir.as_deref())?;
        Ok((self.mirror.fetcher(trust.dir())?, trust))
    }
}

/// The keys directory to trust: `--keys-dir` (which must exist), else the default trust, the
/// host's `/etc/apk/keys` if it exists, else btfgate's bundled Alpine keys (one choice for every
/// command: [`trust::resolve`]).
pub fn keys_dir(explicit: Option<&Path>) -> Result<Trust> {
    let t = trust::resolve(explicit);
    match explicit {
        Some(d) => t.with_context(|| format!("--keys-dir {}", d.display())),
        None => t.context("the default trust (btfgate's bundled Alpine keys)"),
    }
}

/// `index signed by KEY (TRUST)`: which trusted key verified an index, and where it was found.
pub fn signed_by(index: &Index, trust: &dyn std::fmt::Display) -> String {
    format!(
        "index signed by {} ({trust})",
        index.signer.as_deref().unwrap_or("nobody")
    )
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
                "the keys directory does not exist: pass --keys-dir with a directory of Alpine's \
                 signing keys, or leave it out to trust /etc/apk/keys or btfgate's bundled keys",
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
    let (f, trust) = a.fetcher()?;
    let packages = if a.packages.is_empty() {
        Flavor::ALL
            .iter()
            .map(|f| f.alpine_package().to_string())
            .collect()
    } else {
        a.packages.clone()
    };
    let index = f.index().map_err(fetch_error)?;
    if !a.list {
        eprintln!("{}", signed_by(&index, &trust));
    }
    let entries = packages
        .iter()
        .map(|p| f.pick(&index, p).cloned().map_err(fetch_error))
        .collect::<Result<Vec<_>>>()?;
    if a.list {
        println!(
            "# {} ({})",
            f.repo.index_url(),
            index.description.as_deref().unwrap_or("no DESCRIPTION"),
        );
        println!("# {}", signed_by(&index, &trust));
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
        Source::Apt { packages } if packages.is_empty() => {
            host_default_sets_apt()?.into_iter().flatten().collect()
        }
        Source::Apt { packages } => packages
            .iter()
            .map(|p| apt_fetch_recorded(p))
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .flatten()
            .collect(),
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
                    record(p, std::slice::from_ref(&path))?;
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

/// Fetches the host distribution's default kernel flavours and returns their paths (every
/// package of every flavour's set).
pub fn host_defaults() -> Result<Vec<PathBuf>> {
    Ok(host_default_sets()?.into_iter().flatten().collect())
}

/// Fetches the host distribution's default kernel flavours (`Flavor::ALL`): one set of paths
/// per flavour, recorded under its meta package (Debian) or package (Alpine).
pub fn host_default_sets() -> Result<Vec<Vec<PathBuf>>> {
    // Old lists name an old ABI as the current kernel.
    crate::host::refresh_lists()?;
    match host() {
        Host::Debian => host_default_sets_apt(),
        Host::Alpine => Flavor::ALL
            .iter()
            .map(|f| {
                let p = vec![apk_fetch(f.alpine_package())?];
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
