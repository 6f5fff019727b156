//! VM slots: at most a fixed number of guests run at once on this host, across processes
//! (`cargo test` trials on several threads, nextest's processes, a maintainer's `verify` beside
//! a CI job). A slot is an advisory lock on `<cache>/locks/vm-<i>.lock`; the kernel drops it
//! when the holder's process ends, whatever way it ends, so a crash never leaks one.
//!
//! The number is `$BTFGATE_VMS`, else the host's cores, and a guest holds one slot per vCPU
//! (at most all of them): under TCG each vCPU keeps one host core busy, so more vCPUs than
//! cores only slow every guest down (and stretch the guests' own timers towards their
//! soft-lockup warnings). A guest takes its slots all at once or none, so two guests never
//! each hold half of what the other waits for.

use std::fs::File;
use std::path::Path;
use std::time::{Duration, Instant};

/// Held slots; dropping them frees them.
#[derive(Debug)]
pub struct Slot {
    _files: Vec<File>,
    /// The slot numbers held, in order.
    pub indices: Vec<usize>,
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

/// Takes `want` free slots of the `slots` under `dir` (at most all of them), waiting until
/// `deadline`; `Err` says why not.
pub fn acquire_in(dir: &Path, slots: usize, want: usize, deadline: Instant) -> crate::Result<Slot> {
    std::fs::create_dir_all(dir).map_err(|e| crate::Error::io(dir, PHASE, e))?;
    let started = Instant::now();
    let files = (0..slots.max(1))
        .map(|i| {
            let p = dir.join(format!("vm-{i}.lock"));
            File::create(&p).map_err(|e| crate::Error::io(&p, PHASE, e))
        })
        .collect::<crate::Result<Vec<_>>>()?;
    let want = want.clamp(1, files.len());
    loop {
        let mut held = Vec::new();
        for (index, file) in files.iter().enumerate() {
            if held.len() == want {
                break;
            }
            match file.try_lock() {
                Ok(()) => held.push(index),
                Err(std::fs::TryLockError::WouldBlock) => {}
                Err(std::fs::TryLockError::Error(e)) => {
                    unlock(&files, &held);
                    return Err(crate::Error::io(
                        &dir.join(format!("vm-{index}.lock")),
                        PHASE,
                        e,
                    ));
                }
            }
        }
        if held.len() == want {
            let taken = (files.into_iter().enumerate())
                .filter(|(i, _)| held.contains(i))
                .map(|(_, f)| f)
                .collect();
            return Ok(Slot {
                _files: taken,
                indices: held,
            });
        }
        // All or none: give back what this pass took.
        unlock(&files, &held);
        if Instant::now() >= deadline {
            return Err(crate::Error::failed(
                PHASE,
                format!(
                    "{want} of the {slots} VM slots in {} did not come free in {:.0} s (other \
                     guests are running; BTFGATE_VMS sets how many vCPUs may run at once)",
                    dir.display(),
                    started.elapsed().as_secs_f64()
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn unlock(files: &[File], held: &[usize]) {
    for i in held {
        if let Some(f) = files.get(*i) {
            let _ = f.unlock();
        }
    }
}

/// [`acquire_in`] under btfgate's cache: [`count`] slots, one per vCPU of the guest.
pub fn acquire(vcpus: u32, deadline: Instant) -> crate::Result<Slot> {
    let want = usize::try_from(vcpus).unwrap_or(usize::MAX);
    acquire_in(
        &crate::paths::cache_dir().join("locks"),
        count(),
        want,
        deadline,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_exclusive_and_freed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let soon = || Instant::now() + Duration::from_millis(300);
        let a = acquire_in(dir.path(), 2, 1, soon()).unwrap();
        let b = acquire_in(dir.path(), 2, 1, soon()).unwrap();
        assert_ne!(a.indices, b.indices);
        // Both taken: the third waits out its deadline and says why.
        let e = acquire_in(dir.path(), 2, 1, soon())
            .unwrap_err()
            .to_string();
        assert!(e.contains("1 of the 2 VM slots"), "{e}");
        drop(a);
        let c = acquire_in(dir.path(), 2, 1, soon()).unwrap();
        assert_eq!(c.indices, vec![0]);
        drop((b, c));
    }

    #[test]
    fn a_guest_takes_one_slot_per_vcpu_all_or_none() {
        let dir = tempfile::tempdir().unwrap();
        let soon = || Instant::now() + Duration::from_millis(300);
        let one = acquire_in(dir.path(), 3, 1, soon()).unwrap();
        let two = acquire_in(dir.path(), 3, 2, soon()).unwrap();
        assert_eq!(
            (one.indices.clone(), two.indices.clone()),
            (vec![0], vec![1, 2])
        );
        drop(one);
        // One slot is free, two are wanted: none is kept while waiting.
        let e = acquire_in(dir.path(), 3, 2, soon())
            .unwrap_err()
            .to_string();
        assert!(e.contains("2 of the 3 VM slots"), "{e}");
        let again = acquire_in(dir.path(), 3, 1, soon()).unwrap();
        assert_eq!(again.indices, vec![0]);
        drop((two, again));
        // More vCPUs than slots: all the slots, not a wait that can never end.
        let all = acquire_in(dir.path(), 2, 4, soon()).unwrap();
        assert_eq!(all.indices, vec![0, 1]);
    }
}
