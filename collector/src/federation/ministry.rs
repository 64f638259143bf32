//! The ministry side of federation, a type of its own ([`Ministry`]): who is pushing (from the
//! verified certificate), whether it may push each organisation, whether the figures add up,
//! storing the snapshot durably, and reading the rows back with their freshness for fleet
//! summaries (which [`crate::queries`] merges with the collector's own organisations).
//!
//! Every refusal of an identified or anonymous caller is written to the audit log under the
//! action `federation.push_summary` before the answer is sent. Accepted pushes are machine
//! traffic, like device reports: they are logged, not audited.

use super::{Push, Receipt};
use crate::collector::Clock;
use crate::error::CollectorError;
use crate::queries::FleetRow;
use crate::store::{AuditStore, FederatedRecord, FederationStore, Store};
use commscan_core::identity::{DeviceIdentity, EnterpriseIdentity, is_valid_organisation};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// The audit action of every federation refusal.
pub const AUDIT_ACTION: &str = "federation.push_summary";

/// Most organisations in one push.
pub const MAX_ORGANISATIONS: usize = 10_000;

/// The ministry side of a collector: it authenticates enterprises, stores their pushes and
/// reads the rows back with their freshness. It holds only what that needs: the federated
/// rows and the audit log of the collector's store, the trust domain, the clock and the
/// window. Every collector has one ([`crate::collector::Collector::ministry`]); it holds rows
/// only if enterprises push to it.
pub struct Ministry {
    rows: Arc<dyn FederationStore>,
    audit_log: Arc<dyn AuditStore>,
    trust_domain: String,
    clock: Clock,
    stale_after: Duration,
    refusals: crate::audit::Refusals,
}

impl std::fmt::Debug for Ministry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ministry")
            .field("trust_domain", &self.trust_domain)
            .field("stale_after", &self.stale_after)
            .finish_non_exhaustive()
    }
}

impl Ministry {
    /// The ministry side over `store`, for enterprises of `trust_domain`, whose rows are
    /// stale when no push refreshed them for `stale_after`.
    pub(crate) fn new(
        store: &Arc<dyn Store>,
        trust_domain: String,
        clock: Clock,
        stale_after: Duration,
    ) -> Ministry {
        Ministry {
            rows: store.clone(),
            audit_log: store.clone(),
            trust_domain,
            clock,
            stale_after,
            refusals: Default::default(),
        }
    }

    pub(crate) fn set_clock(&mut self, clock: Clock) {
        self.clock = clock;
    }

    fn now(&self) -> time::OffsetDateTime {
        (self.clock)()
    }

    /// Audits a refusal (aggregated, see [`crate::audit::Refusals`]).
    fn audit(&self, actor: &str, organisation: Option<&str>, detail: String) {
        self.refusals.record(
            &*self.audit_log,
            self.now(),
            actor,
            AUDIT_ACTION,
            organisation,
            detail,
        );
    }

    /// Writes the counts of the refusal window if it has ended.
    pub(crate) fn close_audit_window(&self) {
        self.refusals.close_due(&*self.audit_log, self.now());
    }

    /// The enterprise calling, from the leaf of its verified client certificate chain
    /// (`None` without one). Refusals are audited with the best name available for the caller.
    pub fn federation_peer(
        &self,
        leaf: Option<&[u8]>,
        remote: Option<std::net::SocketAddr>,
    ) -> Result<EnterpriseIdentity, CollectorError> {
        let anonymous = || {
            remote
                .map(|a| format!("anonymous@{}", a.ip()))
                .unwrap_or_else(|| "anonymous".into())
        };
        let Some(der) = leaf else {
            let e = CollectorError::Unauthenticated(
                "an enterprise client certificate issued by the ministry is required".into(),
            );
            self.audit(&anonymous(), None, e.to_string());
            return Err(e);
        };
        let who = match EnterpriseIdentity::from_certificate_der(der) {
            Ok(who) => who,
            Err(why) => {
                // Verified by the TLS layer, so it is one of ours: most likely a device.
                let (actor, org) = match DeviceIdentity::from_certificate_der(der) {
                    Ok(d) => (format!("device/{}", d.device_id), Some(d.organisation)),
                    Err(_) => (anonymous(), None),
                };
                let e = CollectorError::PermissionDenied(format!(
                    "only enterprise collectors may push summaries: {why}"
                ));
                self.audit(&actor, org.as_deref(), e.to_string());
                tracing::warn!(actor, error = %e, "federation push refused");
                return Err(e);
            }
        };
        if who.trust_domain != self.trust_domain {
            let e = CollectorError::PermissionDenied(format!(
                "enterprise certificate is for trust domain '{}', this ministry is '{}'",
                who.trust_domain, self.trust_domain
            ));
            self.audit(&actor(&who), None, e.to_string());
            return Err(e);
        }
        Ok(who)
    }

    /// Refuses, and audits, a push naming any organisation `who` is not granted.
    pub fn authorize_push<'a>(
        &self,
        who: &EnterpriseIdentity,
        organisations: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), CollectorError> {
        for org in organisations {
            if !who.may_report(org) {
                let e = CollectorError::PermissionDenied(format!(
                    "enterprise '{}' may not push organisation '{org}': its certificate grants {}",
                    who.enterprise,
                    if who.organisations.is_empty() {
                        "none".to_owned()
                    } else {
                        who.organisations.join(", ")
                    }
                ));
                self.audit(&actor(who), Some(org), e.to_string());
                tracing::warn!(enterprise = %who.enterprise, organisation = org, "federation push refused: organisation not granted");
                return Err(e);
            }
        }
        Ok(())
    }

    /// Stores `push` as everything `who` reports, durably, and answers when it is on disk.
    pub fn accept_push(
        &self,
        who: &EnterpriseIdentity,
        push: Push,
    ) -> Result<Receipt, CollectorError> {
        self.authorize_push(
            who,
            push.organisations.iter().map(|o| o.organisation.as_str()),
        )?;
        validate(&push)?;
        let received_at = self.now();
        let devices: u64 = push.organisations.iter().map(|o| o.aggregate.devices).sum();
        let rows: Vec<(String, FederatedRecord)> = push
            .organisations
            .into_iter()
            .map(|o| {
                (
                    o.organisation,
                    FederatedRecord {
                        aggregate: o.aggregate,
                        generated_at: push.generated_at,
                        received_at,
                    },
                )
            })
            .collect();
        self.rows.replace_federated(&who.enterprise, &rows)?;
        self.rows.flush()?;
        tracing::info!(enterprise = %who.enterprise, organisations = rows.len(), devices, generated_at = %push.generated_at, "federated aggregates stored");
        Ok(Receipt {
            organisations: rows.len(),
            received_at,
            stale_after: self.stale_after,
        })
    }

    /// Rows pushed by enterprise collectors, ordered by enterprise then organisation, each
    /// with when it was received and whether that is longer ago than the window.
    pub fn federated_rows(&self) -> Result<Vec<FleetRow>, CollectorError> {
        let now = self.now();
        Ok(self
            .rows
            .federated()?
            .into_iter()
            .map(|(enterprise, organisation, r)| FleetRow {
                stale: now - r.received_at > self.stale_after,
                enterprise,
                organisation,
                aggregate: r.aggregate,
                updated_at: Some(r.received_at),
            })
            .collect())
    }
}

fn actor(who: &EnterpriseIdentity) -> String {
    format!("enterprise/{}", who.enterprise)
}

/// Refuses figures that do not add up, naming the organisation and the field.
fn validate(push: &Push) -> Result<(), CollectorError> {
    let bad = |org: &str, why: String| {
        Err(CollectorError::InvalidArgument(format!(
            "organisations[{org}]: {why}"
        )))
    };
    if push.organisations.len() > MAX_ORGANISATIONS {
        return Err(CollectorError::InvalidArgument(format!(
            "organisations: at most {MAX_ORGANISATIONS} per push"
        )));
    }
    let mut seen = BTreeSet::new();
    for o in &push.organisations {
        let org = o.organisation.as_str();
        if !is_valid_organisation(org) {
            return bad(org, "not a valid organisation id".into());
        }
        if !seen.insert(org) {
            return bad(org, "appears more than once".into());
        }
        let a = &o.aggregate;
        let by_status: u64 = a.by_status.values().sum();
        if by_status != a.devices {
            return bad(
                org,
                format!("by_status adds up to {by_status}, devices is {}", a.devices),
            );
        }
        for (product, c) in &a.by_product {
            if product.is_empty() || product.len() > 128 {
                return bad(
                    org,
                    format!("by_product: product id '{product}' is invalid"),
                );
            }
            if c.devices > a.devices || c.violating > c.devices {
                return bad(
                    org,
                    format!(
                        "by_product[{product}]: {} violating of {} devices in an organisation of {}",
                        c.violating, c.devices, a.devices
                    ),
                );
            }
        }
        let percent = a.percent_compliant();
        if !o.percent_compliant.is_finite() || (o.percent_compliant - percent).abs() > 0.01 {
            return bad(
                org,
                format!(
                    "percent_compliant is {}, by_status gives {percent:.2}",
                    o.percent_compliant
                ),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::Collector;
    use crate::federation::OrgSummary;
    use crate::layout::{InitOptions, Layout, OpenSettings};
    use crate::store::OrgAggregate;
    use crate::store::records::ProductCounts;
    use commscan_core::verdict::Status;
    use std::sync::atomic::{AtomicI64, Ordering};
    use time::OffsetDateTime;

    struct Ministry {
        _dir: tempfile::TempDir,
        c: Arc<Collector>,
        offset: Arc<AtomicI64>,
    }

    fn ministry() -> Ministry {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path().join("m"));
        layout
            .init(&InitOptions {
                trust_domain: "ministry.gov".into(),
                server_names: vec!["localhost".into()],
                organisation: "ministry".into(),
                import_ca: None,
                import_server: None,
            })
            .unwrap();
        let offset = Arc::new(AtomicI64::new(0));
        let o = offset.clone();
        let settings = OpenSettings {
            clock: Arc::new(move || {
                OffsetDateTime::now_utc() + time::Duration::seconds(o.load(Ordering::SeqCst))
            }),
            federation_stale_after: Duration::from_secs(600),
            postgres: None,
            ..OpenSettings::default()
        };
        let (c, _) = layout.open_with(&Default::default(), &settings).unwrap();
        Ministry {
            _dir: dir,
            c,
            offset,
        }
    }

    fn enterprise(id: &str, orgs: &[&str]) -> EnterpriseIdentity {
        EnterpriseIdentity {
            trust_domain: "ministry.gov".into(),
            enterprise: id.into(),
            organisations: orgs.iter().map(|o| (*o).to_owned()).collect(),
        }
    }

    fn summary(org: &str, compliant: u64, noncompliant: u64) -> OrgSummary {
        let mut a = OrgAggregate {
            devices: compliant + noncompliant,
            ..Default::default()
        };
        a.by_status.insert(Status::Compliant, compliant);
        a.by_status.insert(Status::Noncompliant, noncompliant);
        a.by_status.retain(|_, n| *n > 0);
        if noncompliant > 0 {
            a.by_product.insert(
                "zoom".into(),
                ProductCounts {
                    devices: noncompliant,
                    violating: noncompliant,
                },
            );
        }
        OrgSummary::of(org.into(), a)
    }

    fn push(orgs: Vec<OrgSummary>) -> Push {
        Push {
            generated_at: OffsetDateTime::now_utc(),
            organisations: orgs,
        }
    }

    #[test]
    fn two_enterprises_with_the_same_organisation_id_keep_separate_rows() {
        let m = ministry();
        m.c.ministry()
            .accept_push(
                &enterprise("e1", &["acme"]),
                push(vec![summary("acme", 2, 1)]),
            )
            .unwrap();
        m.c.ministry()
            .accept_push(
                &enterprise("e2", &["acme"]),
                push(vec![summary("acme", 5, 0)]),
            )
            .unwrap();
        let rows = m.c.ministry().federated_rows().unwrap();
        let got: Vec<_> = rows
            .iter()
            .map(|r| {
                (
                    r.enterprise.as_str(),
                    r.organisation.as_str(),
                    r.aggregate.devices,
                )
            })
            .collect();
        assert_eq!(got, [("e1", "acme", 3), ("e2", "acme", 5)]);
        assert!(rows.iter().all(|r| !r.stale && r.updated_at.is_some()));
    }

    #[test]
    fn a_push_replaces_what_the_enterprise_reported_before() {
        let m = ministry();
        let e = enterprise("e1", &["a", "b"]);
        m.c.ministry()
            .accept_push(&e, push(vec![summary("a", 1, 0), summary("b", 1, 0)]))
            .unwrap();
        m.c.ministry()
            .accept_push(&e, push(vec![summary("b", 0, 4)]))
            .unwrap();
        let rows = m.c.ministry().federated_rows().unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].organisation, "b");
        assert_eq!(rows[0].aggregate.devices, 4);
    }

    #[test]
    fn a_push_naming_an_organisation_not_granted_stores_nothing_and_is_audited() {
        let m = ministry();
        let e = enterprise("e1", &["a"]);
        m.c.ministry()
            .accept_push(&e, push(vec![summary("a", 1, 0)]))
            .unwrap();
        let err =
            m.c.ministry()
                .accept_push(&e, push(vec![summary("a", 9, 0), summary("other", 1, 0)]))
                .unwrap_err();
        assert!(matches!(err, CollectorError::PermissionDenied(_)), "{err}");
        let rows = m.c.ministry().federated_rows().unwrap();
        assert_eq!(rows[0].aggregate.devices, 1, "the earlier push stands");
        let audit = m.c.store().audit(0, 100).unwrap();
        let (_, entry) = audit.last().unwrap();
        assert_eq!(entry.actor, "enterprise/e1");
        assert_eq!(entry.action, AUDIT_ACTION);
        assert_eq!(entry.organisation.as_deref(), Some("other"));
        assert!(!entry.allowed);
    }

    #[test]
    fn figures_that_do_not_add_up_are_refused() {
        let m = ministry();
        let e = enterprise("e1", &["a"]);
        let mut s = summary("a", 1, 1);
        s.aggregate.devices = 5;
        assert!(matches!(
            m.c.ministry().accept_push(&e, push(vec![s])),
            Err(CollectorError::InvalidArgument(_))
        ));
        let mut s = summary("a", 1, 1);
        s.percent_compliant = 100.0;
        assert!(m.c.ministry().accept_push(&e, push(vec![s])).is_err());
        let mut s = summary("a", 1, 1);
        s.aggregate.by_product.get_mut("zoom").unwrap().violating = 7;
        assert!(m.c.ministry().accept_push(&e, push(vec![s])).is_err());
        assert!(
            m.c.ministry()
                .accept_push(&e, push(vec![summary("a", 1, 0), summary("a", 1, 0)]))
                .is_err()
        );
        assert!(m.c.ministry().federated_rows().unwrap().is_empty());
    }

    #[test]
    fn rows_turn_stale_once_the_window_passes_without_a_push() {
        let m = ministry();
        let e = enterprise("e1", &["a"]);
        m.c.ministry()
            .accept_push(&e, push(vec![summary("a", 3, 0)]))
            .unwrap();
        m.offset.store(599, Ordering::SeqCst);
        assert!(!m.c.ministry().federated_rows().unwrap()[0].stale);
        m.offset.store(601, Ordering::SeqCst);
        assert!(m.c.ministry().federated_rows().unwrap()[0].stale);
        m.c.ministry()
            .accept_push(&e, push(vec![summary("a", 3, 0)]))
            .unwrap();
        assert!(
            !m.c.ministry().federated_rows().unwrap()[0].stale,
            "a push refreshes"
        );
    }

    #[test]
    fn a_certificate_of_another_trust_domain_is_refused() {
        let m = ministry();
        let (ca, _) = commscan_core::pki::Authority::generate("elsewhere").unwrap();
        let mut id = enterprise("e1", &["a"]);
        id.trust_domain = "elsewhere".into();
        let pem = ca
            .issue_enterprise(&id, commscan_core::pki::ENTERPRISE_VALIDITY)
            .unwrap();
        let der = commscan_core::pki::first_cert_der(&pem.cert).unwrap();
        assert!(matches!(
            m.c.ministry().federation_peer(Some(&der), None),
            Err(CollectorError::PermissionDenied(_))
        ));
        assert!(matches!(
            m.c.ministry().federation_peer(None, None),
            Err(CollectorError::Unauthenticated(_))
        ));
    }
}
