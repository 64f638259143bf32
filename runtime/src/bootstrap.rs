//! A binary's `main`, the same for every commscan binary: structured logs on stderr (text, in
//! colour only on a terminal, or one JSON object per line with `COMMSCAN_LOG_FORMAT=json` /
//! `--log-format json`) filtered by `COMMSCAN_LOG`, else the standard `RUST_LOG`, else the
//! binary's default; the ring provider for rustls, a tokio runtime, and one mapping from the
//! outcome to an exit code:
//!
//! | outcome | exit code |
//! |---|---|
//! | success, or the code the command chose | 0, or that code |
//! | a [`Usage`] error anywhere in the chain (bad flags, configuration, missing file) | 64 (`EX_USAGE`) |
//! | a write to a pipe whose reader has gone (`| head -1`) | 0, quietly ([`crate::stdout`]) |
//! | any other error | 1 |
//!
//! Errors are printed once, as `NAME: cause: cause…`; a collector's refusal (a
//! [`tonic::Status`]) as `NAME: collector answered CODE: message`.

use std::future::Future;
use std::process::ExitCode;

/// `EX_USAGE` from sysexits.h: the command was used wrongly (flags, configuration).
pub const EX_USAGE: u8 = 64;

/// A usage or configuration mistake: exit code [`EX_USAGE`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

/// How many threads the runtime runs on.
#[derive(Debug, Clone, Copy)]
pub enum Threads {
    /// One thread: clients that make a call and print.
    Current,
    /// A multi-threaded runtime with this many workers (`None`: one per core).
    Workers(Option<usize>),
    /// A resident process that is idle most of its life (the agent): one thread for async
    /// work, at most `max_blocking` threads for blocking work (scans, disk), each ending once
    /// it has waited `keep_alive` for work, so that an idle process keeps none
    /// ([`resident_runtime`]).
    Resident {
        /// Most blocking threads at once.
        max_blocking: usize,
        /// How long an idle blocking thread lives.
        keep_alive: std::time::Duration,
    },
}

/// The runtime of [`Threads::Resident`]: current-thread, a small blocking pool whose threads
/// end `keep_alive` after their last task, timers and I/O enabled.
pub fn resident_runtime(
    max_blocking: usize,
    keep_alive: std::time::Duration,
) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .max_blocking_threads(max_blocking.max(1))
        .thread_keep_alive(keep_alive)
        .enable_all()
        .build()
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines; colour only when stderr is a terminal.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `fields` (with `message`),
    /// and `span`/`spans` inside spans; never colour.
    Json,
}

impl LogFormat {
    /// `text` or `json`.
    pub fn parse(s: &str) -> Result<LogFormat, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("'{other}' is not a log format (text or json)")),
        }
    }

    /// From `COMMSCAN_LOG_FORMAT`, else text.
    pub fn from_env() -> LogFormat {
        std::env::var("COMMSCAN_LOG_FORMAT")
            .ok()
            .and_then(|v| LogFormat::parse(&v).ok())
            .unwrap_or_default()
    }
}

/// The process's settings: its name in messages, its default log filter, its runtime.
#[derive(Debug, Clone, Copy)]
pub struct Main {
    /// Name printed before errors.
    pub name: &'static str,
    /// Log filter when `COMMSCAN_LOG` is not set (e.g. `warn,commscan_agent=info`).
    pub default_log: &'static str,
    /// The runtime.
    pub threads: Threads,
    /// How logs are written.
    pub log_format: LogFormat,
}

impl Main {
    /// Sets up logging and TLS, runs `body` to completion on a fresh runtime, and turns its
    /// outcome into an exit code.
    pub fn run<F>(self, body: F) -> ExitCode
    where
        F: Future<Output = anyhow::Result<ExitCode>>,
    {
        init_logging_as(self.default_log, self.log_format);
        install_crypto_provider();
        crate::stdout::quiet_on_closed_pipe();
        let built = match self.threads {
            Threads::Current => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build(),
            Threads::Workers(n) => {
                let mut b = tokio::runtime::Builder::new_multi_thread();
                if let Some(n) = n {
                    b.worker_threads(n);
                }
                b.enable_all().build()
            }
            Threads::Resident {
                max_blocking,
                keep_alive,
            } => resident_runtime(max_blocking, keep_alive),
        };
        let rt = match built {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("{}: cannot start the async runtime: {e}", self.name);
                return ExitCode::FAILURE;
            }
        };
        match rt.block_on(body) {
            Ok(code) => code,
            Err(e) if crate::stdout::is_closed_pipe(&e) => ExitCode::SUCCESS,
            Err(e) => report(self.name, &e),
        }
    }
}

/// Logs text to stderr (colour on a terminal only), filtered by `COMMSCAN_LOG`, `RUST_LOG`
/// or else `default`.
pub fn init_logging(default: &str) {
    init_logging_as(default, LogFormat::from_env());
}

/// [`init_logging`] in `format`.
pub fn init_logging_as(default: &str, format: LogFormat) {
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter(default))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().with_ansi(false).init(),
    }
}

/// Logs to `file` without terminal colours (a Windows service has no stderr), filtered like
/// [`init_logging`].
pub fn init_logging_to_file(default: &str, file: std::fs::File) {
    tracing_subscriber::fmt()
        .with_env_filter(filter(default))
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(file))
        .init();
}

/// `COMMSCAN_LOG`, else `RUST_LOG`, else `default`.
fn filter(default: &str) -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_env("COMMSCAN_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_env("RUST_LOG"))
        .unwrap_or_else(|_| default.into())
}

/// Installs ring as rustls's process-wide provider (a second call is harmless).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Prints `e` once and returns its exit code.
pub fn report(name: &str, e: &anyhow::Error) -> ExitCode {
    if let Some(s) = e.downcast_ref::<tonic::Status>() {
        eprintln!("{name}: collector answered {:?}: {}", s.code(), s.message());
    } else {
        eprintln!("{name}: {e:#}");
    }
    exit_code(e)
}

/// 64 when a [`Usage`] error is anywhere in the chain, 1 otherwise.
pub fn exit_code(e: &anyhow::Error) -> ExitCode {
    ExitCode::from(exit_status(e))
}

/// [`exit_code`] as a number, for a service manager's exit code (Windows SCM).
pub fn exit_status(e: &anyhow::Error) -> u8 {
    if e.chain().any(|c| c.downcast_ref::<Usage>().is_some()) {
        EX_USAGE
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn a_usage_error_under_context_still_exits_64() {
        let e = Err::<(), _>(Usage("--listen: bad address".into()))
            .context("serve")
            .unwrap_err();
        assert_eq!(exit_code(&e), ExitCode::from(EX_USAGE));
        let other = anyhow::anyhow!("disk full");
        assert_eq!(exit_code(&other), ExitCode::FAILURE);
    }
}
