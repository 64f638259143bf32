//! The catalog of communication products: what commscan recognises and by which signatures.
//!
//! The catalog is data (`shared/catalog/catalog.toml`), human-reviewed, embedded at build time
//! ([`Catalog::embedded`]) and replaceable at run time ([`Catalog::from_file`]). Loading goes
//! raw serde structs (unknown fields denied) → validation that collects *every* problem with
//! file, line and key → an immutable [`Catalog`]. A failed load returns [`Problems`] and leaves
//! whatever catalog the caller holds untouched.
//!
//! Every signature carries the source of the fact; `unverified` marks weak facts, which still
//! match but are flagged in evidence so an officer can weigh them.

use crate::platform::Platform;
use crate::textpos::{FileCheck, Problems, read_source};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use toml::Spanned;

/// The catalog shipped with commscan.
pub const EMBEDDED_CATALOG: &str = include_str!("../catalog/catalog.toml");

/// What a product is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// Text and voice messaging.
    Messenger,
    /// Video meetings.
    VideoConferencing,
    /// Team collaboration suites (channels, files, meetings).
    Collaboration,
    /// Voice calls and softphones.
    Voip,
    /// Webinar platforms.
    Webinar,
    /// E-mail clients with messaging features.
    Email,
}

impl Category {
    /// The snake_case name used in files.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Messenger => "messenger",
            Category::VideoConferencing => "video_conferencing",
            Category::Collaboration => "collaboration",
            Category::Voip => "voip",
            Category::Webinar => "webinar",
            Category::Email => "email",
        }
    }
}

impl FromStr for Category {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        serde_json::from_value(serde_json::Value::String(s.to_owned()))
            .map_err(|_| format!("unknown category '{s}'"))
    }
}

/// Whether a product is still offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProductStatus {
    /// Offered under this name.
    Active,
    /// Offered under another name; `status_note` says which.
    Renamed,
    /// No longer offered; installs may linger.
    Retired,
}

/// The kind of identifier a signature matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum SignatureKind {
    /// Debian package name.
    Dpkg,
    /// RPM package name.
    Rpm,
    /// Snap name.
    Snap,
    /// Flatpak application id.
    Flatpak,
    /// Desktop-entry id (file name without `.desktop`).
    Desktop,
    /// Linux executable base name.
    LinuxExe,
    /// Linux install directory (absolute, or `~/`-relative).
    LinuxPath,
    /// AppImage file name glob.
    Appimage,
    /// macOS bundle identifier.
    BundleId,
    /// macOS `.app` bundle name (weak: only used when no bundle id is known).
    MacApp,
    /// macOS executable / process name.
    MacExe,
    /// macOS code-signing Team ID.
    TeamId,
    /// Windows Uninstall DisplayName glob.
    WinDisplayName,
    /// Windows Uninstall Publisher.
    WinPublisher,
    /// Windows Uninstall subkey name.
    WinUninstallKey,
    /// MSIX/AppX package family name.
    AppxFamily,
    /// Windows executable file name.
    WinExe,
    /// Windows install path with environment variables.
    WinPath,
    /// Chromium installed-web-app id.
    PwaAppId,
    /// Origin of an installed web app's start URL.
    WebOrigin,
}

/// How much a match of a kind says on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Strength {
    /// Shared by every product of a vendor (publisher, Team ID): never matches alone.
    Corroborating,
    /// A name a different product could also carry; used only when the item has no exact id.
    Weak,
    /// A name or path that identifies the product in practice.
    Name,
    /// A registry-assigned identifier (package name, bundle id, package family).
    Exact,
}

impl Strength {
    /// Whether a match of this strength may create a finding. Corroborating kinds (publisher,
    /// Team ID) are shared by a vendor's many products and never match on their own.
    pub fn matches_alone(self) -> bool {
        self != Strength::Corroborating
    }
}

impl SignatureKind {
    /// All kinds, in declaration order.
    pub const ALL: [SignatureKind; 20] = [
        SignatureKind::Dpkg,
        SignatureKind::Rpm,
        SignatureKind::Snap,
        SignatureKind::Flatpak,
        SignatureKind::Desktop,
        SignatureKind::LinuxExe,
        SignatureKind::LinuxPath,
        SignatureKind::Appimage,
        SignatureKind::BundleId,
        SignatureKind::MacApp,
        SignatureKind::MacExe,
        SignatureKind::TeamId,
        SignatureKind::WinDisplayName,
        SignatureKind::WinPublisher,
        SignatureKind::WinUninstallKey,
        SignatureKind::AppxFamily,
        SignatureKind::WinExe,
        SignatureKind::WinPath,
        SignatureKind::PwaAppId,
        SignatureKind::WebOrigin,
    ];

    /// The snake_case name used in files and evidence.
    pub fn as_str(self) -> &'static str {
        match self {
            SignatureKind::Dpkg => "dpkg",
            SignatureKind::Rpm => "rpm",
            SignatureKind::Snap => "snap",
            SignatureKind::Flatpak => "flatpak",
            SignatureKind::Desktop => "desktop",
            SignatureKind::LinuxExe => "linux_exe",
            SignatureKind::LinuxPath => "linux_path",
            SignatureKind::Appimage => "appimage",
            SignatureKind::BundleId => "bundle_id",
            SignatureKind::MacApp => "mac_app",
            SignatureKind::MacExe => "mac_exe",
            SignatureKind::TeamId => "team_id",
            SignatureKind::WinDisplayName => "win_display_name",
            SignatureKind::WinPublisher => "win_publisher",
            SignatureKind::WinUninstallKey => "win_uninstall_key",
            SignatureKind::AppxFamily => "appx_family",
            SignatureKind::WinExe => "win_exe",
            SignatureKind::WinPath => "win_path",
            SignatureKind::PwaAppId => "pwa_app_id",
            SignatureKind::WebOrigin => "web_origin",
        }
    }

    /// The platform the kind belongs to; `None` for web apps, which exist everywhere.
    pub fn platform(self) -> Option<Platform> {
        use SignatureKind::*;
        match self {
            Dpkg | Rpm | Snap | Flatpak | Desktop | LinuxExe | LinuxPath | Appimage => {
                Some(Platform::Linux)
            }
            BundleId | MacApp | MacExe | TeamId => Some(Platform::Macos),
            WinDisplayName | WinPublisher | WinUninstallKey | AppxFamily | WinExe | WinPath => {
                Some(Platform::Windows)
            }
            PwaAppId | WebOrigin => None,
        }
    }

    /// How much a match says on its own.
    pub fn strength(self) -> Strength {
        use SignatureKind::*;
        match self {
            Dpkg | Rpm | Snap | Flatpak | BundleId | AppxFamily | PwaAppId | WinUninstallKey => {
                Strength::Exact
            }
            WinPublisher | TeamId => Strength::Corroborating,
            MacApp => Strength::Weak,
            _ => Strength::Name,
        }
    }

    /// Whether values of this kind are `*` globs rather than exact identifiers.
    pub fn is_glob(self) -> bool {
        matches!(
            self,
            SignatureKind::Appimage | SignatureKind::WinDisplayName
        )
    }
}

impl fmt::Display for SignatureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of identifiers of one kind, with the source of the fact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Signature {
    /// What the values identify.
    pub kind: SignatureKind,
    /// The identifiers.
    pub values: Vec<String>,
    /// Where the fact comes from.
    pub source: String,
    /// True when the fact is weak (single third-party mention or inference).
    pub unverified: bool,
}

/// One communication product.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Product {
    /// Stable lowercase slug.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Vendor.
    pub vendor: String,
    /// ISO 3166-1 alpha-2 country of origin.
    pub country: String,
    /// What it is for.
    pub categories: Vec<Category>,
    /// Whether it is still offered.
    pub status: ProductStatus,
    /// Renames, retirements.
    pub status_note: Option<String>,
    /// A sibling product this one belongs with (e.g. the two Telegram clients for macOS).
    pub family: Option<String>,
    /// How to recognise it.
    pub signatures: Vec<Signature>,
}

impl Product {
    /// The platforms the product has signatures for.
    pub fn platforms(&self) -> Vec<Platform> {
        let mut out: Vec<Platform> = self
            .signatures
            .iter()
            .filter_map(|s| s.kind.platform())
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

/// A validated, immutable catalog.
#[derive(Debug, Clone, Serialize)]
pub struct Catalog {
    /// Format version of the file.
    pub version: u32,
    products: Vec<Product>,
    #[serde(skip)]
    by_id: BTreeMap<String, usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalog {
    version: Spanned<u32>,
    #[serde(default)]
    product: Vec<RawProduct>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProduct {
    id: Spanned<String>,
    name: String,
    vendor: String,
    country: Spanned<String>,
    categories: Spanned<Vec<String>>,
    status: Spanned<String>,
    status_note: Option<String>,
    family: Option<Spanned<String>>,
    #[serde(default)]
    signature: Vec<RawSignature>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSignature {
    kind: Spanned<String>,
    values: Spanned<Vec<String>>,
    source: Spanned<String>,
    #[serde(default)]
    unverified: bool,
}

/// Whether `s` is a valid product or register id: `[a-z0-9]+(-[a-z0-9]+)*`.
pub fn is_slug(s: &str) -> bool {
    !s.is_empty()
        && s.split('-').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

/// Where a `linux_path` may point: below the places software is installed, system-wide or
/// per user. Anything else (`/etc`, `/root`, `~/.ssh`) would let a catalog ask whether a
/// directory exists on every device, which is not what a catalog is for.
pub const LINUX_PATH_ROOTS: &[&str] = &[
    "/opt/",
    "/usr/",
    "/snap/",
    "/var/lib/flatpak/",
    "/var/opt/",
    "~/.local/",
    "~/Downloads/",
    "~/Applications/",
    "~/.var/app/",
    "~/opt/",
    "~/apps/",
];

/// Why a path value would make a source look outside its fixed places, if it would: catalog
/// content is data, and a catalog from the network must not widen what the agent reads.
/// `linux_path` is strictly below one of [`LINUX_PATH_ROOTS`]; neither kind may climb with
/// `..` or hold a NUL; a `win_path` names no drive.
fn path_problem(kind: SignatureKind, v: &str) -> Option<&'static str> {
    let climbs = |sep: &[char]| v.split(sep).any(|part| part == "..");
    let below_a_root = || {
        LINUX_PATH_ROOTS
            .iter()
            .any(|r| v.len() > r.len() && v.starts_with(r))
    };
    match kind {
        SignatureKind::LinuxPath if !below_a_root() => Some(
            "a linux_path lies below /opt/, /usr/, /snap/, /var/lib/flatpak/, /var/opt/, ~/.local/, ~/Downloads/, ~/Applications/, ~/.var/app/, ~/opt/ or ~/apps/",
        ),
        SignatureKind::LinuxPath | SignatureKind::WinPath if v.contains('\0') => {
            Some("a path holds a NUL character")
        }
        SignatureKind::LinuxPath if climbs(&['/']) => Some("a path may not climb with '..'"),
        SignatureKind::WinPath if climbs(&['/', '\\']) => Some("a path may not climb with '..'"),
        // `D:` as a component would replace the folder it is joined to on Windows.
        SignatureKind::WinPath if v.contains(':') => {
            Some("a win_path may not name a drive (no ':'); it starts with a %VARIABLE%")
        }
        _ => None,
    }
}

/// Whether `s` looks like an ISO 3166-1 alpha-2 code (two uppercase ASCII letters).
pub fn is_country_code(s: &str) -> bool {
    s.len() == 2 && s.bytes().all(|b| b.is_ascii_uppercase())
}

impl Catalog {
    /// The catalog embedded in this build. Validated by tests, so this cannot fail at run time.
    pub fn embedded() -> Catalog {
        Catalog::parse("<embedded catalog>", EMBEDDED_CATALOG)
            .expect("the embedded catalog is validated by the test suite")
    }

    /// Loads and validates a catalog file.
    pub fn from_file(path: &Path) -> Result<Catalog, Problems> {
        let (name, text) = read_source(path)?;
        Catalog::parse(&name, &text)
    }

    /// Parses and validates catalog text; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Catalog, Problems> {
        let (raw, mut check) = FileCheck::parse::<RawCatalog>(file, text)?;
        if *raw.version.get_ref() != 1 {
            check.problem(
                raw.version.span(),
                "version".into(),
                format!(
                    "unsupported version {} (this build reads 1)",
                    raw.version.get_ref()
                ),
            );
        }
        let mut seen = HashSet::new();
        let mut products = Vec::with_capacity(raw.product.len());
        for (i, rp) in raw.product.into_iter().enumerate() {
            let key = |k: &str| format!("product[{i}].{k}");
            let id = rp.id.get_ref().clone();
            if !is_slug(&id) {
                check.problem(
                    rp.id.span(),
                    key("id"),
                    format!("'{id}' is not a lowercase slug like 'rocket-chat'"),
                );
            }
            if !seen.insert(id.clone()) {
                check.problem(
                    rp.id.span(),
                    key("id"),
                    format!("duplicate product id '{id}'"),
                );
            }
            if !is_country_code(rp.country.get_ref()) {
                check.problem(
                    rp.country.span(),
                    key("country"),
                    format!(
                        "'{}' is not an ISO 3166-1 alpha-2 code like 'US'",
                        rp.country.get_ref()
                    ),
                );
            }
            let mut categories = Vec::new();
            for c in rp.categories.get_ref() {
                match c.parse::<Category>() {
                    Ok(c) => categories.push(c),
                    Err(e) => check.problem(rp.categories.span(), key("categories"), e),
                }
            }
            if categories.is_empty() && rp.categories.get_ref().is_empty() {
                check.problem(
                    rp.categories.span(),
                    key("categories"),
                    "at least one category is required".into(),
                );
            }
            let status = match rp.status.get_ref().as_str() {
                "active" => ProductStatus::Active,
                "renamed" => ProductStatus::Renamed,
                "retired" => ProductStatus::Retired,
                other => {
                    check.problem(
                        rp.status.span(),
                        key("status"),
                        format!("unknown status '{other}' (active, renamed, retired)"),
                    );
                    ProductStatus::Active
                }
            };
            if status != ProductStatus::Active && rp.status_note.is_none() {
                check.problem(
                    rp.status.span(),
                    key("status_note"),
                    "required when status is not 'active'".into(),
                );
            }
            if rp.signature.is_empty() {
                check.problem(
                    rp.id.span(),
                    key("signature"),
                    "a product needs at least one signature".into(),
                );
            }
            let mut signatures = Vec::with_capacity(rp.signature.len());
            for (j, rs) in rp.signature.into_iter().enumerate() {
                let skey = |k: &str| format!("product[{i}].signature[{j}].{k}");
                let kind: Option<SignatureKind> =
                    serde_json::from_value(serde_json::Value::String(rs.kind.get_ref().clone()))
                        .ok();
                let Some(kind) = kind else {
                    check.problem(
                        rs.kind.span(),
                        skey("kind"),
                        format!("unknown signature kind '{}'", rs.kind.get_ref()),
                    );
                    continue;
                };
                if rs.values.get_ref().is_empty() {
                    check.problem(
                        rs.values.span(),
                        skey("values"),
                        "at least one value is required".into(),
                    );
                }
                for v in rs.values.get_ref() {
                    if v.trim().is_empty() || v.trim() != v {
                        check.problem(
                            rs.values.span(),
                            skey("values"),
                            format!("value '{v}' is empty or has surrounding spaces"),
                        );
                    }
                    if let Some(why) = path_problem(kind, v) {
                        check.problem(rs.values.span(), skey("values"), format!("'{v}': {why}"));
                    }
                    if v.contains('*') && !kind.is_glob() {
                        check.problem(
                            rs.values.span(),
                            skey("values"),
                            format!("'{v}': kind '{kind}' takes exact values, not globs"),
                        );
                    }
                    if kind.is_glob() && v.chars().all(|c| c == '*' || c.is_whitespace()) {
                        check.problem(
                            rs.values.span(),
                            skey("values"),
                            format!("'{v}' would match everything"),
                        );
                    }
                }
                if rs.source.get_ref().trim().is_empty() {
                    check.problem(
                        rs.source.span(),
                        skey("source"),
                        "every signature needs its source".into(),
                    );
                }
                signatures.push(Signature {
                    kind,
                    values: rs.values.into_inner(),
                    source: rs.source.into_inner(),
                    unverified: rs.unverified,
                });
            }
            products.push((
                rp.family,
                Product {
                    id,
                    name: rp.name,
                    vendor: rp.vendor,
                    country: rp.country.into_inner(),
                    categories,
                    status,
                    status_note: rp.status_note,
                    family: None,
                    signatures,
                },
            ));
        }
        // Families refer to other products: check once all ids are known. A family is one
        // level deep (a root and its members), so a policy naming the root selects exactly
        // the products that name it as their family.
        let members: HashSet<String> = products
            .iter()
            .filter(|(f, _)| f.is_some())
            .map(|(_, p)| p.id.clone())
            .collect();
        for (i, (family, product)) in products.iter_mut().enumerate() {
            if let Some(f) = family {
                if !seen.contains(f.get_ref()) || f.get_ref() == &product.id {
                    check.problem(
                        f.span(),
                        format!("product[{i}].family"),
                        format!("'{}' is not another product's id", f.get_ref()),
                    );
                } else if members.contains(f.get_ref()) {
                    check.problem(
                        f.span(),
                        format!("product[{i}].family"),
                        format!(
                            "'{}' is itself a family member; name its family root instead",
                            f.get_ref()
                        ),
                    );
                }
                product.family = Some(f.get_ref().clone());
            }
        }
        check.finish()?;
        let products: Vec<Product> = products.into_iter().map(|(_, p)| p).collect();
        let by_id = products
            .iter()
            .enumerate()
            .map(|(i, p)| (p.id.clone(), i))
            .collect();
        Ok(Catalog {
            version: 1,
            products,
            by_id,
        })
    }

    /// Every product, in file order.
    pub fn products(&self) -> &[Product] {
        &self.products
    }

    /// A product by id.
    pub fn product(&self, id: &str) -> Option<&Product> {
        self.by_id.get(id).map(|&i| &self.products[i])
    }

    /// Every value of one signature kind across the catalog, with its product id. Sources
    /// that probe known locations (install paths) use this instead of enumerating a disk.
    pub fn values_of(&self, kind: SignatureKind) -> impl Iterator<Item = (&str, &str)> {
        self.products.iter().flat_map(move |p| {
            p.signatures
                .iter()
                .filter(move |s| s.kind == kind)
                .flat_map(move |s| s.values.iter().map(move |v| (p.id.as_str(), v.as_str())))
        })
    }

    /// Whether the id names a product.
    pub fn contains(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
    }

    /// The members of the family whose root is `id` (the products naming it as `family`), in
    /// file order; empty when `id` is not a family root.
    pub fn members(&self, id: &str) -> Vec<&Product> {
        self.products
            .iter()
            .filter(|p| p.family.as_deref() == Some(id))
            .collect()
    }

    /// The root of the family `id` belongs to: its `family`, or `id` itself.
    pub fn family_root<'a>(&'a self, id: &'a str) -> &'a str {
        self.product(id)
            .and_then(|p| p.family.as_deref())
            .unwrap_or(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_catalog_is_valid_and_has_the_required_products() {
        let c = Catalog::parse("catalog.toml", EMBEDDED_CATALOG).unwrap_or_else(|e| panic!("{e}"));
        for id in [
            "zoom",
            "skype",
            "whatsapp",
            "microsoft-teams",
            "telegram",
            "slack",
            "discord",
            "yandex-messenger",
            "yandex-telemost",
            "trueconf",
            "vk-teams",
        ] {
            assert!(c.contains(id), "missing {id}");
        }
    }

    #[test]
    fn every_problem_is_reported_at_once_with_line_and_key() {
        let text = r#"version = 1
[[product]]
id = "Zoom"
name = "Zoom"
vendor = "Z"
country = "usa"
categories = ["video_conferencing"]
status = "active"
[[product.signature]]
kind = "dpkg"
values = ["zoom*"]
source = "x"

[[product]]
id = "Zoom"
name = "Zoom 2"
vendor = "Z"
country = "US"
categories = ["chat"]
status = "retired"
"#;
        let err = Catalog::parse("c.toml", text).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("c.toml:3: product[0].id: 'Zoom' is not a lowercase slug"),
            "{msg}"
        );
        assert!(msg.contains("c.toml:6: product[0].country"), "{msg}");
        assert!(
            msg.contains("c.toml:11: product[0].signature[0].values: 'zoom*'"),
            "{msg}"
        );
        assert!(
            msg.contains("c.toml:15: product[1].id: duplicate product id 'Zoom'"),
            "{msg}"
        );
        assert!(
            msg.contains("product[1].categories: unknown category 'chat'"),
            "{msg}"
        );
        assert!(msg.contains("product[1].status_note: required"), "{msg}");
        assert!(
            msg.contains("product[1].signature: a product needs at least one signature"),
            "{msg}"
        );
    }

    #[test]
    fn families_are_one_level_deep_and_list_their_members() {
        let c = Catalog::embedded();
        let members: Vec<&str> = c
            .members("telegram")
            .iter()
            .map(|p| p.id.as_str())
            .collect();
        assert_eq!(members, ["telegram-macos"]);
        assert_eq!(c.family_root("telegram-macos"), "telegram");
        assert_eq!(c.family_root("telegram"), "telegram");
        assert!(c.members("telegram-macos").is_empty());
        let product = |id: &str, family: &str| {
            format!(
                "[[product]]\nid = \"{id}\"\nname = \"{id}\"\nvendor = \"v\"\ncountry = \"US\"\n\
                 categories = [\"messenger\"]\nstatus = \"active\"\n{family}\n\
                 [[product.signature]]\nkind = \"dpkg\"\nvalues = [\"{id}\"]\nsource = \"t\"\n"
            )
        };
        let text = format!(
            "version = 1\n{}{}{}",
            product("a", ""),
            product("b", "family = \"a\""),
            product("c", "family = \"b\""),
        );
        let err = Catalog::parse("c.toml", &text).unwrap_err().to_string();
        assert!(
            err.contains("product[2].family: 'b' is itself a family member"),
            "{err}"
        );
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let err = Catalog::parse("c.toml", "version = 1\n[[product]\n").unwrap_err();
        assert!(err.to_string().contains("c.toml:2: (syntax)"), "{err}");
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = Catalog::parse("c.toml", "version = 1\ncolour = 'red'\n").unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
    }
}
