//! Harness for end-to-end tests: a real collector serving TLS on `127.0.0.1:0` from a fresh
//! data directory, agents enrolled against it, fixture trees, and a polling `wait_until`.
//!
//! Everything runs in-process on loopback; a [`TestCollector`] can be stopped and started
//! again on the same data directory to test restarts. [`StartOptions`] give a collector a
//! controllable clock ([`TestClock`]) and, for federation, an upstream it pushes to.

pub mod alert_sinks;
pub mod browser;
pub mod collector_process;
pub mod oracle;
pub mod wine;

use commscan_agent::delivery::Reporter;
use commscan_agent::scanner::{ScanTarget, Scanner};
use commscan_agent::state::DataDir;
use commscan_collector::collector::{Clock, Collector};
use commscan_collector::federation::upstream::Upstream;
use commscan_collector::layout::{InitOptions, Layout, OpenSettings};
use commscan_collector::server::{Limits, serve};
use commscan_core::catalog::Catalog;
use commscan_core::platform::Platform;
use commscan_ctl::connection::{AuthedAdmin, AuthedQuery, Connection};
use commscan_proto::v1;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A binary of another workspace package (`commscan-collector`, `commscan-agent`), as built
/// beside this test in `target/<profile>/`. `cargo test --workspace` builds every package's
/// binaries before it runs any test; with `cargo test -p commscan-tests` alone, build the
/// package first. Panics naming the command when the binary is missing.
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own executable");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("tests run from target/<profile>/deps");
    let bin = profile_dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is not built: run `cargo test --workspace`, or `cargo build --bin {name}` before `cargo test -p commscan-tests`",
        bin.display()
    );
    bin
}

/// Installs the rustls crypto provider once per test process.
pub fn init_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A clock running with the system clock plus an offset the test moves forward.
#[derive(Debug, Clone, Default)]
pub struct TestClock(Arc<AtomicI64>);

impl TestClock {
    /// The clock to give a collector.
    pub fn clock(&self) -> Clock {
        let offset = self.0.clone();
        Arc::new(move || {
            time::OffsetDateTime::now_utc() + time::Duration::seconds(offset.load(Ordering::SeqCst))
        })
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_secs() as i64, Ordering::SeqCst);
    }
}

/// How a [`TestCollector`] starts.
#[derive(Debug, Clone)]
pub struct StartOptions {
    /// Trust domain of the deployment.
    pub trust_domain: String,
    /// Clock and federation window.
    pub settings: OpenSettings,
    /// A ministry collector to push aggregates to, while serving.
    pub upstream: Option<Upstream>,
    /// The network edge's limits (tests shorten its timeouts).
    pub limits: Limits,
}

impl Default for StartOptions {
    fn default() -> Self {
        StartOptions {
            trust_domain: "test.local".into(),
            settings: OpenSettings::default(),
            upstream: None,
            limits: Limits::default(),
        }
    }
}

/// A collector under test.
pub struct TestCollector {
    /// Holds the data directory alive.
    pub dir: tempfile::TempDir,
    /// The layout.
    pub layout: Layout,
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// The web console, `https://127.0.0.1:PORT` (another port).
    pub web_url: String,
    /// The CA certificate PEM.
    pub ca_pem: String,
    /// An admin bearer token.
    pub admin_token: String,
    /// An enrolment token for organisation `acme`.
    pub enrolment_token: String,
    /// The serving collector's domain object (for setting up state tests cannot reach over
    /// the wire, such as an already-expired token).
    pub collector: Option<Arc<Collector>>,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
    options: StartOptions,
    pusher: Option<JoinHandle<()>>,
    /// The cluster of `COMMSCAN_TEST_STORE=postgres`, alive as long as the collector.
    _postgres: Option<Arc<commscan_runtime::testing::postgres::PgCluster>>,
}

impl TestCollector {
    /// Initialises a fresh deployment (organisation `acme`) and serves it.
    pub async fn start() -> TestCollector {
        TestCollector::start_with(StartOptions::default()).await
    }

    /// [`TestCollector::start`] with options.
    ///
    /// With `COMMSCAN_TEST_STORE=postgres` (and no PostgreSQL store chosen in `options`),
    /// the collector keeps its data in a throw-away PostgreSQL cluster of its own instead of
    /// sled: how CI runs the tenancy and identity matrices on the PostgreSQL backend.
    pub async fn start_with(mut options: StartOptions) -> TestCollector {
        init_crypto();
        let postgres = if options.settings.postgres.is_none()
            && std::env::var("COMMSCAN_TEST_STORE").is_ok_and(|v| v == "postgres")
        {
            let pg = tokio::task::spawn_blocking(|| {
                commscan_runtime::testing::postgres::PgCluster::start(
                    "COMMSCAN_TEST_STORE=postgres",
                )
            })
            .await
            .expect("cluster thread")
            .expect("COMMSCAN_TEST_STORE=postgres needs PostgreSQL's server binaries");
            options.settings.postgres = Some(commscan_collector::store::pg_store::PgConfig {
                url: pg.url(),
                password: Some(pg.password().to_owned()),
                max_connections: 16,
            });
            Some(Arc::new(pg))
        } else {
            None
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let layout = Layout::new(dir.path().join("collector"));
        let secrets = layout
            .init_with(
                &InitOptions {
                    trust_domain: options.trust_domain.clone(),
                    server_names: vec!["localhost".into(), "127.0.0.1".into()],
                    organisation: "acme".into(),
                    import_ca: None,
                    import_server: None,
                },
                options.settings.postgres.as_ref(),
            )
            .expect("init");
        if options.settings.postgres.is_some() {
            assert!(
                !layout.path("store").exists(),
                "a collector on PostgreSQL made a sled store"
            );
        }
        let ca_pem = std::fs::read_to_string(layout.path("pki/ca.crt")).expect("ca");
        let mut c = TestCollector {
            dir,
            layout,
            url: String::new(),
            web_url: String::new(),
            ca_pem,
            admin_token: secrets.admin_token,
            enrolment_token: secrets.enrolment_token,
            collector: None,
            stop: CancellationToken::new(),
            task: None,
            options,
            pusher: None,
            _postgres: postgres,
        };
        c.serve_on("127.0.0.1:0").await;
        c
    }

    async fn serve_on(&mut self, addr: &str) {
        // After a stop, stream tasks may still hold the store for a moment; sled's file lock
        // is released when the last handle drops.
        let (collector, tls) =
            wait_until(Duration::from_secs(10), "the store to reopen", || async {
                self.layout
                    .open_with(&Default::default(), &self.options.settings)
                    .ok()
            })
            .await;
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        self.url = format!("https://{}", listener.local_addr().expect("addr"));
        self.collector = Some(collector.clone());
        self.stop = CancellationToken::new();
        let stop = self.stop.clone();
        let limits = self.options.limits;
        if let Some(upstream) = self.options.upstream.clone() {
            self.pusher = Some(tokio::spawn(commscan_collector::federation::push::run(
                collector.clone(),
                upstream,
                stop.clone(),
            )));
        }
        // As `serve` runs it: in step with the collectors sharing a PostgreSQL store.
        tokio::spawn(commscan_collector::cluster::follow(
            collector.clone(),
            stop.clone(),
        ));
        let web = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        self.web_url = format!("https://{}", web.local_addr().expect("addr"));
        tokio::spawn(commscan_collector::web::serve(
            collector.clone(),
            self.layout.web_tls().expect("web tls"),
            web,
            stop.clone(),
        ));
        self.task = Some(tokio::spawn(async move {
            serve(collector, tls, listener, limits, stop)
                .await
                .expect("serve");
        }));
    }

    /// A second collector of the same deployment on its own port: a copy of this one's data
    /// directory (PKI, identity of the deployment) serving the same PostgreSQL store. Panics
    /// on a sled collector (one process per sled store).
    pub async fn another_node(&self) -> TestCollector {
        assert!(
            self.options.settings.postgres.is_some(),
            "another node needs the PostgreSQL store"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("collector");
        copy_deployment(&self.layout, &root);
        let mut c = TestCollector {
            dir,
            layout: Layout::new(root),
            url: String::new(),
            web_url: String::new(),
            ca_pem: self.ca_pem.clone(),
            admin_token: self.admin_token.clone(),
            enrolment_token: self.enrolment_token.clone(),
            collector: None,
            stop: CancellationToken::new(),
            task: None,
            options: self.options.clone(),
            pusher: None,
            _postgres: self._postgres.clone(),
        };
        c.serve_on("127.0.0.1:0").await;
        c
    }

    /// Stops serving and waits until the store is closed.
    pub async fn stop(&mut self) {
        self.collector = None;
        self.stop.cancel();
        if let Some(t) = self.task.take() {
            t.await.expect("server task");
        }
        if let Some(p) = self.pusher.take() {
            p.await.expect("push task");
        }
    }

    /// Serves the same data directory again on the same port.
    pub async fn restart(&mut self) {
        self.stop().await;
        let addr = self.url.trim_start_matches("https://").to_owned();
        self.serve_on(&addr).await;
    }

    /// A query client with the admin token.
    pub async fn query(&self) -> AuthedQuery {
        self.query_as(&self.admin_token).await
    }

    /// A query client with any token.
    pub async fn query_as(&self, token: &str) -> AuthedQuery {
        let ca = self.dir.path().join("ca-for-ctl.crt");
        std::fs::write(&ca, &self.ca_pem).expect("write ca");
        Connection {
            collector: self.url.clone(),
            ca,
            token: token.to_owned(),
        }
        .query()
        .await
        .expect("query client")
    }

    /// An admin client with any token.
    pub async fn admin_as(&self, token: &str) -> AuthedAdmin {
        let ca = self.dir.path().join("ca-for-ctl.crt");
        std::fs::write(&ca, &self.ca_pem).expect("write ca");
        Connection {
            collector: self.url.clone(),
            ca,
            token: token.to_owned(),
        }
        .admin()
        .await
        .expect("admin client")
    }

    /// The serving collector.
    pub fn domain(&self) -> &Arc<Collector> {
        self.collector.as_ref().expect("the collector is serving")
    }

    /// Audit entries, oldest first (read directly from the store).
    pub fn audit(&self) -> Vec<commscan_collector::store::AuditRecord> {
        self.domain()
            .store()
            .audit(0, 100_000)
            .expect("audit")
            .into_iter()
            .map(|(_, e)| e)
            .collect()
    }

    /// Enrols a new agent whose data lives under the test directory.
    pub async fn enroll_agent(&self, name: &str) -> DataDir {
        self.enroll_agent_with(name, &self.enrolment_token).await
    }

    /// Enrols a new agent with an enrolment token (of any organisation).
    pub async fn enroll_agent_with(&self, name: &str, token: &str) -> DataDir {
        let data = DataDir::new(self.dir.path().join("agents").join(name));
        commscan_agent::enroll::enroll(
            &self.url,
            token,
            &self.ca_pem,
            Platform::Linux,
            None,
            &data,
        )
        .await
        .expect("enrol");
        data
    }
}

/// Makes `to` the data directory of another collector node of the deployment in `from`: the
/// same PKI (CA, server certificate and key: agents trust every node alike and each node
/// enrols and renews for the deployment), the same `collector.json` (trust domain) and admin
/// token. Nothing else: a node on PostgreSQL keeps no state of its own.
pub fn copy_deployment(from: &Layout, to: &Path) {
    for rel in ["pki", "collector.json", "admin.token"] {
        let (src, dst) = (from.path(rel), to.join(rel));
        if src.is_dir() {
            std::fs::create_dir_all(&dst).expect("pki dir");
            for e in std::fs::read_dir(&src).expect("read pki") {
                let e = e.expect("entry");
                std::fs::copy(e.path(), dst.join(e.file_name())).expect("copy pki");
            }
        } else {
            std::fs::create_dir_all(to).expect("data dir");
            std::fs::copy(&src, &dst).expect("copy");
        }
    }
}

/// A reporter scanning `root` as a Linux tree.
pub fn reporter(data: DataDir, root: &Path) -> Reporter {
    Reporter::new(
        data,
        Arc::new(Scanner::new(&Catalog::embedded())),
        ScanTarget::tree(root, Platform::Linux),
    )
}

/// A Linux fixture tree whose dpkg database lists `(package, status, version)` entries.
pub fn dpkg_fixture(packages: &[(&str, &str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    write_dpkg(dir.path(), packages);
    dir
}

/// (Re)writes the dpkg status file of a fixture tree.
pub fn write_dpkg(root: &Path, packages: &[(&str, &str, &str)]) {
    let path: PathBuf = root.join("var/lib/dpkg/status");
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    let mut text = String::new();
    for (name, status, version) in packages {
        text.push_str(&format!("Package: {name}\nStatus: {status}\nArchitecture: amd64\nVersion: {version}\nDescription: test\n fixture package\n\n"));
    }
    std::fs::write(path, text).expect("write status");
}

/// Polls `check` until it returns `Some`, or panics after `timeout`.
pub async fn wait_until<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// dpkg packages and the catalog products they are, for fixtures: `(package, product)`.
pub const PACKAGES: [(&str, &str); 5] = [
    ("zoom", "zoom"),
    ("skypeforlinux", "skype"),
    ("slack-desktop", "slack"),
    ("telegram-desktop", "telegram"),
    ("teams", "microsoft-teams"),
];

/// Writes a fixture's dpkg database holding exactly `packages` (names from [`PACKAGES`]).
pub fn install(root: &Path, packages: &[&str]) {
    let entries: Vec<(&str, &str, &str)> = packages
        .iter()
        .map(|p| (*p, "install ok installed", "1.0"))
        .collect();
    write_dpkg(root, &entries);
}

/// The products a collector (reached with `conn`) holds for `device_id`, sorted; `None` when it
/// cannot say (down, or no such device).
pub async fn stored_products(
    conn: &commscan_ctl::Connection,
    device_id: &str,
) -> Option<Vec<String>> {
    let d = conn
        .query()
        .await
        .ok()?
        .get_device(v1::GetDeviceRequest {
            device_id: device_id.to_owned(),
            ..Default::default()
        })
        .await
        .ok()?
        .into_inner();
    let mut p: Vec<String> = d.findings.into_iter().map(|f| f.product).collect();
    p.sort();
    Some(p)
}

/// The products a device holds at the collector, sorted, and its stored sequence.
pub async fn device_state(c: &TestCollector, device_id: &str) -> Option<(Vec<String>, u64)> {
    let d = c
        .query()
        .await
        .get_device(commscan_proto::v1::GetDeviceRequest {
            device_id: device_id.to_owned(),
            ..Default::default()
        })
        .await
        .ok()?
        .into_inner();
    let mut products: Vec<String> = d.findings.into_iter().map(|f| f.product).collect();
    products.sort();
    Some((products, d.last_sequence))
}

/// Waits until the collector holds exactly the products `want` for device `id` (after at
/// least one report); returns the stored sequence.
pub async fn converged(c: &TestCollector, id: &str, want: &[&str], within: Duration) -> u64 {
    let mut want: Vec<String> = want.iter().map(|s| (*s).to_owned()).collect();
    want.sort();
    wait_until(
        within,
        &format!("the collector to hold {want:?}"),
        || async {
            device_state(c, id)
                .await
                .filter(|(p, seq)| *p == want && *seq > 0)
                .map(|(_, seq)| seq)
        },
    )
    .await
}

/// [`test_config`] with file-watch triggers on and a short debounce.
pub fn watching(data: &DataDir) -> commscan_agent::config::AgentConfig {
    let mut cfg = test_config(data);
    cfg.triggers.watch = true;
    cfg.triggers.watch_debounce = Duration::from_millis(100);
    cfg
}

/// Agent configuration for tests: short, bounded timings, no process samples.
pub fn test_config(data: &DataDir) -> commscan_agent::config::AgentConfig {
    let mut c = commscan_agent::config::AgentConfig {
        data_dir: data.root().to_path_buf(),
        processes: false,
        ..Default::default()
    };
    c.triggers.process_sample_interval = None;
    c.triggers.watch = false;
    c.delivery.backoff_initial = Duration::from_millis(100);
    c.delivery.backoff_max = Duration::from_secs(1);
    c.delivery.ack_timeout = Duration::from_secs(10);
    c.shutdown_grace = Duration::from_secs(5);
    c
}

/// A running in-process agent.
pub struct RunningAgent {
    /// The agent.
    pub agent: Arc<commscan_agent::delivery::Agent>,
    /// Stops it.
    pub stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl RunningAgent {
    /// Starts `agent.run` in a task.
    pub fn start(agent: commscan_agent::delivery::Agent) -> RunningAgent {
        let agent = Arc::new(agent);
        let stop = CancellationToken::new();
        let (a, s) = (agent.clone(), stop.clone());
        let task = tokio::spawn(async move { a.run(s).await });
        RunningAgent {
            agent,
            stop,
            task: Some(task),
        }
    }

    /// Stops it and waits until it has flushed and returned.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(t) = self.task.take() {
            t.await.expect("agent task");
        }
    }
}

/// An agent scanning `root` as a Linux tree with `config`.
pub fn tree_agent(
    config: commscan_agent::config::AgentConfig,
    root: &Path,
) -> commscan_agent::delivery::Agent {
    let inventory = Arc::new(commscan_agent::scanner::HostInventory::new(
        Arc::new(Scanner::new(&Catalog::embedded())),
        ScanTarget::tree(root, Platform::Linux),
    ));
    commscan_agent::delivery::Agent::open(config, inventory).expect("open agent")
}

/// What a [`TcpProxy`] does to the connections open when the fault is injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Close them (FIN).
    Drop,
    /// Stop forwarding, keep them open: a half-open link.
    Stall,
    /// Reset them (RST).
    Reset,
}

/// A TCP proxy on `127.0.0.1:0` in front of `upstream` that can cut its open connections.
/// New connections are always forwarded.
pub struct TcpProxy {
    /// `127.0.0.1:PORT` to connect to.
    pub addr: std::net::SocketAddr,
    conns: Arc<std::sync::Mutex<Vec<tokio::sync::watch::Sender<Option<Fault>>>>>,
    task: JoinHandle<()>,
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TcpProxy {
    /// Starts a proxy to `upstream`.
    pub async fn start(upstream: std::net::SocketAddr) -> TcpProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let conns: Arc<std::sync::Mutex<Vec<tokio::sync::watch::Sender<Option<Fault>>>>> =
            Arc::default();
        let c = conns.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                    continue;
                };
                let (tx, rx) = tokio::sync::watch::channel(None);
                c.lock().expect("lock").push(tx);
                tokio::spawn(pipe(client, server, rx));
            }
        });
        TcpProxy { addr, conns, task }
    }

    /// Injects `fault` into every connection open now.
    pub fn cut(&self, fault: Fault) {
        for tx in self.conns.lock().expect("lock").drain(..) {
            let _ = tx.send(Some(fault));
        }
    }
}

async fn pipe(
    client: tokio::net::TcpStream,
    server: tokio::net::TcpStream,
    mut fault: tokio::sync::watch::Receiver<Option<Fault>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let (mut a, mut b) = (vec![0u8; 16 * 1024], vec![0u8; 16 * 1024]);
    let f = loop {
        tokio::select! {
            _ = fault.changed() => break *fault.borrow(),
            n = cr.read(&mut a) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => if sw.write_all(&a[..n]).await.is_err() { return },
            },
            n = sr.read(&mut b) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => if cw.write_all(&b[..n]).await.is_err() { return },
            },
        }
    };
    match f {
        Some(Fault::Stall) | None => {
            // Keep both sockets open, forward nothing, until the test ends.
            let _keep = (cr, cw, sr, sw);
            std::future::pending::<()>().await;
        }
        Some(Fault::Drop) => {}
        Some(Fault::Reset) => {
            for s in [cr.reunite(cw), sr.reunite(sw)].into_iter().flatten() {
                let _ = s.set_zero_linger();
            }
        }
    }
}

/// Sends a snapshot (sequence 1) of `findings` and `unclassified` on a stream past its welcome
/// and asserts it is acknowledged within `within`.
pub async fn snapshot_acked(
    tx: &tokio::sync::mpsc::Sender<v1::AgentMessage>,
    inbound: &mut tonic::Streaming<v1::CollectorMessage>,
    findings: Vec<v1::Finding>,
    unclassified: Vec<v1::Unclassified>,
    within: Duration,
) {
    tx.send(v1::AgentMessage {
        kind: Some(v1::agent_message::Kind::Report(v1::Report {
            sequence: 1,
            body: Some(v1::report::Body::Snapshot(v1::Snapshot {
                findings,
                unclassified,
            })),
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    let ack = tokio::time::timeout(within, inbound.message())
        .await
        .expect("an acknowledgement in time")
        .unwrap()
        .unwrap();
    assert!(
        matches!(ack.kind, Some(v1::collector_message::Kind::Ack(_))),
        "{ack:?}"
    );
}

/// Opens a reporting stream for an enrolled agent and returns it after the welcome, with the
/// sender that keeps it open.
pub async fn open_stream(
    c: &TestCollector,
    name: &str,
) -> (
    tokio::sync::mpsc::Sender<v1::AgentMessage>,
    tonic::Streaming<v1::CollectorMessage>,
) {
    let data = c.enroll_agent(name).await;
    let (_, cert, key) = data.credentials().unwrap();
    let channel = commscan_runtime::transport::channel(&c.url, &c.ca_pem, Some((&cert, &key)))
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(v1::AgentMessage {
        kind: Some(v1::agent_message::Kind::Hello(v1::Hello::default())),
    })
    .await
    .unwrap();
    let mut stream = v1::reporting_client::ReportingClient::new(channel)
        .connect(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert!(
        matches!(first.kind, Some(v1::collector_message::Kind::Welcome(_))),
        "the welcome comes first: {first:?}"
    );
    (tx, stream)
}
