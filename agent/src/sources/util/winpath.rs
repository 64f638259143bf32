//! Paths of a Windows system resolved the way Windows would, in a tree that may not: NTFS is
//! case-insensitive, but a Windows disk mounted on Linux, or a fixture tree, is not.
//! [`resolve`] matches each path component exactly first and falls back to a case-insensitive
//! search of the directory (at most [`MAX_DIR_ENTRIES`] entries). Intermediate components must
//! be real directories: symlinks and junctions are never followed, so loops cannot occur.
//!
//! Used by every Windows source (`windows_registry` for hive files, `appx` for package
//! folders, `install_path` for catalog paths).

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};

/// Entries of one directory examined when looking for a name case-insensitively.
pub(crate) const MAX_DIR_ENTRIES: usize = 100_000;

/// Splits a Windows path (`\` or `/` separated) into components, dropping empty and `.` ones.
/// `None` if it climbs with `..` or a component holds `:` (a drive such as `D:`, joined to a
/// folder on Windows, would replace it).
pub(crate) fn components(path: &str) -> Option<Vec<&str>> {
    let parts: Vec<&str> = path
        .split(['\\', '/'])
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    (!parts.iter().any(|p| *p == ".." || p.contains(':'))).then_some(parts)
}

/// Resolves `components` below `base`, each matched exactly or else case-insensitively.
/// `Ok(None)` if some component does not exist or an intermediate one is not a real directory;
/// `Err` only for errors other than "not found" (e.g. a directory that cannot be listed).
pub(crate) fn resolve(base: &Path, components: &[&str]) -> io::Result<Option<PathBuf>> {
    let mut cur = base.to_path_buf();
    for (i, part) in components.iter().enumerate() {
        let exact = cur.join(part);
        let next = match std::fs::symlink_metadata(&exact) {
            Ok(_) => Some(exact),
            Err(e) if is_missing(&e) => find_nocase(&cur, part)?,
            Err(e) => return Err(e),
        };
        let Some(next) = next else {
            return Ok(None);
        };
        let last = i + 1 == components.len();
        if !last && !std::fs::symlink_metadata(&next)?.is_dir() {
            return Ok(None);
        }
        cur = next;
    }
    Ok(Some(cur))
}

fn is_missing(e: &io::Error) -> bool {
    // NotADirectory: a file where a directory was expected (a name clash, not an error).
    e.kind() == io::ErrorKind::NotFound || e.kind() == io::ErrorKind::NotADirectory
}

fn fold(s: &str) -> String {
    s.chars().flat_map(char::to_lowercase).collect()
}

/// The entry of `dir` whose name equals `name` ignoring case; the smallest such name when a
/// case-sensitive file system holds several.
fn find_nocase(dir: &Path, name: &str) -> io::Result<Option<PathBuf>> {
    let want = fold(name);
    let entries = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if is_missing(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut best: Option<OsString> = None;
    for entry in entries.take(MAX_DIR_ENTRIES).flatten() {
        let n = entry.file_name();
        if fold(&n.to_string_lossy()) == want && best.as_ref().is_none_or(|b| n < *b) {
            best = Some(n);
        }
    }
    Ok(best.map(|n| dir.join(n)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(dirs: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for d in dirs {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        dir
    }

    #[test]
    fn resolution_ignores_case_but_prefers_the_exact_name() {
        let dir = tree(&["Users/ivan/appdata/LOCAL/Discord", "Program Files/Zoom"]);
        let got = resolve(
            dir.path(),
            &["users", "IVAN", "AppData", "Local", "discord"],
        )
        .unwrap();
        assert_eq!(
            got.unwrap(),
            dir.path().join("Users/ivan/appdata/LOCAL/Discord")
        );
        assert!(
            resolve(dir.path(), &["Program Files", "Slack"])
                .unwrap()
                .is_none()
        );
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_are_never_followed_through() {
        let dir = tree(&["Users/ivan/AppData/Local/Discord"]);
        std::os::unix::fs::symlink(
            dir.path().join("Users/ivan/AppData"),
            dir.path().join("Users/ivan/Application Data"),
        )
        .unwrap();
        std::os::unix::fs::symlink(dir.path(), dir.path().join("loop")).unwrap();
        let r = dir.path();
        assert!(
            resolve(
                r,
                &["Users", "ivan", "Application Data", "Local", "Discord"]
            )
            .unwrap()
            .is_none()
        );
        assert!(resolve(r, &["loop", "loop", "Users"]).unwrap().is_none());
    }
}
