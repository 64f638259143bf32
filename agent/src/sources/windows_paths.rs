//! Windows install paths (source `install_path`), and the case-insensitive path resolution the
//! Windows sources share.
//!
//! Many Windows apps install per user without an Uninstall entry an agent can rely on (Squirrel
//! and electron-builder installers under `%LOCALAPPDATA%`), so this source probes the catalog's
//! known install directories: every `win_path` value, e.g. `%LOCALAPPDATA%\Discord`. A variable
//! decides where to look:
//!
//! | variable | probed at |
//! |---|---|
//! | `%LOCALAPPDATA%` | `<home>/AppData/Local`, for every profile from `ctx.homes()` |
//! | `%APPDATA%` | `<home>/AppData/Roaming`, for every profile |
//! | `%USERPROFILE%` | `<home>`, for every profile |
//! | `%ProgramFiles%` | `/Program Files` |
//! | `%ProgramFiles(x86)%` | `/Program Files (x86)` |
//! | `%ProgramData%` | `/ProgramData` |
//!
//! A path that exists (file or directory) is an installed item `(WinPath, <value as written in
//! the catalog>)` with detail `install path <value> (machine|per-user)`: never the user's name.
//! Values with another variable, or with `..`, are not probed.
//!
//! NTFS is case-insensitive, but a Windows disk mounted on Linux, or a fixture tree, is not:
//! [`resolve`] matches each path component exactly first and falls back to a case-insensitive
//! search of the directory (at most [`MAX_DIR_ENTRIES`] entries). Intermediate components must be
//! real directories: symlinks and junctions are never followed, so loops cannot occur.

use super::{ScanContext, Source};
use commscan_core::catalog::SignatureKind;
use commscan_core::inventory::InventoryItem;
use commscan_core::scan::SourceOutcome;
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};

/// The Windows install-path source.
#[derive(Debug, Clone, Copy)]
pub struct WindowsPaths;

/// Entries of one directory examined when looking for a name case-insensitively.
pub const MAX_DIR_ENTRIES: usize = 100_000;

/// Where an expanded path lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// Below the system root.
    Machine,
    /// Below each user's profile.
    PerUser,
}

impl Scope {
    /// The word used in evidence.
    pub fn label(self) -> &'static str {
        match self {
            Scope::Machine => "machine",
            Scope::PerUser => "per-user",
        }
    }
}

/// Environment variables this source expands: name (upper case), scope, path below the root
/// or the profile.
const VARIABLES: [(&str, Scope, &str); 6] = [
    ("LOCALAPPDATA", Scope::PerUser, "AppData/Local"),
    ("APPDATA", Scope::PerUser, "AppData/Roaming"),
    ("USERPROFILE", Scope::PerUser, ""),
    ("PROGRAMFILES", Scope::Machine, "Program Files"),
    ("PROGRAMFILES(X86)", Scope::Machine, "Program Files (x86)"),
    ("PROGRAMDATA", Scope::Machine, "ProgramData"),
];

/// Splits a Windows path (`\` or `/` separated) into components, dropping empty and `.` ones.
/// `None` if it climbs with `..`.
pub fn components(path: &str) -> Option<Vec<&str>> {
    let parts: Vec<&str> = path
        .split(['\\', '/'])
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    (!parts.contains(&"..")).then_some(parts)
}

/// Expands a catalog path that starts with one of the known variables: its scope and its
/// components below the root (machine) or the profile (per-user).
pub fn expand(value: &str) -> Option<(Scope, Vec<&str>)> {
    let rest = value.strip_prefix('%')?;
    let (var, rest) = rest.split_once('%')?;
    let (_, scope, base) = VARIABLES
        .iter()
        .find(|(name, _, _)| name.eq_ignore_ascii_case(var))?;
    let mut parts = components(base)?;
    parts.extend(components(rest)?);
    Some((*scope, parts))
}

/// Resolves `components` below `base`, each matched exactly or else case-insensitively.
/// `Ok(None)` if some component does not exist or an intermediate one is not a real directory;
/// `Err` only for errors other than "not found" (e.g. a directory that cannot be listed).
pub fn resolve(base: &Path, components: &[&str]) -> io::Result<Option<PathBuf>> {
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

/// [`resolve`] of an absolute path of the scanned system, e.g. `/Windows/System32/config/SOFTWARE`.
pub fn resolve_in(ctx: &ScanContext, path: &str) -> io::Result<Option<PathBuf>> {
    match components(path) {
        Some(parts) => resolve(&ctx.root, &parts),
        None => Ok(None),
    }
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

impl Source for WindowsPaths {
    fn name(&self) -> &'static str {
        "install_path"
    }

    fn collect(&self, ctx: &ScanContext, out: &mut Vec<InventoryItem>) -> SourceOutcome {
        let values: BTreeSet<&str> = ctx
            .catalog
            .values_of(SignatureKind::WinPath)
            .map(|(_, v)| v)
            .collect();
        let mut found: BTreeSet<(&str, Scope)> = BTreeSet::new();
        let mut failures: Vec<String> = Vec::new();
        for value in values {
            let Some((scope, parts)) = expand(value) else {
                tracing::debug!(value, "win_path not probed: unknown variable");
                continue;
            };
            let bases: Vec<PathBuf> = match scope {
                Scope::Machine => vec![ctx.root.clone()],
                Scope::PerUser => ctx.homes().iter().map(|h| ctx.path(&h.path)).collect(),
            };
            for base in bases {
                match resolve(&base, &parts) {
                    Ok(Some(_)) => {
                        found.insert((value, scope));
                    }
                    Ok(None) => {}
                    Err(e) => failures.push(format!("{}: {value}: {e}", base.display())),
                }
            }
        }
        out.extend(found.into_iter().map(|(value, scope)| {
            InventoryItem::installed(
                "install_path",
                SignatureKind::WinPath,
                value,
                format!("install path {value} ({})", scope.label()),
            )
        }));
        match failures.first() {
            None => SourceOutcome::Ok,
            Some(first) => {
                SourceOutcome::Failed(format!("{} probes failed: {first}", failures.len()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use commscan_core::platform::Platform;

    fn tree(dirs: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for d in dirs {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        dir
    }

    #[test]
    fn variables_expand_to_profile_or_machine_paths() {
        assert_eq!(
            expand(r"%LocalAppData%\Programs\signal-desktop"),
            Some((
                Scope::PerUser,
                vec!["AppData", "Local", "Programs", "signal-desktop"]
            ))
        );
        assert_eq!(
            expand(r"%ProgramFiles(x86)%\Microsoft\Skype for Desktop"),
            Some((
                Scope::Machine,
                vec!["Program Files (x86)", "Microsoft", "Skype for Desktop"]
            ))
        );
        assert_eq!(
            expand(r"%USERPROFILE%\x"),
            Some((Scope::PerUser, vec!["x"]))
        );
        assert_eq!(expand(r"%WINDIR%\x"), None, "unknown variable");
        assert_eq!(expand(r"C:\Program Files\x"), None, "no variable");
        assert_eq!(expand(r"%APPDATA%\..\..\x"), None, "climbing out");
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

    #[test]
    fn per_user_and_machine_installs_are_found_without_user_names() {
        let dir = tree(&[
            "Users/olga/AppData/Local/Discord/app-1.0.9194",
            "Users/petr/appdata/roaming/Telegram Desktop",
            "Program Files/Zoom/bin",
            "Users/petr/appdata/local/Discordant",
        ]);
        let ctx = ScanContext::new(dir.path(), Platform::Windows, false);
        let mut out = Vec::new();
        assert_eq!(WindowsPaths.collect(&ctx, &mut out), SourceOutcome::Ok);
        let details: Vec<&str> = out.iter().map(|i| i.detail.as_str()).collect();
        assert_eq!(
            details,
            vec![
                r"install path %APPDATA%\Telegram Desktop (per-user)",
                r"install path %LOCALAPPDATA%\Discord (per-user)",
                r"install path %ProgramFiles%\Zoom\bin (machine)",
            ]
        );
        assert!(out.iter().all(|i| i.ids[0].0 == SignatureKind::WinPath));
        assert!(
            !details
                .iter()
                .any(|d| d.contains("olga") || d.contains("petr"))
        );
    }
}
