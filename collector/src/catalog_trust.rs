//! The collector's own check of signed catalogs: `[rules] catalog_keys` (`serve
//! --catalog-key`).
//!
//! Agents verify every catalog pushed to them against their own keys, so the collector is
//! never what makes a catalog trusted. Without keys of its own it stores and passes on any
//! well-formed envelope, and a catalog signed by a key the fleet does not trust is refused by
//! every agent (visible in `commscanctl catalog versions`). With keys, the collector refuses
//! such a catalog before anything is stored or pushed: at start (a `--catalog` file), when an
//! administrator applies one, when another collector on the same store applied one, and when
//! one arrives from the ministry ([`crate::federation::fetch`]), which it adopts only with
//! keys. Unsigned catalogs judge as before and are never pushed.

use crate::compliance::Rules;
use commscan_core::signed_catalog::{CatalogPublicKey, EnvelopeError, SignedCatalog};

/// A signed catalog this collector does not accept.
#[derive(Debug, thiserror::Error)]
#[error(
    "signed catalog release {release} refused: {reason} (this collector accepts catalogs signed by {keys})"
)]
pub struct Untrusted {
    /// The envelope's release.
    pub release: u64,
    /// Why.
    pub reason: EnvelopeError,
    /// The configured keys, for the message.
    keys: String,
}

/// Checks the signed catalog of `rules` (if any) against `keys`; nothing to check without keys
/// or without a signed catalog.
pub(crate) fn check(rules: &Rules, keys: &[CatalogPublicKey]) -> Result<(), Untrusted> {
    match &rules.signed_catalog {
        Some(served) if !keys.is_empty() => verify(&served.bytes, keys).map(drop),
        _ => Ok(()),
    }
}

/// Verifies an envelope against `keys` (which must not be empty to succeed); its release.
pub(crate) fn verify(bytes: &[u8], keys: &[CatalogPublicKey]) -> Result<u64, Untrusted> {
    let fail = |release, reason| Untrusted {
        release,
        reason,
        keys: keys
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
    };
    let envelope = SignedCatalog::parse(bytes).map_err(|e| fail(0, e))?;
    envelope
        .verify(keys)
        .map(|_| envelope.release)
        .map_err(|e| fail(envelope.release, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compliance::{RulesConfig, Source, Sources};
    use commscan_core::catalog::EMBEDDED_CATALOG;
    use commscan_core::signed_catalog::CatalogSigningKey;

    fn rules_with_catalog(text: String) -> Rules {
        let mut sources = Sources::read(&RulesConfig::default()).expect("embedded rules");
        sources.catalog = Source {
            name: "catalog".into(),
            text,
        };
        Rules::parse(sources).expect("valid rules")
    }

    #[test]
    fn a_catalog_signed_by_another_key_is_refused_and_one_signed_by_ours_accepted() {
        let (ours, _) = CatalogSigningKey::generate().unwrap();
        let (theirs, _) = CatalogSigningKey::generate().unwrap();
        let signed = SignedCatalog::sign(EMBEDDED_CATALOG, 2, &[&theirs]).unwrap();
        let rules = rules_with_catalog(signed);
        let e = check(&rules, &[ours.public_key()]).unwrap_err();
        assert_eq!(e.release, 2);
        assert_eq!(e.reason.code(), "unsigned", "{e}");
        assert!(
            e.to_string().contains(&ours.public_key().to_string()),
            "{e}"
        );
        // Without keys the collector leaves it to the agents.
        check(&rules, &[]).unwrap();
        let signed = SignedCatalog::sign(EMBEDDED_CATALOG, 2, &[&ours]).unwrap();
        check(&rules_with_catalog(signed), &[ours.public_key()]).unwrap();
    }

    #[test]
    fn an_unsigned_catalog_passes_the_check_since_it_is_never_pushed() {
        let (ours, _) = CatalogSigningKey::generate().unwrap();
        let rules = rules_with_catalog(EMBEDDED_CATALOG.to_owned());
        check(&rules, &[ours.public_key()]).unwrap();
    }

    #[test]
    fn an_envelope_altered_after_signing_is_refused() {
        let (ours, _) = CatalogSigningKey::generate().unwrap();
        let signed = SignedCatalog::sign(EMBEDDED_CATALOG, 2, &[&ours]).unwrap();
        let raised = signed.replacen("release: 2", "release: 9", 1);
        let e = verify(raised.as_bytes(), &[ours.public_key()]).unwrap_err();
        assert_eq!(e.release, 9);
        assert_eq!(e.reason.code(), "bad-signature", "{e}");
    }
}
