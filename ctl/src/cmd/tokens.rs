//! `tokens create|list|revoke`: enrolment tokens of an organisation. A token's secret is
//! shown once, at creation; listings never carry it.

use super::{Conn, time_text};
use clap::Subcommand;
use commscan_ctl::output::{self, Format};
use commscan_proto::v1;
use commscan_runtime::{out, outln};
use std::process::ExitCode;

#[derive(Subcommand)]
pub(crate) enum TokensCommand {
    /// Create an enrolment token for an organisation; the secret is shown once.
    Create {
        #[command(flatten)]
        conn: Conn,
        /// Organisation devices will enrol into; it must already exist (have devices or
        /// tokens) unless --new-org is given.
        #[arg(long)]
        org: String,
        /// Create the organisation: its first enrolment token.
        #[arg(long)]
        new_org: bool,
        /// Number of enrolments it allows, at least 1 (default: unlimited until it expires).
        #[arg(long, value_parser = parse_uses)]
        uses: Option<u64>,
        /// Lifetime, e.g. 7d, 12h, at least 1s (default 7d, at most 366d).
        #[arg(long, value_parser = parse_expires)]
        expires: Option<std::time::Duration>,
    },
    /// List enrolment tokens (never their secrets).
    List {
        #[command(flatten)]
        conn: Conn,
        /// Only this organisation.
        #[arg(long)]
        org: Option<String>,
    },
    /// Revoke an enrolment token by id.
    Revoke {
        #[command(flatten)]
        conn: Conn,
        /// Token id from `tokens list`.
        id: String,
    },
}

/// `--uses`: 0 would be sent as "not given", which means unlimited; refuse it rather than
/// create the opposite of what was asked.
fn parse_uses(s: &str) -> Result<u64, String> {
    match s.trim().parse::<u64>() {
        Ok(0) => Err("0 would allow no enrolment (omit --uses for unlimited uses)".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("'{s}' is not a number of uses")),
    }
}

/// `--expires`: 0s would be sent as "not given", which means 7 days; refuse it.
fn parse_expires(s: &str) -> Result<std::time::Duration, String> {
    let d = commscan_core::duration::parse_duration(s)?;
    if d.is_zero() {
        return Err(format!(
            "'{s}' would expire at once (omit --expires for the default of 7 days)"
        ));
    }
    Ok(d)
}

pub(crate) async fn run(command: TokensCommand) -> anyhow::Result<ExitCode> {
    match command {
        TokensCommand::Create {
            conn,
            org,
            new_org,
            uses,
            expires,
        } => {
            if !new_org {
                let known = super::known_organisations(&conn).await?;
                if !known.contains(&org) {
                    anyhow::bail!(
                        "{}; give --new-org to create it",
                        commscan_core::suggest::unknown(
                            "organisation",
                            &output::text(&org),
                            known.iter().map(String::as_str)
                        )
                    );
                }
            }
            let r = conn
                .connection()?
                .admin()
                .await?
                .create_enrollment_token(v1::CreateEnrollmentTokenRequest {
                    organisation: org.clone(),
                    uses: uses.unwrap_or(0),
                    expires_in_seconds: expires.map(|d| d.as_secs()).unwrap_or(0),
                    new_organisation: new_org,
                })
                .await?
                .into_inner();
            let t = r.token.unwrap_or_default();
            match conn.output {
                Format::Json => outln!(
                    "{}",
                    serde_json::json!({"token_id": t.token_id, "organisation": t.organisation, "secret": r.secret, "expires_at": time_text(t.expires_at.as_ref()), "uses": t.uses_left})
                )?,
                _ => {
                    // The secret first, alone on its line and flushed: it exists nowhere else,
                    // and `| head -1` must still get it. If it cannot be written, the token is
                    // useless: that is a failure (not the quiet end of a closed pipe), naming
                    // the token to revoke.
                    outln!("{}", r.secret).map_err(|e| {
                        anyhow::anyhow!(
                            "enrolment token {} was created but its secret could not be written ({e}); revoke it with `commscanctl tokens revoke {}`",
                            t.token_id,
                            t.token_id
                        )
                    })?;
                    outln!(
                        "enrolment token {} for '{}' (expires {}, uses {}); the secret above is shown once: give it to `commscan-agent enroll` via COMMSCAN_ENROLL_TOKEN",
                        t.token_id,
                        output::text(&t.organisation),
                        time_text(t.expires_at.as_ref()),
                        t.uses_left
                            .map(|u| u.to_string())
                            .unwrap_or_else(|| "unlimited".into())
                    )?;
                }
            }
        }
        TokensCommand::List { conn, org } => {
            let r = conn
                .connection()?
                .admin()
                .await?
                .list_enrollment_tokens(v1::ListEnrollmentTokensRequest {
                    organisation: org.unwrap_or_default(),
                })
                .await?
                .into_inner();
            let rows: Vec<Vec<String>> = r
                .tokens
                .iter()
                .map(|t| {
                    vec![
                        t.token_id.clone(),
                        t.organisation.clone(),
                        time_text(t.created_at.as_ref()),
                        time_text(t.expires_at.as_ref()),
                        t.uses_left
                            .map(|u| u.to_string())
                            .unwrap_or_else(|| "unlimited".into()),
                        if t.revoked {
                            "revoked".into()
                        } else {
                            "active".into()
                        },
                    ]
                })
                .collect();
            if matches!(conn.output, output::Format::Json) {
                // Typed: uses_left a number (null: unlimited), revoked a boolean.
                let v: Vec<serde_json::Value> = r
                    .tokens
                    .iter()
                    .map(|t| {
                        serde_json::json!({
                            "token": t.token_id,
                            "org": t.organisation,
                            "created": output::time_text(t.created_at.as_ref()),
                            "expires": output::time_text(t.expires_at.as_ref()),
                            "uses_left": t.uses_left,
                            "state": if t.revoked { "revoked" } else { "active" },
                        })
                    })
                    .collect();
                outln!("{}", serde_json::to_string_pretty(&v)?)?;
                return Ok(ExitCode::SUCCESS);
            }
            let header = ["TOKEN", "ORG", "CREATED", "EXPIRES", "USES LEFT", "STATE"];
            out!("{}", output::rows(&header, &rows, conn.output))?;
        }
        TokensCommand::Revoke { conn, id } => {
            conn.connection()?
                .admin()
                .await?
                .revoke_enrollment_token(v1::RevokeEnrollmentTokenRequest {
                    token_id: id.clone(),
                })
                .await?;
            outln!("enrolment token {id} revoked")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
