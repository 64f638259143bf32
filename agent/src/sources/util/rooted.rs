//! Resolving a path of the scanned system inside the root, the way the scanned system would.
//!
//! Joining `/var/lib/rpm/rpmdb.sqlite` to a root and opening it lets the host's kernel follow
//! symlinks: a disk image whose `/var/lib/rpm` links to the absolute `/usr/lib/sysimage/rpm`
//! would then be read from the *host's* `/usr/lib/sysimage/rpm`. [`resolve`] follows every
//! symlink itself, re-rooting absolute targets and never climbing above the root, so a scan of
//! a mounted tree only ever reads that tree. With root `/` it resolves like the kernel does.

use std::ffi::OsString;
use std::io;
use std::path::{Component, Path, PathBuf};

/// Most symlinks followed while resolving one path (Linux's own limit is 40).
pub(crate) const MAX_LINKS: usize = 40;

fn push_components(todo: &mut Vec<OsString>, path: &Path) {
    // `todo` is a stack: push the last component first.
    let parts: Vec<OsString> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_owned()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::CurDir | Component::RootDir | Component::Prefix(_) => None,
        })
        .collect();
    todo.extend(parts.into_iter().rev());
}

/// The host path of `path` (a path of the scanned system, absolute or not) under `root`, with
/// every symlink followed inside the root. Fails with `NotFound` if a component is missing,
/// and with an error naming the loop after [`MAX_LINKS`] symlinks.
pub(crate) fn resolve(root: &Path, path: &str) -> io::Result<PathBuf> {
    let mut todo = Vec::new();
    push_components(&mut todo, Path::new(path));
    let mut done: Vec<OsString> = Vec::new();
    let mut links = 0usize;
    while let Some(part) = todo.pop() {
        if part == ".." {
            done.pop();
            continue;
        }
        let mut here = root.to_path_buf();
        here.extend(&done);
        here.push(&part);
        let meta = std::fs::symlink_metadata(&here)?;
        if meta.file_type().is_symlink() {
            links += 1;
            if links > MAX_LINKS {
                return Err(io::Error::other(format!(
                    "{path}: more than {MAX_LINKS} symlinks (a loop?)"
                )));
            }
            let target = std::fs::read_link(&here)?;
            if target.has_root() {
                done.clear();
            }
            push_components(&mut todo, &target);
        } else {
            done.push(part);
        }
    }
    let mut out = root.to_path_buf();
    out.extend(&done);
    Ok(out)
}

/// Whether `path` of the scanned system is a directory, following symlinks inside the root.
pub(crate) fn is_dir(root: &Path, path: &str) -> bool {
    resolve(root, path).is_ok_and(|p| p.is_dir())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn absolute_symlinks_stay_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        std::fs::create_dir_all(r.join("usr/lib/sysimage/rpm")).unwrap();
        std::fs::create_dir_all(r.join("var/lib")).unwrap();
        std::fs::write(r.join("usr/lib/sysimage/rpm/rpmdb.sqlite"), b"x").unwrap();
        symlink("/usr/lib/sysimage/rpm", r.join("var/lib/rpm")).unwrap();
        assert_eq!(
            resolve(r, "/var/lib/rpm/rpmdb.sqlite").unwrap(),
            r.join("usr/lib/sysimage/rpm/rpmdb.sqlite")
        );
    }

    #[test]
    fn relative_symlinks_and_dotdot_never_climb_above_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        std::fs::create_dir_all(r.join("a/b")).unwrap();
        symlink("../../../../../a", r.join("a/b/up")).unwrap();
        assert_eq!(resolve(r, "/a/b/up/b").unwrap(), r.join("a/b"));
        assert_eq!(resolve(r, "/../../a").unwrap(), r.join("a"));
    }

    #[test]
    fn symlink_loops_fail_instead_of_hanging() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        symlink("b", r.join("a")).unwrap();
        symlink("a", r.join("b")).unwrap();
        let err = resolve(r, "/a/x").unwrap_err();
        assert!(err.to_string().contains("symlinks"), "{err}");
    }

    #[test]
    fn missing_components_are_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let err = resolve(dir.path(), "/nope/x").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
