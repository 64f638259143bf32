//! Desktop entries (source `desktop`, `.desktop` files): what the application menus list.
//!
//! Read from the system folders (`/usr/share/applications`, `/usr/local/share/applications`,
//! Flatpak's and snapd's exports) and every user's `~/.local/share/applications` and
//! `~/.local/share/flatpak/exports/share/applications`, one level of vendor subfolders deep
//! (`kde/foo.desktop` has the desktop-file id `kde-foo`). This is the trace a tarball or an
//! AppImage integration leaves when no package database knows the software.
//!
//! Only the `[Desktop Entry]` group is parsed, streaming with a size cap, and only entries with
//! `Type=Application`. `Hidden` and `NoDisplay` entries still count: the application is
//! installed even when the menu hides it. Each entry yields its desktop-file id and the base
//! name of its `Exec` program, except for launchers (`flatpak run ...`, `snap run ...`), whose
//! program says nothing about the application.
//!
//! An entry whose `Categories` hold InstantMessaging, Chat, VideoConference, Telephony or
//! IRCClient is an unclassified candidate: reported only if no catalog signature matches it.

use super::util::text::{clip, for_each_line};
use super::util::{fs::Walk, rooted, users::in_homes};
use super::{ScanContext, Source};
use commscan_core::catalog::SignatureKind;
use commscan_core::inventory::InventoryItem;
use commscan_core::scan::SourceOutcome;
use std::io::{BufReader, ErrorKind, Read};

/// The desktop-entry source.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Desktop;

/// System folders of desktop entries.
pub(crate) const SYSTEM_DIRS: [&str; 4] = [
    "/usr/share/applications",
    "/usr/local/share/applications",
    "/var/lib/flatpak/exports/share/applications",
    "/var/lib/snapd/desktop/applications",
];
/// Per-user folders of desktop entries, relative to the home directory.
pub(crate) const USER_DIRS: [&str; 2] = [
    ".local/share/applications",
    ".local/share/flatpak/exports/share/applications",
];
/// Categories that make an unmatched entry a communication candidate.
pub(crate) const COMMUNICATION_CATEGORIES: [&str; 5] = [
    "InstantMessaging",
    "Chat",
    "VideoConference",
    "Telephony",
    "IRCClient",
];
/// Bytes of one desktop file read.
const MAX_FILE: u64 = 256 * 1024;
/// Entries visited per folder.
const MAX_ENTRIES: usize = 50_000;
/// Programs that launch another application; their name is not the application's.
const LAUNCHERS: [&str; 2] = ["flatpak", "snap"];

/// The `[Desktop Entry]` keys commscan reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Entry {
    /// `Type`.
    pub(crate) kind: Option<String>,
    /// `Name` (unlocalised).
    pub(crate) name: Option<String>,
    /// `Exec`.
    pub(crate) exec: Option<String>,
    /// `Categories`.
    pub(crate) categories: Option<String>,
    /// `StartupWMClass`.
    pub(crate) wm_class: Option<String>,
    /// `Hidden=true`.
    pub(crate) hidden: bool,
    /// `NoDisplay=true`.
    pub(crate) no_display: bool,
}

impl Entry {
    /// Whether the entry describes an application.
    pub(crate) fn is_application(&self) -> bool {
        self.kind.as_deref() == Some("Application")
    }

    /// Whether `Categories` names a communication category.
    pub(crate) fn is_communication(&self) -> bool {
        self.categories.as_deref().is_some_and(|c| {
            c.split(';')
                .any(|cat| COMMUNICATION_CATEGORIES.contains(&cat.trim()))
        })
    }
}

/// Parses the `[Desktop Entry]` group of a desktop file, streaming. Later groups (actions)
/// and localised keys (`Name[de]`) are ignored; the first occurrence of a key wins.
pub(crate) fn parse(reader: impl std::io::BufRead) -> std::io::Result<Entry> {
    let mut e = Entry::default();
    let mut in_group = false;
    for_each_line(reader, |line, truncated| {
        let line = line.trim();
        if truncated || line.is_empty() || line.starts_with('#') {
            return;
        }
        if line.starts_with('[') {
            in_group = line == "[Desktop Entry]";
            return;
        }
        if !in_group {
            return;
        }
        let Some((key, value)) = line.split_once('=') else {
            return;
        };
        let value = value.trim().to_owned();
        let slot = match key.trim() {
            "Type" => &mut e.kind,
            "Name" => &mut e.name,
            "Exec" => &mut e.exec,
            "Categories" => &mut e.categories,
            "StartupWMClass" => &mut e.wm_class,
            "Hidden" => {
                e.hidden |= value == "true";
                return;
            }
            "NoDisplay" => {
                e.no_display |= value == "true";
                return;
            }
            _ => return,
        };
        if slot.is_none() {
            *slot = Some(value);
        }
    })?;
    Ok(e)
}

/// Splits an `Exec` value into arguments per the Desktop Entry Specification: the string
/// escapes (`\s`, `\\`...) first, then double-quoted arguments with `\"`, `` \` ``, `\$`,
/// `\\` inside them.
pub(crate) fn exec_args(exec: &str) -> Vec<String> {
    let mut unescaped = String::with_capacity(exec.len());
    let mut chars = exec.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            unescaped.push(c);
            continue;
        }
        match chars.next() {
            Some('s') => unescaped.push(' '),
            Some('n') => unescaped.push('\n'),
            Some('t') => unescaped.push('\t'),
            Some('r') => unescaped.push('\r'),
            Some('\\') => unescaped.push('\\'),
            Some(other) => {
                unescaped.push('\\');
                unescaped.push(other);
            }
            None => unescaped.push('\\'),
        }
    }
    let mut args = Vec::new();
    let mut cur = String::new();
    let mut in_arg = false;
    let mut quoted = false;
    let mut chars = unescaped.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                in_arg = true;
            }
            '\\' if quoted => match chars.next() {
                Some(n @ ('"' | '`' | '$' | '\\')) => cur.push(n),
                Some(n) => {
                    cur.push('\\');
                    cur.push(n);
                }
                None => cur.push('\\'),
            },
            c if c.is_whitespace() && !quoted => {
                if in_arg {
                    args.push(std::mem::take(&mut cur));
                    in_arg = false;
                }
            }
            c => {
                cur.push(c);
                in_arg = true;
            }
        }
    }
    if in_arg {
        args.push(cur);
    }
    args
}

fn is_assignment(arg: &str) -> bool {
    match arg.split_once('=') {
        Some((name, _)) => {
            !name.is_empty()
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && !name.as_bytes()[0].is_ascii_digit()
        }
        None => false,
    }
}

/// The base name of the program an `Exec` line runs, skipping `env`, its options and
/// `NAME=value` assignments and field codes. `None` for launchers (`flatpak`, `snap`).
pub(crate) fn exec_program(exec: &str) -> Option<String> {
    let args = exec_args(exec);
    let mut it = args.iter().map(String::as_str).peekable();
    let mut after_env = false;
    while let Some(&a) = it.peek() {
        let base = a.rsplit('/').next().unwrap_or(a);
        if base == "env" {
            after_env = true;
        } else if after_env && matches!(a, "-u" | "--unset" | "-C" | "--chdir") {
            it.next(); // the option's argument
        } else if !(is_assignment(a) || a.starts_with('%') || (after_env && a.starts_with('-'))) {
            break;
        }
        it.next();
    }
    let program = it.next()?;
    let base = program.rsplit('/').next().unwrap_or(program).trim();
    if base.is_empty() || LAUNCHERS.contains(&base) {
        return None;
    }
    Some(base.to_owned())
}

/// The desktop-file id of a file at `rel` below an applications folder: the path with `/`
/// turned into `-`, without the `.desktop` suffix (`kde/foo.desktop` → `kde-foo`).
pub(crate) fn desktop_id(rel: &str) -> String {
    rel.strip_suffix(".desktop")
        .unwrap_or(rel)
        .replace('/', "-")
}

/// The item one desktop file yields, if it describes an application.
pub(crate) fn item_for(id: &str, entry: &Entry, location: &str) -> Option<InventoryItem> {
    if !entry.is_application() {
        return None;
    }
    let mut detail = format!("desktop entry {id}.desktop in {location}");
    if entry.hidden || entry.no_display {
        detail.push_str(" (hidden from menus)");
    }
    let mut item = InventoryItem::installed("desktop", SignatureKind::Desktop, id, detail);
    if let Some(program) = entry.exec.as_deref().and_then(exec_program) {
        item = item.with_id(SignatureKind::LinuxExe, program);
    }
    // The name it shows, for near misses (an unknown entry called "WhatsApp" is reported).
    if let Some(name) = entry.name.as_deref().filter(|n| !n.is_empty()) {
        item = item.with_name(clip(name));
    }
    if entry.is_communication() {
        let name = entry
            .name
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| id.to_owned());
        let categories = entry.categories.clone().unwrap_or_default();
        item = item.with_candidate(clip(&name), clip(&format!("Categories={categories}")));
    }
    Some(item)
}

/// Reads one folder of desktop entries (`dir` a path of the scanned system; `shown` how
/// evidence names it). Returns `None` if the folder does not exist, else the number of files
/// that could not be read.
fn read_dir(
    ctx: &ScanContext,
    dir: &str,
    shown: &str,
    out: &mut Vec<InventoryItem>,
    failures: &mut Vec<String>,
) -> Option<usize> {
    let host = rooted::resolve(&ctx.root, dir).ok()?;
    let walk = Walk {
        max_depth: 1,
        max_entries: MAX_ENTRIES,
    };
    let mut files = Vec::new();
    let listed = walk.run(&host, |path, is_dir, _| {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            return false;
        };
        if is_dir {
            return !name.starts_with('.');
        }
        if name.ends_with(".desktop")
            && let Ok(rel) = path.strip_prefix(&host)
            && let Some(rel) = rel.to_str()
        {
            files.push(rel.to_owned());
        }
        false
    });
    match listed {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => return None,
        Err(e) => {
            failures.push(format!("{}: {e}", host.display()));
            return Some(1);
        }
    }
    files.sort();
    let mut unreadable = 0;
    for rel in files {
        let id = desktop_id(&rel);
        // Flatpak's exports are symlinks into the deployment: follow them inside the root.
        let opened = rooted::resolve(&ctx.root, &format!("{dir}/{rel}"))
            .and_then(std::fs::File::open)
            .and_then(|f| parse(BufReader::new(f.take(MAX_FILE))));
        match opened {
            Ok(entry) => out.extend(item_for(&id, &entry, shown)),
            // A dangling symlink (the export of a removed Flatpak) is no failure to read.
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => {
                if unreadable == 0 {
                    failures.push(format!("{}/{rel}: {e}", host.display()));
                }
                unreadable += 1;
            }
        }
    }
    Some(unreadable)
}

impl Source for Desktop {
    fn name(&self) -> &'static str {
        "desktop"
    }

    fn watch_paths(&self, ctx: &ScanContext) -> Vec<std::path::PathBuf> {
        let mut v: Vec<_> = SYSTEM_DIRS.iter().map(|d| ctx.path(d)).collect();
        for d in USER_DIRS {
            v.extend(in_homes(ctx, d));
        }
        v
    }

    fn collect(&self, ctx: &ScanContext, out: &mut Vec<InventoryItem>) -> SourceOutcome {
        let mut dirs: Vec<(String, String)> = SYSTEM_DIRS
            .iter()
            .map(|d| ((*d).to_owned(), (*d).to_owned()))
            .collect();
        for home in ctx.homes() {
            for rel in USER_DIRS {
                let dir = format!("{}/{rel}", home.path.trim_end_matches('/'));
                dirs.push((dir, format!("~/{rel} (per-user)")));
            }
        }
        let mut found = false;
        let mut failures = Vec::new();
        let mut unreadable = 0;
        for (dir, shown) in &dirs {
            if let Some(n) = read_dir(ctx, dir, shown, out, &mut failures) {
                found = true;
                unreadable += n;
            }
        }
        match failures.first() {
            Some(first) if unreadable > 1 => {
                SourceOutcome::Failed(format!("{first} (and {} more)", unreadable - 1))
            }
            Some(first) => SourceOutcome::Failed(first.clone()),
            None if found => SourceOutcome::Ok,
            None => SourceOutcome::Absent,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(text: &str) -> Entry {
        parse(std::io::Cursor::new(text)).unwrap()
    }

    #[test]
    fn only_the_desktop_entry_group_and_unlocalised_keys_count() {
        let e = entry(
            "# comment\n[Desktop Entry]\nName[de]=Zoomen\nName = Zoom Workplace\nType=Application\n\
Exec=/opt/zoom/ZoomLauncher %U\nCategories=Network;Application;\nStartupWMClass=zoom\nNoDisplay=true\n\
[Desktop Action New]\nName=New Meeting\nExec=other\n",
        );
        assert_eq!(e.name.as_deref(), Some("Zoom Workplace"));
        assert_eq!(e.exec.as_deref(), Some("/opt/zoom/ZoomLauncher %U"));
        assert_eq!(e.wm_class.as_deref(), Some("zoom"));
        assert!(e.no_display && !e.hidden && e.is_application() && !e.is_communication());
    }

    #[test]
    fn exec_program_skips_env_quotes_and_field_codes() {
        for (exec, want) in [
            ("/opt/zoom/ZoomLauncher %U", Some("ZoomLauncher")),
            (
                "env BAMF_DESKTOP_FILE_HINT=/var/lib/snapd/desktop/applications/x.desktop /snap/bin/telegram-desktop -- %u",
                Some("telegram-desktop"),
            ),
            (
                "\"/opt/Yandex Messenger/yandex-messenger\" %U",
                Some("yandex-messenger"),
            ),
            ("/usr/bin/env -u X LANG=C slack %U", Some("slack")),
            ("GDK_BACKEND=x11 discord", Some("discord")),
            ("\"/opt/My\\sApp/app\" %F", Some("app")),
            (
                "/usr/bin/flatpak run --branch=stable --arch=x86_64 --command=zoom us.zoom.Zoom",
                None,
            ),
            ("snap run skype", None),
            ("", None),
            ("\"unterminated", Some("unterminated")),
        ] {
            assert_eq!(exec_program(exec).as_deref(), want, "{exec}");
        }
    }

    #[test]
    fn communication_categories_make_a_candidate_named_by_the_entry() {
        let e = entry(
            "[Desktop Entry]\nType=Application\nName=Obscure Chat\nExec=obscure\nCategories=Network;InstantMessaging;\n",
        );
        let item = item_for("obscure", &e, "/usr/share/applications").unwrap();
        let c = item.candidate.unwrap();
        assert_eq!(c.name, "Obscure Chat");
        assert_eq!(c.reason, "Categories=Network;InstantMessaging;");
        assert_eq!(
            item.ids,
            vec![
                (SignatureKind::Desktop, "obscure".into()),
                (SignatureKind::LinuxExe, "obscure".into())
            ]
        );
    }

    #[test]
    fn an_entry_named_like_a_product_under_an_unknown_id_is_a_near_miss() {
        let m = commscan_core::matcher::Matcher::new(&commscan_core::catalog::Catalog::embedded());
        // (entry Name, Categories, hint expected)
        let cases = [
            ("WhatsApp", "Network;", Some("whatsapp")),
            ("Whats App", "Network;InstantMessaging;", Some("whatsapp")),
            ("Signal Analyzer", "Science;", None),
            ("Zoom Player", "AudioVideo;Player;", None),
        ];
        for (name, categories, hint) in cases {
            let e = entry(&format!(
                "[Desktop Entry]\nType=Application\nName={name}\nExec=wrapper-xyz\nCategories={categories}\n"
            ));
            let item = item_for("org.example.wrapper", &e, "/usr/share/applications").unwrap();
            let (findings, unclassified) = m.match_all([&item]);
            assert!(findings.is_empty(), "{name}");
            let got = unclassified.first().and_then(|u| u.looks_like.as_deref());
            assert_eq!(got, hint, "{name}: {unclassified:?}");
        }
    }

    #[test]
    fn desktop_ids_keep_inner_dots_and_flatten_vendor_folders() {
        assert_eq!(
            desktop_id("org.telegram.desktop.desktop"),
            "org.telegram.desktop"
        );
        assert_eq!(desktop_id("kde/foo.desktop"), "kde-foo");
    }

    #[test]
    fn links_and_directories_are_not_applications() {
        let e = entry("[Desktop Entry]\nType=Link\nName=Zoom\nURL=https://zoom.us\n");
        assert!(item_for("zoom", &e, "x").is_none());
        let e = entry("[Desktop Entry]\nName=Zoom\nExec=zoom\n");
        assert!(item_for("zoom", &e, "x").is_none());
    }
}
