//! `hallmark policy ...`: put a Cedar policy in force, show it and its
//! versions, diff two versions, test cases against it.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Subcommand;
use hyper::Method;
use serde_json::{Value, json};

use crate::Conn;
use crate::commands::{client, emit as print};
use crate::table::{Table, text, time};

/// `hallmark policy ...`
#[derive(Subcommand)]
pub enum PolicyCmd {
    /// Validate a Cedar policy file and put it in force as the next version.
    Set {
        /// The policy file.
        file: PathBuf,
    },
    /// Print the policy in force.
    Show {
        /// A specific version instead of the current one.
        #[arg(value_name = "VERSION")]
        number: Option<i64>,
    },
    /// List every policy version.
    History,
    /// Show what changed between two versions.
    Diff {
        /// Older version.
        v1: i64,
        /// Newer version.
        v2: i64,
    },
    /// Run a table of cases against a policy file, without a server; exits
    /// non-zero on any mismatch.
    Test {
        /// The policy file.
        #[arg(long)]
        policy: PathBuf,
        /// The cases (JSON: {"cases": [...]}; see the README).
        #[arg(long)]
        cases: PathBuf,
    },
}

/// `hallmark policy ...`
#[expect(
    clippy::indexing_slicing,
    reason = "serde_json::Value read by key: a missing key reads as Null, never a panic"
)]
pub async fn policy(cmd: PolicyCmd, conn: &Conn) -> anyhow::Result<()> {
    match cmd {
        PolicyCmd::Set { file } => {
            let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let v = client(conn)?.json(Method::PUT, "/v1/policy", Some(&json!({ "policy": text }))).await?;
            print(conn, &v, |v| {
                println!(
                    "policy version {} in force ({} policies, sha256 {})",
                    v["version"],
                    v["policies"],
                    v["sha256"].as_str().unwrap_or("")
                );
            })
        }
        PolicyCmd::Show { number } => {
            let path = match number {
                Some(n) => format!("/v1/policy/versions/{n}"),
                None => "/v1/policy".into(),
            };
            let v = client(conn)?.json(Method::GET, &path, None).await?;
            print(conn, &v, |v| {
                println!("// version {} set by {} at {}", v["version"], text(v, "created_by"), time(v, "created_at"));
                print!("{}", v["policy"].as_str().unwrap_or(""));
            })
        }
        PolicyCmd::History => {
            let v = client(conn)?.json(Method::GET, "/v1/policy/versions", None).await?;
            print(conn, &v, |v| {
                let mut t = Table::new(&["VERSION", "SET AT", "SET BY", "SHA-256"]);
                for p in v["versions"].as_array().into_iter().flatten() {
                    t.row(vec![text(p, "version"), time(p, "created_at"), text(p, "created_by"), text(p, "sha256")]);
                }
                t.print_or("no policy versions");
            })
        }
        PolicyCmd::Diff { v1, v2 } => {
            let c = client(conn)?;
            let a = c.json(Method::GET, &format!("/v1/policy/versions/{v1}"), None).await?;
            let b = c.json(Method::GET, &format!("/v1/policy/versions/{v2}"), None).await?;
            let diff = line_diff(a["policy"].as_str().unwrap_or(""), b["policy"].as_str().unwrap_or(""));
            if conn.json {
                println!("{}", serde_json::to_string_pretty(&json!({ "from": v1, "to": v2, "diff": diff }))?);
            } else {
                println!("--- version {v1}\n+++ version {v2}");
                for l in diff {
                    println!("{l}");
                }
            }
            Ok(())
        }
        PolicyCmd::Test { policy, cases } => {
            let text = std::fs::read_to_string(&policy).with_context(|| format!("cannot read {}", policy.display()))?;
            let engine =
                hallmark_policy::PolicyEngine::compile(&text, 0).with_context(|| policy.display().to_string())?;
            let raw = std::fs::read_to_string(&cases).with_context(|| format!("cannot read {}", cases.display()))?;
            let file: hallmark_policy::cases::CaseFile =
                serde_json::from_str(&raw).with_context(|| format!("{}: not a case file", cases.display()))?;
            let outcomes = hallmark_policy::cases::run(&engine, &hallmark_policy::Classes::default(), &file)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let failed = outcomes.iter().filter(|o| !o.pass).count();
            if conn.json {
                let list: Vec<Value> = outcomes
                    .iter()
                    .map(|o| json!({ "name": o.name, "pass": o.pass, "expected": o.expected, "got": o.got }))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&json!({ "cases": list, "failed": failed }))?);
            } else {
                for o in &outcomes {
                    if o.pass {
                        println!("ok   {}: {}", o.name, o.got);
                    } else {
                        println!("FAIL {}: expected {}, got {}", o.name, o.expected, o.got);
                    }
                }
                println!("{} passed, {} failed", outcomes.len() - failed, failed);
            }
            if failed > 0 {
                bail!("{failed} of {} policy cases failed", outcomes.len());
            }
            Ok(())
        }
    }
}

/// A line diff (longest common subsequence): ` ` kept, `-` removed, `+` added.
#[expect(
    clippy::indexing_slicing,
    reason = "the table is (a.len()+1) x (b.len()+1) and every index is checked against a.len() or b.len() first"
)]
pub fn line_diff(a: &str, b: &str) -> Vec<String> {
    let (a, b): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    if a.len().saturating_mul(b.len()) > 16_000_000 {
        // Too large for the quadratic table: show a whole replacement.
        return a.iter().map(|l| format!("-{l}")).chain(b.iter().map(|l| format!("+{l}"))).collect();
    }
    // The classic longest-common-subsequence table: every index below is
    // checked against a.len()/b.len() and the table is one larger each way.
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] { lcs[i + 1][j + 1] + 1 } else { lcs[i + 1][j].max(lcs[i][j + 1]) };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out.push(format!(" {}", a[i]));
            i += 1;
            j += 1;
        } else if j < b.len() && (i == a.len() || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out.push(format!("+{}", b[j]));
            j += 1;
        } else {
            out.push(format!("-{}", a[i]));
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_diff_keeps_removes_and_adds() {
        let d = line_diff("a\nb\nc\n", "a\nc\nd\n");
        assert_eq!(d, vec![" a", "-b", " c", "+d"]);
    }
}
