//! Alpine kernels through the host's apk (`apk fetch` checks the signature with the host's
//! keys), into the store.

use std::path::PathBuf;

use anyhow::{Context, Result};
use harness::paths::cache_dir;
use harness::process::Cmd;

use super::store::{single_file, store};
use super::{Unavailable, DOWNLOAD};

/// `apk fetch NAME` into the cache (apk verifies the signature with /etc/apk/keys).
pub(super) fn apk_fetch(name: &str) -> Result<PathBuf> {
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
