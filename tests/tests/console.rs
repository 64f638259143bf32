//! The web console in a real browser (headless Chromium over WebDriver, `commscan_tests::browser`),
//! against a collector serving it on loopback with devices that really reported.
//!
//! The world: organisation `acme` with a device running Zoom (noncompliant), one with only
//! Yandex Telemost (compliant) and a hostile one whose host name, versions, evidence and
//! application names carry `<script>`, `"><img src=x onerror=…>` and `=HYPERLINK(…)`; organisation
//! `globex` with one device and a candidate of its own; an officer of acme, an analyst, an
//! auditor, and the admin.
//!
//! What each test proves is in its own doc comment. Together: the officer's journey (sign in,
//! fleet, organisation, filter, device evidence, CSV export, mapping a candidate, a filter in
//! the URL, signing out and being refused); tenants kept apart when URLs and form fields are
//! edited in the browser; an analyst never sees device rows; an auditor changes nothing;
//! hostile strings are text and run nothing; every page passes axe (no serious or critical
//! violation), sends a CSP without inline script and refuses framing, carries CSRF tokens on
//! its forms, and is photographed at 1280×800 into the screenshots folder (README), plus a
//! phone-sized check; Russian by Accept-Language and switchable.
//!
//! Skips (prints `SKIPPED`) without chromium and chromedriver unless
//! `COMMSCAN_REQUIRE_BROWSER=1` (`.ci/run` installs both and sets it).

use commscan_proto::v1;
use commscan_tests::browser::{Browser, BrowserOptions, PHONE};
use commscan_tests::{TestCollector, dpkg_fixture, reporter};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const ZOOM: (&str, &str, &str) = ("zoom", "install ok installed", "6.1.0");
const TELEMOST: (&str, &str, &str) = ("yandex-telemost", "install ok installed", "1.0");

/// A host name that is HTML, an attribute breakout and a spreadsheet formula at once.
const HOSTILE_HOST: &str = "=HYPERLINK(\"http://x\")<script>window.__pwned=1;alert(1)</script>\"><img src=x onerror=alert(2)>";
/// A version that breaks out of an attribute.
const HOSTILE_VERSION: &str = "\"><img src=x onerror=alert(3)>";
/// Evidence that is a script.
const HOSTILE_EVIDENCE: &str = "<script>alert(4)</script>=HYPERLINK(\"http://x\")";
/// An application name (unclassified candidate) that is markup.
const HOSTILE_APP: &str = "<img src=x onerror=alert(5)>Chat";
/// A benign candidate the officer maps.
const JITSI: &str = "Jitsi Meet";
/// Globex's own candidate.
const GLOBEX_APP: &str = "Globex Chat";

struct World {
    c: TestCollector,
    /// acme's devices: Zoom, Telemost only, hostile.
    zoom: String,
    telemost: String,
    hostile: String,
    /// globex's device.
    globex_device: String,
    /// globex's enrolment token's id.
    globex_token: String,
    officer: String,
    analyst_id: String,
    auditor: String,
}

/// Enrols an agent of `token`'s organisation and sends one snapshot over a raw stream, with
/// `hostname` in its hello; returns the device id once the collector acknowledged it.
async fn raw_report(
    c: &TestCollector,
    name: &str,
    token: &str,
    hostname: &str,
    findings: Vec<v1::Finding>,
    unclassified: Vec<v1::Unclassified>,
) -> String {
    let data = c.enroll_agent_with(name, token).await;
    let (ca, cert, key) = data.credentials().unwrap();
    let channel = commscan_runtime::transport::channel(&c.url, &ca, Some((&cert, &key)))
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(v1::AgentMessage {
        kind: Some(v1::agent_message::Kind::Hello(v1::Hello {
            hostname: hostname.into(),
            platform: v1::Platform::Linux as i32,
            agent_version: "test".into(),
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    let mut inbound = v1::reporting_client::ReportingClient::new(channel)
        .connect(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let welcome = inbound.message().await.unwrap().unwrap();
    assert!(matches!(
        welcome.kind,
        Some(v1::collector_message::Kind::Welcome(_))
    ));
    commscan_tests::snapshot_acked(
        &tx,
        &mut inbound,
        findings,
        unclassified,
        Duration::from_secs(10),
    )
    .await;
    data.identity().unwrap().device_id
}

/// An agent scanning a dpkg fixture reports once; its device id.
async fn report(c: &TestCollector, name: &str, packages: &[(&str, &str, &str)]) -> String {
    let root = dpkg_fixture(packages);
    let data = c.enroll_agent(name).await;
    reporter(data.clone(), root.path())
        .session(Duration::from_secs(3600), true, &CancellationToken::new())
        .await
        .unwrap();
    data.identity().unwrap().device_id
}

fn candidate(name: &str) -> v1::Unclassified {
    v1::Unclassified {
        name: name.into(),
        source: "desktop".into(),
        detail: "Categories=Network;InstantMessaging".into(),
        looks_like: String::new(),
    }
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

async fn world() -> World {
    let c = TestCollector::start().await;
    let zoom = report(&c, "pc-zoom", &[ZOOM]).await;
    let telemost = report(&c, "pc-telemost", &[TELEMOST]).await;
    let hostile = raw_report(
        &c,
        "hostile",
        &c.enrolment_token,
        HOSTILE_HOST,
        vec![v1::Finding {
            product: "zoom".into(),
            installed: true,
            running: false,
            version: HOSTILE_VERSION.into(),
            evidence: vec![v1::Evidence {
                source: "dpkg".into(),
                detail: HOSTILE_EVIDENCE.into(),
                signature: "dpkg".into(),
            }],
        }],
        vec![candidate(HOSTILE_APP), candidate(JITSI)],
    )
    .await;
    let globex = c
        .admin_as(&c.admin_token)
        .await
        .create_enrollment_token(v1::CreateEnrollmentTokenRequest {
            organisation: "globex".into(),
            uses: 0,
            expires_in_seconds: 0,
            new_organisation: true,
        })
        .await
        .unwrap()
        .into_inner();
    let globex_device = raw_report(
        &c,
        "globex-pc",
        &globex.secret,
        "globex-secret-host",
        vec![],
        vec![candidate(GLOBEX_APP)],
    )
    .await;
    let (officer, _) = person(&c, "olga", v1::Role::Officer, "acme").await;
    let (_, analyst_id) = person(&c, "anna", v1::Role::Analyst, "").await;
    let (auditor, _) = person(&c, "arkady", v1::Role::Auditor, "").await;
    World {
        zoom,
        telemost,
        hostile,
        globex_device,
        globex_token: globex.token.expect("token").token_id,
        officer,
        analyst_id,
        auditor,
        c,
    }
}

/// A browser trusting exactly the collector's key.
async fn browser(test: &str, c: &TestCollector, language: Option<&str>) -> Option<Browser> {
    let cert = std::fs::read_to_string(c.layout.path("pki/server.crt")).expect("server cert");
    Browser::start(
        test,
        BrowserOptions {
            trust_certificates: vec![cert],
            language: language.map(str::to_owned),
        },
    )
    .await
}

/// Signs in through the form with `token`; lands on the fleet.
async fn sign_in(b: &Browser, c: &TestCollector, token: &str) {
    b.goto(&format!("{}/login", c.web_url)).await;
    b.fill("input#token", token).await;
    b.submit("button#sign-in", "main#main").await;
    assert_eq!(b.path().await, "/fleet");
}

/// The device ids of the rows of `table#devices`.
async fn device_rows(b: &Browser) -> Vec<String> {
    let v = b
        .eval(
            "return Array.from(document.querySelectorAll('table#devices tr[data-device]'))\
             .map(r => r.dataset.device)",
        )
        .await;
    let mut ids: Vec<String> = serde_json::from_value(v).expect("ids");
    ids.sort();
    ids
}

/// The status code a refused page shows (its `h1`), or `None` for a normal page.
async fn refused(b: &Browser) -> Option<String> {
    let h1 = b.text("h1").await;
    ["403", "404"].contains(&h1.as_str()).then_some(h1)
}

/// The candidates the store has not decided for `org`, by name.
fn undecided(c: &TestCollector, org: &str) -> Vec<String> {
    let decided: Vec<String> = c
        .domain()
        .store()
        .classifications(org)
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    let agg = c
        .domain()
        .store()
        .org_aggregate(org)
        .unwrap()
        .unwrap_or_default();
    agg.unclassified
        .into_keys()
        .filter(|n| !decided.contains(n))
        .collect()
}

/// Enrolment tokens of `org` as (id, revoked).
async fn tokens_of(c: &TestCollector, org: &str) -> Vec<(String, bool)> {
    c.admin_as(&c.admin_token)
        .await
        .list_enrollment_tokens(v1::ListEnrollmentTokensRequest {
            organisation: org.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .tokens
        .into_iter()
        .map(|t| (t.token_id, t.revoked))
        .collect()
}

/// Points the form matching `form` at `action` and sets (or adds) hidden fields, as a person
/// editing the page in developer tools would, then submits it; waits for the next page.
async fn tamper_and_submit(b: &Browser, form: &str, action: &str, fields: &[(&str, &str)]) {
    let fields: Vec<serde_json::Value> = fields
        .iter()
        .map(|(k, v)| serde_json::json!([k, v]))
        .collect();
    b.eval_with(
        "const f = document.querySelector(arguments[0]);
         f.setAttribute('action', arguments[1]);
         for (const [k, v] of arguments[2]) {
           let i = f.querySelector(`[name=\"${k}\"]`);
           if (!i) { i = document.createElement('input'); i.type = 'hidden'; i.name = k; f.appendChild(i); }
           if (i.tagName === 'SELECT') { const o = document.createElement('option'); o.value = v; i.appendChild(o); }
           i.value = v;
         }
         window.__commscan_before_submit = true;
         f.submit();
         return null;",
        vec![
            serde_json::json!(form),
            serde_json::json!(action),
            serde_json::json!(fields),
        ],
    )
    .await;
    b.wait_for("the tampered form's answer", || async {
        let gone = b
            .eval("return window.__commscan_before_submit === undefined && document.readyState === 'complete'")
            .await;
        (gone == serde_json::Value::Bool(true)).then_some(())
    })
    .await;
}

/// The officer's day: sign in, read the fleet, open the organisation, filter to
/// noncompliant, open a device and read its evidence, export the filtered CSV (a host name
/// beginning with `=` is neutralised), map a candidate, apply a filter from the URL, sign out
/// and be sent to sign-in from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn officer_signs_in_filters_reads_evidence_exports_maps_and_signs_out() {
    let w = world().await;
    let Some(b) = browser("officer_signs_in", &w.c, None).await else {
        return;
    };
    let web = &w.c.web_url;

    // Not signed in: every page sends to sign-in.
    b.goto(&format!("{web}/fleet")).await;
    assert_eq!(b.path().await, "/login");
    sign_in(&b, &w.c, &w.officer).await;

    // The fleet: acme only (their grant), with its trend.
    b.find("table#fleet tr[data-org=acme]").await;
    assert!(b.try_find("tr[data-org=globex]").await.is_none());
    b.find("svg.trend").await;

    // The organisation: all three devices.
    b.click("table#fleet a[href='/org/acme']").await;
    b.find("table#devices").await;
    let mut all = vec![w.zoom.clone(), w.telemost.clone(), w.hostile.clone()];
    all.sort();
    assert_eq!(device_rows(&b).await, all);
    b.find("svg.trend").await;

    // Filter to noncompliant with the form.
    b.select("form#filters select[name=status]", "noncompliant")
        .await;
    b.submit("form#filters button[type=submit]", "table#devices")
        .await;
    assert!(
        b.url().await.contains("status=noncompliant"),
        "{}",
        b.url().await
    );
    let mut noncompliant = vec![w.zoom.clone(), w.hostile.clone()];
    noncompliant.sort();
    assert_eq!(device_rows(&b).await, noncompliant);

    // Export what is shown: the link keeps the filter; the CSV holds exactly those devices
    // and the hostile host name starts with a quote, not a formula.
    let href = b.attr("a#export-csv", "href").await.expect("href");
    assert!(href.contains("status=noncompliant"), "{href}");
    let csv = b.fetch(&href).await;
    assert_eq!(csv.status, 200, "{}", csv.body);
    assert!(
        csv.header("content-type")
            .is_some_and(|t| t.starts_with("text/csv")),
        "{:?}",
        csv.headers
    );
    let lines: Vec<&str> = csv.body.lines().collect();
    assert!(lines[0].starts_with("device_id,"), "{}", csv.body);
    assert_eq!(lines.len(), 3, "{}", csv.body);
    assert!(csv.body.contains(&w.zoom) && csv.body.contains(&w.hostile));
    assert!(!csv.body.contains(&w.telemost));
    assert!(
        csv.body.contains("\"'=HYPERLINK(\"\"http://x\"\")"),
        "{}",
        csv.body
    );
    for line in &lines {
        for field in line.split(',') {
            let bare = field.trim_start_matches('"');
            assert!(
                !bare.starts_with(['=', '+', '@']),
                "a formula cell in the export: {line}"
            );
        }
    }

    // The device with Zoom: its findings with evidence, history and sources.
    b.click(&format!("tr[data-device='{}'] a", w.zoom)).await;
    b.find("#findings").await;
    assert_eq!(b.path().await, format!("/device/{}", w.zoom));
    let finding = b.text("#findings article.finding[data-product=zoom]").await;
    let evidence = b
        .text("#findings article.finding[data-product=zoom] ul.evidence")
        .await;
    assert!(evidence.contains("dpkg"), "{finding}");
    assert!(evidence.contains("zoom"), "{finding}");
    b.find("#history").await;
    b.find("#waivers").await;
    assert!(b.text("#sources").await.contains("dpkg"));

    // A filter straight from the URL: compliant Linux devices; the form shows it.
    b.goto(&format!("{web}/org/acme?status=compliant&platform=linux"))
        .await;
    assert_eq!(device_rows(&b).await, vec![w.telemost.clone()]);
    let shown = b
        .eval("return document.querySelector('form#filters select[name=status]').value")
        .await;
    assert_eq!(shown, "compliant");

    // Map a candidate to a product.
    b.goto(&format!("{web}/candidates?org=acme")).await;
    let row = format!("tr[data-candidate='{JITSI}']");
    b.find(&row).await;
    assert!(undecided(&w.c, "acme").contains(&JITSI.to_owned()));
    b.select(&format!("{row} form.map select[name=product]"), "zoom")
        .await;
    b.submit(
        &format!("{row} form.map button[type=submit]"),
        "p.ok[role=status]",
    )
    .await;
    assert!(
        b.try_find(&row).await.is_none(),
        "a mapped candidate is listed"
    );
    assert!(!undecided(&w.c, "acme").contains(&JITSI.to_owned()));

    // Sign out; the console is closed from then on.
    b.submit("form#sign-out button[type=submit]", "input#token")
        .await;
    assert_eq!(b.path().await, "/login");
    b.goto(&format!("{web}/org/acme")).await;
    assert_eq!(b.path().await, "/login");
    assert!(b.try_find("table#devices").await.is_none());
    b.close().await;
}

/// An officer of acme who edits URLs and form fields in the browser reaches none of globex's
/// devices, candidates or tokens, and changes none of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn officer_editing_urls_and_forms_cannot_reach_another_organisation() {
    let w = world().await;
    let Some(b) = browser("officer_editing_urls", &w.c, None).await else {
        return;
    };
    let web = &w.c.web_url;
    sign_in(&b, &w.c, &w.officer).await;

    for path in [
        "/org/globex".to_owned(),
        "/org/globex?status=noncompliant".to_owned(),
        format!("/device/{}", w.globex_device),
        "/candidates?org=globex".to_owned(),
        "/tokens?org=globex".to_owned(),
    ] {
        b.goto(&format!("{web}{path}")).await;
        assert!(refused(&b).await.is_some(), "{path} was shown");
        let text = b.text("body").await;
        for secret in [
            "globex-secret-host",
            GLOBEX_APP,
            &w.globex_device,
            &w.globex_token,
        ] {
            assert!(!text.contains(secret), "{path} shows {secret}");
        }
    }
    for path in ["/org/globex/export.csv", "/org/globex/export.json"] {
        let got = b.fetch(&format!("{web}{path}")).await;
        assert_eq!(got.status, 403, "{path}: {}", got.body);
        assert!(!got.body.contains(&w.globex_device));
    }

    // Forms of their own pages pointed at globex.
    let tokens_before = tokens_of(&w.c, "globex").await;
    b.goto(&format!("{web}/candidates?org=acme")).await;
    tamper_and_submit(
        &b,
        "form.map",
        "/candidates/globex/map",
        &[("name", GLOBEX_APP), ("product", "zoom")],
    )
    .await;
    assert_eq!(refused(&b).await.as_deref(), Some("403"));
    b.goto(&format!("{web}/candidates?org=acme")).await;
    tamper_and_submit(
        &b,
        "form.dismiss",
        "/candidates/globex/dismiss",
        &[("name", GLOBEX_APP)],
    )
    .await;
    assert_eq!(refused(&b).await.as_deref(), Some("403"));
    assert_eq!(undecided(&w.c, "globex"), vec![GLOBEX_APP.to_owned()]);

    b.goto(&format!("{web}/tokens?org=acme")).await;
    tamper_and_submit(&b, "form#create-token", "/tokens", &[("org", "globex")]).await;
    assert_eq!(refused(&b).await.as_deref(), Some("403"));
    assert!(b.try_find("#secret").await.is_none());
    b.goto(&format!("{web}/tokens?org=acme")).await;
    tamper_and_submit(
        &b,
        "form.revoke",
        &format!("/tokens/{}/revoke", w.globex_token),
        &[],
    )
    .await;
    assert!(
        refused(&b).await.is_some(),
        "revoking globex's token was answered"
    );
    assert_eq!(tokens_of(&w.c, "globex").await, tokens_before);
    assert!(tokens_before.iter().all(|(_, revoked)| !revoked));
    b.close().await;
}

/// An analyst (signed in with a one-time link) reads the fleet and organisation summaries
/// but never a device row, a device page or an export.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analyst_never_sees_device_rows() {
    let w = world().await;
    let Some(b) = browser("analyst_never_sees_device_rows", &w.c, None).await else {
        return;
    };
    let web = &w.c.web_url;
    let code =
        w.c.admin_as(&w.c.admin_token)
            .await
            .create_login_link(v1::CreateLoginLinkRequest {
                person_id: w.analyst_id.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .code;
    b.goto(&format!("{web}/login/link?code={code}")).await;
    b.find("table#fleet").await;
    assert_eq!(b.path().await, "/fleet");
    b.find("table#fleet tr[data-org=acme]").await;

    b.goto(&format!("{web}/org/acme")).await;
    b.find("section.summary").await;
    assert!(b.try_find("table#devices").await.is_none());
    assert!(b.find_all("[data-device]").await.is_empty());
    let text = b.text("body").await;
    for id in [&w.zoom, &w.telemost, &w.hostile] {
        assert!(
            !text.contains(id.as_str()),
            "a device id on the analyst's page"
        );
    }
    assert!(
        !text.contains("<script>"),
        "a device's host name on the analyst's page"
    );
    b.goto(&format!("{web}/device/{}", w.zoom)).await;
    assert_eq!(refused(&b).await.as_deref(), Some("403"));
    let csv = b.fetch(&format!("{web}/org/acme/export.csv")).await;
    assert_eq!(csv.status, 403, "{}", csv.body);
    b.close().await;
}

/// An auditor reads devices and the audit log, and every change they try through the
/// console's own forms (map, dismiss, create and revoke a token) is refused and changes
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auditor_reads_and_changes_nothing() {
    let w = world().await;
    let Some(b) = browser("auditor_reads_and_changes_nothing", &w.c, None).await else {
        return;
    };
    let web = &w.c.web_url;
    sign_in(&b, &w.c, &w.auditor).await;
    b.goto(&format!("{web}/audit")).await;
    b.find("table#audit").await;
    b.goto(&format!("{web}/org/acme")).await;
    assert_eq!(device_rows(&b).await.len(), 3);

    let undecided_before = undecided(&w.c, "acme");
    let tokens_before = tokens_of(&w.c, "acme").await;
    b.goto(&format!("{web}/candidates?org=acme")).await;
    let row = format!("tr[data-candidate='{JITSI}']");
    // Auditors read candidates (they are device data), so the page offers the forms.
    b.find(&row).await;
    b.submit(&format!("{row} form.map button[type=submit]"), "h1")
        .await;
    assert_eq!(refused(&b).await.as_deref(), Some("403"));
    b.goto(&format!("{web}/candidates?org=acme")).await;
    b.submit(&format!("{row} form.dismiss button[type=submit]"), "h1")
        .await;
    assert_eq!(refused(&b).await.as_deref(), Some("403"));
    // Tokens: the page is not theirs; the sign-out form (it carries their CSRF token) pointed
    // at the token actions instead.
    b.goto(&format!("{web}/tokens?org=acme")).await;
    assert!(b.try_find("form#create-token").await.is_none() || refused(&b).await.is_some());
    b.goto(&format!("{web}/fleet")).await;
    tamper_and_submit(&b, "form#sign-out", "/tokens", &[("org", "acme")]).await;
    assert_eq!(refused(&b).await.as_deref(), Some("403"));
    b.goto(&format!("{web}/fleet")).await;
    tamper_and_submit(
        &b,
        "form#sign-out",
        &format!("/tokens/{}/revoke", tokens_before[0].0),
        &[],
    )
    .await;
    assert_eq!(refused(&b).await.as_deref(), Some("403"));
    assert_eq!(undecided(&w.c, "acme"), undecided_before);
    assert_eq!(tokens_of(&w.c, "acme").await, tokens_before);
    b.close().await;
}

/// Whether anything the device sent ran or became markup: an open dialog, the script's
/// global, an `img`/`svg`/`iframe` that the page's own markup does not have.
async fn assert_nothing_ran(b: &Browser, page: &str) {
    assert_eq!(b.open_dialog().await, None, "a dialog opened on {page}");
    let injected = b
        .eval(
            "return [window.__pwned === undefined,
                     document.querySelectorAll('img, iframe, [onerror], [onload]').length,
                     Array.from(document.scripts).filter(s => !s.src).length]",
        )
        .await;
    assert_eq!(
        injected,
        serde_json::json!([true, 0, 0]),
        "markup from a device on {page}"
    );
}

/// A device whose host name, versions, evidence and application names are HTML, attribute
/// breakouts and formulas: every page that shows them shows the characters, and nothing
/// runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_strings_are_shown_as_text_and_run_nothing() {
    let w = world().await;
    let Some(b) = browser("hostile_strings", &w.c, None).await else {
        return;
    };
    let web = &w.c.web_url;
    sign_in(&b, &w.c, &w.c.admin_token).await;

    b.goto(&format!("{web}/org/acme")).await;
    let row = b
        .text(&format!("table#devices tr[data-device='{}']", w.hostile))
        .await;
    assert!(row.contains(HOSTILE_HOST), "{row}");
    assert_nothing_ran(&b, "the organisation").await;

    b.goto(&format!("{web}/device/{}", w.hostile)).await;
    assert!(b.text("h1").await.contains(HOSTILE_HOST));
    let findings = b.text("#findings").await;
    assert!(findings.contains(HOSTILE_VERSION), "{findings}");
    assert!(findings.contains(HOSTILE_EVIDENCE), "{findings}");
    let title = b.eval("return document.title").await;
    assert!(
        title.as_str().is_some_and(|t| t.contains(HOSTILE_HOST)),
        "{title}"
    );
    assert_nothing_ran(&b, "the device").await;

    b.goto(&format!("{web}/candidates?org=acme")).await;
    let names = b.text("table#candidates").await;
    assert!(names.contains(HOSTILE_APP), "{names}");
    // The hidden field carries the name exactly, as the value, not as markup.
    let value = b
        .eval("return Array.from(document.querySelectorAll('form.map input[name=name]')).map(i => i.value)")
        .await;
    assert!(
        value
            .as_array()
            .is_some_and(|v| v.contains(&serde_json::json!(HOSTILE_APP))),
        "{value}"
    );
    assert_nothing_ran(&b, "the candidates").await;

    for path in ["/fleet", "/products", "/audit"] {
        b.goto(&format!("{web}{path}")).await;
        assert_nothing_ran(&b, path).await;
    }
    b.close().await;
}

/// Pages every role may see, in the admin's session: path and screenshot name.
fn pages(w: &World) -> Vec<(String, &'static str)> {
    vec![
        ("/fleet".into(), "fleet"),
        ("/org/acme".into(), "organisation"),
        (
            "/org/acme?status=noncompliant".into(),
            "organisation-noncompliant",
        ),
        (format!("/device/{}", w.zoom), "device"),
        ("/products".into(), "products"),
        ("/candidates?org=acme".into(), "candidates"),
        ("/tokens?org=acme".into(), "tokens"),
        ("/people".into(), "people"),
        ("/audit".into(), "audit"),
        ("/enterprises".into(), "enterprises"),
    ]
}

/// Every page passes axe with no serious or critical violation, sends a CSP that allows no
/// inline script and refuses framing, has no inline script or event-handler attribute, keeps
/// the session cookie from scripts, and puts a CSRF token in every POST form; each is
/// photographed at 1280×800 into the screenshots folder, in English and one in Russian; the
/// organisation page is usable on a phone-sized viewport.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_is_accessible_locked_down_and_photographed() {
    let w = world().await;
    let Some(b) = browser("every_page", &w.c, None).await else {
        return;
    };
    let web = &w.c.web_url;

    b.goto(&format!("{web}/login")).await;
    b.assert_accessible("/login").await;
    b.screenshot("console-login").await;
    let login = b.fetch(&format!("{web}/login")).await;
    assert_locked_down(&login, "/login");

    sign_in(&b, &w.c, &w.c.admin_token).await;
    let cookies = b.eval("return document.cookie").await;
    assert!(
        !cookies
            .as_str()
            .unwrap_or_default()
            .contains("__Host-commscan"),
        "the session cookie is readable by scripts: {cookies}"
    );
    for (path, name) in pages(&w) {
        b.goto(&format!("{web}{path}")).await;
        b.find("main#main h1").await;
        assert!(refused(&b).await.is_none(), "{path} refused the admin");
        assert_locked_down(&b.fetch(&format!("{web}{path}")).await, &path);
        let page = b
            .eval(
                "return {
                   inline: Array.from(document.scripts).filter(s => !s.src).length,
                   handlers: Array.from(document.querySelectorAll('*'))
                     .flatMap(e => Array.from(e.attributes).map(a => a.name))
                     .filter(n => n.startsWith('on')).length,
                   postForms: Array.from(document.querySelectorAll('form'))
                     .filter(f => f.method === 'post').length,
                   withoutCsrf: Array.from(document.querySelectorAll('form'))
                     .filter(f => f.method === 'post')
                     .filter(f => !(f.querySelector('input[name=csrf]') || {}).value).length,
                   lang: document.documentElement.lang,
                 }",
            )
            .await;
        assert_eq!(page["inline"], 0, "{path}: inline script");
        assert_eq!(page["handlers"], 0, "{path}: event-handler attributes");
        assert!(
            page["postForms"].as_u64() >= Some(1),
            "{path}: no sign-out form"
        );
        assert_eq!(page["withoutCsrf"], 0, "{path}: a POST form without CSRF");
        assert_eq!(page["lang"], "en", "{path}");
        let csp = b.csp_violations().await;
        assert!(
            csp.is_empty(),
            "{path}: the page breaks its own CSP: {csp:?}"
        );
        b.assert_accessible(&path).await;
        b.screenshot(&format!("console-{name}")).await;
    }

    // Russian, switched from a page and remembered.
    b.goto(&format!("{web}/fleet?lang=ru")).await;
    assert_eq!(b.eval("return document.documentElement.lang").await, "ru");
    b.goto(&format!("{web}/org/acme")).await;
    assert_eq!(b.eval("return document.documentElement.lang").await, "ru");
    b.assert_accessible("/org/acme in Russian").await;
    b.screenshot("console-organisation-ru").await;

    // A phone: no sideways scrolling of the page (wide tables scroll in their own box).
    b.viewport(PHONE).await;
    b.goto(&format!("{web}/org/acme?lang=en")).await;
    assert!(
        !b.overflows_horizontally().await,
        "/org/acme scrolls sideways at {}×{}",
        PHONE.0,
        PHONE.1
    );
    b.assert_accessible("/org/acme on a phone").await;
    b.screenshot("console-organisation-phone").await;
    b.close().await;
}

/// The headers of a page: a CSP without inline script and with `frame-ancestors 'none'`,
/// framing refused for older browsers too, nothing sniffed.
fn assert_locked_down(page: &commscan_tests::browser::Fetched, path: &str) {
    assert_eq!(page.status, 200, "{path}");
    let csp = page.header("content-security-policy").unwrap_or_default();
    assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
    assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{path}: {csp}"
    );
    assert_eq!(page.header("x-frame-options"), Some("DENY"), "{path}");
    assert_eq!(
        page.header("x-content-type-options"),
        Some("nosniff"),
        "{path}"
    );
}

/// A browser asking for Russian gets the console in Russian, sign-in page first; `?lang=en`
/// switches to English and it stays English.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn russian_from_accept_language_and_switchable() {
    let c = TestCollector::start().await;
    let Some(b) = browser("russian_from_accept_language", &c, Some("ru-RU,ru")).await else {
        return;
    };
    let web = &c.web_url;
    b.goto(&format!("{web}/login")).await;
    assert_eq!(b.eval("return document.documentElement.lang").await, "ru");
    let button = b.text("button#sign-in").await;
    assert!(
        button
            .chars()
            .any(|ch| ('\u{400}'..='\u{4FF}').contains(&ch)),
        "the sign-in button is not in Russian: {button}"
    );
    sign_in(&b, &c, &c.admin_token).await;
    assert_eq!(b.eval("return document.documentElement.lang").await, "ru");
    b.screenshot("console-fleet-ru").await;
    b.click("a[hreflang=en]").await;
    b.wait_for("English", || async {
        (b.eval("return document.documentElement.lang").await == "en").then_some(())
    })
    .await;
    b.goto(&format!("{web}/products")).await;
    assert_eq!(b.eval("return document.documentElement.lang").await, "en");
    b.close().await;
}

/// Verdict changes reach an open page without reloading (server-sent events): the device's
/// status cell and the live line change, as text; an officer of acme hears nothing of
/// globex's devices.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verdict_changes_appear_without_reloading_and_only_for_the_readers_organisations() {
    let w = world().await;
    let Some(b) = browser("verdict_changes_appear", &w.c, None).await else {
        return;
    };
    let web = &w.c.web_url;
    let root = dpkg_fixture(&[TELEMOST]);
    let data = w.c.enroll_agent("pc-live").await;
    let session = |data: commscan_agent::state::DataDir| {
        let root = root.path().to_owned();
        async move {
            reporter(data, &root)
                .session(Duration::from_secs(3600), true, &CancellationToken::new())
                .await
                .unwrap();
        }
    };
    session(data.clone()).await;
    let id = data.identity().unwrap().device_id;

    sign_in(&b, &w.c, &w.officer).await;
    b.goto(&format!("{web}/org/acme")).await;
    let cell = format!("tr[data-device='{id}'] .st");
    assert!(b.text(&cell).await.contains("compliant"));
    assert!(!b.text(&cell).await.contains("noncompliant"));
    // Every text the live line shows, and a mark that is lost if the page reloads.
    b.eval(
        "window.__seen = [];
         window.__same_page = true;
         new MutationObserver(() => window.__seen.push(document.getElementById('live').textContent))
           .observe(document.getElementById('live'), { childList: true, characterData: true, subtree: true });
         return null",
    )
    .await;
    // The page's event stream is open (the server subscribed) before anything changes.
    b.wait_for_event_stream().await;

    // First globex changes (a new device with Zoom), then acme's device installs Zoom.
    raw_report(
        &w.c,
        "globex-zoom",
        &w.c.admin_as(&w.c.admin_token)
            .await
            .create_enrollment_token(v1::CreateEnrollmentTokenRequest {
                organisation: "globex".into(),
                uses: 0,
                expires_in_seconds: 0,
                new_organisation: true,
            })
            .await
            .unwrap()
            .into_inner()
            .secret,
        "globex-live-host",
        vec![v1::Finding {
            product: "zoom".into(),
            installed: true,
            running: false,
            version: "6.1.0".into(),
            evidence: vec![],
        }],
        vec![],
    )
    .await;
    commscan_tests::write_dpkg(root.path(), &[TELEMOST, ZOOM]);
    session(data.clone()).await;

    b.wait_for("the row to turn noncompliant", || async {
        b.text(&cell).await.contains("noncompliant").then_some(())
    })
    .await;
    let seen = b
        .eval("return [window.__same_page === true, window.__seen]")
        .await;
    assert_eq!(seen[0], true, "the page reloaded");
    let seen: Vec<String> = serde_json::from_value(seen[1].clone()).unwrap();
    assert!(
        seen.iter().any(|t| t.contains("acme")),
        "the live line never told of acme's change: {seen:?}"
    );
    assert!(
        !seen.iter().any(|t| t.contains("globex")),
        "an acme officer heard of globex: {seen:?}"
    );
    assert_nothing_ran(&b, "the organisation, after live updates").await;
    b.close().await;
}
