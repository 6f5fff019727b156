//! Tidy: the README's table of checks is kept true. Every check id of the catalogue (static and
//! guest) has exactly one row saying what its PASS proves and naming the controls that make it
//! fail, and every control named exists: a file (a scenario), or `file::function` whose
//! function is defined in that file. With `checks::settle` (a PASS without evidence is a
//! failure) this is how the rule "no check passes without evidence, every check has a control
//! that fails it" is enforced.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use harness::checks::{guest, STATIC_IDS};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// (id, the controls cell) of each README table row whose first cell is a catalogue id.
fn rows(readme: &str) -> Vec<(String, String)> {
    readme
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.trim().strip_prefix('|')?.split(" | ").collect();
            let id = cells.first()?.trim().strip_prefix('`')?.strip_suffix('`')?;
            let ids: Vec<&str> = STATIC_IDS
                .iter()
                .chain(guest::IDS.iter())
                .copied()
                .collect();
            ids.contains(&id)
                .then(|| (id.to_string(), cells.last().unwrap_or(&"").to_string()))
        })
        .collect()
}

/// Backticked `path` or `path::function` references of a cell.
fn refs(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .filter(|r| {
            r.starts_with("harness/") || r.starts_with("scenarios/") || r.starts_with("xtask/")
        })
        .map(str::to_string)
        .collect()
}

/// Errors: a reference whose file is missing or whose function the file does not define.
fn check_ref(r: &str) -> Option<String> {
    let (file, func) = match r.split_once("::") {
        Some((f, func)) => (f, Some(func)),
        None => (r, None),
    };
    let text = match std::fs::read_to_string(root().join(file)) {
        Ok(t) => t,
        Err(e) => return Some(format!("{r}: {file}: {e}")),
    };
    let func = func?;
    let def = format!("fn {func}(");
    if !text.contains(&def) {
        return Some(format!("{r}: {file} defines no fn {func}"));
    }
    // Defined is not enough: a unit test carries #[test], a trial body is named again where
    // the trial is registered.
    let unit_test =
        text.contains(&format!("#[test]\n    {def}")) || text.contains(&format!("#[test]\n{def}"));
    let uses = text.matches(func).count();
    if unit_test || uses >= 2 {
        None
    } else {
        Some(format!(
            "{r}: fn {func} in {file} is never run (not a #[test], not registered as a trial)"
        ))
    }
}

#[test]
fn every_check_has_one_row_with_controls_that_exist() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let rows = rows(&readme);
    let mut problems = Vec::new();
    for id in STATIC_IDS.iter().chain(guest::IDS.iter()) {
        let mine: Vec<&(String, String)> = rows.iter().filter(|(i, _)| i == id).collect();
        match mine.as_slice() {
            [(_, cell)] => {
                let rs = refs(cell);
                if rs.is_empty() {
                    problems.push(format!("{id}: the README row names no control"));
                }
                problems.extend(rs.iter().filter_map(|r| check_ref(r)));
            }
            [] => problems.push(format!("{id}: no row in the README's check tables")),
            _ => problems.push(format!("{id}: {} rows in the README", mine.len())),
        }
    }
    assert!(
        problems.is_empty(),
        "README check tables:\n{}",
        problems.join("\n")
    );
}

/// The controls of the tidy check itself: a missing file, a missing function and a row without
/// a control are each reported.
#[test]
fn tidy_reports_what_is_wrong() {
    assert!(check_ref("harness/tests/no_such_file.rs::x").is_some());
    assert!(check_ref("harness/tests/tidy.rs::no_such_function").is_some());
    assert!(check_ref("harness/tests/tidy.rs::check_ref").is_none());
    assert!(check_ref("harness/tests/tidy.rs::tidy_reports_what_is_wrong").is_none());
    // Defined once and never called nor marked #[test]: not a control.
    let lone = ["harness/tests/tidy.rs::never", "_run"].concat();
    assert!(check_ref(&lone).is_some());
    let table = "| `kconfig.btf` | proves | nothing named |\n| `vmlinux.btf` | p | `scenarios/static/no-btf.yaml` |";
    let r = rows(table);
    assert_eq!(r.len(), 2, "{r:?}");
    assert!(refs(&r[0].1).is_empty());
    assert_eq!(refs(&r[1].1), vec!["scenarios/static/no-btf.yaml"]);
}

/// Text files of the repository (sources, docs, scenarios, CI), skipping build output and git.
fn repo_text_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if p.is_dir() {
            if (name != "target" && !name.starts_with('.')) || name == ".ci" || name == ".config" {
                repo_text_files(&p, out);
            }
        } else if ["rs", "md", "yaml", "yml", "toml", "sh"]
            .iter()
            .any(|x| name.ends_with(&format!(".{x}")))
            || name == "run"
        {
            out.push(p);
        }
    }
}

/// The repository stands alone: no file cites the design notes it was built from (kept
/// outside the repository), only what it relies on, in its own words.
#[test]
fn no_file_cites_documents_outside_the_repository() {
    let banned = [
        ["FACTS", ".md"].concat(),
        ["DESIGN", ".md"].concat(),
        ["FACTS", " Part"].concat(),
        ["../shared", "/docs"].concat(),
    ];
    let mut files = Vec::new();
    repo_text_files(root(), &mut files);
    assert!(files.len() > 50, "only {} files found", files.len());
    let hits: Vec<String> = files
        .iter()
        .flat_map(|f| {
            let text = std::fs::read_to_string(f).unwrap_or_default();
            banned
                .iter()
                .filter(|b| text.contains(b.as_str()))
                .map(|b| format!("{} cites {b}", f.display()))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(hits.is_empty(), "{}", hits.join("\n"));
}

#[allow(dead_code)]
fn never_run() {}
