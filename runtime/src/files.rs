//! Small files replaced whole: written to `NAME.new`, optionally synced, renamed over `NAME`,
//! and the directory synced, so a power cut leaves the old or the new file, never half of one.
//!
//! Used for identities, keys, certificates and tokens (durable) and for status files (no sync:
//! losing the latest version to a power cut is harmless). The Unix mode is set when the file is
//! created, so a key is never readable by others, not even for a moment.

use std::io::Write;
use std::path::{Path, PathBuf};

/// A file could not be written; names the file.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct WriteError {
    /// The file being written (or its temporary `.new` sibling).
    pub path: PathBuf,
    /// The error.
    pub source: std::io::Error,
}

fn at(path: &Path) -> impl FnOnce(std::io::Error) -> WriteError + '_ {
    move |source| WriteError {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `bytes` to `path.new` with `mode`, optionally synced, and renames it over `path`.
fn write_then_rename(path: &Path, bytes: &[u8], mode: u32, sync: bool) -> Result<(), WriteError> {
    let tmp = path.with_extension("new");
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(mode);
        }
        #[cfg(not(unix))]
        let _ = mode;
        let mut f = opts.open(&tmp).map_err(at(&tmp))?;
        f.write_all(bytes).map_err(at(&tmp))?;
        if sync {
            f.sync_all().map_err(at(&tmp))?;
        }
    }
    std::fs::rename(&tmp, path).map_err(at(path))
}

/// Writes `bytes` to `path` atomically and durably with the given Unix mode.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), WriteError> {
    write_then_rename(path, bytes, mode, true)?;
    if let Some(dir) = path.parent() {
        // Make the rename itself durable; best effort where directories cannot be opened.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Replaces `path` like [`write_atomic`] but without syncing: for files that report
/// (status), where losing the latest version to a power cut is harmless.
pub fn write_replace(path: &Path, bytes: &[u8], mode: u32) -> Result<(), WriteError> {
    write_then_rename(path, bytes, mode, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_whole_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("identity.json");
        write_atomic(&p, b"first, and longer", 0o600).unwrap();
        write_atomic(&p, b"second", 0o600).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"second");
        assert!(!dir.path().join("identity.new").exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_missing_directory_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("absent/status.json");
        let e = write_replace(&p, b"{}", 0o644).unwrap_err();
        assert!(e.to_string().contains("absent/status.new"), "{e}");
    }
}
