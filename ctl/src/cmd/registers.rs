//! `registers apply|history|text|rollback`: the registers (approved lists) kept in the
//! collector's store ([`super::rules`]).

use clap::Subcommand;
use std::process::ExitCode;

#[derive(Subcommand)]
pub(crate) enum RegistersCommand {
    #[command(flatten)]
    Stored(super::rules::Stored),
}

pub(crate) async fn run(command: RegistersCommand) -> anyhow::Result<ExitCode> {
    match command {
        RegistersCommand::Stored(s) => {
            super::rules::run(commscan_proto::v1::RulesKind::Registers, s).await
        }
    }
}
