//! The spine end to end: enrolment over TLS, reporting over mutual TLS, judging, querying,
//! and restarts, with real servers on loopback.

use commscan_agent::delivery::SessionEnd;
use commscan_core::identity::DeviceIdentity;
use commscan_core::pki::{Authority, DEVICE_VALIDITY, device_key_and_csr};
use commscan_proto::v1::{self, reporting_client::ReportingClient};
use commscan_runtime::transport::TransportError;
use commscan_tests::{TestCollector, dpkg_fixture, reporter};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const ZOOM: (&str, &str, &str) = ("zoom", "install ok installed", "6.1.0.198");

async fn report_once(c: &TestCollector, agent: &str, root: &std::path::Path) -> String {
    let data = c.enroll_agent(agent).await;
    let id = data.identity().unwrap().device_id;
    let end = reporter(data, root)
        .session(Duration::from_secs(3600), true, &CancellationToken::new())
        .await
        .unwrap();
    assert!(matches!(end, SessionEnd::Acked(1)), "{end:?}");
    id
}

#[tokio::test]
async fn device_with_zoom_in_dpkg_is_noncompliant_with_zoom_as_the_reason() {
    let c = TestCollector::start().await;
    let root = dpkg_fixture(&[ZOOM, ("bash", "install ok installed", "5.2")]);
    let id = report_once(&c, "laptop-1", root.path()).await;

    let mut q = c.query().await;
    let d = q
        .get_device(v1::GetDeviceRequest {
            device_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let row = d.device.unwrap();
    assert_eq!(row.status, v1::DeviceStatus::Noncompliant as i32);
    assert_eq!(row.organisation, "acme");
    assert_eq!(row.products, vec!["zoom"]);
    let verdict = d.verdict.unwrap();
    assert_eq!(verdict.reasons.len(), 1);
    let reason = &verdict.reasons[0];
    assert_eq!(reason.product, "zoom");
    assert!(
        reason
            .text
            .contains("zoom installed (dpkg: package zoom 6.1.0.198)"),
        "{}",
        reason.text
    );
    assert!(
        reason.text.contains("denied by rule 'named-in-letter'"),
        "{}",
        reason.text
    );
    assert_eq!(d.findings.len(), 1);
    assert_eq!(d.findings[0].version, "6.1.0.198");

    let list = q
        .list_devices(v1::ListDevicesRequest {
            organisation: "acme".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.devices.len(), 1);
    let noncompliant = q
        .list_devices(v1::ListDevicesRequest {
            status: v1::DeviceStatus::Noncompliant as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(noncompliant.devices.len(), 1);
    let compliant = q
        .list_devices(v1::ListDevicesRequest {
            status: v1::DeviceStatus::Compliant as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(compliant.devices.is_empty());

    let s = q
        .organisation_summary(v1::OrganisationSummaryRequest {
            trend_days: 0,
            organisation: "acme".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s.devices, 1);
    assert_eq!(s.percent_compliant, 0.0);
    assert_eq!(s.by_product.len(), 1);
    assert_eq!(
        (
            s.by_product[0].product.as_str(),
            s.by_product[0].devices,
            s.by_product[0].violating
        ),
        ("zoom", 1, 1)
    );
}

#[tokio::test]
async fn removed_package_in_config_files_state_is_not_a_finding() {
    let c = TestCollector::start().await;
    let root = dpkg_fixture(&[("zoom", "deinstall ok config-files", "6.1.0")]);
    let id = report_once(&c, "laptop-2", root.path()).await;
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
    assert_eq!(d.device.unwrap().status, v1::DeviceStatus::Compliant as i32);
    assert!(d.findings.is_empty());
}

#[tokio::test]
async fn enrolled_device_that_never_reported_is_unknown() {
    let c = TestCollector::start().await;
    let data = c.enroll_agent("quiet").await;
    let id = data.identity().unwrap().device_id;
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
    assert_eq!(d.device.unwrap().status, v1::DeviceStatus::Unknown as i32);
}

#[tokio::test]
async fn client_without_certificate_cannot_open_reporting() {
    let c = TestCollector::start().await;
    let channel = commscan_runtime::transport::channel(&c.url, &c.ca_pem, None)
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(v1::AgentMessage {
        kind: Some(v1::agent_message::Kind::Hello(v1::Hello::default())),
    })
    .await
    .unwrap();
    let err = ReportingClient::new(channel)
        .connect(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    assert!(
        err.message().contains("client certificate"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn client_with_certificate_from_another_ca_cannot_connect() {
    let c = TestCollector::start().await;
    // A device certificate with a plausible identity, signed by an attacker's CA.
    let (rogue, _) = Authority::generate("test.local").unwrap();
    let (key, csr) = device_key_and_csr().unwrap();
    let id = DeviceIdentity {
        trust_domain: "test.local".into(),
        organisation: "acme".into(),
        device_id: "6f1c5c3e-2b1a-4a57-9a1e-0c2d4e1f3a5b".into(),
    };
    let (cert, _) = rogue.sign_device_csr(&csr, &id, DEVICE_VALIDITY).unwrap();
    let result = async {
        let channel =
            commscan_runtime::transport::channel(&c.url, &c.ca_pem, Some((&cert, &key))).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tx.send(v1::AgentMessage {
            kind: Some(v1::agent_message::Kind::Hello(v1::Hello::default())),
        })
        .await
        .ok();
        ReportingClient::new(channel)
            .connect(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await?;
        Ok::<_, TransportError>(())
    }
    .await;
    assert!(
        result.is_err(),
        "a certificate from another CA must not open a stream"
    );
    // And the collector still serves legitimate devices afterwards.
    let root = dpkg_fixture(&[ZOOM]);
    report_once(&c, "legit", root.path()).await;
}

#[tokio::test]
async fn wrong_enrolment_token_is_refused_and_nothing_is_stored() {
    let c = TestCollector::start().await;
    let dir = tempfile::tempdir().unwrap();
    let data = commscan_agent::state::DataDir::new(dir.path().join("agent"));
    let err = commscan_agent::enroll::enroll(
        &c.url,
        "cse_not-a-real-token",
        &c.ca_pem,
        commscan_core::platform::Platform::Linux,
        None,
        &data,
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("Unauthenticated")
            || err.to_string().contains("unknown enrolment token"),
        "{err}"
    );
    assert!(
        !data.root().exists(),
        "nothing may be written on a failed enrolment"
    );
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
async fn queries_without_a_valid_bearer_token_are_unauthenticated() {
    let c = TestCollector::start().await;
    let err = c
        .query_as("csa_wrong")
        .await
        .list_devices(v1::ListDevicesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
}

#[tokio::test]
async fn restarting_the_collector_keeps_the_device_and_its_state() {
    let mut c = TestCollector::start().await;
    let root = dpkg_fixture(&[ZOOM]);
    let data = c.enroll_agent("survivor").await;
    let id = data.identity().unwrap().device_id;
    let r = reporter(data.clone(), root.path());
    r.session(Duration::from_secs(3600), true, &CancellationToken::new())
        .await
        .unwrap();

    c.restart().await;

    let d = c
        .query()
        .await
        .get_device(v1::GetDeviceRequest {
            device_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        d.device.unwrap().status,
        v1::DeviceStatus::Noncompliant as i32
    );
    assert_eq!(d.last_sequence, 1);
    // The same agent reconnects with its stored certificate and continues the sequence.
    let end = r
        .session(Duration::from_secs(3600), true, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(end, SessionEnd::Acked(2));
}

#[tokio::test]
async fn wiped_agent_spool_continues_after_the_collectors_sequence() {
    let c = TestCollector::start().await;
    let root = dpkg_fixture(&[ZOOM]);
    let data = c.enroll_agent("amnesiac").await;
    let r = reporter(data.clone(), root.path());
    for expected in 1..=3 {
        assert_eq!(
            r.session(Duration::from_secs(3600), true, &CancellationToken::new())
                .await
                .unwrap(),
            SessionEnd::Acked(expected)
        );
    }
    drop(r);
    std::fs::remove_file(data.file("spool.log")).unwrap();
    // Without the collector's welcome the agent would restart at 1 and be ignored forever.
    assert_eq!(
        reporter(data, root.path())
            .session(Duration::from_secs(3600), true, &CancellationToken::new())
            .await
            .unwrap(),
        SessionEnd::Acked(4)
    );
}

#[tokio::test]
async fn health_and_reflection_are_served() {
    let c = TestCollector::start().await;
    let channel = commscan_runtime::transport::channel(&c.url, &c.ca_pem, None)
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "commscan.v1.Reporting".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        status.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    let federation = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "commscan.v1.Federation".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        federation.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mut refl = ServerReflectionClient::new(channel);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = refl
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let resp = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
        panic!("unexpected reflection answer")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for svc in [
        "commscan.v1.Enrollment",
        "commscan.v1.Reporting",
        "commscan.v1.Query",
        "commscan.v1.Federation",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == svc),
            "{svc} missing from {names:?}"
        );
    }
}

#[tokio::test]
async fn reflection_v1alpha_is_served_too() {
    // grpcurl and grpcio's reflection client still ask v1alpha first.
    use tonic_reflection::pb::v1alpha::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let c = TestCollector::start().await;
    let channel = commscan_runtime::transport::channel(&c.url, &c.ca_pem, None)
        .await
        .unwrap();
    let requests = vec![
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        },
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(
                "commscan.v1.Reporting".into(),
            )),
        },
    ];
    let mut stream = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let list = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = list.message_response else {
        panic!("unexpected reflection answer: {list:?}")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for svc in [
        "commscan.v1.Reporting",
        "commscan.v1.Enrollment",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == svc),
            "{svc} missing from {names:?}"
        );
    }
    let file = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::FileDescriptorResponse(files)) = file.message_response else {
        panic!("unexpected reflection answer: {file:?}")
    };
    assert!(!files.file_descriptor_proto.is_empty());
}

fn finding(product: &str) -> commscan_core::scan::Finding {
    commscan_core::scan::Finding {
        product: product.into(),
        installed: true,
        running: false,
        version: Some("1.0".into()),
        evidence: vec![commscan_core::scan::Evidence {
            source: "dpkg".into(),
            detail: format!("package {product} 1.0"),
            signature: "dpkg".into(),
        }],
    }
}

fn report(seq: u64, body: v1::report::Body, digest_of: &[&str]) -> v1::AgentMessage {
    let findings: Vec<_> = digest_of.iter().map(|p| finding(p)).collect();
    v1::AgentMessage {
        kind: Some(v1::agent_message::Kind::Report(v1::Report {
            sequence: seq,
            body: Some(body),
            stats: None,
            scanned_at: None,
            state_digest: commscan_core::digest::state_digest(&findings, []).to_vec(),
        })),
    }
}

/// Opens a raw stream for an enrolled agent with the given hello digest; returns the sender,
/// the inbound stream and the welcome.
async fn raw_stream(
    c: &TestCollector,
    data: &commscan_agent::state::DataDir,
    digest_of: Option<&[&str]>,
) -> (
    tokio::sync::mpsc::Sender<v1::AgentMessage>,
    tonic::Streaming<v1::CollectorMessage>,
    v1::Welcome,
) {
    let (ca, cert, key) = data.credentials().unwrap();
    let channel = commscan_runtime::transport::channel(&c.url, &ca, Some((&cert, &key)))
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let state_digest = digest_of
        .map(|ps| {
            let f: Vec<_> = ps.iter().map(|p| finding(p)).collect();
            commscan_core::digest::state_digest(&f, []).to_vec()
        })
        .unwrap_or_default();
    tx.send(v1::AgentMessage {
        kind: Some(v1::agent_message::Kind::Hello(v1::Hello {
            state_digest,
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    let mut inbound = ReportingClient::new(channel)
        .connect(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let Some(v1::collector_message::Kind::Welcome(w)) =
        inbound.message().await.unwrap().unwrap().kind
    else {
        panic!("expected a welcome")
    };
    (tx, inbound, w)
}

#[tokio::test]
async fn the_collector_asks_for_a_snapshot_whenever_its_state_differs_from_the_agents() {
    let c = TestCollector::start().await;
    let data = c.enroll_agent("reconciled").await;
    let (tx, mut inbound, w) = raw_stream(&c, &data, None).await;
    assert!(w.want_snapshot, "nothing stored yet");
    let snapshot = v1::report::Body::Snapshot(v1::Snapshot {
        findings: vec![commscan_proto::convert::finding_to_wire(&finding("zoom"))],
        unclassified: vec![],
    });
    tx.send(report(1, snapshot, &["zoom"])).await.unwrap();
    let m = inbound.message().await.unwrap().unwrap().kind;
    assert!(
        matches!(
            m,
            Some(v1::collector_message::Kind::Ack(v1::Ack { sequence: 1 }))
        ),
        "{m:?}"
    );
    // A delta whose declared result is not what the collector now holds: acknowledged (it is
    // stored), then a resync is asked for.
    let delta = v1::report::Body::Delta(v1::Delta {
        upserted: vec![commscan_proto::convert::finding_to_wire(&finding("skype"))],
        ..Default::default()
    });
    tx.send(report(2, delta, &["zoom"])).await.unwrap();
    let m = inbound.message().await.unwrap().unwrap().kind;
    assert!(
        matches!(
            m,
            Some(v1::collector_message::Kind::Ack(v1::Ack { sequence: 2 }))
        ),
        "{m:?}"
    );
    let m = inbound.message().await.unwrap().unwrap().kind;
    assert_eq!(
        m,
        Some(v1::collector_message::Kind::Command(v1::Command {
            kind: v1::CommandKind::Resync as i32
        }))
    );
    drop((tx, inbound));
    // A hello with the digest of what is stored needs no snapshot; any other does.
    let (_, _, w) = raw_stream(&c, &data, Some(&["skype", "zoom"])).await;
    assert!(!w.want_snapshot);
    assert_eq!(w.stored_sequence, 2);
    let (_, _, w) = raw_stream(&c, &data, Some(&["zoom"])).await;
    assert!(w.want_snapshot);
}

/// A report message without a state digest (so no resync is asked for).
fn plain_report(seq: u64, body: v1::report::Body) -> v1::AgentMessage {
    v1::AgentMessage {
        kind: Some(v1::agent_message::Kind::Report(v1::Report {
            sequence: seq,
            body: Some(body),
            ..Default::default()
        })),
    }
}

fn wire_finding(product: &str, evidence: Vec<v1::Evidence>) -> v1::Finding {
    v1::Finding {
        product: product.into(),
        installed: true,
        running: false,
        version: String::new(),
        evidence,
    }
}

/// Issue 12, item 2: a device bloating its own record (huge signatures, then the largest
/// findings it may send) neither grows it past the maximum nor breaks another device's
/// `GetDevice` or the organisation's export.
#[tokio::test]
async fn a_hostile_device_cannot_bloat_its_record_or_break_queries_and_exports() {
    let c = TestCollector::start().await;
    let normal = c.enroll_agent("normal").await;
    let hostile = c.enroll_agent("hostile").await;
    let (tx, mut inbound, _) = raw_stream(&c, &normal, None).await;
    let snapshot = v1::report::Body::Snapshot(v1::Snapshot {
        findings: vec![commscan_proto::convert::finding_to_wire(&finding("zoom"))],
        unclassified: vec![],
    });
    tx.send(plain_report(1, snapshot)).await.unwrap();
    assert!(matches!(
        inbound.message().await.unwrap().unwrap().kind,
        Some(v1::collector_message::Kind::Ack(_))
    ));
    drop((tx, inbound));

    let catalog = commscan_core::catalog::Catalog::embedded();
    let products: Vec<String> = catalog.products().iter().map(|p| p.id.clone()).collect();
    let (tx, mut inbound, _) = raw_stream(&c, &hostile, None).await;
    let huge = "s".repeat(3_500_000);
    for (i, p) in products.iter().take(20).enumerate() {
        let delta = v1::report::Body::Delta(v1::Delta {
            upserted: vec![wire_finding(
                p,
                vec![v1::Evidence {
                    source: "dpkg".into(),
                    detail: "x".into(),
                    signature: huge.clone(),
                }],
            )],
            ..Default::default()
        });
        tx.send(plain_report(i as u64 + 1, delta)).await.unwrap();
        let m = inbound.message().await.unwrap().unwrap().kind;
        assert!(
            matches!(m, Some(v1::collector_message::Kind::Ack(_))),
            "{m:?}"
        );
    }
    // Then the largest findings a report may carry: the record would pass its maximum.
    let detail = "я".repeat(512);
    let evidence: Vec<v1::Evidence> = (0..64)
        .map(|_| v1::Evidence {
            source: "dpkg".into(),
            detail: detail.clone(),
            signature: "dpkg".into(),
        })
        .collect();
    let snapshot = v1::report::Body::Snapshot(v1::Snapshot {
        findings: products
            .iter()
            .take(25)
            .map(|p| wire_finding(p, evidence.clone()))
            .collect(),
        unclassified: vec![],
    });
    tx.send(plain_report(21, snapshot)).await.unwrap();
    let err = inbound.message().await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("device record would be"), "{err:?}");
    drop((tx, inbound));

    let id_of = |d: &commscan_agent::state::DataDir| d.identity().unwrap().device_id;
    let (normal_id, hostile_id) = (id_of(&normal), id_of(&hostile));
    let stored = c.domain().store().device(&hostile_id).unwrap().unwrap();
    assert_eq!(stored.last_sequence, 20);
    let bytes = serde_json::to_vec(&stored).unwrap().len();
    assert!(
        bytes <= commscan_collector::ingest::MAX_DEVICE_RECORD_BYTES,
        "{bytes} bytes"
    );
    assert!(bytes < 64 * 1024, "signatures were cut: {bytes} bytes");

    let mut q = c.query().await;
    for id in [&normal_id, &hostile_id] {
        q.get_device(v1::GetDeviceRequest {
            device_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("GetDevice {id}: {e:?}"));
    }
    let mut chunks = q
        .export_devices(v1::ExportDevicesRequest {
            format: "json".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut lines = 0;
    while let Some(chunk) = chunks.message().await.unwrap() {
        for line in String::from_utf8(chunk.data).unwrap().lines() {
            serde_json::from_str::<serde_json::Value>(line).unwrap();
            lines += 1;
        }
    }
    assert_eq!(lines, 2);
}

/// Sends raw bytes as messages and decodes the collector's answers: a way to send what no
/// agent would, a message that is not protobuf.
#[derive(Debug, Clone, Copy)]
struct RawCodec;
#[derive(Debug)]
struct RawEncoder;
#[derive(Debug)]
struct RawDecoder;

impl tonic::codec::Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use prost::bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawDecoder {
    type Item = v1::CollectorMessage;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<v1::CollectorMessage>, tonic::Status> {
        prost::Message::decode(src)
            .map(Some)
            .map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = v1::CollectorMessage;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

/// Issue 12, item 11: a message that does not decode, after the hello, ends the stream with
/// INVALID_ARGUMENT (it used to end with OK).
#[tokio::test]
async fn a_malformed_message_mid_stream_ends_it_with_invalid_argument() {
    let c = TestCollector::start().await;
    let data = c.enroll_agent("garbled").await;
    let (ca, cert, key) = data.credentials().unwrap();
    let channel = commscan_runtime::transport::channel(&c.url, &ca, Some((&cert, &key)))
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    let hello = v1::AgentMessage {
        kind: Some(v1::agent_message::Kind::Hello(v1::Hello::default())),
    };
    tx.send(prost::Message::encode_to_vec(&hello))
        .await
        .unwrap();
    let mut inbound = grpc
        .streaming(
            tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx)),
            tonic::codegen::http::uri::PathAndQuery::from_static("/commscan.v1.Reporting/Connect"),
            RawCodec,
        )
        .await
        .unwrap()
        .into_inner();
    let m = inbound.message().await.unwrap().unwrap().kind;
    assert!(
        matches!(m, Some(v1::collector_message::Kind::Welcome(_))),
        "{m:?}"
    );
    // An unterminated varint: not a message.
    tx.send(vec![0xff, 0xff, 0xff, 0xff]).await.unwrap();
    let err = inbound.message().await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("malformed message"), "{err:?}");
}
