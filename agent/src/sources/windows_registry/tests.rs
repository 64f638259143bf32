use super::*;
use crate::sources::util::hive::writer::HiveKey;
use commscan_core::platform::Platform;

fn entry(key: &str, name: Option<&str>) -> UninstallEntry {
    UninstallEntry {
        key: key.into(),
        display_name: name.map(String::from),
        ..UninstallEntry::default()
    }
}

#[test]
fn an_entry_becomes_one_item_with_three_ids_and_a_short_detail() {
    let e = UninstallEntry {
        display_version: Some(" 5.17.11 ".into()),
        publisher: Some("Zoom Video Communications, Inc.".into()),
        ..entry("ZoomUMX", Some("Zoom Workplace"))
    };
    let item = item(&e, Scope::PerUser).unwrap();
    assert_eq!(item.source, "windows_registry");
    assert_eq!(
        item.ids,
        vec![
            (SignatureKind::WinUninstallKey, "ZoomUMX".into()),
            (SignatureKind::WinDisplayName, "Zoom Workplace".into()),
            (
                SignatureKind::WinPublisher,
                "Zoom Video Communications, Inc.".into()
            ),
        ]
    );
    assert_eq!(item.version.as_deref(), Some("5.17.11"));
    assert_eq!(
        item.detail,
        "uninstall entry \"Zoom Workplace\" 5.17.11 (per-user)"
    );
    let bare = super::item(
        &entry("{GUID}", Some("Skype version 8.99")),
        Scope::Machine32,
    );
    assert_eq!(
        bare.unwrap().detail,
        "uninstall entry \"Skype version 8.99\" (machine 32-bit)"
    );
}

#[test]
fn entries_without_a_name_and_hidden_updates_do_not_count() {
    assert!(item(&entry("Teams", None), Scope::PerUser).is_none());
    assert!(item(&entry("Teams", Some("   ")), Scope::PerUser).is_none());
    let hidden_component = UninstallEntry {
        system_component: true,
        ..entry("{731F6BAA-A986-45A4-8936-7C3AAAAA760B}", Some("Teams"))
    };
    assert!(
        item(&hidden_component, Scope::Machine).is_some(),
        "a hidden MSI is still an installation"
    );
    let hidden_update = UninstallEntry {
        parent_key_name: true,
        ..hidden_component
    };
    assert!(item(&hidden_update, Scope::Machine).is_none());
}

const UNINSTALL: &str = r"Microsoft\Windows\CurrentVersion\Uninstall";

fn write(root: &Path, rel: &str, bytes: &[u8]) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn scan(root: &Path) -> (SourceOutcome, Vec<InventoryItem>) {
    let ctx = ScanContext::new(root, Platform::Windows, false);
    let mut out = Vec::new();
    (WindowsRegistry.collect(&ctx, &mut out), out)
}

fn details(items: &[InventoryItem]) -> Vec<&str> {
    items.iter().map(|i| i.detail.as_str()).collect()
}

#[test]
fn machine_32_bit_and_every_users_entries_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut software = HiveKey::new("ROOT");
    software
        .key(&format!(r"{UNINSTALL}\{{A}}"))
        .sz("DisplayName", "Zoom(64bit)")
        .sz("DisplayVersion", "5.17.11");
    software
        .key(&format!(r"WOW6432Node\{UNINSTALL}\Skype_is1"))
        .sz("DisplayName", "Skype version 8.99");
    software
        .key(&format!(r"{UNINSTALL}\NoName"))
        .sz("Publisher", "x");
    // The file name in another case, as on a case-sensitive mount.
    write(
        dir.path(),
        "Windows/system32/CONFIG/software",
        &software.to_hive(),
    );
    let mut ntuser = HiveKey::new("ROOT");
    ntuser
        .key(&format!(r"Software\{UNINSTALL}\slack"))
        .sz("DisplayName", "Slack")
        .sz("DisplayVersion", "4.41.105");
    write(dir.path(), "Users/olga/ntuser.dat", &ntuser.to_hive());
    std::fs::create_dir_all(dir.path().join("Users/newbie")).unwrap(); // never logged on: no hive

    let (outcome, items) = scan(dir.path());
    assert_eq!(outcome, SourceOutcome::Ok);
    assert_eq!(
        details(&items),
        vec![
            "uninstall entry \"Zoom(64bit)\" 5.17.11 (machine)",
            "uninstall entry \"Skype version 8.99\" (machine 32-bit)",
            "uninstall entry \"Slack\" 4.41.105 (per-user)",
        ]
    );
}

#[test]
fn a_tree_without_hives_is_absent() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("Users/olga")).unwrap();
    assert_eq!(scan(dir.path()).0, SourceOutcome::Absent);
}

#[test]
fn a_garbage_machine_hive_fails_but_user_hives_are_still_read() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "Windows/System32/config/SOFTWARE",
        b"this is not a hive",
    );
    let mut ntuser = HiveKey::new("ROOT");
    ntuser
        .key(&format!(r"Software\{UNINSTALL}\ZoomUMX"))
        .sz("DisplayName", "Zoom");
    write(dir.path(), "Users/olga/NTUSER.DAT", &ntuser.to_hive());
    let (outcome, items) = scan(dir.path());
    let SourceOutcome::Failed(why) = outcome else {
        panic!("{outcome:?}")
    };
    assert!(why.contains("SOFTWARE: not a registry hive"), "{why}");
    assert_eq!(details(&items), vec!["uninstall entry \"Zoom\" (per-user)"]);
}

#[test]
fn one_unreadable_entry_is_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut software = HiveKey::new("ROOT");
    for name in ["Good", "BrokenEntry"] {
        software
            .key(&format!(r"{UNINSTALL}\{name}"))
            .sz("DisplayName", name);
    }
    let mut bytes = software.to_hive();
    // Spoil the broken entry's key-node signature.
    let at = bytes.windows(11).position(|w| w == b"BrokenEntry").unwrap();
    bytes[at - 0x4C] = b'X';
    write(dir.path(), "Windows/System32/config/SOFTWARE", &bytes);
    let (outcome, items) = scan(dir.path());
    let SourceOutcome::Failed(why) = outcome else {
        panic!("{outcome:?}")
    };
    assert!(
        why.contains("SOFTWARE: 1 entries skipped: cell at"),
        "{why}"
    );
    assert_eq!(details(&items), vec!["uninstall entry \"Good\" (machine)"]);
}

#[test]
fn a_hive_over_the_size_limit_is_refused_without_reading_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Windows/System32/config/SOFTWARE");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(MAX_HIVE_BYTES + 1).unwrap(); // sparse: costs no disk
    let SourceOutcome::Failed(why) = scan(dir.path()).0 else {
        panic!("expected failure")
    };
    assert!(why.contains("larger than"), "{why}");
}
