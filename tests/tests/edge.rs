//! The network edge (ARCHITECTURE.md, "Bounds at the network edge"): what clients that never
//! prove who they are can make the collector hold, and for how long; that a resumed TLS
//! session cannot bring back a revoked or expired device certificate; that shutdown is bounded.
//!
//! Everything runs on loopback. Timeouts are shortened through `Limits`, except in the
//! thousand-connection test, which runs the real binary with its defaults and measures the
//! child's resident memory from `/proc/PID/status`.

use commscan_collector::server::Limits;
use commscan_core::identity::DeviceIdentity;
use commscan_core::pki::{Authority, device_key_and_csr};
use commscan_proto::v1::{self, reporting_client::ReportingClient};
use commscan_tests::{
    RunningAgent, StartOptions, TestCollector, install, test_config, tree_agent, wait_until,
    workspace_binary,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_util::sync::CancellationToken;
use tonic::codegen::{Bytes, http};

/// A TLS client configuration trusting the deployment CA, speaking h2, with an optional
/// client certificate. rustls's defaults keep resumption on (an in-memory session cache and
/// TLS 1.3 tickets).
fn tls_client(ca_pem: &str, identity: Option<(&str, &str)>) -> rustls::ClientConfig {
    commscan_tests::init_crypto();
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let mut config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(cert.as_bytes())
                    .collect::<Result<_, _>>()
                    .unwrap(),
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    config
}

async fn tls_connect(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
}

fn addr_of(c: &TestCollector) -> SocketAddr {
    c.url.trim_start_matches("https://").parse().unwrap()
}

/// Limits with timeouts short enough for a test.
fn short(first_request: Duration, idle: Duration) -> Limits {
    Limits {
        first_request_timeout: first_request,
        idle_timeout: idle,
        ..Limits::default()
    }
}

/// Waits until the server closes `tls` (EOF or error); returns how long that took.
async fn closed_within(tls: &mut TlsStream<TcpStream>, limit: Duration) -> Duration {
    let start = Instant::now();
    let mut buf = [0u8; 256];
    tokio::time::timeout(limit, async {
        loop {
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("the collector closes the connection");
    start.elapsed()
}

fn grpc_request(path: &str) -> http::Request<()> {
    http::Request::post(format!("https://127.0.0.1{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap()
}

/// An HTTP/2 client over TLS without a client certificate; the connection's task ends when
/// the collector closes it.
async fn h2_client(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<(
    h2::client::SendRequest<Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
)> {
    let tls = tls_connect(addr, config).await?;
    let (client, conn) = h2::client::handshake(tls)
        .await
        .map_err(std::io::Error::other)?;
    Ok((client, tokio::spawn(conn)))
}

/// The grpc-status of a response (headers or trailers), reading and dropping its body.
async fn grpc_status(response: h2::client::ResponseFuture) -> Option<String> {
    let response = response.await.ok()?;
    if let Some(s) = response.headers().get("grpc-status") {
        return Some(s.to_str().unwrap_or("?").to_owned());
    }
    let mut body = response.into_body();
    while let Some(d) = body.data().await {
        let d = d.ok()?;
        let _ = body.flow_control().release_capacity(d.len());
    }
    let trailers = body.trailers().await.ok()??;
    Some(trailers.get("grpc-status")?.to_str().ok()?.to_owned())
}

/// Opens `Enrollment/Enroll` with a gRPC message header announcing `announce` bytes, sends
/// up to `send` bytes of it as flow control allows, and stalls (the stream stays open).
async fn stalled_enroll(
    client: &mut h2::client::SendRequest<Bytes>,
    announce: u32,
    send: usize,
    payload: &Bytes,
) -> Option<(h2::client::ResponseFuture, h2::SendStream<Bytes>)> {
    let mut ready = client.clone().ready().await.ok()?;
    let (response, mut stream) = ready
        .send_request(grpc_request("/commscan.v1.Enrollment/Enroll"), false)
        .ok()?;
    let mut header = vec![0u8];
    header.extend_from_slice(&announce.to_be_bytes());
    stream.send_data(Bytes::from(header), false).ok()?;
    let mut sent = 0;
    while sent < send {
        let want = (send - sent).min(payload.len());
        stream.reserve_capacity(want);
        let n = match std::future::poll_fn(|cx| stream.poll_capacity(cx)).await {
            Some(Ok(n)) if n > 0 => n.min(want),
            _ => break,
        };
        if stream.send_data(payload.slice(..n), false).is_err() {
            break;
        }
        sent += n;
    }
    Some((response, stream))
}

#[tokio::test]
async fn a_tls_connection_that_sends_nothing_is_closed_after_the_first_request_timeout() {
    let c = TestCollector::start_with(StartOptions {
        limits: short(Duration::from_secs(1), Duration::from_secs(30)),
        ..Default::default()
    })
    .await;
    let config = Arc::new(tls_client(&c.ca_pem, None));
    let mut tls = tls_connect(addr_of(&c), config.clone()).await.unwrap();
    let took = closed_within(&mut tls, Duration::from_secs(20)).await;
    assert!(
        took >= Duration::from_millis(900),
        "closed after {took:?}, before the 1 s timeout"
    );

    // A connection that sent the HTTP/2 preface and settings but no request: the same.
    let (_client, conn) = h2_client(addr_of(&c), config).await.unwrap();
    let start = Instant::now();
    let _ = tokio::time::timeout(Duration::from_secs(20), conn)
        .await
        .expect("the collector closes a connection without a request");
    assert!(start.elapsed() >= Duration::from_millis(800));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_without_streams_is_closed_after_the_idle_timeout_but_an_agent_is_not() {
    let idle = Duration::from_secs(2);
    let c = TestCollector::start_with(StartOptions {
        limits: short(Duration::from_secs(1), idle),
        ..Default::default()
    })
    .await;

    // An agent holding its stream, and reporting a change after several idle timeouts.
    let root = tempfile::tempdir().unwrap();
    install(root.path(), &[]);
    let data = c.enroll_agent("steady").await;
    let mut cfg = test_config(&data);
    cfg.triggers.watch = true;
    cfg.triggers.watch_debounce = Duration::from_millis(100);
    let agent = tree_agent(cfg, root.path());
    let mut events = agent.events();
    let running = RunningAgent::start(agent);
    let connects = Arc::new(AtomicUsize::new(0));
    let acked = Arc::new(AtomicUsize::new(0));
    let (n, a) = (connects.clone(), acked.clone());
    let watcher = tokio::spawn(async move {
        use commscan_agent::delivery::AgentEvent;
        while let Ok(e) = events.recv().await {
            match e {
                AgentEvent::Connected { .. } => n.fetch_add(1, Ordering::SeqCst),
                AgentEvent::Acked { .. } => a.fetch_add(1, Ordering::SeqCst),
                _ => 0,
            };
        }
    });
    wait_until(Duration::from_secs(30), "the first ack", || async {
        (acked.load(Ordering::SeqCst) > 0).then_some(())
    })
    .await;

    // A client that made one call and then holds its connection without streams.
    let config = Arc::new(tls_client(&c.ca_pem, None));
    let (client, conn) = h2_client(addr_of(&c), config).await.unwrap();
    let mut ready = client.ready().await.unwrap();
    let (response, mut body) = ready
        .send_request(grpc_request("/grpc.health.v1.Health/Check"), false)
        .unwrap();
    body.send_data(Bytes::from_static(&[0, 0, 0, 0, 0]), true)
        .unwrap();
    assert_eq!(grpc_status(response).await.as_deref(), Some("0"));
    let answered = Instant::now();
    tokio::time::timeout(Duration::from_secs(20), conn)
        .await
        .expect("the idle connection is closed")
        .unwrap()
        .ok();
    let took = answered.elapsed();
    assert!(
        took >= idle - Duration::from_millis(200),
        "closed after {took:?}, before the idle timeout"
    );

    // By now the agent's connection has outlived the idle timeout more than once.
    tokio::time::sleep(idle * 2).await;
    let before = acked.load(Ordering::SeqCst);
    install(root.path(), &["zoom"]);
    wait_until(
        Duration::from_secs(30),
        "the change to be acked",
        || async { (acked.load(Ordering::SeqCst) > before).then_some(()) },
    )
    .await;
    assert_eq!(
        connects.load(Ordering::SeqCst),
        1,
        "the agent's connection was never closed"
    );
    running.shutdown().await;
    watcher.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_unauthenticated_requests_are_bounded_in_size_bytes_and_time() {
    let limits = Limits {
        request_timeout: Duration::from_secs(2),
        unauthenticated_buffer_bytes: 120_000,
        ..Limits::default()
    };
    let c = TestCollector::start_with(StartOptions {
        limits,
        ..Default::default()
    })
    .await;
    let config = Arc::new(tls_client(&c.ca_pem, None));
    let (mut client, _conn) = h2_client(addr_of(&c), config).await.unwrap();
    let payload = Bytes::from(vec![b'A'; 64 * 1024]);

    // Three stalled messages under the limit: two fit the 120,000-byte budget, the third is
    // refused at once; the two are cancelled at the request timeout.
    let start = Instant::now();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(
            stalled_enroll(&mut client, 60_000, 50_000, &payload)
                .await
                .unwrap(),
        );
        // h2 interleaves the queued frames of open streams on the wire: without a pause the
        // second and third messages arrive mixed, both run out of budget half-way, and two are
        // refused instead of one (seen in CI). Let each one's bytes land first.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let answers: Vec<_> = held
        .into_iter()
        .map(|(response, stream)| {
            tokio::spawn(async move {
                let code = grpc_status(response).await;
                drop(stream);
                (code, start.elapsed())
            })
        })
        .collect();
    let mut codes = Vec::new();
    for a in answers {
        codes.push(a.await.unwrap());
    }
    let refused = codes
        .iter()
        .filter(|(code, at)| code.as_deref() == Some("8") && *at < Duration::from_secs(2))
        .count();
    assert_eq!(refused, 1, "{codes:?}");
    for (code, at) in &codes {
        assert_ne!(code.as_deref(), Some("0"), "{codes:?}");
        assert!(*at < Duration::from_secs(15), "{codes:?}");
    }
    assert!(
        codes
            .iter()
            .any(|(_, at)| *at >= Duration::from_millis(1800)),
        "the stalled ones end at the request timeout: {codes:?}"
    );

    // Their bytes were given back: a real enrolment goes through.
    c.enroll_agent("after-the-stall").await;

    // A message announced above the unauthenticated limit is refused at its header. Last:
    // what it delivered before the refusal is given back only once the server drops its
    // body, which races with whatever comes next on a loaded machine.
    let (huge, _s) = stalled_enroll(&mut client, 4_000_000, 3_800_000, &payload)
        .await
        .unwrap();
    assert_eq!(grpc_status(huge).await.as_deref(), Some("8"));
}

/// A client session store that counts the TLS 1.3 tickets the server issued.
#[derive(Debug)]
struct CountingStore {
    inner: rustls::client::ClientSessionMemoryCache,
    tickets: AtomicUsize,
}

impl rustls::client::ClientSessionStore for CountingStore {
    fn set_kx_hint(&self, n: ServerName<'static>, g: rustls::NamedGroup) {
        self.inner.set_kx_hint(n, g)
    }
    fn kx_hint(&self, n: &ServerName<'_>) -> Option<rustls::NamedGroup> {
        self.inner.kx_hint(n)
    }
    fn set_tls12_session(
        &self,
        n: ServerName<'static>,
        v: rustls::client::Tls12ClientSessionValue,
    ) {
        self.inner.set_tls12_session(n, v)
    }
    fn tls12_session(&self, n: &ServerName<'_>) -> Option<rustls::client::Tls12ClientSessionValue> {
        self.inner.tls12_session(n)
    }
    fn remove_tls12_session(&self, n: &ServerName<'static>) {
        self.inner.remove_tls12_session(n)
    }
    fn insert_tls13_ticket(
        &self,
        n: ServerName<'static>,
        v: rustls::client::Tls13ClientSessionValue,
    ) {
        self.tickets.fetch_add(1, Ordering::SeqCst);
        self.inner.insert_tls13_ticket(n, v)
    }
    fn take_tls13_ticket(
        &self,
        n: &ServerName<'static>,
    ) -> Option<rustls::client::Tls13ClientSessionValue> {
        self.inner.take_tls13_ticket(n)
    }
}

/// A gRPC channel over our own rustls client (resumption on), recording each connection's
/// handshake kind.
async fn resuming_channel(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    kinds: Arc<Mutex<Vec<Option<rustls::HandshakeKind>>>>,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_uri| {
            let (config, kinds) = (config.clone(), kinds.clone());
            async move {
                let tls = tls_connect(addr, config).await?;
                kinds.lock().unwrap().push(tls.get_ref().1.handshake_kind());
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        }))
        .await
}

/// `Reporting.Connect` with a hello: the first answer, or the status.
async fn hello(channel: tonic::transport::Channel) -> Result<v1::CollectorMessage, tonic::Status> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(v1::AgentMessage {
        kind: Some(v1::agent_message::Kind::Hello(v1::Hello::default())),
    })
    .await
    .unwrap();
    let mut stream = ReportingClient::new(channel)
        .connect(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let first = stream.message().await?;
    first.ok_or_else(|| tonic::Status::unknown("stream ended"))
}

fn resuming_config(
    ca: &str,
    cert: &str,
    key: &str,
) -> (Arc<rustls::ClientConfig>, Arc<CountingStore>) {
    let store = Arc::new(CountingStore {
        inner: rustls::client::ClientSessionMemoryCache::new(16),
        tickets: AtomicUsize::new(0),
    });
    let mut config = tls_client(ca, Some((cert, key)));
    config.resumption = rustls::client::Resumption::store(store.clone());
    (Arc::new(config), store)
}

#[tokio::test]
async fn tls_session_resumption_cannot_bring_back_a_revoked_device() {
    let c = TestCollector::start().await;
    let data = c.enroll_agent("resumer").await;
    let id = data.identity().unwrap().device_id;
    let (ca, cert, key) = data.credentials().unwrap();
    let (config, store) = resuming_config(&ca, &cert, &key);
    let kinds = Arc::default();

    let first = resuming_channel(addr_of(&c), config.clone(), Arc::clone(&kinds))
        .await
        .unwrap();
    let welcome = hello(first.clone()).await.unwrap();
    assert!(matches!(
        welcome.kind,
        Some(v1::collector_message::Kind::Welcome(_))
    ));
    drop(first);

    c.admin_as(&c.admin_token)
        .await
        .revoke_device(v1::RevokeDeviceRequest { device_id: id })
        .await
        .unwrap();

    let second = resuming_channel(addr_of(&c), config, Arc::clone(&kinds))
        .await
        .unwrap();
    let refused = hello(second).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    // The collector issues no tickets and keeps no sessions: every handshake is a full one,
    // with the certificate verified.
    assert_eq!(
        store.tickets.load(Ordering::SeqCst),
        0,
        "tickets were issued"
    );
    assert_eq!(
        *kinds.lock().unwrap(),
        vec![Some(rustls::HandshakeKind::Full); 2]
    );
}

#[tokio::test]
async fn tls_session_resumption_cannot_bring_back_an_expired_certificate() {
    let c = TestCollector::start().await;
    let data = c.enroll_agent("short-lived").await;
    let identity = data.identity().unwrap();
    let ca_key = std::fs::read_to_string(c.layout.path("pki/ca.key")).unwrap();
    let authority = Authority::from_pem(&c.ca_pem, &ca_key).unwrap();
    let (key, csr) = device_key_and_csr().unwrap();
    let id = DeviceIdentity {
        trust_domain: "test.local".into(),
        organisation: identity.organisation,
        device_id: identity.device_id,
    };
    let now = time::OffsetDateTime::now_utc();
    let not_after = now + time::Duration::seconds(4);
    let (cert, _) = authority
        .sign_device_csr_between(&csr, &id, now - time::Duration::minutes(1), not_after)
        .unwrap();
    let (config, store) = resuming_config(&c.ca_pem, &cert, &key);
    let kinds = Arc::default();

    let first = resuming_channel(addr_of(&c), config.clone(), Arc::clone(&kinds))
        .await
        .unwrap();
    assert!(
        hello(first.clone()).await.is_ok(),
        "valid for a few seconds"
    );
    drop(first);

    let left = not_after - time::OffsetDateTime::now_utc();
    tokio::time::sleep(Duration::try_from(left).unwrap_or_default() + Duration::from_secs(2)).await;
    // Resumption would restore the chain without verifying it again; the collector does a full
    // handshake, and the verifier refuses the expired certificate.
    let refused = match resuming_channel(addr_of(&c), config, Arc::clone(&kinds)).await {
        Err(e) => format!("connect: {e}"),
        Ok(channel) => match hello(channel).await {
            Ok(m) => panic!("an expired certificate was served: {m:?}"),
            Err(s) => format!("{:?}: {}", s.code(), s.message()),
        },
    };
    assert!(!refused.is_empty());
    assert_eq!(
        store.tickets.load(Ordering::SeqCst),
        0,
        "tickets were issued"
    );
    assert_eq!(
        kinds.lock().unwrap().first(),
        Some(&Some(rustls::HandshakeKind::Full))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_returns_within_the_grace_despite_an_open_watch_and_a_stalled_client() {
    let mut c = TestCollector::start_with(StartOptions {
        limits: Limits {
            shutdown_grace: Duration::from_secs(1),
            ..Limits::default()
        },
        ..Default::default()
    })
    .await;
    // An officer's watch: a server stream that never ends by itself.
    let mut watch = c
        .query()
        .await
        .watch_events(v1::WatchEventsRequest::default())
        .await
        .unwrap()
        .into_inner();
    // A client whose request body stalls.
    let config = Arc::new(tls_client(&c.ca_pem, None));
    let (mut client, _conn) = h2_client(addr_of(&c), config).await.unwrap();
    let payload = Bytes::from(vec![b'A'; 16 * 1024]);
    let _stalled = stalled_enroll(&mut client, 60_000, 10_000, &payload).await;

    let start = Instant::now();
    tokio::time::timeout(Duration::from_secs(20), c.stop())
        .await
        .expect("serve returns after the shutdown grace");
    let took = start.elapsed();
    assert!(took < Duration::from_secs(10), "{took:?}");
    // The watch ended too.
    assert!(
        tokio::time::timeout(Duration::from_secs(5), watch.message())
            .await
            .is_ok()
    );
}

/// Resident and peak resident memory of a process, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The collector binary, serving a fresh deployment with its default limits.
struct Child {
    process: std::process::Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

const HOSTILE_WITHOUT_PREFACE: usize = 500;
const HOSTILE_STALLED_ENROLS: usize = 500;
/// The bound this test states for the collector's resident memory under the attack.
const RSS_BOUND_MIB: u64 = 256;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_hostile_connections_hold_bounded_memory_while_an_agent_reports() {
    use std::io::BufRead;
    commscan_tests::init_crypto();
    let files = commscan_collector::open_files::raise_to_hard_limit().unwrap();
    if files.soft.is_some_and(|n| n < 2_500) {
        eprintln!("skipped: the open-files limit {files:?} is below 2,500");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let layout = commscan_collector::layout::Layout::new(dir.path().join("collector"));
    let secrets = layout
        .init(&commscan_collector::layout::InitOptions {
            trust_domain: "test.local".into(),
            server_names: vec!["localhost".into(), "127.0.0.1".into()],
            organisation: "acme".into(),
            import_ca: None,
            import_server: None,
        })
        .unwrap();
    let ca_pem = std::fs::read_to_string(layout.path("pki/ca.crt")).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut process = std::process::Command::new(workspace_binary("commscan-collector"))
        .env("COMMSCAN_CONFIG", "/dev/null")
        .args([
            "serve",
            "--web-listen",
            "off",
            "--metrics-listen",
            "off",
            "--data-dir",
        ])
        .arg(layout.path(""))
        .arg("--listen")
        .arg(addr.to_string())
        .env("COMMSCAN_LOG", "warn")
        .env("NO_COLOR", "1")
        .env_remove("COMMSCAN_POLICY")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let (stderr, l) = (process.stderr.take().unwrap(), log.clone());
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let mut l = l.lock().unwrap();
            if l.len() < 200 {
                l.push(line);
            }
        }
    });
    let child = Child { process, log };
    let pid = child.process.id();
    wait_until(
        Duration::from_secs(30),
        "the collector to listen",
        || async { TcpStream::connect(addr).await.ok().map(|_| ()) },
    )
    .await;
    let url = format!("https://{addr}");

    // A real agent, enrolled and reporting before the attack.
    let root = tempfile::tempdir().unwrap();
    install(root.path(), &[]);
    let data = commscan_agent::state::DataDir::new(dir.path().join("agent"));
    commscan_agent::enroll::enroll(
        &url,
        &secrets.enrolment_token,
        &ca_pem,
        commscan_core::platform::Platform::Linux,
        None,
        &data,
    )
    .await
    .unwrap();
    let mut cfg = test_config(&data);
    cfg.triggers.watch = true;
    cfg.triggers.watch_debounce = Duration::from_millis(100);
    cfg.delivery.ack_timeout = Duration::from_secs(30);
    let agent = tree_agent(cfg, root.path());
    let mut events = agent.events();
    let running = RunningAgent::start(agent);
    let acked = Arc::new(AtomicUsize::new(0));
    let a = acked.clone();
    let watcher = tokio::spawn(async move {
        while let Ok(e) = events.recv().await {
            if let commscan_agent::delivery::AgentEvent::Acked { .. } = e {
                a.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    wait_until(Duration::from_secs(60), "the first ack", || async {
        (acked.load(Ordering::SeqCst) > 0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (before, _) = memory_kib(pid);

    // The attack: connections that never send the HTTP/2 preface, and connections with 16
    // Enroll calls each, half announcing 4,000,000-byte messages and sending up to 3.8 MB,
    // half announcing 60,000 bytes and sending 50,000; all then stall. A connection the
    // collector closes is opened again, as an attacker would.
    let stop = CancellationToken::new();
    let config = Arc::new(tls_client(&ca_pem, None));
    let payload = Bytes::from(vec![b'A'; 64 * 1024]);
    let open = Arc::new(AtomicUsize::new(0));
    let ever = Arc::new(AtomicUsize::new(0));
    let closed_by_collector = Arc::new(AtomicUsize::new(0));
    let handshakes = Arc::new(tokio::sync::Semaphore::new(32));
    let mut tasks = Vec::new();
    for i in 0..HOSTILE_WITHOUT_PREFACE + HOSTILE_STALLED_ENROLS {
        let (stop, config, payload, open, ever, closed, handshakes) = (
            stop.clone(),
            config.clone(),
            payload.clone(),
            open.clone(),
            ever.clone(),
            closed_by_collector.clone(),
            handshakes.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut first = true;
            while !stop.is_cancelled() {
                let permit = handshakes.acquire().await.unwrap();
                if i < HOSTILE_WITHOUT_PREFACE {
                    let Ok(mut tls) = tls_connect(addr, config.clone()).await else {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    };
                    drop(permit);
                    open.fetch_add(1, Ordering::SeqCst);
                    if std::mem::take(&mut first) {
                        ever.fetch_add(1, Ordering::SeqCst);
                    }
                    let mut buf = [0u8; 256];
                    // The collector's HTTP/2 settings arrive first; then nothing until it closes.
                    let until_closed = async {
                        while let Ok(n) = tls.read(&mut buf).await {
                            if n == 0 {
                                break;
                            }
                        }
                    };
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = until_closed => { closed.fetch_add(1, Ordering::SeqCst); }
                    }
                    open.fetch_sub(1, Ordering::SeqCst);
                } else {
                    let Ok((mut client, conn)) = h2_client(addr, config.clone()).await else {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    };
                    drop(permit);
                    open.fetch_add(1, Ordering::SeqCst);
                    if std::mem::take(&mut first) {
                        ever.fetch_add(1, Ordering::SeqCst);
                    }
                    let mut held = Vec::new();
                    for s in 0..16 {
                        let (announce, send) = if s % 2 == 0 {
                            (4_000_000, 3_800_000)
                        } else {
                            (60_000, 50_000)
                        };
                        if let Some(call) =
                            stalled_enroll(&mut client, announce, send, &payload).await
                        {
                            held.push(call);
                        }
                    }
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = conn => { closed.fetch_add(1, Ordering::SeqCst); }
                    }
                    open.fetch_sub(1, Ordering::SeqCst);
                    drop(held);
                }
            }
        }));
    }
    let total = HOSTILE_WITHOUT_PREFACE + HOSTILE_STALLED_ENROLS;
    let opened_at = Instant::now();
    let most_open = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (open, most_open, stop) = (open.clone(), most_open.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                most_open.fetch_max(open.load(Ordering::SeqCst), Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    // Every attacker connected at least once. Those without a preface are closed after the
    // first-request timeout and come back; the stalled ones hold their connection for the
    // request timeout and then the idle timeout.
    wait_until(
        Duration::from_secs(180),
        "the hostile connections",
        || async { (ever.load(Ordering::SeqCst) >= total).then_some(()) },
    )
    .await;
    let ramp = opened_at.elapsed();

    // Hold them while the agent reports three changes; sample the collector's memory.
    let mut peak = 0u64;
    let (mut min_open, mut max_open) = (usize::MAX, 0);
    let hold = Instant::now();
    for products in [&["zoom"][..], &["zoom", "slack-desktop"], &["teams"]] {
        let want = acked.load(Ordering::SeqCst) + 1;
        install(root.path(), products);
        let deadline = Instant::now() + Duration::from_secs(60);
        while acked.load(Ordering::SeqCst) < want {
            assert!(
                Instant::now() < deadline,
                "the agent's report was not acknowledged under attack; collector log: {:?}",
                child.log.lock().unwrap()
            );
            peak = peak.max(memory_kib(pid).0);
            let n = open.load(Ordering::SeqCst);
            (min_open, max_open) = (min_open.min(n), max_open.max(n));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    while hold.elapsed() < Duration::from_secs(8) {
        peak = peak.max(memory_kib(pid).0);
        let n = open.load(Ordering::SeqCst);
        (min_open, max_open) = (min_open.min(n), max_open.max(n));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let held_for = hold.elapsed();
    let (_, high_water) = memory_kib(pid);

    stop.cancel();
    let _ = sampler.await;
    let most_open = most_open.load(Ordering::SeqCst);
    for t in tasks {
        let _ = t.await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (after, _) = memory_kib(pid);
    eprintln!(
        "collector RSS: before {} MiB, peak during {} MiB (VmHWM {} MiB), after {} MiB; \
         {total} hostile connections opened in {ramp:?}, at most {most_open} open at once; \
         held {held_for:?} more ({min_open} to {max_open} open) while the agent reported; \
         {} closed by the collector",
        before / 1024,
        peak / 1024,
        high_water / 1024,
        after / 1024,
        closed_by_collector.load(Ordering::SeqCst)
    );
    assert!(
        most_open >= HOSTILE_STALLED_ENROLS,
        "only {most_open} hostile connections were open at once"
    );
    assert!(
        high_water / 1024 < RSS_BOUND_MIB,
        "collector peak RSS {} MiB over the {RSS_BOUND_MIB} MiB bound",
        high_water / 1024
    );
    running.shutdown().await;
    watcher.abort();
    drop(child);
}
