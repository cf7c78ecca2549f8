//! WIT-SVIDs on the Workload API, checked by a client that shares no code
//! with Hallmark: `tests/interop/wit_client.py`, plain grpcio with stubs
//! generated at run time from `proto/workload.proto`, verifying with PyJWT.
//! Real processes throughout: `hallmark up`, the Python client over the
//! real socket, `hallmark revoke`, `hallmark task run`.
//!
//! The client fetches a WIT-SVID and the WIT bundles, verifies the WIT
//! against the `wit-svid` JWKS (`typ` `wit+jwt`, no `aud`, `cnf.jwk` the
//! public part of `wit_svid_key`), makes a Workload Proof Token with the
//! WIT's key and verifies it as a relying party would (`cnf.jwk`, `aud`,
//! `wth`). Python comes from the repo's `.venv`; missing, the tests skip,
//! unless `HALLMARK_INTEROP=1` or `CI` is set, when they fail (the rule of
//! `interop.rs`).

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::*;

const WEB: &str = "spiffe://example.org/wit/web";
const AGENT: &str = "spiffe://example.org/wit/agent";
const AUDIENCE: &str = "api.example.org";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The repo's Python, when it has grpcio, grpcio-tools and PyJWT; `None`
/// (skip) when it does not and this is not a run that must have them.
fn python() -> Option<PathBuf> {
    let python = repo_root().join(".venv/bin/python");
    let ok = Command::new(&python).args(["-c", "import grpc, grpc_tools, jwt, cryptography"]).output();
    if ok.is_ok_and(|o| o.status.success()) {
        return Some(python);
    }
    let required = std::env::var("HALLMARK_INTEROP").is_ok_and(|v| v == "1") || std::env::var("CI").is_ok();
    assert!(!required, "{} with grpcio, grpcio-tools, PyJWT missing (scripts/test.sh installs them)", python.display());
    println!("skipped: {} with grpcio, grpcio-tools, PyJWT missing; scripts/test.sh installs them", python.display());
    None
}

/// The client's command line: `wit_client.py PROTO_DIR ARGS...` on `up`'s socket.
fn client(python: &Path, up: &Up, args: &[&str]) -> Command {
    let root = repo_root();
    let mut cmd = Command::new(python);
    cmd.arg(root.join("tests/interop/wit_client.py"))
        .arg(root.join("proto"))
        .args(args)
        .env("SPIFFE_ENDPOINT_SOCKET", up.socket());
    cmd
}

/// Runs the client to its end: its JSON report (or `{"error": ...}`, exit 2).
fn run(mut cmd: Command) -> Value {
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(matches!(out.status.code(), Some(0 | 2)), "wit client failed: {stderr}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stderr}"))
}

fn entry(up: &Up, id: &str, extra: &[&str]) -> String {
    let uid = format!("unix:uid:{}", my_uid());
    let mut args = vec!["--selector", uid.as_str()];
    args.extend_from_slice(extra);
    up.create_entry(id, &args)["id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_python_client_verifies_a_wit_and_proves_possession_of_its_key() {
    let Some(python) = python() else { return };
    let up = Up::start();
    entry(&up, WEB, &["--jwt-ttl", "10m", "--hint", "web"]);

    let r = run(client(&python, &up, &["fetch", AUDIENCE]));
    assert!(r.get("error").is_none(), "{r}");
    // The WIT: signed by the trust domain's JWT key, typed, no audience,
    // bound to the key the workload received.
    assert_eq!(r["spiffe_ids"], json!([WEB]));
    assert_eq!(r["hint"], "web");
    assert_eq!(r["header"]["typ"], "wit+jwt");
    assert_eq!(r["header"]["alg"], "ES256");
    let kid = r["header"]["kid"].as_str().unwrap();
    let c = &r["claims"];
    assert_eq!(c["sub"], WEB);
    assert!(c.get("aud").is_none(), "{c}");
    assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 600, "the entry's jwt_ttl");
    assert!(c.get("task").is_none(), "no task for an entry not bound to tasks");
    assert_eq!(r["private_key_members"], json!(["crv", "d", "kty", "x", "y"]));
    assert_eq!((r["key"]["kty"].as_str(), r["key"]["crv"].as_str()), (Some("EC"), Some("P-256")));
    // The bundle: every key for WITs, with its kid; the WIT's among them.
    let keys = r["bundles"]["spiffe://example.org"].as_array().unwrap();
    assert!(keys.iter().all(|k| k["use"] == "wit-svid" && k["kid"].is_string()), "{keys:?}");
    assert!(keys.iter().any(|k| k["kid"] == kid));
    // The proof: made with the WIT's key, verified against cnf.jwk and wth.
    assert_eq!(r["wpt"]["header"]["typ"], "wpt+jwt");
    assert_eq!(r["wpt"]["claims"]["aud"], AUDIENCE);

    // In the inventory as a `wit`, with its jti; issued by its own Cedar action.
    let jti = c["jti"].as_str().unwrap();
    let shown = up.cli_json(&["credential", "show", jti])["credential"].clone();
    assert_eq!((shown["kind"].as_str(), shown["spiffe_id"].as_str()), (Some("wit"), Some(WEB)), "{shown}");
    let out = up.cli(&["audit", "export", "--since", "1h"]);
    let audit = String::from_utf8_lossy(&out.stdout).to_string();
    let issued: Vec<Value> = audit
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["action"] == "issue_wit")
        .collect();
    assert!(issued.iter().any(|r| r["details"]["jti"] == jti), "{issued:?}");

    // A SPIFFE ID the caller has no entry for: PermissionDenied.
    let refused = run(client(&python, &up, &["fetch", AUDIENCE, "spiffe://example.org/not-mine"]));
    assert_eq!(refused["error"], "PERMISSION_DENIED", "{refused}");

    // The operator's view: `hallmark api fetch-wit` prints no key, writes it 0600.
    let dir = up.dir.path().join("wits");
    let shown = up.cli_json(&["api", "fetch-wit", "--write", dir.to_str().unwrap()]);
    assert_eq!((shown[0]["spiffe_id"].as_str(), shown[0]["hint"].as_str()), (Some(WEB), Some("web")), "{shown}");
    assert!(shown[0]["cnf"]["jwk"]["x"].is_string() && !shown.to_string().contains("\"d\""), "{shown}");
    let key = dir.join("wit.0.jwk");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    let jwk: Value = serde_json::from_slice(&std::fs::read(&key).unwrap()).unwrap();
    assert_eq!(jwk["x"], shown[0]["cnf"]["jwk"]["x"]);
    assert_eq!(std::fs::read_to_string(dir.join("wit.0.jwt")).unwrap(), shown[0]["wit"].as_str().unwrap());
    let out = up.cli(&["api", "fetch-bundle", "--kind", "wit"]);
    let bundle: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(bundle["spiffe://example.org"]["keys"].as_array().unwrap().iter().all(|k| k["use"] == "wit-svid"));

    // The private key (the workload's, shown to this test by its client) is
    // in no log and no audit record.
    let d = r["key"]["d"].as_str().unwrap();
    assert!(d.len() >= 42, "{d}");
    assert!(!audit.contains(d) && !up.proc.log().contains(d), "the WIT's private key leaked");
}

/// The lines the client prints in `watch` mode, as they come.
fn watch(python: &Path, up: &Up) -> (std::process::Child, mpsc::Receiver<Value>) {
    let mut child =
        client(python, up, &["watch", WEB]).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(serde_json::from_str::<Value>(&line).unwrap()).is_err() {
                return;
            }
        }
    });
    (child, rx)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_wit_disappears_from_the_stream() {
    let Some(python) = python() else { return };
    let up = Up::start();
    entry(&up, WEB, &[]);
    let (mut child, lines) = watch(&python, &up);
    let first = lines.recv_timeout(Duration::from_secs(30)).expect("the first message at once");
    assert!(first.get("error").is_none(), "{first}");
    let jti = first["jti"].as_str().unwrap().to_owned();

    let out = up.cli(&["revoke", "--jti", &jti, "--reason", "wit test"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The stream sends a new WIT in its place; the revoked one is not sent again.
    let next = lines.recv_timeout(Duration::from_secs(20)).expect("a new message after the revocation");
    assert_eq!(next["spiffe_id"], WEB);
    assert_ne!(next["jti"], jti.as_str(), "the revoked WIT is gone from the stream");
    let shown = up.cli_json(&["credential", "show", &jti])["credential"].clone();
    assert!(shown["revoked_at"].is_i64(), "{shown}");
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wit_for_an_entry_bound_to_tasks_carries_its_task_and_only_its_processes_get_one() {
    let Some(python) = python() else { return };
    let up = Up::start();
    let entry_id = entry(&up, AGENT, &["--bind", "task", "--class", "agent"]);

    // Outside any task: refused, and told why.
    let r = run(client(&python, &up, &["fetch", AUDIENCE, AGENT]));
    assert_eq!(r["error"], "PERMISSION_DENIED", "{r}");
    assert!(r["details"].as_str().unwrap().contains("no running task"), "{r}");

    // The client as the task's process.
    let task_log = up.dir.path().join("task-run.log");
    let mut cmd = Command::new(bin());
    let root = repo_root();
    cmd.args(["task", "run", "--entry", &entry_id, "--objective", "check the api", "--scope", AUDIENCE, "--"])
        .arg(&python)
        .arg(root.join("tests/interop/wit_client.py"))
        .arg(root.join("proto"))
        .args(["fetch", AUDIENCE, AGENT])
        .envs(&up.env)
        .stderr(std::fs::File::create(&task_log).unwrap());
    let out = cmd.output().unwrap();
    let log = std::fs::read_to_string(&task_log).unwrap();
    assert!(out.status.success(), "{log}");
    let r: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {log}"));
    assert!(r.get("error").is_none(), "{r}");
    let task_id = log.split_whitespace().nth(1).unwrap().trim_end_matches(':');
    let c = &r["claims"];
    assert_eq!(c["sub"], AGENT);
    assert_eq!(c["task"]["id"], task_id, "{c}");
    assert_eq!(c["task"]["scope"][0]["aud"], AUDIENCE, "{c}");
    assert!(c.get("aud").is_none());
    // Recorded with its task: ending the task revoked it.
    let jti = c["jti"].as_str().unwrap();
    let shown = up.cli_json(&["credential", "show", jti])["credential"].clone();
    assert_eq!((shown["kind"].as_str(), shown["task_id"].as_str()), (Some("wit"), Some(task_id)), "{shown}");
    wait_for("the task's end to revoke its WIT", 10, || {
        up.cli_json(&["credential", "show", jti])["credential"]["revoked_at"].as_i64()
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wit_of_an_entry_bound_to_its_process_ends_with_the_process() {
    let Some(python) = python() else { return };
    let up = Up::start();
    entry(&up, WEB, &["--bind", "process"]);
    let r = run(client(&python, &up, &["fetch", AUDIENCE]));
    assert!(r.get("error").is_none(), "{r}");
    // The client has exited: the agent reports its WIT, the server revokes it.
    let jti = r["claims"]["jti"].as_str().unwrap();
    let row = wait_for("the process's end to revoke its WIT", 15, || {
        Some(up.cli_json(&["credential", "show", jti])["credential"].clone()).filter(|c| c["revoked_at"].is_i64())
    });
    assert_eq!((row["kind"].as_str(), row["revoke_reason"].as_str()), (Some("wit"), Some("ended with its process")));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_stream_renews_a_wit_before_it_expires() {
    let Some(python) = python() else { return };
    let up = Up::start();
    entry(&up, WEB, &["--jwt-ttl", "8s"]);
    let (mut child, lines) = watch(&python, &up);
    let first = lines.recv_timeout(Duration::from_secs(30)).expect("the first message at once");
    let next = lines.recv_timeout(Duration::from_secs(12)).expect("a renewed WIT");
    assert_ne!(next["jti"], first["jti"]);
    assert!(next["exp"].as_i64() > first["exp"].as_i64(), "{first} then {next}");
    assert!(hallmark_core::now_unix() < first["exp"].as_i64().unwrap(), "renewed before the first expired");
    let _ = child.kill();
    let _ = child.wait();
}
