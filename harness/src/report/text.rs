//! Text for Markdown: free text and code spans escaped so that a `|`, `<` or backtick in a
//! package's data can never break a table or inject HTML; sizes for people.

/// A size for people: three significant digits in B, KiB, MiB or GiB (`1.63 MiB`, `259 MiB`,
/// `812 KiB`, `512 B`).
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    // Move up while the rounded figure would read 1024 or more.
    while v >= 1023.5 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    let digits = if v < 9.995 {
        2
    } else if v < 99.95 {
        1
    } else {
        0
    };
    format!("{v:.digits$} {}", UNITS[unit])
}

/// Free text for a Markdown line or table cell: HTML and Markdown specials escaped, `|` escaped
/// (GitHub and GitLab split cells on it even inside code spans), line breaks flattened.
pub fn text(s: &str) -> String {
    escaped(s, &['|', '\\', '`', '*', '_', '[', ']', '~', '#', '!', '$'])
}

/// A code span of `s`: fenced with more backticks than `s` holds in a row; `|` escaped for
/// tables, line breaks flattened.
pub fn code(s: &str) -> String {
    let flat: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .replace('|', "\\|");
    if flat.is_empty() {
        return String::new();
    }
    let fence = "`".repeat(longest_run(&flat, '`') + 1);
    let pad = if flat.starts_with('`') || flat.ends_with('`') {
        " "
    } else {
        ""
    };
    format!("{fence}{pad}{flat}{pad}{fence}")
}

/// Text inside an HTML element (`<summary>`).
pub(super) fn html(s: &str) -> String {
    escaped(s, &[])
}

/// `s` with `&`, `<`, `>` as HTML entities, each of `backslashed` preceded by a backslash, line
/// feeds and tabs as spaces, carriage returns and other control characters dropped.
fn escaped(s: &str, backslashed: &[char]) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\n' | '\t' => out.push(' '),
            c if c.is_control() => {}
            c => {
                if backslashed.contains(&c) {
                    out.push('\\');
                }
                out.push(c);
            }
        }
    }
    out
}

pub(super) fn longest_run(s: &str, ch: char) -> usize {
    let (mut best, mut cur) = (0, 0);
    for c in s.chars() {
        if c == ch {
            cur += 1;
            best = best.max(cur);
        } else {
            cur = 0;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(0), "0 B");
        assert_eq!(human(1023), "1023 B");
        assert_eq!(human(1024), "1.00 KiB");
        assert_eq!(human(812 * 1024), "812 KiB");
        assert_eq!(human(1_709_000), "1.63 MiB");
        assert_eq!(human(259 << 20), "259 MiB");
        assert_eq!(human(2 << 20), "2.00 MiB");
        assert_eq!(human((1 << 20) - 1), "1.00 MiB");
        assert_eq!(human(15 << 30), "15.0 GiB");
    }

    #[test]
    fn escaping() {
        assert_eq!(text("a|b"), "a\\|b");
        assert_eq!(text("<b>&"), "&lt;b&gt;&amp;");
        assert_eq!(text("x_y*z`"), "x\\_y\\*z\\`");
        assert_eq!(text("two\nlines"), "two lines");
        assert_eq!(code("a|b"), "`a\\|b`");
        assert_eq!(code("a`b"), "``a`b``");
        assert_eq!(code("`x"), "`` `x ``");
    }
}
