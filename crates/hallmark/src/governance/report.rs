//! `hallmark report KIND`: the governance reports, as a table or CSV.

use anyhow::bail;
use hallmark_core::parse_duration;
use hallmark_server::reports::ReportKind;
use hyper::Method;
use serde_json::Value;

use crate::Conn;
use crate::client::encode;
use crate::commands::client;

/// `hallmark report KIND`
#[derive(clap::Args)]
pub struct ReportArgs {
    /// expiring, orphans, exceptions, drift, rotation, tasks (AI-agent tasks,
    /// also mapped to the OWASP Top 10 for Agentic Applications), people
    /// (break-glass uses not reviewed, stale recoveries, and each person's
    /// live certificates with their approval), or compliance (every one:
    /// machines mapped to the OWASP NHI Top 10, people in their own section).
    #[arg(value_parser = str::parse::<ReportKind>)]
    kind: ReportKind,
    /// Window for "expiring soon".
    #[arg(long, default_value = "24h")]
    within: String,
    /// An entry with no credential issued for this long counts as unused (drift).
    #[arg(long, default_value = "30d")]
    unused_for: String,
    /// CSV instead of a table.
    #[arg(long, conflicts_with = "json")]
    csv: bool,
    /// Exit non-zero when there are findings (for CI and cron).
    #[arg(long)]
    fail_on_findings: bool,
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_owned() }
}

/// `hallmark report KIND`
#[expect(
    clippy::indexing_slicing,
    reason = "serde_json::Value read by key: a missing key reads as Null, never a panic"
)]
pub async fn report(a: ReportArgs, conn: &Conn) -> anyhow::Result<()> {
    let within = parse_duration(&a.within).map_err(|e| anyhow::anyhow!("--within: {e}"))?.as_secs();
    let unused = parse_duration(&a.unused_for).map_err(|e| anyhow::anyhow!("--unused-for: {e}"))?.as_secs();
    let path = format!("/v1/reports/{}?within={within}&unused_for={unused}", encode(a.kind.as_str()));
    let v = client(conn)?.json(Method::GET, &path, None).await?;
    let findings = v["findings"].as_array().cloned().unwrap_or_default();
    // People's findings (the `people` and `compliance` reports) are their own section.
    let people = v["people"]["findings"].as_array().cloned().unwrap_or_default();
    let field = |f: &Value, k: &str| f[k].as_str().unwrap_or("").to_owned();
    if conn.json {
        println!("{}", serde_json::to_string_pretty(&crate::table::with_rfc3339(&v))?);
    } else if a.csv {
        // `asi` (task findings) last: scripts reading the first four columns keep working.
        println!("check,subject,nhi,detail,asi");
        for f in findings.iter().chain(&people) {
            let row = [field(f, "check"), field(f, "subject"), field(f, "nhi"), field(f, "detail"), field(f, "asi")];
            println!("{}", row.iter().map(|x| csv_field(x)).collect::<Vec<_>>().join(","));
        }
    } else {
        for (key, title) in [
            ("nhi", "OWASP Non-Human Identities Top 10 (2025)"),
            ("asi", "OWASP Top 10 for Agentic Applications (2026), AI-agent tasks"),
        ] {
            let Some(items) = v[key].as_array() else { continue };
            println!("{title}");
            for i in items {
                println!(
                    "  {:<6} {:<42} {}",
                    i["id"].as_str().unwrap_or(""),
                    i["title"].as_str().unwrap_or(""),
                    i["findings"]
                );
            }
            println!();
        }
        println!("{} report: {} finding(s)", a.kind, findings.len());
        for f in &findings {
            let tag = match f["asi"].as_str() {
                Some(asi) => format!("{} {asi}", field(f, "nhi")),
                None => field(f, "nhi"),
            };
            println!("  [{tag}] {:<26} {}", field(f, "check"), field(f, "detail"));
        }
        let notes = v["notes"].as_array().cloned().unwrap_or_default();
        if !notes.is_empty() {
            println!("{} note(s), for information (not findings):", notes.len());
            for f in &notes {
                println!("  {:<26} {}", field(f, "check"), field(f, "detail"));
            }
        }
        if v["people"].is_object() {
            println!();
            println!("People: {} finding(s)", people.len());
            for f in &people {
                println!("  {:<30} {}", field(f, "check"), field(f, "detail"));
            }
            let certs = v["people"]["certificates"].as_array().cloned().unwrap_or_default();
            println!(
                "People's live certificates: {} (approval: `login` is an OpenID Connect login decided by policy)",
                certs.len()
            );
            let now = hallmark_core::now_unix();
            let mut t = crate::table::Table::new(&["SERIAL", "SPIFFE ID", "EXPIRES", "APPROVAL", "APPROVED BY"]);
            for c in &certs {
                t.row(vec![
                    crate::table::text(c, "serial"),
                    crate::table::text(c, "spiffe_id"),
                    crate::table::time_rel(c, "not_after", now),
                    crate::table::text(c, "approval"),
                    crate::table::text(c, "approved_by"),
                ]);
            }
            t.print_or("  none");
        }
    }
    let total = findings.len() + people.len();
    if a.fail_on_findings && total > 0 {
        bail!("{total} finding(s) in the {} report", a.kind);
    }
    Ok(())
}
