//! How a source words its outcome: a file that is missing is `absent`, other errors and bad
//! entries are `failed: ...`, and a problem names its file as the scanned system has it
//! (`~` for a user's home, so no user name leaves the device).

use commscan_core::scan::SourceOutcome;
use std::io;
use std::path::Path;

/// Maps an open error to an outcome: missing file → absent, anything else → failed.
pub(crate) fn open_outcome(path: &Path, err: &io::Error) -> SourceOutcome {
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
pub(crate) fn shown_path(shown_base: &str, base: &Path, path: &Path) -> String {
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
pub(crate) fn problems_outcome(problems: &[String]) -> SourceOutcome {
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
