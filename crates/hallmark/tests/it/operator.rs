//! What an operator meets on day one (issue 14): the CLI in a pipeline,
//! deleting and revoking entries, and plain start-up logs.

use std::process::{Command, Stdio};

use serde_json::Value;

use crate::harness::*;

/// `hallmark entry list | head -1` and friends: a reader that stops reading
/// is no error. Made certain by a pipe whose read end is closed before the
/// command writes anything.
#[tokio::test(flavor = "multi_thread")]
async fn cli_ends_quietly_on_a_closed_pipe() {
    let up = Up::start();
    let uid = format!("unix:uid:{}", my_uid());
    for i in 0..3 {
        up.create_entry(&format!("spiffe://example.org/pipe/{i}"), &["--selector", &uid]);
    }
    for args in [
        vec!["entry", "list"],
        vec!["entry", "list", "--json"],
        vec!["policy", "history"],
        vec!["credential", "list"],
        vec!["owner", "list"],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(bin()).args(&args).envs(&up.env).stdout(writer).stderr(Stdio::piped()).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?} on a closed pipe: {:?} {stderr}", out.status);
        assert!(stderr.is_empty(), "{args:?} printed on a closed pipe: {stderr}");
    }
    // The pipeline as people type it.
    for _ in 0..5 {
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!("set -o pipefail; '{}' entry list | head -1", bin()))
            .envs(&up.env)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && stderr.is_empty(), "{:?}: {stderr}", out.status);
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("ENTRY ID"));
    }
}

fn fail(out: &std::process::Output) -> String {
    assert!(!out.status.success(), "succeeded: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `entry delete` decommissions: the entry's live credentials are revoked
/// in the same call (as by `revoke --entry`), and it says how many.
#[tokio::test(flavor = "multi_thread")]
async fn deleting_an_entry_revokes_its_live_credentials() {
    let up = Up::start();
    let uid = format!("unix:uid:{}", my_uid());
    let e = up.create_entry("spiffe://example.org/decommissioned", &["--selector", &uid]);
    let id = e["id"].as_str().unwrap();
    let client = up.client().await;
    let svid = client.fetch_x509_svid().await.unwrap();
    client.fetch_jwt_svid(&["db"], None).await.unwrap();
    let serial = serial_of(svid.leaf().as_ref());
    let live = up.cli_json(&["credential", "list", "--entry", id, "--live"]);
    let live_ids: Vec<&str> =
        live["credentials"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert!(live_ids.len() >= 2 && live_ids.contains(&serial.as_str()), "{live}");

    let deleted = up.cli_json(&["entry", "delete", id]);
    let revoked: Vec<&str> =
        deleted["revoked_credentials"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    for c in &live_ids {
        assert!(revoked.contains(c), "{c} not revoked by the delete: {deleted}");
    }
    // A credential an issuance in flight recorded while the delete
    // committed is revoked by the sweep that follows it (2 s later).
    let mut all = serde_json::Value::Null;
    for _ in 0..100 {
        all = up.cli_json(&["credential", "list", "--entry", id]);
        if all["credentials"].as_array().unwrap().iter().all(|c| c["revoke_reason"] == "entry deleted") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    for c in all["credentials"].as_array().unwrap() {
        assert_eq!(c["revoke_reason"], "entry deleted", "{c}");
    }
    assert!(
        up.cli_json(&["credential", "list", "--entry", id, "--live"])["credentials"].as_array().unwrap().is_empty()
    );
    let drift = up.cli_json(&["report", "drift"]);
    assert!(!drift.to_string().contains("live_after_entry_deleted"), "{drift}");
    // The serial is on the CRL path like any revocation: the revocation list has it.
    let revocations = up.cli_json(&["revocation", "list"]);
    assert!(revocations.to_string().contains(&serial), "{revocations}");

    // The human output says how many.
    let e = up.create_entry("spiffe://example.org/decommissioned-2", &["--selector", &uid]);
    let out = up.cli(&["entry", "delete", e["id"].as_str().unwrap()]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("revoked") && text.contains("live credential"), "{text}");
}

/// A revoked entry is visible as such, cannot be changed, and blocks a new
/// entry with the same identity with a message saying how to register it again.
#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_entry_says_so_and_explains_how_to_register_again() {
    let up = Up::start();
    let uid = format!("unix:uid:{}", my_uid());
    let spiffe = "spiffe://example.org/revoked-record";
    let e = up.create_entry(spiffe, &["--selector", &uid]);
    let id = e["id"].as_str().unwrap();
    assert!(up.cli(&["revoke", "--entry", id, "--reason", "compromised"]).status.success());

    let show = up.cli(&["entry", "show", id]);
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(text.contains("REVOKED at 20"), "{text}");
    // --json keeps both: unix seconds and their RFC 3339 twin.
    let shown = up.cli_json(&["entry", "show", id]);
    assert!(shown["revoked_at"].is_i64() && shown["revoked_at_rfc3339"].as_str().unwrap().ends_with('Z'), "{shown}");
    let list = String::from_utf8_lossy(&up.cli(&["entry", "list"]).stdout).into_owned();
    assert!(list.contains("revoked 20"), "{list}");

    let err = fail(&up.cli(&["entry", "update", id, "--x509-ttl", "30m"]));
    assert!(err.contains("was revoked") && err.contains(&format!("hallmark entry delete {id}")), "{err}");
    let err = fail(&up.cli(&["entry", "create", "--spiffe-id", spiffe, "--selector", &uid, "--owner", "team-test"]));
    assert!(err.contains("was revoked") && err.contains(&format!("hallmark entry delete {id}")), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    assert!(up.cli(&["entry", "delete", id]).status.success());
    let again = up.create_entry(spiffe, &["--selector", &uid]);
    assert_ne!(again["id"], Value::from(id));
}

/// Start-up logs written to a file carry no colour codes and none of the
/// lines that confused a newcomer; a restart says it reuses what it stored.
#[test]
fn up_logs_plainly() {
    let up = Up::start();
    wait_for("the embedded agent to connect", 30, || up.proc.log().contains("connected to the server").then_some(()));
    let log = up.proc.log();
    assert!(!log.contains('\u{1b}'), "ANSI escape codes in a log file:\n{log}");
    for confusing in ["none usable", "resuming with stored", "outage_secs=0", "reachable again"] {
        assert!(!log.contains(confusing), "`{confusing}` in a fresh start's log:\n{log}");
    }
    assert!(log.contains("created the first authority"), "{log}");
    let Up { mut proc, dir, .. } = up;
    proc.kill();
    let again = Up::start_in(dir);
    wait_for("the agent to reconnect", 30, || again.proc.log().contains("connected to the server").then_some(()));
    let log = again.proc.log();
    assert!(log.contains("using stored agent SVID"), "{log}");
    assert!(!log.contains("created the first authority") && !log.contains("outage_secs=0"), "{log}");
}

fn jwt_claims(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// `up --config FILE` runs with the file's classes, CA lifetime and JWT
/// issuer, checked exactly as `hallmark server --config` checks them.
#[tokio::test(flavor = "multi_thread")]
async fn up_takes_the_servers_configuration_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("up.toml");
    std::fs::write(
        &cfg,
        "jwt_issuer = \"https://issuer.example.org\"\n[ca]\nttl = \"48h\"\n[classes.agent]\nmax_ttl = \"15m\"\n",
    )
    .unwrap();
    // Refused before anything starts: a key `up` owns, an unknown key, a bad value.
    for (text, named) in
        [("data_dir = \"/tmp/x\"\n", "data_dir"), ("ca_ttl = \"48h\"\n", "ca_ttl"), ("[ca]\nttl = \"5s\"\n", "ca.ttl")]
    {
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, text).unwrap();
        let out = Command::new(bin())
            .args(["up", "--data-dir"])
            .arg(dir.path().join("refused"))
            .arg("--config")
            .arg(&bad)
            .output()
            .unwrap();
        let err = fail(&out);
        assert!(err.contains(named) && err.contains("bad.toml"), "{text}: {err}");
    }
    let up = Up::start_with(dir, &["--config", cfg.to_str().unwrap()]);
    let authorities = up.cli_json(&["ca", "show"]);
    let now = hallmark_core::now_unix();
    for a in authorities["authorities"].as_array().unwrap() {
        let left = a["not_after"].as_i64().unwrap() - now;
        assert!(left > 47 * 3600 && left <= 48 * 3600, "ca.ttl 48h: {a}");
    }
    let uid = format!("unix:uid:{}", my_uid());
    up.create_entry("spiffe://example.org/configured", &["--selector", &uid, "--class", "agent", "--jwt-ttl", "1h"]);
    let jwt = up.client().await.fetch_jwt_svid(&["db"], None).await.unwrap();
    let claims = jwt_claims(jwt.token());
    assert_eq!(claims["iss"], "https://issuer.example.org", "{claims}");
    let life = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert!(life <= 15 * 60, "the agent class maximum from the file caps the JWT: {life}s");
}

/// `healthcheck`, `config check`, completions and man pages.
#[test]
fn operations_commands() {
    let up = Up::start();
    let out = up.cli(&["healthcheck"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("agent at http://"));
    let server = up.env["HALLMARK_SERVER"].clone();
    let out = up.cli(&["healthcheck", "--server", &server, "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((v["target"].as_str(), v["ready"].as_bool()), (Some("server"), Some(true)), "{v}");
    let closed = format!(
        "http://127.0.0.1:{}",
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    );
    let err = fail(&up.cli(&["healthcheck", "--agent", &closed]));
    assert!(err.starts_with("error:") && err.lines().count() == 1, "{err}");

    let dir = tempfile::tempdir().unwrap();
    let server_toml = dir.path().join("server.toml");
    std::fs::write(&server_toml, "trust_domain = \"example.org\"\ndata_dir = \"/var/lib/hallmark\"\ndatastore = \"postgres://hm:s3cret@db/hm\"\n").unwrap();
    let out = Command::new(bin()).args(["config", "check"]).arg(&server_toml).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("a valid server configuration"), "{text}");
    assert!(!text.contains("s3cret"), "the datastore password is not printed: {text}");
    let agent_toml = dir.path().join("agent.toml");
    std::fs::write(&agent_toml, "trust_domain = \"example.org\"\nserver_address = \"s:8443\"\ndata_dir = \"/var/lib/a\"\ninsecure_bootstrap = true\n").unwrap();
    let out = Command::new(bin()).args(["config", "check", "--json"]).arg(&agent_toml).output().unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["settings"]["kind"], "agent", "{v}");
    let cores = std::thread::available_parallelism().unwrap().get();
    assert_eq!(v["settings"]["worker_threads"], (cores / 2).max(1), "half the cores by default: {v}");
    std::fs::write(
        &agent_toml,
        "trust_domain = \"example.org\"\nserver_address = \"s:8443\"\ndata_dir = \"/a\"\nworker_threads = 0\n",
    )
    .unwrap();
    let err = fail(&Command::new(bin()).args(["config", "check"]).arg(&agent_toml).output().unwrap());
    assert!(err.contains("worker_threads") && err.contains("between 1 and 256"), "{err}");
    // `hallmark agent` refuses it too, before it starts anything.
    let err = fail(&Command::new(bin()).args(["agent", "--config"]).arg(&agent_toml).output().unwrap());
    assert!(err.contains("worker_threads"), "{err}");
    std::fs::write(
        &agent_toml,
        "trust_domain = \"example.org\"\nserver_address = \"s:8443\"\ndata_dir = \"/a\"\nsocket = \"/x\"\n",
    )
    .unwrap();
    let err = fail(&Command::new(bin()).args(["config", "check"]).arg(&agent_toml).output().unwrap());
    assert!(err.contains("socket"), "{err}");
    // Pod evidence needs all three kubelet keys.
    std::fs::write(
        &agent_toml,
        "trust_domain = \"example.org\"\nserver_address = \"s:8443\"\ndata_dir = \"/a\"\nkubelet_url = \"https://127.0.0.1:10250\"\n",
    )
    .unwrap();
    let err = fail(&Command::new(bin()).args(["config", "check"]).arg(&agent_toml).output().unwrap());
    assert!(err.contains("kubelet_token_path") && err.contains("together"), "{err}");

    let out = Command::new(bin()).args(["completions", "bash"]).output().unwrap();
    let script = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && script.contains("_hallmark") && script.contains("healthcheck"));
    let man = dir.path().join("man");
    assert!(Command::new(bin()).args(["man", "--out"]).arg(&man).status().unwrap().success());
    for page in ["hallmark.1", "hallmark-entry.1", "hallmark-entry-denials.1", "hallmark-exception-list.1"] {
        let text = std::fs::read_to_string(man.join(page)).unwrap();
        assert!(text.contains(".TH"), "{page}");
    }
}

/// The server's `/metrics`: issuance and denials by class, decision and
/// audit-append latency, connected agents, registry size, authority expiry.
#[tokio::test(flavor = "multi_thread")]
async fn server_metrics() {
    let up = Up::start();
    let uid = format!("unix:uid:{}", my_uid());
    up.create_entry("spiffe://example.org/metered", &["--selector", &uid]);
    let client = up.client().await;
    client.fetch_x509_svid().await.unwrap();
    client.fetch_jwt_svid(&["db"], None).await.unwrap();
    let (status, body) = http_get(&format!("{}/metrics", up.env["HALLMARK_SERVER"]));
    let text = String::from_utf8(body).unwrap();
    assert_eq!(status, 200, "{text}");
    let value = |line: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(line))
            .unwrap_or_else(|| panic!("no `{line}` in\n{text}"))
            .trim()
            .parse()
            .unwrap()
    };
    assert!(value("hallmark_server_credentials_issued_total{class=\"machine\",kind=\"x509\"}") >= 1.0);
    assert!(value("hallmark_server_credentials_issued_total{class=\"machine\",kind=\"jwt\"}") >= 1.0);
    assert_eq!(value("hallmark_server_issuance_denied_total{class=\"machine\"}"), 0.0);
    assert!(value("hallmark_server_decision_seconds_count") >= 2.0);
    assert!(value("hallmark_server_audit_append_seconds_count") >= 1.0);
    assert_eq!(value("hallmark_server_connected_agents"), 1.0);
    assert_eq!(value("hallmark_server_registry_entries"), 1.0);
    assert!(value("hallmark_server_authority_expiry_seconds{kind=\"x509\"}") > 3600.0);
    assert!(value("hallmark_server_authority_expiry_seconds{kind=\"jwt\"}") > 3600.0);
}

/// `api validate-jwt`, `api watch` and `api fetch-bundle`, as a workload on
/// the node sees them.
#[test]
fn workload_api_commands() {
    let up = Up::start();
    let uid = format!("unix:uid:{}", my_uid());
    up.create_entry("spiffe://example.org/api-cli", &["--selector", &uid, "--x509-ttl", "4s"]);
    let jwts = up.cli_json(&["api", "fetch-jwt", "--audience", "db"]);
    let token = jwts[0]["svid"].as_str().unwrap();
    let valid = up.cli_json(&["api", "validate-jwt", "--audience", "db", "--svid", token]);
    assert_eq!(valid["spiffe_id"], "spiffe://example.org/api-cli", "{valid}");
    assert_eq!(valid["claims"]["aud"], serde_json::json!(["db"]), "{valid}");
    let err = fail(&up.cli(&["api", "validate-jwt", "--audience", "other", "--svid", token]));
    assert!(err.contains("not valid"), "{err}");

    // Two updates: the first SVID, then its renewal about two seconds later.
    let started = std::time::Instant::now();
    let out = up.cli(&["api", "watch", "--count", "2", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let updates: Vec<Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(updates.len(), 2);
    assert_ne!(updates[0]["svids"][0]["serial"], updates[1]["svids"][0]["serial"], "a renewal was pushed");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));

    let dir = tempfile::tempdir().unwrap();
    let out = up.cli(&["api", "fetch-bundle", "--write", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let served = std::fs::read_to_string(dir.path().join("bundle.pem")).unwrap();
    let published = String::from_utf8(up.cli(&["bundle", "show"]).stdout).unwrap();
    assert_eq!(served.trim(), published.trim(), "the node serves the published bundle");
    let jwks: Value = serde_json::from_slice(&up.cli(&["api", "fetch-bundle", "--kind", "jwt"]).stdout).unwrap();
    let (td, doc) = jwks.as_object().unwrap().iter().next().unwrap();
    assert!(td.ends_with("example.org") && !doc["keys"].as_array().unwrap().is_empty(), "{jwks}");
}

/// The packaged sample configurations are valid, and the systemd units run
/// the binary as a dedicated user, hardened, against those files.
#[test]
fn packaging_is_consistent() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging");
    for (file, kind) in [("config/server.toml", "server"), ("config/agent.toml", "agent")] {
        let out = Command::new(bin()).args(["config", "check", "--kind", kind]).arg(root.join(file)).output().unwrap();
        assert!(out.status.success(), "{file}: {}", String::from_utf8_lossy(&out.stderr));
        let unit = std::fs::read_to_string(root.join(format!("systemd/hallmark-{kind}.service"))).unwrap();
        for line in [
            "User=hallmark",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "PrivateTmp=yes",
            &format!("ExecStart=/usr/local/bin/hallmark {kind} --config /etc/hallmark/{kind}.toml"),
            &format!("ExecStartPre=/usr/local/bin/hallmark config check --kind {kind} /etc/hallmark/{kind}.toml"),
        ] {
            assert!(unit.lines().any(|l| l == line), "hallmark-{kind}.service lacks `{line}`");
        }
    }
    let sysusers = std::fs::read_to_string(root.join("systemd/hallmark.sysusers")).unwrap();
    assert!(sysusers.lines().any(|l| l.starts_with("u hallmark ")));
    // systemd's own assessment of the sandboxing, where systemd is installed.
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        eprintln!("systemd-analyze not installed: exposure levels not measured");
        return;
    }
    let sysroot = tempfile::tempdir().unwrap();
    let units = sysroot.path().join("etc/systemd/system");
    std::fs::create_dir_all(&units).unwrap();
    for kind in ["server", "agent"] {
        let unit = format!("hallmark-{kind}.service");
        std::fs::copy(root.join("systemd").join(&unit), units.join(&unit)).unwrap();
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--no-pager"])
            .arg(format!("--root={}", sysroot.path().display()))
            .arg(format!("/etc/systemd/system/{unit}"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let level: f64 = text
            .lines()
            .find_map(|l| l.split("Overall exposure level for ").nth(1))
            .and_then(|l| l.split(':').nth(1))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no exposure level for {unit}: {text}"));
        assert!(level <= 3.0, "{unit}: exposure {level} (systemd calls up to 3.9 OK)\n{text}");
    }
}

/// `token list` / `token revoke`, and `node unban` bringing a banned node's
/// workloads back (with new credentials: what the ban revoked stays revoked).
#[tokio::test(flavor = "multi_thread")]
async fn join_tokens_and_node_unban() {
    let dep = crate::separate::start_server_with(None, "");
    let spare = serde_json::from_slice::<Value>(&dep.cli(&["token", "create", "--json"]).stdout).unwrap();
    let (agent, agent_id, socket) = crate::separate::join_agent(&dep, "node");
    let tokens: Value = serde_json::from_slice(&dep.cli(&["token", "list", "--json"]).stdout).unwrap();
    let state_of = |tokens: &Value, agent: &str| {
        tokens["join_tokens"].as_array().unwrap().iter().find(|t| t["agent_id"] == agent).map(|t| t["state"].clone())
    };
    assert_eq!(state_of(&tokens, spare["agent_id"].as_str().unwrap()), Some(Value::from("unused")), "{tokens}");
    assert_eq!(state_of(&tokens, &agent_id), Some(Value::from("used")), "{tokens}");
    assert!(!tokens.to_string().contains(spare["token"].as_str().unwrap()), "tokens are never listed");
    let err = fail(&dep.cli(&["token", "revoke", &agent_id]));
    assert!(err.contains("already used") && err.contains("revoke --node"), "{err}");
    assert!(dep.cli(&["token", "revoke", spare["agent_id"].as_str().unwrap()]).status.success());
    let tokens: Value = serde_json::from_slice(&dep.cli(&["token", "list", "--json"]).stdout).unwrap();
    assert_eq!(state_of(&tokens, spare["agent_id"].as_str().unwrap()), None, "{tokens}");
    assert!(fail(&dep.cli(&["token", "revoke", spare["agent_id"].as_str().unwrap()])).contains("not found"));

    let (client, first) = dep.serve_me("spiffe://example.org/on-a-node", &agent, &agent_id, &socket).await;
    assert!(dep.cli(&["revoke", "--node", &agent_id, "--reason", "suspected"]).status.success());
    let denied_now = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            if let Err(e) = client.fetch_x509_svid().await
                && denied(&format!("{e:?}"))
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(denied_now.is_ok(), "the banned node's workload lost its SVID");
    let list = String::from_utf8_lossy(&dep.cli(&["node", "list"]).stdout).into_owned();
    assert!(list.contains("banned: suspected"), "{list}");

    let out = dep.cli(&["node", "unban", &agent_id]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("ban lifted"), "{}", String::from_utf8_lossy(&out.stderr));
    let again = crate::separate::wait_for_svid(&client).await.expect("an SVID again once the ban is lifted");
    assert_ne!(
        serial_of(again.leaf().as_ref()),
        serial_of(first.leaf().as_ref()),
        "a new credential, not the revoked one"
    );
    let list = String::from_utf8_lossy(&dep.cli(&["node", "list"]).stdout).into_owned();
    assert!(!list.contains("banned"), "{list}");
    drop(agent);
}

/// An agent told to trust the first server it meets says so, naming it.
#[test]
fn insecure_bootstrap_warns_naming_the_server() {
    let dep = crate::separate::start_server_with(None, "");
    let tok: Value = serde_json::from_slice(&dep.cli(&["token", "create", "--json"]).stdout).unwrap();
    let dir = dep.dir.path().join("trusting");
    std::fs::create_dir_all(&dir).unwrap();
    let server = format!("127.0.0.1:{}", dep.env["HALLMARK_AGENT_PORT"]);
    let cfg = format!(
        "trust_domain = \"example.org\"\nserver_address = \"{server}\"\ndata_dir = \"{}\"\nsocket_path = \"{}\"\n\
         join_token = \"{}\"\ninsecure_bootstrap = true\n",
        dir.join("data").display(),
        dir.join("api.sock").display(),
        tok["token"].as_str().unwrap()
    );
    std::fs::write(dir.join("agent.toml"), cfg).unwrap();
    let mut cmd = Command::new(bin());
    cmd.args(["agent", "--config"]).arg(dir.join("agent.toml"));
    let agent = Proc::spawn(cmd, &dir.join("agent.log"));
    wait_for("the agent to attest", 60, || agent.log().contains("node attested").then_some(()));
    let log = agent.log();
    let warning = log.lines().find(|l| l.contains("WARN") && l.contains("insecure_bootstrap")).unwrap_or_default();
    assert!(warning.contains(&server) && warning.contains("trust_bundle_path"), "{log}");
}

/// A drill that has nowhere to keep its evidence does not start.
#[test]
fn a_drill_needs_a_place_for_its_evidence() {
    let out = Command::new(bin())
        .args(["drill", "revocation", "--self-contained"])
        .env_remove("HALLMARK_DATA_DIR")
        .current_dir(tempfile::tempdir().unwrap().path())
        .output()
        .unwrap();
    let err = fail(&out);
    assert!(err.contains("--out") && err.contains("HALLMARK_DATA_DIR"), "{err}");
}

/// On a terminal logs are coloured unless `NO_COLOR` is set (no-color.org).
/// `script` gives `up` a pseudo-terminal.
#[test]
fn no_color_is_honoured_on_a_terminal() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("`script` (util-linux) not installed: terminal colour not checked");
        return;
    }
    let run = |no_color: bool| {
        let dir = tempfile::tempdir().unwrap();
        let env = if no_color { "NO_COLOR=1 " } else { "" };
        let cmd = format!(
            "{env}timeout 4 '{}' up --data-dir '{}' --admin-listen 127.0.0.1:0",
            bin(),
            dir.path().join("d").display()
        );
        let out = Command::new("script").args(["-qec", &cmd, "/dev/null"]).env_remove("NO_COLOR").output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let coloured = run(false);
    assert!(coloured.contains("server ready") && coloured.contains("\u{1b}["), "colour on a terminal:\n{coloured}");
    let plain = run(true);
    assert!(plain.contains("server ready") && !plain.contains("\u{1b}["), "NO_COLOR:\n{plain}");
}
