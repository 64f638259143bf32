//! `commscan-demo dev`: the one-command start, after the fashion of `vault server -dev`.
//!
//! Makes a throw-away data directory and PKI, serves on loopback, enrols an in-process agent
//! that scans this machine, reads the device's verdict back through the Query API over TLS
//! (the same path an officer uses), prints it, and prints the `commscanctl` command to query
//! it, and the web console's address with a one-time sign-in link. With `once` it then stops; otherwise it keeps serving, and the agent keeps reporting,
//! until Ctrl-C. Everything is deleted on exit.

use anyhow::Context;
use commscan_agent::delivery::{Reporter, SessionEnd};
use commscan_agent::scanner::{ScanTarget, Scanner};
use commscan_agent::state::DataDir;
use commscan_collector::compliance::RulesConfig;
use commscan_collector::layout::{InitOptions, Layout};
use commscan_collector::server::{Limits, serve};
use commscan_core::catalog::Catalog;
use commscan_core::platform::Platform;
use commscan_ctl::{Connection, output};
use commscan_proto::v1;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Options of `dev`.
#[derive(Debug, Clone)]
pub struct DevOptions {
    /// Address to serve on (loopback).
    pub listen: SocketAddr,
    /// Print the verdict and exit.
    pub once: bool,
    /// Scan this tree instead of this machine.
    pub root: Option<PathBuf>,
    /// Do not read processes.
    pub no_processes: bool,
    /// Policy file instead of the embedded default.
    pub policy: Option<PathBuf>,
    /// Rescan interval of the in-process agent when not `once`.
    pub interval: Duration,
    /// Colour statuses.
    pub colour: bool,
}

/// Runs the dev mode, writing what a person reads to `out`.
pub async fn run(
    opts: DevOptions,
    out: &mut (dyn Write + Send),
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("commscan-dev-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let layout = Layout::new(dir.path().join("collector"));
    let secrets = layout
        .init(&InitOptions {
            trust_domain: "commscan.dev".into(),
            server_names: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            organisation: "dev".into(),
            import_ca: None,
            import_server: None,
        })
        .context("init")?;
    let (collector, tls) = layout.open(&RulesConfig::with_policy(opts.policy.as_deref()))?;
    let policy_id = collector.rules().policy.id.clone();
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("cannot listen on {}", opts.listen))?;
    let addr = listener.local_addr()?;
    let url = match addr {
        SocketAddr::V4(a) => format!("https://{}:{}", a.ip(), a.port()),
        SocketAddr::V6(a) => format!("https://[{}]:{}", a.ip(), a.port()),
    };
    let server_stop = shutdown.child_token();
    // The web console beside it, on the next port (any free one when the port is 0).
    let web_addr = SocketAddr::new(
        addr.ip(),
        if opts.listen.port() == 0 {
            0
        } else {
            addr.port() + 1
        },
    );
    let web_listener = tokio::net::TcpListener::bind(web_addr)
        .await
        .with_context(|| format!("cannot listen on {web_addr} (web console)"))?;
    let web_url = match web_listener.local_addr()? {
        SocketAddr::V4(a) => format!("https://{}:{}", a.ip(), a.port()),
        SocketAddr::V6(a) => format!("https://[{}]:{}", a.ip(), a.port()),
    };
    let web = tokio::spawn(commscan_collector::web::serve(
        collector.clone(),
        layout.web_tls()?,
        web_listener,
        server_stop.clone(),
    ));
    let domain = collector.clone();
    let server = tokio::spawn(serve(
        collector,
        tls,
        listener,
        Limits::default(),
        server_stop.clone(),
    ));

    let ca_path = layout.path("pki/ca.crt");
    let ca_pem = std::fs::read_to_string(&ca_path)?;
    let agent_dir = DataDir::new(dir.path().join("agent"));
    let target = match &opts.root {
        Some(root) => ScanTarget::tree(
            root,
            Platform::host().context("unsupported operating system")?,
        ),
        None => ScanTarget::host(opts.no_processes).context("unsupported operating system")?,
    };
    let platform = target.platform;
    let identity = commscan_agent::enroll::enroll(
        &url,
        &secrets.enrolment_token,
        &ca_pem,
        platform,
        None,
        &agent_dir,
    )
    .await
    .context("agent enrolment")?;
    let reporter = Arc::new(Reporter::new(
        agent_dir,
        Arc::new(Scanner::new(&Catalog::embedded())),
        target,
    ));
    match reporter
        .session(opts.interval, true, &shutdown)
        .await
        .context("agent report")?
    {
        SessionEnd::Acked(_) => {}
        SessionEnd::Shutdown => return Ok(()),
    }

    let token_file = layout.path("admin.token");
    let conn = Connection {
        collector: url.clone(),
        ca: ca_path.clone(),
        token: secrets.admin_token.clone(),
    };
    let detail = conn
        .query()
        .await?
        .get_device(v1::GetDeviceRequest {
            device_id: identity.device_id.clone(),
            ..Default::default()
        })
        .await
        .context("query the device back")?
        .into_inner();
    let detail = output::device_detail_out(&detail);
    writeln!(
        out,
        "commscan dev collector on {url} (policy '{policy_id}', data in {})\n",
        dir.path().display()
    )?;
    write!(
        out,
        "{}",
        output::device_detail(&detail, output::Format::Table, opts.colour)
    )?;
    let ctl = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("commscanctl")))
        .filter(|p| p.exists())
        .map(|p| p.display().to_string())
        // The same profile as the README's `cargo run --release -- dev`: no second build.
        .unwrap_or_else(|| "cargo run --release -p commscan-ctl --bin commscanctl --".into());
    if opts.once {
        // The collector stops with this process: point at nothing that will not answer.
        writeln!(
            out,
            "\nthe collector has stopped (--once); run `dev` without --once to keep it serving and query it with {ctl}"
        )?;
    } else {
        writeln!(
            out,
            "\nquery it with:\n  COMMSCAN_COLLECTOR={url} COMMSCAN_CA={} COMMSCAN_TOKEN_FILE={} \\\n    {ctl} device {}",
            ca_path.display(),
            token_file.display(),
            identity.device_id
        )?;
    }
    out.flush()?;

    if !opts.once {
        // A one-time sign-in link for the admin (the console is served only while `dev` runs).
        let admin = domain.authenticate(Some(&secrets.admin_token), Default::default())?;
        let (code, _) = domain.create_login_link(&admin, &admin.id)?;
        writeln!(
            out,
            "\nweb console: {web_url}/ (certificate from {}); sign in once with:\n  {web_url}/login/link?code={code}",
            ca_path.display()
        )?;
        writeln!(
            out,
            "\nserving until Ctrl-C; the agent rescans every {:?}",
            opts.interval
        )?;
        out.flush()?;
        let agent_stop = shutdown.clone();
        let r = reporter.clone();
        let interval = opts.interval;
        let agent = tokio::spawn(async move {
            while !agent_stop.is_cancelled() {
                if let Err(e) = r.session(interval, false, &agent_stop).await {
                    tracing::warn!(error = %e, "dev agent session ended");
                    tokio::select! {
                        _ = agent_stop.cancelled() => {}
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        });
        shutdown.cancelled().await;
        let _ = agent.await;
    }
    server_stop.cancel();
    server.await.context("server task")??;
    let _ = web.await;
    Ok(())
}
