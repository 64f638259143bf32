//! The keeper's promises: tampered, oversized, invalid and older catalogs are refused and the
//! catalog in use stays; an accepted one survives a restart; a corrupt stored one is
//! quarantined.

use super::*;
use commscan_core::catalog::EMBEDDED_CATALOG;
use commscan_core::signed_catalog::CatalogSigningKey;

fn with_product(id: &str) -> String {
    format!(
        "{EMBEDDED_CATALOG}\n[[product]]\nid = \"{id}\"\nname = \"{id}\"\nvendor = \"v\"\ncountry = \"RU\"\ncategories = [\"messenger\"]\nstatus = \"active\"\n\n[[product.signature]]\nkind = \"dpkg\"\nvalues = [\"{id}\"]\nsource = \"test\"\n"
    )
}

fn setup() -> (tempfile::TempDir, CatalogSigningKey) {
    (
        tempfile::tempdir().unwrap(),
        CatalogSigningKey::generate().unwrap().0,
    )
}

#[test]
fn an_accepted_catalog_is_used_and_survives_a_restart() {
    let (dir, key) = setup();
    let (keeper, stored) = CatalogKeeper::open(dir.path(), vec![key.public_key()]);
    assert!(stored.is_none());
    let signed = SignedCatalog::sign(&with_product("newchat"), 2, &[&key]).unwrap();
    let catalog = keeper.offer(signed.as_bytes()).unwrap();
    assert!(catalog.contains("newchat"));
    assert_eq!(keeper.status().release, 2);
    let (again, stored) = CatalogKeeper::open(dir.path(), vec![key.public_key()]);
    assert!(stored.unwrap().contains("newchat"));
    assert_eq!(again.status().release, 2);
}

#[test]
fn tampered_oversized_invalid_and_unsigned_catalogs_are_refused_and_the_old_one_stays() {
    let (dir, key) = setup();
    let (keeper, _) = CatalogKeeper::open(dir.path(), vec![key.public_key()]);
    keeper
        .offer(
            SignedCatalog::sign(&with_product("first"), 2, &[&key])
                .unwrap()
                .as_bytes(),
        )
        .unwrap();
    let good = SignedCatalog::sign(&with_product("second"), 3, &[&key]).unwrap();
    let other = CatalogSigningKey::generate().unwrap().0;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "bad-signature",
            good.replacen("release: 3\n", "release: 4\n", 1)
                .into_bytes(),
        ),
        (
            "unsigned",
            SignedCatalog::sign(&with_product("second"), 3, &[&other])
                .unwrap()
                .into_bytes(),
        ),
        ("oversize", vec![b'x'; MAX_SIGNED_CATALOG_BYTES + 1]),
        ("malformed", with_product("second").into_bytes()),
    ];
    for (code, bytes) in cases {
        let e = keeper.offer(&bytes).unwrap_err();
        assert_eq!(e.code(), code, "{e}");
        let s = keeper.status();
        assert_eq!(s.release, 2, "{code}: the catalog in use changed");
        assert!(!s.refusal.is_empty());
    }
    let (_, stored) = CatalogKeeper::open(dir.path(), vec![key.public_key()]);
    assert!(stored.unwrap().contains("first"));
}

#[test]
fn a_downgrade_or_replay_is_refused() {
    let (dir, key) = setup();
    let (keeper, _) = CatalogKeeper::open(dir.path(), vec![key.public_key()]);
    let three = SignedCatalog::sign(&with_product("three"), 3, &[&key]).unwrap();
    keeper.offer(three.as_bytes()).unwrap();
    let two = SignedCatalog::sign(&with_product("two"), 2, &[&key]).unwrap();
    assert_eq!(
        keeper.offer(two.as_bytes()).unwrap_err().code(),
        "downgrade"
    );
    assert_eq!(
        keeper.offer(three.as_bytes()).unwrap_err().code(),
        "downgrade"
    );
    let embedded = SignedCatalog::sign(EMBEDDED_CATALOG, EMBEDDED_CATALOG_RELEASE, &[&key]);
    let (fresh_dir, _) = setup();
    let (fresh, _) = CatalogKeeper::open(fresh_dir.path(), vec![key.public_key()]);
    assert_eq!(
        fresh
            .offer(embedded.unwrap().as_bytes())
            .unwrap_err()
            .code(),
        "downgrade"
    );
    assert_eq!(keeper.status().release, 3);
    assert_eq!(keeper.status().refused_release, 3);
}

#[test]
fn without_keys_every_catalog_is_refused() {
    let (dir, key) = setup();
    let (keeper, _) = CatalogKeeper::open(dir.path(), Vec::new());
    let signed = SignedCatalog::sign(&with_product("x"), 2, &[&key]).unwrap();
    assert_eq!(
        keeper.offer(signed.as_bytes()).unwrap_err().code(),
        "no-keys"
    );
}

#[test]
fn a_corrupt_stored_catalog_is_quarantined_and_the_embedded_one_used() {
    let (dir, key) = setup();
    let (keeper, _) = CatalogKeeper::open(dir.path(), vec![key.public_key()]);
    keeper
        .offer(
            SignedCatalog::sign(&with_product("kept"), 2, &[&key])
                .unwrap()
                .as_bytes(),
        )
        .unwrap();
    let path = dir.path().join(STORED_CATALOG);
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 10] ^= 0x20;
    std::fs::write(&path, &bytes).unwrap();
    let (again, stored) = CatalogKeeper::open(dir.path(), vec![key.public_key()]);
    assert!(stored.is_none());
    assert_eq!(again.status().release, EMBEDDED_CATALOG_RELEASE);
    assert!(!path.exists());
    let aside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("quarantined"))
        .collect();
    assert_eq!(aside.len(), 1);
}

/// The files of `dir` whose names contain `part`.
fn named(dir: &Path, part: &str) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(part))
        .count()
}

#[test]
fn after_the_stored_catalog_is_quarantined_an_older_release_stays_refused() {
    let (dir, key) = setup();
    let keys = vec![key.public_key()];
    let (keeper, _) = CatalogKeeper::open(dir.path(), keys.clone());
    let three = SignedCatalog::sign(&with_product("three"), 3, &[&key]).unwrap();
    keeper.offer(three.as_bytes()).unwrap();
    drop(keeper);
    // The stored catalog is lost (corrupt, or signed by a key since removed).
    std::fs::write(dir.path().join(STORED_CATALOG), b"garbage").unwrap();
    let (again, stored) = CatalogKeeper::open(dir.path(), keys);
    assert!(stored.is_none());
    assert_eq!(again.status().release, EMBEDDED_CATALOG_RELEASE);
    // Release 2, validly signed, is older than what this agent accepted: a replay.
    let two = SignedCatalog::sign(&with_product("two"), 2, &[&key]).unwrap();
    let e = again.offer(two.as_bytes()).unwrap_err();
    assert_eq!(e.code(), "downgrade", "{e}");
    // Release 3 with other content is refused too; release 3 as accepted is taken back.
    let other3 = SignedCatalog::sign(&with_product("other"), 3, &[&key]).unwrap();
    assert_eq!(
        again.offer(other3.as_bytes()).unwrap_err().code(),
        "downgrade"
    );
    assert!(again.offer(three.as_bytes()).unwrap().contains("three"));
    assert_eq!(again.status().release, 3);
}

#[test]
fn a_corrupt_floor_is_quarantined_and_the_stored_catalog_sets_it_again() {
    let (dir, key) = setup();
    let keys = vec![key.public_key()];
    let (keeper, _) = CatalogKeeper::open(dir.path(), keys.clone());
    keeper
        .offer(
            SignedCatalog::sign(&with_product("three"), 3, &[&key])
                .unwrap()
                .as_bytes(),
        )
        .unwrap();
    drop(keeper);
    std::fs::write(dir.path().join(CATALOG_FLOOR), b"release x\n").unwrap();
    let (again, stored) = CatalogKeeper::open(dir.path(), keys.clone());
    assert!(stored.is_some());
    assert_eq!(named(dir.path(), "catalog.floor.quarantined"), 1);
    let floor = std::fs::read_to_string(dir.path().join(CATALOG_FLOOR)).unwrap();
    assert!(floor.starts_with("release 3\n"), "{floor}");
    let two = SignedCatalog::sign(&with_product("two"), 2, &[&key]).unwrap();
    assert_eq!(again.offer(two.as_bytes()).unwrap_err().code(), "downgrade");
}

#[test]
fn an_oversized_stored_catalog_is_quarantined_without_being_read_whole() {
    let (dir, key) = setup();
    let path = dir.path().join(STORED_CATALOG);
    std::fs::write(&path, vec![b'x'; MAX_SIGNED_CATALOG_BYTES + 10]).unwrap();
    let (keeper, stored) = CatalogKeeper::open(dir.path(), vec![key.public_key()]);
    assert!(stored.is_none());
    assert!(!path.exists());
    assert_eq!(named(dir.path(), "catalog.signed.quarantined"), 1);
    assert_eq!(keeper.status().release, EMBEDDED_CATALOG_RELEASE);
}

#[test]
fn a_catalog_that_cannot_be_stored_is_not_refused_for_good() {
    let (dir, key) = setup();
    let (keeper, _) = CatalogKeeper::open(dir.path(), vec![key.public_key()]);
    // A non-empty directory where the file goes: the rename fails, like a full disk.
    std::fs::create_dir_all(dir.path().join(STORED_CATALOG).join("in-the-way")).unwrap();
    let two = SignedCatalog::sign(&with_product("two"), 2, &[&key]).unwrap();
    let e = keeper.offer(two.as_bytes()).unwrap_err();
    assert_eq!(e.code(), "not-stored", "{e}");
    let status = keeper.status();
    assert_eq!(status.release, EMBEDDED_CATALOG_RELEASE);
    assert_eq!(
        status.refused_release, 0,
        "the collector must offer it again"
    );
    assert!(
        status.refusal.contains("cannot store"),
        "{}",
        status.refusal
    );
    // Once the disk is usable again the same release is accepted.
    std::fs::remove_dir_all(dir.path().join(STORED_CATALOG)).unwrap();
    keeper.offer(two.as_bytes()).unwrap();
    assert_eq!(keeper.status().release, 2);
}
