//! `people add`: a bearer token for a person with scoped grants; the secret is shown once.

use super::Conn;
use clap::Subcommand;
use commscan_proto::v1;
use std::process::ExitCode;

#[derive(Subcommand)]
pub(crate) enum PeopleCommand {
    /// Create a bearer token for a person; the secret is shown once.
    Add {
        #[command(flatten)]
        conn: Conn,
        /// Their name, as the audit log shows it.
        name: String,
        /// ROLE or ROLE:ORG, repeatable: admin, officer:ORG, analyst, auditor[:ORG].
        #[arg(long = "grant", required = true)]
        grants: Vec<String>,
    },
}

pub(crate) async fn run(command: PeopleCommand) -> anyhow::Result<ExitCode> {
    match command {
        PeopleCommand::Add { conn, name, grants } => {
            let grants = grants
                .iter()
                .map(|g| parse_grant(g))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let r = conn
                .connection()?
                .admin()
                .await?
                .create_access_token(v1::CreateAccessTokenRequest {
                    name: name.clone(),
                    grants,
                })
                .await?
                .into_inner();
            println!(
                "access token for {name} (shown once; store it in a file and point COMMSCAN_TOKEN_FILE at it):\n  {}",
                r.secret
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn parse_grant(s: &str) -> anyhow::Result<v1::Grant> {
    let (role, org) = s.split_once(':').unwrap_or((s, ""));
    let role = match role {
        "admin" => v1::Role::Admin,
        "officer" => v1::Role::Officer,
        "analyst" => v1::Role::Analyst,
        "auditor" => v1::Role::Auditor,
        other => {
            anyhow::bail!("--grant {s}: unknown role '{other}' (admin, officer, analyst, auditor)")
        }
    };
    Ok(v1::Grant {
        role: role as i32,
        organisation: org.to_owned(),
    })
}
