//! Node attestation with evidence the node holds (issue 17), with real
//! `hallmark server` and `hallmark agent` processes. The node PKI is made by
//! `openssl` (an independent tool), not by Hallmark.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::harness::*;
use crate::separate::{Deployment, start_server_with, wait_for_svid};

/// Runs openssl with `args` in `dir`; fails the test with its stderr.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl (Debian package openssl)");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// `openssl req` making a new P-256 key `key` (PKCS#8) and, for subject
/// `/CN=cn`, a CSR at `out` or, with `self_signed`, a one-day CA certificate.
fn openssl_new_key(dir: &Path, self_signed: bool, key: &str, out: &str, cn: &str) {
    let subj = format!("/CN={cn}");
    let mut args = vec!["req"];
    if self_signed {
        args.extend(["-x509", "-days", "1"]);
    }
    args.extend(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", out]);
    args.extend(["-subj", &subj]);
    openssl(dir, &args);
}

/// A CA `NAME.pem` / `NAME.key` in `dir` (P-256, one day).
pub fn openssl_ca(dir: &Path, name: &str) -> PathBuf {
    let (key, pem) = (format!("{name}.key"), format!("{name}.pem"));
    openssl_new_key(dir, true, &key, &pem, name);
    dir.join(pem)
}

/// A node certificate `NODE.pem` (CN `node`, DNS SAN `node.example.org`) and
/// its PKCS#8 key `NODE.key` (mode 0600), signed by CA `ca` in `dir`.
pub fn openssl_node(dir: &Path, ca: &str, node: &str) -> (PathBuf, PathBuf) {
    let (key, csr, pem) = (format!("{node}.key"), format!("{node}.csr"), format!("{node}.pem"));
    openssl_new_key(dir, false, &key, &csr, node);
    let ext = dir.join(format!("{node}.ext"));
    std::fs::write(&ext, format!("subjectAltName=DNS:{node}.example.org\n")).unwrap();
    let (ca_pem, ca_key) = (format!("{ca}.pem"), format!("{ca}.key"));
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_pem,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "1",
            "-extfile",
            ext.to_str().unwrap(),
        ],
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.join(&key), std::fs::Permissions::from_mode(0o600)).unwrap();
    (dir.join(pem), dir.join(key))
}

/// The SHA-1 fingerprint of a PEM certificate as `openssl` prints it, in
/// lowercase hex without colons.
pub fn openssl_sha1(pem: &Path) -> String {
    let out =
        Command::new("openssl").args(["x509", "-noout", "-fingerprint", "-sha1", "-in"]).arg(pem).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    text.trim().rsplit('=').next().unwrap().replace(':', "").to_lowercase()
}

/// Starts an agent named `name` whose node proves itself with the
/// `[node_attestor]` table `attestor` (no join token).
pub fn start_attested_agent(dep: &Deployment, name: &str, attestor: &str) -> (Proc, PathBuf) {
    let bundle = dep.cli(&["bundle", "show"]);
    std::fs::write(dep.dir.path().join("bundle.pem"), &bundle.stdout).unwrap();
    let d = dep.dir.path().join(name);
    std::fs::create_dir_all(&d).unwrap();
    let socket = d.join("api.sock");
    let cfg = format!(
        "trust_domain = \"example.org\"\nserver_address = \"127.0.0.1:{}\"\ndata_dir = \"{}\"\nsocket_path = \"{}\"\n\
         trust_bundle_path = \"{}\"\n{attestor}",
        dep.env["HALLMARK_AGENT_PORT"],
        d.join("data").display(),
        socket.display(),
        dep.dir.path().join("bundle.pem").display(),
    );
    std::fs::write(d.join("agent.toml"), cfg).unwrap();
    let mut cmd = Command::new(bin());
    cmd.args(["agent", "--config"]).arg(d.join("agent.toml"));
    (Proc::spawn(cmd, &dep.dir.path().join(format!("{name}.log"))), socket)
}

/// A Workload API client on the agent's `socket`, and the SPIFFE IDs the
/// agent serves this process once it serves any (a panic with the agent's
/// log if it never does).
pub async fn served_to_me(socket: &Path, agent: &Proc) -> (spiffe::WorkloadApiClient, Vec<String>) {
    // A restarted agent may not be listening yet (its predecessor's socket
    // file refuses connections until it binds anew).
    let mut client = None;
    for _ in 0..300 {
        match spiffe::WorkloadApiClient::connect_to(format!("unix://{}", socket.display())).await {
            Ok(c) => {
                client = Some(c);
                break;
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
    let client = client.unwrap_or_else(|| panic!("the agent never listened on its socket\n{}", agent.log()));
    wait_for_svid(&client).await.unwrap_or_else(|| panic!("nothing served\n{}", agent.log()));
    let ctx = client.fetch_x509_context().await.unwrap();
    let ids = ctx.svids().iter().map(|s| s.spiffe_id().to_string()).collect();
    (client, ids)
}

/// The node `agent_id` as `hallmark node list --json` shows it, once recorded.
pub fn node_json(dep: &Deployment, agent_id: &str) -> Option<serde_json::Value> {
    let out = dep.cli(&["node", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["nodes"].as_array()?.iter().find(|n| n["agent_id"] == agent_id).cloned()
}

/// x509pop end to end: the agent ID and selectors come from the node
/// certificate; an entry is served only on a node with its node selectors;
/// the node re-attests at each rotation (renewal is refused to it); and when
/// its CA is withdrawn from the server, its next re-attestation is refused
/// and what it was issued is revoked.
#[tokio::test(flavor = "multi_thread")]
async fn x509pop_node_proves_itself_is_served_by_its_selectors_and_is_revoked_when_its_ca_goes() {
    let pki = tempfile::tempdir().unwrap();
    let ca_pem = openssl_ca(pki.path(), "node-ca");
    openssl_ca(pki.path(), "other-ca");
    let (cert, key) = openssl_node(pki.path(), "node-ca", "node-1");
    let (foreign_cert, foreign_key) = openssl_node(pki.path(), "other-ca", "node-2");
    // The CA file the server reads; replaced below to withdraw the CA.
    let trusted = pki.path().join("trusted.pem");
    std::fs::copy(&ca_pem, &trusted).unwrap();
    let mut dep = start_server_with(
        None,
        &format!(
            "agent_svid_ttl = \"20s\"\n[[node_attestor]]\ntype = \"x509pop\"\nca_bundle_path = \"{}\"\n",
            trusted.display()
        ),
    );
    let attestor = |cert: &Path, key: &Path| {
        format!(
            "[node_attestor]\ntype = \"x509pop\"\ncert_path = \"{}\"\nkey_path = \"{}\"\n",
            cert.display(),
            key.display()
        )
    };

    // A node certificate from a CA the server does not trust gets nothing.
    let (mut stranger, _) = start_attested_agent(&dep, "stranger", &attestor(&foreign_cert, &foreign_key));
    let log = wait_for("the stranger's refusal", 30, || {
        let l = stranger.log();
        l.contains("does not verify").then_some(l)
    });
    assert!(log.contains("x509pop"), "{log}");
    stranger.kill();

    let (agent, socket) = start_attested_agent(&dep, "node-1", &attestor(&cert, &key));
    let agent_id = format!("spiffe://example.org/hallmark/agent/x509pop/{}", openssl_sha1(&cert));
    let node = wait_for("the node's record", 30, || node_json(&dep, &agent_id));
    assert_eq!(node["attestation_type"], "x509pop", "{node}");
    let selectors: Vec<&str> = node["selectors"].as_array().unwrap().iter().filter_map(|s| s.as_str()).collect();
    let ca_fp = format!("x509pop:ca:fingerprint:{}", openssl_sha1(&ca_pem));
    for want in ["node:attestation:x509pop", "x509pop:subject:cn:node-1", "x509pop:san:dns:node-1.example.org", &ca_fp]
    {
        assert!(selectors.contains(&want), "{want} missing from {selectors:?}");
    }
    let first_attested = node["attested_at"].as_i64().expect("attested_at");
    assert!(node["reattest_at"].as_i64().is_some_and(|t| t > first_attested), "{node}");

    // Two entries for this process on the node: one needs what the node
    // proved, one needs a TPM it does not have.
    dep.owner("ops");
    let uid = format!("unix:uid:{}", my_uid());
    for (id, node_sel) in [
        ("spiffe://example.org/on-node-1", "x509pop:subject:cn:node-1"),
        ("spiffe://example.org/on-tpm", "node:attestation:tpm"),
    ] {
        let out = dep.cli(&[
            "entry",
            "create",
            "--spiffe-id",
            id,
            "--selector",
            &uid,
            "--node-selector",
            node_sel,
            "--parent",
            &agent_id,
            "--owner",
            "ops",
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    // A workload selector given as a node selector is refused, saying why.
    let out = dep.cli(&[
        "entry",
        "create",
        "--spiffe-id",
        "spiffe://example.org/x",
        "--selector",
        &uid,
        "--node-selector",
        &uid,
        "--parent",
        &agent_id,
        "--owner",
        "ops",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("describes the workload"), "{out:?}");

    let (client, ids) = served_to_me(&socket, &agent).await;
    assert_eq!(ids, vec!["spiffe://example.org/on-node-1".to_owned()], "the TPM-only entry is not this node's");
    // The credential traces to its node's provenance in one query.
    let svid = client.fetch_x509_svid().await.unwrap();
    let out = dep.cli(&["credential", "show", &serial_of(svid.leaf().as_ref()), "--json"]);
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["credential"]["node_id"], agent_id.as_str(), "{shown}");
    assert_eq!(shown["node"]["attestation_type"], "x509pop", "{shown}");
    assert!(shown["node"]["selectors"].to_string().contains("x509pop:subject:cn:node-1"), "{shown}");
    let human = String::from_utf8_lossy(&dep.cli(&["credential", "show", &serial_of(svid.leaf().as_ref())]).stdout)
        .into_owned();
    assert!(human.contains("attestation") && human.contains("x509pop:subject:cn:node-1"), "{human}");

    // Past half its SVID's life the node attests again (not a renewal).
    let again = wait_for("a re-attestation", 40, || {
        node_json(&dep, &agent_id).and_then(|n| n["attested_at"].as_i64()).filter(|t| *t > first_attested)
    });
    assert!(again > first_attested);
    // The server records the attestation before the agent hears the answer.
    wait_for("the agent's word of it", 10, || agent.log().contains("node attested again").then_some(()));
    assert!(!agent.log().contains("renewed agent SVID"), "{}", agent.log());

    // The CA is withdrawn: the server restarts trusting only another CA.
    dep.server.kill();
    std::fs::copy(pki.path().join("other-ca.pem"), &trusted).unwrap();
    dep.start_server_again();
    revoked_at_reattestation(&dep, &agent_id, &client, &agent, 40).await;
}

/// Waits up to `secs` for node `agent_id` to be banned at its next
/// re-attestation (the reason says so), then for what it was issued to be
/// withdrawn from the workload `client`.
pub async fn revoked_at_reattestation(
    dep: &Deployment,
    agent_id: &str,
    client: &spiffe::WorkloadApiClient,
    agent: &Proc,
    secs: u64,
) {
    let banned = wait_for("the node's revocation at its next re-attestation", secs, || {
        node_json(dep, agent_id).filter(|n| n["banned"] == true)
    });
    assert!(banned["ban_reason"].as_str().unwrap().contains("re-attestation refused"), "{banned}");
    let mut gone = false;
    for _ in 0..100 {
        if client.fetch_x509_svid().await.is_err() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "the revoked node's workload is still served\n{}", agent.log());
}

/// Join tokens restricted by policy and reported: a policy forbids `/db/*`
/// on join-token nodes (and requires an x509pop node's CN through its node
/// selectors), so the database identity is refused on the join-token node
/// and served on the x509pop node; the compliance report lists what
/// join-token nodes serve, and nothing an x509pop node serves.
#[tokio::test(flavor = "multi_thread")]
async fn policy_forbids_join_token_nodes_and_the_compliance_report_lists_what_they_serve() {
    let pki = tempfile::tempdir().unwrap();
    let ca_pem = openssl_ca(pki.path(), "node-ca");
    let (cert, key) = openssl_node(pki.path(), "node-ca", "db-node");
    let dep = start_server_with(
        None,
        &format!("[[node_attestor]]\ntype = \"x509pop\"\nca_bundle_path = \"{}\"\n", ca_pem.display()),
    );
    let policy = dep.dir.path().join("policy.cedar");
    std::fs::write(
        &policy,
        "@id(\"default-allow\")\npermit(principal, action, resource);\n\
         @id(\"db-only-on-proven-nodes\")\nforbid(principal, action, resource) when { principal.path like \"/db/*\" && \
         (context.node_attestation == \"join_token\" || !context.node_selectors.contains(\"x509pop:subject:cn:db-node\")) };\n",
    )
    .unwrap();
    let out = dep.cli(&["policy", "set", policy.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    dep.owner("ops");

    let (_joined, joined_id, joined_socket) = crate::separate::join_agent(&dep, "joined");
    let attestor = format!(
        "[node_attestor]\ntype = \"x509pop\"\ncert_path = \"{}\"\nkey_path = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let (proven, proven_socket) = start_attested_agent(&dep, "proven", &attestor);
    let proven_id = format!("spiffe://example.org/hallmark/agent/x509pop/{}", openssl_sha1(&cert));
    wait_for("the x509pop node", 30, || node_json(&dep, &proven_id));

    let joined_db = dep.entry_for_me("spiffe://example.org/db/on-joined", &joined_id, &[]);
    let joined_web = dep.entry_for_me("spiffe://example.org/web/on-joined", &joined_id, &["--selector", "unix:gid:0"]);
    let proven_db = dep.entry_for_me("spiffe://example.org/db/on-proven", &proven_id, &[]);

    // The x509pop node's database identity is served.
    let client = spiffe::WorkloadApiClient::connect_to(format!("unix://{}", proven_socket.display())).await.unwrap();
    let svid = wait_for_svid(&client).await.unwrap_or_else(|| panic!("nothing served\n{}", proven.log()));
    assert_eq!(svid.spiffe_id().to_string(), "spiffe://example.org/db/on-proven");
    // The join-token node's is refused by the policy, and the refusal says which.
    let denials = wait_for("the denial on the join-token node", 30, || {
        let _ = std::process::Command::new(bin())
            .args(["api", "fetch-x509", "--socket", &format!("unix://{}", joined_socket.display())])
            .output();
        let out = dep.cli(&["entry", "denials", joined_db["id"].as_str().unwrap(), "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        (!v["denials"].as_array()?.is_empty()).then_some(v)
    });
    assert!(denials.to_string().contains("db-only-on-proven-nodes"), "{denials}");

    let out = dep.cli(&["report", "compliance", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let listed: Vec<String> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["check"] == "served_by_join_token_node")
        .map(|f| f["subject"].as_str().unwrap().to_owned())
        .collect();
    let mut want = vec![joined_db["id"].as_str().unwrap().to_owned(), joined_web["id"].as_str().unwrap().to_owned()];
    want.sort();
    let mut listed_sorted = listed.clone();
    listed_sorted.sort();
    assert_eq!(listed_sorted, want, "{report}");
    assert!(!listed.contains(&proven_db["id"].as_str().unwrap().to_owned()));
}
