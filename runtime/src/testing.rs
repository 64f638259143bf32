//! Test support, compiled only with the `test-support` feature (the crates' dev-dependencies
//! turn it on; release builds never do): a small tmpfs to fill, for the disk-full tests of the
//! collector's store and the agent's spool; and [`postgres::PgCluster`] (Unix), a throw-away
//! PostgreSQL cluster for the tests of the collector's PostgreSQL store.

use std::path::{Path, PathBuf};
use std::process::Command;

#[cfg(unix)]
pub mod postgres;

/// A small tmpfs, unmounted on drop; `None` (with the reason printed) where mounting is
/// not permitted.
pub struct Tmpfs(PathBuf, #[allow(dead_code)] tempfile::TempDir);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. `8m`).
    pub fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().ok()?;
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).ok()?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&mnt)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs(mnt, dir)),
            Ok(o) => {
                eprintln!(
                    "SKIPPED: cannot mount a tmpfs (needs root): {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("SKIPPED: cannot run mount: {e}");
                None
            }
        }
    }
    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system with `filler` until it is full.
pub fn fill(filler: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(filler).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
}
