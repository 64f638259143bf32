//! `install_path` on Windows: the catalog's known install directories, probed.
//!
//! Many Windows apps install per user without an Uninstall entry an agent can rely on (Squirrel
//! and electron-builder installers under `%LOCALAPPDATA%`), so this source probes every
//! `win_path` value of the catalog, e.g. `%LOCALAPPDATA%\Discord`. A variable decides where to
//! look:
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
//! Values with another variable, or with `..`, are not probed. Each path is resolved
//! case-insensitively and without following links ([`resolve`]).

use crate::sources::util::winpath::{components, resolve};
use crate::sources::{ScanContext, Source};
use commscan_core::catalog::SignatureKind;
use commscan_core::inventory::InventoryItem;
use commscan_core::scan::SourceOutcome;
use std::collections::BTreeSet;
use std::path::PathBuf;

/// The Windows install-path source.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InstallPath;

/// Where an expanded path lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Scope {
    /// Below the system root.
    Machine,
    /// Below each user's profile.
    PerUser,
}

impl Scope {
    /// The word used in evidence.
    pub(crate) fn label(self) -> &'static str {
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

/// Expands a catalog path that starts with one of the known variables: its scope and its
/// components below the root (machine) or the profile (per-user).
pub(crate) fn expand(value: &str) -> Option<(Scope, Vec<&str>)> {
    let rest = value.strip_prefix('%')?;
    let (var, rest) = rest.split_once('%')?;
    let (_, scope, base) = VARIABLES
        .iter()
        .find(|(name, _, _)| name.eq_ignore_ascii_case(var))?;
    let mut parts = components(base)?;
    parts.extend(components(rest)?);
    Some((*scope, parts))
}

impl Source for InstallPath {
    fn name(&self) -> &'static str {
        "install_path"
    }

    /// For each catalogued path, the deepest directory of it that exists (in `Program Files`,
    /// a profile's `AppData`, ...): an install creates the next component there. The list is
    /// refreshed after every full scan, so the watch follows an install down its tree.
    fn watch_paths(&self, ctx: &ScanContext) -> Vec<PathBuf> {
        let mut dirs = BTreeSet::new();
        for (_, value) in ctx.catalog.values_of(SignatureKind::WinPath) {
            let Some((scope, parts)) = expand(value) else {
                continue;
            };
            let bases: Vec<PathBuf> = match scope {
                Scope::Machine => vec![ctx.root.clone()],
                Scope::PerUser => ctx.homes().iter().map(|h| ctx.path(&h.path)).collect(),
            };
            for base in bases {
                let mut deepest = None;
                for n in 1..=parts.len() {
                    match resolve(&base, &parts[..n]) {
                        Ok(Some(p)) if p.is_dir() => deepest = Some(p),
                        _ => break,
                    }
                }
                dirs.extend(deepest);
            }
        }
        dirs.into_iter().collect()
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
    fn per_user_and_machine_installs_are_found_without_user_names() {
        let dir = tree(&[
            "Users/olga/AppData/Local/Discord/app-1.0.9194",
            "Users/petr/appdata/roaming/Telegram Desktop",
            "Program Files/Zoom/bin",
            "Users/petr/appdata/local/Discordant",
        ]);
        let ctx = ScanContext::new(dir.path(), Platform::Windows, false);
        let mut out = Vec::new();
        assert_eq!(InstallPath.collect(&ctx, &mut out), SourceOutcome::Ok);
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

    #[test]
    fn the_deepest_existing_directory_of_each_catalogued_path_is_watched() {
        let dir = tree(&[
            "Users/olga/AppData/Local",
            "Users/olga/AppData/Roaming/Telegram Desktop",
            "Program Files/Zoom",
        ]);
        let ctx = ScanContext::new(dir.path(), Platform::Windows, false);
        let watched = InstallPath.watch_paths(&ctx);
        let rel: Vec<String> = watched
            .iter()
            .map(|p| {
                p.strip_prefix(dir.path())
                    .unwrap()
                    .to_string_lossy()
                    .replace('\\', "/")
            })
            .collect();
        for want in [
            // Where %LOCALAPPDATA%\Discord would appear.
            "Users/olga/AppData/Local",
            // An installed product's own directory.
            "Users/olga/AppData/Roaming/Telegram Desktop",
            // Where Zoom's bin would appear.
            "Program Files/Zoom",
        ] {
            assert!(rel.iter().any(|r| r == want), "{want} not in {rel:?}");
        }
    }
}
