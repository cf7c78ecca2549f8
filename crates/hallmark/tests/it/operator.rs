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
    let all = up.cli_json(&["credential", "list", "--entry", id]);
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
    assert!(up.cli_json(&["entry", "show", id])["revoked_at"].is_i64());
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
