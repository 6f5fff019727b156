//! `inspect`: static checks on packages, printed as a table with evidence or as JSON.

use std::path::PathBuf;

use anyhow::Result;
use harness::checks::{static_, Status};
use harness::kernel::Kernel;

use crate::report;
use crate::CheckOpts;

/// Inspects every package in turn; the exit code is the worst outcome.
/// A package that cannot be read is an error (exit 2) naming the file.
pub fn run(paths: &[PathBuf], opts: &CheckOpts) -> Result<u8> {
    let params = static_::StaticParams {
        budget: opts.budget,
    };
    let mut code = 0;
    for path in paths {
        let kernel = Kernel::load(path, &opts.read_options())?;
        let checks = static_::run_all(&kernel, &params);
        if checks.iter().any(|c| c.status == Status::Fail) {
            code = crate::EXIT_FAIL;
        }
        if opts.json {
            println!(
                "{}",
                serde_json::to_string(&report::json(&kernel, &checks))?
            );
        } else {
            print!("{}", report::table(&kernel, &checks, opts.budget));
        }
    }
    Ok(code)
}
