//! Temporary files and directories that an interrupt removes. A scratch path lives in a
//! registry while its owner holds it; the interrupt path ([`crate::process::exit_on_interrupt`])
//! exits without running destructors, so it removes every registered path itself. Nothing a
//! cancelled run was writing (a download, an unpacked package, a kernel build) stays behind.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

static SCRATCH: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

fn registry() -> std::sync::MutexGuard<'static, BTreeSet<PathBuf>> {
    SCRATCH.lock().unwrap_or_else(|e| e.into_inner())
}

/// Keeps a path registered until dropped.
struct Registered(PathBuf);

impl Drop for Registered {
    fn drop(&mut self) {
        registry().remove(&self.0);
    }
}

/// A temporary value (a `tempfile::TempDir`, a `NamedTempFile`, a `TempPath`) whose path is
/// registered for removal on interrupt until it is dropped or taken back with `into_inner`.
pub struct Scratch<T> {
    inner: T,
    registered: Registered,
}

impl<T> Scratch<T> {
    /// Creates a temporary value with `make` (which returns it and its path) and registers
    /// the path, both under the registry's lock; once the program is being interrupted it
    /// creates nothing (`ErrorKind::Interrupted`). The interrupt path sets that flag before it
    /// takes the lock to remove what is registered, so a path is either created and registered
    /// before the removal (and removed by it) or never created: a path made just after the
    /// removal would outlive the program, which exits without running destructors.
    pub fn create(make: impl FnOnce() -> std::io::Result<(T, PathBuf)>) -> std::io::Result<Self> {
        create_unless(&INTERRUPTED, make)
    }

    /// Converts the value (a `NamedTempFile` into its `TempPath`), keeping the registration.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Scratch<U> {
        let Scratch { inner, registered } = self;
        Scratch {
            inner: f(inner),
            registered,
        }
    }

    /// Gives up the registration (the value was persisted, or its owner takes over).
    pub fn into_inner(self) -> T {
        let Scratch { inner, registered } = self;
        drop(registered);
        inner
    }
}

impl<T> std::ops::Deref for Scratch<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<T> std::ops::DerefMut for Scratch<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.inner
    }
}

/// A temporary directory in `parent` named `<prefix>…`, removed on drop and on interrupt.
pub fn tempdir_in(parent: &Path, prefix: &str) -> std::io::Result<Scratch<tempfile::TempDir>> {
    Scratch::create(|| {
        let d = tempfile::Builder::new().prefix(prefix).tempdir_in(parent)?;
        let p = d.path().to_path_buf();
        Ok((d, p))
    })
    .map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("create a temporary directory in {}: {e}", parent.display()),
        )
    })
}

/// A temporary file in `dir` as `builder` names it, removed on drop and on interrupt.
pub fn tempfile_in(
    builder: &tempfile::Builder,
    dir: &Path,
) -> std::io::Result<Scratch<tempfile::NamedTempFile>> {
    Scratch::create(|| {
        let t = builder.tempfile_in(dir)?;
        let p = t.path().to_path_buf();
        Ok((t, p))
    })
}

impl Scratch<tempfile::TempDir> {
    /// Puts the finished directory at `to`, replacing what is there. It is renamed while still
    /// registered (an interrupt in between finds nothing left to remove, rather than a kept
    /// directory to leave behind), then the moved path is forgotten.
    pub fn rename_into_place(self, to: &Path) -> std::io::Result<()> {
        let _ = std::fs::remove_dir_all(to);
        std::fs::rename(self.path(), to)?;
        let _ = self.into_inner().keep();
        Ok(())
    }
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// [`Scratch::create`] with the flag given (tests use their own).
fn create_unless<T>(
    flag: &AtomicBool,
    make: impl FnOnce() -> std::io::Result<(T, PathBuf)>,
) -> std::io::Result<Scratch<T>> {
    let mut reg = registry();
    let (inner, path) = refuse_if(flag).and_then(|()| make())?;
    reg.insert(path.clone());
    Ok(Scratch {
        inner,
        registered: Registered(path),
    })
}

/// Runs `f`, which creates a path that may already be registered (a directory the caller
/// holds as [`Scratch`]: `create_dir_all` would make it again after an interrupt removed it),
/// under the registry's lock, unless the program is being interrupted.
pub fn creating<R>(f: impl FnOnce() -> std::io::Result<R>) -> std::io::Result<R> {
    let _reg = registry();
    refuse_if(&INTERRUPTED)?;
    f()
}

fn refuse_if(flag: &AtomicBool) -> std::io::Result<()> {
    if flag.load(Ordering::SeqCst) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::Interrupted,
            "interrupted: no temporary path is created any more",
        ));
    }
    Ok(())
}

/// Whether the program is being interrupted: writers stop creating paths (a directory being
/// removed must not be created again underneath the remover).
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Removes every registered path (the interrupt path); returns how many existed.
pub(crate) fn remove_all() -> usize {
    INTERRUPTED.store(true, Ordering::SeqCst);
    remove_under(Path::new("/"))
}

/// Removes the registered paths under `root`; returns how many existed.
fn remove_under(root: &Path) -> usize {
    let reg = registry();
    let mut n = 0;
    for p in reg.iter().filter(|p| p.starts_with(root)) {
        let existed = std::fs::symlink_metadata(p).is_ok();
        // A writer may still be finishing a file inside (it stops at its next path): retry
        // until the path is gone.
        for _ in 0..50 {
            match std::fs::symlink_metadata(p) {
                Ok(m) if m.is_dir() => {
                    let _ = std::fs::remove_dir_all(p);
                }
                Ok(_) => {
                    let _ = std::fs::remove_file(p);
                }
                Err(_) => break,
            }
            if std::fs::symlink_metadata(p).is_err() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        n += usize::from(existed);
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_until_dropped_or_kept_and_removed_on_interrupt() {
        let base = tempfile::tempdir().unwrap();
        let a = tempdir_in(base.path(), ".a-").unwrap();
        let pa = a.path().to_path_buf();
        assert!(registry().contains(&pa));
        drop(a);
        assert!(!registry().contains(&pa) && !pa.exists());

        let b = tempdir_in(base.path(), ".b-").unwrap();
        let pb = b.path().to_path_buf();
        std::fs::write(pb.join("half-written"), b"x").unwrap();
        let kept = b.into_inner().keep();
        assert!(!registry().contains(&pb) && kept.exists());

        let c = tempdir_in(base.path(), ".c-").unwrap();
        let pc = c.path().to_path_buf();
        std::fs::write(pc.join("half-written"), b"x").unwrap();
        // Only under this test's directory: other tests of this binary hold registrations too.
        assert_eq!(remove_under(base.path()), 1);
        assert!(!pc.exists(), "the interrupt path left {}", pc.display());
        drop(c);
    }

    #[test]
    fn nothing_is_created_once_interrupted() {
        let base = tempfile::tempdir().unwrap();
        let at = base.path().join("d");
        let make = || std::fs::create_dir(&at).map(|()| ((), at.clone()));
        let flag = AtomicBool::new(true);
        let e = create_unless(&flag, make).err().unwrap();
        assert_eq!(e.kind(), std::io::ErrorKind::Interrupted);
        assert!(!at.exists() && !registry().contains(&at));
        flag.store(false, Ordering::SeqCst);
        let made = create_unless(&flag, make).unwrap();
        assert!(at.is_dir() && registry().contains(&at));
        drop(made);
        assert!(!registry().contains(&at));
    }
}
