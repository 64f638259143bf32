//! `candidates list|map|dismiss`: communication-like software the catalog does not know,
//! classified by an officer.

use super::Conn;
use clap::Subcommand;
use commscan_ctl::output;
use commscan_proto::v1;
use std::process::ExitCode;

#[derive(Subcommand)]
pub(crate) enum CandidatesCommand {
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

pub(crate) async fn run(command: CandidatesCommand) -> anyhow::Result<ExitCode> {
    match command {
        CandidatesCommand::List { conn, org } => {
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
        CandidatesCommand::Map {
            conn,
            org,
            name,
            product,
        } => {
            classify(&conn, &org, &name, &product).await?;
            println!("'{name}' in '{org}' now counts as {product}; its devices were re-judged");
        }
        CandidatesCommand::Dismiss { conn, org, name } => {
            classify(&conn, &org, &name, "").await?;
            println!("'{name}' in '{org}' dismissed");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Maps `name` to `product`, or dismisses it when `product` is empty.
async fn classify(conn: &Conn, org: &str, name: &str, product: &str) -> anyhow::Result<()> {
    conn.connection()?
        .query()
        .await?
        .classify_candidate(v1::ClassifyCandidateRequest {
            organisation: org.to_owned(),
            name: name.to_owned(),
            product: product.to_owned(),
            dismiss: product.is_empty(),
        })
        .await?;
    Ok(())
}
