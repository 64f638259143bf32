//! Enrolment: an organisation-scoped token and a CSR in, a device identity and a short-lived
//! client certificate out.
//!
//! The token is looked up by hash and checked (revoked, expired, uses left) before signing, and
//! checked and consumed again inside the store transaction that creates the device, so a token's
//! last use cannot be spent twice. The device id is chosen here; the CSR's names are ignored.

use crate::collector::Collector;
use crate::error::CollectorError;
use crate::secrets;
use crate::store::DeviceRecord;
use commscan_core::identity::DeviceIdentity;
use commscan_core::pki::DEVICE_VALIDITY;
use commscan_core::platform::Platform;
use time::OffsetDateTime;

/// What an enrolling device sends.
#[derive(Debug, Clone)]
pub struct EnrollInput {
    /// The secret token.
    pub token: String,
    /// PEM CSR.
    pub csr_pem: String,
    /// Host name.
    pub hostname: String,
    /// Platform.
    pub platform: Option<Platform>,
    /// OS name and version.
    pub os_version: String,
    /// Agent version.
    pub agent_version: String,
    /// The organisation the operator expects; empty when not given.
    pub expected_organisation: String,
    /// Where the request came from (for rate limits and the audit log).
    pub peer: Option<std::net::IpAddr>,
}

/// What the device gets back.
#[derive(Debug, Clone)]
pub struct Enrolled {
    /// Its id.
    pub device_id: String,
    /// Its organisation.
    pub organisation: String,
    /// Its client certificate.
    pub certificate_pem: String,
    /// The CA to pin.
    pub ca_pem: String,
    /// Certificate expiry.
    pub not_after: OffsetDateTime,
}

/// Why an enrolment was not done: the collector was busy (the global budget; not the
/// caller's fault, not counted against its network), or the attempt failed.
#[derive(Debug)]
enum Refusal {
    Busy(CollectorError),
    Failed(CollectorError),
}

impl Refusal {
    fn into_error(self) -> CollectorError {
        match self {
            Refusal::Busy(e) | Refusal::Failed(e) => e,
        }
    }
}

impl<E: Into<CollectorError>> From<E> for Refusal {
    fn from(e: E) -> Self {
        Refusal::Failed(e.into())
    }
}

/// Trims a free-text field from a device to a sane length without control characters (the
/// same rule as the canonical form of findings, defined once in the contract crate).
pub use commscan_core::text::clean_text;

/// Longest enrolment token looked up, in bytes; a longer one is unknown without hashing it.
pub(crate) const MAX_TOKEN_BYTES: usize = 1024;

impl Collector {
    /// Enrols a device. Every attempt is audited. In this order, so that bad tokens cannot
    /// spend the budget good ones need: an address prefix
    /// ([`crate::limits::network_prefix`]) whose failure budget is empty is refused; the
    /// token is looked up by its SHA-256 (one keyed read, its cost independent of the token)
    /// and checked, a failure spending the prefix's budget; only a valid token then takes
    /// from the global enrolment budget, which bounds certificate signing.
    pub(crate) fn enroll(&self, input: EnrollInput) -> Result<Enrolled, CollectorError> {
        let actor = match input.peer {
            Some(ip) => format!("anonymous@{ip}"),
            None => "anonymous".to_owned(),
        };
        let now = std::time::Instant::now();
        let prefix = input.peer.map(crate::limits::network_prefix);
        if let Some(net) = prefix
            && self.limiters().enrol_failures.peek(&net, now).is_err()
        {
            self.audit(
                &actor,
                "enroll",
                None,
                false,
                "too many failed enrolment attempts from this network",
            );
            return Err(CollectorError::ResourceExhausted(
                "too many failed enrolment attempts from this network; retry in a minute".into(),
            ));
        }
        let mut org = None;
        let result = self.enroll_checked(input, &mut org, now);
        match &result {
            Ok(e) => self.audit(
                &actor,
                "enroll",
                Some(&e.organisation),
                true,
                format!("device {} enrolled", e.device_id),
            ),
            Err(Refusal::Busy(_)) => {}
            Err(Refusal::Failed(err)) => {
                if let Some(net) = prefix {
                    let _ = self.limiters().enrol_failures.take(&net, now);
                }
                self.audit(&actor, "enroll", org.as_deref(), false, err.to_string());
            }
        }
        result.map_err(Refusal::into_error)
    }

    /// The enrolment itself; `org` is set as soon as the token names one, for the audit log.
    fn enroll_checked(
        &self,
        input: EnrollInput,
        org: &mut Option<String>,
        instant: std::time::Instant,
    ) -> Result<Enrolled, Refusal> {
        let now = self.now();
        if input.token.len() > MAX_TOKEN_BYTES {
            return Err(Refusal::Failed(CollectorError::Unauthenticated(
                "unknown enrolment token".into(),
            )));
        }
        let hash = secrets::hash(&input.token);
        let token = self
            .store()
            .token(&hash)?
            .ok_or_else(|| CollectorError::Unauthenticated("unknown enrolment token".into()))?;
        *org = Some(token.organisation.clone());
        token.consume(now).map_err(|why| {
            CollectorError::Unauthenticated(format!("enrolment token refused: {why}"))
        })?;
        if !input.expected_organisation.is_empty()
            && input.expected_organisation != token.organisation
        {
            return Err(CollectorError::PermissionDenied(format!(
                "token belongs to organisation '{}', not '{}' as the enrolling device expects",
                token.organisation,
                clean_text(&input.expected_organisation, 64)
            ))
            .into());
        }
        if self.limiters().enrol_global.take(&(), instant).is_err() {
            return Err(Refusal::Busy(CollectorError::ResourceExhausted(
                "the collector is enrolling many devices; retry shortly".into(),
            )));
        }
        let signer = self.signer()?;
        let identity = DeviceIdentity {
            trust_domain: self.trust_domain().to_owned(),
            organisation: token.organisation.clone(),
            device_id: uuid::Uuid::new_v4().to_string(),
        };
        let (certificate_pem, not_after) = signer
            .sign_device_csr(&input.csr_pem, &identity, DEVICE_VALIDITY)
            .map_err(|e| CollectorError::InvalidArgument(format!("csr_pem: {e}")))?;
        let record = DeviceRecord::enrolled(
            identity.device_id.clone(),
            identity.organisation.clone(),
            clean_text(&input.hostname, 255),
            input.platform,
            clean_text(&input.os_version, 255),
            clean_text(&input.agent_version, 64),
            now,
        );
        self.store().enroll(&record, &hash, now)?;
        self.store().flush()?;
        self.metrics().enrolled();
        tracing::info!(device = %identity.device_id, organisation = %identity.organisation, hostname = %record.hostname, "device enrolled");
        Ok(Enrolled {
            device_id: identity.device_id,
            organisation: identity.organisation,
            certificate_pem,
            ca_pem: self.ca_pem().to_owned(),
            not_after,
        })
    }

    /// Issues a fresh certificate for an enrolled, unrevoked device, from a new CSR.
    pub(crate) fn renew(
        &self,
        who: &DeviceIdentity,
        csr_pem: &str,
    ) -> Result<(String, OffsetDateTime), CollectorError> {
        let actor = format!("device:{}", who.device_id);
        let result = self.admit(who).and_then(|_| {
            self.signer()?
                .sign_device_csr(csr_pem, who, DEVICE_VALIDITY)
                .map_err(|e| CollectorError::InvalidArgument(format!("csr_pem: {e}")))
        });
        match &result {
            Ok((_, not_after)) => self.audit(
                &actor,
                "renew",
                Some(&who.organisation),
                true,
                format!("certificate renewed until {not_after}"),
            ),
            Err(e) => self.audit(
                &actor,
                "renew",
                Some(&who.organisation),
                false,
                e.to_string(),
            ),
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compliance::RulesConfig;
    use crate::layout::{InitOptions, Layout};
    use crate::limits::{Limiters, RateLimiter};
    use crate::store::TokenRecord;
    use std::net::{IpAddr, Ipv4Addr};

    /// A collector whose global enrolment budget is 6 at once, with one valid token.
    fn collector(dir: &std::path::Path) -> (std::sync::Arc<Collector>, String) {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let layout = Layout::new(dir.join("c"));
        layout
            .init(&InitOptions {
                trust_domain: "t".into(),
                server_names: vec!["localhost".into()],
                organisation: "acme".into(),
                import_ca: None,
                import_server: None,
            })
            .unwrap();
        let (mut c, _) = layout.open(&RulesConfig::default()).unwrap();
        std::sync::Arc::get_mut(&mut c)
            .expect("unique")
            .set_limiters(Limiters {
                enrol_global: RateLimiter::per_minute(6.0, 6.0),
                ..Limiters::default()
            });
        let secret = "cse_good_token".to_owned();
        c.store()
            .put_token(
                &secrets::hash(&secret),
                &TokenRecord {
                    organisation: "acme".into(),
                    created_at: c.now(),
                    expires_at: None,
                    uses_left: None,
                    revoked: false,
                },
            )
            .unwrap();
        (c, secret)
    }

    fn input(token: &str, peer: IpAddr) -> EnrollInput {
        EnrollInput {
            token: token.into(),
            csr_pem: commscan_core::pki::device_key_and_csr().unwrap().1,
            hostname: "pc".into(),
            platform: None,
            os_version: String::new(),
            agent_version: "0".into(),
            expected_organisation: String::new(),
            peer: Some(peer),
        }
    }

    #[test]
    fn a_flood_of_bad_tokens_from_many_addresses_does_not_starve_good_ones() {
        let dir = tempfile::tempdir().unwrap();
        let (c, good) = collector(dir.path());
        // 1,000 bad tokens from 200 networks of 127/8 (5 addresses each), as fast as can be.
        let mut bad = input("cse_wrong", IpAddr::V4(Ipv4Addr::LOCALHOST));
        for i in 0..1000u32 {
            let net = i % 200;
            bad.peer = Some(IpAddr::V4(Ipv4Addr::new(
                127,
                1 + (net / 100) as u8,
                (net % 100) as u8,
                2 + (i / 200) as u8,
            )));
            let e = c.enroll(bad.clone()).unwrap_err();
            assert_eq!(e.code(), crate::error::Code::Unauthenticated, "{e}");
        }
        // Six legitimate enrolments (the whole global budget) from 127.0.0.1 all succeed.
        for _ in 0..6 {
            let peer = IpAddr::V4(Ipv4Addr::LOCALHOST);
            c.enroll(input(&good, peer)).expect("a valid token enrols");
        }
        // The global budget, now spent, answers a valid token with "retry shortly".
        let e = c
            .enroll(input(&good, IpAddr::V4(Ipv4Addr::LOCALHOST)))
            .unwrap_err();
        assert_eq!(e.code(), crate::error::Code::ResourceExhausted);
        assert!(e.to_string().contains("retry shortly"), "{e}");
    }

    #[test]
    fn failed_attempts_are_limited_per_network_not_per_address() {
        let dir = tempfile::tempdir().unwrap();
        let (c, good) = collector(dir.path());
        let mut refused_for_rate = 0;
        for i in 0..200u8 {
            let peer = IpAddr::V4(Ipv4Addr::new(127, 0, 9, i));
            let e = c.enroll(input("cse_wrong", peer)).unwrap_err();
            if e.code() == crate::error::Code::ResourceExhausted {
                assert!(e.to_string().contains("from this network"), "{e}");
                refused_for_rate += 1;
            }
        }
        assert_eq!(refused_for_rate, 180, "20 failures a network, then refused");
        // Another network is not affected.
        c.enroll(input(&good, IpAddr::V4(Ipv4Addr::new(127, 0, 10, 1))))
            .expect("another network enrols");
    }
}
