//! The time each test binary took, read from `cargo test`'s own output (stdout and stderr in
//! one log, in order): a `Running …` or `Doc-tests …` line names the binary, its `test result:`
//! line gives its counts and seconds. Printed after the run as a table ending with one summary
//! line for the whole test phase.

use std::fmt::Write as _;

/// One test binary's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Binary {
    /// e.g. `cli (tests/cli.rs)`, `harness (unittests src/lib.rs)`, `doc-tests harness`.
    pub name: String,
    pub passed: u64,
    pub failed: u64,
    pub ignored: u64,
    pub filtered: u64,
    pub secs: f64,
}

/// Reads cargo test's lines into binaries, in the order they ran.
#[derive(Debug, Default)]
pub struct Times {
    current: Option<String>,
    pub binaries: Vec<Binary>,
}

/// The number before `word` in `test result:` parts like `3 passed`.
fn count(parts: &[&str], word: &str) -> u64 {
    parts
        .iter()
        .find_map(|p| {
            let p = p.trim();
            p.strip_suffix(word)
                .and_then(|n| n.trim().rsplit(' ').next())
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

impl Times {
    pub fn line(&mut self, l: &str) {
        let t = l.trim();
        if let Some(rest) = t.strip_prefix("Running ") {
            // `Running tests/cli.rs (target/debug/deps/cli-0123abcd)`
            let (path, exe) = match rest.rsplit_once(" (") {
                Some((p, e)) => (p, e.trim_end_matches(')')),
                None => (rest, ""),
            };
            let stem = exe
                .rsplit('/')
                .next()
                .and_then(|f| f.rsplit_once('-').map(|(s, _)| s))
                .unwrap_or(exe);
            self.current = Some(format!("{stem} ({path})"));
        } else if let Some(krate) = t.strip_prefix("Doc-tests ") {
            self.current = Some(format!("doc-tests {krate}"));
        } else if let Some(rest) = t.strip_prefix("test result: ") {
            let parts: Vec<&str> = rest.split(';').collect();
            let secs = parts
                .iter()
                .find_map(|p| p.trim().strip_prefix("finished in "))
                .and_then(|s| s.trim_end_matches('s').parse().ok())
                .unwrap_or(0.0);
            self.binaries.push(Binary {
                name: self.current.take().unwrap_or_else(|| "?".into()),
                passed: count(&parts, "passed"),
                failed: count(&parts, "failed"),
                ignored: count(&parts, "ignored"),
                filtered: count(&parts, "filtered out"),
                secs,
            });
        }
    }

    /// The table, longest first, and the summary line of the whole phase (`wall` seconds).
    pub fn table(&self, wall: f64) -> String {
        let mut v = self.binaries.clone();
        v.sort_by(|a, b| b.secs.total_cmp(&a.secs));
        let w = v.iter().map(|b| b.name.len()).max().unwrap_or(6).max(6);
        let mut out = format!(
            "\nTime per test binary (longest first):\n  {:<w$}  {:>6}  {:>6}  {:>7}  {:>8}\n",
            "binary", "passed", "failed", "ignored", "seconds"
        );
        for b in v.iter().filter(|b| b.passed + b.failed + b.ignored > 0) {
            let _ = writeln!(
                out,
                "  {:<w$}  {:>6}  {:>6}  {:>7}  {:>8.1}",
                b.name, b.passed, b.failed, b.ignored, b.secs
            );
        }
        let sum = |f: fn(&Binary) -> u64| v.iter().map(f).sum::<u64>();
        let secs: f64 = v.iter().map(|b| b.secs).sum();
        let failed = sum(|b| b.failed);
        let _ = writeln!(
            out,
            "  {} binaries ran their tests in {secs:.1} s; the test phase (cargo test, builds included) took {wall:.1} s wall",
            v.len()
        );
        let _ = write!(
            out,
            "test result: {}. {} passed; {failed} failed; {} ignored; {} binaries; finished in {wall:.1}s",
            if failed == 0 { "ok" } else { "FAILED" },
            sum(|b| b.passed),
            sum(|b| b.ignored),
            v.len()
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_each_binary_and_sums_them() {
        let log = "   Compiling harness v0.1.0\n     Running unittests src/lib.rs (target/debug/deps/harness-0a1b2c)\n\nrunning 101 tests\ntest result: ok. 101 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 2.50s\n\n     Running tests/cli.rs (target/debug/deps/cli-94b7cd35bdc2cf2f)\nignored: x\ntest result: FAILED. 20 passed; 1 failed; 2 ignored; 0 measured; 3 filtered out; finished in 190.25s\n   Doc-tests harness\ntest result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s\n";
        let mut t = Times::default();
        for l in log.lines() {
            t.line(l);
        }
        assert_eq!(t.binaries.len(), 3);
        assert_eq!(t.binaries[0].name, "harness (unittests src/lib.rs)");
        assert_eq!(
            t.binaries[1],
            Binary {
                name: "cli (tests/cli.rs)".into(),
                passed: 20,
                failed: 1,
                ignored: 2,
                filtered: 3,
                secs: 190.25
            }
        );
        assert_eq!(t.binaries[2].name, "doc-tests harness");
        let table = t.table(200.0);
        let lines: Vec<&str> = table.lines().collect();
        // Longest first; a binary with no test is left out of the rows but counted.
        assert!(
            lines[3].contains("cli (tests/cli.rs)") && lines[3].contains("190.2"),
            "{table}"
        );
        assert_eq!(
            *lines.last().unwrap(),
            "test result: FAILED. 121 passed; 1 failed; 2 ignored; 3 binaries; finished in 200.0s"
        );
    }
}
