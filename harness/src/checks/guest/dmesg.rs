//! guest.dmesg: the whole kernel log read, and no BTF error, warning or oops in it.

use super::*;

const DMESG_END: &str = "BTFGATE_DMESG_END";

pub(super) fn dmesg(r: &Runner<'_>, m: &mut Machine) -> Result<Check, RunError> {
    let (_, out) = m.run(
        DMESG,
        &format!("dmesg > /tmp/dmesg.all 2>/tmp/dmesg.err; echo \"DMESG_RC $? LINES $(wc -l < /tmp/dmesg.all)\"; grep -E 'failed to validate module|BTF: .*[Ii]nvalid|BPF: .*[Ii]nvalid|BPF: .*cycle|WARNING:|BUG:|Oops|Call Trace|general protection' /tmp/dmesg.all | head -20; echo {DMESG_END}"),
        r.command,
    )?;
    Ok(judge_dmesg(&out))
}

/// guest.dmesg from the guest's output: the whole log was read (dmesg exited 0, more than zero
/// lines, the end marker seen) and holds no BTF errors, WARN, BUG or Oops.
pub fn judge_dmesg(out: &str) -> Check {
    if let Some(cut) = missing_end(out, DMESG, DMESG_END) {
        return Check::fail(DMESG, format!("{cut}: the log was not read"))
            .with_evidence(out.lines().rev().take(5).map(str::to_string).collect());
    }
    // `DMESG_RC <rc> LINES <n>`
    let status = value(out, "DMESG_RC ").map(|v| {
        let mut it = v.split_whitespace();
        (
            it.next().unwrap_or("").to_string(),
            it.nth(1).and_then(|n| n.parse::<u64>().ok()),
        )
    });
    let lines = match status {
        Some((rc, Some(n))) if rc == "0" && n > 0 => n,
        Some((rc, n)) => {
            return Check::fail(
                DMESG,
                format!(
                    "dmesg exited {rc} with {} lines: the log was not read",
                    n.map(|n| n.to_string()).unwrap_or_else(|| "?".into())
                ),
            )
        }
        None => {
            return Check::fail(
                DMESG,
                "dmesg's exit status was not seen: the log was not read",
            )
        }
    };
    let hits: Vec<String> = out
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with("DMESG_RC ") && l.trim() != DMESG_END)
        .map(str::to_string)
        .collect();
    if hits.is_empty() {
        Check::pass(
            DMESG,
            format!("all {lines} lines of dmesg read: no BTF errors, WARN, BUG or Oops"),
        )
        .with_evidence(vec![format!(
            "dmesg exited 0, {lines} lines read, end marker {DMESG_END} seen, no line matched"
        )])
    } else {
        Check::fail(DMESG, format!("{} suspicious dmesg line(s)", hits.len())).with_evidence(hits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::Status;

    #[test]
    fn dmesg_passes_only_when_the_whole_log_was_read() {
        let clean = format!("DMESG_RC 0 LINES 412\n{DMESG_END}");
        assert_eq!(judge_dmesg(&clean).status, Status::Pass);
        for (what, out) in [
            ("no end marker", "DMESG_RC 0 LINES 412\n".to_string()),
            ("nothing at all", String::new()),
            ("dmesg failed", format!("DMESG_RC 1 LINES 0\n{DMESG_END}")),
            ("empty log", format!("DMESG_RC 0 LINES 0\n{DMESG_END}")),
            (
                "a BTF error",
                format!("DMESG_RC 0 LINES 412\n[    3.1] failed to validate module [configs] BTF: -22\n{DMESG_END}"),
            ),
        ] {
            let c = judge_dmesg(&out);
            assert_eq!(c.status, Status::Fail, "{what}: {c:?}");
        }
        let c = judge_dmesg("DMESG_RC 0 LINES 412\n");
        assert!(c.detail.contains("phase guest.dmesg"), "{c:?}");
    }
}
