//! Every report kind, built from real issuances through a real agent, on
//! SQLite (`hallmark up`) and on PostgreSQL (separate server and agent).

use std::process::Output;
use std::time::Duration;

use serde_json::Value;

use crate::harness::*;
use crate::separate::{join_agent, start_server_with};

fn json_of(out: Output) -> Value {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn checks(report: &Value) -> Vec<String> {
    report["findings"].as_array().unwrap().iter().map(|f| f["check"].as_str().unwrap().to_owned()).collect()
}

async fn scenario(cli: &dyn Fn(&[&str]) -> Output, socket: &str, parent: Option<&str>) {
    for o in ["keep-team", "gone-team"] {
        json_of(cli(&["owner", "create", o, "--contact", &format!("{o}@example.org"), "--json"]));
    }
    let uid = format!("unix:uid:{}", my_uid());
    let entry = |id: &str, owner: &str, extra: &[&str]| -> Value {
        let spiffe = format!("spiffe://example.org/rep/{id}");
        let mut args = vec!["entry", "create", "--spiffe-id", spiffe.as_str(), "--owner", owner, "--json"];
        if let Some(p) = parent {
            args.extend(["--parent", p]);
        }
        args.extend_from_slice(extra);
        json_of(cli(&args))
    };
    let _short = entry("short", "keep-team", &["--selector", &uid, "--x509-ttl", "6s"]);
    let long = entry("long", "keep-team", &["--selector", &uid, "--x509-ttl", "48h"]);
    let _orphan = entry("orphan", "gone-team", &["--selector", &uid]);
    let deleted = entry("deleted", "keep-team", &["--selector", &uid]);
    let _shared = entry("short", "keep-team", &["--selector", &uid, "--selector", "unix:gid:0"]);
    let _unused = entry("unused", "keep-team", &["--selector", "unix:uid:65534"]);

    // Real issuances: every entry this process matches gets an SVID.
    let client = spiffe::WorkloadApiClient::connect_to(socket).await.unwrap();
    let svids = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Ok(s) = client.fetch_all_x509_svids().await
                && s.len() >= 5
            {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("all SVIDs issued");
    assert_eq!(svids.len(), 5);
    // Let the 6s SVID renew, so its predecessor is live but past its renewal point.
    let mut stream = client.stream_x509_contexts().await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let _ = futures_util::StreamExt::next(&mut stream).await;

    json_of(cli(&["entry", "delete", deleted["id"].as_str().unwrap(), "--json"]));
    json_of(cli(&["owner", "deactivate", "gone-team", "--json"]));
    json_of(cli(&[
        "exception",
        "request",
        "--entry",
        long["id"].as_str().unwrap(),
        "--rule",
        "ttl_above_class_max",
        "--value",
        "48h",
        "--justification",
        "batch",
        "--expires",
        "2h",
        "--json",
    ]));

    let report = |kind: &str, extra: &[&str]| {
        let mut args = vec!["report", kind, "--json"];
        args.extend_from_slice(extra);
        json_of(cli(&args))
    };
    let expiring = checks(&report("expiring", &["--within", "1h"]));
    assert!(expiring.contains(&"credential_expiring".to_owned()), "{expiring:?}");
    let orphans = checks(&report("orphans", &[]));
    assert!(orphans.contains(&"orphan_entry".into()) && orphans.contains(&"orphan_credential".into()), "{orphans:?}");
    let exceptions = checks(&report("exceptions", &[]));
    assert!(exceptions.contains(&"exception_pending".into()), "{exceptions:?}");
    let drift = checks(&report("drift", &["--unused-for", "1s"]));
    for c in ["ttl_above_class_max", "live_after_entry_deleted", "unused_entry"] {
        assert!(drift.contains(&c.to_owned()), "{c} missing from {drift:?}");
    }
    // The report works in whole seconds: in the second a renewed SVID reaches
    // its own renewal point its predecessor has just expired, so look again.
    let mut rotation = checks(&report("rotation", &[]));
    for _ in 0..4 {
        if rotation.contains(&"rotation_overdue".into()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        rotation = checks(&report("rotation", &[]));
    }
    assert!(rotation.contains(&"rotation_overdue".into()), "{rotation:?}");
    let compliance = report("compliance", &["--unused-for", "1s"]);
    let count = |id: &str| {
        compliance["nhi"].as_array().unwrap().iter().find(|i| i["id"] == id).unwrap()["findings"].as_u64().unwrap()
    };
    assert!(count("NHI1") > 0 && count("NHI7") > 0 && count("NHI9") > 0, "{compliance}");
    if my_uid() == "0" {
        assert!(count("NHI5") > 0, "root-only selection is over-privileged");
    }
    assert_eq!(compliance["nhi"].as_array().unwrap().len(), 10);
    // --fail-on-findings and CSV, for scripts.
    let failing = cli(&["report", "orphans", "--fail-on-findings"]);
    assert!(!failing.status.success());
    let csv = cli(&["report", "orphans", "--csv"]);
    assert!(String::from_utf8_lossy(&csv.stdout).starts_with("check,subject,nhi,detail\n"));
    let unknown = cli(&["report", "everything"]);
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown report `everything`"));
}

#[tokio::test(flavor = "multi_thread")]
async fn every_report_kind_on_sqlite() {
    let up = Up::start();
    scenario(&|args| up.cli(args), &up.socket(), None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_report_kind_on_postgres() {
    let Ok(base) = std::env::var("HALLMARK_TEST_POSTGRES") else {
        assert!(std::env::var("CI").is_err(), "CI must provide HALLMARK_TEST_POSTGRES");
        return;
    };
    let db = format!("hm_reports_{}", std::process::id());
    let out = std::process::Command::new("psql")
        .arg(&base)
        .args(["-v", "ON_ERROR_STOP=1", "-c", &format!("CREATE DATABASE {db}")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let url = format!("{}/{db}", base.rsplit_once('/').unwrap().0);
    let dep = start_server_with(Some(url), "");
    let (_agent, agent_id, socket) = join_agent(&dep, "rep");
    scenario(&|args| dep.cli(args), &format!("unix://{}", socket.display()), Some(&agent_id)).await;
}
