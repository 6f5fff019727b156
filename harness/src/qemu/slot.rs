//! VM slots: at most a fixed number of guests run at once on this host, across processes
//! (`cargo test` trials on several threads, nextest's processes, a maintainer's `verify` beside
//! a CI job). A slot is an advisory lock on `<cache>/locks/vm-<i>.lock`; the kernel drops it
//! when the holder's process ends, whatever way it ends, so a crash never leaks one.
//!
//! The number is `$BTFGATE_VMS`, else the host's cores: each guest has one vCPU and under
//! TCG keeps one host core busy, so more guests than cores only slow every one of them down
//! (and stretch the guests' own timers towards their soft-lockup warnings).

use std::fs::File;
use std::path::Path;
use std::time::{Duration, Instant};

/// A held slot; dropping it frees the slot.
#[derive(Debug)]
pub struct Slot {
    _file: File,
    pub index: usize,
}

/// How many guests may run at once here.
pub fn count() -> usize {
    std::env::var("BTFGATE_VMS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

const PHASE: &str = "VM slot";

/// How long a boot waits for a free slot: longer than any guest's whole run (15 min by
/// default), so only a stuck holder makes it fail.
pub const WAIT: Duration = Duration::from_secs(20 * 60);

/// Takes a free slot under `dir`, waiting until `deadline` for one; `Err` says why not.
pub fn acquire_in(dir: &Path, slots: usize, deadline: Instant) -> crate::Result<Slot> {
    std::fs::create_dir_all(dir).map_err(|e| crate::Error::io(dir, PHASE, e))?;
    let started = Instant::now();
    let files = (0..slots.max(1))
        .map(|i| {
            let p = dir.join(format!("vm-{i}.lock"));
            File::create(&p).map_err(|e| crate::Error::io(&p, PHASE, e))
        })
        .collect::<crate::Result<Vec<_>>>()?;
    let mut files: Vec<Option<File>> = files.into_iter().map(Some).collect();
    loop {
        for (index, f) in files.iter_mut().enumerate() {
            let Some(file) = f.as_ref() else { continue };
            match file.try_lock() {
                Ok(()) => {
                    let file = f
                        .take()
                        .ok_or_else(|| crate::Error::failed(PHASE, "slot file taken twice"))?;
                    return Ok(Slot { _file: file, index });
                }
                Err(std::fs::TryLockError::WouldBlock) => {}
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(crate::Error::io(
                        &dir.join(format!("vm-{index}.lock")),
                        PHASE,
                        e,
                    ))
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(crate::Error::failed(
                PHASE,
                format!(
                    "all {slots} VM slots in {} stayed taken for {:.0} s (other guests are \
                     running; BTFGATE_VMS sets how many may run at once)",
                    dir.display(),
                    started.elapsed().as_secs_f64()
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// [`acquire_in`] under btfgate's cache, with [`count`] slots.
pub fn acquire(deadline: Instant) -> crate::Result<Slot> {
    acquire_in(&crate::paths::cache_dir().join("locks"), count(), deadline)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_exclusive_and_freed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let soon = || Instant::now() + Duration::from_millis(300);
        let a = acquire_in(dir.path(), 2, soon()).unwrap();
        let b = acquire_in(dir.path(), 2, soon()).unwrap();
        assert_ne!(a.index, b.index);
        // Both taken: the third waits out its deadline and says why.
        let e = acquire_in(dir.path(), 2, soon()).unwrap_err().to_string();
        assert!(e.contains("all 2 VM slots"), "{e}");
        drop(a);
        let c = acquire_in(dir.path(), 2, soon()).unwrap();
        assert_eq!(c.index, 0);
        drop((b, c));
    }
}
