//! People's access tokens end to end, over the wire: `commscanctl people list / revoke /
//! expire` (Admin.ListAccessTokens, RevokeAccessToken, ExpireAccessToken). Revocation and
//! expiry bite on the next call; two people with one name are two ids in the audit log.

use commscan_proto::v1;
use commscan_tests::{TestClock, TestCollector};
use std::time::Duration;

fn auditor() -> Vec<v1::Grant> {
    vec![v1::Grant {
        role: v1::Role::Auditor as i32,
        organisation: String::new(),
    }]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_are_listed_revoked_and_expired_and_told_apart_in_the_audit_log() {
    let clock = TestClock::default();
    let c = TestCollector::start_with(commscan_tests::StartOptions {
        settings: commscan_collector::layout::OpenSettings {
            clock: clock.clock(),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let mut admin = c.admin_as(&c.admin_token).await;
    let mut made = Vec::new();
    for _ in 0..2 {
        let r = admin
            .create_access_token(v1::CreateAccessTokenRequest {
                name: "alice".into(),
                grants: auditor(),
                expires_in_seconds: 0,
            })
            .await
            .unwrap()
            .into_inner();
        made.push((r.person_id, r.secret));
    }
    let [(id1, t1), (id2, t2)] = [made[0].clone(), made[1].clone()];
    assert_ne!(id1, id2);

    // Listed, without secrets, both alices with their ids.
    let listed = admin
        .list_access_tokens(v1::ListAccessTokensRequest {})
        .await
        .unwrap()
        .into_inner()
        .tokens;
    let alices: Vec<_> = listed.iter().filter(|t| t.name == "alice").collect();
    assert_eq!(alices.len(), 2);
    assert!(alices.iter().any(|t| t.person_id == id1));
    assert!(alices.iter().all(|t| !t.revoked && t.expires_at.is_none()));
    assert!(alices.iter().all(|t| t.created_by.starts_with("admin [")));

    // An auditor may read but not manage people.
    let mut as_alice1 = c.admin_as(&t1).await;
    assert!(
        as_alice1
            .list_audit(v1::ListAuditRequest::default())
            .await
            .is_ok()
    );
    let denied = as_alice1
        .list_access_tokens(v1::ListAccessTokensRequest {})
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);

    // Revoked: the very next call is refused.
    let r = admin
        .revoke_access_token(v1::RevokeAccessTokenRequest {
            person_id: id1.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.token.unwrap().revoked);
    let refused = as_alice1
        .list_audit(v1::ListAuditRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    assert!(refused.message().contains("revoked"), "{refused:?}");

    // Expired in a minute: works until then, refused after.
    let mut as_alice2 = c.admin_as(&t2).await;
    admin
        .expire_access_token(v1::ExpireAccessTokenRequest {
            person_id: id2.clone(),
            expires_in_seconds: 60,
        })
        .await
        .unwrap();
    assert!(
        as_alice2
            .list_audit(v1::ListAuditRequest::default())
            .await
            .is_ok()
    );
    clock.advance(Duration::from_secs(61));
    let refused = as_alice2
        .list_audit(v1::ListAuditRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    assert!(refused.message().contains("expired"), "{refused:?}");

    // Expiring now, and an unknown id.
    admin
        .expire_access_token(v1::ExpireAccessTokenRequest {
            person_id: id2.clone(),
            expires_in_seconds: 0,
        })
        .await
        .unwrap();
    let missing = admin
        .revoke_access_token(v1::RevokeAccessTokenRequest {
            person_id: "000000000000".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);

    // The audit log tells the two alices apart.
    let audit = c.audit();
    let a1 = format!("alice [{id1}]");
    let a2 = format!("alice [{id2}]");
    assert!(
        audit
            .iter()
            .any(|e| e.actor == a1 && e.action == "people.list" && !e.allowed)
    );
    assert!(
        audit
            .iter()
            .any(|e| e.actor == a1 && !e.allowed && e.detail.contains("revoked"))
    );
    assert!(
        audit
            .iter()
            .any(|e| e.actor == a2 && !e.allowed && e.detail.contains("expired"))
    );
    assert!(
        audit
            .iter()
            .any(|e| e.action == "people.revoke" && e.detail.contains(&a1))
    );
    assert!(
        audit
            .iter()
            .any(|e| e.action == "people.expire" && e.detail.contains(&a2))
    );
}
