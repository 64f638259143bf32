//! Positions in text files, so that every validation error can name file, line and key.
//!
//! Every data file (catalog, registers, policy) is validated the same way, by [`FileCheck`]:
//! parse the TOML into the file's raw shape (a syntax or shape error is the file's only
//! problem), then check every rule, collecting each problem with the line its value starts on,
//! and report them all at once.

/// The 1-based line number of a byte offset in `text`.
pub fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// One problem found in a data file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file, as the user named it (or `<embedded>`).
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// The key path, e.g. `product[3].id`.
    pub key: String,
    /// What is wrong, lowercase, no trailing period.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}: {}", self.file, line, self.key, self.message),
            None => write!(f, "{}: {}: {}", self.file, self.key, self.message),
        }
    }
}

/// All problems of one file, reported at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", render(.0))]
pub struct Problems(pub Vec<Problem>);

fn render(problems: &[Problem]) -> String {
    let lines: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    format!(
        "{} problem{}:\n  {}",
        lines.len(),
        if lines.len() == 1 { "" } else { "s" },
        lines.join("\n  ")
    )
}

/// Reads a data file whole (catalog, registers and policies are small), returning the name to
/// use in problems and the text; an unreadable file is one problem naming it.
pub fn read_source(path: &std::path::Path) -> Result<(String, String), Problems> {
    let name = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => Ok((name, text)),
        Err(e) => Err(Problems(vec![Problem {
            file: name,
            line: None,
            key: "(file)".into(),
            message: format!("cannot read: {e}"),
        }])),
    }
}

/// Converts a TOML syntax error into a problem naming file and line.
pub fn toml_problem(file: &str, text: &str, err: &toml::de::Error) -> Problem {
    Problem {
        file: file.to_owned(),
        line: err.span().map(|s| line_of(text, s.start)),
        key: "(syntax)".to_owned(),
        message: err.message().trim().to_owned(),
    }
}

/// The validation of one data file: its name and text, and the problems found so far.
#[derive(Debug)]
pub struct FileCheck<'a> {
    file: &'a str,
    text: &'a str,
    problems: Vec<Problem>,
}

impl<'a> FileCheck<'a> {
    /// Parses `text` (the file `file`) as TOML into `T`, the file's raw shape, and starts its
    /// validation. A syntax or shape error is returned at once as the file's only problem, at
    /// its line.
    pub fn parse<T: serde::de::DeserializeOwned>(
        file: &'a str,
        text: &'a str,
    ) -> Result<(T, FileCheck<'a>), Problems> {
        let raw = toml::from_str(text).map_err(|e| Problems(vec![toml_problem(file, text, &e)]))?;
        Ok((
            raw,
            FileCheck {
                file,
                text,
                problems: Vec::new(),
            },
        ))
    }

    /// Records a problem with the value at `span` (byte offsets in the text), under `key`.
    pub fn problem(&mut self, span: std::ops::Range<usize>, key: String, message: String) {
        self.problems.push(Problem {
            file: self.file.to_owned(),
            line: Some(line_of(self.text, span.start)),
            key,
            message,
        });
    }

    /// Ends the validation: every problem recorded, in order, if there was any.
    pub fn finish(self) -> Result<(), Problems> {
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(Problems(self.problems))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_count_from_one() {
        let t = "a\nb\nc";
        assert_eq!(line_of(t, 0), 1);
        assert_eq!(line_of(t, 2), 2);
        assert_eq!(line_of(t, 4), 3);
        assert_eq!(line_of(t, 999), 3);
    }

    #[derive(Debug, serde::Deserialize)]
    struct Raw {
        #[allow(dead_code)]
        a: u32,
        b: toml::Spanned<String>,
    }

    #[test]
    fn a_file_check_reports_a_syntax_error_alone_and_every_problem_at_its_line() {
        let err = FileCheck::parse::<Raw>("f.toml", "a = 1\nb = \n").unwrap_err();
        assert_eq!(err.0.len(), 1);
        assert_eq!(
            (err.0[0].line, err.0[0].key.as_str()),
            (Some(2), "(syntax)")
        );

        let text = "a = 1\nb = \"x\"\n";
        let (_, clean) = FileCheck::parse::<Raw>("f.toml", text).unwrap();
        assert_eq!(clean.finish(), Ok(()));
        let (raw, mut check) = FileCheck::parse::<Raw>("f.toml", text).unwrap();
        check.problem(raw.b.span(), "b".into(), "first".into());
        check.problem(0..1, "a".into(), "second".into());
        assert_eq!(
            check.finish().unwrap_err().to_string(),
            "2 problems:\n  f.toml:2: b: first\n  f.toml:1: a: second"
        );
    }
}
