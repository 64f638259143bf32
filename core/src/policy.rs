//! The policy language and its evaluation.
//!
//! A policy is a TOML file an officer can read (see `policies/` at the repository root):
//!
//! ```toml
//! version = 1
//! id = "ministry-letter"
//! name = "Ministry letter: domestic communication software only"
//! counts = "installed"          # "installed": installed or running counts; "running": only running
//! default_action = "allow"      # for catalogued products no rule names
//!
//! [[rule]]
//! id = "domestic-register"
//! action = "allow"
//! registers = ["ru-domestic-software"]
//!
//! [[rule]]
//! id = "named-foreign"
//! action = "deny"
//! products = ["zoom", "skype", "whatsapp"]
//! enforcement = "enforce"       # notify | warn | enforce
//!
//! [[rule]]
//! id = "foreign-vc"
//! action = "deny"
//! categories = ["messenger", "video_conferencing"]
//! except_countries = ["RU"]
//! enforcement = "warn"
//! grace = "30d"                 # warn: noncompliant once this long has passed since first sighting
//!
//! [[waiver]]
//! scope = "device"              # or "organisation"
//! device = "6f1c…"
//! product = "zoom"
//! reason = "court hearings by Zoom until the domestic system is certified"
//! approver = "i.petrova"
//! expires = 2026-12-31          # required; the waiver counts through that day (UTC)
//! ```
//!
//! Semantics:
//! - Rules are tried in file order; the first rule whose selectors all match a product decides.
//!   Within one selector the values are alternatives (`categories = [a, b]` is a or b); across
//!   selectors they combine (`categories` and `except_countries`). A rule needs a selector.
//! - Families: a product named in `products` (or in a waiver) also selects the members of its
//!   family (catalog `family`; `telegram` selects `telegram-macos`), because an officer who
//!   names a product means every client of it. A rule may name a member alone to be narrower.
//!   Precedence: a rule naming a member by its own id beats a rule that selects it only through
//!   its family root, wherever the two stand; otherwise file order decides. Reasons say which
//!   member matched and through which family; [`Policy::warnings`] (`policy check`) points out
//!   a member named with the other action than an earlier rule naming its root.
//! - Registers: a register may require a registry record number for each member
//!   (`record_numbers_required`); a membership without one is unverified, and a reason that
//!   relies on it says so.
//! - A finding counts when it is installed or running (`counts = "installed"`), or only when
//!   running (`counts = "running"`).
//! - A denied finding under `enforce` is a violation at once; under `warn` it is a notice until
//!   `grace` has passed since the product's first sighting on the device, then a violation;
//!   under `notify` it is only ever a notice.
//! - A violation covered by an unexpired waiver (device or organisation scope) is waived. An
//!   expired waiver stops counting by itself: evaluation takes `now`.
//! - Verdict: any unwaived violation → noncompliant; else any waived violation → waived; else
//!   compliant. Reasons are sentences an officer can read.
//!
//! Parsing collects every problem (syntax, unknown product or register ids, invalid country
//! codes, waivers without expiry...) with file, line and key, so a failed reload names them all
//! and the caller keeps the policy in force.

use crate::catalog::{Catalog, Category, is_country_code, is_slug};
use crate::duration::parse_duration;
use crate::register::Registers;
use crate::textpos::{FileCheck, Problems, read_source};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;
use time::OffsetDateTime;
use toml::Spanned;

/// The policy the collector applies when none is configured: the seed case, a ministry letter.
pub const DEFAULT_POLICY: &str = include_str!("../../policies/ministry-letter.toml");

/// What a rule does with the products it selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Permitted.
    Allow,
    /// Forbidden.
    Deny,
}

/// How a denial is enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Enforcement {
    /// Recorded, never noncompliant.
    Notify,
    /// Noncompliant once the grace period since first sighting has passed.
    Warn,
    /// Noncompliant at once.
    Enforce,
}

/// Which findings count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Counts {
    /// Installed or running.
    Installed,
    /// Only running.
    Running,
}

/// Whom a waiver covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum WaiverScope {
    /// One device.
    Device(String),
    /// Every device of an organisation.
    Organisation(String),
}

/// A time-limited exception for one product.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Waiver {
    /// Whom it covers.
    pub scope: WaiverScope,
    /// The product.
    pub product: String,
    /// Why.
    pub reason: String,
    /// Who approved it.
    pub approver: String,
    /// When it stops counting.
    #[serde(with = "time::serde::rfc3339")]
    pub expires: OffsetDateTime,
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    /// Name used in reasons.
    pub id: String,
    /// Allow or deny.
    pub action: Action,
    /// How a denial is enforced.
    pub enforcement: Enforcement,
    /// Grace period for `warn`.
    pub grace: Option<Duration>,
    /// Product ids selected.
    pub products: Vec<String>,
    /// Products of these registers selected.
    pub registers: Vec<String>,
    /// Products of these categories selected.
    pub categories: Vec<Category>,
    /// Products from these countries selected.
    pub countries: Vec<String>,
    /// Products from these countries never selected.
    pub except_countries: Vec<String>,
}

/// A validated policy.
#[derive(Debug, Clone, Serialize)]
pub struct Policy {
    /// Stable id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// Which findings count.
    pub counts: Counts,
    /// For catalogued products no rule selects.
    pub default_action: Action,
    /// Enforcement of the default when it denies.
    pub default_enforcement: Enforcement,
    /// Rules in file order.
    pub rules: Vec<Rule>,
    /// Waivers.
    pub waivers: Vec<Waiver>,
    /// Product facts the rules need, resolved at load time.
    #[serde(skip)]
    facts: BTreeMap<String, ProductFacts>,
}

/// What a policy needs to know about a catalogued product, resolved at load time.
#[derive(Debug, Clone)]
pub(crate) struct ProductFacts {
    /// ISO 3166-1 alpha-2 country.
    pub(crate) country: String,
    /// Categories.
    pub(crate) categories: Vec<Category>,
    /// Registers listing it.
    pub(crate) registers: Vec<String>,
    /// Registers listing it whose membership of it is not backed by a registry record number.
    pub(crate) unverified_registers: Vec<String>,
    /// The family root it belongs to, if it is a family member.
    pub(crate) family: Option<String>,
}

impl Policy {
    /// What the catalog says about a product, if it knows it.
    pub(crate) fn facts_of(&self, product: &str) -> Option<&ProductFacts> {
        self.facts.get(product)
    }

    /// Warnings about rules that are valid but probably not what the author meant. Today: a
    /// rule naming a family member whose family root an earlier rule names with the other
    /// action. The later rule still decides that member (a rule naming a member exactly beats
    /// a match through its family); the warning makes the split visible.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (i, rule) in self.rules.iter().enumerate() {
            for member in &rule.products {
                let Some(root) = self.facts.get(member).and_then(|f| f.family.as_ref()) else {
                    continue;
                };
                let earlier = self.rules[..i]
                    .iter()
                    .find(|r| r.products.contains(root) && r.action != rule.action);
                if let Some(e) = earlier {
                    out.push(format!(
                        "rule[{i}] '{}' {} '{member}', a member of family '{root}' that earlier \
                         rule '{}' {}: '{member}' follows '{}' (a rule naming a member exactly \
                         beats its family), the rest of family '{root}' follows '{}'",
                        rule.id,
                        rule.action.verb(),
                        e.id,
                        e.action.verb(),
                        rule.id,
                        e.id,
                    ));
                }
            }
        }
        out
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    version: Spanned<u32>,
    id: Spanned<String>,
    name: String,
    description: Option<String>,
    counts: Option<Counts>,
    default_action: Option<Action>,
    default_enforcement: Option<Enforcement>,
    #[serde(default)]
    rule: Vec<RawRule>,
    #[serde(default)]
    waiver: Vec<RawWaiver>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    id: Spanned<String>,
    action: Action,
    enforcement: Option<Enforcement>,
    grace: Option<Spanned<String>>,
    #[serde(default = "no_values")]
    products: Spanned<Vec<String>>,
    #[serde(default = "no_values")]
    registers: Spanned<Vec<String>>,
    #[serde(default = "no_values")]
    categories: Spanned<Vec<String>>,
    #[serde(default = "no_values")]
    countries: Spanned<Vec<String>>,
    #[serde(default = "no_values")]
    except_countries: Spanned<Vec<String>>,
}

fn no_values() -> Spanned<Vec<String>> {
    Spanned::new(0..0, Vec::new())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWaiver {
    scope: Spanned<String>,
    device: Option<String>,
    organisation: Option<String>,
    product: Spanned<String>,
    reason: Option<String>,
    approver: Option<String>,
    expires: Option<Spanned<toml::value::Datetime>>,
}

/// Converts a TOML date or date-time to the instant a waiver stops counting.
/// A bare date counts through that whole day in UTC.
fn expiry_instant(dt: &toml::value::Datetime) -> Result<OffsetDateTime, String> {
    let date = dt.date.ok_or("a time without a date is not an expiry")?;
    let month = time::Month::try_from(date.month).map_err(|e| e.to_string())?;
    let day = time::Date::from_calendar_date(i32::from(date.year), month, date.day)
        .map_err(|e| e.to_string())?;
    match dt.time {
        None => Ok(day
            .next_day()
            .ok_or("date out of range")?
            .midnight()
            .assume_utc()),
        Some(t) => {
            let tm = time::Time::from_hms_nano(t.hour, t.minute, t.second, t.nanosecond)
                .map_err(|e| e.to_string())?;
            let offset = match dt.offset {
                None | Some(toml::value::Offset::Z) => time::UtcOffset::UTC,
                Some(toml::value::Offset::Custom { minutes }) => {
                    time::UtcOffset::from_whole_seconds(i32::from(minutes) * 60)
                        .map_err(|e| e.to_string())?
                }
            };
            Ok(day
                .with_time(tm)
                .assume_offset(offset)
                .to_offset(time::UtcOffset::UTC))
        }
    }
}

impl Action {
    /// Lowercase name, as in policy files.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
        }
    }

    /// The verb in sentences: "allows", "denies".
    pub fn verb(self) -> &'static str {
        match self {
            Action::Allow => "allows",
            Action::Deny => "denies",
        }
    }
}

impl Policy {
    /// The embedded default policy, checked against `catalog` and `registers`.
    pub fn embedded(catalog: &Catalog, registers: &Registers) -> Result<Policy, Problems> {
        Policy::parse("<embedded policy>", DEFAULT_POLICY, catalog, registers)
    }

    /// Loads a policy file.
    pub fn from_file(
        path: &std::path::Path,
        catalog: &Catalog,
        registers: &Registers,
    ) -> Result<Policy, Problems> {
        let (name, text) = read_source(path)?;
        Policy::parse(&name, &text, catalog, registers)
    }

    /// Parses and validates policy text against a catalog and its registers.
    pub fn parse(
        file: &str,
        text: &str,
        catalog: &Catalog,
        registers: &Registers,
    ) -> Result<Policy, Problems> {
        let (raw, mut check) = FileCheck::parse::<RawPolicy>(file, text)?;
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
        if !is_slug(raw.id.get_ref()) {
            check.problem(
                raw.id.span(),
                "id".into(),
                format!("'{}' is not a lowercase slug", raw.id.get_ref()),
            );
        }
        let mut rule_ids = HashSet::new();
        let mut rules = Vec::new();
        for (i, r) in raw.rule.into_iter().enumerate() {
            let key = |k: &str| format!("rule[{i}].{k}");
            if !is_slug(r.id.get_ref()) {
                check.problem(
                    r.id.span(),
                    key("id"),
                    format!("'{}' is not a lowercase slug", r.id.get_ref()),
                );
            }
            if !rule_ids.insert(r.id.get_ref().clone()) {
                check.problem(
                    r.id.span(),
                    key("id"),
                    format!("duplicate rule id '{}'", r.id.get_ref()),
                );
            }
            for prod in r.products.get_ref() {
                if !catalog.contains(prod) {
                    check.problem(
                        r.products.span(),
                        key("products"),
                        format!("unknown product id '{prod}' (see `commscanctl catalog list`)"),
                    );
                }
            }
            for reg in r.registers.get_ref() {
                if registers.get(reg).is_none() {
                    check.problem(
                        r.registers.span(),
                        key("registers"),
                        format!("unknown register '{reg}'"),
                    );
                }
            }
            let mut categories = Vec::new();
            for c in r.categories.get_ref() {
                match c.parse::<Category>() {
                    Ok(c) => categories.push(c),
                    Err(e) => check.problem(r.categories.span(), key("categories"), e),
                }
            }
            for (sel, list) in [
                ("countries", &r.countries),
                ("except_countries", &r.except_countries),
            ] {
                for c in list.get_ref() {
                    if !is_country_code(c) {
                        check.problem(
                            list.span(),
                            key(sel),
                            format!("'{c}' is not an ISO 3166-1 alpha-2 code like 'US'"),
                        );
                    }
                }
            }
            if r.products.get_ref().is_empty()
                && r.registers.get_ref().is_empty()
                && r.categories.get_ref().is_empty()
                && r.countries.get_ref().is_empty()
                && r.except_countries.get_ref().is_empty()
            {
                check.problem(r.id.span(), key("products"), "a rule needs at least one selector (products, registers, categories, countries, except_countries)".into());
            }
            let enforcement = r.enforcement.unwrap_or(Enforcement::Enforce);
            let grace = match &r.grace {
                None => None,
                Some(g) => match parse_duration(g.get_ref()) {
                    Ok(d) => Some(d),
                    Err(e) => {
                        check.problem(g.span(), key("grace"), e);
                        None
                    }
                },
            };
            if enforcement == Enforcement::Warn && r.grace.is_none() {
                check.problem(
                    r.id.span(),
                    key("grace"),
                    "enforcement 'warn' needs a grace period such as '14d'".into(),
                );
            }
            if enforcement != Enforcement::Warn && r.grace.is_some() {
                check.problem(
                    r.grace.as_ref().map(|g| g.span()).unwrap_or(0..0),
                    key("grace"),
                    "grace only applies to enforcement 'warn'".into(),
                );
            }
            if r.action == Action::Allow && r.enforcement.is_some() {
                check.problem(
                    r.id.span(),
                    key("enforcement"),
                    "enforcement only applies to action 'deny'".into(),
                );
            }
            rules.push(Rule {
                id: r.id.into_inner(),
                action: r.action,
                enforcement,
                grace,
                products: r.products.into_inner(),
                registers: r.registers.into_inner(),
                categories,
                countries: r.countries.into_inner(),
                except_countries: r.except_countries.into_inner(),
            });
        }
        let mut waivers = Vec::new();
        for (i, w) in raw.waiver.into_iter().enumerate() {
            let key = |k: &str| format!("waiver[{i}].{k}");
            if !catalog.contains(w.product.get_ref()) {
                check.problem(
                    w.product.span(),
                    key("product"),
                    format!("unknown product id '{}'", w.product.get_ref()),
                );
            }
            let scope = match (w.scope.get_ref().as_str(), w.device, w.organisation) {
                ("device", Some(d), None) => Some(WaiverScope::Device(d)),
                ("organisation", None, Some(o)) => Some(WaiverScope::Organisation(o)),
                ("device", _, _) => {
                    check.problem(
                        w.scope.span(),
                        key("device"),
                        "scope 'device' needs `device` and no `organisation`".into(),
                    );
                    None
                }
                ("organisation", _, _) => {
                    check.problem(
                        w.scope.span(),
                        key("organisation"),
                        "scope 'organisation' needs `organisation` and no `device`".into(),
                    );
                    None
                }
                (other, _, _) => {
                    check.problem(
                        w.scope.span(),
                        key("scope"),
                        format!("unknown scope '{other}' (device, organisation)"),
                    );
                    None
                }
            };
            let expires = match &w.expires {
                None => {
                    check.problem(
                        w.product.span(),
                        key("expires"),
                        "a waiver needs an expiry date (e.g. expires = 2026-12-31)".into(),
                    );
                    None
                }
                Some(e) => match expiry_instant(e.get_ref()) {
                    Ok(t) => Some(t),
                    Err(m) => {
                        check.problem(e.span(), key("expires"), m);
                        None
                    }
                },
            };
            for (field, v) in [("reason", &w.reason), ("approver", &w.approver)] {
                if v.as_deref().is_none_or(|s| s.trim().is_empty()) {
                    check.problem(
                        w.product.span(),
                        key(field),
                        format!("a waiver needs a {field}"),
                    );
                }
            }
            if let (Some(scope), Some(expires)) = (scope, expires) {
                waivers.push(Waiver {
                    scope,
                    product: w.product.into_inner(),
                    reason: w.reason.unwrap_or_default(),
                    approver: w.approver.unwrap_or_default(),
                    expires,
                });
            }
        }
        check.finish()?;
        let facts = catalog
            .products()
            .iter()
            .map(|prod| {
                let regs = registers
                    .iter()
                    .filter(|r| r.products.contains(&prod.id))
                    .map(|r| r.id.clone())
                    .collect();
                let unverified = registers
                    .iter()
                    .filter(|r| r.products.contains(&prod.id) && !r.is_verified(&prod.id))
                    .map(|r| r.id.clone())
                    .collect();
                (
                    prod.id.clone(),
                    ProductFacts {
                        country: prod.country.clone(),
                        categories: prod.categories.clone(),
                        registers: regs,
                        unverified_registers: unverified,
                        family: prod.family.clone(),
                    },
                )
            })
            .collect();
        Ok(Policy {
            id: raw.id.into_inner(),
            name: raw.name,
            description: raw.description,
            counts: raw.counts.unwrap_or(Counts::Installed),
            default_action: raw.default_action.unwrap_or(Action::Allow),
            default_enforcement: raw.default_enforcement.unwrap_or(Enforcement::Enforce),
            rules,
            waivers,
            facts,
        })
    }
}
