//! Rules kept in the store: `commscanctl policy|catalog|registers apply|history|show|rollback`.
//!
//! The files given to `serve` (or the embedded ones) are the base; every version applied
//! through the API is stored ([`crate::store::RulesStore`], append-only, numbered per kind and
//! organisation) and laid over the base ([`Sources::overlay`]), so every collector on a shared
//! store judges by the same rules, survives restarts with them, and a change can be reviewed
//! (who, when, the diff against the version before) and rolled back (the old text stored again
//! as a new version, so history never rewrites).
//!
//! Applying validates the whole set with the new text in place (a catalog change that strands
//! a policy's product is refused with that policy's problem), stores it with its audit entry,
//! puts the stored set in force, re-judges the devices it concerns and announces the change to
//! this collector's agents. Other collectors on the same database hear of it from the store
//! (LISTEN/NOTIFY, with a periodic check as a backstop) and [`Collector::refresh_rules`]:
//! they put the same set in force, re-judge the devices connected to them (the only ones they
//! may have judged under the old rules since the applier re-judged everything) and announce
//! it to their agents.
//!
//! Stored rules that no longer validate against a changed base (a `serve --catalog` file
//! edited under them) are reported and not put in force; the base stays, the collector serves.

use crate::auth::{Access, Principal};
use crate::collector::Collector;
use crate::compliance::{Rules, Source, Sources};
use crate::error::CollectorError;
use crate::rejudge::Rejudged;
use crate::store::{RulesKind, RulesVersion};
use commscan_core::identity::is_valid_organisation;

/// Longest rules text accepted (the embedded catalog is about 85 KB).
pub const MAX_RULES_TEXT: usize = 1 << 20;
/// Most versions one history call returns.
pub const MAX_HISTORY: usize = 1000;
/// Longest file name kept as a version's note.
const MAX_NOTE: usize = 200;

/// What applying (or rolling back) did.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The stored version; `None` when the text equals what is in force (nothing stored).
    pub version: Option<RulesVersion>,
    /// Unified diff from what was in force to the new text.
    pub diff: String,
    /// Lines added and removed.
    pub added: usize,
    /// Lines removed.
    pub removed: usize,
    /// The re-judgement.
    pub rejudged: Rejudged,
}

/// A unified diff of two texts, and the lines added and removed.
pub fn diff(old: &Source, new: &Source) -> (String, usize, usize) {
    let d = similar::TextDiff::from_lines(&old.text, &new.text);
    let (mut added, mut removed) = (0, 0);
    for change in d.iter_all_changes() {
        match change.tag() {
            similar::ChangeTag::Insert => added += 1,
            similar::ChangeTag::Delete => removed += 1,
            similar::ChangeTag::Equal => {}
        }
    }
    let text = d
        .unified_diff()
        .context_radius(3)
        .header(&old.name, &new.name)
        .to_string();
    (text, added, removed)
}

/// The audit action of `verb` on `kind` (`policy.apply`, `catalog.rollback`…).
fn action(kind: RulesKind, verb: &str) -> String {
    format!("{kind}.{verb}")
}

impl Collector {
    /// Checks that `who` may change or read (`access`) the rules of (`kind`, `organisation`):
    /// an organisation's policy needs a grant on that organisation; the default policy, the
    /// catalog and the registers judge everyone and need a grant on every organisation.
    fn check_rules(
        &self,
        who: &Principal,
        access: Access,
        kind: RulesKind,
        organisation: Option<&str>,
        verb: &str,
    ) -> Result<(), CollectorError> {
        if let Some(org) = organisation {
            if kind != RulesKind::Policy {
                return Err(CollectorError::InvalidArgument(format!(
                    "organisation: the {kind} is shared by every organisation; only a policy may be an organisation's own"
                )));
            }
            if !is_valid_organisation(org) {
                return Err(CollectorError::InvalidArgument(format!(
                    "organisation: '{org}' is not valid (1-64 of a-z, 0-9, '-')"
                )));
            }
        }
        let allowed = self.check(who, access, organisation, &action(kind, verb))?;
        if organisation.is_none() && allowed.orgs.is_some() {
            let e = CollectorError::PermissionDenied(format!(
                "{} may not {verb} the {}: it judges every organisation (a grant on every organisation is needed)",
                who.actor(),
                match kind {
                    RulesKind::Policy => "default policy",
                    other => other.as_str(),
                }
            ));
            self.audit(
                &who.actor(),
                &action(kind, verb),
                None,
                false,
                e.to_string(),
            );
            return Err(e);
        }
        Ok(())
    }

    /// Validates `text` as the new (`kind`, `organisation`) with everything else in force, and
    /// if it is valid and differs from what is in force, stores it as a new version (audited,
    /// `note` kept with it), puts the stored rules in force, re-judges and announces.
    pub(crate) fn apply_rules(
        &self,
        who: &Principal,
        kind: RulesKind,
        organisation: Option<&str>,
        text: &str,
        note: &str,
    ) -> Result<Applied, CollectorError> {
        self.check_rules(who, Access::ManagePolicy, kind, organisation, "apply")?;
        self.store_rules(&who.actor(), kind, organisation, text, note, "apply")
    }

    /// Applies the text of an earlier `version` again, as a new version.
    pub(crate) fn rollback_rules(
        &self,
        who: &Principal,
        kind: RulesKind,
        organisation: Option<&str>,
        version: u64,
    ) -> Result<Applied, CollectorError> {
        self.check_rules(who, Access::ManagePolicy, kind, organisation, "rollback")?;
        let old = self
            .store()
            .rules_version(kind, organisation, Some(version))?
            .ok_or_else(|| {
                CollectorError::NotFound(format!(
                    "no stored version {version} of the {}",
                    scope_text(kind, organisation)
                ))
            })?;
        let note = format!("rollback to version {version}");
        self.store_rules(
            &who.actor(),
            kind,
            organisation,
            &old.text,
            &note,
            "rollback",
        )
    }

    /// Validates, stores (audited as `actor`), puts in force, re-judges and announces; the
    /// one path of every rules change, whoever makes it.
    pub(crate) fn store_rules(
        &self,
        actor: &str,
        kind: RulesKind,
        organisation: Option<&str>,
        text: &str,
        note: &str,
        verb: &str,
    ) -> Result<Applied, CollectorError> {
        if text.len() > MAX_RULES_TEXT {
            return Err(CollectorError::InvalidArgument(format!(
                "text: {} bytes, more than the {MAX_RULES_TEXT} a {kind} may have",
                text.len()
            )));
        }
        let note: String = note
            .chars()
            .filter(|c| !c.is_control())
            .take(MAX_NOTE)
            .collect();
        // One change at a time in this process, so the rules put in force follow the versions
        // stored; collectors sharing the store converge through `refresh_rules`.
        let _one_at_a_time = self
            .rules_changes()
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let in_force = self.rules();
        let old = in_force.sources.get(kind, organisation).clone();
        let proposed = Source {
            name: if note.is_empty() {
                format!("proposed {}", scope_text(kind, organisation))
            } else {
                note.clone()
            },
            text: text.to_owned(),
        };
        let mut candidate = in_force.sources.clone();
        candidate.set(kind, organisation, proposed.clone());
        let parsed =
            Rules::parse(candidate).map_err(|p| CollectorError::InvalidArgument(p.to_string()))?;
        if kind == RulesKind::Catalog {
            crate::catalog_trust::check(&parsed, self.catalog_keys())
                .map_err(|e| CollectorError::InvalidArgument(format!("text: {e}")))?;
        }
        let (diff, added, removed) = diff(&old, &proposed);
        let current_stored = self.store().rules_version(kind, organisation, None)?;
        let stored_is_same = current_stored.as_ref().is_some_and(|v| v.text == text);
        if old.text == text && (stored_is_same || current_stored.is_none()) {
            return Ok(Applied {
                version: None,
                diff: String::new(),
                added: 0,
                removed: 0,
                rejudged: Rejudged::default(),
            });
        }
        let detail = format!(
            "{}: +{added} -{removed} lines, sha256 {}",
            scope_text(kind, organisation),
            &crate::secrets::hash(text)[..16]
        );
        let stored = self.audited_as(
            actor.to_owned(),
            &action(kind, verb),
            organisation,
            detail,
            || {
                Ok(self
                    .store()
                    .append_rules(kind, organisation, text, actor, &note, self.now())?)
            },
        )?;
        let rules = self.stored_rules()?;
        let scope = match (kind, organisation) {
            (RulesKind::Policy, Some(org)) => Some(org.to_owned()),
            _ => None,
        };
        self.replace_rules(rules);
        let rejudged = match &scope {
            Some(org) => self.rejudge_organisation(org)?,
            None => self.rejudge_all()?,
        };
        self.connections().announce_policy_change();
        tracing::info!(
            kind = %kind,
            organisation = organisation.unwrap_or("*"),
            version = stored.version,
            author = %stored.author,
            devices = rejudged.devices,
            changed = rejudged.changed,
            "rules applied"
        );
        Ok(Applied {
            version: Some(stored),
            diff,
            added,
            removed,
            rejudged,
        })
    }

    /// The base with every stored version laid over it, parsed and validated.
    fn stored_rules(&self) -> Result<Rules, CollectorError> {
        let stored = self.store().current_rules()?;
        let rules = Rules::parse(self.base_rules().overlay(&stored)).map_err(|p| {
            CollectorError::FailedPrecondition(format!(
                "the stored rules do not validate against this collector's files: {p}"
            ))
        })?;
        crate::catalog_trust::check(&rules, self.catalog_keys())
            .map_err(|e| CollectorError::FailedPrecondition(format!("the stored catalog: {e}")))?;
        Ok(rules)
    }

    /// Puts the stored rules in force if they differ from what is in force (another collector
    /// applied a version, or this one starts), re-judges the devices connected here and
    /// announces the change to them. Returns whether anything changed.
    pub fn refresh_rules(&self) -> Result<Option<Rejudged>, CollectorError> {
        let _one_at_a_time = self
            .rules_changes()
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let stored = self.store().current_rules()?;
        let sources = self.base_rules().overlay(&stored);
        if sources == self.rules().sources {
            return Ok(None);
        }
        let rules = Rules::parse(sources).map_err(|p| {
            CollectorError::FailedPrecondition(format!(
                "the stored rules do not validate against this collector's files, the previous rules stay in force: {p}"
            ))
        })?;
        crate::catalog_trust::check(&rules, self.catalog_keys()).map_err(|e| {
            CollectorError::FailedPrecondition(format!(
                "the stored catalog, the previous rules stay in force: {e}"
            ))
        })?;
        self.replace_rules(rules);
        let connected = self.connections().connected_devices();
        let rejudged = self.rejudge(connected)?;
        self.connections().announce_policy_change();
        tracing::info!(
            devices = rejudged.devices,
            changed = rejudged.changed,
            "stored rules changed: now in force"
        );
        Ok(Some(rejudged))
    }

    /// Stored versions of (`kind`, `organisation`), newest first.
    pub(crate) fn rules_history(
        &self,
        who: &Principal,
        kind: RulesKind,
        organisation: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RulesVersion>, CollectorError> {
        self.check_rules(who, Access::ReadPolicy, kind, organisation, "history")?;
        let limit = if limit == 0 {
            50
        } else {
            limit.min(MAX_HISTORY)
        };
        Ok(self.store().rules_history(kind, organisation, limit)?)
    }

    /// A stored version's text, or (without `version`) what is in force now and the stored
    /// version it comes from, if any.
    pub(crate) fn rules_text(
        &self,
        who: &Principal,
        kind: RulesKind,
        organisation: Option<&str>,
        version: Option<u64>,
    ) -> Result<(Source, Option<RulesVersion>), CollectorError> {
        self.check_rules(who, Access::ReadPolicy, kind, organisation, "show")?;
        if let Some(v) = version {
            let stored = self
                .store()
                .rules_version(kind, organisation, Some(v))?
                .ok_or_else(|| {
                    CollectorError::NotFound(format!(
                        "no stored version {v} of the {}",
                        scope_text(kind, organisation)
                    ))
                })?;
            return Ok((Sources::stored_source(&stored), Some(stored)));
        }
        let source = self.rules().sources.get(kind, organisation).clone();
        let stored = self
            .store()
            .rules_version(kind, organisation, None)?
            .filter(|s| s.text == source.text);
        Ok((source, stored))
    }
}

/// `default policy`, `policy of acme`, `catalog`.
pub fn scope_text(kind: RulesKind, organisation: Option<&str>) -> String {
    match (kind, organisation) {
        (RulesKind::Policy, None) => "default policy".into(),
        (RulesKind::Policy, Some(org)) => format!("policy of {org}"),
        (k, _) => k.as_str().into(),
    }
}
