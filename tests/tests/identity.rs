//! The identity matrix: every way a device can claim an identity it does not have, each
//! refused with the right gRPC code and written to the audit log.

use commscan_agent::delivery::{AgentError, SessionEnd};
use commscan_collector::store::TokenRecord;
use commscan_core::identity::DeviceIdentity;
use commscan_core::pki::{Authority, device_key_and_csr};
use commscan_proto::v1::{
    self, enrollment_client::EnrollmentClient, reporting_client::ReportingClient,
};
use commscan_runtime::transport::TransportError;
use commscan_tests::{TestCollector, dpkg_fixture, reporter};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Opens `Reporting.Connect` with the given client certificate and hello, returning the first
/// collector message or the error.
async fn connect(
    c: &TestCollector,
    cert: Option<(&str, &str)>,
    hello: v1::Hello,
) -> Result<v1::CollectorMessage, String> {
    let channel = commscan_runtime::transport::channel(&c.url, &c.ca_pem, cert)
        .await
        .map_err(|e| format!("transport: {e}"))?;
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tx.send(v1::AgentMessage {
        kind: Some(v1::agent_message::Kind::Hello(hello)),
    })
    .await
    .unwrap();
    let mut stream = ReportingClient::new(channel)
        .connect(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
        .into_inner();
    let first = stream
        .message()
        .await
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?;
    drop(tx);
    first.ok_or_else(|| "stream ended".into())
}

fn denied(c: &TestCollector, action: &str, needle: &str) -> bool {
    c.audit()
        .iter()
        .any(|e| !e.allowed && e.action == action && e.detail.contains(needle))
}

#[tokio::test]
async fn device_without_a_certificate_is_unauthenticated_and_audited() {
    let c = TestCollector::start().await;
    let err = connect(&c, None, v1::Hello::default()).await.unwrap_err();
    assert!(err.starts_with("Unauthenticated"), "{err}");
    assert!(denied(
        &c,
        "reporting.connect",
        "client certificate is required"
    ));
}

#[tokio::test]
async fn certificate_from_another_ca_fails_the_handshake_and_is_audited() {
    let c = TestCollector::start().await;
    let (rogue, _) = Authority::generate("test.local").unwrap();
    let (key, csr) = device_key_and_csr().unwrap();
    let id = DeviceIdentity {
        trust_domain: "test.local".into(),
        organisation: "acme".into(),
        device_id: uuid_like(),
    };
    let (cert, _) = rogue
        .sign_device_csr(&csr, &id, Duration::from_secs(3600))
        .unwrap();
    let err = connect(&c, Some((&cert, &key)), v1::Hello::default())
        .await
        .unwrap_err();
    // No gRPC call happens at all: the TLS handshake fails.
    assert!(!err.starts_with("Ok"), "{err}");
    commscan_tests::wait_until(Duration::from_secs(5), "the audit entry", || async {
        denied(&c, "tls.handshake", "client certificate rejected").then_some(())
    })
    .await;
}

#[tokio::test]
async fn expired_device_certificate_fails_the_handshake_and_is_audited() {
    let c = TestCollector::start().await;
    let data = c.enroll_agent("old").await;
    let identity = data.identity().unwrap();
    let ca_key = std::fs::read_to_string(c.layout.path("pki/ca.key")).unwrap();
    let ca = Authority::from_pem(&c.ca_pem, &ca_key).unwrap();
    let (key, csr) = device_key_and_csr().unwrap();
    let id = DeviceIdentity {
        trust_domain: "test.local".into(),
        organisation: identity.organisation,
        device_id: identity.device_id,
    };
    let now = time::OffsetDateTime::now_utc();
    let (cert, _) = ca
        .sign_device_csr_between(
            &csr,
            &id,
            now - time::Duration::days(40),
            now - time::Duration::days(10),
        )
        .unwrap();
    let err = connect(&c, Some((&cert, &key)), v1::Hello::default())
        .await
        .unwrap_err();
    assert!(!err.starts_with("Ok"), "{err}");
    commscan_tests::wait_until(Duration::from_secs(5), "the audit entry", || async {
        denied(&c, "tls.handshake", "Expired").then_some(())
    })
    .await;
}

#[tokio::test]
async fn revoked_device_is_refused_at_its_next_connection_and_keeps_its_history() {
    let c = TestCollector::start().await;
    let root = dpkg_fixture(&[("zoom", "install ok installed", "6.1.0")]);
    let data = c.enroll_agent("stolen").await;
    let id = data.identity().unwrap().device_id;
    let r = reporter(data, root.path());
    assert_eq!(
        r.session(Duration::from_secs(3600), true, &CancellationToken::new())
            .await
            .unwrap(),
        SessionEnd::Acked(1)
    );

    c.admin_as(&c.admin_token)
        .await
        .revoke_device(v1::RevokeDeviceRequest {
            device_id: id.clone(),
        })
        .await
        .unwrap();

    let err = r
        .session(Duration::from_secs(3600), true, &CancellationToken::new())
        .await
        .unwrap_err();
    match &err {
        AgentError::Transport(TransportError::Status(s)) => {
            assert_eq!(s.code(), tonic::Code::PermissionDenied, "{s:?}")
        }
        other => panic!("expected PERMISSION_DENIED, got {other}"),
    }
    assert!(!err.is_retriable());
    assert!(denied(&c, "reporting.connect", "is revoked"));
    assert!(
        c.audit()
            .iter()
            .any(|e| e.allowed && e.action == "devices.revoke" && e.actor.starts_with("admin ["))
    );
    let d = c
        .query()
        .await
        .get_device(v1::GetDeviceRequest {
            device_id: id,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.findings.len(), 1, "history stays");
}

#[tokio::test]
async fn device_a_certificate_with_device_b_in_the_hello_is_refused_and_audited() {
    let c = TestCollector::start().await;
    let a = c.enroll_agent("a").await;
    let b = c.enroll_agent("b").await;
    let (_, cert, key) = a.credentials().unwrap();
    let hello = v1::Hello {
        device_id: b.identity().unwrap().device_id,
        ..Default::default()
    };
    let err = connect(&c, Some((&cert, &key)), hello).await.unwrap_err();
    assert!(err.starts_with("PermissionDenied"), "{err}");
    assert!(denied(&c, "reporting.connect", "hello names device"));
    // Device B's state is untouched.
    let d = c
        .query()
        .await
        .get_device(v1::GetDeviceRequest {
            device_id: b.identity().unwrap().device_id,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.last_sequence, 0);
}

async fn enroll_raw(c: &TestCollector, token: &str, org: &str) -> tonic::Status {
    let channel = commscan_runtime::transport::channel(&c.url, &c.ca_pem, None)
        .await
        .unwrap();
    let (_, csr) = device_key_and_csr().unwrap();
    EnrollmentClient::new(channel)
        .enroll(v1::EnrollRequest {
            token: token.into(),
            csr_pem: csr,
            host: None,
            organisation: org.into(),
        })
        .await
        .map(|_| tonic::Status::ok(""))
        .unwrap_or_else(|s| s)
}

#[tokio::test]
async fn a_single_use_token_cannot_be_replayed() {
    let c = TestCollector::start().await;
    let r = c
        .admin_as(&c.admin_token)
        .await
        .create_enrollment_token(v1::CreateEnrollmentTokenRequest {
            organisation: "acme".into(),
            uses: 1,
            expires_in_seconds: 0,
            new_organisation: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(enroll_raw(&c, &r.secret, "").await.code(), tonic::Code::Ok);
    let replay = enroll_raw(&c, &r.secret, "").await;
    assert_eq!(replay.code(), tonic::Code::Unauthenticated, "{replay:?}");
    assert!(denied(&c, "enroll", "no uses left"));
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    let c = TestCollector::start().await;
    let secret = "cse_expired-token-for-the-test";
    let now = time::OffsetDateTime::now_utc();
    c.domain()
        .store()
        .put_token(
            &commscan_collector::secrets::hash(secret),
            &TokenRecord {
                organisation: "acme".into(),
                created_at: now - time::Duration::days(8),
                expires_at: Some(now - time::Duration::days(1)),
                uses_left: None,
                revoked: false,
            },
        )
        .unwrap();
    assert_eq!(
        enroll_raw(&c, secret, "").await.code(),
        tonic::Code::Unauthenticated
    );
    assert!(denied(&c, "enroll", "token expired"));
}

#[tokio::test]
async fn a_token_of_organisation_a_cannot_enrol_into_organisation_b() {
    let c = TestCollector::start().await;
    let status = enroll_raw(&c, &c.enrolment_token, "globex").await;
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains("belongs to organisation 'acme'"),
        "{}",
        status.message()
    );
    assert!(
        c.audit().iter().any(|e| !e.allowed
            && e.action == "enroll"
            && e.organisation.as_deref() == Some("acme"))
    );
    // And nothing was enrolled.
    let list = c
        .query()
        .await
        .list_devices(v1::ListDevicesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(list.devices.is_empty());
}

#[tokio::test]
async fn a_revoked_token_is_refused() {
    let c = TestCollector::start().await;
    let mut admin = c.admin_as(&c.admin_token).await;
    let r = admin
        .create_enrollment_token(v1::CreateEnrollmentTokenRequest {
            organisation: "acme".into(),
            uses: 0,
            expires_in_seconds: 3600,
            new_organisation: true,
        })
        .await
        .unwrap()
        .into_inner();
    let id = r.token.unwrap().token_id;
    admin
        .revoke_enrollment_token(v1::RevokeEnrollmentTokenRequest { token_id: id })
        .await
        .unwrap();
    assert_eq!(
        enroll_raw(&c, &r.secret, "").await.code(),
        tonic::Code::Unauthenticated
    );
    assert!(denied(&c, "enroll", "token revoked"));
}

#[tokio::test]
async fn repeated_wrong_tokens_from_one_address_are_rate_limited() {
    let c = TestCollector::start().await;
    let mut codes = Vec::new();
    for _ in 0..25 {
        codes.push(enroll_raw(&c, "cse_wrong", "").await.code());
    }
    assert_eq!(codes[0], tonic::Code::Unauthenticated);
    assert_eq!(
        *codes.last().unwrap(),
        tonic::Code::ResourceExhausted,
        "{codes:?}"
    );
    // A good token from the same address is refused too until the budget refills: that is the
    // point of the limit, so the test only checks the refusal says what to do.
    let s = enroll_raw(&c, &c.enrolment_token, "").await;
    assert_eq!(s.code(), tonic::Code::ResourceExhausted);
    assert!(s.message().contains("retry"), "{}", s.message());
}

#[tokio::test]
async fn the_agent_renews_a_certificate_near_its_expiry() {
    let c = TestCollector::start().await;
    let data = c.enroll_agent("renewer").await;
    let identity = data.identity().unwrap();
    let (_, cert, _) = data.credentials().unwrap();
    let before = commscan_core::pki::not_after(&cert).unwrap();
    // Pretend it is 25 days later: within the renewal window of a 30-day certificate.
    let later = time::OffsetDateTime::now_utc() + time::Duration::days(25);
    assert!(
        commscan_agent::enroll::renew_if_due(&data, later)
            .await
            .unwrap()
    );
    let (_, cert2, key2) = data.credentials().unwrap();
    assert_ne!(cert, cert2);
    assert!(commscan_core::pki::not_after(&cert2).unwrap() >= before);
    let der = commscan_core::pki::first_cert_der(&cert2).unwrap();
    assert_eq!(
        DeviceIdentity::from_certificate_der(&der)
            .unwrap()
            .device_id,
        identity.device_id,
        "same identity"
    );
    // The renewed pair works.
    let root = dpkg_fixture(&[]);
    assert_eq!(
        reporter(data, root.path())
            .session(Duration::from_secs(3600), true, &CancellationToken::new())
            .await
            .unwrap(),
        SessionEnd::Acked(1)
    );
    assert!(!key2.is_empty());
    assert!(c.audit().iter().any(|e| e.allowed && e.action == "renew"));
}

#[tokio::test]
async fn an_oversized_message_is_resource_exhausted_and_others_are_still_served() {
    let c = TestCollector::start().await;
    let channel = commscan_runtime::transport::channel(&c.url, &c.ca_pem, None)
        .await
        .unwrap();
    let huge = "A".repeat(5 * 1024 * 1024);
    let status = EnrollmentClient::new(channel.clone())
        .max_encoding_message_size(64 * 1024 * 1024)
        .enroll(v1::EnrollRequest {
            token: "t".into(),
            csr_pem: huge,
            host: None,
            organisation: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    // The same connection and others keep working.
    let root = dpkg_fixture(&[]);
    let data = c.enroll_agent("after-huge").await;
    assert_eq!(
        reporter(data, root.path())
            .session(Duration::from_secs(3600), true, &CancellationToken::new())
            .await
            .unwrap(),
        SessionEnd::Acked(1)
    );
}

#[tokio::test]
async fn garbage_on_the_port_closes_only_that_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let c = TestCollector::start().await;
    let addr = c.url.trim_start_matches("https://").to_owned();
    let mut raw = tokio::net::TcpStream::connect(&addr).await.unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\x00\x01\x02garbage")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(15), raw.read(&mut buf))
        .await
        .expect("the server closes it")
        .unwrap_or(0);
    assert!(n < 64, "no protocol answer to garbage");
    let data = c.enroll_agent("still-fine").await;
    let root = dpkg_fixture(&[]);
    assert_eq!(
        reporter(data, root.path())
            .session(Duration::from_secs(3600), true, &CancellationToken::new())
            .await
            .unwrap(),
        SessionEnd::Acked(1)
    );
}

fn uuid_like() -> String {
    "6f1c5c3e-2b1a-4a57-9a1e-0c2d4e1f3a5b".into()
}

#[tokio::test]
async fn a_cloned_disk_is_flagged_as_a_duplicate_never_merged() {
    let c = TestCollector::start().await;
    let root = dpkg_fixture(&[("zoom", "install ok installed", "6.1.0")]);
    let original = c.enroll_agent("original").await;
    let id = original.identity().unwrap().device_id;
    // The clone: a byte-for-byte copy of the agent's identity (the spool is not created yet).
    let clone_dir = c.dir.path().join("agents/clone");
    std::fs::create_dir_all(&clone_dir).unwrap();
    for f in ["identity.json", "device.key", "device.crt", "ca.crt"] {
        std::fs::copy(original.file(f), clone_dir.join(f)).unwrap();
    }
    let clone = commscan_agent::state::DataDir::new(&clone_dir);
    let stop = CancellationToken::new();
    let mut tasks = Vec::new();
    for data in [original, clone] {
        let r = reporter(data, root.path());
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..20 {
                if stop.is_cancelled() {
                    break;
                }
                let _ = r.session(Duration::from_secs(3600), false, &stop).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }));
    }
    commscan_tests::wait_until(Duration::from_secs(20), "the duplicate flag", || async {
        c.domain()
            .store()
            .device(&id)
            .unwrap()
            .and_then(|d| d.duplicate)
    })
    .await;
    stop.cancel();
    for t in tasks {
        t.await.unwrap();
    }
    assert!(
        c.audit()
            .iter()
            .any(|e| !e.allowed && e.detail.contains("flagged as duplicate enrolment"))
    );
    let d = c
        .query()
        .await
        .get_device(v1::GetDeviceRequest {
            device_id: id,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!d.duplicate.is_empty());
}

#[tokio::test]
async fn a_device_flooding_reports_is_throttled_not_served() {
    let c = TestCollector::start().await;
    let data = c.enroll_agent("flood").await;
    let (_, cert, key) = data.credentials().unwrap();
    let channel = commscan_runtime::transport::channel(&c.url, &c.ca_pem, Some((&cert, &key)))
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tx.send(v1::AgentMessage {
        kind: Some(v1::agent_message::Kind::Hello(v1::Hello::default())),
    })
    .await
    .unwrap();
    let mut stream = ReportingClient::new(channel)
        .connect(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let _welcome = stream.message().await.unwrap().unwrap();
    for sequence in 1..=40 {
        let report = v1::Report {
            sequence,
            body: Some(v1::report::Body::Snapshot(v1::Snapshot::default())),
            stats: None,
            scanned_at: None,
            state_digest: Vec::new(),
        };
        tx.send(v1::AgentMessage {
            kind: Some(v1::agent_message::Kind::Report(report)),
        })
        .await
        .unwrap();
    }
    let (mut acks, mut throttles) = (0, 0);
    while acks + throttles < 40 {
        match stream.message().await.unwrap().unwrap().kind {
            Some(v1::collector_message::Kind::Ack(_)) => acks += 1,
            Some(v1::collector_message::Kind::Throttle(t)) => {
                assert!(t.retry_after_ms > 0);
                throttles += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // The burst of 24 is served; the bucket refills at 12 a minute, so a slow machine may
    // serve one or two more before the 40 are through.
    assert!(
        (24..=27).contains(&acks),
        "the burst is served: {acks} acks"
    );
    assert!(
        throttles >= 13,
        "the rest is throttled: {throttles} throttles"
    );
}

#[tokio::test]
async fn a_device_is_removed_only_after_it_was_revoked() {
    let c = TestCollector::start().await;
    let data = c.enroll_agent("old-laptop").await;
    let id = data.identity().unwrap().device_id;
    let mut admin = c.admin_as(&c.admin_token).await;
    let s = admin
        .remove_device(v1::RemoveDeviceRequest {
            device_id: id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), tonic::Code::FailedPrecondition);
    assert!(s.message().contains("revoke it first"), "{}", s.message());
    admin
        .revoke_device(v1::RevokeDeviceRequest {
            device_id: id.clone(),
        })
        .await
        .unwrap();
    admin
        .remove_device(v1::RemoveDeviceRequest {
            device_id: id.clone(),
        })
        .await
        .unwrap();
    let err = c
        .query()
        .await
        .get_device(v1::GetDeviceRequest {
            device_id: id,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert_eq!(
        c.domain()
            .store()
            .org_aggregate("acme")
            .unwrap()
            .unwrap_or_default()
            .devices,
        0
    );
}
