//! Downloads into the content-addressed cache: a temporary file, verification, then a rename; one lock per file so concurrent fetches wait for each other instead of racing.
//!
//! Layout under the cache root (ARCHITECTURE.md, "Cache"):
//! - `sha256/<hex>/<file name>`: verified files, named by the SHA-256 of their content;
//! - `<index>/<file name>`: symlinks to them (`apt/`, `apk/`, `alpine/<branch>/<repo>/<arch>/`);
//! - `tmp/.<key>.<random>.part`: downloads in progress (removed on every error path, and swept
//!   by the next holder of the same lock after a crash);
//! - `locks/<key>.lock`: advisory locks (`flock`), one per file being fetched.

pub mod alpine;

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tempfile::{NamedTempFile, TempPath};

use crate::scratch::Scratch;

/// Why a fetch did not deliver a verified file.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The mirror or network is unavailable (connection refused, timeout, HTTP 5xx, an
    /// interrupted transfer): infrastructure, not the package's fault.
    #[error("{what}: {msg}")]
    Unavailable { what: String, msg: String },
    /// What was asked for does not exist (HTTP 404, no such package in the index).
    #[error("{what}: {msg}")]
    NotFound { what: String, msg: String },
    /// The download arrived but failed verification (signature, checksum, size, arch).
    #[error("{what}: refused: {msg}")]
    Refused { what: String, msg: String },
    /// The cache itself could not be written.
    #[error("{what}: {source}")]
    Cache {
        what: String,
        #[source]
        source: io::Error,
    },
}

impl FetchError {
    fn cache(what: impl Into<String>, source: io::Error) -> Self {
        FetchError::Cache {
            what: what.into(),
            source,
        }
    }
    fn refused(what: impl Into<String>, msg: impl Into<String>) -> Self {
        FetchError::Refused {
            what: what.into(),
            msg: msg.into(),
        }
    }
}

/// The content-addressed cache of fetched files.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    pub fn new(root: impl Into<PathBuf>) -> Store {
        Store { root: root.into() }
    }

    /// The store in btfgate's cache directory ([`crate::paths::cache_dir`]).
    pub fn default_cache() -> Store {
        Store::new(crate::paths::cache_dir())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Takes the lock named `key`, waiting at most `timeout` for another process holding it.
    /// Holding it, removes the `.part` files a crashed holder left behind.
    pub fn lock(&self, key: &str, timeout: Duration) -> Result<Lock, FetchError> {
        let key = sanitize_key(key);
        let dir = self.root.join("locks");
        std::fs::create_dir_all(&dir)
            .map_err(|e| FetchError::cache(format!("create {}", dir.display()), e))?;
        let path = dir.join(format!("{key}.lock"));
        let file = File::create(&path)
            .map_err(|e| FetchError::cache(format!("open {}", path.display()), e))?;
        let deadline = Instant::now() + timeout;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(FetchError::Unavailable {
                        what: format!("lock {}", path.display()),
                        msg: format!(
                            "another process has held it for more than {} s",
                            timeout.as_secs()
                        ),
                    })
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(FetchError::cache(format!("lock {}", path.display()), e))
                }
            }
        }
        let tmp = self.root.join("tmp");
        if let Ok(rd) = std::fs::read_dir(&tmp) {
            let prefix = format!(".{key}.");
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.starts_with(&prefix) && n.ends_with(".part") {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Ok(Lock { _file: file, key })
    }

    /// A new temporary file for the download guarded by `lock`; it is deleted when dropped
    /// unless [`Store::put`] moves it into the store.
    pub fn temp_file(&self, lock: &Lock) -> Result<Scratch<NamedTempFile>, FetchError> {
        let dir = self.root.join("tmp");
        std::fs::create_dir_all(&dir)
            .map_err(|e| FetchError::cache(format!("create {}", dir.display()), e))?;
        crate::scratch::tempfile_in(
            tempfile::Builder::new()
                .prefix(&format!(".{}.", lock.key))
                .suffix(".part"),
            &dir,
        )
        .map_err(|e| FetchError::cache(format!("create a temporary file in {}", dir.display()), e))
    }

    /// Moves the verified file at `tmp` to `sha256/<hex>/<name>` and points `<index>/<name>`
    /// at it; returns the stored path. Safe against a concurrent `put` of the same content.
    pub fn put(&self, tmp: TempPath, name: &str, index: &str) -> Result<PathBuf, FetchError> {
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(FetchError::refused(
                name.to_string(),
                "not a plain file name",
            ));
        }
        let sha = crate::hash::sha256_file(&tmp).map_err(|e| {
            FetchError::cache(format!("hash {}", tmp.display()), io::Error::other(e))
        })?;
        let blob_dir = self.root.join("sha256").join(&sha);
        std::fs::create_dir_all(&blob_dir)
            .map_err(|e| FetchError::cache(format!("create {}", blob_dir.display()), e))?;
        let blob = blob_dir.join(name);
        // rename(2) is atomic: a concurrent put of the same bytes replaces a file by its twin.
        tmp.persist(&blob).map_err(|e| {
            FetchError::cache(format!("move {} into the cache", e.path.display()), e.error)
        })?;
        let index_dir = self.root.join(index);
        std::fs::create_dir_all(&index_dir)
            .map_err(|e| FetchError::cache(format!("create {}", index_dir.display()), e))?;
        let link = index_dir.join(name);
        let tmp_link = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".link")
            .make_in(&index_dir, |p| std::os::unix::fs::symlink(&blob, p))
            .map_err(|e| FetchError::cache(format!("link {}", link.display()), e))?;
        tmp_link.into_temp_path().persist(&link).map_err(|e| {
            FetchError::cache(format!("rename {} into place", link.display()), e.error)
        })?;
        Ok(blob)
    }

    /// The stored file `<index>/<name>` points at, if it is there.
    pub fn find(&self, index: &str, name: &str) -> Option<PathBuf> {
        let p = std::fs::canonicalize(self.root.join(index).join(name)).ok()?;
        p.is_file().then_some(p)
    }
}

/// A held fetch lock (released when dropped).
#[derive(Debug)]
pub struct Lock {
    _file: File,
    key: String,
}

fn sanitize_key(key: &str) -> String {
    key.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.+=".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Deadlines of one download.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// To connect, and to receive the response headers.
    pub connect: Duration,
    /// The whole transfer.
    pub total: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines {
            connect: Duration::from_secs(30),
            total: Duration::from_secs(30 * 60),
        }
    }
}

/// Downloads `url` (http, https, `file://` or a plain path) into `dest`, refusing more than
/// `max` bytes; shows a progress bar on a terminal when `progress`. Returns the bytes written.
pub fn download(
    url: &str,
    dest: &mut File,
    expect: Option<u64>,
    progress: bool,
    deadlines: Deadlines,
) -> Result<u64, FetchError> {
    transfer(url, dest, expect, expect, progress, deadlines)
}

/// [`download`] of a file whose size is not known in advance, refused past `limit`
/// (an `APKINDEX.tar.gz`: [`crate::limits::APKINDEX_FILE`]).
pub fn download_at_most(
    url: &str,
    dest: &mut File,
    limit: crate::limits::Limit,
    progress: bool,
    deadlines: Deadlines,
) -> Result<u64, FetchError> {
    let written = transfer(url, dest, None, Some(limit.max), progress, deadlines)?;
    if written > limit.max {
        let x = crate::limits::Exceeded::new(limit, "the download");
        return Err(FetchError::refused(
            format!("download {url}"),
            x.to_string(),
        ));
    }
    Ok(written)
}

/// Downloads `url` into `dest`: exactly `expect` bytes when given, at most `max` (one byte
/// more is read, to tell).
fn transfer(
    url: &str,
    dest: &mut File,
    expect: Option<u64>,
    max: Option<u64>,
    progress: bool,
    deadlines: Deadlines,
) -> Result<u64, FetchError> {
    let what = format!("download {url}");
    let max = max.unwrap_or(u64::MAX);
    let local = url
        .strip_prefix("file://")
        .or_else(|| url.starts_with('/').then_some(url));
    let bar = bar(url, expect, progress);
    let written = if let Some(path) = local {
        let f = File::open(path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => FetchError::NotFound {
                what: what.clone(),
                msg: "no such file".into(),
            },
            _ => FetchError::cache(format!("open {path}"), e),
        })?;
        copy(&what, &mut f.take(max.saturating_add(1)), dest, &bar)?
    } else {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_connect(Some(deadlines.connect))
            .timeout_recv_response(Some(deadlines.connect))
            .timeout_global(Some(deadlines.total))
            .http_status_as_error(false)
            .build()
            .into();
        let mut resp = agent.get(url).call().map_err(|e| FetchError::Unavailable {
            what: what.clone(),
            msg: e.to_string(),
        })?;
        let status = resp.status();
        if status.as_u16() == 404 {
            return Err(FetchError::NotFound {
                what,
                msg: "HTTP 404 Not Found".into(),
            });
        }
        if !status.is_success() {
            return Err(FetchError::Unavailable {
                what,
                msg: format!("HTTP {status}"),
            });
        }
        if let (Some(len), Some(want)) = (resp.body().content_length(), expect) {
            if len != want {
                bar.finish_and_clear();
                return Err(FetchError::refused(
                    what,
                    format!("the server announces {len} bytes, the index says {want}"),
                ));
            }
        }
        let mut reader = resp
            .body_mut()
            .with_config()
            .limit(max.saturating_add(1))
            .reader();
        copy(&what, &mut reader, dest, &bar)?
    };
    bar.finish_and_clear();
    if let Some(want) = expect {
        if written != want {
            return Err(FetchError::refused(
                what,
                format!(
                    "{} {written} bytes, the index says {want}",
                    if written < want {
                        "truncated: got"
                    } else {
                        "too long: got more than"
                    }
                ),
            ));
        }
    }
    dest.flush()
        .and_then(|()| dest.sync_all())
        .map_err(|e| FetchError::cache("write the download", e))?;
    Ok(written)
}

fn bar(url: &str, len: Option<u64>, progress: bool) -> ProgressBar {
    if !progress {
        return ProgressBar::hidden();
    }
    let name = url.rsplit('/').next().unwrap_or(url).to_string();
    let bar = ProgressBar::with_draw_target(len, ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(name);
    bar
}

fn copy(
    what: &str,
    src: &mut dyn Read,
    dest: &mut File,
    bar: &ProgressBar,
) -> Result<u64, FetchError> {
    let mut buf = vec![0u8; 256 << 10];
    let mut total = 0u64;
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                bar.finish_and_clear();
                return Err(FetchError::Unavailable {
                    what: what.to_string(),
                    msg: format!("interrupted after {total} bytes: {e}"),
                });
            }
        };
        dest.write_all(&buf[..n])
            .map_err(|e| FetchError::cache("write the download", e))?;
        total += n as u64;
        bar.set_position(total);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_is_content_addressed_and_links_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let lock = store.lock("k", Duration::from_secs(1)).unwrap();
        let mut t = store.temp_file(&lock).unwrap();
        t.write_all(b"hello").unwrap();
        let p = store
            .put(t.into_inner().into_temp_path(), "a.apk", "idx")
            .unwrap();
        assert!(p.starts_with(dir.path().join("sha256")));
        assert_eq!(
            store.find("idx", "a.apk").unwrap(),
            std::fs::canonicalize(&p).unwrap()
        );
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
    }

    #[test]
    fn lock_waits_then_times_out_and_sweeps_stale_parts() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
        let stale = dir.path().join("tmp/.pkg-1.abc.part");
        std::fs::write(&stale, b"half").unwrap();
        let held = store.lock("pkg-1", Duration::from_secs(1)).unwrap();
        assert!(
            !stale.exists(),
            "the holder sweeps what a crashed fetch left"
        );
        let e = store.lock("pkg-1", Duration::from_millis(300)).unwrap_err();
        assert!(e.to_string().contains("another process"), "{e}");
        drop(held);
        store.lock("pkg-1", Duration::from_millis(300)).unwrap();
    }

    #[test]
    fn local_download_checks_the_expected_size() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::write(&src, b"0123456789").unwrap();
        let url = format!("file://{}", src.display());
        let mut out = tempfile::tempfile().unwrap();
        let d = Deadlines::default();
        assert_eq!(download(&url, &mut out, Some(10), false, d).unwrap(), 10);
        let e = download(&url, &mut out, Some(11), false, d).unwrap_err();
        assert!(
            e.to_string()
                .contains("truncated: got 10 bytes, the index says 11"),
            "{e}"
        );
        let e = download(&url, &mut out, Some(9), false, d).unwrap_err();
        assert!(e.to_string().contains("too long"), "{e}");
        let e = download("file:///nonexistent/x", &mut out, None, false, d).unwrap_err();
        assert!(matches!(e, FetchError::NotFound { .. }), "{e}");
    }

    /// A download of unknown size (an APKINDEX) is refused one byte past its limit.
    #[test]
    fn download_of_unknown_size_stops_at_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("APKINDEX.tar.gz");
        std::fs::write(&src, b"0123456789").unwrap();
        let url = format!("file://{}", src.display());
        let mut out = tempfile::tempfile().unwrap();
        let d = Deadlines::default();
        let limit = |max| crate::limits::Limit {
            max,
            ..crate::limits::APKINDEX_FILE
        };
        assert_eq!(
            download_at_most(&url, &mut out, limit(10), false, d).unwrap(),
            10
        );
        let e = download_at_most(&url, &mut out, limit(9), false, d).unwrap_err();
        assert!(
            matches!(e, FetchError::Refused { .. }) && e.to_string().contains("APKINDEX_FILE"),
            "{e}"
        );
    }
}
