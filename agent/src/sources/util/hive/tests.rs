use super::value::types;
use super::writer::{Data, HiveKey, ListKind, Options, write};
use super::*;
use proptest::prelude::*;

fn sample() -> HiveKey {
    let mut root = HiveKey::new("CMI-CreateHive{199DAFC2-6F16-4946-BF90-5A3FC3A60902}");
    let uninstall = r"Microsoft\Windows\CurrentVersion\Uninstall";
    root.key(&format!(r"{uninstall}\ZoomUMX"))
        .sz("DisplayName", "Zoom Workplace")
        .sz("DisplayVersion", "6.1.0")
        .dword("SystemComponent", 0)
        .set("Tiny", Data::Raw(types::REG_BINARY, vec![1, 2, 3]))
        .set("Empty", Data::Sz(String::new()))
        .set("Path", Data::ExpandSz("%LOCALAPPDATA%\\Zoom".into()));
    root.key(&format!(r"{uninstall}\Телеграм"))
        .sz("DisplayName", "Телеграм");
    for i in 0..5 {
        root.key(&format!(r"{uninstall}\app{i}"))
            .sz("DisplayName", &format!("App {i}"));
    }
    root
}

fn names(key: &Key<'_>) -> Vec<String> {
    let mut out: Vec<String> = key
        .subkeys()
        .unwrap()
        .map(|k| k.unwrap().name().to_owned())
        .collect();
    out.sort();
    out
}

#[test]
fn every_list_kind_and_name_encoding_reads_back() {
    for list in [ListKind::Lf, ListKind::Lh, ListKind::Li, ListKind::Ri] {
        for utf16_names in [false, true] {
            let opts = Options {
                list,
                utf16_names,
                dirty: false,
            };
            let hive = Hive::parse(write(&sample(), opts)).unwrap();
            let key = hive
                .open(r"microsoft\WINDOWS\CurrentVersion\Uninstall")
                .unwrap()
                .expect("uninstall key");
            assert_eq!(
                names(&key),
                [
                    "ZoomUMX",
                    "app0",
                    "app1",
                    "app2",
                    "app3",
                    "app4",
                    "Телеграм"
                ],
                "{list:?} utf16={utf16_names}"
            );
            let zoom = key.subkey("zoomumx").unwrap().unwrap();
            assert_eq!(
                zoom.value_string("displayname").as_deref(),
                Some("Zoom Workplace")
            );
            assert_eq!(zoom.value_dword("SystemComponent"), Some(0));
            let tolk = key.subkey("ТЕЛЕГРАМ").unwrap().unwrap();
            assert_eq!(
                tolk.value_string("DisplayName").as_deref(),
                Some("Телеграм")
            );
        }
    }
}

#[test]
fn values_of_each_storage_kind_read_back() {
    let hive = Hive::parse(sample().to_hive()).unwrap();
    let zoom = hive
        .open(r"Microsoft\Windows\CurrentVersion\Uninstall\ZoomUMX")
        .unwrap()
        .unwrap();
    let tiny = zoom.value("Tiny").unwrap().unwrap();
    assert_eq!(tiny.data_type(), types::REG_BINARY);
    assert_eq!(tiny.data().unwrap(), vec![1, 2, 3], "inline data");
    assert_eq!(tiny.string().unwrap(), None, "binary is not text");
    assert_eq!(zoom.value_string("Empty").as_deref(), Some(""));
    assert_eq!(
        zoom.value_string("Path").as_deref(),
        Some("%LOCALAPPDATA%\\Zoom"),
        "REG_EXPAND_SZ is text, unexpanded"
    );
    assert_eq!(
        zoom.value_dword("DisplayName"),
        None,
        "text is not a number"
    );
    assert!(zoom.value("Missing").unwrap().is_none());
    assert!(hive.open(r"Microsoft\Nope").unwrap().is_none());
}

#[test]
fn big_data_values_are_reassembled() {
    let long: String = "Zoom ".repeat(5000); // 50,000 bytes of UTF-16: four db segments
    let mut root = HiveKey::new("ROOT");
    root.key("Big").sz("Text", &long).sz("After", "ok");
    let hive = Hive::parse(root.to_hive()).unwrap();
    let key = hive.open("Big").unwrap().unwrap();
    assert_eq!(key.value_string("Text").unwrap(), long);
    assert_eq!(key.value_string("After").as_deref(), Some("ok"));
}

#[test]
fn value_data_over_the_limit_is_refused_not_read() {
    let mut root = HiveKey::new("ROOT");
    root.key("Big").sz("Text", &"x".repeat(40_000));
    let limits = Limits {
        max_data: 10_000,
        ..Limits::default()
    };
    let hive = Hive::parse_with(root.to_hive(), limits).unwrap();
    let v = hive.open("Big").unwrap().unwrap().value("Text").unwrap();
    assert!(matches!(
        v.unwrap().data(),
        Err(HiveError::TooLarge { max: 10_000, .. })
    ));
}

#[test]
fn dirty_hives_are_read_from_the_primary_file() {
    let opts = Options {
        dirty: true,
        ..Options::default()
    };
    let hive = Hive::parse(write(&sample(), opts)).unwrap();
    assert!(hive.is_dirty());
    assert!(
        hive.open(r"Microsoft\Windows\CurrentVersion\Uninstall\ZoomUMX")
            .unwrap()
            .is_some()
    );
    assert!(!Hive::parse(sample().to_hive()).unwrap().is_dirty());
}

#[test]
fn garbage_truncation_and_bad_checksums_are_named_errors() {
    assert_eq!(
        Hive::parse(b"MZ\x90\x00".to_vec()).unwrap_err(),
        HiveError::NotAHive
    );
    assert_eq!(
        Hive::parse(b"regf".to_vec()).unwrap_err(),
        HiveError::TooShort(4)
    );
    let good = sample().to_hive();
    let cut = good[..good.len() - 4096].to_vec();
    assert!(matches!(
        Hive::parse(cut).unwrap_err(),
        HiveError::Truncated { .. }
    ));
    let mut flipped = good.clone();
    flipped[0x24] ^= 0x40;
    assert!(matches!(
        Hive::parse(flipped).unwrap_err(),
        HiveError::BadChecksum { .. }
    ));
    let mut log = good;
    log[0x1C] = 1; // a transaction log's file type
    let sum = checksum(&log[..BINS]);
    log[0x1FC..0x200].copy_from_slice(&sum.to_le_bytes());
    assert!(
        Hive::parse(log)
            .unwrap_err()
            .to_string()
            .contains("not a primary hive file")
    );
}

/// Offset (relative to the bins) of the key node at `path`, found by scanning for its name.
fn nk_offset(bytes: &[u8], name: &str) -> u32 {
    let needle = name.as_bytes();
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap();
    (at - 0x4C - 4 - BINS) as u32
}

#[test]
fn a_key_listing_itself_as_its_subkey_costs_bounded_work() {
    let mut root = HiveKey::new("ROOT");
    root.key(r"Loop\Child");
    let mut bytes = root.to_hive();
    // Point Child's subkey list at Loop's, which lists Child: an endless tree.
    let loop_nk = BINS + nk_offset(&bytes, "Loop") as usize + 4;
    let child_nk = BINS + nk_offset(&bytes, "Child") as usize + 4;
    let loop_list = bytes[loop_nk + 0x1C..loop_nk + 0x20].to_vec();
    bytes[child_nk + 0x14..child_nk + 0x18].copy_from_slice(&1u32.to_le_bytes());
    bytes[child_nk + 0x1C..child_nk + 0x20].copy_from_slice(&loop_list);
    let limits = Limits {
        max_cell_reads: 10_000,
        ..Limits::default()
    };
    let hive = Hive::parse_with(bytes, limits).unwrap();
    let mut stack = vec![hive.root().unwrap()];
    let mut error = None;
    while let Some(key) = stack.pop() {
        match key.subkeys() {
            Ok(keys) => {
                for k in keys {
                    match k {
                        Ok(k) => stack.push(k),
                        Err(e) => error = Some(e),
                    }
                }
            }
            Err(e) => error = Some(e),
        }
        if error.is_some() {
            break;
        }
    }
    assert_eq!(error, Some(HiveError::WorkLimit(10_000)));
}

#[test]
fn references_to_free_or_foreign_cells_are_errors() {
    let hive = Hive::parse(sample().to_hive()).unwrap();
    for offset in [0u32, 4, 0x7FFF_FFF0, u32::MAX] {
        assert!(hive.cell(offset).is_err(), "{offset:#x}");
    }
    // The free cell that pads the last bin.
    let free = (hive.bins_end - BINS - 8) as u32;
    assert!(matches!(hive.cell(free), Err(HiveError::BadCell { .. })));
}

/// Visits everything reachable, as a scan would, to depth 6.
fn walk(key: &Key<'_>, depth: usize) {
    let _ = key.value_string("DisplayName");
    if let Ok(values) = key.values() {
        for v in values.flatten() {
            let _ = (v.data(), v.string(), v.dword());
        }
    }
    if depth < 6
        && let Ok(keys) = key.subkeys()
    {
        for k in keys.flatten() {
            walk(&k, depth + 1);
        }
    }
}

fn small_limits() -> Limits {
    Limits {
        max_cell_reads: 20_000,
        max_list: 1_000,
        max_data: 64 * 1024,
    }
}

fn parse_and_walk(bytes: Vec<u8>) {
    if let Ok(hive) = Hive::parse_with(bytes, small_limits()) {
        let _ = hive.open(r"Microsoft\Windows\CurrentVersion\Uninstall");
        if let Ok(root) = hive.root() {
            walk(&root, 0);
        }
    }
}

fn fix_checksum(bytes: &mut [u8]) {
    if bytes.len() >= BINS {
        let sum = checksum(&bytes[..BINS]);
        bytes[0x1FC..0x200].copy_from_slice(&sum.to_le_bytes());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic(mut bytes in proptest::collection::vec(any::<u8>(), 0..12_000)) {
        if bytes.len() >= 4 {
            bytes[..4].copy_from_slice(b"regf");
        }
        fix_checksum(&mut bytes);
        parse_and_walk(bytes);
    }

    #[test]
    fn mutated_hives_never_panic(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..40),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
        list in prop_oneof![Just(ListKind::Lf), Just(ListKind::Lh), Just(ListKind::Li), Just(ListKind::Ri)],
    ) {
        let opts = Options { list, ..Options::default() };
        let mut bytes = write(&sample(), opts);
        // Mutate the bins mostly; a base-block flip is caught by the checksum unless fixed.
        for (at, b) in flips {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        fix_checksum(&mut bytes);
        if truncate {
            let keep = cut.index(bytes.len());
            bytes.truncate(keep);
        }
        parse_and_walk(bytes);
    }
}
