//! `commscanctl`: the officer's and analyst's command line. Parses flags, calls the collector
//! through `commscan_collector::ctl`, prints tables, JSON or CSV. Exit codes: 0 success,
//! 1 failure, 2 a check found problems (`policy check`).

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use commscan_collector::ctl::output::{self, Format};
use commscan_collector::ctl::{Connection, resolve_token};
use commscan_core::catalog::Catalog;
use commscan_core::policy::Policy;
use commscan_core::register::Registers;
use commscan_core::scan::ScanReport;
use commscan_core::verdict::{Status, Subject};
use commscan_proto::{convert, v1};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "commscanctl",
    version,
    about = "Query a commscan collector; check and test policies"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct Conn {
    /// Collector URL.
    #[arg(
        long,
        env = "COMMSCAN_COLLECTOR",
        default_value = "https://127.0.0.1:7443"
    )]
    collector: String,
    /// The deployment CA certificate (the collector's pki/ca.crt).
    #[arg(long, env = "COMMSCAN_CA")]
    ca: Option<PathBuf>,
    /// File holding your bearer token (or set COMMSCAN_TOKEN).
    #[arg(long, env = "COMMSCAN_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    output: Format,
}

impl Conn {
    fn connection(&self) -> anyhow::Result<Connection> {
        let ca = self.ca.clone().context(
            "no CA certificate: set COMMSCAN_CA (or --ca) to the collector's pki/ca.crt",
        )?;
        let token = resolve_token(
            self.token_file.as_ref(),
            std::env::var("COMMSCAN_TOKEN").ok(),
        )?;
        Ok(Connection {
            collector: self.collector.clone(),
            ca,
            token,
        })
    }
}

#[derive(Subcommand)]
enum Command {
    /// List devices (or `devices revoke ID`).
    #[command(args_conflicts_with_subcommands = true)]
    Devices {
        #[command(subcommand)]
        action: Option<DevicesAction>,
        #[command(flatten)]
        conn: Conn,
        /// Only this organisation.
        #[arg(long)]
        org: Option<String>,
        /// Only this status (compliant, noncompliant, waived, stale, unknown).
        #[arg(long)]
        status: Option<Status>,
        /// Only devices with this product.
        #[arg(long)]
        product: Option<String>,
        /// Only devices of this platform (linux, macos, windows).
        #[arg(long)]
        platform: Option<commscan_core::platform::Platform>,
        /// Stop after this many rows (0: all).
        #[arg(long, default_value_t = 0)]
        limit: usize,
    },
    /// Show one device: verdict, reasons, findings with evidence.
    Device {
        #[command(flatten)]
        conn: Conn,
        /// Device id.
        id: String,
    },
    /// An organisation's compliance summary, with its daily trend.
    Summary {
        #[command(flatten)]
        conn: Conn,
        /// Organisation.
        #[arg(long, default_value = "default")]
        org: String,
        /// Days of trend to show.
        #[arg(long, default_value_t = 14)]
        days: u32,
    },
    /// One row per organisation (for ministry analysts): aggregates only. On a ministry
    /// collector, enterprises' organisations too, with when each last pushed and whether it is
    /// stale (a stale organisation's devices count as stale, never compliant).
    Fleet {
        #[command(flatten)]
        conn: Conn,
    },
    /// Per product, devices and violating devices across your organisations.
    Products {
        #[command(flatten)]
        conn: Conn,
    },
    /// Unclassified communication-like software seen in an organisation; map or dismiss it.
    Candidates {
        #[command(subcommand)]
        command: CandidatesCommand,
    },
    /// Print verdict changes as they happen (Ctrl-C to stop).
    Watch {
        #[command(flatten)]
        conn: Conn,
        /// Only this organisation.
        #[arg(long)]
        org: Option<String>,
    },
    /// Export every device you may see as CSV or JSON lines, streamed.
    Export {
        #[command(flatten)]
        conn: Conn,
        /// Only this organisation.
        #[arg(long)]
        org: Option<String>,
        /// Only this status.
        #[arg(long)]
        status: Option<Status>,
    },
    /// Enrolment tokens: create, list, revoke.
    Tokens {
        #[command(subcommand)]
        command: TokensCommand,
    },
    /// People's access tokens.
    People {
        #[command(subcommand)]
        command: PeopleCommand,
    },
    /// Read the audit log.
    Audit {
        #[command(flatten)]
        conn: Conn,
        /// Entries after this position.
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// At most this many entries.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// What commscan recognises.
    Catalog {
        #[command(subcommand)]
        command: CatalogCommand,
    },
    /// Check and test policies offline.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
}

#[derive(Subcommand)]
enum CandidatesCommand {
    /// List candidates with how many devices report each.
    List {
        #[command(flatten)]
        conn: Conn,
        /// Organisation.
        #[arg(long)]
        org: String,
    },
    /// Map a candidate to a catalog product: its devices are judged as having that product.
    Map {
        #[command(flatten)]
        conn: Conn,
        /// Organisation.
        #[arg(long)]
        org: String,
        /// The candidate's name, as listed.
        name: String,
        /// Catalog product id.
        #[arg(long)]
        product: String,
    },
    /// Dismiss a candidate: not listed again.
    Dismiss {
        #[command(flatten)]
        conn: Conn,
        /// Organisation.
        #[arg(long)]
        org: String,
        /// The candidate's name, as listed.
        name: String,
    },
}

#[derive(Subcommand)]
enum DevicesAction {
    /// Revoke a device: refused from its next connection on; its history stays.
    Revoke {
        #[command(flatten)]
        conn: Conn,
        /// Device id.
        id: String,
    },
}

#[derive(Subcommand)]
enum TokensCommand {
    /// Create an enrolment token for an organisation; the secret is shown once.
    Create {
        #[command(flatten)]
        conn: Conn,
        /// Organisation devices will enrol into.
        #[arg(long)]
        org: String,
        /// Number of enrolments it allows (default: unlimited until it expires).
        #[arg(long)]
        uses: Option<u64>,
        /// Lifetime, e.g. 7d, 12h (default 7d, at most 366d).
        #[arg(long, value_parser = commscan_core::duration::parse_duration)]
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

#[derive(Subcommand)]
enum PeopleCommand {
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

#[derive(Subcommand)]
enum CatalogCommand {
    /// List catalogued products.
    List {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Show one product and its signatures.
    Show {
        /// Product id.
        id: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate a policy file against the catalog; lists every problem.
    Check {
        /// Policy file.
        file: PathBuf,
    },
    /// Judge a saved `commscan-agent scan --output json` result under a policy.
    Test {
        /// Policy file.
        file: PathBuf,
        /// Scan JSON file.
        scan: PathBuf,
    },
}

fn colour() -> bool {
    std::io::stdout().is_terminal()
}

fn load_policy(file: &std::path::Path) -> anyhow::Result<(Catalog, Policy)> {
    let catalog = Catalog::embedded();
    let registers = Registers::embedded(&catalog)?;
    let policy = Policy::from_file(file, &catalog, &registers)?;
    Ok((catalog, policy))
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
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
            match conn.output {
                Format::Json => {
                    let v: Vec<serde_json::Value> = rows
                        .iter()
                        .map(|r| {
                            header
                                .iter()
                                .zip(r)
                                .map(|(h, c)| {
                                    (
                                        h.to_lowercase().replace(' ', "_"),
                                        serde_json::Value::String(c.clone()),
                                    )
                                })
                                .collect()
                        })
                        .collect();
                    println!("{}", serde_json::to_string_pretty(&v)?);
                }
                Format::Csv => {
                    println!(
                        "{}",
                        header
                            .iter()
                            .map(|h| h.to_lowercase().replace(' ', "_"))
                            .collect::<Vec<_>>()
                            .join(",")
                    );
                    for r in &rows {
                        println!(
                            "{}",
                            r.iter()
                                .map(|c| output::csv_field(c))
                                .collect::<Vec<_>>()
                                .join(",")
                        );
                    }
                }
                Format::Table => print!("{}", output::table(&header, &rows, None, false)),
            }
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
            let header = ["POS", "AT", "WHO", "ACTION", "ORG", "OUTCOME", "DETAIL"];
            match conn.output {
                Format::Json => {
                    let v: Vec<serde_json::Value> = rows
                        .iter()
                        .map(|r| {
                            header
                                .iter()
                                .zip(r)
                                .map(|(h, c)| {
                                    (h.to_lowercase(), serde_json::Value::String(c.clone()))
                                })
                                .collect()
                        })
                        .collect();
                    println!("{}", serde_json::to_string_pretty(&v)?);
                }
                Format::Csv => {
                    println!("position,at,actor,action,organisation,outcome,detail");
                    for r in &rows {
                        println!(
                            "{}",
                            r.iter()
                                .map(|c| output::csv_field(c))
                                .collect::<Vec<_>>()
                                .join(",")
                        );
                    }
                }
                Format::Table => print!("{}", output::table(&header, &rows, Some(5), colour())),
            }
        }
        Command::Devices {
            action: None,
            conn,
            org,
            status,
            product,
            platform,
            limit,
        } => {
            let mut client = conn.connection()?.query().await?;
            let mut rows = Vec::new();
            let mut token = String::new();
            loop {
                let page = client
                    .list_devices(v1::ListDevicesRequest {
                        organisation: org.clone().unwrap_or_default(),
                        status: status.map(convert::status_to_wire).unwrap_or_default(),
                        product: product.clone().unwrap_or_default(),
                        page_size: 1000,
                        page_token: token,
                        platform: platform.map(convert::platform_to_wire).unwrap_or_default(),
                    })
                    .await?
                    .into_inner();
                rows.extend(page.devices.iter().map(output::device_out));
                token = page.next_page_token;
                if token.is_empty() || (limit > 0 && rows.len() >= limit) {
                    break;
                }
            }
            if limit > 0 {
                rows.truncate(limit);
            }
            print!("{}", output::devices(&rows, conn.output, colour()));
        }
        Command::Device { conn, id } => {
            let d = conn
                .connection()?
                .query()
                .await?
                .get_device(v1::GetDeviceRequest { device_id: id })
                .await?
                .into_inner();
            print!(
                "{}",
                output::device_detail(&output::device_detail_out(&d), conn.output, colour())
            );
        }
        Command::Summary { conn, org, days } => {
            let s = conn
                .connection()?
                .query()
                .await?
                .organisation_summary(v1::OrganisationSummaryRequest {
                    organisation: org,
                    trend_days: days,
                })
                .await?
                .into_inner();
            print!(
                "{}",
                output::summary(&output::summary_out(&s), conn.output, colour())
            );
        }
        Command::Fleet { conn } => {
            let r = conn
                .connection()?
                .query()
                .await?
                .fleet_summary(v1::FleetSummaryRequest {})
                .await?
                .into_inner();
            print!("{}", output::fleet(&r, conn.output, colour()));
        }
        Command::Products { conn } => {
            let r = conn
                .connection()?
                .query()
                .await?
                .product_findings(v1::ProductFindingsRequest {})
                .await?
                .into_inner();
            let rows: Vec<Vec<String>> = r
                .products
                .iter()
                .map(|p| {
                    vec![
                        p.product.clone(),
                        p.devices.to_string(),
                        p.violating.to_string(),
                    ]
                })
                .collect();
            print!(
                "{}",
                output::rows(&["PRODUCT", "DEVICES", "VIOLATING"], &rows, conn.output)
            );
        }
        Command::Candidates {
            command: CandidatesCommand::List { conn, org },
        } => {
            let r = conn
                .connection()?
                .query()
                .await?
                .list_unclassified(v1::ListUnclassifiedRequest { organisation: org })
                .await?
                .into_inner();
            let rows: Vec<Vec<String>> = r
                .candidates
                .iter()
                .map(|c| {
                    vec![
                        c.name.clone(),
                        c.devices.to_string(),
                        c.source.clone(),
                        c.detail.clone(),
                    ]
                })
                .collect();
            print!(
                "{}",
                output::rows(&["NAME", "DEVICES", "SOURCE", "WHY"], &rows, conn.output)
            );
        }
        Command::Candidates {
            command:
                CandidatesCommand::Map {
                    conn,
                    org,
                    name,
                    product,
                },
        } => {
            conn.connection()?
                .query()
                .await?
                .classify_candidate(v1::ClassifyCandidateRequest {
                    organisation: org.clone(),
                    name: name.clone(),
                    product: product.clone(),
                    dismiss: false,
                })
                .await?;
            println!("'{name}' in '{org}' now counts as {product}; its devices were re-judged");
        }
        Command::Candidates {
            command: CandidatesCommand::Dismiss { conn, org, name },
        } => {
            conn.connection()?
                .query()
                .await?
                .classify_candidate(v1::ClassifyCandidateRequest {
                    organisation: org.clone(),
                    name: name.clone(),
                    product: String::new(),
                    dismiss: true,
                })
                .await?;
            println!("'{name}' in '{org}' dismissed");
        }
        Command::Watch { conn, org } => {
            let mut stream = conn
                .connection()?
                .query()
                .await?
                .watch_events(v1::WatchEventsRequest {
                    organisation: org.unwrap_or_default(),
                })
                .await?
                .into_inner();
            while let Some(e) = stream.message().await? {
                let line = output::event(&e, conn.output, colour());
                print!("{line}");
                use std::io::Write;
                std::io::stdout().flush()?;
            }
        }
        Command::Export { conn, org, status } => {
            let format = match conn.output {
                Format::Json => "json",
                _ => "csv",
            };
            let mut stream = conn
                .connection()?
                .query()
                .await?
                .export_devices(v1::ExportDevicesRequest {
                    format: format.into(),
                    organisation: org.unwrap_or_default(),
                    status: status.map(convert::status_to_wire).unwrap_or_default(),
                })
                .await?
                .into_inner();
            use std::io::Write;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            while let Some(chunk) = stream.message().await? {
                out.write_all(&chunk.data)?;
            }
            out.flush()?;
        }
        Command::Catalog {
            command: CatalogCommand::List { output },
        } => {
            let catalog = Catalog::embedded();
            match output {
                Format::Json => println!("{}", serde_json::to_string_pretty(catalog.products())?),
                Format::Csv => {
                    println!("id,name,vendor,country,categories,status,platforms");
                    for p in catalog.products() {
                        let cats: Vec<&str> = p.categories.iter().map(|c| c.as_str()).collect();
                        let plats: Vec<&str> = p.platforms().iter().map(|x| x.as_str()).collect();
                        let fields = [
                            p.id.clone(),
                            p.name.clone(),
                            p.vendor.clone(),
                            p.country.clone(),
                            cats.join(" "),
                            format!("{:?}", p.status).to_lowercase(),
                            plats.join(" "),
                        ];
                        println!(
                            "{}",
                            fields
                                .iter()
                                .map(|f| output::csv_field(f))
                                .collect::<Vec<_>>()
                                .join(",")
                        );
                    }
                }
                Format::Table => {
                    let rows: Vec<Vec<String>> = catalog
                        .products()
                        .iter()
                        .map(|p| {
                            vec![
                                p.id.clone(),
                                p.name.clone(),
                                p.country.clone(),
                                p.categories
                                    .iter()
                                    .map(|c| c.as_str())
                                    .collect::<Vec<_>>()
                                    .join(","),
                                p.platforms()
                                    .iter()
                                    .map(|x| x.as_str())
                                    .collect::<Vec<_>>()
                                    .join(","),
                            ]
                        })
                        .collect();
                    print!(
                        "{}",
                        output::table(
                            &["ID", "NAME", "COUNTRY", "CATEGORIES", "PLATFORMS"],
                            &rows,
                            None,
                            false
                        )
                    );
                    println!("\n{} products", rows.len());
                }
            }
        }
        Command::Catalog {
            command: CatalogCommand::Show { id, output },
        } => {
            let catalog = Catalog::embedded();
            let p = catalog.product(&id).with_context(|| {
                format!("no product '{id}' in the catalog (see `commscanctl catalog list`)")
            })?;
            match output {
                Format::Json => println!("{}", serde_json::to_string_pretty(p)?),
                Format::Table | Format::Csv => {
                    println!(
                        "{} ({})\n  vendor: {}\n  country: {}",
                        p.name, p.id, p.vendor, p.country
                    );
                    println!(
                        "  categories: {}",
                        p.categories
                            .iter()
                            .map(|c| c.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                    println!(
                        "  status: {:?}{}",
                        p.status,
                        p.status_note
                            .as_ref()
                            .map(|n| format!(" ({n})"))
                            .unwrap_or_default()
                    );
                    if let Some(f) = &p.family {
                        println!("  family: {f}");
                    }
                    println!("  signatures:");
                    for s in &p.signatures {
                        println!(
                            "    {:<18} {}{}\n    {:<18} source: {}",
                            s.kind.as_str(),
                            s.values.join(", "),
                            if s.unverified { "  (unverified)" } else { "" },
                            "",
                            s.source
                        );
                    }
                }
            }
        }
        Command::Policy {
            command: PolicyCommand::Check { file },
        } => match load_policy(&file) {
            Ok((_, p)) => println!(
                "{}: ok (policy '{}', {} rules, {} waivers)",
                file.display(),
                p.id,
                p.rules.len(),
                p.waivers.len()
            ),
            Err(e) => {
                eprintln!("{e:#}");
                return Ok(ExitCode::from(2));
            }
        },
        Command::Policy {
            command: PolicyCommand::Test { file, scan },
        } => {
            let (_, policy) = load_policy(&file)?;
            let text = std::fs::read_to_string(&scan)
                .with_context(|| format!("{}: cannot read", scan.display()))?;
            let report: ScanReport = serde_json::from_str(&text).with_context(|| {
                format!(
                    "{}: not a `commscan-agent scan --output json` result",
                    scan.display()
                )
            })?;
            let first_seen = BTreeMap::new();
            let verdict = policy.judge(
                Subject {
                    device_id: "",
                    organisation: "",
                    first_seen: &first_seen,
                },
                &report.findings,
                time::OffsetDateTime::now_utc(),
            );
            println!(
                "{} under policy '{}': {}",
                scan.display(),
                policy.id,
                output::paint(verdict.status.as_str(), colour())
            );
            for r in &verdict.reasons {
                println!(
                    "  [{}] {}",
                    serde_json::to_value(r.kind)?.as_str().unwrap_or(""),
                    r.text
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("COMMSCAN_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            if let Some(s) = e.downcast_ref::<tonic::Status>() {
                eprintln!(
                    "commscanctl: collector answered {:?}: {}",
                    s.code(),
                    s.message()
                );
            } else {
                eprintln!("commscanctl: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}
