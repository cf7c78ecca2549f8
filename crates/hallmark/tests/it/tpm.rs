//! TPM 2.0 node attestation end to end (issue 17): real `hallmark server`
//! and `hallmark agent` processes (built with `--features tpm`), the agent
//! using a software TPM (`swtpm`, manufactured with an EK certificate from a
//! local CA) through the swtpm TCTI. Needs the Debian packages swtpm,
//! swtpm-tools, libtss2-tcti-swtpm0 and libtss2-dev (scripts/test.sh installs
//! them).

use std::time::Duration;

use hallmark_testkit::swtpm::LocalCa;

use crate::harness::*;
use crate::node_attestation::{node_json, revoked_at_reattestation, served_to_me, start_attested_agent};
use crate::separate::start_server_with;

fn tpm_node(dep: &crate::separate::Deployment) -> Option<serde_json::Value> {
    let out = dep.cli(&["node", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["nodes"].as_array()?.iter().find(|n| n["attestation_type"] == "tpm").cloned()
}

/// A TPM node is attested by its EK certificate and credential activation;
/// an entry needing `node:attestation:tpm` is served on it; the node attests
/// again after its agent SVID expired while the agent was down; and when its
/// EK is taken off the server's trust (the server restarts trusting another
/// EK only), its next re-attestation is refused and the node revoked.
#[tokio::test(flavor = "multi_thread")]
async fn tpm_node_attests_reattests_after_expiry_and_is_revoked_when_its_ek_is_no_longer_trusted() {
    let ca = LocalCa::new();
    let swtpm = ca.tpm("node");
    let mut dep = start_server_with(
        None,
        &format!(
            "agent_svid_ttl = \"20s\"\n[[node_attestor]]\ntype = \"tpm\"\nek_ca_dir = \"{}\"\n",
            ca.trust_dir().display()
        ),
    );
    let attestor = format!("[node_attestor]\ntype = \"tpm\"\ntcti = \"{}\"\n", swtpm.tcti());
    let (mut agent, socket) = start_attested_agent(&dep, "tpm-node", &attestor);
    let node = wait_for("the TPM node's record", 60, || tpm_node(&dep));
    let agent_id = node["agent_id"].as_str().unwrap().to_owned();
    let ek_hash = agent_id.rsplit('/').next().unwrap().to_owned();
    assert!(agent_id.starts_with("spiffe://example.org/hallmark/agent/tpm/") && ek_hash.len() == 64, "{agent_id}");
    let selectors = node["selectors"].to_string();
    assert!(selectors.contains(&format!("tpm:ek:sha256:{ek_hash}")), "{selectors}");
    assert!(selectors.contains("node:attestation:tpm"), "{selectors}");

    dep.owner("ops");
    let entry = dep.entry_for_me("spiffe://example.org/db", &agent_id, &["--node-selector", "node:attestation:tpm"]);
    assert!(entry["selectors"].to_string().contains("node:attestation:tpm"), "{entry}");
    let (_client, ids) = served_to_me(&socket, &agent).await;
    assert_eq!(ids, vec!["spiffe://example.org/db".to_owned()]);

    // The agent is down until its SVID has expired; started again, it
    // attests afresh with the TPM (same EK, same agent ID).
    agent.kill();
    let expired_at = node_json(&dep, &agent_id).unwrap()["not_after"].as_i64().unwrap();
    let wait = expired_at + 1 - hallmark_core::now_unix();
    if wait > 0 {
        tokio::time::sleep(Duration::from_secs(wait as u64)).await;
    }
    let before = node_json(&dep, &agent_id).unwrap()["attested_at"].as_i64().unwrap();
    let (agent, socket) = start_attested_agent(&dep, "tpm-node", &attestor);
    wait_for("the attestation after expiry", 60, || {
        node_json(&dep, &agent_id).filter(|n| n["attested_at"].as_i64().unwrap_or(0) > before)
    });
    let (client, ids) = served_to_me(&socket, &agent).await;
    assert_eq!(ids, vec!["spiffe://example.org/db".to_owned()]);

    // The EK is no longer trusted: the server restarts trusting another EK only.
    dep.server.kill();
    let cfg = dep.dir.path().join("server.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let start = text.find("ek_ca_dir").unwrap();
    std::fs::write(&cfg, format!("{}ek_hashes = [\"{}\"]\n", &text[..start], "ab".repeat(32))).unwrap();
    dep.start_server_again();
    revoked_at_reattestation(&dep, &agent_id, &client, &agent, 60).await;
}

/// `node-ban` on a TPM node (`hallmark drill`, self-contained).
#[test]
fn drill_node_ban_on_a_tpm_node() {
    let ca = LocalCa::new();
    let swtpm = ca.tpm("drill");
    let dir = tempfile::tempdir().unwrap();
    let (agent, server) = crate::drills::attestor_files(
        dir.path(),
        &format!("[node_attestor]\ntype = \"tpm\"\ntcti = \"{}\"\n", swtpm.tcti()),
        &format!("[[node_attestor]]\ntype = \"tpm\"\nek_ca_dir = \"{}\"\n", ca.trust_dir().display()),
    );
    let args = ["node-ban", "--self-contained", "--node-attestor", &agent, "--server-node-attestor", &server];
    let (out, report, md) = crate::drills::run_drill(&args, &[]);
    crate::drills::assert_held("node-ban", &out, &report, &md);
    assert!(md.contains("/hallmark/agent/tpm/"), "{md}");
}
