//! `Federation.PushSummary` and `Federation.FetchRules` adapters (ministry side) and the wire
//! conversions both sides use.
//!
//! The enterprise is the one named by the verified client certificate
//! ([`crate::federation::ministry::Ministry::federation_peer`]); the organisations of the request are authorised against
//! it before anything else is read from the message, then converted and stored. The answer is
//! sent after the store flushed.

use super::blocking;
use crate::collector::Collector;
use crate::error::CollectorError;
use crate::federation::fetch::{Held, Published};
use crate::federation::{OrgSummary, Push, Receipt};
use crate::store::OrgAggregate;
use crate::store::records::ProductCounts;
use commscan_proto::convert;
use commscan_proto::v1::{self, federation_server::Federation};
use std::sync::Arc;
use std::time::Duration;

/// The `Federation` service.
#[derive(Debug, Clone)]
pub struct FederationService(pub Arc<Collector>);

/// Domain push → wire.
pub fn push_to_wire(p: &Push) -> v1::PushSummaryRequest {
    v1::PushSummaryRequest {
        generated_at: Some(convert::timestamp(p.generated_at)),
        organisations: p
            .organisations
            .iter()
            .map(|o| v1::OrganisationAggregate {
                organisation: o.organisation.clone(),
                devices: o.aggregate.devices,
                by_status: o
                    .aggregate
                    .by_status
                    .iter()
                    .map(|(s, n)| v1::StatusCount {
                        status: convert::status_to_wire(*s),
                        devices: *n,
                    })
                    .collect(),
                by_product: o
                    .aggregate
                    .by_product
                    .iter()
                    .map(|(p, c)| v1::ProductCount {
                        product: p.clone(),
                        devices: c.devices,
                        violating: c.violating,
                    })
                    .collect(),
                percent_compliant: o.percent_compliant,
            })
            .collect(),
    }
}

/// Wire push → domain; errors name the field.
pub fn push_from_wire(p: v1::PushSummaryRequest) -> Result<Push, CollectorError> {
    let bad = CollectorError::InvalidArgument;
    let generated_at = p
        .generated_at
        .as_ref()
        .ok_or_else(|| bad("generated_at: required".into()))
        .and_then(|t| convert::from_timestamp(t).map_err(|e| bad(format!("generated_at: {e}"))))?;
    let organisations = p
        .organisations
        .into_iter()
        .map(|o| {
            let org = o.organisation;
            let mut aggregate = OrgAggregate {
                devices: o.devices,
                ..Default::default()
            };
            for c in o.by_status {
                let status = convert::status_from_wire(c.status)
                    .map_err(|e| bad(format!("organisations[{org}].by_status: {e}")))?
                    .ok_or_else(|| {
                        bad(format!(
                            "organisations[{org}].by_status: status unspecified"
                        ))
                    })?;
                if aggregate.by_status.insert(status, c.devices).is_some() {
                    return Err(bad(format!(
                        "organisations[{org}].by_status: {status} appears more than once"
                    )));
                }
            }
            for c in o.by_product {
                let counts = ProductCounts {
                    devices: c.devices,
                    violating: c.violating,
                };
                if aggregate
                    .by_product
                    .insert(c.product.clone(), counts)
                    .is_some()
                {
                    return Err(bad(format!(
                        "organisations[{org}].by_product: {} appears more than once",
                        c.product
                    )));
                }
            }
            Ok(OrgSummary {
                organisation: org,
                aggregate,
                percent_compliant: o.percent_compliant,
            })
        })
        .collect::<Result<_, CollectorError>>()?;
    Ok(Push {
        generated_at,
        organisations,
    })
}

/// Domain receipt → wire.
pub fn receipt_to_wire(r: &Receipt) -> v1::PushSummaryResponse {
    v1::PushSummaryResponse {
        organisations: u32::try_from(r.organisations).unwrap_or(u32::MAX),
        received_at: Some(convert::timestamp(r.received_at)),
        stale_after_seconds: r.stale_after.as_secs(),
    }
}

/// Wire receipt → domain.
pub fn receipt_from_wire(r: &v1::PushSummaryResponse) -> Result<Receipt, String> {
    Ok(Receipt {
        organisations: r.organisations as usize,
        received_at: convert::from_timestamp(
            r.received_at
                .as_ref()
                .ok_or("push acknowledged without received_at")?,
        )?,
        stale_after: Duration::from_secs(r.stale_after_seconds),
    })
}

#[tonic::async_trait]
impl Federation for FederationService {
    async fn push_summary(
        &self,
        request: tonic::Request<v1::PushSummaryRequest>,
    ) -> Result<tonic::Response<v1::PushSummaryResponse>, tonic::Status> {
        let leaf = request
            .peer_certs()
            .and_then(|chain| chain.first().map(|c| c.to_vec()));
        let remote = request.remote_addr();
        let wire = request.into_inner();
        let receipt = blocking(&self.0, move |c| {
            let ministry = c.ministry();
            let who = ministry.federation_peer(leaf.as_deref(), remote)?;
            ministry.authorize_push(
                &who,
                wire.organisations.iter().map(|o| o.organisation.as_str()),
            )?;
            ministry.accept_push(&who, push_from_wire(wire)?)
        })
        .await?;
        Ok(tonic::Response::new(receipt_to_wire(&receipt)))
    }

    async fn fetch_rules(
        &self,
        request: tonic::Request<v1::FetchRulesRequest>,
    ) -> Result<tonic::Response<v1::FetchRulesResponse>, tonic::Status> {
        let leaf = request
            .peer_certs()
            .and_then(|chain| chain.first().map(|c| c.to_vec()));
        let remote = request.remote_addr();
        let held = held_from_wire(request.into_inner()).map_err(super::to_status)?;
        let published = blocking(&self.0, move |c| {
            c.ministry().federation_peer(leaf.as_deref(), remote)?;
            Ok(c.published_rules(&held))
        })
        .await?;
        Ok(tonic::Response::new(published_to_wire(published)))
    }
}

/// Wire request of `FetchRules` → what the enterprise holds; errors name the field.
pub(crate) fn held_from_wire(r: v1::FetchRulesRequest) -> Result<Held, CollectorError> {
    let registers_sha256 = match r.registers_sha256.as_str() {
        "" => None,
        h if h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
        {
            Some(r.registers_sha256)
        }
        _ => {
            return Err(CollectorError::InvalidArgument(
                "registers_sha256: 64 lower-case hex digits, or empty".into(),
            ));
        }
    };
    Ok(Held {
        catalog_release: r.catalog_release,
        registers_sha256,
    })
}

/// What the enterprise holds → wire request.
pub(crate) fn held_to_wire(h: &Held) -> v1::FetchRulesRequest {
    v1::FetchRulesRequest {
        catalog_release: h.catalog_release,
        registers_sha256: h.registers_sha256.clone().unwrap_or_default(),
    }
}

/// What the ministry publishes → wire response.
pub(crate) fn published_to_wire(p: Published) -> v1::FetchRulesResponse {
    v1::FetchRulesResponse {
        signed_catalog: p.signed_catalog.unwrap_or_default(),
        catalog_release: p.catalog_release,
        registers: p.registers.unwrap_or_default(),
        registers_sha256: p.registers_sha256,
    }
}

/// Wire response → what the ministry publishes (empty fields: nothing sent).
pub(crate) fn published_from_wire(r: v1::FetchRulesResponse) -> Published {
    Published {
        signed_catalog: (!r.signed_catalog.is_empty()).then_some(r.signed_catalog),
        catalog_release: r.catalog_release,
        registers: (!r.registers.is_empty()).then_some(r.registers),
        registers_sha256: r.registers_sha256,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use commscan_core::verdict::Status;

    #[test]
    fn a_push_survives_the_wire() {
        let mut a = OrgAggregate {
            devices: 3,
            ..Default::default()
        };
        a.by_status.insert(Status::Compliant, 1);
        a.by_status.insert(Status::Noncompliant, 2);
        a.by_product.insert(
            "zoom".into(),
            ProductCounts {
                devices: 2,
                violating: 2,
            },
        );
        let push = Push {
            generated_at: time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap(),
            organisations: vec![OrgSummary::of("acme".into(), a)],
        };
        assert_eq!(push_from_wire(push_to_wire(&push)).unwrap(), push);
    }

    #[test]
    fn unspecified_or_repeated_statuses_are_invalid() {
        let mut wire = v1::PushSummaryRequest {
            generated_at: Some(convert::timestamp(time::OffsetDateTime::now_utc())),
            organisations: vec![v1::OrganisationAggregate {
                organisation: "acme".into(),
                devices: 1,
                by_status: vec![v1::StatusCount {
                    status: 0,
                    devices: 1,
                }],
                ..Default::default()
            }],
        };
        assert!(push_from_wire(wire.clone()).is_err());
        wire.organisations[0].by_status = vec![
            v1::StatusCount {
                status: convert::status_to_wire(Status::Compliant),
                devices: 1,
            };
            2
        ];
        assert!(push_from_wire(wire.clone()).is_err());
        wire.generated_at = None;
        assert!(push_from_wire(wire).is_err());
    }
}
