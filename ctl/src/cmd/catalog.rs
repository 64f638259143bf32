//! `catalog list|show`: what commscan recognises, from the embedded catalog; no collector.
//! `catalog apply|history|text|rollback`: the catalog kept in the collector's store
//! ([`super::rules`]); `apply` takes a signed catalog (`commscan-collector catalog sign`) too,
//! which the collector passes on to agents.
//! `catalog versions`: which catalog releases the fleet runs, per organisation.

use anyhow::Context;
use clap::Subcommand;
use commscan_core::catalog::Catalog;
use commscan_core::register::Registers;
use commscan_ctl::output::{self, Format};
use commscan_runtime::{out, outln};
use std::process::ExitCode;

#[derive(Subcommand)]
pub(crate) enum CatalogCommand {
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
    /// Devices per organisation and catalog release, and refusals of signed catalogs.
    Versions {
        #[command(flatten)]
        conn: super::Conn,
        /// Only this organisation.
        #[arg(long)]
        org: Option<String>,
    },
    #[command(flatten)]
    Stored(super::rules::Stored),
}

pub(crate) async fn run(command: CatalogCommand) -> anyhow::Result<ExitCode> {
    match command {
        CatalogCommand::Stored(s) => {
            return super::rules::run(commscan_proto::v1::RulesKind::Catalog, s).await;
        }
        CatalogCommand::Versions { conn, org } => {
            let r = conn
                .connection()?
                .query()
                .await?
                .catalog_versions(commscan_proto::v1::CatalogVersionsRequest {
                    organisation: org.unwrap_or_default(),
                })
                .await?
                .into_inner();
            if !matches!(conn.output, Format::Json) {
                match r.served_release {
                    0 => println!("served: no signed catalog (agents keep their own)"),
                    n => println!("served: signed catalog release {n}"),
                }
            }
            let rows: Vec<Vec<String>> = r
                .rows
                .iter()
                .map(|row| {
                    vec![
                        row.organisation.clone(),
                        match row.release {
                            0 => "unknown".to_owned(),
                            n => n.to_string(),
                        },
                        row.devices.to_string(),
                        row.refusing.to_string(),
                        row.refusal.clone(),
                    ]
                })
                .collect();
            let header = [
                "ORGANISATION",
                "RELEASE",
                "DEVICES",
                "REFUSING",
                "LAST REFUSAL",
            ];
            print!("{}", output::rows(&header, &rows, conn.output));
        }
        CatalogCommand::List { output } => {
            let catalog = Catalog::embedded();
            match output {
                Format::Json => outln!("{}", serde_json::to_string_pretty(catalog.products())?)?,
                Format::Csv => {
                    outln!("id,name,vendor,country,categories,status,platforms")?;
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
                        outln!(
                            "{}",
                            fields
                                .iter()
                                .map(|f| output::csv_field(f))
                                .collect::<Vec<_>>()
                                .join(",")
                        )?;
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
                    out!(
                        "{}",
                        output::table(
                            &["ID", "NAME", "COUNTRY", "CATEGORIES", "PLATFORMS"],
                            &rows,
                            None,
                            false
                        )
                    )?;
                    outln!("\n{} products", rows.len())?;
                }
            }
        }
        CatalogCommand::Show { id, output } => {
            let catalog = Catalog::embedded();
            let p = catalog.product(&id).with_context(|| {
                format!("no product '{id}' in the catalog (see `commscanctl catalog list`)")
            })?;
            match output {
                Format::Json => {
                    // The product as the catalog holds it, plus what other entries say about
                    // it: its family members and its register listings.
                    let registers = Registers::embedded(&catalog)?;
                    let mut v = serde_json::to_value(p)?;
                    v["members"] = serde_json::json!(
                        catalog
                            .members(&p.id)
                            .iter()
                            .map(|m| &m.id)
                            .collect::<Vec<_>>()
                    );
                    v["registers"] = serde_json::Value::Array(
                        registers
                            .iter()
                            .filter(|r| r.products.contains(&p.id))
                            .map(|r| {
                                serde_json::json!({
                                    "id": r.id,
                                    "verified": r.is_verified(&p.id),
                                    "record": r.records.get(&p.id),
                                })
                            })
                            .collect(),
                    );
                    outln!("{}", serde_json::to_string_pretty(&v)?)?;
                }
                Format::Table | Format::Csv => {
                    outln!(
                        "{} ({})\n  vendor: {}\n  country: {}",
                        p.name,
                        p.id,
                        p.vendor,
                        p.country
                    )?;
                    outln!(
                        "  categories: {}",
                        p.categories
                            .iter()
                            .map(|c| c.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )?;
                    outln!(
                        "  status: {:?}{}",
                        p.status,
                        p.status_note
                            .as_ref()
                            .map(|n| format!(" ({n})"))
                            .unwrap_or_default()
                    )?;
                    if let Some(f) = &p.family {
                        outln!(
                            "  family: member of {f} (a policy naming {f} also selects {})",
                            p.id
                        )?;
                    }
                    let members = catalog.members(&p.id);
                    if !members.is_empty() {
                        outln!(
                            "  family members: {} (a policy naming {} also selects these)",
                            members
                                .iter()
                                .map(|m| format!("{} ({})", m.id, m.name))
                                .collect::<Vec<_>>()
                                .join(", "),
                            p.id
                        )?;
                    }
                    let registers = Registers::embedded(&catalog)?;
                    for r in registers.iter().filter(|r| r.products.contains(&p.id)) {
                        match r.records.get(&p.id) {
                            _ if !r.is_verified(&p.id) => outln!(
                                "  register: {} (UNVERIFIED: no registry record number from a public source)",
                                r.id
                            )?,
                            Some(record) => outln!("  register: {} (record {record})", r.id)?,
                            None => outln!("  register: {}", r.id)?,
                        }
                    }
                    outln!("  signatures:")?;
                    for s in &p.signatures {
                        outln!(
                            "    {:<18} {}{}\n    {:<18} source: {}",
                            s.kind.as_str(),
                            s.values.join(", "),
                            if s.unverified { "  (unverified)" } else { "" },
                            "",
                            s.source
                        )?;
                    }
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
