//! Privileged commands: enrolment tokens, people, the audit log, revoking devices.

use super::*;

/// Runs one of this module's commands; `main` dispatches only those here.
pub(crate) async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Devices {
            action: Some(DevicesAction::Remove { conn, id }),
            ..
        } => {
            conn.connection()?
                .admin()
                .await?
                .remove_device(v1::RemoveDeviceRequest {
                    device_id: id.clone(),
                })
                .await?;
            println!("device {id} removed with its history");
        }
        Command::Devices {
            action: Some(DevicesAction::Revoke { conn, id }),
            ..
        } => {
            conn.connection()?
                .admin()
                .await?
                .revoke_device(v1::RevokeDeviceRequest {
                    device_id: id.clone(),
                })
                .await?;
            println!(
                "device {id} revoked: it is refused from its next connection; its history stays"
            );
        }
        Command::Tokens {
            command:
                TokensCommand::Create {
                    conn,
                    org,
                    uses,
                    expires,
                },
        } => {
            let r = conn
                .connection()?
                .admin()
                .await?
                .create_enrollment_token(v1::CreateEnrollmentTokenRequest {
                    organisation: org.clone(),
                    uses: uses.unwrap_or(0),
                    expires_in_seconds: expires.map(|d| d.as_secs()).unwrap_or(0),
                })
                .await?
                .into_inner();
            let t = r.token.unwrap_or_default();
            match conn.output {
                Format::Json => println!(
                    "{}",
                    serde_json::json!({"token_id": t.token_id, "organisation": t.organisation, "secret": r.secret, "expires_at": time_text(t.expires_at.as_ref()), "uses": t.uses_left})
                ),
                _ => {
                    println!(
                        "enrolment token {} for '{}' (expires {}, uses {})",
                        t.token_id,
                        t.organisation,
                        time_text(t.expires_at.as_ref()),
                        t.uses_left
                            .map(|u| u.to_string())
                            .unwrap_or_else(|| "unlimited".into())
                    );
                    println!(
                        "secret (shown once; give it to `commscan-agent enroll` via COMMSCAN_ENROLL_TOKEN):\n  {}",
                        r.secret
                    );
                }
            }
        }
        Command::Tokens {
            command: TokensCommand::List { conn, org },
        } => {
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
            let header = ["TOKEN", "ORG", "CREATED", "EXPIRES", "USES LEFT", "STATE"];
            print!("{}", output::rows(&header, &rows, conn.output));
        }
        Command::Tokens {
            command: TokensCommand::Revoke { conn, id },
        } => {
            conn.connection()?
                .admin()
                .await?
                .revoke_enrollment_token(v1::RevokeEnrollmentTokenRequest {
                    token_id: id.clone(),
                })
                .await?;
            println!("enrolment token {id} revoked");
        }
        Command::People {
            command: PeopleCommand::Add { conn, name, grants },
        } => {
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
        Command::Audit { conn, after, limit } => {
            let r = conn
                .connection()?
                .admin()
                .await?
                .list_audit(v1::ListAuditRequest { after, limit })
                .await?
                .into_inner();
            let rows: Vec<Vec<String>> = r
                .entries
                .iter()
                .map(|e| {
                    vec![
                        e.position.to_string(),
                        time_text(e.at.as_ref()),
                        e.actor.clone(),
                        e.action.clone(),
                        if e.organisation.is_empty() {
                            "-".into()
                        } else {
                            e.organisation.clone()
                        },
                        if e.allowed {
                            "allowed".into()
                        } else {
                            "denied".into()
                        },
                        e.detail.clone(),
                    ]
                })
                .collect();
            let header = [
                "POSITION",
                "AT",
                "ACTOR",
                "ACTION",
                "ORGANISATION",
                "OUTCOME",
                "DETAIL",
            ];
            print!(
                "{}",
                output::rows_painted(&header, &rows, conn.output, Some(5), colour())
            );
        }
        other => unreachable!("main dispatched {} here", other.name()),
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

fn time_text(t: Option<&prost_types::Timestamp>) -> String {
    t.and_then(|t| convert::from_timestamp(t).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "-".into())
}
