//! Bounded file-system helpers every source uses: directory walks that never follow symlinks,
//! stop at a depth and an entry budget, and skip what they cannot read; file reads with a size
//! cap. A symlink loop, a huge tree or an unreadable folder therefore costs bounded time and
//! memory and never aborts a scan.

use std::io::Read;
use std::path::{Path, PathBuf};

/// Most directory entries one walk visits.
pub(crate) const MAX_ENTRIES: usize = 200_000;

/// Limits of a walk.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Walk {
    /// Deepest level descended into (0: only the directory itself is listed).
    pub(crate) max_depth: usize,
    /// Entries visited before the walk stops.
    pub(crate) max_entries: usize,
}

impl Walk {
    /// A walk down to `max_depth` with the default entry budget.
    pub(crate) fn depth(max_depth: usize) -> Walk {
        Walk {
            max_depth,
            max_entries: MAX_ENTRIES,
        }
    }

    /// Visits entries under `dir` breadth-first. `visit(path, is_dir, depth)` returns whether to
    /// descend into a directory. Symlinks are reported with `is_dir = false` and never followed.
    /// Returns `Err` only if `dir` itself cannot be listed.
    pub(crate) fn run(
        &self,
        dir: &Path,
        mut visit: impl FnMut(&Path, bool, usize) -> bool,
    ) -> std::io::Result<()> {
        let mut queue: std::collections::VecDeque<(PathBuf, usize)> =
            std::collections::VecDeque::new();
        let first = std::fs::read_dir(dir)?;
        let mut seen = 0usize;
        let mut pending = Some(first);
        let mut depth = 0usize;
        loop {
            let rd = match pending.take() {
                Some(rd) => rd,
                None => match queue.pop_front() {
                    Some((p, d)) => {
                        depth = d;
                        match std::fs::read_dir(&p) {
                            Ok(rd) => rd,
                            Err(_) => continue,
                        }
                    }
                    None => return Ok(()),
                },
            };
            for entry in rd.flatten() {
                seen += 1;
                if seen > self.max_entries {
                    return Ok(());
                }
                let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
                let path = entry.path();
                if visit(&path, is_dir, depth) && is_dir && depth < self.max_depth {
                    queue.push_back((path, depth + 1));
                }
            }
        }
    }
}

/// Reads at most `max` bytes of a file; longer files are an error naming the size.
pub(crate) fn read_capped(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    let f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    if len > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} bytes, larger than the {max}-byte limit", len),
        ));
    }
    let mut buf = Vec::with_capacity(len as usize);
    f.take(max + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "file grew past the size limit while read",
        ));
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_stop_at_depth_and_never_follow_symlink_loops() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b/c/d")).unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(dir.path(), dir.path().join("a/loop")).unwrap();
        let mut seen = Vec::new();
        Walk::depth(1)
            .run(dir.path(), |p, _, _| {
                seen.push(p.strip_prefix(dir.path()).unwrap().display().to_string());
                true
            })
            .unwrap();
        seen.sort();
        #[cfg(unix)]
        assert_eq!(seen, vec!["a", "a/b", "a/loop"]);
    }

    #[test]
    fn entry_budget_bounds_a_huge_tree() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..50 {
            std::fs::create_dir_all(dir.path().join(format!("d{i}/x"))).unwrap();
        }
        let mut n = 0;
        Walk {
            max_depth: 5,
            max_entries: 10,
        }
        .run(dir.path(), |_, _, _| {
            n += 1;
            true
        })
        .unwrap();
        assert_eq!(n, 10);
    }

    #[test]
    fn capped_reads_refuse_big_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, vec![0u8; 100]).unwrap();
        assert_eq!(read_capped(&p, 100).unwrap().len(), 100);
        assert!(
            read_capped(&p, 99)
                .unwrap_err()
                .to_string()
                .contains("larger than")
        );
    }
}
