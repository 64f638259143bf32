//! The tenant matrix: every Query RPC and the Admin RPCs × {admin, officer of A, officer of A and
//! auditor of B, analyst, auditor}, with the expected allow or deny. Organisation A is `acme`,
//! B is `globex`; each has one reporting device.

use commscan_proto::v1;
use commscan_tests::{TestCollector, dpkg_fixture, reporter};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

struct World {
    c: TestCollector,
    dev_a: String,
    dev_b: String,
    people: Vec<(&'static str, String)>,
}

async fn world() -> World {
    let c = TestCollector::start().await;
    let mut admin = c.admin_as(&c.admin_token).await;
    let globex = admin
        .create_enrollment_token(v1::CreateEnrollmentTokenRequest {
            organisation: "globex".into(),
            uses: 0,
            expires_in_seconds: 0,
            new_organisation: true,
        })
        .await
        .unwrap()
        .into_inner()
        .secret;
    let root = dpkg_fixture(&[("zoom", "install ok installed", "6.1.0")]);
    let a = c.enroll_agent("a").await;
    let b_dir = c.dir.path().join("agents/b");
    let b = commscan_agent::state::DataDir::new(&b_dir);
    commscan_agent::enroll::enroll(
        &c.url,
        &globex,
        &c.ca_pem,
        commscan_core::platform::Platform::Linux,
        Some("globex"),
        &b,
    )
    .await
    .unwrap();
    for d in [&a, &b] {
        reporter(d.clone(), root.path())
            .session(Duration::from_secs(3600), true, &CancellationToken::new())
            .await
            .unwrap();
    }
    let mut people = vec![("admin", c.admin_token.clone())];
    for (name, grants) in [
        ("officer-a", vec![(v1::Role::Officer, "acme")]),
        (
            "officer-a-auditor-b",
            vec![(v1::Role::Officer, "acme"), (v1::Role::Auditor, "globex")],
        ),
        ("analyst", vec![(v1::Role::Analyst, "")]),
        ("auditor", vec![(v1::Role::Auditor, "")]),
    ] {
        let grants = grants
            .into_iter()
            .map(|(r, o)| v1::Grant {
                role: r as i32,
                organisation: o.into(),
            })
            .collect();
        let secret = admin
            .create_access_token(v1::CreateAccessTokenRequest {
                name: name.into(),
                grants,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .secret;
        people.push((name, secret));
    }
    World {
        dev_a: a.identity().unwrap().device_id,
        dev_b: b.identity().unwrap().device_id,
        c,
        people,
    }
}

/// What a call returned: its code, and how many rows where that matters.
type Outcome = (tonic::Code, Option<usize>);

fn code<T>(r: Result<tonic::Response<T>, tonic::Status>) -> tonic::Code {
    match r {
        Ok(_) => tonic::Code::Ok,
        Err(s) => s.code(),
    }
}

async fn call(w: &World, token: &str, rpc: &str) -> Outcome {
    let mut q = w.c.query_as(token).await;
    let mut a = w.c.admin_as(token).await;
    let list = |org: &str| v1::ListDevicesRequest {
        organisation: org.into(),
        ..Default::default()
    };
    match rpc {
        "ListDevices(A)" | "ListDevices(B)" | "ListDevices(*)" => {
            let org = match rpc {
                "ListDevices(A)" => "acme",
                "ListDevices(B)" => "globex",
                _ => "",
            };
            match q.list_devices(list(org)).await {
                Ok(r) => (tonic::Code::Ok, Some(r.into_inner().devices.len())),
                Err(s) => (s.code(), None),
            }
        }
        "GetDevice(A)" => (
            code(
                q.get_device(v1::GetDeviceRequest {
                    device_id: w.dev_a.clone(),
                    ..Default::default()
                })
                .await,
            ),
            None,
        ),
        "GetDevice(B)" => (
            code(
                q.get_device(v1::GetDeviceRequest {
                    device_id: w.dev_b.clone(),
                    ..Default::default()
                })
                .await,
            ),
            None,
        ),
        "Summary(A)" => (
            code(
                q.organisation_summary(v1::OrganisationSummaryRequest {
                    trend_days: 0,
                    organisation: "acme".into(),
                })
                .await,
            ),
            None,
        ),
        "Summary(B)" => (
            code(
                q.organisation_summary(v1::OrganisationSummaryRequest {
                    trend_days: 0,
                    organisation: "globex".into(),
                })
                .await,
            ),
            None,
        ),
        "CreateToken(A)" | "CreateToken(B)" => {
            let org = if rpc.ends_with("(A)") {
                "acme"
            } else {
                "globex"
            };
            (
                code(
                    a.create_enrollment_token(v1::CreateEnrollmentTokenRequest {
                        organisation: org.into(),
                        uses: 1,
                        expires_in_seconds: 60,
                        new_organisation: true,
                    })
                    .await,
                ),
                None,
            )
        }
        "ListTokens(*)" => match a
            .list_enrollment_tokens(v1::ListEnrollmentTokensRequest::default())
            .await
        {
            Ok(r) => {
                let tokens = r.into_inner().tokens;
                let orgs: std::collections::BTreeSet<String> =
                    tokens.iter().map(|t| t.organisation.clone()).collect();
                (tonic::Code::Ok, Some(orgs.len()))
            }
            Err(s) => (s.code(), None),
        },
        "RevokeDevice(B)" => (
            code(
                a.revoke_device(v1::RevokeDeviceRequest {
                    device_id: w.dev_b.clone(),
                })
                .await,
            ),
            None,
        ),
        "CreatePerson" => (
            code(
                a.create_access_token(v1::CreateAccessTokenRequest {
                    name: "x".into(),
                    grants: vec![v1::Grant {
                        role: v1::Role::Auditor as i32,
                        organisation: String::new(),
                    }],
                    ..Default::default()
                })
                .await,
            ),
            None,
        ),
        "Audit" => (
            code(a.list_audit(v1::ListAuditRequest::default()).await),
            None,
        ),
        "Fleet" => match q.fleet_summary(v1::FleetSummaryRequest {}).await {
            Ok(r) => (tonic::Code::Ok, Some(r.into_inner().rows.len())),
            Err(s) => (s.code(), None),
        },
        "Products" => (
            code(
                q.product_findings(v1::ProductFindingsRequest::default())
                    .await,
            ),
            None,
        ),
        "Candidates(A)" => (
            code(
                q.list_unclassified(v1::ListUnclassifiedRequest {
                    organisation: "acme".into(),
                })
                .await,
            ),
            None,
        ),
        "Classify(A)" => (
            code(
                q.classify_candidate(v1::ClassifyCandidateRequest {
                    organisation: "acme".into(),
                    name: "Some Chat".into(),
                    product: String::new(),
                    dismiss: true,
                    unmap: false,
                })
                .await,
            ),
            None,
        ),
        "Watch(B)" => (
            code(
                q.watch_events(v1::WatchEventsRequest {
                    organisation: "globex".into(),
                })
                .await,
            ),
            None,
        ),
        "Export(*)" => match q
            .export_devices(v1::ExportDevicesRequest {
                format: "csv".into(),
                organisation: String::new(),
                status: 0,
            })
            .await
        {
            Ok(r) => {
                let mut s = r.into_inner();
                let mut text = Vec::new();
                while let Some(c) = s.message().await.unwrap() {
                    text.extend(c.data);
                }
                (
                    tonic::Code::Ok,
                    Some(String::from_utf8(text).unwrap().lines().count() - 1),
                )
            }
            Err(s) => (s.code(), None),
        },
        other => panic!("unknown rpc {other}"),
    }
}

#[tokio::test]
async fn every_rpc_for_every_role() {
    use tonic::Code::{NotFound as NF, Ok as OK, PermissionDenied as PD};
    let w = world().await;
    // Rows: rpc, then the outcome for admin, officer-a, officer-a-auditor-b, analyst, auditor.
    // `Some(n)`: n rows (devices) or n organisations (tokens). A device outside the caller's
    // organisations is NOT_FOUND, exactly like a missing one.
    let table: Vec<(&str, [Outcome; 5])> = vec![
        (
            "ListDevices(A)",
            [
                (OK, Some(1)),
                (OK, Some(1)),
                (OK, Some(1)),
                (PD, None),
                (OK, Some(1)),
            ],
        ),
        (
            "ListDevices(B)",
            [
                (OK, Some(1)),
                (PD, None),
                (OK, Some(1)),
                (PD, None),
                (OK, Some(1)),
            ],
        ),
        (
            "ListDevices(*)",
            [
                (OK, Some(2)),
                (OK, Some(1)),
                (OK, Some(2)),
                (PD, None),
                (OK, Some(2)),
            ],
        ),
        (
            "GetDevice(A)",
            [(OK, None), (OK, None), (OK, None), (PD, None), (OK, None)],
        ),
        (
            "GetDevice(B)",
            [(OK, None), (NF, None), (OK, None), (PD, None), (OK, None)],
        ),
        (
            "Summary(A)",
            [(OK, None), (OK, None), (OK, None), (OK, None), (OK, None)],
        ),
        (
            "Summary(B)",
            [(OK, None), (PD, None), (OK, None), (OK, None), (OK, None)],
        ),
        (
            "CreateToken(A)",
            [(OK, None), (OK, None), (OK, None), (PD, None), (PD, None)],
        ),
        (
            "CreateToken(B)",
            [(OK, None), (PD, None), (PD, None), (PD, None), (PD, None)],
        ),
        (
            "ListTokens(*)",
            [
                (OK, Some(2)),
                (OK, Some(1)),
                (OK, Some(1)),
                (PD, None),
                (PD, None),
            ],
        ),
        (
            "RevokeDevice(B)",
            [(OK, None), (NF, None), (NF, None), (PD, None), (PD, None)],
        ),
        (
            "CreatePerson",
            [(OK, None), (PD, None), (PD, None), (PD, None), (PD, None)],
        ),
        (
            "Audit",
            [(OK, None), (OK, None), (OK, None), (PD, None), (OK, None)],
        ),
        (
            "Fleet",
            [
                (OK, Some(2)),
                (OK, Some(1)),
                (OK, Some(2)),
                (OK, Some(2)),
                (OK, Some(2)),
            ],
        ),
        (
            "Products",
            [(OK, None), (OK, None), (OK, None), (OK, None), (OK, None)],
        ),
        (
            "Candidates(A)",
            [(OK, None), (OK, None), (OK, None), (PD, None), (OK, None)],
        ),
        (
            // Allowed, then not found: no device of acme reported "Some Chat".
            "Classify(A)",
            [(NF, None), (NF, None), (NF, None), (PD, None), (PD, None)],
        ),
        (
            "Watch(B)",
            [(OK, None), (PD, None), (OK, None), (PD, None), (OK, None)],
        ),
        (
            "Export(*)",
            [
                (OK, Some(2)),
                (OK, Some(1)),
                (OK, Some(2)),
                (PD, None),
                (OK, Some(2)),
            ],
        ),
    ];
    let mut failures = Vec::new();
    for (rpc, expected) in &table {
        // Revoking B as admin would change later rows; run the admin column of that row last.
        for (i, (who, token)) in w.people.iter().enumerate() {
            if *rpc == "RevokeDevice(B)" && *who == "admin" {
                continue;
            }
            let got = call(&w, token, rpc).await;
            if got != expected[i] {
                failures.push(format!(
                    "{rpc} as {who}: expected {:?}, got {got:?}",
                    expected[i]
                ));
            }
        }
    }
    let got = call(&w, &w.people[0].1, "RevokeDevice(B)").await;
    if got != (OK, None) {
        failures.push(format!("RevokeDevice(B) as admin: got {got:?}"));
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    // Every denial is in the audit log, under the person's name.
    let audit = w.c.audit();
    for who in ["officer-a", "analyst", "auditor"] {
        assert!(
            audit
                .iter()
                .any(|e| e.actor.starts_with(&format!("{who} [")) && !e.allowed),
            "no denial audited for {who}"
        );
    }
}

#[tokio::test]
async fn scoped_audit_readers_see_only_their_organisations() {
    let w = world().await;
    let officer = &w.people[1].1;
    let entries =
        w.c.admin_as(officer)
            .await
            .list_audit(v1::ListAuditRequest::default())
            .await
            .unwrap()
            .into_inner()
            .entries;
    assert!(!entries.is_empty());
    assert!(
        entries.iter().all(|e| e.organisation == "acme"),
        "{entries:?}"
    );
}
