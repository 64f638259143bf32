//! Text from endpoints is hostile. Every string a device sends is cut to a stated length and
//! stripped of control characters before it is stored ([`clean_text`] with the `MAX_*`
//! limits), so nothing it sends can grow a record without bound or move a terminal's cursor.
//!
//! Output is the second line of defence, for what was stored before a limit existed and for
//! fields another component filled: everything printed to a terminal goes through
//! [`terminal_safe`] and every CSV field through [`csv_field`], which also defuses spreadsheet
//! formulas. These two functions are the one place where output is neutralised.

/// Longest evidence detail, unclassified name or detail kept, in characters.
pub const MAX_TEXT: usize = 512;
/// Longest source name kept, in characters.
pub const MAX_SOURCE: usize = 64;
/// Longest version kept, in characters.
pub const MAX_VERSION: usize = 128;
/// Longest signature kind kept (`dpkg`, `linux_exe`...), in characters.
pub const MAX_SIGNATURE: usize = 64;
/// Most sources kept in a scan's stats (an agent knows about twenty).
pub const MAX_SOURCES: usize = 64;

/// `s` without control characters, cut to `max` characters.
pub fn clean_text(s: &str, max: usize) -> String {
    s.chars().filter(|c| !c.is_control()).take(max).collect()
}

/// Whether `c` could change what a terminal shows beyond itself: C0 and C1 controls (ESC,
/// BEL, backspace, carriage return, CSI...), DEL, and the bidirectional overrides and isolates
/// that reorder a line (U+202A–U+202E, U+2066–U+2069).
fn is_dangerous(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// `s` safe to print on a terminal: every character that could move the cursor, clear the
/// screen, set a title or reorder the line is shown as its escape (`\u{1b}`) instead.
pub fn terminal_safe(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(is_dangerous) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if is_dangerous(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// `s` as one CSV field: terminal-safe, a leading `=`, `+`, `-` or `@` (which a spreadsheet
/// would run as a formula, e.g. `=HYPERLINK(...)`) prefixed with `'`, and quoted when it holds
/// a comma, a quote or a line break (RFC 4180). Numbers and a lone `-` are left as they are.
pub fn csv_field(s: &str) -> String {
    let s = terminal_safe(s);
    let formula = s.starts_with(['=', '+', '-', '@']) && s != "-" && s.parse::<f64>().is_err();
    let s = if formula {
        format!("'{s}")
    } else {
        s.into_owned()
    };
    if s.contains([',', '"']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_go_and_length_is_bounded() {
        assert_eq!(clean_text("zoom\x1b[31m\u{7}", 64), "zoom[31m");
        assert_eq!(
            clean_text(&"я".repeat(1000), MAX_TEXT).chars().count(),
            MAX_TEXT
        );
    }

    #[test]
    fn csv_fields_with_separators_are_quoted() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }

    #[test]
    fn csv_formulas_are_defused_and_numbers_are_not() {
        assert_eq!(
            csv_field("=HYPERLINK(\"http://x\",\"y\")"),
            "\"'=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\""
        );
        assert_eq!(csv_field("+cmd"), "'+cmd");
        assert_eq!(csv_field("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(csv_field("-1"), "-1");
        assert_eq!(csv_field("-"), "-");
        assert_eq!(csv_field("line\nbreak"), "line\\u{a}break");
    }

    #[test]
    fn terminal_escapes_are_shown_not_run() {
        assert_eq!(terminal_safe("pc-7"), "pc-7");
        assert_eq!(
            terminal_safe("\x1b[2J\x1b]0;owned\x07ok"),
            "\\u{1b}[2J\\u{1b}]0;owned\\u{7}ok"
        );
        assert_eq!(terminal_safe("a\u{202E}b"), "a\\u{202e}b");
        assert_eq!(terminal_safe("\u{9b}31m"), "\\u{9b}31m");
    }
}
