//! Offline commands: the catalog, policy check and test. They need no collector.

use super::*;

/// Runs one of this module's commands; `main` dispatches only those here.
pub(crate) fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
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
        other => unreachable!("main dispatched {} here", other.name()),
    }
    Ok(ExitCode::SUCCESS)
}

fn load_policy(file: &std::path::Path) -> anyhow::Result<(Catalog, Policy)> {
    let catalog = Catalog::embedded();
    let registers = Registers::embedded(&catalog)?;
    let policy = Policy::from_file(file, &catalog, &registers)?;
    Ok((catalog, policy))
}
