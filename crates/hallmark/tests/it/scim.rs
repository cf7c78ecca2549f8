//! SCIM 2.0 provisioning (issue 19: joiners, movers, leavers) against a
//! real `hallmark up`, with independent clients: scim2-tester's whole check
//! suite and scim2-client playing the identity provider (Python, from the
//! repository's `.venv`), and curl. The effects are checked through the
//! admin API: the audit chain, the person as SCIM and owner links show it,
//! the CRL as `openssl verify -crl_check` reads it, `report orphans`, and a
//! running Workload API that keeps serving the machines a leaver owned.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::*;

/// Python from `.venv` with scim2-tester and scim2-client, or `None`
/// (skip) when missing and this is not a run of `scripts/test.sh` or CI
/// (`HALLMARK_INTEROP=1`), which install them.
fn python() -> Option<PathBuf> {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    let ok = Command::new(&python)
        .args(["-c", "import scim2_tester, scim2_client.engines.httpx2"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(python);
    }
    let required = std::env::var("HALLMARK_INTEROP").is_ok_and(|v| v == "1") || std::env::var("CI").is_ok();
    assert!(
        !required,
        "{} with scim2-tester and scim2-client is missing (scripts/test.sh installs it)",
        python.display()
    );
    println!(
        "skipped: {} with scim2-tester and scim2-client is missing; scripts/test.sh installs it",
        python.display()
    );
    None
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop").join(name)
}

/// A new admin token of role `role`.
pub(crate) fn token(up: &Up, role: &str, name: &str) -> String {
    up.cli_json(&["admin", "token", "create", "--role", role, "--name", name])["token"].as_str().unwrap().to_owned()
}

/// One request with curl (an independent client); returns (status, JSON
/// body or null, Content-Type).
pub(crate) fn curl(method: &str, url: &str, token: Option<&str>, body: Option<&str>) -> (u16, Value, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-X", method, "-o", "-", "-w", "\n%{http_code} %{content_type}", url]);
    if let Some(t) = token {
        cmd.arg("-H").arg(format!("Authorization: Bearer {t}"));
    }
    if let Some(b) = body {
        // From a file: a body of megabytes does not fit an argument list.
        let file = std::env::temp_dir().join(format!("scim-body-{}", rand_tag()));
        std::fs::write(&file, b).unwrap();
        cmd.args(["-H", "Content-Type: application/scim+json", "--data-binary"]).arg(format!("@{}", file.display()));
    }
    let out = cmd.output().expect("curl is installed by the test script");
    if let Some(file) = cmd.get_args().find_map(|a| a.to_str()?.strip_prefix('@').map(str::to_owned)) {
        let _ = std::fs::remove_file(file);
    }
    assert!(out.status.success(), "curl: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, tail) = text.rsplit_once('\n').unwrap();
    let (status, media) = tail.split_once(' ').unwrap_or((tail, ""));
    (status.parse().unwrap(), serde_json::from_str(body).unwrap_or(Value::Null), media.to_owned())
}

pub(crate) fn scim_url(up: &Up, path: &str) -> String {
    format!("{}/scim/v2{path}", up.env["HALLMARK_SERVER"])
}

fn audit(up: &Up) -> Vec<Value> {
    let out = up.cli(&["audit", "export"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// scim2-tester's every check passes; scim2-client, as the identity
/// provider, makes a joiner, a mover, a leaver and a deletion, and each
/// shows in the audit chain and in the person's state.
#[tokio::test(flavor = "multi_thread")]
async fn scim2_tester_passes_and_an_idp_joins_moves_and_leaves() {
    let Some(py) = python() else { return };
    let up = Up::start();
    let scim = token(&up, "scim", "idp");
    let base = scim_url(&up, "");

    let out = Command::new(&py).arg(script("scim_check.py")).args([&base, &scim]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "scim2-tester found failures:\n{text}");
    let summary: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    let checks = summary["checks"].as_u64().unwrap();
    assert!(checks >= 60, "the whole suite ran: {summary}");
    assert_eq!(
        (summary["failed"].as_u64(), summary["statuses"]["SUCCESS"].as_u64()),
        (Some(0), Some(checks)),
        "{summary}"
    );

    let out = Command::new(&py).arg(script("scim_idp.py")).args([&base, &scim]).output().unwrap();
    assert!(out.status.success(), "the IdP script failed: {}", String::from_utf8_lossy(&out.stderr));
    let ids: Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    let (alice, bob) = (ids["alice"].as_str().unwrap(), ids["bob"].as_str().unwrap());

    // The audit chain has each step, by the scim identity, and still verifies.
    let records = audit(&up);
    let find = |action: &str, subject: &str| -> Vec<Value> {
        records.iter().filter(|r| r["action"] == action && r["subject"] == subject).cloned().collect()
    };
    let joined = find("person.joined", alice);
    assert_eq!(joined.len(), 1, "{records:?}");
    assert_eq!(
        (joined[0]["actor"].as_str(), joined[0]["details"]["email"].as_str()),
        (Some("idp"), Some("alice@example.org"))
    );
    let moves: Vec<(Value, Value)> = find("person.moved", alice)
        .iter()
        .map(|r| (r["details"]["from"].clone(), r["details"]["to"].clone()))
        .collect();
    assert_eq!(moves, vec![(json!([]), json!(["eng"])), (json!(["eng"]), json!([])), (json!([]), json!(["ops"]))]);
    let left = find("person.left", alice);
    assert_eq!((left.len(), &left[0]["details"]["groups"]), (1, &json!(["ops"])), "{left:?}");
    let bob_left = find("person.left", bob);
    assert_eq!(bob_left[0]["details"]["deleted"], json!(true), "{bob_left:?}");
    let verified = up.cli_json(&["audit", "verify"]);
    assert!(verified["broken"].is_null(), "{verified}");

    // As SCIM shows them: alice inactive and still in ops, bob gone.
    let (status, a, media) = curl("GET", &scim_url(&up, &format!("/Users/{alice}")), Some(&scim), None);
    assert_eq!((status, a["active"].as_bool(), media.as_str()), (200, Some(false), "application/scim+json"), "{a}");
    assert_eq!(a["groups"][0]["display"], "ops");
    assert_eq!(curl("GET", &scim_url(&up, &format!("/Users/{bob}")), Some(&scim), None).0, 404);
    // A deleted person's row stays: an owner can still be linked to it,
    // and says it left.
    up.ensure_owner("bob-team");
    let o = up.cli_json(&["owner", "link", "bob-team", "--person", "bob"]);
    assert_eq!((o["person"].as_str(), o["person_left"].as_bool()), (Some(bob), Some(true)), "{o}");
    // And revocation by person finds it (nothing left to revoke).
    let r = up.cli_json(&["revoke", "--person", "ALICE", "--reason", "check"]);
    assert_eq!((r["subject"].as_str(), r["credentials"].as_array().map(Vec::len)), (Some(alice), Some(0)), "{r}");
}

/// SCIM's refusals are SCIM errors: no token 401, a token of another role
/// 403, a taken userName 409 `uniqueness`, bad filters, bodies nested too
/// deep, and a PATCH of a read-only attribute, each a clear 4xx.
#[tokio::test(flavor = "multi_thread")]
async fn scim_refusals_are_scim_errors() {
    let up = Up::start();
    let scim = token(&up, "scim", "idp");
    let operator = token(&up, "operator", "ops");
    let users = scim_url(&up, "/Users");
    let is_error = |(status, body, media): (u16, Value, String), want: u16, scim_type: Option<&str>| {
        assert_eq!(status, want, "{body}");
        assert_eq!(body["schemas"], json!(["urn:ietf:params:scim:api:messages:2.0:Error"]), "{body}");
        assert_eq!(body["status"], json!(want.to_string()), "the status is a string: {body}");
        assert_eq!(body["scimType"].as_str(), scim_type, "{body}");
        assert_eq!(media, "application/scim+json");
    };
    is_error(curl("GET", &users, None, None), 401, None);
    is_error(curl("GET", &users, Some("not-a-token"), None), 401, None);
    is_error(curl("GET", &users, Some(&operator), None), 403, None);
    // The scim role may not use the rest of the admin API.
    let (status, body, _) = curl("GET", &format!("{}/v1/entries", up.env["HALLMARK_SERVER"]), Some(&scim), None);
    assert_eq!(status, 403, "{body}");

    let (status, created, _) = curl("POST", &users, Some(&scim), Some(r#"{"userName": "Carol", "active": true}"#));
    assert_eq!(status, 201, "{created}");
    is_error(curl("POST", &users, Some(&scim), Some(r#"{"userName": "carol"}"#)), 409, Some("uniqueness"));
    is_error(curl("POST", &users, Some(&scim), Some(r#"{"displayName": "no userName"}"#)), 400, Some("invalidValue"));
    is_error(curl("POST", &users, Some(&scim), Some("{not json")), 400, Some("invalidSyntax"));
    let deep = format!("{{\"userName\": \"d\", \"name\": {}1{}}}", "[".repeat(100), "]".repeat(100));
    is_error(curl("POST", &users, Some(&scim), Some(&deep)), 400, Some("invalidSyntax"));
    let deeper = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    is_error(curl("POST", &users, Some(&scim), Some(&deeper)), 400, Some("invalidSyntax"));
    let filter = |f: &str| format!("{users}?filter={}", f.replace(' ', "%20").replace('"', "%22"));
    is_error(curl("GET", &filter(r#"userName xx "a""#), Some(&scim), None), 400, Some("invalidFilter"));
    is_error(curl("GET", &filter(&"(".repeat(5000)), Some(&scim), None), 400, Some("invalidFilter"));
    let (status, found, _) = curl("GET", &filter(r#"userName eq "CAROL" and active eq true"#), Some(&scim), None);
    assert_eq!((status, found["totalResults"].as_u64()), (200, Some(1)), "{found}");
    let (_, found, _) = curl("GET", &filter(r#"userName sw "x" or emails pr"#), Some(&scim), None);
    assert_eq!(found["totalResults"], 0, "{found}");
    let id = created["id"].as_str().unwrap();
    let patch = r#"{"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                    "Operations": [{"op": "replace", "path": "groups", "value": []}]}"#;
    is_error(curl("PATCH", &format!("{users}/{id}"), Some(&scim), Some(patch)), 400, Some("mutability"));
    // A stale version is refused (412), the current one accepted.
    let etag = created["meta"]["version"].as_str().unwrap().to_owned();
    assert_eq!(etag, "W/\"1\"");
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "DELETE", "-H"])
        .arg(format!("Authorization: Bearer {scim}"))
        .args(["-H", "If-Match: W/\"7\"", &format!("{users}/{id}")])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "412");
    is_error(curl("GET", &scim_url(&up, "/Nope"), Some(&scim), None), 404, None);
}

/// The active X.509 authority's id.
fn active_ca(up: &Up) -> String {
    up.cli_json(&["ca", "show"])["authorities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["kind"] == "x509" && a["state"] == "active")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// `openssl verify -crl_check` of `leaf` against the bundle and the CRL
/// served now; returns whether openssl accepted it, and what it said.
pub(crate) fn verify_against_crl(up: &Up, dir: &Path, ca: &str, bundle: &Path, leaf: &Path) -> (bool, String) {
    let (status, der) = http_get(&format!("{}/v1/crl/{ca}", up.env["HALLMARK_SERVER"]));
    assert_eq!(status, 200);
    let crl = dir.join(format!("crl-{}.pem", rand_tag()));
    std::fs::write(&crl, pem::encode(&pem::Pem::new("X509 CRL", der))).unwrap();
    let out = Command::new("openssl")
        .args(["verify", "-crl_check", "-CAfile"])
        .arg(bundle)
        .arg("-CRLfile")
        .arg(&crl)
        .arg(leaf)
        .output()
        .expect("openssl is installed by the test script");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// A leaver loses every certificate issued to them at once (the CRL
/// refuses it within a second), while the machines of an owner they were
/// accountable for keep their identities (renewed by a running Workload
/// API) and are reported "owner left" until transferred.
#[tokio::test(flavor = "multi_thread")]
async fn a_leaver_is_revoked_at_once_and_their_teams_machines_keep_running() {
    let up = Up::start();
    let scim = token(&up, "scim", "idp");
    let (status, alice, _) = curl(
        "POST",
        &scim_url(&up, "/Users"),
        Some(&scim),
        Some(r#"{"userName": "alice", "emails": [{"value": "alice@example.org"}]}"#),
    );
    assert_eq!(status, 201, "{alice}");
    let alice = alice["id"].as_str().unwrap().to_owned();
    for o in ["alice-team", "new-team"] {
        up.ensure_owner(o);
    }
    let linked = up.cli_json(&["owner", "link", "alice-team", "--person", "alice"]);
    assert_eq!((linked["person"].as_str(), linked["person_left"].as_bool()), (Some(alice.as_str()), Some(false)));

    // A machine alice's team owns (renewing every few seconds), and a
    // certificate standing for alice's own.
    let uid = format!("unix:uid:{}", my_uid());
    let exe = format!("unix:sha256:{}", sha256_file(&std::env::current_exe().unwrap()));
    let service = up.cli_json(&[
        "entry",
        "create",
        "--spiffe-id",
        "spiffe://example.org/scim/service",
        "--owner",
        "alice-team",
        "--selector",
        &uid,
        "--selector",
        &exe,
        "--x509-ttl",
        "6s",
    ]);
    up.create_entry("spiffe://example.org/scim/alice-laptop", &["--selector", &uid, "--selector", &exe]);
    let client = up.client().await;
    let svids = wait_for_svids(&client, 2).await;
    let laptop = svids.iter().find(|s| s.spiffe_id().to_string().ends_with("/alice-laptop")).unwrap();
    let leaf_der = laptop.cert_chain()[0].as_ref().to_vec();
    let serial = serial_of(&leaf_der);
    // Human certificates come from the login path (another change); until
    // it lands, the inventory row is marked as one issued to alice, which
    // is what that path records.
    let db = up.dir.path().join("data").join("hallmark.db");
    let store = hallmark_store::Store::open(&format!("sqlite://{}", db.display())).await.unwrap();
    let tagged = sqlx::query("UPDATE credentials SET person_id = $1, class = 'human' WHERE id = $2")
        .bind(alice.clone())
        .bind(serial.clone())
        .execute(store.pool())
        .await
        .unwrap();
    assert_eq!(tagged.rows_affected(), 1, "{serial} is in the inventory");
    drop(store);

    let dir = tempfile::tempdir().unwrap();
    let leaf = dir.path().join("leaf.pem");
    std::fs::write(&leaf, pem::encode(&pem::Pem::new("CERTIFICATE", leaf_der.clone()))).unwrap();
    let bundle = dir.path().join("bundle.pem");
    let ctx = client.fetch_x509_context().await.unwrap();
    let td = spiffe::TrustDomain::new("example.org").unwrap();
    let roots: String = ctx
        .bundle_set()
        .get(&td)
        .unwrap()
        .authorities()
        .iter()
        .map(|c| pem::encode(&pem::Pem::new("CERTIFICATE", c.as_ref().to_vec())))
        .collect();
    std::fs::write(&bundle, roots).unwrap();
    let ca = active_ca(&up);
    let (ok, said) = verify_against_crl(&up, dir.path(), &ca, &bundle, &leaf);
    assert!(ok, "valid before alice leaves: {said}");
    let service_before = svids.iter().find(|s| s.spiffe_id().to_string().ends_with("/service")).map(serial_of_svid);

    // Alice leaves. From the answer on, the CRL refuses her certificate.
    let patch = r#"{"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                    "Operations": [{"op": "Replace", "value": {"active": "False"}}]}"#;
    let started = Instant::now();
    let (status, body, _) = curl("PATCH", &scim_url(&up, &format!("/Users/{alice}")), Some(&scim), Some(patch));
    assert_eq!((status, body["active"].as_bool()), (200, Some(false)), "{body}");
    let answered = started.elapsed();
    let refused_after = loop {
        let (ok, said) = verify_against_crl(&up, dir.path(), &ca, &bundle, &leaf);
        if !ok {
            assert!(said.contains("revoked"), "{said}");
            break started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(5), "the CRL still accepts alice's certificate: {said}");
    };
    println!(
        "leaver: PATCH answered in {answered:?}; openssl refuses the certificate by the CRL after {refused_after:?}"
    );
    assert!(refused_after < Duration::from_secs(1), "the CRL took {refused_after:?}");
    let c = up.cli_json(&["credential", "show", &serial]);
    assert_eq!(c["credential"]["revoke_reason"], "person left (SCIM)", "{c}");
    assert!(crl_serials(&up).contains(&serial));
    let revoked = audit(&up).into_iter().any(|r| r["action"] == "revoke" && r["details"]["target"] == "person");
    assert!(revoked, "the revocation is recorded");

    // Her team's machine keeps getting its SVID: a renewal after she left.
    let renewed = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Ok(all) = client.fetch_all_x509_svids().await
                && let Some(s) = all.iter().find(|s| s.spiffe_id().to_string().ends_with("/service"))
                && Some(serial_of_svid(s)) != service_before
            {
                return serial_of_svid(s);
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
    .await
    .expect("the service's SVID renews after its owner's person left");
    assert!(up.cli_json(&["credential", "show", &renewed])["credential"]["revoked_at"].is_null());

    // And it is reported, as "owner left", until transferred.
    let owner = up.cli_json(&["owner", "show", "alice-team"]);
    assert_eq!(owner["person_left"], true, "{owner}");
    let orphans = up.cli_json(&["report", "orphans"]);
    let finding = orphans["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == "owner_left")
        .unwrap_or_else(|| panic!("no owner_left finding: {orphans}"))
        .clone();
    assert_eq!(finding["subject"], service["id"], "{finding}");
    assert!(finding["detail"].as_str().unwrap().starts_with("owner left:"), "{finding}");
    up.cli_json(&["owner", "transfer", "alice-team", "--to", "new-team"]);
    let orphans = up.cli_json(&["report", "orphans"]);
    assert!(!orphans.to_string().contains("owner_left"), "the transfer clears it: {orphans}");
}

fn serial_of_svid(s: &spiffe::X509Svid) -> String {
    serial_of(s.cert_chain()[0].as_ref())
}

async fn wait_for_svids(client: &spiffe::WorkloadApiClient, n: usize) -> Vec<spiffe::X509Svid> {
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Ok(s) = client.fetch_all_x509_svids().await
                && s.len() >= n
            {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("SVIDs issued")
}
