//! `verify`: the main job. Checks the given packages, or fetches and checks the host
//! distribution's default kernel flavours. (Static checks; the runtime half boots them.)

use std::path::PathBuf;

use anyhow::Result;

use crate::{fetch, inspect, CheckOpts};

pub fn run(packages: Vec<PathBuf>, opts: &CheckOpts) -> Result<u8> {
    let packages = if packages.is_empty() {
        fetch::host_defaults()?
    } else {
        packages
    };
    inspect::run(&packages, opts)
}
