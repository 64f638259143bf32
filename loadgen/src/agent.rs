//! One simulated agent: the wire behaviour of `commscan-agent run`, without the scanner.
//!
//! A session connects from the agent's own source address (so many agents are not limited by
//! the ephemeral ports of one address), presents the device's certificate, sends a hello with
//! the state digest it last had acknowledged, waits for the welcome, and sends a snapshot only
//! when the welcome asks for one (the collector holds nothing, or another state), as the real
//! agent's spool does. Every report declares the digest of the state it leaves
//! (`commscan_core::digest`, over the canonical findings, as the agent computes it), so the
//! collector's stored digest matches the simulated device's and a reconnect needs no snapshot.
//! Afterwards it sends deltas as the pool's [`Phase`] says, one in flight at a time, each after
//! the previous ack. A failed session is retried with the real agent's full-jitter backoff
//! (`commscan_runtime::transport::backoff`, base 1 s, cap 300 s; a refused connection on its
//! own count, capped at `REFUSED_BACKOFF_MAX`).

use crate::fleet::SimDevice;
use crate::pool::{Counters, Phase};
use crate::{LoadgenError, unix_nanos};
use commscan_proto::v1::{
    self, AgentMessage, agent_message, collector_message, reporting_client::ReportingClient,
};
use commscan_runtime::transport::{
    KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT, REFUSED_BACKOFF_MAX, backoff, connection_refused,
};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Where the collector is.
#[derive(Debug, Clone)]
pub struct Target {
    /// Its address on loopback.
    pub addr: SocketAddr,
    /// The deployment CA (PEM) to pin.
    pub ca_pem: String,
}

/// Catalogued products the synthetic reports name.
const PRODUCTS: [&str; 8] = [
    "zoom",
    "telegram",
    "yandex-telemost",
    "slack",
    "trueconf",
    "skype",
    "vk-teams",
    "discord",
];

fn finding(product: &str, version: String) -> v1::Finding {
    v1::Finding {
        product: product.into(),
        installed: true,
        running: false,
        evidence: vec![v1::Evidence {
            source: "dpkg".into(),
            detail: format!("package {product} {version}"),
            signature: "dpkg".into(),
        }],
        version,
    }
}

/// The `index`-th device's base state: three catalogued products at 1.0.0.
fn base_state(index: usize) -> Vec<v1::Finding> {
    (0..3)
        .map(|k| finding(PRODUCTS[(index + k * 3) % PRODUCTS.len()], "1.0.0".into()))
        .collect()
}

/// The state after a delta: the first product of the base moved to another version (the
/// commonest change).
fn after_delta(
    index: usize,
    sequence: u64,
    state: &[v1::Finding],
) -> (v1::Finding, Vec<v1::Finding>) {
    let moved = finding(PRODUCTS[index % PRODUCTS.len()], format!("1.0.{sequence}"));
    let next = state
        .iter()
        .map(|f| {
            if f.product == moved.product {
                moved.clone()
            } else {
                f.clone()
            }
        })
        .collect();
    (moved, next)
}

/// The state digest of `findings`, as the agent computes it: over their canonical form.
pub fn state_digest(findings: &[v1::Finding]) -> Vec<u8> {
    let canonical: Vec<commscan_core::scan::Finding> = findings
        .iter()
        .filter_map(|f| commscan_proto::convert::finding_from_wire(f.clone()).ok())
        .map(commscan_core::report::canonical_finding)
        .collect();
    commscan_core::digest::state_digest(&canonical, &[]).to_vec()
}

/// A report leaving `state`, whose digest is `digest`.
fn report(sequence: u64, body: v1::report::Body, digest: Vec<u8>) -> AgentMessage {
    AgentMessage {
        kind: Some(agent_message::Kind::Report(v1::Report {
            sequence,
            body: Some(body),
            stats: Some(v1::ScanStats {
                duration_ms: 4,
                items_seen: 800,
                ..Default::default()
            }),
            scanned_at: Some(commscan_proto::convert::timestamp(
                time::OffsetDateTime::now_utc(),
            )),
            state_digest: digest,
        })),
    }
}

/// A snapshot of `state`, whose digest is `digest`.
fn snapshot(sequence: u64, state: &[v1::Finding], digest: Vec<u8>) -> AgentMessage {
    let body = v1::report::Body::Snapshot(v1::Snapshot {
        findings: state.to_vec(),
        unclassified: Vec::new(),
    });
    report(sequence, body, digest)
}

/// A delta moving `moved`, leaving a state whose digest is `digest`.
fn delta(sequence: u64, moved: v1::Finding, digest: Vec<u8>) -> AgentMessage {
    let body = v1::report::Body::Delta(v1::Delta {
        upserted: vec![moved],
        removed: Vec::new(),
        unclassified: Vec::new(),
        unclassified_changed: false,
    });
    report(sequence, body, digest)
}

/// What a simulated device keeps between sessions, as the agent's spool does.
#[derive(Debug, Clone)]
struct Kept {
    /// The last sequence sent.
    sequence: u64,
    /// The state the collector acknowledged last, and its digest (stated in the hello).
    acked: Vec<v1::Finding>,
    acked_digest: Option<Vec<u8>>,
    /// The catalog release held: the embedded one until a signed one arrives, stated in every
    /// hello like the real agent's, so a reconnect is not sent it again.
    catalog: u64,
}

/// Consecutive failed sessions, refusals counted apart (as the agent's session loop does).
#[derive(Debug, Default)]
struct Failures {
    refused: u32,
    other: u32,
}

/// A channel to `target` from `source`, with the agent's TLS and the transport's default
/// keepalive (a ping every 30 s: harsher on the collector than a real idle agent, which pings
/// every 15 min).
pub async fn connect(
    target: &Target,
    device: &SimDevice,
    source: IpAddr,
) -> Result<Channel, LoadgenError> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&target.ca_pem))
        .identity(Identity::from_pem(&device.cert_pem, &device.key_pem));
    let endpoint = Endpoint::from_shared(format!("https://{}", target.addr))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(10))
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    let addr = target.addr;
    let connector = tower::service_fn(move |_: tonic::transport::Uri| async move {
        let socket = match addr {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.bind(SocketAddr::new(source, 0))?;
        let stream = socket.connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
    });
    Ok(endpoint.connect_with_connector(connector).await?)
}

/// One agent's identity and surroundings.
pub struct Agent {
    /// Its position in the fleet (chooses its products).
    pub index: usize,
    /// Its credentials.
    pub device: SimDevice,
    /// The source address it connects from.
    pub source: IpAddr,
    /// The collector.
    pub target: Arc<Target>,
    /// What the pool wants now.
    pub phase: watch::Receiver<Phase>,
    /// Shared counters.
    pub counters: Arc<Counters>,
    /// Ends the agent.
    pub stop: CancellationToken,
}

/// A report waiting for its ack.
struct InFlight {
    sequence: u64,
    /// The state once it is applied, and its digest (computed once per report: the
    /// simulator shares the cores with the server it measures).
    state: Vec<v1::Finding>,
    digest: Vec<u8>,
    sent: Instant,
    /// Sent by a load phase (its latency is recorded), not the session's snapshot.
    measured: bool,
}

impl Agent {
    /// Runs sessions until stopped, backing off between failed ones like the real agent.
    pub async fn run(mut self, start_after: Duration) {
        tokio::select! {
            _ = self.stop.cancelled() => return,
            _ = tokio::time::sleep(start_after) => {}
        }
        let mut kept = Kept {
            sequence: 0,
            acked: base_state(self.index),
            acked_digest: None,
            catalog: commscan_core::signed_catalog::EMBEDDED_CATALOG_RELEASE,
        };
        let mut failures = Failures::default();
        loop {
            let mut established = false;
            match self.session(&mut kept, &mut established).await {
                Ok(()) => return,
                Err(e) => {
                    self.counters.failure(&e);
                    if established {
                        failures = Failures::default();
                    }
                    let refused = matches!(&e, LoadgenError::Connect(c) if connection_refused(c));
                    let (count, cap) = if refused {
                        (&mut failures.refused, REFUSED_BACKOFF_MAX)
                    } else {
                        (&mut failures.other, Duration::from_secs(300))
                    };
                    let delay = backoff(*count, Duration::from_secs(1), cap);
                    *count += 1;
                    tokio::select! {
                        _ = self.stop.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    async fn session(
        &mut self,
        kept: &mut Kept,
        established: &mut bool,
    ) -> Result<(), LoadgenError> {
        let channel = tokio::select! {
            _ = self.stop.cancelled() => return Ok(()),
            c = connect(&self.target, &self.device, self.source) => c?,
        };
        let (tx, rx) = mpsc::channel::<AgentMessage>(4);
        let hello = v1::Hello {
            agent_version: commscan_core::VERSION.into(),
            platform: v1::Platform::Linux as i32,
            last_acked_sequence: kept.sequence,
            hostname: format!("sim-{:06}", self.index),
            state_digest: kept.acked_digest.clone().unwrap_or_default(),
            device_id: self.device.device_id.clone(),
            // States its catalog, as a real agent does, so a newer signed catalog in force is
            // pushed to it (counted and adopted, not verified: the simulator measures the
            // collector, and verifying 90 KB per agent would load the shared cores).
            catalog: Some(v1::CatalogState {
                release: kept.catalog,
                ..Default::default()
            }),
        };
        let closed = || LoadgenError::Protocol("stream closed by collector".into());
        tx.send(AgentMessage {
            kind: Some(agent_message::Kind::Hello(hello)),
        })
        .await
        .map_err(|_| closed())?;
        let mut inbound = ReportingClient::new(channel)
            .connect(ReceiverStream::new(rx))
            .await?
            .into_inner();
        let want_snapshot = match inbound.message().await?.and_then(|m| m.kind) {
            Some(collector_message::Kind::Welcome(w)) => {
                kept.sequence = kept.sequence.max(w.stored_sequence);
                w.want_snapshot
            }
            other => {
                return Err(LoadgenError::Protocol(format!(
                    "expected a welcome, got {other:?}"
                )));
            }
        };
        *established = true;
        let _online = self.counters.online();

        // As the agent's spool: a snapshot of the current state only when the collector asks.
        let mut in_flight = None;
        if want_snapshot {
            self.counters.snapshot_asked();
            kept.sequence += 1;
            let state = kept.acked.clone();
            let digest = state_digest(&state);
            tx.send(snapshot(kept.sequence, &state, digest.clone()))
                .await
                .map_err(|_| closed())?;
            in_flight = Some(InFlight {
                sequence: kept.sequence,
                state,
                digest,
                sent: Instant::now(),
                measured: false,
            });
        } else {
            self.counters.in_sync();
        }
        let mut phase = *self.phase.borrow_and_update();
        let mut tick = phase.ticker(self.index);
        loop {
            // Closed loop: the next report leaves as soon as the previous one is acknowledged.
            if in_flight.is_none() && phase.closed_loop_open() {
                in_flight = Some(self.send_delta(kept, &tx).await?);
            }
            tokio::select! {
                _ = self.stop.cancelled() => return Ok(()),
                changed = self.phase.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    phase = *self.phase.borrow_and_update();
                    tick = phase.ticker(self.index);
                }
                _ = next_tick(&mut tick) => {
                    if !phase.open_loop_open() {
                        tick = None;
                    } else if in_flight.is_some() {
                        self.counters.skipped();
                    } else {
                        in_flight = Some(self.send_delta(kept, &tx).await?);
                    }
                }
                m = inbound.message() => match m?.and_then(|m| m.kind) {
                    Some(collector_message::Kind::Ack(a)) => {
                        if let Some(f) = in_flight.take_if(|f| a.sequence >= f.sequence) {
                            self.counters.acked(f.measured.then(|| f.sent.elapsed()));
                            if !f.measured {
                                self.counters.in_sync();
                            }
                            kept.acked_digest = Some(f.digest);
                            kept.acked = f.state;
                        }
                    }
                    Some(collector_message::Kind::PolicyChanged(_)) => self.counters.policy_changed(unix_nanos()),
                    Some(collector_message::Kind::CatalogUpdate(u)) => {
                        self.counters.catalog_updated(unix_nanos());
                        kept.catalog = u.release;
                    }
                    Some(collector_message::Kind::Throttle(t)) => {
                        // Not applied; like the real agent, wait as asked. The simulator
                        // counts it and moves on to the next report.
                        self.counters.throttled();
                        in_flight = None;
                        tokio::time::sleep(Duration::from_millis(u64::from(t.retry_after_ms)).min(Duration::from_secs(30))).await;
                    }
                    Some(_) => {}
                    None => return Err(closed()),
                },
            }
        }
    }

    /// Sends the next delta from the acknowledged state.
    async fn send_delta(
        &self,
        kept: &mut Kept,
        tx: &mpsc::Sender<AgentMessage>,
    ) -> Result<InFlight, LoadgenError> {
        kept.sequence += 1;
        let (moved, state) = after_delta(self.index, kept.sequence, &kept.acked);
        let digest = state_digest(&state);
        tx.send(delta(kept.sequence, moved, digest.clone()))
            .await
            .map_err(|_| LoadgenError::Protocol("stream closed by collector".into()))?;
        Ok(InFlight {
            sequence: kept.sequence,
            state,
            digest,
            sent: Instant::now(),
            measured: true,
        })
    }
}

async fn next_tick(tick: &mut Option<tokio::time::Interval>) {
    match tick {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}
