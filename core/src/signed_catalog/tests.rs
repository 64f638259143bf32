//! Envelope parsing, signing and verification; hostile envelopes are named by the attack.

use super::*;
use proptest::prelude::*;

const SMALL: &str = r#"version = 1

[[product]]
id = "newchat"
name = "NewChat"
vendor = "NewChat Ltd"
country = "RU"
categories = ["messenger"]
status = "active"

[[product.signature]]
kind = "dpkg"
values = ["newchat"]
source = "test"
"#;

fn key() -> CatalogSigningKey {
    CatalogSigningKey::generate().unwrap().0
}

#[test]
fn a_signed_catalog_verifies_with_its_key_and_yields_the_catalog() {
    let k = key();
    let text = SignedCatalog::sign(SMALL, 7, &[&k]).unwrap();
    assert!(SignedCatalog::looks_signed(text.as_bytes()));
    let env = SignedCatalog::parse(text.as_bytes()).unwrap();
    assert_eq!(env.release, 7);
    assert_eq!(env.digest, content_digest(SMALL));
    assert_eq!(env.content, SMALL);
    let catalog = env.verify(&[k.public_key()]).unwrap();
    assert!(catalog.contains("newchat"));
    assert_eq!(env.encode(), text);
}

#[test]
fn the_embedded_catalog_can_be_signed_and_verified() {
    let k = key();
    let text = SignedCatalog::sign(EMBEDDED_CATALOG, 2, &[&k]).unwrap();
    let catalog = SignedCatalog::parse(text.as_bytes())
        .unwrap()
        .verify(&[k.public_key()])
        .unwrap();
    assert!(catalog.contains("telegram-macos"));
}

#[test]
fn a_key_survives_its_pem_and_public_keys_round_trip() {
    let (k, pem) = CatalogSigningKey::generate().unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    let again = CatalogSigningKey::from_pem(&pem).unwrap();
    assert_eq!(k.public_key(), again.public_key());
    let shown = k.public_key().to_string();
    assert_eq!(shown.parse::<CatalogPublicKey>().unwrap(), k.public_key());
    assert!("ed25519:abc".parse::<CatalogPublicKey>().is_err());
    assert!(CatalogSigningKey::from_pem("not a key").is_err());
}

#[test]
fn a_catalog_signed_by_another_key_is_refused_as_unsigned() {
    let (k, other) = (key(), key());
    let text = SignedCatalog::sign(SMALL, 2, &[&other]).unwrap();
    let env = SignedCatalog::parse(text.as_bytes()).unwrap();
    assert_eq!(
        env.verify(&[k.public_key()]).unwrap_err().code(),
        "unsigned"
    );
    assert_eq!(env.verify(&[]).unwrap_err().code(), "no-keys");
}

#[test]
fn a_second_signature_by_an_untrusted_key_does_not_matter() {
    let (k, other) = (key(), key());
    let text = SignedCatalog::sign(SMALL, 2, &[&other, &k]).unwrap();
    let env = SignedCatalog::parse(text.as_bytes()).unwrap();
    assert!(env.verify(&[k.public_key()]).is_ok());
}

#[test]
fn content_altered_after_signing_is_refused() {
    let k = key();
    let text = SignedCatalog::sign(SMALL, 2, &[&k]).unwrap();
    // Same length, other content: the digest no longer matches.
    let tampered = text.replace("values = [\"newchat\"]", "values = [\"bash\"]   ");
    assert_eq!(
        SignedCatalog::parse(tampered.as_bytes())
            .unwrap_err()
            .code(),
        "digest-mismatch"
    );
    // Content and digest both replaced: the signature no longer verifies.
    let mut env = SignedCatalog::parse(text.as_bytes()).unwrap();
    env.content = SMALL.replace("NewChat Ltd", "Evil Ltd");
    env.digest = content_digest(&env.content);
    let reparsed = SignedCatalog::parse(env.encode().as_bytes()).unwrap();
    assert_eq!(
        reparsed.verify(&[k.public_key()]).unwrap_err().code(),
        "bad-signature"
    );
}

#[test]
fn a_signature_cannot_be_moved_to_another_release() {
    let k = key();
    let text = SignedCatalog::sign(SMALL, 2, &[&k]).unwrap();
    let bumped = text.replacen("release: 2\n", "release: 9\n", 1);
    let env = SignedCatalog::parse(bumped.as_bytes()).unwrap();
    assert_eq!(
        env.verify(&[k.public_key()]).unwrap_err().code(),
        "bad-signature"
    );
}

#[test]
fn an_oversized_envelope_is_refused_before_parsing() {
    let big = vec![b'a'; MAX_SIGNED_CATALOG_BYTES + 1];
    assert_eq!(SignedCatalog::parse(&big).unwrap_err().code(), "oversize");
}

#[test]
fn an_invalid_catalog_is_never_signed_and_refused_when_signed_by_hand() {
    let k = key();
    let invalid = SMALL.replace("kind = \"dpkg\"", "kind = \"shell_command\"");
    assert_eq!(
        SignedCatalog::sign(&invalid, 2, &[&k]).unwrap_err().code(),
        "invalid"
    );
    // Signed without the validator (as a hostile signer would): refused after verification.
    let digest = content_digest(&invalid);
    let mut signature = [0u8; 64];
    signature.copy_from_slice(k.pair.sign(&signed_message(2, &digest)).as_ref());
    let env = SignedCatalog {
        release: 2,
        digest,
        signatures: vec![CatalogSignature {
            key: k.public_key(),
            signature,
        }],
        content: invalid,
    };
    let parsed = SignedCatalog::parse(env.encode().as_bytes()).unwrap();
    assert_eq!(
        parsed.verify(&[k.public_key()]).unwrap_err().code(),
        "invalid"
    );
}

#[test]
fn paths_that_leave_the_sources_places_are_invalid() {
    for (kind, value) in [
        ("linux_path", "/opt/../etc/shadow"),
        ("linux_path", "relative/dir"),
        ("linux_path", "/etc/ssh"),
        ("linux_path", "/root/.config"),
        ("linux_path", "~/.ssh"),
        ("linux_path", "/opt/"),
        ("linux_path", "/optional/dir"),
        ("win_path", "%LOCALAPPDATA%\\..\\..\\Windows"),
    ] {
        let text = SMALL.replace(
            "kind = \"dpkg\"\nvalues = [\"newchat\"]",
            &format!("kind = \"{kind}\"\nvalues = [{value:?}]"),
        );
        assert!(
            Catalog::parse("t", &text).is_err(),
            "{kind} {value} accepted"
        );
    }
}

#[test]
fn paths_below_the_install_roots_are_valid() {
    for value in [
        "/opt/newchat",
        "/usr/share/newchat",
        "~/.local/share/newchat",
        "~/Downloads/Newchat",
    ] {
        let text = SMALL.replace(
            "kind = \"dpkg\"\nvalues = [\"newchat\"]",
            &format!("kind = \"linux_path\"\nvalues = [{value:?}]"),
        );
        Catalog::parse("t", &text).unwrap_or_else(|e| panic!("{value}: {e}"));
    }
}

#[test]
fn malformed_headers_are_refused() {
    let k = key();
    let good = SignedCatalog::sign(SMALL, 2, &[&k]).unwrap();
    for bad in [
        good.replacen(MAGIC, "commscan-signed-catalog: 2", 1),
        good.replacen("release: 2\n", "release: 2\nrelease: 3\n", 1),
        good.replacen("release: 2\n", "release: 0\n", 1),
        good.replacen("release: 2\n", "release: +2\n", 1),
        good.replacen("release: 2\n", "", 1),
        good.replacen("release: 2\n", "release: 2\nrun: /bin/sh\n", 1),
        good.replacen("\n\n", "\n", 1),
        good.replacen("content-length: ", "content-length: 1", 1),
        good.replacen("ed25519 ", "rsa ", 1),
    ] {
        let e = SignedCatalog::parse(bad.as_bytes()).unwrap_err();
        assert_eq!(e.code(), "malformed", "{e}");
    }
    assert_eq!(
        SignedCatalog::parse(&[0xff, 0xfe]).unwrap_err().code(),
        "malformed"
    );
}

#[test]
fn releases_only_move_forward() {
    assert!(check_newer(3, 2).is_ok());
    assert_eq!(check_newer(2, 2).unwrap_err().code(), "downgrade");
    assert_eq!(check_newer(1, 0).unwrap_err().code(), "downgrade");
    assert!(check_newer(EMBEDDED_CATALOG_RELEASE + 1, 0).is_ok());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic_the_parser(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = SignedCatalog::parse(&bytes);
    }

    #[test]
    fn arbitrary_headers_never_panic_the_parser(header in "(commscan-signed-catalog: 1\n)?([a-z0-9: -]{0,80}\n){0,14}\n[ -~\n]{0,200}") {
        let _ = SignedCatalog::parse(header.as_bytes());
    }

    #[test]
    fn flipping_any_byte_of_a_signed_catalog_is_never_accepted(pos in 0usize..10_000, bit in 0u8..8) {
        static SIGNED: std::sync::OnceLock<(String, CatalogPublicKey)> = std::sync::OnceLock::new();
        let (text, public) = SIGNED.get_or_init(|| {
            let k = CatalogSigningKey::generate().unwrap().0;
            (SignedCatalog::sign(SMALL, 2, &[&k]).unwrap(), k.public_key())
        });
        let mut bytes = text.clone().into_bytes();
        let pos = pos % bytes.len();
        bytes[pos] ^= 1 << bit;
        let accepted = SignedCatalog::parse(&bytes).and_then(|e| e.verify(&[*public]).map(|_| e));
        // A flip may only be accepted if the envelope means the same (e.g. hex case in a
        // header value): same release, same content.
        if let Ok(e) = accepted {
            prop_assert_eq!(e.release, 2);
            prop_assert_eq!(e.content.as_str(), SMALL);
        }
    }
}

#[test]
fn an_envelope_not_in_canonical_form_is_refused_although_its_signature_holds() {
    let (key, _) = CatalogSigningKey::generate().unwrap();
    let good = SignedCatalog::sign(EMBEDDED_CATALOG, 2, &[&key]).unwrap();
    let parsed = SignedCatalog::parse(good.as_bytes()).unwrap();
    let digest = hex::encode(parsed.digest);
    let variants = [
        good.replacen(&digest, &digest.to_uppercase(), 1),
        good.replacen("release: 2\n", "release: 02\n", 1),
        good.replacen("content-length: ", "content-length: 0", 1),
        {
            // sha256 before release: the same fields, another order.
            let mut lines: Vec<&str> = good.splitn(4, '\n').collect();
            lines.swap(1, 2);
            lines.join("\n")
        },
    ];
    for v in variants {
        assert_ne!(v, good);
        let e = SignedCatalog::parse(v.as_bytes()).unwrap_err();
        assert_eq!(e.code(), "malformed", "{e}");
        assert!(e.to_string().contains("canonical"), "{e}");
    }
    SignedCatalog::parse(good.as_bytes()).unwrap();
}
