//! Fetching from an Alpine mirror: the signed APKINDEX, then each package, checked against its index entry (`C:` identity, size, arch) and its own signature before it enters the cache.

use std::path::PathBuf;

use super::{download, download_at_most, Deadlines, FetchError, Store};
use crate::package::apk;
use crate::package::apkindex::{self, Index, IndexEntry};
use crate::package::ReadOptions;

/// The mirror btfgate fetches from unless told otherwise.
pub const DEFAULT_MIRROR: &str = "https://dl-cdn.alpinelinux.org/alpine";

/// One repository of a mirror: `<url>/<branch>/<repo>/<arch>/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repo {
    /// Mirror root: `https://…/alpine`, `http://127.0.0.1:port`, `file:///srv/mirror` or a path.
    pub mirror: String,
    /// `latest-stable`, `edge` or `vX.Y`.
    pub branch: String,
    /// `main`, `community`, …
    pub repo: String,
    pub arch: String,
}

impl Default for Repo {
    fn default() -> Self {
        Repo {
            mirror: DEFAULT_MIRROR.to_string(),
            branch: "latest-stable".to_string(),
            repo: "main".to_string(),
            arch: "x86_64".to_string(),
        }
    }
}

impl Repo {
    /// Refuses a branch, repo or arch that is not a plain path component.
    pub fn validate(&self) -> crate::Result<()> {
        let b = &self.branch;
        if !(b == "latest-stable" || b == "edge" || valid_release(b)) {
            return Err(crate::Error::failed(
                "alpine repository",
                format!("branch {b:?}: expected latest-stable, edge or vX.Y (e.g. v3.21)"),
            ));
        }
        for (what, v) in [("repo", &self.repo), ("arch", &self.arch)] {
            if v.is_empty()
                || !v
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(crate::Error::failed(
                    "alpine repository",
                    format!("{what} {v:?}: expected a name such as main or x86_64"),
                ));
            }
        }
        Ok(())
    }

    pub fn url(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.mirror.trim_end_matches('/'),
            self.branch,
            self.repo,
            self.arch
        )
    }

    pub fn index_url(&self) -> String {
        format!("{}/APKINDEX.tar.gz", self.url())
    }

    pub fn package_url(&self, e: &IndexEntry) -> String {
        format!("{}/{}", self.url(), e.file_name())
    }

    /// The cache index directory of this repository's packages.
    fn cache_index(&self) -> String {
        format!("alpine/{}/{}/{}", self.branch, self.repo, self.arch)
    }
}

fn valid_release(b: &str) -> bool {
    b.strip_prefix('v').is_some_and(|v| {
        let parts: Vec<&str> = v.split('.').collect();
        parts.len() == 2
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
    })
}

/// Fetches packages from one repository into a [`Store`].
#[derive(Debug, Clone)]
pub struct Fetcher {
    pub repo: Repo,
    /// Trusted keys (`keys_dir`); `allow_untrusted` is honoured for packages only, never for
    /// the index, whose signature is what makes its `C:` identities worth checking.
    pub read: ReadOptions,
    pub store: Store,
    pub progress: bool,
    pub deadlines: Deadlines,
}

impl Fetcher {
    pub fn new(repo: Repo, keys_dir: PathBuf, store: Store) -> Fetcher {
        Fetcher {
            repo,
            read: ReadOptions {
                keys_dir,
                allow_untrusted: false,
            },
            store,
            progress: false,
            deadlines: Deadlines::default(),
        }
    }

    /// Downloads `APKINDEX.tar.gz` to a temporary file and verifies its signature; refuses
    /// an index whose entries are for another arch.
    pub fn index(&self) -> Result<Index, FetchError> {
        let url = self.repo.index_url();
        let key = format!("apkindex-{}", self.repo.url());
        let lock = self.store.lock(&key, self.deadlines.total)?;
        let mut tmp = self.store.temp_file(&lock)?;
        download_at_most(
            &url,
            tmp.as_file_mut(),
            crate::limits::APKINDEX_FILE,
            self.progress,
            self.deadlines,
        )?;
        let strict = ReadOptions {
            keys_dir: self.read.keys_dir.clone(),
            allow_untrusted: false,
        };
        let index = apkindex::read_index(tmp.path(), &strict).map_err(|e| FetchError::Refused {
            what: format!("index {url}"),
            msg: e.to_string(),
        })?;
        if let Some(e) = index
            .entries
            .iter()
            .find(|e| e.arch != self.repo.arch && e.arch != "noarch")
        {
            return Err(FetchError::Refused {
                what: format!("index {url}"),
                msg: format!(
                    "entry {} {} (APKINDEX line {}) is for arch {}, this repository is {}",
                    e.name, e.version, e.line, e.arch, self.repo.arch
                ),
            });
        }
        Ok(index)
    }

    /// The entry `spec` names: `NAME` (the only version the index holds) or `NAME=VERSION`.
    pub fn pick<'i>(&self, index: &'i Index, spec: &str) -> Result<&'i IndexEntry, FetchError> {
        let (name, version) = match spec.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (spec, None),
        };
        let found: Vec<&IndexEntry> = index
            .named(name)
            .into_iter()
            .filter(|e| version.is_none_or(|v| e.version == v))
            .collect();
        match found.as_slice() {
            [one] => Ok(one),
            [] => {
                let versions: Vec<&str> = index
                    .named(name)
                    .iter()
                    .map(|e| e.version.as_str())
                    .collect();
                Err(FetchError::NotFound {
                    what: format!("{spec} in {}", self.repo.index_url()),
                    msg: if versions.is_empty() {
                        format!(
                            "no such package in {} (index {})",
                            self.repo.repo,
                            index
                                .description
                                .as_deref()
                                .unwrap_or("without DESCRIPTION")
                        )
                    } else {
                        format!("the index has version(s) {}", versions.join(", "))
                    },
                })
            }
            many => Err(FetchError::NotFound {
                what: format!("{spec} in {}", self.repo.index_url()),
                msg: format!(
                    "several versions ({}); name one as {name}=VERSION",
                    many.iter()
                        .map(|e| e.version.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }),
        }
    }

    /// Downloads the package of `entry` (unless the cache already holds it), verifies it
    /// against the entry and its signature, and returns its path in the store.
    pub fn fetch(&self, entry: &IndexEntry) -> Result<PathBuf, FetchError> {
        let url = self.repo.package_url(entry);
        let name = entry.file_name();
        let index = self.repo.cache_index();
        if entry.arch != self.repo.arch && entry.arch != "noarch" {
            return Err(FetchError::Refused {
                what: url,
                msg: format!(
                    "the index entry is for arch {}, wanted {}",
                    entry.arch, self.repo.arch
                ),
            });
        }
        let lock = self.store.lock(
            &format!("alpine-{}-{}", self.repo.arch, name),
            self.deadlines.total,
        )?;
        if let Some(p) = self.store.find(&index, &name) {
            if self.check(&p, entry, &url).is_ok() {
                return Ok(p);
            }
        }
        let mut tmp = self.store.temp_file(&lock)?;
        download(
            &url,
            tmp.as_file_mut(),
            Some(entry.size),
            self.progress,
            self.deadlines,
        )?;
        let path = tmp.map(|t| t.into_temp_path());
        self.check(&path, entry, &url)?;
        let stored = self.store.put(path.into_inner(), &name, &index)?;
        drop(lock);
        Ok(stored)
    }

    /// Verifies a downloaded package: signature and datahash, then `C:` identity and the
    /// `.PKGINFO` name, version and arch against the index entry.
    fn check(&self, path: &std::path::Path, e: &IndexEntry, url: &str) -> Result<(), FetchError> {
        let refused = |msg: String| FetchError::Refused {
            what: url.to_string(),
            msg,
        };
        let info = apk::inspect(path, &self.read).map_err(|err| refused(err.to_string()))?;
        if info.identity != e.checksum {
            return Err(refused(format!(
                "its identity is {} but the index entry (APKINDEX line {}) says C:{}: not the package the signed index lists",
                info.identity, e.line, e.checksum
            )));
        }
        for (key, want) in [
            ("pkgname", &e.name),
            ("pkgver", &e.version),
            ("arch", &e.arch),
        ] {
            let got = info.pkginfo.get(key).unwrap_or_default();
            if got != want {
                return Err(refused(format!(
                    ".PKGINFO {key} = {got:?}, the index entry says {want:?}"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_follow_the_mirror_layout() {
        let r = Repo {
            mirror: "http://127.0.0.1:8080/alpine/".into(),
            branch: "v3.21".into(),
            ..Repo::default()
        };
        assert_eq!(
            r.index_url(),
            "http://127.0.0.1:8080/alpine/v3.21/main/x86_64/APKINDEX.tar.gz"
        );
        r.validate().unwrap();
    }

    #[test]
    fn bad_branch_repo_and_arch_are_refused() {
        for (b, repo, arch) in [
            ("3.21", "main", "x86_64"),
            ("v3", "main", "x86_64"),
            ("latest-stable", "../x", "x86_64"),
            ("edge", "main", ""),
        ] {
            let r = Repo {
                branch: b.into(),
                repo: repo.into(),
                arch: arch.into(),
                ..Repo::default()
            };
            assert!(r.validate().is_err(), "{b} {repo} {arch}");
        }
    }
}
