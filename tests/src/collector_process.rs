//! The collector binary as a child process on a fixed loopback port, to be SIGKILLed and
//! started again: what an in-process collector cannot show (a process dying between its
//! commit and its acknowledgement, with nothing run on the way out).
//!
//! Its stderr is read line by line into a [`CollectorLog`] shared across lives (and across
//! nodes, each line tagged with the node's name), for the [oracle](crate::oracle). The child
//! is killed on drop.

use crate::oracle::CollectorLog;
use crate::workspace_binary;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `commscan-collector init` of a deployment in `data` for organisation `acme`, its server
/// certificate for 127.0.0.1, with `extra` arguments (a store); the enrolment token it printed.
pub fn init_deployment(data: &Path, extra: &[String]) -> String {
    let out = Command::new(workspace_binary("commscan-collector"))
        .arg("init")
        .arg("--data-dir")
        .arg(data)
        .args(["--org", "acme", "--trust-domain", "test.local"])
        .args(["--server-name", "127.0.0.1"])
        .args(extra)
        .env_remove("COMMSCAN_STORE_PASSWORD")
        .output()
        .expect("run commscan-collector init");
    assert!(
        out.status.success(),
        "init: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("cse_"))
        .expect("an enrolment token")
        .to_owned()
}

/// A `commscanctl` connection to `url` as the deployment's first admin (`data/admin.token`).
pub fn admin_connection(data: &Path, url: &str) -> commscan_ctl::Connection {
    commscan_ctl::Connection {
        collector: url.to_owned(),
        ca: data.join("pki/ca.crt"),
        token: std::fs::read_to_string(data.join("admin.token"))
            .expect("admin.token")
            .trim()
            .to_owned(),
    }
}

/// How long a start may take before the port answers.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// `commscan-collector serve` on `127.0.0.1:port`.
pub struct CollectorProcess {
    /// The node's name in the log.
    pub name: String,
    /// Its data directory.
    pub data: PathBuf,
    /// The port it listens on, the same in every life.
    pub port: u16,
    /// Arguments after `serve --data-dir D --listen A` (a store, for instance).
    pub args: Vec<String>,
    /// Environment for the child.
    pub env: Vec<(String, String)>,
    /// Where its log lines go.
    pub log: CollectorLog,
    /// How many times it was started.
    pub lives: usize,
    child: Option<Child>,
}

impl CollectorProcess {
    /// A collector of the deployment in `data`, not started, on a free port.
    pub fn new(name: &str, data: &Path, log: CollectorLog) -> CollectorProcess {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        CollectorProcess {
            name: name.to_owned(),
            data: data.to_path_buf(),
            port,
            args: Vec::new(),
            env: Vec::new(),
            log,
            lives: 0,
            child: None,
        }
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// Starts it and waits until its port accepts connections.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let mut cmd = Command::new(workspace_binary("commscan-collector"));
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(&self.data)
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            // Several run at once: no console or metrics on their default ports.
            .args(["--web-listen", "off", "--metrics-listen", "off"])
            .args(&self.args)
            .env("COMMSCAN_LOG", "warn,commscan_collector=info")
            .env("NO_COLOR", "1")
            // Not this machine's /etc/commscan/collector.toml (a store, alert sinks): the
            // arguments alone. A test's own `--config` overrides this.
            .env("COMMSCAN_CONFIG", "/dev/null")
            .env_remove("COMMSCAN_POLICY")
            .env_remove("COMMSCAN_STORE")
            .env_remove("COMMSCAN_STORE_PASSWORD")
            .env_remove("COMMSCAN_STORE_PASSWORD_FILE")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn commscan-collector");
        self.lives += 1;
        let (log, name) = (self.log.clone(), format!("{}#{}", self.name, self.lives));
        let stderr = child.stderr.take().expect("piped stderr");
        std::thread::spawn(move || {
            for l in BufReader::new(stderr).lines().map_while(Result::ok) {
                log.push(&name, &l);
            }
        });
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self.exited() {
                panic!(
                    "{} exited while starting ({status}); its log:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} did not listen within {START_TIMEOUT:?}; its log:\n{}",
                self.name,
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, and reap it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("SIGKILL"); // Child::kill is SIGKILL on Unix
            c.wait().expect("reap");
        }
    }

    /// SIGTERM (a stop by systemd), then waits up to `within` for it to exit: its exit
    /// status and how long it took, or `None` if it was still running (it is SIGKILLed then).
    pub fn terminate(&mut self, within: Duration) -> Option<(std::process::ExitStatus, Duration)> {
        let child = self.child.as_mut()?;
        let pid = child.id().to_string();
        let started = Instant::now();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM {pid}: {sent}");
        while started.elapsed() < within {
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return Some((status, started.elapsed()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        None
    }

    /// Whether it is running (started and not exited).
    pub fn is_running(&mut self) -> bool {
        self.child.is_some() && self.exited().is_none()
    }

    /// The exit status, if it was started and has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// Its last log lines (of every life), for failure messages.
    pub fn log_tail(&self) -> String {
        let prefix = format!("{}#", self.name);
        let mine: Vec<String> = self
            .log
            .lines()
            .into_iter()
            .filter(|(n, _)| n.starts_with(&prefix))
            .map(|(n, l)| format!("[{n}] {l}"))
            .collect();
        mine[mine.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for CollectorProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
