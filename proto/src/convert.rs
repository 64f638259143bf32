//! Conversions between `commscan.v1` wire types and `commscan-core` domain types, in one place
//! so agent and collector agree. Wire → domain conversions that can fail return a message
//! naming the field, for an `INVALID_ARGUMENT` status.

use crate::v1;
use commscan_core::platform::Platform;
use commscan_core::scan::{Evidence, Finding, ScanStats, SourceOutcome, Unclassified};
use commscan_core::verdict::{Reason, ReasonKind, Status, Verdict};
use time::OffsetDateTime;

/// Domain platform → wire enum value.
pub fn platform_to_wire(p: Platform) -> i32 {
    (match p {
        Platform::Linux => v1::Platform::Linux,
        Platform::Macos => v1::Platform::Macos,
        Platform::Windows => v1::Platform::Windows,
    }) as i32
}

/// Wire enum value → domain platform.
pub fn platform_from_wire(v: i32) -> Result<Platform, String> {
    match v1::Platform::try_from(v) {
        Ok(v1::Platform::Linux) => Ok(Platform::Linux),
        Ok(v1::Platform::Macos) => Ok(Platform::Macos),
        Ok(v1::Platform::Windows) => Ok(Platform::Windows),
        _ => Err(format!("platform: {v} is not a known platform")),
    }
}

/// Domain status → wire enum value.
pub fn status_to_wire(s: Status) -> i32 {
    (match s {
        Status::Compliant => v1::DeviceStatus::Compliant,
        Status::Noncompliant => v1::DeviceStatus::Noncompliant,
        Status::Waived => v1::DeviceStatus::Waived,
        Status::Stale => v1::DeviceStatus::Stale,
        Status::Unknown => v1::DeviceStatus::Unknown,
    }) as i32
}

/// Wire enum value → domain status; `None` for unspecified.
pub fn status_from_wire(v: i32) -> Result<Option<Status>, String> {
    match v1::DeviceStatus::try_from(v) {
        Ok(v1::DeviceStatus::Unspecified) => Ok(None),
        Ok(v1::DeviceStatus::Compliant) => Ok(Some(Status::Compliant)),
        Ok(v1::DeviceStatus::Noncompliant) => Ok(Some(Status::Noncompliant)),
        Ok(v1::DeviceStatus::Waived) => Ok(Some(Status::Waived)),
        Ok(v1::DeviceStatus::Stale) => Ok(Some(Status::Stale)),
        Ok(v1::DeviceStatus::Unknown) => Ok(Some(Status::Unknown)),
        Err(_) => Err(format!("status: {v} is not a known device status")),
    }
}

/// Instant → protobuf timestamp.
pub fn timestamp(t: OffsetDateTime) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.unix_timestamp(),
        nanos: t.nanosecond() as i32,
    }
}

/// Protobuf timestamp → instant.
pub fn from_timestamp(t: &prost_types::Timestamp) -> Result<OffsetDateTime, String> {
    OffsetDateTime::from_unix_timestamp(t.seconds)
        .map(|d| d + time::Duration::nanoseconds(i64::from(t.nanos.clamp(0, 999_999_999))))
        .map_err(|e| format!("timestamp out of range: {e}"))
}

/// Domain finding → wire.
pub fn finding_to_wire(f: &Finding) -> v1::Finding {
    v1::Finding {
        product: f.product.clone(),
        installed: f.installed,
        running: f.running,
        version: f.version.clone().unwrap_or_default(),
        evidence: f
            .evidence
            .iter()
            .map(|e| v1::Evidence {
                source: e.source.clone(),
                detail: e.detail.clone(),
                signature: e.signature.clone(),
            })
            .collect(),
    }
}

/// Wire finding → domain, validating what a peer could get wrong.
pub fn finding_from_wire(f: v1::Finding) -> Result<Finding, String> {
    if !commscan_core::catalog::is_slug(&f.product) {
        return Err(format!(
            "finding.product: '{}' is not a product id",
            f.product
        ));
    }
    if !f.installed && !f.running {
        return Err(format!(
            "finding '{}': neither installed nor running",
            f.product
        ));
    }
    Ok(Finding {
        product: f.product,
        installed: f.installed,
        running: f.running,
        version: Some(f.version).filter(|v| !v.is_empty()),
        evidence: f
            .evidence
            .into_iter()
            .map(|e| Evidence {
                source: e.source,
                detail: e.detail,
                signature: e.signature,
            })
            .collect(),
    })
}

/// Domain unclassified → wire.
pub fn unclassified_to_wire(u: &Unclassified) -> v1::Unclassified {
    v1::Unclassified {
        name: u.name.clone(),
        source: u.source.clone(),
        detail: u.detail.clone(),
        looks_like: u.looks_like.clone().unwrap_or_default(),
    }
}

/// Wire unclassified → domain.
pub fn unclassified_from_wire(u: v1::Unclassified) -> Unclassified {
    Unclassified {
        name: u.name,
        source: u.source,
        detail: u.detail,
        looks_like: Some(u.looks_like).filter(|p| !p.is_empty()),
    }
}

/// Domain stats → wire.
pub fn stats_to_wire(s: &ScanStats) -> v1::ScanStats {
    v1::ScanStats {
        duration_ms: s.duration_ms,
        items_seen: s.items_seen,
        sources: s
            .sources
            .iter()
            .map(|(name, outcome)| {
                let (state, message) = match outcome {
                    SourceOutcome::Ok => (v1::SourceState::Ok, String::new()),
                    SourceOutcome::OkFrom(form) => (v1::SourceState::Ok, form.clone()),
                    SourceOutcome::Absent => (v1::SourceState::Absent, String::new()),
                    SourceOutcome::Skipped => (v1::SourceState::Skipped, String::new()),
                    SourceOutcome::Failed(m) => (v1::SourceState::Failed, m.clone()),
                };
                v1::SourceStatus {
                    source: name.clone(),
                    state: state as i32,
                    message,
                }
            })
            .collect(),
    }
}

/// Wire stats → domain.
pub fn stats_from_wire(s: v1::ScanStats) -> ScanStats {
    ScanStats {
        duration_ms: s.duration_ms,
        items_seen: s.items_seen,
        sources: s
            .sources
            .into_iter()
            .map(|st| {
                let outcome = match v1::SourceState::try_from(st.state) {
                    Ok(v1::SourceState::Ok) if st.message.is_empty() => SourceOutcome::Ok,
                    Ok(v1::SourceState::Ok) => SourceOutcome::OkFrom(st.message),
                    Ok(v1::SourceState::Absent) => SourceOutcome::Absent,
                    Ok(v1::SourceState::Skipped) => SourceOutcome::Skipped,
                    Ok(v1::SourceState::Failed) => SourceOutcome::Failed(st.message),
                    _ => SourceOutcome::Failed("unknown state reported".into()),
                };
                (st.source, outcome)
            })
            .collect(),
    }
}

/// Domain verdict → wire.
pub fn verdict_to_wire(
    v: &Verdict,
    judged_at: Option<OffsetDateTime>,
    policy: &str,
) -> v1::Verdict {
    v1::Verdict {
        status: status_to_wire(v.status),
        reasons: v
            .reasons
            .iter()
            .map(|r| v1::Reason {
                product: r.product.clone(),
                rule: r.rule.clone(),
                text: r.text.clone(),
                kind: (match r.kind {
                    ReasonKind::Violation => v1::ReasonKind::Violation,
                    ReasonKind::Waived => v1::ReasonKind::Waived,
                    ReasonKind::Notice => v1::ReasonKind::Notice,
                }) as i32,
            })
            .collect(),
        judged_at: judged_at.map(timestamp),
        policy: policy.to_owned(),
    }
}

/// Wire verdict → domain.
pub fn verdict_from_wire(v: &v1::Verdict) -> Verdict {
    let status = status_from_wire(v.status)
        .ok()
        .flatten()
        .unwrap_or(Status::Unknown);
    Verdict {
        status,
        reasons: v
            .reasons
            .iter()
            .map(|r| Reason {
                product: r.product.clone(),
                rule: r.rule.clone(),
                kind: match v1::ReasonKind::try_from(r.kind) {
                    Ok(v1::ReasonKind::Waived) => ReasonKind::Waived,
                    Ok(v1::ReasonKind::Notice) => ReasonKind::Notice,
                    _ => ReasonKind::Violation,
                },
                text: r.text.clone(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_source_outcome_survives_the_wire() {
        let mut stats = ScanStats::default();
        for (name, outcome) in [
            ("dpkg", SourceOutcome::Ok),
            ("rpm", SourceOutcome::OkFrom("bdb".into())),
            ("snap", SourceOutcome::Absent),
            ("process", SourceOutcome::Skipped),
            ("flatpak", SourceOutcome::Failed("why".into())),
        ] {
            stats.sources.insert(name.into(), outcome);
        }
        assert_eq!(stats_from_wire(stats_to_wire(&stats)), stats);
    }
}
