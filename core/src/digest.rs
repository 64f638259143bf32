//! The state digest of the reporting contract: what `Hello.state_digest` and
//! `Report.state_digest` carry, computed the same way on the agent and on the collector.
//!
//! A device's state is its findings and unclassified candidates in their canonical form
//! ([`crate::report::canonical_finding`], [`crate::report::canonical_unclassified`]: the
//! form the collector stores). The digest is SHA-256 over this encoding:
//!
//! ```text
//! "commscan-state-v1\n"
//! u32 number of findings, then for each finding in product order:
//!     str product, u8 installed, u8 running, str version ("" if none),
//!     u32 number of evidence entries, then for each in the order given:
//!         str source, str detail, str signature
//! u32 number of unclassified candidates, then for each in (name, source, detail) order:
//!     str name, str source, str detail
//! ```
//!
//! A candidate's `looks_like` hint is not digested: it is derived from the candidate by the
//! agent's catalog, and leaving it out keeps agents and collectors that predate it agreeing on
//! every digest (a collector that drops the field would otherwise ask for a resync each time).
//!
//! where `u32` is big-endian and `str` is a `u32` byte length followed by UTF-8 bytes. Order
//! of findings and candidates on the wire does not matter; the order of evidence does (it is
//! "strongest first" and stored as sent).

use crate::scan::{Finding, Unclassified};
use sha2::{Digest as _, Sha256};

/// A state digest.
pub type StateDigest = [u8; 32];

fn put_str(h: &mut Sha256, s: &str) {
    h.update((s.len() as u32).to_be_bytes());
    h.update(s.as_bytes());
}

/// The digest of a state given in canonical form.
pub fn state_digest<'a>(
    findings: impl IntoIterator<Item = &'a Finding>,
    unclassified: impl IntoIterator<Item = &'a Unclassified>,
) -> StateDigest {
    let mut findings: Vec<&Finding> = findings.into_iter().collect();
    findings.sort_by(|a, b| a.product.cmp(&b.product));
    let mut unclassified: Vec<&Unclassified> = unclassified.into_iter().collect();
    unclassified.sort();
    let mut h = Sha256::new();
    h.update(b"commscan-state-v1\n");
    h.update((findings.len() as u32).to_be_bytes());
    for f in findings {
        put_str(&mut h, &f.product);
        h.update([u8::from(f.installed), u8::from(f.running)]);
        put_str(&mut h, f.version.as_deref().unwrap_or(""));
        h.update((f.evidence.len() as u32).to_be_bytes());
        for e in &f.evidence {
            put_str(&mut h, &e.source);
            put_str(&mut h, &e.detail);
            put_str(&mut h, &e.signature);
        }
    }
    h.update((unclassified.len() as u32).to_be_bytes());
    for u in unclassified {
        put_str(&mut h, &u.name);
        put_str(&mut h, &u.source);
        put_str(&mut h, &u.detail);
    }
    h.finalize().into()
}

/// Lower-case hex of a digest, for logs and records.
pub fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// A digest from its hex form; `None` unless it is 64 hex digits.
pub fn from_hex(h: &str) -> Option<StateDigest> {
    if h.len() != 64 {
        return None;
    }
    let mut d = [0u8; 32];
    for (i, b) in d.iter_mut().enumerate() {
        *b = u8::from_str_radix(h.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::Evidence;

    fn finding(product: &str, version: &str) -> Finding {
        Finding {
            product: product.into(),
            installed: true,
            running: false,
            version: Some(version.into()).filter(|v: &String| !v.is_empty()),
            evidence: vec![Evidence {
                source: "dpkg".into(),
                detail: format!("package {product}"),
                signature: "dpkg".into(),
            }],
        }
    }

    #[test]
    fn order_of_findings_does_not_change_the_digest_but_content_does() {
        let (a, b) = (finding("zoom", "6"), finding("skype", "8"));
        let d1 = state_digest([&a, &b], []);
        assert_eq!(d1, state_digest([&b, &a], []));
        assert_ne!(d1, state_digest([&a, &finding("skype", "9")], []));
        assert_ne!(d1, state_digest([&a], []));
        assert_ne!(state_digest([], []), d1);
        assert_eq!(from_hex(&hex(&d1)), Some(d1));
        assert_eq!(from_hex("zz"), None);
    }

    #[test]
    fn field_boundaries_are_unambiguous() {
        // "ab" + "c" must not digest like "a" + "bc".
        let u1 = Unclassified {
            name: "ab".into(),
            source: "c".into(),
            detail: String::new(),
            looks_like: None,
        };
        let u2 = Unclassified {
            name: "a".into(),
            source: "bc".into(),
            detail: String::new(),
            looks_like: None,
        };
        assert_ne!(state_digest([], [&u1]), state_digest([], [&u2]));
    }

    #[test]
    fn a_near_miss_hint_leaves_the_digest_as_an_older_peer_computes_it() {
        let plain = Unclassified {
            name: "WhatsApp".into(),
            source: "macos_app".into(),
            detail: "app WhatsApp.app".into(),
            looks_like: None,
        };
        let hinted = Unclassified {
            looks_like: Some("whatsapp".into()),
            ..plain.clone()
        };
        assert_eq!(state_digest([], [&plain]), state_digest([], [&hinted]));
    }
}
