//! Installed Flatpak applications (source `flatpak`).
//!
//! The system installation keeps one folder per application in `/var/lib/flatpak/app/<appid>/`,
//! each user's in `~/.local/share/flatpak/app/<appid>/` (read for every user the system knows,
//! logged in or not). Runtimes (`runtime/`) are not applications and are not listed.
//!
//! Flatpak's own `metadata` file carries no version. The version is the first
//! `<release version="...">` of the application's AppStream file in the active deployment
//! (`<appid>/current/active/files/share/metainfo/<appid>.metainfo.xml`, or the older
//! `.appdata.xml` names), read with a size cap. `current` and `active` are symlinks; they are
//! resolved inside the scanned root, never through the host's file system.

use super::util::{fs, rooted, text::clip, users::in_homes};
use super::{ScanContext, Source};
use commscan_core::catalog::SignatureKind;
use commscan_core::inventory::InventoryItem;
use commscan_core::scan::SourceOutcome;
use std::io::ErrorKind;

/// The Flatpak source.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Flatpak;

const SYSTEM_APPS: &str = "/var/lib/flatpak/app";
const USER_APPS: &str = ".local/share/flatpak/app";
/// Largest AppStream file read for a version.
const MAX_METAINFO: u64 = 1024 * 1024;
/// Most applications listed per installation.
const MAX_APPS: usize = 10_000;

/// The `version` attribute of the first `<release>` element of an AppStream document.
pub(crate) fn first_release_version(xml: &str) -> Option<String> {
    let mut rest = xml;
    while let Some(at) = rest.find("<release") {
        rest = &rest[at + "<release".len()..];
        // `<releases>` is the container, not a release.
        if !rest.starts_with(|c: char| c.is_whitespace() || c == '>' || c == '/') {
            continue;
        }
        let tag = &rest[..rest.find('>').unwrap_or(rest.len())];
        let mut attrs = tag;
        while let Some(at) = attrs.find("version") {
            let before = attrs[..at].chars().last();
            attrs = &attrs[at + "version".len()..];
            if !before.is_some_and(char::is_whitespace) {
                continue;
            }
            let value = attrs.trim_start().strip_prefix('=')?.trim_start();
            let quote = value.chars().next().filter(|c| *c == '"' || *c == '\'')?;
            let value = &value[1..];
            let end = value.find(quote)?;
            let v = value[..end].trim();
            return (!v.is_empty()).then(|| clip(v));
        }
        return None;
    }
    None
}

/// The version of an installed application, from its AppStream file.
fn version_of(ctx: &ScanContext, app_dir: &str, appid: &str) -> Option<String> {
    let files = format!("{app_dir}/{appid}/current/active/files/share");
    let candidates = [
        format!("{files}/metainfo/{appid}.metainfo.xml"),
        format!("{files}/metainfo/{appid}.appdata.xml"),
        format!("{files}/appdata/{appid}.appdata.xml"),
        format!("{files}/appdata/{appid}.metainfo.xml"),
    ];
    candidates.iter().find_map(|c| {
        let path = rooted::resolve(&ctx.root, c).ok()?;
        let bytes = fs::read_capped(&path, MAX_METAINFO).ok()?;
        first_release_version(&String::from_utf8_lossy(&bytes))
    })
}

/// Lists one installation's applications; `Err` only for an unreadable folder.
fn list_apps(
    ctx: &ScanContext,
    app_dir: &str,
    scope: &str,
    out: &mut Vec<InventoryItem>,
) -> Result<bool, String> {
    let Ok(dir) = rooted::resolve(&ctx.root, app_dir) else {
        return Ok(false);
    };
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    };
    let mut ids: Vec<String> = rd
        .flatten()
        .take(MAX_APPS)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|n| !n.starts_with('.'))
        .collect();
    ids.sort();
    for appid in ids {
        let version = version_of(ctx, app_dir, &appid);
        let detail = match &version {
            Some(v) => format!("flatpak app {appid} {v} ({scope})"),
            None => format!("flatpak app {appid} ({scope})"),
        };
        let mut item = InventoryItem::installed("flatpak", SignatureKind::Flatpak, appid, detail);
        item.version = version;
        out.push(item);
    }
    Ok(true)
}

impl Source for Flatpak {
    fn name(&self) -> &'static str {
        "flatpak"
    }

    fn watch_paths(&self, ctx: &ScanContext) -> Vec<std::path::PathBuf> {
        let mut v = vec![ctx.path(SYSTEM_APPS)];
        v.extend(in_homes(ctx, USER_APPS));
        v
    }

    fn collect(&self, ctx: &ScanContext, out: &mut Vec<InventoryItem>) -> SourceOutcome {
        let mut installations = vec![(SYSTEM_APPS.to_owned(), "system")];
        for home in ctx.homes() {
            installations.push((
                format!("{}/{USER_APPS}", home.path.trim_end_matches('/')),
                "per-user",
            ));
        }
        let mut found = false;
        let mut failures = Vec::new();
        for (dir, scope) in installations {
            match list_apps(ctx, &dir, scope, out) {
                Ok(f) => found |= f,
                Err(e) => failures.push(e),
            }
        }
        match failures.first() {
            Some(f) => SourceOutcome::Failed(f.clone()),
            None if found => SourceOutcome::Ok,
            None => SourceOutcome::Absent,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use commscan_core::platform::Platform;

    #[test]
    fn release_version_is_the_first_release_not_the_container() {
        let xml = r#"<component><releases>
  <release date="2025-01-02" version="6.3.1.5673" type="stable"/>
  <release version="6.2"/>
</releases></component>"#;
        assert_eq!(first_release_version(xml).as_deref(), Some("6.3.1.5673"));
        assert_eq!(
            first_release_version("<release version='1.0'>").as_deref(),
            Some("1.0")
        );
        assert_eq!(first_release_version("<release date_version=\"x\">"), None);
        assert_eq!(first_release_version("<releases></releases>"), None);
        assert_eq!(
            first_release_version("<release version=\"unterminated"),
            None
        );
    }

    #[cfg(unix)]
    #[test]
    fn system_and_per_user_apps_with_versions_from_the_active_deployment() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        std::fs::create_dir_all(r.join("etc")).unwrap();
        std::fs::write(
            r.join("etc/passwd"),
            "carol:x:1005:1005::/srv/users/carol:/bin/bash\n",
        )
        .unwrap();
        let zoom = r.join("var/lib/flatpak/app/us.zoom.Zoom");
        let deploy = zoom.join("x86_64/stable/abc123/files/share/metainfo");
        std::fs::create_dir_all(&deploy).unwrap();
        std::fs::write(
            deploy.join("us.zoom.Zoom.metainfo.xml"),
            "<releases><release version=\"6.1.0\" date=\"2024\"/></releases>",
        )
        .unwrap();
        symlink("x86_64/stable", zoom.join("current")).unwrap();
        symlink("abc123", zoom.join("x86_64/stable/active")).unwrap();
        std::fs::create_dir_all(r.join("var/lib/flatpak/app/.removed")).unwrap();
        std::fs::create_dir_all(
            r.join("srv/users/carol/.local/share/flatpak/app/org.signal.Signal"),
        )
        .unwrap();
        let ctx = ScanContext::new(r, Platform::Linux, false);
        let mut out = Vec::new();
        assert_eq!(Flatpak.collect(&ctx, &mut out), SourceOutcome::Ok);
        let got: Vec<(String, Option<String>, String)> = out
            .into_iter()
            .map(|i| (i.ids[0].1.clone(), i.version, i.detail))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "us.zoom.Zoom".into(),
                    Some("6.1.0".into()),
                    "flatpak app us.zoom.Zoom 6.1.0 (system)".into()
                ),
                (
                    "org.signal.Signal".into(),
                    None,
                    "flatpak app org.signal.Signal (per-user)".into()
                ),
            ]
        );
    }

    #[test]
    fn no_installation_is_absent() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = ScanContext::new(dir.path(), Platform::Linux, false);
        assert_eq!(
            Flatpak.collect(&ctx, &mut Vec::new()),
            SourceOutcome::Absent
        );
    }
}
