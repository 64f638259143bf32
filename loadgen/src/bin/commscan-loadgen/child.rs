//! The coordinator's children and the line protocol it speaks with them: one JSON object per
//! line, commands on the child's stdin, events on its stdout (logs go to stderr). A child whose
//! stdin closes stops, so children never outlive a coordinator that died.

use anyhow::{Context, bail};
use commscan_loadgen::pool::Snapshot;
use commscan_loadgen::procfs::{ProcSample, sample};
use serde::{Deserialize, Serialize};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{ChildStdin, ChildStdout};

/// A command to a child.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    /// Agents: run a load phase for `secs`, then answer with `Stats` for that phase.
    Load {
        /// Back to back (`None`) or one report per agent every `interval_ms`.
        interval_ms: Option<f64>,
        /// Length of the phase.
        secs: f64,
    },
    /// Agents: zero the counters.
    Reset,
    /// Agents: answer with `Stats`. Collector: answer with `Connected`.
    Stats,
    /// Collector: reload the other policy; answer with `Reloaded`.
    Reload,
    /// Collector: put a newly signed catalog (the embedded one as release 2) in force, as
    /// `catalog apply` of a signed file does; answer with `Reloaded`.
    PublishCatalog,
    /// Stop and exit.
    Quit,
}

/// An event from a child.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "ev", rename_all = "snake_case")]
pub enum Event {
    /// Started; a server says where it listens and how long it took to be ready.
    Ready {
        /// The listening address (servers).
        addr: Option<String>,
        /// Milliseconds from process start to listening (servers).
        startup_ms: Option<f64>,
    },
    /// An agents child's counters.
    Stats(Snapshot),
    /// A collector's count of connected devices.
    Connected {
        /// Devices with a stream open.
        devices: usize,
    },
    /// A collector reloaded its policy.
    Reloaded {
        /// When the reload began (Unix ns).
        started_ns: u64,
        /// When it returned, devices re-judged and the change announced (Unix ns).
        finished_ns: u64,
        /// Devices re-judged.
        devices: usize,
        /// Devices whose status changed.
        changed: usize,
    },
    /// Something failed.
    Failed {
        /// What.
        message: String,
    },
}

/// Writes one event line to stdout.
pub fn emit(event: &Event) {
    println!(
        "{}",
        serde_json::to_string(event).expect("events serialise")
    );
}

/// A running child of this binary.
pub struct Child {
    name: String,
    child: tokio::process::Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    /// Its process id.
    pub pid: u32,
}

impl Child {
    /// Starts this binary with `args`.
    pub fn spawn(name: &str, args: &[String]) -> anyhow::Result<Child> {
        let exe = std::env::current_exe().context("own executable")?;
        let mut child = tokio::process::Command::new(exe)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let pid = child.id().context("child pid")?;
        let stdin = child.stdin.take().context("child stdin")?;
        let stdout = child.stdout.take().context("child stdout")?;
        Ok(Child {
            name: name.to_owned(),
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
            pid,
        })
    }

    /// Sends a command.
    pub async fn send(&mut self, cmd: &Command) -> anyhow::Result<()> {
        let mut line = serde_json::to_string(cmd)?;
        line.push('\n');
        self.stdin
            .write_all(line.as_bytes())
            .await
            .with_context(|| format!("{}: sending {cmd:?}", self.name))?;
        Ok(())
    }

    /// The next event, within `timeout`.
    pub async fn recv(&mut self, timeout: Duration) -> anyhow::Result<Event> {
        let line = tokio::time::timeout(timeout, self.lines.next_line())
            .await
            .with_context(|| format!("{}: no answer within {timeout:?}", self.name))??
            .with_context(|| format!("{}: exited", self.name))?;
        let event: Event = serde_json::from_str(&line)
            .with_context(|| format!("{}: unreadable event {line:?}", self.name))?;
        if let Event::Failed { message } = &event {
            bail!("{}: {message}", self.name);
        }
        Ok(event)
    }

    /// Sends `cmd` and waits for its answer.
    pub async fn ask(&mut self, cmd: &Command, timeout: Duration) -> anyhow::Result<Event> {
        self.send(cmd).await?;
        self.recv(timeout).await
    }

    /// Its memory and CPU now.
    pub fn sample(&self) -> ProcSample {
        sample(self.pid).unwrap_or_default()
    }

    /// Kills it at once (SIGKILL), as a crash would.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }

    /// Asks it to quit and waits (at most `grace`, then kills it).
    pub async fn quit(mut self, grace: Duration) {
        let _ = self.send(&Command::Quit).await;
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}
