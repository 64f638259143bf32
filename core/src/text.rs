//! Text from endpoints is hostile. Every string a device sends is cut to a stated length and
//! stripped of control characters before it is stored ([`clean_text`] with the `MAX_*`
//! limits), so nothing it sends can grow a record without bound or move a terminal's cursor;
//! [`csv_field`] quotes a field for CSV output.

/// Longest evidence detail, unclassified name or detail kept, in characters.
pub const MAX_TEXT: usize = 512;
/// Longest source name kept, in characters.
pub const MAX_SOURCE: usize = 64;
/// Longest version kept, in characters.
pub const MAX_VERSION: usize = 128;

/// `s` without control characters, cut to `max` characters.
pub fn clean_text(s: &str, max: usize) -> String {
    s.chars().filter(|c| !c.is_control()).take(max).collect()
}

/// `s` as one CSV field: quoted when it holds a comma, a quote or a line break (RFC 4180).
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
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
}
