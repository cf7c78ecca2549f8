//! Reports: a finding is something to act on. A healthy deployment reports
//! nothing; each kind of finding appears when its condition is made true.
//! Real issuances through real agents, on SQLite (`hallmark up`, a separate
//! server) and on PostgreSQL.

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

const KINDS: [&str; 6] = ["expiring", "orphans", "exceptions", "drift", "rotation", "compliance"];

/// Waits until `n` X.509-SVIDs are served to this process.
async fn svids(socket: &str, n: usize) -> spiffe::WorkloadApiClient {
    let client = spiffe::WorkloadApiClient::connect_to(socket).await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Ok(s) = client.fetch_all_x509_svids().await
                && s.len() >= n
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("SVIDs issued");
    client
}

/// A fresh `up` with workloads whose short-lived SVIDs renew on schedule
/// (their predecessors still live past their renewal point), JWTs, an entry
/// deleted as in the walkthrough, and the authorities rotating by themselves:
/// every report is empty and `--fail-on-findings` passes.
#[tokio::test(flavor = "multi_thread")]
async fn a_healthy_deployment_reports_no_findings() {
    let up = Up::start();
    let uid = format!("unix:uid:{}", my_uid());
    // Pinned to this executable too: a uid alone, when the tests run as root,
    // grants the identity to any root process (a compliance finding, NHI5).
    let exe = format!("unix:sha256:{}", sha256_file(&std::env::current_exe().unwrap()));
    let sel = ["--selector", uid.as_str(), "--selector", exe.as_str()];
    up.create_entry("spiffe://example.org/healthy/web", &[&sel[..], &["--x509-ttl", "8s", "--jwt-ttl", "5m"]].concat());
    let gone = up.create_entry("spiffe://example.org/healthy/gone", &sel);
    let client = svids(&up.socket(), 2).await;
    client.fetch_jwt_svid(&["my-database"], None).await.unwrap();
    up.cli_json(&["entry", "delete", gone["id"].as_str().unwrap()]);
    // Hold a stream through two renewals of the 8 s SVID.
    let mut stream = client.stream_x509_contexts().await.unwrap();
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < until {
        let _ = tokio::time::timeout(Duration::from_secs(1), futures_util::StreamExt::next(&mut stream)).await;
    }
    let live = up.cli_json(&["credential", "list", "--live"]);
    assert!(live["credentials"].as_array().unwrap().len() >= 3, "renewed SVIDs are live side by side: {live}");
    for kind in KINDS {
        let out = up.cli(&["report", kind, "--fail-on-findings", "--json"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{kind}: {text} {}", String::from_utf8_lossy(&out.stderr));
        let r: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(r["findings"], serde_json::json!([]), "{kind}");
    }
    let human = String::from_utf8_lossy(&up.cli(&["report", "compliance"]).stdout).into_owned();
    assert!(human.contains("compliance report: 0 finding(s)"), "{human}");
}

/// Each finding, made true on purpose.
async fn scenario(cli: &dyn Fn(&[&str]) -> Output, socket: &str, parent: Option<&str>) {
    for o in ["keep-team", "gone-team"] {
        json_of(cli(&["owner", "create", o, "--contact", &format!("{o}@example.org"), "--json"]));
    }
    // Renewal of one identity is forbidden by policy: it expires with no renewal path.
    let policy = std::env::temp_dir().join(format!("reports-{}.cedar", rand_tag()));
    std::fs::write(
        &policy,
        "@id(\"default-allow\")\npermit(principal, action, resource);\n\
         @id(\"no-renewal-for-unrenewable\")\nforbid(principal, action == Action::\"renew\", resource)\n  \
         when { principal.path == \"/rep/unrenewable\" };\n",
    )
    .unwrap();
    json_of(cli(&["policy", "set", policy.to_str().unwrap(), "--json"]));
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
    let unrenewable = entry("unrenewable", "keep-team", &["--selector", &uid, "--x509-ttl", "12s"]);
    let long = entry("long", "keep-team", &["--selector", &uid, "--x509-ttl", "48h"]);
    let _orphan = entry("orphan", "gone-team", &["--selector", &uid]);
    // The same identity twice (NHI9); this one has no exception for its 48 h.
    let _shared = entry("long", "keep-team", &["--selector", &uid, "--selector", "unix:gid:0", "--x509-ttl", "48h"]);
    let _unused = entry("unused", "keep-team", &["--selector", "unix:uid:65534"]);
    let unused_since = std::time::Instant::now();
    let client = svids(socket, 4).await;
    // Hold a stream so the agent tries (and is refused) the renewal.
    let mut stream = client.stream_x509_contexts().await.unwrap();

    json_of(cli(&["owner", "deactivate", "gone-team", "--json"]));
    // The requester is an operator the bootstrap admin made; the approver
    // must be independent of it.
    let alice = json_of(cli(&["admin", "token", "create", "--role", "operator", "--name", "alice", "--json"]));
    let x = json_of(cli(&[
        "exception",
        "request",
        "--token",
        alice["token"].as_str().unwrap(),
        "--entry",
        long["id"].as_str().unwrap(),
        "--rule",
        "ttl_above_class_max",
        "--value",
        "48h",
        "--justification",
        "batch migration",
        "--expires",
        "2h",
        "--json",
    ]));
    // 48 h cannot take effect under the default 24 h authorities: the requester is told.
    let warning = x["warnings"][0].as_str().unwrap_or_default();
    assert!(warning.contains("cannot outlive the authority") && warning.contains("ca.ttl"), "{x}");

    let report = |kind: &str, extra: &[&str]| {
        let mut args = vec!["report", kind, "--json"];
        args.extend_from_slice(extra);
        json_of(cli(&args))
    };
    // A pending exception is a note, not a finding.
    let exceptions = report("exceptions", &[]);
    assert!(checks(&exceptions).is_empty(), "{exceptions}");
    assert!(exceptions["notes"].to_string().contains("exception_pending"), "{exceptions}");
    // Approved by a second trust-admin, it lets credentials live beyond the class maximum: a finding.
    let bob = json_of(cli(&["admin", "token", "create", "--role", "trust-admin", "--name", "bob", "--json"]));
    let approved = json_of(cli(&[
        "exception",
        "approve",
        x["id"].as_str().unwrap(),
        "--token",
        bob["token"].as_str().unwrap(),
        "--json",
    ]));
    assert!(!approved["warnings"].as_array().unwrap().is_empty(), "{approved}");
    assert!(checks(&report("exceptions", &[])).contains(&"exception_active".to_owned()));

    let orphans = checks(&report("orphans", &[]));
    assert!(orphans.contains(&"orphan_entry".into()) && orphans.contains(&"orphan_credential".into()), "{orphans:?}");
    // Unused for more than 1 s in whole seconds: at least 2 s after it was registered.
    tokio::time::sleep(Duration::from_secs(2).saturating_sub(unused_since.elapsed())).await;
    let drift = checks(&report("drift", &["--unused-for", "1s"]));
    for c in ["ttl_above_class_max", "unused_entry"] {
        assert!(drift.contains(&c.to_owned()), "{c} missing from {drift:?}");
    }
    assert!(!drift.contains(&"live_after_entry_deleted".to_owned()), "{drift:?}");

    // The refused renewal (at about half of 12 s) makes its SVID expire with no renewal path.
    let unrenewable_id = unrenewable["id"].as_str().unwrap().to_owned();
    let mut expiring = Value::Null;
    for _ in 0..60 {
        let _ = tokio::time::timeout(Duration::from_millis(200), futures_util::StreamExt::next(&mut stream)).await;
        expiring = report("expiring", &["--within", "1h"]);
        if expiring["findings"].to_string().contains("renewal was denied") {
            break;
        }
    }
    let findings = expiring["findings"].as_array().unwrap();
    assert!(!findings.is_empty(), "{expiring}");
    for f in findings {
        assert_eq!(f["check"], "credential_expiring", "{f}");
        assert!(f["detail"].as_str().unwrap().contains("/rep/unrenewable"), "only the unrenewable SVID: {f}");
    }
    let denials = json_of(cli(&["entry", "denials", &unrenewable_id, "--json"]));
    assert!(denials.to_string().contains("no-renewal-for-unrenewable"), "{denials}");

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
    assert!(String::from_utf8_lossy(&csv.stdout).starts_with("check,subject,nhi,detail,asi\n"));
    let unknown = cli(&["report", "everything"]);
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown report `everything`"));
}

#[tokio::test(flavor = "multi_thread")]
async fn each_finding_appears_when_made_true_on_sqlite() {
    let up = Up::start();
    scenario(&|args| up.cli(args), &up.socket(), None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn each_finding_appears_when_made_true_on_postgres() {
    let Some(url) = postgres_db("hm_reports") else { return };
    let dep = start_server_with(Some(url), "");
    let (_agent, agent_id, socket) = join_agent(&dep, "rep");
    scenario(&|args| dep.cli(args), &format!("unix://{}", socket.display()), Some(&agent_id)).await;
}

/// An SVID whose agent is gone is not renewed: past its renewal point it is
/// `rotation_overdue`. An upstream CA certificate, which Hallmark cannot
/// renew, expiring within the window is `ca_expiring`.
#[tokio::test(flavor = "multi_thread")]
async fn unrenewed_svids_and_an_expiring_upstream_ca_are_findings() {
    let work = tempfile::tempdir().unwrap();
    let (key, cert) = (work.path().join("root.key"), work.path().join("root.pem"));
    let out = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=short-lived upstream root", "-addext", "basicConstraints=critical,CA:TRUE"])
        .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let extra =
        format!("[ca]\nttl = \"12h\"\nupstream_cert = \"{}\"\nupstream_key = \"{}\"\n", cert.display(), key.display());
    let dep = start_server_with(None, &extra);
    let (mut agent, agent_id, socket) = join_agent(&dep, "gone");
    dep.owner("ops");
    dep.entry_for_me("spiffe://example.org/orphaned-by-its-agent", &agent_id, &["--x509-ttl", "20s"]);
    svids(&format!("unix://{}", socket.display()), 1).await;

    let expiring = json_of(dep.cli(&["report", "expiring", "--within", "48h", "--json"]));
    let upstream: Vec<&Value> =
        expiring["findings"].as_array().unwrap().iter().filter(|f| f["subject"] == "upstream-ca").collect();
    assert_eq!(upstream.len(), 1, "{expiring}");
    assert!(upstream[0]["detail"].as_str().unwrap().contains("cannot renew it"), "{expiring}");
    let within_hour = json_of(dep.cli(&["report", "expiring", "--within", "1h", "--json"]));
    assert_eq!(within_hour["findings"], serde_json::json!([]), "the authorities rotate by themselves");

    // The SVID is healthy while its agent can renew it.
    assert!(checks(&json_of(dep.cli(&["report", "rotation", "--json"]))).is_empty());
    agent.kill();
    let rotation = wait_for("rotation_overdue once the renewal point passes", 30, || {
        let r = json_of(dep.cli(&["report", "rotation", "--json"]));
        checks(&r).contains(&"rotation_overdue".to_owned()).then_some(r)
    });
    assert!(rotation["findings"][0]["detail"].as_str().unwrap().contains("not connected"), "{rotation}");
}
