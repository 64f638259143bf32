//! Federation end to end: two enterprise collectors with reporting devices and a ministry
//! collector, all on loopback. Enterprise `e1` is granted `acme` and `globex`; `e2` is granted
//! `acme` only and also has a local organisation, `secret`, that it was not granted.
//!
//! | enterprise | organisation | devices |
//! |---|---|---|
//! | e1 | acme | one with zoom (noncompliant), one clean (compliant) |
//! | e1 | globex | one clean |
//! | e2 | acme | one with zoom |
//! | e2 | secret | one clean (never leaves e2) |

use commscan_agent::state::DataDir;
use commscan_collector::federation::upstream::Upstream;
use commscan_collector::layout::OpenSettings;
use commscan_core::verdict::Status;
use commscan_ctl::output::{self, Format};
use commscan_proto::convert;
use commscan_proto::v1::{self, federation_client::FederationClient};
use commscan_tests::{
    StartOptions, TestClock, TestCollector, dpkg_fixture, reporter, wait_until, write_dpkg,
};
use std::path::PathBuf;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The ministry's freshness window.
const WINDOW: Duration = Duration::from_secs(600);
/// Bound of every wait: generous, for a loaded machine.
const PATIENCE: Duration = Duration::from_secs(60);

const ZOOM: (&str, &str, &str) = ("zoom", "install ok installed", "6.1.0");
const BASH: (&str, &str, &str) = ("bash", "install ok installed", "5.2");

struct Device {
    data: DataDir,
    root: tempfile::TempDir,
}

impl Device {
    async fn report(&self) {
        reporter(self.data.clone(), self.root.path())
            .session(Duration::from_secs(3600), true, &CancellationToken::new())
            .await
            .expect("report");
    }

    fn id(&self) -> String {
        self.data.identity().unwrap().device_id
    }
}

struct World {
    ministry: TestCollector,
    clock: TestClock,
    e1: TestCollector,
    e2: TestCollector,
    e1_devices: Vec<Device>,
    e2_zoom: Device,
    e2_secret: Device,
}

/// Where the ministry wrote an enterprise's certificate files.
fn issued(ministry: &TestCollector, enterprise: &str) -> PathBuf {
    ministry.dir.path().join("issued").join(enterprise)
}

fn read(p: PathBuf) -> String {
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

async fn enterprise(
    ministry: &TestCollector,
    id: &str,
    orgs: &[&str],
    interval: Duration,
) -> TestCollector {
    let out = issued(ministry, id);
    let orgs: Vec<String> = orgs.iter().map(|o| (*o).to_owned()).collect();
    ministry
        .layout
        .issue_enterprise(id, &orgs, &out)
        .expect("issue");
    let mut upstream = Upstream::from_pem(
        &ministry.url,
        &read(out.join("ministry-ca.crt")),
        &read(out.join("enterprise.crt")),
        &read(out.join("enterprise.key")),
        interval,
    )
    .expect("upstream");
    upstream.change_poll = Duration::from_millis(200);
    TestCollector::start_with(StartOptions {
        trust_domain: format!("{id}.test"),
        upstream: Some(upstream),
        ..Default::default()
    })
    .await
}

async fn token(c: &TestCollector, org: &str) -> String {
    c.admin_as(&c.admin_token)
        .await
        .create_enrollment_token(v1::CreateEnrollmentTokenRequest {
            organisation: org.into(),
            uses: 0,
            expires_in_seconds: 0,
            new_organisation: true,
        })
        .await
        .expect("token")
        .into_inner()
        .secret
}

async fn device(
    c: &TestCollector,
    name: &str,
    token: &str,
    packages: &[(&str, &str, &str)],
) -> Device {
    let d = Device {
        data: c.enroll_agent_with(name, token).await,
        root: dpkg_fixture(packages),
    };
    d.report().await;
    d
}

/// Both enterprises push every `interval` and on change.
async fn world(interval: Duration) -> World {
    let clock = TestClock::default();
    let ministry = TestCollector::start_with(StartOptions {
        trust_domain: "ministry.test".into(),
        settings: OpenSettings {
            clock: clock.clock(),
            federation_stale_after: WINDOW,
            postgres: None,
            ..OpenSettings::default()
        },
        upstream: None,
        ..Default::default()
    })
    .await;
    let e1 = enterprise(&ministry, "e1", &["acme", "globex"], interval).await;
    let e2 = enterprise(&ministry, "e2", &["acme"], interval).await;
    let globex = token(&e1, "globex").await;
    let e1_devices = vec![
        device(&e1, "a-zoom", &e1.enrolment_token, &[ZOOM, BASH]).await,
        device(&e1, "a-clean", &e1.enrolment_token, &[BASH]).await,
        device(&e1, "g-clean", &globex, &[BASH]).await,
    ];
    let e2_zoom = device(&e2, "b-zoom", &e2.enrolment_token, &[ZOOM]).await;
    let secret = token(&e2, "secret").await;
    let e2_secret = device(&e2, "s-clean", &secret, &[BASH]).await;
    World {
        ministry,
        clock,
        e1,
        e2,
        e1_devices,
        e2_zoom,
        e2_secret,
    }
}

async fn fleet(c: &TestCollector, token: &str) -> v1::FleetSummaryResponse {
    c.query_as(token)
        .await
        .fleet_summary(v1::FleetSummaryRequest {})
        .await
        .expect("fleet summary")
        .into_inner()
}

fn count(list: &[v1::StatusCount], s: Status) -> u64 {
    list.iter()
        .find(|c| c.status == convert::status_to_wire(s))
        .map_or(0, |c| c.devices)
}

/// `(enterprise, organisation, devices, compliant, noncompliant, stale flag)` per row.
type Row = (String, String, u64, u64, u64, bool);

fn rows(f: &v1::FleetSummaryResponse) -> Vec<Row> {
    f.rows
        .iter()
        .map(|r| {
            (
                r.enterprise.clone(),
                r.organisation.clone(),
                r.devices,
                count(&r.by_status, Status::Compliant),
                count(&r.by_status, Status::Noncompliant),
                r.stale,
            )
        })
        .collect()
}

fn row(e: &str, o: &str, devices: u64, compliant: u64, noncompliant: u64, stale: bool) -> Row {
    (e.into(), o.into(), devices, compliant, noncompliant, stale)
}

/// Waits until the ministry's fleet summary (as admin) has exactly `want`; on timeout, says
/// what it showed last.
async fn ministry_shows(w: &World, want: Vec<Row>) -> v1::FleetSummaryResponse {
    let last = std::sync::Mutex::new(Vec::new());
    let waited = tokio::time::timeout(
        PATIENCE,
        wait_until(2 * PATIENCE, "the ministry's fleet summary", || async {
            let f = fleet(&w.ministry, &w.ministry.admin_token).await;
            let seen = rows(&f);
            let done = seen == want;
            *last.lock().unwrap() = seen;
            done.then_some(f)
        }),
    )
    .await;
    match waited {
        Ok(f) => f,
        Err(_) => panic!(
            "the ministry shows {:?}, expected {want:?}",
            last.lock().unwrap()
        ),
    }
}

fn all_four_rows() -> Vec<Row> {
    vec![
        row("e1", "acme", 2, 1, 1, false),
        row("e1", "globex", 1, 1, 0, false),
        row("e2", "acme", 1, 0, 1, false),
    ]
}

async fn push_as(
    ministry: &TestCollector,
    cert_key: Option<(String, String)>,
    organisation: &str,
) -> Result<v1::PushSummaryResponse, tonic::Status> {
    let identity = cert_key.as_ref().map(|(c, k)| (c.as_str(), k.as_str()));
    let channel = commscan_runtime::transport::channel(&ministry.url, &ministry.ca_pem, identity)
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    FederationClient::new(channel)
        .push_summary(v1::PushSummaryRequest {
            generated_at: Some(convert::timestamp(time::OffsetDateTime::now_utc())),
            organisations: vec![v1::OrganisationAggregate {
                organisation: organisation.into(),
                devices: 7,
                by_status: vec![v1::StatusCount {
                    status: convert::status_to_wire(Status::Compliant),
                    devices: 7,
                }],
                by_product: vec![],
                percent_compliant: 100.0,
            }],
        })
        .await
        .map(tonic::Response::into_inner)
}

fn enterprise_credentials(ministry: &TestCollector, enterprise: &str) -> (String, String) {
    let dir = issued(ministry, enterprise);
    (
        read(dir.join("enterprise.crt")),
        read(dir.join("enterprise.key")),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ministry_fleet_summary_shows_both_enterprises_organisations_with_their_counts() {
    let w = world(Duration::from_secs(3600)).await;
    let f = ministry_shows(&w, all_four_rows()).await;
    assert_eq!(f.total_devices, 4);
    assert_eq!(count(&f.total_by_status, Status::Compliant), 2);
    assert_eq!(count(&f.total_by_status, Status::Noncompliant), 2);
    assert_eq!(f.percent_compliant, 50.0);
    for r in &f.rows {
        assert!(r.updated_at.is_some(), "freshness shown: {r:?}");
    }
    // Product counts add up across enterprises too.
    let products = w
        .ministry
        .query()
        .await
        .product_findings(v1::ProductFindingsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .products;
    let zoom = products.iter().find(|p| p.product == "zoom").unwrap();
    assert_eq!((zoom.devices, zoom.violating), (2, 2));
    // An analyst scoped to acme sees acme in every enterprise, and nothing else.
    let analyst = w
        .ministry
        .admin_as(&w.ministry.admin_token)
        .await
        .create_access_token(v1::CreateAccessTokenRequest {
            name: "acme-analyst".into(),
            grants: vec![v1::Grant {
                role: v1::Role::Analyst as i32,
                organisation: "acme".into(),
            }],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .secret;
    let scoped = fleet(&w.ministry, &analyst).await;
    assert_eq!(
        rows(&scoped),
        [
            row("e1", "acme", 2, 1, 1, false),
            row("e2", "acme", 1, 0, 1, false)
        ]
    );
    // The ministry prints the enterprise column and freshness.
    let table = output::fleet(&f, Format::Table, false);
    assert!(
        table.contains("ENTERPRISE") && table.contains("FRESHNESS"),
        "{table}"
    );
    assert!(table.contains("e2") && table.contains("fresh"), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn organisations_not_granted_to_an_enterprise_never_leave_it() {
    let w = world(Duration::from_secs(3600)).await;
    ministry_shows(&w, all_four_rows()).await;
    // e2's `secret` organisation is there locally, and absent at the ministry.
    let local = fleet(&w.e2, &w.e2.admin_token).await;
    assert!(local.rows.iter().any(|r| r.organisation == "secret"));
    // e2 never even tried (the ministry would have refused its whole push).
    assert!(
        !w.ministry
            .audit()
            .iter()
            .any(|e| e.actor == "enterprise/e2"),
        "{:?}",
        w.ministry.audit()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_change_at_an_enterprise_reaches_the_ministry_without_waiting_for_the_interval() {
    let w = world(Duration::from_secs(3600)).await;
    ministry_shows(&w, all_four_rows()).await;
    // The zoom device of e2 uninstalls zoom and reports.
    write_dpkg(w.e2_zoom.root.path(), &[BASH]);
    w.e2_zoom.report().await;
    ministry_shows(
        &w,
        vec![
            row("e1", "acme", 2, 1, 1, false),
            row("e1", "globex", 1, 1, 0, false),
            row("e2", "acme", 1, 1, 0, false),
        ],
    )
    .await;
    // And a new device enrolled at e1 shows too.
    let later = device(&w.e1, "a-new", &w.e1.enrolment_token, &[ZOOM]).await;
    ministry_shows(
        &w,
        vec![
            row("e1", "acme", 3, 1, 2, false),
            row("e1", "globex", 1, 1, 0, false),
            row("e2", "acme", 1, 1, 0, false),
        ],
    )
    .await;
    assert!(!later.id().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_enterprise_pushing_an_organisation_it_does_not_own_is_refused_and_audited() {
    let w = world(Duration::from_secs(3600)).await;
    ministry_shows(&w, all_four_rows()).await;
    // e2's own certificate, pushing e1's globex.
    let err = push_as(
        &w.ministry,
        Some(enterprise_credentials(&w.ministry, "e2")),
        "globex",
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("globex"), "{err:?}");
    let denied = w
        .ministry
        .audit()
        .into_iter()
        .find(|e| e.actor == "enterprise/e2" && !e.allowed)
        .expect("the refusal is audited");
    assert_eq!(denied.action, "federation.push_summary");
    assert_eq!(denied.organisation.as_deref(), Some("globex"));
    // Nothing changed: e1's globex and e2's acme are as their owners pushed them.
    assert_eq!(
        rows(&fleet(&w.ministry, &w.ministry.admin_token).await),
        all_four_rows()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_device_certificate_cannot_push_summaries() {
    let w = world(Duration::from_secs(3600)).await;
    ministry_shows(&w, all_four_rows()).await;
    // A device of the ministry itself: its certificate chains to the ministry's CA, so TLS
    // accepts it, but it names a device, not an enterprise.
    let ministry_device = w.ministry.enroll_agent("ministry-laptop").await;
    let (_, cert, key) = ministry_device.credentials().unwrap();
    let err = push_as(&w.ministry, Some((cert, key)), "acme")
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    let device_id = ministry_device.identity().unwrap().device_id;
    assert!(
        w.ministry
            .audit()
            .iter()
            .any(|e| e.actor == format!("device/{device_id}")
                && e.action == "federation.push_summary"
                && !e.allowed),
        "the refusal is audited"
    );
    // A device of an enterprise: another CA, refused before any call is made.
    let (_, cert, key) = w.e1_devices[0].data.credentials().unwrap();
    assert!(
        push_as(&w.ministry, Some((cert, key)), "acme")
            .await
            .is_err()
    );
    // No certificate at all.
    let err = push_as(&w.ministry, None, "acme").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    // Nothing was stored; the ministry's own (never reported) device is a local row.
    let mut want = vec![row("", "acme", 1, 0, 0, false)];
    want.extend(all_four_rows());
    assert_eq!(
        rows(&fleet(&w.ministry, &w.ministry.admin_token).await),
        want
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_enterprise_certificate_cannot_report_as_a_device() {
    let w = world(Duration::from_secs(3600)).await;
    let (cert, key) = enterprise_credentials(&w.ministry, "e1");
    let channel = commscan_runtime::transport::channel(
        &w.ministry.url,
        &w.ministry.ca_pem,
        Some((&cert, &key)),
    )
    .await
    .unwrap();
    let hello = v1::AgentMessage {
        kind: Some(v1::agent_message::Kind::Hello(v1::Hello::default())),
    };
    let err = v1::reporting_client::ReportingClient::new(channel)
        .connect(tokio_stream::iter([hello]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_enterprise_that_stops_pushing_turns_stale_and_its_devices_never_count_as_compliant() {
    // Both enterprises push every second; the ministry's window is ten minutes of its clock.
    let mut w = world(Duration::from_secs(1)).await;
    ministry_shows(&w, all_four_rows()).await;
    write_dpkg(w.e2_zoom.root.path(), &[BASH]);
    w.e2_zoom.report().await;
    let fresh = ministry_shows(
        &w,
        vec![
            row("e1", "acme", 2, 1, 1, false),
            row("e1", "globex", 1, 1, 0, false),
            row("e2", "acme", 1, 1, 0, false),
        ],
    )
    .await;
    assert_eq!(fresh.percent_compliant, 75.0);
    // e2 goes dark; the ministry's clock passes its window. e1 keeps pushing.
    w.e2.stop().await;
    w.clock.advance(WINDOW + Duration::from_secs(60));
    let f = ministry_shows(
        &w,
        vec![
            row("e1", "acme", 2, 1, 1, false),
            row("e1", "globex", 1, 1, 0, false),
            row("e2", "acme", 1, 1, 0, true),
        ],
    )
    .await;
    let e2 = &f.rows[2];
    assert_eq!(e2.percent_compliant, 0.0, "a stale row is never compliant");
    assert_eq!(f.total_devices, 4);
    assert_eq!(count(&f.total_by_status, Status::Stale), 1);
    assert_eq!(count(&f.total_by_status, Status::Compliant), 2);
    assert_eq!(f.percent_compliant, 50.0);
    let table = output::fleet(&f, Format::Table, false);
    assert!(table.contains("stale"), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_device_rows_ever_reach_the_ministry() {
    let mut w = world(Duration::from_secs(3600)).await;
    ministry_shows(&w, all_four_rows()).await;
    let listed = w
        .ministry
        .query()
        .await
        .list_devices(v1::ListDevicesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.devices.is_empty(), "{listed:?}");
    let store = w.ministry.domain().store();
    assert!(store.device_ids().unwrap().is_empty());
    assert!(store.org_aggregates().unwrap().is_empty());
    // Nothing identifying a device is anywhere in the ministry's files: no device id, no
    // evidence text.
    let mut markers: Vec<String> = w.e1_devices.iter().map(Device::id).collect();
    markers.push(w.e2_zoom.id());
    markers.push(w.e2_secret.id());
    markers.push("package zoom".into());
    w.ministry.stop().await;
    let mut files = vec![w.ministry.layout.root.clone()];
    let mut scanned = 0;
    while let Some(p) = files.pop() {
        if p.is_dir() {
            files.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        let bytes = std::fs::read(&p).unwrap();
        scanned += 1;
        for m in &markers {
            assert!(
                !bytes.windows(m.len()).any(|win| win == m.as_bytes()),
                "{} holds '{m}'",
                p.display()
            );
        }
    }
    assert!(scanned > 3);
    // The ministry did receive the enterprises' figures: the check above is not vacuous.
    w.ministry.restart().await;
    assert_eq!(
        w.ministry.domain().store().federated().unwrap().len(),
        3,
        "federated rows survive a restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_change_made_while_the_ministry_is_down_arrives_once_it_is_back() {
    let mut w = world(Duration::from_secs(3600)).await;
    ministry_shows(&w, all_four_rows()).await;
    w.ministry.stop().await;
    // While the ministry is down, e2's device drops zoom; e2's pushes fail and back off.
    write_dpkg(w.e2_zoom.root.path(), &[BASH]);
    w.e2_zoom.report().await;
    w.ministry.restart().await;
    ministry_shows(
        &w,
        vec![
            row("e1", "acme", 2, 1, 1, false),
            row("e1", "globex", 1, 1, 0, false),
            row("e2", "acme", 1, 1, 0, false),
        ],
    )
    .await;
}

/// The embedded catalog with one more dpkg product, `id`.
fn catalog_with(id: &str) -> String {
    format!(
        "{}\n[[product]]\nid = \"{id}\"\nname = \"{id}\"\nvendor = \"test\"\ncountry = \"RU\"\ncategories = [\"messenger\"]\nstatus = \"active\"\n\n[[product.signature]]\nkind = \"dpkg\"\nvalues = [\"{id}\"]\nsource = \"test\"\n",
        commscan_core::catalog::EMBEDDED_CATALOG
    )
}

/// Applies `text` as the catalog or the registers of `c`, as its administrator.
async fn apply(c: &TestCollector, kind: v1::RulesKind, text: &str) {
    c.admin_as(&c.admin_token)
        .await
        .apply_rules(v1::ApplyRulesRequest {
            kind: kind as i32,
            organisation: String::new(),
            text: text.to_owned(),
            note: "ministry file".into(),
        })
        .await
        .expect("apply");
}

/// An enterprise of `ministry` that accepts catalogs signed by `keys` and fetches every
/// 200 ms.
async fn fetching_enterprise(
    ministry: &TestCollector,
    id: &str,
    keys: Vec<commscan_core::signed_catalog::CatalogPublicKey>,
    fetch_registers: bool,
) -> TestCollector {
    let out = issued(ministry, id);
    ministry
        .layout
        .issue_enterprise(id, &["acme".to_owned()], &out)
        .expect("issue");
    let mut upstream = Upstream::from_pem(
        &ministry.url,
        &read(out.join("ministry-ca.crt")),
        &read(out.join("enterprise.crt")),
        &read(out.join("enterprise.key")),
        Duration::from_secs(3600),
    )
    .expect("upstream");
    upstream.change_poll = Duration::from_millis(200);
    upstream.fetch_interval = Duration::from_millis(200);
    upstream.fetch_registers = fetch_registers;
    TestCollector::start_with(StartOptions {
        trust_domain: format!("{id}.test"),
        settings: OpenSettings {
            catalog_keys: keys,
            ..OpenSettings::default()
        },
        upstream: Some(upstream),
        ..Default::default()
    })
    .await
}

/// The signed release in force at `c`, 0 without one.
fn release_in_force(c: &TestCollector) -> u64 {
    c.domain()
        .rules()
        .signed_catalog
        .as_ref()
        .map_or(0, |s| s.release)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_enterprise_adopts_the_ministrys_signed_catalog_only_when_its_own_keys_verify_it() {
    use commscan_core::signed_catalog::{CatalogSigningKey, SignedCatalog};
    let (key, _) = CatalogSigningKey::generate().unwrap();
    let (other, _) = CatalogSigningKey::generate().unwrap();
    let ministry = TestCollector::start_with(StartOptions {
        trust_domain: "ministry.test".into(),
        ..Default::default()
    })
    .await;
    let envelope = SignedCatalog::sign(&catalog_with("newmsgr"), 2, &[&key]).unwrap();
    apply(&ministry, v1::RulesKind::Catalog, &envelope).await;
    let registers = format!(
        "{}\n# amended by the ministry\n",
        ministry.domain().rules().sources.registers.text
    );
    apply(&ministry, v1::RulesKind::Registers, &registers).await;

    // Trusting the key, e1 adopts release 2 unchanged (the bytes its agents will be sent),
    // with its history naming the ministry as author, and the registers it asked for.
    let e1 = fetching_enterprise(&ministry, "e1", vec![key.public_key()], true).await;
    wait_until(PATIENCE, "e1 adopts release 2", || async {
        (release_in_force(&e1) == 2).then_some(())
    })
    .await;
    let served = e1.domain().rules().signed_catalog.clone().unwrap();
    assert_eq!(served.bytes, envelope.as_bytes());
    assert!(e1.domain().rules().catalog.product("newmsgr").is_some());
    let stored = e1
        .domain()
        .store()
        .rules_version(commscan_collector::store::RulesKind::Catalog, None, None)
        .unwrap()
        .expect("a stored catalog version");
    assert_eq!(stored.author, format!("federation {}", ministry.url));
    wait_until(PATIENCE, "e1 takes the ministry's registers", || async {
        (e1.domain().rules().sources.registers.text == registers).then_some(())
    })
    .await;

    // e2 trusts another key, e3 none, e4 the key but not the registers: none adopts what it
    // must not, and e2 and e3 audit why they refused release 2.
    let e2 = fetching_enterprise(&ministry, "e2", vec![other.public_key()], true).await;
    let e3 = fetching_enterprise(&ministry, "e3", Vec::new(), false).await;
    let e4 = fetching_enterprise(&ministry, "e4", vec![key.public_key()], false).await;
    wait_until(PATIENCE, "e4 adopts release 2", || async {
        (release_in_force(&e4) == 2).then_some(())
    })
    .await;
    for (e, why) in [(&e2, "unsigned"), (&e3, "catalog_keys")] {
        wait_until(PATIENCE, "the refusal audited", || async {
            let log = e.domain().store().audit(0, 1000).unwrap();
            log.iter()
                .find(|(_, r)| r.action == "catalog.fetch" && !r.allowed)
                .map(|(_, r)| assert!(r.detail.contains(why), "{}", r.detail))
        })
        .await;
    }
    assert_eq!(
        release_in_force(&e2),
        0,
        "e2 must refuse a catalog its keys do not verify"
    );
    assert_eq!(release_in_force(&e3), 0, "e3 has no keys to verify with");
    assert!(e2.domain().rules().catalog.product("newmsgr").is_none());
    assert_ne!(e4.domain().rules().sources.registers.text, registers);
    // The ministry's catalog in force at e2 stays the embedded one; its registers (which
    // name no product outside it) were still taken.
    assert_eq!(e2.domain().rules().sources.registers.text, registers);

    // An administrator of e1 applying a catalog signed by a key e1 does not hold is refused
    // before anything is stored: release 2 stays in force.
    let forged = SignedCatalog::sign(&catalog_with("forged"), 3, &[&other]).unwrap();
    let err = e1
        .admin_as(&e1.admin_token)
        .await
        .apply_rules(v1::ApplyRulesRequest {
            kind: v1::RulesKind::Catalog as i32,
            organisation: String::new(),
            text: forged,
            note: "forged".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("release 3 refused"),
        "{}",
        err.message()
    );
    assert_eq!(release_in_force(&e1), 2);
}
