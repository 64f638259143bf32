//! The precompiled matcher: inventory items in, findings with evidence out.
//!
//! [`Matcher::new`] compiles a catalog once into a hash map from `(kind, normalised value)` to
//! products, plus a short list of `*` globs for the two glob kinds. Matching an item is then a
//! few hash lookups, so thousands of items match in well under a millisecond.
//!
//! Rules, in order:
//! - Values are compared after Unicode NFC normalisation and lowercasing, so `Толк.app` read
//!   from an NFD file system equals the catalog's `Толк.app`, and `Zoom.exe` equals `zoom.exe`.
//! - Identifiers are exact: `zoomer` is not `zoom`, `libsignal-protocol` is not `signal`,
//!   `teamspeak3` is not `teams`. Only `appimage` and `win_display_name` take globs.
//! - An item's identifiers are tried strongest first (exact ids, then names, then weak
//!   names); the first strength with a hit decides. A weak name (`Telegram.app`) is ignored when
//!   the item carries an exact id (its bundle id): two different apps ship as `Telegram.app`.
//! - Corroborating kinds (publisher, Team ID) never match alone.
//! - When several products match at the same strength and all belong to one family, the
//!   family's root product is reported; otherwise each is reported.
//!
//! Near misses are never silent. An item that matches nothing but whose name (the name it
//! gives itself, its `.app` name without `.app`, or its uninstall DisplayName) equals a
//! catalogued product's name becomes an unclassified candidate with `looks_like` set to that
//! product, even when its source did not think it communication-like: an app called "WhatsApp"
//! with an unknown bundle id is almost certainly WhatsApp under an identifier the catalog does
//! not know yet. A product's names are its `name`, its `mac_app` names without `.app`, its
//! `mac_exe` names and its exact `win_display_name` values. Names are compared after NFC,
//! lowercasing and dropping everything but letters and digits (so "Whats App" and
//! "whatsapp" are equal), and only for equality: "Zoom Player", "Signal Analyzer" and
//! "TeamSpeak" merely contain a product's name and get no hint.

use crate::catalog::{Catalog, Product, SignatureKind, Strength};
use crate::inventory::{InventoryItem, Presence};
use crate::scan::{Evidence, Finding, Unclassified};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use unicode_normalization::UnicodeNormalization;

/// At most this many evidence entries are kept per finding; the rest are counted.
pub const MAX_EVIDENCE: usize = 16;

/// Normalises a value for comparison: NFC, then lowercase. ASCII (nearly every identifier)
/// takes a fast path that allocates only when there is an uppercase letter.
pub fn normalise(s: &str) -> Cow<'_, str> {
    if s.is_ascii() {
        if s.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(s.to_ascii_lowercase())
        } else {
            Cow::Borrowed(s)
        }
    } else {
        Cow::Owned(s.nfc().flat_map(char::to_lowercase).collect())
    }
}

/// Normalises a name for near-miss comparison: [`normalise`], then only letters and digits.
/// Empty when nothing is left.
pub fn loose_name(s: &str) -> String {
    normalise(s)
        .chars()
        .filter(|c| c.is_alphanumeric())
        .collect()
}

/// The names an item gives itself, for near misses: its `name`, its `.app` name without the
/// suffix, its uninstall DisplayName and its candidate name.
fn item_names(item: &InventoryItem) -> impl Iterator<Item = &str> {
    let ids = item.ids.iter().filter_map(|(k, v)| match k {
        SignatureKind::MacApp => Some(strip_app(v)),
        SignatureKind::WinDisplayName => Some(v.as_str()),
        _ => None,
    });
    item.name
        .as_deref()
        .into_iter()
        .chain(ids)
        .chain(item.candidate.as_ref().map(|c| c.name.as_str()))
}

fn strip_app(v: &str) -> &str {
    match v.len().checked_sub(4) {
        Some(at) if v.get(at..).is_some_and(|e| e.eq_ignore_ascii_case(".app")) => &v[..at],
        _ => v,
    }
}

/// The names a product goes by, for near misses: its `name`, its `mac_app` names without
/// `.app`, its `mac_exe` names and its exact (not globbed) `win_display_name` values.
fn product_names(product: &Product) -> impl Iterator<Item = &str> {
    let sigs = product.signatures.iter().flat_map(|sig| {
        let keep = matches!(
            sig.kind,
            SignatureKind::MacApp | SignatureKind::MacExe | SignatureKind::WinDisplayName
        );
        sig.values
            .iter()
            .filter(move |v| keep && !v.contains('*'))
            .map(|v| strip_app(v))
    });
    std::iter::once(product.name.as_str()).chain(sigs)
}

/// A compiled `*` glob over normalised text.
#[derive(Debug, Clone)]
struct Glob {
    parts: Vec<String>,
    anchored_start: bool,
    anchored_end: bool,
}

impl Glob {
    fn new(pattern: &str) -> Glob {
        let n = normalise(pattern);
        Glob {
            anchored_start: !n.starts_with('*'),
            anchored_end: !n.ends_with('*'),
            parts: n
                .split('*')
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect(),
        }
    }

    fn matches(&self, text: &str) -> bool {
        let n = self.parts.len();
        let mut rest = text;
        for (i, part) in self.parts.iter().enumerate() {
            if i == 0 && self.anchored_start {
                match rest.strip_prefix(part.as_str()) {
                    Some(r) => rest = r,
                    None => return false,
                }
            } else if i == n - 1 && self.anchored_end {
                return rest.ends_with(part.as_str());
            } else {
                match rest.find(part.as_str()) {
                    Some(at) => rest = &rest[at + part.len()..],
                    None => return false,
                }
            }
        }
        !self.anchored_end || rest.is_empty()
    }
}

/// `SignatureKind::ALL` is in declaration order, so the discriminant is the index.
fn kind_index(kind: SignatureKind) -> usize {
    kind as usize
}

/// A catalog compiled for matching.
#[derive(Debug, Clone)]
pub struct Matcher {
    ids: Vec<String>,
    family_root: Vec<usize>,
    /// Per kind (indexed by position in `SignatureKind::ALL`): normalised value → products.
    exact: Vec<HashMap<Box<str>, Vec<usize>>>,
    globs: Vec<(SignatureKind, Glob, usize)>,
    /// [`loose_name`] of each product name → the product it names (the first in catalog
    /// order, or its family root), for near misses.
    names: HashMap<String, usize>,
}

impl Matcher {
    /// Compiles `catalog`.
    pub fn new(catalog: &Catalog) -> Matcher {
        let products = catalog.products();
        let ids: Vec<String> = products.iter().map(|p| p.id.clone()).collect();
        let index: HashMap<&str, usize> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.as_str(), i))
            .collect();
        let family_root: Vec<usize> = products
            .iter()
            .enumerate()
            .map(|(i, p)| {
                p.family
                    .as_deref()
                    .and_then(|f| index.get(f).copied())
                    .unwrap_or(i)
            })
            .collect();
        let mut exact: Vec<HashMap<Box<str>, Vec<usize>>> =
            vec![HashMap::new(); SignatureKind::ALL.len()];
        let mut globs = Vec::new();
        for (i, product) in products.iter().enumerate() {
            for sig in &product.signatures {
                for value in &sig.values {
                    if sig.kind.is_glob() && value.contains('*') {
                        globs.push((sig.kind, Glob::new(value), i));
                    } else {
                        let slot = exact[kind_index(sig.kind)]
                            .entry(normalise(value).into())
                            .or_default();
                        if !slot.contains(&i) {
                            slot.push(i);
                        }
                    }
                }
            }
        }
        let mut names = HashMap::new();
        for (i, product) in products.iter().enumerate() {
            for name in product_names(product) {
                let key = loose_name(name);
                if !key.is_empty() {
                    names.entry(key).or_insert(family_root[i]);
                }
            }
        }
        Matcher {
            ids,
            family_root,
            exact,
            globs,
            names,
        }
    }

    /// The catalogued product an unmatched item's name equals, if any (a near miss).
    pub fn looks_like(&self, item: &InventoryItem) -> Option<&str> {
        item_names(item)
            .find_map(|n| self.names.get(&loose_name(n)))
            .map(|&p| self.ids[p].as_str())
    }

    /// The products an item matches, with the kind that matched.
    pub fn match_item(&self, item: &InventoryItem) -> Vec<(usize, SignatureKind)> {
        let has_exact = item
            .ids
            .iter()
            .any(|(k, _)| k.strength() == Strength::Exact);
        for strength in [Strength::Exact, Strength::Name, Strength::Weak] {
            if strength == Strength::Weak && has_exact {
                break;
            }
            let mut hits: Vec<(usize, SignatureKind)> = Vec::new();
            for (kind, value) in item.ids.iter().filter(|(k, _)| k.strength() == strength) {
                let value = normalise(value);
                if let Some(products) = self.exact[kind_index(*kind)].get(value.as_ref()) {
                    hits.extend(products.iter().map(|&p| (p, *kind)));
                }
                if kind.is_glob() {
                    hits.extend(
                        self.globs
                            .iter()
                            .filter(|(k, g, _)| k == kind && g.matches(&value))
                            .map(|(_, _, p)| (*p, *kind)),
                    );
                }
            }
            if hits.is_empty() {
                continue;
            }
            hits.sort();
            hits.dedup_by_key(|(p, _)| *p);
            let root = self.family_root[hits[0].0];
            if hits.len() > 1 && hits.iter().all(|(p, _)| self.family_root[*p] == root) {
                return vec![(root, hits[0].1)];
            }
            return hits;
        }
        Vec::new()
    }

    /// Matches every item and folds the matches into findings (ordered by product id) and
    /// unmatched communication-like items into unclassified candidates (ordered by name).
    pub fn match_all<'a>(
        &self,
        items: impl IntoIterator<Item = &'a InventoryItem>,
    ) -> (Vec<Finding>, Vec<Unclassified>) {
        let mut findings: BTreeMap<usize, (Finding, Vec<(Strength, Evidence)>)> = BTreeMap::new();
        let mut unclassified = Vec::new();
        for item in items {
            let hits = self.match_item(item);
            if hits.is_empty() {
                let looks_like = self.looks_like(item).map(str::to_owned);
                match (&item.candidate, looks_like) {
                    (Some(c), looks_like) => unclassified.push(Unclassified {
                        name: c.name.clone(),
                        source: item.source.to_owned(),
                        detail: c.reason.clone(),
                        looks_like,
                    }),
                    (None, Some(p)) => unclassified.push(Unclassified {
                        name: item_names(item).next().unwrap_or_default().to_owned(),
                        source: item.source.to_owned(),
                        detail: item.detail.clone(),
                        looks_like: Some(p),
                    }),
                    (None, None) => {}
                }
                continue;
            }
            for (product, kind) in hits {
                let (finding, evidence) = findings.entry(product).or_insert_with(|| {
                    (
                        Finding {
                            product: self.ids[product].clone(),
                            installed: false,
                            running: false,
                            version: None,
                            evidence: Vec::new(),
                        },
                        Vec::new(),
                    )
                });
                match item.presence {
                    Presence::Installed => {
                        finding.installed = true;
                        if finding.version.is_none() {
                            finding.version.clone_from(&item.version);
                        }
                    }
                    Presence::Running => finding.running = true,
                }
                let e = Evidence {
                    source: item.source.to_owned(),
                    detail: item.detail.clone(),
                    signature: kind.as_str().to_owned(),
                };
                if !evidence.iter().any(|(_, x)| *x == e) {
                    evidence.push((kind.strength(), e));
                }
            }
        }
        let findings = findings
            .into_values()
            .map(|(mut f, mut ev)| {
                // Strongest first; installations before processes within a strength.
                ev.sort_by(|a, b| {
                    b.0.cmp(&a.0)
                        .then_with(|| (a.1.source == "process").cmp(&(b.1.source == "process")))
                });
                let total = ev.len();
                f.evidence = ev.into_iter().take(MAX_EVIDENCE).map(|(_, e)| e).collect();
                if total > MAX_EVIDENCE {
                    f.evidence.push(Evidence {
                        source: "commscan".into(),
                        detail: format!("{} more items not shown", total - MAX_EVIDENCE),
                        signature: String::new(),
                    });
                }
                f
            })
            .collect::<Vec<_>>();
        let mut findings = findings;
        findings.sort_by(|a, b| a.product.cmp(&b.product));
        unclassified.sort();
        unclassified.dedup();
        (findings, unclassified)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::SignatureKind as K;

    fn catalog() -> Catalog {
        Catalog::parse(
            "t.toml",
            r#"version = 1
[[product]]
id = "zoom"
name = "Zoom"
vendor = "Zoom"
country = "US"
categories = ["video_conferencing"]
status = "active"
[[product.signature]]
kind = "dpkg"
values = ["zoom"]
source = "t"
[[product.signature]]
kind = "win_display_name"
values = ["Zoom(64bit)", "Zoom Workplace*"]
source = "t"
[[product.signature]]
kind = "win_publisher"
values = ["Zoom Video Communications, Inc."]
source = "t"

[[product]]
id = "telegram"
name = "Telegram Desktop"
vendor = "Telegram"
country = "AE"
categories = ["messenger"]
status = "active"
[[product.signature]]
kind = "bundle_id"
values = ["com.tdesktop.Telegram"]
source = "t"
[[product.signature]]
kind = "mac_exe"
values = ["Telegram"]
source = "t"

[[product]]
id = "telegram-macos"
name = "Telegram for macOS"
vendor = "Telegram"
country = "AE"
categories = ["messenger"]
status = "active"
family = "telegram"
[[product.signature]]
kind = "bundle_id"
values = ["ru.keepcoder.Telegram"]
source = "t"
[[product.signature]]
kind = "mac_exe"
values = ["Telegram"]
source = "t"

[[product]]
id = "kontur-tolk"
name = "Kontur.Tolk"
vendor = "SKB Kontur"
country = "RU"
categories = ["video_conferencing"]
status = "active"
[[product.signature]]
kind = "mac_app"
values = ["Толк.app"]
source = "t"
"#,
        )
        .unwrap()
    }

    fn ids(m: &Matcher, item: &InventoryItem) -> Vec<String> {
        m.match_item(item)
            .into_iter()
            .map(|(p, _)| m.ids[p].clone())
            .collect()
    }

    #[test]
    fn look_alikes_do_not_match() {
        let m = Matcher::new(&catalog());
        for name in ["zoomer", "zoom-client-helper", "libzoom", "Zoom"] {
            let item = InventoryItem::installed("dpkg", K::Dpkg, name, name);
            let expected: Vec<String> = if name == "Zoom" {
                vec!["zoom".into()]
            } else {
                vec![]
            };
            assert_eq!(ids(&m, &item), expected, "{name}");
        }
    }

    #[test]
    fn display_name_globs_are_anchored() {
        let m = Matcher::new(&catalog());
        let dn = |s: &str| {
            ids(
                &m,
                &InventoryItem::installed("windows_registry", K::WinDisplayName, s, s),
            )
        };
        assert_eq!(dn("Zoom Workplace (64-bit)"), vec!["zoom"]);
        assert_eq!(dn("zoom(64bit)"), vec!["zoom"]);
        assert!(dn("Zoom(64bit) Outlook Plugin").is_empty());
        assert!(dn("My Zoom Workplace").is_empty());
    }

    #[test]
    fn publisher_alone_never_matches() {
        let m = Matcher::new(&catalog());
        let item = InventoryItem::installed(
            "windows_registry",
            K::WinPublisher,
            "Zoom Video Communications, Inc.",
            "x",
        );
        assert!(ids(&m, &item).is_empty());
    }

    #[test]
    fn bundle_id_decides_between_two_telegram_apps() {
        let m = Matcher::new(&catalog());
        let tdesktop = InventoryItem::installed(
            "macos_app",
            K::BundleId,
            "com.tdesktop.Telegram",
            "Telegram.app",
        )
        .with_id(K::MacApp, "Telegram.app");
        let native = InventoryItem::installed(
            "macos_app",
            K::BundleId,
            "ru.keepcoder.Telegram",
            "Telegram.app",
        )
        .with_id(K::MacApp, "Telegram.app");
        assert_eq!(ids(&m, &tdesktop), vec!["telegram"]);
        assert_eq!(ids(&m, &native), vec!["telegram-macos"]);
        // A process named Telegram could be either: the family root is reported.
        let process = InventoryItem::running("process", K::MacExe, "Telegram", "Telegram");
        assert_eq!(ids(&m, &process), vec!["telegram"]);
    }

    #[test]
    fn weak_app_name_is_ignored_when_bundle_id_is_known() {
        let m = Matcher::new(&catalog());
        let other =
            InventoryItem::installed("macos_app", K::BundleId, "com.example.tolk", "Толк.app")
                .with_id(K::MacApp, "Толк.app");
        assert!(ids(&m, &other).is_empty());
        let no_plist = InventoryItem::installed("macos_app", K::MacApp, "Толк.app", "Толк.app");
        assert_eq!(ids(&m, &no_plist), vec!["kontur-tolk"]);
    }

    #[test]
    fn unicode_names_are_normalised() {
        let m = Matcher::new(&catalog());
        // "Толк" written with a decomposed letter would still be the same after NFC; here we
        // check case folding of Cyrillic and a decomposed form of a Latin accent together.
        let item = InventoryItem::installed("macos_app", K::MacApp, "ТОЛК.APP", "x");
        assert_eq!(ids(&m, &item), vec!["kontur-tolk"]);
        assert_eq!(normalise("Cafe\u{301}"), normalise("Café"));
        assert_eq!(normalise("Й"), normalise("И\u{306}"));
    }

    #[test]
    fn findings_fold_installed_and_running_with_evidence() {
        let m = Matcher::new(&catalog());
        let items = vec![
            InventoryItem::installed("dpkg", K::Dpkg, "zoom", "package zoom 6.1.0")
                .with_version("6.1.0"),
            InventoryItem::installed("dpkg", K::Dpkg, "zoomer", "package zoomer 1"),
            InventoryItem::installed("desktop", K::Desktop, "org.example.chat", "Example Chat")
                .with_candidate("Example Chat", "Categories=Network;InstantMessaging;"),
        ];
        let (findings, unclassified) = m.match_all(&items);
        assert_eq!(findings.len(), 1);
        let f = &findings[0];
        assert_eq!(
            (f.product.as_str(), f.installed, f.running),
            ("zoom", true, false)
        );
        assert_eq!(f.version.as_deref(), Some("6.1.0"));
        assert_eq!(f.evidence[0].detail, "package zoom 6.1.0");
        assert_eq!(unclassified.len(), 1);
        assert_eq!(unclassified[0].name, "Example Chat");
    }

    #[test]
    fn a_name_equal_to_a_product_name_is_a_near_miss_and_a_name_containing_one_is_not() {
        let m = Matcher::new(&catalog());
        let app = |bundle: &str, app: &str| {
            InventoryItem::installed("macos_app", K::BundleId, bundle, format!("app {app}"))
                .with_id(K::MacApp, app)
        };
        let win = |key: &str, name: &str| {
            InventoryItem::installed("windows_registry", K::WinUninstallKey, key, "entry")
                .with_id(K::WinDisplayName, name)
        };
        // (item, near-miss hint)
        let cases = [
            (app("com.example.zoom", "Zoom.app"), Some("zoom")),
            (app("com.example.zoom", "ZOOM.APP"), Some("zoom")),
            (win("{A}", "Zoom"), Some("zoom")),
            // Not the exact DisplayName "Zoom(64bit)", but equal after dropping punctuation.
            (win("{A}", "Zoom (64bit)"), Some("zoom")),
            (win("{A}", " zoom\t(64 bit) "), Some("zoom")),
            (win("{B}", "Telegram for macOS"), Some("telegram")),
            // The weak .app name does not match when the bundle id is known, but it is a name.
            (app("org.example.tolk", "ТОЛК.app"), Some("kontur-tolk")),
            (app("com.example.zp", "Zoom Player.app"), None),
            (win("{C}", "Zoom Outlook Plugin"), None),
            (win("{C}", "Zoomer"), None),
            (app("com.example.sa", "Signal Analyzer.app"), None),
            (app("com.example.ts", "TeamSpeak.app"), None),
            (app("com.example.x", "Workplace.app"), None),
            (app("com.example.y", ".app"), None),
        ];
        for (item, hint) in cases {
            let (findings, unclassified) = m.match_all([&item]);
            if findings.is_empty() {
                let got = unclassified.first().and_then(|u| u.looks_like.as_deref());
                assert_eq!(got, hint, "{:?}", item.ids);
                assert_eq!(
                    unclassified.len(),
                    usize::from(hint.is_some()),
                    "{:?}",
                    item.ids
                );
            }
        }
        // The candidate names the item as it names itself and keeps its evidence line.
        let item = app("com.example.zoom", "zoom.app").with_name("Zoom");
        let (_, u) = m.match_all([&item]);
        assert_eq!(
            u,
            vec![Unclassified {
                name: "Zoom".into(),
                source: "macos_app".into(),
                detail: "app zoom.app".into(),
                looks_like: Some("zoom".into()),
            }]
        );
    }

    #[test]
    fn near_miss_names_of_the_embedded_catalog_name_one_family_each() {
        let c = Catalog::embedded();
        let mut owner: HashMap<String, &str> = HashMap::new();
        for p in c.products() {
            let family = c.family_root(&p.id);
            for name in product_names(p) {
                let key = loose_name(name);
                if let Some(other) = owner.insert(key.clone(), family) {
                    assert_eq!(other, family, "'{key}' names two products");
                }
            }
        }
        assert_eq!(owner.get("whatsapp"), Some(&"whatsapp"));
    }

    #[test]
    fn a_communication_candidate_carries_the_hint_too() {
        let m = Matcher::new(&catalog());
        let item = InventoryItem::installed("desktop", K::Desktop, "org.example.zw", "entry")
            .with_candidate("Zoom", "Categories=Network;VideoConference;");
        let (_, u) = m.match_all([&item]);
        assert_eq!(u[0].looks_like.as_deref(), Some("zoom"));
        assert_eq!(u[0].detail, "Categories=Network;VideoConference;");
    }

    #[test]
    fn kind_index_is_the_position_in_all() {
        for (i, k) in SignatureKind::ALL.iter().enumerate() {
            assert_eq!(kind_index(*k), i);
        }
    }

    #[test]
    fn glob_edge_cases() {
        let g = Glob::new("a*b*c");
        assert!(g.matches("abc"));
        assert!(g.matches("axxbyyc"));
        assert!(!g.matches("axxbyycd"));
        assert!(!g.matches("xabc"));
        let g = Glob::new("*telegram*.appimage");
        assert!(g.matches("telegram-4.1.appimage"));
        assert!(g.matches("my-telegram.appimage"));
        assert!(!g.matches("telegram.appimage.bak"));
        assert!(Glob::new("exact").matches("exact"));
        assert!(!Glob::new("exact").matches("exactly"));
    }
}
