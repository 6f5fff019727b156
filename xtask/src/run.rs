//! `run`: a user's command in the guest of a package's kernel (its modules loaded, the image's
//! BPF tools on `PATH`, the user's files in `/work`), its output streamed as it comes, its exit
//! status ours.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use harness::guest::{self, Ran};
use harness::image::Recipe;
use harness::kernel::Kernel;
use harness::qemu::args::Accel;
use harness::qemu::machine::RunError;

use crate::fetch::MirrorArgs;
use crate::spec;
use crate::verify::AccelArg;
use crate::TrustArgs;

/// The exit status when the command ran out of time (as `timeout(1)`).
pub const EXIT_TIMEOUT: u8 = 124;
/// The exit status when the guest failed before the command could finish (it did not boot,
/// the kernel panicked, QEMU exited): as `timeout(1)` says its own failure.
pub const EXIT_GUEST: u8 = 125;

/// What `run` and `shell` share: the package, the files, the modules, the machine.
#[derive(Args)]
pub struct GuestArgs {
    /// The kernel's package: a file (.apk, .deb) or directory, apt:NAME[@SUITE|@previous],
    /// alpine:NAME[=VERSION], target:NAME; several joined by commas for a split kernel
    #[arg(long = "package")]
    package: String,
    /// A file or directory copied into the guest's /work, the command's directory (repeatable)
    #[arg(long = "copy")]
    copy: Vec<PathBuf>,
    /// Modules to load before the command (default: the image recipe's list)
    #[arg(long, value_delimiter = ',')]
    modules: Option<Vec<String>>,
    /// Force an accelerator instead of probing KVM and falling back to TCG
    #[arg(long, value_enum)]
    accel: Option<AccelArg>,
    /// Image recipe in images/ (without .yaml)
    #[arg(long, default_value = "btf")]
    image: String,
    #[command(flatten)]
    trust: TrustArgs,
    #[command(flatten)]
    mirror: MirrorArgs,
}

#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    guest: GuestArgs,
    /// Seconds the command may run; past them QEMU is stopped and the exit status is 124
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// The command and its arguments, after `--`
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

/// The guest `run` and `shell` boot: the kernel, the image, the parameters, the run directory.
pub struct Guest {
    pub kernel: Kernel,
    pub recipe: Recipe,
    pub params: guest::Params,
    pub dir: PathBuf,
    /// The spec as the user wrote it, resolved (for messages).
    pub described: String,
}

impl GuestArgs {
    /// The package spec as given.
    pub fn package(&self) -> &str {
        &self.package
    }

    /// Installs what the host lacks, resolves and reads the package, and makes a run directory.
    pub fn guest(&self) -> Result<Guest> {
        crate::host::ensure(&crate::host::RUNTIME_PACKAGES)?;
        let r = spec::resolve(&self.package, &self.mirror, &self.trust.read_options()?)?;
        let kernel = Kernel::load_set(&r.parts)?;
        let recipe = Recipe::builtin(&self.image).map_err(anyhow::Error::msg)?;
        let params = guest::Params {
            modules: self.modules.clone(),
            accel: self.accel.map(|x| match x {
                AccelArg::Kvm => Accel::Kvm,
                AccelArg::Tcg => Accel::Tcg,
            }),
            extra: guest::copy_nodes(&self.copy)?,
            ..guest::Params::default()
        };
        let dir = crate::verify::run_dir(&kernel)?;
        Ok(Guest {
            kernel,
            recipe,
            params,
            dir,
            described: r.describe(),
        })
    }
}

impl Guest {
    /// `<who>: booting <release> (<label>); transcript in <dir>`, on stderr.
    pub fn say_booting(&self, who: &str) {
        eprintln!(
            "{who}: booting {} ({}); transcript in {}",
            self.kernel.release.as_deref().unwrap_or("?"),
            self.kernel.label(),
            self.dir.display()
        );
    }
}

/// Once the guest is up: the accelerator and why, and each module that did not load.
pub fn say_started(who: &str, accel: &harness::qemu::accel::Choice, module_errors: &[String]) {
    eprintln!(
        "{who}: accelerator {} ({})",
        accel.accel.name(),
        accel.reason
    );
    for e in module_errors {
        eprintln!("{who}: module not loaded: {e}");
    }
}

/// A guest that failed (did not boot, panicked, QEMU exited): the error and the console's
/// last lines. Returns [`EXIT_GUEST`].
pub fn say_guest_failed(who: &str, e: &RunError) -> u8 {
    eprintln!("{who}: the guest failed: {e}");
    for l in e.tail().lines() {
        eprintln!("  | {l}");
    }
    EXIT_GUEST
}

pub fn run(a: &RunArgs) -> Result<u8> {
    let g = a.guest.guest()?;
    g.say_booting("run");
    let mut stdout = std::io::stdout();
    let mut line = |l: &str| {
        let _ = writeln!(stdout, "{l}");
        let _ = stdout.flush();
    };
    let timeout = Duration::from_secs(a.timeout);
    let ran = guest::run_command(
        &g.kernel, &g.recipe, &g.params, &a.command, timeout, &g.dir, &mut line,
    )
    .with_context(|| format!("run in the guest of {}", g.described))?;
    Ok(outcome(&ran, a.timeout))
}

/// Says how the run went (on stderr, apart from the command's output) and gives the exit status.
fn outcome(ran: &Ran, timeout: u64) -> u8 {
    say_started("run", &ran.accel, &ran.module_errors);
    if !ran.kernel_messages.is_empty() {
        eprintln!("run: kernel messages while the command ran:");
        for l in &ran.kernel_messages {
            eprintln!("  {l}");
        }
    }
    let code = match &ran.status {
        Ok(rc) => {
            eprintln!("run: the command exited {rc}");
            u8::try_from(*rc).unwrap_or(EXIT_GUEST)
        }
        Err(e @ RunError::Timeout { .. }) => {
            eprintln!("run: {e} (--timeout {timeout}); QEMU stopped");
            EXIT_TIMEOUT
        }
        Err(e) => say_guest_failed("run", e),
    };
    eprintln!("run: transcript {}", ran.transcript.display());
    code
}
