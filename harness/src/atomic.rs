//! Writing a whole file so that readers see the old file or the new one, never a part: the
//! bytes go to a uniquely named temporary file in the same directory, renamed into place.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Writes `bytes` to `path` atomically, mode 0644 less the umask (as `std::fs::write` creates
/// files). Errors name `path`; on any error the temporary file is removed.
pub fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let named =
        |e: std::io::Error| std::io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = crate::scratch::tempfile_in(
        tempfile::Builder::new()
            .prefix(".")
            .suffix(".tmp")
            .permissions(std::fs::Permissions::from_mode(0o644)),
        dir,
    )
    .map_err(named)?;
    tmp.write_all(bytes).map_err(named)?;
    tmp.into_inner().persist(path).map_err(|e| named(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_whole_and_leaves_no_temporary() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        write(&p, b"one").unwrap();
        write(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
        let e = write(&d.path().join("no/such/dir/f"), b"x").unwrap_err();
        assert!(e.to_string().contains("no/such/dir/f"), "{e}");
    }
}
