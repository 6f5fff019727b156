//! The command line contract of `cargo xtask inspect`: exit codes 0 / 1 / 2, the JSON shape,
//! and error messages that name the file and the phase.

use std::path::Path;
use std::process::ExitStatus;
use std::time::Duration;

use harness::fixtures::{host_kernel, needs, Flavor};
use libtest_mimic::{Arguments, Failed, Trial};

type R = Result<(), Failed>;

/// What one run of the xtask binary left.
struct Output {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// Runs the xtask binary through harness::process (deadline, process group).
fn xtask(args: &[&str]) -> Output {
    let err = std::env::temp_dir().join(format!(
        "btfgate-cli-stderr-{}-{}",
        std::process::id(),
        args.join("_")
            .replace('/', "_")
            .chars()
            .take(60)
            .collect::<String>()
    ));
    let _ = std::fs::remove_file(&err);
    let (status, stdout) = harness::process::run_capture(
        Path::new(env!("CARGO_BIN_EXE_xtask")),
        args,
        Duration::from_secs(300),
        harness::process::Output::File(&err),
    )
    .expect("run the xtask binary");
    let stderr = std::fs::read(&err).unwrap_or_default();
    let _ = std::fs::remove_file(&err);
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
    if ids != harness::checks::STATIC_IDS {
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

fn main() -> std::process::ExitCode {
    let args = Arguments::from_args();
    let mut trials = vec![Trial::test("inspect::bad_input_exits_2", bad_input_exits_2)];
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
