//! Hashing, one place: sha256 of bytes and of files (streamed; remembered per process for files
//! that do not change while btfgate runs). A leaf.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

/// Identity of a file's content for the memo: path, device, inode, size, mtime.
type FileId = (PathBuf, u64, u64, u64, i64, i64);

/// Hex sha256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Hex sha256 of a file that does not change while it is read (a host tool, a package in the
/// cache): remembered for the process by path, inode, size and mtime, so that a test binary's
/// trials hash the ~200 MB of tools and the package once, not once per trial.
pub fn sha256_file_memo(p: &Path) -> crate::Result<String> {
    use std::os::unix::fs::MetadataExt;
    static MEMO: Mutex<BTreeMap<FileId, String>> = Mutex::new(BTreeMap::new());
    let md = std::fs::metadata(p).map_err(|e| crate::Error::io(p, "hash", e))?;
    let id = (
        p.to_path_buf(),
        md.dev(),
        md.ino(),
        md.len(),
        md.mtime(),
        md.mtime_nsec(),
    );
    if let Some(h) = MEMO.lock().ok().and_then(|m| m.get(&id).cloned()) {
        return Ok(h);
    }
    let h = sha256_file(p)?;
    if let Ok(mut m) = MEMO.lock() {
        m.insert(id, h.clone());
    }
    Ok(h)
}

/// Hex sha256 of a file, streamed.
pub fn sha256_file(p: &Path) -> crate::Result<String> {
    let mut f = File::open(p).map_err(|e| crate::Error::io(p, "hash", e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let k = f
            .read(&mut buf)
            .map_err(|e| crate::Error::io(p, "hash", e))?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
    }
    Ok(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_hash_follows_a_rewritten_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("tool");
        std::fs::write(&p, b"one").unwrap();
        let one = sha256_file_memo(&p).unwrap();
        assert_eq!(one, sha256_file(&p).unwrap());
        assert_eq!(one, sha256_file_memo(&p).unwrap());
        // Replaced (new inode) with content of the same size: a new hash.
        crate::atomic::write(&p, b"two").unwrap();
        assert_eq!(sha256_file_memo(&p).unwrap(), sha256_file(&p).unwrap());
        assert_ne!(sha256_file_memo(&p).unwrap(), one);
    }
}
