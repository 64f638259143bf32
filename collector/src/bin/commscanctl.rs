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
    /// List devices.
    Devices {
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
    /// An organisation's compliance summary.
    Summary {
        #[command(flatten)]
        conn: Conn,
        /// Organisation.
        #[arg(long, default_value = "default")]
        org: String,
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
            conn,
            org,
            status,
            product,
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
        Command::Summary { conn, org } => {
            let s = conn
                .connection()?
                .query()
                .await?
                .organisation_summary(v1::OrganisationSummaryRequest { organisation: org })
                .await?
                .into_inner();
            print!(
                "{}",
                output::summary(&output::summary_out(&s), conn.output, colour())
            );
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
