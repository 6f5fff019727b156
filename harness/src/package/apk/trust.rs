//! The default trust of APKs and Alpine indexes, chosen in one place ([`resolve`]): a keys
//! directory named by the caller, else the host's `/etc/apk/keys` when it exists (an Alpine
//! host's own trust), else Alpine's published signing public keys, which btfgate carries
//! (`harness/keys/alpine/`, embedded in the binary so that a copied binary works anywhere) and
//! writes once into `<cache>/keys/alpine/`, checked byte for byte against the embedded copy
//! (and rewritten if they differ) every time they are chosen.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The host's keys directory (apk's own trust on an Alpine host).
pub const HOST_KEYS: &str = "/etc/apk/keys";

/// What the bundled keys are called in messages.
pub const BUNDLED_NAME: &str = "btfgate's bundled Alpine keys";

/// One of Alpine's signing public keys that btfgate carries.
#[derive(Debug, Clone, Copy)]
pub struct BundledKey {
    /// The file name, which is the key id of `.SIGN.RSA.<keyid>`.
    pub name: &'static str,
    /// The architecture whose repositories Alpine signs with it.
    pub arch: &'static str,
    /// The `.rsa.pub` file, byte for byte as Alpine publishes it.
    pub pem: &'static [u8],
}

macro_rules! bundled {
    ($id:literal, $arch:literal) => {
        BundledKey {
            name: concat!("alpine-devel@lists.alpinelinux.org-", $id, ".rsa.pub"),
            arch: $arch,
            pem: include_bytes!(concat!(
                "../../../keys/alpine/alpine-devel@lists.alpinelinux.org-",
                $id,
                ".rsa.pub"
            )),
        }
    };
}

/// Alpine's signing public keys for x86_64 and aarch64, as checked in under `harness/keys/alpine/`.
pub const BUNDLED: [BundledKey; 4] = [
    bundled!("4a6a0840", "x86_64"),
    bundled!("5261cecb", "x86_64"),
    bundled!("6165ee59", "x86_64"),
    bundled!("616ae350", "aarch64"),
];

/// A chosen keys directory and why it was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// A directory the caller named (`--keys-dir`).
    Explicit(PathBuf),
    /// The host's `/etc/apk/keys`.
    Host(PathBuf),
    /// btfgate's bundled keys, written (and checked) in this directory of the cache.
    Bundled(PathBuf),
}

impl Trust {
    /// The keys directory.
    pub fn dir(&self) -> &Path {
        match self {
            Trust::Explicit(d) | Trust::Host(d) | Trust::Bundled(d) => d,
        }
    }
}

impl std::fmt::Display for Trust {
    /// `btfgate's bundled Alpine keys`, or the directory.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Trust::Bundled(_) => f.write_str(BUNDLED_NAME),
            Trust::Explicit(d) | Trust::Host(d) => write!(f, "{}", d.display()),
        }
    }
}

/// How a keys directory [`resolve`] chose is named in messages: `btfgate's bundled Alpine keys`
/// for [`bundled_dir`], else the directory.
pub fn describe(dir: &Path) -> String {
    if dir == bundled_dir() {
        BUNDLED_NAME.to_string()
    } else {
        dir.display().to_string()
    }
}

/// Where the bundled keys are written: `<cache>/keys/alpine/`.
pub fn bundled_dir() -> PathBuf {
    crate::paths::cache_dir().join("keys").join("alpine")
}

/// The trust to read with: `explicit` if given (an error naming it when it is not a directory:
/// an explicit choice is never replaced), else the host's `/etc/apk/keys` if it exists, else
/// btfgate's bundled keys, written into [`bundled_dir`] and checked there.
pub fn resolve(explicit: Option<&Path>) -> Result<Trust> {
    choose(explicit, Path::new(HOST_KEYS), &bundled_dir())
}

/// [`resolve`] with the host's directory and the bundled keys' directory as arguments.
fn choose(explicit: Option<&Path>, host: &Path, bundled: &Path) -> Result<Trust> {
    if let Some(d) = explicit {
        if !d.is_dir() {
            return Err(Error::bad(
                d,
                "choose trusted keys",
                "the keys directory does not exist (a keys directory named explicitly is never \
                 replaced by the default trust)",
            ));
        }
        return Ok(Trust::Explicit(d.to_path_buf()));
    }
    if host.is_dir() {
        return Ok(Trust::Host(host.to_path_buf()));
    }
    materialize(bundled)?;
    Ok(Trust::Bundled(bundled.to_path_buf()))
}

/// The default keys directory for callers that cannot fail
/// ([`ReadOptions::default`](crate::package::ReadOptions)): [`resolve`]`(None)`'s. If the bundled
/// keys cannot be written, the host's absent `/etc/apk/keys`, which trusts nothing (so a
/// signed package is refused as untrusted, never read with keys that were not checked).
pub fn default_keys_dir() -> PathBuf {
    resolve(None)
        .map(|t| t.dir().to_path_buf())
        .unwrap_or_else(|_| PathBuf::from(HOST_KEYS))
}

/// Makes `dir` hold exactly the bundled keys, byte for byte: a key file that is missing, not
/// a regular file, or differs is rewritten (atomically); anything else in the directory (which
/// would be trusted too) is removed, except the temporary files of a concurrent writer. Then
/// every key is read back and compared.
pub fn materialize(dir: &Path) -> Result<()> {
    const PHASE: &str = "write btfgate's bundled Alpine keys";
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, PHASE, e))?;
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, PHASE, e))?;
    for e in entries {
        let e = e.map_err(|e| Error::io(dir, PHASE, e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let temporary = name.starts_with('.') && name.ends_with(".tmp");
        if temporary || BUNDLED.iter().any(|k| k.name == name) {
            continue;
        }
        let p = e.path();
        let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
        let removed = if is_dir {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        removed.map_err(|e| Error::io(&p, PHASE, e))?;
    }
    for k in &BUNDLED {
        let p = dir.join(k.name);
        if !holds(&p, k.pem) {
            crate::atomic::write(&p, k.pem).map_err(|e| Error::io(&p, PHASE, e))?;
            if !holds(&p, k.pem) {
                return Err(Error::bad(
                    &p,
                    PHASE,
                    "the key file differs from the bundled key after it was rewritten",
                ));
            }
        }
    }
    Ok(())
}

/// Whether `p` is a regular file (not a link) whose bytes are `want`.
fn holds(p: &Path, want: &[u8]) -> bool {
    if !std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_file()) {
        return false;
    }
    let mut got = Vec::with_capacity(want.len() + 1);
    let read =
        std::fs::File::open(p).and_then(|f| f.take(want.len() as u64 + 1).read_to_end(&mut got));
    read.is_ok() && got == want
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checked_in(name: &str) -> Vec<u8> {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("keys/alpine")
            .join(name);
        std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    #[test]
    fn embedded_keys_are_the_checked_in_files() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("keys/alpine");
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let mut bundled: Vec<String> = BUNDLED.iter().map(|k| k.name.to_string()).collect();
        bundled.sort();
        assert_eq!(names, bundled);
        for k in &BUNDLED {
            assert_eq!(k.pem, checked_in(k.name).as_slice(), "{}", k.name);
            assert!(
                k.pem.starts_with(b"-----BEGIN PUBLIC KEY-----"),
                "{}",
                k.name
            );
        }
    }

    /// The README lists each bundled key with its architecture and the SHA-256 of its file.
    #[test]
    fn readme_lists_each_bundled_key_and_its_fingerprint() {
        let readme =
            std::fs::read_to_string(crate::paths::workspace_root().join("README.md")).unwrap();
        for k in &BUNDLED {
            let sha = crate::hash::sha256_hex(k.pem);
            assert!(
                readme.lines().any(|l| l.contains(k.name)
                    && l.contains(&sha)
                    && l.contains(&format!("`{}`", k.arch))),
                "README.md has no line naming {}, `{}` and {sha}",
                k.name,
                k.arch
            );
        }
    }

    fn same_as_bundled(dir: &Path) -> bool {
        let mut n = 0;
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(k) = BUNDLED.iter().find(|k| k.name == name) else {
                return false;
            };
            if !e.file_type().unwrap().is_file() || std::fs::read(e.path()).unwrap() != k.pem {
                return false;
            }
            n += 1;
        }
        n == BUNDLED.len()
    }

    #[test]
    fn materialized_keys_are_rewritten_when_tampered() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("keys/alpine");
        materialize(&dir).unwrap();
        assert!(same_as_bundled(&dir));
        let x86 = dir.join(BUNDLED[2].name);
        let arm = dir.join(BUNDLED[3].name);
        let mtime = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();
        let before = mtime(&x86);
        materialize(&dir).unwrap();
        assert_eq!(mtime(&x86), before, "an intact key is not rewritten");
        // Each tampering is undone.
        std::fs::write(&x86, b"-----BEGIN PUBLIC KEY-----\nforged\n").unwrap();
        std::fs::remove_file(&arm).unwrap();
        std::os::unix::fs::symlink("/dev/null", &arm).unwrap();
        std::fs::write(dir.join("planted.rsa.pub"), BUNDLED[0].pem).unwrap();
        std::fs::create_dir(dir.join("planted-dir")).unwrap();
        assert!(
            !same_as_bundled(&dir),
            "the control: the tampered directory"
        );
        materialize(&dir).unwrap();
        assert!(same_as_bundled(&dir));
        // A key truncated, or with a byte appended, is rewritten.
        let mut longer = BUNDLED[2].pem.to_vec();
        longer.push(b'\n');
        std::fs::write(&x86, &longer).unwrap();
        std::fs::write(&arm, &BUNDLED[3].pem[..100]).unwrap();
        assert!(!same_as_bundled(&dir));
        materialize(&dir).unwrap();
        assert!(same_as_bundled(&dir));
    }

    #[test]
    fn an_explicit_dir_wins_then_the_host_then_the_bundled_keys() {
        let tmp = tempfile::tempdir().unwrap();
        let (host, bundled, mine) = (
            tmp.path().join("host"),
            tmp.path().join("cache/keys/alpine"),
            tmp.path().join("mine"),
        );
        std::fs::create_dir(&mine).unwrap();
        let t = choose(Some(&mine), &host, &bundled).unwrap();
        assert_eq!(t, Trust::Explicit(mine.clone()));
        assert_eq!(t.to_string(), mine.display().to_string());
        assert!(!bundled.exists(), "an explicit choice writes nothing");
        // A missing explicit directory is an error naming it, never the default.
        let gone = tmp.path().join("gone");
        let e = choose(Some(&gone), &host, &bundled).unwrap_err();
        assert!(e.to_string().contains(&gone.display().to_string()), "{e}");
        assert!(e.to_string().contains("does not exist"), "{e}");
        // No host keys: the bundled keys, written into the cache.
        let t = choose(None, &host, &bundled).unwrap();
        assert_eq!(t, Trust::Bundled(bundled.clone()));
        assert_eq!(t.to_string(), BUNDLED_NAME);
        assert!(same_as_bundled(&bundled));
        // The host's keys when they exist.
        std::fs::create_dir(&host).unwrap();
        let t = choose(None, &host, &bundled).unwrap();
        assert_eq!(t, Trust::Host(host.clone()));
        assert_eq!(t.to_string(), host.display().to_string());
        // A cache that cannot be written is an error, not a silent trust.
        let file = tmp.path().join("file");
        std::fs::write(&file, b"").unwrap();
        assert!(choose(None, &tmp.path().join("nohost"), &file.join("alpine")).is_err());
    }
}
