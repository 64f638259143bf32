//! Harness for end-to-end tests: a real collector serving TLS on `127.0.0.1:0` from a fresh
//! data directory, agents enrolled against it, fixture trees, and a polling `wait_until`.
//!
//! Everything runs in-process on loopback; a [`TestCollector`] can be stopped and started
//! again on the same data directory to test restarts.
//!
//! [`loadgen`] is the fleet simulator behind the `commscan-loadgen` benchmark binary.

pub mod loadgen;

use commscan_agent::scanner::{ScanTarget, Scanner};
use commscan_agent::state::DataDir;
use commscan_agent::transport::Reporter;
use commscan_collector::collector::Collector;
use commscan_collector::ctl::{AuthedAdmin, AuthedQuery, Connection};
use commscan_collector::layout::{InitOptions, Layout};
use commscan_collector::server::{Limits, serve};
use commscan_core::catalog::Catalog;
use commscan_core::platform::Platform;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Installs the rustls crypto provider once per test process.
pub fn init_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A collector under test.
pub struct TestCollector {
    /// Holds the data directory alive.
    pub dir: tempfile::TempDir,
    /// The layout.
    pub layout: Layout,
    /// `https://127.0.0.1:PORT`.
    pub url: String,
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
}

impl TestCollector {
    /// Initialises a fresh deployment (organisation `acme`) and serves it.
    pub async fn start() -> TestCollector {
        init_crypto();
        let dir = tempfile::tempdir().expect("tempdir");
        let layout = Layout::new(dir.path().join("collector"));
        let secrets = layout
            .init(&InitOptions {
                trust_domain: "test.local".into(),
                server_names: vec!["localhost".into(), "127.0.0.1".into()],
                organisation: "acme".into(),
                import_ca: None,
                import_server: None,
            })
            .expect("init");
        let ca_pem = std::fs::read_to_string(layout.path("pki/ca.crt")).expect("ca");
        let mut c = TestCollector {
            dir,
            layout,
            url: String::new(),
            ca_pem,
            admin_token: secrets.admin_token,
            enrolment_token: secrets.enrolment_token,
            collector: None,
            stop: CancellationToken::new(),
            task: None,
        };
        c.serve_on("127.0.0.1:0").await;
        c
    }

    async fn serve_on(&mut self, addr: &str) {
        // After a stop, stream tasks may still hold the store for a moment; sled's file lock
        // is released when the last handle drops.
        let (collector, tls) =
            wait_until(Duration::from_secs(10), "the store to reopen", || async {
                self.layout.open(&Default::default()).ok()
            })
            .await;
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        self.url = format!("https://{}", listener.local_addr().expect("addr"));
        self.collector = Some(collector.clone());
        self.stop = CancellationToken::new();
        let stop = self.stop.clone();
        self.task = Some(tokio::spawn(async move {
            serve(collector, tls, listener, Limits::default(), stop)
                .await
                .expect("serve");
        }));
    }

    /// Stops serving and waits until the store is closed.
    pub async fn stop(&mut self) {
        self.collector = None;
        self.stop.cancel();
        if let Some(t) = self.task.take() {
            t.await.expect("server task");
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
            .store
            .audit(0, 100_000)
            .expect("audit")
            .into_iter()
            .map(|(_, e)| e)
            .collect()
    }

    /// Enrols a new agent whose data lives under the test directory.
    pub async fn enroll_agent(&self, name: &str) -> DataDir {
        let data = DataDir::new(self.dir.path().join("agents").join(name));
        commscan_agent::enroll::enroll(
            &self.url,
            &self.enrolment_token,
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
