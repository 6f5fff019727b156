//! `inspect`: static checks on packages, printed as a table with evidence or as JSON.

use anyhow::Result;
use harness::checks::{static_, Status};
use harness::kernel::Kernel;

use crate::fetch::MirrorArgs;
use crate::CheckOpts;
use crate::{report, spec};

/// Inspects every kernel in turn (each a package spec: a file, a directory, `apt:`,
/// `alpine:`, `target:`, or several joined by commas for a kernel split over packages); the
/// exit code is the worst outcome. A package that cannot be read is an error (exit 2) naming
/// the file.
pub fn run(specs: &[String], opts: &CheckOpts, mirror: &MirrorArgs) -> Result<u8> {
    let params = static_::StaticParams {
        budget: opts.budget,
    };
    let mut code = 0;
    for spec in specs {
        let r = spec::resolve(spec, mirror, &opts.read_options()?)?;
        let kernel = Kernel::load_set(&r.parts)?;
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
