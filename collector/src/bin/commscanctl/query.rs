//! Queries: devices, one device, summaries, candidates, the event stream, exports.

use super::*;

/// Runs one of this module's commands; `main` dispatches only those here.
pub(crate) async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
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
        other => unreachable!("main dispatched {} here", other.name()),
    }
    Ok(ExitCode::SUCCESS)
}
