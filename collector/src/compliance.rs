//! The judge: catalog, registers and policies in force, applied to device records.
//!
//! One policy is the default; organisations may have their own (`--org-policy ORG=FILE`). The
//! catalog and registers are the embedded ones unless files replace them. All of it is loaded
//! and validated together from a [`RulesConfig`], so a reload either takes whole or not at all.
//!
//! Held behind a lock of an `Arc` so a reload swaps the whole set at once and a failed reload
//! leaves the previous one in force.

use crate::store::{DeviceRecord, RulesKind, RulesVersion};
use commscan_core::catalog::Catalog;
use commscan_core::policy::Policy;
use commscan_core::register::Registers;
use commscan_core::signed_catalog::SignedCatalog;
use commscan_core::textpos::Problem;
use commscan_core::textpos::Problems;
use commscan_core::verdict::{Status, Subject};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use time::OffsetDateTime;

/// Where the rules come from; `None` means the embedded default.
#[derive(Debug, Clone, Default)]
pub struct RulesConfig {
    /// Catalog file.
    pub catalog: Option<PathBuf>,
    /// Registers file.
    pub registers: Option<PathBuf>,
    /// Default policy file.
    pub policy: Option<PathBuf>,
    /// Per-organisation policy files.
    pub org_policies: Vec<(String, PathBuf)>,
}

impl RulesConfig {
    /// The embedded catalog and registers with a default policy file.
    pub fn with_policy(policy: Option<&Path>) -> RulesConfig {
        RulesConfig {
            policy: policy.map(Path::to_path_buf),
            ..RulesConfig::default()
        }
    }
}

/// One rules file's text and the name its problems are reported under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// A path, `<embedded …>`, or `stored policy for acme, version 3`.
    pub name: String,
    /// The text.
    pub text: String,
}

impl Source {
    fn read(path: &Path) -> Result<Source, Problems> {
        let (name, text) = commscan_core::textpos::read_source(path)?;
        Ok(Source { name, text })
    }

    fn embedded(name: &str, text: &str) -> Source {
        Source {
            name: name.to_owned(),
            text: text.to_owned(),
        }
    }
}

/// The text of every rules file in force: what `serve` was given (or the embedded files),
/// with the versions stored through the API laid over it ([`Sources::overlay`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sources {
    /// The catalog.
    pub catalog: Source,
    /// The registers.
    pub registers: Source,
    /// The default policy.
    pub policy: Source,
    /// Organisations' own policies.
    pub org_policies: BTreeMap<String, Source>,
}

impl Sources {
    /// Reads every file `config` names; every unreadable file is a problem.
    pub fn read(config: &RulesConfig) -> Result<Sources, Problems> {
        let mut problems = Vec::new();
        let mut read = |path: &Option<PathBuf>, name: &str, embedded: &str| match path {
            Some(p) => Source::read(p)
                .map_err(|e| problems.extend(e.0))
                .unwrap_or_else(|()| Source::embedded(name, "")),
            None => Source::embedded(name, embedded),
        };
        let catalog = read(
            &config.catalog,
            "<embedded catalog>",
            commscan_core::catalog::EMBEDDED_CATALOG,
        );
        let registers = read(
            &config.registers,
            "<embedded registers>",
            commscan_core::register::EMBEDDED_REGISTERS,
        );
        let policy = read(
            &config.policy,
            "<embedded policy>",
            commscan_core::policy::DEFAULT_POLICY,
        );
        let mut org_policies = BTreeMap::new();
        for (org, path) in &config.org_policies {
            match Source::read(path) {
                Ok(s) => {
                    org_policies.insert(org.clone(), s);
                }
                Err(e) => problems.extend(e.0),
            }
        }
        if problems.is_empty() {
            Ok(Sources {
                catalog,
                registers,
                policy,
                org_policies,
            })
        } else {
            Err(Problems(problems))
        }
    }

    /// These sources with `stored` versions in place of what they replace.
    pub fn overlay(&self, stored: &[RulesVersion]) -> Sources {
        let mut out = self.clone();
        for v in stored {
            out.set(v.kind, v.organisation.as_deref(), Sources::stored_source(v));
        }
        out
    }

    /// The source of a stored version, named so a problem points at it.
    pub fn stored_source(v: &RulesVersion) -> Source {
        Source {
            name: match &v.organisation {
                Some(org) => format!("stored {} for {org}, version {}", v.kind, v.version),
                None => format!("stored {}, version {}", v.kind, v.version),
            },
            text: v.text.clone(),
        }
    }

    /// Puts `source` in place of (`kind`, `organisation`); an organisation is only read for a
    /// policy.
    pub fn set(&mut self, kind: RulesKind, organisation: Option<&str>, source: Source) {
        match (kind, organisation) {
            (RulesKind::Catalog, _) => self.catalog = source,
            (RulesKind::Registers, _) => self.registers = source,
            (RulesKind::Policy, None) => self.policy = source,
            (RulesKind::Policy, Some(org)) => {
                self.org_policies.insert(org.to_owned(), source);
            }
        }
    }

    /// What is in force for (`kind`, `organisation`): an organisation without a policy of
    /// its own is judged by the default one, which is what it shows.
    pub fn get(&self, kind: RulesKind, organisation: Option<&str>) -> &Source {
        match (kind, organisation) {
            (RulesKind::Catalog, _) => &self.catalog,
            (RulesKind::Registers, _) => &self.registers,
            (RulesKind::Policy, None) => &self.policy,
            (RulesKind::Policy, Some(org)) => self.org_policies.get(org).unwrap_or(&self.policy),
        }
    }
}

/// What judging needs, loaded and validated together.
#[derive(Debug)]
pub struct Rules {
    /// The catalog.
    pub catalog: Catalog,
    /// Registers checked against it.
    pub registers: Registers,
    /// The default policy, checked against both.
    pub policy: Policy,
    /// Policies of organisations that have their own.
    pub org_policies: BTreeMap<String, Policy>,
    /// The texts they were parsed from.
    pub sources: Sources,
    /// The signed catalog passed on to agents, when the catalog in force is one.
    pub signed_catalog: Option<Arc<ServedCatalog>>,
}

/// A signed catalog in force: the collector judges with its content and passes its bytes on,
/// unchanged, to agents holding an older release ([`crate::grpc::push`]). The collector does
/// not check the signatures (it holds no keys it could trust more than the agents do); agents
/// do.
#[derive(Debug)]
pub struct ServedCatalog {
    /// The release.
    pub release: u64,
    /// SHA-256 of the content.
    pub digest: [u8; 32],
    /// The envelope as applied.
    pub bytes: Vec<u8>,
}

/// The catalog of `source`, and the envelope when the source is a signed catalog
/// ([`SignedCatalog::looks_signed`]): its structure and digest are checked and its content is
/// validated like any catalog.
fn parse_catalog(source: &Source) -> Result<(Catalog, Option<Arc<ServedCatalog>>), Problems> {
    if !SignedCatalog::looks_signed(source.text.as_bytes()) {
        return Ok((Catalog::parse(&source.name, &source.text)?, None));
    }
    let envelope = SignedCatalog::parse(source.text.as_bytes()).map_err(|e| {
        Problems(vec![Problem {
            file: source.name.clone(),
            line: None,
            key: "signed catalog".into(),
            message: e.to_string(),
        }])
    })?;
    let catalog = Catalog::parse(
        &format!("{} (signed release {})", source.name, envelope.release),
        &envelope.content,
    )?;
    Ok((
        catalog,
        Some(Arc::new(ServedCatalog {
            release: envelope.release,
            digest: envelope.digest,
            bytes: source.text.clone().into_bytes(),
        })),
    ))
}

impl Rules {
    /// Loads and validates everything `config` names; every problem of every file at once.
    pub fn load(config: &RulesConfig) -> Result<Rules, Problems> {
        Rules::parse(Sources::read(config)?)
    }

    /// Parses and validates `sources` together; every problem of every source at once.
    pub fn parse(sources: Sources) -> Result<Rules, Problems> {
        let (catalog, signed) = parse_catalog(&sources.catalog)?;
        let registers =
            Registers::parse(&sources.registers.name, &sources.registers.text, &catalog)?;
        let mut problems = Vec::new();
        let policy = Policy::parse(
            &sources.policy.name,
            &sources.policy.text,
            &catalog,
            &registers,
        )
        .map_err(|e| problems.extend(e.0))
        .ok();
        let mut org_policies = BTreeMap::new();
        for (org, source) in &sources.org_policies {
            match Policy::parse(&source.name, &source.text, &catalog, &registers) {
                Ok(p) => {
                    org_policies.insert(org.clone(), p);
                }
                Err(e) => problems.extend(e.0),
            }
        }
        match policy {
            Some(policy) if problems.is_empty() => Ok(Rules {
                catalog,
                signed_catalog: signed,
                registers,
                policy,
                org_policies,
                sources,
            }),
            _ => Err(Problems(problems)),
        }
    }

    /// The policy that judges `organisation`.
    pub fn policy_for(&self, organisation: &str) -> &Policy {
        self.org_policies.get(organisation).unwrap_or(&self.policy)
    }

    /// Re-judges a device record at `now`. Devices that never reported stay `unknown`; devices
    /// whose last report is older than `stale_after` are `stale` (their policy reasons are kept,
    /// so an officer still sees what they had), and never count as compliant.
    pub fn judge(
        &self,
        device: &mut DeviceRecord,
        now: OffsetDateTime,
        stale_after: std::time::Duration,
    ) {
        let Some(last) = device.last_report else {
            device.verdict.status = Status::Unknown;
            return;
        };
        let subject = Subject {
            device_id: &device.device_id,
            organisation: &device.organisation,
            first_seen: &device.first_seen,
        };
        let policy = self.policy_for(&device.organisation);
        device.verdict = policy.judge(subject, &device.findings, now);
        if now - last > stale_after {
            device.verdict.status = Status::Stale;
        }
        device.judged_at = Some(now);
        device.policy = policy.id.clone();
    }
}

/// The rules in force, swappable as a whole, and the base they were built on (what `serve`
/// was given, before stored versions were laid over it).
#[derive(Debug, Clone)]
pub(crate) struct Compliance {
    current: Arc<RwLock<Arc<Rules>>>,
    base: Arc<RwLock<Sources>>,
}

impl Compliance {
    /// Starts with `rules`, which are also the base.
    pub fn new(rules: Rules) -> Compliance {
        Compliance {
            base: Arc::new(RwLock::new(rules.sources.clone())),
            current: Arc::new(RwLock::new(Arc::new(rules))),
        }
    }

    /// The base: the files `serve` was given, or the embedded ones.
    pub fn base(&self) -> Sources {
        self.base.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the base (a SIGHUP re-read the files).
    pub fn set_base(&self, base: Sources) {
        *self.base.write().unwrap_or_else(|p| p.into_inner()) = base;
    }

    /// Puts new rules in force.
    pub fn replace(&self, rules: Rules) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(rules);
    }

    /// The rules in force now.
    pub fn rules(&self) -> Arc<Rules> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
