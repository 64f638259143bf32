//! The web console at the HTTP level, where a browser would hide it: the session cookie's
//! attributes, sign-in refusals, CSRF, sign-out, a revoked token ending its sessions, idle and
//! absolute expiry, one-time links used once, the security headers of every page, hostile
//! device strings escaped in HTML and neutralised in CSV, and tenants kept apart when URLs
//! and forms are edited by hand. (The real-browser flows are `tests/tests/console.rs`.)

use commscan_collector::store::DeviceRecord;
use commscan_proto::v1;
use commscan_tests::{StartOptions, TestClock, TestCollector, dpkg_fixture, reporter};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One HTTP/1.1 exchange over TLS to the console; the status, headers (lower-case names) and
/// body.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

async fn http(
    c: &TestCollector,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    form: Option<&str>,
) -> Reply {
    commscan_tests::init_crypto();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::pem::PemObject::pem_slice_iter(c.ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let addr = c.web_url.trim_start_matches("https://").to_owned();
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    let body = form.unwrap_or("");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(c) = cookie {
        req.push_str(&format!("Cookie: {c}\r\n"));
    }
    if form.is_some() {
        req.push_str(&format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body);
    tls.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut raw))
        .await
        .expect("the console answers within 10 s");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").expect("a response head");
    let mut lines = head.lines();
    let status = lines.next().unwrap()[9..12].parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
        .collect::<Vec<_>>();
    // Chunked bodies (exports) are de-chunked crudely: sizes dropped, data kept.
    let body = if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v == "chunked")
    {
        let mut out = String::new();
        let mut rest = rest;
        while let Some((size, tail)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 || tail.len() < n {
                break;
            }
            out.push_str(&tail[..n]);
            rest = tail[n..].trim_start_matches("\r\n");
        }
        out
    } else {
        rest.to_owned()
    };
    Reply {
        status,
        headers,
        body,
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Signs in with `token`; the cookie (`name=value`) and the raw Set-Cookie.
async fn sign_in(c: &TestCollector, token: &str) -> (String, String) {
    let r = http(
        c,
        "POST",
        "/login",
        None,
        Some(&format!("token={}", urlencode(token))),
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.header("location"), Some("/fleet"));
    let set = r.header("set-cookie").expect("a session cookie").to_owned();
    (set.split(';').next().unwrap().to_owned(), set)
}

/// The CSRF token of the page at `path`.
async fn csrf_of(c: &TestCollector, cookie: &str, path: &str) -> String {
    let r = http(c, "GET", path, Some(cookie), None).await;
    let i = r
        .body
        .find("name=\"csrf\" value=\"")
        .expect("a form with csrf");
    r.body[i + 19..].split('"').next().unwrap().to_owned()
}

async fn person(c: &TestCollector, name: &str, role: v1::Role, org: &str) -> (String, String) {
    let r = c
        .admin_as(&c.admin_token)
        .await
        .create_access_token(v1::CreateAccessTokenRequest {
            name: name.into(),
            grants: vec![v1::Grant {
                role: role as i32,
                organisation: org.into(),
            }],
            expires_in_seconds: 0,
        })
        .await
        .unwrap()
        .into_inner();
    (r.secret, r.person_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_secure_cookies_that_end_on_sign_out_revocation_and_expiry() {
    let clock = TestClock::default();
    let c = TestCollector::start_with(StartOptions {
        settings: commscan_collector::layout::OpenSettings {
            clock: clock.clock(),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;

    // Unknown tokens are refused without a cookie.
    let r = http(&c, "POST", "/login", None, Some("token=nope")).await;
    assert_eq!(r.header("location"), Some("/login?failed=1"));
    assert!(r.header("set-cookie").is_none());

    let (cookie, set) = sign_in(&c, &c.admin_token).await;
    for attr in [
        "__Host-commscan=",
        "Path=/",
        "Secure",
        "HttpOnly",
        "SameSite=Strict",
    ] {
        assert!(set.contains(attr), "{attr} in {set}");
    }
    assert!(
        !set.contains(&c.admin_token),
        "the token never goes in the cookie"
    );
    let page = http(&c, "GET", "/fleet", Some(&cookie), None).await;
    assert_eq!(page.status, 200);
    let csp = page.header("content-security-policy").unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
    assert!(!page.body.contains("<script>") && !page.body.contains(" style="));

    // A form without the session's CSRF token changes nothing.
    let r = http(&c, "POST", "/logout", Some(&cookie), Some("csrf=forged")).await;
    assert_eq!(r.status, 403);
    assert_eq!(
        http(&c, "GET", "/fleet", Some(&cookie), None).await.status,
        200
    );
    let csrf = csrf_of(&c, &cookie, "/fleet").await;
    let r = http(
        &c,
        "POST",
        "/logout",
        Some(&cookie),
        Some(&format!("csrf={csrf}")),
    )
    .await;
    assert_eq!(r.header("location"), Some("/login"));
    let r = http(&c, "GET", "/fleet", Some(&cookie), None).await;
    assert_eq!(r.status, 303, "a signed-out session is gone from the store");

    // Revoking the person's token ends their sessions at the next request.
    let (token, id) = person(&c, "olga", v1::Role::Officer, "acme").await;
    let (cookie, _) = sign_in(&c, &token).await;
    assert_eq!(
        http(&c, "GET", "/fleet", Some(&cookie), None).await.status,
        200
    );
    c.admin_as(&c.admin_token)
        .await
        .revoke_access_token(v1::RevokeAccessTokenRequest { person_id: id })
        .await
        .unwrap();
    let r = http(&c, "GET", "/fleet", Some(&cookie), None).await;
    assert_eq!(r.header("location"), Some("/login?ended=1"));

    // Idle for longer than the idle window: ended. Busy for longer than the absolute
    // lifetime: ended too.
    let (cookie, _) = sign_in(&c, &c.admin_token).await;
    clock.advance(Duration::from_secs(31 * 60));
    assert_eq!(
        http(&c, "GET", "/fleet", Some(&cookie), None).await.status,
        303
    );
    let (cookie, _) = sign_in(&c, &c.admin_token).await;
    for _ in 0..26 {
        clock.advance(Duration::from_secs(29 * 60));
        if http(&c, "GET", "/fleet", Some(&cookie), None).await.status != 200 {
            break;
        }
    }
    assert_eq!(
        http(&c, "GET", "/fleet", Some(&cookie), None).await.status,
        303,
        "12 h after sign-in the session ends however busy"
    );

    // A one-time link signs in once, within ten minutes.
    let admin = c
        .domain()
        .authenticate(Some(&c.admin_token), Default::default())
        .unwrap();
    let (code, _) = c.domain().create_login_link(&admin, &admin.id).unwrap();
    let r = http(&c, "GET", &format!("/login/link?code={code}"), None, None).await;
    assert_eq!(
        r.status, 200,
        "a page that moves on, so the Strict cookie goes along"
    );
    assert!(r.header("set-cookie").is_some());
    assert!(r.body.contains("url=/fleet"), "{}", r.body);
    let r = http(&c, "GET", &format!("/login/link?code={code}"), None, None).await;
    assert_eq!(r.status, 401, "used once");
    let (code, _) = c.domain().create_login_link(&admin, &admin.id).unwrap();
    clock.advance(Duration::from_secs(11 * 60));
    let r = http(&c, "GET", &format!("/login/link?code={code}"), None, None).await;
    assert_eq!(r.status, 401, "expired");
}

/// A device with hostile strings where devices write: host name, versions, candidates.
fn hostile_device(org: &str) -> DeviceRecord {
    let mut d = DeviceRecord::enrolled(
        "6f1c5c3e-2b1a-4a57-9a1e-0c2d4e1f3a5b".into(),
        org.into(),
        "=HYPERLINK(\"http://x\")<script>alert(1)</script>\"><img src=x onerror=alert(2)>".into(),
        Some(commscan_core::platform::Platform::Linux),
        "Debian".into(),
        "<b>1.0</b>".into(),
        time::OffsetDateTime::now_utc(),
    );
    d.findings = vec![commscan_core::scan::Finding {
        product: "zoom".into(),
        installed: true,
        running: false,
        version: Some("\"><svg onload=alert(3)>".into()),
        evidence: vec![commscan_core::scan::Evidence {
            source: "dpkg".into(),
            detail: "<iframe src=javascript:alert(4)>".into(),
            signature: String::new(),
        }],
    }];
    d.last_report = Some(time::OffsetDateTime::now_utc());
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_device_strings_are_text_and_tenants_stay_apart() {
    let c = TestCollector::start().await;
    let d = hostile_device("acme");
    c.domain()
        .store()
        .put_device(&d, time::OffsetDateTime::now_utc())
        .unwrap();
    let (cookie, _) = sign_in(&c, &c.admin_token).await;
    for path in ["/org/acme".to_owned(), format!("/device/{}", d.device_id)] {
        let path = path.as_str();
        let r = http(&c, "GET", path, Some(&cookie), None).await;
        assert_eq!(r.status, 200, "{path}");
        for raw in [
            "<script>alert",
            "<img src=x",
            "<svg onload",
            "<iframe",
            "<b>1.0",
        ] {
            assert!(!r.body.contains(raw), "{raw} unescaped on {path}");
        }
        assert!(
            r.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{path}"
        );
    }
    // An organisation name that is not one (it would end up in a header) is simply not found.
    let r = http(
        &c,
        "GET",
        "/org/a%22%0D%0AX:y/export.csv",
        Some(&cookie),
        None,
    )
    .await;
    assert_eq!(r.status, 404);
    assert!(r.header("x").is_none());
    let csv = http(&c, "GET", "/org/acme/export.csv", Some(&cookie), None).await;
    assert_eq!(csv.status, 200);
    assert!(
        csv.body.contains(",\"'=HYPERLINK(\"\"http://x\"\")"),
        "a formula is neutralised in CSV: {}",
        csv.body
    );

    // Another organisation's officer: nothing of acme, whatever the URL or form says.
    let _ = c
        .domain()
        .store()
        .put_device(&hostile_device("other"), time::OffsetDateTime::now_utc());
    let (token, _) = person(&c, "oleg", v1::Role::Officer, "globex").await;
    let (cookie, _) = sign_in(&c, &token).await;
    assert_eq!(
        http(&c, "GET", "/org/acme", Some(&cookie), None)
            .await
            .status,
        403
    );
    assert_eq!(
        http(
            &c,
            "GET",
            &format!("/device/{}", d.device_id),
            Some(&cookie),
            None
        )
        .await
        .status,
        404,
        "another organisation's device looks missing"
    );
    assert_eq!(
        http(&c, "GET", "/org/acme/export.csv", Some(&cookie), None)
            .await
            .status,
        403
    );
    let csrf = csrf_of(&c, &cookie, "/tokens").await;
    let r = http(
        &c,
        "POST",
        "/candidates/acme/map",
        Some(&cookie),
        Some(&format!("csrf={csrf}&name=x&product=zoom")),
    )
    .await;
    assert_eq!(r.status, 403);
    let r = http(
        &c,
        "POST",
        "/tokens",
        Some(&cookie),
        Some(&format!("csrf={csrf}&org=acme")),
    )
    .await;
    assert_eq!(r.status, 403);
    let fleet = http(&c, "GET", "/fleet", Some(&cookie), None).await;
    assert!(
        !fleet.body.contains("/org/acme"),
        "acme is not in their fleet"
    );

    // An analyst reads summaries, never device rows.
    let (token, _) = person(&c, "ana", v1::Role::Analyst, "").await;
    let (cookie, _) = sign_in(&c, &token).await;
    let org = http(&c, "GET", "/org/acme", Some(&cookie), None).await;
    assert_eq!(org.status, 200);
    assert!(!org.body.contains("id=\"devices\"") && !org.body.contains(&d.device_id));
    assert_eq!(
        http(
            &c,
            "GET",
            &format!("/device/{}", d.device_id),
            Some(&cookie),
            None
        )
        .await
        .status,
        403
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_page_shows_its_evidence_and_certificate_expiry() {
    let c = TestCollector::start().await;
    let root = dpkg_fixture(&[("zoom", "install ok installed", "6.1.0")]);
    let data = c.enroll_agent("pc-17").await;
    let id = data.identity().unwrap().device_id;
    reporter(data, root.path())
        .session(
            Duration::from_secs(3600),
            true,
            &tokio_util::sync::CancellationToken::new(),
        )
        .await
        .unwrap();
    let (cookie, _) = sign_in(&c, &c.admin_token).await;
    let page = http(&c, "GET", &format!("/device/{id}"), Some(&cookie), None).await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("package zoom 6.1.0"),
        "evidence: {}",
        page.body
    );
    // Enrolment issues 30-day certificates: the page names the day it expires.
    let expires = time::OffsetDateTime::now_utc() + time::Duration::days(30);
    let day = format!(
        "{:04}-{:02}-{:02}",
        expires.year(),
        u8::from(expires.month()),
        expires.day()
    );
    let before = expires - time::Duration::days(1);
    let day_before = format!(
        "{:04}-{:02}-{:02}",
        before.year(),
        u8::from(before.month()),
        before.day()
    );
    assert!(
        page.body.contains(&format!("Expires {day}"))
            || page.body.contains(&format!("Expires {day_before}")),
        "certificate expiry on the page: {}",
        page.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_adds_and_revokes_people_in_the_console_and_an_officer_cannot() {
    let c = TestCollector::start().await;
    let (admin, _) = sign_in(&c, &c.admin_token).await;
    let csrf = csrf_of(&c, &admin, "/people").await;
    let page = http(
        &c,
        "POST",
        "/people",
        Some(&admin),
        Some(&format!(
            "csrf={csrf}&name=Olga&grants=officer%3Aacme+auditor"
        )),
    )
    .await;
    assert_eq!(page.status, 200, "{}", page.body);
    let i = page
        .body
        .find("id=\"secret\">")
        .expect("the token, shown once");
    let token = page.body[i + 12..].split('<').next().unwrap().to_owned();
    let (olga, _) = sign_in(&c, &token).await;
    let fleet = http(&c, "GET", "/fleet", Some(&olga), None).await;
    assert_eq!(fleet.status, 200);
    assert!(fleet.body.contains("Olga ["), "signed in as the new person");
    // An officer manages no people.
    let theirs = csrf_of(&c, &olga, "/fleet").await;
    let r = http(
        &c,
        "POST",
        "/people",
        Some(&olga),
        Some(&format!("csrf={theirs}&name=Mallory&grants=admin")),
    )
    .await;
    assert_eq!(r.status, 403);
    // Revoked from the console: her session ends at once.
    let list = http(&c, "GET", "/people", Some(&admin), None).await;
    let j = list.body.find("Olga").unwrap();
    let id = list.body[..j]
        .rsplit("<code>")
        .next()
        .unwrap()
        .split('<')
        .next()
        .unwrap()
        .to_owned();
    let r = http(
        &c,
        "POST",
        &format!("/people/{id}/revoke"),
        Some(&admin),
        Some(&format!("csrf={csrf}")),
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(
        http(&c, "GET", "/fleet", Some(&olga), None).await.status,
        303
    );
}
