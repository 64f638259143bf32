//! Uninstall entries from the Windows registry (source `windows_registry`): what "Apps &
//! features" lists, for the machine and for every user, logged on or not.
//!
//! # Where
//! - `Windows/System32/config/SOFTWARE` (HKLM\SOFTWARE): `Microsoft\Windows\CurrentVersion\Uninstall\*`
//!   ("machine") and `WOW6432Node\Microsoft\Windows\CurrentVersion\Uninstall\*` ("machine
//!   32-bit").
//! - `Users/<name>/NTUSER.DAT` (HKCU) of every profile from `ctx.homes()`:
//!   `Software\Microsoft\Windows\CurrentVersion\Uninstall\*` ("per-user"). Per-user installs
//!   are the norm on Windows (Zoom's `ZoomUMX`, Slack, Teams classic, Telegram), and reading the
//!   hive file offline finds them for users who are not logged on.
//!
//! Hives are read with the crate's own [`hive`](super::util::hive) reader, at most
//! [`MAX_HIVE_BYTES`] each, and file names are matched case-insensitively (a mounted NTFS or a
//! fixture may spell them `software`, `ntuser.dat`). Transaction logs are ignored: a dirty hive
//! is read as its primary file stands (see the reader's docs).
//!
//! # The live system
//! On a running Windows the kernel holds `SOFTWARE` and logged-on users' `NTUSER.DAT` open, so
//! when the agent is built for Windows and scans its own system (root
//! [`host_root`](crate::scanner::host_root), the system drive), HKLM and the loaded
//! user hives under `HKEY_USERS` are read through the registry API (the `live` module, a few
//! lines feeding the same [`item`] function), and the `NTUSER.DAT` files of users who are not
//! logged on are still read offline; a file locked because its user is logged on is skipped,
//! since the API covered it. Every `--root` scan of another tree, and every test on Linux,
//! takes the offline path.
//!
//! # What counts
//! An entry needs a `DisplayName`: keys without one are not listed by Windows either, and are
//! mostly leftovers of uninstalled software. Entries with `SystemComponent=1` are hidden from
//! the user but still installed (e.g. the MSI inside a bundle), so they are kept, except when
//! they also name a `ParentKeyName`: those are updates and patches of another entry, not
//! installations. Each entry is an installed item with ids `(WinUninstallKey, key name)`,
//! `(WinDisplayName, DisplayName)`, `(WinPublisher, Publisher)`, version `DisplayVersion`, and
//! detail `uninstall entry "<DisplayName>" <version> (machine|machine 32-bit|per-user)`.
//! Texts are trimmed and cut to [`MAX_TEXT`] characters; at most [`MAX_ENTRIES`] entries are
//! read from one Uninstall key.
//!
//! # Bad input
//! A hive that cannot be read (garbage, truncated, too big) fails the source with
//! `<file>: <why>`, and the other hives are still read. An entry that cannot be read is skipped
//! and counted: `<file>: N entries skipped: <first reason>`.

use super::util::fs::read_capped;
use super::util::hive::{Hive, HiveError, Key};
use super::util::winpath::resolve;
use super::{ScanContext, Source};
use commscan_core::catalog::SignatureKind;
use commscan_core::inventory::InventoryItem;
use commscan_core::scan::SourceOutcome;
use std::path::{Path, PathBuf};

/// The Windows registry source.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WindowsRegistry;

/// Largest hive file read (SOFTWARE hives of busy machines reach a few hundred MiB).
pub(crate) const MAX_HIVE_BYTES: u64 = 512 << 20;
/// Most entries read from one Uninstall key.
pub(crate) const MAX_ENTRIES: usize = 10_000;
/// Longest DisplayName, DisplayVersion or Publisher kept, in characters.
pub(crate) const MAX_TEXT: usize = 256;

const SOFTWARE: [&str; 4] = ["Windows", "System32", "config", "SOFTWARE"];
const MACHINE_UNINSTALL: &str = r"Microsoft\Windows\CurrentVersion\Uninstall";
const MACHINE_UNINSTALL_32: &str = r"WOW6432Node\Microsoft\Windows\CurrentVersion\Uninstall";
const USER_UNINSTALL: &str = r"Software\Microsoft\Windows\CurrentVersion\Uninstall";

/// Which Uninstall key an entry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// HKLM, 64-bit view.
    Machine,
    /// HKLM, 32-bit view (`WOW6432Node`).
    Machine32,
    /// A user's HKCU.
    PerUser,
}

impl Scope {
    /// The words used in evidence.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Scope::Machine => "machine",
            Scope::Machine32 => "machine 32-bit",
            Scope::PerUser => "per-user",
        }
    }
}

/// The values of one Uninstall subkey that matter here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct UninstallEntry {
    /// The subkey's name (a product code, or a name such as `ZoomUMX`).
    pub(crate) key: String,
    /// `DisplayName`.
    pub(crate) display_name: Option<String>,
    /// `DisplayVersion`.
    pub(crate) display_version: Option<String>,
    /// `Publisher`.
    pub(crate) publisher: Option<String>,
    /// `SystemComponent` is 1.
    pub(crate) system_component: bool,
    /// `ParentKeyName` is set (an update or patch of another entry).
    pub(crate) parent_key_name: bool,
}

/// Trimmed, non-empty, at most [`MAX_TEXT`] characters.
fn text(s: Option<&str>) -> Option<String> {
    let s = s?.trim();
    (!s.is_empty()).then(|| s.chars().take(MAX_TEXT).collect())
}

/// The inventory item for an entry, or `None` when it does not count (see the module docs).
/// The offline and the live paths both build items here.
pub(crate) fn item(entry: &UninstallEntry, scope: Scope) -> Option<InventoryItem> {
    let name = text(entry.display_name.as_deref())?;
    if entry.system_component && entry.parent_key_name {
        return None;
    }
    let version = text(entry.display_version.as_deref());
    let detail = match &version {
        Some(v) => format!("uninstall entry \"{name}\" {v} ({})", scope.label()),
        None => format!("uninstall entry \"{name}\" ({})", scope.label()),
    };
    let key: String = entry.key.chars().take(MAX_TEXT).collect();
    let mut item = InventoryItem::installed(
        "windows_registry",
        SignatureKind::WinUninstallKey,
        key,
        detail,
    )
    .with_id(SignatureKind::WinDisplayName, name);
    if let Some(p) = text(entry.publisher.as_deref()) {
        item = item.with_id(SignatureKind::WinPublisher, p);
    }
    item.version = version;
    Some(item)
}

/// Reads the values of one Uninstall subkey. Only the names of other values are read.
fn read_entry(key: &Key<'_>) -> Result<UninstallEntry, HiveError> {
    let mut entry = UninstallEntry {
        key: key.name().to_owned(),
        ..UninstallEntry::default()
    };
    for value in key.values()? {
        let v = value?;
        match v.name().to_ascii_lowercase().as_str() {
            "displayname" => entry.display_name = v.string()?,
            "displayversion" => entry.display_version = v.string()?,
            "publisher" => entry.publisher = v.string()?,
            "systemcomponent" => entry.system_component = v.dword()? == Some(1),
            "parentkeyname" => entry.parent_key_name = text(v.string()?.as_deref()).is_some(),
            _ => {}
        }
    }
    Ok(entry)
}

/// Entries skipped in one hive, and why the first was.
#[derive(Debug, Default)]
struct Skipped {
    count: usize,
    first: Option<String>,
}

impl Skipped {
    fn add(&mut self, n: usize, why: impl FnOnce() -> String) {
        self.count += n;
        if self.first.is_none() {
            self.first = Some(why());
        }
    }
}

/// Appends the items of the Uninstall key at `path`, if the hive has one.
fn read_uninstall(
    hive: &Hive,
    path: &str,
    scope: Scope,
    skipped: &mut Skipped,
    out: &mut Vec<InventoryItem>,
) -> Result<(), HiveError> {
    let Some(list) = hive.open(path)? else {
        return Ok(());
    };
    let subkeys = list.subkeys()?;
    let total = subkeys.len();
    for (i, subkey) in subkeys.enumerate() {
        if i == MAX_ENTRIES {
            skipped.add(total - i, || format!("more than {MAX_ENTRIES} entries"));
            break;
        }
        match subkey.and_then(|k| read_entry(&k)) {
            Ok(entry) => out.extend(item(&entry, scope)),
            Err(e) => skipped.add(1, || e.to_string()),
        }
    }
    Ok(())
}

/// A logged-on user's hive, held open by the kernel (ERROR_SHARING_VIOLATION).
fn locked(e: &std::io::Error) -> bool {
    cfg!(windows) && e.raw_os_error() == Some(32)
}

/// Finds (case-insensitively) and parses a hive file. `Ok(None)` if it does not exist, or if
/// `skip_locked` and it is held open.
fn load(base: &Path, parts: &[&str], skip_locked: bool) -> Result<Option<(PathBuf, Hive)>, String> {
    let path = match resolve(base, parts) {
        Ok(Some(p)) => p,
        Ok(None) => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", base.join(parts.join("/")).display())),
    };
    let bytes = match read_capped(&path, MAX_HIVE_BYTES) {
        Ok(b) => b,
        Err(e) if skip_locked && locked(&e) => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let hive = Hive::parse(bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    if hive.is_dirty() {
        tracing::debug!(path = %path.display(), "hive not flushed cleanly; transaction logs ignored");
    }
    Ok(Some((path, hive)))
}

/// Reads the given Uninstall keys of one hive file, recording what failed.
fn scan_hive(
    base: &Path,
    parts: &[&str],
    keys: &[(&str, Scope)],
    skip_locked: bool,
    failures: &mut Vec<String>,
    out: &mut Vec<InventoryItem>,
) -> bool {
    let (path, hive) = match load(base, parts, skip_locked) {
        Ok(Some(h)) => h,
        Ok(None) => return false,
        Err(msg) => {
            failures.push(msg);
            return true;
        }
    };
    let mut skipped = Skipped::default();
    for (key, scope) in keys {
        if let Err(e) = read_uninstall(&hive, key, *scope, &mut skipped, out) {
            failures.push(format!("{}: {key}: {e}", path.display()));
        }
    }
    if let Some(first) = skipped.first {
        failures.push(format!(
            "{}: {} entries skipped: {first}",
            path.display(),
            skipped.count
        ));
    }
    true
}

impl Source for WindowsRegistry {
    fn name(&self) -> &'static str {
        "windows_registry"
    }

    fn collect(&self, ctx: &ScanContext, out: &mut Vec<InventoryItem>) -> SourceOutcome {
        let live = cfg!(windows) && ctx.root == crate::scanner::host_root();
        let mut failures = Vec::new();
        let mut hives = 0usize;
        if live {
            #[cfg(windows)]
            live::entries(|entry, scope| out.extend(item(&entry, scope)));
            hives += 1;
        } else {
            let keys = [
                (MACHINE_UNINSTALL, Scope::Machine),
                (MACHINE_UNINSTALL_32, Scope::Machine32),
            ];
            hives += usize::from(scan_hive(
                &ctx.root,
                &SOFTWARE,
                &keys,
                false,
                &mut failures,
                out,
            ));
        }
        for home in ctx.homes() {
            hives += usize::from(scan_hive(
                &ctx.path(&home.path),
                &["NTUSER.DAT"],
                &[(USER_UNINSTALL, Scope::PerUser)],
                live,
                &mut failures,
                out,
            ));
        }
        match failures.len() {
            0 if hives == 0 => SourceOutcome::Absent,
            0 => SourceOutcome::Ok,
            1..=3 => SourceOutcome::Failed(failures.join("; ")),
            n => SourceOutcome::Failed(format!("{}; and {} more", failures[..3].join("; "), n - 3)),
        }
    }
}

/// The live registry of the running system, through the Windows API. Built only for Windows
/// (it cannot be compiled on the Linux machines this project is developed on), so it stays a
/// plain transcription of the offline path: same keys, same values, same [`item`].
#[cfg(windows)]
mod live {
    use super::{MAX_ENTRIES, Scope, UninstallEntry};
    use winreg::RegKey;
    use winreg::enums::{HKEY_LOCAL_MACHINE, HKEY_USERS, KEY_READ, KEY_WOW64_64KEY};

    /// Calls `emit` for every entry of HKLM (both views) and of every loaded user hive.
    pub(super) fn entries(mut emit: impl FnMut(UninstallEntry, Scope)) {
        let hklm = RegKey::predef(HKEY_LOCAL_MACHINE);
        let machine = r"SOFTWARE\Microsoft\Windows\CurrentVersion\Uninstall";
        let machine_32 = r"SOFTWARE\WOW6432Node\Microsoft\Windows\CurrentVersion\Uninstall";
        read(&hklm, machine, Scope::Machine, &mut emit);
        read(&hklm, machine_32, Scope::Machine32, &mut emit);
        let users = RegKey::predef(HKEY_USERS);
        // `<SID>_Classes` are the users' class hives, not their HKCU.
        for sid in users
            .enum_keys()
            .flatten()
            .filter(|s| !s.ends_with("_Classes"))
        {
            let path = format!(r"{sid}\Software\Microsoft\Windows\CurrentVersion\Uninstall");
            read(&users, &path, Scope::PerUser, &mut emit);
        }
    }

    fn read(base: &RegKey, path: &str, scope: Scope, emit: &mut impl FnMut(UninstallEntry, Scope)) {
        // The 64-bit view, so a 32-bit agent does not get WOW6432Node redirection.
        let flags = KEY_READ | KEY_WOW64_64KEY;
        let Ok(list) = base.open_subkey_with_flags(path, flags) else {
            return;
        };
        for name in list.enum_keys().flatten().take(MAX_ENTRIES) {
            let Ok(key) = list.open_subkey_with_flags(&name, flags) else {
                continue;
            };
            let text = |value: &str| key.get_value::<String, _>(value).ok();
            let entry = UninstallEntry {
                display_name: text("DisplayName"),
                display_version: text("DisplayVersion"),
                publisher: text("Publisher"),
                system_component: key.get_value::<u32, _>("SystemComponent").ok() == Some(1),
                parent_key_name: text("ParentKeyName").is_some_and(|p| !p.trim().is_empty()),
                key: name,
            };
            emit(entry, scope);
        }
    }
}

#[cfg(test)]
mod tests;
