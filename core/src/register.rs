//! Registers: named lists of product ids approved by an authority (for example a country's
//! register of domestic software). Policies reference registers by id, so the same policy
//! follows the register as it grows.
//!
//! Registers are data (`shared/catalog/registers.toml`), embedded and replaceable like the
//! catalog, and validated against a catalog: every product id must exist.

use crate::catalog::{Catalog, is_slug};
use crate::textpos::{FileCheck, Problems};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use toml::Spanned;

/// The registers shipped with commscan.
pub const EMBEDDED_REGISTERS: &str = include_str!("../catalog/registers.toml");

/// A named list of approved products.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Register {
    /// Stable slug.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Who maintains it.
    pub authority: String,
    /// Caveats.
    pub note: Option<String>,
    /// Member product ids.
    pub products: Vec<String>,
    /// Where membership comes from.
    pub sources: Vec<String>,
    /// Whether each membership needs a registry record number (a national register) before
    /// it counts as verified. Registers an organisation keeps itself do not.
    pub record_numbers_required: bool,
    /// Registry record number of each member, with its public source, by product id.
    pub records: BTreeMap<String, String>,
}

impl Register {
    /// Whether the register's listing of `product` is backed by what the register requires:
    /// a registry record number when `record_numbers_required`, nothing otherwise.
    pub fn is_verified(&self, product: &str) -> bool {
        !self.record_numbers_required
            || self
                .records
                .get(product)
                .is_some_and(|r| !r.trim().is_empty())
    }

    /// Members whose listing is not verified, in file order.
    pub fn unverified_members(&self) -> Vec<&str> {
        self.products
            .iter()
            .filter(|p| !self.is_verified(p))
            .map(String::as_str)
            .collect()
    }
}

/// Every register, by id.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Registers {
    registers: BTreeMap<String, Register>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    version: Spanned<u32>,
    #[serde(default)]
    register: Vec<RawRegister>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegister {
    id: Spanned<String>,
    name: String,
    authority: String,
    note: Option<String>,
    products: Spanned<Vec<String>>,
    #[serde(default)]
    sources: Vec<String>,
    #[serde(default)]
    record_numbers_required: bool,
    #[serde(default = "no_records")]
    records: Spanned<BTreeMap<String, String>>,
}

fn no_records() -> Spanned<BTreeMap<String, String>> {
    Spanned::new(0..0, BTreeMap::new())
}

impl Registers {
    /// The registers embedded in this build, checked against `catalog`.
    pub fn embedded(catalog: &Catalog) -> Result<Registers, Problems> {
        Registers::parse("<embedded registers>", EMBEDDED_REGISTERS, catalog)
    }

    /// Loads a registers file and checks every member against `catalog`.
    pub fn from_file(path: &std::path::Path, catalog: &Catalog) -> Result<Registers, Problems> {
        let (name, text) = crate::textpos::read_source(path)?;
        Registers::parse(&name, &text, catalog)
    }

    /// Parses registers and checks every member against `catalog`.
    pub fn parse(file: &str, text: &str, catalog: &Catalog) -> Result<Registers, Problems> {
        let (raw, mut check) = FileCheck::parse::<RawFile>(file, text)?;
        if *raw.version.get_ref() != 1 {
            check.problem(
                raw.version.span(),
                "version".into(),
                format!("unsupported version {}", raw.version.get_ref()),
            );
        }
        let mut registers = BTreeMap::new();
        for (i, r) in raw.register.into_iter().enumerate() {
            let id = r.id.get_ref().clone();
            if !is_slug(&id) {
                check.problem(
                    r.id.span(),
                    format!("register[{i}].id"),
                    format!("'{id}' is not a lowercase slug"),
                );
            }
            if registers.contains_key(&id) {
                check.problem(
                    r.id.span(),
                    format!("register[{i}].id"),
                    format!("duplicate register id '{id}'"),
                );
            }
            for prod in r.products.get_ref() {
                if !catalog.contains(prod) {
                    check.problem(
                        r.products.span(),
                        format!("register[{i}].products"),
                        format!("unknown product id '{prod}'"),
                    );
                }
            }
            for (prod, record) in r.records.get_ref() {
                if !r.products.get_ref().contains(prod) {
                    check.problem(
                        r.records.span(),
                        format!("register[{i}].records"),
                        format!("'{prod}' has a record but is not in `products`"),
                    );
                }
                if record.trim().is_empty() {
                    check.problem(
                        r.records.span(),
                        format!("register[{i}].records"),
                        format!("'{prod}': a record needs its number and public source"),
                    );
                }
            }
            registers.insert(
                id.clone(),
                Register {
                    id,
                    name: r.name,
                    authority: r.authority,
                    note: r.note,
                    products: r.products.into_inner(),
                    sources: r.sources,
                    record_numbers_required: r.record_numbers_required,
                    records: r.records.into_inner(),
                },
            );
        }
        check.finish()?;
        Ok(Registers { registers })
    }

    /// A register by id.
    pub fn get(&self, id: &str) -> Option<&Register> {
        self.registers.get(id)
    }

    /// Every register.
    pub fn iter(&self) -> impl Iterator<Item = &Register> {
        self.registers.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_registers_reference_only_catalogued_products() {
        let c = Catalog::embedded();
        let r = Registers::embedded(&c).unwrap_or_else(|e| panic!("{e}"));
        assert!(r.iter().count() >= 1);
    }

    #[test]
    fn domestic_register_stays_unverified_until_each_member_has_a_record_number() {
        let c = Catalog::embedded();
        let r = Registers::embedded(&c).unwrap();
        let domestic = r.get("ru-domestic-software").unwrap();
        assert!(domestic.record_numbers_required);
        // No public record numbers are sourced yet: every member is unverified.
        assert_eq!(domestic.unverified_members().len(), domestic.products.len());
        let own = r.get("example-corp-approved").unwrap();
        assert!(own.unverified_members().is_empty());
        let cases = [
            // (records table, is vk-teams verified)
            ("", false),
            (
                "[register.records]\n\"vk-teams\" = \"reestr.digital.gov.ru record 1234\"\n",
                true,
            ),
        ];
        for (records, verified) in cases {
            let text = format!(
                "version = 1\n[[register]]\nid = \"r\"\nname = \"R\"\nauthority = \"A\"\n\
                 record_numbers_required = true\nproducts = [\"vk-teams\", \"trueconf\"]\n{records}"
            );
            let r = Registers::parse("r.toml", &text, &c).unwrap_or_else(|e| panic!("{e}"));
            let reg = r.get("r").unwrap();
            assert_eq!(reg.is_verified("vk-teams"), verified, "{records}");
            assert!(!reg.is_verified("trueconf"));
        }
        let text = "version = 1\n[[register]]\nid = \"r\"\nname = \"R\"\nauthority = \"A\"\n\
                    products = [\"vk-teams\"]\n[register.records]\nzoom = \"x\"\n\"vk-teams\" = \" \"\n";
        let err = Registers::parse("r.toml", text, &c)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("'zoom' has a record but is not in `products`"),
            "{err}"
        );
        assert!(
            err.contains("'vk-teams': a record needs its number"),
            "{err}"
        );
    }

    #[test]
    fn unknown_members_are_named() {
        let c = Catalog::embedded();
        let text = "version = 1\n[[register]]\nid = \"r\"\nname = \"R\"\nauthority = \"A\"\nproducts = [\"zoom\", \"no-such-app\"]\n";
        let err = Registers::parse("r.toml", text, &c)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("r.toml:6: register[0].products: unknown product id 'no-such-app'"),
            "{err}"
        );
    }
}
