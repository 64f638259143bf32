//! `candidates list|map|dismiss`: communication-like software the catalog does not know,
//! classified by an officer.

use super::Conn;
use clap::Subcommand;
use commscan_ctl::output;
use commscan_proto::v1;
use commscan_runtime::{out, outln};
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
    /// Undo `map` or `dismiss`: the candidate is listed again and its devices are judged
    /// without the mapping (a dismissed one reappears with its device's next full report).
    Unmap {
        #[command(flatten)]
        conn: Conn,
        /// Organisation.
        #[arg(long)]
        org: String,
        /// The candidate's name, as mapped or dismissed.
        name: String,
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
            out!("{}", list(&r.candidates, conn.output))?;
        }
        CandidatesCommand::Map {
            conn,
            org,
            name,
            product,
        } => {
            classify(&conn, &org, &name, &product).await?;
            outln!("'{name}' in '{org}' now counts as {product}; its devices were re-judged")?;
        }
        CandidatesCommand::Unmap { conn, org, name } => {
            conn.connection()?
                .query()
                .await?
                .classify_candidate(v1::ClassifyCandidateRequest {
                    organisation: org.clone(),
                    name: name.clone(),
                    unmap: true,
                    ..Default::default()
                })
                .await?;
            outln!(
                "'{}' in '{}' unmapped: listed again; its devices were re-judged",
                output::text(&name),
                output::text(&org)
            )?;
        }
        CandidatesCommand::Dismiss { conn, org, name } => {
            classify(&conn, &org, &name, "").await?;
            outln!("'{name}' in '{org}' dismissed")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The candidates as rows; `LOOKS LIKE` names the catalogued product a near miss carries the
/// name of (map it with `candidates map --product <that id>`). Every cell goes through
/// [`output::rows`], which neutralises what a terminal or a spreadsheet would act on.
fn list(candidates: &[v1::CandidateCount], format: output::Format) -> String {
    let rows: Vec<Vec<String>> = candidates
        .iter()
        .map(|c| {
            vec![
                c.name.clone(),
                c.devices.to_string(),
                c.source.clone(),
                c.detail.clone(),
                c.looks_like.clone(),
            ]
        })
        .collect();
    output::rows(
        &["NAME", "DEVICES", "SOURCE", "WHY", "LOOKS LIKE"],
        &rows,
        format,
    )
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
            unmap: false,
        })
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use commscan_ctl::output::Format;

    fn candidate(name: &str, looks_like: &str) -> v1::CandidateCount {
        v1::CandidateCount {
            name: name.into(),
            source: "macos_app".into(),
            devices: 3,
            detail: "app WhatsApp.app desktop.WhatsApp.beta 2.2 (system)".into(),
            looks_like: looks_like.into(),
        }
    }

    #[test]
    fn near_misses_show_the_product_they_look_like_and_hostile_names_are_neutralised() {
        let list = [
            candidate("WhatsApp", "whatsapp"),
            candidate("Chatty\u{1b}]0;pwned\u{7}", ""),
        ];
        // (format, text expected, text that must not appear)
        let cases = [
            (Format::Table, "LOOKS LIKE", "\u{1b}"),
            (Format::Table, "whatsapp", "\u{7}"),
            (Format::Json, "\"looks_like\": \"whatsapp\"", "\u{1b}"),
            (Format::Csv, "whatsapp", "\u{1b}"),
        ];
        for (format, expected, absent) in cases {
            let out = super::list(&list, format);
            assert!(out.contains(expected), "{expected}: {out}");
            assert!(!out.contains(absent), "{absent:?}: {out}");
        }
    }
}
