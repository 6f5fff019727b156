//! `guest.run`: a user's own commands (a reporter's reproducer: a bpftrace script, a CO-RE
//! tool) run in the guest after btfgate's checks, each judged on its exit status and on
//! regular expressions matched line by line against its output as it streams (so a command
//! that prints without end costs no memory: only a tail of lines is kept, for the evidence).

use std::collections::VecDeque;
use std::time::Duration;

use regex::Regex;

use super::RUN;
use crate::checks::Check;
use crate::qemu::machine::RunError;

/// One command of a `guest.run` list, ready to run.
#[derive(Debug, Clone)]
pub struct UserCommand {
    /// Where it was written (`file:line`), for the messages.
    pub origin: String,
    /// One shell line, run in `/work` with the image's tools on `PATH`.
    pub line: String,
    pub expect_status: i32,
    /// Some output line must match.
    pub expect_output: Option<Regex>,
    /// No output line may match.
    pub reject_output: Option<Regex>,
    pub timeout: Duration,
}

/// Output lines kept for the evidence.
const TAIL: usize = 12;
/// Characters kept of one output line.
const LINE_MAX: usize = 400;

/// What a command's output showed, gathered line by line.
#[derive(Debug, Default)]
pub struct Seen {
    pub lines: u64,
    /// The first line `expect_output` matched.
    pub expected: Option<String>,
    /// The first line `reject_output` matched.
    pub rejected: Option<String>,
    /// The first line that reads as an error (`error`, `failed`, any case): what a tool says
    /// when it cannot work, quoted in the failure.
    pub first_error: Option<String>,
    pub tail: VecDeque<String>,
}

fn clip(s: &str) -> String {
    match s.char_indices().nth(LINE_MAX) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

impl Seen {
    /// Takes one output line of `cmd`.
    pub fn line(&mut self, cmd: &UserCommand, l: &str) {
        self.lines += 1;
        if self.expected.is_none() && cmd.expect_output.as_ref().is_some_and(|r| r.is_match(l)) {
            self.expected = Some(clip(l));
        }
        if self.rejected.is_none() && cmd.reject_output.as_ref().is_some_and(|r| r.is_match(l)) {
            self.rejected = Some(clip(l));
        }
        if self.first_error.is_none() {
            let low = l.to_ascii_lowercase();
            if low.contains("error") || low.contains("failed") {
                self.first_error = Some(clip(l));
            }
        }
        if self.tail.len() == TAIL {
            self.tail.pop_front();
        }
        self.tail.push_back(clip(l));
    }
}

/// The verdict on one command.
enum Verdict {
    /// The evidence line.
    Pass(String),
    /// Why it failed.
    Fail(String),
}

fn judge_one(cmd: &UserCommand, status: &Result<i32, RunError>, seen: &Seen) -> Verdict {
    let rc = match status {
        Ok(rc) => *rc,
        Err(e) => return Verdict::Fail(format!("`{}` ({}): {e}", cmd.line, cmd.origin)),
    };
    let said = seen
        .first_error
        .as_deref()
        .or(seen.tail.back().map(String::as_str))
        .map(|l| format!(": {l}"))
        .unwrap_or_else(|| ": it printed nothing".into());
    if rc != cmd.expect_status {
        return Verdict::Fail(format!(
            "`{}` ({}) exited {rc}, expected {}{said}",
            cmd.line, cmd.origin, cmd.expect_status
        ));
    }
    let mut ok = format!(
        "`{}` ({}): exit {rc} as expected, {} output lines",
        cmd.line, cmd.origin, seen.lines
    );
    if let Some(re) = &cmd.expect_output {
        match &seen.expected {
            Some(l) => ok.push_str(&format!("; /{}/ matched `{l}`", re.as_str())),
            None => {
                return Verdict::Fail(format!(
                    "`{}` ({}): no output line matched expect_output /{}/ ({} lines){said}",
                    cmd.line,
                    cmd.origin,
                    re.as_str(),
                    seen.lines
                ))
            }
        }
    }
    if let Some(re) = &cmd.reject_output {
        if let Some(l) = &seen.rejected {
            return Verdict::Fail(format!(
                "`{}` ({}): an output line matched reject_output /{}/: `{l}`",
                cmd.line,
                cmd.origin,
                re.as_str()
            ));
        }
        ok.push_str(&format!("; /{}/ matched none of them", re.as_str()));
    }
    Verdict::Pass(ok)
}

/// The `guest.run` check of every command run: PASS when at least one ran and each passed.
/// `results` holds each command with its status and what its output showed.
pub fn judge(results: &[(&UserCommand, Result<i32, RunError>, Seen)]) -> Check {
    if results.is_empty() {
        return Check::fail(RUN, "no command ran: nothing was shown");
    }
    let mut evidence = Vec::new();
    let mut failures = Vec::new();
    for (cmd, status, seen) in results {
        match judge_one(cmd, status, seen) {
            Verdict::Pass(line) => evidence.push(line),
            Verdict::Fail(why) => {
                evidence.push(format!("FAIL {why}"));
                evidence.extend(seen.tail.iter().map(|l| format!("  | {l}")));
                failures.push(why);
            }
        }
    }
    let c = if failures.is_empty() {
        Check::pass(RUN, format!("{} command(s) ran as expected", results.len()))
    } else {
        Check::fail(RUN, failures.join("; "))
    };
    c.with_evidence(evidence)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(expect: Option<&str>, reject: Option<&str>) -> UserCommand {
        UserCommand {
            origin: "repro.yaml:5".into(),
            line: "bpftrace vfs_read.bt".into(),
            expect_status: 0,
            expect_output: expect.map(|r| Regex::new(r).unwrap()),
            reject_output: reject.map(|r| Regex::new(r).unwrap()),
            timeout: Duration::from_secs(5),
        }
    }

    fn seen(c: &UserCommand, out: &str) -> Seen {
        let mut s = Seen::default();
        for l in out.lines() {
            s.line(c, l);
        }
        s
    }

    #[test]
    fn passes_on_status_and_expected_line_only() {
        let c = cmd(Some(r"^@reads: [1-9]"), Some("WARNING"));
        let out = "Attaching 2 probes...\n\n@reads: 12\n";
        let ok = judge(&[(&c, Ok(0), seen(&c, out))]);
        assert_eq!(ok.status, crate::checks::Status::Pass, "{ok:?}");
        assert!(ok.evidence[0].contains("@reads: 12"), "{ok:?}");
        // The controls: a zero count, a wrong status, a rejected line, a dead guest, nothing.
        let zero = judge(&[(&c, Ok(0), seen(&c, "@reads: 0\n"))]);
        assert!(zero.detail.contains("no output line matched"), "{zero:?}");
        let err = "ERROR: kfunc/kretfunc not available for your kernel version.\n";
        let bad = judge(&[(&c, Ok(1), seen(&c, err))]);
        assert_eq!(bad.status, crate::checks::Status::Fail);
        assert!(
            bad.detail.contains("exited 1, expected 0")
                && bad.detail.contains("ERROR: kfunc/kretfunc not available"),
            "{bad:?}"
        );
        let warned = judge(&[(&c, Ok(0), seen(&c, "@reads: 3\nWARNING: x\n"))]);
        assert!(warned.detail.contains("reject_output"), "{warned:?}");
        let dead = RunError::Timeout {
            phase: "guest.run".into(),
            after: Duration::from_secs(5),
            tail: String::new(),
        };
        let timed = judge(&[(&c, Err(dead), seen(&c, out))]);
        assert!(timed.detail.contains("TIMEOUT"), "{timed:?}");
        assert_eq!(judge(&[]).status, crate::checks::Status::Fail);
        // One failing command fails the check even when another passed.
        let both = judge(&[(&c, Ok(0), seen(&c, out)), (&c, Ok(2), seen(&c, ""))]);
        assert!(both.detail.contains("it printed nothing"), "{both:?}");
    }

    #[test]
    fn an_expected_nonzero_status_passes_and_the_tail_is_bounded() {
        let mut c = cmd(None, None);
        c.expect_status = 3;
        let long = "x".repeat(10_000);
        let out: String = (0..100).map(|i| format!("{i} {long}\n")).collect();
        let s = seen(&c, &out);
        assert_eq!(s.lines, 100);
        assert_eq!(s.tail.len(), TAIL);
        assert!(s.tail.iter().all(|l| l.chars().count() <= LINE_MAX + 1));
        let r = judge(&[(&c, Ok(3), s)]);
        assert_eq!(r.status, crate::checks::Status::Pass, "{r:?}");
    }
}
