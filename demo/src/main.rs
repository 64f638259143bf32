//! `commscan-demo dev`: the README's first command (`cargo run --release -- dev`). The demo
//! composes the collector, an agent and the officer's client from outside all three, so none
//! of them has to link another.

mod dev;

use clap::{Parser, Subcommand};
use commscan_runtime::bootstrap::{Main, Threads, Usage};
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "commscan-demo",
    version,
    about = "Try commscan on this machine: a throw-away collector, an agent, its verdict"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// One-command start: throw-away collector, an agent scanning this machine, its verdict.
    Dev {
        /// Print the verdict and exit 0 (for scripts and CI).
        #[arg(long)]
        once: bool,
        /// Loopback address to serve on (port 0 picks a free one).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Scan this directory tree instead of this machine.
        #[arg(long)]
        root: Option<PathBuf>,
        /// Do not read the process table.
        #[arg(long)]
        no_processes: bool,
        /// Policy file (default: the embedded ministry-letter policy).
        #[arg(long)]
        policy: Option<PathBuf>,
        /// How often the in-process agent rescans while serving.
        #[arg(long, default_value = "5m", value_parser = commscan_core::duration::parse_duration)]
        interval: Duration,
    },
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let Command::Dev {
        once,
        listen,
        root,
        no_processes,
        policy,
        interval,
    } = cli.command;
    if !listen.ip().is_loopback() {
        return Err(Usage(format!(
            "--listen {listen}: dev mode serves on loopback only"
        ))
        .into());
    }
    let opts = dev::DevOptions {
        listen,
        once,
        root,
        no_processes,
        policy,
        interval,
        colour: std::io::stdout().is_terminal(),
    };
    let mut stdout = std::io::stdout();
    dev::run(opts, &mut stdout, commscan_runtime::signals::on_signals()).await?;
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `dev` prints its own story on stdout; its logs stay quiet unless asked for.
    Main {
        name: "commscan-demo",
        default_log: "warn",
        threads: Threads::Workers(None),
        log_format: commscan_runtime::bootstrap::LogFormat::from_env(),
    }
    .run(run(cli))
}
