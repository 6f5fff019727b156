//! JUnit XML of verdicts, for CI systems.
//!
//! One `<testsuite>` per package (its checks as `<testcase>`s, classname = package name) and, for
//! a comparison, one per step holding the gate. quick-junit escapes the text and strips the
//! characters XML cannot hold.

use quick_junit::{NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestSuite};

use super::{Comparison, PackageReport, Step};
use crate::checks::{Check, Status};

/// The JUnit report of `verify`: one test suite per package.
pub fn verify(reports: &[PackageReport]) -> crate::Result<String> {
    let mut report = Report::new("btfgate");
    report.add_test_suites(reports.iter().map(package_suite));
    finish(&report).map_err(|e| crate::Error::failed("JUnit report of verify", e.to_string()))
}

/// The JUnit report of `compare`: the package suites, then one suite per step with its gate.
pub fn compare(c: &Comparison) -> crate::Result<String> {
    let mut report = Report::new("btfgate");
    report.add_test_suites(c.packages.iter().map(package_suite));
    report.add_test_suites(c.steps.iter().map(|s| step_suite(c, s)));
    finish(&report).map_err(|e| crate::Error::failed("JUnit report of compare", e.to_string()))
}

/// Serializes `report`, leaving out the `skipped` count of the root `<testsuites>`: the
/// Jenkins xunit schema (junit-10.xsd) does not declare it there and rejects the document,
/// while every `<testsuite>` keeps its own `skipped` count.
fn finish(report: &Report) -> Result<String, quick_junit::SerializeError> {
    let mut xml = report.to_string()?;
    if let Some(start) = xml.find("<testsuites") {
        if let Some(len) = xml[start..].find('>') {
            let tag = &xml[start..start + len];
            if let Some(a) = tag.find(" skipped=\"") {
                let value = a + " skipped=\"".len();
                if let Some(b) = tag[value..].find('"') {
                    xml.replace_range(start + a..start + value + b + 1, "");
                }
            }
        }
    }
    Ok(xml)
}

fn package_suite(r: &PackageReport) -> TestSuite {
    let mut suite = TestSuite::new(r.label.as_str());
    suite.add_property(Property::new("path", r.path.display().to_string()));
    suite.add_property(Property::new("name", r.name.as_str()));
    suite.add_property(Property::new("version", r.version.as_str()));
    suite.add_property(Property::new("arch", r.arch.as_str()));
    if let Some(rel) = &r.release {
        suite.add_property(Property::new("release", rel.as_str()));
    }
    suite.add_property(Property::new("btf_cost", r.size.total.to_string()));
    suite.add_property(Property::new("package_size", r.size.package.to_string()));
    if let Some(rt) = &r.runtime {
        suite.add_property(Property::new("accel", rt.accel.as_str()));
        suite.add_property(Property::new(
            "transcript",
            rt.transcript.display().to_string(),
        ));
    }
    suite.add_test_cases(r.checks.iter().map(|c| case(c, &r.name)));
    if let Some(why) = &r.runtime_unavailable {
        // Not a failed check: the machine could not run the guest. JUnit's "error".
        let mut st = TestCaseStatus::non_success(NonSuccessKind::Error);
        st.set_message(why.as_str()).set_type("runtime");
        let mut tc = TestCase::new("runtime", st);
        tc.set_classname(r.name.as_str());
        suite.add_test_case(tc);
    }
    suite
}

fn step_suite(c: &Comparison, s: &Step) -> TestSuite {
    let label = |i: usize| {
        c.packages
            .get(i)
            .map(|p| p.label.clone())
            .unwrap_or_else(|| format!("package #{i}"))
    };
    let mut suite = TestSuite::new(format!("compare {} -> {}", label(s.old), label(s.new)));
    for r in &s.rows {
        let show = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
        suite.add_property(Property::new(
            r.what.as_str(),
            format!("{} -> {}", show(r.old), show(r.new)),
        ));
    }
    let classname = c
        .packages
        .get(s.new)
        .map(|p| format!("compare.{}", p.name))
        .unwrap_or_else(|| "compare".to_string());
    suite.add_test_cases(s.gate.iter().map(|g| case(g, &classname)));
    if !s.notes.is_empty() {
        suite.set_system_out(s.notes.join("\n"));
    }
    suite
}

fn case(c: &Check, classname: &str) -> TestCase {
    let status = match c.status {
        Status::Pass => TestCaseStatus::success(),
        Status::Fail => {
            let mut st = TestCaseStatus::non_success(NonSuccessKind::Failure);
            st.set_message(c.detail.as_str()).set_type(c.id);
            if !c.evidence.is_empty() {
                st.set_description(c.evidence.join("\n"));
            }
            st
        }
        Status::Skip => {
            let mut st = TestCaseStatus::skipped();
            st.set_message(c.detail.as_str());
            st
        }
    };
    let mut tc = TestCase::new(c.id, status);
    tc.set_classname(classname);
    if c.status == Status::Pass && !c.detail.is_empty() {
        tc.set_system_out(c.detail.as_str());
    }
    tc
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::report::sample::{failing, lost_btf, passing};

    #[test]
    fn verify_suites_and_cases() {
        let xml = verify(&[passing(), failing()]).unwrap();
        assert!(xml.starts_with("<?xml"), "{xml}");
        assert!(
            xml.contains(r#"<testsuites name="btfgate" tests="5" failures="1" errors="0">"#),
            "{xml}"
        );
        assert!(
            xml.contains(r#"<testsuite name="linux-image-amd64 6.1.0-18" tests="3" skipped="1" errors="0" failures="0">"#),
            "{xml}"
        );
        assert!(xml
            .contains(r#"<property name="path" value="/cache/linux-image-amd64_6.1.0-18.deb"/>"#));
        assert!(xml.contains(r#"<property name="release" value="6.1.0-18-amd64"/>"#));
        assert!(
            xml.contains(r#"<testcase name="kconfig.btf" classname="linux-image-amd64">"#),
            "{xml}"
        );
        assert!(
            xml.contains(r#"<skipped message="not booted (no guest check listed)"/>"#),
            "{xml}"
        );
        // The failure: detail as message (escaped), evidence as the text.
        assert!(
            xml.contains(r#"<failure message="no .BTF section | stripped &lt;by&gt; R&amp;D" type="vmlinux.btf">boot/vmlinuz-6.1.0-21: sections .text .data"#),
            "{xml}"
        );
        assert!(
            xml.contains("a ``` fence and &lt;/details&gt; inside</failure>"),
            "{xml}"
        );
    }

    /// A runtime half that could not run is a JUnit error of its own beside the static cases,
    /// never a pass; without it the suite has no such case.
    #[test]
    fn runtime_that_could_not_run_is_an_error() {
        let mut r = passing();
        let without = verify(std::slice::from_ref(&r)).unwrap();
        assert!(
            !without.contains(r#"<testcase name="runtime""#),
            "{without}"
        );
        r.runtime_unavailable = Some("missing host packages: qemu-system-x86".into());
        let xml = verify(&[r]).unwrap();
        assert!(xml.contains(r#"errors="1""#), "{xml}");
        assert!(
            xml.contains(
                r#"<error message="missing host packages: qemu-system-x86" type="runtime"/>"#
            ),
            "{xml}"
        );
        let md = crate::report::markdown::verify(
            &[{
                let mut r = passing();
                r.runtime_unavailable = Some("no QEMU".into());
                r
            }],
            2 << 20,
        );
        assert!(
            md.contains("The runtime checks did not run: no QEMU"),
            "{md}"
        );
    }

    #[test]
    fn compare_has_a_gate_suite() {
        let xml = compare(&lost_btf()).unwrap();
        assert!(
            xml.contains(r#"<testsuite name="compare linux-image-amd64 6.1.0-18 -&gt; linux-image-amd64 6.1.0-21" tests="2""#),
            "{xml}"
        );
        assert!(
            xml.contains(r#"<property name="BTF cost" value="2000000 -&gt; 0"/>"#),
            "{xml}"
        );
        assert!(
            xml.contains(r#"<property name="installed" value="- -&gt; 5"/>"#),
            "{xml}"
        );
        assert!(
            xml.contains(r#"<testcase name="btf.present" classname="compare.linux-image-amd64">"#),
            "{xml}"
        );
        assert!(
            xml.contains(r#"<failure message="NEW has no vmlinux BTF" type="btf.present"/>"#),
            "{xml}"
        );
        assert!(xml.contains("flavours differ: cloud | generic"), "{xml}");
        // Both packages' suites come first.
        assert_eq!(xml.matches("<testsuite ").count(), 3);
    }

    #[test]
    fn control_characters_do_not_reach_the_xml() {
        let mut r = passing();
        r.checks = vec![Check::fail("x.y", "bell\u{7} and nul\u{0}")];
        let xml = verify(&[r]).unwrap();
        assert!(xml.contains(r#"message="bell and nul""#), "{xml}");
    }
}
