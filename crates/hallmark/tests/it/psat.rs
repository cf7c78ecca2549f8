//! Kubernetes PSAT node attestation (issue 17) with real `hallmark server`
//! and `hallmark agent` processes. No cluster runs here: the test process
//! serves the service-account issuer's discovery document and JWKS over
//! HTTPS (`hallmark_testkit::k8s_issuer`) and writes the projected token
//! file the kubelet would.

use std::path::{Path, PathBuf};

use hallmark_testkit::k8s_issuer::{IssuerStub, POD_UID, Signer, as_service_account, pod_claims, with};
use serde_json::json;

use crate::harness::*;
use crate::node_attestation::{node_json, served_to_me, start_attested_agent};
use crate::separate::{Deployment, start_server_with};

fn now() -> i64 {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    i64::try_from(secs).unwrap()
}

/// Writes `token` to `path` as the kubelet does: whole, by a rename, so an
/// agent reading it never sees half a token.
fn write_token(path: &Path, token: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, token).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Starts an agent `name` attesting as cluster `cluster` with `token`
/// (written to a token file in the deployment's directory).
fn start_psat_agent(dep: &Deployment, name: &str, cluster: &str, token: &str) -> (Proc, PathBuf, PathBuf) {
    let token_path = dep.dir.path().join(format!("{name}.token"));
    write_token(&token_path, token);
    let attestor = format!(
        "[node_attestor]\ntype = \"k8s_psat\"\ncluster = \"{cluster}\"\ntoken_path = \"{}\"\n",
        token_path.display()
    );
    let (agent, socket) = start_attested_agent(dep, name, &attestor);
    (agent, socket, token_path)
}

fn attested_at(dep: &Deployment, agent_id: &str) -> Option<i64> {
    node_json(dep, agent_id).and_then(|n| n["attested_at"].as_i64())
}

/// PSAT end to end: the agent ID and node selectors come from the pod's
/// token; an entry needing the cluster is served on the node; the node
/// re-attests with its token at each rotation, and a token that no longer
/// verifies is refused (the node is not banned: the token is not the node).
/// Tokens for another service account, another audience or an unknown
/// cluster get nothing, and their agents say why.
#[tokio::test(flavor = "multi_thread")]
async fn psat_node_proves_itself_with_its_pod_token_and_is_refused_when_the_token_expires() {
    let signer = Signer::rsa("sa-key-1");
    let issuer = IssuerStub::start(&[&signer]).await;
    let dep = start_server_with(
        None,
        &format!(
            "agent_svid_ttl = \"20s\"\n[[node_attestor]]\ntype = \"k8s_psat\"\n[[node_attestor.clusters]]\n\
             name = \"test\"\nissuer = \"{}\"\nissuer_ca_path = \"{}\"\n\
             allowed_service_accounts = [\"hallmark:hallmark-agent\"]\n",
            issuer.url,
            issuer.ca_path.display()
        ),
    );
    let token_on = |node: &str| signer.token(&pod_claims(&issuer.url, now(), node));

    // Tokens the server refuses: each agent gets nothing and says why.
    let strangers = [
        (
            "other-sa",
            "test",
            signer.token(&as_service_account(pod_claims(&issuer.url, now(), "node-sa"), "hallmark", "default")),
            "service account `hallmark:default` of cluster `test` is not in allowed_service_accounts",
        ),
        (
            "other-aud",
            "test",
            signer.token(&with(pod_claims(&issuer.url, now(), "node-aud"), &["aud"], json!(["vault"]))),
            "audience does not include `hallmark`",
        ),
        ("other-cluster", "other", token_on("node-other"), "unknown cluster `other`"),
    ];
    for (name, cluster, token, says) in &strangers {
        let (mut agent, _, _) = start_psat_agent(&dep, name, cluster, token);
        let log = wait_for(&format!("{name}'s refusal"), 30, || {
            let l = agent.log();
            l.contains(says).then_some(l)
        });
        assert!(log.contains("k8s_psat attestation"), "{log}");
        agent.kill();
    }
    for refused in ["test/node-sa", "test/node-aud", "other/node-other"] {
        let id = format!("spiffe://example.org/hallmark/agent/k8s_psat/{refused}");
        assert!(node_json(&dep, &id).is_none(), "{id} was recorded");
    }

    let (agent, socket, token_path) = start_psat_agent(&dep, "node-a", "test", &token_on("node-a"));
    let agent_id = "spiffe://example.org/hallmark/agent/k8s_psat/test/node-a";
    let node = wait_for("the node's record", 30, || node_json(&dep, agent_id));
    assert_eq!(node["attestation_type"], "k8s_psat", "{node}");
    let selectors: Vec<&str> = node["selectors"].as_array().unwrap().iter().filter_map(|s| s.as_str()).collect();
    let pod_uid = format!("k8s_psat:agent_pod_uid:{POD_UID}");
    for want in [
        "k8s_psat:cluster:test",
        "k8s_psat:agent_ns:hallmark",
        "k8s_psat:agent_sa:hallmark-agent",
        "k8s_psat:agent_node_name:node-a",
        &pod_uid,
        "node:attestation:k8s_psat",
    ] {
        assert!(selectors.contains(&want), "{want} missing from {selectors:?}");
    }
    let first_attested = node["attested_at"].as_i64().expect("attested_at");

    // Two entries for this process on the node: one on any node of cluster
    // `test`, one only on nodes of another cluster.
    dep.owner("ops");
    dep.entry_for_me("spiffe://example.org/in-cluster", agent_id, &["--node-selector", "k8s_psat:cluster:test"]);
    dep.entry_for_me("spiffe://example.org/in-prod", agent_id, &["--node-selector", "k8s_psat:cluster:prod"]);
    let (_client, ids) = served_to_me(&socket, &agent).await;
    assert_eq!(ids, vec!["spiffe://example.org/in-cluster".to_owned()], "the prod-only entry is not this node's");

    // Past half its SVID's life the node attests again (not a renewal), with
    // the token the kubelet has rotated in.
    write_token(&token_path, &token_on("node-a"));
    let again = wait_for("a re-attestation", 40, || attested_at(&dep, agent_id).filter(|t| *t > first_attested));
    // The server records the attestation before the agent hears of it.
    wait_for("the agent's word of it", 10, || agent.log().contains("node attested again").then_some(()));
    assert!(!agent.log().contains("renewed agent SVID"), "{}", agent.log());

    // The token file now holds an expired token: the next re-attestation is
    // refused, saying why, and the node's last attestation stays where it was.
    write_token(&token_path, &signer.token(&pod_claims(&issuer.url, now() - 7200, "node-a")));
    wait_for("the refusal of the expired token", 40, || {
        let l = agent.log();
        l.lines().any(|l| l.contains("cannot attest again") && l.contains("the token expired")).then_some(())
    });
    let last = attested_at(&dep, agent_id).unwrap();
    assert!(last >= again);
    std::thread::sleep(std::time::Duration::from_secs(12));
    let node = node_json(&dep, agent_id).unwrap();
    assert_eq!(node["attested_at"].as_i64(), Some(last), "refused, yet attested again: {node}");
    assert_eq!(node["banned"], false, "a refused PSAT node is not banned: {node}");
    assert!(dep.server.log().contains("node attestation refused"), "{}", dep.server.log());
}

/// `node-ban` on a node that proved itself with its pod's token
/// (`hallmark drill`, self-contained; the issuer is this test's stand-in).
#[tokio::test(flavor = "multi_thread")]
async fn drill_node_ban_on_a_psat_node() {
    let signer = Signer::rsa("sa-key-1");
    let issuer = IssuerStub::start(&[&signer]).await;
    let dir = tempfile::tempdir().unwrap();
    let token_path = dir.path().join("token");
    write_token(&token_path, &signer.token(&pod_claims(&issuer.url, now(), "drill-node")));
    let (agent, server) = crate::drills::attestor_files(
        dir.path(),
        &format!(
            "[node_attestor]\ntype = \"k8s_psat\"\ncluster = \"test\"\ntoken_path = \"{}\"\n",
            token_path.display()
        ),
        &format!(
            "[[node_attestor]]\ntype = \"k8s_psat\"\n[[node_attestor.clusters]]\nname = \"test\"\nissuer = \"{}\"\n\
             issuer_ca_path = \"{}\"\nallowed_service_accounts = [\"hallmark:hallmark-agent\"]\n",
            issuer.url,
            issuer.ca_path.display()
        ),
    );
    let (out, report, md) = tokio::task::spawn_blocking(move || {
        let args = ["node-ban", "--self-contained", "--node-attestor", &agent, "--server-node-attestor", &server];
        crate::drills::run_drill(&args, &[])
    })
    .await
    .unwrap();
    crate::drills::assert_held("node-ban", &out, &report, &md);
    assert!(md.contains("/hallmark/agent/k8s_psat/test/drill-node"), "{md}");
}
