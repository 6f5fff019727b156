//! Tidy: the house rules, each shown failing on a planted violation.
//! - The README's check tables are the catalogue (`harness::checks::catalogue`): one row per
//!   check saying what its PASS proves and naming the controls that make it fail, and every
//!   control named exists: a file (a scenario), or `file::function` whose function is defined
//!   in that file and run. With `checks::settle` (a PASS without evidence is a failure) this is
//!   how "no check passes without evidence, every check has a control that fails it" is kept.
//! - No import cycle between top-level modules; ARCHITECTURE.md's code map names every source
//!   file and only files that exist; only `harness/src/process.rs` spawns processes.
//! - The library returns its one error type (no `Result<_, String>` in `harness/src`); no
//!   file refers to a document that is not in the repository; a source file over 600 lines
//!   says at its top why it is one file.
//!
//! One file because: each rule sits beside its planted violation, and they share the repository
//! walkers.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use harness::checks::catalogue::{self, Kind, CATALOGUE};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// (id, the whole row) of each README table row whose first cell is a catalogue id.
fn rows(readme: &str) -> Vec<(String, String)> {
    readme
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.trim().strip_prefix('|')?.split(" | ").collect();
            let id = cells.first()?.trim().strip_prefix('`')?.strip_suffix('`')?;
            catalogue::def(id).map(|d| (d.id.to_string(), l.trim().to_string()))
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

/// What is wrong with the README's rows for the catalogue: a check without a row, with two, or
/// with a row that says other than the catalogue; a catalogue entry naming no control, or a
/// control that does not exist or is never run.
fn readme_errors(readme: &str) -> Vec<String> {
    let rows = rows(readme);
    let mut problems = Vec::new();
    for d in CATALOGUE.iter() {
        let want = format!("| `{}` | {} | {} |", d.id, d.proves, d.controls);
        let mine: Vec<&(String, String)> = rows.iter().filter(|(i, _)| i == d.id).collect();
        match mine.as_slice() {
            [(_, row)] if *row == want => {}
            [(_, row)] => problems.push(format!(
                "{}: the README row differs from the catalogue (harness/src/checks/catalogue.rs)
  README:    {row}
  catalogue: {want}",
                d.id
            )),
            [] => problems.push(format!(
                "{}: no row in the README's check tables; the catalogue's row is
  {want}",
                d.id
            )),
            _ => problems.push(format!("{}: {} rows in the README", d.id, mine.len())),
        }
        let rs = refs(d.controls);
        if rs.is_empty() {
            problems.push(format!("{}: the catalogue names no control", d.id));
        }
        problems.extend(rs.iter().filter_map(|r| check_ref(r)));
    }
    problems
}

#[test]
fn every_check_has_one_row_with_controls_that_exist() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let problems = readme_errors(&readme);
    assert!(
        problems.is_empty(),
        "README check tables:
{}",
        problems.join(
            "
"
        )
    );
    // Every kind has its table.
    for kind in [Kind::Static, Kind::Guest, Kind::Gate] {
        let row = &catalogue::readme_rows(kind)[0];
        assert!(
            readme.contains(row.as_str()),
            "no README table for {kind:?}"
        );
    }
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
    assert!(refs("nothing named").is_empty());
    assert_eq!(
        refs("`scenarios/static/no-btf.yaml` (a note)"),
        vec!["scenarios/static/no-btf.yaml"]
    );
    // A README whose kconfig.btf row says something else, and which lacks the other rows.
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let kconfig = &catalogue::readme_rows(Kind::Static)[0];
    let edited = readme.replace(
        kconfig.as_str(),
        "| `kconfig.btf` | proves | nothing named |",
    );
    let errs = readme_errors(&edited);
    assert!(
        errs.iter()
            .any(|e| e.starts_with("kconfig.btf: the README row differs")),
        "{errs:?}"
    );
    let errs = readme_errors("| `kconfig.btf` | p | c |\n| `kconfig.btf` | p | c |\n");
    assert!(
        errs.iter()
            .any(|e| e == "kconfig.btf: 2 rows in the README"),
        "{errs:?}"
    );
    assert!(
        errs.iter().any(|e| e.starts_with("vmlinux.btf: no row")),
        "{errs:?}"
    );
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

// ---- house rules: module imports, the code map, where processes are spawned ----------------

/// The Rust source files of a crate's `src/` (or any directory), relative to the workspace,
/// with their text.
fn sources(dir: &str) -> Vec<(String, String)> {
    fn walk(d: &Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(&root().join(dir), &mut files);
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let rel = p
                .strip_prefix(root())
                .unwrap()
                .to_string_lossy()
                .into_owned();
            (rel, text)
        })
        .collect()
}

/// The top-level module of a file under `src` (`harness/src/checks/guest.rs` → `checks`).
fn top_module(src: &str, file: &str) -> String {
    let rel = file
        .strip_prefix(src)
        .unwrap_or(file)
        .trim_start_matches('/');
    let first = rel.split('/').next().unwrap_or(rel);
    first.trim_end_matches(".rs").to_string()
}

/// Edges between top-level modules of one crate: (from, to, file:line of the first use), from
/// `crate::<module>` paths in code (comments and `#[cfg(test)]` modules left out). A module
/// and its own submodules are one node.
fn module_edges(src: &str, files: &[(String, String)]) -> Vec<(String, String, String)> {
    let modules: std::collections::BTreeSet<String> = files
        .iter()
        .map(|(f, _)| top_module(src, f))
        .filter(|m| m != "lib" && m != "main")
        .collect();
    let mut edges: Vec<(String, String, String)> = Vec::new();
    for (f, text) in files {
        let from = top_module(src, f);
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("#[cfg(test)]") {
                break;
            }
            let code = line.split("//").next().unwrap_or("");
            for part in code.split("crate::").skip(1) {
                let to: String = part
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if to != from
                    && modules.contains(&to)
                    && !edges.iter().any(|(a, b, _)| *a == from && *b == to)
                {
                    edges.push((from.clone(), to, format!("{f}:{}", n + 1)));
                }
            }
        }
    }
    edges
}

/// A cycle among the edges, as `a -> b (file:line) -> … -> a`, if there is one.
fn find_cycle(edges: &[(String, String, String)]) -> Option<String> {
    fn dfs(
        v: &str,
        edges: &[(String, String, String)],
        path: &mut Vec<(String, String)>,
        done: &mut std::collections::BTreeSet<String>,
    ) -> Option<String> {
        if let Some(i) = path.iter().position(|(m, _)| m == v) {
            let cycle: Vec<String> = path[i..]
                .iter()
                .map(|(m, at)| format!("{m} ({at})"))
                .collect();
            return Some(format!("{} -> {v}", cycle.join(" -> ")));
        }
        if done.contains(v) {
            return None;
        }
        for (a, b, at) in edges.iter().filter(|(a, _, _)| a == v) {
            path.push((a.clone(), at.clone()));
            if let Some(c) = dfs(b, edges, path, done) {
                return Some(c);
            }
            path.pop();
        }
        done.insert(v.to_string());
        None
    }
    let mut done = std::collections::BTreeSet::new();
    edges
        .iter()
        .find_map(|(a, _, _)| dfs(a, edges, &mut Vec::new(), &mut done))
}

/// No import cycle between the modules of the library or of xtask: each can be read after
/// the ones it uses.
#[test]
fn no_import_cycle() {
    for src in ["harness/src", "xtask/src"] {
        let files = sources(src);
        let edges = module_edges(src, &files);
        assert!(edges.len() > 5, "{src}: only {} edges found", edges.len());
        if let Some(c) = find_cycle(&edges) {
            panic!("{src}: import cycle: {c}");
        }
    }
}

/// Rows of ARCHITECTURE.md's code map: (path, the row's text), for paths in the repository.
fn code_map(arch: &str) -> Vec<(String, String)> {
    arch.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("| `")?;
            let (path, _) = rest.split_once('`')?;
            // Rows of the cache's table name patterns (`images/<hex>.cpio`), not files here.
            (["harness/", "xtask/", "scenarios/", "images/", "ci/", ".ci/"]
                .iter()
                .any(|p| path.starts_with(p))
                && !path.contains('<'))
            .then(|| (path.to_string(), l.to_string()))
        })
        .collect()
}

/// Source files the code map does not describe, and paths it names that do not exist. A file
/// is described by its own row, or by its directory's row naming it (`name.rs` or `name`);
/// a directory row describes its `mod.rs`, `main.rs` and `lib.rs`, and a `mod.rs` is described
/// by the rows of the files beside it.
fn code_map_errors(
    map: &[(String, String)],
    files: &[String],
    exists: &dyn Fn(&str) -> bool,
) -> Vec<String> {
    let mut errs: Vec<String> = map
        .iter()
        .filter(|(p, _)| !exists(p))
        .map(|(p, _)| format!("ARCHITECTURE.md names {p}, which does not exist"))
        .collect();
    for f in files {
        let (dir, name) = f.rsplit_once('/').unwrap_or(("", f));
        let stem = name.trim_end_matches(".rs");
        let described = map.iter().any(|(p, row)| {
            p == f
                || (p.ends_with('/')
                    && f.starts_with(p.as_str())
                    && (f[p.len()..] == *name || p.trim_end_matches('/') == dir)
                    && (["mod", "main", "lib"].contains(&stem)
                        || row.contains(&format!("`{name}`"))
                        || row.contains(&format!("`{stem}`"))
                        || row.contains(&format!("`{stem}` ("))))
        });
        let beside = stem == "mod"
            && map
                .iter()
                .any(|(p, _)| p.starts_with(&format!("{dir}/")) && p != f);
        if !described && !beside {
            errs.push(format!("{f}: not in ARCHITECTURE.md's code map"));
        }
    }
    errs
}

/// ARCHITECTURE.md's code map is true: every source file is in it, every file it names exists.
#[test]
fn code_map_is_true() {
    let arch = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let map = code_map(&arch);
    assert!(map.len() > 30, "only {} code map rows", map.len());
    let files: Vec<String> = ["harness/src", "xtask/src"]
        .iter()
        .flat_map(|d| sources(d))
        .map(|(f, _)| f)
        .chain(
            ["harness/tests", "xtask/tests"]
                .iter()
                .flat_map(|d| std::fs::read_dir(root().join(d)).unwrap())
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|x| x == "rs"))
                .map(|p| {
                    p.strip_prefix(root())
                        .unwrap()
                        .to_string_lossy()
                        .into_owned()
                }),
        )
        .collect();
    let errs = code_map_errors(&map, &files, &|p| root().join(p).exists());
    assert!(errs.is_empty(), "{}", errs.join("\n"));
}

/// Places that start a process other than `harness/src/process.rs`: (file:line, the line).
fn spawn_sites(files: &[(String, String)]) -> Vec<String> {
    let needles = [
        ["Command", "::new("].concat(),
        ["std::process::", "Command"].concat(),
        ["xshell", "::"].concat(),
        ["cmd", "!("].concat(),
    ];
    let needles = &needles;
    files
        .iter()
        .filter(|(f, _)| f != "harness/src/process.rs")
        .flat_map(|(f, text)| {
            text.lines().enumerate().filter_map(move |(n, l)| {
                let code = l.split("//").next().unwrap_or("");
                needles
                    .iter()
                    .any(|x| code.contains(x.as_str()))
                    .then(|| format!("{f}:{}: {}", n + 1, l.trim()))
            })
        })
        .collect()
}

/// Every process is started by `harness::process` (own group, deadline, killed on every path):
/// no other file, library, xtask or test, builds a `Command`.
#[test]
fn processes_are_spawned_only_by_the_process_module() {
    let files: Vec<(String, String)> = ["harness/src", "xtask/src", "harness/tests", "xtask/tests"]
        .iter()
        .flat_map(|d| sources(d))
        .collect();
    assert!(files.iter().any(|(f, _)| f == "harness/src/process.rs"));
    let sites = spawn_sites(&files);
    assert!(sites.is_empty(), "{}", sites.join("\n"));
}

/// Files compiled only with the `test-support` feature (`#[cfg(feature = "test-support")]`
/// before their `mod` line in lib.rs or their parent `mod.rs`): not part of the product.
fn test_support(files: &[(String, String)]) -> Vec<String> {
    let mut out = Vec::new();
    for (f, text) in files {
        let dir = f
            .rsplit_once('/')
            .map(|(d, _)| d.to_string())
            .unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        for (i, l) in lines.iter().enumerate() {
            let Some(name) = l
                .trim()
                .strip_prefix("pub mod ")
                .or_else(|| l.trim().strip_prefix("mod "))
                .and_then(|r| r.strip_suffix(';'))
            else {
                continue;
            };
            if i > 0 && lines[i - 1].contains("feature = \"test-support\"") {
                out.push(format!("{dir}/{name}.rs"));
                out.push(format!("{dir}/{name}/"));
            }
        }
    }
    out
}

/// `Result<_, String>` in library code (comments and `#[cfg(test)]` modules left out):
/// file:line of each. The library returns its one error type, `harness::Error`.
fn string_results(files: &[(String, String)]) -> Vec<String> {
    let skip = test_support(files);
    let mut out = Vec::new();
    for (f, text) in files {
        if skip
            .iter()
            .any(|s| f == s || (s.ends_with('/') && f.starts_with(s.as_str())))
        {
            continue;
        }
        let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or("");
        // Join each line with the next few so a type written over several lines is seen.
        let lines: Vec<&str> = code
            .lines()
            .map(|l| l.split("//").next().unwrap_or(""))
            .collect();
        for i in 0..lines.len() {
            let window: String = lines[i..(i + 4).min(lines.len())]
                .iter()
                .map(|l| l.trim())
                .collect::<Vec<_>>()
                .join(" ");
            if let Some(at) = window.find("Result<") {
                // The first line of the window must hold the start of the type.
                if at >= lines[i].trim().len() {
                    continue;
                }
                // The type arguments at depth 1; the error type is the last non-empty one.
                let mut depth = 0i32;
                let mut args = vec![String::new()];
                for c in window[at + 6..].chars() {
                    match c {
                        '<' => depth += 1,
                        '>' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        ',' if depth == 1 => {
                            args.push(String::new());
                            continue;
                        }
                        _ => {}
                    }
                    if depth >= 1 && !(depth == 1 && c == '<') {
                        if let Some(a) = args.last_mut() {
                            a.push(c);
                        }
                    }
                }
                let err = args.iter().rev().map(|a| a.trim()).find(|a| !a.is_empty());
                if args.len() >= 2 && err == Some("String") {
                    out.push(format!("{f}:{}: {}", i + 1, lines[i].trim()));
                }
            }
        }
    }
    out
}

/// The library returns one error type: no `Result<_, String>` outside test support.
#[test]
fn the_library_returns_its_one_error_type() {
    let files = sources("harness/src");
    let skip = test_support(&files);
    assert!(
        skip.contains(&"harness/src/fixtures.rs".to_string()),
        "{skip:?}"
    );
    let hits = string_results(&files);
    assert!(hits.is_empty(), "{}", hits.join("\n"));
}

/// Markdown documents a file refers to (a capitalised name ending in .md, with or without a
/// path, or any such name reached through a parent directory) that are not in the
/// repository: file:line and the name.
fn missing_documents(files: &[(String, String)], exists: &dyn Fn(&str) -> bool) -> Vec<String> {
    let mut out = Vec::new();
    for (f, text) in files {
        for (n, l) in text.lines().enumerate() {
            for (at, _) in l.match_indices(".md") {
                let after = l[at + 3..].chars().next();
                if after.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                    continue;
                }
                let start = l[..at]
                    .rfind(|c: char| !(c.is_alphanumeric() || "_-./".contains(c)))
                    .map(|i| i + 1)
                    .unwrap_or(0);
                let name = &l[start..at + 3];
                let bare = name.trim_start_matches("./");
                // A document is named in capitals (README.md) or reached outside the tree
                // through a parent directory; lower-case names are files btfgate writes (report.md).
                let base = bare.rsplit('/').next().unwrap_or(bare);
                let document =
                    base.starts_with(|c: char| c.is_ascii_uppercase()) || bare.starts_with("../");
                if !document {
                    continue;
                }
                if !exists(bare) {
                    out.push(format!("{f}:{}: {name}", n + 1));
                }
            }
        }
    }
    out
}

/// No file refers to a Markdown document that is not in the repository (by its path from the
/// root, or by a name some document of the repository has).
#[test]
fn no_reference_to_a_document_outside_the_repository() {
    let mut paths = Vec::new();
    repo_text_files(root(), &mut paths);
    let docs: Vec<String> = paths
        .iter()
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .map(|p| {
            p.strip_prefix(root())
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert!(docs.iter().any(|d| d == "ARCHITECTURE.md"), "{docs:?}");
    let files: Vec<(String, String)> = paths
        .iter()
        .map(|p| {
            (
                p.strip_prefix(root())
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
                std::fs::read_to_string(p).unwrap_or_default(),
            )
        })
        .collect();
    let exists = |name: &str| {
        docs.iter().any(|d| {
            d == name || d.rsplit('/').next() == Some(name) || d.ends_with(&format!("/{name}"))
        })
    };
    let hits = missing_documents(&files, &exists);
    assert!(hits.is_empty(), "{}", hits.join("\n"));
}

/// Lines past which a source file must say at its top why it is one file.
const LONG: usize = 600;

/// Source files over [`LONG`] lines whose first 30 lines do not say why they are long
/// (a comment with "one file because").
fn long_without_reason(files: &[(String, String)]) -> Vec<String> {
    files
        .iter()
        .filter(|(_, t)| t.lines().count() > LONG)
        .filter(|(_, t)| {
            !t.lines().take(30).any(|l| {
                l.trim_start().starts_with("//") && l.to_lowercase().contains("one file because")
            })
        })
        .map(|(f, t)| {
            format!(
                "{f}: {} lines, and its top does not say why it is one file",
                t.lines().count()
            )
        })
        .collect()
}

/// No source file over 600 lines without a reason written at its top.
#[test]
fn long_files_say_why() {
    let files: Vec<(String, String)> = ["harness/src", "xtask/src", "harness/tests", "xtask/tests"]
        .iter()
        .flat_map(|d| sources(d))
        .collect();
    let hits = long_without_reason(&files);
    assert!(hits.is_empty(), "{}", hits.join("\n"));
}

/// The house rules fail on planted violations, naming file and line.
#[test]
fn house_rules_fail_on_planted_violations() {
    let f = |p: &str, t: &str| (p.to_string(), t.to_string());
    // An import cycle a -> b -> a.
    let files = [
        f("x/src/a.rs", "use crate::b::B;\n"),
        f(
            "x/src/b/mod.rs",
            "// crate::c in a comment is not a use\n\nfn f() { crate::a::g() }\n",
        ),
        f("x/src/c.rs", "pub fn c() {}\n"),
    ];
    let edges = module_edges("x/src", &files);
    let c = find_cycle(&edges).expect("the planted cycle is found");
    assert!(
        c.contains("x/src/a.rs:1") && c.contains("x/src/b/mod.rs:3"),
        "{c}"
    );
    assert!(!edges.iter().any(|(_, b, _)| b == "c"), "{edges:?}");
    // A file missing from the map, and a mapped file that does not exist.
    let map = code_map(
        "| `xtask/x/a.rs` | a |\n| `xtask/x/gone.rs` | gone |\n| `xtask/x/b/` | `inner.rs` |\n\
         | `images/<hex>.cpio` | a cache pattern, not a file here |\n",
    );
    let errs = code_map_errors(
        &map,
        &[
            "xtask/x/a.rs".into(),
            "xtask/x/b/mod.rs".into(),
            "xtask/x/b/inner.rs".into(),
            "xtask/x/new.rs".into(),
        ],
        &|p| p != "xtask/x/gone.rs",
    );
    assert_eq!(
        errs,
        vec![
            "ARCHITECTURE.md names xtask/x/gone.rs, which does not exist".to_string(),
            "xtask/x/new.rs: not in ARCHITECTURE.md's code map".to_string(),
        ]
    );
    // A spawn outside the process module.
    let planted = ["let c = std::process::", "Command", "::new(\"sh\");"].concat();
    let sites = spawn_sites(&[f(
        "x/src/a.rs",
        &format!("fn main() {{\n    {planted}\n}}\n"),
    )]);
    assert_eq!(sites.len(), 1, "{sites:?}");
    assert!(sites[0].starts_with("x/src/a.rs:2:"), "{sites:?}");
    // A `Result<_, String>`, also over two lines; none in test support or a test module.
    let lib = [
        f(
            "x/src/lib.rs",
            "pub mod a;\n#[cfg(feature = \"test-support\")]\npub mod fx;\n",
        ),
        f(
            "x/src/a.rs",
            "pub fn ok() -> Result<u8, Error> { todo!() }\npub fn p() -> Result<Vec<u8>, String> {\n}\nfn q(\n) -> Result<\n    u8,\n    String,\n> {}\n#[cfg(test)]\nmod tests {\n    fn t() -> Result<(), String> {}\n}\n",
        ),
        f("x/src/fx.rs", "pub fn t() -> Result<(), String> { Ok(()) }\n"),
    ];
    let hits = string_results(&lib);
    assert_eq!(hits.len(), 2, "{hits:?}");
    assert!(hits[0].starts_with("x/src/a.rs:2:"), "{hits:?}");
    assert!(hits[1].starts_with("x/src/a.rs:5:"), "{hits:?}");
    // A document that is not in the repository.
    let planted = ["..", "/shared", "/docs/", "NOTES", ".md"].concat();
    let docs = missing_documents(
        &[f(
            "README.md",
            &format!("see ARCHITECTURE.md\nand {planted}\n"),
        )],
        &|n| n == "ARCHITECTURE.md",
    );
    assert_eq!(docs, vec![format!("README.md:2: {planted}")]);
    // A long file without its reason, and one with it.
    let long = "fn x() {}\n".repeat(LONG + 1);
    let why = format!("//! One file because: the reader is one state machine.\n{long}");
    let hits = long_without_reason(&[f("x/src/long.rs", &long), f("x/src/why.rs", &why)]);
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert!(
        hits[0].starts_with(&format!("x/src/long.rs: {} lines", LONG + 1)),
        "{hits:?}"
    );
}
