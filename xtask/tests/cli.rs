//! The command line contract of `cargo xtask inspect`, `compare` and `verify --static-only`:
//! exit codes 0 / 1 / 2, the JSON shape, error messages that name the file and the phase, and
//! the report files (a real Debian kernel bump, and a built pair where BTF is off in NEW).
//!
//! One file because: cargo builds each `tests/*.rs` as its own binary; the trials share the
//! built xtask, the process helpers and the target packages.

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use harness::fixtures::{host_kernel, needs, Flavor};
use libtest_mimic::{Arguments, Failed, Trial};

type R = Result<(), Failed>;
/// A named trial, and what it needs on this machine.
type Case = (&'static str, fn() -> R, Result<PathBuf, String>);

/// What one run of the xtask binary left.
struct Output {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// Runs the xtask binary through harness::process (deadline, process group).
fn xtask(args: &[&str]) -> Output {
    xtask_env(args, &[])
}

/// Runs the xtask binary with `args` and the environment variables `env` set.
fn xtask_env(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut cmd = harness::process::Cmd::new(env!("CARGO_BIN_EXE_xtask"), Duration::from_secs(300))
        .args(args);
    for (k, v) in env {
        cmd = cmd.env(k, v);
    }
    let (status, stdout, stderr) = cmd.output().expect("run the xtask binary");
    Output {
        status,
        stdout,
        stderr,
    }
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn json_contract(pkg: &Path) -> R {
    let o = xtask(&["inspect", "--json", &pkg.to_string_lossy()]);
    // The real Debian kernels exceed the default 2 MiB budget: exit 1, and say so in JSON.
    if code(&o) != 1 {
        return Err(format!(
            "exit {} (want 1): {}",
            code(&o),
            String::from_utf8_lossy(&o.stderr)
        )
        .into());
    }
    let v: serde_json::Value =
        serde_json::from_slice(&o.stdout).map_err(|e| format!("not JSON: {e}"))?;
    for key in ["name", "version", "arch", "installed_size", "file_size"] {
        if v["package"][key].is_null() {
            return Err(format!("package.{key} missing: {}", v["package"]).into());
        }
    }
    if !v["kernel"]["release"].is_string() {
        return Err("kernel.release missing".into());
    }
    let checks = v["checks"].as_array().ok_or("checks is not an array")?;
    let ids: Vec<&str> = checks.iter().filter_map(|c| c["id"].as_str()).collect();
    if ids != harness::checks::static_ids() {
        return Err(format!("check ids {ids:?}").into());
    }
    for c in checks {
        let want = if c["id"] == "size.budget" {
            "fail"
        } else {
            "pass"
        };
        if c["status"] != want || !c["detail"].is_string() {
            return Err(format!(
                "{} is {} (want {want}): {}",
                c["id"], c["status"], c["detail"]
            )
            .into());
        }
    }
    Ok(())
}

fn generous_budget_exits_0(pkg: &Path) -> R {
    let o = xtask(&["inspect", "--budget", "100MiB", &pkg.to_string_lossy()]);
    let out = String::from_utf8_lossy(&o.stdout);
    if code(&o) != 0 || !out.contains("size.budget") || !out.contains("vmlinuz") {
        return Err(format!(
            "exit {}: {out}{}",
            code(&o),
            String::from_utf8_lossy(&o.stderr)
        )
        .into());
    }
    Ok(())
}

fn bad_input_exits_2() -> R {
    let d = std::env::temp_dir().join(format!("btfgate-cli-{}", std::process::id()));
    std::fs::create_dir_all(&d).map_err(|e| e.to_string())?;
    let junk = d.join("junk.deb");
    std::fs::write(&junk, b"!<arch>\nnot really").map_err(|e| e.to_string())?;
    let o = xtask(&["inspect", &junk.to_string_lossy()]);
    let _ = std::fs::remove_dir_all(&d);
    let err = String::from_utf8_lossy(&o.stderr);
    if code(&o) != 2 || !err.contains("junk.deb") || !err.contains("deb") {
        return Err(format!("exit {}: {err}", code(&o)).into());
    }
    let o = xtask(&["inspect", "/nonexistent/pkg.apk"]);
    let err = String::from_utf8_lossy(&o.stderr);
    if code(&o) != 2 || !err.contains("/nonexistent/pkg.apk") {
        return Err(format!("missing file: exit {}: {err}", code(&o)).into());
    }
    let o = xtask(&["inspect", "--budget", "lots", "x"]);
    if code(&o) != 2 {
        return Err(format!("bad --budget: exit {}", code(&o)).into());
    }
    Ok(())
}

/// Whether scenario target `name` (a package or a set) is on this machine, or why not.
fn resolvable(name: &str) -> Result<(), String> {
    use harness::scenario::{load, targets};
    let suite = load::load(&load::scenarios_dir()).map_err(|e| e.join("; "))?;
    targets::resolve(&suite.targets, name)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// The package of scenario target `name`, or why it is not on this machine.
fn target(name: &str) -> Result<PathBuf, String> {
    use harness::scenario::{load, targets};
    let suite = load::load(&load::scenarios_dir()).map_err(|e| e.join("; "))?;
    match targets::resolve(&suite.targets, name).map_err(|e| e.to_string())? {
        targets::Package::Files(p) => match <[PathBuf; 1]>::try_from(p) {
            Ok([p]) => Ok(p),
            Err(_) => Err(format!("target {name} is a set of packages")),
        },
        targets::Package::Mix { .. } => Err(format!("target {name} is a mix")),
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs `compare` with `args` writing reports to a fresh directory; returns the output and
/// the directory.
fn compare(args: &[&str]) -> (Output, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let rd = dir.path().to_string_lossy().into_owned();
    let mut all = vec!["compare", "--report-dir", &rd];
    all.extend_from_slice(args);
    (xtask(&all), dir)
}

fn expect(o: &Output, want: i32, what: &str) -> R {
    if code(o) != want {
        return Err(format!(
            "{what}: exit {} (want {want})\n{}{}",
            code(o),
            text(&o.stdout),
            text(&o.stderr)
        )
        .into());
    }
    Ok(())
}

fn contains(hay: &str, needles: &[&str], what: &str) -> R {
    for n in needles {
        if !hay.contains(n) {
            return Err(format!("{what} does not contain {n:?}:\n{hay}").into());
        }
    }
    Ok(())
}

/// The report file `name` written to `dir` contains every needle.
fn report_contains(dir: &Path, name: &str, needles: &[&str]) -> R {
    let path = dir.join(name);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    contains(&text, needles, name)
}

/// A real bump: Debian's cloud kernel, previous ABI → current. BTF survives within a budget
/// that fits it, and the reports say so; the same pair fails a tight budget, and a zero growth
/// limit fails whichever order grew (negative controls of size.budget and size.delta).
fn debian_bump() -> R {
    let old = target("debian-cloud-previous")?;
    let new = target("debian-cloud")?;
    let (old, new) = (old.to_string_lossy(), new.to_string_lossy());
    let (o, dir) = compare(&["--budget", "4MiB", "--max-growth", "5MiB", &old, &new]);
    expect(&o, 0, "compare previous current")?;
    let out = text(&o.stdout);
    contains(
        &out,
        &[
            "btf.present        PASS",
            "size.delta         PASS",
            "verdict: PASS",
            "package file",
        ],
        "the table",
    )?;
    report_contains(
        dir.path(),
        "report.md",
        &["→", "btf.present", "| package file |", "cloud-amd64"],
    )?;
    report_contains(
        dir.path(),
        "sizes.svg",
        &["<svg", "cloud-amd64", "budget 4.00 MiB"],
    )?;
    report_contains(
        dir.path(),
        "junit.xml",
        &["<testsuites", "btf.present", "size.delta"],
    )?;

    // Both orders with a 1 MiB budget and no growth allowed: the budget fails in each, and
    // the one order that grows the package fails size.delta too.
    let mut failed = 0;
    for (a, b) in [(&old, &new), (&new, &old)] {
        let (o, _d) = compare(&["--budget", "1MiB", "--max-growth", "0", a, b]);
        expect(&o, 1, "compare with a 1 MiB budget")?;
        contains(
            &text(&o.stdout),
            &["size.budget        FAIL", "verdict: FAIL"],
            "the table",
        )?;
        if text(&o.stdout).contains("size.delta         FAIL") {
            failed += 1;
        } else {
            contains(&text(&o.stdout), &["size.delta         PASS"], "the table")?;
        }
    }
    if failed != 1 {
        return Err(format!("size.delta failed in {failed} of the two orders (want 1)").into());
    }
    Ok(())
}

/// The series a distribution ships, as one compare: Debian's cloud kernel 6.1 (one package,
/// boot/) → 6.12 (one package, usr/lib/modules, .ko.xz) → 7.x (split over three packages).
/// Each step is gated, and the report shows what BTF costs across the series, the 7.x
/// kernel counted over all its packages.
fn debian_series() -> R {
    let (o, dir) = compare(&[
        "--budget",
        "16MiB",
        "target:debian-cloud",
        "target:debian-cloud-6.12",
        "target:debian-cloud-7",
    ]);
    let out = text(&o.stdout);
    print!("{out}");
    expect(&o, 0, "compare the 6.1 → 6.12 → 7.x series")?;
    let md = std::fs::read_to_string(dir.path().join("report.md"))?;
    let series: Vec<&str> = md
        .lines()
        .skip_while(|l| !l.starts_with("What BTF costs across the series"))
        .filter(|l| l.starts_with("| `"))
        .take(3)
        .collect();
    println!("{}", series.join("\n"));
    let [a, b, c] = series[..] else {
        return Err(format!("series table: {series:?}").into());
    };
    for (row, release, packages) in [(a, "`6.1.", 1), (b, "`6.12.", 1), (c, "`7.", 3)] {
        if !row.contains(release) || !row.contains(&format!(" | {packages} | ")) {
            return Err(
                format!("series row without {release} and {packages} packages: {row}").into(),
            );
        }
    }
    report_contains(dir.path(), "report.md", &["2 of 2 steps passed"])?;
    report_contains(dir.path(), "sizes.svg", &["<svg", "linux-binary-7."])?;
    Ok(())
}

/// Debian 7.x's `linux-modules-<rel>` alone is not a kernel: `inspect` says which set it needs
/// (the missing image, the package that holds it) as bad input, exit 2, and blames no module.
/// With the rest of its set, joined by commas, the same modules pass.
fn modules_alone_name_their_set() -> R {
    use harness::scenario::{load, targets};
    let suite = load::load(&load::scenarios_dir()).map_err(|e| e.join("; "))?;
    let targets::Package::Files(set) = targets::resolve(&suite.targets, "debian-cloud-7")? else {
        return Err("debian-cloud-7 is a mix".into());
    };
    let name = |p: &PathBuf| p.file_name().map(|n| n.to_string_lossy().into_owned());
    let modules = (set.iter())
        .find(|p| name(p).is_some_and(|n| n.starts_with("linux-modules-")))
        .ok_or("no linux-modules package in the set")?;
    let o = xtask(&["inspect", &modules.to_string_lossy()]);
    let err = text(&o.stderr);
    expect(&o, 2, "inspect linux-modules alone")?;
    contains(
        &err,
        &["no kernel image", "linux-binary-7.", "assemble the kernel"],
        "the error",
    )?;
    if text(&o.stdout).contains("modules.btf_base") {
        return Err("a check blamed the modules".into());
    }
    let joined: Vec<String> = set
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let o = xtask(&["inspect", "--budget", "16MiB", &joined.join(",")]);
    expect(&o, 0, "inspect the whole set")?;
    contains(
        &text(&o.stdout),
        &["holds image", "holds config", "modules.btf_base   PASS"],
        "the table",
    )?;
    Ok(())
}

/// The JSON of a comparison: every step with rows and gate.
fn debian_bump_json() -> R {
    let old = target("debian-cloud-previous")?;
    let new = target("debian-cloud")?;
    let (o, _d) = compare(&[
        "--json",
        "--budget",
        "4MiB",
        &old.to_string_lossy(),
        &new.to_string_lossy(),
    ]);
    expect(&o, 0, "compare --json")?;
    let v: serde_json::Value =
        serde_json::from_slice(&o.stdout).map_err(|e| format!("not JSON: {e}"))?;
    let step = &v["steps"][0];
    let ids: Vec<&str> = step["gate"]
        .as_array()
        .ok_or("no gate")?
        .iter()
        .filter_map(|c| c["id"].as_str())
        .collect();
    if ids != ["btf.present", "btf.modules", "size.budget", "size.delta"] {
        return Err(format!("gate ids {ids:?}").into());
    }
    if step["rows"].as_array().map(Vec::len).unwrap_or(0) < 10 {
        return Err(format!("rows: {}", step["rows"]).into());
    }
    Ok(())
}

/// A built pair where BTF is turned off in NEW: the gate fails, naming the loss; the BTF
/// build against itself passes (so the gate can pass on this pair's format).
fn built_pair_btf_off() -> R {
    let (o, dir) = compare(&["target:tiny-btf", "target:tiny-nobtf"]);
    expect(&o, 1, "compare tiny-btf tiny-nobtf")?;
    contains(
        &text(&o.stdout),
        &[
            "btf.present        FAIL   BTF was lost",
            "btf.modules        FAIL",
            "verdict: FAIL",
        ],
        "the table",
    )?;
    report_contains(dir.path(), "report.md", &["gate FAILED", "BTF was lost"])?;
    let (o, _d) = compare(&["target:tiny-btf", "target:tiny-btf"]);
    expect(&o, 0, "compare tiny-btf tiny-btf")?;
    Ok(())
}

fn compare_bad_input() -> R {
    let (o, _d) = compare(&["/nonexistent/old.apk", "/nonexistent/new.apk"]);
    expect(&o, 2, "missing packages")?;
    contains(&text(&o.stderr), &["/nonexistent/old.apk"], "stderr")?;
    let (o, _d) = compare(&["/nonexistent/only-one.apk"]);
    expect(&o, 2, "one package")?;
    let (o, _d) = compare(&["target:no-such-target", "target:tiny-btf"]);
    expect(&o, 2, "unknown target")?;
    contains(&text(&o.stderr), &["no-such-target"], "stderr")?;
    Ok(())
}

/// `verify --static-only` writes the three reports; the build without BTF fails.
fn verify_writes_reports() -> R {
    let dir = tempfile::tempdir()?;
    let rd = dir.path().to_string_lossy().into_owned();
    let o = xtask(&[
        "verify",
        "--static-only",
        "--report-dir",
        &rd,
        "--package",
        "target:tiny-btf",
    ]);
    expect(&o, 0, "verify tiny-btf")?;
    for f in ["report.md", "junit.xml", "sizes.svg"] {
        let p = dir.path().join(f);
        if std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0) == 0 {
            return Err(format!("{} missing or empty", p.display()).into());
        }
    }
    let o = xtask(&[
        "verify",
        "--static-only",
        "--report-dir",
        &rd,
        "--package",
        "target:tiny-nobtf",
    ]);
    expect(&o, 1, "verify tiny-nobtf")?;
    report_contains(dir.path(), "report.md", &["❌", "kconfig.btf"])?;
    Ok(())
}

/// The CI templates parse as YAML, and every `cargo xtask` command in them names a subcommand
/// and flags that exist (checked against the binary's own `--help`).
fn ci_templates() -> R {
    let dir = harness::fixtures::workspace_root().join("ci");
    let mut seen = 0;
    for name in ["gitlab-ci.yml", "github-workflow.yml"] {
        let path = dir.join(name);
        let yaml =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        seen += template_commands(name, &yaml)?;
    }
    if seen < 5 {
        return Err(format!("only {seen} xtask commands found in the templates").into());
    }
    Ok(())
}

/// The template check rejects a subcommand or a flag that does not exist, and bad YAML.
fn ci_template_control() -> R {
    for (yaml, want) in [
        (
            "script:\n  - cargo xtask verify --no-such-flag\n",
            "has no flag --no-such-flag",
        ),
        (
            "script:\n  - cargo xtask frobnicate\n",
            "is not a subcommand",
        ),
        ("script: [unclosed\n", "not YAML"),
    ] {
        match template_commands("control.yml", yaml) {
            Ok(_) => return Err(format!("accepted {yaml:?}").into()),
            Err(e) if e.contains(want) => {}
            Err(e) => return Err(format!("{yaml:?}: {e} (want {want:?})").into()),
        }
    }
    Ok(())
}

/// Checks every `xtask` command in the YAML document `yaml`; returns how many there were.
fn template_commands(name: &str, yaml: &str) -> Result<usize, String> {
    let doc: serde_json::Value =
        serde_saphyr::from_str(yaml).map_err(|e| format!("{name}: not YAML: {e}"))?;
    let mut strings = Vec::new();
    collect_strings(&doc, &mut strings);
    let mut seen = 0;
    for s in strings {
        for cmd in s.replace("\\\n", " ").split(['\n', ';']) {
            let words: Vec<&str> = cmd.split_whitespace().collect();
            let Some(i) = words.iter().position(|w| *w == "xtask") else {
                continue;
            };
            // `cargo xtask SUB` or `cargo run ... --package xtask -- SUB`.
            let rest: Vec<&str> = words[i + 1..]
                .iter()
                .copied()
                .skip_while(|w| *w == "--")
                .collect();
            let Some(sub) = rest.first() else { continue };
            let help = xtask(&[sub, "--help"]);
            if code(&help) != 0 {
                return Err(format!("{name}: `xtask {sub}` is not a subcommand"));
            }
            let help = text(&help.stdout);
            for flag in rest.iter().filter(|w| w.starts_with("--")) {
                let flag = flag.split('=').next().unwrap_or(flag);
                if !help.contains(&format!("{flag} ")) && !help.contains(&format!("{flag}\n")) {
                    return Err(format!("{name}: `xtask {sub}` has no flag {flag}"));
                }
            }
            seen += 1;
        }
    }
    Ok(seen)
}

fn collect_strings(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_strings(x, out)),
        serde_json::Value::Object(o) => o.values().for_each(|x| collect_strings(x, out)),
        _ => {}
    }
}

/// `fetch alpine --list` on the real signed v3.16 index through a `file://` mirror prints the
/// entries; an untrusted index exits 2, an unreachable mirror 69, and nothing is cached.
fn fetch_alpine_cli() -> R {
    let alpine = harness::fixtures::alpine_dir()?;
    let tmp = tempfile::tempdir()?;
    let repo = tmp.path().join("mirror/v3.16/main/x86_64");
    std::fs::create_dir_all(&repo)?;
    std::os::unix::fs::symlink(
        alpine.join("fixtures/APKINDEX-v3.16-main-x86_64.tar.gz"),
        repo.join("APKINDEX.tar.gz"),
    )?;
    let mirror = format!("file://{}", tmp.path().join("mirror").display());
    let keys = alpine.join("keys");
    let (keys, empty) = (keys.to_string_lossy(), tmp.path().to_string_lossy());
    let base = ["fetch", "alpine", "--mirror", &mirror, "--branch", "v3.16"];
    let run = |extra: &[&str]| {
        let mut a: Vec<&str> = base.to_vec();
        a.extend_from_slice(extra);
        xtask(&a)
    };
    let o = run(&["--keys-dir", &keys, "--list", "linux-lts", "linux-virt"]);
    expect(&o, 0, "fetch alpine --list")?;
    contains(
        &text(&o.stdout),
        &[
            "v3.16.3-13-g4d933a1fa3",
            "6165ee59",
            "linux-lts                5.15.78-r0",
            "77,414,844",
            "34,557,952",
        ],
        "the listing",
    )?;
    let o = run(&["--keys-dir", &keys, "--list", "linux-nonesuch"]);
    expect(&o, 2, "an unknown package")?;
    contains(
        &text(&o.stderr),
        &["linux-nonesuch", "no such package"],
        "stderr",
    )?;
    let o = run(&["--keys-dir", &empty, "--list"]);
    expect(&o, 2, "an index signed by an untrusted key")?;
    contains(&text(&o.stderr), &["no such key in keys dir"], "stderr")?;
    // An explicit --keys-dir that does not exist is an error naming it, never the default.
    let gone = tmp.path().join("no-such-keys");
    let o = run(&["--keys-dir", &gone.to_string_lossy(), "--list"]);
    expect(&o, 2, "a missing --keys-dir")?;
    contains(
        &text(&o.stderr),
        &[&format!("--keys-dir {}", gone.display()), "does not exist"],
        "stderr",
    )?;
    // Without --keys-dir: the host's /etc/apk/keys, else btfgate's bundled keys, written into
    // the cache; either way the listing says which key verified the index, and from where.
    let cache = tmp.path().join("cache");
    let mut a: Vec<&str> = base.to_vec();
    a.extend_from_slice(&["--list", "linux-lts"]);
    let o = xtask_env(&a, &[("BTFGATE_CACHE", &cache)]);
    expect(&o, 0, "fetch alpine --list with the default trust")?;
    let from = if Path::new("/etc/apk/keys").is_dir() {
        "(/etc/apk/keys)"
    } else {
        "(btfgate's bundled Alpine keys)"
    };
    contains(
        &text(&o.stdout),
        &[
            "index signed by alpine-devel@lists.alpinelinux.org-6165ee59.rsa.pub",
            from,
            "linux-lts                5.15.78-r0",
        ],
        "the listing",
    )?;
    let o = run(&["--keys-dir", &keys, "--list", "linux-lts"]);
    contains(
        &text(&o.stdout),
        &[&format!("6165ee59.rsa.pub ({keys})")],
        "the listing with --keys-dir",
    )?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let dead = format!("http://127.0.0.1:{port}/alpine");
    let o = xtask(&[
        "fetch",
        "alpine",
        "--mirror",
        &dead,
        "--keys-dir",
        &keys,
        "--list",
    ]);
    expect(&o, 69, "an unreachable mirror")?;
    Ok(())
}

/// The Linux source `cargo xtask build` configures by default.
const LINUX_SOURCE: &str = "/usr/src/linux-source-6.1.tar.xz";

/// What the configure trial needs: the Linux source tarball and a pahole on PATH.
fn configure_needs() -> Result<PathBuf, String> {
    if !Path::new(LINUX_SOURCE).is_file() {
        return Err(format!(
            "{LINUX_SOURCE} is absent (`cargo xtask test` installs linux-source-6.1 when it builds the kernel targets)"
        ));
    }
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("pahole"))
                .find(|p| p.is_file())
        })
        .ok_or_else(|| "no pahole on PATH (Debian package dwarves)".to_string())
}

/// A config refresh that silently drops BTF is refused, naming the option: with DWARF5,
/// lib/Kconfig.debug makes DEBUG_INFO_BTF depend on PAHOLE_VERSION >= 121, so an old pahole
/// (a script printing v1.20) or none makes olddefconfig drop it (how Alpine lost BTF). The
/// same configure with the host's pahole keeps BTF under DWARF5, and the old pahole keeps it
/// without DWARF5 (so the refusal is the DWARF5 dependency, not the fake pahole).
fn configure_refuses_dropped_btf() -> R {
    let tmp = tempfile::tempdir()?;
    let old = tmp.path().join("pahole");
    std::fs::write(&old, "#!/bin/sh\necho v1.20\n")?;
    std::fs::set_permissions(&old, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let old = old.to_string_lossy().into_owned();
    let configure = |n: usize, extra: &[&str]| {
        let out = tmp.path().join(format!("o{n}"));
        let out = out.to_string_lossy().into_owned();
        let mut a = vec!["build", "--configure-only", "--out", &out];
        a.extend_from_slice(extra);
        xtask(&a)
    };
    let dwarf5 = ["--override", "dwarf5.config"];
    let refused = [(1, old.as_str(), "120"), (2, "/nonexistent/pahole", "0")];
    let controls = [
        (3, dwarf5.to_vec(), "CONFIG_DEBUG_INFO_DWARF5=y"),
        (
            4,
            vec!["--pahole", old.as_str()],
            "CONFIG_DEBUG_INFO_DWARF_TOOLCHAIN_DEFAULT=y",
        ),
    ];
    // Each configure builds the kernel's kconfig tools in its own directory (~15 s): run them
    // side by side, then judge each in order.
    let (refusals, made) = std::thread::scope(|s| {
        let r: Vec<_> = refused
            .iter()
            .map(|(n, pahole, _)| {
                s.spawn(|| configure(*n, &[&dwarf5[..], &["--pahole", pahole]].concat()))
            })
            .collect();
        let c: Vec<_> = controls
            .iter()
            .map(|(n, args, _)| s.spawn(|| configure(*n, args)))
            .collect();
        let join = |h: std::thread::ScopedJoinHandle<'_, _>| h.join().expect("configure thread");
        (
            r.into_iter().map(join).collect::<Vec<_>>(),
            c.into_iter().map(join).collect::<Vec<_>>(),
        )
    });
    for ((_, pahole, version), o) in refused.iter().zip(refusals) {
        expect(&o, 1, &format!("configure with DWARF5 and pahole {pahole}"))?;
        contains(
            &text(&o.stderr),
            &[
                "btf.config: CONFIG_DEBUG_INFO_BTF=y",
                &format!("CONFIG_PAHOLE_VERSION={version}, CONFIG_DEBUG_INFO_DWARF5=y"),
            ],
            "stderr",
        )?;
    }
    // The controls: each leaves a .config with BTF on; its path is all of stdout.
    for ((_, args, dwarf), o) in controls.iter().zip(made) {
        expect(&o, 0, &format!("configure {}", args.join(" ")))?;
        let path = text(&o.stdout);
        let cfg = std::fs::read_to_string(path.trim())
            .map_err(|e| format!("stdout {path:?} is not the .config: {e}"))?;
        let lines: Vec<&str> = cfg.lines().collect();
        for want in [
            "CONFIG_DEBUG_INFO_BTF=y",
            "CONFIG_DEBUG_INFO_BTF_MODULES=y",
            dwarf,
        ] {
            if !lines.contains(&want) {
                return Err(format!("configure {}: {want} not in {path}", args.join(" ")).into());
            }
        }
    }
    Ok(())
}

use harness::guest::{alive, children_matching};

/// A running `cargo xtask verify --package <cloud kernel> --accel tcg`, and what it writes into.
struct Verify {
    p: harness::process::Process,
    /// Its stderr.
    err: tempfile::NamedTempFile,
    _report: tempfile::TempDir,
    /// Its private TMPDIR.
    tmp: tempfile::TempDir,
}

/// Starts `verify` on the cloud kernel with a private TMPDIR and report directory, stderr to a
/// file, and `env` besides.
fn spawn_verify(env: &[(&str, &Path)]) -> Result<Verify, Failed> {
    use harness::process::{Cmd, Output as Out};
    let pkg = host_kernel(Flavor::Cloud)?;
    let err = tempfile::NamedTempFile::new()?;
    let report = tempfile::tempdir()?;
    let tmp = tempfile::tempdir()?;
    let mut cmd = Cmd::new(env!("CARGO_BIN_EXE_xtask"), Duration::from_secs(600))
        .args(["verify", "--package"])
        .arg(&pkg)
        .args(["--accel", "tcg", "--report-dir"])
        .arg(report.path())
        .env("TMPDIR", tmp.path());
    for (k, v) in env {
        cmd = cmd.env(k, v);
    }
    let p = cmd.spawn(Out::Null, Out::File(err.path()))?;
    Ok(Verify {
        p,
        err,
        _report: report,
        tmp,
    })
}

/// `cargo xtask verify` on the cloud kernel gets `sig` (to its own pid only, as a CI runner
/// or `kill` sends it) 1 s after its QEMU started (during boot), or once the transcript shows a
/// guest check running (`during_checks`): it exits 128 + sig saying what it
/// interrupted, and 2 s later no QEMU of it is left.
fn interrupt(sig: nix::sys::signal::Signal, during_checks: bool) -> R {
    use std::time::Instant;
    let Verify {
        mut p, err, tmp, ..
    } = spawn_verify(&[])?;
    let t0 = Instant::now();
    let qemu = loop {
        // QEMU's command line (`-name btfgate-…`), not a package query that names qemu.
        if let Some(q) = children_matching(p.pid(), "\0-name\0btfgate-").first() {
            break *q;
        }
        if t0.elapsed() > Duration::from_secs(240) || p.try_status()?.is_some() {
            return Err(format!(
                "no QEMU of verify appeared: {}",
                String::from_utf8_lossy(&std::fs::read(err.path())?)
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if during_checks {
        let transcript = transcript_of(qemu)?;
        loop {
            let t = std::fs::read_to_string(&transcript).unwrap_or_default();
            if t.contains("[btfgate host] guest.") {
                break;
            }
            if t0.elapsed() > Duration::from_secs(300) || !alive(qemu) {
                return Err(format!("no guest check started: {}", transcript.display()).into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    } else {
        std::thread::sleep(Duration::from_secs(1));
    }
    ensure_alive(qemu, "before the signal")?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(p.pid() as i32), sig)?;
    let verdict = interrupted(&mut p, sig, qemu, err.path());
    // A failing trial must not leave its QEMU behind either.
    if alive(qemu) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(qemu as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    verdict?;
    no_temporaries(tmp.path(), &harness::fixtures::cache_dir(), sig)
}

/// The QEMU name (`btfgate-<run dir>`) of the `run` whose stderr is `err`.
fn run_qemu_name(err: &str) -> Result<String, Failed> {
    let dir = err
        .lines()
        .find_map(|l| {
            l.split_once("; transcript in ")
                .map(|(_, d)| d.trim().to_string())
        })
        .ok_or("run did not name its transcript directory")?;
    let name = Path::new(&dir)
        .file_name()
        .ok_or("transcript directory without a name")?
        .to_string_lossy()
        .into_owned();
    Ok(format!("\0-name\0btfgate-{name}"))
}

/// `cargo xtask run` on the tiny kernel: a `--copy`'d script runs in /work, its output reaches
/// stdout, kernel messages stay on stderr, and its exit status 3 is run's; a command past
/// `--timeout` ends with 124 naming the phase, and its QEMU is gone.
fn run_status_and_timeout() -> R {
    let d = tempfile::tempdir()?;
    let script = d.path().join("repro.sh");
    std::fs::write(
        &script,
        "echo hello from $(uname -r) in $(pwd); ls /sys/kernel/btf/vmlinux; exit 3\n",
    )?;
    let script = script.to_string_lossy().into_owned();
    // Busybox's sh and ls: the image without the BPF tools boots seconds sooner.
    let o = run_tcg(
        "target:tiny-btf",
        &["--image", "busybox", "--copy", &script],
        &["sh", "repro.sh"],
    );
    expect(&o, 3, "run of a script exiting 3")?;
    contains(
        &text(&o.stdout),
        &["hello from ", " in /work", "/sys/kernel/btf/vmlinux"],
        "run's stdout",
    )?;
    let err = text(&o.stderr);
    contains(
        &err,
        &["the command exited 3", "run: accelerator tcg"],
        "run's stderr",
    )?;
    if text(&o.stdout).contains("@@BTFGATE") {
        return Err("the console's markers leaked into the output".into());
    }
    let o = run_tcg(
        "target:tiny-btf",
        &["--image", "busybox", "--timeout", "3"],
        &["sleep", "60"],
    );
    expect(&o, 124, "run past its timeout")?;
    let err = text(&o.stderr);
    contains(
        &err,
        &["TIMEOUT in phase run", "--timeout 3"],
        "run's stderr",
    )?;
    let name = run_qemu_name(&err)?;
    let left = harness::guest::processes_matching(&name);
    if !left.is_empty() {
        return Err(format!("QEMU {left:?} outlived the timed-out run").into());
    }
    Ok(())
}

/// `cargo xtask run --package SPEC --accel tcg OPTS… -- CMD…`, run to its end.
fn run_tcg(spec: &str, opts: &[&str], cmd: &[&str]) -> Output {
    let args = [
        &["run", "--package", spec, "--accel", "tcg"][..],
        opts,
        &["--"],
        cmd,
    ]
    .concat();
    xtask(&args)
}

/// The acceptance one-liner: bpftrace's kfunc on the cloud kernel, without headers, through
/// `run`: its output on stdout, exit 0.
fn run_bpftrace_on_cloud() -> R {
    let pkg = host_kernel(Flavor::Cloud)?;
    let o = run_tcg(
        &pkg.to_string_lossy(),
        &[],
        &[
            "bpftrace",
            "-e",
            "kfunc:vmlinux:vfs_read { @[comm] = count(); exit(); }",
        ],
    );
    expect(&o, 0, "run bpftrace")?;
    contains(
        &text(&o.stdout),
        &["Attaching 1 probe", "@["],
        "bpftrace's output",
    )?;
    Ok(())
}

/// `matrix` on `spec` with a CO-RE tool and a bpftrace tool: its output and the two cells of
/// its `--json` (each with its status and reason).
fn matrix_two_tools(spec: &str) -> Result<(Output, [serde_json::Value; 2]), Failed> {
    let d = tempfile::tempdir()?;
    let json = d.path().join("matrix.json");
    let o = xtask(&[
        "matrix",
        "--package",
        spec,
        "--tools",
        "opensnoop,execsnoop.bt",
        // Two seconds of workload per tool instead of four: each workload round opens files
        // and execs /bin/true, which both tools report, so one round is evidence enough.
        "--per-tool",
        "2",
        "--accel",
        "tcg",
        "--json",
        &json.to_string_lossy(),
    ]);
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).map_err(|e| {
        format!(
            "no JSON ({e}): exit {}\n{}{}",
            code(&o),
            text(&o.stdout),
            text(&o.stderr)
        )
    })?)?;
    let cells = &v["kernels"][0]["cells"];
    Ok((
        o,
        [cells["opensnoop"].clone(), cells["execsnoop.bt"].clone()],
    ))
}

/// The matrix's negative control: on the kernel built with BTF off, opensnoop (CO-RE) and
/// execsnoop.bt fail with the tool's own error line, and the matrix exits 1.
fn matrix_nobtf_fails() -> R {
    let (o, cells) = matrix_two_tools("target:tiny-nobtf")?;
    expect(&o, 1, "matrix on tiny-nobtf")?;
    for c in &cells {
        if c["status"] != "failed" || c["reason"].as_str().is_none_or(str::is_empty) {
            return Err(format!("want failed with a reason, got {c}\n{}", text(&o.stdout)).into());
        }
    }
    contains(&text(&o.stdout), &["| `opensnoop` | failed |"], "the table")
}

/// The same two tools on Debian's cloud kernel: both emitted (an event line is the evidence),
/// exit 0.
fn matrix_cloud_emits() -> R {
    let (o, cells) = matrix_two_tools("target:debian-cloud")?;
    expect(&o, 0, "matrix on debian-cloud")?;
    for c in &cells {
        if c["status"] != "emitted" || c["evidence"].as_str().is_none_or(str::is_empty) {
            return Err(format!("want emitted with evidence, got {c}\n{}", text(&o.stderr)).into());
        }
    }
    contains(
        &text(&o.stdout),
        &["| `execsnoop.bt` | emitted |"],
        "the table",
    )
}

/// SIGINT to `run` while its command runs: exit 130 saying what it interrupted, no QEMU left.
fn run_interrupted() -> R {
    use harness::process::{Cmd, Output as Out};
    use std::time::Instant;
    let err = tempfile::NamedTempFile::new()?;
    let mut p = Cmd::new(env!("CARGO_BIN_EXE_xtask"), Duration::from_secs(600))
        .args([
            "run",
            "--package",
            "target:tiny-btf",
            "--accel",
            "tcg",
            "--image",
            "busybox",
            "--",
            "sleep",
            "120",
        ])
        .spawn(Out::Null, Out::File(err.path()))?;
    let t0 = Instant::now();
    let qemu = loop {
        if let Some(q) = children_matching(p.pid(), "\0-name\0btfgate-").first() {
            let t = std::fs::read_to_string(transcript_of(*q)?).unwrap_or_default();
            if t.contains("[btfgate host] run:") {
                break *q;
            }
        }
        if t0.elapsed() > Duration::from_secs(240) || p.try_status()?.is_some() {
            let e = String::from_utf8_lossy(&std::fs::read(err.path())?).into_owned();
            return Err(format!("the command never started: {e}").into());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let sig = nix::sys::signal::Signal::SIGINT;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(p.pid() as i32), sig)?;
    let verdict = interrupted(&mut p, sig, qemu, err.path());
    if alive(qemu) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(qemu as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    verdict
}

/// `shell` refuses without a terminal, naming the `run` command to use instead.
fn shell_refuses_a_non_terminal() -> R {
    let o = xtask(&["shell", "--package", "target:tiny-btf"]);
    expect(&o, 2, "shell without a terminal")?;
    contains(
        &text(&o.stderr),
        &[
            "needs a terminal",
            "cargo xtask run --package target:tiny-btf -- CMD",
        ],
        "the refusal",
    )
}

/// `shell` on a terminal (a pseudo-terminal the trial holds): the guest's prompt in /work,
/// the answer to a typed command, Ctrl-C stopping the guest's `sleep`, then leaving — with Ctrl-] and, in a second boot, with
/// `exit` in the guest. Each time: exit 0 saying how it ended, no QEMU left, the terminal's
/// modes given back.
fn shell_on_a_terminal() -> R {
    use harness::process::{Cmd, Output as Out};
    use std::io::{Read as _, Write as _};
    use std::sync::{Arc, Mutex};
    use std::time::Instant;
    for (leave, said) in [
        (&b"\x1d"[..], "left with Ctrl-]"),
        (&b"exit\r"[..], "the guest ended"),
    ] {
        let pty = nix::pty::openpty(None, None)?;
        let slave = nix::unistd::ttyname(&pty.slave)?;
        let before = nix::sys::termios::tcgetattr(&pty.slave)?;
        let err = tempfile::NamedTempFile::new()?;
        let script = format!(
            "exec \"$0\" shell --package target:tiny-btf --accel tcg --image busybox <{s} >{s}",
            s = slave.display()
        );
        let mut p = Cmd::new("/bin/sh", Duration::from_secs(600))
            .args(["-c", &script, env!("CARGO_BIN_EXE_xtask")])
            .spawn(Out::Null, Out::File(err.path()))?;
        let mut master = std::fs::File::from(pty.master);
        let mut writer = master.try_clone()?;
        let seen = Arc::new(Mutex::new(Vec::<u8>::new()));
        let s2 = seen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = master.read(&mut buf) {
                if n == 0 {
                    break;
                }
                s2.lock()
                    .expect("terminal buffer")
                    .extend_from_slice(&buf[..n]);
            }
        });
        let wait_for = |needle: &str, secs: u64| -> R {
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(secs) {
                if String::from_utf8_lossy(&seen.lock().expect("terminal buffer")).contains(needle)
                {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let e = String::from_utf8_lossy(&std::fs::read(err.path())?).into_owned();
            Err(format!(
                "no {needle:?} on the terminal after {secs} s; it shows:\n{}\nstderr:\n{e}",
                String::from_utf8_lossy(&seen.lock().expect("terminal buffer"))
            )
            .into())
        };
        wait_for("btfgate:/work# ", 240)?;
        let qemu = *children_matching(p.pid(), "\0-name\0btfgate-")
            .first()
            .ok_or("no QEMU under the shell")?;
        writer.write_all(b"echo $((6*7))-answered\r")?;
        wait_for("42-answered", 30)?;
        // Ctrl-C reaches the guest's foreground program, not btfgate.
        writer.write_all(b"sleep 300\r")?;
        std::thread::sleep(Duration::from_secs(1));
        writer.write_all(b"\x03")?;
        writer.write_all(b"echo interrupted-$((1+1))\r")?;
        wait_for("interrupted-2", 30)?;
        writer.write_all(leave)?;
        let status = p.wait_until(Instant::now() + Duration::from_secs(60))?;
        let e = String::from_utf8_lossy(&std::fs::read(err.path())?).into_owned();
        if status.code() != Some(0) || !e.contains(said) {
            return Err(format!("shell exited {status}, not 0 saying {said:?}: {e}").into());
        }
        std::thread::sleep(Duration::from_millis(500));
        if alive(qemu) {
            return Err(format!("QEMU {qemu} still runs after the shell ended ({said})").into());
        }
        let after = nix::sys::termios::tcgetattr(&pty.slave)?;
        if after.local_flags != before.local_flags || after.input_flags != before.input_flags {
            return Err(format!("the terminal's modes were not given back ({said})").into());
        }
    }
    Ok(())
}

/// Names btfgate gives its temporary files and directories (downloads, unpacked packages,
/// kernel builds, atomic writes).
fn temporary(name: &str) -> bool {
    [".unpack-", ".fetch-", ".mix-", ".pip-", ".stage-", ".src-"]
        .iter()
        .any(|p| name.starts_with(p))
        || name.ends_with(".part")
        || (name.starts_with('.') && name.ends_with(".tmp"))
}

/// Nothing is left in the run's private TMPDIR, and no temporary of btfgate's is in `cache`
/// (three levels deep, where they are made).
fn no_temporaries(tmpdir: &Path, cache: &Path, sig: nix::sys::signal::Signal) -> R {
    let left: Vec<PathBuf> = std::fs::read_dir(tmpdir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    if !left.is_empty() {
        return Err(format!("temporary files left in TMPDIR after {sig}: {left:?}").into());
    }
    let mut found = Vec::new();
    let mut level = vec![cache.to_path_buf()];
    for _ in 0..3 {
        let mut next = Vec::new();
        for d in &level {
            for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
                let p = e.path();
                if temporary(&e.file_name().to_string_lossy()) {
                    found.push(p);
                } else if e.file_type().is_ok_and(|t| t.is_dir()) && !p.ends_with("runs") {
                    next.push(p);
                }
            }
        }
        level = next;
    }
    if !found.is_empty() {
        return Err(format!("temporary files left in the cache after {sig}: {found:?}").into());
    }
    Ok(())
}

/// `verify` on the cloud kernel with an empty cache gets SIGTERM while it unpacks the package
/// for the guest (a `.unpack-` directory exists): it exits 143 and 2 s later the half-unpacked
/// directory is gone.
fn interrupt_while_unpacking() -> R {
    use nix::sys::signal::Signal;
    use std::time::Instant;
    let cache = tempfile::tempdir()?;
    let Verify {
        mut p, err, tmp, ..
    } = spawn_verify(&[("BTFGATE_CACHE", cache.path())])?;
    let unpacked = cache.path().join("unpacked");
    let t0 = Instant::now();
    let half = loop {
        let found = std::fs::read_dir(&unpacked)
            .into_iter()
            .flatten()
            .flatten()
            .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten().flatten())
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(".unpack-"))
            });
        if let Some(h) = found {
            break h;
        }
        if t0.elapsed() > Duration::from_secs(240) || p.try_status()?.is_some() {
            return Err(format!(
                "verify never unpacked into {}: {}",
                unpacked.display(),
                String::from_utf8_lossy(&std::fs::read(err.path())?)
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(p.pid() as i32), Signal::SIGTERM)?;
    let status = p.wait_until(Instant::now() + Duration::from_secs(20))?;
    let stderr = String::from_utf8_lossy(&std::fs::read(err.path())?).into_owned();
    if status.code() != Some(143) {
        return Err(format!("verify exited {status} after SIGTERM, not 143: {stderr}").into());
    }
    std::thread::sleep(Duration::from_secs(2));
    if half.exists() {
        return Err(format!("{} is left after SIGTERM: {stderr}", half.display()).into());
    }
    if !stderr.contains("temporary path(s) removed") {
        return Err(format!("verify does not say it removed its temporaries: {stderr}").into());
    }
    no_temporaries(tmp.path(), cache.path(), Signal::SIGTERM)
}

/// What `interrupt` checks once the signal is sent.
fn interrupted(
    p: &mut harness::process::Process,
    sig: nix::sys::signal::Signal,
    qemu: u32,
    err: &Path,
) -> R {
    use std::time::Instant;
    let status = p.wait_until(Instant::now() + Duration::from_secs(20))?;
    let stderr = String::from_utf8_lossy(&std::fs::read(err)?).into_owned();
    let want = 128 + sig as i32;
    if status.code() != Some(want) {
        return Err(format!("verify exited {status} after {sig}, not {want}: {stderr}").into());
    }
    if !stderr.contains(&format!("interrupted by {sig}")) || !stderr.contains("qemu-system") {
        return Err(format!("verify does not say what it interrupted: {stderr}").into());
    }
    std::thread::sleep(Duration::from_secs(2));
    if alive(qemu) {
        return Err(format!("QEMU {qemu} still runs 2 s after verify got {sig}").into());
    }
    Ok(())
}

/// The console transcript of the run whose QEMU is `pid`: `-name btfgate-<run dir>`, the run
/// directory under the cache's `runs/`.
fn transcript_of(pid: u32) -> Result<PathBuf, Failed> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))?;
    let args: Vec<String> = cmdline
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let name = args
        .iter()
        .position(|a| a == "-name")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.strip_prefix("btfgate-"))
        .ok_or("QEMU has no -name btfgate-…")?;
    Ok(harness::fixtures::cache_dir()
        .join("runs")
        .join(name)
        .join("console.log"))
}

fn ensure_alive(pid: u32, when: &str) -> R {
    if alive(pid) {
        Ok(())
    } else {
        Err(format!("QEMU {pid} was gone {when}: the trial proves nothing").into())
    }
}

fn main() -> std::process::ExitCode {
    harness::fixtures::one_vcpu_per_guest();
    let args = Arguments::from_args();
    let mut trials = vec![
        Trial::test("inspect::bad_input_exits_2", bad_input_exits_2),
        Trial::test("ci::templates_use_real_commands", ci_templates),
        Trial::test("ci::control_bad_commands_rejected", ci_template_control),
    ];
    let both = |a: &str, b: &str| target(a).and(target(b));
    let series = ["debian-cloud", "debian-cloud-6.12", "debian-cloud-7"]
        .iter()
        .try_for_each(|t| resolvable(t))
        .map(|()| PathBuf::new());
    let cases: [Case; 7] = [
        (
            "compare::debian_cloud_series_6_1_to_7",
            debian_series,
            series,
        ),
        (
            "inspect::modules_alone_name_their_set",
            modules_alone_name_their_set,
            resolvable("debian-cloud-7").map(|()| PathBuf::new()),
        ),
        (
            "compare::debian_cloud_bump",
            debian_bump,
            both("debian-cloud-previous", "debian-cloud"),
        ),
        (
            "compare::debian_cloud_bump_json",
            debian_bump_json,
            both("debian-cloud-previous", "debian-cloud"),
        ),
        (
            "compare::built_pair_btf_off_fails",
            built_pair_btf_off,
            both("tiny-btf", "tiny-nobtf"),
        ),
        (
            "compare::bad_input_exits_2",
            compare_bad_input,
            target("tiny-btf"),
        ),
        (
            "verify::static_only_writes_reports",
            verify_writes_reports,
            both("tiny-btf", "tiny-nobtf"),
        ),
    ];
    trials.push(needs(
        Trial::test(
            "build::configure_refuses_dropped_btf",
            configure_refuses_dropped_btf,
        ),
        &configure_needs(),
    ));
    trials.push(needs(
        Trial::test("fetch::alpine_list_and_exit_codes", fetch_alpine_cli),
        &harness::fixtures::alpine_dir(),
    ));
    // A source-built target that boots: the target is built and the host has QEMU and the tools.
    let runtime_target = |name: &str| {
        target(name).and_then(|p| {
            harness::fixtures::runtime_tools()
                .map(|()| p)
                .map_err(|e| e.to_string())
        })
    };
    let tiny_runtime = runtime_target("tiny-btf");
    trials.push(needs(
        Trial::test("run::status_copy_and_timeout", run_status_and_timeout),
        &tiny_runtime,
    ));
    trials.push(needs(
        Trial::test("run::sigint_leaves_no_qemu", run_interrupted),
        &tiny_runtime,
    ));
    trials.push(needs(
        Trial::test(
            "shell::refuses_a_non_terminal",
            shell_refuses_a_non_terminal,
        ),
        &tiny_runtime,
    ));
    trials.push(needs(
        Trial::test("shell::prompt_command_and_leaving", shell_on_a_terminal),
        &tiny_runtime,
    ));
    let nobtf_runtime = runtime_target("tiny-nobtf");
    trials.push(needs(
        Trial::test("matrix::nobtf_tools_fail", matrix_nobtf_fails),
        &nobtf_runtime,
    ));
    for (name, f, need) in cases {
        trials.push(needs(Trial::test(name, f), &need));
    }
    use nix::sys::signal::Signal;
    let runtime = host_kernel(Flavor::Cloud)
        .map_err(|e| e.to_string())
        .and_then(|p| harness::fixtures::runtime_tools().map(|()| p));
    trials.push(needs(
        Trial::test("run::bpftrace_one_liner_on_cloud", run_bpftrace_on_cloud),
        &runtime,
    ));
    trials.push(needs(
        Trial::test("matrix::cloud_tools_emit", matrix_cloud_emits),
        &runtime,
    ));
    for (name, sig, after) in [
        (
            "interrupt::sigint_during_boot_leaves_no_qemu",
            Signal::SIGINT,
            false,
        ),
        (
            "interrupt::sigterm_during_boot_leaves_no_qemu",
            Signal::SIGTERM,
            false,
        ),
        (
            "interrupt::sigint_during_checks_leaves_no_qemu",
            Signal::SIGINT,
            true,
        ),
        (
            "interrupt::sigterm_during_checks_leaves_no_qemu",
            Signal::SIGTERM,
            true,
        ),
    ] {
        trials.push(needs(
            Trial::test(name, move || interrupt(sig, after)),
            &runtime,
        ));
    }
    trials.push(needs(
        Trial::test(
            "interrupt::sigterm_while_unpacking_removes_the_half_unpacked_directory",
            interrupt_while_unpacking,
        ),
        &runtime,
    ));
    for f in Flavor::ALL {
        let need = host_kernel(f);
        let pkg = need.clone().unwrap_or_default();
        let p2 = pkg.clone();
        trials.push(needs(
            Trial::test(format!("inspect::json_contract::{}", f.name()), move || {
                json_contract(&pkg)
            }),
            &need,
        ));
        trials.push(needs(
            Trial::test(
                format!("inspect::generous_budget_exits_0::{}", f.name()),
                move || generous_budget_exits_0(&p2),
            ),
            &need,
        ));
    }
    libtest_mimic::run(&args, trials).exit_code()
}
