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
