//! Reading text from scanned files with bounded memory: lines no longer than [`MAX_LINE`],
//! fields no longer than [`MAX_FIELD`].

use std::io::{self, BufRead, Read};

/// Longest line a parser accepts; longer lines are skipped, keeping memory bounded on
/// corrupt files.
pub(crate) const MAX_LINE: usize = 64 * 1024;

/// Calls `f` with each line of `reader` (without the newline, lossily decoded). Lines longer
/// than [`MAX_LINE`] are passed truncated with `truncated = true`.
///
/// This is every line-based source's inner loop (a dpkg status file has tens of thousands of
/// lines), so it finds newlines with std's `memchr` (`read_until`) and decodes valid UTF-8
/// without the replacement pass.
pub(crate) fn for_each_line(
    mut reader: impl BufRead,
    mut f: impl FnMut(&str, bool),
) -> io::Result<()> {
    let mut buf = Vec::with_capacity(256);
    loop {
        buf.clear();
        // At most MAX_LINE bytes, the newline included.
        (&mut reader)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut buf)?;
        if buf.is_empty() {
            return Ok(());
        }
        // A full buffer without a newline: the rest of the line, if any, is skipped.
        let truncated =
            buf.len() == MAX_LINE && buf.last() != Some(&b'\n') && reader.skip_until(b'\n')? > 0;
        while matches!(buf.last(), Some(b'\n' | b'\r')) {
            buf.pop();
        }
        match std::str::from_utf8(&buf) {
            Ok(line) => f(line, truncated),
            Err(_) => f(&String::from_utf8_lossy(&buf), truncated),
        }
    }
}

/// Longest text taken from a scanned file into what may leave the device (versions, names of
/// unclassified candidates); longer text is cut on a character boundary.
pub(crate) const MAX_FIELD: usize = 200;

/// `s` cut to at most [`MAX_FIELD`] bytes on a character boundary.
pub(crate) fn clip(s: &str) -> String {
    let mut end = s.len().min(MAX_FIELD);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_cuts_on_character_boundaries() {
        let s = "я".repeat(MAX_FIELD);
        let c = clip(&s);
        assert!(c.len() <= MAX_FIELD && c.chars().all(|ch| ch == 'я'));
        assert_eq!(clip("short"), "short");
    }

    #[test]
    fn long_lines_are_truncated_not_buffered() {
        let mut text = vec![b'a'; MAX_LINE * 3];
        text.extend_from_slice(b"\nshort\n");
        let mut seen = Vec::new();
        for_each_line(io::Cursor::new(text), |l, t| seen.push((l.len(), t))).unwrap();
        assert_eq!(seen, vec![(MAX_LINE, true), (5, false)]);
    }

    #[test]
    fn a_line_is_truncated_when_its_line_end_does_not_fit() {
        let line = |n: usize, end: &str| {
            let mut t = "a".repeat(n);
            t.push_str(end);
            t.push_str("next\n");
            let mut seen = Vec::new();
            for_each_line(io::Cursor::new(t), |l, t| seen.push((l.len(), t))).unwrap();
            seen
        };
        // The newline counts against MAX_LINE; a truncated line's first MAX_LINE bytes are kept.
        assert_eq!(
            line(MAX_LINE - 1, "\n"),
            vec![(MAX_LINE - 1, false), (4, false)]
        );
        assert_eq!(line(MAX_LINE, "\n"), vec![(MAX_LINE, true), (4, false)]);
        assert_eq!(
            line(MAX_LINE - 1, "\r\n"),
            vec![(MAX_LINE - 1, true), (4, false)]
        );
        assert_eq!(line(MAX_LINE, "\r\n"), vec![(MAX_LINE, true), (4, false)]);
        // At the end of the file, a line that fills MAX_LINE exactly is whole.
        let mut seen = Vec::new();
        for_each_line(io::Cursor::new("a".repeat(MAX_LINE)), |l, t| {
            seen.push((l.len(), t))
        })
        .unwrap();
        assert_eq!(seen, vec![(MAX_LINE, false)]);
    }

    #[test]
    fn invalid_utf8_is_replaced_and_a_tiny_buffer_changes_nothing() {
        let text = b"Package: caf\xe9\nVersion: 1\xc3\n\xe2\x82\xacuro\n".to_vec();
        let mut seen = Vec::new();
        // A one-byte buffer splits every line (and character) across reads.
        for_each_line(io::BufReader::with_capacity(1, &text[..]), |l, t| {
            seen.push((l.to_owned(), t))
        })
        .unwrap();
        assert_eq!(
            seen,
            vec![
                ("Package: caf\u{fffd}".to_owned(), false),
                ("Version: 1\u{fffd}".to_owned(), false),
                ("€uro".to_owned(), false),
            ]
        );
    }

    /// `for_each_line` as first written (byte-wise newline search, lossy decoding of every
    /// line): the model the faster version must agree with.
    fn for_each_line_model(
        mut reader: impl BufRead,
        mut f: impl FnMut(&str, bool),
    ) -> io::Result<()> {
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let mut truncated = false;
            loop {
                let chunk = reader.fill_buf()?;
                if chunk.is_empty() {
                    break;
                }
                let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
                    Some(i) => (i + 1, true),
                    None => (chunk.len(), false),
                };
                let room = MAX_LINE.saturating_sub(buf.len());
                buf.extend_from_slice(&chunk[..take.min(room)]);
                truncated |= take > room;
                reader.consume(take);
                if done {
                    break;
                }
            }
            if buf.is_empty() && !truncated {
                return Ok(());
            }
            while matches!(buf.last(), Some(b'\n' | b'\r')) {
                buf.pop();
            }
            f(&String::from_utf8_lossy(&buf), truncated);
        }
    }

    fn lines_of(text: &[u8], capacity: usize, model: bool) -> Vec<(String, bool)> {
        let mut seen = Vec::new();
        let reader = io::BufReader::with_capacity(capacity, text);
        let push = |l: &str, t: bool| seen.push((l.to_owned(), t));
        if model {
            for_each_line_model(reader, push).unwrap();
        } else {
            for_each_line(reader, push).unwrap();
        }
        seen
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        #[test]
        fn lines_are_what_the_model_sees(
            lines in proptest::collection::vec(
                (
                    proptest::prop_oneof![0usize..6, MAX_LINE - 3..MAX_LINE + 3],
                    proptest::sample::select(vec![&b"a"[..], b"\xc3\xa9", b"\xff", b"\r", b" "]),
                    proptest::sample::select(vec![&b""[..], b"\n", b"\r\n", b"\n\n"]),
                ),
                0..5,
            ),
            capacity in proptest::prop_oneof![1usize..9, 4096usize..70_000],
        ) {
            let mut text = Vec::new();
            for (len, unit, end) in lines {
                let start = text.len();
                while text.len() - start < len {
                    text.extend_from_slice(unit);
                }
                text.extend_from_slice(end);
            }
            proptest::prop_assert_eq!(lines_of(&text, capacity, false), lines_of(&text, capacity, true));
        }
    }

    #[test]
    fn last_line_without_newline_is_seen() {
        let mut seen = Vec::new();
        for_each_line(io::Cursor::new("a\r\nb"), |l, _| seen.push(l.to_owned())).unwrap();
        assert_eq!(seen, vec!["a", "b"]);
    }
}
