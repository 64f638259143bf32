//! `people add|list|revoke|expire|login`: people's bearer tokens with scoped grants, and
//! one-time web console sign-in links. A secret is
//! shown once, at creation; listings never carry it. People are known by a 12-digit id (the
//! audit log shows it beside the name), so two people with one name stay apart.

use super::{Conn, time_text};
use clap::Subcommand;
use commscan_ctl::output::{self, Format};
use commscan_proto::v1;
use commscan_runtime::{out, outln};
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
        /// Lifetime, e.g. 90d, 12h (default: until revoked; at most 366d).
        #[arg(long, value_parser = commscan_core::duration::parse_duration)]
        expires: Option<std::time::Duration>,
    },
    /// List people's tokens (never their secrets).
    List {
        #[command(flatten)]
        conn: Conn,
    },
    /// Revoke a person's token: refused from its next call on.
    Revoke {
        #[command(flatten)]
        conn: Conn,
        /// Person id from `people list`.
        id: String,
    },
    /// A one-time web console sign-in link for a person (valid 10 minutes, used once).
    Login {
        #[command(flatten)]
        conn: Conn,
        /// Person id from `people list`.
        id: String,
        /// The console's address (default: the collector's host on port 7444).
        #[arg(long, env = "COMMSCAN_CONSOLE")]
        console: Option<String>,
    },
    /// Make a person's token expire, now or after a delay (never later than it would).
    Expire {
        #[command(flatten)]
        conn: Conn,
        /// Person id from `people list`.
        id: String,
        /// Expire after this long, e.g. 1h (default: now).
        #[arg(long = "in", value_parser = commscan_core::duration::parse_duration)]
        after: Option<std::time::Duration>,
    },
}

pub(crate) async fn run(command: PeopleCommand) -> anyhow::Result<ExitCode> {
    match command {
        PeopleCommand::Add {
            conn,
            name,
            grants,
            expires,
        } => {
            let grants = grants
                .iter()
                .map(|g| parse_grant(g))
                .collect::<anyhow::Result<Vec<_>>>()?;
            if expires.is_some_and(|d| d.as_secs() == 0) {
                anyhow::bail!("--expires: give a lifetime of at least one second");
            }
            let r = conn
                .connection()?
                .admin()
                .await?
                .create_access_token(v1::CreateAccessTokenRequest {
                    name: name.clone(),
                    grants,
                    expires_in_seconds: expires.map(|d| d.as_secs()).unwrap_or(0),
                })
                .await?
                .into_inner();
            match conn.output {
                Format::Json => outln!(
                    "{}",
                    serde_json::json!({"person_id": r.person_id, "name": name, "secret": r.secret})
                )?,
                _ => outln!(
                    "access token for {} [{}] (shown once; store it in a file and point COMMSCAN_TOKEN_FILE at it):\n  {}",
                    output::text(&name),
                    output::text(&r.person_id),
                    r.secret
                )?,
            }
        }
        PeopleCommand::List { conn } => {
            let r = conn
                .connection()?
                .admin()
                .await?
                .list_access_tokens(v1::ListAccessTokensRequest {})
                .await?
                .into_inner();
            if matches!(conn.output, Format::Json) {
                // Typed: grants a list of {role, organisation (null: every one)}, times null
                // when unset.
                let v: Vec<serde_json::Value> = r
                    .tokens
                    .iter()
                    .map(|t| {
                        let r = row(t);
                        serde_json::json!({
                            "person": t.person_id,
                            "name": t.name,
                            "grants": t.grants.iter().map(|g| serde_json::json!({
                                "role": role_name(g.role),
                                "organisation": (!g.organisation.is_empty()).then_some(&g.organisation),
                            })).collect::<Vec<_>>(),
                            "created": output::time_text(t.created_at.as_ref()),
                            "by": t.created_by,
                            "expires": output::time_text(t.expires_at.as_ref()),
                            "state": r[6],
                        })
                    })
                    .collect();
                outln!("{}", serde_json::to_string_pretty(&v)?)?;
                return Ok(ExitCode::SUCCESS);
            }
            let rows: Vec<Vec<String>> = r.tokens.iter().map(row).collect();
            let header = [
                "PERSON", "NAME", "GRANTS", "CREATED", "BY", "EXPIRES", "STATE",
            ];
            out!("{}", output::rows(&header, &rows, conn.output))?;
        }
        PeopleCommand::Revoke { conn, id } => {
            let r = conn
                .connection()?
                .admin()
                .await?
                .revoke_access_token(v1::RevokeAccessTokenRequest {
                    person_id: id.clone(),
                })
                .await?
                .into_inner();
            let t = r.token.unwrap_or_default();
            outln!(
                "access token of {} [{}] revoked",
                output::text(&t.name),
                output::text(&t.person_id)
            )?;
        }
        PeopleCommand::Login { conn, id, console } => {
            let base = match console {
                Some(c) => c.trim_end_matches('/').to_owned(),
                None => console_of(&conn.collector_url())?,
            };
            let r = conn
                .connection()?
                .admin()
                .await?
                .create_login_link(v1::CreateLoginLinkRequest {
                    person_id: id.clone(),
                })
                .await?
                .into_inner();
            outln!(
                "one-time console link for {} [{}] (valid {} minutes, works once):\n  {base}/login/link?code={}",
                output::text(&r.name),
                output::text(&id),
                r.expires_in_seconds / 60,
                r.code
            )?;
        }
        PeopleCommand::Expire { conn, id, after } => {
            let r = conn
                .connection()?
                .admin()
                .await?
                .expire_access_token(v1::ExpireAccessTokenRequest {
                    person_id: id.clone(),
                    expires_in_seconds: after.map(|d| d.as_secs()).unwrap_or(0),
                })
                .await?
                .into_inner();
            let t = r.token.unwrap_or_default();
            outln!(
                "access token of {} [{}] expires {}",
                output::text(&t.name),
                output::text(&t.person_id),
                time_text(t.expires_at.as_ref())
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn role_name(v: i32) -> &'static str {
    match v1::Role::try_from(v) {
        Ok(v1::Role::Admin) => "admin",
        Ok(v1::Role::Officer) => "officer",
        Ok(v1::Role::Analyst) => "analyst",
        Ok(v1::Role::Auditor) => "auditor",
        _ => "?",
    }
}

/// One row of `people list`.
fn row(t: &v1::AccessToken) -> Vec<String> {
    let grants = t
        .grants
        .iter()
        .map(|g| {
            if g.organisation.is_empty() {
                role_name(g.role).to_owned()
            } else {
                format!("{}:{}", role_name(g.role), g.organisation)
            }
        })
        .collect::<Vec<_>>()
        .join(",");
    let state = if t.revoked {
        "revoked"
    } else if t.expires_at.as_ref().is_some_and(|e| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        e.seconds <= now
    }) {
        "expired"
    } else {
        "active"
    };
    vec![
        t.person_id.clone(),
        t.name.clone(),
        grants,
        time_text(t.created_at.as_ref()),
        t.created_by.clone(),
        time_text(t.expires_at.as_ref()),
        state.into(),
    ]
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

/// The console's default address: the collector's host, port 7444.
fn console_of(collector: &str) -> anyhow::Result<String> {
    let rest = collector
        .strip_prefix("https://")
        .ok_or_else(|| anyhow::anyhow!("--collector {collector}: not an https:// URL"))?;
    let authority = rest.split('/').next().unwrap_or(rest);
    let host = match authority.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => authority,
    };
    Ok(format!("https://{host}:7444"))
}

#[cfg(test)]
mod tests {
    use super::console_of;

    #[test]
    fn the_console_defaults_to_the_collector_s_host_on_7444() {
        assert_eq!(
            console_of("https://c.example:7443").unwrap(),
            "https://c.example:7444"
        );
        assert_eq!(
            console_of("https://[::1]:7443/").unwrap(),
            "https://[::1]:7444"
        );
        assert_eq!(
            console_of("https://c.example").unwrap(),
            "https://c.example:7444"
        );
        assert!(console_of("http://c.example").is_err());
    }
}
