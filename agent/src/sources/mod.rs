//! Inventory sources. Each reads from a root path (default `/`) so tests and auditors point it
//! at a directory tree; each reports its outcome (`ok`, `absent`, `skipped`, `failed: ...`) so
//! "not collected" is never confused with "not installed".
//!
//! A source appends [`InventoryItem`]s to a vector and returns a [`SourceOutcome`]. It must not
//! panic on any input, must read files streaming with bounded line lengths, and must carry on
//! past one bad entry.

use commscan_core::catalog::Catalog;
use commscan_core::inventory::InventoryItem;
use commscan_core::platform::Platform;
use commscan_core::scan::SourceOutcome;
use std::io::{self, BufRead, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

pub mod appx;
pub mod desktop;
pub mod dpkg;
pub mod flatpak;
pub mod fs;
pub mod hive;
pub mod linux_apps;
pub mod macos_apps;
pub mod processes;
pub mod pwa;
pub mod rooted;
pub mod rpm;
pub mod snap;
pub mod users;
pub mod windows_paths;
pub mod windows_registry;

/// What a scan reads.
#[derive(Debug, Clone)]
pub struct ScanContext {
    /// The root of the tree to read (`/` for this machine).
    pub root: PathBuf,
    /// The platform the tree belongs to.
    pub platform: Platform,
    /// Whether to read the live process table (only meaningful for this machine).
    pub processes: bool,
    /// The catalog, for sources that probe known locations (install paths) instead of
    /// enumerating everything.
    pub catalog: Arc<Catalog>,
    homes: Arc<OnceLock<Vec<users::Home>>>,
}

impl ScanContext {
    /// A context with the embedded catalog.
    pub fn new(root: impl Into<PathBuf>, platform: Platform, processes: bool) -> ScanContext {
        ScanContext::with_catalog(root, platform, processes, Arc::new(Catalog::embedded()))
    }

    /// A context with a given catalog.
    pub fn with_catalog(
        root: impl Into<PathBuf>,
        platform: Platform,
        processes: bool,
        catalog: Arc<Catalog>,
    ) -> ScanContext {
        ScanContext {
            root: root.into(),
            platform,
            processes,
            catalog,
            homes: Arc::new(OnceLock::new()),
        }
    }

    /// Users' home directories of the scanned system, enumerated once per scan.
    pub fn homes(&self) -> &[users::Home] {
        self.homes.get_or_init(|| users::homes(self))
    }

    /// `rel` (an absolute path of the scanned system) under the root.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel.trim_start_matches('/'))
    }
}

/// One inventory source.
pub trait Source: Send + Sync {
    /// Name used in evidence and `stats.sources`.
    fn name(&self) -> &'static str;
    /// Reads the source, appending items.
    fn collect(&self, ctx: &ScanContext, out: &mut Vec<InventoryItem>) -> SourceOutcome;
    /// Directories (under the root) whose entries change when software is installed or
    /// removed, for the agent's file-watch triggers; the default is none.
    fn watch_paths(&self, _ctx: &ScanContext) -> Vec<PathBuf> {
        Vec::new()
    }
}

/// `rel` under every user's home of the scanned system.
pub fn in_homes(ctx: &ScanContext, rel: &str) -> Vec<PathBuf> {
    ctx.homes()
        .iter()
        .map(|h| ctx.path(&h.path).join(rel))
        .collect()
}

/// The directories every source of `sources` watches, de-duplicated, existing ones only.
pub fn watch_paths(ctx: &ScanContext, sources: &[Box<dyn Source>]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = sources
        .iter()
        .flat_map(|s| s.watch_paths(ctx))
        .filter(|p| p.is_dir())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The sources of a platform, in the order they run.
pub fn for_platform(platform: Platform) -> Vec<Box<dyn Source>> {
    match platform {
        Platform::Linux => vec![
            Box::new(dpkg::Dpkg),
            Box::new(rpm::Rpm),
            Box::new(snap::Snap),
            Box::new(flatpak::Flatpak),
            Box::new(desktop::Desktop),
            Box::new(linux_apps::Appimage),
            Box::new(linux_apps::InstallPath),
            Box::new(pwa::Pwa),
            Box::new(processes::Processes),
        ],
        Platform::Macos => vec![
            Box::new(macos_apps::MacosApps),
            Box::new(pwa::Pwa),
            Box::new(processes::Processes),
        ],
        Platform::Windows => vec![
            Box::new(windows_registry::WindowsRegistry),
            Box::new(appx::Appx),
            Box::new(windows_paths::WindowsPaths),
            Box::new(pwa::Pwa),
            Box::new(processes::Processes),
        ],
    }
}

/// Longest line a parser accepts; longer lines are skipped, keeping memory bounded on
/// corrupt files.
pub const MAX_LINE: usize = 64 * 1024;

/// Calls `f` with each line of `reader` (without the newline, lossily decoded). Lines longer
/// than [`MAX_LINE`] are passed truncated with `truncated = true`.
///
/// This is every line-based source's inner loop (a dpkg status file has tens of thousands of
/// lines), so it finds newlines with std's `memchr` (`read_until`) and decodes valid UTF-8
/// without the replacement pass.
pub fn for_each_line(mut reader: impl BufRead, mut f: impl FnMut(&str, bool)) -> io::Result<()> {
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

/// Maps an open error to an outcome: missing file → absent, anything else → failed.
pub fn open_outcome(path: &Path, err: &io::Error) -> SourceOutcome {
    if err.kind() == io::ErrorKind::NotFound {
        SourceOutcome::Absent
    } else {
        SourceOutcome::Failed(format!("{}: {err}", path.display()))
    }
}

/// How a problem names a file: `path`, which lies under `base`, written as `shown_base` plus
/// the rest of the path, `/`-separated. Sources pass `~` as the shown base of a user's home
/// so that outcomes, which are sent to the collector, never carry user names (and show the
/// scanned system's paths, not the scan root's).
pub fn shown_path(shown_base: &str, base: &Path, path: &Path) -> String {
    let rest = path.strip_prefix(base).unwrap_or(path);
    let mut out = shown_base.trim_end_matches('/').to_owned();
    for part in rest.components() {
        out.push('/');
        out.push_str(&part.as_os_str().to_string_lossy());
    }
    out
}

/// Problems spelled out in a `failed` outcome; the rest are counted.
const PROBLEMS_SHOWN: usize = 3;

/// `ok` when a source met no problem, else `failed: N problems: <first>; ...` naming the first
/// few (each problem names its file), for sources that carry on past bad entries.
pub fn problems_outcome(problems: &[String]) -> SourceOutcome {
    if problems.is_empty() {
        return SourceOutcome::Ok;
    }
    let n = problems.len();
    let mut msg = format!("{n} problem{}: ", if n == 1 { "" } else { "s" });
    msg.push_str(&problems[..n.min(PROBLEMS_SHOWN)].join("; "));
    if n > PROBLEMS_SHOWN {
        msg.push_str(&format!("; and {} more", n - PROBLEMS_SHOWN));
    }
    SourceOutcome::Failed(msg)
}

/// Longest text taken from a scanned file into what may leave the device (versions, names of
/// unclassified candidates); longer text is cut on a character boundary.
pub const MAX_FIELD: usize = 200;

/// `s` cut to at most [`MAX_FIELD`] bytes on a character boundary.
pub fn clip(s: &str) -> String {
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
