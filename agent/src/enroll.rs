//! Enrolment: generate a key pair here, send a CSR with the organisation's token, store the
//! issued certificate. The private key never leaves the device.

use crate::state::{DataDir, Identity, StateError};
use commscan_core::platform::Platform;
use commscan_proto::convert;
use commscan_proto::v1::{self, enrollment_client::EnrollmentClient};
use commscan_runtime::transport::{self, TransportError};
use std::time::Duration;

/// An enrolment failure.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// Key generation failed.
    #[error("key generation: {0}")]
    Key(#[from] commscan_core::pki::PkiError),
    /// The collector could not be reached or refused.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The result could not be stored.
    #[error(transparent)]
    State(#[from] StateError),
    /// This data directory already holds a device's identity.
    #[error(
        "{} already holds the identity of device {device_id} in organisation {organisation}; enrolling again would replace it (give --force to do so)",
        dir.display()
    )]
    AlreadyEnrolled {
        /// The data directory.
        dir: std::path::PathBuf,
        /// The device it is.
        device_id: String,
        /// Its organisation.
        organisation: String,
    },
}

/// Refuses when `data` already holds an identity, so that re-running `enroll` never
/// silently turns a device into another one (its history stays with the old id). A
/// directory whose identity cannot be read is not an identity worth keeping.
pub fn ensure_not_enrolled(data: &DataDir) -> Result<(), EnrollError> {
    match data.identity() {
        Ok(id) => Err(EnrollError::AlreadyEnrolled {
            dir: data.root().to_path_buf(),
            device_id: id.device_id,
            organisation: id.organisation,
        }),
        Err(_) => Ok(()),
    }
}

/// Enrols this device with the collector at `url`, pinning `ca_pem`, and stores the identity
/// in `data`. With `expected_organisation`, the collector refuses a token of another
/// organisation. Nothing is written unless the collector issued a certificate.
pub async fn enroll(
    url: &str,
    token: &str,
    ca_pem: &str,
    platform: Platform,
    expected_organisation: Option<&str>,
    data: &DataDir,
) -> Result<Identity, EnrollError> {
    let (key_pem, csr_pem) = commscan_core::pki::device_key_and_csr()?;
    let channel = transport::channel(url, ca_pem, None).await?;
    let request = v1::EnrollRequest {
        token: token.to_owned(),
        csr_pem,
        host: Some(v1::HostFacts {
            hostname: hostname(),
            platform: convert::platform_to_wire(platform),
            os_version: sysinfo::System::long_os_version().unwrap_or_default(),
            agent_version: commscan_core::VERSION.to_owned(),
        }),
        organisation: expected_organisation.unwrap_or_default().to_owned(),
    };
    let response = retrying(&ENROLL_RETRY, || {
        let (channel, request) = (channel.clone(), request.clone());
        async move {
            EnrollmentClient::new(channel)
                .enroll(request)
                .await
                .map_err(TransportError::from)
        }
    })
    .await?
    .into_inner();
    let identity = Identity {
        device_id: response.device_id,
        organisation: response.organisation,
        collector: url.to_owned(),
    };
    // Pin the CA the operator gave us, not one the server sent back.
    data.store_enrolment(&identity, &key_pem, &response.certificate_pem, ca_pem)?;
    Ok(identity)
}

/// How `enroll` retries when the collector says to slow down.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// Backoff base and cap ([`transport::backoff`]).
    pub base: Duration,
    /// Longest single wait.
    pub cap: Duration,
    /// Most time spent waiting in all; no wait goes past it.
    pub budget: Duration,
}

/// Enrolment retries: 8 attempts, waits of full-jitter backoff from 1 s up to 30 s, at most
/// 2 minutes of waiting in all.
pub const ENROLL_RETRY: Retry = Retry {
    attempts: 8,
    base: Duration::from_secs(1),
    cap: Duration::from_secs(30),
    budget: Duration::from_secs(120),
};

/// Whether the collector asked to come back later: RESOURCE_EXHAUSTED (its enrolment budget,
/// or this network's) or UNAVAILABLE (busy, restarting). Anything else is an answer.
pub fn is_slow_down(e: &TransportError) -> bool {
    matches!(e, TransportError::Status(s)
        if matches!(s.code(), tonic::Code::ResourceExhausted | tonic::Code::Unavailable))
}

/// Calls `call` until it succeeds, fails with something other than a slow-down, or the
/// attempts or the waiting budget of `retry` are spent; returns the last outcome.
pub async fn retrying<T, F, Fut>(retry: &Retry, mut call: F) -> Result<T, TransportError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, TransportError>>,
{
    let mut waited = Duration::ZERO;
    let mut attempt = 0;
    loop {
        let e = match call().await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        attempt += 1;
        let delay = transport::backoff(attempt - 1, retry.base, retry.cap);
        if !is_slow_down(&e) || attempt >= retry.attempts || waited + delay > retry.budget {
            return Err(e);
        }
        tracing::warn!(attempt, retry_in_ms = delay.as_millis() as u64, error = %e, "the collector asks to slow down; retrying enrolment");
        tokio::time::sleep(delay).await;
        waited += delay;
    }
}

/// Renew when less than this much of the certificate's life is left (a third of 30 days).
pub const RENEW_BEFORE: std::time::Duration = std::time::Duration::from_secs(10 * 86_400);

/// Renews the device certificate over mutual TLS if it expires within [`RENEW_BEFORE`] of
/// `now`. Returns whether it renewed.
pub async fn renew_if_due(data: &DataDir, now: time::OffsetDateTime) -> Result<bool, EnrollError> {
    let identity = data.identity()?;
    let (ca, cert, key) = data.credentials()?;
    let not_after = commscan_core::pki::not_after(&cert)?;
    if not_after - now > RENEW_BEFORE {
        return Ok(false);
    }
    let (new_key, csr_pem) = commscan_core::pki::device_key_and_csr()?;
    let channel = transport::channel(&identity.collector, &ca, Some((&cert, &key))).await?;
    let response = EnrollmentClient::new(channel)
        .renew(v1::RenewRequest { csr_pem })
        .await
        .map_err(TransportError::from)?
        .into_inner();
    data.store_renewal(&new_key, &response.certificate_pem)?;
    tracing::info!(previous_expiry = %not_after, "device certificate renewed");
    Ok(true)
}

/// This machine's host name, for display to officers.
pub(crate) fn hostname() -> String {
    sysinfo::System::host_name().unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    const QUICK: Retry = Retry {
        attempts: 5,
        base: Duration::from_millis(1),
        cap: Duration::from_millis(4),
        budget: Duration::from_secs(5),
    };

    async fn run(
        retry: &Retry,
        answers: impl Fn(u32) -> Result<u32, tonic::Status>,
    ) -> (Result<u32, TransportError>, u32) {
        let calls = AtomicU32::new(0);
        let out = retrying(retry, || {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            let a = answers(n).map_err(TransportError::from);
            async move { a }
        })
        .await;
        (out, calls.load(Ordering::SeqCst))
    }

    #[tokio::test]
    async fn enrolment_retries_when_told_to_slow_down() {
        let (out, calls) = run(&QUICK, |n| match n {
            0 => Err(tonic::Status::resource_exhausted(
                "the collector is enrolling many devices; retry shortly",
            )),
            1 => Err(tonic::Status::unavailable("restarting")),
            n => Ok(n),
        })
        .await;
        assert_eq!(out.unwrap(), 2);
        assert_eq!(calls, 3);
    }

    #[tokio::test]
    async fn enrolment_retries_are_bounded() {
        let (out, calls) = run(&QUICK, |_| Err(tonic::Status::resource_exhausted("busy"))).await;
        assert!(out.is_err());
        assert_eq!(calls, QUICK.attempts);
        let no_time = Retry {
            budget: Duration::ZERO,
            base: Duration::from_millis(50),
            ..QUICK
        };
        let started = std::time::Instant::now();
        let (out, calls) = run(&no_time, |_| Err(tonic::Status::unavailable("down"))).await;
        assert!(out.is_err());
        assert!(calls <= QUICK.attempts);
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn a_refused_token_is_not_retried() {
        let (out, calls) = run(&QUICK, |_| {
            Err(tonic::Status::unauthenticated("unknown enrolment token"))
        })
        .await;
        assert!(out.is_err());
        assert_eq!(calls, 1);
    }
}
