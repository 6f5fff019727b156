//! `cargo xtask`: btfgate's command line (inspect, verify, fetch, test, bench), a flat match over subcommands.

mod bench;
mod build;
mod compare;
mod fetch;
mod host;
mod inspect;
mod matrix;
mod report;
mod run;
mod shell;
mod spec;
mod test;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Exit codes: 0 all passed, 1 a check failed, 2 bad usage or input, 69 infrastructure.
pub const EXIT_FAIL: u8 = 1;
pub const EXIT_BAD_INPUT: u8 = 2;
pub const EXIT_INFRA: u8 = 69;

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "btfgate: prove a Linux kernel package really delivers BTF"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the static checks on one package (.apk, .deb or directory) and print the evidence
    Inspect {
        /// The kernel's package: a file (Alpine APK v2, Debian .deb) or a directory laid out
        /// like an installed package; apt:NAME[@SUITE|@previous]; alpine:NAME[=VERSION];
        /// target:NAME; several joined by commas for a kernel split over packages
        spec: String,
        #[command(flatten)]
        opts: CheckOpts,
        #[command(flatten)]
        mirror: fetch::MirrorArgs,
    },
    /// Verify packages (default: the host distribution's default kernel flavours, fetched)
    Verify {
        /// Package to verify (repeatable): a file (.apk, .deb) or directory, apt:NAME,
        /// alpine:NAME[=VERSION] or target:NAME; without it, the host's default kernel packages
        #[arg(long = "package")]
        packages: Vec<String>,
        #[command(flatten)]
        opts: CheckOpts,
        #[command(flatten)]
        rt: verify::RuntimeOpts,
        #[command(flatten)]
        mirror: fetch::MirrorArgs,
        #[command(flatten)]
        reports: report::ReportArgs,
    },
    /// Run a command in the guest of a package's kernel (its modules loaded, the BPF tools on
    /// PATH, --copy files in /work); exits with the command's status (124: timeout; 125: the
    /// guest failed)
    Run(run::RunArgs),
    /// The guest of `run`, interactive on the terminal (raw mode; Ctrl-] leaves, QEMU is
    /// always stopped afterwards); refuses on a non-terminal
    Shell(shell::ShellArgs),
    /// Run the external BPF tools (bpftrace's tools, libbpf-tools) in the guests of kernels
    /// with a workload: a tool × kernel table of emitted / attached / failed / n/a; exits 1
    /// when a tool failed
    Matrix(matrix::MatrixArgs),
    /// Compare kernel packages of one flavour, oldest first: did BTF survive the bump, and what did it cost?
    Compare(compare::CompareArgs),
    /// Fetch kernel packages into the cache (from an Alpine mirror, or with apt or apk)
    Fetch {
        #[command(subcommand)]
        source: fetch::Source,
    },
    /// Build a kernel from source and package it as APK v2 (stripped and unstripped modules)
    Build(build::BuildArgs),
    /// Install the host tools verify and the tests use (qemu, busybox-static, bpftrace, bpftool, ...)
    Setup,
    /// Install what the tests need, fetch the host kernels, then run `cargo test --workspace`
    Test {
        /// Extra arguments passed to `cargo test` after `--`
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Benchmarks printed as ratios measured in one run
    Bench {
        #[command(subcommand)]
        what: bench::What,
    },
}

/// Options shared by `inspect` and `verify`.
#[derive(Args, Clone)]
pub struct CheckOpts {
    /// Print one JSON object per package instead of the table
    #[arg(long)]
    json: bool,
    /// Budget for the bytes BTF costs the package (e.g. 2MiB, 500k)
    #[arg(long, default_value = "2MiB", value_parser = parse_budget)]
    budget: u64,
    #[command(flatten)]
    trust: TrustArgs,
}

/// Which package signatures are trusted: every command that reads packages takes these.
#[derive(Args, Clone)]
pub struct TrustArgs {
    /// Directory of trusted APK signing keys (default: /etc/apk/keys if it exists, else
    /// btfgate's bundled Alpine keys)
    #[arg(long, value_name = "DIR")]
    keys_dir: Option<PathBuf>,
    /// Accept unsigned APKs or ones signed by a key not in --keys-dir
    #[arg(long)]
    allow_untrusted: bool,
}

impl TrustArgs {
    /// The trust these options ask for: `--keys-dir`, else the default trust
    /// ([`harness::package::apk::trust::resolve`]).
    pub fn read_options(&self) -> anyhow::Result<harness::package::ReadOptions> {
        Ok(harness::package::ReadOptions {
            keys_dir: fetch::keys_dir(self.keys_dir.as_deref())?
                .dir()
                .to_path_buf(),
            allow_untrusted: self.allow_untrusted,
        })
    }
}

pub fn parse_budget(s: &str) -> harness::Result<u64> {
    harness::size::parse_size(s)
}

impl CheckOpts {
    fn read_options(&self) -> anyhow::Result<harness::package::ReadOptions> {
        self.trust.read_options()
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = harness::process::exit_on_interrupt("cargo xtask") {
        eprintln!(
            "warning: cannot handle interrupts ({e}): an interrupted run may leave QEMU behind"
        );
    }
    let result = match cli.cmd {
        Cmd::Inspect { spec, opts, mirror } => inspect::run(&[spec], &opts, &mirror),
        Cmd::Verify {
            packages,
            opts,
            rt,
            mirror,
            reports,
        } => verify::run(&packages, &opts, &rt, &mirror, &reports),
        Cmd::Compare(a) => compare::run(&a),
        Cmd::Run(a) => run::run(&a),
        Cmd::Shell(a) => shell::shell(&a),
        Cmd::Matrix(a) => matrix::run(&a),
        Cmd::Fetch { source } => fetch::run(source).map(|_| 0),
        Cmd::Test { args } => test::run(&args),
        Cmd::Setup => test::setup().map(|_| 0),
        Cmd::Build(a) => build::run(a),
        Cmd::Bench { what } => bench::run(what).map(|_| 0),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            // Bad input (harness::Error, a refused fetch, usage) is 2; what the machine lacks is 69.
            let code = if e.downcast_ref::<fetch::Unavailable>().is_some() {
                EXIT_INFRA
            } else {
                EXIT_BAD_INPUT
            };
            ExitCode::from(code)
        }
    }
}
