//! Finding and reading scenario files: every error names `file:line:column`. Zero scenarios,
//! an unknown key or check id, or an unknown target fails the run.

use crate::Error;
use std::path::{Path, PathBuf};

use super::model::{Expect, Scenario, TargetsFile, UserRun};
use crate::checks::guest::UserCommand;

/// A scenario file, parsed.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub file: PathBuf,
    /// The trial name stem: the path under the scenarios directory, without `.yaml`.
    pub stem: String,
    pub scenario: Scenario,
    /// Its `guest.run` commands, built (regular expressions compiled) once when it loads, and
    /// the host paths they copy into `/work`.
    pub user: Vec<UserCommand>,
    pub copies: Vec<PathBuf>,
}

/// Every scenario of a directory and the targets they run against.
#[derive(Debug, Clone)]
pub struct Suite {
    pub dir: PathBuf,
    pub targets_file: PathBuf,
    pub targets: TargetsFile,
    pub scenarios: Vec<Loaded>,
}

/// The scenarios directory: `$BTFGATE_SCENARIOS`, else the repository's `scenarios/`.
pub fn scenarios_dir() -> PathBuf {
    std::env::var_os("BTFGATE_SCENARIOS")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::paths::workspace_root().join("scenarios"))
}

fn located(file: &Path, e: &serde_saphyr::Error) -> Error {
    let text = e.to_string();
    let first = text.lines().next().unwrap_or("").trim();
    match e.location() {
        Some(l) => Error::at(file, l.line() as usize, l.column() as usize, first),
        None => Error::bad(file, "scenario", first),
    }
}

/// Parses `text` (the content of `file`) as a scenario.
pub fn parse_scenario(file: &Path, text: &str) -> crate::Result<Scenario> {
    serde_saphyr::from_str::<Scenario>(text).map_err(|e| located(file, &e))
}

/// Parses a targets file.
pub fn parse_targets(file: &Path, text: &str) -> crate::Result<TargetsFile> {
    serde_saphyr::from_str::<TargetsFile>(text).map_err(|e| located(file, &e))
}

/// The seconds a `guest.run` command may run when the scenario says nothing.
const USER_TIMEOUT: u64 = 60;

/// `file:line:column: guest.run: …` for a value of a scenario.
fn at<T>(file: &Path, v: &serde_saphyr::Spanned<T>, msg: impl std::fmt::Display) -> String {
    format!(
        "{}:{}:{}: guest.run: {msg}",
        file.display(),
        v.referenced.line(),
        v.referenced.column()
    )
}

/// The commands of a scenario's `guest.run` list, ready to run, and the host paths they copy
/// into `/work` (relative to the scenario file). Every problem is returned, each located:
/// an empty list, an empty or multi-line command, an invalid regular expression, a copy that
/// does not exist, a zero timeout.
fn user_commands(
    file: &Path,
    list: &serde_saphyr::Spanned<Vec<UserRun>>,
) -> Result<(Vec<UserCommand>, Vec<PathBuf>), Vec<String>> {
    let mut errors = Vec::new();
    if list.value.is_empty() {
        errors.push(at(
            file,
            list,
            "the list is empty: running nothing proves nothing",
        ));
    }
    let base = file.parent().unwrap_or(Path::new("."));
    let mut cmds = Vec::new();
    let mut copies = Vec::new();
    let regex = |v: &Option<serde_saphyr::Spanned<String>>, key: &str, errors: &mut Vec<String>| {
        v.as_ref().and_then(|r| match regex::Regex::new(&r.value) {
            Ok(re) => Some(re),
            Err(e) => {
                let first = e
                    .to_string()
                    .lines()
                    .last()
                    .unwrap_or("")
                    .trim()
                    .to_string();
                errors.push(at(
                    file,
                    r,
                    format!("{key} is not a valid regular expression: {first}"),
                ));
                None
            }
        })
    };
    for u in &list.value {
        let line = u.command.value.trim();
        if line.is_empty() {
            errors.push(at(file, &u.command, "`command` is empty"));
        } else if line.contains(['\n', '\r']) {
            errors.push(at(
                file,
                &u.command,
                "`command` is one shell line (put a script in a file and `copy` it)",
            ));
        }
        let expect_output = regex(&u.expect_output, "expect_output", &mut errors);
        let reject_output = regex(&u.reject_output, "reject_output", &mut errors);
        for c in &u.copy {
            let host = base.join(&c.value);
            if std::fs::symlink_metadata(&host).is_err() {
                errors.push(at(
                    file,
                    c,
                    format!(
                        "copy: {} does not exist (paths are relative to the scenario file)",
                        host.display()
                    ),
                ));
            }
            copies.push(host);
        }
        if u.timeout == Some(0) {
            errors.push(at(
                file,
                &u.command,
                "`timeout: 0` leaves the command no time",
            ));
        }
        cmds.push(UserCommand {
            origin: format!("{}:{}", file.display(), u.command.referenced.line()),
            line: line.to_string(),
            expect_status: u.expect_status,
            expect_output,
            reject_output,
            timeout: std::time::Duration::from_secs(u.timeout.unwrap_or(USER_TIMEOUT)),
        });
    }
    if errors.is_empty() {
        Ok((cmds, copies))
    } else {
        Err(errors)
    }
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) -> crate::Result<()> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, "scenarios", e))?;
    for e in rd {
        let p = e.map_err(|e| Error::io(dir, "scenarios", e))?.path();
        if p.is_dir() {
            yaml_files(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            out.push(p);
        }
    }
    Ok(())
}

/// Loads every scenario under `dir` (recursively) and the targets file (`dir/targets.yaml`,
/// else the repository's). Returns every error found, each with its location.
pub fn load(dir: &Path) -> Result<Suite, Vec<String>> {
    let mut errors = Vec::new();
    let own = dir.join("targets.yaml");
    let targets_file = if own.is_file() {
        own
    } else {
        crate::paths::workspace_root().join("scenarios/targets.yaml")
    };
    let targets = std::fs::read_to_string(&targets_file)
        .map_err(|e| Error::io(&targets_file, "targets", e))
        .and_then(|t| parse_targets(&targets_file, &t));
    let targets = match targets {
        Ok(t) => Some(t),
        Err(e) => {
            errors.push(e.to_string());
            None
        }
    };
    let mut files = Vec::new();
    if let Err(e) = yaml_files(dir, &mut files) {
        errors.push(e.to_string());
    }
    files.retain(|f| f.file_name().is_none_or(|n| n != "targets.yaml"));
    files.sort();
    if files.is_empty() && errors.is_empty() {
        errors.push(format!(
            "{}: no scenario files (*.yaml besides targets.yaml): zero scenarios is a failure, not a pass",
            dir.display()
        ));
    }
    let mut scenarios = Vec::new();
    for file in files {
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) => {
                errors.push(format!("{}: {e}", file.display()));
                continue;
            }
        };
        let sc = match parse_scenario(&file, &text) {
            Ok(s) => s,
            Err(e) => {
                errors.push(e.to_string());
                continue;
            }
        };
        if let Some(t) = &targets {
            for name in &sc.targets {
                if !t.targets.contains_key(&name.value) {
                    errors.push(format!(
                        "{}:{}:{}: unknown target {:?} (targets.yaml defines: {})",
                        file.display(),
                        name.referenced.line(),
                        name.referenced.column(),
                        name.value,
                        t.targets.keys().cloned().collect::<Vec<_>>().join(", ")
                    ));
                }
            }
        }
        if sc.targets.is_empty() {
            errors.push(format!(
                "{}: `targets` is empty: a scenario must name at least one target",
                file.display()
            ));
        }
        if sc.checks.listed().is_empty() {
            errors.push(format!("{}: `checks` lists no check", file.display()));
        }
        if let Some(list) = sc
            .checks
            .guest_btf_modules
            .as_ref()
            .and_then(|m| m.value.modules.as_ref())
        {
            if list.value.is_empty() {
                errors.push(format!(
                    "{}:{}:{}: guest.btf_modules: `modules` is empty: comparing no module proves nothing (name at least one, or leave `modules` out for the image recipe's list)",
                    file.display(),
                    list.referenced.line(),
                    list.referenced.column()
                ));
            }
        }
        let (mut user, mut copies) = (Vec::new(), Vec::new());
        if let Some(list) = &sc.checks.guest_run {
            match user_commands(&file, list) {
                Ok((u, c)) => (user, copies) = (u, c),
                Err(e) => errors.extend(e),
            }
        }
        if sc.expect == Expect::Fail && sc.reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
            errors.push(format!(
                "{}: `expect: fail` needs a `reason`",
                file.display()
            ));
        }
        let stem = file
            .strip_prefix(dir)
            .unwrap_or(&file)
            .with_extension("")
            .to_string_lossy()
            .into_owned();
        if sc.checks.boots() && !stem.starts_with("runtime/") {
            errors.push(format!(
                "{}: a scenario with guest.* checks boots a VM and must live under runtime/ (nextest's qemu group)",
                file.display()
            ));
        }
        scenarios.push(Loaded {
            file,
            stem,
            scenario: sc,
            user,
            copies,
        });
    }
    match (errors.is_empty(), targets) {
        (true, Some(targets)) => Ok(Suite {
            dir: dir.to_path_buf(),
            targets_file,
            targets,
            scenarios,
        }),
        _ => Err(errors),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    const TARGETS: &str = "targets:\n  t1:\n    source:\n      file: /nonexistent.apk\n";

    fn load_one(scenario: &str) -> Result<Suite, Vec<String>> {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "targets.yaml", TARGETS);
        write(d.path(), "area/one.yaml", scenario);
        load(d.path())
    }

    fn one_error(scenario: &str) -> String {
        let errs = load_one(scenario).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        errs[0].clone()
    }

    #[test]
    fn good_scenario_loads_with_lines() {
        let s = load_one("targets: [t1]\nexpect: pass\nchecks:\n  kconfig.btf: {}\n  size.budget: { budget: 2MiB }\n").unwrap();
        assert_eq!(s.scenarios.len(), 1);
        assert_eq!(s.scenarios[0].stem, "area/one");
        assert_eq!(
            s.scenarios[0].scenario.checks.listed(),
            vec![("kconfig.btf", 4), ("size.budget", 5)]
        );
    }

    /// The schema's check ids are the catalogue's static and guest checks, in its order.
    #[test]
    fn the_schema_knows_every_check_of_the_catalogue() {
        use crate::checks::catalogue::{ids, Kind};
        let all: Vec<&str> = ids(Kind::Static)
            .into_iter()
            .chain(ids(Kind::Guest))
            .collect();
        let body: String = all
            .iter()
            .map(|id| match *id {
                "size.budget" => format!("  {id}: {{ budget: 2MiB }}\n"),
                "guest.run" => format!("  {id}:\n    - command: \"true\"\n"),
                _ => format!("  {id}: {{}}\n"),
            })
            .collect();
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "targets.yaml", TARGETS);
        let text = format!("targets: [t1]\nexpect: pass\nchecks:\n{body}");
        write(d.path(), "runtime/all.yaml", &text);
        let s = load(d.path()).unwrap();
        let listed: Vec<&str> = s.scenarios[0]
            .scenario
            .checks
            .listed()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(listed, all);
        assert!(s.scenarios[0].scenario.checks.boots());
    }

    #[test]
    fn unknown_key_names_file_line_column() {
        let e = one_error("targets: [t1]\nexpect: pass\nchecks:\n  kconfig.btf: {}\nbogus: 1\n");
        assert!(e.contains("one.yaml:5:"), "{e}");
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn wrong_type_names_file_line_column() {
        let e =
            one_error("targets: [t1]\nexpect: pass\nchecks:\n  size.budget: { budget: [1, 2] }\n");
        assert!(e.contains("one.yaml:4:"), "{e}");
    }

    #[test]
    fn unknown_check_id_names_file_line_column() {
        let e = one_error(
            "targets: [t1]\nexpect: pass\nchecks:\n  kconfig.btf: {}\n  vmlinux.btff: {}\n",
        );
        assert!(
            e.contains("one.yaml:5:") && e.contains("vmlinux.btff"),
            "{e}"
        );
    }

    #[test]
    fn unknown_target_names_file_line_column() {
        let e = one_error("targets: [t1, nope]\nexpect: pass\nchecks:\n  kconfig.btf: {}\n");
        assert!(
            e.contains("one.yaml:1:") && e.contains("unknown target \"nope\""),
            "{e}"
        );
    }

    #[test]
    fn expected_failure_needs_a_reason() {
        let e = one_error("targets: [t1]\nexpect: fail\nchecks:\n  kconfig.btf: {}\n");
        assert!(e.contains("needs a `reason`"), "{e}");
    }

    #[test]
    fn empty_module_list_is_refused_with_its_location() {
        let load_runtime = |text: &str| {
            let d = tempfile::tempdir().unwrap();
            write(d.path(), "targets.yaml", TARGETS);
            write(d.path(), "runtime/one.yaml", text);
            load(d.path())
        };
        let errs = load_runtime(
            "targets: [t1]\nexpect: pass\nchecks:\n  guest.btf_modules:\n    modules: []\n",
        )
        .unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].contains("one.yaml:5:") && errs[0].contains("`modules` is empty"),
            "{errs:?}"
        );
        // The control: the same scenario naming a module loads.
        load_runtime(
            "targets: [t1]\nexpect: pass\nchecks:\n  guest.btf_modules:\n    modules: [dummy]\n",
        )
        .unwrap();
    }

    #[test]
    fn guest_run_problems_are_each_located() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "targets.yaml", TARGETS);
        write(d.path(), "runtime/probe.bt", "BEGIN { exit(); }");
        let text = "targets: [t1]\nexpect: pass\nchecks:\n  guest.run:\n    - command: bpftrace probe.bt\n      copy: [probe.bt]\n      expect_output: \"^@x: [1-9\"\n    - command: \"  \"\n      copy: [nope.bt]\n      reject_output: \"(\"\n";
        write(d.path(), "runtime/one.yaml", text);
        let errs = load(d.path()).unwrap_err();
        let all = errs.join("\n");
        assert_eq!(errs.len(), 4, "{all}");
        assert!(
            all.contains("one.yaml:7:")
                && all.contains("expect_output is not a valid regular expression"),
            "{all}"
        );
        assert!(
            all.contains("one.yaml:8:") && all.contains("`command` is empty"),
            "{all}"
        );
        assert!(
            all.contains("one.yaml:9:") && all.contains("nope.bt does not exist"),
            "{all}"
        );
        assert!(
            all.contains("one.yaml:10:") && all.contains("reject_output"),
            "{all}"
        );
        // The control: the first command alone, its expression fixed, loads with its copy.
        let fixed = "targets: [t1]\nexpect: pass\nchecks:\n  guest.run:\n    - command: bpftrace probe.bt\n      copy: [probe.bt]\n      expect_output: \"^@x: [1-9]\"\n";
        write(d.path(), "runtime/one.yaml", fixed);
        let s = load(d.path()).unwrap();
        let (cmds, copies) = (&s.scenarios[0].user, &s.scenarios[0].copies);
        assert_eq!(cmds[0].line, "bpftrace probe.bt");
        assert!(cmds[0].origin.ends_with("one.yaml:5"), "{}", cmds[0].origin);
        assert_eq!(*copies, [d.path().join("runtime/probe.bt")]);
        // An empty list is refused.
        write(
            d.path(),
            "runtime/one.yaml",
            "targets: [t1]\nexpect: pass\nchecks:\n  guest.run: []\n",
        );
        let errs = load(d.path()).unwrap_err();
        assert!(
            errs[0].contains("one.yaml:4:") && errs[0].contains("empty"),
            "{errs:?}"
        );
    }

    #[test]
    fn empty_directory_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "targets.yaml", TARGETS);
        let errs = load(d.path()).unwrap_err();
        assert!(errs[0].contains("zero scenarios"), "{errs:?}");
    }
}
