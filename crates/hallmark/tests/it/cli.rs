//! The CLI refuses bad input with one clear line and stores nothing.

use crate::harness::*;

/// The arguments of `entry create` with one selector, an owner and `more`.
fn entry_create<'a>(spiffe_id: &'a str, selector: &'a str, owner: &'a str, more: &[&'a str]) -> Vec<&'a str> {
    [&["entry", "create", "--spiffe-id", spiffe_id, "--selector", selector, "--owner", owner], more].concat()
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_refused_with_one_line_naming_the_value() {
    let up = Up::start();
    let uid = format!("unix:uid:{}", my_uid());
    up.create_entry("spiffe://example.org/dup", &["--selector", &uid]);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (entry_create("spiffe://example.org/a//b", &uid, "team-test", &[]), "spiffe://example.org/a//b"),
        (entry_create("spiffe://Example.org/a", &uid, "team-test", &[]), "Example.org"),
        (entry_create("http://example.org/a", &uid, "team-test", &[]), "http://example.org/a"),
        (entry_create("spiffe://example.org/a", "kube:ns:default", "o", &[]), "kube"),
        (entry_create("spiffe://example.org/a", "container:image:nginx:1.25", "o", &[]), "pin the digest"),
        (entry_create("spiffe://example.org/a", "unix:uid", "team-test", &[]), "unix:uid"),
        (entry_create("spiffe://example.org/a", &uid, "o", &["--x509-ttl", "0s"]), "0s"),
        (entry_create("spiffe://example.org/a", &uid, "o", &["--jwt-ttl", "soon"]), "soon"),
        (entry_create("spiffe://example.org/dup", &uid, "team-test", &[]), "already exists"),
        (entry_create("spiffe://other.org/a", &uid, "team-test", &[]), "other.org"),
        (entry_create("spiffe://example.org/a", &uid, "o", &["--bogus-flag"]), "--bogus-flag"),
        (vec!["entry", "show", "nope"], "nope"),
        (vec!["token", "create", "--ttl", "0"], "0"),
        (vec!["bundle", "show", "--format", "xml"], "xml"),
    ];
    for (args, needle) in cases {
        let out = up.cli(&args);
        assert!(!out.status.success(), "{args:?} should fail");
        let err = String::from_utf8_lossy(&out.stderr);
        let first = err.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        assert!(first.contains(needle), "{args:?}: error should name {needle:?}: {err}");
    }
    // Nothing half-written: only the one valid entry exists.
    let list = up.cli_json(&["entry", "list"]);
    assert_eq!(list["entries"].as_array().unwrap().len(), 1);
    // Unauthenticated admin calls are refused.
    let out = std::process::Command::new(bin())
        .args(["entry", "list"])
        .env("HALLMARK_SERVER", &up.env["HALLMARK_SERVER"])
        .env("HALLMARK_TOKEN", "wrong")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bearer token"));
}

#[tokio::test(flavor = "multi_thread")]
async fn entry_update_bumps_revision_and_reaches_the_agent() {
    let up = Up::start();
    let uid = format!("unix:uid:{}", my_uid());
    let e = up.create_entry("spiffe://example.org/before", &["--selector", &uid]);
    let id = e["id"].as_str().unwrap();
    let client = up.client().await;
    assert_eq!(client.fetch_x509_svid().await.unwrap().spiffe_id().to_string(), "spiffe://example.org/before");
    let u = up.cli_json(&["entry", "update", id, "--spiffe-id", "spiffe://example.org/after"]);
    assert_eq!(u["revision"], 2);
    assert_eq!(u["selectors"], e["selectors"], "flags not given keep their value");
    let got = wait_for("the renamed SVID", 20, || {
        let rt = tokio::runtime::Handle::current();
        let s = tokio::task::block_in_place(|| rt.block_on(client.fetch_x509_svid())).ok()?;
        (s.spiffe_id().to_string() == "spiffe://example.org/after").then_some(s)
    });
    assert_eq!(got.spiffe_id().to_string(), "spiffe://example.org/after");
}

#[tokio::test(flavor = "multi_thread")]
async fn entries_need_an_active_owner_and_move_on_transfer() {
    let up = Up::start();
    let uid = format!("unix:uid:{}", my_uid());
    let out =
        up.cli(&["entry", "create", "--spiffe-id", "spiffe://example.org/x", "--selector", &uid, "--owner", "ghost"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("owner `ghost` does not exist"));
    up.ensure_owner("old-team");
    up.ensure_owner("new-team");
    let bad = up.cli(&["owner", "create", "x-team", "--contact", "not an email"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not an email"));
    let e = up.cli_json(&[
        "entry",
        "create",
        "--spiffe-id",
        "spiffe://example.org/x",
        "--selector",
        &uid,
        "--owner",
        "old-team",
    ]);
    let d = up.cli_json(&["owner", "deactivate", "old-team"]);
    assert_eq!(d["active"], false);
    let out = up.cli(&[
        "entry",
        "create",
        "--spiffe-id",
        "spiffe://example.org/y",
        "--selector",
        &uid,
        "--owner",
        "old-team",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("deactivated"));
    let shown = up.cli_json(&["owner", "show", "old-team"]);
    assert_eq!(shown["entries"], 1, "the orphaned entry is still counted against its old owner");
    let moved = up.cli_json(&["owner", "transfer", "old-team", "--to", "new-team"]);
    assert_eq!(moved["entries"], 1);
    let after = up.cli_json(&["entry", "show", e["id"].as_str().unwrap()]);
    assert_eq!((after["owner"].as_str(), after["revision"].as_u64()), (Some("new-team"), Some(2)));
    let to_inactive = up.cli(&["owner", "transfer", "new-team", "--to", "old-team"]);
    assert!(!to_inactive.status.success(), "entries cannot move to a deactivated owner");
}

#[tokio::test(flavor = "multi_thread")]
async fn entries_import_from_a_file_all_or_none() {
    let up = Up::start();
    up.ensure_owner("bulk");
    let file = up.dir.path().join("entries.json");
    let list: Vec<serde_json::Value> = (0..2500)
        .map(|i| {
            serde_json::json!({
                "spiffe_id": format!("spiffe://example.org/bulk/{i}"),
                "selectors": [format!("unix:uid:{}", 50_000 + i)],
                "owner": "bulk",
            })
        })
        .collect();
    std::fs::write(&file, serde_json::to_string(&list).unwrap()).unwrap();
    let v = up.cli_json(&["entry", "import", file.to_str().unwrap()]);
    assert_eq!(v["entries"].as_array().unwrap().len(), 2500);
    assert_eq!(up.cli_json(&["entry", "list"])["entries"].as_array().unwrap().len(), 2500);
    // A bad entry names its place; nothing of that batch is registered.
    let bad = serde_json::json!([
        {"spiffe_id": "spiffe://example.org/ok", "selectors": ["unix:uid:1"], "owner": "bulk"},
        {"spiffe_id": "spiffe://Example.org/bad", "selectors": ["unix:uid:2"], "owner": "bulk"}
    ]);
    std::fs::write(&file, bad.to_string()).unwrap();
    let out = up.cli(&["entry", "import", file.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("entry 1:"), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(up.cli_json(&["entry", "list"])["entries"].as_array().unwrap().len(), 2500);
}

/// Every command, given malformed, oversized, wrong-type or out-of-range
/// input: a non-zero exit with an `error:` line, never a panic, never a
/// server error (the server's 5xx would print as an internal error).
#[tokio::test(flavor = "multi_thread")]
async fn every_command_given_bad_input_fails_cleanly() {
    let up = Up::start();
    let dir = up.dir.path();
    let huge = "a".repeat(100_000);
    let bad_json = dir.join("bad.json");
    std::fs::write(&bad_json, "[{\"spiffe_id\": 7}").unwrap();
    let not_array = dir.join("obj.json");
    std::fs::write(&not_array, "\"just a string\"").unwrap();
    let bad_cases = dir.join("cases.json");
    std::fs::write(&bad_cases, "{\"cases\": [[]]}").unwrap();
    let bad_toml = dir.join("bad.toml");
    std::fs::write(&bad_toml, "trust_domain = 7\n[[[").unwrap();
    let binary = dir.join("bin.cedar");
    std::fs::write(&binary, [0xff, 0xfe, 0x00, 0x01]).unwrap();
    let p = |path: &std::path::Path| path.display().to_string();
    let cases: Vec<Vec<String>> = [
        vec!["entry", "create"],
        entry_create(&huge, "unix:uid:1", "o", &[]),
        entry_create("spiffe://example.org/x", "unix:uid:99999999999", "o", &[]),
        entry_create("spiffe://example.org/x", "unix:uid:1", "o", &["--x509-ttl", "-5s"]),
        entry_create("spiffe://example.org/x", "unix:uid:1", "o", &["--x509-ttl", "99999999999999999999d"]),
        entry_create("spiffe://example.org/x", "unix:uid:1", &huge, &[]),
        vec!["entry", "show", "no-such-id"],
        vec!["entry", "show", &huge],
        vec!["entry", "delete", "../../etc/passwd"],
        vec!["entry", "update", "nope", "--x509-ttl", "abc"],
        vec!["entry", "import", &p(&bad_json)],
        vec!["entry", "import", &p(&not_array)],
        vec!["entry", "import", "/nonexistent/file.json"],
        vec!["token", "create", "--ttl", "0"],
        vec!["token", "create", "--ttl", "1000000000000d"],
        vec!["owner", "create", "bad name!", "--contact", "a@b"],
        vec!["owner", "create", &huge, "--contact", "a@b"],
        vec!["owner", "show", "nobody"],
        vec!["owner", "transfer", "nobody", "--to", "nobody-else"],
        vec!["owner", "deactivate", "nobody"],
        vec!["policy", "set", &p(&binary)],
        vec!["policy", "set", "/nonexistent.cedar"],
        vec!["policy", "test", "--cases", &p(&bad_cases)],
        vec!["policy", "diff", "1", "999999"],
        vec!["policy", "diff", "x", "y"],
        vec![
            "exception",
            "request",
            "--entry",
            "nope",
            "--rule",
            "no_such_rule",
            "--value",
            "1h",
            "--justification",
            "j",
            "--expires",
            "1h",
        ],
        vec!["exception", "approve", "nope"],
        vec!["admin", "token", "create", "--role", "god", "--name", "x"],
        vec!["admin", "token", "create", "--role", "owner:", "--name", "x"],
        vec!["audit", "export", "--since", "yesterday"],
        vec!["credential", "list", "--expiring-within", "-1h"],
        vec!["credential", "list", "--expiring-within", "9999999999999999999999d"],
        vec!["report", "everything"],
        vec!["report", "expiring", "--within", "abc"],
        vec!["revoke", "--serial", "zz", "--reason", "r"],
        vec!["revoke", "--serial", "00ff"],
        vec!["revoke", "--serial", "00ff", "--entry", "e", "--reason", "r"],
        vec!["revoke", "--node", "not-a-spiffe-id", "--reason", "r"],
        vec!["ca", "taint", "no-such-authority"],
        vec!["ca", "prepare", "--kind", "rsa"],
        vec!["bundle", "show", "--format", "xml"],
        vec!["api", "fetch-jwt"],
        vec!["server", "--config", &p(&bad_toml)],
        vec!["agent", "--config", "/nonexistent.toml"],
        vec!["drill", "teleport"],
        vec!["no-such-command"],
        vec!["entry", "list", "--server", "ftp://x"],
        vec!["entry", "list", "--server", "http://127.0.0.1:1"],
    ]
    .into_iter()
    .map(|v| v.into_iter().map(str::to_owned).collect())
    .collect();
    for args in &cases {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = up.cli(&refs);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let shown: Vec<String> = args.iter().map(|a| a.chars().take(40).collect()).collect();
        assert!(!out.status.success(), "{shown:?} succeeded: {}", String::from_utf8_lossy(&out.stdout));
        assert!(stderr.contains("error"), "{shown:?}: no error line: {stderr}");
        assert!(!stderr.contains("panicked"), "{shown:?} panicked: {stderr}");
        assert!(!stderr.to_lowercase().contains("internal"), "{shown:?}: a server error: {stderr}");
    }
    assert!(!up.proc.log().contains("panicked"), "the server panicked");
    assert_eq!(up.cli_json(&["entry", "list"])["entries"], serde_json::json!([]), "nothing was stored");
    eprintln!("{} bad command lines refused cleanly", cases.len());
}
