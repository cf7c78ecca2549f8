//! Every drill, run as an operator would run it: self-contained, and against
//! a live deployment (`hallmark up`). The drills' own controls are the
//! assertions; here we check that they ran, held, and left their evidence.

use std::process::Command;

use serde_json::Value;

use crate::harness::*;

pub fn run_drill(args: &[&str], env: &[(&str, &str)]) -> (std::process::Output, Value, String) {
    let out_dir = tempfile::tempdir().unwrap();
    let mut all = args.to_vec();
    let path = out_dir.path().to_str().unwrap().to_owned();
    all.extend(["--out", &path]);
    run_drill_into(&all, env, out_dir.path())
}

/// Runs a drill and reads the evidence it wrote into `evidence`.
fn run_drill_into(
    args: &[&str],
    env: &[(&str, &str)],
    evidence: &std::path::Path,
) -> (std::process::Output, Value, String) {
    let out = Command::new(bin()).arg("drill").args(args).arg("--json").envs(env.iter().copied()).output().unwrap();
    let json = std::fs::read_to_string(evidence.join("report.json")).unwrap_or_default();
    let md = std::fs::read_to_string(evidence.join("report.md")).unwrap_or_default();
    (out, serde_json::from_str(&json).unwrap_or(Value::Null), md)
}

pub fn assert_held(kind: &str, out: &std::process::Output, report: &Value, md: &str) {
    assert!(out.status.success(), "drill {kind} failed:\n{}\n{}", String::from_utf8_lossy(&out.stderr), md);
    assert_eq!(report["drill"], kind);
    assert_eq!(report["passed"], true, "{md}");
    let controls = report["controls"].as_array().unwrap();
    assert!(controls.len() >= 3, "{kind} checks several controls");
    assert!(controls.iter().all(|c| c["held"] == true));
    assert!(md.contains("PASSED") && md.contains("## Controls") && md.contains("## Measurements"));
    let stdout: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stdout["drill"], kind, "--json prints the report");
}

#[test]
fn drill_server_outage_self_contained() {
    let (out, report, md) = run_drill(&["server-outage", "--self-contained"], &[]);
    assert_held("server-outage", &out, &report, &md);
    let names: Vec<&str> =
        report["measurements"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert!(names.iter().any(|n| n.contains("withdrawal")) && names.iter().any(|n| n.contains("recovery")));
}

#[test]
fn drill_revocation_self_contained() {
    let (out, report, md) = run_drill(&["revocation", "--self-contained"], &[]);
    assert_held("revocation", &out, &report, &md);
}

#[test]
fn drill_ca_rotation_self_contained() {
    let (out, report, md) = run_drill(&["ca-rotation", "--self-contained"], &[]);
    assert_held("ca-rotation", &out, &report, &md);
}

#[test]
fn drill_node_ban_self_contained() {
    let (out, report, md) = run_drill(&["node-ban", "--self-contained"], &[]);
    assert_held("node-ban", &out, &report, &md);
}

#[test]
fn drill_agent_scope_breach_self_contained() {
    let (out, report, md) = run_drill(&["agent-scope-breach", "--self-contained"], &[]);
    assert_held("agent-scope-breach", &out, &report, &md);
    assert!(md.contains("scope breach"), "{md}");
}

#[test]
fn drill_agent_objective_change_self_contained() {
    let (out, report, md) = run_drill(&["agent-objective-change", "--self-contained"], &[]);
    assert_held("agent-objective-change", &out, &report, &md);
}

/// The drill agent's and the throwaway server's `[node_attestor]` tables in
/// files, for `drill --node-attestor FILE --server-node-attestor FILE`.
pub fn attestor_files(dir: &std::path::Path, agent: &str, server: &str) -> (String, String) {
    let (a, s) = (dir.join("agent-attestor.toml"), dir.join("server-attestor.toml"));
    std::fs::write(&a, agent).unwrap();
    std::fs::write(&s, server).unwrap();
    (a.display().to_string(), s.display().to_string())
}

/// `node-ban` on a node that proved itself with x509pop: its ban withdraws
/// what it was issued, and the banned node cannot attest again.
#[test]
fn drill_node_ban_on_an_x509pop_node() {
    let pki = tempfile::tempdir().unwrap();
    let ca = crate::node_attestation::openssl_ca(pki.path(), "drill-ca");
    let (cert, key) = crate::node_attestation::openssl_node(pki.path(), "drill-ca", "drill-node");
    let (agent, server) = attestor_files(
        pki.path(),
        &format!(
            "[node_attestor]\ntype = \"x509pop\"\ncert_path = \"{}\"\nkey_path = \"{}\"\n",
            cert.display(),
            key.display()
        ),
        &format!("[[node_attestor]]\ntype = \"x509pop\"\nca_bundle_path = \"{}\"\n", ca.display()),
    );
    let args = ["node-ban", "--self-contained", "--node-attestor", &agent, "--server-node-attestor", &server];
    let (out, report, md) = run_drill(&args, &[]);
    assert_held("node-ban", &out, &report, &md);
    assert!(md.contains("/hallmark/agent/x509pop/") && md.contains("node attestor"), "{md}");
}

#[test]
fn drills_against_a_live_deployment() {
    let up = Up::start();
    let env: Vec<(&str, &str)> = up.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let api = up.env["HALLMARK_AGENT_API"].clone();
    // A live server is never stopped: the outage is staged on a relay.
    let (out, report, md) = run_drill(&["server-outage", "--agent-api", &api], &env);
    assert_held("server-outage", &out, &report, &md);
    assert_eq!(report["mode"], "live");
    assert!(md.contains("relay"), "{md}");
    // Without --out the evidence goes to the deployment's data directory
    // (HALLMARK_DATA_DIR, from `up`'s env file), never the current directory.
    let out = Command::new(bin())
        .args(["drill", "revocation", "--agent-api", &api, "--json"])
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let drills = std::path::Path::new(&up.env["HALLMARK_DATA_DIR"]).join("drills");
    let evidence = std::fs::read_dir(&drills).unwrap().next().unwrap().unwrap().path();
    assert!(evidence.file_name().unwrap().to_str().unwrap().starts_with("revocation-"), "{}", evidence.display());
    let (_, report, md) = run_drill_into(&[], &[], &evidence);
    assert_held("revocation", &out, &report, &md);
    // Rotating a live deployment's authorities needs an explicit yes.
    let (out, _, _) = run_drill(&["ca-rotation", "--agent-api", &api], &env);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--confirm-rotation"));
    // The deployment's own state is left clean: the probe entries are gone.
    let entries = up.cli_json(&["entry", "list"]);
    assert!(entries["entries"].as_array().unwrap().is_empty(), "{entries}");
}
